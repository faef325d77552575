import { assert, describe, it } from "@effect/vitest"
import { Arbitrary, Exit, Result, Schema } from "effect"
import { CloseStatus } from "../src/index.ts"
import { assertRejects, codeUnitString, decodeOk, intArbitrary } from "./utils.ts"

/** RFC 6455 section 7.4 and the IANA registry, written as the spec's table (section 7.4). */
const allowedOnTheWire = (code: number): boolean =>
  (code >= 1000 && code <= 1003) || (code >= 1007 && code <= 1014) || (code >= 3000 && code <= 4999)

describe("CloseStatus", () => {
  describe("CloseCode", () => {
    it("accepts exactly 1000-1003, 1007-1014 and 3000-4999 among 0..5000", () => {
      const wrong: Array<number> = []
      for (let code = 0; code <= 5000; code++) {
        const decoded = Result.isSuccess(Schema.decodeUnknownResult(CloseStatus.CloseCode)(code))
        if (decoded !== allowedOnTheWire(code) || CloseStatus.isWireCloseCode(code) !== allowedOnTheWire(code)) {
          wrong.push(code)
        }
      }
      assert.deepStrictEqual(wrong, [])
    })

    it("decodes an allowed code to itself", () => {
      for (const code of [1000, 1001, 1002, 1003, 1007, 1010, 1011, 1014, 3000, 4000, 4999]) {
        assert.strictEqual(decodeOk(CloseStatus.CloseCode, code), code)
      }
    })

    it("rejects the reserved and local-only codes with the code in the message", () => {
      for (const code of [1004, 1005, 1006, 1015]) {
        assertRejects(CloseStatus.CloseCode, code, `close code ${code} may not be sent`)
      }
      assertRejects(CloseStatus.CloseCode, 999, "close code 999", "1000-1003, 1007-1014 or 3000-4999")
      assertRejects(CloseStatus.CloseCode, 5000, "close code 5000")
      assertRejects(CloseStatus.CloseCode, 2999, "close code 2999")
    })

    it("rejects codes beyond 5000, negative codes, non-integers and non-numbers", () => {
      for (const code of [-1, -1000, 65535, 65536, 1000.5, 3000.1, Number.NaN, Infinity, -Infinity]) {
        assert.isTrue(Exit.isFailure(Schema.decodeUnknownExit(CloseStatus.CloseCode)(code)), String(code))
        assert.isFalse(CloseStatus.isWireCloseCode(code), String(code))
      }
      for (const input of ["1000", null, undefined, 1000n, { code: 1000 }]) {
        assert.isTrue(Exit.isFailure(Schema.decodeUnknownExit(CloseStatus.CloseCode)(input)), String(input))
      }
    })

    it.prop(
      "accepts an integer iff it is in a wire range",
      { code: intArbitrary(-100_000, 100_000) },
      ({ code }) => {
        assert.strictEqual(Result.isSuccess(Schema.decodeUnknownResult(CloseStatus.CloseCode)(code)), allowedOnTheWire(code))
      },
      { arbitrary: { runs: 500 } }
    )
  })

  describe("utf8Length", () => {
    it("counts UTF-8 bytes, not UTF-16 code units", () => {
      assert.strictEqual(CloseStatus.utf8Length(""), 0)
      assert.strictEqual(CloseStatus.utf8Length("abc"), 3)
      assert.strictEqual(CloseStatus.utf8Length("é"), 2)
      assert.strictEqual(CloseStatus.utf8Length("€"), 3)
      assert.strictEqual(CloseStatus.utf8Length("😀"), 4)
      assert.strictEqual(CloseStatus.utf8Length("a\u0000b"), 3)
    })
  })

  describe("CloseReason", () => {
    it("allows 123 bytes", () => {
      assert.strictEqual(CloseStatus.MAX_CLOSE_REASON_LENGTH, 123)
      for (const reason of [
        "a".repeat(123),
        "é".repeat(61) + "a",
        "€".repeat(41),
        "😀".repeat(30) + "abc",
        "",
        "going away"
      ]) {
        assert.strictEqual(Buffer.byteLength(reason, "utf8") <= 123, true)
        assert.strictEqual(decodeOk(CloseStatus.CloseReason, reason), reason)
      }
    })

    it("rejects 124 bytes and more with the byte count in the message", () => {
      assertRejects(CloseStatus.CloseReason, "a".repeat(124), "124 UTF-8 bytes", "123")
      // 62 characters but 124 bytes: the limit is in bytes
      assertRejects(CloseStatus.CloseReason, "é".repeat(62), "124 UTF-8 bytes")
      assertRejects(CloseStatus.CloseReason, "é".repeat(61) + "ab", "124 UTF-8 bytes")
      assertRejects(CloseStatus.CloseReason, "€".repeat(42), "126 UTF-8 bytes")
      assertRejects(CloseStatus.CloseReason, "😀".repeat(31), "124 UTF-8 bytes")
      assertRejects(CloseStatus.CloseReason, "a".repeat(1000), "1000 UTF-8 bytes")
    })

    it("rejects lone surrogates, which have no UTF-8 encoding", () => {
      for (const reason of ["\uD800", "\uDFFF", "a\uDC00b", "\uDE00\uD83D", "😀".slice(0, 1), "ok" + "😀".slice(1)]) {
        assertRejects(CloseStatus.CloseReason, reason, "lone surrogate")
      }
    })

    it("accepts a surrogate pair and NUL", () => {
      assert.strictEqual(decodeOk(CloseStatus.CloseReason, "\uD83D\uDE00"), "😀")
      assert.strictEqual(decodeOk(CloseStatus.CloseReason, "a\u0000b"), "a\u0000b")
    })

    it("rejects non-strings", () => {
      for (const input of [1000, null, undefined, new Uint8Array(3)]) {
        assert.isTrue(Result.isFailure(Schema.decodeUnknownResult(CloseStatus.CloseReason)(input)))
      }
    })

    describe("truncateReason", () => {
      it("keeps a reason that fits and cuts a longer one at 123 bytes, never inside a character", () => {
        for (const reason of ["", "going away", "a".repeat(123), "é".repeat(61) + "a", "😀".repeat(30) + "abc"]) {
          assert.strictEqual(CloseStatus.truncateReason(reason), reason)
        }
        assert.strictEqual(CloseStatus.truncateReason("a".repeat(124)), "a".repeat(123))
        assert.strictEqual(CloseStatus.truncateReason("é".repeat(62)), "é".repeat(61)) // 122 bytes: the next é would make 124
        assert.strictEqual(CloseStatus.truncateReason("€".repeat(42)), "€".repeat(41))
        assert.strictEqual(CloseStatus.truncateReason("a" + "😀".repeat(31)), "a" + "😀".repeat(30)) // 121 bytes
        assert.strictEqual(CloseStatus.truncateReason("x".repeat(10_000)), "x".repeat(123))
      })

      it("fills the 123 bytes when the next character would still fit (Node 26's encodeInto stops short: nodejs/node#65994)", () => {
        assert.strictEqual(CloseStatus.truncateReason("\u0000Ѐ".repeat(42)), "\u0000Ѐ".repeat(41)) // 123 bytes
        assert.strictEqual(CloseStatus.truncateReason("a" + "Ѐ".repeat(70)), "a" + "Ѐ".repeat(61)) // 123 bytes
        assert.strictEqual(CloseStatus.truncateReason("ab" + "€".repeat(50)), "ab" + "€".repeat(40)) // 122 bytes
        assert.strictEqual(CloseStatus.truncateReason("abc" + "😀".repeat(40)), "abc" + "😀".repeat(30)) // 123 bytes
      })

      it("counts each character at the edges of the UTF-8 lengths as UTF-8 does", () => {
        // (U+007F/U+0080, U+07FF/U+0800 and U+FFFF/U+10000 change length; U+D800-U+DBFF start every pair)
        for (const c of ["\u007f", "\u0080", "\u07ff", "\u0800", "\ud7ff", "\ue000", "\uffff", "\u{10000}", "\u{103ff}", "\u{10400}", "\u{10ffff}"]) {
          const size = Buffer.byteLength(c, "utf8")
          const kept = c.repeat(Math.floor(123 / size))
          assert.strictEqual(CloseStatus.truncateReason(c.repeat(200)), kept, `U+${c.codePointAt(0)!.toString(16)}`)
          assert.strictEqual(CloseStatus.truncateReason("a" + c.repeat(200)).length, 1 + Math.floor(122 / size) * c.length)
        }
      })

      it("replaces lone surrogates, which have no UTF-8 encoding", () => {
        assert.strictEqual(CloseStatus.truncateReason("a\uD800b"), "a\uFFFDb")
        assert.strictEqual(CloseStatus.truncateReason("😀".slice(1) + "ok"), "\uFFFDok")
      })

      it.prop(
        "gives the longest prefix of the well-formed reason that CloseReason accepts",
        { unit: codeUnitString, text: Arbitrary.schema(Schema.String), times: intArbitrary(1, 70) },
        ({ text, times, unit }) => {
          for (const s of [text, unit.repeat(times), text.repeat(times), (unit + text).repeat(times)]) {
            const cut = CloseStatus.truncateReason(s)
            const wellFormed = s.toWellFormed()
            assert.isTrue(wellFormed.startsWith(cut), JSON.stringify(s))
            assert.strictEqual(decodeOk(CloseStatus.CloseReason, cut), cut)
            if (cut.length < wellFormed.length) {
              // one more character would not fit
              const next = String.fromCodePoint(wellFormed.codePointAt(cut.length)!)
              assert.isAbove(Buffer.byteLength(cut + next, "utf8"), 123, JSON.stringify(s))
            }
          }
        },
        // (strings and lists grow with the check's size, 10 by default: texts over 123 bytes unrepeated, units of up to 24)
        { arbitrary: { runs: 300, size: 250 } }
      )
    })

    it.prop(
      "accepts a string iff it is well formed and at most 123 UTF-8 bytes",
      { unit: codeUnitString, text: Arbitrary.schema(Schema.String), times: intArbitrary(1, 70) },
      ({ text, times, unit }) => {
        for (const s of [unit, text, unit.repeat(times), text.repeat(times), (unit + text).repeat(times)]) {
          const expected = s.isWellFormed() && Buffer.byteLength(s, "utf8") <= 123
          assert.strictEqual(Result.isSuccess(Schema.decodeUnknownResult(CloseStatus.CloseReason)(s)), expected, JSON.stringify(s))
        }
      },
      // (strings and lists grow with the check's size, 10 by default: texts over 123 bytes unrepeated, units of up to 24)
      { arbitrary: { runs: 300, size: 250 } }
    )
  })
})
