/**
 * Interoperability with the Python `websockets` library (Debian's `python3-websockets`, run by the
 * system interpreter): our server with a Python client, and our client with a Python server.
 */
import { assert, describe, it } from "@effect/vitest"
import { Deferred, Effect, Stream } from "effect"
import { NodeClient } from "../../src/index.ts"
import { digest, echoServer, eventually, fixture, messageReader, payloadOfKind, SIZES, spawnChild, within } from "./helpers.ts"

/** The system interpreter, which has the Debian package (not a `python3` earlier on PATH). */
const PYTHON = "/usr/bin/python3"

interface Report {
  readonly ok: boolean
  readonly failures?: ReadonlyArray<string>
  readonly echoes: number
  readonly subprotocol?: string | null
  readonly pong?: boolean
  readonly close_code?: number
  readonly close_reason?: string
  readonly sent_code?: number
}

const runPythonClient = (url: string, mode: "echo" | "server-close" | "limits") =>
  Effect.gen(function*() {
    const child = yield* spawnChild(PYTHON, ["-u", fixture("python_client.py"), url, mode])
    child.process.stdin!.end()
    const result = yield* within(child.exit, 30_000, "the Python client to finish")
    const output = `exit ${result.code}\nstdout: ${result.stdout}\nstderr: ${result.stderr}`
    assert.strictEqual(result.code, 0, output)
    const report = JSON.parse(result.stdout.trim().split("\n").at(-1)!) as Report
    assert.isTrue(report.ok, output)
    return report
  })

const pythonServer = Effect.gen(function*() {
  const child = yield* spawnChild(PYTHON, ["-u", fixture("python_echo_server.py")])
  const line = yield* child.firstLine(15_000)
  const port = Number(line)
  assert.isTrue(Number.isInteger(port) && port > 0, `the Python server printed ${JSON.stringify(line)}`)
  return { url: `ws://127.0.0.1:${port}/`, child }
})

describe("Python websockets client → our server", () => {
  it.live("text, binary and fragmented messages echo intact, ping, then the client closes with 4001", () =>
    Effect.gen(function*() {
      const { accepted, server } = yield* echoServer({ selectProtocol: (offered) => offered[0] })
      const report = yield* runPythonClient(server.url, "echo")
      assert.strictEqual(report.subprotocol, "py-chat")
      assert.strictEqual(report.echoes, 9)
      assert.isTrue(report.pong)
      assert.strictEqual(report.close_code, 4001)
      assert.strictEqual(report.close_reason, "python done")
      const side = yield* accepted
      assert.strictEqual(side.connection.protocol, "py-chat")
      const info = yield* within(side.connection.closed, 5_000, "our connection to close")
      assert.deepStrictEqual(info, { code: 4001, reason: "python done", clean: true, initiator: "remote" })
      assert.deepStrictEqual(
        side.received.slice(0, 2).concat(side.received.slice(7)),
        [digest(""), digest("héllo from python 🐍"), digest("fragments from python"), digest(new Uint8Array([0, 1, 2]))]
      )
      assert.deepStrictEqual(side.received.map((d) => d.size), [0, 23, 70000, 0, 256, 70000, 1024 * 1024, 21, 3])
    }))

  it.live("our server closes with 4002: the Python client sees the code and reason", () =>
    Effect.gen(function*() {
      const { accepted, server } = yield* echoServer()
      const report = yield* runPythonClient(server.url, "server-close")
      assert.strictEqual(report.close_code, 4002)
      assert.strictEqual(report.close_reason, "server says bye")
      const side = yield* accepted
      const info = yield* within(side.connection.closed, 5_000, "our connection to close")
      assert.deepStrictEqual(info, { code: 4002, reason: "server says bye", clean: true, initiator: "local" })
    }))

  it.live("the Python client's keepalive pings are answered; a message over its 1 MiB max_size gets its 1009, which our closed reports", () =>
    Effect.gen(function*() {
      const { accepted, server } = yield* echoServer()
      const report = yield* runPythonClient(server.url, "limits")
      assert.strictEqual(report.echoes, 1)
      assert.strictEqual(report.sent_code, 1009)
      const side = yield* accepted
      assert.isAtLeast(side.connection.stats.pingsIn, 2)
      const info = yield* within(side.connection.closed, 5_000, "our connection to close")
      // (whether our answering Close was written before the Python client stopped reading depends
      // on the socket buffers: `clean` is not asserted)
      assert.deepStrictEqual([info.code, info.reason, info.initiator], [1009, "", "remote"])
      assert.strictEqual(yield* within(Deferred.await(side.outcome), 5_000, "the handler's messages to end"), "end")
      assert.deepStrictEqual(side.received.map((d) => `${d.kind}:${d.size}`), ["text:10", `text:${1024 * 1024 + 1}`])
    }))
})

describe("our client → Python websockets server", () => {
  it.live(`text and binary messages of ${SIZES.join(", ")} bytes echo intact; subprotocol; fragments; ping; close`, () =>
    Effect.gen(function*() {
      const python = yield* pythonServer
      const connection = yield* NodeClient.connect(python.url, { protocols: ["nope", "chat"] })
      assert.strictEqual(connection.protocol, "chat")
      const reader = yield* messageReader(connection)
      for (const kind of ["text", "binary"] as const) {
        for (const size of SIZES) {
          const payload = payloadOfKind(kind, size)
          yield* connection.send(payload)
          assert.deepStrictEqual(digest(yield* reader.next(20_000)), digest(payload), `${kind} message of ${size} bytes`)
        }
      }
      yield* connection.sendFragments(Stream.make("our ", "", "fragments"), "text")
      assert.strictEqual(yield* reader.next(), "our fragments")
      yield* connection.sendFragments(Stream.make(new Uint8Array([1, 2]), new Uint8Array(0), new Uint8Array([3])), "binary")
      assert.deepStrictEqual(yield* reader.next(), new Uint8Array([1, 2, 3]))
      yield* connection.send("fragments")
      assert.strictEqual(yield* reader.next(), "fragments from python")
      yield* connection.ping(new TextEncoder().encode("ping from node"))
      yield* eventually(() => connection.stats.pongsIn === 1, 5_000, "the pong from Python")
      const info = yield* within(connection.close(1000, "done"), 10_000, "our close")
      assert.deepStrictEqual(info, { code: 1000, reason: "done", clean: true, initiator: "local" })
      assert.strictEqual(yield* reader.ended, "end")
    }), 60_000)

  it.live("the Python server closes with 4002: our closed has the code and reason, clean", () =>
    Effect.gen(function*() {
      const python = yield* pythonServer
      const connection = yield* NodeClient.connect(python.url)
      const reader = yield* messageReader(connection)
      yield* connection.send("close:4002:python closing")
      const info = yield* within(connection.closed, 10_000, "our connection to close")
      assert.deepStrictEqual(info, { code: 4002, reason: "python closing", clean: true, initiator: "remote" })
      assert.strictEqual(yield* reader.ended, "end")
    }))
})
