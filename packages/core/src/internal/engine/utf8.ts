/**
 * Incremental UTF-8 validation (RFC 3629 section 4, required of text frames and close reasons by
 * RFC 6455 sections 5.6 and 8.1): overlong forms, surrogates U+D800-U+DFFF, code points above
 * U+10FFFF, stray continuation bytes and bytes 0xC0, 0xC1, 0xF5-0xFF are rejected.
 *
 * The state is one number carried across frames, fragments and transport chunks: a state of Bjoern
 * Hoehrmann's UTF-8 DFA ("Flexible and Economical UTF-8 Decoder"), where {@link UTF8_ACCEPT} means
 * "at a code point boundary" and {@link UTF8_REJECT} is absorbing.
 *
 * @since 0.1.0
 */
import { nativeIsUtf8 as nativeIsUtf8Import } from "../runtime.ts"

// Micro-optimisation: a module-level alias is folded by V8, a read through the import is not.
const nativeIsUtf8 = nativeIsUtf8Import

/**
 * The DFA state at a code point boundary: the bytes so far are valid, complete UTF-8 (RFC 6455
 * section 8.1).
 *
 * @category constants
 * @since 0.1.0
 */
export const UTF8_ACCEPT = 0

/**
 * The DFA state once the bytes can no longer be valid UTF-8; it never changes again (RFC 6455
 * section 8.1: the endpoint "MUST _Fail the WebSocket Connection_").
 *
 * @category constants
 * @since 0.1.0
 */
export const UTF8_REJECT = 12

/**
 * From this many bytes {@link utf8Step} hands the bulk of its input to the runtime's fatal
 * `TextDecoder`; shorter input stays in JavaScript (RFC 6455 section 8.1 validation).
 *
 * **Details**
 *
 * Measured on Node 24.21 (x64), JavaScript path / `TextDecoder("utf-8", { fatal: true })`, in ns
 * per call:
 *
 * | bytes  | ASCII      | Latin-1 text | CJK        | emoji      | JSON, mostly ASCII |
 * | ------ | ---------- | ------------ | ---------- | ---------- | ------------------ |
 * | 125    | 56 / 72    | 89 / 191     | 97 / 154   | 87 / 169   | 62 / 171           |
 * | 256    | 129 / 135  | 171 / 216    | 204 / 185  | 186 / 170  | 119 / 163          |
 * | 512    | 228 / 89   | 340 / 258    | 471 / 244  | 389 / 245  | 249 / 245          |
 * | 1024   | 429 / 108  | 676 / 493    | 793 / 340  | 722 / 409  | 484 / 423          |
 * | 64 KiB | 26k / 3.8k | 46k / 19k    | 49k / 13k  | 46k / 22k  | 30k / 21k          |
 * | 1 MiB  | 411k / 98k | 691k / 448k  | 807k / 373k| 711k / 466k| 507k / 607k        |
 *
 * The decoder costs 70-190 ns per call and builds a string that is thrown away, but it is
 * vectorised: from 512 bytes it is faster or level for every kind of text, the one exception
 * being mostly-ASCII text at 1 MiB, where the JavaScript ASCII skip wins by about 17%. The plain
 * DFA ({@link utf8StepSimple}) runs at about 1.4 ns/byte, the JavaScript path at 0.4-0.8.
 *
 * @category constants
 * @since 0.1.0
 */
export const UTF8_NATIVE_THRESHOLD = 512

/**
 * Hoehrmann's DFA in one table: bytes 0-255 map a byte to its character class, then from 256 on
 * `state + class` maps to the next state (states are multiples of 12).
 *
 * Classes: 0 ASCII; 1 continuation 80-8F; 9 continuation 90-9F; 7 continuation A0-BF; 8 never
 * valid (C0, C1, F5-FF); 2 lead C2-DF; 10 lead E0; 3 lead E1-EC, EE, EF; 4 lead ED; 11 lead F0;
 * 6 lead F1-F3; 5 lead F4.
 */
const DFA = new Uint8Array(256 + 108)
DFA.fill(1, 0x80, 0x90)
DFA.fill(9, 0x90, 0xa0)
DFA.fill(7, 0xa0, 0xc0)
DFA.fill(8, 0xc0, 0xc2)
DFA.fill(2, 0xc2, 0xe0)
DFA[0xe0] = 10
DFA.fill(3, 0xe1, 0xf0)
DFA[0xed] = 4
DFA[0xf0] = 11
DFA.fill(6, 0xf1, 0xf4)
DFA[0xf4] = 5
DFA.fill(8, 0xf5, 0x100)
DFA.set([
  // 0: at a boundary
  0, 12, 24, 36, 60, 96, 84, 12, 12, 12, 48, 72,
  // 12: rejected
  12, 12, 12, 12, 12, 12, 12, 12, 12, 12, 12, 12,
  // 24: one continuation byte left
  12, 0, 12, 12, 12, 12, 12, 0, 12, 0, 12, 12,
  // 36: two continuation bytes left
  12, 24, 12, 12, 12, 12, 12, 24, 12, 24, 12, 12,
  // 48: after E0, A0-BF (no overlong 3-byte form)
  12, 12, 12, 12, 12, 12, 12, 24, 12, 12, 12, 12,
  // 60: after ED, 80-9F (no surrogates)
  12, 24, 12, 12, 12, 12, 12, 12, 12, 24, 12, 12,
  // 72: after F0, 90-BF (no overlong 4-byte form)
  12, 12, 12, 12, 12, 12, 12, 36, 12, 36, 12, 12,
  // 84: after F1-F3, three continuation bytes left
  12, 36, 12, 12, 12, 12, 12, 36, 12, 36, 12, 12,
  // 96: after F4, 80-8F (nothing above U+10FFFF)
  12, 36, 12, 12, 12, 12, 12, 12, 12, 12, 12, 12
], 256)

const CLASS_TABLE_SIZE = 256
const CONTINUATION_MASK = 0xc0
const CONTINUATION_BITS = 0x80
const ASCII_LIMIT = 0x80
/** First byte of the 2-byte form (C0 and C1 only start overlong forms). */
const LEAD2_FORM = 0xc0
/** Lowest lead byte that is not an overlong 2-byte form. */
const LEAD2_MIN = 0xc2
const LEAD3_MIN = 0xe0
const LEAD4_MIN = 0xf0
/** Highest lead byte at or below U+10FFFF. */
const LEAD4_MAX = 0xf4
/** End of the 4-byte form (F8-FF start no sequence). */
const LEAD4_FORM_END = 0xf8
/** Longest UTF-8 sequence (RFC 3629 section 3). */
const MAX_SEQUENCE_LENGTH = 4

/** What is used of the runtime's `TextDecoder`. */
interface Decoder {
  decode(input: Uint8Array): string
}

// The runtime's validating decoder, where there is one (`globalThis` only, no platform import).
const nativeDecoder: Decoder | undefined = typeof globalThis.TextDecoder === "function"
  ? new globalThis.TextDecoder("utf-8", { fatal: true })
  : undefined

/**
 * Input length from which {@link nativeIsUtf8} beats the JavaScript path, creating the view included
 * (measured: about even at 32 bytes, 3x faster at 125).
 *
 * @since 0.1.0
 */
export const UTF8_IS_UTF8_THRESHOLD = 48

/** Whether the runtime's decoder accepts `bytes[start, end)`; it throws on invalid input. */
const nativeValid = (decoder: Decoder, bytes: Uint8Array, start: number, end: number): boolean => {
  try {
    decoder.decode(bytes.subarray(start, end))
    return true
  } catch {
    return false
  }
}

/**
 * The reference twin of {@link utf8Step}: Hoehrmann's DFA, one table step per byte (RFC 3629;
 * RFC 6455 section 8.1).
 *
 * @category combinators
 * @since 0.1.0
 */
export const utf8StepSimple = (state: number, bytes: Uint8Array, start: number, end: number): number => {
  for (let i = start; i < end; i++) {
    state = DFA[CLASS_TABLE_SIZE + state + DFA[bytes[i]!]!]!
    if (state === UTF8_REJECT) return UTF8_REJECT
  }
  return state
}

/** The JavaScript path of {@link utf8Step}, called with any state. */
const stepJs = (state: number, bytes: Uint8Array, start: number, end: number): number => {
  let i = start
  // finish a sequence left open by the previous piece
  while (state !== UTF8_ACCEPT && i < end) {
    state = DFA[CLASS_TABLE_SIZE + state + DFA[bytes[i]!]!]!
    if (state === UTF8_REJECT) return UTF8_REJECT
    i++
  }
  // Micro-optimisation: at a boundary with at least 4 bytes left, skip ASCII runs and check
  // whole sequences by their lead byte, which breaks the DFA's byte-to-byte dependency
  // (0.4-0.8 ns/byte instead of 1.4). The last 3 bytes, possibly a split sequence, go to the DFA.
  const stop = end - (MAX_SEQUENCE_LENGTH - 1)
  while (i < stop) {
    let c = bytes[i]!
    if (c < ASCII_LIMIT) {
      i++
      while (i < end && (c = bytes[i]!) < ASCII_LIMIT) i++
      if (i >= stop) break
    }
    if (c < LEAD3_MIN) {
      // C2-DF 80-BF; 80-C1 here is a stray continuation or an overlong form
      if (c < LEAD2_MIN || (bytes[i + 1]! & CONTINUATION_MASK) !== CONTINUATION_BITS) return UTF8_REJECT
      i += 2
    } else if (c < LEAD4_MIN) {
      // E0 A0-BF, E1-EC 80-BF, ED 80-9F, EE-EF 80-BF; then one continuation byte
      const c1 = bytes[i + 1]!
      if (
        (c1 & CONTINUATION_MASK) !== CONTINUATION_BITS ||
        (bytes[i + 2]! & CONTINUATION_MASK) !== CONTINUATION_BITS ||
        (c === LEAD3_MIN && c1 < 0xa0) ||
        (c === 0xed && c1 > 0x9f)
      ) return UTF8_REJECT
      i += 3
    } else {
      // F0 90-BF, F1-F3 80-BF, F4 80-8F; then two continuation bytes
      const c1 = bytes[i + 1]!
      if (
        c > LEAD4_MAX ||
        (c1 & CONTINUATION_MASK) !== CONTINUATION_BITS ||
        (bytes[i + 2]! & CONTINUATION_MASK) !== CONTINUATION_BITS ||
        (bytes[i + 3]! & CONTINUATION_MASK) !== CONTINUATION_BITS ||
        (c === LEAD4_MIN && c1 < 0x90) ||
        (c === LEAD4_MAX && c1 > 0x8f)
      ) return UTF8_REJECT
      i += 4
    }
  }
  for (; i < end; i++) {
    const c = bytes[i]!
    if (state === UTF8_ACCEPT && c < ASCII_LIMIT) continue // micro-optimisation: ASCII tail
    state = DFA[CLASS_TABLE_SIZE + state + DFA[c]!]!
    if (state === UTF8_REJECT) return UTF8_REJECT
  }
  return state
}

/**
 * Advances the validation state over `bytes[start, end)` and returns the new state (RFC 3629;
 * RFC 6455 section 8.1).
 *
 * **Details**
 *
 * {@link UTF8_ACCEPT}: the bytes so far end on a code point boundary. {@link UTF8_REJECT}: they are
 * invalid, returned by the call whose piece holds the first offending byte (spec 7.2: fail as
 * soon as detected). Any other value: they end inside a sequence, which the next piece must complete; a text message
 * that ends in such a state is invalid. From {@link UTF8_NATIVE_THRESHOLD} bytes the complete
 * sequences go to the runtime's fatal `TextDecoder` and only a split trailing sequence to the DFA,
 * so the result is the same as the JavaScript path's.
 *
 * @category combinators
 * @since 0.1.0
 */
export const utf8Step = (state: number, bytes: Uint8Array, start: number, end: number): number => {
  const length = end - start
  const native = nativeIsUtf8 !== undefined
    ? length >= UTF8_IS_UTF8_THRESHOLD
    : length >= UTF8_NATIVE_THRESHOLD && nativeDecoder !== undefined
  if (!native || state === UTF8_REJECT) return stepJs(state, bytes, start, end)
  let i = start
  // finish a sequence left open by the previous piece (at most 3 bytes)
  while (state !== UTF8_ACCEPT && i < end) {
    state = DFA[CLASS_TABLE_SIZE + state + DFA[bytes[i]!]!]!
    if (state === UTF8_REJECT) return UTF8_REJECT
    i++
  }
  // Micro-optimisation: the vectorised native decoder for the bulk (see UTF8_NATIVE_THRESHOLD). It
  // sees whole sequences only; a sequence split at `end` stays with the DFA, keeping the state exact.
  const boundary = completeBoundary(bytes, i, end)
  const valid = nativeIsUtf8 !== undefined
    ? nativeIsUtf8(bytes.subarray(i, boundary))
    : nativeValid(nativeDecoder!, bytes, i, boundary)
  if (!valid) return UTF8_REJECT
  return stepJs(UTF8_ACCEPT, bytes, boundary, end)
}

/**
 * Up to this many bytes, text bound for the native check is first checked for ASCII a word at a
 * time ({@link skipAscii}): pure ASCII (most JSON) then needs no native call, whose fixed price
 * (about 30 ns) is what the word loop costs at about 300 bytes (measured on Node 24.21: 125 bytes
 * of ASCII about 12 ns faster, 256 about 6, 384 about 11 slower).
 *
 * @category constants
 * @since 0.1.0
 */
export const ASCII_WORDS_LIMIT = 256

const ASCII_WORD_MASK = 0x80808080 | 0

/**
 * The end of the ASCII run at `bytes[start, end)`: `end` when it is all ASCII, else a position at
 * or before the first non-ASCII byte with only ASCII before it (a code point boundary). Read
 * through `words`, an `Int32Array` over the memory of `bytes` from the same 4-aligned offset
 * (`words[k]` = `bytes[4k, 4k+4)`).
 *
 * @category combinators
 * @since 0.1.0
 */
export const skipAscii = (bytes: Uint8Array, words: Int32Array, start: number, end: number): number => {
  let i = start
  // up to the first word boundary, then whole words, then the tail
  while (i < end && (i & 3) !== 0) {
    if (bytes[i]! >= ASCII_LIMIT) return i
    i++
  }
  const last = end >>> 2
  let w = i >>> 2
  // Micro-optimisation: four words a test (125 bytes of ASCII: about 19 ns instead of 23, 256: 29
  // instead of 41), then the word that is not ASCII found one at a time.
  const lastBlock = w + ((last - w) & ~3)
  while (w < lastBlock && ((words[w]! | words[w + 1]! | words[w + 2]! | words[w + 3]!) & ASCII_WORD_MASK) === 0) w += 4
  while (w < last && (words[w]! & ASCII_WORD_MASK) === 0) w++
  if (w < last) return w << 2
  for (i = i > last << 2 ? i : last << 2; i < end; i++) {
    if (bytes[i]! >= ASCII_LIMIT) return i
  }
  return end
}

/**
 * The largest `e` in `[max(start, end - 3), end]` such that `bytes[start, e)` ends on a code
 * point boundary, given that `bytes[start]` starts one (RFC 3629 section 3).
 *
 * **Details**
 *
 * `end - e` is the number of trailing bytes of an incomplete sequence to hold back when a text
 * message is handed out in pieces, so that every piece is valid UTF-8 on its own. The sequence
 * length is read from the lead byte; validity is {@link utf8Step}'s business, so for invalid
 * input the result is only guaranteed to lie in the range.
 *
 * @category combinators
 * @since 0.1.0
 */
export const completeBoundary = (bytes: Uint8Array, start: number, end: number): number => {
  // walk back over at most 3 continuation bytes to the lead byte of the last sequence
  let i = end
  while (i > start && end - i < MAX_SEQUENCE_LENGTH - 1 && (bytes[i - 1]! & CONTINUATION_MASK) === CONTINUATION_BITS) {
    i--
  }
  if (i === start) return end
  const lead = bytes[i - 1]!
  const length = lead < LEAD2_FORM ? 1 : lead < LEAD3_MIN ? 2 : lead < LEAD4_MIN ? 3 : lead < LEAD4_FORM_END ? 4 : 1
  return end - (i - 1) < length ? i - 1 : end
}

/**
 * Whether `bytes[start, end)` is complete, valid UTF-8 (RFC 3629), e.g. a close reason
 * (RFC 6455 section 5.5.1).
 *
 * @category guards
 * @since 0.1.0
 */
export const isValidUtf8 = (bytes: Uint8Array, start: number = 0, end: number = bytes.length): boolean =>
  utf8Step(UTF8_ACCEPT, bytes, start, end) === UTF8_ACCEPT
