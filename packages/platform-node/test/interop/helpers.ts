/**
 * Shared pieces of the interoperability tests: payloads and their digests, Effect wrappers around
 * `ws` clients and servers, an echo server of ours that records what it received, and child
 * processes (Python, Chromium, OpenSSL) owned by the test's scope. Every wait is bounded.
 */
import type { Client, Connection } from "@effect-websocket/core"
import { Deferred, Duration, Effect, Queue, Stream } from "effect"
import { type ChildProcess, spawn } from "node:child_process"
import { createHash, randomBytes } from "node:crypto"
import * as Fs from "node:fs/promises"
import type * as Http from "node:http"
import type * as Net from "node:net"
import * as Os from "node:os"
import * as Path from "node:path"
import { fileURLToPath } from "node:url"
import { type ClientOptions, type RawData, type ServerOptions, WebSocket as WsClient, WebSocketServer } from "ws"
import { NodeServer } from "../../src/index.ts"

// ---------------------------------------------------------------------------------------------
// Bounded waits
// ---------------------------------------------------------------------------------------------

/** Fails with a readable error when `self` takes longer than `millis`. */
export const within = <A, E, R>(self: Effect.Effect<A, E, R>, millis: number, what: string) =>
  Effect.timeoutOrElse(self, {
    duration: Duration.millis(millis),
    orElse: () => Effect.fail(new Error(`timed out after ${millis} ms waiting for ${what}`))
  })

/** Makes `server` listen on an ephemeral port of 127.0.0.1 (bounded); its port. */
export const listenOnLoopback = (server: Net.Server, what: string) =>
  Effect.map(
    within(
      Effect.callback<void, Error>((resume) => {
        server.once("error", (error) => resume(Effect.fail(error)))
        server.listen(0, "127.0.0.1", () => resume(Effect.void))
      }),
      5_000,
      `${what} to listen`
    ),
    () => (server.address() as Net.AddressInfo).port
  )

/** Polls `condition` every 10 ms, for at most `millis`. */
export const eventually = (condition: () => boolean, millis: number, what: string) =>
  Effect.gen(function*() {
    const attempts = Math.ceil(millis / 10)
    for (let i = 0; i < attempts; i++) {
      if (condition()) return
      yield* Effect.sleep(Duration.millis(10))
    }
    if (!condition()) return yield* Effect.fail(new Error(`${what} did not happen within ${millis} ms`))
  })

/** Wraps a promise-returning function, turning a rejection into a failure. */
export const attempt = <A>(what: string, f: () => Promise<A>) =>
  Effect.tryPromise({ try: f, catch: (cause) => new Error(`${what}: ${cause instanceof Error ? cause.message : String(cause)}`) })

/** A queue filled from callbacks, read by one taker at a time. */
export class Mailbox<A> {
  private readonly items: Array<A> = []
  private waiter: ((item: A) => void) | undefined = undefined
  readonly push = (item: A): void => {
    const waiter = this.waiter
    this.waiter = undefined
    if (waiter !== undefined) waiter(item)
    else this.items.push(item)
  }
  readonly take: Effect.Effect<A> = Effect.callback<A>((resume) => {
    if (this.items.length > 0) return resume(Effect.succeed(this.items.shift()!))
    this.waiter = (item) => resume(Effect.succeed(item))
    return Effect.sync(() => {
      this.waiter = undefined
    })
  })
}

// ---------------------------------------------------------------------------------------------
// Payloads
// ---------------------------------------------------------------------------------------------

/** The sizes every data test goes through: the frame length encodings' edges, and large messages. */
export const SIZES = [0, 1, 125, 126, 65535, 65536, 1024 * 1024, 16 * 1024 * 1024] as const

const TEXT_UNIT = Buffer.from("aé€😀 ", "utf8") // 1 + 2 + 3 + 4 + 1 = 11 bytes

/** A text message of exactly `size` UTF-8 bytes, mixing 1- to 4-byte code points. */
export const textOfSize = (size: number): string => {
  const whole = size - (size % TEXT_UNIT.length)
  return Buffer.alloc(whole, TEXT_UNIT).toString("utf8") + "x".repeat(size - whole)
}

/** A binary message of `size` random bytes. */
export const bytesOfSize = (size: number): Uint8Array => new Uint8Array(randomBytes(size))

export const sha256 = (data: Uint8Array | string): string => createHash("sha256").update(data).digest("hex")

/** What a message was, as something cheap to compare. */
export interface Digest {
  readonly kind: "text" | "binary"
  readonly size: number
  readonly sha256: string
}

export const digest = (message: string | Uint8Array): Digest =>
  typeof message === "string"
    ? { kind: "text", size: Buffer.byteLength(message, "utf8"), sha256: sha256(message) }
    : { kind: "binary", size: message.length, sha256: sha256(message) }

export const payloadOfKind = (kind: "text" | "binary", size: number): string | Uint8Array =>
  kind === "text" ? textOfSize(size) : bytesOfSize(size)

// ---------------------------------------------------------------------------------------------
// Our connections
// ---------------------------------------------------------------------------------------------

/**
 * Reads `connection.messages` in a fiber of the current scope; `next` takes the next one (bounded),
 * `ended` tells how the stream ended.
 */
export const messageReader = (connection: Connection.Connection) =>
  Effect.gen(function*() {
    const queue = yield* Queue.unbounded<string | Uint8Array>()
    const ended = yield* Deferred.make<"end" | { readonly error: string }>()
    yield* Effect.forkScoped(
      Stream.runForEach(connection.messages, (message) => Queue.offer(queue, message)).pipe(
        Effect.matchEffect({
          onSuccess: () => Deferred.succeed(ended, "end"),
          onFailure: (error) => Deferred.succeed(ended, { error: error._tag })
        })
      )
    )
    return {
      next: (millis = 10_000) => within(Queue.take(queue), millis, "a message"),
      ended: within(Deferred.await(ended), 10_000, "the end of the messages")
    }
  })

/** What our echo server saw of one connection. */
export interface ServerSide {
  readonly connection: Connection.Connection
  readonly received: Array<Digest>
  /** How the message stream ended: `"end"`, or the tag of its error. */
  readonly outcome: Deferred.Deferred<string>
}

/**
 * A handler echoing every message, recording digests of what it received, and handing each
 * connection to `accepted`. Two text messages are commands instead: `"fragments"` answers with
 * "fragments from us" sent as three frames, and `"close:CODE:REASON"` closes the connection with
 * that code and reason.
 */
export const echoHandler = (accepted: (side: ServerSide) => void): Client.Handler =>
  (connection) =>
    Effect.gen(function*() {
      const side: ServerSide = { connection, received: [], outcome: yield* Deferred.make<string>() }
      accepted(side)
      const exit = yield* Effect.exit(Stream.runForEach(connection.messages, (message) => {
        side.received.push(digest(message))
        if (message === "fragments") {
          return Effect.ignore(connection.sendFragments(Stream.make("frag", "ments ", "from us"), "text"))
        }
        if (typeof message === "string" && message.startsWith("close:")) {
          const [, code, reason] = message.split(":")
          return Effect.ignore(connection.close(Number(code), reason))
        }
        return Effect.ignore(connection.send(message))
      }))
      yield* Deferred.succeed(
        side.outcome,
        exit._tag === "Success" ? "end" : exit.cause.reasons.map((r) => (r._tag === "Fail" ? r.error._tag : r._tag)).join(", ")
      )
    })

/** Our server running {@link echoHandler}. */
export const echoServer = (options?: NodeServer.ServeOptions) =>
  Effect.gen(function*() {
    const accepted = new Mailbox<ServerSide>()
    const server = yield* NodeServer.serve(echoHandler(accepted.push), options)
    return {
      server,
      /** The next connection the server accepted. */
      accepted: within(accepted.take, 10_000, "the server to accept a connection")
    }
  })

/** A server's `selectProtocol` that picks `choice` when it is offered, with the offers it was asked about. */
export const protocolPicker = (choice: string) => {
  const offers: Array<ReadonlyArray<string>> = []
  const selectProtocol = (offered: ReadonlyArray<string>): string | undefined => {
    offers.push(offered)
    return offered.includes(choice) ? choice : undefined
  }
  return { offers, selectProtocol }
}

// ---------------------------------------------------------------------------------------------
// ws peers
// ---------------------------------------------------------------------------------------------

export interface WsMessage {
  readonly data: Buffer
  readonly isBinary: boolean
}

export const rawToBuffer = (data: RawData): Buffer =>
  Buffer.isBuffer(data) ? data : Array.isArray(data) ? Buffer.concat(data) : Buffer.from(data)

export const wsMessageDigest = (message: WsMessage): Digest =>
  message.isBinary
    ? { kind: "binary", size: message.data.length, sha256: sha256(message.data) }
    : { kind: "text", size: message.data.length, sha256: sha256(message.data) }

/** A `ws` socket (client or server side) with its events collected. */
export interface WsPeer {
  readonly socket: WsClient
  readonly next: (millis?: number) => Effect.Effect<WsMessage, Error>
  readonly nextPong: Effect.Effect<Buffer, Error>
  readonly nextPing: Effect.Effect<Buffer, Error>
  readonly closed: Effect.Effect<{ readonly code: number; readonly reason: string }, Error>
  readonly errors: ReadonlyArray<Error>
  /** The socket under the WebSocket, to write raw bytes. */
  readonly raw: Net.Socket
  /** On a server, the upgrade request. */
  readonly request: Http.IncomingMessage | undefined
}

/** Collects the events of `socket` from now on. */
export const wsPeer = (socket: WsClient, request?: Http.IncomingMessage): WsPeer => {
  const messages = new Mailbox<WsMessage>()
  const pongs = new Mailbox<Buffer>()
  const pings = new Mailbox<Buffer>()
  const closed = Deferred.makeUnsafe<{ readonly code: number; readonly reason: string }>()
  const errors: Array<Error> = []
  socket.on("message", (data, isBinary) => messages.push({ data: rawToBuffer(data), isBinary }))
  socket.on("pong", pongs.push)
  socket.on("ping", pings.push)
  socket.on("error", (error) => errors.push(error))
  socket.on("close", (code, reason) => Deferred.doneUnsafe(closed, Effect.succeed({ code, reason: reason.toString("utf8") })))
  return {
    socket,
    next: (millis = 10_000) => within(messages.take, millis, "a message at the ws peer"),
    nextPong: within(pongs.take, 5_000, "a pong at the ws peer"),
    nextPing: within(pings.take, 5_000, "a ping at the ws peer"),
    closed: within(Deferred.await(closed), 10_000, "the ws peer's close event"),
    errors,
    request,
    get raw() {
      return (socket as unknown as { readonly _socket: Net.Socket })._socket
    }
  }
}

/** A `ws` client connected to `url`, terminated when the scope closes. */
export const wsConnect = (url: string, protocols?: ReadonlyArray<string>, options?: ClientOptions) =>
  Effect.acquireRelease(
    within(
      Effect.callback<WsPeer, Error>((resume) => {
        const socket = new WsClient(url, protocols === undefined ? [] : [...protocols], options)
        const peer = wsPeer(socket)
        socket.once("open", () => resume(Effect.succeed(peer)))
        socket.once("error", (error) => resume(Effect.fail(new Error(`ws client could not connect: ${error.message}`))))
        return Effect.sync(() => socket.terminate())
      }),
      10_000,
      `a ws client to open ${url}`
    ),
    (peer) => Effect.sync(() => peer.socket.terminate())
  )

/** Sends with `ws` and waits for the write callback. */
export const wsSend = (
  peer: WsPeer,
  data: string | Uint8Array,
  options: { readonly binary?: boolean; readonly fin?: boolean } = {}
) =>
  within(
    Effect.callback<void, Error>((resume) => {
      peer.socket.send(data, { binary: options.binary ?? typeof data !== "string", fin: options.fin ?? true }, (error) =>
        resume(error ? Effect.fail(error) : Effect.void))
    }),
    20_000,
    "ws to send a message"
  )

/** A `ws` server on 127.0.0.1 with a free port, closed with the scope. */
export const wsServer = (options?: Omit<ServerOptions, "port" | "host" | "server" | "noServer">) =>
  Effect.gen(function*() {
    const accepted = new Mailbox<WsPeer>()
    const server = yield* Effect.acquireRelease(
      within(
        Effect.callback<WebSocketServer, Error>((resume) => {
          const server = new WebSocketServer({ ...options, port: 0, host: "127.0.0.1" })
          server.on("connection", (socket, request) => accepted.push(wsPeer(socket, request)))
          server.once("listening", () => resume(Effect.succeed(server)))
          server.once("error", (error) => resume(Effect.fail(error)))
        }),
        5_000,
        "the ws server to listen"
      ),
      (server) =>
        within(
          Effect.callback<void>((resume) => {
            for (const client of server.clients) client.terminate()
            server.close(() => resume(Effect.void))
          }),
          5_000,
          "the ws server to close"
        ).pipe(Effect.ignore)
    )
    const { port } = server.address() as Net.AddressInfo
    return {
      server,
      url: `ws://127.0.0.1:${port}/`,
      accepted: within(accepted.take, 10_000, "the ws server to accept a connection")
    }
  })

/** Makes every accepted `ws` socket echo what it receives. */
export const echoing = (peer: WsPeer): WsPeer => {
  peer.socket.on("message", (data, isBinary) => peer.socket.send(rawToBuffer(data), { binary: isBinary }))
  return peer
}

// ---------------------------------------------------------------------------------------------
// Files and processes
// ---------------------------------------------------------------------------------------------

/** The absolute path of a file in `test/fixtures`. */
export const fixture = (name: string): string => fileURLToPath(new URL(`../fixtures/${name}`, import.meta.url))

/** A fresh temporary directory, removed with the scope. */
export const tempDir = (prefix: string) =>
  Effect.acquireRelease(
    attempt("creating a temporary directory", () => Fs.mkdtemp(Path.join(Os.tmpdir(), prefix))),
    (dir) => Effect.promise(() => Fs.rm(dir, { recursive: true, force: true, maxRetries: 3 }))
  )

/** A child process, killed (SIGTERM, then SIGKILL) when the scope closes if still running. */
export interface Child {
  readonly process: ChildProcess
  /** Completes with the exit code (or the signal's name) and everything printed. */
  readonly exit: Effect.Effect<{ readonly code: number | string; readonly stdout: string; readonly stderr: string }>
  /** The first line printed on stdout (bounded). */
  readonly firstLine: (millis: number) => Effect.Effect<string, Error>
  readonly output: () => { readonly stdout: string; readonly stderr: string }
}

/** Sends `signal` to the child, or to its whole process group when it leads one. */
const signal = (child: ChildProcess, group: boolean, name: NodeJS.Signals) => {
  try {
    if (group && child.pid !== undefined) process.kill(-child.pid, name)
    else child.kill(name)
  } catch {
    // already gone
  }
}

const stopChild = (child: ChildProcess, group: boolean) =>
  Effect.callback<void>((resume) => {
    const running = child.exitCode === null && child.signalCode === null
    if (!running && !group) return resume(Effect.void)
    // a group may outlive its leader (browser helpers): signal it even when the leader is gone
    signal(child, group, "SIGTERM")
    if (!running) {
      const timer = setTimeout(() => {
        signal(child, group, "SIGKILL")
        resume(Effect.void)
      }, 200)
      return Effect.sync(() => clearTimeout(timer))
    }
    const force = setTimeout(() => signal(child, group, "SIGKILL"), 2_000)
    const give = setTimeout(() => resume(Effect.void), 5_000) // never hang a finalizer
    child.once("exit", () => {
      clearTimeout(force)
      clearTimeout(give)
      if (group) signal(child, group, "SIGKILL")
      resume(Effect.void)
    })
  })

/**
 * Starts `command`; with `group`, in a process group of its own, which is killed as a whole when
 * the scope closes (for programs that start helper processes).
 */
export const spawnChild = (
  command: string,
  args: ReadonlyArray<string>,
  options?: { readonly group?: boolean }
) =>
  Effect.acquireRelease(
    Effect.callback<Child, Error>((resume) => {
      const child = spawn(command, [...args], { stdio: ["pipe", "pipe", "pipe"], detached: options?.group === true })
      let stdout = ""
      let stderr = ""
      const exited = Deferred.makeUnsafe<{ readonly code: number | string; readonly stdout: string; readonly stderr: string }>()
      const lines = new Mailbox<string>()
      let partial = ""
      child.stdout!.setEncoding("utf8").on("data", (chunk: string) => {
        stdout += chunk
        partial += chunk
        let newline = partial.indexOf("\n")
        while (newline >= 0) {
          lines.push(partial.slice(0, newline))
          partial = partial.slice(newline + 1)
          newline = partial.indexOf("\n")
        }
      })
      child.stderr!.setEncoding("utf8").on("data", (chunk: string) => {
        stderr += chunk
      })
      child.stdin!.on("error", () => {})
      child.once("error", (error) => resume(Effect.fail(new Error(`cannot run ${command}: ${error.message}`))))
      child.once("close", (code, signal) => Deferred.doneUnsafe(exited, Effect.succeed({ code: code ?? signal ?? "unknown", stdout, stderr })))
      child.once("spawn", () =>
        resume(Effect.succeed({
          process: child,
          exit: Deferred.await(exited),
          output: () => ({ stdout, stderr }),
          firstLine: (millis) =>
            within(
              Effect.raceFirst(
                lines.take,
                Effect.flatMap(Deferred.await(exited), (e) =>
                  Effect.fail(new Error(`${command} exited (${e.code}) before printing a line: ${e.stderr.slice(-2000)}`)))
              ),
              millis,
              `${command} to print its first line`
            ).pipe(Effect.mapError((error) => new Error(`${error.message}; stderr: ${stderr.slice(-2000)}`)))
        })))
    }),
    (child) => stopChild(child.process, options?.group === true)
  )

/** Runs a command to completion (bounded), failing when it exits with another status than 0. */
export const run = (command: string, args: ReadonlyArray<string>, millis: number) =>
  Effect.scoped(Effect.gen(function*() {
    const child = yield* spawnChild(command, args)
    child.process.stdin!.end()
    const result = yield* within(child.exit, millis, `${command} to finish`)
    if (result.code !== 0) {
      return yield* Effect.fail(new Error(`${command} ${args.join(" ")} exited with ${result.code}: ${result.stderr}`))
    }
    return result
  }))

/** A self-signed certificate for `127.0.0.1`, valid for a day. */
export const certificate = Effect.gen(function*() {
  const dir = yield* tempDir("interop-tls-")
  const keyFile = Path.join(dir, "key.pem")
  const certFile = Path.join(dir, "cert.pem")
  yield* run("openssl", [
    "req",
    "-x509",
    "-newkey",
    "rsa:2048",
    "-nodes",
    "-subj",
    "/CN=localhost",
    "-addext",
    "subjectAltName=IP:127.0.0.1",
    "-days",
    "1",
    "-keyout",
    keyFile,
    "-out",
    certFile
  ], 30_000)
  const cert = yield* attempt("reading the certificate", () => Fs.readFile(certFile, "utf8"))
  const key = yield* attempt("reading the key", () => Fs.readFile(keyFile, "utf8"))
  if (!cert.includes("BEGIN CERTIFICATE")) return yield* Effect.fail(new Error(`openssl wrote no certificate: ${cert.slice(0, 200)}`))
  return { cert, key }
})
