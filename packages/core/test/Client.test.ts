import { assert, describe, it } from "@effect/vitest"
import { Effect, Exit, Scope } from "effect"
import { Client } from "../src/index.ts"

describe("Client.releaseOnFailure", () => {
  /** An attempt that acquires something (recording its release) and then fails or not. */
  const attempt = (events: Array<string>, fail: boolean) =>
    Effect.gen(function*() {
      yield* Effect.acquireRelease(Effect.sync(() => events.push("acquired")), () => Effect.sync(() => events.push("released")))
      if (fail) return yield* Effect.fail("refused" as const)
      return "connected"
    })

  it.effect("a failed attempt releases what it acquired at once, in a scope that stays open", () =>
    Effect.gen(function*() {
      const events: Array<string> = []
      const scope = yield* Scope.make()
      for (let i = 0; i < 3; i++) {
        const error = yield* Effect.flip(Scope.provide(Client.releaseOnFailure(attempt(events, true)), scope))
        assert.strictEqual(error, "refused")
      }
      assert.deepStrictEqual(events, ["acquired", "released", "acquired", "released", "acquired", "released"])
      yield* Scope.close(scope, Exit.void)
    }))

  it.effect("a successful attempt keeps what it acquired until the caller's scope closes", () =>
    Effect.gen(function*() {
      const events: Array<string> = []
      const scope = yield* Scope.make()
      assert.strictEqual(yield* Scope.provide(Client.releaseOnFailure(attempt(events, false)), scope), "connected")
      assert.deepStrictEqual(events, ["acquired"])
      yield* Scope.close(scope, Exit.void)
      assert.deepStrictEqual(events, ["acquired", "released"])
    }))
})
