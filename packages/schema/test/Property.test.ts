import { assert, describe, it } from "@effect/vitest"
import { Result, Schema } from "effect"
import { Property } from "../src/index.ts"
import { assertRejects, decodeFailure, decodeOk, decodes, intArbitrary } from "./utils.ts"

const MiB = 1024 * 1024

const kinds = [
  ["client", Property.ClientHandleProperties],
  ["server", Property.ServerHandleProperties]
] as const

describe("Property", () => {
  describe("defaults", () => {
    it("are the documented values", () => {
      assert.deepStrictEqual(Property.defaults.client, { receiveBufferSize: 4096, sendBufferSize: 4096 })
      assert.deepStrictEqual(Property.defaults.server, { receiveBufferSize: 4096, sendBufferSize: 16 })
      assert.strictEqual(Property.defaults.maxMessageSize, 64 * MiB)
      assert.strictEqual(Property.ALLOCATED_BUFFER_OVERHEAD, 256)
    })

    it("{} decodes to the client defaults", () => {
      assert.deepStrictEqual(decodeOk(Property.ClientHandleProperties, {}), {
        receiveBufferSize: 4096,
        sendBufferSize: 4096,
        disableMasking: false,
        allocatedBuffer: undefined,
        disableUtf8Verification: false,
        maxMessageSize: 64 * MiB
      })
    })

    it("{} decodes to the server defaults", () => {
      assert.deepStrictEqual(decodeOk(Property.ServerHandleProperties, {}), {
        receiveBufferSize: 4096,
        sendBufferSize: 16,
        disableMasking: false,
        allocatedBuffer: undefined,
        disableUtf8Verification: false,
        maxMessageSize: 64 * MiB
      })
    })

    it("given values replace the defaults one by one", () => {
      const buffer = new Uint8Array(1024 + 512 + 256)
      const decoded = decodeOk(Property.ServerHandleProperties, {
        receiveBufferSize: 1024,
        sendBufferSize: 512,
        disableMasking: true,
        allocatedBuffer: buffer,
        disableUtf8Verification: true,
        maxMessageSize: 1
      })
      assert.deepStrictEqual(decoded, {
        receiveBufferSize: 1024,
        sendBufferSize: 512,
        disableMasking: true,
        allocatedBuffer: buffer,
        disableUtf8Verification: true,
        maxMessageSize: 1
      })
      assert.strictEqual(decoded.allocatedBuffer, buffer)
      assert.deepStrictEqual(decodeOk(Property.ClientHandleProperties, { sendBufferSize: 16 }).receiveBufferSize, 4096)
      assert.deepStrictEqual(decodeOk(Property.ClientHandleProperties, { receiveBufferSize: 256 }).sendBufferSize, 4096)
    })

    it("encode gives back every property with its value", () => {
      const decoded = decodeOk(Property.ClientHandleProperties, { disableMasking: true })
      assert.deepStrictEqual(Schema.encodeSync(Property.ClientHandleProperties)(decoded), {
        receiveBufferSize: 4096,
        sendBufferSize: 4096,
        disableMasking: true,
        disableUtf8Verification: false,
        maxMessageSize: 64 * MiB
      })
      assert.deepStrictEqual(decodeOk(Property.ClientHandleProperties, Schema.encodeSync(Property.ClientHandleProperties)(decoded)), decoded)
    })

    it("encode keeps an allocated buffer, the same memory", () => {
      const buffer = new Uint8Array(4096 + 16 + 256)
      const decoded = decodeOk(Property.ServerHandleProperties, { allocatedBuffer: buffer })
      const encoded = Schema.encodeSync(Property.ServerHandleProperties)(decoded)
      assert.strictEqual(encoded.allocatedBuffer, buffer)
      assert.deepStrictEqual(decodeOk(Property.ServerHandleProperties, encoded), decoded)
    })
  })

  for (const [kind, schema] of kinds) {
    describe(`${kind} ranges`, () => {
      it("receiveBufferSize is 256 to 65536", () => {
        assert.strictEqual(decodeOk(schema, { receiveBufferSize: 256 }).receiveBufferSize, 256)
        assert.strictEqual(decodeOk(schema, { receiveBufferSize: 65536 }).receiveBufferSize, 65536)
        assertRejects(schema, { receiveBufferSize: 255 }, "receiveBufferSize must be an integer from 256 to 65536, got 255")
        assertRejects(schema, { receiveBufferSize: 65537 }, "receiveBufferSize", "got 65537")
        assertRejects(schema, { receiveBufferSize: 0 }, "got 0")
        assertRejects(schema, { receiveBufferSize: -4096 }, "got -4096")
      })

      it("sendBufferSize is 16 to 65536", () => {
        assert.strictEqual(decodeOk(schema, { sendBufferSize: 16 }).sendBufferSize, 16)
        assert.strictEqual(decodeOk(schema, { sendBufferSize: 65536 }).sendBufferSize, 65536)
        assertRejects(schema, { sendBufferSize: 15 }, "sendBufferSize must be an integer from 16 to 65536, got 15")
        assertRejects(schema, { sendBufferSize: 65537 }, "sendBufferSize", "got 65537")
      })

      it("every size from 0 to 70000 is accepted iff in range", () => {
        const wrong: Array<string> = []
        for (let n = 0; n <= 70000; n++) {
          if (decodes(schema, { receiveBufferSize: n }) !== (n >= 256 && n <= 65536)) wrong.push(`receive ${n}`)
          if (decodes(schema, { sendBufferSize: n }) !== (n >= 16 && n <= 65536)) wrong.push(`send ${n}`)
        }
        assert.deepStrictEqual(wrong, [])
      })

      it("sizes must be integers", () => {
        for (const n of [4096.5, 256.0001, Number.NaN, Infinity, -Infinity]) {
          assertRejects(schema, { receiveBufferSize: n }, "receiveBufferSize must be an integer")
          assertRejects(schema, { sendBufferSize: n }, "sendBufferSize must be an integer")
          assertRejects(schema, { maxMessageSize: n }, "maxMessageSize must be an integer")
        }
        for (const n of ["4096", null, true, 4096n]) {
          assert.isFalse(decodes(schema, { receiveBufferSize: n }), String(n))
          assert.isFalse(decodes(schema, { sendBufferSize: n }), String(n))
        }
      })

      it("maxMessageSize is 1 to 2^53-1", () => {
        assert.strictEqual(decodeOk(schema, { maxMessageSize: 1 }).maxMessageSize, 1)
        assert.strictEqual(decodeOk(schema, { maxMessageSize: Number.MAX_SAFE_INTEGER }).maxMessageSize, Number.MAX_SAFE_INTEGER)
        assertRejects(schema, { maxMessageSize: 0 }, "maxMessageSize", "got 0")
        assertRejects(schema, { maxMessageSize: -1 }, "maxMessageSize", "got -1")
        assertRejects(schema, { maxMessageSize: 2 ** 53 }, "maxMessageSize")
      })

      it("the flags must be booleans", () => {
        assert.isTrue(decodeOk(schema, { disableMasking: true }).disableMasking)
        assert.isTrue(decodeOk(schema, { disableUtf8Verification: true }).disableUtf8Verification)
        assert.isFalse(decodeOk(schema, { disableMasking: false }).disableMasking)
        for (const flag of [1, 0, "true", null]) {
          assert.isFalse(decodes(schema, { disableMasking: flag }), String(flag))
          assert.isFalse(decodes(schema, { disableUtf8Verification: flag }), String(flag))
        }
      })

      it("a key set to undefined takes the default, as with every other option", () => {
        const resolved = decodeOk(schema, {
          receiveBufferSize: undefined,
          sendBufferSize: undefined,
          disableMasking: undefined,
          allocatedBuffer: undefined,
          disableUtf8Verification: undefined,
          maxMessageSize: undefined,
          keepaliveInterval: undefined,
          supportedVersions: undefined
        })
        assert.deepStrictEqual(resolved, decodeOk(schema, {}))
      })

      it("keepaliveInterval and supportedVersions are rejected as global properties", () => {
        assertRejects(schema, { keepaliveInterval: 30000 }, "keepaliveInterval is a global property", "getGlobalProperty")
        assertRejects(schema, { supportedVersions: [13] }, "supportedVersions is a global property", "getGlobalProperty")
        assertRejects(schema, { receiveBufferSize: 1024, keepaliveInterval: 15000 }, "keepaliveInterval is a global property")
      })

      it("rejects an unknown key when excess properties are errors", () => {
        const message = decodeFailure(schema, { receiveBufferSize: 1024, bufferSize: 1 }, { onExcessProperty: "error" })
        assert.include(message, "bufferSize")
        assert.include(message, "excess")
        assert.deepStrictEqual(
          decodeOk(schema, { receiveBufferSize: 1024 }, { onExcessProperty: "error" }).receiveBufferSize,
          1024
        )
      })

      it("rejects a non-object", () => {
        for (const input of [null, undefined, 4096, "{}", [4096]]) {
          assert.isFalse(decodes(schema, input), String(input))
        }
      })
    })
  }

  describe("allocatedBuffer", () => {
    it("must hold receive + send + 256 bytes of the client defaults", () => {
      const needed = 4096 + 4096 + 256
      assertRejects(
        Property.ClientHandleProperties,
        { allocatedBuffer: new Uint8Array(needed - 1) },
        `receiveBufferSize + sendBufferSize + 256 = ${needed} bytes, got ${needed - 1}`
      )
      assert.strictEqual(decodeOk(Property.ClientHandleProperties, { allocatedBuffer: new Uint8Array(needed) }).allocatedBuffer?.byteLength, needed)
    })

    it("must hold receive + send + 256 bytes of the server defaults", () => {
      const needed = 4096 + 16 + 256
      assertRejects(Property.ServerHandleProperties, { allocatedBuffer: new Uint8Array(100) }, `= ${needed} bytes, got 100`)
      assert.isTrue(decodes(Property.ServerHandleProperties, { allocatedBuffer: new Uint8Array(needed) }))
      assert.isFalse(decodes(Property.ServerHandleProperties, { allocatedBuffer: new Uint8Array(0) }))
    })

    it("is sized by the given buffer sizes", () => {
      for (const [, schema] of kinds) {
        const sizes = { receiveBufferSize: 256, sendBufferSize: 16 }
        assertRejects(schema, { ...sizes, allocatedBuffer: new Uint8Array(527) }, "= 528 bytes, got 527")
        assert.isTrue(decodes(schema, { ...sizes, allocatedBuffer: new Uint8Array(528) }))
        assert.isTrue(decodes(schema, { ...sizes, allocatedBuffer: new Uint8Array(4096) }))
        assertRejects(
          schema,
          { receiveBufferSize: 65536, sendBufferSize: 65536, allocatedBuffer: new Uint8Array(131327) },
          "= 131328 bytes, got 131327"
        )
      }
    })

    it("must be a Uint8Array", () => {
      for (const buffer of [new ArrayBuffer(10000), [0, 1, 2], "buffer", 10000]) {
        assert.isFalse(decodes(Property.ClientHandleProperties, { allocatedBuffer: buffer }), String(buffer))
      }
    })

    it.prop(
      "is accepted iff it holds receive + send + 256 bytes",
      { receive: intArbitrary(256, 4096), send: intArbitrary(16, 4096), slack: intArbitrary(-300, 300) },
      ({ receive, send, slack }) => {
        const length = Math.max(0, receive + send + 256 + slack)
        for (const [, schema] of kinds) {
          const result = Schema.decodeUnknownResult(schema)({
            receiveBufferSize: receive,
            sendBufferSize: send,
            allocatedBuffer: new Uint8Array(length)
          })
          assert.strictEqual(Result.isSuccess(result), length >= receive + send + 256)
          if (Result.isFailure(result)) assert.include(result.failure.message, `= ${receive + send + 256} bytes, got ${length}`)
        }
      },
      { arbitrary: { runs: 200 } }
    )
  })

  describe("KeepaliveInterval", () => {
    it("raises values below 15000 to 15000", () => {
      assert.strictEqual(decodeOk(Property.KeepaliveInterval, 1000), 15000)
      assert.strictEqual(decodeOk(Property.KeepaliveInterval, 0), 15000)
      assert.strictEqual(decodeOk(Property.KeepaliveInterval, 14999), 15000)
      assert.strictEqual(decodeOk(Property.KeepaliveInterval, 15000), 15000)
    })

    it("keeps values from 15000 up", () => {
      assert.strictEqual(decodeOk(Property.KeepaliveInterval, 15001), 15001)
      assert.strictEqual(decodeOk(Property.KeepaliveInterval, 30000), 30000)
      assert.strictEqual(decodeOk(Property.KeepaliveInterval, 0xffffffff), 0xffffffff)
    })

    it("rejects negative, non-integer and out-of-ULONG values", () => {
      assertRejects(Property.KeepaliveInterval, -1, "keepaliveInterval must be an integer", "got -1")
      assertRejects(Property.KeepaliveInterval, 1.5, "got 1.5")
      assertRejects(Property.KeepaliveInterval, 2 ** 32, "keepaliveInterval")
      assert.isFalse(decodes(Property.KeepaliveInterval, "30000"))
      assert.isFalse(decodes(Property.KeepaliveInterval, Number.NaN))
    })

    it("has the documented constants", () => {
      assert.strictEqual(Property.MIN_KEEPALIVE_INTERVAL, 15000)
      assert.strictEqual(Property.DEFAULT_KEEPALIVE_INTERVAL, 30000)
    })

    it.prop(
      "decodes any ULONG to max(value, 15000)",
      { n: intArbitrary(0, 0xffffffff), small: intArbitrary(0, 40000) },
      ({ n, small }) => {
        assert.strictEqual(decodeOk(Property.KeepaliveInterval, n), Math.max(n, 15000))
        assert.strictEqual(decodeOk(Property.KeepaliveInterval, small), Math.max(small, 15000))
      },
      { arbitrary: { runs: 200 } }
    )
  })
})
