/**
 * The demo behind `pnpm demo`: a WebSocket server on an ephemeral loopback port and a client that
 * connects to it over TCP, exchanges text, binary and a ping, and closes with 1000. The client's
 * transport is tapped, so the transcript shows the opening handshake and every frame on the wire.
 *
 * @since 0.1.0
 */
import { Transport } from "@effect-websocket/core"
import { NodeRuntime } from "@effect/platform-node"
import { Console, Deferred, Effect, Fiber, Schedule, Stream } from "effect"
import * as NodeClient from "./NodeClient.ts"
import * as NodeServer from "./NodeServer.ts"

const OPCODES: Record<number, string> = { 0: "continuation", 1: "text", 2: "binary", 8: "close", 9: "ping", 10: "pong" }
const decoder = new TextDecoder()

const describePayload = (opcode: number, payload: Uint8Array): string => {
  if (opcode === 8) {
    if (payload.length < 2) return "(no status)"
    return `${(payload[0]! << 8) | payload[1]!} ${JSON.stringify(decoder.decode(payload.subarray(2)))}`
  }
  if (opcode === 1 || opcode === 9 || opcode === 10) return JSON.stringify(decoder.decode(payload))
  return [...payload.subarray(0, 16)].map((b) => b.toString(16).padStart(2, "0")).join(" ")
}

/** Splits a byte stream into frames and prints one line per frame (RFC 6455 section 5.2). */
const frameLogger = (direction: string) => {
  let pending = new Uint8Array(0)
  return (bytes: Uint8Array) => {
    const joined = new Uint8Array(pending.length + bytes.length)
    joined.set(pending)
    joined.set(bytes, pending.length)
    pending = joined
    for (;;) {
      if (pending.length < 2) return
      const fin = (pending[0]! & 0x80) !== 0
      const opcode = pending[0]! & 0x0f
      const masked = (pending[1]! & 0x80) !== 0
      let length = pending[1]! & 0x7f
      let offset = 2
      if (length === 126) {
        if (pending.length < 4) return
        length = (pending[2]! << 8) | pending[3]!
        offset = 4
      } else if (length === 127) {
        if (pending.length < 10) return
        length = Number(new DataView(pending.buffer, pending.byteOffset + 2, 8).getBigUint64(0))
        offset = 10
      }
      const key = masked ? pending.slice(offset, offset + 4) : undefined
      if (masked) offset += 4
      if (pending.length < offset + length) return
      const payload = pending.slice(offset, offset + length)
      if (key !== undefined) for (let i = 0; i < payload.length; i++) payload[i]! ^= key[i & 3]!
      const flags = [fin ? "FIN" : "", masked ? "masked" : ""].filter((f) => f !== "").join(" ")
      console.log(
        `${direction}  ${(OPCODES[opcode] ?? `opcode ${opcode}`).padEnd(6)} ${String(length).padStart(3)} B  [${flags}]  ${describePayload(opcode, payload)}`
      )
      pending = pending.slice(offset + length)
    }
  }
}

const printHeaders = (direction: string, startLine: string, headers: ReadonlyArray<{ name: string; value: string }>) =>
  Console.log([`${direction}  ${startLine}`, ...headers.map((h) => `                  ${h.name}: ${h.value}`)].join("\n"))

const program = Effect.gen(function*() {
  const serverClosed = yield* Deferred.make<string>()
  const server = yield* NodeServer.serve(
    (connection): Effect.Effect<unknown, unknown> =>
      Stream.runForEach(connection.messages, (message) => connection.send(message)).pipe(
        Effect.andThen(connection.closed),
        Effect.flatMap((info) => Deferred.succeed(serverClosed, JSON.stringify(info)))
      ),
    { path: "/chat", selectProtocol: (offered) => offered.find((p) => p === "chat.v1") }
  )
  yield* Console.log(`server listening on ${server.url}\n`)

  const toServer = frameLogger("client → server")
  const toClient = frameLogger("server → client")
  const connection = yield* NodeClient.connect(server.url, {
    protocols: ["chat.v2", "chat.v1"],
    origin: "http://127.0.0.1",
    wrapTransport: (transport) =>
      Transport.tap(transport, {
        onWrite: (buffers) => buffers.forEach(toServer),
        onRead: toClient
      })
  })
  yield* printHeaders("client → server", "GET /chat HTTP/1.1", connection.handshake.requestHeaders)
  yield* printHeaders("server → client", "HTTP/1.1 101 Switching Protocols", connection.handshake.responseHeaders)
  yield* Console.log(`\nsubprotocol: ${connection.protocol}\n`)

  const replies = yield* Effect.forkScoped(Stream.runCollect(Stream.take(connection.messages, 2)))
  const text = "hello, websocket.h"
  const binary = new Uint8Array([0x00, 0x01, 0xfe, 0xff])
  yield* connection.send(text)
  yield* connection.send(binary)
  yield* connection.ping(new TextEncoder().encode("are you there?"))
  yield* Effect.sleep("10 millis").pipe(
    Effect.repeat({ until: () => connection.stats.pongsIn > 0, schedule: Schedule.recurs(100) })
  )
  const echoed = yield* Fiber.join(replies)
  const match = echoed[0] === text && echoed[1] instanceof Uint8Array && echoed[1].join() === binary.join()
  const closed = yield* connection.close(1000, "demo done")

  yield* Console.log([
    "",
    `client received ${connection.stats.messagesIn} messages and ${connection.stats.pongsIn} pong (${
      match ? "the echoes match what was sent" : "the echoes DIFFER from what was sent"
    })`,
    `client closed: ${JSON.stringify(closed)}`,
    `server closed: ${yield* Deferred.await(serverClosed)}`
  ].join("\n"))
})

NodeRuntime.runMain(Effect.scoped(program))
