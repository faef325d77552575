import { assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import * as Fs from "node:fs"
import type * as Http from "node:http"
import { closedPort, type Ews, eventually, ews, ewsRun, httpProxy, httpServer, parseLines, type Peer, rawServer, serve, silentServer, within, wsServer } from "./fixtures.ts"

/** Sends `line` through `client` (an `ews connect` to an echo server), checks its echo, then ends stdin: exit 0. */
const echoesThenExits = (client: Ews, line: string) =>
  Effect.gen(function*() {
    yield* client.write(`${line}\n`)
    assert.strictEqual(yield* client.line("the echo"), line)
    yield* client.end
    assert.deepStrictEqual(yield* client.ended, { code: 0, signal: null })
  })

describe("ews connect", () => {
  it.live("round trip with ews serve --echo: stdin lines out, echoes on stdout, EOF closes with 1000 and exits 0", () =>
    Effect.gen(function*() {
      const server = yield* serve(["--echo"])
      const client = yield* ews(["connect", server.url])
      yield* client.write("hello\n")
      assert.strictEqual(yield* client.line("the first echo"), "hello")
      yield* client.write("wörld\n\nlast line\n")
      assert.strictEqual(yield* client.line("the second echo"), "wörld")
      assert.strictEqual(yield* client.line("the empty line's echo"), "")
      assert.strictEqual(yield* client.line("the last echo"), "last line")
      yield* client.end
      const ended = yield* client.ended
      assert.deepStrictEqual(ended, { code: 0, signal: null })
      assert.deepStrictEqual(client.stdout, ["hello", "wörld", "", "last line"])
      assert.match(client.stderr(), /^connected to ws:\/\/127\.0\.0\.1:\d+\/$/m)
      assert.match(client.stderr(), /^closed 1000 \(normal closure\), by us$/m)
    }))

  it.live("what the peer chose (a close reason) cannot put terminal escapes on stderr, in plain or JSON output", () =>
    Effect.gen(function*() {
      const reason = Buffer.from("r\x1b[31mred\x07\u009b2J", "utf8")
      const port = yield* rawServer(Uint8Array.from([0x88, 2 + reason.length, 0x0f, 0xa0, ...reason]))
      for (const json of [[], ["--json"]]) {
        const { code, stderr, stdout } = yield* ewsRun(["connect", `ws://127.0.0.1:${port}/`, ...json])
        assert.strictEqual(code, 1)
        assert.notMatch(stderr + stdout.join("\n"), /[\x1b\x07\u009b]/, "no escape reaches the terminal")
        assert.include(stderr, "\\u001b[31mred", "the reason shows, escaped")
      }
    }))

  it.live("--json: one JSON object per event; --stats: the counts", () =>
    Effect.gen(function*() {
      const server = yield* serve(["--echo"])
      const client = yield* ews(["connect", server.url, "--json", "--stats"])
      yield* client.write("abc\n")
      const open = JSON.parse(yield* client.line("the open event"))
      assert.deepStrictEqual(open, { event: "open", url: server.url, protocol: "" })
      const message = JSON.parse(yield* client.line("the message event"))
      assert.deepStrictEqual(message, { event: "message", type: "text", size: 3, preview: "abc", truncated: false })
      yield* client.write(`${"é".repeat(300)}\n`)
      const long = JSON.parse(yield* client.line("the long message event"))
      assert.deepStrictEqual(
        { ...long, preview: long.preview.length },
        { event: "message", type: "text", size: 600, preview: 256, truncated: true }
      )
      yield* client.end
      assert.strictEqual((yield* client.ended).code, 0)
      const events = parseLines(client.stdout)
      assert.deepStrictEqual(events.map((e) => e.event), ["open", "message", "message", "close", "stats"])
      assert.deepStrictEqual(events[3], { event: "close", code: 1000, reason: "", clean: true, initiator: "local" })
      assert.deepStrictEqual(events[4], {
        event: "stats",
        messagesIn: 2,
        bytesIn: 603,
        messagesOut: 2,
        bytesOut: 603,
        pongsIn: 0
      })
    }))

  it.live("--json: previews at their bounds: a binary message of exactly 64 bytes is shown whole, one of 65 truncated; a text preview never ends in half a surrogate pair", () =>
    Effect.gen(function*() {
      // "a" then pairs: the 256th UTF-16 unit is the high half of the 128th emoji
      const text = "a" + "😀".repeat(200)
      const url = yield* wsServer((peer) => {
        peer.ws.send(Buffer.alloc(0))
        peer.ws.send(Buffer.alloc(64, 0xab))
        peer.ws.send(Buffer.alloc(65, 0xab))
        peer.ws.send(text)
        peer.ws.close(1000)
      })
      const result = yield* ewsRun(["connect", url, "--json"])
      assert.strictEqual(result.code, 0, result.stderr)
      const messages = parseLines(result.stdout).filter((e) => e.event === "message")
      assert.deepStrictEqual(messages, [
        { event: "message", type: "binary", size: 0, preview: "", truncated: false },
        { event: "message", type: "binary", size: 64, preview: "ab".repeat(64), truncated: false },
        { event: "message", type: "binary", size: 65, preview: "ab".repeat(64), truncated: true },
        { event: "message", type: "text", size: 801, preview: "a" + "😀".repeat(127), truncated: true }
      ])
      // the plain lines: an empty message has no hex, one longer than the preview ends in "..."
      const plain = yield* ewsRun(["connect", url])
      assert.strictEqual(plain.code, 0, plain.stderr)
      assert.deepStrictEqual(plain.stdout, [
        "<binary 0 bytes>",
        `<binary 64 bytes: ${"ab".repeat(64)}>`,
        `<binary 65 bytes: ${"ab".repeat(64)}...>`,
        text
      ])
    }))

  it.live("--binary sends lines as binary messages; binary messages print as <binary N bytes: HEX>", () =>
    Effect.gen(function*() {
      const url = yield* wsServer((peer) => {
        peer.ws.on("message", (data, binary) => peer.ws.send(Buffer.from(`${binary ? "binary" : "text"}:${String(data)}`), { binary: true }))
      })
      const client = yield* ews(["connect", url, "--binary"])
      yield* client.write("hi\n")
      assert.strictEqual(yield* client.line("the reply"), "<binary 9 bytes: 62696e6172793a6869>") // "binary:hi"
      yield* client.end
      assert.strictEqual((yield* client.ended).code, 0)
    }))

  it.live("--binary sends the bytes of each line as they came, not decoded (bytes that are not UTF-8 became U+FFFD)", () =>
    Effect.gen(function*() {
      const url = yield* wsServer((peer) => {
        peer.ws.on("message", (data: Buffer) => peer.ws.send(data, { binary: true }))
      })
      const client = yield* ews(["connect", url, "--binary", "--wait", "300"])
      // a line with bytes that are not UTF-8, one ended by CR LF, and a last one without LF
      yield* client.write(Uint8Array.from([0x41, 0xff, 0xfe, 0x42, 0x00, 0x43, 0x0a, 0x78, 0x0d, 0x0a, 0xc3]))
      yield* client.end
      assert.strictEqual((yield* client.ended).code, 0)
      assert.deepStrictEqual(client.stdout, ["<binary 6 bytes: 41fffe420043>", "<binary 1 byte: 78>", "<binary 1 byte: c3>"])
    }))

  it.live("a slow reader of stdout slows the connection down: memory stays bounded (it grew by every message received)", () =>
    Effect.gen(function*() {
      const message = "a".repeat(1024 * 1024)
      const url = yield* wsServer((peer) => {
        for (let i = 0; i < 250; i++) peer.ws.send(message)
      })
      const client = yield* ews(["connect", url])
      client.child.stdout!.pause() // nobody reads stdout for a while
      yield* Effect.sleep("3 seconds")
      const status = Fs.readFileSync(`/proc/${client.child.pid}/status`, "utf8")
      const peakKiB = Number(/^VmHWM:\s+(\d+)/m.exec(status)?.[1])
      // (about 210 MiB with the reading slowed down, the runtime included; 460 MiB within these 3 s without)
      assert.isBelow(peakKiB, 400 * 1024, `peak memory ${peakKiB} KiB for 250 MiB sent`)
      client.child.stdout!.resume()
      yield* client.kill("SIGINT")
      yield* client.ended
    }), 20_000)

  it.live("--echo sends every message back unchanged until the peer closes, then exits 0", () =>
    Effect.gen(function*() {
      let resolvePeer: (peer: Peer) => void = () => {}
      const peerPromise = new Promise<Peer>((resolve) => {
        resolvePeer = resolve
      })
      const url = yield* wsServer((peer) => resolvePeer(peer))
      const client = yield* ews(["connect", url, "--echo", "--json"], { stdin: "ignore" })
      const peer = yield* within(Effect.promise(() => peerPromise), 10_000, "the client to connect")
      peer.ws.send("text ✓")
      peer.ws.send(Buffer.from([1, 2, 3]))
      peer.ws.send(Buffer.alloc(100_000, 9))
      const text = yield* peer.message("the text back")
      const binary = yield* peer.message("the binary back")
      const big = yield* peer.message("the big binary back")
      assert.deepStrictEqual([text.binary, text.data.toString()], [false, "text ✓"])
      assert.deepStrictEqual([binary.binary, [...binary.data]], [true, [1, 2, 3]])
      assert.deepStrictEqual([big.binary, big.data.length, big.data.every((b) => b === 9)], [true, 100_000, true])
      peer.ws.close(1000, "done")
      assert.deepStrictEqual(yield* peer.closed, { code: 1000, reason: "done" })
      assert.deepStrictEqual(yield* client.ended, { code: 0, signal: null })
      const events = parseLines(client.stdout)
      assert.deepStrictEqual(events.map((e) => e.event), ["open", "message", "message", "message", "close"])
      assert.deepStrictEqual(events[3], {
        event: "message",
        type: "binary",
        size: 100_000,
        preview: "09".repeat(64),
        truncated: true
      })
      assert.deepStrictEqual(events[4], { event: "close", code: 1000, reason: "done", clean: true, initiator: "remote" })
    }))

  it.live("sends --subprotocol, -H and --origin in the upgrade request", () =>
    Effect.gen(function*() {
      let request: Http.IncomingMessage | undefined
      const url = yield* wsServer((_peer, req) => {
        request = req
      }, { handleProtocols: (protocols) => (protocols.has("b") ? "b" : false) })
      const client = yield* ewsRun([
        "connect", url, "-s", "a", "--subprotocol", "b", "-H", "X-Token: abc 123", "-H", "X-Other:v",
        "--origin", "https://example.test", "--json"
      ])
      assert.strictEqual(client.code, 0)
      assert.deepStrictEqual(parseLines(client.stdout)[0], { event: "open", url, protocol: "b" })
      assert.strictEqual(request?.headers["sec-websocket-protocol"], "a, b")
      assert.strictEqual(request?.headers["x-token"], "abc 123")
      assert.strictEqual(request?.headers["x-other"], "v")
      assert.strictEqual(request?.headers["origin"], "https://example.test")
      // in plain output, the open line names the subprotocol
      const plain = yield* ewsRun(["connect", url, "-s", "b"])
      assert.strictEqual(plain.code, 0, plain.stderr)
      assert.match(plain.stderr, /^connected to ws:\/\/127\.0\.0\.1:\d+\/ \(subprotocol b\)$/m)
    }))

  it.live("--ping-interval pings the server; pongs show as pong events", () =>
    Effect.gen(function*() {
      const server = yield* serve(["--echo"])
      const client = yield* ews(["connect", server.url, "--ping-interval", "50", "--json", "--stats"])
      assert.strictEqual(JSON.parse(yield* client.line("the open event")).event, "open")
      const pong = JSON.parse(yield* client.line("a pong event"))
      assert.deepStrictEqual(pong, { event: "pong" })
      yield* client.end
      assert.strictEqual((yield* client.ended).code, 0)
      const stats = parseLines(client.stdout).find((e) => e.event === "stats")!
      assert.isAtLeast(stats.pongsIn as number, 1)
      const pongEvents = parseLines(client.stdout).filter((e) => e.event === "pong").length
      assert.strictEqual(pongEvents, stats.pongsIn)
    }))

  it.live("pings from the server show as ping events (the library answers them)", () =>
    Effect.gen(function*() {
      let resolvePeer: (peer: Peer) => void = () => {}
      const peerPromise = new Promise<Peer>((resolve) => {
        resolvePeer = resolve
      })
      const url = yield* wsServer((peer) => resolvePeer(peer))
      const client = yield* ews(["connect", url, "--json"])
      const peer = yield* within(Effect.promise(() => peerPromise), 10_000, "the client to connect")
      assert.strictEqual(JSON.parse(yield* client.line("the open event")).event, "open")
      peer.ws.ping()
      assert.deepStrictEqual(JSON.parse(yield* client.line("the ping event")), { event: "ping" })
      yield* eventually(() => peer.pongs() === 1, 5000, "the pong at the server")
      yield* client.end
      assert.strictEqual((yield* client.ended).code, 0)
    }))

  it.live("--proxy connects through an HTTP proxy's CONNECT tunnel, as wscat's (http:// when it has no scheme)", () =>
    Effect.gen(function*() {
      const server = yield* serve(["--echo"])
      const proxy = yield* httpProxy()
      const client = yield* ews(["connect", server.url, "--proxy", `127.0.0.1:${proxy.port}`])
      yield* echoesThenExits(client, "through the proxy")
      assert.deepStrictEqual(proxy.targets, [new URL(server.url).host])
    }))

  it.live("--proxy with user:password@ authenticates to the proxy; a proxy that refuses (407) is a rejected handshake, exit 1", () =>
    Effect.gen(function*() {
      const server = yield* serve(["--echo"])
      const proxy = yield* httpProxy("user:secret")
      const refused = yield* ewsRun(["connect", server.url, "--proxy", `http://127.0.0.1:${proxy.port}`])
      assert.strictEqual(refused.code, 1)
      assert.match(refused.stderr, new RegExp(`^ews: handshake rejected with status 407 .* \\(through the proxy at 127\\.0\\.0\\.1:${proxy.port}\\)$`, "m"))
      const client = yield* ews(["connect", server.url, "--proxy", `http://user:secret@127.0.0.1:${proxy.port}`])
      yield* echoesThenExits(client, "let in")
    }))

  it.live("a --proxy that is no http:// or https:// URL is a usage error, before connecting", () =>
    Effect.gen(function*() {
      for (
        const [proxy, fragment] of [
          ["socks5://127.0.0.1:1080", "an http:// or https:// proxy is needed"],
          ["http://[::1", "not a URL"],
          ["http://user:50%off@127.0.0.1:3128", "must be percent-encoded (%25 for %)"]
        ] as const
      ) {
        const result = yield* ewsRun(["connect", "ws://127.0.0.1:9/", "--proxy", proxy])
        assert.notStrictEqual(result.code, 0)
        assert.include(result.stderr, fragment)
      }
    }))

  it.live("a closed port: non-zero exit, one line saying the connection was refused", () =>
    Effect.gen(function*() {
      const port = yield* closedPort
      const result = yield* ewsRun(["connect", `ws://127.0.0.1:${port}/`])
      assert.strictEqual(result.code, 1)
      assert.deepStrictEqual(result.stdout, [])
      const lines = result.stderr.trim().split("\n")
      assert.strictEqual(lines.length, 1)
      assert.match(lines[0]!, /^ews: connection refused: .*ECONNREFUSED/)
      // a Unix socket that is not there says so
      const missing = yield* ewsRun(["connect", "ws+unix:///tmp/ews-no-such-socket.sock:/"])
      assert.strictEqual(missing.code, 1)
      assert.match(missing.stderr, /^ews: no such socket: .*ENOENT/m)
    }))

  it.live("a server rejecting the handshake: non-zero exit, stderr tells the status", () =>
    Effect.gen(function*() {
      const port = yield* httpServer(404)
      const result = yield* ewsRun(["connect", `ws://127.0.0.1:${port}/nope`])
      assert.strictEqual(result.code, 1)
      // with the server's reason, the start of its text body
      assert.strictEqual(result.stderr.trim(), `ews: handshake rejected with status 404 Not Found by ws://127.0.0.1:${port}/nope: not here`)
      const json = yield* ewsRun(["connect", `ws://127.0.0.1:${port}/nope`, "--json"])
      assert.strictEqual(json.code, 1)
      assert.deepStrictEqual(parseLines(json.stdout), [{
        event: "error",
        tag: "HandshakeRejected",
        message: `handshake rejected with status 404 Not Found by ws://127.0.0.1:${port}/nope: not here`,
        status: 404
      }])
    }))

  it.live("a protocol error: non-zero exit, stderr tells the close code", () =>
    Effect.gen(function*() {
      const port = yield* rawServer(new Uint8Array([0x83, 0x00])) // a frame with the reserved opcode 3
      const result = yield* ewsRun(["connect", `ws://127.0.0.1:${port}/`])
      assert.strictEqual(result.code, 1)
      assert.match(result.stderr, /^ews: protocol error, closed with code 1002: .*reserved opcode/m)
    }))

  it.live("a close with an error code: non-zero exit; a known code is named; the JSON error event has the code", () =>
    Effect.gen(function*() {
      const url = yield* wsServer((peer) => peer.ws.close(4000, "go away"))
      const result = yield* ewsRun(["connect", url])
      assert.strictEqual(result.code, 1)
      assert.match(result.stderr, /^ews: connection closed with code 4000: go away$/m)
      const json = yield* ewsRun(["connect", url, "--json"])
      assert.strictEqual(json.code, 1)
      assert.deepStrictEqual(parseLines(json.stdout).find((e) => e.event === "error"), {
        event: "error",
        tag: "CloseCode",
        message: "connection closed with code 4000: go away",
        code: 4000
      })
      const named = yield* wsServer((peer) => peer.ws.close(1008, "no"))
      const policy = yield* ewsRun(["connect", named])
      assert.strictEqual(policy.code, 1)
      assert.match(policy.stderr, /^ews: connection closed with code 1008 \(policy violation\): no$/m)
    }))

  it.live("a peer that closes without a code (an empty Close, 1005) ended normally: exit 0", () =>
    Effect.gen(function*() {
      const url = yield* wsServer((peer) => peer.ws.close())
      const result = yield* ewsRun(["connect", url])
      assert.strictEqual(result.code, 0, result.stderr)
      assert.match(result.stderr, /^closed 1005 \(no status\), by the peer$/m)
      assert.notMatch(result.stderr, /^ews: /m)
    }))

  it.live("a close reason with line breaks stays on the one line of the error", () =>
    Effect.gen(function*() {
      const url = yield* wsServer((peer) => peer.ws.close(4000, "bye\news: connection closed normally\r\tX"))
      const result = yield* ewsRun(["connect", url])
      assert.strictEqual(result.code, 1)
      assert.match(result.stderr, /^ews: connection closed with code 4000: bye\\news: connection closed normally\\r\\tX$/m)
      assert.notMatch(result.stderr, /^ews: connection closed normally/m)
    }))

  it.live("stdin ending while echoes are on their way: every echo is printed before the exit", () =>
    Effect.gen(function*() {
      const server = yield* serve(["--echo"])
      const client = yield* ews(["connect", server.url])
      const lines = Array.from({ length: 2000 }, (_, i) => `line ${i}`)
      yield* client.write(lines.map((line) => `${line}\n`).join(""))
      yield* client.end
      assert.deepStrictEqual(yield* client.ended, { code: 0, signal: null })
      assert.deepStrictEqual(client.stdout, lines)
    }))

  it.live("the open event shows the URL with its credentials redacted", () =>
    Effect.gen(function*() {
      const server = yield* serve(["--echo"])
      const url = server.url.replace("ws://", "ws://user:secret@")
      const client = yield* ews(["connect", url, "--json"])
      const open = JSON.parse(yield* client.line("the open event"))
      assert.strictEqual(open.url, server.url.replace("ws://", "ws://REDACTED:REDACTED@"))
      yield* client.end
      assert.strictEqual((yield* client.ended).code, 0)
      assert.notInclude(client.stderr() + client.stdout.join("\n"), "secret")
    }))

  it.live("a bad URL: non-zero exit with the reason", () =>
    Effect.gen(function*() {
      const notUrl = yield* ewsRun(["connect", "not a url"])
      assert.strictEqual(notUrl.code, 1)
      assert.strictEqual(notUrl.stderr.trim(), `ews: invalid URL: "not a url" is not a URL`)
      const ftp = yield* ewsRun(["connect", "ftp://127.0.0.1/"])
      assert.strictEqual(ftp.code, 1)
      assert.match(ftp.stderr, /^ews: invalid URL: ftp:\/\/127\.0\.0\.1\/ is not a ws:\/\//)
    }))

  /** `ews connect` to a `ws` server, once the server has its side of the connection. */
  const connectedToWsWith = (args: ReadonlyArray<string>) =>
    Effect.gen(function*() {
      let resolvePeer: (peer: Peer) => void = () => {}
      const peerPromise = new Promise<Peer>((resolve) => {
        resolvePeer = resolve
      })
      const url = yield* wsServer((peer) => resolvePeer(peer))
      const client = yield* ews(["connect", url, ...args])
      const peer = yield* within(Effect.promise(() => peerPromise), 10_000, "the client to connect")
      return { client, peer }
    })
  const connectedToWs = connectedToWsWith([])

  it.live("SIGINT closes the connection with 1001 and exits 0", () =>
    Effect.gen(function*() {
      const { client, peer } = yield* connectedToWs
      peer.ws.send("ready")
      assert.strictEqual(yield* client.line("the message"), "ready")
      yield* client.kill("SIGINT")
      assert.strictEqual((yield* peer.closed).code, 1001)
      assert.deepStrictEqual(yield* client.ended, { code: 0, signal: null })
    }))

  it.live("SIGINT with a peer that never answers the Close: the abnormal close is reported and the exit is 1, not 0", () =>
    Effect.gen(function*() {
      const port = yield* rawServer(Uint8Array.from([0x81, 5, ...Buffer.from("ready")]))
      const client = yield* ews(["connect", `ws://127.0.0.1:${port}/`])
      assert.strictEqual(yield* client.line("the message"), "ready")
      yield* client.kill("SIGINT")
      assert.deepStrictEqual(yield* within(client.ended, 10_000, "the close timeout"), { code: 1, signal: null })
      assert.match(client.stderr(), /closed abnormally with code 1006/)
      assert.match(client.stderr(), /^closed 1006 \(abnormal closure\) "the peer did not answer the Close in time", by us \(not clean\)$/m)
    }), 15_000)

  for (const [signal, status] of [["SIGINT", 130], ["SIGTERM", 143]] as const) {
    it.live(`a second ${signal} while the Close waits for a peer that never answers: exits at once with ${status}`, () =>
      Effect.gen(function*() {
        const port = yield* rawServer(Uint8Array.from([0x81, 5, ...Buffer.from("ready")]))
        const client = yield* ews(["connect", `ws://127.0.0.1:${port}/`])
        assert.strictEqual(yield* client.line("the message"), "ready")
        yield* client.kill(signal)
        yield* Effect.sleep("300 millis")
        yield* client.kill(signal)
        // well within the 5 s close timeout the first signal waits for
        assert.deepStrictEqual(yield* within(client.ended, 3_000, "the exit"), { code: status, signal: null })
        assert.include(client.stderr(), "ews: interrupted again")
      }))
  }

  it.live("a reader of stdout that goes away (| head -1): closes with 1001 and exits 0, no EPIPE crash", () =>
    Effect.gen(function*() {
      const { client, peer } = yield* connectedToWs
      peer.ws.send("first")
      assert.strictEqual(yield* client.line("the first message"), "first")
      client.child.stdout!.destroy() // the reader goes away
      for (let i = 0; i < 100; i++) peer.ws.send(`more ${i}`)
      assert.strictEqual((yield* peer.closed).code, 1001)
      assert.deepStrictEqual(yield* client.ended, { code: 0, signal: null })
      assert.notInclude(client.stderr(), "EPIPE")
    }))

  it.live("stdout that cannot be written (a full disk): closes with 1001 and exits 1 with the reason on stderr, no crash", () =>
    Effect.gen(function*() {
      let resolvePeer: (peer: Peer) => void = () => {}
      const peerPromise = new Promise<Peer>((resolve) => (resolvePeer = resolve))
      const url = yield* wsServer((peer) => resolvePeer(peer))
      const full = yield* Effect.acquireRelease(Effect.sync(() => Fs.openSync("/dev/full", "w")), (fd) => Effect.sync(() => Fs.closeSync(fd)))
      const client = yield* ews(["connect", url], { stdout: full })
      const peer = yield* within(Effect.promise(() => peerPromise), 10_000, "the client to connect")
      peer.ws.send("first")
      assert.strictEqual((yield* peer.closed).code, 1001)
      assert.deepStrictEqual(yield* client.ended, { code: 1, signal: null })
      assert.match(client.stderr(), /^ews: cannot write to stdout: ENOSPC/m)
      assert.notInclude(client.stderr(), "    at ", "no stack trace")
    }))

  /** Stops reading `client`'s stdout, has `peer` send until the pipe is full, then sends SIGINT. */
  const interruptWithStdoutFull = (client: Ews, peer: Peer) =>
    Effect.gen(function*() {
      client.child.stdout!.pause() // the reader stops: the pipe fills up
      const line = "x".repeat(1000)
      for (let i = 0; i < 2000; i++) peer.ws.send(line)
      yield* Effect.sleep("500 millis")
      yield* client.kill("SIGINT")
    })

  it.live("SIGINT while the reader of stdout reads nothing (a paused pager): exits all the same", () =>
    Effect.gen(function*() {
      const { client, peer } = yield* connectedToWs
      peer.ws.send("first")
      assert.strictEqual(yield* client.line("the first message"), "first")
      yield* interruptWithStdoutFull(client, peer)
      assert.strictEqual((yield* peer.closed).code, 1001)
      const ended = yield* within(client.ended, 6000, "ews to exit while its stdout is not read")
      assert.strictEqual(ended.signal, null)
    }))

  it.live("--json --stats: SIGINT while the reader of stdout reads nothing: exits 0 all the same, within the close and flush bounds", () =>
    Effect.gen(function*() {
      const { client, peer } = yield* connectedToWsWith(["--json", "--stats"])
      assert.strictEqual(JSON.parse(yield* client.line("the open event")).event, "open")
      yield* interruptWithStdoutFull(client, peer)
      assert.strictEqual((yield* peer.closed).code, 1001)
      const ended = yield* within(client.ended, 8000, "ews to exit while its stdout is not read")
      assert.deepStrictEqual(ended, { code: 0, signal: null })
    }))

  it.live("--ping-timeout: a peer that answers no ping is cut off as dead, exit 1", () =>
    Effect.gen(function*() {
      const url = yield* wsServer(() => {}, { autoPong: false })
      const client = yield* ews(["connect", url, "--ping-interval", "100", "--ping-timeout", "200"])
      assert.deepStrictEqual(yield* within(client.ended, 10_000, "the dead peer to be noticed"), { code: 1, signal: null })
      assert.match(client.stderr(), /^ews: connection lost: no answer from the peer within .* of a ping/m)
    }))

  it.live("a URL with no scheme is a ws:// one, as with wscat", () =>
    Effect.gen(function*() {
      const server = yield* serve(["--echo"])
      const client = yield* ews(["connect", server.url.replace("ws://", "")])
      yield* echoesThenExits(client, "hello")
    }))

  it.live("--ping-timeout without --ping-interval is a usage error, before connecting", () =>
    Effect.gen(function*() {
      const result = yield* ewsRun(["connect", "ws://127.0.0.1:1/", "--ping-timeout", "200"])
      assert.strictEqual(result.code, 1)
      assert.include(result.stderr, "--ping-timeout needs --ping-interval")
      // with --json, an error event tagged as a usage error
      const json = yield* ewsRun(["connect", "ws://127.0.0.1:1/", "--ping-timeout", "200", "--json"])
      assert.strictEqual(json.code, 1)
      assert.deepStrictEqual(parseLines(json.stdout), [{
        event: "error",
        tag: "UsageError",
        message: "--ping-timeout needs --ping-interval (the pings it waits for an answer to)"
      }])
    }))

  it.live("SIGINT before the connection is open: non-zero exit, stderr says so", () =>
    Effect.gen(function*() {
      const server = yield* silentServer
      const client = yield* ews(["connect", `ws://127.0.0.1:${server.port}/`])
      yield* eventually(() => server.connections() === 1, 5000, "the TCP connection")
      yield* client.kill("SIGINT")
      assert.deepStrictEqual(yield* client.ended, { code: 1, signal: null })
      assert.strictEqual(client.stderr().trim(), "ews: interrupted before the connection was open")
    }))

  it.live("wss:// to a server without TLS: a TLS error, without the --insecure hint (it would not help)", () =>
    Effect.gen(function*() {
      const server = yield* serve(["--echo"])
      const result = yield* ewsRun(["connect", server.url.replace("ws://", "wss://")])
      assert.strictEqual(result.code, 1)
      assert.match(result.stderr, /^ews: TLS error: .*wrong version number/m)
      assert.notInclude(result.stderr, "--insecure")
    }))

  it.live("--echo without --json sends every message back and prints none on stdout", () =>
    Effect.gen(function*() {
      let echoed = ""
      const url = yield* wsServer((peer) => {
        peer.ws.on("message", (data) => {
          echoed = String(data)
          peer.ws.close(1000)
        })
        peer.ws.send("ping me back")
      })
      const result = yield* ewsRun(["connect", url, "--echo"])
      assert.strictEqual(result.code, 0, result.stderr)
      assert.strictEqual(echoed, "ping me back")
      assert.deepStrictEqual(result.stdout, [])
    }))

  it.live("--wait keeps receiving after stdin ends, for replies to the last lines; --wait 0 is valid", () =>
    Effect.gen(function*() {
      // the reply comes a little after the line: without the wait, the client has closed by then
      const url = yield* wsServer((peer) => {
        peer.ws.on("message", (data) => setTimeout(() => peer.ws.send(`re: ${String(data)}`), 100))
      })
      const client = yield* ews(["connect", url, "--wait", "2000"])
      yield* client.write("question\n")
      yield* client.end
      assert.deepStrictEqual(yield* client.ended, { code: 0, signal: null })
      assert.deepStrictEqual(client.stdout, ["re: question"])
      const zero = yield* ewsRun(["connect", url, "--wait", "0"])
      assert.strictEqual(zero.code, 0, zero.stderr)
    }))

  it.live("--json: pings that came before a message are reported before it", () =>
    Effect.gen(function*() {
      const url = yield* wsServer((peer) => {
        peer.ws.ping()
        peer.ws.send("after the ping")
      })
      const client = yield* ews(["connect", url, "--json"])
      const events = [] as Array<string>
      while (!events.includes("message")) events.push(JSON.parse(yield* client.line("an event")).event)
      assert.deepStrictEqual(events, ["open", "ping", "message"])
      yield* client.end
      assert.strictEqual((yield* client.ended).code, 0)
    }))

  it.live("--stats counts each direction apart (received and sent differ), in plain and JSON output", () =>
    Effect.gen(function*() {
      // the server sends two messages (8 bytes), gets one (2 bytes: "hi"), then closes
      const url = yield* wsServer((peer) => {
        peer.ws.on("message", () => peer.ws.close(1000))
        peer.ws.send("one")
        peer.ws.send("three")
      })
      for (const json of [false, true]) {
        const client = yield* ews(["connect", url, "--stats", ...(json ? ["--json"] : [])])
        yield* client.write("hi\n")
        assert.deepStrictEqual(yield* client.ended, { code: 0, signal: null })
        if (json) {
          assert.deepStrictEqual(parseLines(client.stdout).find((e) => e.event === "stats"), {
            event: "stats",
            messagesIn: 2,
            bytesIn: 8,
            messagesOut: 1,
            bytesOut: 2,
            pongsIn: 0
          })
        } else {
          assert.match(client.stderr(), /^stats: received 2 messages \(8 bytes\), sent 1 message \(2 bytes\), 0 pongs received$/m)
        }
      }
    }))
})
