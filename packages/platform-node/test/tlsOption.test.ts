import { assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import { decodeTls } from "../src/internal/tlsOption.ts"

describe("the tls option", () => {
  it.effect("a server's needs an identity of its own: a certificate and its key, a pfx, an SNICallback, a pskCallback or anonymous ciphers only", () =>
    Effect.gen(function*() {
      const valid: ReadonlyArray<object> = [
        { cert: "c", key: "k" },
        { cert: [Buffer.from("c")], key: [{ pem: "k" }] },
        { cert: "c", privateKeyEngine: "e", privateKeyIdentifier: "id" },
        { pfx: "p" },
        { pfx: [{ buf: Buffer.from("p") }] },
        { SNICallback: () => {} },
        { pskCallback: () => null },
        { ciphers: "aNULL:@SECLEVEL=0", maxVersion: "TLSv1.2" },
        { ciphers: "AECDH-AES256-SHA", maxVersion: "TLSv1.2" }
      ]
      for (const tls of valid) assert.strictEqual(yield* decodeTls(tls, "server"), tls)
      // (a spread, as the server makes of them, copies own properties only; a server does not read secureContext)
      const refused: ReadonlyArray<object> = [
        {},
        Object.create({ cert: "c", key: "k" }),
        { secureContext: {} },
        { cert: undefined },
        // a certificate without its key, or options that hold nothing
        { cert: "c" },
        { cert: null, key: "k" },
        { cert: "", key: "k" },
        { cert: [], key: [] },
        { cert: Buffer.alloc(0), key: "k" },
        { pfx: null },
        { SNICallback: null },
        { pskCallback: "psk" }
      ]
      for (const tls of refused) {
        const error = yield* Effect.flip(decodeTls(tls, "server"))
        assert.deepStrictEqual([error.parameter, error.message.startsWith("a server's tls needs its identity")], ["tls", true])
      }
      // a client's needs none
      assert.deepStrictEqual(yield* decodeTls({}, "client"), {})
      for (const [tls, got] of [[null, "null"], [0, "number"], ["ca.pem", "string"], [[], "an array"]] as const) {
        const error = yield* Effect.flip(decodeTls(tls as never, "client"))
        assert.deepStrictEqual([error.parameter, error.message], ["tls", `tls must be an object of TLS options, got ${got}`])
      }
    }))
})
