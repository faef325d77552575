import { assert, describe, it } from "@effect/vitest"
import { Arbitrary, Exit, Result, Schema } from "effect"
import { createHash } from "node:crypto"
import { HandshakeHeaders, HttpHeader, Token } from "../src/index.ts"
import {
  applyEdits,
  assertRejects,
  choices,
  codeUnitString,
  decodeFailure,
  decodeOk,
  decodes,
  editsArbitrary,
  intArbitrary,
  noiseArbitrary,
  oneOf,
  show,
  stringOver,
  TCHAR,
  tokenArbitrary
} from "./utils.ts"

const base64Of = (bytes: number, fill = 0): string => Buffer.alloc(bytes, fill).toString("base64")

const GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
const acceptFor = (key: string): string => createHash("sha1").update(key + GUID).digest("base64")

type Param = { readonly name: string; readonly value?: string }
type Ext = { readonly name: string; readonly params: ReadonlyArray<Param> }

const ext = (name: string, ...params: ReadonlyArray<Param>): Ext => ({ name, params })

describe("HandshakeHeaders", () => {
  describe("Upgrade", () => {
    it("accepts websocket in any case, alone or in a list", () => {
      assert.deepStrictEqual(decodeOk(HandshakeHeaders.Upgrade, "websocket"), ["websocket"])
      assert.deepStrictEqual(decodeOk(HandshakeHeaders.Upgrade, "WebSocket"), ["WebSocket"])
      assert.deepStrictEqual(decodeOk(HandshakeHeaders.Upgrade, "WEBSOCKET"), ["WEBSOCKET"])
      assert.deepStrictEqual(decodeOk(HandshakeHeaders.Upgrade, "foo, websocket"), ["foo", "websocket"])
      assert.deepStrictEqual(decodeOk(HandshakeHeaders.Upgrade, "websocket, HTTP/2.0"), ["websocket", "HTTP/2.0"])
      assert.deepStrictEqual(decodeOk(HandshakeHeaders.Upgrade, " ,websocket\t, "), ["websocket"])
    })

    it("rejects a list without websocket, quoting the value", () => {
      assertRejects(HandshakeHeaders.Upgrade, "h2c", `must include "websocket", got "h2c"`)
      assertRejects(HandshakeHeaders.Upgrade, "", `must include "websocket", got ""`)
      assertRejects(HandshakeHeaders.Upgrade, "websockets", `"websockets"`)
      assertRejects(HandshakeHeaders.Upgrade, "web socket", `must include "websocket"`)
      assertRejects(HandshakeHeaders.Upgrade, "foo websocket", `must include "websocket"`)
      assertRejects(HandshakeHeaders.Upgrade, "websocket/13", `must include "websocket"`)
      assertRejects(HandshakeHeaders.Upgrade, ",", `must include "websocket"`)
    })

    it("rejects non-strings", () => {
      for (const input of [null, undefined, ["websocket"], 1]) assert.isFalse(decodes(HandshakeHeaders.Upgrade, input))
    })

    it("rejects an element that is not a protocol (RFC 9110 section 7.8: token or token/token) beside websocket, naming it", () => {
      assertRejects(HandshakeHeaders.Upgrade, "websocket, @@", `has "@@", which is not a protocol`)
      assertRejects(HandshakeHeaders.Upgrade, `websocket, "h2c"`, `has "\\"h2c\\""`)
      assertRejects(HandshakeHeaders.Upgrade, "websocket, a b", `has "a b"`)
      assertRejects(HandshakeHeaders.Upgrade, "h2c;q=1, websocket", `has "h2c;q=1"`)
      assertRejects(HandshakeHeaders.Upgrade, "websocket, HTTP/2/0", `has "HTTP/2/0"`)
      assertRejects(HandshakeHeaders.Upgrade, "websocket, /2.0", `has "/2.0"`)
      assertRejects(HandshakeHeaders.Upgrade, "websocket, HTTP/", `has "HTTP/"`)
      assert.deepStrictEqual(decodeOk(HandshakeHeaders.Upgrade, "HTTP/2.0, websocket, h2c"), ["HTTP/2.0", "websocket", "h2c"])
    })

    it.prop(
      "a list decodes iff it names websocket and every element is a protocol",
      { list: Arbitrary.array(oneOf(["websocket", "WebSocket", "h2c", "HTTP/2.0", "a/b/c", "/x", "x/", "@", "\"q\"", "a b", ""]), { maxLength: 4 }), noise: noiseArbitrary },
      ({ list, noise }) => {
        const pick = choices(noise)
        const s = list.map((e) => ["", " ", "\t"][pick(3)]! + e).join(",")
        const elements = s.split(",").map((e) => e.replace(/^[ \t]+|[ \t]+$/g, "")).filter((e) => e !== "")
        const protocol = new RegExp(`^[${TCHAR}]+(?:/[${TCHAR}]+)?$`)
        const expected = elements.some((e) => e.toLowerCase() === "websocket") && elements.every((e) => protocol.test(e))
        assert.strictEqual(decodes(HandshakeHeaders.Upgrade, s), expected, JSON.stringify(s))
      },
      { arbitrary: { runs: 1000 } }
    )

    it("encodes the protocols as a list", () => {
      assert.strictEqual(Schema.encodeSync(HandshakeHeaders.Upgrade)(["websocket"]), "websocket")
      assert.strictEqual(Schema.encodeSync(HandshakeHeaders.Upgrade)(["foo", "websocket"]), "foo, websocket")
    })

    it("refuses to encode an element that is not a protocol (it would decode to another list)", () => {
      for (const protocols of [["websocket", ""], [" websocket"], ["websocket", " h2c"], ["websocket", "a, b"], ["websocket", "a b"]]) {
        assert.isTrue(Exit.isFailure(Schema.encodeExit(HandshakeHeaders.Upgrade)(protocols)), JSON.stringify(protocols))
      }
      // worded as decoding words it
      assert.include(String(Schema.encodeExit(HandshakeHeaders.Upgrade)(["websocket", "a b"])), `has "a b", which is not a protocol`)
    })

    it("matches websocket in ASCII case only (the Kelvin sign is not a k)", () => {
      assertRejects(HandshakeHeaders.Upgrade, "websoc\u212Aet", `must include "websocket"`)
    })
  })

  describe("UpgradeResponse", () => {
    it("accepts websocket in any case, alone", () => {
      assert.deepStrictEqual(decodeOk(HandshakeHeaders.UpgradeResponse, "websocket"), ["websocket"])
      assert.deepStrictEqual(decodeOk(HandshakeHeaders.UpgradeResponse, "WebSocket"), ["WebSocket"])
      assert.deepStrictEqual(decodeOk(HandshakeHeaders.UpgradeResponse, " ,websocket\t, "), ["websocket"])
    })

    it("rejects any other protocol, also beside websocket (RFC 6455 section 4.1), quoting the value", () => {
      assertRejects(HandshakeHeaders.UpgradeResponse, "websocket, h2c", `must be "websocket" alone, got "websocket, h2c"`)
      assertRejects(HandshakeHeaders.UpgradeResponse, "h2c, websocket", `must be "websocket" alone`)
      assertRejects(HandshakeHeaders.UpgradeResponse, "websocket/13", `must be "websocket" alone`)
      assertRejects(HandshakeHeaders.UpgradeResponse, "", `must be "websocket" alone, got ""`)
      assertRejects(HandshakeHeaders.UpgradeResponse, ",", `must be "websocket" alone`)
    })

    it("matches websocket in ASCII case only (the Kelvin sign is not a k)", () => {
      assertRejects(HandshakeHeaders.UpgradeResponse, "websoc\u212Aet", `must be "websocket" alone`)
      assertRejects(HandshakeHeaders.UpgradeResponse, "WEBSOC\u212AET", `must be "websocket" alone`)
    })

    it("encodes what it decodes, and refuses to encode a list that would decode otherwise", () => {
      assert.strictEqual(Schema.encodeSync(HandshakeHeaders.UpgradeResponse)(["WebSocket"]), "WebSocket")
      for (const protocols of [["websocket", ""], [" websocket"], ["websocket", " WebSocket"], ["h2c"]]) {
        assert.isTrue(Exit.isFailure(Schema.encodeExit(HandshakeHeaders.UpgradeResponse)(protocols)), JSON.stringify(protocols))
      }
      assert.include(String(Schema.encodeExit(HandshakeHeaders.UpgradeResponse)(["h2c"])), `must be "websocket" alone, got "h2c"`)
    })

    it.prop(
      "a list decodes iff each of its elements is websocket, and there is one",
      { list: Arbitrary.array(oneOf(["websocket", "WebSocket", "h2c", "websocket/13", "", " "]), { maxLength: 4 }), noise: noiseArbitrary },
      ({ list, noise }) => {
        const pick = choices(noise)
        const s = list.map((e) => ["", " ", "\t"][pick(3)]! + e).join(",")
        const elements = s.split(",").map((e) => e.trim()).filter((e) => e !== "")
        const expected = elements.length > 0 && elements.every((e) => e.toLowerCase() === "websocket")
        assert.strictEqual(decodes(HandshakeHeaders.UpgradeResponse, s), expected, JSON.stringify(s))
        if (expected) assert.isTrue(decodes(HandshakeHeaders.Upgrade, s), "a response's Upgrade is a valid request Upgrade")
      },
      { arbitrary: { runs: 300 } }
    )
  })

  describe("Connection", () => {
    it("accepts the Upgrade token in any case, alone or in a list", () => {
      assert.deepStrictEqual<unknown>(decodeOk(HandshakeHeaders.Connection, "Upgrade"), ["Upgrade"])
      assert.deepStrictEqual<unknown>(decodeOk(HandshakeHeaders.Connection, "keep-alive, Upgrade"), ["keep-alive", "Upgrade"])
      assert.deepStrictEqual<unknown>(decodeOk(HandshakeHeaders.Connection, "upgrade"), ["upgrade"])
      assert.deepStrictEqual<unknown>(decodeOk(HandshakeHeaders.Connection, "UPGRADE,keep-alive"), ["UPGRADE", "keep-alive"])
      assert.deepStrictEqual<unknown>(decodeOk(HandshakeHeaders.Connection, "keep-alive,,Upgrade"), ["keep-alive", "Upgrade"])
    })

    it("rejects a list without the Upgrade token", () => {
      assertRejects(HandshakeHeaders.Connection, "keep-alive", `must include the "Upgrade" token`, `"keep-alive"`)
      assertRejects(HandshakeHeaders.Connection, "close, keep-alive", `"close, keep-alive"`)
      assertRejects(HandshakeHeaders.Connection, "Upgrades", `must include the "Upgrade" token`)
    })

    it("quotes only the start of a long value", () => {
      const value = `keep-alive, ${"x".repeat(20_000)}`
      const message = decodeFailure(HandshakeHeaders.Connection, value)
      assert.include(message, `got "keep-alive, xxx`)
      assert.include(message, `... (${value.length} characters)`)
      assert.isBelow(message.length, 200)
    })

    it("rejects an empty value and elements that are not tokens", () => {
      assertRejects(HandshakeHeaders.Connection, "", "at least one token")
      assertRejects(HandshakeHeaders.Connection, " , ", "at least one token")
      assertRejects(HandshakeHeaders.Connection, "Up grade", `"Up grade"`, "not a token")
      assertRejects(HandshakeHeaders.Connection, "Upgrade, keep alive", `"keep alive"`, "not a token")
    })
  })

  describe("SecWebSocketKey", () => {
    it("accepts the RFC 6455 sample nonce and the .NET dummy key", () => {
      assert.strictEqual(decodeOk(HandshakeHeaders.SecWebSocketKey, "dGhlIHNhbXBsZSBub25jZQ=="), "dGhlIHNhbXBsZSBub25jZQ==")
      assert.strictEqual(decodeOk(HandshakeHeaders.SecWebSocketKey, "AAAAAAAAAAAAAAAAAAAAAA=="), "AAAAAAAAAAAAAAAAAAAAAA==")
      assert.strictEqual(decodeOk(HandshakeHeaders.SecWebSocketKey, base64Of(16, 0xff)), "/////////////////////w==")
    })

    it("rejects 15 and 17 bytes, saying how many bytes it got", () => {
      assertRejects(HandshakeHeaders.SecWebSocketKey, base64Of(15), "base64 encoding of 16 bytes", "got 15 bytes")
      assertRejects(HandshakeHeaders.SecWebSocketKey, base64Of(17), "base64 encoding of 16 bytes", "got 17 bytes")
    })

    it("accepts the base64 of n bytes iff n is 16, for n in 0..64", () => {
      for (let n = 0; n <= 64; n++) {
        if (n === 16) assert.isTrue(decodes(HandshakeHeaders.SecWebSocketKey, base64Of(n, n)))
        else assertRejects(HandshakeHeaders.SecWebSocketKey, base64Of(n, n), `got ${n} bytes`)
      }
    })

    it("rejects what is not padded standard base64", () => {
      for (
        const key of [
          "dGhlIHNhbXBsZSBub25jZQ", // unpadded
          "dGhlIHNhbXBsZSBub25jZQ=", // short padding
          "dGhlIHNhbXBsZSBub25jZQ===",
          "_____________________w==", // base64url alphabet
          "dGhlIHNhbXBsZSBub25jZ!==",
          "dGhlIHNhbXBs ZSBub25jZQ==",
          "dGhlIHNhbXBsZSBub25jZQ==\n",
          "=dGhlIHNhbXBsZSBub25jZQ=",
          "dGhl=HNhbXBsZSBub25jZQ=="
        ]
      ) {
        assertRejects(HandshakeHeaders.SecWebSocketKey, key, "must be base64", JSON.stringify(key))
      }
    })

    it("rejects base64url's '-', a stray character before a single '=', and a length not a multiple of four as not base64", () => {
      for (
        const key of [
          "dGhlIHNhbXBsZSBub25-ZQ==", // base64url's 62nd character
          "dGhlIHNhbXBsZSBub25jZQ!=",
          "dGhlIHNhbXBsZSBub25jZQAAA" // 25 characters of the alphabet
        ]
      ) {
        assertRejects(HandshakeHeaders.SecWebSocketKey, key, "must be base64", JSON.stringify(key))
      }
      assertRejects(HandshakeHeaders.SecWebSocketAccept, "s3pPLMBiTxaQ9kYGzzhZRbK+xO!=", "must be base64")
    })

    it("rejects non-strings", () => {
      for (const input of [null, 16, new Uint8Array(16)]) assert.isFalse(decodes(HandshakeHeaders.SecWebSocketKey, input))
    })

    it("rejects a value of millions of characters with a short message (the check once overflowed the stack and threw)", () => {
      const long = "A".repeat(6_000_000)
      assertRejects(HandshakeHeaders.SecWebSocketKey, long, "got 4500000 bytes")
      assertRejects(HandshakeHeaders.SecWebSocketAccept, long, "got 4500000 bytes")
      const message = decodeFailure(HandshakeHeaders.SecWebSocketKey, `${long}!`)
      assert.include(message, `must be base64, got "${"A".repeat(80)}"... (6000001 characters)`)
      assert.isBelow(message.length, 200)
    })
  })

  describe("SecWebSocketAccept", () => {
    it("accepts the RFC 6455 sample answer and computed answers", () => {
      assert.strictEqual(acceptFor("dGhlIHNhbXBsZSBub25jZQ=="), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")
      assert.strictEqual(acceptFor("AAAAAAAAAAAAAAAAAAAAAA=="), "ICX+Yqv66kxgM0FcWaLWlFLwTAI=")
      assert.strictEqual(decodeOk(HandshakeHeaders.SecWebSocketAccept, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")
      assert.isTrue(decodes(HandshakeHeaders.SecWebSocketAccept, "ICX+Yqv66kxgM0FcWaLWlFLwTAI="))
    })

    it("accepts the base64 of n bytes iff n is 20, naming the byte count", () => {
      for (let n = 0; n <= 64; n++) {
        if (n === 20) assert.isTrue(decodes(HandshakeHeaders.SecWebSocketAccept, base64Of(n, 7)))
        else assertRejects(HandshakeHeaders.SecWebSocketAccept, base64Of(n, 7), "base64 encoding of 20 bytes", `got ${n} bytes`)
      }
    })

    it("rejects a key where an answer is expected", () => {
      assertRejects(HandshakeHeaders.SecWebSocketAccept, "dGhlIHNhbXBsZSBub25jZQ==", "got 16 bytes")
      assertRejects(HandshakeHeaders.SecWebSocketAccept, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo", "must be base64")
    })

    it.prop(
      "accepts the answer to any 16-byte key",
      { bytes: Arbitrary.array(intArbitrary(0, 255), { minLength: 16, maxLength: 16 }) },
      ({ bytes }) => {
        const key = Buffer.from(bytes).toString("base64")
        assert.strictEqual(decodeOk(HandshakeHeaders.SecWebSocketKey, key), key)
        assert.isTrue(decodes(HandshakeHeaders.SecWebSocketAccept, acceptFor(key)))
      },
      { arbitrary: { runs: 200 } }
    )

    it.prop(
      "keys and answers of random bytes are accepted iff 16 and 20 bytes long",
      { bytes: Arbitrary.array(intArbitrary(0, 255), { maxLength: 48 }) },
      ({ bytes }) => {
        const encoded = Buffer.from(bytes).toString("base64")
        for (const [schema, wanted] of [[HandshakeHeaders.SecWebSocketKey, 16], [HandshakeHeaders.SecWebSocketAccept, 20]] as const) {
          const result = Schema.decodeUnknownResult(schema)(encoded)
          assert.strictEqual(Result.isSuccess(result), bytes.length === wanted)
          if (Result.isFailure(result)) assert.include(result.failure.message, `got ${bytes.length} bytes`)
        }
      },
      // (strings and lists grow with the check's size, 10 by default: at 10, never the 16 or 20 bytes accepted)
      { arbitrary: { runs: 300, size: 96 } }
    )
  })

  describe("SecWebSocketVersion", () => {
    const decode = Schema.decodeUnknownExit(HandshakeHeaders.SecWebSocketVersion)

    it("decodes 13 and 8 to numbers; support is checked elsewhere", () => {
      assert.deepStrictEqual(decode("13"), Exit.succeed(13))
      assert.deepStrictEqual(decode("8"), Exit.succeed(8))
      assert.deepStrictEqual(decode("0"), Exit.succeed(0))
      assert.deepStrictEqual(decode("255"), Exit.succeed(255))
      assert.strictEqual(HandshakeHeaders.SUPPORTED_VERSION, 13)
    })

    it("rejects leading zeros, out of range, lists, blanks and non-numbers, quoting the value", () => {
      for (const value of ["013", "00", "256", "", "13, 8", "abc", " 13", "13 ", "+13", "-1", "1e1", "0x0d", "13.0", "1000", "\u0661\u0663"]) {
        const exit = decode(value)
        assert.isTrue(Exit.isFailure(exit), JSON.stringify(value))
        assertRejects(HandshakeHeaders.SecWebSocketVersion, value, "must be one version number from 0 to 255", JSON.stringify(value))
      }
    })

    it("rejects a number where the header string is expected", () => {
      assert.isTrue(Exit.isFailure(decode(13)))
    })

    it("shows an invisible character or a look-alike of a space escaped in its message (a no-break space is not OWS)", () => {
      assertRejects(HandshakeHeaders.SecWebSocketVersion, "13\u00a0", "got \"13\\u00a0\"")
      assertRejects(HandshakeHeaders.SecWebSocketVersion, "\ufeff13", "got \"\\ufeff13\"")
      assertRejects(HandshakeHeaders.SecWebSocketVersion, "1\u200b3", "got \"1\\u200b3\"")
      // drawn as nothing or as a blank: a combining grapheme joiner, a variation selector, a Hangul filler, the braille blank
      for (const [value, shown] of [["1\u034f3", "1\\u034f3"], ["13\ufe0f", "13\\ufe0f"], ["13\u3164", "13\\u3164"], ["13\u2800", "13\\u2800"]]) {
        assertRejects(HandshakeHeaders.SecWebSocketVersion, value, `got "${shown}"`)
      }
      // beyond U+FFFF as a JSON surrogate pair (a language tag character)
      assertRejects(HandshakeHeaders.SecWebSocketVersion, "13\u{e0001}", "got \"13\\udb40\\udc01\"")
      // other characters beyond ASCII are shown as they are
      assertRejects(HandshakeHeaders.SecWebSocketVersion, "\u0661\u0663", "got \"\u0661\u0663\"")
    })

    it("accepts exactly the canonical decimal numbers 0..255", () => {
      const wrong: Array<string> = []
      for (let n = 0; n <= 1000; n++) {
        const exit = decode(String(n))
        const ok = Exit.isSuccess(exit) && exit.value === n
        if (ok !== n <= 255) wrong.push(String(n))
        if (Exit.isSuccess(decode("0" + String(n)))) wrong.push("0" + String(n))
      }
      assert.deepStrictEqual(wrong, [])
    })

    it("encodes a number as its decimal string", () => {
      assert.strictEqual(Schema.encodeSync(HandshakeHeaders.SecWebSocketVersion)(13), "13")
      assert.strictEqual(Schema.encodeSync(HandshakeHeaders.SecWebSocketVersion)(0), "0")
    })
  })

  describe("SecWebSocketProtocol", () => {
    it("rejects a subprotocol offered twice, naming it", () => {
      assertRejects(HandshakeHeaders.SecWebSocketProtocol, "chat, superchat, chat", `"chat" is offered twice`)
      assertRejects(HandshakeHeaders.SecWebSocketProtocol, "a,a", `"a" is offered twice`)
      assert.deepStrictEqual<unknown>(decodeOk(HandshakeHeaders.SecWebSocketProtocol, "chat, Chat"), ["chat", "Chat"])
    })

    it("decodes the offered subprotocols in order", () => {
      assert.deepStrictEqual<unknown>(decodeOk(HandshakeHeaders.SecWebSocketProtocol, "chat, superchat"), ["chat", "superchat"])
      assert.deepStrictEqual<unknown>(decodeOk(HandshakeHeaders.SecWebSocketProtocol, "superchat,chat"), ["superchat", "chat"])
      assert.deepStrictEqual<unknown>(decodeOk(HandshakeHeaders.SecWebSocketProtocol, "v10.stomp"), ["v10.stomp"])
    })

    it("ignores empty elements", () => {
      assert.deepStrictEqual<unknown>(decodeOk(HandshakeHeaders.SecWebSocketProtocol, "a,,b"), ["a", "b"])
      assert.deepStrictEqual<unknown>(decodeOk(HandshakeHeaders.SecWebSocketProtocol, " , a ,\t, b , "), ["a", "b"])
    })

    it("rejects invalid tokens, naming them", () => {
      assertRejects(HandshakeHeaders.SecWebSocketProtocol, "a b", `"a b"`, "not a token")
      assertRejects(HandshakeHeaders.SecWebSocketProtocol, "chat, su/per", `"su/per"`, "not a token")
      assertRejects(HandshakeHeaders.SecWebSocketProtocol, "ch@t", `"ch@t"`, "not a token")
      assertRejects(HandshakeHeaders.SecWebSocketProtocol, "\"chat\"", "not a token")
    })

    it("rejects an empty value", () => {
      assertRejects(HandshakeHeaders.SecWebSocketProtocol, "", "at least one token")
      assertRejects(HandshakeHeaders.SecWebSocketProtocol, ",,", "at least one token")
    })

    it("the response form is exactly one token", () => {
      assert.strictEqual(decodeOk(HandshakeHeaders.SecWebSocketProtocolResponse, "chat"), "chat")
      assertRejects(HandshakeHeaders.SecWebSocketProtocolResponse, "chat, superchat", "must be a token", `"chat, superchat"`)
      assertRejects(HandshakeHeaders.SecWebSocketProtocolResponse, "", "must be a token")
      assertRejects(HandshakeHeaders.SecWebSocketProtocolResponse, " chat", "must be a token")
    })
  })

  describe("SecWebSocketExtensions", () => {
    const decode = (s: string) => decodeOk(HandshakeHeaders.SecWebSocketExtensions, s)

    it("decodes a bare extension", () => {
      assert.deepStrictEqual(decode("permessage-deflate"), [ext("permessage-deflate")])
    })

    it("decodes a parameter without a value, leaving value absent", () => {
      const decoded = decode("permessage-deflate; client_max_window_bits")
      assert.deepStrictEqual(decoded, [ext("permessage-deflate", { name: "client_max_window_bits" })])
      assert.isFalse("value" in decoded[0].params[0]!)
    })

    it("decodes token and quoted-string values", () => {
      assert.deepStrictEqual(decode(`foo; a=1; b="2"`), [ext("foo", { name: "a", value: "1" }, { name: "b", value: "2" })])
    })

    it("unescapes quoted-pairs in quoted values", () => {
      // on the wire: x; p="a\bc", which unescapes to abc
      assert.deepStrictEqual(decode(`x; p="a\\bc"`), [ext("x", { name: "p", value: "abc" })])
      assert.deepStrictEqual(decode(`x; p="\\a\\b\\c"`), [ext("x", { name: "p", value: "abc" })])
      assert.deepStrictEqual(decode(`x; p="10"`), [ext("x", { name: "p", value: "10" })])
    })

    it("requires an unescaped quoted value to be a token", () => {
      // on the wire: x; p="a\\bc", which unescapes to a\bc
      assertRejects(HandshakeHeaders.SecWebSocketExtensions, `x; p="a\\\\bc"`, `quoted value "a\\\\bc" of parameter "p" is not a token`)
      assertRejects(HandshakeHeaders.SecWebSocketExtensions, `foo; a="b c"`, `quoted value "b c" of parameter "a" is not a token`)
      assertRejects(HandshakeHeaders.SecWebSocketExtensions, `foo; a="b\\ c"`, `quoted value "b c"`)
      assertRejects(HandshakeHeaders.SecWebSocketExtensions, `foo; a=""`, `quoted value "" of parameter "a" is not a token`)
      assertRejects(HandshakeHeaders.SecWebSocketExtensions, `foo; a="b,c"`, "is not a token")
      assertRejects(HandshakeHeaders.SecWebSocketExtensions, `foo; a="\\""`, "is not a token")
    })

    it("allows whitespace around ';', '=' and ','", () => {
      const expected = [
        ext("foo", { name: "a", value: "1" }, { name: "b", value: "2" }),
        ext("bar", { name: "c" }),
        ext("baz")
      ]
      assert.deepStrictEqual<unknown>(decode(` foo ; a = 1 ;\tb =\t"2" , bar ;c\t,\tbaz `), expected)
      assert.deepStrictEqual<unknown>(decode(`foo;a=1;b="2",bar;c,baz`), expected)
      assert.deepStrictEqual<unknown>(decode(`foo;a =1 ;b= 2 ,bar ;c ,baz`), expected)
    })

    it("decodes the RFC 6455 and RFC 7692 examples", () => {
      assert.deepStrictEqual(decode("mux; max-channels=4; flow-control, deflate-stream"), [
        ext("mux", { name: "max-channels", value: "4" }, { name: "flow-control" }),
        ext("deflate-stream")
      ])
      assert.deepStrictEqual(decode("private-extension"), [ext("private-extension")])
      assert.deepStrictEqual(
        decode("permessage-deflate; client_max_window_bits; server_max_window_bits=10, permessage-deflate; client_max_window_bits"),
        [
          ext("permessage-deflate", { name: "client_max_window_bits" }, { name: "server_max_window_bits", value: "10" }),
          ext("permessage-deflate", { name: "client_max_window_bits" })
        ]
      )
    })

    it("ignores empty list elements and keeps repeated extensions", () => {
      assert.deepStrictEqual(decode(",foo,, ,bar,"), [ext("foo"), ext("bar")])
      assert.deepStrictEqual(decode("foo, foo"), [ext("foo"), ext("foo")])
    })

    it("decodes the combined value of repeated header lines", () => {
      const headers = HttpHeader.fromRawHeaders([
        "Sec-WebSocket-Extensions",
        "permessage-deflate; client_max_window_bits",
        "sec-websocket-extensions",
        "x-foo"
      ])
      assert.deepStrictEqual(decode(HttpHeader.getCombined(headers, "Sec-WebSocket-Extensions")!), [
        ext("permessage-deflate", { name: "client_max_window_bits" }),
        ext("x-foo")
      ])
    })

    it("rejects malformed lists, saying where", () => {
      const cases: ReadonlyArray<readonly [string, string]> = [
        ["foo;", `expected a parameter name of "foo", found the end`],
        ["foo; =1", `expected a parameter name of "foo", found "=" at offset 5`],
        ["foo;;a", `expected a parameter name of "foo", found ";" at offset 4`],
        [`foo; a="unterminated`, `unterminated quoted value of parameter "a"`],
        [`foo; a="b\\`, `unterminated quoted value of parameter "a"`],
        [`foo; a="b\\"`, `unterminated quoted value of parameter "a"`],
        [",", "must list at least one extension"],
        ["", "must list at least one extension"],
        [" ,\t, ", "must list at least one extension"],
        ["foo bar", `expected "," or ";", found "b" at offset 4`],
        ["foo; a=b c", `expected "," or ";", found "c" at offset 9`],
        [`foo; a="b"c`, `expected "," or ";", found "c" at offset 10`],
        ["foo; a=b=c", `expected "," or ";", found "=" at offset 8`],
        ["foo; a=", `expected a value for parameter "a", found the end`],
        ["foo; a=,bar", `expected a value for parameter "a", found "," at offset 7`],
        ["foo; a=@", `expected a value for parameter "a", found "@" at offset 7`],
        ["fo@o", `expected "," or ";", found "@" at offset 2`],
        ["@foo", `expected an extension name, found "@" at offset 0`],
        [";a", `expected an extension name, found ";" at offset 0`],
        ["foo, ;a", `expected an extension name, found ";" at offset 5`],
        ["\"foo\"", "expected an extension name"],
        ["foo\r\n", `expected "," or ";", found "\\r" at offset 3`]
      ]
      for (const [value, message] of cases) assertRejects(HandshakeHeaders.SecWebSocketExtensions, value, message)
    })

    it("rejects non-strings", () => {
      for (const input of [null, undefined, 1, [ext("foo")]]) assert.isFalse(decodes(HandshakeHeaders.SecWebSocketExtensions, input))
    })

    it("encodes in the canonical form", () => {
      const encode = Schema.encodeSync(HandshakeHeaders.SecWebSocketExtensions)
      const value = decodeOk(Schema.NonEmptyArray(HandshakeHeaders.Extension), [
        ext("permessage-deflate", { name: "client_max_window_bits" }, { name: "server_max_window_bits", value: "10" }),
        ext("x")
      ])
      assert.strictEqual(
        encode(value),
        "permessage-deflate; client_max_window_bits; server_max_window_bits=10, x"
      )
      assert.strictEqual(HandshakeHeaders.formatExtension(ext("a", { name: "b", value: "c" }, { name: "d" })), "a; b=c; d")
      assert.strictEqual(HandshakeHeaders.formatExtension(ext("a")), "a")
    })

    it("refuses to encode names and values that are not tokens", () => {
      const encode = Schema.encodeUnknownResult(HandshakeHeaders.SecWebSocketExtensions)
      assert.isTrue(Result.isFailure(encode([ext("a b")])))
      assert.isTrue(Result.isFailure(encode([ext("a", { name: "p", value: "b c" })])))
      assert.isTrue(Result.isFailure(encode([ext("a", { name: "p;q" })])))
      assert.isTrue(Result.isFailure(encode([])))
    })
  })

  describe("properties", () => {
    const param: Arbitrary.Arbitrary<Param> = Arbitrary.map(
      Arbitrary.all({ name: tokenArbitrary, value: Arbitrary.array(tokenArbitrary, { maxLength: 1 }) }),
      ({ name, value }) => value.length === 0 ? { name } : { name, value: value[0]! }
    )
    const extension: Arbitrary.Arbitrary<Ext> = Arbitrary.map(
      Arbitrary.all({ name: tokenArbitrary, params: Arbitrary.array(param, { maxLength: 4 }) }),
      ({ name, params }) => ({ name, params })
    )
    const extensions = Arbitrary.array(extension, { minLength: 1, maxLength: 5 })

    /** Renders extensions with whitespace, quoting, escapes and empty elements chosen by `noise`. */
    const render = (list: ReadonlyArray<Ext>, noise: ReadonlyArray<number>): string => {
      const pick = choices(noise)
      const ows = () => ["", "", " ", "\t", "  ", " \t "][pick(6)]!
      const value = (v: string) => {
        if (pick(2) === 0) return v
        return `"${[...v].map((c) => pick(3) === 0 ? `\\${c}` : c).join("")}"`
      }
      const renderParam = (p: Param) =>
        ows() + ";" + ows() + p.name + (p.value === undefined ? "" : ows() + "=" + ows() + value(p.value))
      const element = (e: Ext) => e.name + e.params.map(renderParam).join("") + ows()
      const separator = () => ["", ",", " ,", ", ,"][pick(4)]! + ows()
      return ows() + (pick(3) === 0 ? "," + ows() : "") +
        list.map(element).join("," + separator()) +
        (pick(3) === 0 ? "," + ows() : "")
    }

    it.prop(
      "extensions encode and decode back to an equal value",
      { list: extensions },
      ({ list }) => {
        const typed = decodeOk(Schema.NonEmptyArray(HandshakeHeaders.Extension), list)
        const encoded = Schema.encodeSync(HandshakeHeaders.SecWebSocketExtensions)(typed)
        assert.strictEqual(encoded, list.map(HandshakeHeaders.formatExtension).join(", "))
        assert.deepStrictEqual<unknown>(decodeOk(HandshakeHeaders.SecWebSocketExtensions, encoded), list)
      },
      { arbitrary: { runs: 300 } }
    )

    it.prop(
      "extra whitespace, quoted and escaped values and empty elements decode to the same value",
      { list: extensions, noise: noiseArbitrary },
      ({ list, noise }) => {
        const rendered = render(list, noise)
        assert.deepStrictEqual<unknown>(decodeOk(HandshakeHeaders.SecWebSocketExtensions, rendered), list, JSON.stringify(rendered))
      },
      { arbitrary: { runs: 500 } }
    )

    // RFC 6455 section 9.1 with the #rule of RFC 7230, as a regular expression independent of the scanner.
    const T = `[${TCHAR}]+`
    const OWS = "[ \\t]*"
    const QUOTED_TOKEN = `"(?:[${TCHAR}]|\\\\[${TCHAR}])+"`
    const PARAM = `${T}(?:${OWS}=${OWS}(?:${T}|${QUOTED_TOKEN}))?`
    const EXTENSION = `${T}(?:${OWS};${OWS}${PARAM})*`
    const EXTENSIONS_RE = new RegExp(`^[ \\t,]*${EXTENSION}(?:${OWS},[ \\t,]*${EXTENSION})*${OWS}(?:,[ \\t,]*)?$`)

    it.prop(
      "a string decodes iff it matches the extension-list grammar",
      { s: stringOver(["a", "b", "1", "-", " ", "\t", ",", ";", ";", "=", "=", "\"", "\\", "@", "/", "x=1", "; y", "\"z\""], 16) },
      ({ s }) => {
        const result = Schema.decodeUnknownResult(HandshakeHeaders.SecWebSocketExtensions)(s)
        assert.strictEqual(Result.isSuccess(result), EXTENSIONS_RE.test(s), JSON.stringify(s))
      },
      // (strings and lists grow with the check's size, 10 by default: strings of up to 16 pieces)
      { arbitrary: { runs: 2000, size: 32 } }
    )

    it.prop(
      "an edited rendering decodes iff it still matches the grammar, and a match decodes like its canonical form",
      {
        list: extensions,
        noise: noiseArbitrary,
        edits: editsArbitrary([" ", "\t", ",", ";", "=", "\"", "\\", "a", "@", "/", "\r"])
      },
      ({ edits, list, noise }) => {
        const s = applyEdits(render(list, noise), edits)
        const result = Schema.decodeUnknownResult(HandshakeHeaders.SecWebSocketExtensions)(s)
        assert.strictEqual(Result.isSuccess(result), EXTENSIONS_RE.test(s), JSON.stringify(s))
        if (Result.isSuccess(result)) {
          const canonical = Schema.encodeSync(HandshakeHeaders.SecWebSocketExtensions)(result.success)
          assert.deepStrictEqual(decodeOk(HandshakeHeaders.SecWebSocketExtensions, canonical), result.success)
          if (edits.length === 0) assert.deepStrictEqual<unknown>(result.success, list)
        }
      },
      { arbitrary: { runs: 2000 } }
    )

    it.prop(
      "every extension list the generator renders matches the reference grammar",
      { list: extensions, noise: noiseArbitrary },
      ({ list, noise }) => {
        assert.isTrue(EXTENSIONS_RE.test(render(list, noise)))
      },
      { arbitrary: { runs: 200 } }
    )

    const headerSchemas = [
      ["Upgrade", HandshakeHeaders.Upgrade],
      ["UpgradeResponse", HandshakeHeaders.UpgradeResponse],
      ["Connection", HandshakeHeaders.Connection],
      ["SecWebSocketKey", HandshakeHeaders.SecWebSocketKey],
      ["SecWebSocketAccept", HandshakeHeaders.SecWebSocketAccept],
      ["SecWebSocketVersion", HandshakeHeaders.SecWebSocketVersion],
      ["SecWebSocketProtocol", HandshakeHeaders.SecWebSocketProtocol],
      ["SecWebSocketProtocolResponse", HandshakeHeaders.SecWebSocketProtocolResponse],
      ["SecWebSocketExtensions", HandshakeHeaders.SecWebSocketExtensions],
      ["Token", Token.Token],
      ["TokenList", Token.TokenList],
      ["HeaderName", HttpHeader.HeaderName],
      ["HeaderValue", HttpHeader.HeaderValue]
    ] as const

    /** Decodes without throwing; a successful value encodes to a header that decodes to the same value. */
    const checkTotal = (s: string) => {
      for (const [name, schema] of headerSchemas) {
        let result: Result.Result<unknown, Schema.SchemaError>
        try {
          result = Schema.decodeUnknownResult(schema as Schema.ConstraintDecoder<unknown>)(s)
        } catch (error) {
          return assert.fail(`${name} threw on ${show(s)}: ${String(error)}`)
        }
        if (Result.isFailure(result)) {
          assert.isString(result.failure.message)
          assert.isAbove(result.failure.message.length, 0, `${name} failed on ${show(s)} without a message`)
        } else {
          const encoded = Schema.encodeUnknownSync(schema as unknown as Schema.Codec<unknown, unknown>)(result.success)
          assert.isString(encoded)
          assert.deepStrictEqual(decodeOk(schema, encoded), result.success, `${name} on ${show(s)}`)
        }
      }
    }

    it.prop(
      "no header schema throws on an arbitrary string",
      {
        printable: Arbitrary.schema(Schema.String),
        units: codeUnitString,
        grammar: stringOver(["websocket", "Upgrade", "13", "a", " ", "\t", ",", ";", "=", "\"", "\\", "\r\n", "\u0000", "é", "😀", "\uD800", "==", "+/"], 12)
      },
      ({ grammar, printable, units }) => {
        for (const s of [printable, units, grammar]) checkTotal(s)
      },
      // (strings and lists grow with the check's size, 10 by default: strings past the 80 characters a message quotes)
      { arbitrary: { runs: 500, size: 200 } }
    )

    it("no header schema throws on non-string input", () => {
      for (const input of [undefined, null, 0, 13, Number.NaN, true, 1n, Symbol("s"), [], ["websocket"], {}, { toString: () => "websocket" }, new Uint8Array(4)]) {
        for (const [name, schema] of headerSchemas) {
          let result: Result.Result<unknown, Schema.SchemaError> | undefined
          try {
            result = Schema.decodeUnknownResult(schema as Schema.ConstraintDecoder<unknown>)(input)
          } catch (error) {
            assert.fail(`${name} threw on ${String(input)}: ${String(error)}`)
          }
          assert.isTrue(result !== undefined && Result.isFailure(result), `${name} accepted ${String(input)}`)
        }
      }
    })

    it("the reference grammar accepts and rejects the expected samples", () => {
      assert.isTrue(EXTENSIONS_RE.test(`foo; a="b\\c"`))
      assert.isFalse(EXTENSIONS_RE.test(`foo; a="b c"`))
      assert.isTrue(EXTENSIONS_RE.test(` , foo ;a = 1, bar,`))
      assert.isFalse(EXTENSIONS_RE.test(`foo bar`))
      assert.isFalse(EXTENSIONS_RE.test(`,`))
    })
  })
})
