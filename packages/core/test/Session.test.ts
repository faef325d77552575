import { assert, describe, it } from "@effect/vitest"
import { Arbitrary, Effect, Exit, Schema } from "effect"
import { Action, BufferType, WebSocket, WebSocketError } from "../src/index.ts"

// ---------------------------------------------------------------------------------------------
// An in-memory wire and a small driver over the websocket.h action loop
// ---------------------------------------------------------------------------------------------

const encoder = new TextEncoder()
const decoder = new TextDecoder("utf-8", { fatal: true })

const hex = (s: string): Uint8Array => Uint8Array.from(s.replace(/\s+/g, "").match(/../g) ?? [], (h) => parseInt(h, 16))

/** Bytes one side wrote and the other has not read yet. */
class Pipe {
  private chunks: Array<Uint8Array> = []
  /** Set to report the end of the transport once the bytes run out. */
  ended = false
  write(buffers: ReadonlyArray<Uint8Array>): number {
    let n = 0
    for (const b of buffers) {
      this.chunks.push(b.slice())
      n += b.length
    }
    return n
  }
  get size(): number {
    let n = 0
    for (const c of this.chunks) n += c.length
    return n
  }
  /** Copies as much as fits into `into`; 0 when empty. */
  read(into: Uint8Array): number {
    let n = 0
    while (n < into.length && this.chunks.length > 0) {
      const head = this.chunks[0]!
      const k = Math.min(head.length, into.length - n)
      into.set(head.subarray(0, k), n)
      n += k
      if (k === head.length) this.chunks.shift()
      else this.chunks[0] = head.subarray(k)
    }
    return n
  }
}

/** One end of a session: its handle, the bytes coming in and the bytes going out. */
interface Peer {
  readonly handle: WebSocket.Handle
  readonly inbox: Pipe
  readonly outbox: Pipe
}

/** A client and a server handle after an in-memory opening handshake, wired to each other. */
const connect = (
  clientProperties: WebSocket.HandleProperties = {},
  serverProperties: WebSocket.HandleProperties = {}
) =>
  Effect.gen(function*() {
    const client = yield* WebSocket.createClientHandle(clientProperties)
    const server = yield* WebSocket.createServerHandle(serverProperties)
    const { requestHeaders } = yield* WebSocket.beginClientHandshake(client, {
      initialHeaders: [{ name: "Host", value: "example.com" }]
    })
    const { responseHeaders } = yield* WebSocket.beginServerHandshake(server, { requestHeaders })
    yield* WebSocket.endServerHandshake(server)
    yield* WebSocket.endClientHandshake(client, { responseHeaders })
    const toServer = new Pipe()
    const toClient = new Pipe()
    return {
      client: { handle: client, inbox: toClient, outbox: toServer } satisfies Peer,
      server: { handle: server, inbox: toServer, outbox: toClient } satisfies Peer
    }
  })

/** Runs the send queue until NoAction, writing everything; returns the contexts of the completed sends. */
const flushSends = (peer: Peer) =>
  Effect.gen(function*() {
    const completed: Array<unknown> = []
    for (;;) {
      const action = yield* WebSocket.getAction(peer.handle, "Send")
      switch (action._tag) {
        case "NoAction":
          return completed
        case "SendToNetwork":
          yield* WebSocket.completeAction(peer.handle, action.token, peer.outbox.write(action.buffers))
          break
        case "IndicateSendComplete":
          completed.push(action.applicationContext)
          yield* WebSocket.completeAction(peer.handle, action.token, 0)
          break
        default:
          return yield* Effect.die(new Error(`unexpected ${action._tag} on the send queue`))
      }
    }
  })

/** Queues one send and writes it out. */
const sendNow = (
  peer: Peer,
  bufferType: BufferType.BufferTypeName,
  buffer?: Uint8Array | WebSocket.CloseBuffer
) =>
  Effect.gen(function*() {
    yield* WebSocket.send(peer.handle, bufferType, buffer, bufferType)
    const completed = yield* flushSends(peer)
    assert.deepStrictEqual(completed, [bufferType])
  })

/** A completed receive: its buffer type's name, its data (copied) and close status. */
interface Chunk {
  readonly type: BufferType.BufferTypeName | undefined
  readonly data: Uint8Array
  readonly closeStatus: number | undefined
}

/**
 * Queues one receive and drives the receive queue until it completes: reads come from the inbox
 * (an empty inbox ends the transport only when it was marked ended), automatic pongs go to the
 * outbox.
 */
const receiveOnce = (peer: Peer, buffer?: Uint8Array) =>
  Effect.gen(function*() {
    yield* WebSocket.receive(peer.handle, buffer, "receive")
    for (;;) {
      const action = yield* WebSocket.getAction(peer.handle, "Receive")
      switch (action._tag) {
        case "ReceiveFromNetwork": {
          const n = peer.inbox.read(action.buffer)
          if (n === 0 && !peer.inbox.ended) return yield* Effect.die(new Error("the receive needs bytes that were never sent"))
          yield* WebSocket.completeAction(peer.handle, action.token, n)
          break
        }
        case "SendToNetwork":
          assert.strictEqual(action.queue, "Receive")
          yield* WebSocket.completeAction(peer.handle, action.token, peer.outbox.write(action.buffers))
          break
        case "IndicateReceiveComplete": {
          assert.strictEqual(action.applicationContext, "receive")
          const chunk: Chunk = {
            type: BufferType.nameOf(action.bufferType),
            data: action.data.slice(),
            closeStatus: action.closeStatus
          }
          yield* WebSocket.completeAction(peer.handle, action.token, 0)
          return chunk
        }
        default:
          return yield* Effect.die(new Error(`unexpected ${action._tag} on the receive queue`))
      }
    }
  })

/** Receives chunks until a message ends (or a control buffer arrives); returns the joined message. */
const receiveMessage = (peer: Peer) =>
  Effect.gen(function*() {
    const parts: Array<Uint8Array> = []
    for (;;) {
      const chunk = yield* receiveOnce(peer)
      parts.push(chunk.data)
      if (chunk.type !== "Utf8Fragment" && chunk.type !== "BinaryFragment") {
        const data = new Uint8Array(parts.reduce((n, p) => n + p.length, 0))
        let offset = 0
        for (const p of parts) {
          data.set(p, offset)
          offset += p.length
        }
        return { type: chunk.type, data, closeStatus: chunk.closeStatus, chunks: parts.length }
      }
    }
  })

const pattern = (length: number): Uint8Array => Uint8Array.from({ length }, (_, i) => (i * 31 + (i >>> 8)) & 0xff)

// ---------------------------------------------------------------------------------------------
// Sessions
// ---------------------------------------------------------------------------------------------

describe("session through the action loop", () => {
  it.effect("echoes a text message", () =>
    Effect.gen(function*() {
      const { client, server } = yield* connect()
      const message = "héllo, wörld 😀"
      yield* sendNow(client, "Utf8Message", encoder.encode(message))
      const atServer = yield* receiveMessage(server)
      assert.strictEqual(atServer.type, "Utf8Message")
      assert.strictEqual(decoder.decode(atServer.data), message)
      yield* sendNow(server, "Utf8Message", atServer.data)
      const atClient = yield* receiveMessage(client)
      assert.strictEqual(atClient.type, "Utf8Message")
      assert.strictEqual(decoder.decode(atClient.data), message)
    }))

  it.effect("echoes a binary message larger than the receive buffers, in chunks", () =>
    Effect.gen(function*() {
      const { client, server } = yield* connect({ receiveBufferSize: 256, sendBufferSize: 64 }, { receiveBufferSize: 512 })
      const payload = pattern(10_000)
      yield* sendNow(client, "BinaryMessage", payload)
      const atServer = yield* receiveMessage(server)
      assert.strictEqual(atServer.type, "BinaryMessage")
      assert.deepStrictEqual(atServer.data, payload)
      assert.isAbove(atServer.chunks, 10_000 / 512)
      yield* sendNow(server, "BinaryMessage", atServer.data)
      const atClient = yield* receiveMessage(client)
      assert.deepStrictEqual(atClient.data, payload)
      assert.isAbove(atClient.chunks, 10_000 / 256)
    }))

  it.effect("a fragmented message arrives as fragments, then the message end", () =>
    Effect.gen(function*() {
      const { client, server } = yield* connect()
      yield* sendNow(client, "Utf8Fragment", encoder.encode("Hel"))
      yield* sendNow(client, "Utf8Message", encoder.encode("lo"))
      const first = yield* receiveOnce(server)
      const second = yield* receiveOnce(server)
      assert.deepStrictEqual([first.type, decoder.decode(first.data)], ["Utf8Fragment", "Hel"])
      assert.deepStrictEqual([second.type, decoder.decode(second.data)], ["Utf8Message", "lo"])
    }))

  it.effect("a ping is answered automatically and the pong completes the peer's receive", () =>
    Effect.gen(function*() {
      const { client, server } = yield* connect()
      yield* sendNow(client, "PingPong")
      yield* sendNow(client, "Utf8Message", encoder.encode("after the ping"))
      // the server answers the ping on its receive queue while receiving the message
      const atServer = yield* receiveMessage(server)
      assert.strictEqual(decoder.decode(atServer.data), "after the ping")
      assert.isAbove(server.outbox.size, 0)
      const pong = yield* receiveOnce(client)
      assert.strictEqual(pong.type, "PingPong")
      assert.strictEqual(pong.data.length, 0)
    }))

  it.effect("close handshake started by the client", () =>
    Effect.gen(function*() {
      const { client, server } = yield* connect()
      yield* sendNow(client, "Close", { status: 1000, reason: "bye" })
      const atServer = yield* receiveOnce(server)
      assert.strictEqual(atServer.type, "Close")
      assert.strictEqual(atServer.closeStatus, 1000)
      assert.strictEqual(decoder.decode(atServer.data), "bye")
      yield* sendNow(server, "Close", { status: 1000, reason: encoder.encode("ok") })
      const atClient = yield* receiveOnce(client)
      assert.strictEqual(atClient.type, "Close")
      assert.strictEqual(atClient.closeStatus, 1000)
      assert.strictEqual(decoder.decode(atClient.data), "ok")
      // both sides are closed: nothing more to send or receive
      for (const peer of [client, server]) {
        const error = yield* Effect.flip(WebSocket.send(peer.handle, "Utf8Message", encoder.encode("x")))
        assert.strictEqual(error._tag, "InvalidProtocolOperation")
        const receiveError = yield* Effect.flip(WebSocket.receive(peer.handle))
        assert.strictEqual(receiveError._tag, "InvalidProtocolOperation")
        assert.match(receiveError.message, /Close was already received/)
      }
    }))

  it.effect("close handshake started by the server, answered with an empty Close (1005)", () =>
    Effect.gen(function*() {
      const { client, server } = yield* connect()
      yield* sendNow(server, "Close", { status: 1001, reason: "going away" })
      const atClient = yield* receiveOnce(client)
      assert.deepStrictEqual([atClient.type, atClient.closeStatus, decoder.decode(atClient.data)], ["Close", 1001, "going away"])
      // the client may still send data after the peer's Close, then answers
      yield* sendNow(client, "Utf8Message", encoder.encode("last words"))
      yield* sendNow(client, "Close")
      const last = yield* receiveMessage(server)
      assert.strictEqual(decoder.decode(last.data), "last words")
      const atServer = yield* receiveOnce(server)
      assert.deepStrictEqual([atServer.type, atServer.closeStatus, atServer.data.length], ["Close", 1005, 0])
    }))

  it.effect("the end of the transport completes the receive with Close 1006", () =>
    Effect.gen(function*() {
      const { server } = yield* connect()
      server.inbox.ended = true
      const chunk = yield* receiveOnce(server)
      assert.deepStrictEqual([chunk.type, chunk.closeStatus, chunk.data.length], ["Close", 1006, 0])
    }))

  it.effect("an application receive buffer gets the data copied", () =>
    Effect.gen(function*() {
      const { client, server } = yield* connect()
      yield* sendNow(client, "BinaryMessage", pattern(20))
      const buffer = new Uint8Array(8)
      yield* WebSocket.receive(server.handle, buffer)
      const read = yield* WebSocket.getAction(server.handle, "Receive")
      assert.strictEqual(read._tag, "ReceiveFromNetwork")
      if (read._tag !== "ReceiveFromNetwork") return
      yield* WebSocket.completeAction(server.handle, read.token, server.inbox.read(read.buffer))
      const done = yield* WebSocket.getAction(server.handle, "Receive")
      assert.strictEqual(done._tag, "IndicateReceiveComplete")
      if (done._tag !== "IndicateReceiveComplete") return
      assert.strictEqual(done.data.buffer, buffer.buffer)
      assert.deepStrictEqual(done.data, pattern(20).subarray(0, 8))
      assert.strictEqual(done.bufferType, BufferType.BufferType.BinaryFragment)
      assert.isUndefined(done.closeStatus)
    }))

  it.effect("data-last forms and the All queue", () =>
    Effect.gen(function*() {
      const { client, server } = yield* connect()
      yield* client.handle.pipe(WebSocket.send("BinaryMessage", hex("010203"), "ctx"))
      const write = yield* client.handle.pipe(WebSocket.getAction("All"))
      assert.strictEqual(write._tag, "SendToNetwork")
      if (write._tag !== "SendToNetwork") return
      assert.strictEqual(write.action, Action.ActionCode.SendToNetwork)
      assert.strictEqual(write.queue, "Send")
      assert.strictEqual(write.applicationContext, "ctx")
      yield* client.handle.pipe(WebSocket.completeAction(write.token, client.outbox.write(write.buffers)))
      const done = yield* client.handle.pipe(WebSocket.getAction("All"))
      assert.strictEqual(done._tag, "IndicateSendComplete")
      const message = yield* receiveMessage(server)
      assert.deepStrictEqual(message.data, hex("010203"))
    }))
})

// ---------------------------------------------------------------------------------------------
// Misuse and protocol violations
// ---------------------------------------------------------------------------------------------

const { HRESULT } = WebSocketError

describe("handle properties take effect", () => {
  it.effect("disableMasking: a server accepts an unmasked frame", () =>
    Effect.gen(function*() {
      const { server } = yield* connect({}, { disableMasking: true })
      server.inbox.write([hex("82 03 010203")])
      const chunk = yield* receiveOnce(server)
      assert.deepStrictEqual([chunk.type, Array.from(chunk.data)], ["BinaryMessage", [1, 2, 3]])
    }))

  it.effect("disableMasking: a client masks with the all-zero key; without it, with a fresh random key per frame", () =>
    Effect.gen(function*() {
      const { client } = yield* connect({ disableMasking: true })
      yield* sendNow(client, "BinaryMessage", new Uint8Array([1, 2, 3]))
      const wire = new Uint8Array(client.outbox.size)
      client.outbox.read(wire)
      assert.deepStrictEqual(Array.from(wire), Array.from(hex("82 83 00000000 010203")))
      // (two frames of 2 + 4 + 3 bytes: each key is 4 random bytes, so all-zero or repeated once in 2^32)
      const { client: masking } = yield* connect()
      yield* sendNow(masking, "BinaryMessage", new Uint8Array([1, 2, 3]))
      yield* sendNow(masking, "BinaryMessage", new Uint8Array([1, 2, 3]))
      const frames = new Uint8Array(masking.outbox.size)
      masking.outbox.read(frames)
      const [first, second] = [Array.from(frames.subarray(2, 6)), Array.from(frames.subarray(11, 15))]
      assert.notDeepEqual(first, [0, 0, 0, 0])
      assert.notDeepEqual(second, first)
    }))

  it.effect("disableUtf8Verification: text that is not UTF-8 is delivered as it came", () =>
    Effect.gen(function*() {
      const { client } = yield* connect({ disableUtf8Verification: true })
      client.inbox.write([hex("81 02 c328")])
      const chunk = yield* receiveOnce(client)
      assert.deepStrictEqual([chunk.type, Array.from(chunk.data)], ["Utf8Message", [0xc3, 0x28]])
    }))

  it.effect("sendBufferSize: a client masks and writes its payload in chunks of at most that size", () =>
    Effect.gen(function*() {
      const { client, server } = yield* connect({ sendBufferSize: 16 })
      const payload = pattern(100)
      yield* WebSocket.send(client.handle, "BinaryMessage", payload)
      const writes: Array<number> = []
      for (;;) {
        const action = yield* WebSocket.getAction(client.handle, "Send")
        if (action._tag === "NoAction") break
        if (action._tag === "SendToNetwork") {
          writes.push(...action.buffers.map((b) => b.length))
          yield* WebSocket.completeAction(client.handle, action.token, client.outbox.write(action.buffers))
        } else {
          yield* WebSocket.completeAction(client.handle, action.token, 0)
        }
      }
      // the 6-byte header (2 + masking key), then the payload masked 16 bytes at a time
      assert.deepStrictEqual(writes.reduce((n, k) => n + k, 0), 106)
      assert.isAtMost(Math.max(...writes), 16)
      const atServer = yield* receiveMessage(server)
      assert.deepStrictEqual(atServer.data, payload)
    }))

  it.effect("allocatedBuffer: the handle reads into the memory it was given", () =>
    Effect.gen(function*() {
      const allocated = new Uint8Array(256 + 16 + 256)
      const { client, server } = yield* connect({}, { receiveBufferSize: 256, allocatedBuffer: allocated })
      yield* sendNow(client, "BinaryMessage", pattern(20))
      yield* WebSocket.receive(server.handle)
      const read = yield* WebSocket.getAction(server.handle, "Receive")
      assert.strictEqual(read._tag, "ReceiveFromNetwork")
      if (read._tag !== "ReceiveFromNetwork") return
      assert.strictEqual(read.buffer.buffer, allocated.buffer)
      yield* WebSocket.completeAction(server.handle, read.token, server.inbox.read(read.buffer))
      const done = yield* WebSocket.getAction(server.handle, "Receive")
      assert.strictEqual(done._tag, "IndicateReceiveComplete")
      if (done._tag !== "IndicateReceiveComplete") return
      assert.strictEqual(done.data.buffer, allocated.buffer)
      assert.deepStrictEqual(done.data, pattern(20))
    }))
})

describe("misuse is an invalid operation", () => {
  it.effect("a second outstanding send", () =>
    Effect.gen(function*() {
      const { client } = yield* connect()
      yield* WebSocket.send(client.handle, "Utf8Message", encoder.encode("one"))
      const error = yield* Effect.flip(WebSocket.send(client.handle, "Utf8Message", encoder.encode("two")))
      assert.strictEqual(error._tag, "InvalidProtocolOperation")
      assert.strictEqual(error.hresult, HRESULT.E_INVALID_PROTOCOL_OPERATION)
      assert.strictEqual(error.hresult, 0x83760001)
      assert.match(error.message, /another send is still outstanding/)
      if (error._tag === "InvalidProtocolOperation") {
        assert.strictEqual(error.operation, "send")
        assert.strictEqual(error.state, "Open")
      }
    }))

  it.effect("a second outstanding receive", () =>
    Effect.gen(function*() {
      const { server } = yield* connect()
      yield* WebSocket.receive(server.handle)
      const error = yield* Effect.flip(WebSocket.receive(server.handle))
      assert.strictEqual(error._tag, "InvalidProtocolOperation")
      assert.match(error.message, /another receive is still outstanding/)
    }))

  it.effect("a reused action token", () =>
    Effect.gen(function*() {
      const { client } = yield* connect()
      yield* WebSocket.send(client.handle, "PingPong")
      const action = yield* WebSocket.getAction(client.handle, "Send")
      assert.strictEqual(action._tag, "SendToNetwork")
      if (action._tag !== "SendToNetwork") return
      yield* WebSocket.completeAction(client.handle, action.token, client.outbox.write(action.buffers))
      const error = yield* Effect.flip(WebSocket.completeAction(client.handle, action.token, 0))
      assert.strictEqual(error._tag, "InvalidProtocolOperation")
      assert.strictEqual(error.hresult, 0x83760001)
      assert.match(error.message, /already completed/)
    }))

  it.effect("a token of another handle", () =>
    Effect.gen(function*() {
      const { client, server } = yield* connect()
      yield* WebSocket.send(client.handle, "PingPong")
      const action = yield* WebSocket.getAction(client.handle, "Send")
      assert.strictEqual(action._tag, "SendToNetwork")
      if (action._tag !== "SendToNetwork") return
      // the peer's handle, or another handle of the same kind
      const other = yield* connect()
      for (const handle of [server.handle, other.client.handle]) {
        const error = yield* Effect.flip(WebSocket.completeAction(handle, action.token, 6))
        assert.strictEqual(error._tag, "InvalidProtocolOperation")
        assert.match(error.message, /token does not belong to this handle/)
      }
      // the client can still complete it
      yield* WebSocket.completeAction(client.handle, action.token, client.outbox.write(action.buffers))
    }))

  it.effect("data after a Close was sent; a ping is still fine", () =>
    Effect.gen(function*() {
      const { client } = yield* connect()
      yield* sendNow(client, "Close", { status: 1000 })
      const error = yield* Effect.flip(WebSocket.send(client.handle, "BinaryMessage", pattern(3)))
      assert.strictEqual(error._tag, "InvalidProtocolOperation")
      assert.match(error.message, /Close was already sent/)
      yield* sendNow(client, "PingPong")
    }))

  it.effect("session calls before the handshake", () =>
    Effect.gen(function*() {
      const client = yield* WebSocket.createClientHandle()
      const errors = [
        yield* Effect.flip(WebSocket.send(client, "Utf8Message", encoder.encode("early"))),
        yield* Effect.flip(WebSocket.receive(client)),
        yield* Effect.flip(WebSocket.getAction(client, "All"))
      ]
      yield* WebSocket.beginClientHandshake(client)
      // a client is not open until endClientHandshake
      errors.push(yield* Effect.flip(WebSocket.send(client, "PingPong")))
      for (const error of errors) {
        assert.strictEqual(error._tag, "InvalidProtocolOperation")
        assert.strictEqual(error.hresult, 0x83760001)
        assert.match(error.message, /handshake is not complete/)
      }
      // a server whose handshake began is opened by its first session call
      const server = yield* WebSocket.createServerHandle()
      const early = yield* Effect.flip(WebSocket.receive(server))
      assert.strictEqual(early._tag, "InvalidProtocolOperation")
      const { requestHeaders } = yield* WebSocket.beginClientHandshake(yield* WebSocket.createClientHandle(), {
        initialHeaders: [{ name: "Host", value: "h" }]
      })
      yield* WebSocket.beginServerHandshake(server, { requestHeaders })
      yield* WebSocket.send(server, "PingPong")
    }))

  it.effect("use after deleteHandle", () =>
    Effect.gen(function*() {
      const { client } = yield* connect()
      yield* WebSocket.send(client.handle, "PingPong")
      const action = yield* WebSocket.getAction(client.handle, "Send")
      if (action._tag !== "SendToNetwork") return assert.fail(action._tag)
      yield* WebSocket.deleteHandle(client.handle)
      const errors = [
        yield* Effect.flip(WebSocket.send(client.handle, "PingPong")),
        yield* Effect.flip(WebSocket.receive(client.handle)),
        yield* Effect.flip(WebSocket.getAction(client.handle, "Send")),
        yield* Effect.flip(WebSocket.completeAction(client.handle, action.token, 6))
      ]
      for (const error of errors) {
        assert.strictEqual(error._tag, "InvalidProtocolOperation")
        assert.match(error.message, /deleted/)
        if (error._tag === "InvalidProtocolOperation") assert.strictEqual(error.state, "Deleted")
      }
    }))

  it.effect("use after the handle's scope closed", () =>
    Effect.gen(function*() {
      const { client, server } = yield* Effect.scoped(connect())
      for (const peer of [client, server]) {
        const error = yield* Effect.flip(WebSocket.send(peer.handle, "Utf8Message", encoder.encode("late")))
        assert.strictEqual(error._tag, "InvalidProtocolOperation")
        assert.match(error.message, /deleted/)
        const getError = yield* Effect.flip(WebSocket.getAction(peer.handle, "Receive"))
        assert.strictEqual(getError._tag, "InvalidProtocolOperation")
      }
    }))

  it.effect("use after abortHandle; queued operations drain", () =>
    Effect.gen(function*() {
      const { client } = yield* connect()
      yield* WebSocket.send(client.handle, "BinaryMessage", pattern(10), "pending send")
      yield* WebSocket.receive(client.handle, undefined, "pending receive")
      yield* WebSocket.abortHandle(client.handle)
      const errors = [
        yield* Effect.flip(WebSocket.send(client.handle, "PingPong")),
        yield* Effect.flip(WebSocket.receive(client.handle))
      ]
      for (const error of errors) {
        assert.strictEqual(error._tag, "InvalidProtocolOperation")
        assert.match(error.message, /aborted/)
      }
      const sent = yield* WebSocket.getAction(client.handle, "Send")
      assert.strictEqual(sent._tag, "IndicateSendComplete")
      if (sent._tag !== "IndicateSendComplete") return
      assert.strictEqual(sent.applicationContext, "pending send")
      yield* WebSocket.completeAction(client.handle, sent.token, 0)
      const received = yield* WebSocket.getAction(client.handle, "Receive")
      assert.strictEqual(received._tag, "IndicateReceiveComplete")
      if (received._tag !== "IndicateReceiveComplete") return
      assert.strictEqual(received.closeStatus, 1006)
      assert.strictEqual(received.applicationContext, "pending receive")
      yield* WebSocket.completeAction(client.handle, received.token, 0)
      assert.strictEqual((yield* WebSocket.getAction(client.handle, "All"))._tag, "NoAction")
      assert.strictEqual(client.outbox.size, 0, "nothing was written")
    }))

  it.effect("abortHandle between the hand-out and the completion of a Close indication: the handle stays aborted", () =>
    Effect.gen(function*() {
      const { client, server } = yield* connect()
      yield* sendNow(client, "Close", { status: 1000 })
      yield* sendNow(server, "Close", { status: 1000 })
      yield* WebSocket.receive(client.handle)
      let action = yield* WebSocket.getAction(client.handle, "Receive")
      while (action._tag === "ReceiveFromNetwork") {
        yield* WebSocket.completeAction(client.handle, action.token, client.inbox.read(action.buffer))
        action = yield* WebSocket.getAction(client.handle, "Receive")
      }
      assert.deepStrictEqual([action._tag, action._tag === "IndicateReceiveComplete" ? action.closeStatus : 0], ["IndicateReceiveComplete", 1000])
      yield* WebSocket.abortHandle(client.handle)
      const written = client.outbox.size // (our Close)
      if (action._tag === "IndicateReceiveComplete") yield* WebSocket.completeAction(client.handle, action.token, 0)
      const error = yield* Effect.flip(WebSocket.send(client.handle, "BinaryMessage", pattern(3)))
      assert.deepStrictEqual([error._tag, /aborted/.test(error.message)], ["InvalidProtocolOperation", true], error.message)
      assert.strictEqual((yield* WebSocket.getAction(client.handle, "All"))._tag, "NoAction")
      assert.strictEqual(client.outbox.size, written, "nothing was written after the Close")
    }))

  it.effect("a Close of which nothing was written (0 bytes) may be sent again, as a cancelled data frame", () =>
    Effect.gen(function*() {
      const { client, server } = yield* connect()
      yield* WebSocket.send(client.handle, "Close", { status: 1000, reason: "bye" })
      const write = yield* WebSocket.getAction(client.handle, "Send")
      assert.strictEqual(write._tag, "SendToNetwork")
      if (write._tag === "SendToNetwork") yield* WebSocket.completeAction(client.handle, write.token, 0)
      const done = yield* WebSocket.getAction(client.handle, "Send")
      if (done._tag === "IndicateSendComplete") yield* WebSocket.completeAction(client.handle, done.token, 0)
      // the wire is as it was: the handle is open, and the Close goes out when sent again
      yield* sendNow(client, "BinaryMessage", pattern(4))
      yield* sendNow(client, "Close", { status: 1000, reason: "bye" })
      assert.deepStrictEqual((yield* receiveMessage(server)).data, pattern(4))
      const close = yield* receiveOnce(server)
      assert.deepStrictEqual([close.type, close.closeStatus, decoder.decode(close.data)], ["Close", 1000, "bye"])
    }))

  it.effect("a buffer detached (transferred) before or while the handle needs it is an InvalidParameter, never garbage on the wire or a defect", () =>
    Effect.gen(function*() {
      const detach = (bytes: Uint8Array) => void structuredClone(bytes.buffer, { transfer: [bytes.buffer as ArrayBuffer] })
      const { client, server } = yield* connect()
      const gone = pattern(8)
      detach(gone)
      assert.strictEqual((yield* Effect.flip(WebSocket.send(server.handle, "BinaryMessage", gone)))._tag, "InvalidParameter")
      const receive = yield* Effect.flip(WebSocket.receive(server.handle, gone))
      assert.deepStrictEqual(
        [receive._tag, receive.message],
        ["InvalidParameter", "the buffer given to receive was detached (transferred): its bytes are gone"]
      )
      // a client's payload (masked from the caller's memory) transferred after send
      const payload = pattern(100)
      yield* WebSocket.send(client.handle, "BinaryMessage", payload)
      detach(payload)
      const send = yield* Effect.flip(WebSocket.getAction(client.handle, "Send"))
      assert.deepStrictEqual([send._tag, send.message.includes("detached")], ["InvalidParameter", true], send.message)
      assert.strictEqual(client.outbox.size, 0, "no frame whose header announces bytes that are gone")
      // a receive buffer transferred before its data came (a session of its own: the client's
      // send above is still outstanding, its handle to be aborted)
      const { client: sender, server: receiver } = yield* connect()
      yield* sendNow(sender, "Utf8Message", encoder.encode("hello"))
      const into = new Uint8Array(16)
      yield* WebSocket.receive(receiver.handle, into)
      let action = yield* WebSocket.getAction(receiver.handle, "Receive")
      while (action._tag === "ReceiveFromNetwork") {
        yield* WebSocket.completeAction(receiver.handle, action.token, receiver.inbox.read(action.buffer))
        if (receiver.inbox.size === 0) detach(into)
        const next = yield* Effect.exit(WebSocket.getAction(receiver.handle, "Receive"))
        if (Exit.isFailure(next)) {
          const error = Exit.findErrorOption(next)
          assert.deepStrictEqual(error._tag === "Some" ? error.value._tag : "defect", "InvalidParameter")
          return
        }
        action = next.value
      }
      assert.fail(`expected the detached receive buffer to be reported, got ${action._tag}`)
    }))

  it.effect("a payload shrunk after send (a length-tracking view of a resizable buffer) is an InvalidParameter from getAction; one grown goes out as it was declared", () =>
    Effect.gen(function*() {
      const { client, server } = yield* connect()
      const shrinking = new ArrayBuffer(100, { maxByteLength: 200 })
      yield* WebSocket.send(server.handle, "BinaryMessage", new Uint8Array(shrinking).fill(7))
      shrinking.resize(10)
      const failure = yield* Effect.flip(WebSocket.getAction(server.handle, "Send"))
      assert.strictEqual(failure._tag, "InvalidParameter")
      assert.strictEqual(failure.message, "the buffer given to send was detached (transferred) or shrunk before its operation completed: its bytes are gone")
      assert.strictEqual(server.outbox.size, 0, "no frame whose header announces bytes that are gone")
      // a grown one (a session of its own: every getAction of that server now fails, whatever the
      // queue): its frame carries the 100 bytes declared, then the next message
      const { client: sender, server: receiver } = yield* connect()
      const growing = new ArrayBuffer(100, { maxByteLength: 200 })
      yield* WebSocket.send(sender.handle, "BinaryMessage", new Uint8Array(growing).fill(9))
      growing.resize(200)
      assert.strictEqual((yield* flushSends(sender)).length, 1)
      yield* sendNow(sender, "BinaryMessage", pattern(4))
      assert.deepStrictEqual((yield* receiveMessage(receiver)).data, new Uint8Array(100).fill(9))
      assert.deepStrictEqual((yield* receiveMessage(receiver)).data, pattern(4))
      assert.strictEqual(client.outbox.size, 0)
    }))

  it.effect("abortHandle after a payload was shrunk or detached: the queues drain, the send completes cancelled (as after any failure)", () =>
    Effect.gen(function*() {
      const detach = (bytes: Uint8Array) => void structuredClone(bytes.buffer, { transfer: [bytes.buffer as ArrayBuffer] })
      for (const how of ["shrunk", "detached"] as const) {
        for (const side of ["client", "server"] as const) {
          const peers = yield* connect()
          const peer = peers[side]
          const buffer = new ArrayBuffer(1000, { maxByteLength: 2000 })
          const payload = new Uint8Array(buffer).fill(5)
          yield* WebSocket.send(peer.handle, "BinaryMessage", payload, "mine")
          if (how === "shrunk") buffer.resize(10)
          else detach(payload)
          assert.strictEqual((yield* Effect.flip(WebSocket.getAction(peer.handle, "Send")))._tag, "InvalidParameter")
          yield* WebSocket.abortHandle(peer.handle)
          // the caller gives up on the handle: what it lent it comes back, nothing goes out
          const completed = yield* flushSends(peer)
          assert.deepStrictEqual(completed, ["mine"], `${how} ${side}`)
          assert.strictEqual(peer.outbox.size, 0)
        }
      }
    }))

  it.effect("abortHandle before the handshake is a no-op", () =>
    Effect.gen(function*() {
      const client = yield* WebSocket.createClientHandle()
      yield* WebSocket.abortHandle(client)
      yield* WebSocket.beginClientHandshake(client)
    }))

  it.effect("an unknown queue is an InvalidParameter (E_INVALIDARG); the C values 1, 2, 3 name the queues too", () =>
    Effect.gen(function*() {
      const { client } = yield* connect()
      for (const queue of ["Both", "send", "toString", "constructor", "__proto__", 0, 4, 1.5, null]) {
        const error = yield* Effect.flip(WebSocket.getAction(client.handle, queue as Action.ActionQueue))
        assert.strictEqual(error._tag, "InvalidParameter", String(queue))
        assert.match(error.message, /not an action queue/)
      }
      yield* WebSocket.send(client.handle, "BinaryMessage", new Uint8Array([1]))
      assert.strictEqual((yield* WebSocket.getAction(client.handle, 1))._tag, "SendToNetwork")
      assert.strictEqual((yield* WebSocket.getAction(client.handle, 2))._tag, "NoAction")
    }))

  it.effect("an unknown buffer type is an InvalidParameter (E_INVALIDARG) that names the value given, not another", () =>
    Effect.gen(function*() {
      const { client } = yield* connect()
      const cases: ReadonlyArray<readonly [unknown, string]> = [
        ["Utf8message", `"Utf8message" is not a buffer type`],
        ["toString", `"toString" is not a buffer type`],
        ["constructor", `"constructor" is not a buffer type`],
        ["__proto__", `"__proto__" is not a buffer type`],
        [Number.NaN, "NaN is not a buffer type"],
        [0x80000000 + 0.5, "2147483648.5 is not a buffer type"],
        [null, "null is not a buffer type"],
        [0x80000007, "0x80000007 is not a buffer type"],
        [0, "0x0 is not a buffer type"],
        [-2147483641, "-2147483641 is not a buffer type"],
        [-2147483649, "-2147483649 is not a buffer type"]
      ]
      for (const [type, message] of cases) {
        const error = yield* Effect.flip(WebSocket.send(client.handle, type as BufferType.BufferTypeName, new Uint8Array([1])))
        assert.deepStrictEqual([error._tag, error._tag === "InvalidParameter" && error.parameter], ["InvalidParameter", "bufferType"], String(type))
        assert.include(error.message, message)
      }
      // nothing was queued: the handle sends as before
      yield* WebSocket.send(client.handle, "BinaryMessage", new Uint8Array([1]))
      assert.strictEqual((yield* WebSocket.getAction(client.handle, "Send"))._tag, "SendToNetwork")
    }))
  it.effect("a buffer type's C value read as a signed 32-bit integer (-2147483647 for 0x80000001, as C code holds the enum) is that buffer type", () =>
    Effect.gen(function*() {
      const { client } = yield* connect()
      yield* WebSocket.send(client.handle, (BufferType.BufferType.BinaryMessage | 0) as BufferType.BufferType, new Uint8Array([7]))
      const action = yield* WebSocket.getAction(client.handle, "Send")
      assert.strictEqual(action._tag, "SendToNetwork")
      assert.strictEqual(action._tag === "SendToNetwork" ? action.buffers[0]![0]! & 0x0f : -1, 0x2, "a binary frame")
    }))

  it.effect("the C value 3 names the All queue: it hands out receive actions and send actions", () =>
    Effect.gen(function*() {
      const { client } = yield* connect()
      yield* WebSocket.receive(client.handle)
      assert.strictEqual((yield* WebSocket.getAction(client.handle, 3))._tag, "ReceiveFromNetwork")
      yield* WebSocket.send(client.handle, "BinaryMessage", new Uint8Array([1]))
      assert.strictEqual((yield* WebSocket.getAction(client.handle, 3))._tag, "SendToNetwork")
    }))

  it.effect("endServerHandshake stays allowed, a no-op, through the close handshake (idempotent once open)", () =>
    Effect.gen(function*() {
      const { client, server } = yield* connect()
      yield* sendNow(server, "Close", { status: 1000 })
      yield* WebSocket.endServerHandshake(server.handle as WebSocket.ServerHandle)
      assert.include(String(server.handle), "CloseSent")
      yield* receiveOnce(client)
      yield* sendNow(client, "Close", { status: 1000 })
      yield* receiveOnce(server)
      assert.include(String(server.handle), "Closed")
      yield* WebSocket.endServerHandshake(server.handle as WebSocket.ServerHandle)
      assert.include(String(server.handle), "Closed")
    }))
})

describe("invalid parameters", () => {
  it.effect("a handshake call given no options (from untyped code) fails with InvalidProtocolFormat, not a crash", () =>
    Effect.gen(function*() {
      const client = yield* WebSocket.createClientHandle()
      yield* WebSocket.beginClientHandshake(client, { initialHeaders: [{ name: "Host", value: "h" }] })
      const ended = yield* Effect.flip(WebSocket.endClientHandshake(client, undefined as never))
      assert.strictEqual(ended._tag, "InvalidProtocolFormat")
      const server = yield* WebSocket.createServerHandle()
      const begun = yield* Effect.flip(WebSocket.beginServerHandshake(server, undefined as never))
      assert.strictEqual(begun._tag, "InvalidProtocolFormat")
    }))

  it.effect("close statuses that may not be sent, long reasons, long pings", () =>
    Effect.gen(function*() {
      const { client } = yield* connect()
      const errors = [
        yield* Effect.flip(WebSocket.send(client.handle, "Close", { status: 1005 })),
        yield* Effect.flip(WebSocket.send(client.handle, "Close", { status: 999 })),
        yield* Effect.flip(WebSocket.send(client.handle, "Close", { status: 1000, reason: "x".repeat(124) })),
        yield* Effect.flip(WebSocket.send(client.handle, "PingPong", new Uint8Array(126))),
        yield* Effect.flip(WebSocket.send(client.handle, "Utf8Message", { status: 1000 }))
      ]
      for (const error of errors) {
        assert.strictEqual(error._tag, "InvalidParameter")
        assert.strictEqual(error.hresult, 0x80070057)
        assert.strictEqual(error.hresult, HRESULT.E_INVALIDARG)
      }
      assert.match(errors[0]!.message, /close status 1005 may not be sent/)
      assert.match(errors[2]!.message, /124 bytes/)
      // nothing was queued: a valid Close still goes out
      yield* sendNow(client, "Close", { status: 1000, reason: "x".repeat(123) })
    }))

  it.effect("buffers of the wrong kind (from untyped callers) are InvalidParameter, and leave nothing queued", () =>
    Effect.gen(function*() {
      const { client } = yield* connect()
      for (const buffer of [42, "text", [1, 2], null, { status: "1000" }, { status: 1000, reason: 5 }, new ArrayBuffer(4)]) {
        for (const type of ["BinaryMessage", "Close", "PingPong"] as const) {
          const error = yield* Effect.flip(WebSocket.send(client.handle, type, buffer as never))
          assert.strictEqual(error._tag, "InvalidParameter", `${type} ${JSON.stringify(buffer)}`)
        }
        const error = yield* Effect.flip(WebSocket.receive(client.handle, buffer as never))
        assert.strictEqual(error._tag, "InvalidParameter", `receive ${JSON.stringify(buffer)}`)
      }
      yield* sendNow(client, "BinaryMessage", new Uint8Array([1, 2, 3]))
      yield* WebSocket.receive(client.handle, new Uint8Array(16))
    }))

  it.effect("a write completed with a count that is not a number of its bytes is an InvalidParameter; the action stays outstanding", () =>
    Effect.gen(function*() {
      const { client, server } = yield* connect()
      yield* WebSocket.send(client.handle, "BinaryMessage", pattern(10))
      const write = yield* WebSocket.getAction(client.handle, "Send")
      if (write._tag !== "SendToNetwork") return assert.fail(write._tag)
      const length = write.buffers.reduce((n, b) => n + b.length, 0)
      for (const bytes of [Number.NaN, -1, 1.5, length + 1, Number.POSITIVE_INFINITY, "3" as never, null as never]) {
        const error = yield* Effect.flip(WebSocket.completeAction(client.handle, write.token, bytes))
        assert.strictEqual(error._tag, "InvalidParameter", String(bytes))
        assert.match(error.message, new RegExp(`from 0 to ${length} for this send`))
      }
      // the same token, completed properly, still finishes the send, and the message arrives whole
      yield* WebSocket.completeAction(client.handle, write.token, client.outbox.write(write.buffers))
      assert.deepStrictEqual(yield* flushSends(client), [undefined])
      const chunk = yield* receiveOnce(server)
      assert.deepStrictEqual(chunk.data, pattern(10))
    }))

  it.effect("a read completed with more bytes than offered", () =>
    Effect.gen(function*() {
      const { server } = yield* connect()
      yield* WebSocket.receive(server.handle)
      const read = yield* WebSocket.getAction(server.handle, "Receive")
      if (read._tag !== "ReceiveFromNetwork") return assert.fail(read._tag)
      const error = yield* Effect.flip(WebSocket.completeAction(server.handle, read.token, read.buffer.length + 1))
      assert.strictEqual(error._tag, "InvalidParameter")
      assert.strictEqual(error.hresult, 0x80070057)
    }))

  it.effect("an InvalidParameter the engine reports names the parameter at fault", () =>
    Effect.gen(function*() {
      const { client } = yield* connect()
      const ping = yield* Effect.flip(WebSocket.send(client.handle, "PingPong", new Uint8Array(126)))
      assert.deepStrictEqual([ping._tag, ping._tag === "InvalidParameter" && ping.parameter], ["InvalidParameter", "buffer"])
      yield* WebSocket.send(client.handle, "BinaryMessage", new Uint8Array([1]))
      const write = yield* WebSocket.getAction(client.handle, "Send")
      assert.strictEqual(write._tag, "SendToNetwork")
      if (write._tag !== "SendToNetwork") return
      const count = yield* Effect.flip(WebSocket.completeAction(client.handle, write.token, 1.5))
      assert.deepStrictEqual([count._tag, count._tag === "InvalidParameter" && count.parameter], ["InvalidParameter", "bytesTransferred"])
    }))
})

describe("protocol violations surface from getAction", () => {
  /** Puts raw bytes on the wire to `peer` and receives: the failure of getAction. */
  const violation = (toClient: boolean, wire: string) =>
    Effect.gen(function*() {
      const { client, server } = yield* connect()
      const peer = toClient ? client : server
      peer.inbox.write([hex(wire)])
      return { peer, error: yield* Effect.flip(receiveOnce(peer)) }
    })

  it.effect("an unmasked frame at a server: InvalidProtocolFormat, 1002", () =>
    Effect.gen(function*() {
      const { error, peer } = yield* violation(false, "81 05 48656c6c6f")
      assert.strictEqual(error._tag, "InvalidProtocolFormat")
      assert.strictEqual(error.hresult, 0x83760002)
      assert.strictEqual(error.hresult, HRESULT.E_INVALID_PROTOCOL_FORMAT)
      if (error._tag === "InvalidProtocolFormat") assert.strictEqual(error.closeStatus, 1002)
      assert.match(error.message, /not masked/)
      assert.isTrue(WebSocketError.isWebSocketError(error))
      // (not any error, nor an object that only looks like this one)
      assert.isFalse(WebSocketError.isWebSocketError(new Error(error.message)))
      assert.isFalse(WebSocketError.isWebSocketError({ _tag: error._tag, message: error.message, hresult: error.hresult }))
      // the failure repeats; the application sends its Close and aborts, then the queues drain
      const again = yield* Effect.flip(WebSocket.getAction(peer.handle, "Receive"))
      assert.strictEqual(again._tag, "InvalidProtocolFormat")
      yield* sendNow(peer, "Close", { status: 1002 })
      yield* WebSocket.abortHandle(peer.handle)
      const drained = yield* WebSocket.getAction(peer.handle, "Receive")
      assert.strictEqual(drained._tag, "IndicateReceiveComplete")
      if (drained._tag === "IndicateReceiveComplete") assert.strictEqual(drained.closeStatus, 1006)
    }))

  it.effect("a masked frame at a client: InvalidProtocolFormat, 1002", () =>
    Effect.gen(function*() {
      const { error } = yield* violation(true, "81 85 37fa213d 7f9f4d5158")
      assert.strictEqual(error._tag, "InvalidProtocolFormat")
      if (error._tag === "InvalidProtocolFormat") assert.strictEqual(error.closeStatus, 1002)
      assert.match(error.message, /masked/)
    }))

  it.effect("invalid UTF-8: InvalidProtocolFormat, 1007", () =>
    Effect.gen(function*() {
      const { error } = yield* violation(false, "81 82 00000000 c328")
      assert.strictEqual(error._tag, "InvalidProtocolFormat")
      if (error._tag === "InvalidProtocolFormat") assert.strictEqual(error.closeStatus, 1007)
      assert.match(error.message, /UTF-8/)
    }))

  it.effect("a continuation with no message: InvalidProtocolOperation, 1002", () =>
    Effect.gen(function*() {
      const { error } = yield* violation(true, "80 02 6c6f")
      assert.strictEqual(error._tag, "InvalidProtocolOperation")
      assert.strictEqual(error.hresult, 0x83760001)
      if (error._tag === "InvalidProtocolOperation") {
        assert.strictEqual(error.closeStatus, 1002)
        assert.strictEqual(error.operation, "getAction")
      }
    }))

  it.effect("a close code that may not be on the wire: InvalidProtocolFormat, 1002", () =>
    Effect.gen(function*() {
      const { error } = yield* violation(true, "88 02 03ed")
      assert.strictEqual(error._tag, "InvalidProtocolFormat")
      if (error._tag === "InvalidProtocolFormat") assert.strictEqual(error.closeStatus, 1002)
      assert.match(error.message, /close code 1005/)
    }))

  it.effect("a message over maxMessageSize: InvalidProtocolFormat, 1009", () =>
    Effect.gen(function*() {
      const { server } = yield* connect({}, { maxMessageSize: 1000 })
      server.inbox.write([hex("82 fe 03e9 00000000")])
      const error = yield* Effect.flip(receiveOnce(server))
      assert.strictEqual(error._tag, "InvalidProtocolFormat")
      if (error._tag === "InvalidProtocolFormat") assert.strictEqual(error.closeStatus, 1009)
    }))
})

// ---------------------------------------------------------------------------------------------
// Any sequence of calls
// ---------------------------------------------------------------------------------------------

const int = (minimum: number, maximum: number) => Arbitrary.schema(Schema.Int.check(Schema.isBetween({ minimum, maximum })))

const BUFFER_TYPES = [...Object.keys(BufferType.BufferType), 0x80000007, 0] as ReadonlyArray<BufferType.BufferTypeName | number>
const QUEUES = ["Send", "Receive", "All", "Both"] as ReadonlyArray<Action.ActionQueue | string>
/** bytesTransferred values a driver may get wrong. */
const ODD_BYTES = [-1, 0.5, Number.NaN, Number.POSITIVE_INFINITY, 1e9]

/** One call: on the client or the server handle, with arguments right or wrong. */
const call = Arbitrary.all({
  server: int(0, 1),
  kind: int(0, 19),
  bufferType: int(0, BUFFER_TYPES.length - 1),
  size: int(0, 200),
  closeCode: int(0, 5),
  queue: int(0, QUEUES.length - 1),
  pick: int(0, 1000),
  bytes: int(0, ODD_BYTES.length + 4)
})

/** The bytesTransferred a driver reports for `action`: what it moved, or (by `choice`) a wrong value. */
const bytesFor = (peer: Peer, action: Action.Action, choice: number): number =>
  choice < ODD_BYTES.length
    ? ODD_BYTES[choice]!
    : action._tag === "SendToNetwork"
    ? peer.outbox.write(action.buffers)
    : action._tag === "ReceiveFromNetwork"
    ? peer.inbox.read(action.buffer)
    : 0

const TYPED_ERRORS = ["InvalidProtocolFormat", "InvalidProtocolOperation", "InvalidParameter"]

describe("any sequence of session calls", () => {
  it.effect.prop(
    "never throws or dies: every call succeeds or fails with a typed error, and a correct driver still runs to the end",
    { calls: Arbitrary.array(call, { minLength: 20, maxLength: 80 }) },
    ({ calls }) =>
      Effect.gen(function*() {
        const { client, server } = yield* connect({ receiveBufferSize: 256, sendBufferSize: 256 }, { receiveBufferSize: 256 })
        const tokens: Array<{ readonly peer: Peer; readonly action: Action.Action }> = []
        const closeCodes = [1000, 1005, 1006, 999, 4000, 3000]
        for (const c of calls) {
          const peer = c.server === 1 ? server : client
          const payload = pattern(c.size)
          let effect: Effect.Effect<unknown, WebSocketError.WebSocketError>
          switch (c.kind) {
            case 0:
            case 1:
            case 2:
            case 3: {
              const type = BUFFER_TYPES[c.bufferType]!
              effect = WebSocket.send(
                peer.handle,
                type as BufferType.BufferTypeName,
                type === "Close" ? { status: closeCodes[c.closeCode]!, reason: payload.subarray(0, c.size % 130) } : payload
              )
              break
            }
            case 4:
            case 5:
              effect = WebSocket.receive(peer.handle, c.size % 3 === 0 ? undefined : new Uint8Array(c.size % 40))
              break
            case 6:
            case 7:
            case 8:
            case 9: {
              effect = Effect.tap(
                WebSocket.getAction(peer.handle, QUEUES[c.queue] as Action.ActionQueue),
                (action) => Effect.sync(() => action._tag !== "NoAction" && tokens.push({ peer, action }))
              )
              break
            }
            case 10:
            case 11:
            case 12: {
              // the next action, done as a driver does (or with a wrong byte count)
              effect = Effect.flatMap(WebSocket.getAction(peer.handle, "All"), (action) => {
                if (action._tag === "NoAction") return Effect.void
                tokens.push({ peer, action })
                return WebSocket.completeAction(peer.handle, action.token, bytesFor(peer, action, c.bytes))
              })
              break
            }
            case 13:
            case 14: {
              // a token handed out before (perhaps completed already), on its handle or the other one
              const taken = tokens[c.pick % Math.max(tokens.length, 1)]
              if (taken === undefined || taken.action._tag === "NoAction") continue
              const handle = c.kind === 14 ? peer.handle : taken.peer.handle
              effect = WebSocket.completeAction(handle, taken.action.token, bytesFor(taken.peer, taken.action, c.bytes))
              break
            }
            case 19:
              effect = WebSocket.abortHandle(peer.handle)
              break
            default:
              effect = flushSends(peer)
          }
          const exit = yield* Effect.exit(effect)
          if (exit._tag === "Failure") {
            const error = Exit.findErrorOption(exit)
            assert.isTrue(error._tag === "Some", `a typed failure, not a defect: ${String(exit.cause)}`)
            if (error._tag === "Some") assert.include(TYPED_ERRORS, (error.value as { readonly _tag: string })._tag)
          }
        }
        // whatever happened, draining both handles as a driver does ends (no action loops forever)
        for (const peer of [client, server]) {
          for (let i = 0; i < 10_000; i++) {
            const next = yield* Effect.exit(WebSocket.getAction(peer.handle, "All"))
            if (next._tag === "Failure" || next.value._tag === "NoAction") break
            const action = next.value
            const completed = yield* Effect.exit(WebSocket.completeAction(peer.handle, action.token, bytesFor(peer, action, ODD_BYTES.length)))
            assert.isFalse(completed._tag === "Failure" && Exit.hasDies(completed), "no defect")
            assert.isBelow(i, 9_999, "the action loop ends")
          }
        }
      }),
    // (lists grow with the check's size, 10 by default: at 10 every list had its minimum of 20 calls)
    { arbitrary: { runs: 300, size: 80 } }
  )
})
