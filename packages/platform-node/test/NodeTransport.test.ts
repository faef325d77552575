/**
 * Tests of `NodeTransport.fromDuplex` over real loopback TCP sockets: reads and writes, copied and
 * owned buffers, and backpressure both ways; and over streams that are not sockets.
 */
import { Connection, Transport, WebSocket } from "@effect-websocket/core"
import { assert, describe, it, vi } from "@effect/vitest"
import { Arbitrary, Effect, Fiber, Option, Scheduler, Stream } from "effect"
import * as Net from "node:net"
import { Duplex, type DuplexOptions, duplexPair } from "node:stream"
import * as Tls from "node:tls"
import { countingCopies, int, maskedFrame, seededBytes } from "../../core/test/engine/helpers.ts"
import { NodeTransport } from "../src/index.ts"
import { readIntoSharedBuffer } from "../src/internal/sharedReads.ts"
import { certificate } from "./interop/helpers.ts"

/** A connected pair of loopback sockets (client end, server end), destroyed with the scope. */
const socketPair = Effect.acquireRelease(
  Effect.callback<readonly [Net.Socket, Net.Socket, Net.Server]>((resume) => {
    const server = Net.createServer()
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address() as Net.AddressInfo
      server.once("connection", (accepted) => resume(Effect.succeed([client, accepted, server] as const)))
      const client = Net.connect(port, "127.0.0.1")
    })
  }),
  ([client, accepted, server]) =>
    Effect.sync(() => {
      client.destroy()
      accepted.destroy()
      server.close()
    })
)

/** A connected pair of TLS sockets over loopback (client end, server end), destroyed with the scope. */
const tlsPair = Effect.gen(function*() {
  const { cert, key } = yield* certificate
  return yield* Effect.acquireRelease(
    Effect.callback<readonly [Tls.TLSSocket, Tls.TLSSocket, Tls.Server]>((resume) => {
      const server = Tls.createServer({ cert, key })
      server.listen(0, "127.0.0.1", () => {
        const { port } = server.address() as Net.AddressInfo
        server.once("secureConnection", (accepted) => resume(Effect.succeed([client, accepted, server] as const)))
        const client = Tls.connect({ port, host: "127.0.0.1", ca: cert })
      })
    }),
    ([client, accepted, server]) =>
      Effect.sync(() => {
        client.destroy()
        accepted.destroy()
        server.close()
      })
  )
})

/** Reads exactly `length` bytes. */
const readExactly = (transport: Transport.Transport, length: number) =>
  Effect.gen(function*() {
    const out = new Uint8Array(length)
    let got = 0
    while (got < length) {
      const n = yield* transport.read(out.subarray(got))
      if (n === 0) return yield* Effect.die(`the stream ended after ${got} of ${length} bytes`)
      got += n
    }
    return out
  })

const pattern = (length: number, seed: number) => Uint8Array.from({ length }, (_, i) => (i * 31 + seed) & 0xff)

/** Waits until `condition` holds, for at most 5 seconds. */
const until = (condition: () => boolean, what: string) =>
  Effect.gen(function*() {
    for (let waited = 0; !condition(); waited++) {
      if (waited === 5000) return yield* Effect.die(`${what} after 5 seconds`)
      yield* Effect.sleep("1 millis")
    }
  })

/** Waits until `socket` has read `bytes` bytes (whoever took them). */
const untilRead = (socket: Net.Socket, bytes: number) =>
  until(() => socket.bytesRead >= bytes, `${socket.bytesRead} of ${bytes} bytes read`)


describe("NodeTransport.fromDuplex", () => {
  it.live("copied writes may be reused at once; owned buffers go out as they are, whatever their size", () =>
    Effect.gen(function*() {
      const [client, accepted] = yield* socketPair
      const a = NodeTransport.fromDuplex(client)
      const b = NodeTransport.fromDuplex(accepted)
      const small = pattern(100, 1)
      assert.isTrue(a.tryWrite!([small.subarray(0, 10), small.subarray(10)]))
      small.fill(0) // copied: the write completed, the memory is the caller's again
      const owned = pattern(300 * 1024, 2) // larger than any copy
      assert.isTrue(a.tryWrite!([owned], true))
      yield* a.write([pattern(70 * 1024, 3)], true)
      yield* a.write([pattern(10, 4)])
      // larger than a copy, in parts, not given away: handed to Node as they are, the write done once Node is
      yield* Effect.timeout(a.write([pattern(10, 5), pattern(100 * 1024, 6)]), "2 seconds")
      assert.deepStrictEqual(yield* readExactly(b, 100), pattern(100, 1))
      assert.deepStrictEqual(yield* readExactly(b, 300 * 1024), pattern(300 * 1024, 2))
      assert.deepStrictEqual(yield* readExactly(b, 70 * 1024), pattern(70 * 1024, 3))
      assert.deepStrictEqual(yield* readExactly(b, 10), pattern(10, 4))
      assert.deepStrictEqual(yield* readExactly(b, 10), pattern(10, 5))
      assert.deepStrictEqual(yield* readExactly(b, 100 * 1024), pattern(100 * 1024, 6))
      yield* a.end
      assert.strictEqual(yield* b.read(new Uint8Array(8)), 0)
      assert.strictEqual(b.tryRead!(new Uint8Array(8)), 0, "tryRead: the end")
    }))

  it.live("whenReadable: called once bytes, the end or an error arrive (at once if they are there already), once per setting", () =>
    Effect.gen(function*() {
      const [client, accepted] = yield* socketPair
      const a = NodeTransport.fromDuplex(client)
      const b = NodeTransport.fromDuplex(accepted)
      const buffer = new Uint8Array(64)
      let calls = 0
      const called = (n: number) =>
        Effect.callback<void>((resume) => {
          b.whenReadable!(() => {
            calls++
            resume(Effect.void)
          })
          return Effect.sync(() => b.whenReadable!(undefined))
        }).pipe(Effect.tap(() => Effect.sync(() => assert.strictEqual(calls, n))))
      const first = yield* Effect.forkChild(called(1))
      yield* Effect.sleep("20 millis")
      assert.strictEqual(calls, 0, "nothing there yet")
      yield* a.write([pattern(10, 1)])
      yield* Fiber.join(first)
      assert.strictEqual(b.tryRead!(buffer), 10)
      // cleared: a listener set and then cleared is never called
      b.whenReadable!(() => {
        calls += 100
      })
      b.whenReadable!(undefined)
      yield* a.write([pattern(5, 2)])
      yield* Effect.sleep("20 millis")
      assert.strictEqual(calls, 1)
      yield* called(2) // at once: the bytes are there
      assert.strictEqual(b.tryRead!(buffer), 5)
      const atEnd = yield* Effect.forkChild(called(3))
      yield* a.end
      yield* Fiber.join(atEnd)
      assert.strictEqual(b.tryRead!(buffer), 0)
      // an error (the peer resets the connection) wakes it too
      const [client2, accepted2] = yield* socketPair
      const d = NodeTransport.fromDuplex(accepted2)
      let woken = false
      const onError = Effect.callback<void>((resume) => {
        d.whenReadable!(() => {
          woken = true
          resume(Effect.void)
        })
      })
      const waiting = yield* Effect.forkChild(onError)
      yield* Effect.sleep("20 millis")
      client2.resetAndDestroy()
      yield* Fiber.join(waiting)
      assert.isTrue(woken)
    }))

  it.live("a read interrupted while it waits takes nothing: what arrives after it is there for the next read", () =>
    Effect.gen(function*() {
      const [client, accepted] = yield* socketPair
      const b = NodeTransport.fromDuplex(accepted)
      const waiting = yield* Effect.forkChild(b.read(new Uint8Array(64)))
      yield* Effect.sleep("10 millis")
      yield* Fiber.interrupt(waiting)
      client.write(pattern(10, 3))
      yield* untilRead(accepted, 10)
      const buffer = new Uint8Array(64)
      assert.strictEqual(b.tryRead!(buffer), 10)
      assert.deepStrictEqual(buffer.subarray(0, 10), pattern(10, 3))
    }))

  it.live("a small write then a larger copied one in the same tick arrive in the order they were made", () =>
    Effect.gen(function*() {
      const [client, accepted] = yield* socketPair
      const a = NodeTransport.fromDuplex(client)
      const b = NodeTransport.fromDuplex(accepted)
      assert.isTrue(a.tryWrite!([pattern(10, 1)]))
      assert.isTrue(a.tryWrite!([pattern(5000, 2)]))
      assert.deepStrictEqual(yield* readExactly(b, 5010), new Uint8Array(Buffer.concat([pattern(10, 1), pattern(5000, 2)])))
    }))

  it.live("tryRead takes what arrived without waiting, -1 when nothing did", () =>
    Effect.gen(function*() {
      const [client, accepted] = yield* socketPair
      const b = NodeTransport.fromDuplex(accepted)
      const buffer = new Uint8Array(16)
      assert.strictEqual(b.tryRead!(buffer), -1)
      client.write(pattern(10, 9))
      let n = -1
      for (let i = 0; i < 100 && n < 0; i++) {
        yield* Effect.sleep("5 millis")
        n = b.tryRead!(buffer)
      }
      assert.strictEqual(n, 10)
      assert.deepStrictEqual(buffer.subarray(0, 10), pattern(10, 9))
      assert.strictEqual(b.tryRead!(buffer), -1)
    }))

  it.live("small writes of a tick are gathered and arrive in order, whatever the write buffer limit", () =>
    Effect.gen(function*() {
      const [client, accepted] = yield* socketPair
      const a = NodeTransport.fromDuplex(client, { writeBufferLimit: 1024 }) // below Node's own mark
      const b = NodeTransport.fromDuplex(accepted)
      const expected: Array<Uint8Array> = []
      for (let i = 0; i < 3000; i++) {
        const piece = pattern(1 + (i % 50), i)
        expected.push(piece)
        if (i % 7 === 0) yield* a.write([piece.subarray(0, 1), piece.subarray(1)])
        else if (!a.tryWrite!([piece])) yield* a.write([piece])
      }
      yield* a.end // flushes what is gathered
      const all = Buffer.concat(expected)
      assert.deepStrictEqual(yield* readExactly(b, all.length), new Uint8Array(all))
      assert.strictEqual(yield* b.read(new Uint8Array(8)), 0)
    }))

  it.live("the writes of a tick reach the operating system in one writev, in the order they were made", () =>
    Effect.gen(function*() {
      const [client, accepted] = yield* socketPair
      const calls: Array<string> = []
      const writev = client._writev!.bind(client)
      client._writev = (chunks, callback) => {
        calls.push(`writev ${chunks.length}`)
        writev(chunks, callback)
      }
      const write = client._write.bind(client)
      client._write = (chunk, encoding, callback) => {
        calls.push("write")
        write(chunk, encoding, callback)
      }
      const a = NodeTransport.fromDuplex(client)
      const b = NodeTransport.fromDuplex(accepted)
      // in every tick, not only the first
      for (const tick of [1, 2]) {
        calls.length = 0
        // as a client sends a large message: owned 64 KiB parts (pooled memory), with small frames,
        // a copied one and an application's owned buffer in between
        const pieces = [
          [a.allocate!(64 * 1024).fill(1)],
          [pattern(10, 1)],
          [a.allocate!(64 * 1024).fill(2), pattern(20, 2)],
          [pattern(30 * 1024, 3)],
          [pattern(5, 4)],
          [pattern(200 * 1024, 5)]
        ]
        const owned = [true, false, true, false, false, true]
        pieces.forEach((buffers, i) => assert.isTrue(a.tryWrite!(buffers, owned[i]), `tick ${tick}: write ${i} taken at once`))
        assert.deepStrictEqual(calls, [], `tick ${tick}: nothing is written before the tick ends`)
        const all = Buffer.concat(pieces.flat())
        assert.deepStrictEqual(yield* readExactly(b, all.length), new Uint8Array(all))
        assert.strictEqual(calls[0], "writev 7", `tick ${tick}: one writev for the tick (calls: ${calls.join(", ")})`)
      }
    }))

  it.live.prop(
    "the small writes of several sockets, interleaved in a tick, each arrive whole and in order, in one write per socket for the tick",
    {
      writes: Arbitrary.array(Arbitrary.all([int(0, 2), int(1, 4096)]), { minLength: 1, maxLength: 40 }),
      seed: int(1, 0x7fffffff)
    },
    ({ seed, writes }) =>
      Effect.gen(function*() {
        const ends: Array<{
          readonly from: Transport.Transport
          readonly to: Transport.Transport
          readonly sent: Array<Uint8Array>
          readonly calls: () => number
        }> = []
        for (let i = 0; i < 3; i++) {
          const [client, accepted] = yield* socketPair
          let calls = 0
          const writev = client._writev!.bind(client)
          client._writev = (chunks, callback) => {
            calls++
            writev(chunks, callback)
          }
          const write = client._write.bind(client)
          client._write = (chunk, encoding, callback) => {
            calls++
            write(chunk, encoding, callback)
          }
          ends.push({ from: NodeTransport.fromDuplex(client), to: NodeTransport.fromDuplex(accepted), sent: [], calls: () => calls })
        }
        writes.forEach(([i, size], k) => {
          const bytes = seededBytes(size, seed + k)
          ends[i]!.sent.push(Uint8Array.from(bytes))
          assert.isTrue(ends[i]!.from.tryWrite!([bytes.subarray(0, 1), bytes.subarray(1)]), `write ${k} taken at once`)
          bytes.fill(0) // copied: the caller's memory again
          const taken = ends[i]!.sent.reduce((total, sent) => total + sent.length, 0)
          assert.strictEqual(ends[i]!.from.bufferedAmount!(), taken, `write ${k}: bufferedAmount counts the socket's bytes of the tick`)
        })
        for (const [i, end] of ends.entries()) {
          const expected = new Uint8Array(Buffer.concat(end.sent))
          assert.deepStrictEqual(yield* readExactly(end.to, expected.length), expected, `socket ${i}`)
          assert.strictEqual(end.calls(), end.sent.length === 0 ? 0 : 1, `socket ${i}: the tick's writes in one write`)
        }
      }),
    { timeout: 60_000, arbitrary: { runs: 40, size: 40 } }
  )

  it.live("the writes held until the tick ends never exceed writeBufferLimit: past it they go out at once", () =>
    Effect.gen(function*() {
      for (const limit of [16 * 1024, 256 * 1024]) {
        const [client, accepted] = yield* socketPair
        const a = NodeTransport.fromDuplex(client, { writeBufferLimit: limit })
        const b = NodeTransport.fromDuplex(accepted)
        let largest = 0
        for (let i = 0; i < 16; i++) {
          const frame = a.allocate!(64 * 1024).fill(i)
          if (!a.tryWrite!([frame], true)) yield* a.write([frame], true)
          largest = Math.max(largest, a.bufferedAmount!())
          // a held frame makes the socket hold more than a limit below a frame: it is not kept corked
          if (limit < 64 * 1024) assert.strictEqual(client.writableCorked, 0, `limit ${limit}: frame ${i} went out at once`)
        }
        assert.isAtMost(largest, limit + 64 * 1024, `limit ${limit}: held bytes stay within the limit and a frame`)
        const received = yield* readExactly(b, 16 * 64 * 1024)
        for (let i = 0; i < 16; i++) assert.strictEqual(received[i * 64 * 1024 + 100], i)
        yield* Effect.sync(() => (client.destroy(), accepted.destroy()))
      }
    }))

  it.live("a peer that does not read makes writes wait: the socket holds at most writeBufferLimit bytes", () =>
    Effect.gen(function*() {
      const [client, accepted] = yield* socketPair
      accepted.pause() // nobody reads on the other end
      const limit = 256 * 1024
      const a = NodeTransport.fromDuplex(client, { writeBufferLimit: limit })
      const chunk = pattern(64 * 1024, 5)
      // far more than the kernel buffers: owned writes are taken until the socket's buffer is full
      const writer = yield* Effect.forkChild(Effect.gen(function*() {
        for (let i = 0; i < 2000; i++) yield* a.write([chunk], true)
      }))
      yield* Effect.sleep("200 millis")
      assert.isUndefined(writer.pollUnsafe(), "the writer waits")
      assert.isAtMost(client.writableLength, limit + chunk.length, "bounded buffering")
      assert.isFalse(a.tryWrite!([chunk], true), "tryWrite refuses while the socket is full")
      yield* Fiber.interrupt(writer)
    }))

  it.live("a write or a read that must wait is woken by what came while it was on its way to wait (the fiber may yield at any step)", () =>
    Effect.gen(function*() {
      // (from 3: with a budget of 2 an Effect fiber makes no progress at all)
      for (let budget = 3; budget <= 40; budget++) {
        // a stream whose writes complete when the test says so
        const held: Array<() => void> = []
        const stream = new Duplex({
          writableHighWaterMark: 16,
          read() {},
          write(_chunk, _encoding, callback) {
            held.push(callback)
          }
        })
        const transport = NodeTransport.fromDuplex(stream, { writeBufferLimit: 16 })
        const listeners = () => [stream.listenerCount("drain"), stream.listenerCount("close")]
        const before = listeners()
        yield* transport.write([new Uint8Array(8192)]) // taken; the stream now holds more than the limit
        const writer = yield* Effect.forkChild(
          transport.write([new Uint8Array(8192)]).pipe(Effect.provideService(Scheduler.MaxOpsBeforeYield, budget))
        )
        yield* Effect.yieldNow
        while (held.length > 0) held.shift()!() // the stream takes everything: it emits drain
        const done = yield* Effect.timeoutOption(Fiber.join(writer), "1 second")
        assert.isTrue(Option.isSome(done), `budget ${budget}: the write was woken`)
        assert.deepStrictEqual(listeners(), before, `budget ${budget}: the wait left no listener behind`)
        // a read that must wait; the data comes as soon as the reader yields
        const reader = yield* Effect.forkChild(
          transport.read(new Uint8Array(8)).pipe(Effect.provideService(Scheduler.MaxOpsBeforeYield, budget))
        )
        yield* Effect.yieldNow
        stream.push(new Uint8Array([1, 2]))
        const read = yield* Effect.timeoutOption(Fiber.join(reader), "1 second")
        assert.deepStrictEqual(read, Option.some(2), `budget ${budget}: the read was woken`)
        stream.destroy()
      }
    }), 60_000)

  it.live("reading pauses the socket once highWaterMark bytes wait, and resumes as they are read", () =>
    Effect.gen(function*() {
      const [client, accepted] = yield* socketPair
      const b = NodeTransport.fromDuplex(accepted, { highWaterMark: 16 * 1024 })
      const total = 512 * 1024
      client.write(seededBytes(total, 6))
      yield* Effect.sleep("100 millis")
      assert.isTrue(accepted.isPaused(), "paused while the transport holds highWaterMark bytes")
      assert.deepStrictEqual(yield* readExactly(b, total), seededBytes(total, 6))
    }))

  it.live("a reader that keeps up never pauses the socket", () =>
    Effect.gen(function*() {
      const [client, accepted] = yield* socketPair
      let pauses = 0
      const pause = accepted.pause.bind(accepted)
      accepted.pause = () => {
        pauses++
        return pause()
      }
      const b = NodeTransport.fromDuplex(accepted, { highWaterMark: 16 * 1024 })
      yield* b.write([pattern(10, 8)]) // (one that wrote, as a server its handshake's answer, reads the same)
      yield* Effect.sleep("10 millis")
      const total = 4 * 1024 * 1024
      const reader = yield* Effect.forkChild(readExactly(b, total))
      yield* Effect.sleep("10 millis") // the reader waits
      client.write(pattern(total, 9))
      assert.deepStrictEqual(yield* Fiber.join(reader), pattern(total, 9))
      assert.strictEqual(pauses, 0, "every chunk was taken as it came")
    }))

  it.live("a peer that ended or went away before the transport took the socket over reads as ended; one that reset it, as failed", () =>
    Effect.gen(function*() {
      // as when a client sends its request, its first frames and FIN at once: the end comes while
      // the upgrade is being answered, with the frames in `head`
      const [client, accepted] = yield* socketPair
      client.end()
      yield* Effect.callback<void>((resume) => void accepted.once("end", () => resume(Effect.void)))
      const ended = NodeTransport.fromDuplex(accepted, { head: Buffer.from("frames") })
      const buffer = new Uint8Array(64)
      const first = yield* Effect.timeout(ended.read(buffer), "2 seconds")
      assert.strictEqual(Buffer.from(buffer.subarray(0, first)).toString(), "frames")
      assert.strictEqual(yield* Effect.timeout(ended.read(buffer), "2 seconds"), 0)

      const [client2, accepted2] = yield* socketPair
      client2.destroy()
      yield* Effect.callback<void>((resume) => void accepted2.once("close", () => resume(Effect.void)))
      const closed = NodeTransport.fromDuplex(accepted2)
      assert.strictEqual(yield* Effect.timeout(closed.read(buffer), "2 seconds"), 0)

      // destroyed on our side (the peer's end never read)
      const [, accepted3] = yield* socketPair
      accepted3.destroy()
      yield* Effect.callback<void>((resume) => void accepted3.once("close", () => resume(Effect.void)))
      assert.strictEqual(yield* Effect.timeout(NodeTransport.fromDuplex(accepted3).read(buffer), "2 seconds"), 0)

      const [client4, accepted4] = yield* socketPair
      accepted4.on("error", () => {})
      client4.resetAndDestroy()
      yield* Effect.callback<void>((resume) => void accepted4.once("close", () => resume(Effect.void)))
      const reset = yield* Effect.flip(Effect.timeout(NodeTransport.fromDuplex(accepted4).read(buffer), "2 seconds"))
      assert.include(reset.message, "socket error")
    }))

  it.live("the bytes read before the socket failed (the peer reset it) are read first, then the failure", () =>
    Effect.gen(function*() {
      const [client, accepted] = yield* socketPair
      const transport = NodeTransport.fromDuplex(accepted)
      client.write(pattern(10, 4))
      yield* untilRead(accepted, 10)
      client.resetAndDestroy()
      yield* Effect.callback<void>((resume) => void accepted.once("close", () => resume(Effect.void)))
      assert.deepStrictEqual(yield* readExactly(transport, 10), pattern(10, 4))
      const error = yield* Effect.flip(transport.read(new Uint8Array(8)))
      assert.include(error.message, "socket error")
    }))

  it.live("the peer's FIN ends reading only: what is written after it still reaches the peer", () =>
    Effect.gen(function*() {
      // a Close answering a peer that sent a broken frame and its FIN at once must still go out
      const [client, accepted] = yield* socketPair
      const transport = NodeTransport.fromDuplex(accepted)
      let received = ""
      client.on("data", (chunk: Buffer) => (received += chunk.toString()))
      client.end()
      assert.strictEqual(yield* Effect.timeout(transport.read(new Uint8Array(16)), "2 seconds"), 0)
      yield* Effect.sleep("20 millis") // past the turn in which Node would end our side
      yield* transport.write([Buffer.from("after the end")])
      yield* transport.close
      yield* Effect.callback<void>((resume) => void client.once("close", () => resume(Effect.void)))
      assert.strictEqual(received, "after the end")
    }))

  it.live("close lingers: what the peer still sends is dropped until it ends, so it gets our last bytes and no reset", () =>
    Effect.gen(function*() {
      const [client, accepted] = yield* socketPair
      const transport = NodeTransport.fromDuplex(accepted)
      let received = ""
      let error: Error | undefined
      client.on("data", (chunk: Buffer) => (received += chunk.toString("latin1")))
      client.on("error", (e) => (error = e))
      // the peer keeps writing for a while (as a peer does that has not yet seen our Close)
      const started = Date.now()
      const keepWriting = () => {
        if (client.destroyed) return
        if (Date.now() - started > 200) return void client.end()
        client.write(pattern(1024, 1))
        setImmediate(keepWriting)
      }
      keepWriting()
      yield* Effect.sleep("20 millis")
      yield* transport.write([Buffer.from("last words")])
      yield* transport.close
      yield* Effect.callback<void>((resume) => void client.once("close", () => resume(Effect.void)))
      assert.isTrue(received.endsWith("last words"))
      assert.isUndefined(error, "no reset")
    }))

  it.live("close after the peer's end still delivers everything written before it", () =>
    Effect.gen(function*() {
      const [client, accepted] = yield* socketPair
      const transport = NodeTransport.fromDuplex(accepted, { writeBufferLimit: 16 * 1024 * 1024 })
      let received = 0
      client.on("data", (chunk: Buffer) => (received += chunk.length))
      client.end()
      assert.strictEqual(yield* Effect.timeout(transport.read(new Uint8Array(16)), "2 seconds"), 0)
      // more than the socket takes at once: most of it is still queued in Node when close runs
      const total = 8 * 1024 * 1024
      yield* transport.write([new Uint8Array(total)], true)
      yield* transport.close
      yield* Effect.callback<void>((resume) => void client.once("close", () => resume(Effect.void)))
      assert.strictEqual(received, total)
    }))

  it.live("frame memory from allocate comes back once written; owned application buffers never do", () =>
    Effect.gen(function*() {
      const [client, accepted] = yield* socketPair
      const a = NodeTransport.fromDuplex(client)
      const b = NodeTransport.fromDuplex(accepted)
      const size = 64 * 1024 + 14
      const frame = a.allocate!(size)
      frame.set(pattern(size, 7))
      yield* a.write([frame], true)
      const application = pattern(size, 8) // the application's own memory, given away by send
      yield* a.write([application], true)
      // a client's 64 KiB message part: no larger than a copied write, yet written as it is
      const part = a.allocate!(64 * 1024)
      part.set(pattern(64 * 1024, 9))
      yield* a.write([part], true)
      assert.deepStrictEqual(yield* readExactly(b, size), pattern(size, 7))
      assert.deepStrictEqual(yield* readExactly(b, size), pattern(size, 8))
      assert.deepStrictEqual(yield* readExactly(b, 64 * 1024), pattern(64 * 1024, 9))
      yield* Effect.sleep("10 millis") // the write callbacks have run
      const next = [a.allocate!(size), a.allocate!(size), a.allocate!(size)]
      assert.isTrue(next.some((bytes) => bytes.buffer === frame.buffer), "written frame memory is reused")
      assert.isTrue(next.some((bytes) => bytes.buffer === part.buffer), "and that of a 64 KiB part")
      assert.isFalse(next.some((bytes) => bytes.buffer === application.buffer), "application memory is not")
      assert.strictEqual(a.allocate!(100).length, 100, "small sizes: plain allocations")
    }))

  it.live.prop(
    "what plain sockets read while nobody reads stays intact as later reads of any socket arrive (they read into one shared buffer)",
    {
      chunks: Arbitrary.array(int(1, 16 * 1024), { minLength: 2, maxLength: 10 }),
      readSize: int(1, 80 * 1024),
      seed: int(1, 0x7fffffff)
    },
    ({ chunks, readSize, seed }) =>
      Effect.gen(function*() {
        const [client1, accepted1] = yield* socketPair
        const [client2, accepted2] = yield* socketPair
        // (read ahead without a pause: every chunk is read, and kept, before anything is taken)
        const one = NodeTransport.fromDuplex(accepted1, { highWaterMark: 1024 * 1024 })
        const two = NodeTransport.fromDuplex(accepted2, { highWaterMark: 1024 * 1024 })
        const total = chunks.reduce((a, b) => a + b, 0)
        const sent1 = seededBytes(total, seed)
        const sent2 = seededBytes(total, seed + 1)
        let at = 0
        for (const size of chunks) {
          client1.write(sent1.subarray(at, at + size))
          client2.write(sent2.subarray(at, at + size))
          at += size
          yield* untilRead(accepted1, at)
          yield* untilRead(accepted2, at)
        }
        const takeAll = (transport: Transport.Transport) =>
          Effect.gen(function*() {
            const out = new Uint8Array(total)
            for (let got = 0; got < total;) {
              const n = yield* transport.read(out.subarray(got, Math.min(total, got + readSize)))
              assert.isAbove(n, 0, `the stream ended after ${got} of ${total} bytes`)
              got += n
            }
            return out
          })
        assert.deepStrictEqual(yield* takeAll(one), sent1)
        assert.deepStrictEqual(yield* takeAll(two), sent2)
      }),
    { timeout: 60_000, arbitrary: { runs: 30 } }
  )

  it.live("TCP sockets read into the shared buffer; TLS sockets, other streams, and sockets with bytes, an encoding or data listeners of their own keep their data events", () =>
    Effect.gen(function*() {
      const [, plain] = yield* socketPair
      assert.isTrue(readIntoSharedBuffer(plain, 0, () => {}), "a plain socket")
      assert.isFalse(readIntoSharedBuffer(plain, 0, () => {}), "only once")
      // (Node decrypts at once what is pending when JavaScript writes, ends or renegotiates: a read
      // inside whatever callback runs, maybe one that still uses the shared buffer)
      const [, secure] = yield* tlsPair
      assert.isFalse(readIntoSharedBuffer(secure, 0, () => {}), "a TLS socket")
      const [, decoding] = yield* socketPair
      decoding.setEncoding("latin1")
      assert.isFalse(readIntoSharedBuffer(decoding, 0, () => {}), "an encoding")
      const [, listened] = yield* socketPair
      listened.on("data", () => {})
      assert.isFalse(readIntoSharedBuffer(listened, 0, () => {}), "a data listener of its own")
      assert.isTrue(readIntoSharedBuffer(listened, 1, () => {}), "the caller's own listener")
      const [writer, waiting] = yield* socketPair
      waiting.pause()
      writer.write("bytes")
      yield* until(() => waiting.readableLength > 0, "nothing buffered")
      assert.isFalse(readIntoSharedBuffer(waiting, 0, () => {}), "bytes buffered already")
      assert.isFalse(readIntoSharedBuffer(duplexPair()[0], 0, () => {}), "a Duplex")
      // nor TLS over a stream that is not a socket: it reads when that stream emits
      const { cert, key } = yield* certificate
      const [left, right] = duplexPair()
      const overStream = new Tls.TLSSocket(left, { isServer: true, cert, key })
      const client = Tls.connect({ socket: right, ca: cert, checkServerIdentity: () => undefined })
      yield* Effect.addFinalizer(() => Effect.sync(() => [overStream, client].forEach((socket) => socket.destroy())))
      yield* Effect.callback<void>((resume) => void client.once("secureConnect", () => resume(Effect.void)))
      assert.isFalse(readIntoSharedBuffer(overStream, 0, () => {}), "TLS over a Duplex")
      assert.isFalse(readIntoSharedBuffer(client, 0, () => {}), "TLS over a Duplex (the client end)")
    }))

  it.live("what a TLS socket decrypted while nobody reads stays intact as later reads arrive", () =>
    Effect.gen(function*() {
      const [client, accepted] = yield* tlsPair
      const transport = NodeTransport.fromDuplex(accepted, { highWaterMark: 1024 * 1024 })
      const chunks = [1, 700, 16 * 1024, 5, 40 * 1024, 3000, 16 * 1024 + 1]
      const total = chunks.reduce((a, b) => a + b, 0)
      const sent = seededBytes(total, 99)
      let at = 0
      for (const size of chunks) {
        client.write(sent.subarray(at, at + size))
        at += size
        yield* Effect.sleep("5 millis") // (read and decrypted apart, most likely)
      }
      assert.deepStrictEqual(yield* readExactly(transport, total), sent)
    }))

  it.live("streams that are not sockets get no recycled memory: they may pass the written buffer on", () =>
    Effect.sync(() => {
      const [left] = duplexPair()
      assert.isUndefined(NodeTransport.fromDuplex(left).allocate)
    }))
})

/** A server connection over `stream` (the opening handshake done in memory), its peer a test. */
const serverConnectionOver = (stream: Duplex) =>
  Effect.gen(function*() {
    const client = yield* WebSocket.createClientHandle()
    const server = yield* WebSocket.createServerHandle()
    const { requestHeaders } = yield* WebSocket.beginClientHandshake(client, { initialHeaders: [{ name: "Host", value: "x" }] })
    const { responseHeaders } = yield* WebSocket.beginServerHandshake(server, { requestHeaders })
    return yield* Connection.make(server, NodeTransport.fromDuplex(stream), { handshake: { requestHeaders, responseHeaders } })
  })

/** A masked frame, as a client sends it (masking key 1 2 3 4). */
const clientFrame = (opcode: number, payload: Uint8Array): Buffer => {
  const key = [1, 2, 3, 4]
  return Buffer.from([0x80 | opcode, 0x80 | payload.length, ...key, ...payload.map((b, i) => b ^ key[i & 3]!)])
}

/** A stream whose writes are recorded, its readable side fed by the test. */
const recordingStream = (options: { readonly onWrite?: (stream: Duplex, chunk: Buffer) => void; readonly allowHalfOpen?: boolean } = {}) => {
  const written: Array<Buffer> = []
  const stream = new Duplex({
    allowHalfOpen: options.allowHalfOpen ?? true,
    read() {},
    write(chunk: Buffer, _encoding, callback) {
      written.push(Buffer.from(chunk))
      options.onWrite?.(this, chunk)
      callback()
    }
  })
  return { stream, written: () => Buffer.concat(written).toString("hex") }
}

describe("NodeTransport.fromDuplex over streams that are not sockets", () => {
  /** A stream made from `options`, destroyed with the test's scope. */
  const scopedDuplex = (options: DuplexOptions) =>
    Effect.acquireRelease(Effect.sync(() => new Duplex(options)), (stream) => Effect.sync(() => stream.destroy()))

  it.live("a stream whose write throws fails the transport (a TransportError), never the process, and is destroyed", () =>
    Effect.gen(function*() {
      const throwing = (message = "boom") =>
        new Duplex({
          read() {},
          write() {
            throw new Error(message)
          }
        })
      const stream = throwing()
      const transport = NodeTransport.fromDuplex(stream)
      // a small write is gathered until the tick ends, and thrown at there
      yield* transport.write([Buffer.from("gathered")])
      yield* Effect.sleep("10 millis")
      assert.isTrue(stream.destroyed)
      const error = yield* Effect.flip(transport.write([Buffer.from("next")]))
      assert.deepStrictEqual([error._tag, error.message], ["TransportError", "write failed: boom"])
      const read = yield* Effect.flip(transport.read(new Uint8Array(8)))
      assert.strictEqual(read.message, "write failed: boom")
      // a large write is handed to the stream at once: it fails itself
      const large = NodeTransport.fromDuplex(throwing("too big"))
      const failed = yield* Effect.flip(large.write([new Uint8Array(100_000)]))
      assert.strictEqual(failed.message, "write failed: too big")
      assert.isFalse(large.tryWrite!([Buffer.from("x")]))
      // a write that fails the stream as it hands it what was gathered before reports the failure
      const tried = NodeTransport.fromDuplex(throwing())
      assert.isTrue(tried.tryWrite!([Buffer.from("gathered")]))
      assert.isFalse(tried.tryWrite!([new Uint8Array(5000)]), "tryWrite: not taken")
      const written = NodeTransport.fromDuplex(throwing())
      yield* written.write([Buffer.from("gathered")])
      const next = yield* Effect.flip(written.write([new Uint8Array(5000)]))
      assert.strictEqual(next.message, "write failed: boom")
      // the stream's write run by the uncork of writes held by the cork: once they are more than
      // writeBufferLimit, at the end of the tick, for a write of parts, or by end or close
      const full = NodeTransport.fromDuplex(throwing(), { writeBufferLimit: 1024 })
      assert.strictEqual((yield* Effect.flip(full.write([new Uint8Array(10_000)]))).message, "write failed: boom")
      const heldStream = throwing()
      const held = NodeTransport.fromDuplex(heldStream)
      assert.isTrue(held.tryWrite!([new Uint8Array(10_000)]))
      yield* Effect.sleep("10 millis")
      assert.isTrue(heldStream.destroyed)
      assert.strictEqual((yield* Effect.flip(held.write([Buffer.from("next")]))).message, "write failed: boom")
      const parts = NodeTransport.fromDuplex(throwing())
      const partsFailed = yield* Effect.flip(parts.write([new Uint8Array(70_000), new Uint8Array(70_000)]))
      assert.strictEqual(partsFailed.message, "write failed: boom")
      for (const finish of ["end", "close"] as const) {
        const endedStream = throwing()
        const ended = NodeTransport.fromDuplex(endedStream)
        assert.isTrue(ended.tryWrite!([new Uint8Array(10_000)]))
        yield* ended[finish]
        assert.isTrue(endedStream.destroyed, finish)
        assert.strictEqual((yield* Effect.flip(ended.read(new Uint8Array(8)))).message, "write failed: boom", finish)
      }
    }))

  it.live("a write the stream reports an error for fails with it", () =>
    Effect.gen(function*() {
      const stream = new Duplex({
        read() {},
        write(_chunk, _encoding, callback) {
          callback(new Error("refused"))
        }
      })
      stream.on("error", () => {})
      const transport = NodeTransport.fromDuplex(stream)
      const error = yield* Effect.flip(Effect.timeout(transport.write([new Uint8Array(100_000)]), "2 seconds"))
      assert.strictEqual(error.message, "write failed: refused")
    }))

  it.live("a stream that fails without emitting close (emitClose false): a waiting read, and whenReadable, are woken by the error", () =>
    Effect.gen(function*() {
      const stream = yield* scopedDuplex({ emitClose: false, read() {}, write(_chunk, _encoding, callback) { callback() } })
      const transport = NodeTransport.fromDuplex(stream)
      const reader = yield* Effect.forkChild(transport.read(new Uint8Array(8)))
      yield* Effect.sleep("10 millis")
      stream.destroy(new Error("gone"))
      const error = yield* Effect.flip(Effect.timeout(Fiber.join(reader), "2 seconds"))
      assert.strictEqual(error.message, "socket error: gone")
      let called = false
      transport.whenReadable!(() => void (called = true))
      assert.isTrue(called, "at once: the failure is there")
    }))

  it("close releases a stream whose peer never ends a second later", () => {
    const stream = new Duplex({ read() {}, write(_chunk, _encoding, callback) { callback() } })
    const transport = NodeTransport.fromDuplex(stream)
    vi.useFakeTimers({ toFake: ["setTimeout", "clearTimeout"] })
    try {
      Effect.runSync(transport.close)
      vi.advanceTimersByTime(1000)
      assert.isTrue(stream.destroyed)
    } finally {
      vi.useRealTimers()
    }
  })

  it.live("a stream that keeps the very buffers it is given finds them unchanged after later writes of any transport", () =>
    Effect.gen(function*() {
      // (as an in-process pipe: what is written waits, uncopied, for a reader)
      const keeping = () => {
        const kept: Array<Buffer> = []
        const stream = new Duplex({
          read() {},
          write(chunk: Buffer, _encoding, callback) {
            kept.push(chunk)
            callback()
          }
        })
        return { kept, transport: NodeTransport.fromDuplex(stream) }
      }
      const ends = [keeping(), keeping()]
      const sent: Array<Array<Uint8Array>> = [[], []]
      for (let tick = 0; tick < 40; tick++) {
        for (let k = 0; k < 5; k++) {
          const i = (tick + k) % 2
          const bytes = pattern(1 + ((tick * 5 + k) * 613) % 4096, tick * 5 + k)
          sent[i]!.push(bytes)
          assert.isTrue(ends[i]!.transport.tryWrite!([bytes]))
        }
        yield* Effect.yieldNow // the tick ends: the gathered bytes are handed over
        yield* Effect.sleep("1 millis")
      }
      for (const [i, end] of ends.entries()) {
        assert.deepStrictEqual(new Uint8Array(Buffer.concat(end.kept)), new Uint8Array(Buffer.concat(sent[i]!)), `stream ${i}`)
      }
    }))

  it.live("a peer that answers from inside our write (an in-process stream) gets every frame once, in order", () =>
    Effect.gen(function*() {
      // the peer pings as our first frames reach it, and closes once it has the pong
      let pinged = false
      let closed = false
      const { stream, written } = recordingStream({
        onWrite: (self, chunk) => {
          if (!pinged) {
            pinged = true
            self.push(clientFrame(0x9, Buffer.from("p")))
          } else if (!closed && chunk.includes(Buffer.from("8a0170", "hex"))) {
            closed = true
            self.push(clientFrame(0x8, Buffer.from([0x03, 0xe8])))
          }
        }
      })
      const connection = yield* serverConnectionOver(stream)
      yield* Effect.forkScoped(Stream.runDrain(connection.messages))
      yield* Effect.yieldNow
      yield* connection.send("a")
      yield* connection.send("b")
      const info = yield* Effect.timeout(connection.closed, "2 seconds")
      assert.strictEqual(info.code, 1000)
      // "a", "b", the pong, the Close answered: each once
      assert.strictEqual(written(), "810161" + "810162" + "8a0170" + "880203e8")
    }))

  it.live("a stream made with allowHalfOpen false: the peer's end ends reading only, what we write after it goes out", () =>
    Effect.gen(function*() {
      const { stream, written } = recordingStream({ allowHalfOpen: false })
      const transport = NodeTransport.fromDuplex(stream)
      stream.push(null)
      assert.strictEqual(yield* Effect.timeout(transport.read(new Uint8Array(16)), "2 seconds"), 0)
      yield* Effect.sleep("20 millis") // past the turn in which Node would end our side
      yield* transport.write([Buffer.from("after the end")])
      yield* transport.close
      assert.strictEqual(Buffer.from(written(), "hex").toString(), "after the end")
    }))

  it.live("a stream in object mode: writes wait once writeBufferLimit bytes (not writes) are queued", () =>
    Effect.gen(function*() {
      // a peer that takes the first write and then nothing
      const stream = new Duplex({ objectMode: true, read() {}, write() {} })
      const transport = NodeTransport.fromDuplex(stream, { writeBufferLimit: 64 * 1024 })
      const writer = yield* Effect.forkScoped(Effect.forEach(
        Array.from({ length: 100 }, (_, i) => pattern(8 * 1024, i)),
        (chunk) => transport.write([chunk]),
        { discard: true }
      ))
      yield* Effect.sleep("50 millis")
      assert.isUndefined(writer.pollUnsafe(), "the writes wait")
      const queued = transport.bufferedAmount!()
      assert.isAtLeast(queued, 64 * 1024)
      assert.isAtMost(queued, 64 * 1024 + 16 * 8 * 1024)
    }))

  it.live("chunks that are views of any kind are read as bytes; a stream that delivers strings fails with a TransportError", () =>
    Effect.gen(function*() {
      const views = new Duplex({ readableObjectMode: true, read() {}, write(_c, _e, cb) { cb() } })
      const transport = NodeTransport.fromDuplex(views)
      views.push(new Uint16Array([0x0201, 0x0403]))
      views.push(new DataView(Uint8Array.from([5, 6]).buffer))
      views.push(Uint8Array.from([7, 8]).buffer)
      views.push(Uint8Array.from([0, 9, 10, 0]).subarray(1, 3)) // a view of part of its memory
      assert.deepStrictEqual(Array.from(yield* readExactly(transport, 10)), [1, 2, 3, 4, 5, 6, 7, 8, 9, 10])
      // an empty chunk wakes a waiting read with nothing to take: it waits on
      const reader = yield* Effect.forkChild(transport.read(new Uint8Array(8)))
      yield* Effect.sleep("10 millis")
      views.push(new Uint8Array(0))
      yield* Effect.sleep("10 millis")
      views.push(Uint8Array.from([11]))
      assert.strictEqual(yield* Effect.timeout(Fiber.join(reader), "2 seconds"), 1)

      const text = new Duplex({ read() {}, write(_c, _e, cb) { cb() } })
      text.setEncoding("latin1")
      const strings = NodeTransport.fromDuplex(text)
      text.push(Buffer.from([0x81, 0x01]))
      const error = yield* Effect.flip(Effect.timeout(strings.read(new Uint8Array(8)), "2 seconds"))
      assert.strictEqual(error.message, "the stream delivers strings, not bytes (a stream with an encoding set, or in object mode)")
      assert.isTrue(text.destroyed)
    }))

  it.live("a chunk whose memory was transferred away fails the transport with a TransportError (the bytes before it are read first, none after it)", () =>
    Effect.gen(function*() {
      const views = new Duplex({ readableObjectMode: true, read() {}, write(_c, _e, cb) { cb() } })
      const transport = NodeTransport.fromDuplex(views)
      views.push(Uint8Array.from([1, 2]))
      const gone = Uint8Array.from([3, 4])
      structuredClone(gone.buffer, { transfer: [gone.buffer] }) // detaches its memory
      views.push(gone)
      assert.deepStrictEqual(Array.from(yield* readExactly(transport, 2)), [1, 2])
      const error = yield* Effect.flip(Effect.timeout(transport.read(new Uint8Array(8)), "2 seconds"))
      assert.strictEqual(error._tag, "TransportError")
      assert.include(error.message, "the stream delivered bytes that cannot be read")
      assert.isTrue(views.destroyed)

      // what the stream still delivers after it follows bytes that are lost: never read
      const more = new Duplex({ objectMode: true, read() {}, write(_c, _e, cb) { cb() } })
      const other = NodeTransport.fromDuplex(more)
      const lost = Uint8Array.from([3, 4])
      structuredClone(lost.buffer, { transfer: [lost.buffer] })
      more.push(lost)
      more.push(Uint8Array.from([5, 6]))
      yield* Effect.sleep("20 millis") // (both delivered before the read)
      const failure = yield* Effect.flip(Effect.timeout(other.read(new Uint8Array(8)), "2 seconds"))
      assert.strictEqual(failure._tag, "TransportError")
    }))

  it.live("a paused stream resumes as soon as a read takes the buffer below highWaterMark (not only once it is empty), not while exactly highWaterMark bytes wait", () =>
    Effect.gen(function*() {
      const stream = yield* scopedDuplex({ read() {}, write(_chunk, _encoding, callback) { callback() } })
      const transport = NodeTransport.fromDuplex(stream, { highWaterMark: 1024 })
      yield* Effect.sleep("10 millis")
      stream.push(new Uint8Array(4096))
      yield* Effect.sleep("10 millis")
      assert.isTrue(stream.isPaused(), "4 KiB wait")
      assert.strictEqual(yield* transport.read(new Uint8Array(3072)), 3072)
      assert.isTrue(stream.isPaused(), "1024 bytes wait: highWaterMark")
      assert.strictEqual(yield* transport.read(new Uint8Array(1)), 1)
      assert.isFalse(stream.isPaused(), "1023 bytes wait: below highWaterMark")
    }))

  it.live("a stream in object mode: the bytes of completed writes are no longer counted", () =>
    Effect.gen(function*() {
      const stream = yield* scopedDuplex({ objectMode: true, read() {}, write(_chunk, _encoding, callback) { callback() } })
      const transport = NodeTransport.fromDuplex(stream, { writeBufferLimit: 64 * 1024 })
      for (let i = 0; i < 20; i++) yield* transport.write([pattern(8 * 1024, i)])
      yield* Effect.sleep("10 millis")
      assert.strictEqual(transport.bufferedAmount!(), 0)
    }))

  it.live("by default reading pauses once 64 KiB wait, not before", () =>
    Effect.gen(function*() {
      const stream = yield* scopedDuplex({ read() {}, write(_chunk, _encoding, callback) { callback() } })
      NodeTransport.fromDuplex(stream)
      yield* Effect.sleep("10 millis")
      stream.push(new Uint8Array(64 * 1024 - 1))
      yield* Effect.sleep("10 millis")
      assert.isFalse(stream.isPaused(), "one byte short of 64 KiB")
      stream.push(new Uint8Array(1))
      yield* Effect.sleep("10 millis")
      assert.isTrue(stream.isPaused(), "64 KiB wait")
    }))

  it.live("by default writes are taken until the stream holds more than 1 MiB, then must wait", () =>
    Effect.gen(function*() {
      // a stream that takes nothing: everything written stays queued in it
      const stream = yield* scopedDuplex({ writableHighWaterMark: 16, read() {}, write() {} })
      const transport = NodeTransport.fromDuplex(stream)
      const listeners = () => [stream.listenerCount("drain"), stream.listenerCount("close")]
      const before = listeners()
      const chunk = new Uint8Array(64 * 1024)
      for (let i = 0; i < 16; i++) assert.isTrue(transport.tryWrite!([chunk], true), `write ${i}`)
      assert.strictEqual(stream.writableLength, 1024 * 1024)
      // at 1 MiB, not beyond it: one more is taken
      assert.isTrue(transport.tryWrite!([chunk], true), "at the limit")
      assert.isFalse(transport.tryWrite!([chunk], true), "beyond the limit")
      const waiting = yield* Effect.forkChild(transport.write([chunk], true))
      yield* Effect.sleep("20 millis")
      assert.isUndefined(waiting.pollUnsafe(), "the write waits")
      yield* Fiber.interrupt(waiting)
      assert.deepStrictEqual(listeners(), before, "the interrupted wait left no listener behind")
    }))
})

describe("NodeTransport.fromDuplex: reading ahead, pausing and ending, over TCP (read into the shared buffer) and TLS", () => {
  it.live("a socket handed over paused, with nothing buffered yet, stops reading once highWaterMark bytes wait, as a socket read the usual way does", () =>
    Effect.gen(function*() {
      // (as from an upgrade listener that pauses the socket while it checks the request, then
      // hands it over: Node's Readable stops reading once its own buffer is full)
      const [client, accepted] = yield* socketPair
      client.on("error", () => {})
      accepted.pause()
      const transport = NodeTransport.fromDuplex(accepted, { highWaterMark: 16 * 1024 })
      const chunk = new Uint8Array(1024 * 1024)
      for (let i = 0; i < 32; i++) client.write(chunk)
      yield* Effect.sleep("300 millis")
      assert.isBelow(accepted.bytesRead, 1024 * 1024, "what the transport read ahead of a reader that takes nothing")
      // and what was read is all there
      assert.strictEqual((yield* readExactly(transport, 256 * 1024)).length, 256 * 1024)
    }))

  it.live("a socket with an encoding set fails the transport, as for any stream with an encoding (its bytes are not read behind the encoding's back)", () =>
    Effect.gen(function*() {
      const [client, accepted] = yield* socketPair
      accepted.setEncoding("latin1")
      const transport = NodeTransport.fromDuplex(accepted)
      client.write(new Uint8Array([1, 2, 3, 200]))
      const error = yield* Effect.flip(transport.read(new Uint8Array(16)))
      assert.strictEqual(error.message, "the stream delivers strings, not bytes (a stream with an encoding set, or in object mode)")
    }))

  for (const kind of ["TCP", "TLS"] as const) {
    it.live(`${kind}: a transport nobody reads stops the socket's reads (what it read stays bounded), not only its data events`, () =>
      Effect.gen(function*() {
        const [client, accepted] = yield* (kind === "TLS" ? tlsPair : socketPair)
        client.on("error", () => {})
        NodeTransport.fromDuplex(accepted, { highWaterMark: 16 * 1024 })
        const chunk = new Uint8Array(1024 * 1024)
        for (let i = 0; i < 32; i++) client.write(chunk)
        yield* Effect.sleep("300 millis")
        // (highWaterMark, the read that reached it, and for TLS what one read of the wire decrypts to)
        assert.isBelow(accepted.bytesRead, 1024 * 1024)
      }))

    it.live(`${kind}: tryRead.withCopy copies what arrives with the reader's copy, in order from the buffer's start`, () =>
      Effect.gen(function*() {
        const [client, accepted] = yield* (kind === "TLS" ? tlsPair : socketPair)
        const transport = NodeTransport.fromDuplex(accepted)
        const sent = seededBytes(300 * 1024 + 5, 41)
        client.write(sent)
        const got = new Uint8Array(sent.length)
        let filled = 0
        let inOrder = true
        for (let waited = 0; filled < sent.length; waited++) {
          if (waited === 5000) return yield* Effect.die(`${filled} of ${sent.length} bytes after 5 seconds`)
          // reads of at most 50 000 bytes, each into a buffer of its own
          const buffer = new Uint8Array(Math.min(50_000, sent.length - filled))
          let at = 0
          const n = transport.tryRead!.withCopy!(buffer, (source, start, end, target, targetStart) => {
            if (target !== buffer || targetStart !== at) inOrder = false
            for (let i = start; i < end; i++) target[targetStart + i - start] = source[i]! ^ 0x5a
            at = targetStart + end - start
          })
          if (n < 0) {
            yield* Effect.sleep("1 millis")
            continue
          }
          assert.strictEqual(at, n, "what the copy filled is what the read says")
          for (let i = 0; i < n; i++) got[filled + i] = buffer[i]! ^ 0x5a
          filled += n
        }
        assert.isTrue(inOrder)
        assert.deepStrictEqual(got, sent)
      }))

    it.live(`${kind}: close with bytes unread (paused) and more coming: they are dropped, reading goes on to the peer's end, which releases the socket`, () =>
      Effect.gen(function*() {
        const [client, accepted] = yield* (kind === "TLS" ? tlsPair : socketPair)
        client.on("error", () => {})
        const transport = NodeTransport.fromDuplex(accepted, { highWaterMark: 1024 })
        client.write(new Uint8Array(8 * 1024))
        yield* until(() => accepted.isPaused(), "not paused")
        yield* transport.close
        let peerEnded = false
        accepted.once("end", () => void (peerEnded = true))
        client.end(new Uint8Array(64 * 1024)) // more than highWaterMark, after the close
        yield* Effect.callback<void>((resume) => void accepted.once("close", () => resume(Effect.void)))
        assert.isTrue(peerEnded, "released once the peer's end was read (not by the timer)")
      }))

    it.live(`${kind}: bytes then the peer's end, all sent while the transport is paused: every byte, then the end`, () =>
      Effect.gen(function*() {
        const [client, accepted] = yield* (kind === "TLS" ? tlsPair : socketPair)
        const transport = NodeTransport.fromDuplex(accepted, { highWaterMark: 1024 })
        const sent = seededBytes(2 * 1024 * 1024 + 17, 23)
        client.end(sent)
        yield* Effect.sleep("100 millis")
        assert.deepStrictEqual(yield* readExactly(transport, sent.length), sent)
        assert.strictEqual(yield* transport.read(new Uint8Array(8)), 0)
      }))

    for (const how of ["close", "destroy"] as const) {
      it.live(`${kind}: ${how} from inside the read callback (more reads of the same batch pending): released, the reader woken once`, () =>
        Effect.gen(function*() {
          const [client, accepted] = yield* (kind === "TLS" ? tlsPair : socketPair)
          client.on("error", () => {})
          const transport = NodeTransport.fromDuplex(accepted)
          let wakes = 0
          let closed = false
          accepted.once("close", () => void (closed = true))
          transport.whenReadable!(() => {
            wakes++
            assert.strictEqual(transport.tryRead!(new Uint8Array(100)), 100)
            Effect.runSync(how === "close" ? transport.close : transport.destroy!)
          })
          client.once("end", () => client.end())
          client.write(seededBytes(200 * 1024, 25))
          for (let i = 0; i < 200 && !closed; i++) yield* Effect.sleep("5 millis")
          assert.isTrue(closed, "the socket is released")
          assert.strictEqual(wakes, 1)
        }))
    }
  }
})

describe("a server connection over TCP (read into the shared buffer) and TLS unmasks large payloads as the transport copies them (tryRead.withCopy)", () => {
  for (const kind of ["TCP", "TLS"] as const) {
    for (const before of [false, true]) {
      const when = before ? "all read by the transport before the connection starts" : "arriving while the connection reads"
      it.live(`${kind}: binary and fragmented text with a ping between, in odd pieces ${when}, come out as sent`, () =>
        Effect.gen(function*() {
          const [client, accepted] = yield* (kind === "TLS" ? tlsPair : socketPair)
          client.on("error", () => {})
          client.resume() // (the pong is not read)
          const clientHandle = yield* WebSocket.createClientHandle()
          const serverHandle = yield* WebSocket.createServerHandle()
          const { requestHeaders } = yield* WebSocket.beginClientHandshake(clientHandle, { initialHeaders: [{ name: "Host", value: "x" }] })
          const { responseHeaders } = yield* WebSocket.beginServerHandshake(serverHandle, { requestHeaders })
          const transport = NodeTransport.fromDuplex(accepted, { highWaterMark: 4 * 1024 * 1024 })
          const { counts, transport: counted } = countingCopies(transport)
          const first = seededBytes(20_000, 11)
          const binary = seededBytes(300_001, 12)
          const text = new TextEncoder().encode("a€😀ßxyz日本".repeat(10_000))
          const cut = 150_001 // (inside a code point)
          const wire = Buffer.concat([
            maskedFrame(0x2, first, [0x37, 0xfa, 0x21, 0x3d]),
            maskedFrame(0x2, binary, [0x01, 0x80, 0xff, 0x7e]),
            maskedFrame(0x1, text.subarray(0, cut), [0xa5, 0x5a, 0xc3, 0x3c], false),
            maskedFrame(0x9, new Uint8Array([1, 2, 3]), [0x11, 0x22, 0x33, 0x44]),
            maskedFrame(0x0, text.subarray(cut), [0x37, 0xfa, 0x21, 0x3d], true)
          ])
          const write = Effect.gen(function*() {
            const sizes = [1, 40_003, 7, 65_536, 4099, 13, 100_000]
            let at = 0
            for (let i = 0; at < wire.length; i++) {
              const size = Math.min(sizes[i % sizes.length]!, wire.length - at)
              client.write(wire.subarray(at, at + size))
              at += size
              yield* Effect.sleep("1 millis") // (pieces read apart, most likely)
            }
          })
          if (before) {
            yield* write
            // (a TLS socket counts the bytes of its records: more than the bytes in them)
            yield* untilRead(accepted, wire.length)
          }
          const connection = yield* Connection.make(serverHandle, counted, { handshake: { requestHeaders, responseHeaders } })
          yield* Effect.addFinalizer(() => connection.abort)
          const received = yield* Effect.forkChild(Stream.runCollect(Stream.take(connection.messages, 3)))
          if (!before) yield* write
          const got = yield* Fiber.join(received)
          assert.isTrue(Buffer.from(got[0] as Uint8Array).equals(first), "first message")
          assert.isTrue(Buffer.from(got[1] as Uint8Array).equals(binary), "binary message")
          assert.isTrue(got[2] === new TextDecoder().decode(text), "text message")
          assert.isAbove(counts.copyingReads, 0, "the connection read with its unmasking copy")
          if (before) assert.isAbove(counts.misaligned, 0, "reads took several pieces, some copied inside a masking key")
          assert.strictEqual(connection.stats.pingsIn, 1)
        }))
    }
  }
})
