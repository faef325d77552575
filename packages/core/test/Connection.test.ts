import { assert, describe, it } from "@effect/vitest"
import { Arbitrary, Cause, Deferred, Effect, Equal, Exit, Fiber, Metric, Option, Queue, Scheduler, Schema, Scope, Stream } from "effect"
import { TestClock } from "effect/testing"
import { CloseStatus, Connection, Metrics, Transport, WebSocket } from "../src/index.ts"
import * as EventLoop from "../src/internal/eventLoop.ts"

describe("Connection", () => {
  it.effect("echo", () =>
    Effect.gen(function*() {
      const [client, server] = yield* Connection.makeMemoryPair()
      yield* Effect.forkScoped(Stream.runForEach(server.messages, (m) => server.send(m)))
      yield* client.send("hello")
      yield* client.send(new Uint8Array([1, 2, 3]))
      const got = yield* Stream.runCollect(Stream.take(client.messages, 2))
      assert.deepStrictEqual(got, ["hello", new Uint8Array([1, 2, 3])])
      const info = yield* client.close(1000, "bye")
      assert.deepStrictEqual(info, { code: 1000, reason: "bye", clean: true, initiator: "local" })
      const serverInfo = yield* server.closed
      assert.deepStrictEqual(serverInfo, { code: 1000, reason: "bye", clean: true, initiator: "remote" })
    }))

  it.effect("text that starts with a byte order mark arrives with it, whole, in fragments and as a close reason", () =>
    Effect.gen(function*() {
      const [client, server] = yield* Connection.makeMemoryPair()
      const bom = "\uFEFF"
      yield* client.send(`${bom}hello`)
      yield* client.send(bom)
      yield* client.sendFragments(Stream.make(bom, "frag", "ments"), "text")
      yield* client.send(`${bom}${"x".repeat(100_000)}`)
      const got = yield* Stream.runCollect(Stream.take(server.messages, 4))
      assert.deepStrictEqual(got.slice(0, 3), [`${bom}hello`, bom, `${bom}fragments`])
      assert.strictEqual(got[3], `${bom}${"x".repeat(100_000)}`)
      const info = yield* client.close(1000, `${bom}bye`)
      assert.strictEqual(info.reason, `${bom}bye`)
      assert.strictEqual((yield* server.closed).reason, `${bom}bye`)
    }))

  it.effect("with disableUtf8Verification, text that is not UTF-8 arrives as its text decoded with U+FFFD for the bad bytes, whole or in fragments", () =>
    Effect.gen(function*() {
      const { connection, peer } = yield* rawConnection("server", { handle: { disableUtf8Verification: true } })
      yield* peer.send(0x1, new Uint8Array([0xc3, 0x28]))
      yield* peer.send(0x1, new Uint8Array([0x61, 0xff]), { fin: false })
      yield* peer.send(0x0, new Uint8Array([0x62]))
      const got = yield* Stream.runCollect(Stream.take(connection.messages, 2))
      assert.deepStrictEqual(got, ["\uFFFD(", "a\uFFFDb"])
    }))

  /** Ways to hold the bytes `[start, start + length)` of a buffer, `length` a multiple of 8. */
  const VIEWS: ReadonlyArray<readonly [string, (buffer: ArrayBuffer, start: number, length: number) => Connection.Outgoing]> = [
    ["Int8Array", (b, s, n) => new Int8Array(b, s, n)],
    ["Uint8ClampedArray", (b, s, n) => new Uint8ClampedArray(b, s, n)],
    ["Int16Array", (b, s, n) => new Int16Array(b, s, n / 2)],
    ["Uint16Array", (b, s, n) => new Uint16Array(b, s, n / 2)],
    ["Int32Array", (b, s, n) => new Int32Array(b, s, n / 4)],
    ["Uint32Array", (b, s, n) => new Uint32Array(b, s, n / 4)],
    ["Float32Array", (b, s, n) => new Float32Array(b, s, n / 4)],
    ["Float64Array", (b, s, n) => new Float64Array(b, s, n / 8)],
    ["BigInt64Array", (b, s, n) => new BigInt64Array(b, s, n / 8)],
    ["BigUint64Array", (b, s, n) => new BigUint64Array(b, s, n / 8)],
    ["DataView", (b, s, n) => new DataView(b, s, n)],
    ["ArrayBuffer", (b, s, n) => b.slice(s, s + n)],
    ["Buffer", (b, s, n) => Buffer.from(b, s, n)]
  ]
  const int = (minimum: number, maximum: number) => Arbitrary.schema(Schema.Int.check(Schema.isBetween({ minimum, maximum })))

  it.effect.prop(
    "a typed array, a DataView or an ArrayBuffer is sent as exactly its bytes (as ws does), whatever its offset",
    {
      words: Arbitrary.array(int(0, 255), { minLength: 0, maxLength: 64 }),
      kind: int(0, VIEWS.length - 1),
      skip: int(0, 2)
    },
    ({ kind, skip, words }) =>
      Effect.gen(function*() {
        const [client, server] = yield* Connection.makeMemoryPair()
        // whole 8-byte words after `skip` of them, so that every element size fits
        const buffer = new ArrayBuffer(8 * (skip + words.length))
        const all = new Uint8Array(buffer)
        words.forEach((w, i) => all.fill((w + i) & 0xff, 8 * (skip + i), 8 * (skip + i + 1)))
        const [name, view] = VIEWS[kind]!
        const start = 8 * skip
        const data = view(buffer, start, 8 * words.length)
        // (typed: each kind is a Connection.Outgoing)
        yield* client.send(data)
        yield* client.sendFragments(Stream.make(data, data), "binary")
        yield* client.ping(data).pipe(Effect.ignore) // up to 125 bytes
        const got = yield* Stream.runCollect(Stream.take(server.messages, 2))
        const expected = all.slice(start)
        assert.deepStrictEqual(got[0], expected, name)
        const twice = new Uint8Array(2 * expected.length)
        twice.set(expected)
        twice.set(expected, expected.length)
        assert.deepStrictEqual(got[1], twice, name)
      }),
    // (lists grow with the check's size, 10 by default: up to 64 words, past a ping's 125 bytes)
    { arbitrary: { runs: 100, size: 64 } }
  )

  it.effect("what is neither text nor bytes is an InvalidParameter, and the connection goes on", () =>
    Effect.gen(function*() {
      const [client, server] = yield* Connection.makeMemoryPair()
      yield* Effect.forkScoped(Stream.runForEach(server.messages, (m) => server.send(m)))
      for (const value of [null, undefined, 42, true, {}, [1, 2, 3], Symbol("x"), () => "x", new Map()]) {
        const label = String(typeof value === "symbol" ? "symbol" : value)
        if (value !== undefined) {
          const sent = yield* Effect.flip(client.send(value as never))
          assert.strictEqual(sent._tag, "InvalidParameter", `send ${label}`)
          const pinged = yield* Effect.flip(client.ping(value as never))
          assert.strictEqual(pinged._tag, "InvalidParameter", `ping ${label}`)
        }
        const fragment = yield* Effect.flip(client.sendFragments(Stream.make(value as never), "binary"))
        assert.strictEqual(fragment._tag, "InvalidParameter", `fragment ${label}`)
        if (value !== undefined && value !== null) {
          const closed = yield* Effect.flip(client.close(1000, value as never))
          assert.strictEqual(closed._tag, "InvalidParameter", `close reason ${label}`)
        }
        yield* client.send(`still fine after ${label}`)
        assert.strictEqual(yield* Stream.runHead(client.messages).pipe(Effect.map((m) => m._tag === "Some" ? m.value : undefined)), `still fine after ${label}`)
      }
      assert.strictEqual((yield* client.close(1000)).clean, true)
    }))

  it.effect("bytes whose buffer was detached (transferred) are an InvalidParameter, not a crash nor an empty message", () =>
    Effect.gen(function*() {
      const [client, server] = yield* Connection.makeMemoryPair()
      const buffer = new ArrayBuffer(8)
      const views: ReadonlyArray<readonly [string, Connection.Outgoing]> = [
        ["ArrayBuffer", buffer],
        ["Uint8Array", new Uint8Array(buffer)],
        ["Uint8Array with an offset", new Uint8Array(buffer, 2, 4)],
        ["Float64Array", new Float64Array(buffer)],
        ["DataView", new DataView(buffer, 2, 4)]
      ]
      buffer.transfer()
      // a DataView outside its shrunk resizable buffer cannot be read either
      const resizable = new ArrayBuffer(8, { maxByteLength: 16 })
      const outside = new DataView(resizable, 4, 4)
      resizable.resize(2)
      for (const [name, value] of [...views, ["DataView outside its buffer", outside] as const]) {
        const sent = yield* Effect.flip(client.send(value))
        assert.deepStrictEqual([sent._tag, sent.message.includes("cannot be read")], ["InvalidParameter", true], `send ${name}`)
        assert.strictEqual((yield* Effect.flip(client.ping(value)))._tag, "InvalidParameter", `ping ${name}`)
        assert.strictEqual((yield* Effect.flip(client.sendFragments(Stream.make(value), "binary")))._tag, "InvalidParameter", `fragment ${name}`)
      }
      // nothing went out (the refused fragments left no message open), and the connection goes on
      const shared = new SharedArrayBuffer(3)
      new Uint8Array(shared).set([1, 2, 3])
      yield* client.send(shared)
      yield* client.send(new Uint8Array(shared, 1))
      yield* client.send("after")
      const got = yield* Stream.runCollect(Stream.take(server.messages, 3))
      assert.deepStrictEqual(got, [new Uint8Array([1, 2, 3]), new Uint8Array([2, 3]), "after"])
      assert.strictEqual((yield* client.close(1000)).clean, true)
    }))

  it.effect("bad options are an InvalidParameter that names them, never a crash, a busy loop or a hang", () =>
    Effect.gen(function*() {
      const cases: ReadonlyArray<readonly [Connection.Options, string]> = [
        [{ messageBuffer: 0 }, "messageBuffer"],
        [{ messageBuffer: Number.NaN }, "messageBuffer"],
        [{ closeTimeout: "whenever" as never }, "closeTimeout"],
        [{ closeTimeout: -1 }, "closeTimeout may not be negative"],
        [{ keepalive: { interval: 0 } }, "keepalive.interval must be more than zero"],
        [{ keepalive: { interval: "1 second", timeout: Number.POSITIVE_INFINITY } }, "keepalive.timeout must be finite"],
        [{ closeCodeOnScopeClose: 1006 }, "close code 1006 may not be sent"],
        [{ closeTimout: 5 } as never, "closeTimout"]
      ]
      for (const [options, fragment] of cases) {
        const error = yield* Effect.flip(Effect.scoped(Connection.makeMemoryPair({ connection: options })))
        assert.strictEqual(error._tag, "InvalidParameter", fragment)
        assert.include(error.message, fragment)
      }
      const decoded = yield* Connection.decodeOptions({ closeTimeout: "2 seconds", messageBuffer: 1 })
      assert.strictEqual(decoded.messageBuffer, 1)
    }))
})

// ---------------------------------------------------------------------------------------------
// helpers
// ---------------------------------------------------------------------------------------------

const encoder = new TextEncoder()
const decoder = new TextDecoder()

/** Gives every other fiber many chances to run. */
const settle = Effect.gen(function*() {
  for (let i = 0; i < 500; i++) yield* Effect.yieldNow
})

/** Yields until `condition` holds; dies if it never does. */
const waitUntil = (condition: () => boolean, what: string) =>
  Effect.gen(function*() {
    for (let i = 0; i < 100_000; i++) {
      if (condition()) return
      yield* Effect.yieldNow
    }
    return yield* Effect.die(new Error(`never happened: ${what}`))
  })

/** `length` bytes of a pattern that differs per `seed`. */
const pattern = (length: number, seed: number) => {
  const bytes = new Uint8Array(length)
  for (let i = 0; i < length; i++) bytes[i] = (i * 7 + seed * 13 + (i >>> 8)) & 0xff
  return bytes
}

const MASK_KEY = [0x37, 0xfa, 0x21, 0x3d] as const

/** One frame as it goes on the wire; `mask` for client-to-server frames (a zero-free key, XOR by hand). */
const frame = (
  opcode: number,
  payload: Uint8Array | string = new Uint8Array(0),
  options: { readonly fin?: boolean; readonly rsv?: number; readonly mask?: boolean } = {}
): Uint8Array => {
  const data = typeof payload === "string" ? encoder.encode(payload) : payload
  const masked = options.mask ?? false
  const header: Array<number> = [((options.fin ?? true) ? 0x80 : 0) | ((options.rsv ?? 0) << 4) | opcode]
  const maskBit = masked ? 0x80 : 0
  const length = data.length
  if (length < 126) header.push(maskBit | length)
  else if (length < 65536) header.push(maskBit | 126, length >>> 8, length & 0xff)
  else header.push(maskBit | 127, 0, 0, 0, 0, (length >>> 24) & 0xff, (length >>> 16) & 0xff, (length >>> 8) & 0xff, length & 0xff)
  if (masked) header.push(...MASK_KEY)
  const out = new Uint8Array(header.length + length)
  out.set(header)
  for (let i = 0; i < length; i++) out[header.length + i] = masked ? data[i]! ^ MASK_KEY[i & 3]! : data[i]!
  return out
}

/** A Close frame body: the code, then the UTF-8 reason. */
const closeBody = (code: number, reason = "") => {
  const r = encoder.encode(reason)
  const out = new Uint8Array(2 + r.length)
  out[0] = code >>> 8
  out[1] = code & 0xff
  out.set(r, 2)
  return out
}

interface Frame {
  readonly fin: boolean
  readonly rsv: number
  readonly opcode: number
  readonly masked: boolean
  readonly payload: Uint8Array
}

/** The far end of a connection, driven by hand: raw bytes in, frames out. */
class RawPeer {
  private pending = new Uint8Array(0)
  readonly transport: Transport.Transport
  /** Frames to a server connection must be masked. */
  readonly mask: boolean
  constructor(transport: Transport.Transport, mask: boolean) {
    this.transport = transport
    this.mask = mask
  }
  write(...frames: ReadonlyArray<Uint8Array>) {
    return this.transport.write(frames)
  }
  send(opcode: number, payload?: Uint8Array | string, options?: { readonly fin?: boolean; readonly rsv?: number }) {
    return this.transport.write([frame(opcode, payload, { ...options, mask: this.mask })])
  }
  /** Reads until `n` bytes are pending; false when the stream ended first. */
  private fill(n: number): Effect.Effect<boolean, Transport.TransportError> {
    return Effect.gen({ self: this }, function*() {
      const scratch = new Uint8Array(65536)
      while (this.pending.length < n) {
        const read = yield* this.transport.read(scratch)
        if (read === 0) return false
        const next = new Uint8Array(this.pending.length + read)
        next.set(this.pending)
        next.set(scratch.subarray(0, read), this.pending.length)
        this.pending = next
      }
      return true
    })
  }
  /** The next frame (unmasked), or "eof" when the stream ended at a frame boundary. */
  readFrame(): Effect.Effect<Frame | "eof", Transport.TransportError> {
    return Effect.gen({ self: this }, function*() {
      if (!(yield* this.fill(2))) {
        assert.strictEqual(this.pending.length, 0, "the stream ended inside a frame header")
        return "eof" as const
      }
      const b0 = this.pending[0]!
      const b1 = this.pending[1]!
      const masked = (b1 & 0x80) !== 0
      let length = b1 & 0x7f
      let offset = 2
      if (length === 126) {
        assert.isTrue(yield* this.fill(4))
        length = (this.pending[2]! << 8) | this.pending[3]!
        offset = 4
      } else if (length === 127) {
        assert.isTrue(yield* this.fill(10))
        length = 0
        for (let i = 2; i < 10; i++) length = length * 256 + this.pending[i]!
        offset = 10
      }
      const keyOffset = offset
      if (masked) offset += 4
      assert.isTrue(yield* this.fill(offset + length), "the stream ended inside a frame")
      const payload = this.pending.slice(offset, offset + length)
      if (masked) {
        for (let i = 0; i < length; i++) payload[i] = payload[i]! ^ this.pending[keyOffset + (i & 3)]!
      }
      this.pending = this.pending.slice(offset + length)
      return { fin: (b0 & 0x80) !== 0, rsv: (b0 >>> 4) & 7, opcode: b0 & 0x0f, masked, payload }
    })
  }
  /** The next frame, which must exist. */
  nextFrame() {
    return Effect.map(this.readFrame(), (f) => {
      if (f === "eof") throw new Error("expected a frame, the stream ended")
      return f
    })
  }
}

const closeCodeOf = (f: Frame) => (f.payload[0]! << 8) | f.payload[1]!

/** Client and server handles whose opening handshake was done in memory. */
const handles = (client?: WebSocket.HandleProperties, server?: WebSocket.HandleProperties) =>
  Effect.gen(function*() {
    const clientHandle = yield* WebSocket.createClientHandle(client)
    const serverHandle = yield* WebSocket.createServerHandle(server)
    const { requestHeaders } = yield* WebSocket.beginClientHandshake(clientHandle, {
      initialHeaders: [{ name: "Host", value: "memory" }]
    })
    const { responseHeaders } = yield* WebSocket.beginServerHandshake(serverHandle, { requestHeaders })
    yield* WebSocket.endServerHandshake(serverHandle)
    yield* WebSocket.endClientHandshake(clientHandle, { responseHeaders })
    return { clientHandle, serverHandle }
  }).pipe(Effect.orDie)

/** Reads `transport` to its end; the number of bytes read. */
const bytesUntilEnd = (transport: Transport.Transport) =>
  Effect.gen(function*() {
    const scratch = new Uint8Array(65536)
    let total = 0
    for (;;) {
      const n = yield* transport.read(scratch)
      if (n === 0) return total
      total += n
    }
  })

/**
 * One connection (`kind`) over a memory transport whose other end is a {@link RawPeer}. The
 * connection is aborted before its scope closes, so that no test waits for a Close the raw
 * peer would never send.
 */
const rawConnection = (
  kind: "client" | "server",
  options: {
    readonly handle?: WebSocket.HandleProperties
    readonly connection?: Connection.Options
    readonly highWaterMark?: number
  } = {}
) =>
  Effect.gen(function*() {
    const { clientHandle, serverHandle } = yield* handles(
      kind === "client" ? options.handle : undefined,
      kind === "server" ? options.handle : undefined
    )
    const [a, b] = yield* Transport.makeMemoryPair({ highWaterMark: options.highWaterMark })
    const connection = yield* Connection.make(kind === "client" ? clientHandle : serverHandle, a, options.connection)
    yield* Effect.addFinalizer(() => connection.abort)
    return { connection, peer: new RawPeer(b, kind === "server") }
  })

/** Collects messages until the stream ends or fails; returns them with the exit. */
const drain = (connection: Connection.Connection) =>
  Effect.gen(function*() {
    const got: Array<Connection.Message> = []
    const exit = yield* Effect.exit(Stream.runForEach(connection.messages, (m) => Effect.sync(() => got.push(m))))
    return { got, exit }
  })

const failureOf = <A, E>(exit: Exit.Exit<A, E>): E => {
  assert.isTrue(Exit.isFailure(exit), "expected a failure")
  const error = Exit.findErrorOption(exit)
  assert.isTrue(error._tag === "Some", "expected a typed error")
  return (error as { readonly value: E }).value
}

/**
 * Runs `effect` in a fiber that yields every `budget` steps and interrupts it at its first yield:
 * a sweep over budgets interrupts an operation at each of its steps in turn.
 */
const interruptAtFirstYield = <A, E>(effect: Effect.Effect<A, E>, budget: number) =>
  Effect.gen(function*() {
    const fiber = yield* Effect.forkChild(effect.pipe(Effect.provideService(Scheduler.MaxOpsBeforeYield, budget)))
    yield* Effect.yieldNow
    yield* Fiber.interrupt(fiber)
  })

/**
 * A server connection whose peer reads nothing yet (the transport holds 1 KiB, then writes wait):
 * a first message of 2 KiB fills the transport, a second one (`sending`) waits, and a ping arrives
 * meanwhile, whose pong is queued behind the second message's frame.
 */
const sendWaitingWithPongBehind = Effect.gen(function*() {
  const { connection, peer } = yield* rawConnection("server", { highWaterMark: 1024 })
  yield* connection.send(new Uint8Array(2048).fill(1))
  const sending = yield* Effect.forkChild(connection.send(new Uint8Array(2048).fill(2)))
  yield* settle
  yield* peer.send(0x9, "p")
  yield* settle
  return { connection, peer, sending }
})

/** Whether `closed` has not completed yet. */
const isOpen = (connection: Connection.Connection) =>
  Effect.gen(function*() {
    const closed = yield* Effect.forkChild(connection.closed)
    yield* Effect.yieldNow
    const open = closed.pollUnsafe() === undefined
    yield* Fiber.interrupt(closed)
    return open
  })

// ---------------------------------------------------------------------------------------------
// messages
// ---------------------------------------------------------------------------------------------

describe("Connection messages", () => {
  it.effect("echoes text (non-ASCII, empty) and binary (empty, 1 MiB) messages in order", () =>
    Effect.gen(function*() {
      const [client, server] = yield* Connection.makeMemoryPair()
      yield* Effect.forkScoped(Stream.runForEach(server.messages, (m) => server.send(m)))
      const big = pattern(1024 * 1024, 1)
      const sent: ReadonlyArray<Connection.Message> = [
        "plain ASCII",
        "héllo wörld, 日本語, emoji 🎉 and a surrogate pair 𝄞",
        "",
        new Uint8Array(0),
        new Uint8Array([0, 255, 128, 1]),
        big,
        pattern(100 * 1024, 2), // received into a buffer sized from the previous message
        "after the big ones"
      ]
      for (const m of sent) yield* client.send(m)
      const got = yield* Stream.runCollect(Stream.take(client.messages, sent.length))
      assert.strictEqual(got.length, sent.length)
      for (let i = 0; i < sent.length; i++) {
        const expected = sent[i]!
        const actual = got[i]!
        if (typeof expected === "string") {
          assert.strictEqual(actual, expected, `message ${i}`)
        } else {
          assert.instanceOf(actual, Uint8Array, `message ${i} is binary`)
          // a plain Uint8Array whatever its size (not a Node Buffer, whose toString differs)
          assert.strictEqual(Object.getPrototypeOf(actual), Uint8Array.prototype, `message ${i} is a plain Uint8Array`)
          assert.isTrue(Buffer.from(actual as Uint8Array).equals(Buffer.from(expected)), `message ${i} bytes`)
        }
      }
      assert.strictEqual(client.stats.messagesOut, sent.length)
      assert.strictEqual(client.stats.messagesIn, sent.length)
      assert.strictEqual(server.stats.messagesIn, sent.length)
      const bytes = sent.reduce((n, m) => n + (typeof m === "string" ? encoder.encode(m).length : m.length), 0)
      assert.strictEqual(client.stats.bytesOut, bytes)
      assert.strictEqual(client.stats.bytesIn, bytes)
    }))

  it.effect("many messages arrive in order", () =>
    Effect.gen(function*() {
      const [client, server] = yield* Connection.makeMemoryPair()
      const count = 500
      const sender = yield* Effect.forkChild(Effect.gen(function*() {
        for (let i = 0; i < count; i++) yield* client.send(i % 2 === 0 ? `#${i}` : new Uint8Array([i & 0xff, i >>> 8]))
      }))
      const got = yield* Stream.runCollect(Stream.take(server.messages, count))
      yield* Fiber.join(sender)
      for (let i = 0; i < count; i++) {
        if (i % 2 === 0) assert.strictEqual(got[i], `#${i}`)
        else assert.deepStrictEqual(got[i], new Uint8Array([i & 0xff, i >>> 8]))
      }
    }))

  it.effect("sendFragments: a Stream of 3 text parts arrives as one message", () =>
    Effect.gen(function*() {
      const [client, server] = yield* Connection.makeMemoryPair()
      yield* client.sendFragments(Stream.make("frag", "ment", "ed ✓"), "text")
      yield* client.sendFragments(Stream.make(new Uint8Array([1]), new Uint8Array([2, 3]), new Uint8Array(0)), "binary")
      yield* client.send("next")
      const got = yield* Stream.runCollect(Stream.take(server.messages, 3))
      assert.deepStrictEqual(got, ["fragmented ✓", new Uint8Array([1, 2, 3]), "next"])
      assert.strictEqual(client.stats.messagesOut, 3)
    }))

  it.live("sendFragments: a type that is neither text nor binary is an InvalidParameter, and nothing is sent", () =>
    Effect.gen(function*() {
      const [client, server] = yield* Connection.makeMemoryPair()
      // (also while another message is open: the check does not wait for it)
      const open = yield* Deferred.make<void>()
      const other = yield* Effect.forkChild(client.sendFragments(Stream.concat(Stream.make("x"), Stream.fromEffect(Effect.as(Deferred.await(open), "y"))), "text"))
      yield* Effect.sleep("20 millis") // it holds the message lock, waiting for "y"
      for (const type of ["json", undefined, 1]) {
        const error = yield* Effect.timeout(Effect.flip(client.sendFragments(Stream.make("a"), type as never)), "1 second")
        assert.deepStrictEqual([error._tag, error._tag === "InvalidParameter" ? error.parameter : ""], ["InvalidParameter", "type"])
      }
      yield* Deferred.succeed(open, undefined)
      yield* Fiber.join(other)
      assert.deepStrictEqual(yield* Stream.runCollect(Stream.take(server.messages, 1)), ["xy"])
      yield* client.send("after")
      assert.deepStrictEqual(yield* Stream.runCollect(Stream.take(server.messages, 1)), ["after"])
    }))

  it.effect("sendFragments: a code point split across fragments arrives whole", () =>
    Effect.gen(function*() {
      const [client, server] = yield* Connection.makeMemoryPair()
      const euro = encoder.encode("€") // 3 bytes
      yield* client.sendFragments(Stream.make(euro.subarray(0, 1), euro.subarray(1, 2), euro.subarray(2)), "text")
      const got = yield* Stream.runCollect(Stream.take(server.messages, 1))
      assert.deepStrictEqual(got, ["€"])
    }))

  it.effect("sendFragments: a surrogate pair split between two string fragments arrives whole (a lone half is U+FFFD, as ws sends it)", () =>
    Effect.gen(function*() {
      const [client, server] = yield* Connection.makeMemoryPair()
      const text = "emoji 🎉, 𝄞 and 日本語 ".repeat(20)
      // cut every 7 UTF-16 units: many cuts fall between the halves of a pair
      const chunks = Array.from({ length: Math.ceil(text.length / 7) }, (_, i) => text.slice(7 * i, 7 * i + 7))
      const cases: ReadonlyArray<readonly [ReadonlyArray<Connection.Outgoing>, "text" | "binary", Connection.Message]> = [
        [["a\uD83D", "\uDE00b"], "text", "a😀b"],
        [["\uD83D", "\uDE00"], "text", "😀"],
        // the last high surrogate, and the first of its range: U+10FFFF, U+100000
        [["a\uDBFF", "\uDFFFb"], "text", "a\u{10FFFF}b"],
        [["\uDBC0", "\uDC00"], "text", "\u{100000}"],
        // the first high surrogate: U+10000
        [["a\uD800", "\uDC00"], "text", "a\u{10000}"],
        [["\uD83D", "", "\uDE00"], "text", "😀"],
        [chunks, "text", text],
        [["x\uD83D"], "text", "x\uFFFD"],
        [["x\uD83D", new Uint8Array([0x79])], "text", "x\uFFFDy"],
        [["\uD83D", "\uDE00"], "binary", encoder.encode("😀")]
      ]
      for (const [fragments, type] of cases) yield* client.sendFragments(Stream.fromIterable(fragments), type)
      const got = yield* Stream.runCollect(Stream.take(server.messages, cases.length))
      assert.deepStrictEqual(got, cases.map(([, , expected]) => expected))
      // counted as the bytes that went out
      const bytes = cases.reduce((n, [, , m]) => n + (typeof m === "string" ? encoder.encode(m).length : m.length), 0)
      assert.strictEqual(client.stats.bytesOut, bytes)
      assert.strictEqual(server.stats.bytesIn, bytes)
    }))

  it.live("an echo flood over an in-memory pair does not starve timers or the close", () =>
    Effect.gen(function*() {
      const [client, server] = yield* Connection.makeMemoryPair()
      yield* Effect.forkChild(Stream.runForEach(server.messages, (m) => server.send(m)))
      yield* Effect.forkChild(Stream.runDrain(client.messages))
      const flood = yield* Effect.forkChild(Effect.gen(function*() {
        for (let i = 0; i < 300_000; i++) yield* client.send(new Uint8Array(10_000))
      }))
      // the two ends wake each other at once, which must not keep the event loop from turning
      yield* Effect.sleep("20 millis")
      assert.isUndefined(flood.pollUnsafe(), "the timer fired while the flood goes on")
      assert.isTrue((yield* client.close()).clean)
      const stopped = yield* Fiber.await(flood)
      assert.isTrue(Exit.isFailure(stopped), "the flood ends with the close")
    }))

  it.effect("sendFragments: the frames on the wire are one message (FIN only on the last)", () =>
    Effect.gen(function*() {
      const { connection, peer } = yield* rawConnection("client")
      yield* connection.sendFragments(Stream.make("a", "b", "c"), "text")
      const frames: Array<Frame> = []
      for (;;) {
        const f = yield* peer.nextFrame()
        frames.push(f)
        if (f.fin) break
      }
      assert.strictEqual(frames[0]!.opcode, 0x1)
      assert.isTrue(frames.slice(1).every((f) => f.opcode === 0x0), "continuations")
      assert.isTrue(frames.every((f) => f.masked), "a client masks every frame")
      assert.strictEqual(frames.map((f) => decoder.decode(f.payload)).join(""), "abc")
    }))

  it.effect("concurrent sends from 50 fibers arrive intact while the server pings the client", () =>
    Effect.gen(function*() {
      const [client, server] = yield* Connection.makeMemoryPair({ client: { sendBufferSize: 1024 } })
      const size = 100 * 1024
      const count = 50
      const message = (i: number) => {
        const bytes = pattern(size, i)
        bytes[0] = i
        return bytes
      }
      const received = yield* Effect.forkChild(Stream.runCollect(Stream.take(server.messages, count)))
      let pingsSent = 0
      const pinger = yield* Effect.forkChild(Effect.gen(function*() {
        for (let i = 0; i < 200; i++) {
          yield* server.ping(new Uint8Array([i & 0xff]))
          pingsSent++
          yield* Effect.yieldNow
        }
      }))
      yield* Effect.forEach(Array.from({ length: count }, (_, i) => i), (i) => client.send(message(i)), {
        concurrency: "unbounded",
        discard: true
      })
      const got = yield* Fiber.join(received)
      yield* Fiber.join(pinger)
      const seen = new Set<number>()
      for (const m of got) {
        assert.instanceOf(m, Uint8Array)
        const bytes = m as Uint8Array
        assert.strictEqual(bytes.length, size)
        const i = bytes[0]!
        seen.add(i)
        assert.isTrue(Buffer.from(bytes).equals(Buffer.from(message(i))), `message ${i} is intact`)
      }
      assert.strictEqual(seen.size, count)
      assert.strictEqual(pingsSent, 200)
      // the client answered pings in between its frames
      yield* waitUntil(() => server.stats.pongsIn > 0, "a pong from the client")
      assert.isAtMost(server.stats.pongsIn, 200)
      // and the connection is still healthy both ways
      yield* server.send("done")
      assert.deepStrictEqual(yield* Stream.runCollect(Stream.take(client.messages, 1)), ["done"])
    }))

  it.effect("ping: the peer answers automatically with a pong", () =>
    Effect.gen(function*() {
      const [client, server] = yield* Connection.makeMemoryPair()
      assert.strictEqual(client.stats.pongsIn, 0)
      yield* client.ping(encoder.encode("are you there?"))
      yield* waitUntil(() => client.stats.pongsIn === 1, "the pong")
      yield* client.ping()
      yield* waitUntil(() => client.stats.pongsIn === 2, "the second pong")
      // no message came out of it
      yield* server.send("after pings")
      assert.deepStrictEqual(yield* Stream.runCollect(Stream.take(client.messages, 1)), ["after pings"])
      const error = yield* Effect.flip(client.ping(new Uint8Array(126)))
      assert.strictEqual(error._tag, "InvalidParameter")
    }))

  it.effect("stats: pingsIn counts the pings answered, and every count shows up as JSON", () =>
    Effect.gen(function*() {
      const [client, server] = yield* Connection.makeMemoryPair()
      yield* client.ping()
      yield* waitUntil(() => client.stats.pongsIn === 1, "the pong")
      yield* client.send("hi")
      assert.deepStrictEqual(yield* Stream.runCollect(Stream.take(server.messages, 1)), ["hi"])
      assert.strictEqual(server.stats.pingsIn, 1)
      assert.deepStrictEqual(JSON.parse(JSON.stringify(server.stats)), {
        messagesIn: 1,
        bytesIn: 2,
        messagesOut: 0,
        bytesOut: 0,
        pingsIn: 1,
        pongsIn: 0
      })
    }))

  it.effect("stats and connections keep every property as their own: a spread, Object.keys and Equal see pingsIn and bufferedAmount", () =>
    Effect.gen(function*() {
      const [client, server] = yield* Connection.makeMemoryPair()
      yield* client.ping()
      yield* waitUntil(() => client.stats.pongsIn === 1, "the pong")
      const expected = { messagesIn: 0, bytesIn: 0, messagesOut: 0, bytesOut: 0, pingsIn: 1, pongsIn: 0 }
      // a snapshot of counts that change in place, as an application takes one
      assert.deepStrictEqual({ ...server.stats }, expected)
      assert.deepStrictEqual(Object.keys(server.stats), Object.keys(expected))
      assert.isTrue(Equal.equals(server.stats, expected))
      const copy = { ...server }
      assert.strictEqual(copy.bufferedAmount, 0)
      assert.strictEqual(Object.keys(server).at(-1), "bufferedAmount")
      assert.isTrue(Connection.isConnection(copy))
      assert.strictEqual(JSON.parse(JSON.stringify(server)).bufferedAmount, 0)
    }))

  it.effect("ping: the pong on the wire carries the ping's payload", () =>
    Effect.gen(function*() {
      const { connection, peer } = yield* rawConnection("server")
      yield* peer.send(0x9, "payload!")
      const pong = yield* peer.nextFrame()
      assert.strictEqual(pong.opcode, 0xa)
      assert.isFalse(pong.masked, "a server never masks")
      assert.strictEqual(decoder.decode(pong.payload), "payload!")
      // a pong from the peer is counted
      yield* peer.send(0xa, "unsolicited")
      yield* waitUntil(() => connection.stats.pongsIn === 1, "the pong to be counted")
    }))

  it.effect("binary messages keep their own bytes: a small one after a large one (received in place) is not overwritten by the next", () =>
    Effect.gen(function*() {
      const { connection, peer } = yield* rawConnection("client")
      // a large message makes the next one be received in place, into the buffer it was assembled in;
      // a small one received there whole must not stay a view of that buffer, which the next message reuses
      const sizes = [20_000, 3000, 6000, 20_000, 4000, 20_000, 20_000]
      for (let i = 0; i < sizes.length; i++) yield* peer.send(0x2, pattern(sizes[i]!, i))
      yield* peer.send(0x8, closeBody(1000))
      // every message is taken only once all of them were received
      yield* waitUntil(() => connection.stats.messagesIn === sizes.length, "every message received")
      const { got } = yield* drain(connection)
      assert.strictEqual(got.length, sizes.length)
      for (let i = 0; i < sizes.length; i++) {
        assert.isTrue(Buffer.from(got[i] as Uint8Array).equals(Buffer.from(pattern(sizes[i]!, i))), `message ${i}`)
      }
    }))
})

// ---------------------------------------------------------------------------------------------
// closing handshake
// ---------------------------------------------------------------------------------------------

describe("Connection reading", () => {
  const counting = (transport: Transport.Transport, withWhenReadable: boolean) => {
    const counts = { reads: 0 }
    const counted = Transport.make({
      ...transport,
      read: (buffer) => {
        counts.reads++
        return transport.read(buffer)
      },
      whenReadable: withWhenReadable ? transport.whenReadable : undefined
    })
    return { counts, transport: counted }
  }

  for (const withWhenReadable of [true, false]) {
    it.effect(
      withWhenReadable
        ? "over a transport with whenReadable, what arrives while the reader waits is read as it arrives, without read"
        : "over a transport without whenReadable, the reader waits in read",
      () =>
        Effect.gen(function*() {
          const { serverHandle } = yield* handles()
          const [a, b] = yield* Transport.makeMemoryPair()
          const { counts, transport } = counting(a, withWhenReadable)
          const connection = yield* Connection.make(serverHandle, transport)
          yield* Effect.addFinalizer(() => connection.abort)
          const peer = new RawPeer(b, true)
          const received = yield* Effect.forkChild(Stream.runCollect(Stream.take(connection.messages, 6)))
          for (let i = 0; i < 6; i++) {
            yield* settle // the reader waits for the network
            if (i === 3) yield* peer.send(0x9, "ping") // answered on the way
            yield* peer.send(0x1, `message ${i}`)
          }
          const got = yield* Fiber.join(received)
          assert.deepStrictEqual(got, [0, 1, 2, 3, 4, 5].map((i) => `message ${i}`))
          const pong = yield* peer.nextFrame()
          assert.strictEqual(pong.opcode, 0xa)
          assert.strictEqual(decoder.decode(pong.payload), "ping")
          if (withWhenReadable) assert.strictEqual(counts.reads, 0)
          else assert.isAtLeast(counts.reads, 6)
        })
    )
  }

  it.live("a reader stopped by a fiber that its own step woke (a memory peer's writer, given room) neither resumes nor waits again", () =>
    Effect.gen(function*() {
      const uncaught: Array<unknown> = []
      const onUncaught = (e: unknown) => {
        uncaught.push(e)
      }
      process.on("uncaughtException", onUncaught)
      yield* Effect.addFinalizer(() => Effect.sync(() => process.off("uncaughtException", onUncaught)))
      const { serverHandle } = yield* handles()
      const [a, b] = yield* Transport.makeMemoryPair({ highWaterMark: 64 })
      const connection = yield* Connection.make(serverHandle, a)
      yield* settle // the reader waits for the network
      const peer = new RawPeer(b, true)
      yield* Effect.gen(function*() {
        for (let i = 0; i < 1100; i++) EventLoop.mayContinue() // a busy tick: the next wake-up waits for a turn
        yield* peer.send(0x1, "x".repeat(100)) // the reader's steps run on the next turn
        yield* peer.send(0x1, "y".repeat(100)) // waits for room: woken inside the reader's step
        yield* connection.abort // so this runs inside it
      })
      yield* Effect.sleep("50 millis")
      assert.deepStrictEqual(uncaught, [])
      assert.strictEqual((yield* connection.closed).code, 1006)
    }))

  it.live("a memory peer whose writes wait for room, woken by the reader's steps, gets every message through in order", () =>
    Effect.gen(function*() {
      const { serverHandle } = yield* handles()
      const [a, b] = yield* Transport.makeMemoryPair({ highWaterMark: 64 })
      const connection = yield* Connection.make(serverHandle, a, { messageBuffer: 4096 })
      yield* Effect.addFinalizer(() => connection.abort)
      yield* settle // the reader waits for the network
      const peer = new RawPeer(b, true)
      const count = 3000
      yield* Effect.forkChild(Effect.forEach(Array.from({ length: count }, (_, i) => i), (i) => peer.send(0x1, `m${i}`), { discard: true }))
      const got = yield* Stream.runCollect(Stream.take(connection.messages, count))
      assert.deepStrictEqual(got, Array.from({ length: count }, (_, i) => `m${i}`))
    }))

  it.live("what a step throws (a tap hook) ends the connection (1006, read failed), as a failed read does", () =>
    Effect.gen(function*() {
      const { serverHandle } = yield* handles()
      const [a, b] = yield* Transport.makeMemoryPair()
      let reads = 0
      const tapped = Transport.tap(a, {
        onRead: () => {
          if (++reads === 2) throw new Error("hook threw")
        }
      })
      const connection = yield* Connection.make(serverHandle, tapped)
      yield* Effect.addFinalizer(() => connection.abort)
      const peer = new RawPeer(b, true)
      yield* peer.send(0x1, "one")
      yield* settle
      const second = yield* Effect.exit(peer.send(0x1, "two"))
      assert.isTrue(Exit.isSuccess(second), "the peer's write is not where it fails")
      const closed = yield* Effect.timeoutOption(connection.closed, "1 second")
      assert.isTrue(Option.isSome(closed))
      assert.strictEqual(Option.getOrThrow(closed).code, 1006)
      assert.include(Option.getOrThrow(closed).reason, "read failed")
    }))

  describe("a write that throws or dies (a tap hook, a broken wrapper) is a failed write: the connection ends (1006), nothing waits", () => {
    const variants: ReadonlyArray<readonly [string, (a: Transport.Transport) => Transport.Transport]> = [
      ["a throwing onWrite hook (tryWrite)", (a) => {
        let writes = 0
        return Transport.tap(a, {
          onWrite: () => {
            if (++writes === 2) throw new Error("hook threw")
          }
        })
      }],
      ["a write that dies (no tryWrite)", (a) => {
        let writes = 0
        return Transport.make({
          ...a,
          tryWrite: undefined,
          write: (buffers, owned) => ++writes === 2 ? Effect.die(new Error("write died")) : a.write(buffers, owned)
        })
      }],
      ["a tryWrite that throws", (a) => {
        let writes = 0
        return Transport.make({
          ...a,
          tryWrite: (buffers, owned) => {
            if (++writes === 2) throw new Error("tryWrite threw")
            return a.tryWrite!(buffers, owned)
          }
        })
      }]
    ]
    for (const [name, wrap] of variants) {
      it.live(name, () =>
        Effect.gen(function*() {
          const { serverHandle } = yield* handles()
          const [a, b] = yield* Transport.makeMemoryPair()
          const connection = yield* Connection.make(serverHandle, wrap(a))
          yield* Effect.addFinalizer(() => connection.abort)
          yield* connection.send("one")
          const second = yield* Effect.exit(Effect.timeout(connection.send("two"), "1 second"))
          assert.strictEqual(Exit.isFailure(second) ? Cause.squash(second.cause) instanceof Transport.TransportError : "sent", true)
          // (a later send may still go out before the connection has ended: it does not wait)
          const third = yield* Effect.exit(Effect.timeout(connection.send("three"), "1 second"))
          assert.notInstanceOf(Exit.isFailure(third) ? Cause.squash(third.cause) : undefined, Cause.TimeoutError)
          const closed = yield* Effect.timeoutOption(connection.closed, "1 second")
          assert.deepStrictEqual(Option.map(closed, (info) => `${info.code} ${info.reason}`), Option.some("1006 write failed"))
          const ping = yield* Effect.exit(Effect.timeout(connection.ping(), "1 second"))
          assert.notInstanceOf(Exit.isFailure(ping) ? Cause.squash(ping.cause) : undefined, Cause.TimeoutError)
          const end = b.read(new Uint8Array(64)).pipe(Effect.repeat({ until: (n) => n === 0 }))
          assert.isTrue(Option.isSome(yield* Effect.timeoutOption(end, "1 second")), "the peer sees the end")
        }))
    }
  })

  it.effect("a transport that fails while the reader waits with whenReadable ends the connection (1006) with the failure", () =>
    Effect.gen(function*() {
      const { serverHandle } = yield* handles()
      const [a, b] = yield* Transport.makeMemoryPair()
      // a transport that fails as a socket does: the waiting reader is woken with no bytes, and
      // `read` reports the failure
      let failed = false
      let listener: (() => void) | undefined = undefined
      const failing = Transport.make({
        ...a,
        tryRead: (buffer) => (failed ? -1 : a.tryRead!(buffer)),
        whenReadable: (l) => {
          listener = l
          a.whenReadable!(l)
        },
        read: (buffer) => (failed ? Effect.fail(new Transport.TransportError({ message: "reset by peer" })) : a.read(buffer))
      })
      const fail = () => {
        failed = true
        const l = listener
        listener = undefined
        l?.()
      }
      const connection = yield* Connection.make(serverHandle, failing)
      const peer = new RawPeer(b, true)
      yield* peer.send(0x1, "before")
      const first = yield* Stream.runCollect(Stream.take(connection.messages, 1))
      assert.deepStrictEqual(first, ["before"])
      yield* settle // the reader waits for the network
      assert.isDefined(listener)
      fail()
      const closed = yield* connection.closed
      assert.strictEqual(closed.code, 1006)
      assert.include(closed.reason, "reset by peer")
    }))
})

describe("Connection close", () => {
  it.effect("close initiated by the client: both sides clean, both message streams end", () =>
    Effect.gen(function*() {
      const [client, server] = yield* Connection.makeMemoryPair()
      const clientMessages = yield* Effect.forkChild(drain(client))
      const serverMessages = yield* Effect.forkChild(drain(server))
      yield* client.send("before close")
      const info = yield* client.close(4001, "client done")
      assert.deepStrictEqual(info, { code: 4001, reason: "client done", clean: true, initiator: "local" })
      assert.deepStrictEqual(yield* server.closed, { code: 4001, reason: "client done", clean: true, initiator: "remote" })
      assert.deepStrictEqual(yield* client.closed, info)
      const c = yield* Fiber.join(clientMessages)
      const s = yield* Fiber.join(serverMessages)
      assert.isTrue(Exit.isSuccess(c.exit))
      assert.isTrue(Exit.isSuccess(s.exit))
      assert.deepStrictEqual(s.got, ["before close"])
    }))

  it.effect("close initiated by the server: both sides clean, both message streams end", () =>
    Effect.gen(function*() {
      const [client, server] = yield* Connection.makeMemoryPair()
      const clientMessages = yield* Effect.forkChild(drain(client))
      const serverMessages = yield* Effect.forkChild(drain(server))
      yield* server.send("bye soon")
      const info = yield* server.close(1001, "restarting")
      assert.deepStrictEqual(info, { code: 1001, reason: "restarting", clean: true, initiator: "local" })
      assert.deepStrictEqual(yield* client.closed, { code: 1001, reason: "restarting", clean: true, initiator: "remote" })
      const c = yield* Fiber.join(clientMessages)
      const s = yield* Fiber.join(serverMessages)
      assert.isTrue(Exit.isSuccess(c.exit))
      assert.isTrue(Exit.isSuccess(s.exit))
      assert.deepStrictEqual(c.got, ["bye soon"])
    }))

  it.effect("close with the default code and no reason", () =>
    Effect.gen(function*() {
      const [client, server] = yield* Connection.makeMemoryPair()
      assert.deepStrictEqual(yield* client.close(), { code: 1000, reason: "", clean: true, initiator: "local" })
      assert.deepStrictEqual(yield* server.closed, { code: 1000, reason: "", clean: true, initiator: "remote" })
    }))

  it.effect("a peer Close without a body is reported as 1005 and answered with an empty Close", () =>
    Effect.gen(function*() {
      const { connection, peer } = yield* rawConnection("client")
      yield* peer.send(0x8)
      const answer = yield* peer.nextFrame()
      assert.strictEqual(answer.opcode, 0x8)
      assert.strictEqual(answer.payload.length, 0)
      // the client waits for the server to end the transport
      yield* peer.transport.close
      assert.deepStrictEqual(yield* connection.closed, { code: 1005, reason: "", clean: true, initiator: "remote" })
    }))

  it.effect("close(1005) sends an empty Close (no code, no reason) and reports the peer's empty answer as 1005", () =>
    Effect.gen(function*() {
      const { connection, peer } = yield* rawConnection("server")
      const closing = yield* Effect.forkChild(connection.close(CloseStatus.CloseStatus.Empty))
      const sent = yield* peer.nextFrame()
      assert.deepStrictEqual([sent.opcode, sent.payload.length], [0x8, 0])
      yield* peer.send(0x8)
      assert.deepStrictEqual(yield* Fiber.join(closing), { code: 1005, reason: "", clean: true, initiator: "local" })
    }))

  it.effect("close(1005) over a memory pair: the peer reports 1005 too", () =>
    Effect.gen(function*() {
      const [client, server] = yield* Connection.makeMemoryPair()
      assert.deepStrictEqual(yield* client.close(1005), { code: 1005, reason: "", clean: true, initiator: "local" })
      assert.deepStrictEqual(yield* server.closed, { code: 1005, reason: "", clean: true, initiator: "remote" })
    }))

  it.effect("the answer to a peer's Close echoes its code and reason", () =>
    Effect.gen(function*() {
      const { connection, peer } = yield* rawConnection("server")
      const messages = yield* Effect.forkChild(drain(connection))
      yield* peer.send(0x1, "last")
      yield* peer.send(0x8, closeBody(3000, "app reason"))
      const answer = yield* peer.nextFrame()
      assert.strictEqual(answer.opcode, 0x8)
      assert.strictEqual(closeCodeOf(answer), 3000)
      assert.strictEqual(decoder.decode(answer.payload.subarray(2)), "app reason")
      // the server ends the transport first
      assert.strictEqual(yield* peer.readFrame(), "eof")
      assert.deepStrictEqual(yield* connection.closed, { code: 3000, reason: "app reason", clean: true, initiator: "remote" })
      const { exit, got } = yield* Fiber.join(messages)
      assert.isTrue(Exit.isSuccess(exit))
      assert.deepStrictEqual(got, ["last"])
    }))

  it.effect("close twice returns the same info", () =>
    Effect.gen(function*() {
      const [client, server] = yield* Connection.makeMemoryPair()
      const first = yield* client.close(1000, "once")
      const second = yield* client.close(4000, "twice")
      assert.deepStrictEqual(second, first)
      // the side that answered gets the same from its own close
      const serverFirst = yield* server.closed
      assert.deepStrictEqual(yield* server.close(), serverFirst)
    }))

  it.effect("a second close made while the first one's Close waits for the wire joins it: one Close goes out, both get the clean end", () =>
    Effect.gen(function*() {
      const { connection, peer } = yield* rawConnection("server", { highWaterMark: 1024 })
      // the peer reads nothing yet: the first send fills the transport, the second holds the wire, and the Close waits behind it
      yield* connection.send(new Uint8Array(2048).fill(1))
      const sending = yield* Effect.forkChild(connection.send(new Uint8Array(2048).fill(2)))
      yield* settle
      const first = yield* Effect.forkChild(connection.close(1000, "once"))
      yield* settle
      const second = yield* Effect.forkChild(connection.close(4000, "twice"))
      yield* settle
      assert.isUndefined(first.pollUnsafe())
      assert.strictEqual((yield* peer.nextFrame()).opcode, 0x2)
      assert.strictEqual((yield* peer.nextFrame()).opcode, 0x2)
      yield* Fiber.join(sending)
      const close = yield* peer.nextFrame()
      assert.deepStrictEqual([close.opcode, closeCodeOf(close)], [0x8, 1000])
      yield* peer.send(0x8, closeBody(1000, "once"))
      const info = { code: 1000, reason: "once", clean: true, initiator: "local" }
      assert.deepStrictEqual(yield* Fiber.join(first), info)
      assert.deepStrictEqual(yield* Fiber.join(second), info)
      assert.strictEqual(yield* peer.readFrame(), "eof")
    }))

  it.effect("concurrent closes from both sides both complete", () =>
    Effect.gen(function*() {
      const [client, server] = yield* Connection.makeMemoryPair()
      const [c, s] = yield* Effect.all([client.close(1000, "c"), server.close(1000, "s")], { concurrency: 2 })
      assert.strictEqual(c.code, 1000)
      assert.strictEqual(s.code, 1000)
      assert.deepStrictEqual(yield* client.closed, c)
      assert.deepStrictEqual(yield* server.closed, s)
    }))

  it.effect("send, sendFragments and ping after close fail with InvalidProtocolOperation", () =>
    Effect.gen(function*() {
      const [client, server] = yield* Connection.makeMemoryPair()
      yield* client.close()
      yield* server.closed
      for (const c of [client, server]) {
        const sendError = yield* Effect.flip(c.send("too late"))
        assert.strictEqual(sendError._tag, "InvalidProtocolOperation")
        const fragmentsError = yield* Effect.flip(c.sendFragments(Stream.make("a"), "text"))
        assert.strictEqual(fragmentsError._tag, "InvalidProtocolOperation")
        const pingError = yield* Effect.flip(c.ping())
        assert.strictEqual(pingError._tag, "InvalidProtocolOperation")
      }
    }))

  it.live("a ping goes out after our Close while the answer is awaited (control frames may), a send does not", () =>
    Effect.gen(function*() {
      const { connection, peer } = yield* rawConnection("server")
      const closing = yield* Effect.forkChild(connection.close(1000))
      assert.strictEqual((yield* peer.nextFrame()).opcode, 0x8)
      yield* connection.ping("still there?")
      const ping = yield* peer.nextFrame()
      assert.deepStrictEqual([ping.opcode, decoder.decode(ping.payload)], [0x9, "still there?"])
      assert.include((yield* Effect.flip(connection.send("data"))).message, "a Close was already sent")
      yield* peer.send(0x8, closeBody(1000))
      assert.strictEqual((yield* Fiber.join(closing)).code, 1000)
    }))

  it.live("ping and close go out between the fragments of a message, as control frames may (RFC 6455 section 5.4)", () =>
    Effect.gen(function*() {
      const { connection, peer } = yield* rawConnection("client")
      const more = yield* Deferred.make<string>()
      // a fragmented message that waits after its first fragment
      const fragments = yield* Effect.forkChild(
        connection.sendFragments(Stream.concat(Stream.make("first"), Stream.fromEffect(Deferred.await(more))), "text")
      )
      const first = yield* peer.nextFrame()
      assert.deepStrictEqual([first.opcode, first.fin, decoder.decode(first.payload)], [0x1, false, "first"])
      yield* Effect.timeout(connection.ping("p"), "2 seconds")
      const ping = yield* peer.nextFrame()
      assert.deepStrictEqual([ping.opcode, decoder.decode(ping.payload)], [0x9, "p"])
      const closing = yield* Effect.forkChild(connection.close(1000, "bye"))
      const close = yield* Effect.timeout(peer.nextFrame(), "2 seconds")
      assert.deepStrictEqual([close.opcode, closeCodeOf(close)], [0x8, 1000])
      yield* peer.send(0x8, closeBody(1000))
      yield* peer.transport.close
      assert.deepStrictEqual(yield* Fiber.join(closing), { code: 1000, reason: "", clean: true, initiator: "local" })
      // the message cannot be finished after the Close
      yield* Deferred.succeed(more, "second")
      const error = yield* Effect.flip(Fiber.join(fragments))
      assert.strictEqual(error._tag, "InvalidProtocolOperation")
    }))

  it.live("a sendFragments waiting for its stream stops once a Close is sent or the connection ends, and so do the sends behind it", () =>
    Effect.gen(function*() {
      for (const end of ["close", "abort"] as const) {
        const [client, server] = yield* Connection.makeMemoryPair()
        yield* Effect.forkChild(drain(server))
        const fragments = yield* Queue.unbounded<string, Cause.Done>()
        yield* Queue.offer(fragments, "first part")
        const message = yield* Effect.forkChild(client.sendFragments(Stream.fromQueue(fragments), "text"))
        yield* Effect.sleep("20 millis") // the first fragment went out; the stream waits
        const behind = yield* Effect.forkChild(client.send("behind the message"))
        yield* Effect.sleep("20 millis")
        yield* end === "close" ? Effect.asVoid(client.close(1000)) : client.abort
        const sent = yield* Effect.timeout(Effect.flip(Fiber.join(behind)), "2 seconds")
        const after = yield* Effect.timeout(Effect.flip(client.send("after")), "2 seconds")
        const stopped = yield* Effect.timeout(Effect.flip(Fiber.join(message)), "2 seconds")
        // after a close, the Close was sent; after an abort, none was: the connection is closed
        const expected = end === "close" ? /a Close was sent|the connection is closed/ : /^the connection is closed$/
        for (const error of [sent, after, stopped]) {
          assert.strictEqual(error._tag, "InvalidProtocolOperation", end)
          assert.match(error.message, expected, end)
        }
      }
    }))

  it.effect("a sendFragments waiting for its stream stops as soon as our Close is sent, before the peer answers", () =>
    Effect.gen(function*() {
      const { connection, peer } = yield* rawConnection("client", { connection: { closeTimeout: "10 seconds" } })
      const message = yield* Effect.forkChild(
        connection.sendFragments(Stream.concat(Stream.make("first part"), Stream.never), "text")
      )
      const first = yield* peer.nextFrame()
      assert.deepStrictEqual([first.opcode, first.fin], [0x1, false])
      const closing = yield* Effect.forkChild(connection.close(1000))
      const close = yield* peer.nextFrame()
      assert.strictEqual(close.opcode, 0x8)
      yield* settle
      // the peer has not answered: the connection is still closing, the message is over already
      assert.isUndefined(closing.pollUnsafe())
      const error = yield* Effect.flip(Fiber.join(message))
      assert.strictEqual(error._tag, "InvalidProtocolOperation")
      assert.match(error.message, /a Close was sent/)
    }))

  it.live("sendFragments interrupted while its first frame waits leaves nothing open; interrupted at its final frame, the message stays open (until our Close, which later sends then name)", () =>
    Effect.gen(function*() {
      // the peer reads nothing: the transport holds 1 KiB, then writes wait
      const first = yield* rawConnection("server", { highWaterMark: 1024 })
      yield* first.connection.send(new Uint8Array(2048)) // fills the transport
      const cut = yield* Effect.exit(Effect.timeout(first.connection.sendFragments(Stream.make("a", "b"), "text"), "50 millis"))
      assert.isTrue(Exit.isFailure(cut))
      const after = yield* Effect.forkChild(first.connection.send("after"))
      const frames: Array<Frame> = []
      for (let i = 0; i < 2; i++) frames.push(yield* first.peer.nextFrame())
      yield* Fiber.join(after)
      // nothing of the fragmented message went out: "after" is a message of its own
      assert.deepStrictEqual(frames.map((f) => [f.opcode, f.fin]), [[0x2, true], [0x1, true]])
      assert.strictEqual(decoder.decode(frames[1]!.payload), "after")

      const second = yield* rawConnection("server", { highWaterMark: 1024 })
      // the one fragment goes out and fills the transport: the final frame waits, and is cut
      const cutAtTheEnd = yield* Effect.exit(
        Effect.timeout(second.connection.sendFragments(Stream.make(new Uint8Array(4096)), "binary"), "50 millis")
      )
      assert.isTrue(Exit.isFailure(cutAtTheEnd))
      const error = yield* Effect.flip(second.connection.send("after"))
      assert.strictEqual(error._tag, "InvalidProtocolOperation")
      assert.include(error.message, "left incomplete")
      // once our Close went out, that is the reason given
      const closing = yield* Effect.forkChild(second.connection.close(1000))
      assert.deepStrictEqual([(yield* second.peer.nextFrame()).opcode, (yield* second.peer.nextFrame()).opcode], [0x2, 0x8])
      const afterClose = yield* Effect.flip(second.connection.send("later"))
      assert.strictEqual(afterClose._tag, "InvalidProtocolOperation")
      assert.include(afterClose.message, "a Close was already sent")
      yield* second.peer.send(0x8, closeBody(1000))
      assert.strictEqual((yield* Fiber.join(closing)).code, 1000)
    }))

  it.live("a send is done once its frame is written: a pong that must wait behind it is not part of it (interrupted then, the send stands and the pong still goes out)", () =>
    Effect.gen(function*() {
      const { connection, peer, sending } = yield* sendWaitingWithPongBehind
      // the peer reads the first message: the second one's frame is written and fills the transport
      // again, so the pong must wait
      assert.deepStrictEqual((yield* peer.nextFrame()).payload, new Uint8Array(2048).fill(1))
      yield* settle
      // the send's caller stops waiting now: the message went out, so the send stands
      yield* Fiber.interrupt(sending)
      assert.isTrue(Exit.isSuccess(yield* Fiber.await(sending)), "the send completed once its frame was written")
      assert.strictEqual(connection.stats.messagesOut, 2)
      const second = yield* peer.nextFrame()
      assert.deepStrictEqual([second.opcode, second.payload], [0x2, new Uint8Array(2048).fill(2)])
      const pong = yield* peer.nextFrame()
      assert.deepStrictEqual([pong.opcode, decoder.decode(pong.payload)], [0xa, "p"])
    }))

  it.effect("a pong that cannot be written fails the connection (1006, the messages fail with the transport's error)", () =>
    Effect.gen(function*() {
      const { serverHandle } = yield* handles()
      const [a, b] = yield* Transport.makeMemoryPair()
      // a transport that takes everything but Pong frames
      const isPong = (buffers: ReadonlyArray<Uint8Array>) => buffers.length > 0 && buffers[0]![0] === 0x8a
      const failing = Transport.make({
        ...a,
        tryWrite: undefined,
        write: (buffers, owned) =>
          isPong(buffers) ? Effect.fail(new Transport.TransportError({ message: "pong refused" })) : a.write(buffers, owned)
      })
      const connection = yield* Connection.make(serverHandle, failing)
      const peer = new RawPeer(b, true)
      const messages = yield* Effect.forkChild(drain(connection))
      yield* peer.send(0x1, "before")
      yield* peer.send(0x9, "p")
      const info = yield* connection.closed
      assert.deepStrictEqual([info.code, info.clean], [1006, false])
      assert.include(info.reason, "pong refused")
      const { got, exit } = yield* Fiber.join(messages)
      assert.deepStrictEqual(got, ["before"])
      assert.strictEqual(failureOf(exit)._tag, "TransportError")
    }))

  it.live("a pong that fails once the peer's Close came leaves the closing to it: the peer's code, as ws reports", () =>
    Effect.gen(function*() {
      const { serverHandle } = yield* handles()
      const [a, b] = yield* Transport.makeMemoryPair()
      const isPong = (buffers: ReadonlyArray<Uint8Array>) => buffers.length > 0 && buffers[0]![0] === 0x8a
      // the pong's write fails a little later, as a socket's does (its callback), while the Close
      // that answers the peer's waits for the wire
      let pongsTried = 0
      const failing = Transport.make({
        ...a,
        tryWrite: undefined,
        write: (buffers, owned) =>
          isPong(buffers)
            ? Effect.andThen(
              Effect.sleep("20 millis"),
              Effect.suspend(() => {
                pongsTried++
                return Effect.fail(new Transport.TransportError({ message: "pong refused" }))
              })
            )
            : a.write(buffers, owned)
      })
      const connection = yield* Connection.make(serverHandle, failing)
      const peer = new RawPeer(b, true)
      const messages = yield* Effect.forkChild(drain(connection))
      // a ping and then the Close, in one write: the pong fails while the Close waits to be read
      yield* peer.write(
        frame(0x1, "before", { mask: true }),
        frame(0x9, "p", { mask: true }),
        frame(0x8, closeBody(1000, "bye"), { mask: true })
      )
      const info = yield* connection.closed
      assert.strictEqual(pongsTried, 1)
      assert.deepStrictEqual([info.code, info.reason, info.initiator], [1000, "bye", "remote"])
      const { got, exit } = yield* Fiber.join(messages)
      assert.deepStrictEqual(got, ["before"])
      assert.isTrue(Exit.isSuccess(exit), "the messages end as after any Close")
      const echo = yield* peer.nextFrame()
      assert.deepStrictEqual([echo.opcode, Array.from(echo.payload.subarray(0, 2))], [0x8, [0x03, 0xe8]])
    }))

  it.live("a burst of pings in one read from a peer that reads is answered ping by ping, in order (beyond 16 they shared a pong)", () =>
    Effect.gen(function*() {
      for (const kind of ["client", "server"] as const) {
        const { connection, peer } = yield* rawConnection(kind)
        yield* Effect.forkChild(Stream.runDrain(connection.messages))
        const pings = Array.from({ length: 100 }, (_, i) => frame(0x9, Uint8Array.of(i), { mask: peer.mask }))
        yield* peer.write(...pings) // one write: one read
        const answered: Array<number> = []
        for (let i = 0; i < 100; i++) {
          const pong = yield* Effect.timeout(peer.nextFrame(), "2 seconds")
          assert.strictEqual(pong.opcode, 0xa)
          answered.push(pong.payload[0]!)
        }
        assert.deepStrictEqual(answered, Array.from({ length: 100 }, (_, i) => i), kind)
        assert.strictEqual(connection.stats.pingsIn, 100)
      }
    }))

  it.live("pongs shared while a peer read nothing are answered ping by ping again once it reads", () =>
    Effect.gen(function*() {
      // the peer's side holds 1 KiB: beyond, the pongs' writer waits for it to read
      const { connection, peer } = yield* rawConnection("server", { highWaterMark: 1024 })
      yield* Effect.forkChild(Stream.runDrain(connection.messages))
      yield* peer.write(...Array.from({ length: 1000 }, () => frame(0x9, Uint8Array.of(0xaa), { mask: true })))
      yield* waitUntil(() => connection.stats.pingsIn === 1000, "the unanswered pings read")
      // the peer reads what was answered, until no more comes
      for (;;) {
        const pong = yield* Effect.timeoutOption(peer.nextFrame(), "200 millis")
        if (Option.isNone(pong)) break
      }
      yield* peer.write(...Array.from({ length: 100 }, (_, i) => frame(0x9, Uint8Array.of(i), { mask: true })))
      const answered: Array<number> = []
      while (answered.length < 100) {
        const pong = yield* Effect.timeout(peer.nextFrame(), "2 seconds")
        if (pong.payload[0] !== 0xaa) answered.push(pong.payload[0]!)
      }
      assert.deepStrictEqual(answered, Array.from({ length: 100 }, (_, i) => i))
    }))

  it.live("two connections that keep sending large messages and pings to each other do not deadlock on their pongs", () =>
    Effect.gen(function*() {
      // each reader parses a ping while its own send holds the wire and waits for the other side to
      // read: a reader that waits for the wire to write the pong stops reading, and so does the other
      const [client, server] = yield* Connection.makeMemoryPair({ highWaterMark: 1024 })
      const rounds = 20
      const gotClient = yield* Effect.forkChild(Stream.runCollect(Stream.take(client.messages, rounds)))
      const gotServer = yield* Effect.forkChild(Stream.runCollect(Stream.take(server.messages, rounds)))
      const big = new Uint8Array(64 * 1024).fill(7)
      const loop = (c: Connection.Connection) =>
        Effect.gen(function*() {
          for (let i = 0; i < rounds; i++) {
            yield* c.send(big)
            yield* c.ping("x")
          }
        })
      const a = yield* Effect.forkChild(loop(client))
      const b = yield* Effect.forkChild(loop(server))
      const done = yield* Effect.timeoutOption(Effect.all([Fiber.join(a), Fiber.join(b)]), "3 seconds")
      assert.isTrue(
        Option.isSome(done),
        `both loops completed (client out ${client.stats.messagesOut}, server out ${server.stats.messagesOut})`
      )
      assert.strictEqual((yield* Fiber.join(gotClient)).length, rounds)
      assert.strictEqual((yield* Fiber.join(gotServer)).length, rounds)
      yield* waitUntil(() => client.stats.pongsIn > 0 && server.stats.pongsIn > 0, "pings answered")
    }), 20_000)

  it.live("a send interrupted while its frame waits leaves the pong queued meanwhile to go out", () =>
    Effect.gen(function*() {
      const { connection, peer, sending } = yield* sendWaitingWithPongBehind
      yield* Fiber.interrupt(sending) // the frame was not written: the send is cancelled
      assert.isTrue(Exit.hasInterrupts(yield* Fiber.await(sending)))
      assert.deepStrictEqual((yield* peer.nextFrame()).payload, new Uint8Array(2048).fill(1))
      const pong = yield* peer.nextFrame()
      assert.deepStrictEqual([pong.opcode, decoder.decode(pong.payload)], [0xa, "p"])
      assert.strictEqual(connection.stats.messagesOut, 1)
    }))

  /**
   * Sends a 20 000-byte message from a client connection whose masked frame goes out in several
   * writes; `cut` runs as the second write starts (the write then completes); returns the failure.
   */
  const sendCutAtSecondWrite = (clientHandle: WebSocket.ClientHandle, cut: Effect.Effect<void>) =>
    Effect.gen(function*() {
      const [a] = yield* Transport.makeMemoryPair({ highWaterMark: Infinity })
      let writes = 0
      const cutting = Transport.make({
        ...a,
        tryWrite: undefined,
        write: (buffers, owned) => ++writes === 2 ? Effect.andThen(cut, a.write(buffers, owned)) : a.write(buffers, owned)
      })
      const connection = yield* Connection.make(clientHandle, cutting)
      const exit = yield* Effect.exit(connection.send(new Uint8Array(20000)))
      assert.strictEqual(writes, 2, "the frame was cut after its second part")
      assert.strictEqual(connection.stats.messagesOut, 0, "not counted as sent")
      yield* connection.abort // (the handle was cut behind the connection's back: it does not know)
      return failureOf(exit)
    })

  it.effect("a send cancelled by an abort while its frame is being written fails, and is not counted as sent", () =>
    Effect.gen(function*() {
      const { clientHandle } = yield* handles()
      const error = yield* sendCutAtSecondWrite(clientHandle, WebSocket.abortHandle(clientHandle))
      assert.strictEqual(error._tag, "InvalidProtocolOperation")
      assert.include(error.message, "cancelled")
    }))

  it.effect("a send whose handle is deleted while its frame is being written fails (it does not die)", () =>
    Effect.gen(function*() {
      const handleScope = yield* Scope.make()
      const { clientHandle } = yield* Scope.provide(handles(), handleScope)
      // the handle's scope closes: WebSocketDeleteHandle
      const error = yield* sendCutAtSecondWrite(clientHandle, Scope.close(handleScope, Exit.void))
      assert.strictEqual(error._tag, "InvalidProtocolOperation")
    }))

  it.effect("a handle deleted behind the connection's back while it reads ends it with the handle's error, as a broken frame does (1002)", () =>
    Effect.gen(function*() {
      const handleScope = yield* Scope.make()
      const { serverHandle } = yield* Scope.provide(handles(), handleScope)
      const [a, b] = yield* Transport.makeMemoryPair()
      const connection = yield* Connection.make(serverHandle, a)
      yield* Effect.addFinalizer(() => connection.abort)
      const peer = new RawPeer(b, true)
      yield* settle
      yield* Scope.close(handleScope, Exit.void)
      yield* peer.send(0x1, "x")
      yield* settle
      const error = failureOf(yield* Effect.exit(Stream.runDrain(connection.messages)))
      assert.strictEqual(error._tag, "InvalidProtocolOperation")
      assert.include(error.message, "the handle was deleted")
      const info = yield* connection.closed
      assert.deepStrictEqual([info.code, info.clean, info.initiator], [1002, false, "none"])
    }))

  it.live("a pong waiting for the wire behind two sends still goes out when the second send is interrupted while it waits", () =>
    Effect.gen(function*() {
      const { connection, peer } = yield* rawConnection("server", { highWaterMark: 1024 })
      yield* connection.send(new Uint8Array(2048).fill(1)) // fills the transport
      const second = yield* Effect.forkChild(connection.send(new Uint8Array(2048).fill(2))) // waits, holding the wire
      yield* settle
      const third = yield* Effect.forkChild(connection.send(new Uint8Array(16).fill(3))) // waits for the wire
      yield* settle
      yield* peer.send(0x9, "p") // the reader's pong waits for the wire, behind the third send
      yield* settle
      assert.deepStrictEqual((yield* peer.nextFrame()).payload, new Uint8Array(2048).fill(1))
      yield* settle
      // the second message is written and fills the transport; the third send has the wire now (the
      // reader waits behind it): interrupted while it waits for room, it must not take the pong along
      yield* Fiber.interrupt(third)
      yield* settle
      assert.deepStrictEqual((yield* peer.nextFrame()).payload, new Uint8Array(2048).fill(2))
      assert.isTrue(Exit.isSuccess(yield* Fiber.await(second)))
      const pong = yield* Effect.timeoutOption(peer.nextFrame(), "500 millis")
      assert.isTrue(Option.isSome(pong), "the pong went out")
      const frame = Option.getOrThrow(pong)
      assert.deepStrictEqual([frame.opcode, decoder.decode(frame.payload)], [0xa, "p"])
    }))

  it.live("a send written at once succeeds though the wire passes, in the same step, to a send that must wait (the answer to a Close)", () =>
    Effect.gen(function*() {
      const { connection, peer } = yield* rawConnection("server", { highWaterMark: 1024 })
      // the peer waits for bytes; woken inside the connection's write (the memory transport resumes
      // it at once), it reads one byte and sends a Close: the connection's reader, woken in turn,
      // answers it once the wire is free, and that answer must wait (the transport is full)
      const peerSide = yield* Effect.forkChild(Effect.gen(function*() {
        yield* peer.transport.read(new Uint8Array(1))
        yield* peer.send(0x8, new Uint8Array([0x03, 0xe8]))
      }))
      yield* settle
      const exit = yield* Effect.exit(connection.send(new Uint8Array(2048).fill(1)))
      yield* Fiber.join(peerSide)
      assert.isTrue(Exit.isSuccess(exit), String(exit))
      assert.strictEqual(connection.stats.messagesOut, 1)
    }))

  it.live("an operation interrupted right after it took the wire gives it back (the fiber may yield at any step)", () =>
    Effect.gen(function*() {
      const [client, server] = yield* Connection.makeMemoryPair()
      yield* Effect.forkChild(Stream.runDrain(server.messages))
      // a fiber that yields every few steps, interrupted at once
      yield* Effect.timeoutOption(client.ping("x"), 0).pipe(Effect.provideService(Scheduler.MaxOpsBeforeYield, 4))
      const sent = yield* Effect.timeoutOption(client.send("after the ping"), "2 seconds")
      assert.isTrue(Option.isSome(sent), "the wire is free again")
      // many senders that yield every few steps: none waits for a wire that came free meanwhile
      const all = Effect.forEach(Array.from({ length: 30 }, (_, i) => i), (i) => client.send(`m${i}`), {
        concurrency: "unbounded",
        discard: true
      }).pipe(Effect.provideService(Scheduler.MaxOpsBeforeYield, 4))
      assert.isTrue(Option.isSome(yield* Effect.timeoutOption(all, "2 seconds")), "every send went out")
      assert.isTrue((yield* client.close(1000)).clean)
    }))

  it.effect("sends waiting for the wire go out in the order they were made", () =>
    Effect.gen(function*() {
      const { connection, peer } = yield* rawConnection("server", { highWaterMark: 1024 })
      // the first send fills the transport, the second waits for room holding the wire
      yield* connection.send(new Uint8Array(2048))
      yield* Effect.forkChild(connection.send(new Uint8Array(2048)))
      yield* settle
      for (const m of ["one", "two", "three"]) {
        yield* Effect.forkChild(connection.send(m))
        yield* settle
      }
      yield* peer.nextFrame()
      yield* peer.nextFrame()
      const got: Array<string> = []
      for (let i = 0; i < 3; i++) got.push(decoder.decode((yield* peer.nextFrame()).payload))
      assert.deepStrictEqual(got, ["one", "two", "three"])
    }))

  it.live("a close whose caller stops waiting (a timeout) still goes out, after what was queued, and the handshake completes", () =>
    Effect.gen(function*() {
      const { clientHandle, serverHandle } = yield* handles()
      const [a, b] = yield* Transport.makeMemoryPair({ highWaterMark: 1024 })
      const client = yield* Connection.make(clientHandle, a)
      // nobody reads yet: this fills the transport, and the Close must wait for room
      yield* client.send(new Uint8Array(2000))
      const timedOut = yield* Effect.exit(Effect.timeout(client.close(1013, "try again"), "20 millis"))
      assert.isTrue(Exit.isFailure(timedOut))
      // a send now waits behind the Close (its caller can stop waiting), and is refused once the
      // Close went out
      const waited = yield* Effect.flip(Effect.timeout(client.send("stopped waiting"), "100 millis"))
      assert.strictEqual(waited._tag, "TimeoutError")
      const after = yield* Effect.forkChild(Effect.flip(client.send("after close")))
      // now the server reads: the message, then the Close
      const server = yield* Connection.make(serverHandle, b)
      assert.deepStrictEqual(yield* Stream.runCollect(server.messages), [new Uint8Array(2000)])
      assert.strictEqual((yield* Fiber.join(after))._tag, "InvalidProtocolOperation")
      assert.deepStrictEqual(yield* server.closed, { code: 1013, reason: "try again", clean: true, initiator: "remote" })
      assert.deepStrictEqual(yield* client.closed, { code: 1013, reason: "try again", clean: true, initiator: "local" })
    }))

  it.effect("a first sendFragments on a closed connection whose stream never ends fails at once", () =>
    Effect.gen(function*() {
      const [client] = yield* Connection.makeMemoryPair()
      yield* client.close()
      const sending = yield* Effect.forkChild(client.sendFragments(Stream.never, "text"))
      yield* settle
      const exit = sending.pollUnsafe()
      assert.isDefined(exit, "it does not wait for a fragment")
      assert.strictEqual(failureOf(exit!)._tag, "InvalidProtocolOperation")
    }))

  it.effect("send after our Close was sent, before the answer, fails with InvalidProtocolOperation", () =>
    Effect.gen(function*() {
      const { connection, peer } = yield* rawConnection("client")
      const closing = yield* Effect.forkChild(connection.close(1000))
      const f = yield* peer.nextFrame()
      assert.strictEqual(f.opcode, 0x8)
      const error = yield* Effect.flip(connection.send("data after Close"))
      assert.strictEqual(error._tag, "InvalidProtocolOperation")
      yield* peer.send(0x8, closeBody(1000))
      yield* peer.transport.close
      assert.deepStrictEqual(yield* Fiber.join(closing), { code: 1000, reason: "", clean: true, initiator: "local" })
    }))

  it.effect("close with 999, 1006, 5000, a reason over 123 bytes or 1005 with a reason fails with InvalidParameter, the connection stays usable; a reason cut by truncateReason goes through", () =>
    Effect.gen(function*() {
      const [client, server] = yield* Connection.makeMemoryPair()
      yield* Effect.forkScoped(Stream.runForEach(server.messages, (m) => server.send(m)))
      const invalid: ReadonlyArray<readonly [number, string]> = [
        [1005, "an empty Close has no reason"],
        [1005, "x"],
        [1005, "é"],
        [999, ""],
        [1006, ""],
        [1015, ""],
        [5000, ""],
        [1000, "r".repeat(124)],
        [1000, "é".repeat(62)] // 124 UTF-8 bytes
      ]
      for (const [code, reason] of invalid) {
        const error = yield* Effect.flip(client.close(code, reason))
        assert.strictEqual(error._tag, "InvalidParameter", `close(${code}, ${reason.length} chars)`)
        assert.isTrue(yield* isOpen(client))
      }
      yield* client.send("still open")
      assert.deepStrictEqual(yield* Stream.runCollect(Stream.take(client.messages, 1)), ["still open"])
      // what CloseStatus.truncateReason makes of a longer reason fits
      const reason = CloseStatus.truncateReason("r".repeat(60) + "é".repeat(62))
      assert.strictEqual(reason, "r".repeat(60) + "é".repeat(31)) // 122 bytes
      assert.deepStrictEqual(yield* client.close(1000, reason), { code: 1000, reason, clean: true, initiator: "local" })
      assert.deepStrictEqual(yield* server.closed, { code: 1000, reason, clean: true, initiator: "remote" })
    }))

  it.effect("the consumer closes as it handles a message, with more messages on their way than the buffer holds: the close completes at once", () =>
    Effect.gen(function*() {
      const [client, server] = yield* Connection.makeMemoryPair()
      const handled: Array<Connection.Message> = []
      // the usual handler: refuse bad input with a 4xxx code, from inside the consumer
      const serving = yield* Effect.forkChild(Stream.runForEach(server.messages, (message) =>
        Effect.gen(function*() {
          handled.push(message)
          if (message === "bad") yield* server.close(4000, "bad input")
        })))
      yield* client.send("bad")
      for (let i = 0; i < 40; i++) yield* client.send(`after ${i}`)
      // (it.effect: the clock stands still, so no timeout can end this close; only the answer can)
      assert.deepStrictEqual(yield* client.closed, { code: 4000, reason: "bad input", clean: true, initiator: "remote" })
      assert.deepStrictEqual(yield* server.closed, { code: 4000, reason: "bad input", clean: true, initiator: "local" })
      yield* Fiber.join(serving)
      assert.strictEqual(handled[0], "bad")
      // the messages that were buffered as it closed stayed its to take, in order
      handled.slice(1).forEach((message, i) => assert.strictEqual(message, `after ${i}`))
    }))

  it.effect("a consumer that reads ahead closes with the close forked as the docs say (Effect.forkDetach; from mapEffect's fiber, a forkChild never starts): the close goes out, the stream ends", () =>
    Effect.gen(function*() {
      for (const readAhead of ["mapEffect with concurrency", "buffer"] as const) {
        const [client, server] = yield* Connection.makeMemoryPair()
        // a fiber forked with forkChild from mapEffect's per-element fiber would be interrupted
        // with it before it starts: the close would never go out
        const onMessage = (message: Connection.Message) =>
          message === "bad" ? Effect.asVoid(Effect.forkDetach(server.close(4000, "bad input"))) : Effect.void
        const serving = yield* Effect.forkChild(
          readAhead === "buffer"
            ? Stream.runForEach(Stream.buffer(server.messages, { capacity: 4 }), onMessage)
            : Stream.runDrain(Stream.mapEffect(server.messages, onMessage, { concurrency: 4 }))
        )
        for (const message of ["a", "b", "bad", "c", "d"]) yield* client.send(message)
        // (it.effect: the clock stands still, so no timeout can end this close; only the answer can)
        assert.deepStrictEqual(yield* client.closed, { code: 4000, reason: "bad input", clean: true, initiator: "remote" }, readAhead)
        assert.deepStrictEqual(yield* server.closed, { code: 4000, reason: "bad input", clean: true, initiator: "local" }, readAhead)
        yield* Fiber.join(serving)
      }
    }))

  it.live("a consumer that closes makes no other consumer that still runs lose messages (two consumers; one whose stream ended)", () =>
    Effect.gen(function*() {
      const run = (who: "another consumer" | "a fiber whose stream ended") =>
        Effect.scoped(Effect.gen(function*() {
          const [client, server] = yield* Connection.makeMemoryPair({ connection: { messageBuffer: 4 } })
          const got: Array<Connection.Message> = []
          // a slow consumer that never closes
          const slow = yield* Effect.forkChild(Stream.runForEach(server.messages, (m) => {
            got.push(m)
            return Effect.sleep("2 millis")
          }))
          const closer = who === "another consumer"
            ? Stream.runForEach(server.messages, (m) => {
              got.push(m)
              return m === "m3" ? Effect.asVoid(server.close(4000, "bad")) : Effect.void
            })
            : Effect.andThen(Effect.sleep("10 millis"), Stream.runHead(server.messages)).pipe(
              Effect.tap((m) => Effect.sync(() => m._tag === "Some" && got.push(m.value))),
              Effect.andThen(server.close(4000, "bad"))
            )
          yield* Effect.forkChild(closer)
          for (let i = 0; i < 60; i++) yield* client.send(`m${i}`)
          assert.strictEqual((yield* client.closed).code, 4000)
          yield* Fiber.join(slow)
          return got.length
        }))
      // every message the client sent came before its answer to the Close: the consumers got them all
      assert.strictEqual(yield* run("another consumer"), 60)
      assert.strictEqual(yield* run("a fiber whose stream ended"), 60)
    }))

  it.effect("close timeout: a peer that never answers is cut off after closeTimeout", () =>
    Effect.gen(function*() {
      const { connection, peer } = yield* rawConnection("client", { connection: { closeTimeout: "3 seconds" } })
      const closing = yield* Effect.forkChild(connection.close(1000, "bye"))
      const f = yield* peer.nextFrame()
      assert.strictEqual(f.opcode, 0x8)
      assert.isTrue(f.masked)
      assert.strictEqual(closeCodeOf(f), 1000)
      assert.strictEqual(decoder.decode(f.payload.subarray(2)), "bye")
      yield* TestClock.adjust("2 seconds")
      assert.isUndefined(closing.pollUnsafe(), "still waiting for the answer")
      yield* TestClock.adjust("1 second")
      const info = yield* Fiber.join(closing)
      assert.strictEqual(info.clean, false)
      assert.strictEqual(info.code, 1006)
      assert.strictEqual(info.initiator, "local")
      // the transport is closed: the peer reads the end, and cannot write any more
      assert.strictEqual(yield* peer.readFrame(), "eof")
      const error = yield* Effect.flip(peer.send(0x8, closeBody(1000)))
      assert.strictEqual(error._tag, "TransportError")
    }))

  it.effect("a client waits for the server to end the transport, for at most a second (not the close timeout, unless shorter), then ends its own", () =>
    Effect.gen(function*() {
      const { connection, peer } = yield* rawConnection("client", { connection: { closeTimeout: "3 seconds" } })
      const closing = yield* Effect.forkChild(connection.close(1000))
      yield* peer.nextFrame()
      yield* peer.send(0x8, closeBody(1000))
      yield* settle
      yield* TestClock.adjust("500 millis")
      // what the server still sends (against the rules) is read and dropped: only its end counts
      yield* peer.send(0x9, "late")
      yield* settle
      yield* TestClock.adjust("499 millis")
      assert.isUndefined(closing.pollUnsafe(), "waiting for the server to end the transport")
      yield* TestClock.adjust("1 millis")
      yield* settle
      assert.deepStrictEqual(closing.pollUnsafe(), Exit.succeed({ code: 1000, reason: "", clean: true, initiator: "local" as const }))
      assert.strictEqual(yield* peer.readFrame(), "eof")
      // and for at most the close timeout when that is shorter, also once it answered the server's Close
      const short = yield* rawConnection("client", { connection: { closeTimeout: "300 millis" } })
      const closedShort = yield* Effect.forkChild(short.connection.closed)
      yield* short.peer.send(0x8, closeBody(1000))
      const answer = yield* short.peer.nextFrame()
      assert.deepStrictEqual([answer.opcode, closeCodeOf(answer)], [0x8, 1000])
      yield* settle
      yield* TestClock.adjust("299 millis")
      yield* settle
      assert.isUndefined(closedShort.pollUnsafe(), "waiting for the server to end the transport")
      yield* TestClock.adjust("1 millis")
      yield* settle
      assert.deepStrictEqual(closedShort.pollUnsafe(), Exit.succeed({ code: 1000, reason: "", clean: true, initiator: "remote" as const }))
      assert.strictEqual(yield* short.peer.readFrame(), "eof")
    }))

  it.effect("close timeout: a server that answered the Close but ends the transport late still closed cleanly", () =>
    Effect.gen(function*() {
      const { clientHandle } = yield* handles()
      const [a, b] = yield* Transport.makeMemoryPair()
      let destroyed = 0
      const counting = Transport.make({ ...a, destroy: Effect.andThen(Effect.sync(() => destroyed++), a.destroy!) })
      const connection = yield* Connection.make(clientHandle, counting, { closeTimeout: "3 seconds" })
      yield* Effect.addFinalizer(() => connection.abort)
      const peer = new RawPeer(b, false)
      const closing = yield* Effect.forkChild(connection.close(1000))
      yield* peer.nextFrame()
      yield* TestClock.adjust("2500 millis")
      yield* peer.send(0x8, closeBody(1000, "ack"))
      yield* settle
      // close()'s own timeout (3 s after it began) comes before the wait for the end (a second after the answer)
      yield* TestClock.adjust("500 millis")
      const info = { code: 1000, reason: "ack", clean: true, initiator: "local" }
      assert.deepStrictEqual(yield* Fiber.join(closing), info)
      assert.deepStrictEqual(yield* connection.closed, info)
      assert.strictEqual(yield* peer.readFrame(), "eof")
      assert.strictEqual(destroyed, 0, "the transport is closed gracefully, not cut")
    }))

  it.effect("a connection made in a scope that is already closed ends at once (its reader never runs, no answer can be read)", () =>
    Effect.gen(function*() {
      // the peer gets our Close (1001, going away; or the empty one closeCodeOnScopeClose 1005 asks for), then the end
      for (const [closeCodeOnScopeClose, payload] of [[undefined, [0x03, 0xe9]], [1005, []]] as const) {
        const { clientHandle } = yield* handles()
        const [a, b] = yield* Transport.makeMemoryPair()
        const peer = new RawPeer(b, false)
        const closedScope = yield* Scope.make()
        yield* Scope.close(closedScope, Exit.void)
        // (as a connect that completes after its caller gave up)
        const making = yield* Effect.forkChild(
          Connection.make(clientHandle, a, { closeTimeout: "5 seconds", closeCodeOnScopeClose }).pipe(Scope.provide(closedScope))
        )
        yield* settle
        const made = making.pollUnsafe()
        assert.isTrue(made !== undefined && Exit.isSuccess(made), "make waits for an answer that nobody reads")
        const info = yield* (made as Exit.Success<Connection.Connection>).value.closed
        assert.strictEqual(info.code, 1006)
        assert.strictEqual(info.clean, false)
        const frame = yield* peer.readFrame()
        assert.isTrue(frame !== "eof" && frame.opcode === 0x8)
        assert.deepStrictEqual(frame !== "eof" ? [...frame.payload] : [], [...payload])
        assert.strictEqual(yield* peer.readFrame(), "eof")
      }
    }))

  it.effect("close timeout: the transport is closed even when the reader is interrupted while it closes it", () =>
    Effect.gen(function*() {
      const { clientHandle } = yield* handles()
      const [a, b] = yield* Transport.makeMemoryPair()
      // a transport whose close takes a while (an effectful wrapper): the reader is inside it when
      // close()'s timeout interrupts the reader
      const gate = yield* Deferred.make<void>()
      let closeStarted = false
      const slowClose = Transport.make({
        ...a,
        close: Effect.suspend(() => {
          closeStarted = true
          return Effect.andThen(Deferred.await(gate), a.close)
        })
      })
      const connection = yield* Connection.make(clientHandle, slowClose, { closeTimeout: "3 seconds" })
      const peer = new RawPeer(b, false)
      const closing = yield* Effect.forkChild(connection.close(1000))
      yield* peer.nextFrame()
      yield* TestClock.adjust("1 second")
      yield* peer.send(0x8, closeBody(1000, "ack"))
      yield* peer.transport.end
      yield* waitUntil(() => closeStarted, "the reader closes the transport")
      yield* TestClock.adjust("2 seconds") // close()'s timeout: the reader is interrupted
      yield* settle
      yield* Deferred.succeed(gate, undefined)
      assert.strictEqual((yield* Fiber.join(closing)).clean, true)
      // the peer sees the end of our side: the transport was closed
      const last = yield* Effect.forkChild(peer.readFrame())
      yield* settle
      const exit = last.pollUnsafe()
      assert.isTrue(exit !== undefined && Exit.isSuccess(exit) && exit.value === "eof", "the transport is still open")
    }))

  it.effect("close timeout: a transport whose close never completes does not hold close or the scope forever", () =>
    Effect.gen(function*() {
      const { clientHandle } = yield* handles()
      const [a, b] = yield* Transport.makeMemoryPair()
      // a transport whose close waits for something that never comes (a flush to a peer that no
      // longer reads, say): the reader is inside it when close()'s timeout gives up on the peer
      let closeStarted = false
      const stuckClose = Transport.make({
        ...a,
        close: Effect.suspend(() => {
          closeStarted = true
          return Effect.never
        })
      })
      const scope = yield* Scope.make()
      const connection = yield* Connection.make(clientHandle, stuckClose, { closeTimeout: "3 seconds" }).pipe(Scope.provide(scope))
      const peer = new RawPeer(b, false)
      const closing = yield* Effect.forkChild(connection.close(1000))
      yield* peer.nextFrame()
      yield* peer.send(0x8, closeBody(1000, "ack"))
      yield* peer.transport.end
      yield* waitUntil(() => closeStarted, "the reader closes the transport")
      yield* TestClock.adjust("3 seconds") // close()'s timeout
      yield* settle
      assert.isDefined(closing.pollUnsafe(), "close waits for the transport's close forever")
      const scopeClosing = yield* Effect.forkChild(Scope.close(scope, Exit.void))
      yield* settle
      assert.isDefined(scopeClosing.pollUnsafe(), "closing the scope waits for the transport's close forever")
    }))

  it.effect("abort does not wait for a transport that cannot be cut and whose close never completes", () =>
    Effect.gen(function*() {
      const { clientHandle } = yield* handles()
      const [a] = yield* Transport.makeMemoryPair()
      // no destroy: abort falls back to a close, which waits for something that never comes
      const stuck = Transport.make({ ...a, destroy: undefined, close: Effect.never })
      const connection = yield* Connection.make(clientHandle, stuck)
      const aborting = yield* Effect.forkChild(connection.abort)
      yield* settle
      assert.isDefined(aborting.pollUnsafe(), "abort waits for the transport's close forever")
      assert.strictEqual((yield* connection.closed).reason, "aborted")
    }))

  it.effect("abort cuts a transport whose graceful close is still in progress (it never completes)", () =>
    Effect.gen(function*() {
      const { serverHandle } = yield* handles()
      const [a, b] = yield* Transport.makeMemoryPair()
      let destroyed = 0
      const stuck = Transport.make({ ...a, close: Effect.never, destroy: Effect.andThen(Effect.sync(() => destroyed++), a.destroy!) })
      const connection = yield* Connection.make(serverHandle, stuck, { closeTimeout: "10 seconds" })
      const peer = new RawPeer(b, true)
      // the peer's Close is answered, then the transport's close waits (within the close timeout)
      yield* peer.send(0x8, closeBody(1000))
      assert.strictEqual((yield* peer.nextFrame()).opcode, 0x8)
      yield* settle
      assert.strictEqual(destroyed, 0)
      yield* connection.abort
      assert.strictEqual(destroyed, 1, "cut at once, not a close timeout later")
    }))

  it.effect("close timeout: a Close that cannot go out because the peer does not read says so", () =>
    Effect.gen(function*() {
      const { connection, peer } = yield* rawConnection("client", { connection: { closeTimeout: "3 seconds" }, highWaterMark: 1024 })
      // the peer reads nothing: this send waits, and holds the wire
      yield* Effect.forkChild(connection.send(new Uint8Array(256 * 1024)))
      yield* settle
      const closing = yield* Effect.forkChild(connection.close(1000))
      yield* settle
      yield* TestClock.adjust("3 seconds")
      const info = yield* Fiber.join(closing)
      assert.strictEqual(info.code, 1006)
      assert.strictEqual(info.reason, "the Close could not be sent in time (the peer does not read)")
      void peer
    }))

  it.effect("close timeout: a peer's Close that cannot be answered because the peer does not read still ends the connection", () =>
    Effect.gen(function*() {
      const { connection, peer } = yield* rawConnection("client", { connection: { closeTimeout: "3 seconds" }, highWaterMark: 1024 })
      const messages = yield* Effect.forkChild(drain(connection))
      // the peer reads nothing: this send waits, and holds the wire the answer to its Close needs
      const sending = yield* Effect.forkChild(connection.send(new Uint8Array(256 * 1024)))
      yield* settle
      yield* peer.send(0x8, closeBody(1000, "bye"))
      yield* settle
      const closed = yield* Effect.forkChild(connection.closed)
      yield* TestClock.adjust("3 seconds")
      yield* settle
      assert.isDefined(closed.pollUnsafe(), "the connection waits for the wire forever")
      assert.deepStrictEqual(yield* Fiber.join(closed), { code: 1000, reason: "bye", clean: false, initiator: "remote" })
      assert.isTrue(Exit.isSuccess((yield* Fiber.join(messages)).exit), "the messages end as after any Close")
      assert.isTrue(Exit.isFailure(yield* Fiber.await(sending)), "the waiting send fails")
    }))

  it.effect("closing the scope of an open connection sends 1001", () =>
    Effect.gen(function*() {
      const { clientHandle, serverHandle } = yield* handles()
      const [a, b] = yield* Transport.makeMemoryPair()
      const client = yield* Connection.make(clientHandle, a)
      const serverScope = yield* Scope.make()
      const server = yield* Connection.make(serverHandle, b).pipe(Scope.provide(serverScope))
      yield* client.send("hi")
      assert.deepStrictEqual(yield* Stream.runCollect(Stream.take(server.messages, 1)), ["hi"])
      yield* Scope.close(serverScope, Exit.void)
      assert.deepStrictEqual(yield* client.closed, { code: 1001, reason: "", clean: true, initiator: "remote" })
      assert.deepStrictEqual(yield* server.closed, { code: 1001, reason: "", clean: true, initiator: "local" })
    }))

  it.effect("closeCodeOnScopeClose chooses the code sent when the scope closes", () =>
    Effect.gen(function*() {
      const { clientHandle, serverHandle } = yield* handles()
      const [a, b] = yield* Transport.makeMemoryPair()
      const server = yield* Connection.make(serverHandle, b)
      const clientScope = yield* Scope.make()
      yield* Connection.make(clientHandle, a, { closeCodeOnScopeClose: 4321 }).pipe(Scope.provide(clientScope))
      yield* Scope.close(clientScope, Exit.void)
      assert.deepStrictEqual(yield* server.closed, { code: 4321, reason: "", clean: true, initiator: "remote" })
    }))

  it.effect("closeCodeOnScopeClose 1005 sends an empty Close when the scope closes, as close(1005) does", () =>
    Effect.gen(function*() {
      const { clientHandle } = yield* handles()
      const [a, b] = yield* Transport.makeMemoryPair()
      const peer = new RawPeer(b, false)
      const clientScope = yield* Scope.make()
      yield* Connection.make(clientHandle, a, { closeCodeOnScopeClose: 1005, closeTimeout: "1 second" }).pipe(Scope.provide(clientScope))
      const closing = yield* Effect.forkChild(Scope.close(clientScope, Exit.void))
      const frame = yield* peer.nextFrame()
      assert.deepStrictEqual([frame.opcode, frame.payload.length], [0x8, 0])
      yield* TestClock.adjust("1 second")
      yield* Fiber.join(closing)
    }))

  it.effect("close timeout: by default a peer that never answers is cut off after 5 seconds", () =>
    Effect.gen(function*() {
      const { connection, peer } = yield* rawConnection("client")
      const closing = yield* Effect.forkChild(connection.close(1000))
      assert.strictEqual((yield* peer.nextFrame()).opcode, 0x8)
      yield* TestClock.adjust("4999 millis")
      assert.isUndefined(closing.pollUnsafe(), "still waiting for the answer")
      yield* TestClock.adjust("1 millis")
      const info = yield* Fiber.join(closing)
      assert.deepStrictEqual([info.code, info.clean, info.initiator], [1006, false, "local"])
    }))

  it.effect("the answer to a peer's Close waits for a busy consumer at most a second (or the close timeout when shorter), not the close timeout, also for one still handling the last message it took", () =>
    Effect.gen(function*() {
      for (const taken of [false, true]) {
        const { connection, peer } = yield* rawConnection("server", { connection: { closeTimeout: "10 seconds" } })
        // a handler stuck on its first message: it never asks for the next one
        yield* Effect.forkChild(Stream.runForEach(connection.messages, () => Effect.never))
        yield* settle
        yield* peer.send(0x1, "a")
        // (taken: the handler has the message, nothing waits in the buffer, and nobody asks for more)
        if (taken) yield* settle
        yield* peer.send(0x8, closeBody(1000, "bye"))
        yield* settle
        const answer = yield* Effect.forkChild(peer.nextFrame())
        yield* TestClock.adjust("999 millis")
        yield* settle
        assert.isUndefined(answer.pollUnsafe(), `the answer waits for the consumer (taken: ${taken})`)
        yield* TestClock.adjust("1 millis")
        yield* settle
        const f = yield* Fiber.join(answer)
        assert.deepStrictEqual([f.opcode, closeCodeOf(f)], [0x8, 1000])
      }
      // a close timeout shorter than a second bounds the wait
      const { connection, peer } = yield* rawConnection("server", { connection: { closeTimeout: "300 millis" } })
      yield* Effect.forkChild(Stream.runForEach(connection.messages, () => Effect.never))
      yield* settle
      yield* peer.send(0x1, "a")
      yield* peer.send(0x8, closeBody(1000, "bye"))
      yield* settle
      const answer = yield* Effect.forkChild(peer.nextFrame())
      yield* TestClock.adjust("299 millis")
      yield* settle
      assert.isUndefined(answer.pollUnsafe(), "the answer waits for the consumer")
      yield* TestClock.adjust("1 millis")
      yield* settle
      const f = answer.pollUnsafe()
      assert.isDefined(f, "the answer went out once the close timeout passed")
      assert.deepStrictEqual(Exit.map(f!, (f) => [f.opcode, closeCodeOf(f)]), Exit.succeed([0x8, 1000]))
    }))

  it.effect("the answer to a peer's Close that waits for a busy consumer goes out as soon as that consumer stops", () =>
    Effect.gen(function*() {
      const { connection, peer } = yield* rawConnection("server", { connection: { closeTimeout: "10 seconds" } })
      const consumer = yield* Effect.forkChild(Stream.runForEach(connection.messages, () => Effect.never))
      yield* settle
      yield* peer.send(0x1, "a")
      yield* peer.send(0x8, closeBody(1000, "bye"))
      yield* settle
      const answer = yield* Effect.forkChild(peer.nextFrame())
      yield* settle
      assert.isUndefined(answer.pollUnsafe(), "the answer waits for the consumer")
      yield* Fiber.interrupt(consumer)
      yield* settle
      const f = answer.pollUnsafe()
      assert.isDefined(f, "the answer went out once the consumer stopped, not a second later")
      assert.deepStrictEqual(Exit.map(f!, (f) => [f.opcode, closeCodeOf(f)]), Exit.succeed([0x8, 1000]))
    }))

  it.effect("once our Close is out, a failed write (a ping) does not end the connection: the peer's answer still closes it cleanly", () =>
    Effect.gen(function*() {
      const { clientHandle } = yield* handles()
      const [a, b] = yield* Transport.makeMemoryPair()
      let broken = false
      // a transport whose writes fail from some point on, while its reads go on
      const transport = Transport.make({
        ...a,
        tryWrite: undefined,
        write: (buffers, owned) => broken ? Effect.fail(new Transport.TransportError({ message: "write broke" })) : a.write(buffers, owned)
      })
      const connection = yield* Connection.make(clientHandle, transport, { closeTimeout: "3 seconds" })
      yield* Effect.addFinalizer(() => connection.abort)
      const peer = new RawPeer(b, false)
      const closing = yield* Effect.forkChild(connection.close(1000))
      assert.strictEqual((yield* peer.nextFrame()).opcode, 0x8)
      yield* settle // the reader waits for the answer
      broken = true
      const pinged = yield* Effect.flip(connection.ping())
      assert.strictEqual(pinged._tag, "TransportError")
      yield* settle
      yield* peer.send(0x8, closeBody(1000, "ack"))
      yield* peer.transport.close
      assert.deepStrictEqual(yield* Fiber.join(closing), { code: 1000, reason: "ack", clean: true, initiator: "local" })
    }))
})

// ---------------------------------------------------------------------------------------------
// failures
// ---------------------------------------------------------------------------------------------

describe("Connection failures", () => {
  it.effect("a close made while the answer to the peer's Close waits for the wire reports the clean end the answer made", () =>
    Effect.gen(function*() {
      const { connection, peer } = yield* rawConnection("server", { highWaterMark: 1024 })
      // the first send fills the transport, the second waits for room, holding the wire
      yield* connection.send(new Uint8Array(2048))
      yield* Effect.forkChild(connection.send(new Uint8Array(2048)))
      yield* settle
      yield* peer.send(0x8, closeBody(1000, "bye")) // the answer waits for the wire
      yield* settle
      const closing = yield* Effect.forkChild(connection.close(4000))
      yield* settle
      assert.strictEqual((yield* peer.nextFrame()).opcode, 0x2)
      assert.strictEqual((yield* peer.nextFrame()).opcode, 0x2)
      const answer = yield* peer.nextFrame()
      assert.deepStrictEqual([answer.opcode, closeCodeOf(answer)], [0x8, 1000]) // both Close frames went
      const info = { code: 1000, reason: "bye", clean: true, initiator: "remote" }
      assert.deepStrictEqual(yield* Fiber.join(closing), info)
      assert.deepStrictEqual(yield* connection.closed, info)
    }))

  it.effect("a close made while the answer to the peer's Close waits for the consumer: the peer still initiated the close", () =>
    Effect.gen(function*() {
      const { connection, peer } = yield* rawConnection("server", { connection: { closeTimeout: "10 seconds" } })
      yield* Effect.forkChild(Stream.runForEach(connection.messages, () => Effect.never))
      yield* settle
      yield* peer.send(0x1, "a")
      yield* settle
      yield* peer.send(0x8, closeBody(1000, "bye")) // its answer waits (up to a second) for the busy consumer
      yield* settle
      const closing = yield* Effect.forkChild(connection.close(4000))
      yield* settle
      const answer = yield* peer.nextFrame()
      assert.deepStrictEqual([answer.opcode, closeCodeOf(answer)], [0x8, 4000])
      yield* TestClock.adjust("1 second")
      assert.deepStrictEqual(yield* Fiber.join(closing), { code: 1000, reason: "bye", clean: true, initiator: "remote" })
    }))

  const violations: ReadonlyArray<{
    readonly name: string
    readonly kind: "client" | "server"
    readonly bytes: () => Uint8Array
    readonly code: number
    /** The spec's FORMAT/OPERATION split: malformed bytes vs. an illegal sequence. */
    readonly error?: "InvalidProtocolFormat" | "InvalidProtocolOperation"
  }> = [
    { name: "an unmasked frame to a server", kind: "server", bytes: () => frame(0x1, "no mask"), code: 1002 },
    { name: "a masked frame to a client", kind: "client", bytes: () => frame(0x1, "masked", { mask: true }), code: 1002 },
    { name: "a frame with RSV1 set", kind: "client", bytes: () => frame(0x1, "rsv", { rsv: 4 }), code: 1002 },
    { name: "a reserved opcode", kind: "server", bytes: () => frame(0x3, "", { mask: true }), code: 1002 },
    { name: "a fragmented ping", kind: "client", bytes: () => frame(0x9, "", { fin: false }), code: 1002 },
    {
      name: "a continuation with no message",
      kind: "client",
      bytes: () => frame(0x0, "x"),
      code: 1002,
      error: "InvalidProtocolOperation"
    },
    {
      name: "invalid UTF-8 in a text frame",
      kind: "client",
      bytes: () => frame(0x1, new Uint8Array([0x61, 0xc3, 0x28])),
      code: 1007
    },
    {
      name: "invalid UTF-8 in a masked text frame",
      kind: "server",
      bytes: () => frame(0x1, new Uint8Array([0xed, 0xa0, 0x80]), { mask: true }), // a surrogate
      code: 1007
    },
    { name: "a Close with close code 1005 on the wire", kind: "client", bytes: () => frame(0x8, closeBody(1005)), code: 1002 }
  ]

  for (const v of violations) {
    const expected = v.error ?? "InvalidProtocolFormat"
    it.effect(`protocol violation: ${v.name} -> ${v.code} on the wire, ${expected}, clean: false`, () =>
      Effect.gen(function*() {
        const { connection, peer } = yield* rawConnection(v.kind)
        // a good message first: it is still delivered before the failure
        yield* peer.send(0x1, "fine")
        yield* peer.write(v.bytes())
        const close = yield* peer.nextFrame()
        assert.strictEqual(close.opcode, 0x8)
        assert.strictEqual(close.masked, v.kind === "client")
        assert.strictEqual(closeCodeOf(close), v.code)
        // then the connection cuts the transport
        assert.strictEqual(yield* peer.readFrame(), "eof")
        const { got, exit } = yield* drain(connection)
        assert.deepStrictEqual(got, ["fine"])
        const error = failureOf(exit)
        assert.strictEqual(error._tag, expected)
        assert.strictEqual((error as { readonly closeStatus?: number }).closeStatus, v.code)
        const info = yield* connection.closed
        assert.strictEqual(info.code, v.code)
        assert.strictEqual(info.clean, false)
        // sending is over
        assert.strictEqual((yield* Effect.flip(connection.send("x")))._tag, "InvalidProtocolOperation")
      }))
  }

  it.effect("a protocol violation while a send holds the wire for a peer that reads nothing ends the connection within the close timeout", () =>
    Effect.gen(function*() {
      const { connection, peer } = yield* rawConnection("server", { highWaterMark: 1024, connection: { closeTimeout: "3 seconds" } })
      // the first send fills the transport, the second waits for room, holding the wire
      yield* connection.send(new Uint8Array(2048))
      yield* Effect.forkChild(connection.send(new Uint8Array(2048)))
      yield* settle
      yield* peer.write(frame(0x1, "no mask")) // a server requires masked frames
      yield* settle
      yield* TestClock.adjust("3 seconds")
      yield* settle
      assert.isFalse(yield* isOpen(connection), "the Close that cannot go out is given up on at the close timeout")
      const info = yield* connection.closed
      assert.deepStrictEqual([info.code, info.clean, info.initiator], [1002, false, "local"])
    }))

  it.effect("a connection failed for a protocol violation reports our side as the initiator", () =>
    Effect.gen(function*() {
      const { connection, peer } = yield* rawConnection("server")
      yield* peer.write(frame(0x1, "no mask")) // a server requires masked frames
      const close = yield* peer.nextFrame()
      assert.strictEqual(closeCodeOf(close), 1002)
      const info = yield* connection.closed
      assert.deepStrictEqual([info.code, info.clean, info.initiator], [1002, false, "local"])
    }))

  it.effect("a peer's Close whose answer cannot be written ends the connection as not clean", () =>
    Effect.gen(function*() {
      const { serverHandle } = yield* handles()
      const [a, b] = yield* Transport.makeMemoryPair()
      const failing = Transport.tap(a, {
        onWrite: () => {
          throw new Error("the transport broke")
        }
      })
      const connection = yield* Connection.make(serverHandle, failing)
      yield* Effect.addFinalizer(() => connection.abort)
      const peer = new RawPeer(b, true)
      yield* peer.send(0x8, closeBody(1000, "bye"))
      const info = yield* connection.closed
      // the peer's Close came, ours never went out: not both Close frames were exchanged
      assert.deepStrictEqual(info, { code: 1000, reason: "bye", clean: false, initiator: "remote" })
    }))

  it.effect("a new data frame inside a fragmented message fails with InvalidProtocolOperation (1002)", () =>
    Effect.gen(function*() {
      const { connection, peer } = yield* rawConnection("client")
      yield* peer.send(0x1, "part", { fin: false })
      yield* peer.send(0x1, "new message")
      const close = yield* peer.nextFrame()
      assert.strictEqual(closeCodeOf(close), 1002)
      const { got, exit } = yield* drain(connection)
      assert.deepStrictEqual(got, [])
      const error = failureOf(exit)
      assert.strictEqual(error._tag, "InvalidProtocolOperation")
      assert.strictEqual((error as { readonly closeStatus?: number }).closeStatus, 1002)
      assert.strictEqual((yield* connection.closed).clean, false)
    }))

  it.effect("a message over maxMessageSize fails with 1009", () =>
    Effect.gen(function*() {
      const { connection, peer } = yield* rawConnection("client", { handle: { maxMessageSize: 1000 } })
      yield* peer.send(0x2, new Uint8Array(1001))
      const close = yield* peer.nextFrame()
      assert.strictEqual(closeCodeOf(close), 1009)
      const error = failureOf((yield* drain(connection)).exit)
      assert.strictEqual(error._tag, "InvalidProtocolFormat")
      assert.deepStrictEqual(
        { code: (yield* connection.closed).code, clean: (yield* connection.closed).clean },
        { code: 1009, clean: false }
      )
    }))

  it.effect("an abort while the consumer is behind: every message read still reaches the consumer, ahead of the end", () =>
    Effect.gen(function*() {
      const { connection, peer } = yield* rawConnection("server", { connection: { messageBuffer: 4 } })
      for (let i = 0; i < 10; i++) yield* peer.send(0x1, `m${i}`)
      // nobody takes them: four wait, the reader holds the fifth and reads no more
      yield* waitUntil(() => connection.stats.messagesIn === 5, "five messages read")
      yield* settle
      assert.strictEqual(connection.stats.messagesIn, 5)
      yield* connection.abort
      assert.strictEqual((yield* connection.closed).code, 1006)
      const { got } = yield* drain(connection)
      assert.deepStrictEqual(got, ["m0", "m1", "m2", "m3", "m4"])
      assert.strictEqual(connection.stats.messagesIn, got.length)
    }))

  it.effect("a send that waits behind a fragmented message goes out before sends made after it (every time)", () =>
    Effect.gen(function*() {
      const [client, server] = yield* Connection.makeMemoryPair()
      for (let round = 0; round < 2; round++) {
        const more = yield* Deferred.make<string>()
        const fragments = yield* Effect.forkChild(
          server.sendFragments(Stream.concat(Stream.make("first "), Stream.fromEffect(Deferred.await(more))), "text")
        )
        yield* settle
        const waiting = yield* Effect.forkChild(server.send("A"))
        yield* settle
        assert.isUndefined(waiting.pollUnsafe(), "A waits for the fragmented message")
        yield* Deferred.succeed(more, "second")
        yield* Fiber.join(fragments)
        // sends made now, by a fiber that does not yield, come after A
        for (let i = 0; i < 200; i++) yield* server.send(`B${i}`)
        yield* Fiber.join(waiting)
        const got = yield* Stream.runCollect(Stream.take(client.messages, 202))
        assert.deepStrictEqual(Array.from(got).slice(0, 3), ["first second", "A", "B0"], `round ${round}`)
        assert.deepStrictEqual(Array.from(got).slice(2), Array.from({ length: 200 }, (_, i) => `B${i}`))
      }
    }))

  it.live("after our close, a consumer that still runs gets every message the peer sent before its Close, however slow", () =>
    Effect.gen(function*() {
      const { connection, peer } = yield* rawConnection("server", { connection: { messageBuffer: 4 } })
      const sent = Array.from({ length: 40 }, (_, i) => `m${i}`)
      for (const m of sent) yield* peer.send(0x1, m)
      const got: Array<Connection.Message> = []
      // a consumer slower than the peer (as a tool printing every message is)
      const consumer = yield* Effect.forkChild(
        Stream.runForEach(connection.messages, (m) => Effect.andThen(Effect.sleep("2 millis"), Effect.sync(() => got.push(m))))
      )
      yield* waitUntil(() => got.length > 0, "the first message taken")
      const closing = yield* Effect.forkChild(connection.close(1000))
      const close = yield* Effect.timeout(peer.nextFrame(), "2 seconds")
      assert.strictEqual(close.opcode, 0x8)
      yield* peer.send(0x8, closeBody(1000))
      yield* peer.transport.close
      assert.deepStrictEqual(yield* Fiber.join(closing), { code: 1000, reason: "", clean: true, initiator: "local" })
      yield* Effect.timeout(Fiber.join(consumer), "2 seconds")
      assert.deepStrictEqual(got, sent)
    }))

  for (const messageBuffer of [4, undefined]) {
    const held = messageBuffer ?? 16 // the default
    it.live(`after our close, with no consumer running, messages beyond messageBuffer (${messageBuffer ?? "16 by default"}) are dropped and the close completes`, () =>
      Effect.gen(function*() {
        const { connection, peer } = yield* rawConnection("server", messageBuffer === undefined ? {} : { connection: { messageBuffer } })
        for (let i = 0; i < 40; i++) yield* peer.send(0x1, `m${i}`)
        // the buffer full, and one message held by the reader
        yield* waitUntil(() => connection.stats.messagesIn === held + 1, "the message buffer full")
        const closing = yield* Effect.forkChild(connection.close(1000))
        const close = yield* Effect.timeout(peer.nextFrame(), "2 seconds")
        assert.strictEqual(close.opcode, 0x8)
        yield* peer.send(0x8, closeBody(1000))
        yield* peer.transport.close
        assert.deepStrictEqual(yield* Effect.timeout(Fiber.join(closing), "2 seconds"), { code: 1000, reason: "", clean: true, initiator: "local" })
        const { got } = yield* drain(connection)
        assert.deepStrictEqual(got, Array.from({ length: held }, (_, i) => `m${i}`))
      }))
  }

  it.live("after our close, the close waits for a consumer that runs, and goes through once it stops", () =>
    Effect.gen(function*() {
      const { connection, peer } = yield* rawConnection("server", { connection: { messageBuffer: 4 } })
      for (let i = 0; i < 40; i++) yield* peer.send(0x1, `m${i}`)
      const gate = yield* Deferred.make<void>()
      // a consumer that takes one message and then waits
      const consumer = yield* Effect.forkChild(Stream.runForEach(connection.messages, () => Deferred.await(gate)))
      yield* waitUntil(() => connection.stats.messagesIn >= 5, "the message buffer full")
      const closing = yield* Effect.forkChild(connection.close(1000))
      const close = yield* Effect.timeout(peer.nextFrame(), "2 seconds")
      assert.strictEqual(close.opcode, 0x8)
      yield* peer.send(0x8, closeBody(1000))
      yield* settle
      assert.isUndefined(closing.pollUnsafe(), "the close waits for the consumer")
      yield* Fiber.interrupt(consumer)
      yield* peer.transport.close
      assert.deepStrictEqual(yield* Effect.timeout(Fiber.join(closing), "2 seconds"), { code: 1000, reason: "", clean: true, initiator: "local" })
    }))

  it.live("after our close, a consumer stuck elsewhere: the close timeout cuts, and says the messages were not taken", () =>
    Effect.gen(function*() {
      const { connection, peer } = yield* rawConnection("server", { connection: { messageBuffer: 2, closeTimeout: "200 millis" } })
      for (let i = 0; i < 10; i++) yield* peer.send(0x1, `m${i}`)
      yield* Effect.forkChild(Stream.runForEach(connection.messages, () => Effect.never))
      yield* waitUntil(() => connection.stats.messagesIn >= 3, "the message buffer full")
      const closing = yield* Effect.forkChild(connection.close(1000))
      yield* Effect.timeout(peer.nextFrame(), "2 seconds")
      yield* peer.send(0x8, closeBody(1000))
      const info = yield* Effect.timeout(Fiber.join(closing), "2 seconds")
      assert.deepStrictEqual(info, {
        code: 1006,
        reason: "the messages were not taken in time: the peer's answer to the Close was not read",
        clean: false,
        initiator: "local"
      })
    }))

  it.effect("bufferedAmount: the bytes of frames the transport holds, back to 0 once the peer reads them", () =>
    Effect.gen(function*() {
      const { connection, peer } = yield* rawConnection("server", { highWaterMark: 1000 })
      assert.strictEqual(connection.bufferedAmount, 0)
      // frames of 404 bytes: the memory transport takes writes while it holds less than 1000
      for (let i = 0; i < 3; i++) yield* connection.send(pattern(400, i))
      assert.strictEqual(connection.bufferedAmount, 3 * 404)
      const waiting = yield* Effect.forkChild(connection.send(pattern(400, 3)))
      yield* settle
      assert.isUndefined(waiting.pollUnsafe(), "the fourth send waits for room")
      assert.strictEqual(connection.bufferedAmount, 3 * 404)
      for (let i = 0; i < 4; i++) assert.deepStrictEqual((yield* peer.nextFrame()).payload, pattern(400, i))
      yield* Fiber.join(waiting)
      assert.strictEqual(connection.bufferedAmount, 0)
      // over a transport that cannot tell: 0
      const { serverHandle } = yield* handles()
      const [a] = yield* Transport.makeMemoryPair({ highWaterMark: 1000 })
      const blind = yield* Connection.make(serverHandle, Transport.make({ ...a, bufferedAmount: undefined }))
      yield* Effect.addFinalizer(() => blind.abort)
      yield* blind.send(pattern(400, 0))
      assert.strictEqual(blind.bufferedAmount, 0)
    }))

  it.effect("a message assembled from fragments never takes a buffer larger than maxMessageSize", () =>
    Effect.gen(function*() {
      const maxMessageSize = 100_000
      for (const [first, second] of [[60_000, 39_000], [70_000, 30_000], [50_001, 49_999]] as const) {
        const { connection, peer } = yield* rawConnection("client", { handle: { maxMessageSize } })
        yield* peer.send(0x2, pattern(first, 1), { fin: false })
        yield* peer.send(0x0, pattern(second, 2))
        const bytes = Option.getOrThrow(yield* Stream.runHead(connection.messages))
        assert.instanceOf(bytes, Uint8Array)
        assert.strictEqual(bytes.length, first + second)
        assert.deepStrictEqual(bytes.subarray(first), pattern(second, 2))
        assert.isAtMost(bytes.buffer.byteLength, maxMessageSize, `${first} + ${second}`)
      }
    }))

  it.effect("the transport ends without a Close: messages fail with TransportError, closed reports 1006", () =>
    Effect.gen(function*() {
      const { connection, peer } = yield* rawConnection("client")
      yield* peer.send(0x1, "one")
      yield* peer.transport.close
      const { got, exit } = yield* drain(connection)
      assert.deepStrictEqual(got, ["one"])
      const error = failureOf(exit)
      assert.strictEqual(error._tag, "TransportError")
      const info = yield* connection.closed
      assert.strictEqual(info.code, 1006)
      assert.strictEqual(info.clean, false)
      assert.strictEqual(info.initiator, "none")
      assert.strictEqual((yield* Effect.flip(connection.send("x")))._tag, "InvalidProtocolOperation")
      // close after the fact just reports how it ended
      assert.deepStrictEqual(yield* connection.close(), info)
    }))

  it.effect("the transport ends inside a frame: 1006 as well", () =>
    Effect.gen(function*() {
      const { connection, peer } = yield* rawConnection("server")
      yield* peer.write(frame(0x2, new Uint8Array(100), { mask: true }).subarray(0, 50))
      yield* peer.transport.end
      const error = failureOf((yield* drain(connection)).exit)
      assert.strictEqual(error._tag, "TransportError")
      assert.strictEqual((yield* connection.closed).code, 1006)
    }))

  it.effect("a send that fails while the reader ends the connection over a broken frame leaves the ending to it: 1002, not 1006", () =>
    Effect.gen(function*() {
      const { connection, peer } = yield* rawConnection("server")
      const gate = yield* Deferred.make<void>()
      const got: Array<Connection.Message> = []
      const consumer = yield* Effect.forkChild(
        Effect.exit(Stream.runForEach(connection.messages, (m) => Effect.andThen(Effect.sync(() => got.push(m)), Deferred.await(gate))))
      )
      yield* settle
      // a message, then an unmasked frame (1002): the reader waits for the consumer to handle the message first
      yield* peer.write(frame(0x1, "a", { mask: true }), frame(0x1, "b"))
      yield* waitUntil(() => got.length === 1, "the message taken")
      yield* settle
      // meanwhile the peer goes away, and a send fails
      yield* peer.transport.destroy!
      assert.strictEqual((yield* Effect.flip(connection.send("x")))._tag, "TransportError")
      yield* settle
      yield* Deferred.succeed(gate, undefined)
      const info = yield* connection.closed
      assert.deepStrictEqual([info.code, info.clean], [1002, false])
      assert.deepStrictEqual(got, ["a"])
      assert.strictEqual(failureOf(yield* Fiber.join(consumer))._tag, "InvalidProtocolFormat")
    }))

  it.effect("a send that fails while the consumer is behind: every message that came before the failure is still delivered", () =>
    Effect.gen(function*() {
      const { connection, peer } = yield* rawConnection("client")
      // the consumer waits: the reader fills the message buffer (16) and stops
      const gate = yield* Deferred.make<void>()
      const consumer = yield* Effect.forkChild(Effect.andThen(Deferred.await(gate), drain(connection)))
      yield* peer.write(...Array.from({ length: 100 }, (_, i) => frame(0x1, `m${i}`)))
      // the peer goes away, and a send finds it gone
      yield* peer.transport.destroy!
      assert.strictEqual((yield* Effect.flip(connection.send("x")))._tag, "TransportError")
      yield* settle
      yield* Deferred.succeed(gate, undefined)
      const { exit, got } = yield* Fiber.join(consumer)
      assert.deepStrictEqual(got, Array.from({ length: 100 }, (_, i) => `m${i}`))
      assert.strictEqual(failureOf(exit)._tag, "TransportError")
      assert.deepStrictEqual([(yield* connection.closed).code, connection.stats.messagesIn], [1006, 100])
    }))

  it.live("a peer that closes (1009) while nobody takes the messages: a send fails within about a second and the connection ends", () =>
    Effect.gen(function*() {
      const [client, server] = yield* Connection.makeMemoryPair({
        server: { maxMessageSize: 10 },
        connection: { messageBuffer: 1 }
      })
      yield* Effect.forEach(["1", "2", "3", "4", "5"], (m) => server.send(m), { discard: true })
      yield* Effect.sleep("20 millis") // the client's reader holds what its buffer takes, and waits
      yield* client.send("more than ten bytes") // the server closes with 1009, unheard
      const started = Date.now()
      let failed = false
      while (!failed && Date.now() - started < 3000) {
        failed = Exit.isFailure(yield* Effect.exit(client.send("x")))
        yield* Effect.sleep("50 millis")
      }
      assert.isTrue(failed, "a send failed")
      assert.isBelow(Date.now() - started, 2000)
      assert.isTrue(Option.isSome(yield* Effect.timeoutOption(client.closed, "1 second")), "the connection ended")
    }))

  it.effect("a send that fails while nobody takes the messages still ends the connection (1006)", () =>
    Effect.gen(function*() {
      const { connection, peer } = yield* rawConnection("client")
      yield* peer.write(...Array.from({ length: 100 }, (_, i) => frame(0x1, `m${i}`)))
      yield* settle
      yield* peer.transport.destroy!
      assert.strictEqual((yield* Effect.flip(connection.send("x")))._tag, "TransportError")
      const info = yield* connection.closed
      assert.deepStrictEqual([info.code, info.clean], [1006, false])
      // what came is there for a consumer that comes late, then the failure
      const { exit, got } = yield* drain(connection)
      assert.strictEqual(got.length, 100)
      assert.strictEqual(failureOf(exit)._tag, "TransportError")
    }))

  it.effect("a reader stopped once woken, before it offers again the message it held: the message still reaches the consumer", () =>
    Effect.gen(function*() {
      // the reader yields every `budget` steps: woken (a consumer that took, a send that found the
      // transport broken), it is aborted at each of its steps in turn
      for (const wakeUp of ["consumer", "failed send"] as const) {
        for (let budget = 3; budget <= 24; budget++) {
          yield* Effect.scoped(Effect.gen(function*() {
            const { connection, peer } = yield* rawConnection("server", { connection: { messageBuffer: 4 } }).pipe(
              Effect.provideService(Scheduler.MaxOpsBeforeYield, budget)
            )
            for (let i = 0; i < 10; i++) yield* peer.send(0x1, `m${i}`)
            yield* waitUntil(() => connection.stats.messagesIn === 5, "the reader holds a fifth message")
            yield* settle
            let got: Array<Connection.Message> = []
            if (wakeUp === "consumer") {
              got = Array.from(yield* Stream.runCollect(Stream.take(connection.messages, 2)))
            } else {
              yield* peer.transport.destroy!
              yield* Effect.exit(connection.send("x"))
            }
            yield* connection.abort
            got = got.concat((yield* drain(connection)).got)
            const counted = connection.stats.messagesIn
            assert.deepStrictEqual(got, Array.from({ length: counted }, (_, i) => `m${i}`), `${wakeUp}, yielding every ${budget} steps`)
          }))
        }
      }
    }))

  it.live("a write that fails while the reader waits for the network ends the connection, though the transport still reads", () =>
    Effect.gen(function*() {
      // a transport whose writes fail on their own (after a turn), its reads still open; also one
      // that wakes the reader early (no bytes yet): it then waits in `read`
      for (const what of ["send", "pong", "send, woken early"] as const) {
        yield* Effect.scoped(Effect.gen(function*() {
          const { serverHandle } = yield* handles()
          const [a, b] = yield* Transport.makeMemoryPair()
          let broken = false
          const failing = Transport.make({
            ...a,
            whenReadable: what === "send, woken early" ? (listener) => listener?.() : a.whenReadable,
            tryWrite: undefined,
            write: (buffers, owned) =>
              broken ? Effect.andThen(Effect.yieldNow, Effect.fail(new Transport.TransportError({ message: "refused" }))) : a.write(buffers, owned)
          })
          const connection = yield* Connection.make(serverHandle, failing)
          yield* Effect.addFinalizer(() => connection.abort)
          const peer = new RawPeer(b, true)
          const messages = yield* Effect.forkChild(drain(connection))
          yield* peer.send(0x1, "before")
          yield* waitUntil(() => connection.stats.messagesIn === 1, "the message read")
          yield* settle
          broken = true
          if (what === "pong") yield* peer.send(0x9, "p")
          else assert.strictEqual((yield* Effect.flip(connection.send("x")))._tag, "TransportError")
          const info = yield* Effect.timeoutOption(connection.closed, "2 seconds")
          assert.isTrue(Option.isSome(info), `a ${what} that failed ended the connection`)
          assert.deepStrictEqual(Option.map(info, ({ code, reason }) => [code, reason]), Option.some([1006, "refused"]))
          const { got, exit } = yield* Fiber.join(messages)
          assert.deepStrictEqual(got, ["before"])
          assert.strictEqual(failureOf(exit)._tag, "TransportError")
        }))
      }
    }))

  it.effect("abort cuts the transport without a Close (1006)", () =>
    Effect.gen(function*() {
      const { connection, peer } = yield* rawConnection("client")
      const messages = yield* Effect.forkChild(drain(connection))
      yield* connection.abort
      assert.strictEqual(yield* peer.readFrame(), "eof")
      const info = yield* connection.closed
      assert.strictEqual(info.code, 1006)
      assert.strictEqual(info.clean, false)
      assert.strictEqual(failureOf((yield* Fiber.join(messages)).exit)._tag, "TransportError")
    }))
})

// ---------------------------------------------------------------------------------------------
// keepalive
// ---------------------------------------------------------------------------------------------

describe("Connection keepalive", () => {
  const keepalive = { interval: "30 seconds", timeout: "10 seconds" } as const

  it.effect("a ping goes out every interval; a peer that never answers is cut off after the timeout", () =>
    Effect.gen(function*() {
      const { connection, peer } = yield* rawConnection("client", { connection: { keepalive } })
      const messages = yield* Effect.forkChild(drain(connection))
      yield* TestClock.adjust("29 seconds")
      yield* peer.send(0x1, "traffic before the ping does not count as an answer")
      yield* TestClock.adjust("1 second")
      const ping = yield* peer.nextFrame()
      assert.strictEqual(ping.opcode, 0x9)
      assert.isTrue(ping.masked)
      yield* TestClock.adjust("9 seconds")
      assert.isTrue(yield* isOpen(connection), "still within the timeout")
      yield* TestClock.adjust("1 second")
      const info = yield* connection.closed
      assert.strictEqual(info.code, 1006)
      assert.strictEqual(info.clean, false)
      const { got, exit } = yield* Fiber.join(messages)
      assert.strictEqual(got.length, 1)
      assert.strictEqual(failureOf(exit)._tag, "TransportError")
      assert.strictEqual(yield* peer.readFrame(), "eof")
    }))

  it.effect("a peer that never answers is cut off (the transport destroyed at once), not closed gracefully", () =>
    Effect.gen(function*() {
      const { clientHandle } = yield* handles()
      const [a] = yield* Transport.makeMemoryPair()
      let destroyed = 0
      // (a graceful close of the transport never completes: a frozen peer's socket flushes nothing)
      const counting = Transport.make({ ...a, close: Effect.never, destroy: Effect.andThen(Effect.sync(() => destroyed++), a.destroy!) })
      const connection = yield* Connection.make(clientHandle, counting, { keepalive })
      yield* Effect.addFinalizer(() => connection.abort)
      yield* TestClock.adjust("40 seconds")
      yield* settle
      assert.isFalse(yield* isOpen(connection), "ended at the timeout, not a close timeout later")
      const info = yield* connection.closed
      assert.deepStrictEqual([info.code, info.clean], [1006, false])
      assert.strictEqual(destroyed, 1)
    }))

  it.effect("an answer that arrives a byte at a time counts as an answer", () =>
    Effect.gen(function*() {
      const { connection, peer } = yield* rawConnection("client", { connection: { keepalive } })
      yield* TestClock.adjust("30 seconds")
      const ping = yield* peer.nextFrame()
      assert.strictEqual(ping.opcode, 0x9)
      const pong = frame(0xa, "")
      for (let i = 0; i < pong.length; i++) {
        yield* peer.write(pong.subarray(i, i + 1))
        yield* settle
      }
      assert.strictEqual(connection.stats.pongsIn, 1)
      yield* TestClock.adjust("10 seconds")
      assert.isTrue(yield* isOpen(connection), "the peer answered within the timeout")
    }))

  it.effect("any traffic after the ping counts as an answer", () =>
    Effect.gen(function*() {
      const { connection, peer } = yield* rawConnection("server", { connection: { keepalive } })
      yield* TestClock.adjust("30 seconds")
      const ping = yield* peer.nextFrame()
      assert.strictEqual(ping.opcode, 0x9)
      assert.isFalse(ping.masked)
      yield* TestClock.adjust("5 seconds")
      yield* peer.send(0x2, new Uint8Array([1]))
      yield* TestClock.adjust("5 seconds")
      assert.isTrue(yield* isOpen(connection))
      // the next interval pings again
      yield* TestClock.adjust("30 seconds")
      assert.strictEqual((yield* peer.nextFrame()).opcode, 0x9)
    }))

  it.effect("with an answering peer the connection stays open across several intervals", () =>
    Effect.gen(function*() {
      const [client, server] = yield* Connection.makeMemoryPair({ connection: { keepalive } })
      for (let round = 1; round <= 4; round++) {
        yield* TestClock.adjust("30 seconds")
        yield* waitUntil(() => client.stats.pongsIn >= round && server.stats.pongsIn >= round, `pongs of round ${round}`)
        yield* TestClock.adjust("10 seconds")
        assert.isTrue(yield* isOpen(client), `client open after round ${round}`)
        assert.isTrue(yield* isOpen(server), `server open after round ${round}`)
      }
      yield* client.send("still alive")
      assert.deepStrictEqual(yield* Stream.runCollect(Stream.take(server.messages, 1)), ["still alive"])
      assert.strictEqual((yield* client.close()).clean, true)
    }))

  it.effect("frame: \"pong\" sends unsolicited pongs and expects no answer", () =>
    Effect.gen(function*() {
      const { connection, peer } = yield* rawConnection("client", {
        connection: { keepalive: { ...keepalive, frame: "pong" } }
      })
      for (let round = 0; round < 3; round++) {
        yield* TestClock.adjust("30 seconds")
        const pong = yield* peer.nextFrame()
        assert.strictEqual(pong.opcode, 0xa)
        assert.strictEqual(pong.payload.length, 0)
      }
      yield* TestClock.adjust("20 seconds")
      assert.isTrue(yield* isOpen(connection), "a silent peer is fine with pongs")
    }))

  it.effect("a dead peer is cut off after the timeout even when a send waits for it and holds the wire", () =>
    Effect.gen(function*() {
      // the peer neither reads nor sends: this send fills the transport and waits for room
      const { connection } = yield* rawConnection("client", { connection: { keepalive }, highWaterMark: 1024 })
      const sending = yield* Effect.forkChild(connection.send(new Uint8Array(256 * 1024)))
      yield* settle
      assert.isUndefined(sending.pollUnsafe(), "the send waits for the peer")
      // the ping cannot go out: past the timeout after it was due, the peer counts as gone
      yield* TestClock.adjust("30 seconds")
      yield* TestClock.adjust("10 seconds")
      const info = yield* connection.closed
      assert.deepStrictEqual([info.code, info.clean], [1006, false])
      assert.include(info.reason, "no answer from the peer")
      assert.isTrue(Exit.isFailure(yield* Fiber.await(sending)), "the waiting send fails")
    }))

  it.effect("a peer that sends but reads nothing is alive for keepalive, though a send waits for it (a send is bounded with Effect.timeout)", () =>
    Effect.gen(function*() {
      const { connection, peer } = yield* rawConnection("client", { connection: { keepalive }, highWaterMark: 1024 })
      const got: Array<Connection.Message> = []
      yield* Effect.forkChild(Stream.runForEach(connection.messages, (m) => Effect.sync(() => got.push(m))))
      const sending = yield* Effect.forkChild(connection.send(new Uint8Array(256 * 1024)))
      yield* settle
      // a message every 5 seconds, nothing read: the ping due at 30 seconds never goes out
      for (let i = 0; i < 16; i++) {
        yield* peer.send(0x1, `m${i}`)
        yield* settle
        yield* TestClock.adjust("5 seconds")
      }
      assert.isTrue(yield* isOpen(connection), "a peer that sends is not cut off")
      assert.strictEqual(got.length, 16)
      assert.isUndefined(sending.pollUnsafe(), "the send still waits for it")
      const bounded = yield* Effect.flip(Effect.timeout(connection.send("later"), "1 second").pipe(Effect.forkChild, Effect.tap(() => TestClock.adjust("1 second")), Effect.flatMap(Fiber.join)))
      assert.strictEqual(bounded._tag, "TimeoutError")
    }))

  it.effect("a consumer that is behind is not a dead peer: nothing is read meanwhile, and nothing is lost", () =>
    Effect.gen(function*() {
      const { connection, peer } = yield* rawConnection("client", { connection: { keepalive, messageBuffer: 2 } })
      // more messages than the buffer holds, and nobody reads them yet
      for (let i = 0; i < 10; i++) yield* peer.send(0x1, `m${i}`)
      yield* settle
      yield* TestClock.adjust("30 seconds")
      yield* TestClock.adjust("10 seconds")
      yield* TestClock.adjust("40 seconds")
      assert.isTrue(yield* isOpen(connection), "the connection stays open while its consumer is behind")
      const got = yield* Stream.runCollect(Stream.take(connection.messages, 10))
      assert.deepStrictEqual(got, Array.from({ length: 10 }, (_, i) => `m${i}`))
    }))

  it.effect("a peer that reads a large send slowly is not cut off, though the ping waits behind the send", () =>
    Effect.gen(function*() {
      // the transport holds 1 KiB: each part of the message waits until the peer read the one before
      const { connection, peer } = yield* rawConnection("client", { connection: { keepalive }, highWaterMark: 1024 })
      const size = 640 * 1024
      const message = pattern(size, 5)
      const sending = yield* Effect.forkChild(Effect.exit(connection.send(message)))
      yield* settle
      // a masked client frame: 10 bytes of header, 4 of mask key, then the payload
      const frameLength = 14 + size
      const received = new Uint8Array(frameLength)
      let got = 0
      // 64 KiB every 5 seconds: the ping due at 30 seconds waits for the wire past its timeout
      while (got < frameLength) {
        yield* TestClock.adjust("5 seconds")
        const n = yield* peer.transport.read(received.subarray(got, Math.min(frameLength, got + 64 * 1024)))
        if (n === 0) break
        got += n
        yield* settle
      }
      assert.isTrue(Exit.isSuccess(yield* Fiber.join(sending)), "the send went out whole")
      assert.isTrue(yield* isOpen(connection), "a peer that takes our bytes is alive")
      assert.strictEqual(got, frameLength)
      let same = true
      for (let i = 0; i < size; i++) {
        if ((received[14 + i]! ^ received[10 + (i & 3)]!) !== message[i]) same = false
      }
      assert.isTrue(same, "the peer read the message whole")
    }))

  it.effect("while the message buffer is full a silent peer is not judged (also when the ping cannot even go out, behind a send); once messages are taken it is cut off", () =>
    Effect.gen(function*() {
      for (const sendWaits of [false, true]) {
        const { connection, peer } = yield* rawConnection("client", {
          connection: { keepalive, messageBuffer: 2 },
          highWaterMark: 1024
        })
        for (let i = 0; i < 10; i++) yield* peer.send(0x1, `m${i}`)
        // then the peer goes silent: it neither answers pings nor sends anything (nor reads: a send waits)
        if (sendWaits) yield* Effect.forkChild(connection.send(new Uint8Array(256 * 1024)))
        yield* settle
        for (let round = 0; round < 5; round++) yield* TestClock.adjust("40 seconds")
        assert.isTrue(yield* isOpen(connection), `no judgement while the connection reads nothing (send waits: ${sendWaits})`)
        const got = yield* Stream.runCollect(Stream.take(connection.messages, 10))
        assert.strictEqual(got.length, 10)
        // reading resumed: the round in progress counts as answered, the next one judges the peer
        yield* TestClock.adjust("40 seconds")
        yield* TestClock.adjust("40 seconds")
        const info = yield* connection.closed
        assert.deepStrictEqual([info.code, info.clean], [1006, false])
        assert.include(info.reason, "no answer from the peer")
      }
    }))

  it.effect("a round during which the reader waited for the consumer counts as answered, though the peer sent nothing more (its answer may have waited unread)", () =>
    Effect.gen(function*() {
      const { connection, peer } = yield* rawConnection("client", { connection: { keepalive, messageBuffer: 2 } })
      // two messages fill the buffer, the reader holds the third: it has read everything the peer sent
      for (let i = 0; i < 3; i++) yield* peer.send(0x1, `m${i}`)
      yield* settle
      yield* TestClock.adjust("30 seconds")
      assert.strictEqual((yield* peer.nextFrame()).opcode, 0x9)
      yield* TestClock.adjust("5 seconds")
      assert.strictEqual((yield* Stream.runCollect(Stream.take(connection.messages, 3))).length, 3)
      yield* TestClock.adjust("5 seconds")
      assert.isTrue(yield* isOpen(connection), "the round the reader waited in is not held against the peer")
      // the next round judges the silent peer
      yield* TestClock.adjust("30 seconds")
      assert.strictEqual((yield* peer.nextFrame()).opcode, 0x9)
      yield* TestClock.adjust("10 seconds")
      const info = yield* connection.closed
      assert.deepStrictEqual([info.code, info.clean], [1006, false])
    }))

  it.effect("a close that starts while a ping waits for its answer is left to its own timeout: the peer is not cut off as dead", () =>
    Effect.gen(function*() {
      const { connection, peer } = yield* rawConnection("client", { connection: { keepalive, closeTimeout: "60 seconds" } })
      yield* TestClock.adjust("30 seconds")
      assert.strictEqual((yield* peer.nextFrame()).opcode, 0x9)
      const closing = yield* Effect.forkChild(connection.close())
      assert.strictEqual((yield* peer.nextFrame()).opcode, 0x8)
      // the ping's timeout passes without a sign of the peer
      yield* TestClock.adjust("15 seconds")
      yield* peer.send(0x8, closeBody(1000))
      yield* peer.transport.end
      assert.deepStrictEqual(yield* Fiber.join(closing), { code: 1000, reason: "", clean: true, initiator: "local" })
    }))

  it.effect("no keepalive frame once the connection is closing", () =>
    Effect.gen(function*() {
      const { connection, peer } = yield* rawConnection("client", { connection: { keepalive, closeTimeout: "60 seconds" } })
      const closing = yield* Effect.forkChild(connection.close())
      assert.strictEqual((yield* peer.nextFrame()).opcode, 0x8)
      yield* TestClock.adjust("45 seconds")
      yield* peer.send(0x8, closeBody(1000))
      // half-close only, so that whatever the connection wrote can still be read
      yield* peer.transport.end
      assert.strictEqual((yield* Fiber.join(closing)).clean, true)
      // nothing but the Close was written, although an interval went by
      assert.strictEqual(yield* peer.readFrame(), "eof")
    }))
})

// ---------------------------------------------------------------------------------------------
// backpressure and interruption
// ---------------------------------------------------------------------------------------------

describe("Connection backpressure", () => {
  it.effect("a consumer that does not read stops the sender; reading resumes everything", () =>
    Effect.gen(function*() {
      const messageBuffer = 16
      const size = 64 * 1024
      const count = 1000
      const [client, server] = yield* Connection.makeMemoryPair({ connection: { messageBuffer } })
      const message = (i: number) => {
        const bytes = new Uint8Array(size).fill(i & 0xff)
        bytes[0] = i >>> 8
        return bytes
      }
      let sent = 0
      const sender = yield* Effect.forkChild(Effect.gen(function*() {
        for (let i = 0; i < count; i++) {
          yield* server.send(message(i))
          sent++
        }
      }))
      yield* waitUntil(() => sent >= messageBuffer, "the message buffer to fill")
      yield* settle
      const stalled = sent
      yield* settle
      assert.strictEqual(sent, stalled, "the sender is stuck")
      assert.isUndefined(sender.pollUnsafe())
      // the message buffer, the one message waiting for room, and a transport buffer or two
      assert.isBelow(sent, messageBuffer + 6)
      let received = 0
      yield* Stream.runForEach(Stream.take(client.messages, count), (m) =>
        Effect.sync(() => {
          const bytes = m as Uint8Array
          assert.strictEqual(bytes.length, size)
          assert.strictEqual(bytes[0], received >>> 8)
          assert.strictEqual(bytes[size - 1], received & 0xff)
          received++
        }))
      yield* Fiber.join(sender)
      assert.strictEqual(received, count)
      assert.strictEqual(client.stats.messagesIn, count)
    }))

  it.effect("a local close completes cleanly even while unread messages fill the buffer", () =>
    Effect.gen(function*() {
      const [client, server] = yield* Connection.makeMemoryPair({ connection: { messageBuffer: 4 } })
      const sender = yield* Effect.forkChild(Effect.ignore(Effect.forEach(Array.from({ length: 50 }, (_, i) => i), (i) => server.send(`m${i}`))))
      yield* settle
      const serverMessages = yield* Effect.forkChild(Stream.runDrain(server.messages))
      const info = yield* client.close(1000, "enough")
      assert.deepStrictEqual(info, { code: 1000, reason: "enough", clean: true, initiator: "local" })
      assert.strictEqual((yield* server.closed).code, 1000)
      yield* Fiber.join(serverMessages)
      yield* Fiber.interrupt(sender)
    }))

  it.effect("an echo handler answers every message that came before the peer's Close (also with sendFragments)", () =>
    Effect.gen(function*() {
      for (const fragmented of [false, true]) {
        const [client, server] = yield* Connection.makeMemoryPair()
        const echo = yield* Effect.forkChild(Effect.exit(Stream.runForEach(server.messages, (m) =>
          fragmented
            ? server.sendFragments(Stream.make(m as string, "!").pipe(Stream.tap(() => Effect.yieldNow)), "text")
            : server.send(m))))
        yield* settle // the handler runs before the messages arrive, as in a server
        for (const m of ["a", "b", "c"]) yield* client.send(m)
        const info = yield* client.close(1000)
        assert.isTrue(info.clean)
        assert.deepStrictEqual(yield* Stream.runCollect(client.messages), fragmented ? ["a!", "b!", "c!"] : ["a", "b", "c"])
        assert.strictEqual((yield* Fiber.join(echo))._tag, "Success")
      }
    }))

  for (const ending of ["a broken frame", "the end of the peer's side"] as const) {
    it.effect(`an echo handler answers every message that came before ${ending}`, () =>
      Effect.gen(function*() {
        const { connection, peer } = yield* rawConnection("server")
        const echo = yield* Effect.forkChild(Effect.exit(Stream.runForEach(connection.messages, (m) => connection.send(m))))
        yield* settle // the handler runs before the messages arrive, as in a server
        // everything arrives at once, so the reader meets the ending before the handler runs
        yield* peer.transport.write([
          frame(0x1, "a", { mask: true }),
          frame(0x2, new Uint8Array([1, 2]), { mask: true }),
          ending === "a broken frame" ? frame(0x0, "x", { mask: true }) : new Uint8Array(0)
        ])
        if (ending !== "a broken frame") yield* peer.transport.end
        assert.strictEqual(new TextDecoder().decode((yield* peer.nextFrame()).payload), "a")
        assert.deepStrictEqual((yield* peer.nextFrame()).payload, new Uint8Array([1, 2]))
        if (ending === "a broken frame") assert.strictEqual(closeCodeOf(yield* peer.nextFrame()), 1002)
        assert.strictEqual(yield* peer.readFrame(), "eof")
        assert.strictEqual((yield* connection.closed).code, ending === "a broken frame" ? 1002 : 1006)
        assert.strictEqual((yield* Fiber.join(echo))._tag, "Failure")
      }))
  }

  it.effect("a reader stopped by a full buffer reads again once the buffer is half empty, not at every message taken", () =>
    Effect.gen(function*() {
      const { connection, peer } = yield* rawConnection("server", { connection: { messageBuffer: 4 } })
      for (let i = 0; i < 20; i++) yield* peer.send(0x1, `m${i}`)
      yield* settle
      // four wait in the buffer, the reader holds the fifth
      assert.strictEqual(connection.stats.messagesIn, 5)
      const pull = yield* Stream.toPull(connection.messages)
      yield* pull
      yield* settle
      assert.strictEqual(connection.stats.messagesIn, 5, "three left: the reader still waits")
      yield* pull
      yield* settle
      // two left: the reader offers the one it held and reads until the buffer is full again
      assert.strictEqual(connection.stats.messagesIn, 7)
    }))

  it.effect("send waits while the peer does not read", () =>
    Effect.gen(function*() {
      const { connection, peer } = yield* rawConnection("client", { highWaterMark: 4096 })
      const sender = yield* Effect.forkChild(connection.send(pattern(64 * 1024, 3)))
      yield* settle
      assert.isUndefined(sender.pollUnsafe())
      const f = yield* peer.nextFrame()
      yield* Fiber.join(sender)
      assert.isTrue(Buffer.from(f.payload).equals(Buffer.from(pattern(64 * 1024, 3))))
    }))
})

describe("Connection payloads whose memory changes size while they are sent (a length-tracking view of a resizable buffer)", () => {
  /** Reads whatever `transport` gets, until interrupted; `read.total` is how many bytes. */
  const readAll = (transport: Transport.Transport, read: { total: number }) =>
    Effect.gen(function*() {
      const scratch = new Uint8Array(4096)
      for (;;) {
        const n = yield* transport.read(scratch)
        if (n === 0) return
        read.total += n
      }
    })

  it.effect("a client's large message written in pieces, its buffer shrunk meanwhile: the send fails with a typed error, the frame is cut, later sends are refused, and close ends", () =>
    Effect.gen(function*() {
      const { connection, peer } = yield* rawConnection("client", { connection: { closeTimeout: "2 seconds" }, highWaterMark: 1024 })
      const length = 64 * 1024
      const buffer = new ArrayBuffer(length, { maxByteLength: length })
      const payload = new Uint8Array(buffer).fill(3)
      const sender = yield* Effect.forkChild(Effect.exit(connection.send(payload)))
      yield* settle
      assert.isUndefined(sender.pollUnsafe(), "the send waits for a peer that does not read")
      buffer.resize(100) // the caller breaks the contract while its message is being written
      const read = { total: 0 }
      const reader = yield* Effect.forkChild(readAll(peer.transport, read))
      const exit = yield* Fiber.join(sender)
      const error = failureOf(exit)
      assert.strictEqual(error._tag, "InvalidProtocolOperation")
      assert.match(error.message, /shrunk/)
      yield* settle
      assert.isAbove(read.total, 0, "part of the frame went out")
      assert.isBelow(read.total, length, "the frame is cut: the rest of its payload is gone")
      const later = yield* Effect.flip(connection.send("next"))
      assert.strictEqual(later._tag, "InvalidProtocolOperation")
      const closing = yield* Effect.forkChild(connection.close())
      yield* TestClock.adjust("2 seconds")
      const info = yield* Fiber.join(closing)
      assert.isFalse(info.clean)
      yield* Fiber.interrupt(reader)
    }))

  it.effect("a client's large message written in pieces, its buffer grown meanwhile: its frame carries the bytes declared, the next message follows", () =>
    Effect.gen(function*() {
      const { connection, peer } = yield* rawConnection("client", { highWaterMark: 1024 })
      const length = 64 * 1024
      const buffer = new ArrayBuffer(length, { maxByteLength: 2 * length })
      const payload = new Uint8Array(buffer)
      payload.set(pattern(length, 5))
      const sender = yield* Effect.forkChild(connection.send(payload))
      yield* settle
      assert.isUndefined(sender.pollUnsafe(), "the send waits for a peer that does not read")
      buffer.resize(2 * length)
      new Uint8Array(buffer).fill(0xff, length)
      const got = yield* peer.nextFrame()
      yield* Fiber.join(sender)
      assert.strictEqual(got.payload.length, length)
      assert.isTrue(Buffer.from(got.payload).equals(Buffer.from(pattern(length, 5))))
      yield* connection.send("next")
      const next = yield* peer.nextFrame()
      assert.deepStrictEqual([next.opcode, decoder.decode(next.payload)], [0x1, "next"])
    }))

  /** Everything `transport` holds or gets while the other side runs, without waiting for more. */
  const readAvailable = (transport: Transport.Transport) =>
    Effect.gen(function*() {
      const parts: Array<Uint8Array> = []
      const scratch = new Uint8Array(65536)
      for (let idle = 0; idle < 2;) {
        const n = transport.tryRead!(scratch)
        if (n > 0) {
          parts.push(scratch.slice(0, n))
          idle = 0
        } else {
          idle++
          yield* settle
        }
      }
      return Buffer.concat(parts)
    })

  it.effect("a server's message, its buffer (resizable or growable shared) grown while its write waits or once its send is done (the transport keeps an owned buffer): the frame carries exactly the bytes its header declares", () =>
    Effect.gen(function*() {
      for (const [kind, when] of ["ArrayBuffer", "SharedArrayBuffer"].flatMap((kind) => (["while the write waits", "once the send is done"] as const).map((when) => [kind, when] as const))) {
        const { connection, peer } = yield* rawConnection("server", { highWaterMark: when === "while the write waits" ? 1024 : 1 << 20 })
        const filler = new Uint8Array(2048).fill(1)
        if (when === "while the write waits") yield* connection.send(filler) // fills the transport
        const length = 5000
        const buffer = kind === "ArrayBuffer"
          ? new ArrayBuffer(length, { maxByteLength: 2 * length })
          : new SharedArrayBuffer(length, { maxByteLength: 2 * length })
        const payload = new Uint8Array(buffer)
        payload.set(pattern(length, 7))
        const sender = yield* Effect.forkChild(connection.send(payload))
        yield* settle
        assert.strictEqual(sender.pollUnsafe() === undefined, when === "while the write waits", when)
        // (growing the buffer once its send completed is the caller's right)
        if (buffer instanceof ArrayBuffer) buffer.resize(2 * length)
        else buffer.grow(2 * length)
        new Uint8Array(buffer).fill(0xff, length)
        const before = yield* readAvailable(peer.transport)
        yield* Fiber.join(sender)
        yield* connection.send("next")
        const wire = Buffer.concat([before, yield* readAvailable(peer.transport)])
        const expected = Buffer.concat([
          ...(when === "while the write waits" ? [frame(0x2, filler)] : []),
          frame(0x2, pattern(length, 7)),
          frame(0x1, "next")
        ])
        assert.strictEqual(wire.length, expected.length, `${kind} ${when}: no byte past the frame its header declares`)
        assert.isTrue(wire.equals(expected), `${kind} ${when}`)
      }
    }))
})

describe("Connection interruption", () => {
  it.effect("interrupting a send blocked by a peer that does not read leaves the connection closable", () =>
    Effect.gen(function*() {
      const { connection, peer } = yield* rawConnection("client", { connection: { closeTimeout: "2 seconds" } })
      const sender = yield* Effect.forkChild(connection.send(new Uint8Array(1024 * 1024)))
      yield* settle
      assert.isUndefined(sender.pollUnsafe())
      yield* Fiber.interrupt(sender)
      // part of the frame is on the wire: no more frames can follow it
      const error = yield* Effect.flip(connection.send("next"))
      assert.strictEqual(error._tag, "InvalidProtocolOperation")
      const closing = yield* Effect.forkChild(connection.close())
      yield* TestClock.adjust("2 seconds")
      const info = yield* Fiber.join(closing)
      assert.strictEqual(info.clean, false)
      assert.strictEqual(info.code, 1006)
      // what the peer reads is the partial frame, then the end
      assert.isBelow(yield* bytesUntilEnd(peer.transport), 1024 * 1024)
    }))

  it.effect("a transport of the user's that breaks its contract ends the connection with 1006 and a TransportError that says how, at once", () =>
    Effect.gen(function*() {
      /** A server connection over the memory transport with its reads replaced, and what it ended with. */
      const endedWithReads = (reads: (a: Transport.Transport) => Partial<Transport.Transport>) =>
        Effect.scoped(Effect.gen(function*() {
          const [a, b] = yield* Transport.makeMemoryPair()
          const { serverHandle } = yield* handles()
          const connection = yield* Connection.make(serverHandle, Transport.make({ ...a, ...reads(a) }))
          const peer = new RawPeer(b, true)
          yield* Effect.ignore(peer.send(0x1, encoder.encode("hello")))
          const { exit } = yield* drain(connection)
          const error = failureOf(exit)
          const info = yield* connection.closed
          return [info.code, info.clean, error._tag, error.message, error._tag === "TransportError" ? String(error.cause) : ""]
        }))
      const endedWith = (read: (buffer: Uint8Array) => Effect.Effect<number, Transport.TransportError>) =>
        endedWithReads(() => ({ read, tryRead: undefined, whenReadable: undefined }))
      assert.deepStrictEqual(
        yield* endedWith(() => {
          throw new Error("a bug in read")
        }),
        [1006, false, "TransportError", "read failed", "Error: a bug in read"]
      )
      assert.deepStrictEqual(
        yield* endedWith((buffer) => Effect.succeed(buffer.length + 1)),
        [1006, false, "TransportError", "read returned 4093, not a byte count from 0 to 4092", "undefined"]
      )
      assert.deepStrictEqual(
        yield* endedWith(() => Effect.fail("not a TransportError" as never)),
        [1006, false, "TransportError", "read failed", "not a TransportError"]
      )
      // a tryRead that takes the bytes and then says none came (-1 is "none yet"), or more than fit
      for (const [count, shown] of [[-2, "-2"], [NaN, "NaN"], [1e9, "1000000000"], [1.5, "1.5"]] as const) {
        assert.deepStrictEqual(
          yield* endedWithReads((a) => ({
            tryRead: (buffer) => a.tryRead!(buffer) > 0 ? count : -1
          })),
          [1006, false, "TransportError", `tryRead returned ${shown}, not a byte count from 0 to 4092 (or -1)`, "undefined"]
        )
      }
    }))

  it.effect("a transport close that never completes (or dies) holds the connection's end no longer than the close timeout", () =>
    Effect.gen(function*() {
      for (const close of [Effect.never, Effect.die(new Error("a bug in close"))]) {
        let destroyed = 0
        const [client, server] = yield* Effect.gen(function*() {
          const [a, b] = yield* Transport.makeMemoryPair()
          const { clientHandle, serverHandle } = yield* handles()
          const destroy = Effect.andThen(Effect.sync(() => destroyed++), a.destroy!)
          return [
            yield* Connection.make(clientHandle, Transport.make({ ...a, close, destroy }), { closeTimeout: "1 second" }),
            yield* Connection.make(serverHandle, b)
          ] as const
        })
        const closed = yield* Effect.forkChild(client.closed)
        yield* server.close(1000)
        yield* TestClock.adjust("1 second")
        assert.deepStrictEqual(yield* Fiber.join(closed), { code: 1000, reason: "", clean: true, initiator: "remote" })
        // a close that did not complete in time is followed by a cut; one that died is done with
        yield* settle
        assert.strictEqual(destroyed, close === Effect.never ? 1 : 0)
      }
    }))

  it.effect("close after a send was cut mid-frame ends the transport gracefully: every send reported done reaches the peer", () =>
    Effect.gen(function*() {
      // a transport whose `destroy` drops what the peer has not read yet, as a socket's reset does
      const [a, b] = yield* Transport.makeMemoryPair({ highWaterMark: 100 * 1024 })
      let destroyed = false
      const transport = Transport.make({
        ...a,
        destroy: Effect.andThen(Effect.sync(() => {
          destroyed = true
        }), a.destroy ?? a.close)
      })
      const peerTransport = Transport.make({
        ...b,
        read: (buffer) => Effect.suspend(() => destroyed ? Effect.succeed(0) : b.read(buffer)),
        tryRead: undefined,
        whenReadable: undefined
      })
      const { clientHandle } = yield* handles()
      const connection = yield* Connection.make(clientHandle, transport, { closeTimeout: "2 seconds" })
      yield* Effect.addFinalizer(() => connection.abort)
      const peer = new RawPeer(peerTransport, false)
      // reported sent, but still in the transport: the peer has not read it yet
      const first = pattern(50 * 1024, 1)
      yield* connection.send(first)
      // the first part of this one fills the transport, the rest waits: interrupted, its frame stays cut
      const cutShort = yield* Effect.forkChild(connection.send(new Uint8Array(1024 * 1024)))
      yield* settle
      assert.isUndefined(cutShort.pollUnsafe(), "the second send waits for the peer")
      yield* Fiber.interrupt(cutShort)
      const closing = yield* Effect.forkChild(connection.close())
      yield* settle
      const f = yield* peer.nextFrame()
      assert.isTrue(Buffer.from(f.payload).equals(Buffer.from(first)), "the message reported sent arrives whole")
      // then the part of the cut frame, and the end of the connection's side
      const rest = yield* bytesUntilEnd(peer.transport)
      assert.isAbove(rest, 0)
      assert.isBelow(rest, 1024 * 1024)
      yield* settle
      assert.isUndefined(closing.pollUnsafe(), "the close waits for the peer to end its side")
      // the peer ends its side in turn: the connection is done, before its close timeout
      yield* peer.transport.end
      const info = yield* Fiber.join(closing)
      assert.deepStrictEqual([info.code, info.clean, info.initiator], [1006, false, "local"])
      assert.include(info.reason, "partly written")
      assert.isFalse(destroyed, "the transport was closed, not cut")
    }))

  it.effect("a send waiting behind another send can be interrupted without harm", () =>
    Effect.gen(function*() {
      const { connection, peer } = yield* rawConnection("client", { highWaterMark: 1024 })
      const big = pattern(256 * 1024, 1)
      const first = yield* Effect.forkChild(connection.send(big))
      yield* settle
      assert.isUndefined(first.pollUnsafe(), "the first send waits for the peer")
      const second = yield* Effect.forkChild(connection.send("interrupted before it started"))
      yield* settle
      yield* Fiber.interrupt(second)
      const third = yield* Effect.forkChild(connection.send("third"))
      const f1 = yield* peer.nextFrame()
      const f2 = yield* peer.nextFrame()
      yield* Fiber.join(first)
      yield* Fiber.join(third)
      assert.strictEqual(f1.opcode, 0x2)
      assert.isTrue(Buffer.from(f1.payload).equals(Buffer.from(big)))
      assert.strictEqual(f2.opcode, 0x1)
      assert.strictEqual(decoder.decode(f2.payload), "third")
    }))

  it.effect("close while a send is blocked by a peer that does not read completes within the close timeout", () =>
    Effect.gen(function*() {
      const { connection } = yield* rawConnection("client", { connection: { closeTimeout: "2 seconds" } })
      const sender = yield* Effect.forkChild(connection.send(new Uint8Array(1024 * 1024)))
      yield* settle
      const closing = yield* Effect.forkChild(connection.close())
      yield* TestClock.adjust("2 seconds")
      yield* settle
      assert.isDefined(closing.pollUnsafe(), "close is done")
      const info = yield* Fiber.join(closing)
      assert.strictEqual(info.clean, false)
      // the blocked send fails instead of waiting forever
      const exit = yield* Fiber.await(sender)
      assert.isTrue(Exit.isFailure(exit))
    }))

  it.effect("interrupting the consumer of messages does not break the connection", () =>
    Effect.gen(function*() {
      const [client, server] = yield* Connection.makeMemoryPair()
      const got: Array<Connection.Message> = []
      const consumer = yield* Effect.forkChild(Stream.runForEach(client.messages, (m) => Effect.sync(() => got.push(m))))
      yield* server.send("a")
      yield* waitUntil(() => got.length === 1, "the first message")
      yield* Fiber.interrupt(consumer)
      yield* server.send("b")
      yield* server.send("c")
      assert.deepStrictEqual(yield* Stream.runCollect(Stream.take(client.messages, 2)), ["b", "c"])
      assert.deepStrictEqual(got, ["a"])
      assert.strictEqual((yield* client.close()).clean, true)
    }))

  it.effect("a reader that yields as it starts to wait for the consumer is still woken when the consumer empties the buffer meanwhile", () =>
    Effect.gen(function*() {
      // every fiber of the pair yields every `budget` steps: the reader, refused by a full buffer,
      // may yield before it waits, while the consumer takes every message (and finds no one to wake)
      for (const messageBuffer of [1, 4, 16]) {
        for (let budget = 3; budget <= 12; budget++) {
          yield* Effect.scoped(Effect.gen(function*() {
            const [client, server] = yield* Connection.makeMemoryPair({ connection: { messageBuffer } }).pipe(
              Effect.provideService(Scheduler.MaxOpsBeforeYield, budget)
            )
            const expected = Array.from({ length: 3 * messageBuffer + 20 }, (_, i) => `m${i}`)
            yield* Effect.forkChild(Effect.forEach(expected, (m) => client.send(m), { discard: true }))
            const consumer = yield* Effect.forkChild(Stream.runCollect(Stream.take(server.messages, expected.length)))
            const at = `messageBuffer ${messageBuffer}, yielding every ${budget} steps`
            yield* waitUntil(() => consumer.pollUnsafe() !== undefined, `every message taken (${at})`)
            assert.deepStrictEqual(yield* Fiber.join(consumer), expected, at)
          }))
        }
      }
    }))

  it.effect("a consumer that yields as it starts to wait still gets a message the reader offered meanwhile, and wakes the reader", () =>
    Effect.gen(function*() {
      // every fiber of the pair yields every `budget` steps, both ways at once (an echo over a
      // transport that holds 8 bytes): the consumer, finding the buffer empty, may yield before it
      // waits while the reader offers a message (and finds no one to wake), or take that message
      // as its wait starts while the reader waits for room
      for (const messageBuffer of [1, 2]) {
        for (let budget = 3; budget <= 16; budget++) {
          yield* Effect.scoped(Effect.gen(function*() {
            const yielding = Effect.provideService(Scheduler.MaxOpsBeforeYield, budget)
            const [client, server] = yield* Connection.makeMemoryPair({ highWaterMark: 8, connection: { messageBuffer } }).pipe(yielding)
            const expected = Array.from({ length: 40 }, (_, i) => `m${i}`)
            yield* Effect.forkChild(Stream.runForEach(server.messages, (m) => server.send(m)).pipe(yielding))
            yield* Effect.forkChild(Effect.forEach(expected, (m) => client.send(m), { discard: true }).pipe(yielding))
            const consumer = yield* Effect.forkChild(Stream.runCollect(Stream.take(client.messages, expected.length)).pipe(yielding))
            const at = `messageBuffer ${messageBuffer}, yielding every ${budget} steps`
            const echoed = yield* Effect.exit(waitUntil(() => consumer.pollUnsafe() !== undefined, `every message echoed (${at})`))
            // (stuck, the pair is aborted first: its close would wait out the close timeout, on the test clock)
            if (Exit.isFailure(echoed)) yield* Effect.andThen(client.abort, server.abort)
            assert.isTrue(Exit.isSuccess(echoed), `every message echoed (${at}): got ${client.stats.messagesIn} of ${expected.length}`)
            assert.deepStrictEqual(yield* Fiber.join(consumer), expected, at)
          }))
        }
      }
    }))

  it.effect("consumers one after the other get every message, none is lost between them", () =>
    Effect.gen(function*() {
      const [client, server] = yield* Connection.makeMemoryPair()
      for (const m of ["1", "2", "3", "4", "5"]) yield* server.send(m)
      yield* waitUntil(() => client.stats.messagesIn === 5, "all five to be buffered")
      const first = yield* Stream.runCollect(Stream.take(client.messages, 1))
      const next = yield* Effect.forkChild(Stream.runCollect(Stream.take(client.messages, 2)))
      yield* settle
      assert.isDefined(next.pollUnsafe(), "the second consumer got its messages")
      const second = yield* Fiber.join(next)
      const rest = yield* Effect.forkChild(Stream.runCollect(Stream.take(client.messages, 2)))
      yield* settle
      assert.isDefined(rest.pollUnsafe(), "the third consumer got its messages")
      assert.deepStrictEqual([...first, ...second, ...(yield* Fiber.join(rest))], ["1", "2", "3", "4", "5"])
    }))

  it.effect("a fragment stream that fails mid-message does not glue the next send onto it", () =>
    Effect.gen(function*() {
      const [client, server] = yield* Connection.makeMemoryPair()
      const received = yield* Effect.forkChild(drain(server))
      const error = yield* Effect.flip(
        client.sendFragments(Stream.concat(Stream.make("partial "), Stream.fail("source broke" as const)), "text")
      )
      assert.strictEqual(error, "source broke")
      // the incomplete message is still open on the wire: no data may follow it
      assert.strictEqual((yield* Effect.flip(client.send("separate message")))._tag, "InvalidProtocolOperation")
      assert.strictEqual(
        (yield* Effect.flip(client.sendFragments(Stream.make("more"), "text")))._tag,
        "InvalidProtocolOperation"
      )
      // control frames still go out between fragments, and the connection closes cleanly
      yield* client.ping()
      yield* waitUntil(() => client.stats.pongsIn === 1, "the pong")
      assert.strictEqual((yield* client.close()).clean, true)
      const { got, exit } = yield* Fiber.join(received)
      assert.isTrue(Exit.isSuccess(exit))
      assert.deepStrictEqual(got, [])
    }))

  it.effect("interrupting sendFragments mid-message leaves no room for a glued message either", () =>
    Effect.gen(function*() {
      const [client, server] = yield* Connection.makeMemoryPair()
      const fragments = yield* Effect.forkChild(
        client.sendFragments(Stream.concat(Stream.make(new Uint8Array([1])), Stream.never), "binary")
      )
      yield* settle
      yield* Fiber.interrupt(fragments)
      assert.strictEqual((yield* Effect.flip(client.send(new Uint8Array([2]))))._tag, "InvalidProtocolOperation")
      assert.strictEqual((yield* client.close()).clean, true)
      assert.deepStrictEqual((yield* drain(server)).got, [])
    }))

  it.effect("sendFragments interrupted at any step: a later send goes out as a message of its own, or fails (never reported sent and dropped, nor glued)", () =>
    Effect.gen(function*() {
      // a fiber that yields every `budget` steps, interrupted at its first yield: every step is tried
      for (let budget = 2; budget <= 64; budget++) {
        yield* Effect.scoped(Effect.gen(function*() {
          const [client, server] = yield* Connection.makeMemoryPair()
          yield* interruptAtFirstYield(client.sendFragments(Stream.make("fragment"), "text"), budget)
          const after = yield* Effect.exit(client.send("after"))
          assert.strictEqual((yield* client.close()).clean, true)
          const { got } = yield* drain(server)
          const at = `yielding every ${budget} steps`
          if (Exit.isSuccess(after)) {
            assert.deepStrictEqual(got.filter((m) => m !== "fragment"), ["after"], at)
          } else {
            // the fragment went out, its final frame did not: the message stays open
            assert.include(failureOf(after).message, "left incomplete", at)
            assert.deepStrictEqual(got, [], at)
          }
        }))
      }
    }))

  it.effect("sendFragments interrupted at any step: stats count exactly the messages the peer got", () =>
    Effect.gen(function*() {
      for (let budget = 2; budget <= 64; budget++) {
        yield* Effect.scoped(Effect.gen(function*() {
          const [client, server] = yield* Connection.makeMemoryPair()
          yield* interruptAtFirstYield(client.sendFragments(Stream.make("a", "b"), "text"), budget)
          yield* Effect.exit(client.send("after"))
          assert.strictEqual((yield* client.close()).clean, true)
          const { got } = yield* drain(server)
          assert.strictEqual(client.stats.messagesOut, got.length, `yielding every ${budget} steps: ${JSON.stringify(got)}`)
        }))
      }
    }))

  it.effect("a consumer of messages interrupted at any step as it starts does not delay the answer to the peer's Close", () =>
    Effect.gen(function*() {
      for (let budget = 2; budget <= 64; budget++) {
        yield* Effect.scoped(Effect.gen(function*() {
          const [client, server] = yield* Connection.makeMemoryPair()
          yield* server.send("a")
          yield* interruptAtFirstYield(Stream.runDrain(Stream.take(client.messages, 1)), budget)
          const closing = yield* Effect.forkChild(server.close())
          yield* settle
          const answered = closing.pollUnsafe() !== undefined
          yield* TestClock.adjust("2 seconds") // (lets a connection that waits for a consumer end)
          assert.isTrue(answered, `yielding every ${budget} steps: the Close is answered without waiting`)
        }))
      }
    }))

  it.effect("make interrupted at any step does not leave a connection counted open", () =>
    Effect.gen(function*() {
      const openClients = Metric.value(Metric.withAttributes(Metrics.connectionsOpen, { side: "client" }))
      for (let budget = 2; budget <= 64; budget++) {
        const before = (yield* openClients).value
        yield* Effect.scoped(Effect.gen(function*() {
          const { clientHandle } = yield* handles()
          const [transport] = yield* Transport.makeMemoryPair()
          const scope = yield* Scope.make()
          yield* interruptAtFirstYield(Scope.provide(Connection.make(clientHandle, transport, { closeTimeout: "100 millis" }), scope), budget)
          // (a connection made closes with its scope: nothing answers its Close, the timeout ends it)
          const closing = yield* Effect.forkChild(Scope.close(scope, Exit.void))
          for (let i = 0; i < 10 && closing.pollUnsafe() === undefined; i++) {
            yield* settle
            yield* TestClock.adjust("1 second")
          }
          yield* Fiber.join(closing)
        }))
        assert.strictEqual((yield* openClients).value, before, `yielding every ${budget} steps`)
      }
    }))

  it.effect("a fragment stream that fails before its first fragment leaves the connection usable", () =>
    Effect.gen(function*() {
      const [client, server] = yield* Connection.makeMemoryPair()
      assert.strictEqual(yield* Effect.flip(client.sendFragments(Stream.fail("nothing" as const), "text")), "nothing")
      yield* client.send("fine")
      assert.deepStrictEqual(yield* Stream.runCollect(Stream.take(server.messages, 1)), ["fine"])
    }))
})

describe("Connection: a client's masked frames of 126-511 bytes", () => {
  it.effect("a client's messages and fragments around 125/126 and 511/512 bytes, through send buffers of 134, 519 and 4096 bytes, reach the engine's own server intact: each built frame is one write of one buffer (a 7-bit length up to 125 bytes, a 16-bit one from 126), a longer one a header apart and its payload after it", () =>
    Effect.gen(function*() {
      for (const sendBufferSize of [134, 519, 4096]) {
        // the longest payload built whole: what fits the send buffer with its header, at most 511 bytes
        const limit = Math.max(Math.min(125, sendBufferSize - 6), Math.min(511, sendBufferSize - 8))
        const { clientHandle, serverHandle } = yield* handles({ sendBufferSize })
        const [a, b] = yield* Transport.makeMemoryPair()
        const writes: Array<ReadonlyArray<Uint8Array>> = []
        const tapped = Transport.tap(a, { onWrite: (buffers) => writes.push(buffers.map((x) => x.slice())) })
        const client = yield* Connection.make(clientHandle, tapped)
        const server = yield* Connection.make(serverHandle, b)
        const lengths = [125, 126, 127, 133, 300, 510, 511, 512, 126, 126]
        const ascii = (n: number, seed: number) => String.fromCharCode(...Array.from(pattern(n, seed), (x) => 0x20 + (x % 95)))
        const sent: Array<Connection.Message> = lengths.map((n, i) => i % 2 === 0 ? pattern(n, i) : ascii(n, i))
        for (const m of sent) yield* client.send(m)
        const pieces = [pattern(126, 20), pattern(511, 21), pattern(200, 22)]
        yield* client.sendFragments(Stream.fromIterable(pieces), "binary")
        const got = yield* Stream.runCollect(Stream.take(server.messages, sent.length + 1))
        const whole = new Uint8Array(126 + 511 + 200)
        whole.set(pieces[0]!)
        whole.set(pieces[1]!, 126)
        whole.set(pieces[2]!, 637)
        assert.deepStrictEqual(got, [...sent, whole], `send buffer ${sendBufferSize}`)
        // the frames as written: their payload lengths, whether each went out in one write of one buffer, the length field
        const frames: Array<readonly [number, boolean, number]> = []
        let w = 0
        while (w < writes.length) {
          const first = writes[w]![0]!
          if ((first[0]! & 0x0f) >= 8) {
            w++ // a control frame
            continue
          }
          const code = first[1]! & 0x7f
          assert.strictEqual(first[1]! & 0x80, 0x80, "masked")
          const length = code === 126 ? (first[2]! << 8) | first[3]! : code
          const headerLength = code === 126 ? 8 : 6
          const oneBuffer = writes[w]!.length === 1 && first.length === headerLength + length
          let bytes = 0
          for (const buffer of writes[w]!) bytes += buffer.length
          w++
          while (bytes < headerLength + length) for (const buffer of writes[w++]!) bytes += buffer.length
          assert.strictEqual(bytes, headerLength + length, "no write holds bytes of two frames")
          frames.push([length, oneBuffer, code])
        }
        // (sendFragments ends the message with an empty final frame)
        const expected = [...lengths, 126, 511, 200, 0].map((n) => [n, n <= limit, n <= 125 ? n : 126] as const)
        assert.deepStrictEqual(frames, expected, `send buffer ${sendBufferSize}`)
        assert.strictEqual((yield* client.close(1000)).clean, true)
      }
    }))
})
