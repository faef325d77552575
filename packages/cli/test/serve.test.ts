import { assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import { execFileSync } from "node:child_process"
import * as Fs from "node:fs"
import * as Net from "node:net"
import * as Os from "node:os"
import * as Path from "node:path"
import { eventually, ews, ewsRun, httpServer, parseLines, serve, within, wsClient } from "./fixtures.ts"

/** A client that completes the opening handshake to `url` and then reads nothing. */
const stalledClient = (url: string) =>
  Effect.gen(function*() {
    const slow = yield* Effect.acquireRelease(
      Effect.sync(() => Net.connect(Number(new URL(url).port), "127.0.0.1")),
      (socket) => Effect.sync(() => socket.destroy())
    )
    slow.on("error", () => {})
    slow.once("data", () => slow.pause())
    slow.write(
      ["GET / HTTP/1.1", "Host: 127.0.0.1", "Upgrade: websocket", "Connection: Upgrade",
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==", "Sec-WebSocket-Version: 13", "", ""].join("\r\n")
    )
    return slow
  })

describe("ews serve", () => {
  it.live("--echo answers a ws client with the same message types, answers pings and honours the close handshake", () =>
    Effect.gen(function*() {
      const { proc, url } = yield* serve(["--echo"])
      assert.match(url, /^ws:\/\/127\.0\.0\.1:\d+\/$/)
      const peer = yield* wsClient(url)
      peer.ws.send("héllo")
      peer.ws.send(Buffer.from([0, 1, 2, 255]))
      const text = yield* peer.message("the text echo")
      const binary = yield* peer.message("the binary echo")
      assert.deepStrictEqual([text.binary, text.data.toString("utf8")], [false, "héllo"])
      assert.deepStrictEqual([binary.binary, [...binary.data]], [true, [0, 1, 2, 255]])
      peer.ws.ping(Buffer.from("p"))
      yield* eventually(() => peer.pongs() === 1, 5000, "a pong")
      peer.ws.close(1000, "bye")
      const closed = yield* peer.closed
      assert.deepStrictEqual(closed, { code: 1000, reason: "bye" })
      // the connection shows on stderr
      yield* eventually(() => /closed 1000/.test(proc.stderr()), 5000, "the close to be logged")
      assert.match(proc.stderr(), /\[#1\] connected from 127\.0\.0\.1 to \//)
      assert.match(proc.stderr(), /\[#1\] closed 1000 \(normal closure\) "bye", by the peer/)
      assert.match(proc.stderr(), /\[#1\] received ping/)
      // the echoed messages are not printed: stdout has only the listening line
      assert.deepStrictEqual(proc.stdout, [`listening ${url}`])
    }))

  it.live("--broadcast relays every message to every other client, not back to its sender", () =>
    Effect.gen(function*() {
      const { url } = yield* serve(["--broadcast"])
      const a = yield* wsClient(url)
      const b = yield* wsClient(url)
      const c = yield* wsClient(url)
      a.ws.send("from a")
      const atB = yield* b.message("a's message at b")
      const atC = yield* c.message("a's message at c")
      assert.strictEqual(atB.data.toString(), "from a")
      assert.strictEqual(atC.data.toString(), "from a")
      b.ws.send(Buffer.from([7, 8]))
      const atA = yield* a.message("b's message at a")
      assert.deepStrictEqual([atA.binary, [...atA.data]], [true, [7, 8]])
      const atC2 = yield* c.message("b's message at c")
      assert.strictEqual(atC2.binary, true)
      // a got nothing of its own: the next thing it receives is c's message
      c.ws.send("from c")
      const next = yield* a.message("c's message at a")
      assert.strictEqual(next.data.toString(), "from c")
    }))

  it.live("--broadcast relays messages larger than its backlog to a client that reads them", () =>
    Effect.gen(function*() {
      const { proc, url } = yield* serve(["--broadcast"])
      const a = yield* wsClient(url)
      const b = yield* wsClient(url)
      const big = Buffer.alloc(17 * 1024 * 1024, 1)
      a.ws.send(big)
      a.ws.send(big)
      for (const n of [1, 2]) assert.strictEqual((yield* b.message(`big message ${n} at b`)).data.length, big.length)
      assert.notMatch(proc.stderr(), /closed 1006/)
    }), 30_000)

  it.live("--broadcast: a client that stops reading is cut off, and the others get every message", () =>
    Effect.gen(function*() {
      const { proc, url } = yield* serve(["--broadcast"])
      const slow = yield* stalledClient(url)
      yield* eventually(() => /\[#1\] connected/.test(proc.stderr()), 5000, "the slow client to connect")
      const a = yield* wsClient(url)
      const b = yield* wsClient(url)
      // in rounds b keeps up with, until the slow client is cut off: far more than its socket
      // buffers and backlog hold, for longer than the server's patience
      const message = "x".repeat(32 * 1024)
      const started = Date.now()
      for (let round = 0; !/\[#1\] closed 1006/.test(proc.stderr()) && Date.now() - started < 30_000; round++) {
        for (let i = 0; i < 100; i++) a.ws.send(message)
        for (let i = 0; i < 100; i++) assert.strictEqual((yield* b.message(`message ${round * 100 + i} at b`)).data.length, message.length)
        yield* Effect.sleep("50 millis")
      }
      // the slow client was cut off: it sees the end of its socket once it reads again
      yield* within(
        Effect.callback<void>((resume) => {
          slow.once("close", () => resume(Effect.void))
          slow.resume()
        }),
        5000,
        "the slow client's socket to close"
      )
      yield* eventually(() => /\[#1\] closed 1006/.test(proc.stderr()), 5000, "the cut to be logged")
    }), 60_000)

  it.live("--broadcast: a client that stops reading is cut off about 5 s after it fell behind, though the room then goes quiet", () =>
    Effect.gen(function*() {
      const { proc, url } = yield* serve(["--broadcast"])
      yield* stalledClient(url)
      yield* eventually(() => /\[#1\] connected/.test(proc.stderr()), 5000, "the slow client to connect")
      const a = yield* wsClient(url)
      const b = yield* wsClient(url)
      // one burst, far more than the slow client's socket buffers and backlog hold; then silence
      const message = Buffer.alloc(1024 * 1024, 1)
      for (let i = 0; i < 40; i++) a.ws.send(message)
      for (let i = 0; i < 40; i++) yield* b.message(`message ${i} at b`)
      yield* eventually(() => /\[#1\] closed 1006/.test(proc.stderr()), 10_000, "the slow client to be cut off without more traffic")
    }), 30_000)

  it.live("without a mode, prints received messages and sends stdin lines to every client; --stats counts each direction apart", () =>
    Effect.gen(function*() {
      const { proc, url } = yield* serve(["--stats"])
      // a line while no client is connected is dropped, and says so
      yield* proc.write("to nobody\n")
      yield* eventually(() => proc.stderr().includes("no client connected; line dropped"), 5000, "the dropped line to be reported")
      const a = yield* wsClient(url)
      const b = yield* wsClient(url)
      a.ws.send("line from a")
      assert.strictEqual(yield* proc.line("a's message on stdout"), "line from a")
      b.ws.send(Buffer.from("AB"))
      assert.strictEqual(yield* proc.line("b's binary message on stdout"), "<binary 2 bytes: 4142>")
      yield* proc.write("to everyone\n")
      const atA = yield* a.message("the stdin line at a")
      const atB = yield* b.message("the stdin line at b")
      assert.deepStrictEqual([atA.binary, atA.data.toString()], [false, "to everyone"])
      assert.deepStrictEqual([atB.binary, atB.data.toString()], [false, "to everyone"])
      yield* proc.kill("SIGINT")
      assert.strictEqual((yield* proc.ended).code, 0)
      // received 11 + 2 bytes, sent 11 bytes to each of the two
      assert.match(
        proc.stderr(),
        /^stats: 2 connections, received 2 messages \(13 bytes\), sent 2 messages \(22 bytes\), 0 pongs received$/m
      )
    }))

  for (const signal of ["SIGINT", "SIGTERM"] as const) {
    it.live(`${signal} closes every connection with 1001 and exits 0`, () =>
      Effect.gen(function*() {
        const { proc, url } = yield* serve(["--echo"])
        const a = yield* wsClient(url)
        const b = yield* wsClient(url)
        a.ws.send("ready")
        yield* a.message("the echo, once the connection runs")
        yield* proc.kill(signal)
        const [closedA, closedB] = yield* Effect.all([a.closed, b.closed])
        assert.strictEqual(closedA.code, 1001)
        assert.strictEqual(closedB.code, 1001)
        const ended = yield* proc.ended
        assert.deepStrictEqual(ended, { code: 0, signal: null })
        assert.match(proc.stderr(), /closed 1001 \(going away\)/)
      }))
  }

  for (const mode of ["--echo", "--broadcast"] as const) {
    it.live(`${mode} --json --stats: SIGINT while the reader of stdout reads nothing: exits 0 all the same, within the close and flush bounds`, () =>
      Effect.gen(function*() {
        const proc = yield* ews(["serve", "--port", "0", mode, "--json", "--stats"])
        const url = (JSON.parse(yield* proc.line("the listening event")) as { url: string }).url
        const peer = yield* wsClient(url)
        proc.child.stdout!.pause() // the reader stops: the pipe fills up
        const line = "x".repeat(1000)
        for (let i = 0; i < 2000; i++) peer.ws.send(line)
        yield* Effect.sleep("500 millis")
        yield* proc.kill("SIGINT")
        assert.strictEqual((yield* peer.closed).code, 1001)
        const ended = yield* within(proc.ended, 8000, "ews to exit while its stdout is not read")
        assert.deepStrictEqual(ended, { code: 0, signal: null })
      }))
  }

  it.live("many clients whose messages wait for a slow reader of stdout: every line is printed, no listener leak warning", () =>
    Effect.gen(function*() {
      const { proc, url } = yield* serve([])
      proc.child.stdout!.pause()
      const clients = yield* Effect.all(Array.from({ length: 12 }, () => wsClient(url)))
      const line = "x".repeat(100)
      for (const client of clients) for (let i = 0; i < 2000; i++) client.ws.send(line)
      yield* Effect.sleep("1 second")
      proc.child.stdout!.resume()
      yield* eventually(() => proc.stdout.length === 1 + 12 * 2000, 10_000, "every message on stdout")
      yield* proc.kill("SIGINT")
      assert.strictEqual((yield* proc.ended).code, 0)
      assert.notInclude(proc.stderr(), "MaxListenersExceededWarning")
    }), 30_000)

  it.live("--json prints the listening line and connection events as JSON, --stats the totals", () =>
    Effect.gen(function*() {
      // with --json the first line is a JSON event too
      const proc = yield* ews(["serve", "--port", "0", "--echo", "--json", "--stats", "--subprotocol", "chat"])
      const first = JSON.parse(yield* proc.line("the listening event")) as { event: string; url: string }
      assert.strictEqual(first.event, "listening")
      assert.match(first.url, /^ws:\/\/127\.0\.0\.1:\d+\/$/)
      const url = first.url
      const peer = yield* wsClient(url, ["other", "chat"])
      assert.strictEqual(peer.ws.protocol, "chat")
      peer.ws.send("abc")
      yield* peer.message("the echo")
      peer.ws.close(1000)
      yield* peer.closed
      const events = [JSON.parse(yield* proc.line("open")), JSON.parse(yield* proc.line("message")), JSON.parse(yield* proc.line("close"))]
      assert.deepStrictEqual(events[0], { event: "open", client: 1, path: "/", remoteAddress: "127.0.0.1", protocol: "chat" })
      assert.deepStrictEqual(events[1], { event: "message", client: 1, type: "text", size: 3, preview: "abc", truncated: false })
      assert.deepStrictEqual(events[2], { event: "close", client: 1, code: 1000, reason: "", clean: true, initiator: "remote" })
      yield* proc.kill("SIGINT")
      assert.strictEqual((yield* proc.ended).code, 0)
      const stats = parseLines(proc.stdout).find((e) => e.event === "stats")
      assert.deepStrictEqual(stats, {
        event: "stats",
        connections: 1,
        messagesIn: 1,
        bytesIn: 3,
        messagesOut: 1,
        bytesOut: 3,
        pongsIn: 0
      })
    }))

  it.live("--json: pings that came before a message are reported before it, for every client at once", () =>
    Effect.gen(function*() {
      const proc = yield* ews(["serve", "--port", "0", "--json"])
      const url = (JSON.parse(yield* proc.line("the listening event")) as { url: string }).url
      const peers = [yield* wsClient(url), yield* wsClient(url)]
      for (const [i, peer] of peers.entries()) {
        peer.ws.ping()
        peer.ws.send(`after the ping ${i}`)
      }
      const events = [] as Array<{ event: string; client?: number }>
      while (events.filter((e) => e.event === "message").length < 2) events.push(JSON.parse(yield* proc.line("an event")))
      for (const client of [1, 2]) {
        const own = events.filter((e) => e.client === client && e.event !== "open").map((e) => e.event)
        assert.deepStrictEqual(own, ["ping", "message"], `client ${client}: ${JSON.stringify(events)}`)
      }
    }))

  it.live("without --subprotocol the client's first offer is selected, as by a ws server", () =>
    Effect.gen(function*() {
      const { url } = yield* serve(["--echo"])
      const peer = yield* wsClient(url, ["chat.v2", "chat.v1"])
      assert.strictEqual(peer.ws.protocol, "chat.v2")
      peer.ws.send("abc")
      assert.strictEqual((yield* peer.message("the echo")).data.toString(), "abc")
      peer.ws.close(1000)
      yield* peer.closed
    }))

  it.live("with --subprotocol, the first of the client's offers that is in the list is selected (the client's order, not the list's)", () =>
    Effect.gen(function*() {
      const { url } = yield* serve(["--echo", "-s", "chat.v1", "-s", "chat.v2"])
      const peer = yield* wsClient(url, ["chat.v2", "chat.v1"])
      assert.strictEqual(peer.ws.protocol, "chat.v2")
      peer.ws.close(1000)
      yield* peer.closed
    }))

  it.live("--host listens on that interface", () =>
    Effect.gen(function*() {
      // (IPv6's loopback: the default is 127.0.0.1)
      const { url } = yield* serve(["--echo", "--host", "::1"])
      assert.match(url, /^ws:\/\/\[::1\]:\d+\/$/)
      const peer = yield* wsClient(url)
      peer.ws.send("x")
      assert.strictEqual((yield* peer.message("the echo")).data.toString(), "x")
    }))

  it.live("--path serves only that path; other paths get 404", () =>
    Effect.gen(function*() {
      const { url } = yield* serve(["--echo", "--path", "/chat"])
      assert.match(url, /\/chat$/)
      const peer = yield* wsClient(url)
      peer.ws.send("x")
      assert.strictEqual((yield* peer.message("the echo")).data.toString(), "x")
      const status = yield* Effect.flip(wsClient(url.replace(/\/chat$/, "/other")))
      assert.match(status.message, /404/)
    }))

  it.live("--max-message-size closes with 1009 on a bigger message", () =>
    Effect.gen(function*() {
      const { proc, url } = yield* serve(["--echo", "--max-message-size", "10"])
      const peer = yield* wsClient(url)
      peer.ws.send("x".repeat(11))
      assert.strictEqual((yield* peer.closed).code, 1009)
      // the client's error shows on stderr, before its close
      yield* eventually(() => /^\[#1\] closed 1009/m.test(proc.stderr()), 5000, "the close to be logged")
      assert.match(proc.stderr(), /^\[#1\] (?!connected |closed |received ).+\n\[#1\] closed 1009 /m)
    }))

  it.live("stdout that cannot be written (a full disk): exits 1 with the reason on stderr, once", () =>
    Effect.gen(function*() {
      const full = yield* Effect.acquireRelease(Effect.sync(() => Fs.openSync("/dev/full", "w")), (fd) => Effect.sync(() => Fs.closeSync(fd)))
      const proc = yield* ews(["serve", "--port", "0"], { stdin: "ignore", stdout: full })
      assert.deepStrictEqual(yield* proc.ended, { code: 1, signal: null })
      assert.strictEqual(proc.stderr().match(/^ews: cannot write to stdout: ENOSPC.*$/gm)?.length, 1, proc.stderr())
    }))

  it.live("a port in use: non-zero exit and a clear message", () =>
    Effect.gen(function*() {
      const port = yield* httpServer(200)
      const result = yield* ewsRun(["serve", "--port", String(port), "--echo"])
      assert.strictEqual(result.code, 1)
      assert.deepStrictEqual(result.stdout, [])
      assert.match(result.stderr, /^ews: cannot listen on 127\.0\.0\.1:\d+: .*address already in use/m)
      assert.include(result.stderr, "(another process uses this port; --port 0 picks a free one)")
      assert.strictEqual(result.stderr.trim().split("\n").length, 1)
    }))

  it.live("unreadable TLS files: non-zero exit naming the file", () =>
    Effect.gen(function*() {
      const missing = Path.join(Os.tmpdir(), `ews-missing-${process.pid}.pem`)
      const result = yield* ewsRun(["serve", "--tls-cert", missing, "--tls-key", missing])
      assert.strictEqual(result.code, 1)
      assert.include(result.stderr, `cannot read TLS certificate file ${JSON.stringify(missing)}`)
      const dir = Fs.mkdtempSync(Path.join(Os.tmpdir(), "ews-tls-"))
      const garbage = Path.join(dir, "garbage.pem")
      Fs.writeFileSync(garbage, "not a certificate\n")
      const invalid = yield* ewsRun(["serve", "--tls-cert", garbage, "--tls-key", garbage]).pipe(
        Effect.ensuring(Effect.sync(() => Fs.rmSync(dir, { recursive: true, force: true })))
      )
      assert.strictEqual(invalid.code, 1)
      assert.include(invalid.stderr, "invalid TLS certificate")
      const half = yield* ewsRun(["serve", "--tls-cert", garbage])
      assert.strictEqual(half.code, 1)
      assert.include(half.stderr, "--tls-cert and --tls-key must be given together")
    }))

  // needs `openssl`, which `.ci/run` installs with the other interoperability peers
  it.live("--tls-cert / --tls-key serve wss://, which connect --insecure reaches", () =>
    Effect.gen(function*() {
      const dir = Fs.mkdtempSync(Path.join(Os.tmpdir(), "ews-tls-"))
      yield* Effect.addFinalizer(() => Effect.sync(() => Fs.rmSync(dir, { recursive: true, force: true })))
      const cert = Path.join(dir, "cert.pem")
      const key = Path.join(dir, "key.pem")
      execFileSync("openssl", [
        "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", key, "-out", cert, "-days", "1", "-subj", "/CN=localhost"
      ], { stdio: "ignore" })
      const { url } = yield* serve(["--echo", "--tls-cert", cert, "--tls-key", key])
      assert.match(url, /^wss:\/\//)
      const strict = yield* ewsRun(["connect", url])
      assert.strictEqual(strict.code, 1)
      assert.match(strict.stderr, /^ews: TLS error: .*self-signed.* \(--insecure accepts any certificate\)$/m)
      const client = yield* ews(["connect", url, "--insecure"])
      yield* client.write("over tls\n")
      assert.strictEqual(yield* client.line("the echo over TLS"), "over tls")
      yield* client.end
      assert.strictEqual((yield* client.ended).code, 0)
      assert.notInclude(client.stderr(), "DeprecationWarning")
    }))
})
