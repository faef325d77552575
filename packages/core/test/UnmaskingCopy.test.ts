/**
 * A masked payload read straight into a message's buffer is unmasked as the transport copies it
 * (`tryRead.withCopy` of a transport, with the handle's `copyForRead`): what a connection gets that
 * way, and transports whose reads must not be bypassed by it.
 */
import { assert, describe, it } from "@effect/vitest"
import { Effect, Exit, Fiber, Stream } from "effect"
import { Connection, Transport, WebSocket } from "../src/index.ts"
import { ActionCode, BufferTypeCode, QueueCode, Status } from "../src/internal/engine/engine.ts"
import { complete, countingCopies, expectAction, makeServer, maskedFrame, next, readHeaderByHand, seededBytes } from "./engine/helpers.ts"

const encoder = new TextEncoder()

const concat = (parts: ReadonlyArray<Uint8Array>): Uint8Array => {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0))
  let at = 0
  for (const p of parts) {
    out.set(p, at)
    at += p.length
  }
  return out
}

/** A server handle whose opening handshake was done in memory. */
const serverHandle = Effect.gen(function*() {
  const client = yield* WebSocket.createClientHandle()
  const server = yield* WebSocket.createServerHandle()
  const { requestHeaders } = yield* WebSocket.beginClientHandshake(client, { initialHeaders: [{ name: "Host", value: "memory" }] })
  const { responseHeaders } = yield* WebSocket.beginServerHandshake(server, { requestHeaders })
  yield* WebSocket.endServerHandshake(server)
  yield* WebSocket.endClientHandshake(client, { responseHeaders })
  return server
}).pipe(Effect.orDie)

/** Writes `wire` to `transport` in pieces whose sizes cycle through `sizes`. */
const writeInPieces = (transport: Transport.Transport, wire: Uint8Array, sizes: ReadonlyArray<number>) =>
  Effect.gen(function*() {
    let at = 0
    for (let i = 0; at < wire.length; i++) {
      const size = Math.min(sizes[i % sizes.length]!, wire.length - at)
      yield* transport.write([wire.subarray(at, at + size)])
      at += size
    }
  })

/** Reads `transport` and drops what it reads, until it ends. */
const drainPeer = (transport: Transport.Transport) =>
  Effect.gen(function*() {
    const scratch = new Uint8Array(65536)
    for (let i = 0; i < 1_000_000; i++) if ((yield* transport.read(scratch)) === 0) return
  })

const KEYS: ReadonlyArray<ReadonlyArray<number>> = [[0x37, 0xfa, 0x21, 0x3d], [0x01, 0x80, 0xff, 0x7e], [0xa5, 0x5a, 0xc3, 0x3c]]

/** Large multi-byte text: 1 to 4-byte code points, so that cut points fall inside code points. */
const bigText = "a€😀ßxyz日本".repeat(30_000)

describe("a masked payload unmasked as the transport copies it (tryRead.withCopy), through a connection", () => {
  it.live(
    "large binary and text messages, in fragments with pings and pongs between them, each frame with its own key, arrive as sent whatever pieces the peer writes",
    () =>
      Effect.gen(function*() {
        const binary = seededBytes(200_003, 5)
        const fragments = [seededBytes(70_001, 6), seededBytes(5, 7), seededBytes(131_075, 8)]
        const text = encoder.encode(bigText)
        const cuts = [0, 100_001, 100_002, 250_003, text.length]
        const wire = concat([
          // a first large message makes the next ones be received straight into a buffer of their own
          maskedFrame(0x2, seededBytes(20_000, 4), KEYS[0]!),
          maskedFrame(0x2, binary, KEYS[1]!),
          // text in four frames, cut inside code points, a ping and a pong between them
          maskedFrame(0x1, text.subarray(cuts[0], cuts[1]), KEYS[0]!, false),
          maskedFrame(0x9, encoder.encode("ping"), KEYS[2]!),
          maskedFrame(0x0, text.subarray(cuts[1], cuts[2]), KEYS[1]!, false),
          maskedFrame(0x0, text.subarray(cuts[2], cuts[3]), KEYS[2]!, false),
          maskedFrame(0xa, encoder.encode("pong"), KEYS[0]!),
          maskedFrame(0x0, text.subarray(cuts[3], cuts[4]), KEYS[0]!, true),
          // binary in three frames, a pong between them
          maskedFrame(0x2, fragments[0]!, KEYS[2]!, false),
          maskedFrame(0xa, new Uint8Array(0), KEYS[1]!),
          maskedFrame(0x0, fragments[1]!, KEYS[0]!, false),
          maskedFrame(0x0, fragments[2]!, KEYS[1]!, true)
        ])
        const expected: ReadonlyArray<Connection.Message> = [seededBytes(20_000, 4), binary, bigText, concat(fragments)]
        let misaligned = 0
        for (const sizes of [[65536], [4099, 7, 1, 30_001, 13], [1021, 2, 3]]) {
          // written while the connection reads (a read most often takes one piece), or all of it
          // before (a read takes several pieces, copied one after the other into its buffer)
          for (const before of [false, true]) {
            const [a, b] = yield* Transport.makeMemoryPair({ highWaterMark: 4 * 1024 * 1024 })
            const { counts, transport: counted } = countingCopies(a)
            if (before) yield* writeInPieces(b, wire, sizes)
            const connection = yield* Connection.make(yield* serverHandle, counted)
            yield* Effect.addFinalizer(() => connection.abort)
            yield* Effect.forkChild(drainPeer(b))
            const received = yield* Effect.forkChild(Stream.runCollect(Stream.take(connection.messages, expected.length)))
            if (!before) yield* writeInPieces(b, wire, sizes)
            const got = yield* Fiber.join(received)
            const label = `(pieces ${sizes}, ${before ? "written before" : "written while reading"})`
            assert.strictEqual(got.length, expected.length)
            for (let i = 0; i < expected.length; i++) {
              if (typeof expected[i] === "string") assert.isTrue(got[i] === expected[i], `message ${i} ${label}`)
              else assert.isTrue(Buffer.from(got[i] as Uint8Array).equals(expected[i] as Uint8Array), `message ${i} ${label}`)
            }
            assert.isAbove(counts.copyingReads, 0, `the connection read with its unmasking copy ${label}`)
            misaligned += counts.misaligned
            assert.strictEqual(connection.stats.pingsIn, 1)
            assert.strictEqual(connection.stats.pongsIn, 2)
            yield* connection.abort
          }
        }
        assert.isAbove(misaligned, 0, "some copies started inside a masking key")
      })
  )

  it.live("invalid UTF-8 deep in a large masked text frame read straight into the message's buffer fails the connection (1007)", () =>
    Effect.gen(function*() {
      for (const at of [60_000, 150_001, 299_998]) {
        // (ASCII but for the one bad byte: only that byte can fail the check)
        const text = encoder.encode("0123456789abcdefghijklmnopqrstuvwxyz".repeat(8_334)) // 300 024 bytes
        const bad = text.slice()
        bad[at] = 0xff
        const [a, b] = yield* Transport.makeMemoryPair()
        const { counts, transport: counted } = countingCopies(a)
        const connection = yield* Connection.make(yield* serverHandle, counted)
        yield* Effect.addFinalizer(() => connection.abort)
        yield* Effect.forkChild(drainPeer(b))
        const messages = yield* Effect.forkChild(Stream.runCollect(connection.messages).pipe(Effect.exit))
        yield* Effect.forkChild(writeInPieces(b, concat([
          maskedFrame(0x1, text, KEYS[1]!),
          maskedFrame(0x1, bad, KEYS[2]!),
          // (a Close after it: a connection that let the message through closes with 1000)
          maskedFrame(0x8, new Uint8Array([0x03, 0xe8]), KEYS[0]!)
        ]), [4093, 17, 65536]).pipe(Effect.ignore))
        const closed = yield* connection.closed
        assert.strictEqual(closed.code, 1007, `invalid byte at ${at}`)
        const exit = yield* Fiber.join(messages)
        assert.isTrue(Exit.isFailure(exit))
        assert.isAbove(counts.copyingReads, 0, "the connection read with its unmasking copy")
      }
    }))

  // Transport's documentation: "A wrapper that changes what reads return replaces `read`,
  // `tryRead` and `whenReadable` together (or leaves the last two out)". Built the usual way (a
  // spread of the transport it wraps), such a wrapper must not be bypassed by the wrapped
  // transport's copying read: that read belongs to the `tryRead` it replaces or leaves out.
  for (const leavesOut of [true, false]) {
    it.live(
      leavesOut
        ? "a wrapper that replaces read and leaves tryRead and whenReadable out (as Transport documents) is read through its read, also for a large masked payload"
        : "a wrapper that replaces read, tryRead and whenReadable together (as Transport documents) is read through them, also for a large masked payload",
      () =>
        Effect.gen(function*() {
          // a toy cipher over a memory pair: what goes on the pair is XORed with 0x55, the wrapper's
          // reads undo it
          const [a, b] = yield* Transport.makeMemoryPair()
          const decipher = (buffer: Uint8Array, n: number) => {
            for (let i = 0; i < n; i++) buffer[i] = buffer[i]! ^ 0x55
            return n
          }
          const deciphering = Transport.make({
            ...a,
            read: (buffer) => Effect.map(a.read(buffer), (n) => decipher(buffer, n)),
            tryRead: leavesOut ? undefined : (buffer) => decipher(buffer, a.tryRead!(buffer)),
            whenReadable: leavesOut ? undefined : a.whenReadable
          })
          const connection = yield* Connection.make(yield* serverHandle, deciphering)
          yield* Effect.addFinalizer(() => connection.abort)
          const first = seededBytes(20_000, 1)
          const second = seededBytes(100_000, 2)
          const wire = concat([maskedFrame(0x2, first, KEYS[0]!), maskedFrame(0x2, second, KEYS[1]!)]).map((x) => x ^ 0x55)
          const received = yield* Effect.forkChild(Stream.runCollect(Stream.take(connection.messages, 2)).pipe(Effect.exit))
          yield* Effect.forkChild(writeInPieces(b, wire, [65536]).pipe(Effect.ignore))
          const exit = yield* Fiber.join(received)
          assert.isTrue(Exit.isSuccess(exit), `the messages arrive: ${Exit.isFailure(exit) ? String(exit.cause) : ""}`)
          const got = Exit.isSuccess(exit) ? exit.value : []
          assert.isTrue(Buffer.from(got[0] as Uint8Array).equals(first), "first message")
          assert.isTrue(Buffer.from(got[1] as Uint8Array).equals(second), "second message")
        })
    )
  }
})

describe("the handle's unmasking copy (copyForRead), driven by hand", () => {
  it("a read completed with fewer bytes than its copy filled, then reads copied plainly and with the copy, from odd places: the payload comes out as sent", () => {
    const payload = seededBytes(100_000, 9)
    const wire = maskedFrame(0x2, payload, KEYS[1]!)
    const server = makeServer({ receiveBufferSize: 200_000 })
    assert.strictEqual(server.receive(new Uint8Array(200_000), undefined), Status.Ok)
    // the header, read by the handle on its own
    let { offset, read } = readHeaderByHand(server, wire)
    assert.strictEqual(offset, 2 + 8 + 4)
    // [bytes the copy fills, in pieces of, bytes the read completes with, copied plainly]
    const reads: ReadonlyArray<readonly [number, number, number, boolean]> = [
      [1003, 1001, 998, false], // fewer than copied: the 5 bytes after are read again
      [5, 5, 5, true],
      [4097, 3, 4097, false],
      [2, 1, 1, false],
      [10_001, 10_001, 10_001, true]
    ]
    for (const [fill, piece, count, plain] of reads) {
      const room = read.buffers[0]!
      const copy = server.copyForRead
      assert.isDefined(copy)
      for (let at = 0; at < fill; at += piece) {
        const end = Math.min(fill, at + piece)
        if (plain) room.set(wire.subarray(offset + at, offset + end), at)
        else copy!(wire, offset + at, offset + end, room, at)
      }
      offset += count
      complete(server, read, count)
      read = next(server, QueueCode.Receive)
      if (read.action === ActionCode.IndicateReceiveComplete) break
    }
    // the rest with the copy, in reads of at most 30 000 bytes
    for (let i = 0; i < 100 && read.action === ActionCode.ReceiveFromNetwork; i++) {
      const room = read.buffers[0]!
      const n = Math.min(room.length, 30_000, wire.length - offset)
      server.copyForRead!(wire, offset, offset + n, room, 0)
      offset += n
      complete(server, read, n)
      read = next(server, QueueCode.Receive)
    }
    expectAction(read, ActionCode.IndicateReceiveComplete)
    assert.strictEqual(read.bufferType, BufferTypeCode.BinaryMessage)
    assert.strictEqual(offset, wire.length)
    assert.isTrue(Buffer.from(read.buffers[0]!).equals(payload))
  })
})
