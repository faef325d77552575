/**
 * RFC 6455 conformance, case by case in the manner of the Autobahn TestSuite (its case families 1
 * to 7, and message size limits): a raw TCP peer of our own writes hand-built frames, whole, byte
 * by byte, in random pieces or many in one write, to our server (playing the client: masked
 * frames) and to our client (playing the server: a hand-written 101, unmasked frames). Our side
 * echoes every message. Each case checks the exact frames that come back (opcode, FIN, RSV,
 * masking, payload), the close code our side sends and that it then ends TCP, and every frame our
 * side sends is checked against the rules RFC 6455 sets for senders; every wait is bounded.
 */
import { assert, describe, it, layer } from "@effect/vitest"
import { Effect, Stream } from "effect"
import type * as Scope from "effect/Scope"
import { isUtf8 } from "node:buffer"
import { createHash, randomBytes } from "node:crypto"
import * as Net from "node:net"
import type { Connection } from "@effect-websocket/core"
import { NodeClient, NodeServer } from "../src/index.ts"

// ---------------------------------------------------------------------------------------------
// Frames
// ---------------------------------------------------------------------------------------------

const OP = { continuation: 0, text: 1, binary: 2, close: 8, ping: 9, pong: 10 } as const

type Bytes = string | Uint8Array | ReadonlyArray<number>

const bytesOf = (data: Bytes): Buffer => typeof data === "string" ? Buffer.from(data, "utf8") : Buffer.from(data as Uint8Array)

/** A frame to send. */
interface Out {
  readonly opcode: number
  readonly payload?: Bytes
  readonly fin?: boolean
  readonly rsv?: number
}

const text = (payload: Bytes, fin = true): Out => ({ opcode: OP.text, payload, fin })
const binary = (payload: Bytes, fin = true): Out => ({ opcode: OP.binary, payload, fin })
const cont = (payload: Bytes, fin = true): Out => ({ opcode: OP.continuation, payload, fin })
const ping = (payload: Bytes = []): Out => ({ opcode: OP.ping, payload })
const pong = (payload: Bytes = []): Out => ({ opcode: OP.pong, payload })
const closeBody = (code: number, reason: Bytes = []): Buffer => {
  const body = Buffer.alloc(2)
  body.writeUInt16BE(code, 0)
  return Buffer.concat([body, bytesOf(reason)])
}
const close = (code?: number, reason: Bytes = []): Out => ({
  opcode: OP.close,
  payload: code === undefined ? bytesOf(reason) : closeBody(code, reason)
})

/** The bytes of `frame`, masked with a random key when `masked` (minimal length encoding). */
const encode = (frame: Out, masked: boolean): Buffer => {
  const payload = bytesOf(frame.payload ?? [])
  const n = payload.length
  const ext = n < 126 ? 0 : n < 65536 ? 2 : 8
  const header = Buffer.alloc(2 + ext + (masked ? 4 : 0))
  header[0] = ((frame.fin ?? true) ? 0x80 : 0) | ((frame.rsv ?? 0) << 4) | frame.opcode
  header[1] = (masked ? 0x80 : 0) | (ext === 0 ? n : ext === 2 ? 126 : 127)
  if (ext === 2) header.writeUInt16BE(n, 2)
  if (ext === 8) header.writeBigUInt64BE(BigInt(n), 2)
  if (!masked) return Buffer.concat([header, payload])
  const key = randomBytes(4)
  key.copy(header, 2 + ext)
  const body = Buffer.alloc(n)
  for (let i = 0; i < n; i++) body[i] = payload[i]! ^ key[i & 3]!
  return Buffer.concat([header, body])
}

/** A frame received. */
interface Frame {
  readonly fin: boolean
  readonly rsv: number
  readonly opcode: number
  readonly masked: boolean
  readonly payload: Buffer
}

const describeFrame = (f: Frame | string): string =>
  typeof f === "string"
    ? f
    : `{op ${f.opcode} fin ${f.fin} rsv ${f.rsv} masked ${f.masked} ${f.payload.length} bytes${
      f.opcode === OP.close && f.payload.length >= 2 ? ` code ${f.payload.readUInt16BE(0)}` : ""
    }}`

/** A deterministic generator of numbers in [0, 1) (mulberry32), for random pieces that replay. */
const random = (seed: number) => () => {
  seed = (seed + 0x6d2b79f5) | 0
  let t = Math.imul(seed ^ (seed >>> 15), 1 | seed)
  t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t
  return ((t ^ (t >>> 14)) >>> 0) / 4294967296
}

/** How a byte stream is cut into TCP writes: whole, byte by byte, pieces of one size, or random pieces. */
type Chops = "whole" | "bytes" | number | { readonly seed: number; readonly max: number }

const cut = (data: Buffer, chops: Chops): Array<Buffer> => {
  if (chops === "whole") return [data]
  const pieces: Array<Buffer> = []
  const next = chops === "bytes" ? () => 1 : typeof chops === "number" ? () => chops : (() => {
    const r = random(chops.seed)
    return () => 1 + Math.floor(r() * chops.max)
  })()
  for (let i = 0; i < data.length;) {
    const size = next()
    pieces.push(data.subarray(i, i + size))
    i += size
  }
  return pieces
}

/** Valid UTF-8 of exactly `size` bytes, mixing 1- to 4-byte code points. */
const textOfBytes = (size: number): string => {
  const unit = "aé€😀 " // 11 bytes
  const whole = Math.floor(size / 11)
  return unit.repeat(whole) + "x".repeat(size - whole * 11)
}

/** `payload` as a message of `opcode` cut into fragments of the sizes `next` gives (at least one frame). */
const fragmentedAt = (payload: Buffer, opcode: number, next: () => number): Array<Out> => {
  const frames: Array<Out> = []
  let at = 0
  do {
    const size = Math.max(1, next())
    const end = Math.min(payload.length, at + size)
    frames.push({ opcode: frames.length === 0 ? opcode : OP.continuation, payload: payload.subarray(at, end), fin: end === payload.length })
    at = end
  } while (at < payload.length)
  return frames
}

// ---------------------------------------------------------------------------------------------
// The raw peer
// ---------------------------------------------------------------------------------------------

/** Every wait of the probe is bounded by this much, unless said otherwise. */
const WAIT_MS = 3000

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms))

/** `promise`, or a rejection naming `what` after `ms`. */
const within = <A>(promise: Promise<A>, ms: number, what: string): Promise<A> =>
  new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${what} did not happen within ${ms} ms`)), ms)
    promise.then((a) => {
      clearTimeout(timer)
      resolve(a)
    }, (e) => {
      clearTimeout(timer)
      reject(e)
    })
  })

/**
 * One side of a connection that we script: frames written as raw bytes, frames read parsed and
 * checked against what RFC 6455 asks of their sender (see `check`).
 */
class Peer {
  readonly socket: Net.Socket
  /** What the probe plays: `"client"` (it masks, talking to our server) or `"server"`. */
  readonly role: "client" | "server"
  /** The other side ended TCP (its FIN, or the socket closed). */
  ended = false
  /** The first rule of RFC 6455 that a frame of our side broke, if any. */
  malformed: string | undefined = undefined
  private pending: Buffer = Buffer.alloc(0)
  private readonly frames: Array<Frame> = []
  private taken = 0
  private wakeUp: (() => void) | undefined = undefined
  // what `check` follows: the Close, the masking keys, the open message
  private closeSeen = false
  private readonly keys = new Set<number>()
  private masked = 0
  private textParts: Array<Buffer> | undefined = undefined
  private binaryOpen = false

  constructor(socket: Net.Socket, role: "client" | "server", head: Buffer) {
    this.socket = socket
    this.role = role
    socket.setNoDelay(true)
    socket.on("data", (chunk: Buffer) => this.onData(chunk))
    socket.on("end", () => this.markEnded())
    socket.on("close", () => this.markEnded())
    socket.on("error", () => this.markEnded())
    if (head.length > 0) this.onData(head)
  }

  private markEnded() {
    this.ended = true
    this.wake()
  }

  private wake() {
    const wake = this.wakeUp
    this.wakeUp = undefined
    wake?.()
  }

  private onData(chunk: Buffer) {
    this.pending = this.pending.length === 0 ? chunk : Buffer.concat([this.pending, chunk])
    for (;;) {
      const b = this.pending
      if (b.length < 2) break
      const masked = (b[1]! & 0x80) !== 0
      let length = b[1]! & 0x7f
      let offset = 2
      if (length === 126) {
        if (b.length < 4) break
        length = b.readUInt16BE(2)
        offset = 4
      } else if (length === 127) {
        if (b.length < 10) break
        length = Number(b.readBigUInt64BE(2))
        offset = 10
      }
      const keyAt = offset
      if (masked) offset += 4
      if (b.length < offset + length) break
      const payload = Buffer.from(b.subarray(offset, offset + length))
      if (masked) for (let i = 0; i < length; i++) payload[i]! ^= b[keyAt + (i & 3)]!
      const frame: Frame = { fin: (b[0]! & 0x80) !== 0, rsv: (b[0]! >> 4) & 7, opcode: b[0]! & 0x0f, masked, payload }
      this.check(frame, offset - (masked ? 4 : 0), masked ? b.readUInt32BE(keyAt) : undefined)
      this.frames.push(frame)
      this.pending = b.subarray(offset + length)
    }
    this.wake()
  }

  /** The rules of RFC 6455 for what our side sends (sections 5.1-5.7, 7.4): a break is kept in {@link malformed}. */
  private check(frame: Frame, headerLength: number, key: number | undefined) {
    const bad = (why: string) => (this.malformed ??= `${why}: ${describeFrame(frame)}`)
    const n = frame.payload.length
    if (frame.masked !== (this.role === "server")) bad("masking")
    if (frame.rsv !== 0) bad("reserved bits")
    if (headerLength !== (n < 126 ? 2 : n < 65536 ? 4 : 10)) bad("a length not in its shortest form")
    if (this.closeSeen) bad("a frame after the Close")
    if (key !== undefined) {
      this.keys.add(key)
      // a fresh random key per frame: after a few frames, the same key over and over is no accident
      if (++this.masked >= 4 && this.keys.size < this.masked / 2) bad("masking keys repeat")
    }
    if (frame.opcode >= 8) {
      if (!frame.fin || n > 125) bad("a control frame fragmented or over 125 bytes")
      if (frame.opcode === OP.close) {
        this.closeSeen = true
        if (n === 1) bad("a Close body of 1 byte")
        if (n >= 2) {
          const code = frame.payload.readUInt16BE(0)
          if (!((code >= 1000 && code <= 1014 && code !== 1004 && code !== 1005 && code !== 1006) || (code >= 3000 && code <= 4999))) {
            bad("a close code that may not be sent")
          }
          if (!isUtf8(frame.payload.subarray(2))) bad("a close reason that is not UTF-8")
        }
      } else if (frame.opcode !== OP.ping && frame.opcode !== OP.pong) bad("a reserved opcode")
      return
    }
    if ((frame.opcode === OP.continuation) !== (this.textParts !== undefined || this.binaryOpen)) bad("fragments out of order")
    if (frame.opcode === OP.text || (frame.opcode === OP.continuation && this.textParts !== undefined)) {
      this.textParts = [...(this.textParts ?? []), frame.payload]
      if (frame.fin) {
        if (!isUtf8(Buffer.concat(this.textParts))) bad("a text message that is not UTF-8")
        this.textParts = undefined
      }
    } else if (frame.opcode === OP.binary || frame.opcode === OP.continuation) {
      this.binaryOpen = !frame.fin
    } else bad("a reserved opcode")
  }

  /** The next frame, `"end"` once TCP ended with none left, or `"timeout"`. */
  next(ms = WAIT_MS): Promise<Frame | "end" | "timeout"> {
    return new Promise((resolve) => {
      const deadline = Date.now() + ms
      const attempt = () => {
        if (this.taken < this.frames.length) return resolve(this.frames[this.taken++]!)
        if (this.ended) return resolve("end")
        const left = deadline - Date.now()
        if (left <= 0) return resolve("timeout")
        const timer = setTimeout(() => {
          this.wakeUp = undefined
          attempt()
        }, left)
        this.wakeUp = () => {
          clearTimeout(timer)
          attempt()
        }
      }
      attempt()
    })
  }

  /** Writes frames (or raw bytes) cut as `chops` says; each piece gets a turn of the event loop to itself. */
  async send(what: Out | Buffer | ReadonlyArray<Out | Buffer>, chops: Chops = "whole"): Promise<void> {
    const list = Array.isArray(what) ? what : [what]
    const data = Buffer.concat(list.map((x: Out | Buffer) => Buffer.isBuffer(x) ? x : encode(x, this.role === "client")))
    const pieces = cut(data, chops)
    for (const piece of pieces) {
      if (this.socket.destroyed || !this.socket.writable) return
      await new Promise<void>((resolve) => this.socket.write(piece, () => resolve()))
      if (pieces.length > 1) await new Promise<void>((resolve) => setImmediate(resolve))
    }
  }

  /** The bytes of `frame` as this peer sends them. */
  encode(frame: Out): Buffer {
    return encode(frame, this.role === "client")
  }

  /** Whether TCP ends within `ms`. */
  async endsWithin(ms = WAIT_MS): Promise<boolean> {
    const deadline = Date.now() + ms
    while (!this.ended && Date.now() < deadline) await sleep(5)
    return this.ended
  }
}

const acquirePeer = (open: () => Promise<Peer>): Effect.Effect<Peer, never, Scope.Scope> =>
  Effect.acquireRelease(Effect.promise(open), (peer) => Effect.sync(() => peer.socket.destroy()))

/** Reads `head` up to the end of an HTTP head (`\r\n\r\n`): the head and what came after it. */
const readHead = (socket: Net.Socket, ms: number): Promise<{ head: string; rest: Buffer }> =>
  new Promise((resolve, reject) => {
    let buffer = Buffer.alloc(0)
    const timer = setTimeout(() => {
      socket.off("data", onData)
      reject(new Error("no HTTP head in time"))
    }, ms)
    const onData = (chunk: Buffer) => {
      buffer = Buffer.concat([buffer, chunk])
      const end = buffer.indexOf("\r\n\r\n")
      if (end < 0) return
      clearTimeout(timer)
      socket.off("data", onData)
      resolve({ head: buffer.subarray(0, end).toString("latin1"), rest: buffer.subarray(end + 4) })
    }
    socket.on("data", onData)
  })

const acceptOf = (key: string) => createHash("sha1").update(`${key}258EAFA5-E914-47DA-95CA-C5AB0DC85B11`).digest("base64")

/** A raw client of our server: the upgrade (followed by `early` in the same write), checked, then a {@link Peer} that masks. */
const connectRaw = (port: number, early: ReadonlyArray<Out> = []): Promise<Peer> =>
  new Promise((resolve, reject) => {
    const socket = Net.connect(port, "127.0.0.1")
    socket.on("error", reject)
    const key = randomBytes(16).toString("base64")
    socket.on("connect", () =>
      socket.write(
        `GET / HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
          `Sec-WebSocket-Key: ${key}\r\nSec-WebSocket-Version: 13\r\n\r\n` +
          Buffer.concat(early.map((f) => encode(f, true))).toString("latin1"),
        "latin1"
      ))
    readHead(socket, WAIT_MS).then(({ head, rest }) => {
      socket.off("error", reject)
      if (!head.startsWith("HTTP/1.1 101") || !head.includes(acceptOf(key))) {
        socket.destroy()
        return reject(new Error(`not upgraded: ${head}`))
      }
      resolve(new Peer(socket, "client", rest))
    }, reject)
  })

/**
 * A raw server for our client: answers one upgrade with a hand-written 101 (followed by `early` in
 * the same write), then a {@link Peer} that does not mask.
 */
const rawServer = (early: ReadonlyArray<Out> = []): Effect.Effect<{ readonly port: number; readonly accepted: Promise<Peer> }, never, Scope.Scope> =>
  Effect.acquireRelease(
    Effect.promise(() =>
      new Promise<{ port: number; accepted: Promise<Peer>; server: Net.Server }>((resolve) => {
        let deliver: (peer: Peer) => void = () => {}
        const accepted = new Promise<Peer>((r) => (deliver = r))
        const server = Net.createServer((socket) => {
          socket.on("error", () => {})
          readHead(socket, WAIT_MS).then(({ head, rest }) => {
            const key = /sec-websocket-key: *(\S+)/i.exec(head)?.[1] ?? ""
            socket.write(Buffer.concat([
              Buffer.from(
                `HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
                  `Sec-WebSocket-Accept: ${acceptOf(key)}\r\n\r\n`,
                "latin1"
              ),
              ...early.map((f) => encode(f, false))
            ]))
            deliver(new Peer(socket, "server", rest))
          }, () => socket.destroy())
        })
        server.listen(0, "127.0.0.1", () => resolve({ port: (server.address() as Net.AddressInfo).port, accepted, server }))
      })
    ),
    ({ server }) => Effect.sync(() => server.close())
  )

// ---------------------------------------------------------------------------------------------
// Expectations
// ---------------------------------------------------------------------------------------------

/** Asserts `frame` is `opcode` with `payload`, FIN set, no RSV, masked as its sender must. */
const checkFrame = (peer: Peer, frame: Frame | "end" | "timeout", opcode: number, payload: Bytes, what: string) => {
  assert.isTrue(typeof frame !== "string", `${what}: expected op ${opcode}, got ${describeFrame(frame)}`)
  const f = frame as Frame
  assert.strictEqual(f.opcode, opcode, `${what}: opcode (${describeFrame(f)})`)
  assert.isTrue(f.fin, `${what}: FIN`)
  assert.strictEqual(f.rsv, 0, `${what}: RSV`)
  assert.strictEqual(f.masked, peer.role === "server", `${what}: masking`)
  const expected = bytesOf(payload)
  assert.strictEqual(f.payload.length, expected.length, `${what}: payload length`)
  assert.isTrue(f.payload.equals(expected), `${what}: payload bytes`)
}

/** Asserts the next frame is `opcode` with `payload` (see {@link checkFrame}). */
const expectFrame = async (peer: Peer, opcode: number, payload: Bytes, what: string) =>
  checkFrame(peer, await peer.next(), opcode, payload, what)

/**
 * Reads the pongs that answer `pings` (fewer than 16: every one is answered, in order) and returns
 * the frame after them.
 */
const expectPongs = async (peer: Peer, pings: ReadonlyArray<string>, what: string): Promise<Frame | "end" | "timeout"> => {
  for (const ping of pings) await expectFrame(peer, OP.pong, ping, `${what}: the pong for "${ping}"`)
  return peer.next()
}

/** Asserts nothing but a Close comes next (no echo, no pong), and returns it. */
const nextClose = async (peer: Peer, what: string): Promise<Frame> => {
  const frame = await peer.next()
  assert.isTrue(typeof frame !== "string", `${what}: expected a Close, got ${describeFrame(frame)}`)
  assert.strictEqual((frame as Frame).opcode, OP.close, `${what}: expected a Close, got ${describeFrame(frame)}`)
  return frame as Frame
}

const closeCodeOf = (frame: Frame): number | undefined => frame.payload.length >= 2 ? frame.payload.readUInt16BE(0) : undefined

/**
 * Our side failed the connection: its next frame is a Close with `code` (nothing before it), then
 * it ends TCP without waiting for our answer.
 */
const expectFailure = async (peer: Peer, code: number, what: string, ms = WAIT_MS) => {
  const frame = await peer.next(ms)
  assert.isTrue(typeof frame !== "string", `${what}: expected a Close ${code}, got ${describeFrame(frame)}`)
  assert.strictEqual((frame as Frame).opcode, OP.close, `${what}: expected a Close ${code}, got ${describeFrame(frame)}`)
  assert.strictEqual(closeCodeOf(frame as Frame), code, `${what}: close code`)
  assert.isTrue(await peer.endsWithin(), `${what}: TCP ended after the Close`)
  assert.strictEqual(peer.malformed, undefined)
}

/**
 * The closing handshake started by the probe: our side answers with `answer` (code, reason; `undefined`:
 * an empty body) and nothing before it, and TCP ends (the server ends it first: as a server the
 * probe ends it once answered).
 */
const expectCloseAnswer = async (
  peer: Peer,
  answer: { readonly code: number; readonly reason?: Bytes } | undefined,
  what: string
) => {
  const frame = await nextClose(peer, what)
  if (answer === undefined) {
    assert.strictEqual(frame.payload.length, 0, `${what}: an empty Close answers an empty Close (got ${describeFrame(frame)})`)
  } else {
    assert.strictEqual(closeCodeOf(frame), answer.code, `${what}: close code`)
    assert.isTrue(frame.payload.subarray(2).equals(bytesOf(answer.reason ?? [])), `${what}: close reason`)
  }
  if (peer.role === "server") {
    // the server ends TCP first (RFC 6455 section 7.1.1): a client waits for it
    await sleep(10)
    assert.isFalse(peer.ended, `${what}: the client waits for the server to end TCP`)
    peer.socket.end()
  }
  assert.isTrue(await peer.endsWithin(), `${what}: TCP ended after the closing handshake`)
  assert.strictEqual(peer.malformed, undefined)
}

/** Sends a Close 1000 and expects it echoed, then the end of TCP. */
const closeCleanly = async (peer: Peer, what: string) => {
  await peer.send(close(1000))
  await expectCloseAnswer(peer, { code: 1000 }, what)
}

// ---------------------------------------------------------------------------------------------
// The two sides under test
// ---------------------------------------------------------------------------------------------

/** The maximum message size of both sides under test. */
const LIMIT = 100_000

/** What our side runs on every connection: each message goes back as it came. */
const echo = (connection: Connection.Connection) => Stream.runForEach(connection.messages, (m) => connection.send(m))

type Open = Effect.Effect<Peer, never, Scope.Scope | NodeServer.Server>

/** A raw client connected to the shared echo server. */
const openToServer = (early?: ReadonlyArray<Out>): Open =>
  Effect.gen(function*() {
    const server = yield* NodeServer.Server
    return yield* acquirePeer(() => connectRaw(server.address.port, early))
  })

/** Our client, echoing, connected to a raw server of this test; the raw server's side. */
const openToClient = (early?: ReadonlyArray<Out>, settings?: NodeClient.ConnectOptions): Effect.Effect<Peer, never, Scope.Scope> =>
  Effect.gen(function*() {
    const raw = yield* rawServer(early)
    // (the echo starts as soon as the connection is made, as a program that connects then reads does)
    yield* Effect.forkScoped(Effect.ignore(Effect.flatMap(
      NodeClient.connect(`ws://127.0.0.1:${raw.port}/`, { ...settings, maxMessageSize: LIMIT }),
      echo
    )))
    return yield* acquirePeer(() => within(raw.accepted, WAIT_MS, "our client's connection"))
  })

/** One case: what the probe does and expects, given the peer facing our side. */
type Case = (peer: Peer) => Promise<void>

const cases: Array<readonly [family: string, name: string, run: Case, early: ReadonlyArray<Out> | undefined]> = []
const probe = (family: string, name: string, run: Case, early?: ReadonlyArray<Out>) => cases.push([family, name, run, early])

// ---------------------------------------------------------------------------------------------
// 1. Framing
// ---------------------------------------------------------------------------------------------

const SIZES = [0, 125, 126, 127, 128, 65535, 65536]
const patterned = (size: number, kind: "text" | "binary"): Buffer =>
  kind === "text" ? Buffer.from("*".repeat(size)) : Buffer.from(Array.from({ length: size }, (_, i) => (i * 7 + 3) & 0xff))

for (const kind of ["text", "binary"] as const) {
  const opcode = kind === "text" ? OP.text : OP.binary
  for (const size of SIZES) {
    const chopsOf: ReadonlyArray<readonly [string, Chops]> = size <= 128
      ? [["whole", "whole"], ["byte by byte", "bytes"]]
      : [["whole", "whole"], ["in pieces of 997", 997], ["in random pieces", { seed: size, max: 4000 }]]
    for (const [how, chops] of chopsOf) {
      probe("1 framing", `${kind} of ${size} bytes, written ${how}, is echoed`, async (peer) => {
        const payload = patterned(size, kind)
        await peer.send({ opcode, payload }, chops)
        await expectFrame(peer, opcode, payload, "echo")
        await closeCleanly(peer, "close")
      })
    }
  }
}

probe("1 framing", "30 messages of mixed kinds and sizes in one write come back in order", async (peer) => {
  const messages = Array.from({ length: 30 }, (_, i) => ({ opcode: i % 2 === 0 ? OP.text : OP.binary, payload: patterned([0, 1, 125, 126, 300][i % 5]!, i % 2 === 0 ? "text" : "binary") }))
  await peer.send([...messages, close(1000)])
  for (const [i, m] of messages.entries()) await expectFrame(peer, m.opcode, m.payload, `echo ${i}`)
  await expectCloseAnswer(peer, { code: 1000 }, "close")
})

for (let rsv = 1; rsv <= 7; rsv++) {
  probe("1 framing", `a frame with RSV ${rsv} fails with 1002, after the message before it is echoed and with no pong`, async (peer) => {
    // Autobahn 3.2-3.7: a valid message, the broken frame, a ping, all in one write
    await peer.send([text("Hello, world!"), { opcode: rsv % 2 === 0 ? OP.binary : OP.text, payload: "bad", rsv }, ping("never answered")])
    await expectFrame(peer, OP.text, "Hello, world!", "echo")
    await expectFailure(peer, 1002, `RSV ${rsv}`)
  })
}

for (const opcode of [3, 4, 5, 6, 7, 11, 12, 13, 14, 15]) {
  probe("1 framing", `reserved opcode ${opcode} fails with 1002`, async (peer) => {
    await peer.send([text("Hello, world!"), { opcode, payload: opcode < 8 ? "" : "reserved control" }, ping()], opcode % 2 === 0 ? "bytes" : "whole")
    await expectFrame(peer, OP.text, "Hello, world!", "echo")
    await expectFailure(peer, 1002, `opcode ${opcode}`)
  })
}

probe("1 framing", "a frame masked the wrong way fails with 1002 (a client must mask, a server must not)", async (peer) => {
  await peer.send([peer.encode(text("Hello, world!")), encode(text("wrongly masked"), peer.role === "server")])
  await expectFrame(peer, OP.text, "Hello, world!", "echo")
  await expectFailure(peer, 1002, "masking")
})

for (const [name, frame] of [["ping", ping("x")], ["pong", pong("x")], ["close", close(1000)]] as const) {
  probe("1 framing", `a ${name} with RSV bits fails with 1002`, async (peer) => {
    await peer.send([text("Hello, world!"), { ...frame, rsv: name === "close" ? 7 : 6 }])
    await expectFrame(peer, OP.text, "Hello, world!", "echo")
    await expectFailure(peer, 1002, `${name} RSV`)
  })
}

probe("1 framing", "a 64-bit length with its most significant bit set fails with 1002", async (peer) => {
  const header = Buffer.from([0x82, (peer.role === "client" ? 0x80 : 0) | 127, 0x80, 0, 0, 0, 0, 0, 0, 1, ...(peer.role === "client" ? [1, 2, 3, 4] : [])])
  await peer.send(Buffer.concat([header, Buffer.alloc(16)]))
  await expectFailure(peer, 1002, "length MSB")
})

probe("1 framing", "a 64-bit length beyond 2^53 - 1 fails with 1009 (too big for any message)", async (peer) => {
  const header = Buffer.from([0x82, (peer.role === "client" ? 0x80 : 0) | 127, 0x40, 0, 0, 0, 0, 0, 0, 0, ...(peer.role === "client" ? [1, 2, 3, 4] : [])])
  await peer.send(Buffer.concat([header, Buffer.alloc(16)]))
  await expectFailure(peer, 1009, "length 2^62")
})

probe("1 framing", "lengths encoded longer than needed are accepted", async (peer) => {
  // 16-bit length 5, 64-bit length 5 (RFC 6455 requires the minimal form of senders only)
  const key = peer.role === "client" ? [0, 0, 0, 0] : []
  const m = peer.role === "client" ? 0x80 : 0
  await peer.send(Buffer.from([0x81, m | 126, 0, 5, ...key, ...Buffer.from("short"), 0x82, m | 127, 0, 0, 0, 0, 0, 0, 0, 3, ...key, 1, 2, 3]))
  await expectFrame(peer, OP.text, "short", "16-bit")
  await expectFrame(peer, OP.binary, [1, 2, 3], "64-bit")
  await closeCleanly(peer, "close")
})

probe("1 framing", "frames in the same write as the handshake are handled", async (peer) => {
  await expectFrame(peer, OP.pong, "early ping", "pong")
  await expectFrame(peer, OP.text, "early text", "echo")
  await expectFrame(peer, OP.binary, [1, 2, 3], "echo of the fragmented message")
  await closeCleanly(peer, "close")
}, [ping("early ping"), text("early text"), binary([1], false), cont([2, 3])])

probe("1 framing", "a broken frame in the same write as the handshake fails with 1002", async (peer) => {
  await expectFrame(peer, OP.text, "early text", "echo")
  await expectFailure(peer, 1002, "early RSV")
}, [text("early text"), { opcode: OP.text, payload: "x", rsv: 4 }])

probe("1 framing", "a Close in the same write as the handshake is answered", async (peer) => {
  await expectCloseAnswer(peer, { code: 1001, reason: "early" }, "early close")
}, [close(1001, "early")])

// ---------------------------------------------------------------------------------------------
// 2. Pings and pongs
// ---------------------------------------------------------------------------------------------

for (const [name, payload, chops] of [
  ["empty", [], "whole"],
  ["of 125 bytes", Array.from({ length: 125 }, () => 0xfe), "whole"],
  ["of 125 bytes written byte by byte", Array.from({ length: 125 }, (_, i) => i), "bytes"],
  ["with binary payload", [0x00, 0xff, 0xfe, 0xfd, 0xfc, 0xfb, 0x00, 0xff], "whole"]
] as const) {
  probe("2 ping/pong", `a ping ${name} is answered by a pong with the same payload`, async (peer) => {
    await peer.send(ping(payload), chops as Chops)
    await expectFrame(peer, OP.pong, payload, "pong")
    await closeCleanly(peer, "close")
  })
}

probe("2 ping/pong", "a ping of 126 bytes fails with 1002, unanswered", async (peer) => {
  await peer.send(ping(Buffer.alloc(126, 0xfe)))
  await expectFailure(peer, 1002, "ping 126")
})

probe("5 close", "a Close with a payload of 126 bytes fails with 1002", async (peer) => {
  await peer.send(close(1000, "*".repeat(124)))
  await expectFailure(peer, 1002, "close 126")
})

probe("2 ping/pong", "a fragmented ping fails with 1002, unanswered", async (peer) => {
  await peer.send([{ opcode: OP.ping, payload: "fragment1", fin: false }, cont("fragment2")])
  await expectFailure(peer, 1002, "fragmented ping")
})

probe("2 ping/pong", "a fragmented pong fails with 1002", async (peer) => {
  await peer.send([{ opcode: OP.pong, payload: "fragment1", fin: false }, cont("fragment2")])
  await expectFailure(peer, 1002, "fragmented pong")
})

probe("2 ping/pong", "unsolicited pongs are ignored", async (peer) => {
  await peer.send([pong("unsolicited"), pong(), text("after the pongs"), pong(Buffer.alloc(125, 1))])
  await expectFrame(peer, OP.text, "after the pongs", "echo")
  await closeCleanly(peer, "close")
})

probe("2 ping/pong", "a pong and a ping before a message: only the ping is answered, before the echo", async (peer) => {
  await peer.send([pong("unsolicited"), ping("ping"), text("text")])
  await expectFrame(peer, OP.pong, "ping", "pong")
  await expectFrame(peer, OP.text, "text", "echo")
  await closeCleanly(peer, "close")
})

for (const [name, chops] of [["in one write", "whole"], ["octet by octet", "bytes"], ["frame by frame", "frames"]] as const) {
  probe("2 ping/pong", `10 pings ${name}, then a Close: 10 pongs in order, each with its ping's payload`, async (peer) => {
    const payloads = Array.from({ length: 10 }, (_, i) => `payload-${i}`)
    if (chops === "frames") {
      // each ping once the previous one is answered: every one is answered
      for (const p of payloads) {
        await peer.send(ping(p))
        await expectFrame(peer, OP.pong, p, `pong ${p}`)
      }
      await peer.send(close(1000))
    } else {
      await peer.send([...payloads.map((p) => ping(p)), close(1000)], chops)
    }
    const frame = chops === "frames" ? await peer.next() : await expectPongs(peer, payloads, "pongs")
    assert.isTrue(typeof frame !== "string" && frame.opcode === OP.close, `then the Close (${describeFrame(frame)})`)
    assert.strictEqual(closeCodeOf(frame as Frame), 1000)
    if (peer.role === "server") peer.socket.end()
    assert.isTrue(await peer.endsWithin(), "TCP ended")
  })
}

// ---------------------------------------------------------------------------------------------
// 3. Fragmentation
// ---------------------------------------------------------------------------------------------

for (const [name, chops] of [["in one write", "whole"], ["octet by octet", "bytes"], ["in random pieces", { seed: 7, max: 5 }]] as const) {
  probe("3 fragmentation", `text in 2 fragments, ${name}, is echoed whole`, async (peer) => {
    await peer.send([text("fragment1", false), cont("fragment2")], chops)
    await expectFrame(peer, OP.text, "fragment1fragment2", "echo")
    await closeCleanly(peer, "close")
  })
  probe("3 fragmentation", `binary in 2 fragments with a ping between, ${name}: the pong, then the echo`, async (peer) => {
    await peer.send([binary([1, 2, 3], false), ping("between"), cont([4, 5])], chops)
    await expectFrame(peer, OP.pong, "between", "pong")
    await expectFrame(peer, OP.binary, [1, 2, 3, 4, 5], "echo")
    await closeCleanly(peer, "close")
  })
}

probe("3 fragmentation", "text in 5 fragments with pings between, frame by frame, with pauses", async (peer) => {
  const parts = ["fragment1", "fragment2", "fragment3", "fragment4", "fragment5"]
  for (const [i, part] of parts.entries()) {
    await peer.send(i === 0 ? text(part, false) : cont(part, i === parts.length - 1))
    if (i < parts.length - 1) {
      await peer.send(ping(`ping ${i}`))
      await expectFrame(peer, OP.pong, `ping ${i}`, `pong ${i}`)
    }
  }
  await expectFrame(peer, OP.text, parts.join(""), "echo")
  await closeCleanly(peer, "close")
})

for (const [name, frames] of [
  ["a continuation with no message (FIN)", [cont("non-continuation payload")]],
  ["a continuation with no message (no FIN)", [cont("non-continuation payload", false), text("Hello, world!")]],
  ["a continuation after a complete fragmented message", [text("fragment1", false), cont("fragment2"), cont("fragment3", false), text("unfragmented")]],
  ["a text frame inside a fragmented text message", [text("fragment1", false), text("fragment2")]],
  ["a binary frame inside a fragmented text message", [text("fragment1", false), binary("fragment2", false), cont("x")]],
  ["a text frame inside a fragmented binary message, after a ping", [binary("fragment1", false), ping(), text("fragment2")]]
] as const) {
  probe("3 fragmentation", `${name} fails with 1002`, async (peer) => {
    await peer.send(frames)
    const echoed = name.includes("after a complete") ? "fragment1fragment2" : undefined
    if (echoed !== undefined) await expectFrame(peer, OP.text, echoed, "echo of the complete message")
    if (name.includes("after a ping")) await expectFrame(peer, OP.pong, [], "pong")
    await expectFailure(peer, 1002, name)
  })
}

probe("3 fragmentation", "empty fragments make empty or partly empty messages", async (peer) => {
  await peer.send([
    text("", false),
    cont(""),
    text("", false),
    cont("", false),
    cont(""),
    binary([], false),
    cont("middle", false),
    cont([]),
    text("", false),
    cont("", false),
    cont("end")
  ])
  await expectFrame(peer, OP.text, "", "first")
  await expectFrame(peer, OP.text, "", "second")
  await expectFrame(peer, OP.binary, "middle", "third")
  await expectFrame(peer, OP.text, "end", "fourth")
  await closeCleanly(peer, "close")
})

for (const kind of ["binary", "text"] as const) {
  probe("3 fragmentation", `a ${kind} message of 1000 single-byte fragments is echoed whole`, async (peer) => {
    // text: 1- to 4-byte code points, so that most fragments end inside one
    const payload = kind === "binary" ? patterned(1000, "binary") : Buffer.from("aé€😀 ".repeat(90) + "x".repeat(10), "utf8")
    const frames = Array.from(payload, (b, i) =>
      i === 0 ? { opcode: kind === "text" ? OP.text : OP.binary, payload: [b], fin: false } : cont([b], i === payload.length - 1))
    await peer.send(frames, { seed: 1000, max: 700 })
    await expectFrame(peer, kind === "text" ? OP.text : OP.binary, payload, "echo")
    await closeCleanly(peer, "close")
  })
}

probe("3 fragmentation", "text of 65536 bytes in fragments of 1300, in random pieces, is echoed whole", async (peer) => {
  const payload = Buffer.from(textOfBytes(65536))
  const frames = fragmentedAt(payload, OP.text, () => 1300)
  await peer.send(frames, { seed: 65536, max: 9000 })
  await expectFrame(peer, OP.text, payload, "echo")
  await closeCleanly(peer, "close")
})

for (const seed of [1, 2, 3, 4, 5, 6, 7, 8]) {
  probe("3 fragmentation", `random stream ${seed}: messages of all sizes, fragmented anyhow, pings between, in random pieces`, async (peer) => {
    const r = random(seed * 7919)
    const frames: Array<Out> = []
    const echoes: Array<readonly [number, Buffer]> = []
    const pings: Array<string> = []
    const pingHere = () => {
      if (r() < 0.3) {
        const payload = `ping ${pings.length}`
        pings.push(payload)
        frames.push(ping(payload))
      }
    }
    for (let m = 0; m < 12; m++) {
      const kind = r() < 0.5 ? OP.text : OP.binary
      const size = [0, 1, 7, 125, 126, 4000, 8192, 20_000, 70_000][Math.floor(r() * 9)]!
      const payload = kind === OP.text ? Buffer.from(textOfBytes(size)) : patterned(size, "binary")
      // (fragments of 1 to 3 bytes only for the smaller messages: the run stays short)
      const maxFragment = [size <= 4000 ? 1 : 700, size <= 4000 ? 3 : 2000, 100, 5000, 70_000][Math.floor(r() * 5)]!
      for (const frame of fragmentedAt(payload, kind, () => 1 + Math.floor(r() * maxFragment))) {
        pingHere()
        frames.push(frame)
      }
      echoes.push([kind, payload])
    }
    frames.push(close(1000))
    await peer.send(frames, { seed, max: [300, 3000, 70_000][seed % 3]! })
    let answered = -1
    for (const [i, [kind, payload]] of echoes.entries()) {
      for (;;) {
        const frame = await peer.next()
        assert.isTrue(typeof frame !== "string", `echo ${i}: got ${describeFrame(frame)}`)
        const f = frame as Frame
        if (f.opcode === OP.pong) {
          const p = pings.indexOf(f.payload.toString())
          assert.isAbove(p, answered, `pong ${f.payload.toString()}: answers a ping, in order`)
          answered = p
          continue
        }
        assert.strictEqual(f.opcode, kind, `echo ${i}: opcode (${describeFrame(f)})`)
        assert.isTrue(f.fin && f.rsv === 0 && f.masked === (peer.role === "server"), `echo ${i}: header`)
        assert.strictEqual(f.payload.length, payload.length, `echo ${i}: length`)
        assert.isTrue(f.payload.equals(payload), `echo ${i}: bytes`)
        break
      }
    }
    for (;;) {
      const frame = await peer.next()
      if (typeof frame !== "string" && frame.opcode === OP.pong) {
        const p = pings.indexOf(frame.payload.toString())
        assert.isAbove(p, answered, "pong in order")
        answered = p
        continue
      }
      assert.isTrue(typeof frame !== "string" && frame.opcode === OP.close && closeCodeOf(frame) === 1000, `the Close answer (${describeFrame(frame)})`)
      break
    }
    if (pings.length > 0) assert.strictEqual(answered, pings.length - 1, "the last ping is answered")
    if (peer.role === "server") peer.socket.end()
    assert.isTrue(await peer.endsWithin(), "TCP ended")
    assert.strictEqual(peer.malformed, undefined)
  })
}

// ---------------------------------------------------------------------------------------------
// 4. UTF-8
// ---------------------------------------------------------------------------------------------

const VALID_UTF8: ReadonlyArray<readonly [string, ReadonlyArray<number>]> = [
  ["Hello-µ@ßöäüàá-UTF-8!!", [...Buffer.from("Hello-µ@ßöäüàá-UTF-8!!")]],
  ["κόσμε", [0xce, 0xba, 0xe1, 0xbd, 0xb9, 0xcf, 0x83, 0xce, 0xbc, 0xce, 0xb5]],
  ["first code points of each length", [0x00, 0xc2, 0x80, 0xe0, 0xa0, 0x80, 0xf0, 0x90, 0x80, 0x80]],
  ["last code points of each length", [0x7f, 0xdf, 0xbf, 0xef, 0xbf, 0xbf, 0xf4, 0x8f, 0xbf, 0xbf]],
  ["around the surrogates", [0xed, 0x9f, 0xbf, 0xee, 0x80, 0x80, 0xef, 0xbf, 0xbd]],
  ["4-byte code points", [...Buffer.from("𝄞😀𐍈\u{10FFFF}")]],
  ["noncharacters", [0xef, 0xbf, 0xbe, 0xef, 0xbf, 0xbf, 0xf0, 0x9f, 0xbf, 0xbe]]
]

const INVALID_UTF8: ReadonlyArray<readonly [string, ReadonlyArray<number>]> = [
  ["κόσμε with a surrogate", [0xce, 0xba, 0xe1, 0xbd, 0xb9, 0xcf, 0x83, 0xce, 0xbc, 0xce, 0xb5, 0xed, 0xa0, 0x80, 0x65, 0x64, 0x69, 0x74, 0x65, 0x64]],
  ["overlong C0 80", [0x61, 0xc0, 0x80]],
  ["overlong C1 BF", [0xc1, 0xbf]],
  ["overlong E0 80 80", [0xe0, 0x80, 0x80]],
  ["overlong E0 9F BF", [0xe0, 0x9f, 0xbf]],
  ["overlong F0 80 80 80", [0xf0, 0x80, 0x80, 0x80]],
  ["overlong F0 8F BF BF", [0xf0, 0x8f, 0xbf, 0xbf]],
  ["surrogate ED A0 80", [0xed, 0xa0, 0x80]],
  ["surrogate ED BF BF", [0xed, 0xbf, 0xbf]],
  ["surrogate pair", [0xed, 0xa0, 0x80, 0xed, 0xb0, 0x80]],
  ["above U+10FFFF: F4 90 80 80", [0xf4, 0x90, 0x80, 0x80]],
  ["F5 80 80 80", [0xf5, 0x80, 0x80, 0x80]],
  ["5-byte F8 88 80 80 80", [0xf8, 0x88, 0x80, 0x80, 0x80]],
  ["FE and FF", [0x61, 0xfe, 0xff]],
  ["lone continuation 80", [0x80]],
  ["lone continuation BF after ASCII", [0x61, 0x62, 0xbf]],
  ["a lead byte followed by ASCII", [0xc2, 0x41]],
  ["truncated 2-byte at the end", [0x61, 0xce]],
  ["truncated 3-byte at the end", [0x61, 0xe1, 0xbd]],
  ["truncated 4-byte at the end", [0x61, 0xf0, 0x9d, 0x84]]
]

/** `bytes` as a message of fragments cut at the given sizes (the last one takes the rest). */
const fragmented = (bytes: ReadonlyArray<number>, sizes: ReadonlyArray<number>): Array<Out> => {
  const frames: Array<Out> = []
  let at = 0
  for (const size of sizes) {
    if (at + size >= bytes.length) break
    frames.push(frames.length === 0 ? text(bytes.slice(at, at + size), false) : cont(bytes.slice(at, at + size), false))
    at += size
  }
  frames.push(frames.length === 0 ? text(bytes.slice(at)) : cont(bytes.slice(at)))
  return frames
}

for (const [name, bytes] of VALID_UTF8) {
  probe("4 utf-8", `valid text (${name}) in one frame, written octet by octet, is echoed`, async (peer) => {
    await peer.send(text(bytes), "bytes")
    await expectFrame(peer, OP.text, bytes, "echo")
    await closeCleanly(peer, "close")
  })
  probe("4 utf-8", `valid text (${name}) in single-byte fragments, and in fragments of 3, is echoed`, async (peer) => {
    await peer.send([...fragmented(bytes, bytes.map(() => 1)), ...fragmented(bytes, bytes.map(() => 3))], { seed: 3, max: 6 })
    await expectFrame(peer, OP.text, bytes, "echo of the single-byte fragments")
    await expectFrame(peer, OP.text, bytes, "echo of the fragments of 3")
    await closeCleanly(peer, "close")
  })
}

for (const [name, bytes] of INVALID_UTF8) {
  for (const [how, frames, chops] of [
    ["in one frame", [text(bytes)], "whole"],
    ["in one frame written octet by octet", [text(bytes)], "bytes"],
    ["in single-byte fragments", fragmented(bytes, bytes.map(() => 1)), "whole"],
    ["in 2 fragments", fragmented(bytes, [Math.ceil(bytes.length / 2)]), "whole"]
  ] as const) {
    probe("4 utf-8", `invalid text (${name}) ${how} fails with 1007, not echoed`, async (peer) => {
      await peer.send(frames, chops)
      await expectFailure(peer, 1007, name)
    })
  }
}

probe("4 utf-8", "a text message whose final fragment ends inside a code point fails with 1007", async (peer) => {
  await peer.send([text([0x61, 0xf0], false), cont([0x9d, 0x84])])
  await expectFailure(peer, 1007, "truncated at the end of the message")
})

const KOSME = [0xce, 0xba, 0xe1, 0xbd, 0xb9, 0xcf, 0x83, 0xce, 0xbc, 0xce, 0xb5]
const EDITED = [...Buffer.from("-edited")]

/**
 * Sends the pieces of `first` one by one, never the rest of the message (so that our side can only
 * fail on what it already has), and expects the Close 1007 within 2 seconds.
 */
const failFast = async (peer: Peer, first: ReadonlyArray<Buffer>, what: string) => {
  for (const piece of first) {
    await peer.send(piece)
    await sleep(20)
  }
  await expectFailure(peer, 1007, what, 2000)
}

probe("4 utf-8", "fail fast: invalid UTF-8 in the second of three fragments fails before the third is sent", async (peer) => {
  // Autobahn 6.4.1
  await failFast(peer, [peer.encode(text(KOSME, false)), peer.encode(cont([0xf4, 0x90, 0x80, 0x80], false))], "6.4.1")
})

probe("4 utf-8", "fail fast: a code point cut between fragments that turns out invalid fails before the last fragment", async (peer) => {
  // Autobahn 6.4.2
  await failFast(peer, [peer.encode(text([...KOSME, 0xf4], false)), peer.encode(cont([0x90, 0x80, 0x80], false))], "6.4.2")
})

for (const [name, split] of [["6.4.3: invalid piece whole", 4], ["6.4.4: invalid at its second byte", 2]] as const) {
  probe("4 utf-8", `fail fast inside one frame sent in pieces (${name}): the Close comes before the rest of the frame`, async (peer) => {
    const frame = peer.encode(text([...KOSME, 0xf4, 0x90, 0x80, 0x80, ...EDITED]))
    const header = frame.length - (KOSME.length + 4 + EDITED.length)
    const first = header + KOSME.length
    await failFast(peer, [frame.subarray(0, first), frame.subarray(first, first + split)], name)
  })
}

for (const at of [10, 5000, 70_000]) {
  probe("4 utf-8", `fail fast in a large text frame: invalid UTF-8 at byte ${at} of 90000, the rest never sent`, async (peer) => {
    const payload = Buffer.alloc(90_000, 0x61)
    payload[at] = 0xc0
    const frame = peer.encode(text(payload))
    const header = frame.length - payload.length
    await failFast(peer, [frame.subarray(0, header + at + 100)], `invalid at ${at}`)
  })
}

probe("4 utf-8", "fail fast after a large fragment: invalid UTF-8 at the start of the next one, the rest never sent", async (peer) => {
  // (the first message sets the connection up to receive large messages into a buffer of their own)
  const large = Buffer.from(textOfBytes(20_000))
  await peer.send(text(large))
  await expectFrame(peer, OP.text, large, "echo")
  const frame = peer.encode(cont(Buffer.from([0x61, 0xf4, 0x90, ...Buffer.alloc(19_997, 0x61)])))
  await failFast(peer, [peer.encode(text(Buffer.from(textOfBytes(70_000)), false)), frame.subarray(0, 8 + 1000)], "second fragment")
})

probe("4 utf-8", "code points cut around empty fragments, with pings between, are echoed whole", async (peer) => {
  const emoji = [0xf0, 0x9f, 0x98, 0x80]
  await peer.send([text([0x61, emoji[0]!], false), ping("1"), cont([], false), cont(emoji.slice(1, 3), false), ping("2"), cont([], false), cont([emoji[3]!])], "bytes")
  checkFrame(peer, await expectPongs(peer, ["1", "2"], "pongs"), OP.text, [0x61, ...emoji], "echo")
  await peer.send([text([0xe2, 0x82], false), cont([], false), cont([])])
  await expectFailure(peer, 1007, "a code point left open by the final, empty, fragment")
})

probe("4 utf-8", "fail fast in a fragmented message: invalid UTF-8 in the first of many fragments", async (peer) => {
  await failFast(peer, [peer.encode(text([0x61, 0xed, 0xa0, 0x80], false))], "first fragment")
})

for (const seed of [1, 2, 3, 4, 5, 6]) {
  probe("4 utf-8", `random stream ${seed}: a large fragmented text message with invalid UTF-8 somewhere fails with 1007, nothing echoed after the valid ones`, async (peer) => {
    const r = random(seed * 104729)
    const valid = Buffer.from(textOfBytes(30_000))
    const bad = Buffer.from(textOfBytes(80_000))
    // (at the start of a code point: bytes written inside one could make another valid one)
    const at = 11 * Math.floor(r() * (bad.length / 11 - 1))
    const invalid = [[0xc0, 0x80], [0xed, 0xa0, 0x80], [0xf4, 0x90, 0x80, 0x80], [0x80], [0xe0, 0x9f, 0xbf]][seed % 5]!
    Buffer.from(invalid).copy(bad, Math.min(at, bad.length - invalid.length))
    assert.isFalse(isUtf8(bad), "the probe's message is invalid")
    const maxFragment = [1000, 20_000, 90_000][seed % 3]!
    await peer.send([
      ...fragmentedAt(valid, OP.text, () => 1 + Math.floor(r() * maxFragment)),
      ...fragmentedAt(bad, OP.text, () => 1 + Math.floor(r() * maxFragment)),
      text("never echoed")
    ], { seed, max: 20_000 })
    await expectFrame(peer, OP.text, valid, "echo of the valid message")
    await expectFailure(peer, 1007, "invalid")
  })
}

// ---------------------------------------------------------------------------------------------
// 5. Close
// ---------------------------------------------------------------------------------------------

probe("5 close", "a Close without a body is answered by a Close without a body", async (peer) => {
  await peer.send(close())
  await expectCloseAnswer(peer, undefined, "empty close")
})

probe("5 close", "a Close with a 1-byte body fails with 1002", async (peer) => {
  await peer.send({ opcode: OP.close, payload: [0x03] })
  await expectFailure(peer, 1002, "1-byte close")
})

for (const code of [1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014, 3000, 3999, 4000, 4999]) {
  probe("5 close", `close code ${code} is accepted and echoed with its reason`, async (peer) => {
    await peer.send(close(code, "bye"))
    await expectCloseAnswer(peer, { code, reason: "bye" }, `code ${code}`)
  })
}

for (const code of [0, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535]) {
  probe("5 close", `close code ${code} on the wire fails with 1002`, async (peer) => {
    await peer.send(close(code))
    await expectFailure(peer, 1002, `code ${code}`)
  })
}

probe("5 close", "a close reason of 123 bytes is echoed", async (peer) => {
  const reason = "*".repeat(123)
  await peer.send(close(1000, reason), "bytes")
  await expectCloseAnswer(peer, { code: 1000, reason }, "123-byte reason")
})

probe("5 close", "a close reason that is not UTF-8 fails with 1007", async (peer) => {
  await peer.send(close(1000, [...KOSME, 0xed, 0xa0, 0x80, ...EDITED]))
  await expectFailure(peer, 1007, "invalid reason")
})

probe("5 close", "a close reason cut inside a code point fails with 1007", async (peer) => {
  await peer.send(close(1000, [0x61, 0xe2, 0x82]))
  await expectFailure(peer, 1007, "truncated reason")
})

for (const [name, after] of [
  ["a text message", [text("Hello, world!")]],
  ["a ping", [ping("after close")]],
  ["a second Close", [close(1001)]],
  ["a broken frame", [{ opcode: 5, rsv: 7, payload: "x" }]]
] as const) {
  probe("5 close", `${name} after the Close is ignored`, async (peer) => {
    await peer.send([close(1000), ...after])
    await expectCloseAnswer(peer, { code: 1000 }, name)
  })
}

probe("5 close", "a fragment, a Close, then the last fragment: only the Close is answered", async (peer) => {
  await peer.send([text("fragment1", false), close(1000), cont("fragment2")])
  await expectCloseAnswer(peer, { code: 1000 }, "7.1.5")
})

probe("5 close", "a large message then a Close in one write: the message is echoed before the Close answer", async (peer) => {
  // (the limit is 100000 bytes: a 64000-byte message stands for Autobahn 7.1.6's)
  const payload = patterned(64_000, "text")
  await peer.send([text(payload), close(1000), ping()])
  await expectFrame(peer, OP.text, payload, "echo")
  await expectCloseAnswer(peer, { code: 1000 }, "close")
})

// ---------------------------------------------------------------------------------------------
// 6. Limits
// ---------------------------------------------------------------------------------------------

for (const kind of ["text", "binary"] as const) {
  const opcode = kind === "text" ? OP.text : OP.binary
  probe("6 limits", `a ${kind} message of exactly the limit is echoed`, async (peer) => {
    const payload = patterned(LIMIT, kind)
    await peer.send({ opcode, payload }, { seed: 11, max: 30_000 })
    await expectFrame(peer, opcode, payload, "echo")
    await closeCleanly(peer, "close")
  })
  probe("6 limits", `a ${kind} frame announcing one byte over the limit fails with 1009 before its payload comes`, async (peer) => {
    const frame = peer.encode({ opcode, payload: patterned(LIMIT + 1, kind) })
    await peer.send(frame.subarray(0, 14 + 1000))
    await expectFailure(peer, 1009, "announced", 2000)
  })
  probe("6 limits", `a ${kind} message going over the limit across fragments fails with 1009 at the fragment's header`, async (peer) => {
    const part = patterned(30_000, kind)
    await peer.send([{ opcode, payload: part, fin: false }, cont(part, false), cont(part, false)])
    const last = peer.encode(cont(Buffer.alloc(20_000, 0x61)))
    await peer.send(last.subarray(0, 8 + 100)) // the header says 110000 bytes in all: none of its payload needed
    await expectFailure(peer, 1009, "across fragments", 2000)
  })
  probe("6 limits", `a ${kind} message of exactly the limit in fragments is echoed`, async (peer) => {
    const payload = kind === "text" ? Buffer.from(textOfBytes(LIMIT)) : patterned(LIMIT, "binary")
    await peer.send(fragmentedAt(payload, opcode, () => 33_333), { seed: 5, max: 50_000 })
    await expectFrame(peer, opcode, payload, "echo")
    await closeCleanly(peer, "close")
  })
}

// ---------------------------------------------------------------------------------------------
// The runs
// ---------------------------------------------------------------------------------------------

/** Runs a case, then checks every frame our side sent in it against the rules of RFC 6455. */
const runCase = async (run: Case, peer: Peer) => {
  await run(peer)
  assert.strictEqual(peer.malformed, undefined, "what our side sent breaks RFC 6455")
}

const families = [...new Set(cases.map(([family]) => family))]

/**
 * What both sides run with: the defaults, and the least buffers (every message in several reads,
 * one message waiting at most), for the families whose cases go through the data path.
 */
const SETTINGS = [
  ["default buffers", {}, families],
  [
    "small buffers",
    { properties: { receiveBufferSize: 256, sendBufferSize: 256 }, connection: { messageBuffer: 1 } },
    families.filter((family) => !family.includes("ping") && !family.includes("close"))
  ]
] as const

for (const [settingsName, settings, familiesRun] of SETTINGS) {
  layer(NodeServer.layer((connection) => echo(connection), { ...settings, maxMessageSize: LIMIT }), { excludeTestServices: true })(
    `our server, ${settingsName}`,
    (it) => {
      for (const family of familiesRun) {
        describe(family, () => {
          for (const [f, name, run, early] of cases) {
            if (f !== family) continue
            it.effect(name, () => Effect.flatMap(openToServer(early), (peer) => Effect.promise(() => runCase(run, peer))))
          }
        })
      }
    }
  )

  describe(`our client, ${settingsName}`, () => {
    for (const family of familiesRun) {
      describe(family, () => {
        for (const [f, name, run, early] of cases) {
          if (f !== family) continue
          it.live(name, () => Effect.flatMap(openToClient(early, settings), (peer) => Effect.promise(() => runCase(run, peer))))
        }
      })
    }
  })
}
