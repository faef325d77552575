import { assert, describe, it } from "@effect/vitest"
import { Arbitrary } from "effect"
import {
  completeBoundary,
  isValidUtf8,
  skipAscii,
  UTF8_ACCEPT,
  UTF8_NATIVE_THRESHOLD,
  UTF8_REJECT,
  utf8Step,
  utf8StepSimple
} from "../../src/internal/engine/utf8.ts"
import { codePoint, hex, int, toHex } from "./helpers.ts"

const encoder = new TextEncoder()
const decoder = new TextDecoder("utf-8", { fatal: true })
const nativeValid = (bytes: Uint8Array): boolean => {
  try {
    decoder.decode(bytes)
    return true
  } catch {
    return false
  }
}

/** Index of the byte at which the bytewise DFA first rejects, or -1. */
const firstRejection = (bytes: Uint8Array): number => {
  let state = UTF8_ACCEPT
  for (let i = 0; i < bytes.length; i++) {
    state = utf8StepSimple(state, bytes, i, i + 1)
    if (state === UTF8_REJECT) return i
  }
  return -1
}

/** The largest code point boundary of `bytes` (valid UTF-8) not after `position`. */
const boundaryAtOrBefore = (bytes: Uint8Array, position: number): number => {
  let i = position
  while (i > 0 && i < bytes.length && (bytes[i]! & 0xc0) === 0x80) i--
  return i
}

/** Valid UTF-8: up to 200 random code points, repeated up to `maxRepeat` times. */
const utf8Text = (maxRepeat: number) =>
  Arbitrary.all([int(0, 200), int(1, maxRepeat)]).pipe(
    Arbitrary.flatMap(([length, repeat]) =>
      Arbitrary.array(codePoint, { minLength: length, maxLength: length }).pipe(
        Arbitrary.map((codePoints) => encoder.encode(String.fromCodePoint(...codePoints).repeat(repeat)))
      )
    )
  )
/** Up to about 800 bytes, for properties that split at every position. */
const validUtf8 = utf8Text(1)
/** Up to about 6400 bytes, past the native threshold. */
const longValidUtf8 = utf8Text(8)

const INTERESTING_BYTES = [
  0x00, 0x41, 0x7f, 0x80, 0x8f, 0x90, 0x9f, 0xa0, 0xbf, 0xc0,
  0xc1, 0xc2, 0xdf, 0xe0, 0xed, 0xef, 0xf0, 0xf4, 0xf5, 0xff
]

/** Valid UTF-8 with a few bytes replaced (half by bytes at class edges) and an optional cut. */
const nearValid = (valid: Arbitrary.Arbitrary<Uint8Array>) => Arbitrary.all([
  valid,
  Arbitrary.array(Arbitrary.all([int(0, 1 << 20), int(0, 255), int(0, 1)]), { maxLength: 3 }),
  int(0, 1 << 20),
  int(0, 1)
]).pipe(
  Arbitrary.map(([valid, flips, cut, truncate]) => {
    const bytes = valid.slice()
    if (bytes.length === 0) return bytes
    for (const [position, value, interesting] of flips) {
      bytes[position % bytes.length] = interesting === 1 ? INTERESTING_BYTES[value % INTERESTING_BYTES.length]! : value
    }
    return truncate === 1 ? bytes.subarray(0, cut % (bytes.length + 1)) : bytes
  })
)
const nearValidUtf8 = nearValid(validUtf8)
const longNearValidUtf8 = nearValid(longValidUtf8)

describe("UTF-8 validation (RFC 3629, RFC 6455 section 8.1)", () => {
  it("accepts the edges of every sequence length", () => {
    const edges = ["", "a", "\u007f", "\u0080", "\u07ff", "\u0800", "\ud7ff", "\ue000", "\uffff", "\u{10000}"]
    for (const s of [...edges, "\u{10ffff}"]) {
      assert.isTrue(isValidUtf8(encoder.encode(s)), JSON.stringify(s))
    }
    assert.isTrue(isValidUtf8(hex("ed9fbf f48fbfbf efbfbf f0908080 c280 e0a080")))
  })

  it("fails as soon as detected", () => {
    // [bytes, index of the byte that makes them invalid]
    const cases: ReadonlyArray<readonly [string, number]> = [
      ["c0", 0], // overlong 2-byte lead
      ["c1", 0],
      ["f5", 0], // above U+10FFFF
      ["ff", 0],
      ["80", 0], // stray continuation
      ["bf", 0],
      ["41 80", 1],
      ["ed a0", 1], // surrogate U+D800
      ["ed bf", 1],
      ["e0 80", 1], // overlong 3-byte form
      ["e0 9f", 1],
      ["f0 80", 1], // overlong 4-byte form
      ["f0 8f", 1],
      ["f4 90", 1], // above U+10FFFF
      ["c2 41", 1], // missing continuation
      ["e2 82 41", 2],
      ["f0 9f 98 41", 3],
      ["c3 a9 c3 c3", 3]
    ]
    for (const [wire, at] of cases) {
      const bytes = hex(wire)
      const message = `${wire} at ${at}`
      assert.strictEqual(firstRejection(bytes), at, message)
      // whole, and as one piece per byte
      assert.strictEqual(utf8Step(UTF8_ACCEPT, bytes, 0, at + 1), UTF8_REJECT, message)
      assert.notStrictEqual(utf8Step(UTF8_ACCEPT, bytes, 0, at), UTF8_REJECT, message)
      let state = UTF8_ACCEPT
      for (let i = 0; i <= at; i++) state = utf8Step(state, bytes, i, i + 1)
      assert.strictEqual(state, UTF8_REJECT, message)
      // behind a long valid prefix, which takes the native path
      const long = new Uint8Array(UTF8_NATIVE_THRESHOLD + bytes.length)
      long.fill(0x61)
      long.set(bytes, UTF8_NATIVE_THRESHOLD)
      assert.strictEqual(utf8Step(UTF8_ACCEPT, long, 0, UTF8_NATIVE_THRESHOLD + at + 1), UTF8_REJECT, message)
      assert.notStrictEqual(utf8Step(UTF8_ACCEPT, long, 0, UTF8_NATIVE_THRESHOLD + at), UTF8_REJECT, message)
    }
  })

  it("rejects an incomplete sequence at the end of a message", () => {
    for (const wire of ["c3", "e2 82", "f0 9f 98"]) {
      const state = utf8Step(UTF8_ACCEPT, hex(wire), 0, hex(wire).length)
      assert.notStrictEqual(state, UTF8_ACCEPT, wire)
      assert.notStrictEqual(state, UTF8_REJECT, wire)
      assert.isFalse(isValidUtf8(hex(wire)), wire)
    }
  })

  it("agrees with TextDecoder on every 1- and 2-byte input", () => {
    const bytes = new Uint8Array(2)
    for (let a = 0; a < 256; a++) {
      bytes[0] = a
      assert.strictEqual(isValidUtf8(bytes, 0, 1), nativeValid(bytes.subarray(0, 1)), `${a}`)
      for (let b = 0; b < 256; b++) {
        bytes[1] = b
        if (isValidUtf8(bytes) !== nativeValid(bytes)) assert.fail(`${a.toString(16)} ${b.toString(16)}`)
      }
    }
  })

  it("agrees with TextDecoder on 3- and 4-byte inputs: every lead and second byte, class-edge tails", () => {
    const edges = [0x00, 0x7f, 0x80, 0x8f, 0x90, 0x9f, 0xa0, 0xbf, 0xc0, 0xff]
    const three = new Uint8Array(3)
    const four = new Uint8Array(4)
    for (let a = 0xe0; a <= 0xf5; a++) {
      for (let b = 0; b < 256; b++) {
        for (const c of edges) {
          three[0] = a
          three[1] = b
          three[2] = c
          if (isValidUtf8(three) !== nativeValid(three)) assert.fail(`${a} ${b} ${c}`)
          if (a < 0xf0) continue
          for (const d of [0x7f, 0x80, 0xbf, 0xc0]) {
            four[0] = a
            four[1] = b
            four[2] = c
            four[3] = d
            if (isValidUtf8(four) !== nativeValid(four)) assert.fail(`${a} ${b} ${c} ${d}`)
          }
        }
      }
    }
  })

  it("agrees with TextDecoder on sequences followed by more input: every lead and second byte, class-edge tails", () => {
    // with 4 bytes or more left (and fewer than the native thresholds), a sequence is checked whole
    // from its lead byte rather than byte by byte through the DFA
    const edges = [0x00, 0x7f, 0x80, 0x8f, 0x90, 0x9f, 0xa0, 0xbf, 0xc0, 0xff]
    const bytes = new Uint8Array(6)
    bytes[5] = 0x41
    for (let a = 0xc0; a <= 0xf5; a++) {
      bytes[0] = a
      for (let b = 0; b < 256; b++) {
        bytes[1] = b
        for (const c of edges) {
          bytes[2] = c
          for (const d of [0x41, 0x80]) {
            bytes[3] = d
            bytes[4] = d === 0x80 ? 0x80 : 0x41
            if (isValidUtf8(bytes) !== nativeValid(bytes)) assert.fail(toHex(bytes))
          }
        }
      }
    }
  }, 30_000) // (about 270 000 inputs: seconds on a busy machine)

  it("carries a split sequence across pieces on the native path", () => {
    const emoji = encoder.encode("\u{1f600}")
    const bytes = new Uint8Array(UTF8_NATIVE_THRESHOLD * 2 + emoji.length)
    bytes.fill(0x61)
    bytes.set(emoji, UTF8_NATIVE_THRESHOLD)
    bytes.set(emoji, bytes.length - emoji.length)
    for (let split = 1; split < emoji.length; split++) {
      const middle = UTF8_NATIVE_THRESHOLD + split
      const state = utf8Step(UTF8_ACCEPT, bytes, 0, middle)
      assert.notStrictEqual(state, UTF8_ACCEPT)
      assert.notStrictEqual(state, UTF8_REJECT)
      const open = utf8Step(state, bytes, middle, bytes.length - split)
      assert.notStrictEqual(open, UTF8_ACCEPT)
      assert.notStrictEqual(open, UTF8_REJECT)
      assert.strictEqual(utf8Step(state, bytes, middle, bytes.length), UTF8_ACCEPT)
    }
  })

  it.prop("isValidUtf8 agrees with a fatal TextDecoder", [longNearValidUtf8], ([bytes]) => {
    assert.strictEqual(isValidUtf8(bytes), nativeValid(bytes))
    assert.strictEqual(utf8StepSimple(UTF8_ACCEPT, bytes, 0, bytes.length) === UTF8_ACCEPT, nativeValid(bytes))
  })

  it.prop("utf8Step ends in the state of its bytewise twin, whole or split anywhere", [nearValidUtf8], ([bytes]) => {
    const expected = utf8StepSimple(UTF8_ACCEPT, bytes, 0, bytes.length)
    assert.strictEqual(utf8Step(UTF8_ACCEPT, bytes, 0, bytes.length), expected)
    for (let split = 0; split <= bytes.length; split++) {
      const state = utf8Step(utf8Step(UTF8_ACCEPT, bytes, 0, split), bytes, split, bytes.length)
      if (state !== expected) assert.fail(`split at ${split}: ${state} instead of ${expected}`)
    }
  })

  it.prop("invalid input is rejected by the piece holding the first offending byte", [
    longNearValidUtf8,
    int(1, 1024)
  ], ([bytes, pieceLength]) => {
    const at = firstRejection(bytes)
    let state = UTF8_ACCEPT
    for (let start = 0; start < bytes.length; start += pieceLength) {
      const end = Math.min(start + pieceLength, bytes.length)
      state = utf8Step(state, bytes, start, end)
      if (at >= 0 && at < end) {
        assert.strictEqual(state, UTF8_REJECT, `byte ${at}, piece ${start}..${end}`)
        return
      }
      assert.notStrictEqual(state, UTF8_REJECT, `rejected at ${start}..${end} without a rejection`)
    }
    assert.strictEqual(at, -1)
  })

  it.prop("valid input split at every position ends in ACCEPT", [validUtf8], ([bytes]) => {
    for (let split = 0; split <= bytes.length; split++) {
      const state = utf8Step(utf8Step(UTF8_ACCEPT, bytes, 0, split), bytes, split, bytes.length)
      if (state !== UTF8_ACCEPT) assert.fail(`split at ${split}: ${state}`)
    }
  })
})

describe("ASCII runs (skipAscii)", () => {
  /** ASCII bytes with a few non-ASCII ones, at any offset of a 4-aligned buffer. */
  const mostlyAscii = Arbitrary.all([
    Arbitrary.array(int(0, 0x7f), { minLength: 1, maxLength: 300 }),
    // the non-ASCII bytes: word, byte in the word, value
    Arbitrary.array(Arbitrary.all([int(0, 80), int(0, 3), int(0x80, 0xff)]), { minLength: 1, maxLength: 2 }),
    int(0, 1 << 20),
    int(0, 1 << 20)
  ])

  it.prop("stops at or at most 3 bytes before the first non-ASCII byte, with only ASCII before", [mostlyAscii], (
    [[ascii, highs, a, b]]
  ) => {
    const bytes = new Uint8Array(ascii.length + 8)
    bytes.set(ascii, 4)
    for (const [word, lane, value] of highs) bytes[4 + ((4 * word + lane) % ascii.length)] = value
    const words = new Int32Array(bytes.buffer, 0, bytes.length >>> 2)
    const start = 4 + (a % 8)
    const end = Math.max(start, bytes.length - (b % 8))
    let first = start
    while (first < end && bytes[first]! < 0x80) first++
    const stop = skipAscii(bytes, words, start, end)
    if (first === end) assert.strictEqual(stop, end)
    else assert.isTrue(stop <= first && stop >= Math.max(start, first - 3), `${start}..${end}: ${stop} for ${first}`)
  }, { arbitrary: { size: 300, runs: 300 } }) // (arrays grow with `size`, 10 by default: runs of many words)
})

describe("code point boundaries (completeBoundary)", () => {
  it("holds back exactly the incomplete trailing sequence of every prefix", () => {
    for (const s of ["h\u00e9llo \u20ac \u{1f600}!", "\u{10ffff}\u0800\u0080\u007f", "\u{1f600}\u{1f600}", "\u00e9"]) {
      const bytes = encoder.encode(s)
      for (const start of [0, 1]) {
        // `start` must be a boundary
        if (boundaryAtOrBefore(bytes, start) !== start) continue
        for (let end = start; end <= bytes.length; end++) {
          const expected = Math.max(start, boundaryAtOrBefore(bytes, end))
          assert.strictEqual(completeBoundary(bytes, start, end), expected, `${JSON.stringify(s)} [${start}, ${end})`)
        }
      }
    }
  })

  it("stays within [max(start, end - 3), end] on invalid input", () => {
    const bytes = hex("80 80 80 80 80 f8 c3 ff e2 82 f0 9f 98 41")
    for (let start = 0; start <= bytes.length; start++) {
      for (let end = start; end <= bytes.length; end++) {
        const e = completeBoundary(bytes, start, end)
        assert.isAtLeast(e, Math.max(start, end - 3))
        assert.isAtMost(e, end)
      }
    }
  })

  it("holds back nothing after a byte that starts no sequence (C0-C1 start 2-byte forms, F5-F7 4-byte ones, F8-FF none)", () => {
    for (let lead = 0xf8; lead <= 0xff; lead++) {
      assert.strictEqual(completeBoundary(Uint8Array.of(0x41, lead), 0, 2), 2, `${lead.toString(16)} at the end`)
      assert.strictEqual(completeBoundary(Uint8Array.of(0x41, lead, 0x80), 0, 3), 3, `${lead.toString(16)} 80 at the end`)
    }
    assert.strictEqual(completeBoundary(Uint8Array.of(0x41, 0xf7, 0x80), 0, 3), 1)
  })

  it.prop("every prefix of valid input is cut at its last complete code point", [longValidUtf8], ([bytes]) => {
    for (let end = 0; end <= bytes.length; end++) {
      const e = completeBoundary(bytes, 0, end)
      if (e !== boundaryAtOrBefore(bytes, end)) assert.fail(`prefix ${end}: ${e}`)
    }
  })
})
