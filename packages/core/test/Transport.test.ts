import { assert, describe, it, vi } from "@effect/vitest"
import { Cause, Effect, Exit, Fiber, Option, Scheduler } from "effect"
import { Transport } from "../src/index.ts"
import * as EventLoop from "../src/internal/eventLoop.ts"

const encoder = new TextEncoder()
const decoder = new TextDecoder()

/** Gives every other fiber many chances to run. */
const settle = Effect.gen(function*() {
  for (let i = 0; i < 200; i++) yield* Effect.yieldNow
})

/** Reads until the stream ends, returning everything read. */
const readAll = (transport: Transport.Transport, size = 64) =>
  Effect.gen(function*() {
    const chunks: Array<number> = []
    const buffer = new Uint8Array(size)
    for (;;) {
      const n = yield* transport.read(buffer)
      if (n === 0) return Uint8Array.from(chunks)
      for (let i = 0; i < n; i++) chunks.push(buffer[i]!)
    }
  })

/** Reads exactly `length` bytes (fails the test if the stream ends first). */
const readExactly = (transport: Transport.Transport, length: number, size = 1000) =>
  Effect.gen(function*() {
    const out = new Uint8Array(length)
    const buffer = new Uint8Array(size)
    let offset = 0
    while (offset < length) {
      const n = yield* transport.read(buffer.subarray(0, Math.min(size, length - offset)))
      assert.isAbove(n, 0, `the stream ended after ${offset} of ${length} bytes`)
      out.set(buffer.subarray(0, n), offset)
      offset += n
    }
    return out
  })

describe("Transport.makeMemoryPair", () => {
  it.effect("what one end writes the other reads, both ways", () =>
    Effect.gen(function*() {
      const [a, b] = yield* Transport.makeMemoryPair()
      assert.isTrue(Transport.isTransport(a))
      yield* a.write([encoder.encode("ping")])
      const buffer = new Uint8Array(16)
      const n = yield* b.read(buffer)
      assert.strictEqual(decoder.decode(buffer.subarray(0, n)), "ping")
      yield* b.write([encoder.encode("pong!")])
      const m = yield* a.read(buffer)
      assert.strictEqual(decoder.decode(buffer.subarray(0, m)), "pong!")
    }))

  it.effect("a read waits for the next write", () =>
    Effect.gen(function*() {
      const [a, b] = yield* Transport.makeMemoryPair()
      const buffer = new Uint8Array(8)
      const reader = yield* Effect.forkChild(b.read(buffer))
      yield* settle
      assert.isUndefined(reader.pollUnsafe())
      yield* a.write([new Uint8Array([7, 8, 9])])
      assert.strictEqual(yield* Fiber.join(reader), 3)
      assert.deepStrictEqual(buffer.subarray(0, 3), new Uint8Array([7, 8, 9]))
    }))

  it.live("a read or a write that must wait is woken by what came while it was on its way to wait (the fiber may yield at any step)", () =>
    Effect.gen(function*() {
      // (from 3: with a budget of 2 an Effect fiber makes no progress at all)
      for (let budget = 3; budget <= 30; budget++) {
        yield* Effect.scoped(Effect.gen(function*() {
          const [a, b] = yield* Transport.makeMemoryPair({ highWaterMark: 4 })
          // a read that must wait; the write comes as soon as the reader yields
          const reader = yield* Effect.forkChild(b.read(new Uint8Array(8)).pipe(Effect.provideService(Scheduler.MaxOpsBeforeYield, budget)))
          yield* Effect.yieldNow
          yield* a.write([new Uint8Array([1, 2])])
          const read = yield* Effect.timeoutOption(Fiber.join(reader), "1 second")
          assert.deepStrictEqual(read, Option.some(2), `budget ${budget}: the read was woken`)
          // a write that must wait (the pipe is full); room is made as soon as the writer yields
          yield* a.write([new Uint8Array(8)])
          const writer = yield* Effect.forkChild(a.write([new Uint8Array([9])]).pipe(Effect.provideService(Scheduler.MaxOpsBeforeYield, budget)))
          yield* Effect.yieldNow
          assert.strictEqual(yield* b.read(new Uint8Array(8)), 8)
          const written = yield* Effect.timeoutOption(Fiber.join(writer), "1 second")
          assert.isTrue(Option.isSome(written), `budget ${budget}: the write was woken`)
        }))
      }
    }), 60_000)

  it.effect("several buffers of one write arrive in order, across small reads", () =>
    Effect.gen(function*() {
      const [a, b] = yield* Transport.makeMemoryPair()
      yield* a.write([encoder.encode("abc"), new Uint8Array(0), encoder.encode("defgh"), encoder.encode("ij")])
      yield* a.write([encoder.encode("KL")])
      // reads of 4 bytes cut across the buffers of the write
      const got = yield* readExactly(b, 12, 4)
      assert.strictEqual(decoder.decode(got), "abcdefghijKL")
    }))

  it.effect("a short read leaves the rest for the next read", () =>
    Effect.gen(function*() {
      const [a, b] = yield* Transport.makeMemoryPair()
      yield* a.write([encoder.encode("0123456789")])
      const buffer = new Uint8Array(3)
      assert.strictEqual(yield* b.read(buffer), 3)
      assert.strictEqual(decoder.decode(buffer), "012")
      const rest = yield* readExactly(b, 7)
      assert.strictEqual(decoder.decode(rest), "3456789")
    }))

  it.effect("end: the peer reads what was written, then 0 (and 0 again)", () =>
    Effect.gen(function*() {
      const [a, b] = yield* Transport.makeMemoryPair()
      yield* a.write([encoder.encode("last words")])
      yield* a.end
      const got = yield* readAll(b, 4)
      assert.strictEqual(decoder.decode(got), "last words")
      assert.strictEqual(yield* b.read(new Uint8Array(4)), 0)
      // the other direction still works after a half-close
      yield* b.write([encoder.encode("still here")])
      const back = yield* readExactly(a, 10)
      assert.strictEqual(decoder.decode(back), "still here")
      // writing after end fails
      const error = yield* Effect.flip(a.write([new Uint8Array([1])]))
      assert.isTrue(Transport.isTransportError(error))
    }))

  it.effect("end wakes a reader waiting on the peer", () =>
    Effect.gen(function*() {
      const [a, b] = yield* Transport.makeMemoryPair()
      const reader = yield* Effect.forkChild(b.read(new Uint8Array(8)))
      yield* settle
      assert.isUndefined(reader.pollUnsafe())
      yield* a.end
      assert.strictEqual(yield* Fiber.join(reader), 0)
    }))

  for (const how of ["close", "destroy"] as const) {
    it.effect(`${how}: later writes fail with TransportError, reads return 0; the peer's writes are ${how === "close" ? "dropped, as a closed socket drops them" : "refused, as after a reset"}`, () =>
      Effect.gen(function*() {
        const [a, b] = yield* Transport.makeMemoryPair()
        yield* b.write([encoder.encode("unread")])
        yield* a.write([encoder.encode("sent before close")])
        const pendingRead = yield* Effect.forkChild(a.read(new Uint8Array(8)).pipe(Effect.andThen(a.read(new Uint8Array(8)))))
        yield* a[how]!
        yield* a[how]! // idempotent
        const error = yield* Effect.flip(a.write([new Uint8Array([1])]))
        assert.strictEqual(error._tag, "TransportError")
        assert.isTrue(Transport.isTransportError(error))
        assert.isFalse(a.tryWrite!([new Uint8Array([1])]))
        // what a had not read is discarded
        assert.strictEqual(yield* a.read(new Uint8Array(8)), 0)
        assert.strictEqual(yield* Fiber.join(pendingRead), 0)
        // the peer still reads what a wrote before closing, then 0
        const got = yield* readAll(b)
        assert.strictEqual(decoder.decode(got), "sent before close")
        const peerWrite = yield* Effect.exit(b.write([new Uint8Array([1])]))
        assert.strictEqual(Exit.isSuccess(peerWrite), how === "close")
        assert.strictEqual(b.tryWrite!([new Uint8Array([1])]), how === "close")
        assert.strictEqual(b.bufferedAmount!(), 0, "nothing is kept")
        assert.strictEqual(yield* a.read(new Uint8Array(8)), 0)
      }))
  }

  it.live("a closed end drops what its peer writes for a second, then the peer's writes fail (a peer that reads nothing learns it is gone)", () =>
    Effect.gen(function*() {
      const [a, b] = yield* Transport.makeMemoryPair()
      yield* a.close
      assert.isTrue(Exit.isSuccess(yield* Effect.exit(b.write([new Uint8Array([1])]))))
      yield* Effect.sleep("1100 millis")
      assert.isFalse(b.tryWrite!([new Uint8Array([1])]))
      assert.isTrue(Transport.isTransportError(yield* Effect.flip(b.write([new Uint8Array([1])]))))
    }))

  it.effect("closing the scope closes both ends", () =>
    Effect.gen(function*() {
      const [a, b] = yield* Effect.scoped(Transport.makeMemoryPair())
      assert.isTrue(Transport.isTransportError(yield* Effect.flip(a.write([new Uint8Array([1])]))))
      assert.isTrue(Transport.isTransportError(yield* Effect.flip(b.write([new Uint8Array([1])]))))
      assert.strictEqual(yield* a.read(new Uint8Array(4)), 0)
      assert.strictEqual(yield* b.read(new Uint8Array(4)), 0)
    }))

  it.effect("a highWaterMark that would stop every write (0, negative) or bound nothing by mistake (NaN) is an InvalidParameter", () =>
    Effect.gen(function*() {
      for (const highWaterMark of [0, -1, 0.5, Number.NaN, Number.NEGATIVE_INFINITY]) {
        const error = yield* Effect.flip(Transport.makeMemoryPair({ highWaterMark }))
        assert.strictEqual(error._tag, "InvalidParameter", String(highWaterMark))
        assert.include(error.message, "highWaterMark")
      }
      const [a, b] = yield* Transport.makeMemoryPair({ highWaterMark: Number.POSITIVE_INFINITY })
      yield* a.write([new Uint8Array(1 << 20)])
      assert.strictEqual(yield* b.read(new Uint8Array(1 << 21)), 1 << 20)
    }))

  it.effect("backpressure: a writer waits while highWaterMark bytes are buffered", () =>
    Effect.gen(function*() {
      const [a, b] = yield* Transport.makeMemoryPair({ highWaterMark: 1024 })
      const data = new Uint8Array(10 * 1024)
      for (let i = 0; i < data.length; i++) data[i] = (i * 31 + 7) & 0xff
      let written = 0
      const writer = yield* Effect.forkChild(Effect.gen(function*() {
        for (let offset = 0; offset < data.length; offset += 1024) {
          yield* a.write([data.subarray(offset, offset + 1024)])
          written += 1024
        }
      }))
      yield* settle
      // the first KiB fills the buffer; the writer now waits for the reader
      assert.isUndefined(writer.pollUnsafe())
      assert.strictEqual(written, 1024)
      const got = yield* readExactly(b, data.length, 700)
      yield* Fiber.join(writer)
      assert.strictEqual(written, data.length)
      assert.deepStrictEqual(got, data)
    }))

  it.effect("backpressure: a single large write is accepted while the buffer is below the mark, the next one waits", () =>
    Effect.gen(function*() {
      const [a, b] = yield* Transport.makeMemoryPair({ highWaterMark: 1024 })
      yield* a.write([new Uint8Array(10 * 1024).fill(1)])
      const writer = yield* Effect.forkChild(a.write([new Uint8Array([2])]))
      yield* settle
      assert.isUndefined(writer.pollUnsafe())
      const got = yield* readExactly(b, 10 * 1024 + 1, 4096)
      yield* Fiber.join(writer)
      assert.strictEqual(got[10 * 1024 - 1], 1)
      assert.strictEqual(got[10 * 1024], 2)
    }))

  it.effect("backpressure: a read that makes room wakes every writer waiting for it, not only the first", () =>
    Effect.gen(function*() {
      const [a, b] = yield* Transport.makeMemoryPair({ highWaterMark: 4 })
      yield* a.write([encoder.encode("abcd")])
      const first = yield* Effect.forkChild(a.write([encoder.encode("e")]))
      const second = yield* Effect.forkChild(a.write([encoder.encode("f")]))
      yield* settle
      assert.isUndefined(first.pollUnsafe())
      assert.isUndefined(second.pollUnsafe())
      // one read empties the buffer: room for both, with no further read
      assert.strictEqual(yield* b.read(new Uint8Array(4)), 4)
      yield* settle
      assert.isDefined(first.pollUnsafe(), "the first waiting writer wrote")
      assert.isDefined(second.pollUnsafe(), "the second waiting writer wrote")
      assert.strictEqual(decoder.decode(yield* readExactly(b, 2)), "ef")
    }))

  it.effect("a waiting writer fails with TransportError when the peer is destroyed, and is done (its bytes dropped) when the peer closes", () =>
    Effect.gen(function*() {
      for (const how of ["destroy", "close"] as const) {
        const [a, b] = yield* Transport.makeMemoryPair({ highWaterMark: 16 })
        yield* a.write([new Uint8Array(16)])
        const writer = yield* Effect.forkChild(a.write([new Uint8Array(1)]))
        yield* settle
        assert.isUndefined(writer.pollUnsafe())
        yield* b[how]!
        const exit = yield* Fiber.await(writer)
        if (how === "close") assert.isTrue(Exit.isSuccess(exit))
        else assert.isTrue(Exit.isFailure(exit) && Transport.isTransportError(Cause.squash(exit.cause)))
      }
    }))

  it.effect("a waiting writer fails with TransportError when its own end is closed or ended", () =>
    Effect.gen(function*() {
      const [a, b] = yield* Transport.makeMemoryPair({ highWaterMark: 16 })
      yield* a.write([new Uint8Array(16)])
      const writerA = yield* Effect.forkChild(a.write([new Uint8Array(1)]))
      yield* b.write([new Uint8Array(16)])
      const writerB = yield* Effect.forkChild(b.write([new Uint8Array(1)]))
      yield* settle
      assert.isUndefined(writerA.pollUnsafe())
      assert.isUndefined(writerB.pollUnsafe())
      yield* b.end
      assert.isTrue(Transport.isTransportError(yield* Effect.flip(Fiber.join(writerB))))
      yield* a.close
      assert.isTrue(Transport.isTransportError(yield* Effect.flip(Fiber.join(writerA))))
    }))

  it.effect("an interrupted waiting writer leaves nothing behind", () =>
    Effect.gen(function*() {
      const [a, b] = yield* Transport.makeMemoryPair({ highWaterMark: 4 })
      yield* a.write([encoder.encode("abcd")])
      const writer = yield* Effect.forkChild(a.write([encoder.encode("lost")]))
      yield* settle
      yield* Fiber.interrupt(writer)
      yield* a.write([encoder.encode("ef")]).pipe(Effect.forkChild)
      const got = yield* readExactly(b, 6)
      assert.strictEqual(decoder.decode(got), "abcdef")
      yield* a.end
      assert.strictEqual(yield* b.read(new Uint8Array(4)), 0)
    }))

  it.effect("the caller may reuse written memory once write completes", () =>
    Effect.gen(function*() {
      const [a, b] = yield* Transport.makeMemoryPair()
      const memory = encoder.encode("original")
      yield* a.write([memory.subarray(0, 4), memory.subarray(4)])
      memory.fill(0x21)
      const got = yield* readExactly(b, 8)
      assert.strictEqual(decoder.decode(got), "original")
    }))

  it.effect("tryRead: -1 while nothing is there, then the bytes, then 0 at the end", () =>
    Effect.gen(function*() {
      const [a, b] = yield* Transport.makeMemoryPair()
      const buffer = new Uint8Array(4)
      assert.strictEqual(b.tryRead!(buffer), -1)
      yield* a.write([encoder.encode("abcdef")])
      assert.strictEqual(b.tryRead!(buffer), 4)
      assert.strictEqual(decoder.decode(buffer), "abcd")
      assert.strictEqual(b.tryRead!(buffer), 2)
      assert.strictEqual(b.tryRead!(buffer), -1)
      yield* a.end
      assert.strictEqual(b.tryRead!(buffer), 0)
    }))

  it.effect("tryRead.withCopy: the bytes are copied with the reader's copy, in order from the buffer's start; -1 and 0 as tryRead", () =>
    Effect.gen(function*() {
      const [a, b] = yield* Transport.makeMemoryPair()
      const calls: Array<readonly [number, number, number]> = []
      // a copy that inverts the bytes, as a reader's unmasking copy changes them
      const invert: Transport.Copy = (source, start, end, target, targetStart) => {
        calls.push([start, end, targetStart])
        for (let i = start; i < end; i++) target[targetStart + i - start] = ~source[i]! & 0xff
      }
      const buffer = new Uint8Array(6)
      assert.strictEqual(b.tryRead!.withCopy!(buffer, invert), -1)
      yield* a.write([new Uint8Array([1, 2, 3])])
      yield* a.write([new Uint8Array([4, 5, 6, 7])])
      assert.strictEqual(b.tryRead!.withCopy!(buffer, invert), 6)
      assert.deepStrictEqual(Array.from(buffer), [254, 253, 252, 251, 250, 249])
      assert.deepStrictEqual(calls, [[0, 3, 0], [0, 3, 3]])
      assert.strictEqual(b.tryRead!.withCopy!(buffer, invert), 1)
      assert.strictEqual(buffer[0], 248)
      assert.deepStrictEqual(calls.at(-1), [3, 4, 0])
      yield* a.end
      assert.strictEqual(b.tryRead!.withCopy!(buffer, invert), 0)
    }))

  it.live("whenReadable: called once bytes, the end or a close are there (at once if so already), once per setting; undefined clears it, even a call put off to a later turn", () =>
    Effect.gen(function*() {
      const [a, b] = yield* Transport.makeMemoryPair()
      const buffer = new Uint8Array(8)
      let calls = 0
      const listener = () => {
        calls++
      }
      b.whenReadable!(listener)
      yield* settle
      assert.strictEqual(calls, 0, "nothing there yet")
      yield* a.write([encoder.encode("abc")])
      yield* settle
      assert.strictEqual(calls, 1, "called when bytes come")
      yield* a.write([encoder.encode("def")])
      yield* settle
      assert.strictEqual(calls, 1, "once per setting")
      b.whenReadable!(listener)
      assert.strictEqual(calls, 2, "at once when bytes are there already")
      assert.strictEqual(b.tryRead!(buffer), 6)
      b.whenReadable!(listener)
      b.whenReadable!(undefined)
      yield* a.write([encoder.encode("g")])
      yield* settle
      assert.strictEqual(calls, 2, "cleared")
      assert.strictEqual(b.tryRead!(buffer), 1)
      b.whenReadable!(listener)
      yield* a.end
      yield* settle
      assert.strictEqual(calls, 3, "called at the end")
      // cleared after its call was put off to the next turn (a busy tick): not called
      const [e, f] = yield* Transport.makeMemoryPair()
      f.whenReadable!(listener)
      for (let i = 0; i < 1100; i++) EventLoop.mayContinue()
      assert.isTrue(e.tryWrite!([encoder.encode("h")]))
      assert.strictEqual(calls, 3, "put off")
      f.whenReadable!(undefined)
      yield* Effect.sleep("20 millis")
      assert.strictEqual(calls, 3, "a cleared listener is not called")
      const [c, d] = yield* Transport.makeMemoryPair()
      d.whenReadable!(listener)
      yield* c.close
      yield* settle
      assert.strictEqual(calls, 4, "called when the peer closes")
    }))

  it.effect("owned buffers are kept as they are, not copied", () =>
    Effect.gen(function*() {
      const [a, b] = yield* Transport.makeMemoryPair()
      const given = encoder.encode("given away")
      assert.isTrue(a.tryWrite!([given], true))
      // the transport holds the caller's memory itself: a change before the read shows
      given[0] = 0x47 // "G"
      yield* a.write([encoder.encode("!")], true)
      assert.strictEqual(decoder.decode(yield* readExactly(b, 11)), "Given away!")
    }))

  it.effect("tryWrite says false once highWaterMark bytes are buffered (64 KiB by default), as write would wait", () =>
    Effect.gen(function*() {
      const [a, b] = yield* Transport.makeMemoryPair()
      // below the default mark: taken
      assert.isTrue(a.tryWrite!([new Uint8Array(64 * 1024 - 1)]))
      assert.isTrue(a.tryWrite!([new Uint8Array(1)]))
      // exactly 64 KiB buffered: the mark is reached, a write would wait
      assert.strictEqual(a.bufferedAmount!(), 64 * 1024)
      assert.isFalse(a.tryWrite!([new Uint8Array(1)]))
      const writer = yield* Effect.forkChild(a.write([new Uint8Array(1)]))
      yield* settle
      assert.isUndefined(writer.pollUnsafe())
      // one byte read makes room
      assert.strictEqual(b.tryRead!(new Uint8Array(1)), 1)
      yield* Fiber.join(writer)
    }))

  it.effect("bufferedAmount: what this end wrote that the peer has not read, not what waits for this end", () =>
    Effect.gen(function*() {
      const [a, b] = yield* Transport.makeMemoryPair()
      yield* a.write([encoder.encode("abc")])
      assert.strictEqual(a.bufferedAmount!(), 3)
      assert.strictEqual(b.bufferedAmount!(), 0)
      assert.strictEqual(b.tryRead!(new Uint8Array(2)), 2)
      assert.strictEqual(a.bufferedAmount!(), 1)
      assert.strictEqual(b.tryRead!(new Uint8Array(2)), 1)
      assert.strictEqual(a.bufferedAmount!(), 0)
    }))

  it.effect("whenReadable on an end already closed calls the listener at once (its reads end)", () =>
    Effect.gen(function*() {
      const [a] = yield* Transport.makeMemoryPair()
      yield* a.close
      let calls = 0
      a.whenReadable!(() => {
        calls++
      })
      assert.strictEqual(calls, 1)
      assert.strictEqual(a.tryRead!(new Uint8Array(4)), 0)
    }))

  it("a closed end keeps dropping what its peer writes until a whole second has passed, and only then refuses it", () => {
    vi.useFakeTimers({ toFake: ["setTimeout", "clearTimeout"] })
    try {
      const [a, b] = Effect.runSync(Transport.makeMemoryEnds())
      Effect.runSync(a.close)
      assert.isTrue(b.tryWrite!([new Uint8Array([1])]), "dropped at once")
      vi.advanceTimersByTime(999)
      assert.isTrue(b.tryWrite!([new Uint8Array([1])]), "still dropped just before the second")
      assert.isTrue(Exit.isSuccess(Effect.runSyncExit(b.write([new Uint8Array([1])]))))
      vi.advanceTimersByTime(1)
      assert.isFalse(b.tryWrite!([new Uint8Array([1])]), "refused after the second")
      assert.isTrue(Transport.isTransportError(Effect.runSync(Effect.flip(b.write([new Uint8Array([1])])))))
    } finally {
      vi.useRealTimers()
    }
  })
})

describe("Transport.tap", () => {
  it.effect("reports the bytes of reads and the buffers of writes actually taken: not the end's empty read, not a refused tryWrite, not an interrupted waiting write", () =>
    Effect.gen(function*() {
      const [a, b] = yield* Transport.makeMemoryPair({ highWaterMark: 4 })
      const reads: Array<Array<number>> = []
      const writes: Array<Array<Array<number>>> = []
      const tapped = Transport.tap(a, {
        onRead: (bytes) => reads.push(Array.from(bytes)),
        onWrite: (buffers) => writes.push(buffers.map((buffer) => Array.from(buffer)))
      })
      yield* tapped.write([new Uint8Array([1, 2]), new Uint8Array([3, 4])])
      assert.deepStrictEqual(writes, [[[1, 2], [3, 4]]])
      // the pipe is full: tryWrite takes nothing, and nothing is reported
      assert.isFalse(tapped.tryWrite!([new Uint8Array([5])]))
      // a write that waits and is interrupted wrote nothing, and is not reported
      const waiting = yield* Effect.forkChild(tapped.write([new Uint8Array([6])]))
      yield* settle
      assert.isUndefined(waiting.pollUnsafe())
      yield* Fiber.interrupt(waiting)
      assert.deepStrictEqual(writes, [[[1, 2], [3, 4]]])
      // reads: the bytes, then nothing for the end (a read of 0)
      yield* b.write([new Uint8Array([9, 8])])
      yield* b.end
      assert.strictEqual(yield* tapped.read(new Uint8Array(8)), 2)
      assert.strictEqual(yield* tapped.read(new Uint8Array(8)), 0)
      assert.strictEqual(tapped.tryRead!(new Uint8Array(8)), 0)
      assert.deepStrictEqual(reads, [[9, 8]])
      // (a copy of the reader's would change what onRead sees: reads go through tryRead)
      assert.isUndefined(tapped.tryRead!.withCopy)
    }))
})
