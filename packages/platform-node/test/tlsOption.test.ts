import { assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import { decodeTls } from "../src/internal/tlsOption.ts"

describe("the tls option", () => {
  it.effect("a server's needs an identity of its own: a certificate, a pfx, an SNICallback, a pskCallback or anonymous ciphers only", () =>
    Effect.gen(function*() {
      const valid: ReadonlyArray<object> = [
        { cert: "c", key: "k" },
        { pfx: "p" },
        { SNICallback: () => {} },
        { pskCallback: () => null },
        { ciphers: "aNULL:@SECLEVEL=0", maxVersion: "TLSv1.2" }
      ]
      for (const tls of valid) assert.strictEqual(yield* decodeTls(tls, "server"), tls)
      // (a spread, as the server makes of them, copies own properties only; a server does not read secureContext)
      const refused: ReadonlyArray<object> = [{}, Object.create({ cert: "c", key: "k" }), { secureContext: {} }, { cert: undefined }]
      for (const tls of refused) {
        const error = yield* Effect.flip(decodeTls(tls, "server"))
        assert.deepStrictEqual([error.parameter, error.message.startsWith("a server's tls needs its identity")], ["tls", true])
      }
      // a client's needs none
      assert.deepStrictEqual(yield* decodeTls({}, "client"), {})
      for (const tls of [null, 0, "ca.pem", []]) {
        const error = yield* Effect.flip(decodeTls(tls as never, "client"))
        assert.include(error.message, "tls must be an object")
      }
    }))
})
