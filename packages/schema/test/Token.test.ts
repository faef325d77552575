import { assert, describe, it } from "@effect/vitest"
import { Arbitrary, Result, Schema } from "effect"
import { HandshakeHeaders, Token } from "../src/index.ts"
import {
  applyEdits,
  assertRejects,
  choices,
  decodeOk,
  editsArbitrary,
  noiseArbitrary,
  oneOf,
  stringOver,
  TCHAR,
  TCHARS,
  tokenArbitrary
} from "./utils.ts"

const TCHAR_RE = new RegExp(`^[${TCHAR}]$`)

describe("Token", () => {
  describe("isTokenChar", () => {
    it("accepts exactly the RFC 7230 tchar set over every UTF-16 code unit", () => {
      const wrong: Array<number> = []
      for (let code = 0; code <= 0xffff; code++) {
        if (Token.isTokenChar(code) !== TCHAR_RE.test(String.fromCharCode(code))) wrong.push(code)
      }
      assert.deepStrictEqual(wrong, [])
    })

    it("rejects space, tab, DEL and every separator", () => {
      for (const c of [" ", "\t", "\x7f", ..."()<>@,;:\\\"/[]?={}"]) {
        assert.isFalse(Token.isTokenChar(c.charCodeAt(0)), JSON.stringify(c))
      }
    })

    it("accepts the punctuation tchar allows", () => {
      for (const c of "!#$%&'*+-.^_`|~") assert.isTrue(Token.isTokenChar(c.charCodeAt(0)), c)
      assert.strictEqual(TCHARS.length, 26 * 2 + 10 + 15)
    })
  })

  describe("isToken", () => {
    it("accepts non-empty runs of tchar", () => {
      for (const s of ["a", "chat", "permessage-deflate", "x-1.0", "!#$%&'*+-.^_`|~", "A9"]) {
        assert.isTrue(Token.isToken(s), s)
      }
    })

    it("rejects the empty string, separators, whitespace and non-ASCII", () => {
      for (const s of ["", "a b", "su/per", "ch@t", "a,b", "a;b", "a=b", "\"a\"", " a", "a\t", "é", "a\u0000", "😀"]) {
        assert.isFalse(Token.isToken(s), JSON.stringify(s))
      }
    })
  })

  describe("splitList", () => {
    it("splits on commas and trims spaces and tabs", () => {
      assert.deepStrictEqual(Token.splitList("a, b,\tc ,d"), ["a", "b", "c", "d"])
    })

    it("drops empty elements", () => {
      assert.deepStrictEqual(Token.splitList("a, , b"), ["a", "b"])
      assert.deepStrictEqual(Token.splitList(",a,,b,"), ["a", "b"])
      assert.deepStrictEqual(Token.splitList(""), [])
      assert.deepStrictEqual(Token.splitList(" , \t,"), [])
    })

    it("keeps inner whitespace and trims nothing but spaces and tabs", () => {
      assert.deepStrictEqual(Token.splitList(" a b , c"), ["a b", "c"])
      assert.deepStrictEqual(Token.splitList("\na\r"), ["\na\r"])
    })

    it.prop(
      "is the elements split at commas, trimmed of spaces and tabs, the empty ones dropped",
      [stringOver([" ", "\t", ",", "a", "b", "\r"], 40)],
      ([value]) => {
        const expected = value.split(",").map((part) => part.replace(/^[ \t]+/, "").replace(/[ \t]+$/, "")).filter((e) => e !== "")
        assert.deepStrictEqual(Token.splitList(value), expected)
      },
      // (strings and lists grow with the check's size, 10 by default: strings of up to 40 pieces)
      { arbitrary: { size: 80 } }
    )

    it("splits a value with a long run of blanks inside an element in one pass (it comes from the peer)", () => {
      // (trimming with /^[ \t]+|[ \t]+$/g took time quadratic in the run: minutes for this one)
      const run = " ".repeat(400_000)
      assert.deepStrictEqual(Token.splitList(`x, a${run}b ,\t${run}`), ["x", `a${run}b`])
    })
  })

  describe("trimOws", () => {
    it("drops the spaces and tabs around a value and nothing else", () => {
      assert.strictEqual(Token.trimOws(" \t13 \t"), "13")
      assert.strictEqual(Token.trimOws("a b"), "a b")
      assert.strictEqual(Token.trimOws(" \t "), "")
      // (other whitespace is part of the value: U+00A0 is obsolete text, CR and LF are refused elsewhere)
      assert.strictEqual(Token.trimOws("\u00a0a\r\n"), "\u00a0a\r\n")
    })

    it("trims a long run of blanks in one pass (the value comes from the peer)", () => {
      const run = " ".repeat(400_000)
      assert.strictEqual(Token.trimOws(`${run}a${run}b${run}`), `a${run}b`)
    })
  })

  describe("tokenListProblem", () => {
    it("is undefined for a valid list", () => {
      assert.isUndefined(Token.tokenListProblem("chat, superchat"))
      assert.isUndefined(Token.tokenListProblem("a,,b"))
    })

    it("names the offending element", () => {
      assert.strictEqual(Token.tokenListProblem("chat, a b"), `has "a b", which is not a token`)
      assert.strictEqual(Token.tokenListProblem(""), "must list at least one token")
      assert.strictEqual(Token.tokenListProblem(" , "), "must list at least one token")
    })
  })

  describe("Token schema", () => {
    it("decodes a token unchanged", () => {
      assert.strictEqual(decodeOk(Token.Token, "chat"), "chat")
    })

    it("rejects non-tokens with the value in the message", () => {
      assertRejects(Token.Token, "", `must be a token, got ""`)
      assertRejects(Token.Token, "a b", `must be a token, got "a b"`)
      assertRejects(Token.Token, "ch@t", `"ch@t"`)
    })

    it("rejects non-strings", () => {
      for (const input of [1, null, undefined, ["chat"], { chat: true }]) {
        assert.isTrue(Result.isFailure(Schema.decodeUnknownResult(Token.Token)(input)))
      }
    })
  })

  describe("TokenList schema", () => {
    it("decodes to the listed tokens", () => {
      assert.deepStrictEqual<unknown>(decodeOk(Token.TokenList, "chat, superchat"), ["chat", "superchat"])
      assert.deepStrictEqual<unknown>(decodeOk(Token.TokenList, "chat"), ["chat"])
      assert.deepStrictEqual<unknown>(decodeOk(Token.TokenList, " a ,\tb\t"), ["a", "b"])
    })

    it("ignores empty elements", () => {
      assert.deepStrictEqual<unknown>(decodeOk(Token.TokenList, "a,,b"), ["a", "b"])
      assert.deepStrictEqual<unknown>(decodeOk(Token.TokenList, ", a, , b,"), ["a", "b"])
    })

    it("rejects an element that is not a token, naming it", () => {
      assertRejects(Token.TokenList, "a b", `has "a b", which is not a token`)
      assertRejects(Token.TokenList, "chat, su/per", `"su/per"`, "not a token")
      assertRejects(Token.TokenList, "ch@t", `"ch@t"`, "not a token")
    })

    it("rejects a list without tokens", () => {
      assertRejects(Token.TokenList, "", "at least one token")
      assertRejects(Token.TokenList, ",", "at least one token")
      assertRejects(Token.TokenList, " \t, ", "at least one token")
    })

    it("encodes as a comma-and-space separated list", () => {
      const tokens = (...ts: ReadonlyArray<string>) => decodeOk(Schema.NonEmptyArray(Token.Token), ts)
      assert.strictEqual(Schema.encodeSync(Token.TokenList)(tokens("a", "b", "c")), "a, b, c")
      assert.strictEqual(Schema.encodeSync(Token.TokenList)(tokens("chat")), "chat")
    })
  })

  describe("properties", () => {
    const edge = oneOf(["", " ", "\t", ",", ", ", " ,\t, "])

    const render = (tokens: ReadonlyArray<string>, noise: ReadonlyArray<number>): string => {
      const pick = choices(noise)
      const seps = [",", ", ", " ,", "\t,\t", ",,", ", ,", " , \t, ", ",\t\t"]
      return tokens.map((t, i) => (i === 0 ? "" : seps[pick(seps.length)]!) + t).join("")
    }

    // Distinct tokens: a subprotocol offer names each once.
    const distinctTokens = Arbitrary.map(
      Arbitrary.array(tokenArbitrary, { minLength: 1, maxLength: 8 }),
      (tokens) => [...new Set(tokens)]
    )

    for (const [name, schema] of [["TokenList", Token.TokenList], ["SecWebSocketProtocol", HandshakeHeaders.SecWebSocketProtocol]] as const) {
      it.prop(
        `${name}: tokens encode and decode back`,
        { tokens: distinctTokens },
        ({ tokens }) => {
          const encoded = Schema.encodeSync(schema)(decodeOk(Schema.NonEmptyArray(Token.Token), tokens))
          assert.strictEqual(encoded, tokens.join(", "))
          assert.deepStrictEqual<unknown>(decodeOk(schema, encoded), tokens)
        },
        { arbitrary: { runs: 300 } }
      )

      it.prop(
        `${name}: empty elements and whitespace around elements do not change the tokens`,
        {
          tokens: distinctTokens,
          noise: noiseArbitrary,
          lead: edge,
          trail: edge
        },
        ({ lead, noise, tokens, trail }) => {
          const rendered = lead + render(tokens, noise) + trail
          assert.deepStrictEqual<unknown>(decodeOk(schema, rendered), tokens, JSON.stringify(rendered))
        },
        { arbitrary: { runs: 300 } }
      )
    }

    // The list grammar written as a regular expression, independently of the scanner.
    const T = `[${TCHAR}]+`
    const TOKEN_LIST_RE = new RegExp(`^[ \\t,]*${T}(?:[ \\t]*,[ \\t,]*${T})*[ \\t,]*$`)

    it.prop(
      "TokenList accepts a string iff it matches the 1#token grammar, and decodes to its elements",
      { s: stringOver(["a", "Z", "9", "-", " ", "\t", ",", ",", "/", "@", "\"", "é", "\n"], 14) },
      ({ s }) => {
        const result = Schema.decodeUnknownResult(Token.TokenList)(s)
        assert.strictEqual(Result.isSuccess(result), TOKEN_LIST_RE.test(s), JSON.stringify(s))
        if (Result.isSuccess(result)) {
          const expected = s.split(",").map((e) => e.replace(/^[ \t]+|[ \t]+$/g, "")).filter((e) => e !== "")
          assert.deepStrictEqual<unknown>(result.success, expected)
        }
      },
      // (strings and lists grow with the check's size, 10 by default: strings of up to 14 pieces)
      { arbitrary: { runs: 1000, size: 28 } }
    )

    it.prop(
      "an edited token list decodes iff it still matches the grammar",
      {
        tokens: Arbitrary.array(tokenArbitrary, { minLength: 1, maxLength: 6 }),
        noise: noiseArbitrary,
        edits: editsArbitrary([" ", "\t", ",", "/", "@", "\"", "a", "\n"])
      },
      ({ edits, noise, tokens }) => {
        const s = applyEdits(render(tokens, noise), edits)
        const result = Schema.decodeUnknownResult(Token.TokenList)(s)
        assert.strictEqual(Result.isSuccess(result), TOKEN_LIST_RE.test(s), JSON.stringify(s))
        assert.strictEqual(Token.tokenListProblem(s) === undefined, TOKEN_LIST_RE.test(s), JSON.stringify(s))
      },
      { arbitrary: { runs: 1000 } }
    )
  })
})
