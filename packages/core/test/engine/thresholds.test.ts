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

/** A random source that counts, so that the masking keys drawn differ (64 in a row). */
/** The longest payload a client builds whole in a send buffer of `size` bytes, header included (see `buildMaskedFrame`). */
const builtLimit = (size: number): number => Math.max(Math.min(125, size - 6), Math.min(511, size - 8))

/** The header length of a built frame: 2 bytes (4 with a 16-bit length) and the key. */
const builtHeader = (length: number): number => length <= 125 ? 6 : 8

/** An integer from one of two ranges (`[a, b]` or `[c, d]`), each about as likely as its length. */
const intIn = (a: number, b: number, c: number, d: number) =>
  int(0, b - a + d - c + 1).pipe(Arbitrary.map((n) => n <= b - a ? a + n : c + n - (b - a + 1)))

const countingFill = () => {
  let n = 1
  return (bytes: Uint8Array): void => {
    for (let i = 0; i < bytes.length; i++) bytes[i] = (n++ * 13) & 0xff
  }
}

describe("short masked frames, built whole in the send buffer when queued", () => {
  const { BinaryFragment, BinaryMessage, Utf8Message } = BufferTypeCode

  it.prop(
    "payloads of 0-530 bytes through send buffers of 40-600 bytes: one buffer (the whole frame) up to 511 bytes that fit the buffer with their header, else a header and chunks; every frame masked with a fresh key and read back intact",
    [Arbitrary.array(intIn(0, 140, 400, 530), { minLength: 1, maxLength: 12 }), intIn(40, 300, 400, 600)],
    ([lengths, sendBufferSize]) => {
      const client = makeClient({ sendBufferSize, randomFill: countingFill() })
      const limit = builtLimit(sendBufferSize)
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
          assert.strictEqual(writes[0]!.buffers[0]!.length, builtHeader(length) + length, "the whole frame")
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

  it("built frames byte for byte, in an own send buffer and in allocated buffers at every alignment: 2 header bytes, the next 4 random bytes as the key, the payload XOR the key, across a refill of the key pool", () => {
    for (const shift of [undefined, 0, 1, 2, 3]) {
      const allocatedBuffer = shift === undefined ? undefined : new Uint8Array(shift + 4 + 4096 + 4096 + 256).subarray(shift)
      // (random bytes without a short period, as the engine's pool is read in order)
      const seededFill = () => {
        let fills = 0
        return (bytes: Uint8Array) => bytes.set(seededBytes(bytes.length, 1000 + fills++))
      }
      const client = makeClient({ sendBufferSize: 4096, allocatedBuffer, randomFill: seededFill() })
      const random = seededFill()
      const pool = new Uint8Array(4096)
      for (let i = 0; i < 1100; i++) {
        if (i % 1024 === 0) random(pool) // the engine's pool holds 1024 keys
        const key = pool.subarray((i % 1024) * 4, (i % 1024) * 4 + 4)
        const length = i % 126
        const payload = seededBytes(length, i)
        send(client, BinaryMessage, payload)
        const { writes } = drainSends(client)
        assert.strictEqual(writes.length, 1)
        assert.strictEqual(writes[0]!.buffers.length, 1)
        const expected = new Uint8Array(6 + length)
        expected.set([0x82, 0x80 | length, ...key])
        expected.set(payload, 6)
        applyMaskSimple(expected, 6, 6 + length, key, 0)
        assert.strictEqual(toHex(writes[0]!.buffers[0]!), toHex(expected), `shift ${shift}, frame ${i} (${length} B)`)
      }
    }
  })

  it("the longest built frames fill the send buffer, never more: around 125/126 bytes and the largest built payload, in send buffers of 128-140 and 510-522 bytes", () => {
    for (const sendBufferSize of [...Array.from({ length: 13 }, (_, i) => 128 + i), ...Array.from({ length: 13 }, (_, i) => 510 + i)]) {
      const client = makeClient({ sendBufferSize, randomFill: countingFill() })
      const limit = builtLimit(sendBufferSize)
      for (const length of new Set([124, 125, 126, 127, limit - 2, limit - 1, limit, limit + 1, limit + 2])) {
        const payload = seededBytes(length, length + sendBufferSize)
        send(client, BinaryMessage, payload)
        const { wire, writes } = drainSends(client)
        const where = `${length} B in ${sendBufferSize}`
        assert.strictEqual(writes[0]!.buffers.length, length <= limit ? 1 : 2, where)
        for (const w of writes) for (const b of w.buffers) assert.isAtMost(b.length, sendBufferSize, where)
        assert.deepStrictEqual(parseFrames(wire).map((f) => toHex(f.payload)), [toHex(payload)], where)
      }
    }
  })

  it("a payload that is a view of the handle's own send memory (an allocated buffer's send part) goes out intact, built or in chunks", () => {
    const receiveBufferSize = 256
    const sendBufferSize = 4096
    for (let shift = 0; shift < 4; shift++) {
      const allocatedBuffer = new Uint8Array(shift + 4 + receiveBufferSize + sendBufferSize + 256).subarray(shift)
      const client = makeClient({ receiveBufferSize, sendBufferSize, allocatedBuffer, randomFill: countingFill() })
      // the send part starts 4-byte aligned after the receive part (and its 4 reserved bytes)
      const receiveEnd = allocatedBuffer.byteOffset + 4 + receiveBufferSize
      const sendPart = receiveEnd + ((4 - (receiveEnd & 3)) & 3) - allocatedBuffer.byteOffset
      for (const [at, length] of [[0, 10], [0, 125], [2, 125], [0, 300], [8, 511], [0, 2000]] as const) {
        const payload = allocatedBuffer.subarray(sendPart + at, sendPart + at + length)
        const expected = seededBytes(length, length + at + shift)
        payload.set(expected)
        send(client, BinaryMessage, payload)
        const { wire } = drainSends(client)
        assert.deepStrictEqual(parseFrames(wire).map((f) => toHex(f.payload)), [toHex(expected)], `shift ${shift}, ${length} B at ${at}`)
      }
    }
  })

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

describe("short masked frames built when queued: every path of the send side", () => {
  const { BinaryFragment, BinaryMessage, PingPong, Utf8Fragment, Utf8Message } = BufferTypeCode

  it.prop(
    "fragments and whole messages of 0-530 bytes, some writes cancelled with 0 bytes, through send buffers of 16-600 bytes: the wire holds exactly the frames written, a built one in one action, each with its opcode and a fresh key, and the peer reads the messages back",
    [
      Arbitrary.array(Arbitrary.all([intIn(0, 200, 480, 530), int(0, 3), int(0, 3)]), { minLength: 1, maxLength: 30 }),
      intIn(16, 200, 480, 600)
    ],
    ([ops, sendBufferSize]) => {
      const client = makeClient({ sendBufferSize, randomFill: countingFill() })
      const limit = builtLimit(sendBufferSize)
      const expected: Array<[number, boolean, string]> = []
      const messages: Array<[string, string]> = []
      let open = 0 // the open message's opcode in the model
      let openPayload: Array<Uint8Array> = []
      const written: Array<Uint8Array> = []
      for (const [i, [length, kind, write]] of ops.entries()) {
        // a kind that fits the open message (a text message continues with text)
        const text = open === 0 ? kind < 2 : open === Opcode.Text
        const fragment = kind % 2 === 0
        const type = text ? (fragment ? Utf8Fragment : Utf8Message) : (fragment ? BinaryFragment : BinaryMessage)
        const raw = seededBytes(length, i * 7919 + sendBufferSize)
        const payload = text ? raw.map((b) => b & 0x7f) : raw
        const before = payload.slice()
        send(client, type, payload, undefined, i)
        assert.deepStrictEqual(payload, before, "send leaves the payload as it is")
        const cancel = write === 0
        let step = next(client, QueueCode.Send)
        assert.strictEqual(step.action, ActionCode.SendToNetwork)
        const total = step.buffers.reduce((n, b) => n + b.length, 0)
        if (length <= limit) {
          assert.strictEqual(step.buffers.length, 1, `${length} B in ${sendBufferSize}: one buffer`)
          assert.strictEqual(total, builtHeader(length) + length, "the whole frame")
        } else {
          assert.strictEqual(step.buffers.length, 2, `${length} B in ${sendBufferSize}: the header apart`)
        }
        if (cancel) {
          complete(client, step, 0)
        } else {
          while (step.action === ActionCode.SendToNetwork) {
            written.push(concat(step.buffers))
            complete(client, step)
            step = next(client, QueueCode.Send)
          }
          assert.strictEqual(step.action, ActionCode.IndicateSendComplete)
        }
        const done = cancel ? next(client, QueueCode.Send) : step
        assert.strictEqual(done.action, ActionCode.IndicateSendComplete)
        assert.strictEqual(done.context, i)
        complete(client, done)
        assert.strictEqual(client.sendWritten, !cancel)
        assert.deepStrictEqual(payload, before, "the payload stays as it was")
        if (cancel) continue
        expected.push([open === 0 ? (text ? Opcode.Text : Opcode.Binary) : Opcode.Continuation, !fragment, toHex(payload)])
        openPayload.push(payload)
        if (fragment) {
          open = text ? Opcode.Text : Opcode.Binary
        } else {
          messages.push([text ? "text" : "binary", toHex(concat(openPayload))])
          open = 0
          openPayload = []
        }
      }
      assert.strictEqual(next(client, QueueCode.Send).action, ActionCode.NoAction)
      const wire = concat(written)
      const frames = parseFrames(wire)
      assert.deepStrictEqual(frames.map((f) => [f.opcode, f.fin, toHex(f.payload)]), expected)
      assert.isTrue(frames.every((f) => f.masked))
      assert.strictEqual(new Set(frames.map((f) => toHex(f.maskKey))).size, frames.length, "a fresh key per frame")
      // the peer reads the whole messages back (a message left open is simply not delivered yet)
      const server = makeServer()
      const { deliveries } = feed(server, wire)
      const whole = deliveries.filter((d) => d.bufferType === Utf8Message || d.bufferType === BinaryMessage).length
      const delivered = messagesOf(deliveries.slice(0, deliveries.findLastIndex((d) =>
        d.bufferType === Utf8Message || d.bufferType === BinaryMessage
      ) + 1))
      assert.strictEqual(whole, messages.length)
      assert.deepStrictEqual(delivered.map((m) => [m.kind, toHex(m.data)]), messages)
    },
    { arbitrary: { size: 30 } }
  )

  it("a built continuation or closing fragment of which nothing is written leaves the message open as it was", () => {
    const client = makeClient({ randomFill: countingFill() })
    const wire: Array<Uint8Array> = []
    const writeAll = () => wire.push(drainSends(client).wire)
    const cancelled = (type: number, payload: Uint8Array) => {
      send(client, type, payload)
      const step = next(client, QueueCode.Send)
      assert.deepStrictEqual([step.action, step.buffers.length], [ActionCode.SendToNetwork, 1])
      complete(client, step, 0)
      const done = next(client, QueueCode.Send)
      assert.strictEqual(done.action, ActionCode.IndicateSendComplete)
      complete(client, done)
      assert.isFalse(client.sendWritten)
    }
    send(client, BinaryFragment, counting(5))
    writeAll()
    cancelled(BinaryFragment, counting(6)) // a continuation
    expectSendRejected(client, Status.InvalidOperation, /binary message is open/, Utf8Message, utf8("x"))
    cancelled(BinaryMessage, counting(7)) // the closing fragment
    expectSendRejected(client, Status.InvalidOperation, /binary message is open/, Utf8Fragment, utf8("x"))
    send(client, BinaryMessage, counting(3))
    writeAll()
    // closed now: a text message may follow, as a new message
    send(client, Utf8Message, utf8("after"))
    writeAll()
    const frames = parseFrames(concat(wire))
    assert.deepStrictEqual(frames.map((f) => [f.opcode, f.fin, toHex(f.payload)]), [
      [Opcode.Binary, false, toHex(counting(5))],
      [Opcode.Continuation, true, toHex(counting(3))],
      [Opcode.Text, true, toHex(utf8("after"))]
    ])
  })

  it("a built frame of a handle aborted before it is handed out never reaches the wire; one aborted while handed out is written whole", () => {
    const queued = makeClient()
    send(queued, BinaryMessage, counting(20), undefined, "queued")
    queued.abort()
    const { writes, completed } = drainSends(queued)
    assert.deepStrictEqual([writes.length, completed], [0, ["queued"]])
    assert.isFalse(queued.sendWritten)

    const out = makeClient()
    send(out, BinaryMessage, counting(20), undefined, "out")
    const step = next(out, QueueCode.Send)
    assert.deepStrictEqual([step.action, step.buffers.length, step.buffers[0]!.length], [ActionCode.SendToNetwork, 1, 26])
    out.abort()
    const bytes = concat(step.buffers)
    complete(out, step)
    const done = next(out, QueueCode.Send)
    assert.strictEqual(done.action, ActionCode.IndicateSendComplete)
    complete(out, done)
    assert.isTrue(out.sendWritten)
    assert.deepStrictEqual(parseFrames(bytes)[0]!.payload, counting(20))
  })

  for (const pongsOnSendQueue of [false, true]) {
    it(`a ping read while a built frame is out${pongsOnSendQueue ? " (pongsOnSendQueue)" : ""}: its pong waits for the frame, whose bytes stay as they were, then follows it`, () => {
      const client = makeClient({ pongsOnSendQueue, randomFill: countingFill() })
      send(client, BinaryMessage, counting(20), undefined, "data")
      const step = next(client, QueueCode.Send)
      assert.deepStrictEqual([step.action, step.buffers.length], [ActionCode.SendToNetwork, 1])
      const handedOut = step.buffers[0]!.slice()
      // a ping and a message from the server, read while the frame is being written
      const received = feed(client, "89 03 414243 82 02 0102")
      assert.deepStrictEqual(received.sent, [], "no pong while the frame is out")
      assert.isTrue(client.pongWaiting)
      assert.deepStrictEqual(messagesOf(received.deliveries).map((m) => toHex(m.data)), ["0102"])
      assert.strictEqual(next(client, QueueCode.Send).action, ActionCode.NoAction, "nothing more while the frame is out")
      assert.deepStrictEqual(step.buffers[0]!, handedOut, "the frame handed out is unchanged")
      complete(client, step)
      const rest = drainSends(client)
      assert.deepStrictEqual(rest.writes.map((w) => w.bufferType), [PingPong])
      assert.deepStrictEqual(rest.completed, ["data"])
      assert.isFalse(client.pongWaiting)
      const frames = parseFrames(concat([handedOut, rest.wire]))
      assert.deepStrictEqual(frames.map((f) => [f.opcode, toHex(f.payload)]), [
        [Opcode.Binary, toHex(counting(20))],
        [Opcode.Pong, "414243"]
      ])
      assert.notStrictEqual(toHex(frames[0]!.maskKey), toHex(frames[1]!.maskKey))
    })
  }

  it("with allocateFrame, short frames are built in the send buffer: no frame allocated, one buffer of the handle's", () => {
    const client = makeClient({ randomFill: countingFill() })
    let allocations = 0
    client.allocateFrame = (size) => {
      allocations++
      return new Uint8Array(size)
    }
    const wire: Array<Uint8Array> = []
    for (const length of [0, 1, 16, 125, 126, 511, 512]) {
      send(client, BinaryMessage, counting(length))
      const step = next(client, QueueCode.Send)
      assert.deepStrictEqual(
        [step.buffers.length, step.buffers.reduce((n, b) => n + b.length, 0)],
        length <= 511 ? [1, builtHeader(length) + length] : [2, 8 + length],
        `${length} B`
      )
      wire.push(concat(step.buffers))
      complete(client, step)
      complete(client, next(client, QueueCode.Send))
    }
    assert.strictEqual(allocations, 0)
    assert.deepStrictEqual(parseFrames(concat(wire)).map((f) => toHex(f.payload)), [0, 1, 16, 125, 126, 511, 512].map((n) => toHex(counting(n))))
  })

  it("an allocated buffer of the smallest legal sizes (send buffer 16), at every alignment: frames of up to 10 bytes built 2 bytes into its send part (which starts 4-byte aligned), key and payload 4-byte aligned, nothing written outside the send part", () => {
    const receiveBufferSize = 256
    const sendBufferSize = 16
    for (let shift = 0; shift < 4; shift++) {
      const memory = new Uint8Array(64 + shift + 4 + receiveBufferSize + sendBufferSize + 256 + 64).fill(0xee)
      const allocated = memory.subarray(64 + shift, memory.length - 64)
      const receivePartEnd = allocated.byteOffset + 4 + receiveBufferSize
      // the send part (send buffer and 2 bytes) starts 4-byte aligned after the receive part
      const sendPart = receivePartEnd + ((4 - (receivePartEnd & 3)) & 3)
      const client = makeClient({ receiveBufferSize, sendBufferSize, allocatedBuffer: allocated, randomFill: countingFill() })
      const expected: Array<string> = []
      const wire: Array<Uint8Array> = []
      for (let length = 0; length <= 20; length++) {
        const payload = seededBytes(length, length + 1)
        expected.push(toHex(payload))
        send(client, BinaryMessage, payload)
        const first = next(client, QueueCode.Send)
        if (length <= 10) {
          assert.strictEqual(first.buffers.length, 1, `${length} B: one buffer`)
          const view = first.buffers[0]!
          assert.strictEqual(view.buffer, memory.buffer)
          assert.deepStrictEqual([view.byteOffset, view.length], [sendPart + 2, 6 + length], "the frame 2 bytes into the send part")
          assert.strictEqual((view.byteOffset + 2) % 4, 0, "the key 4-byte aligned")
        } else {
          assert.strictEqual(first.buffers.length, 2, `${length} B: the header apart`)
        }
        wire.push(concat(first.buffers))
        complete(client, first)
        for (const w of drainSends(client).writes) wire.push(concat(w.buffers))
        // nothing before the send part (the receive part, unused here) nor after it is written
        assert.isTrue(memory.subarray(0, sendPart).every((b) => b === 0xee), `shift ${shift}: before the send part`)
        assert.isTrue(memory.subarray(sendPart + sendBufferSize + 2).every((b) => b === 0xee), `shift ${shift}: after the send part`)
      }
      assert.deepStrictEqual(parseFrames(concat(wire)).map((f) => toHex(f.payload)), expected, `shift ${shift}`)
    }
  })

  it.prop(
    "send buffers of 1-40 bytes (below what a handle's options allow): built frames take at most buffer - 6 bytes, and every frame is read back intact",
    [Arbitrary.array(int(0, 60), { minLength: 1, maxLength: 12 }), int(1, 40)],
    ([lengths, sendBufferSize]) => {
      const client = makeClient({ sendBufferSize, randomFill: countingFill() })
      for (const [i, length] of lengths.entries()) {
        const payload = seededBytes(length, i + 1)
        send(client, BinaryMessage, payload)
        const { wire, writes } = drainSends(client)
        const built = length <= sendBufferSize - 6
        assert.strictEqual(writes[0]!.buffers.length, built ? 1 : length === 0 ? 1 : 2, `${length} B in ${sendBufferSize}`)
        for (const w of writes) for (const b of w.buffers) assert.isAtMost(b.length, Math.max(sendBufferSize, 14))
        const frames = parseFrames(wire)
        assert.strictEqual(frames.length, 1)
        assert.deepStrictEqual(frames[0]!.payload, payload)
      }
    },
    { arbitrary: { size: 12 } }
  )

  it("masking disabled (a zero key) or a server, even with an allocated buffer: never built, the payload goes out from the caller's memory", () => {
    for (const allocatedBuffer of [undefined, new Uint8Array(4 + 256 + 4096 + 256)]) {
      for (
        const [name, engine] of [
          ["zero key", makeClient({ disableMasking: true, receiveBufferSize: 256, allocatedBuffer })],
          ["server", makeServer({ receiveBufferSize: 256, sendBufferSize: 4096, allocatedBuffer })]
        ] as const
      ) {
        for (const length of [1, 10, 125]) {
          const payload = counting(length)
          send(engine, BinaryMessage, payload)
          const step = next(engine, QueueCode.Send)
          assert.strictEqual(step.buffers.length, 2, `${name}, ${length} B: header and payload`)
          assert.strictEqual(step.buffers[1], payload, `${name}: the caller's own bytes, not a copy`)
          const frame = parseFrames(concat(step.buffers))[0]!
          // a zero key is still a key (MASK set); a server's frames are unmasked
          assert.deepStrictEqual(
            [frame.masked, toHex(frame.maskKey), toHex(frame.payload)],
            [name === "zero key", "00000000", toHex(payload)],
            name
          )
          if (name === "server") assert.deepStrictEqual(concat(step.buffers), concat([Uint8Array.of(0x82, length), payload]))
          complete(engine, step)
          complete(engine, next(engine, QueueCode.Send))
        }
      }
    }
  })

  it("a payload detached after a built frame was queued is reported (detachedBuffer), as for any send; the frame, built already, goes out whole", () => {
    const detach = (bytes: Uint8Array) => void structuredClone(bytes.buffer, { transfer: [bytes.buffer as ArrayBuffer] })
    // detached before the frame is handed out: reported; a driver that goes on anyway writes the frame built at send
    const before = makeClient()
    const payload = counting(30)
    send(before, BinaryMessage, payload)
    detach(payload)
    assert.strictEqual(before.detachedBuffer, "send")
    const drained = drainSends(before)
    assert.deepStrictEqual(drained.writes.map((w) => w.buffers.length), [1])
    assert.deepStrictEqual(parseFrames(drained.wire).map((f) => toHex(f.payload)), [toHex(counting(30))])
    assert.isTrue(before.sendWritten)
    assert.strictEqual(before.detachedBuffer, undefined)
    // detached while the frame is being written: it completes with what was handed out, once
    const during = makeClient()
    const other = counting(30)
    send(during, BinaryMessage, other)
    const step = next(during, QueueCode.Send)
    detach(other)
    const bytes = concat(step.buffers)
    complete(during, step)
    const rest = drainSends(during)
    assert.deepStrictEqual(rest.writes, [], "the frame is not handed out again")
    assert.isTrue(during.sendWritten)
    assert.deepStrictEqual(parseFrames(bytes).map((f) => toHex(f.payload)), [toHex(counting(30))])
  })

  it("a payload that grows while its built frame is being written (a length-tracking view of a resizable buffer): the frame goes out once", () => {
    const client = makeClient()
    const buffer = new ArrayBuffer(10, { maxByteLength: 100 })
    const payload = new Uint8Array(buffer)
    payload.set(counting(10))
    send(client, BinaryMessage, payload)
    const step = next(client, QueueCode.Send)
    assert.strictEqual(step.action, ActionCode.SendToNetwork)
    const bytes = concat(step.buffers)
    buffer.resize(30) // the caller breaks the contract: the payload is 30 bytes now
    complete(client, step)
    const rest = drainSends(client)
    assert.deepStrictEqual(rest.writes, [], "the frame is not handed out again")
    assert.deepStrictEqual(rest.completed, [undefined], "the send completes")
    assert.isTrue(client.sendWritten)
    assert.deepStrictEqual(parseFrames(bytes).map((f) => toHex(f.payload)), [toHex(counting(10))])
    // and the next send goes out as usual
    assert.deepStrictEqual(parseFrames(sendAndDrain(client, BinaryMessage, counting(3))).map((f) => f.payload.length), [3])
  })

  it("built frames and chunks of longer ones alternate in the send buffer, their lengths equal or not: each read back intact", () => {
    // a send buffer of 40: a 34-byte payload is a built frame of 40 bytes (the whole buffer), a
    // 100-byte one goes in chunks of 40, 40 and 20, and a 14-byte one is a built frame of 20
    const client = makeClient({ sendBufferSize: 40, randomFill: countingFill() })
    const lengths = [34, 100, 14, 34, 60, 14, 100, 34, 0, 40]
    const wire: Array<Uint8Array> = []
    for (const [i, length] of lengths.entries()) {
      send(client, i % 2 === 0 ? BinaryMessage : Utf8Message, seededBytes(length, i + 3).map((b) => b & 0x7f))
      for (const w of drainSends(client).writes) wire.push(concat(w.buffers))
    }
    const frames = parseFrames(concat(wire))
    assert.deepStrictEqual(
      frames.map((f) => toHex(f.payload)),
      lengths.map((length, i) => toHex(seededBytes(length, i + 3).map((b) => b & 0x7f)))
    )
  })
})

describe("short masked frames built when queued: the aligned send memory and the key pool", () => {
  const { BinaryFragment, BinaryMessage, Close, PingPong, UnsolicitedPong } = BufferTypeCode

  it("a payload whose memory is gone at send (a detached buffer, a fixed-length view past the end of its shrunk resizable buffer): nothing is thrown, a client's empty frame goes out as a server's does, and the fragment opens its message", () => {
    const detach = (bytes: Uint8Array) => void structuredClone(bytes.buffer, { transfer: [bytes.buffer as ArrayBuffer] })
    const gone = (how: "detached" | "out of bounds"): Uint8Array => {
      if (how === "detached") {
        const view = counting(8)
        detach(view)
        return view
      }
      const buffer = new ArrayBuffer(16, { maxByteLength: 32 })
      const view = new Uint8Array(buffer, 4, 8) // fixed length
      buffer.resize(6) // the view is out of bounds now: it reads as empty
      return view
    }
    for (const how of ["detached", "out of bounds"] as const) {
      for (
        const [name, engine] of [
          ["client", makeClient({ randomFill: countingFill() })],
          ["client, send buffer 16", makeClient({ sendBufferSize: 16, randomFill: countingFill() })],
          ["server", makeServer()]
        ] as const
      ) {
        const payload = gone(how)
        assert.strictEqual(payload.length, 0, "the view reads as empty: it declares 0 bytes, none of them lost")
        try {
          send(engine, BinaryFragment, payload)
        } catch (e) {
          assert.fail(`${how}, ${name}: send threw ${String(e)}`)
        }
        const first = drainSends(engine)
        assert.isTrue(engine.sendWritten, `${how}, ${name}`)
        send(engine, BinaryMessage, counting(3))
        const frames = parseFrames(concat([first.wire, drainSends(engine).wire]))
        // (a message left open by a send that never went out would start with a continuation)
        assert.deepStrictEqual(
          frames.map((f) => [f.opcode, f.fin, f.masked, toHex(f.payload)]),
          [[Opcode.Binary, false, name !== "server", ""], [Opcode.Continuation, true, name !== "server", "000102"]],
          `${how}, ${name}`
        )
      }
    }
  })

  it("masking keys of built frames, longer frames, pings, automatic and unsolicited pongs and the Close are the random source's 4-byte groups in order, each used once, across three refills of the key pool (a control frame or a longer frame drawing the first key of a refill)", () => {
    const stream: Array<number> = []
    let fills = 0
    const randomFill = (bytes: Uint8Array) => {
      bytes.set(seededBytes(bytes.length, 7000 + fills++))
      stream.push(...bytes)
    }
    const client = makeClient({ sendBufferSize: 64, randomFill }) // built up to 58 bytes
    const wire: Array<Uint8Array> = []
    const draws = 3 * 1024 + 50
    // one key drawn per step; step k draws key k: 1024 is a ping's, 2048 a longer frame's, 3072 a built frame's
    for (let k = 0; k < draws; k++) {
      switch (k % 5) {
        case 0:
        case 2:
          send(client, BinaryMessage, seededBytes(k % 59, k))
          break
        case 1: {
          // a ping from the server: its automatic pong draws the key
          const { sent, deliveries } = feed(client, concat([Uint8Array.of(0x89, 2), seededBytes(2, k)]))
          assert.deepStrictEqual(deliveries, [])
          wire.push(...sent)
          continue
        }
        case 3:
          send(client, BinaryMessage, seededBytes(59 + (k % 150), k)) // in chunks of the send buffer
          break
        case 4:
          send(client, k % 10 === 4 ? PingPong : UnsolicitedPong, seededBytes(k % 126, k))
          break
      }
      wire.push(drainSends(client).wire)
    }
    send(client, Close, utf8("bye"), 1000)
    wire.push(drainSends(client).wire)
    const frames = parseFrames(concat(wire))
    assert.strictEqual(frames.length, draws + 1)
    assert.strictEqual(fills, 4)
    const expected = Array.from({ length: draws + 1 }, (_, k) => toHex(Uint8Array.from(stream.slice(4 * k, 4 * k + 4))))
    const keys = frames.map((f) => toHex(f.maskKey))
    for (let k = 0; k < keys.length; k++) assert.strictEqual(keys[k], expected[k], `key ${k} (frame opcode ${frames[k]!.opcode})`)
    // and every payload read back as sent
    for (const [k, frame] of frames.entries()) {
      if (k === draws) assert.deepStrictEqual([frame.opcode, toHex(frame.payload)], [Opcode.Close, "03e8" + toHex(utf8("bye"))])
      else if (k % 5 === 0 || k % 5 === 2) assert.strictEqual(toHex(frame.payload), toHex(seededBytes(k % 59, k)), `frame ${k}`)
      else if (k % 5 === 3) assert.strictEqual(toHex(frame.payload), toHex(seededBytes(59 + (k % 150), k)), `frame ${k}`)
      else assert.strictEqual(toHex(frame.payload), toHex(seededBytes(k % 5 === 1 ? 2 : k % 126, k)), `frame ${k}`)
    }
  })

  it("allocated buffers of the smallest legal size (receive + send + 256) at byteOffsets 0-7, receive sizes 256-259 and 65536, send sizes 16-19, 130 and 65536: a message received to the very end of the receive part stays intact while its tail is echoed in a built frame, frames of every short length and around the longest built one are right, and nothing outside the allocated buffer changes", () => {
    const { Utf8Message } = BufferTypeCode
    const guard = 32
    for (const receiveBufferSize of [256, 257, 258, 259, 65536]) {
      for (const sendBufferSize of [16, 17, 18, 19, 130, 65536]) {
        for (let byteOffset = 0; byteOffset < 8; byteOffset++) {
          const size = receiveBufferSize + sendBufferSize + 256
          const memory = new Uint8Array(guard + byteOffset + size + guard).fill(0xee)
          const allocatedBuffer = memory.subarray(guard + byteOffset, guard + byteOffset + size)
          const where = `receive ${receiveBufferSize}, send ${sendBufferSize}, byteOffset ${byteOffset}`
          const client = makeClient({ receiveBufferSize, sendBufferSize, allocatedBuffer, randomFill: countingFill() })
          const limit = builtLimit(sendBufferSize)
          // server frames filling the receive part exactly: the last payload ends at its last byte
          const lastLength = Math.min(125, receiveBufferSize - 2)
          const wireIn = concat([
            Uint8Array.of(0x82, 0x7e, (receiveBufferSize - 6 - lastLength) >>> 8, (receiveBufferSize - 6 - lastLength) & 0xff),
            seededBytes(receiveBufferSize - 6 - lastLength, 1),
            Uint8Array.of(0x82, lastLength),
            seededBytes(lastLength, 2)
          ])
          assert.strictEqual(wireIn.length, receiveBufferSize)
          assert.strictEqual(client.receive(undefined, "r1"), Status.Ok)
          const read = next(client, QueueCode.Receive)
          assert.strictEqual(read.action, ActionCode.ReceiveFromNetwork)
          assert.isAtLeast(read.buffers[0]!.length, wireIn.length, where)
          read.buffers[0]!.set(wireIn)
          complete(client, read, wireIn.length)
          const firstDelivery = next(client, QueueCode.Receive)
          assert.strictEqual(firstDelivery.action, ActionCode.IndicateReceiveComplete)
          complete(client, firstDelivery)
          assert.strictEqual(client.receive(undefined, "r2"), Status.Ok)
          const delivery = next(client, QueueCode.Receive)
          assert.strictEqual(delivery.action, ActionCode.IndicateReceiveComplete)
          const received = delivery.buffers[0]!
          assert.strictEqual(received.buffer, memory.buffer)
          assert.strictEqual(received.byteOffset + received.length, allocatedBuffer.byteOffset + 4 + receiveBufferSize, `${where}: the view ends at the receive part's end`)
          assert.strictEqual(toHex(received), toHex(seededBytes(lastLength, 2)))
          // the received view's tail, echoed while it is held (a view into the same memory)
          const echo = received.subarray(received.length - Math.min(limit, received.length))
          const lengths = [0, 1, 2, 3, 4, 5, limit - 1, limit, limit + 1]
          const wire: Array<Uint8Array> = []
          send(client, BinaryMessage, echo)
          const echoStep = next(client, QueueCode.Send)
          assert.strictEqual(echoStep.buffers.length, 1, `${where}: the echo is built`)
          wire.push(concat(echoStep.buffers))
          complete(client, echoStep)
          for (const w of drainSends(client).writes) wire.push(concat(w.buffers))
          for (const [i, length] of lengths.entries()) {
            send(client, i % 2 === 0 ? BinaryMessage : Utf8Message, seededBytes(length, i + 3).map((b) => b & 0x7f))
            for (const w of drainSends(client).writes) wire.push(concat(w.buffers))
          }
          assert.strictEqual(toHex(received), toHex(seededBytes(lastLength, 2)), `${where}: the received message is intact`)
          complete(client, delivery)
          assert.deepStrictEqual(
            parseFrames(concat(wire)).map((f) => toHex(f.payload)),
            [toHex(seededBytes(lastLength, 2).subarray(lastLength - echo.length)), ...lengths.map((length, i) => toHex(seededBytes(length, i + 3).map((b) => b & 0x7f)))],
            where
          )
          assert.isTrue(memory.subarray(0, guard + byteOffset).every((b) => b === 0xee), `${where}: before the allocated buffer`)
          assert.isTrue(memory.subarray(guard + byteOffset + size).every((b) => b === 0xee), `${where}: after the allocated buffer`)
        }
      }
    }
  })
})

describe("masked frames of 126-511 bytes built whole when queued (a 16-bit length, the frame at the send memory's start)", () => {
  const { BinaryFragment, BinaryMessage, Utf8Message } = BufferTypeCode

  it("every payload length 126-511 byte for byte, whole messages and fragments, short frames and repeated lengths between, in an own send memory and in allocated buffers at every alignment, across refills of the key pool: FIN and opcode, 0xfe, the length big-endian, the next 4 random bytes as the key at send memory byte 4 (4-byte aligned), the payload XOR the key; a 16-bit frame at the send memory's start, a 7-bit one 2 bytes in", () => {
    const receiveBufferSize = 256
    const sendBufferSize = 4096
    for (const shift of [undefined, 0, 1, 2, 3]) {
      const memory = new Uint8Array(shift === undefined ? 0 : shift + 4 + receiveBufferSize + sendBufferSize + 256)
      const allocatedBuffer = shift === undefined ? undefined : memory.subarray(shift)
      // the send memory: a buffer of its own, or 4-byte aligned right after the receive part (4 reserved bytes and the receive buffer)
      const receivePartEnd = (allocatedBuffer?.byteOffset ?? 0) + 4 + receiveBufferSize
      const sendMemory = allocatedBuffer === undefined ? 0 : receivePartEnd + ((4 - (receivePartEnd & 3)) & 3)
      const seededFill = () => {
        let fills = 0
        return (bytes: Uint8Array) => bytes.set(seededBytes(bytes.length, 5000 + fills++))
      }
      const client = makeClient({ receiveBufferSize, sendBufferSize, allocatedBuffer, randomFill: seededFill() })
      const random = seededFill()
      const pool = new Uint8Array(4096)
      let medium = 0
      for (let i = 0; i < 2200; i++) {
        if (i % 1024 === 0) random(pool) // the engine's pool holds 1024 keys
        const key = pool.subarray((i % 1024) * 4, (i % 1024) * 4 + 4)
        // two 16-bit frames of each length 126-511 in a row (a view reused), a 7-bit one (up to 125 B) every third frame
        const length = i % 3 === 2 ? 120 + (i % 6) : 126 + ((medium++ >>> 1) % 386)
        // whole binary and text messages, then a binary message in three fragments
        const kind = i % 5
        const type = kind === 1 ? Utf8Message : kind === 2 || kind === 3 ? BinaryFragment : BinaryMessage
        const first = kind === 0 ? 0x82 : kind === 1 ? 0x81 : kind === 2 ? 0x02 : kind === 3 ? 0x00 : 0x80
        const payload = seededBytes(length, i).map((b) => kind === 1 ? b & 0x7f : b)
        send(client, type, payload)
        const step = next(client, QueueCode.Send)
        const where = `shift ${shift}, frame ${i} (${length} B)`
        assert.strictEqual(step.action, ActionCode.SendToNetwork, where)
        assert.strictEqual(step.buffers.length, 1, `${where}: one buffer`)
        const view = step.buffers[0]!
        const header = length <= 125 ? [first, 0x80 | length] : [first, 0xfe, length >>> 8, length & 0xff]
        const expected = new Uint8Array(header.length + 4 + length)
        expected.set([...header, ...key])
        expected.set(payload, header.length + 4)
        applyMaskSimple(expected, header.length + 4, expected.length, key, 0)
        assert.strictEqual(toHex(view), toHex(expected), where)
        if (allocatedBuffer !== undefined) assert.strictEqual(view.buffer, memory.buffer, `${where}: in the allocated buffer`)
        assert.strictEqual(view.byteOffset, sendMemory + (length <= 125 ? 2 : 0), `${where}: where the frame starts`)
        assert.strictEqual((view.byteOffset + header.length - 4) % 4, 0, `${where}: the key 4-byte aligned`)
        complete(client, step)
        const done = next(client, QueueCode.Send)
        assert.strictEqual(done.action, ActionCode.IndicateSendComplete, where)
        complete(client, done)
        assert.isTrue(client.sendWritten, where)
      }
    }
  })
})
