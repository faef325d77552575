import { assert, it } from "@effect/vitest"
import { Effect } from "effect"
import { y } from "@effect-websocket/core"
it.effect("smoke", () => Effect.sync(() => assert.strictEqual(y, 1)))
