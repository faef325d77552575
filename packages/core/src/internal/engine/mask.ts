/**
 * Payload masking (RFC 6455 section 5.3): every byte of a client frame's payload is XORed with
 * octet `i MOD 4` of the frame's 32-bit masking key. Unmasking is the same operation.
 *
 * A payload may be (un)masked in several pieces, as transport reads arrive or send buffers fill,
 * so every function takes the key position of its first byte (`keyOffset`, 0..3); the position
 * after a piece of `n` bytes is `(keyOffset + n) & 3`.
 *
 * Sans-I/O and allocation-free below the word thresholds: plain loops on `Uint8Array`. Where the
 * optional package `bufferutil` is installed (as for `ws`), long ranges go to its native loop.
 *
 * @since 0.1.0
 */
import { nativeMask as nativeMaskImport } from "../runtime.ts"

// Micro-optimisation: a module-level alias is folded by V8, a read through the import is not.
const nativeMask = nativeMaskImport

/**
 * From this many bytes {@link applyMask} hands the range to `bufferutil`'s native loop when it is
 * installed (RFC 6455 section 5.3 masking).
 *
 * **Details**
 *
 * Measured on Node 24.21 (x64), word loop / native call with the view it needs, in ns: 512 B
 * 55 / 73, 640 B 66 / 76, 768 B 75 / 77, 1 KiB 96 / 82, 4 KiB 397 / 179, 64 KiB 5.9k / 1.3k,
 * 1 MiB 96k / 20k.
 *
 * @category constants
 * @since 0.1.0
 */
export const MASK_NATIVE_THRESHOLD = 768

/**
 * From this many bytes {@link maskInto} hands the copy to `bufferutil`'s native loop when it is
 * installed (RFC 6455 section 5.3 masking).
 *
 * **Details**
 *
 * Measured on Node 24.21 (x64), JavaScript (a copy, then the word loop) / native call, in ns:
 * 125 B 41 / 82, 256 B 56 / 86, 384 B 77 / 88, 448 B 86 / 90, 512 B 93 / 93, 640 B 111 / 97,
 * 1 KiB 163 / 110. `ws` masks from 48 B natively, which makes its 125-byte client frames slower
 * than ours.
 *
 * @category constants
 * @since 0.1.0
 */
export const MASK_INTO_NATIVE_THRESHOLD = 512

/**
 * Masks or unmasks `data[start, end)` in place, `keyOffset` being the key position (0..3) of
 * `data[start]` (RFC 6455 section 5.3): the shape of {@link applyMask} and its twins.
 *
 * @category models
 * @since 0.1.0
 */
export type MaskInPlace = (data: Uint8Array, start: number, end: number, key: Uint8Array, keyOffset: number) => void

/**
 * Writes `source[sourceStart, sourceEnd)` masked into `target` from `targetStart`, `keyOffset`
 * being the key position (0..3) of `source[sourceStart]` (RFC 6455 section 5.3): the shape of
 * {@link maskInto} and its twin.
 *
 * @category models
 * @since 0.1.0
 */
export type MaskCopy = (
  source: Uint8Array,
  sourceStart: number,
  sourceEnd: number,
  target: Uint8Array,
  targetStart: number,
  key: Uint8Array,
  keyOffset: number
) => void

/** Whether `key` is all zero (DISABLE_MASKING, unmasked frames): XOR with it is the identity. */
const isZeroKey = (key: Uint8Array): boolean => (key[0]! | key[1]! | key[2]! | key[3]!) === 0

// Scratch for the key rotated to a key position: as bytes for the native loop (which starts at key
// byte 0), and read back through the word view as a 32-bit word in platform byte order (the bytes
// laid out as they appear in memory, so no endianness test is needed).
const rotatedKeyBytes = new Uint8Array(4)
const rotatedKeyWord = new Int32Array(rotatedKeyBytes.buffer)

/** The key rotated so that its byte at `keyOffset` comes first, in {@link rotatedKeyBytes}. */
const rotateKey = (key: Uint8Array, keyOffset: number): Uint8Array => {
  rotatedKeyBytes[0] = key[keyOffset]!
  rotatedKeyBytes[1] = key[(keyOffset + 1) & 3]!
  rotatedKeyBytes[2] = key[(keyOffset + 2) & 3]!
  rotatedKeyBytes[3] = key[(keyOffset + 3) & 3]!
  return rotatedKeyBytes
}

/**
 * `bytes[start, end)` as the native loop takes its source: from the view's start (the view itself
 * when `start` is 0, the loop reading only the length it is given; no new view).
 */
const nativeSource = (bytes: Uint8Array, start: number, end: number): Uint8Array =>
  start === 0 ? bytes : bytes.subarray(start, end)

/** The key as the native loop takes it: starting at its byte at `keyOffset`. */
const keyFrom = (key: Uint8Array, keyOffset: number): Uint8Array =>
  (keyOffset & 3) === 0 ? key : rotateKey(key, keyOffset & 3)

/**
 * Below this many bytes {@link applyMask} works bytewise (4-byte unrolled); from here on it XORs
 * 32-bit words through an `Int32Array` view (RFC 6455 section 5.3 masking).
 *
 * **Details**
 *
 * Measured on Node 24.21 (x64): the unrolled byte loop costs about 0.45 ns/byte, the word loop
 * about 0.08 ns/byte plus about 25 ns to create its view. They cross between 72 and 80 bytes
 * (72 B: 35 vs 36 ns, 80 B: 39 vs 37 ns, 128 B: 58 vs 42 ns). At 1 MiB the word loop takes
 * 0.09 ms, the unrolled loop 0.44 ms and {@link applyMaskSimple} 1.0 ms.
 *
 * @category constants
 * @since 0.1.0
 */
export const MASK_WORD_THRESHOLD = 80

/**
 * Below this many bytes {@link maskInto} writes bytewise (4-byte unrolled); from here on it copies
 * with `Uint8Array.prototype.set` and masks the copy in place with {@link applyMask} (RFC 6455
 * section 5.3 masking).
 *
 * **Details**
 *
 * Measured on Node 24.21 (x64): the unrolled copying loop costs about 0.45 ns/byte; copy plus
 * word mask costs about 20 ns fixed plus 0.15 ns/byte, whatever the relative alignment of source
 * and target (80 B: 38 vs 29 ns, 96 B: 45 vs 31 ns; below 80 B the in-place mask is bytewise and
 * the copy does not pay). At 64 KiB the copy-then-mask path is about 6x faster (6.2 vs 37 us).
 *
 * @category constants
 * @since 0.1.0
 */
export const MASK_INTO_WORD_THRESHOLD = 80

// Micro-optimisation: a word view costs about 20 ns to create; an engine masks in the same two
// buffers (receive and send) over and over, so the views of the last two are kept. Reading a typed
// array's `buffer` costs about 9 ns too, so the array masked last is remembered as well. Only views
// of buffers up to MAX_CACHED_BUFFER are kept: a large message's own buffer, masked once, would
// otherwise stay in memory as long as the process masks nothing else.
const MAX_CACHED_BUFFER = 1024 * 1024
let cachedBuffer0: ArrayBufferLike | undefined = undefined
let cachedView0: Int32Array = new Int32Array(0)
let cachedBuffer1: ArrayBufferLike | undefined = undefined
let cachedView1: Int32Array = new Int32Array(0)
let lastArray: Uint8Array | undefined = undefined
let lastArrayView: Int32Array = new Int32Array(0)

/** A word view over the whole buffer under `data` (its last 0-3 bytes excluded), of at least `minWords` words. */
const wordView = (data: Uint8Array, minWords: number): Int32Array => {
  if (data === lastArray && minWords <= lastArrayView.length) return lastArrayView
  const buffer = data.buffer
  if (buffer.byteLength > MAX_CACHED_BUFFER) return new Int32Array(buffer, 0, buffer.byteLength >>> 2)
  let view: Int32Array
  // a cached view is stale if the buffer was resized since
  if (buffer === cachedBuffer0 && cachedView0.length === buffer.byteLength >>> 2) {
    view = cachedView0
  } else {
    view = buffer === cachedBuffer1 && cachedView1.length === buffer.byteLength >>> 2
      ? cachedView1
      : new Int32Array(buffer, 0, buffer.byteLength >>> 2)
    cachedBuffer1 = cachedBuffer0
    cachedView1 = cachedView0
    cachedBuffer0 = buffer
    cachedView0 = view
  }
  lastArray = data
  lastArrayView = view
  return view
}

/** The key rotated so that its byte at `keyOffset` comes first, as a native-order word. */
const keyWord = (key: Uint8Array, keyOffset: number): number => {
  rotateKey(key, keyOffset)
  return rotatedKeyWord[0]!
}

/**
 * Bytewise masking of `data[start, end)` in place, unrolled by the key length.
 *
 * Micro-optimisation: a loop of its own rather than {@link maskBytes} with the same array twice, so
 * that V8 keeps separate type feedback for unmasking received bytes in place and for masking a
 * payload into a send buffer. In a benchmark run that does both, the shared loop made masked
 * 16-byte sends about 15 % slower (0.85x ws instead of 1.0x) and 16-byte receives about 10 % slower.
 */
const maskBytesInPlace = (data: Uint8Array, start: number, end: number, key: Uint8Array, keyOffset: number): void => {
  const k = keyOffset & 3
  const k0 = key[k]!
  const k1 = key[(k + 1) & 3]!
  const k2 = key[(k + 2) & 3]!
  const k3 = key[(k + 3) & 3]!
  let i = start
  const stop = start + ((end - start) & ~3)
  for (; i < stop; i += 4) {
    data[i] = data[i]! ^ k0
    data[i + 1] = data[i + 1]! ^ k1
    data[i + 2] = data[i + 2]! ^ k2
    data[i + 3] = data[i + 3]! ^ k3
  }
  if (i < end) data[i] = data[i]! ^ k0
  if (i + 1 < end) data[i + 1] = data[i + 1]! ^ k1
  if (i + 2 < end) data[i + 2] = data[i + 2]! ^ k2
}

/**
 * Bytewise masking of `source[sourceStart, sourceEnd)` into `target` from `targetStart`, unrolled by
 * the key length.
 */
const maskBytes: MaskCopy = (source, sourceStart, sourceEnd, target, targetStart, key, keyOffset) => {
  // Micro-optimisation: hoist the four key bytes into locals and unroll by 4, which drops the
  // per-byte key index computation (about 2x faster than the plain loop at 64 bytes).
  const k = keyOffset & 3
  const k0 = key[k]!
  const k1 = key[(k + 1) & 3]!
  const k2 = key[(k + 2) & 3]!
  const k3 = key[(k + 3) & 3]!
  let i = sourceStart
  let j = targetStart
  const stop = sourceStart + ((sourceEnd - sourceStart) & ~3)
  for (; i < stop; i += 4, j += 4) {
    target[j] = source[i]! ^ k0
    target[j + 1] = source[i + 1]! ^ k1
    target[j + 2] = source[i + 2]! ^ k2
    target[j + 3] = source[i + 3]! ^ k3
  }
  const rest = sourceEnd - i
  if (rest > 0) target[j] = source[i]! ^ k0
  if (rest > 1) target[j + 1] = source[i + 1]! ^ k1
  if (rest > 2) target[j + 2] = source[i + 2]! ^ k2
}

/**
 * Masks or unmasks `data[start, end)` in place (RFC 6455 section 5.3), `keyOffset` being the key
 * position (0..3) of `data[start]`.
 *
 * **Details**
 *
 * Skips an all-zero key (XOR with zero is the identity); from {@link MASK_NATIVE_THRESHOLD} bytes
 * uses `bufferutil` where it is installed; otherwise works bytewise below
 * {@link MASK_WORD_THRESHOLD} bytes and 32 bits at a time above it, with the unaligned head and the
 * tail done bytewise. The key position after the call is `(keyOffset + (end - start)) & 3`.
 *
 * @category combinators
 * @since 0.1.0
 */
export const applyMask: MaskInPlace = (data, start, end, key, keyOffset) => {
  // Micro-optimisation: a zero key leaves the data unchanged.
  if (isZeroKey(key)) return
  // (a range outside the view, as of a detached buffer, is never handed to native code)
  if (nativeMask !== undefined && end - start >= MASK_NATIVE_THRESHOLD && start >= 0 && end <= data.length) {
    nativeMask(nativeSource(data, start, end), keyFrom(key, keyOffset), data, start, end - start)
    return
  }
  applyMaskPortable(data, start, end, key, keyOffset)
}

/**
 * {@link applyMask} in JavaScript only, as where `bufferutil` is not installed: bytewise below
 * {@link MASK_WORD_THRESHOLD} bytes, 32 bits at a time above it.
 *
 * @category combinators
 * @since 0.1.0
 */
export const applyMaskPortable: MaskInPlace = (data, start, end, key, keyOffset) => {
  let i = start
  let k = keyOffset & 3
  if (end - start >= MASK_WORD_THRESHOLD) {
    // Micro-optimisation: XOR whole 32-bit words through an aligned Int32Array view.
    const misalignment = (data.byteOffset + i) & 3
    if (misalignment !== 0) {
      const head = 4 - misalignment
      maskBytesInPlace(data, i, i + head, key, k)
      i += head
      k = (k + head) & 3
    }
    const words = (end - i) >>> 2
    const first = (data.byteOffset + i) >>> 2
    const last = first + words
    const view = wordView(data, last)
    const mask = keyWord(key, k)
    for (let w = first; w < last; w++) view[w] = view[w]! ^ mask
    // whole words leave the key position unchanged
    i += words << 2
  }
  maskBytesInPlace(data, i, end, key, k)
}

/**
 * The reference twin of {@link applyMask}: the plain bytewise loop of RFC 6455 section 5.3,
 * `data[i] ^= key[(keyOffset + i - start) MOD 4]`.
 *
 * @category combinators
 * @since 0.1.0
 */
export const applyMaskSimple: MaskInPlace = (data, start, end, key, keyOffset) => {
  for (let i = start; i < end; i++) {
    data[i] = data[i]! ^ key[(keyOffset + i - start) & 3]!
  }
}

/**
 * Writes `source[sourceStart, sourceEnd)` XOR the masking key into `target` from `targetStart`
 * (RFC 6455 section 5.3), leaving `source` untouched; `keyOffset` is the key position (0..3) of
 * `source[sourceStart]`.
 *
 * **Details**
 *
 * For senders: the application's payload is masked into a handle-owned send buffer. From
 * {@link MASK_INTO_NATIVE_THRESHOLD} bytes it uses `bufferutil` where it is installed; otherwise,
 * below {@link MASK_INTO_WORD_THRESHOLD} bytes it works bytewise, and above it copies with
 * `Uint8Array.prototype.set` and masks the copy with the word loop. A zero key is a plain copy.
 *
 * **Gotchas**
 *
 * `target` needs `sourceEnd - sourceStart` bytes from `targetStart`. Source and target may share
 * a buffer only when the ranges are identical or disjoint.
 *
 * @category combinators
 * @since 0.1.0
 */
export const maskInto: MaskCopy = (source, sourceStart, sourceEnd, target, targetStart, key, keyOffset) => {
  const length = sourceEnd - sourceStart
  if (
    nativeMask !== undefined && length >= MASK_INTO_NATIVE_THRESHOLD && sourceStart >= 0 &&
    sourceEnd <= source.length && targetStart >= 0 && targetStart + length <= target.length && !isZeroKey(key)
  ) {
    // (ranges outside the views, as of a detached buffer, are never handed to native code)
    nativeMask(nativeSource(source, sourceStart, sourceEnd), keyFrom(key, keyOffset), target, targetStart, length)
    return
  }
  maskIntoPortable(source, sourceStart, sourceEnd, target, targetStart, key, keyOffset)
}

/**
 * Copies `source[start, end)` into `target` from `targetStart`, unmasked.
 *
 * Micro-optimisation: a whole source is copied as it is, since a subarray of it would cost more
 * (about 35 ns) than a short copy.
 *
 * @category combinators
 * @since 0.1.0
 */
export const copyRange = (source: Uint8Array, start: number, end: number, target: Uint8Array, targetStart: number): void => {
  target.set(start === 0 && end === source.length ? source : source.subarray(start, end), targetStart)
}

/**
 * {@link maskInto} in JavaScript only, as where `bufferutil` is not installed: bytewise below
 * {@link MASK_INTO_WORD_THRESHOLD} bytes, a copy masked with {@link applyMaskPortable} above.
 *
 * @category combinators
 * @since 0.1.0
 */
export const maskIntoPortable: MaskCopy = (source, sourceStart, sourceEnd, target, targetStart, key, keyOffset) => {
  const length = sourceEnd - sourceStart
  if (length >= MASK_INTO_WORD_THRESHOLD || isZeroKey(key)) {
    // Micro-optimisation: memcpy, then the aligned word loop on the copy. This does not depend on
    // source and target sharing an alignment, and a zero key stops after the copy.
    copyRange(source, sourceStart, sourceEnd, target, targetStart)
    applyMaskPortable(target, targetStart, targetStart + length, key, keyOffset)
    return
  }
  maskBytes(source, sourceStart, sourceEnd, target, targetStart, key, keyOffset)
}
