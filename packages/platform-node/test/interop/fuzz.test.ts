/**
 * Whatever a peer sends after the opening handshake, our server and our client neither crash nor
 * hang nor lose data. Property tests over real loopback sockets: byte streams made of frames
 * (well-formed ones of every opcode; frames with reserved bits, masked the wrong way or not
 * final; Closes with any code and reason; random bytes; perhaps one flipped byte), written in
 * random pieces, with `ws`'s own frame parser as the second opinion on the same bytes:
 * - the messages our side takes (the server echoes them) are exactly those `ws`'s parser takes,
 *   in order;
 * - what our side writes parses with `ws`'s parser for the other direction (masking, valid close
 *   codes, valid UTF-8);
 * - when `ws`'s parser fails the stream, ours fails it too, with a protocol close code; when it
 *   sees a whole Close, ours answers with the same code (or 1007: we fail a text message at its
 *   first invalid fragment, `ws` only at its end);
 * - once the peer has sent everything and ended its side, the connection ends within a bound,
 *   and the server still serves a well-behaved client afterwards.
 */
import type { Connection } from "@effect-websocket/core"
import { assert, describe, it } from "@effect/vitest"
import { Arbitrary, Effect, Schema, Stream } from "effect"
import { createHash } from "node:crypto"
import * as Net from "node:net"
import * as Tls from "node:tls"
import type { Writable } from "node:stream"
import * as WsModule from "ws"
import { NodeClient, NodeServer } from "../../src/index.ts"
import { certificate, wsConnect, wsSend } from "./helpers.ts"

/** The maximum message size of both our side and `ws`'s parser; some generated messages exceed it. */
const MAX_MESSAGE = 64 * 1024

/** A certificate and its key, for the `wss://` runs. */
interface TlsSettings {
  readonly cert: string
  readonly key: string
}
/** How long a connection may take to end once the peer has sent everything and ended its side. */
const CLOSE_BOUND_MS = 3000

// `ws` exports its frame parser (the Writable that `WebSocket` feeds with socket data) but its
// type declarations do not.
interface Receiver extends Writable {
  on(event: "message", listener: (data: Buffer, isBinary: boolean) => void): this
  on(event: "conclude", listener: (code: number, reason: Buffer) => void): this
  on(event: "error", listener: (error: Error) => void): this
  on(event: string, listener: (...args: Array<any>) => void): this
}
const { Receiver } = WsModule as unknown as {
  readonly Receiver: new(options: {
    readonly isServer: boolean
    readonly maxPayload: number
    readonly binaryType: "nodebuffer"
    readonly skipUTF8Validation: boolean
    readonly allowSynchronousEvents: boolean
  }) => Receiver
}

/** The status code `ws` attached to a parser error (its `kStatusCode` symbol). */
const statusCodeOf = (error: Error): number | undefined => {
  const symbol = Object.getOwnPropertySymbols(error).find((s) => s.description === "status-code")
  return symbol === undefined ? undefined : (error as unknown as Record<symbol, number>)[symbol]
}

interface Parsed {
  readonly messages: ReadonlyArray<{ readonly binary: boolean; readonly data: Buffer }>
  /** The code of a complete Close frame, 1005 for an empty one. */
  readonly closeCode?: number
  /** The close code of the failure, when the parser failed the stream. */
  readonly failureCode?: number
  readonly failure?: string
}

/** Everything `ws`'s parser makes of `bytes`, as a server (masked frames) or a client. */
const parseWithWs = (bytes: Uint8Array, isServer: boolean): Promise<Parsed> =>
  new Promise((resolve) => {
    const receiver = new Receiver({
      isServer,
      maxPayload: MAX_MESSAGE,
      binaryType: "nodebuffer",
      skipUTF8Validation: false,
      allowSynchronousEvents: true
    })
    const messages: Array<{ binary: boolean; data: Buffer }> = []
    let closeCode: number | undefined
    let failure: Error | undefined
    receiver.on("message", (data, binary) => messages.push({ binary, data: Buffer.from(data) }))
    receiver.on("conclude", (code) => (closeCode ??= code))
    receiver.on("error", (error) => (failure ??= error))
    receiver.on("ping", () => {})
    receiver.on("pong", () => {})
    receiver.write(Buffer.from(bytes))
    // errors reach the listener on a later tick
    setImmediate(() =>
      resolve({
        messages,
        ...(closeCode === undefined ? {} : { closeCode }),
        ...(failure === undefined ? {} : { failure: failure.message, failureCode: statusCodeOf(failure) ?? -1 })
      })
    )
  })

// ---------------------------------------------------------------------------------------------
// Byte streams
// ---------------------------------------------------------------------------------------------

/** One frame, masked with `key` unless `key` is undefined; `rsv` goes into bits 4-6 of byte 0. */
const frame = (opcode: number, fin: boolean, rsv: number, payload: Uint8Array, key: Uint8Array | undefined) => {
  const length = payload.length
  const lengthBytes = length < 126 ? 0 : length < 65536 ? 2 : 8
  const header = new Uint8Array(2 + lengthBytes + (key === undefined ? 0 : 4))
  header[0] = (fin ? 0x80 : 0) | ((rsv & 7) << 4) | (opcode & 0x0f)
  header[1] = (key === undefined ? 0 : 0x80) | (lengthBytes === 0 ? length : lengthBytes === 2 ? 126 : 127)
  const view = new DataView(header.buffer)
  if (lengthBytes === 2) view.setUint16(2, length)
  if (lengthBytes === 8) view.setBigUint64(2, BigInt(length))
  const body = Uint8Array.from(payload)
  if (key !== undefined) {
    header.set(key, 2 + lengthBytes)
    for (let i = 0; i < body.length; i++) body[i]! ^= key[i & 3]!
  }
  return Buffer.concat([header, body])
}

const CLOSE_CODES = [1000, 1001, 1002, 1003, 1004, 1005, 1006, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014, 1015, 999, 2999, 3000, 4999, 5000]
/**
 * Opcodes of generated frames, by weight: mostly text and binary, some continuations, pings and
 * pongs, and two reserved opcodes.
 */
const OPCODES = [1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 0, 9, 10, 3, 11]

const int = (minimum: number, maximum: number) => Arbitrary.schema(Schema.Int.check(Schema.isBetween({ minimum, maximum })))
const bytes = (maxLength: number) => Arbitrary.array(int(0, 255), { maxLength }).pipe(Arbitrary.map((b) => Uint8Array.from(b)))
const text = Arbitrary.schema(Schema.String.check(Schema.isMaxLength(60)))

/** A payload of about `size` bytes: counting bytes, or text with 1- to 4-byte characters. */
const largePayload = (binary: boolean, size: number): Uint8Array =>
  binary
    ? Uint8Array.from({ length: size }, (_, i) => (i * 31 + size) & 0xff)
    : Buffer.from("ab\u00e9\u65e5\u{1f600}".repeat(Math.ceil(size / 11)))

/**
 * A piece of a byte stream from a client (`masking`) or a server: mostly a well-formed frame;
 * sometimes one with reserved bits, masked the wrong way or not final; a Close (any code, a reason
 * that may not be UTF-8, empty, or one byte); or random bytes.
 */
const piece = (masking: boolean) =>
  Arbitrary.all({
    kind: int(0, 19),
    opcode: int(0, OPCODES.length - 1),
    fin: int(0, 4),
    rsv: int(0, 39),
    masked: int(0, 39),
    text,
    binary: bytes(300),
    large: int(0, 7),
    largeSize: int(126, MAX_MESSAGE + MAX_MESSAGE / 2),
    key: Arbitrary.array(int(0, 255), { minLength: 4, maxLength: 4 }),
    closeCode: int(0, CLOSE_CODES.length - 1),
    closeShape: int(0, 5),
    garbage: bytes(16)
  }).pipe(Arbitrary.map((p): Uint8Array => {
    const key = Uint8Array.from(p.key)
    if (p.kind === 19) return p.garbage
    if (p.kind >= 17) {
      const code = CLOSE_CODES[p.closeCode]!
      const reason = p.closeShape === 0 ? p.binary.subarray(0, 8) : Buffer.from(p.text)
      const payload = p.closeShape === 4
        ? new Uint8Array(0)
        : p.closeShape === 5
        ? Uint8Array.of(code >> 8)
        : Buffer.concat([Uint8Array.of(code >> 8, code & 0xff), reason])
      return frame(8, true, 0, payload, masking ? key : undefined)
    }
    const opcode = OPCODES[p.opcode]!
    // text and continuations carry UTF-8 text mostly; control frames at most 125 bytes
    const payload = p.large === 0 && opcode < 8
      ? largePayload(opcode === 2, p.largeSize)
      : opcode === 2 || p.binary.length % 4 === 0
      ? p.binary
      : Buffer.from(p.text)
    return frame(
      opcode,
      p.fin !== 0,
      p.rsv === 38 ? 1 : p.rsv === 39 ? 4 : 0,
      opcode >= 8 ? payload.subarray(0, 125) : payload,
      (p.masked === 0) === masking ? undefined : key
    )
  }))

/** A client's (`masking`) or a server's bytes: the pieces, then perhaps one byte flipped. */
const byteStream = (masking: boolean) =>
  Arbitrary.all({
    pieces: Arbitrary.array(piece(masking), { minLength: 1, maxLength: 8 }),
    flip: int(0, 4),
    flipAt: int(0, 1 << 20),
    flipXor: int(1, 255)
  }).pipe(Arbitrary.map(({ flip, flipAt, flipXor, pieces }) => {
    const stream = Buffer.concat(pieces)
    if (flip === 0 && stream.length > 0) stream[flipAt % stream.length]! ^= flipXor
    return stream
  }))

/** Sizes of the pieces the bytes are written in, in turn (none: all at once), small or large. */
const pieceSizes = Arbitrary.all({ sizes: Arbitrary.array(int(1, 64), { maxLength: 6 }), scale: int(0, 2) }).pipe(
  Arbitrary.map(({ scale, sizes }) => sizes.map((size) => scale === 0 ? size * 1024 : size))
)

/** Writes `stream` to `socket` in pieces of the given sizes, each in its own tick, then ends it. */
const writeInPieces = (socket: Net.Socket, stream: Uint8Array, sizes: ReadonlyArray<number>, ended: () => void) => {
  let offset = 0
  let i = 0
  const next = () => {
    if (socket.destroyed) return
    if (offset >= stream.length) {
      socket.end()
      ended()
      return
    }
    const size = sizes.length === 0 ? stream.length : sizes[i++ % sizes.length]!
    socket.write(stream.subarray(offset, offset + size))
    offset += size
    setImmediate(next)
  }
  next()
}

// ---------------------------------------------------------------------------------------------
// A raw client
// ---------------------------------------------------------------------------------------------

const UPGRADE = [
  "GET / HTTP/1.1",
  "Host: 127.0.0.1",
  "Upgrade: websocket",
  "Connection: Upgrade",
  "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
  "Sec-WebSocket-Version: 13",
  "",
  ""
].join("\r\n")

/**
 * Upgrades a raw connection, writes `stream` in pieces of the given sizes (each in its own tick),
 * ends the client's side, and collects what the server writes after its 101 response until it
 * closes the socket. Fails when that takes longer than {@link CLOSE_BOUND_MS} after the end.
 */
const exchange = (port: number, stream: Uint8Array, sizes: ReadonlyArray<number>, secure: boolean) =>
  Effect.callback<Buffer, Error>((resume) => {
    const socket: Net.Socket = secure
      ? Tls.connect({ port, host: "127.0.0.1", rejectUnauthorized: false })
      : Net.connect(port, "127.0.0.1")
    const received: Array<Buffer> = []
    let timer: ReturnType<typeof setTimeout> | undefined
    socket.on("data", (chunk: Buffer) => received.push(chunk))
    socket.on("error", () => {}) // a reset after the server's close is fine: the close is what counts
    socket.on("close", () => {
      clearTimeout(timer)
      const all = Buffer.concat(received)
      const end = all.indexOf("\r\n\r\n")
      if (!all.subarray(0, 12).equals(Buffer.from("HTTP/1.1 101")) || end < 0) {
        return resume(Effect.fail(new Error(`no 101 response: ${JSON.stringify(all.subarray(0, 200).toString("latin1"))}`)))
      }
      resume(Effect.succeed(all.subarray(end + 4)))
    })
    socket.write(UPGRADE)
    writeInPieces(socket, stream, sizes, () => {
      timer = setTimeout(() => {
        socket.destroy()
        resume(Effect.fail(new Error(`the server did not close the socket within ${CLOSE_BOUND_MS} ms of the client's end`)))
      }, CLOSE_BOUND_MS)
    })
    return Effect.sync(() => socket.destroy())
  })

// ---------------------------------------------------------------------------------------------
// A raw server
// ---------------------------------------------------------------------------------------------

/**
 * A raw server on 127.0.0.1 that answers one upgrade with 101, writes `stream` in pieces, ends
 * its side, and collects what the client writes after its request until the socket closes.
 */
const rawServer = (stream: Uint8Array, sizes: ReadonlyArray<number>, tls?: TlsSettings) =>
  Effect.acquireRelease(
    Effect.callback<{ readonly port: number; readonly received: Promise<Buffer>; readonly server: Net.Server }>((resume) => {
      let deliver: (bytes: Buffer) => void = () => {}
      const received = new Promise<Buffer>((resolve) => (deliver = resolve))
      const onSocket = (socket: Net.Socket) => {
        let chunks: Array<Buffer> = []
        let upgraded = false
        socket.on("error", () => {})
        socket.on("close", () => deliver(Buffer.concat(chunks)))
        socket.on("data", (chunk: Buffer) => {
          chunks.push(chunk)
          if (upgraded) return
          const all = Buffer.concat(chunks)
          const end = all.indexOf("\r\n\r\n")
          if (end < 0) return
          upgraded = true
          chunks = [all.subarray(end + 4)]
          const key = /sec-websocket-key: *(\S+)/i.exec(all.subarray(0, end).toString("latin1"))?.[1] ?? ""
          const accept = createHash("sha1").update(`${key}258EAFA5-E914-47DA-95CA-C5AB0DC85B11`).digest("base64")
          socket.write(
            `HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ${accept}\r\n\r\n`
          )
          writeInPieces(socket, stream, sizes, () => {})
        })
      }
      const server = tls === undefined ? Net.createServer(onSocket) : Tls.createServer(tls, onSocket)
      server.listen(0, "127.0.0.1", () =>
        resume(Effect.succeed({ port: (server.address() as Net.AddressInfo).port, received, server })))
    }),
    ({ server }) => Effect.sync(() => server.close())
  )

const PROTOCOL_FAILURE_CODES = [1002, 1007, 1009]

/** What the runs covered, checked once they are done. */
const covered = { runs: 0, failures: 0, closes: 0, echoes: 0, clientRuns: 0 }
const RUNS = 200
const TLS_RUNS = 60
/**
 * The checks' size: generated byte arrays and strings grow with it (10 by default) as the runs go;
 * at twice the 300 random bytes of a piece, half the runs can reach those (control frames of 125
 * bytes, random text frames of more than a few bytes).
 */
const SIZE = 600

/**
 * One run of the server property: `stream` written in pieces of `sizes` to our echo server (over
 * TLS with `tls`), judged against `ws`'s parser.
 */
const serverRun = (stream: Buffer, sizes: ReadonlyArray<number>, tls?: TlsSettings) =>
  Effect.gen(function*() {
    const server = yield* NodeServer.serve(
      (connection) => Stream.runForEach(connection.messages, (message) => connection.send(message)),
      { maxMessageSize: MAX_MESSAGE, ...(tls === undefined ? {} : { tls }) }
    )
    const expected = yield* Effect.promise(() => parseWithWs(stream, true))
    const output = yield* exchange(server.address.port, stream, sizes, tls !== undefined)
    const answer = yield* Effect.promise(() => parseWithWs(output, false))
    const context = JSON.stringify({
      stream: stream.toString("hex"),
      expected: { ...expected, messages: expected.messages.length },
      answer: { ...answer, messages: answer.messages.length }
    })
    covered.runs++
    // well-formed server frames
    assert.isUndefined(answer.failure, context)
    // the echoes are the messages ws takes from the same bytes, in order, all of them
    assert.strictEqual(answer.messages.length, expected.messages.length, context)
    answer.messages.forEach((message, i) => {
      assert.strictEqual(message.binary, expected.messages[i]!.binary, context)
      assert.isTrue(message.data.equals(expected.messages[i]!.data), context)
    })
    covered.echoes += answer.messages.length
    if (expected.failureCode !== undefined) {
      covered.failures++
      assert.include(PROTOCOL_FAILURE_CODES, answer.closeCode, context)
    } else if (expected.closeCode !== undefined) {
      covered.closes++
      assert.include([expected.closeCode, 1007], answer.closeCode, context)
    }
    // the server still serves a well-behaved client
    const peer = yield* wsConnect(server.url, undefined, { rejectUnauthorized: false })
    yield* wsSend(peer, "still here")
    const echo = yield* peer.next(5000)
    assert.strictEqual(echo.data.toString("utf8"), "still here")
  })

/** The certificate for the `wss://` runs, made once. */
let tlsSettings: TlsSettings | undefined
const tlsOnce = Effect.suspend(() =>
  tlsSettings === undefined
    ? Effect.tap(Effect.scoped(certificate), (settings) => Effect.sync(() => (tlsSettings = settings)))
    : Effect.succeed(tlsSettings)
)

/**
 * One run of the client property: our client against a raw server (over TLS with `tls`) that
 * answers the upgrade, then writes `stream` in pieces of `sizes`; judged against `ws`'s parser.
 */
const clientRun = (stream: Buffer, sizes: ReadonlyArray<number>, tls?: TlsSettings) =>
  Effect.gen(function*() {
    const server = yield* rawServer(stream, sizes, tls)
    const expected = yield* Effect.promise(() => parseWithWs(stream, false))
    const { closed, messages } = yield* Effect.scoped(Effect.gen(function*() {
      const connection = yield* NodeClient.connect(`${tls === undefined ? "ws" : "wss"}://127.0.0.1:${server.port}/`, {
        maxMessageSize: MAX_MESSAGE,
        tls: { rejectUnauthorized: false }
      })
      const messages: Array<Connection.Message> = []
      yield* Effect.exit(Stream.runForEach(connection.messages, (m) => Effect.sync(() => messages.push(m))))
      return { closed: yield* connection.closed, messages }
    })).pipe(Effect.timeout(CLOSE_BOUND_MS))
    const output = yield* Effect.promise(() => server.received).pipe(Effect.timeout(CLOSE_BOUND_MS))
    const answer = yield* Effect.promise(() => parseWithWs(output, true))
    const context = JSON.stringify({
      stream: stream.toString("hex"),
      expected: { ...expected, messages: expected.messages.length },
      answer: { ...answer, messages: answer.messages.length },
      closed,
      messages: messages.length
    })
    covered.clientRuns++
    // well-formed client frames (masked), and no data: the client only answered
    assert.isUndefined(answer.failure, context)
    assert.strictEqual(answer.messages.length, 0, context)
    // every message ws takes from the same bytes, in order
    assert.strictEqual(messages.length, expected.messages.length, context)
    messages.forEach((message, i) => {
      assert.strictEqual(typeof message !== "string", expected.messages[i]!.binary, context)
      assert.isTrue(Buffer.from(message).equals(expected.messages[i]!.data), context)
    })
    if (expected.failureCode !== undefined) {
      assert.include(PROTOCOL_FAILURE_CODES, answer.closeCode, context)
      assert.strictEqual(closed.code, answer.closeCode, context)
    } else if (expected.closeCode !== undefined) {
      assert.include([expected.closeCode, 1007], answer.closeCode, context)
    }
  })

describe("any bytes after the upgrade", () => {
  const properties = [
    ["the server stays well-formed, in step with ws's parser, never hangs, and serves the next client", true, serverRun],
    ["our client takes what ws takes from the same bytes, answers well-formed, and never hangs", false, clientRun]
  ] as const
  for (const [name, fromClient, run] of properties) {
    it.live.prop(
      name,
      { stream: byteStream(fromClient), sizes: pieceSizes },
      ({ sizes, stream }) => run(stream, sizes),
      { timeout: 120_000, arbitrary: { runs: RUNS, size: SIZE } }
    )
    it.live.prop(
      `${name}, over wss://`,
      { stream: byteStream(fromClient), sizes: pieceSizes },
      ({ sizes, stream }) => Effect.flatMap(tlsOnce, (tls) => run(stream, sizes, tls)),
      { timeout: 120_000, arbitrary: { runs: TLS_RUNS, size: SIZE } }
    )
  }

  it("the runs covered failures, clean closes and echoes", () => {
    assert.strictEqual(covered.runs, RUNS + TLS_RUNS)
    assert.strictEqual(covered.clientRuns, RUNS + TLS_RUNS)
    assert.isAbove(covered.failures, RUNS / 10, JSON.stringify(covered))
    assert.isAbove(covered.closes, RUNS / 30, JSON.stringify(covered))
    assert.isAbove(covered.echoes, RUNS / 4, JSON.stringify(covered))
  })
})
