/**
 * Running `ews` as a child process from its TypeScript sources (Node strips the types; the
 * `@effect-websocket/source` condition resolves the workspace packages to their sources too, so
 * no build step is needed), and `ws` peers, all owned by the test's scope. Every wait is bounded.
 */
import { Deferred, Duration, Effect, Exit, Queue } from "effect"
import { type ChildProcess, spawn } from "node:child_process"
import { createHash } from "node:crypto"
import * as Http from "node:http"
import * as Net from "node:net"
import { createInterface } from "node:readline"
import { fileURLToPath } from "node:url"
import { createProxy, type ProxyServer } from "proxy"
import { type ClientOptions, type RawData, type ServerOptions, WebSocket as WsClient, WebSocketServer } from "ws"

/** `packages/cli/src/bin.ts`. */
export const BIN = fileURLToPath(new URL("../src/bin.ts", import.meta.url))

/** How long any single wait of a test may take. */
export const WAIT = 10_000

/** Fails with a readable error when `self` takes longer than `millis`. */
export const within = <A, E, R>(self: Effect.Effect<A, E, R>, millis: number, what: string) =>
  Effect.timeoutOrElse(self, {
    duration: Duration.millis(millis),
    orElse: () => Effect.fail(new Error(`timed out after ${millis} ms waiting for ${what}`))
  })

/** Polls `condition` every 10 ms, for at most `millis`. */
export const eventually = (condition: () => boolean, millis: number, what: string) =>
  within(
    Effect.gen(function*() {
      while (!condition()) yield* Effect.sleep("10 millis")
    }),
    millis,
    what
  )

/** How a child process ended. */
export interface Ended {
  readonly code: number | null
  readonly signal: NodeJS.Signals | null
}

/** A running `ews`. */
export interface Ews {
  readonly child: ChildProcess
  /** Every stdout line seen so far. */
  readonly stdout: ReadonlyArray<string>
  /** The next stdout line not yet taken. */
  readonly line: (what: string) => Effect.Effect<string, Error>
  /** Everything written on stderr so far. */
  readonly stderr: () => string
  readonly write: (text: string | Uint8Array) => Effect.Effect<void>
  /** Closes stdin (EOF). */
  readonly end: Effect.Effect<void>
  readonly kill: (signal: NodeJS.Signals) => Effect.Effect<void>
  /** Waits until the process ended and its output was read. */
  readonly ended: Effect.Effect<Ended, Error>
}

/**
 * Starts `ews ...args`; the process is killed (SIGKILL) when the scope closes if it still runs.
 * `stdin: "ignore"` gives it an empty stdin; `stdout`, a file descriptor to write to instead of a pipe.
 */
export const ews = (args: ReadonlyArray<string>, options?: { readonly stdin?: "pipe" | "ignore"; readonly stdout?: number }) =>
  Effect.gen(function*() {
    const lines = yield* Queue.unbounded<string>()
    const endedDeferred = Deferred.makeUnsafe<Ended>()
    const env: NodeJS.ProcessEnv = { ...process.env, NO_COLOR: "1" }
    delete env.FORCE_COLOR
    delete env.NODE_OPTIONS
    const child = yield* Effect.acquireRelease(
      Effect.sync(() =>
        // (some Node versions, 24.0 among them, warn on stderr that the type stripping that runs the
        // sources is experimental: the tests read every line of stderr)
        spawn(process.execPath, ["--conditions=@effect-websocket/source", "--disable-warning=ExperimentalWarning", BIN, ...args], {
          stdio: [options?.stdin ?? "pipe", options?.stdout ?? "pipe", "pipe"],
          env
        })
      ),
      (child) =>
        Effect.sync(() => {
          if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL")
        })
    )
    const stdout: Array<string> = []
    let stderr = ""
    if (child.stdout !== null) {
      createInterface({ input: child.stdout }).on("line", (line) => {
        stdout.push(line)
        Queue.offerUnsafe(lines, line)
      })
    }
    child.stderr!.setEncoding("utf8").on("data", (chunk: string) => {
      stderr += chunk
    })
    child.stdin?.on("error", () => {}) // EPIPE when the process already ended
    child.on("close", (code, signal) => Deferred.doneUnsafe(endedDeferred, Exit.succeed({ code, signal })))
    const self: Ews = {
      child,
      stdout,
      line: (what) =>
        within(Queue.take(lines), WAIT, `${what} (stdout so far: ${JSON.stringify(stdout)}, stderr: ${JSON.stringify(stderr)})`),
      stderr: () => stderr,
      write: (text) =>
        Effect.callback<void>((resume) => {
          child.stdin!.write(text, () => resume(Effect.void))
        }),
      end: Effect.sync(() => {
        child.stdin!.end()
      }),
      kill: (signal) =>
        Effect.sync(() => {
          child.kill(signal)
        }),
      ended: within(Deferred.await(endedDeferred), WAIT, `ews ${args.join(" ")} to exit (stderr: ${JSON.stringify(stderr)})`)
    }
    return self
  })

/** Runs `ews ...args` with an empty stdin to completion. */
export const ewsRun = (args: ReadonlyArray<string>) =>
  Effect.gen(function*() {
    const proc = yield* ews(args, { stdin: "ignore" })
    const ended = yield* proc.ended
    return { ...ended, stdout: proc.stdout, stderr: proc.stderr() }
  })

/** Starts `ews serve ...args` and reads its `listening URL` line. */
export const serve = (args: ReadonlyArray<string>, options?: { readonly stdin?: "pipe" | "ignore" }) =>
  Effect.gen(function*() {
    const proc = yield* ews(["serve", "--port", "0", ...args], options)
    const first = yield* proc.line("the listening line")
    const match = /^listening (wss?:\/\/\S+)$/.exec(first)
    if (match === null) return yield* Effect.fail(new Error(`unexpected first line ${JSON.stringify(first)}`))
    return { proc, url: match[1]! }
  })

/** A message a `ws` peer received. */
export interface Received {
  readonly data: Buffer
  readonly binary: boolean
}

const toBuffer = (data: RawData): Buffer =>
  Buffer.isBuffer(data) ? data : Array.isArray(data) ? Buffer.concat(data) : Buffer.from(data)

/** What we observe of a `ws` socket. */
export interface Peer {
  readonly ws: WsClient
  readonly message: (what: string) => Effect.Effect<Received, Error>
  readonly closed: Effect.Effect<{ readonly code: number; readonly reason: string }, Error>
  readonly pongs: () => number
}

const observe = (ws: WsClient): Peer => {
  const messages = Effect.runSync(Queue.unbounded<Received>())
  const closed = Deferred.makeUnsafe<{ code: number; reason: string }>()
  let pongs = 0
  ws.on("message", (data, binary) => Queue.offerUnsafe(messages, { data: toBuffer(data), binary }))
  ws.on("pong", () => pongs++)
  ws.on("close", (code, reason) => Deferred.doneUnsafe(closed, Exit.succeed({ code, reason: reason.toString() })))
  ws.on("error", () => {})
  return {
    ws,
    message: (what) => within(Queue.take(messages), WAIT, what),
    closed: within(Deferred.await(closed), WAIT, "the ws connection to close"),
    pongs: () => pongs
  }
}

/** A `ws` client connected to `url`, terminated when the scope closes. */
export const wsClient = (url: string, protocols?: ReadonlyArray<string>, options?: ClientOptions) =>
  Effect.gen(function*() {
    const ws = yield* Effect.acquireRelease(
      Effect.sync(() => new WsClient(url, protocols === undefined ? [] : [...protocols], options)),
      (ws) => Effect.sync(() => ws.terminate())
    )
    const peer = observe(ws)
    yield* within(
      Effect.callback<void, Error>((resume) => {
        ws.once("open", () => resume(Effect.void))
        ws.once("error", (error) => resume(Effect.fail(error)))
      }),
      WAIT,
      `a ws connection to ${url}`
    )
    return peer
  })

/** A `ws` server on a free loopback port; `onConnection` gets every peer and its request. */
export const wsServer = (onConnection: (peer: Peer, request: Http.IncomingMessage) => void, options?: ServerOptions) =>
  Effect.gen(function*() {
    const server = yield* Effect.acquireRelease(
      Effect.callback<WebSocketServer>((resume) => {
        const server: WebSocketServer = new WebSocketServer({ host: "127.0.0.1", port: 0, ...options }, () =>
          resume(Effect.succeed(server)))
      }),
      (server) =>
        Effect.callback<void>((resume) => {
          for (const client of server.clients) client.terminate()
          server.close(() => resume(Effect.void))
        })
    )
    server.on("connection", (ws, request) => onConnection(observe(ws), request))
    return `ws://127.0.0.1:${(server.address() as Net.AddressInfo).port}/`
  })

/** A plain HTTP server answering every request (upgrades included) with `status`. */
export const httpServer = (status: number) =>
  Effect.gen(function*() {
    const server = yield* Effect.acquireRelease(
      Effect.callback<Http.Server>((resume) => {
        const server = Http.createServer((_req, res) => {
          res.writeHead(status, { "Content-Type": "text/plain" })
          res.end("not here\n")
        })
        server.listen(0, "127.0.0.1", () => resume(Effect.succeed(server)))
      }),
      (server) =>
        Effect.callback<void>((resume) => {
          server.closeAllConnections()
          server.close(() => resume(Effect.void))
        })
    )
    return (server.address() as Net.AddressInfo).port
  })

/**
 * A TCP server on 127.0.0.1 that hands each socket to `onSocket` (errors ignored), and destroys
 * every socket when the scope closes: its port and how many sockets it got.
 */
const tcpServer = (onSocket: (socket: Net.Socket) => void) =>
  Effect.gen(function*() {
    const sockets = new Set<Net.Socket>()
    const server = yield* Effect.acquireRelease(
      Effect.callback<Net.Server>((resume) => {
        const server = Net.createServer((socket) => {
          sockets.add(socket)
          socket.on("error", () => {})
          onSocket(socket)
        })
        server.listen(0, "127.0.0.1", () => resume(Effect.succeed(server)))
      }),
      (server) =>
        Effect.callback<void>((resume) => {
          for (const socket of sockets) socket.destroy()
          server.close(() => resume(Effect.void))
        })
    )
    return { port: (server.address() as Net.AddressInfo).port, connections: () => sockets.size }
  })

/** A server that completes the opening handshake, then sends `frame` (raw bytes). */
export const rawServer = (frame: Uint8Array) =>
  Effect.map(
    tcpServer((socket) => {
      let request = ""
      const onData = (chunk: Buffer) => {
        request += chunk.toString("latin1")
        if (!request.includes("\r\n\r\n")) return
        socket.off("data", onData)
        socket.on("data", () => {})
        const key = /^sec-websocket-key:[ \t]*([^\r\n]*)/im.exec(request)?.[1]?.trim() ?? ""
        const accept = createHash("sha1").update(key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest("base64")
        socket.write(
          `HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ${accept}\r\n\r\n`
        )
        socket.write(frame)
      }
      socket.on("data", onData)
    }),
    (server) => server.port
  )

/** A server that accepts TCP connections and never answers (the opening handshake hangs). */
export const silentServer = tcpServer(() => {})

/** A loopback port nothing listens on (it was free a moment ago). */
export const closedPort = Effect.callback<number>((resume) => {
  const server = Net.createServer()
  server.listen(0, "127.0.0.1", () => {
    const port = (server.address() as Net.AddressInfo).port
    server.close(() => resume(Effect.succeed(port)))
  })
})

/**
 * An HTTP proxy (the `proxy` package) on 127.0.0.1 that records the `CONNECT` targets it is asked
 * for, and with `credentials` (`user:password`) asks for them (407 without): its URL.
 */
export const httpProxy = (credentials?: string) =>
  Effect.gen(function*() {
    const targets: Array<string> = []
    const server = yield* Effect.acquireRelease(
      Effect.callback<ProxyServer>((resume) => {
        const server = createProxy(Http.createServer())
        if (credentials !== undefined) {
          server.authenticate = (req) => req.headers["proxy-authorization"] === `Basic ${Buffer.from(credentials).toString("base64")}`
        }
        server.on("connect", (req: Http.IncomingMessage) => void targets.push(req.url ?? ""))
        server.listen(0, "127.0.0.1", () => resume(Effect.succeed(server)))
      }),
      (server) =>
        Effect.callback<void>((resume) => {
          server.closeAllConnections()
          server.close(() => resume(Effect.void))
        })
    )
    return { port: (server.address() as Net.AddressInfo).port, targets }
  })

/** Parses every line as JSON. */
export const parseLines = (lines: ReadonlyArray<string>): Array<Record<string, unknown>> =>
  lines.map((line) => JSON.parse(line) as Record<string, unknown>)
