import { assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import { execFile } from "node:child_process"
import { fileURLToPath } from "node:url"

/** What the demo prints: `src/main.ts` run in a new Node.js process (`pnpm demo` runs its build). */
const demoTranscript = Effect.callback<string, Error>((resume) => {
  execFile(
    process.execPath,
    ["--conditions=@effect-websocket/source", fileURLToPath(new URL("../src/main.ts", import.meta.url))],
    { encoding: "utf8" },
    (error, stdout, stderr) => resume(error === null ? Effect.succeed(stdout) : Effect.fail(new Error(`${error.message}\n${stderr}`)))
  )
})

describe("the demo (pnpm demo)", () => {
  it.effect("prints the handshake, every frame on the wire (unmasked and decoded), and an echo that matches, closed with 1000 on both sides", () =>
    Effect.gen(function*() {
      const lines = (yield* demoTranscript).split("\n")
      const frames = (direction: string) =>
        lines.filter((line) => line.startsWith(direction) && !line.includes("HTTP/1.1")).map((line) => line.replace(/ +/g, " "))
      assert.include(lines, "                  Sec-WebSocket-Protocol: chat.v2, chat.v1")
      assert.include(lines, "server → client  HTTP/1.1 101 Switching Protocols")
      assert.include(lines, "                  Sec-WebSocket-Protocol: chat.v1")
      assert.include(lines, "subprotocol: chat.v1")
      // (each direction in the order it was written; the server answers the ping as it reads it,
      // before or after the echoes it writes from its handler)
      assert.deepStrictEqual(frames("client → server"), [
        `client → server text 18 B [FIN masked] "hello, websocket.h"`,
        `client → server binary 4 B [FIN masked] 00 01 fe ff`,
        `client → server ping 14 B [FIN masked] "are you there?"`,
        `client → server close 11 B [FIN masked] 1000 "demo done"`
      ])
      const fromServer = frames("server → client")
      assert.deepStrictEqual(fromServer.slice(0, -1).sort(), [
        `server → client binary 4 B [FIN] 00 01 fe ff`,
        `server → client pong 14 B [FIN] "are you there?"`,
        `server → client text 18 B [FIN] "hello, websocket.h"`
      ])
      assert.strictEqual(fromServer.at(-1), `server → client close 11 B [FIN] 1000 "demo done"`)
      assert.include(lines, "client received 2 messages and 1 pong (the echoes match what was sent)")
      assert.include(lines, `client closed: {"code":1000,"reason":"demo done","clean":true,"initiator":"local"}`)
      assert.include(lines, `server closed: {"code":1000,"reason":"demo done","clean":true,"initiator":"remote"}`)
    }), 60_000)
})
