/**
 * The masking copy and the ASCII skip where their paths change (80 and 512 bytes for maskInto,
 * four words a test for skipAscii): offsets, shared memory, resizable buffers, reads within range,
 * and the engine sending and receiving through them; short masked frames built whole when queued.
 */
import { assert, describe, it } from "@effect/vitest"
import { Arbitrary } from "effect"
import { applyMaskSimple, maskInto, maskIntoPortable } from "../../src/internal/engine/mask.ts"
import { skipAscii } from "../../src/internal/engine/utf8.ts"
import { ActionCode, BufferTypeCode, QueueCode, Status } from "../../src/internal/engine/engine.ts"
import { Opcode } from "../../src/internal/engine/frame.ts"
import {
  complete,
  concat,
  counting,
  drainSends,
  expectSendRejected,
  feed,
  int,
  makeClient,
  makeServer,
  messagesOf,
  next,
  parseFrames,
  seededBytes,
  send,
  sendAndDrain,
  toHex,
  utf8
} from "./helpers.ts"

const copying = [["maskInto", maskInto], ["maskIntoPortable", maskIntoPortable]] as const

describe("maskInto / maskIntoPortable around their thresholds", () => {
  it.prop(
    "equal copy-then-applyMaskSimple for any length 0..1100, source/target view offsets, whole or partial source, any key (zero too)",
    [
      Arbitrary.all([int(0, 1100), int(0, 7), int(0, 7), int(0, 7), int(0, 7), int(0, 3), int(0, 1), int(0, 3)]),
      Arbitrary.all([int(0, 255), int(0, 255), int(0, 255), int(0, 255)])
    ],
    ([[length, sourceBase, sourceStart, targetBase, targetStart, keyOffset, whole, zeroKey], keyBytes]) => {
      const key = zeroKey === 0 ? new Uint8Array(4) : Uint8Array.from(keyBytes)
      for (const [name, mask] of copying) {
        // a whole source (its own view from sourceBase), or a range inside a longer one
        const backing = seededBytes(sourceBase + sourceStart + length + 5, length + sourceBase)
        const source = whole === 1
          ? backing.subarray(sourceBase, sourceBase + length)
          : backing.subarray(sourceBase)
        const from = whole === 1 ? 0 : sourceStart
        const before = backing.slice()
        const target = new Uint8Array(targetBase + targetStart + length + 5).fill(0xa5).subarray(targetBase)
        const expected = target.slice()
        expected.set(source.subarray(from, from + length), targetStart)
        applyMaskSimple(expected, targetStart, targetStart + length, key, keyOffset)
        mask(source, from, from + length, target, targetStart, key, keyOffset)
        assert.deepStrictEqual(target, expected, name)
        assert.deepStrictEqual(backing, before, `${name}: source changed`)
      }
    },
    { arbitrary: { runs: 400 } }
  )

  it("source and target sharing memory: identical ranges (in place) and disjoint ranges of one buffer", () => {
    const key = Uint8Array.of(0x37, 0xfa, 0x21, 0x3d)
    for (const [name, mask] of copying) {
      for (const length of [0, 1, 3, 4, 7, 79, 80, 81, 111, 112, 113, 200, 511, 512, 513, 767, 768, 769, 4099]) {
        for (let start = 0; start < 4; start++) {
          for (let keyOffset = 0; keyOffset < 4; keyOffset++) {
            // identical ranges, as the same view and as two views of the same memory
            for (const sameView of [true, false]) {
              const data = seededBytes(start + length + 3, length + start)
              const expected = data.slice()
              applyMaskSimple(expected, start, start + length, key, keyOffset)
              const other = sameView ? data : new Uint8Array(data.buffer, data.byteOffset, data.length)
              mask(data, start, start + length, other, start, key, keyOffset)
              assert.deepStrictEqual(data, expected, `${name} identical ${sameView} ${length} ${start} ${keyOffset}`)
            }
            // disjoint: source first, target after it (and the reverse), in one buffer
            for (const targetFirst of [false, true]) {
              const gap = 1 + ((start + keyOffset) & 3)
              const data = seededBytes(2 * length + start + gap + 4, 7 * length + start)
              const sourceStart = targetFirst ? start + length + gap : start
              const targetStart = targetFirst ? start : start + length + gap
              const expected = data.slice()
              expected.set(data.subarray(sourceStart, sourceStart + length), targetStart)
              applyMaskSimple(expected, targetStart, targetStart + length, key, keyOffset)
              mask(data, sourceStart, sourceStart + length, data, targetStart, key, keyOffset)
              assert.deepStrictEqual(data, expected, `${name} disjoint ${targetFirst} ${length} ${start} ${keyOffset}`)
            }
          }
        }
      }
    }
  })

  it("a whole source over a length-tracking view of a resizable buffer, after it grew and shrank", () => {
    const key = Uint8Array.of(1, 2, 3, 4)
    const buffer = new ArrayBuffer(100, { maxByteLength: 4096 })
    const source = new Uint8Array(buffer) // tracks the buffer's length
    for (const size of [100, 700, 90, 2000, 85]) {
      buffer.resize(size)
      source.set(seededBytes(size, size))
      for (const [name, mask] of copying) {
        const target = new Uint8Array(size + 2)
        const expected = new Uint8Array(size + 2)
        expected.set(source, 1)
        applyMaskSimple(expected, 1, size + 1, key, 2)
        mask(source, 0, source.length, target, 1, key, 2)
        assert.deepStrictEqual(target, expected, `${name} ${size}`)
      }
    }
  })
})

describe("skipAscii at the edges of its range", () => {
  it("never looks outside [start, end): non-ASCII bytes all around, every start, end and position of one high byte", () => {
    const N = 72
    for (const base of [0, 4, 8]) {
      const memory = new Uint8Array(N + 16).fill(0xff)
      const bytes = memory.subarray(base, base + N + 8)
      const words = new Int32Array(bytes.buffer, bytes.byteOffset, bytes.length >>> 2)
      for (let start = 0; start <= N; start++) {
        for (let end = start; end <= N; end++) {
          bytes.fill(0xff)
          bytes.fill(0x61, start, end)
          assert.strictEqual(skipAscii(bytes, words, start, end), end, `all ASCII ${start}..${end}`)
          for (let p = start; p < end; p++) {
            bytes[p] = 0x80
            const stop = skipAscii(bytes, words, start, end)
            if (stop > p || stop < Math.max(start, p - 3)) assert.fail(`${start}..${end}, high byte at ${p}: ${stop}`)
            bytes[p] = 0x61
          }
        }
      }
    }
  })

  it("a words view ending at end >>> 2 (as the engine's, over the receive buffer only) is enough", () => {
    for (let length = 0; length <= 70; length++) {
      const bytes = new Uint8Array(length).fill(0x41)
      const words = new Int32Array(bytes.buffer, 0, length >>> 2)
      for (let start = 0; start <= length; start++) {
        assert.strictEqual(skipAscii(bytes, words, start, length), length)
        if (length > start) {
          bytes[length - 1] = 0xc3
          const stop = skipAscii(bytes, words, start, length)
          assert.isTrue(stop <= length - 1 && stop >= Math.max(start, length - 4), `${start}..${length}: ${stop}`)
          bytes[length - 1] = 0x41
        }
      }
    }
  })
})

describe("engine masking across the maskInto thresholds", () => {
  const { BinaryMessage } = BufferTypeCode
  const lengths = [79, 80, 81, 111, 112, 113, 511, 512, 513, 1029]

  it("client sends through send buffers of sizes around the thresholds (chunks at every key offset) reach a server intact", () => {
    for (const sendBufferSize of [81, 113, 513, 1031]) {
      for (const length of lengths) {
        const payload = seededBytes(length * 3 + 1, length + sendBufferSize)
        const wire = sendAndDrain(makeClient({ sendBufferSize }), BinaryMessage, payload)
        const result = feed(makeServer(), wire, { chunks: 997 })
        assert.strictEqual(result.failed, undefined)
        assert.deepStrictEqual(messagesOf(result.deliveries)[0]!.data, payload, `${sendBufferSize} / ${length}`)
      }
    }
  })

  it("copyForRead in pieces of sizes around the thresholds (every key offset) unmasks as a plain read does", () => {
    const binary = seededBytes(20_000, 5)
    const wire = concat([sendAndDrain(makeClient(), BinaryMessage, binary), sendAndDrain(makeClient(), BinaryMessage, binary.subarray(3))])
    for (const copies of [lengths, [79, 513], [81, 111], [512, 80]]) {
      for (const chunks of [9001, 1000, 4097]) {
        const result = feed(makeServer({ receiveBufferSize: 40_000 }), wire, { chunks, buffer: new Uint8Array(40_000), copies })
        assert.strictEqual(result.failed, undefined)
        assert.isAbove(result.unmaskingReads, 0)
        const [first, second] = messagesOf(result.deliveries)
        assert.deepStrictEqual(first!.data, binary)
        assert.deepStrictEqual(second!.data, binary.subarray(3))
      }
    }
  })
})

describe("short masked frames, built whole in the send buffer when queued", () => {
  const { BinaryFragment, BinaryMessage, Utf8Message } = BufferTypeCode
  /** A random source that counts, so that every masking key drawn differs from the last. */
  const countingFill = () => {
    let n = 1
    return (bytes: Uint8Array): void => {
      for (let i = 0; i < bytes.length; i++) bytes[i] = (n++ * 13) & 0xff
    }
  }

  it.prop(
    "payloads of 0-140 bytes through send buffers of 40-300 bytes: one buffer up to min(125, buffer - 6) bytes, else a header and chunks; every frame masked with a fresh key and read back intact",
    [Arbitrary.array(int(0, 140), { minLength: 1, maxLength: 12 }), int(40, 300)],
    ([lengths, sendBufferSize]) => {
      const client = makeClient({ sendBufferSize, randomFill: countingFill() })
      const limit = Math.min(125, sendBufferSize - 6)
      const keys = new Set<string>()
      for (const [i, length] of lengths.entries()) {
        const payload = seededBytes(length, i + sendBufferSize)
        const before = payload.slice()
        const type = i % 2 === 0 ? BinaryMessage : Utf8Message
        const data = type === Utf8Message ? payload.map((b) => b & 0x7f) : payload
        send(client, type, data)
        const { wire, writes } = drainSends(client)
        if (length <= limit) {
          assert.deepStrictEqual(writes.map((w) => w.buffers.length), [1], `${length} B in ${sendBufferSize}: one buffer`)
        } else {
          assert.strictEqual(writes[0]!.buffers.length, 2, `${length} B in ${sendBufferSize}: the header apart`)
        }
        const frames = parseFrames(wire)
        assert.strictEqual(frames.length, 1)
        assert.isTrue(frames[0]!.masked)
        assert.strictEqual(frames[0]!.opcode, type === Utf8Message ? Opcode.Text : Opcode.Binary)
        assert.deepStrictEqual(frames[0]!.payload, data)
        keys.add(toHex(frames[0]!.maskKey))
        if (type === BinaryMessage) assert.deepStrictEqual(payload, before, "the payload is untouched")
      }
      assert.strictEqual(keys.size, lengths.length, "a fresh key per frame")
    },
    { arbitrary: { size: 12 } }
  )

  it("a built fragment of which nothing is written is as if never sent: the message is not opened, and sends go on", () => {
    const client = makeClient({ randomFill: countingFill() })
    send(client, BinaryFragment, counting(10))
    const step = next(client, QueueCode.Send)
    assert.strictEqual(step.action, ActionCode.SendToNetwork)
    assert.strictEqual(step.buffers.length, 1)
    complete(client, step, 0) // cancelled, nothing on the wire
    const done = next(client, QueueCode.Send)
    assert.strictEqual(done.action, ActionCode.IndicateSendComplete)
    complete(client, done)
    assert.isFalse(client.sendWritten)
    // the message was never opened: a whole text message may follow (not a continuation)
    const wire = sendAndDrain(client, Utf8Message, utf8("after"))
    const frames = parseFrames(wire)
    assert.deepStrictEqual(frames.map((f) => [f.opcode, f.fin, toHex(f.payload)]), [[Opcode.Text, true, toHex(utf8("after"))]])
  })

  it("a built frame cut short on the wire breaks the send side: later sends are refused", () => {
    const client = makeClient()
    send(client, BinaryMessage, counting(20))
    const step = next(client, QueueCode.Send)
    complete(client, step, 7) // part of the 26 bytes
    const done = next(client, QueueCode.Send)
    assert.strictEqual(done.action, ActionCode.IndicateSendComplete)
    complete(client, done)
    assert.isFalse(client.sendWritten)
    expectSendRejected(client, Status.InvalidOperation, /only partly written/, BinaryMessage, counting(3))
  })
})
