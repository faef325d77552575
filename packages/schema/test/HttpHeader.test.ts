import { assert, describe, it } from "@effect/vitest"
import { Arbitrary, Result, Schema } from "effect"
import { HttpHeader } from "../src/index.ts"
import { assertRejects, codeUnitString, decodeFailure, decodeOk, oneOf, stringOver } from "./utils.ts"

const h = (name: string, value: string): HttpHeader.HttpHeader => ({ name, value })

const request: ReadonlyArray<HttpHeader.HttpHeader> = [
  h("Host", "example.com"),
  h("sec-websocket-protocol", "chat"),
  h("Upgrade", "websocket"),
  h("Sec-WebSocket-Protocol", "superchat, v2"),
  h("SEC-WEBSOCKET-PROTOCOL", "")
]

describe("HttpHeader", () => {
  describe("getAll", () => {
    it("returns every value of a name, matched case-insensitively, in wire order", () => {
      const expected = ["chat", "superchat, v2", ""]
      for (const name of ["Sec-WebSocket-Protocol", "sec-websocket-protocol", "SEC-WEBSOCKET-PROTOCOL", "sEc-WeBsOcKeT-pRoToCoL"]) {
        assert.deepStrictEqual(HttpHeader.getAll(request, name), expected, name)
      }
    })

    it("returns a single value and nothing for an absent name", () => {
      assert.deepStrictEqual(HttpHeader.getAll(request, "host"), ["example.com"])
      assert.deepStrictEqual(HttpHeader.getAll(request, "Origin"), [])
      assert.deepStrictEqual(HttpHeader.getAll([], "Host"), [])
    })

    it("does not match a name that is only a prefix", () => {
      assert.deepStrictEqual(HttpHeader.getAll(request, "Sec-WebSocket"), [])
      assert.deepStrictEqual(HttpHeader.getAll(request, "Hos"), [])
    })
  })

  describe("getCombined", () => {
    it("joins repeated fields with a comma and a space, case-insensitively", () => {
      const headers = [h("Connection", "keep-alive"), h("Host", "x"), h("connection", "Upgrade")]
      assert.strictEqual(HttpHeader.getCombined(headers, "CONNECTION"), "keep-alive, Upgrade")
    })

    it("joins repeated Cookie lines with a semicolon, the separator of its pairs (as Node does)", () => {
      const headers = [h("Cookie", "a=1"), h("Host", "x"), h("cookie", "b=2")]
      assert.strictEqual(HttpHeader.getCombined(headers, "Cookie"), "a=1; b=2")
    })

    it("returns a single field's value unchanged", () => {
      assert.strictEqual(HttpHeader.getCombined(request, "UPGRADE"), "websocket")
    })

    it("returns an empty value as the empty string, not undefined", () => {
      assert.strictEqual(HttpHeader.getCombined([h("Host", "")], "host"), "")
    })

    it("returns undefined when no field has the name", () => {
      assert.isUndefined(HttpHeader.getCombined(request, "Sec-WebSocket-Key"))
      assert.isUndefined(HttpHeader.getCombined([], "Host"))
    })
  })

  describe("merge", () => {
    it("replaces fields of the same name case-insensitively and appends the overrides", () => {
      const initial = [h("Host", "a"), h("Accept-Language", "one"), h("Accept", "*/*"), h("accept-language", "two")]
      const overrides = [h("ACCEPT-LANGUAGE", "three"), h("X-Extra", "1")]
      assert.deepStrictEqual(HttpHeader.merge(initial, overrides), [
        h("Host", "a"),
        h("Accept", "*/*"),
        h("ACCEPT-LANGUAGE", "three"),
        h("X-Extra", "1")
      ])
    })

    it("appends new fields after the initial ones", () => {
      assert.deepStrictEqual(HttpHeader.merge([h("Host", "a")], [h("Origin", "o")]), [h("Host", "a"), h("Origin", "o")])
    })

    it("keeps repeated overrides, in order", () => {
      assert.deepStrictEqual(
        HttpHeader.merge([h("Cookie", "a=1")], [h("cookie", "b=2"), h("Cookie", "c=3")]),
        [h("cookie", "b=2"), h("Cookie", "c=3")]
      )
    })

    it("returns the initial headers when there are no overrides, and does not mutate its inputs", () => {
      const initial = [h("Host", "a"), h("Upgrade", "websocket")]
      const overrides = [h("host", "b")]
      assert.deepStrictEqual(HttpHeader.merge(initial, []), initial)
      HttpHeader.merge(initial, overrides)
      assert.deepStrictEqual(initial, [h("Host", "a"), h("Upgrade", "websocket")])
      assert.deepStrictEqual(overrides, [h("host", "b")])
    })
  })

  describe("fromRawHeaders", () => {
    it("pairs names and values", () => {
      assert.deepStrictEqual(HttpHeader.fromRawHeaders(["Host", "example.com", "upgrade", "websocket", "Host", "b"]), [
        h("Host", "example.com"),
        h("upgrade", "websocket"),
        h("Host", "b")
      ])
    })

    it("keeps empty values and returns nothing for an empty list", () => {
      assert.deepStrictEqual(HttpHeader.fromRawHeaders(["X-Empty", ""]), [h("X-Empty", "")])
      assert.deepStrictEqual(HttpHeader.fromRawHeaders([]), [])
    })

    it("ignores a trailing name without a value", () => {
      assert.deepStrictEqual(HttpHeader.fromRawHeaders(["Host", "a", "Dangling"]), [h("Host", "a")])
    })
  })

  describe("HttpHeader schema", () => {
    it("accepts a token name and a field value", () => {
      for (const header of [
        h("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
        h("X-Empty", ""),
        h("X-Tab", "a\tb c"),
        h("X-Latin1", "caf\u00e9 \u00ff\u0080"),
        h("X-Punct", "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~")
      ]) {
        assert.deepStrictEqual(decodeOk(HttpHeader.HttpHeader, header), header)
      }
    })

    it("rejects a name containing a colon or a space, naming the name", () => {
      assertRejects(HttpHeader.HttpHeader, h("Host:", "a"), `header name "Host:" is not a token`, "name")
      assertRejects(HttpHeader.HttpHeader, h("a:b", "a"), `header name "a:b" is not a token`)
      assertRejects(HttpHeader.HttpHeader, h("Sec WebSocket", "a"), `header name "Sec WebSocket" is not a token`)
      assertRejects(HttpHeader.HttpHeader, h("", "a"), `header name "" is not a token`)
      assertRejects(HttpHeader.HttpHeader, h("Host\r\n", "a"), "is not a token")
    })

    it("rejects a value containing CR LF, NUL, DEL or other controls", () => {
      assertRejects(HttpHeader.HttpHeader, h("X", "a\r\nInjected: yes"), "contains a control character", "value")
      for (const value of ["\r", "\n", "a\u0000", "\u007f", "\u0001", "\u001f"]) {
        assertRejects(HttpHeader.HttpHeader, h("X", value), "contains a control character")
      }
    })

    it("rejects a value with characters beyond one byte", () => {
      assertRejects(HttpHeader.HttpHeader, h("X", "\u0100"), "above U+00FF (U+0100 at index 0 of 1)")
      assertRejects(HttpHeader.HttpHeader, h("X", "a€"), "above U+00FF (U+20AC at index 1 of 2)")
    })

    it("names the header of a bad value, and never repeats the value (it may be a credential)", () => {
      const message = decodeFailure(HttpHeader.HttpHeader, h("Authorization", "Bearer SECRET-TOKEN\n"))
      assert.include(message, "the value of header Authorization contains a control character (U+000A at index 19 of 20)")
      assert.notInclude(message, "SECRET")
      assert.notInclude(decodeFailure(HttpHeader.HeaderValue, "Bearer SECRET\u20ac"), "SECRET")
    })

    it("rejects missing or non-string fields", () => {
      for (const input of [{ name: "Host" }, { value: "a" }, { name: 1, value: "a" }, { name: "Host", value: null }, "Host: a", null]) {
        assert.isTrue(Result.isFailure(Schema.decodeUnknownResult(HttpHeader.HttpHeader)(input)), JSON.stringify(input))
      }
    })

    it("HttpHeaders decodes a list and points at the bad element", () => {
      const list = [h("Host", "a"), h("Upgrade", "websocket")]
      assert.deepStrictEqual(decodeOk(HttpHeader.HttpHeaders, list), list)
      assert.deepStrictEqual(decodeOk(HttpHeader.HttpHeaders, []), [])
      assertRejects(HttpHeader.HttpHeaders, [h("Host", "a"), h("Bad Name", "b")], `"Bad Name"`, "[1]")
    })
  })

  describe("properties", () => {
    const NAMES = ["Host", "Upgrade", "Connection", "Sec-WebSocket-Protocol", "X"] as const
    const cased = Arbitrary.map(
      Arbitrary.all({ name: oneOf(NAMES), mask: Arbitrary.array(oneOf(["u", "l"]), { maxLength: 24 }) }),
      ({ mask, name }) => [...name].map((c, i) => mask[i] === "u" ? c.toUpperCase() : c.toLowerCase()).join("")
    )
    const header = Arbitrary.map(
      Arbitrary.all({ name: cased, value: stringOver(["a", " ", ",", "b"], 5) }),
      ({ name, value }) => h(name, value)
    )
    const headers = Arbitrary.array(header, { maxLength: 10 })

    it.prop(
      "getAll and getCombined agree and ignore the case of the name",
      { headers, name: cased },
      ({ headers, name }) => {
        const all = HttpHeader.getAll(headers, name)
        const expected = headers.filter((x) => x.name.toLowerCase() === name.toLowerCase()).map((x) => x.value)
        assert.deepStrictEqual(all, expected)
        assert.deepStrictEqual(HttpHeader.getAll(headers, name.toUpperCase()), expected)
        assert.strictEqual(HttpHeader.getCombined(headers, name), expected.length === 0 ? undefined : expected.join(", "))
      },
      // (strings and lists grow with the check's size, 10 by default: the case masks reach the end of the longest name)
      { arbitrary: { runs: 300, size: 48 } }
    )

    it.prop(
      "merge keeps the initial fields not overridden, in order, followed by every override",
      { initial: headers, overrides: headers },
      ({ initial, overrides }) => {
        const merged = HttpHeader.merge(initial, overrides)
        const overridden = new Set(overrides.map((x) => x.name.toLowerCase()))
        assert.deepStrictEqual(merged, [...initial.filter((x) => !overridden.has(x.name.toLowerCase())), ...overrides])
        for (const { name } of overrides) {
          assert.deepStrictEqual(
            HttpHeader.getAll(merged, name),
            overrides.filter((x) => x.name.toLowerCase() === name.toLowerCase()).map((x) => x.value)
          )
        }
      },
      // (strings and lists grow with the check's size, 10 by default: the case masks reach the end of the longest name)
      { arbitrary: { runs: 300, size: 48 } }
    )

    it.prop(
      "fromRawHeaders inverts flattening",
      { headers },
      ({ headers }) => {
        assert.deepStrictEqual(HttpHeader.fromRawHeaders(headers.flatMap((x) => [x.name, x.value])), headers)
      },
      { arbitrary: { runs: 200 } }
    )

    it.prop(
      "the schema accepts a field iff its name is a token and its value is Latin-1 text without controls",
      { name: codeUnitString, value: codeUnitString, s: Arbitrary.schema(Schema.String) },
      ({ name, s, value }) => {
        for (const [n, v] of [[name, value], [s, s], ["X", value], [name, "v"]] as const) {
          const ok = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/.test(n) && /^[\t\u0020-\u007e\u0080-\u00ff]*$/.test(v)
          const result = Schema.decodeUnknownResult(HttpHeader.HttpHeader)({ name: n, value: v })
          assert.strictEqual(Result.isSuccess(result), ok, JSON.stringify([n, v]))
        }
      },
      // (strings and lists grow with the check's size, 10 by default: code units of up to 24, longer strings)
      { arbitrary: { runs: 300, size: 100 } }
    )
  })
})
