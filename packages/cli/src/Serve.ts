/**
 * `ews serve`: a WebSocket server. Once it listens it prints `listening ws://HOST:PORT/PATH` on
 * stdout, then logs connections on stderr. Modes: `--echo` (every message back to its sender),
 * `--broadcast` (every message to every other client), or by default interactive (received
 * messages on stdout, stdin lines to every client). SIGINT / SIGTERM close every connection with
 * 1001 and exit 0.
 *
 * @since 0.1.0
 */
import type { Client, Connection } from "@effect-websocket/core"
import { NodeServer } from "@effect-websocket/platform-node"
import { Cause, Console, Effect, Exit, Fiber, FileSystem, Option, Queue, type Scope, Stream } from "effect"
import { Command, Flag } from "effect/cli"
import * as Tls from "node:tls"
import { controlFrames, fail, json, orUndefined, stats, stdinLines, subprotocols, watchControlFrames } from "./Common.ts"
import * as Output from "./Output.ts"

/**
 * Bytes relayed to one client (`--broadcast`, stdin lines) that may wait in its outbox while it is
 * slow; a client that has owed more for longer than {@link PATIENCE_MS} (it stopped reading, or
 * reads slower than the others talk) is cut off, so that it stalls no one. Owing more for a moment
 * is no reason: when many clients talk at once, a healthy client's outbox fills before its fiber
 * runs.
 */
const BACKLOG = 16 * 1024 * 1024

/** How long a client may owe more than {@link BACKLOG}. */
const PATIENCE_MS = 5000

/** A connected client and the messages relayed to it, sent by a fiber of its own. */
interface Peer {
  readonly connection: Connection.Connection
  readonly outbox: Queue.Queue<Connection.Message>
  /** Bytes in the outbox and in the send under way (a string counts its length). */
  owed: number
  /** Since when the client owes more than BACKLOG (meaningful only while it does). */
  since: number
  /** Whether a {@link watch} runs for the client (while it owes more than BACKLOG). */
  watched: boolean
  /** The scope of the client's connection, where its watch runs. */
  readonly scope: Scope.Scope
}

const sizeOf = (message: Connection.Message) => typeof message === "string" ? message.length : message.byteLength

/**
 * Cuts `peer` off (1006) once it has owed more than {@link BACKLOG} for {@link PATIENCE_MS},
 * whether or not more is relayed to it meanwhile; ends as soon as it owes no more than that.
 */
const watch = (peer: Peer): Effect.Effect<void> =>
  Effect.suspend(() => {
    if (peer.owed <= BACKLOG) {
      peer.watched = false
      return Effect.void
    }
    const left = peer.since + PATIENCE_MS - Date.now()
    return left <= 0 ? peer.connection.abort : Effect.andThen(Effect.sleep(left), watch(peer))
  })

const flags = {
  host: Flag.String("host").pipe(
    Flag.withMetavar("host"),
    Flag.withDescription("Interface to listen on (default 127.0.0.1; 0.0.0.0 or :: for every interface)"),
    Flag.withDefault("127.0.0.1")
  ),
  port: Flag.Int("port").pipe(
    Flag.withAlias("p"),
    Flag.withMetavar("port"),
    Flag.withDescription("TCP port to listen on (default 8080); 0 picks a free one (the `listening` line tells which)"),
    Flag.filter((p) => p >= 0 && p <= 65535, (p) => `--port must be between 0 and 65535, got ${p}`),
    Flag.withDefault(8080)
  ),
  path: Flag.String("path").pipe(
    Flag.withMetavar("/path"),
    Flag.withDescription("Only accept connections to this path (others get 404); default: every path"),
    Flag.filter((p) => p.startsWith("/"), (p) => `--path must start with "/", got ${JSON.stringify(p)}`),
    Flag.optional
  ),
  echo: Flag.Boolean("echo").pipe(
    Flag.withDescription("Send every message back to its sender, with the same type (text or binary)"),
    Flag.withDefault(false)
  ),
  broadcast: Flag.Boolean("broadcast").pipe(
    Flag.withDescription("Relay every message to every other connected client"),
    Flag.withDefault(false)
  ),
  subprotocol: subprotocols(
    "Accept this subprotocol (repeatable): the first one the client offers that is in this list is selected; without any, the client's first offer is (as a ws server does)"
  ),
  maxMessageSize: Flag.Int("max-message-size").pipe(
    Flag.withMetavar("bytes"),
    Flag.withDescription("Largest message accepted, in bytes; a bigger one closes the connection with 1009 (default 64 MiB)"),
    Flag.filter((n) => n > 0, (n) => `--max-message-size must be positive, got ${n}`),
    Flag.optional
  ),
  tlsCert: Flag.String("tls-cert").pipe(
    Flag.withMetavar("file"),
    Flag.withDescription("Serve wss:// with this PEM certificate (chain) file; needs --tls-key"),
    Flag.optional
  ),
  tlsKey: Flag.String("tls-key").pipe(
    Flag.withMetavar("file"),
    Flag.withDescription("PEM private key file of --tls-cert"),
    Flag.optional
  ),
  json,
  stats
}

/** Reads the TLS files and checks that they make a usable certificate and key. */
const loadTls = (output: Output.Output, certFile: string, keyFile: string) =>
  Effect.gen(function*() {
    const fs = yield* FileSystem.FileSystem
    const read = (file: string, what: string) =>
      fs.readFile(file).pipe(
        Effect.catch((error) => fail(output, `cannot read TLS ${what} file ${JSON.stringify(file)}: ${Output.oneLine(error.message)}`, { tag: "TlsFileError" }))
      )
    const cert = Buffer.from(yield* read(certFile, "certificate"))
    const key = Buffer.from(yield* read(keyFile, "key"))
    const check = (what: string, secureContext: Tls.SecureContextOptions) =>
      Effect.try({ try: () => Tls.createSecureContext(secureContext), catch: (cause) => cause }).pipe(
        Effect.catch((cause) =>
          fail(output, `${what}: ${Output.oneLine(cause instanceof Error ? cause.message : String(cause))}`, { tag: "TlsFileError" })
        )
      )
    yield* check(`invalid TLS certificate in ${JSON.stringify(certFile)}`, { cert })
    yield* check(`invalid TLS key in ${JSON.stringify(keyFile)}, or it does not match the certificate`, { cert, key })
    return { cert, key }
  })

/**
 * The `serve` command.
 *
 * @category commands
 * @since 0.1.0
 */
export const command = Command.make(
  "serve",
  flags,
  Effect.fn("ews.serve")(function*(options) {
    const output = Output.make(options.json)
    if (options.echo && options.broadcast) return yield* fail(output, "--echo and --broadcast cannot be used together")
    const certFile = orUndefined(options.tlsCert)
    const keyFile = orUndefined(options.tlsKey)
    if ((certFile === undefined) !== (keyFile === undefined)) {
      return yield* fail(output, "--tls-cert and --tls-key must be given together")
    }
    const tls = certFile !== undefined && keyFile !== undefined ? yield* loadTls(output, certFile, keyFile) : undefined
    const mode = options.echo ? "echo" : options.broadcast ? "broadcast" : "interactive"
    const accepted = options.subprotocol

    const clients = new Map<number, Peer>()
    /** Each open connection's control-frame check: one watcher runs them all (one timer, however many clients). */
    const controlChecks = new Set<Effect.Effect<void>>()
    yield* Effect.forkChild(watchControlFrames(Effect.forEach(controlChecks, (check) => check, { discard: true })))
    /** The counts of the connections that ended. */
    let ended: Output.Totals = Output.sumTotals([])
    let lastId = 0

    /** Hands `message` to the outbox of every target; one that falls behind (see `BACKLOG`) is watched. */
    const relay = (message: Connection.Message, targets: Iterable<Peer>) =>
      Effect.forEach(
        targets,
        (target) => {
          if (target.owed <= BACKLOG) target.since = Date.now()
          target.owed += sizeOf(message)
          const offer = Queue.offer(target.outbox, message)
          if (target.owed <= BACKLOG || target.watched) return offer
          target.watched = true
          return Effect.andThen(Effect.forkIn(watch(target), target.scope), offer)
        },
        { discard: true }
      )

    const handler: Client.Handler = (connection, request) => {
      const id = ++lastId
      const checkControl = controlFrames(connection.stats, output, id)
      const closeEvent = (info: Connection.CloseInfo) =>
        output.emit({ event: "close", client: id, code: info.code, reason: info.reason, clean: info.clean, initiator: info.initiator })
      // (the pings and pongs that came before a message are reported before it)
      const messages = Stream.runForEach(connection.messages, (message) => Effect.andThen(checkControl, () => {
        switch (mode) {
          case "echo":
            return Effect.andThen(output.message(message, id, false), Effect.ignore(connection.send(message)))
          case "broadcast":
            return Effect.andThen(
              output.message(message, id, false),
              Effect.suspend(() => relay(message, [...clients].filter(([other]) => other !== id).map(([, c]) => c)))
            )
          case "interactive":
            return output.message(message, id)
        }
      }))
      return Effect.scoped(Effect.gen(function*() {
        // (bounded by BACKLOG and what comes within PATIENCE_MS: `watch` then cuts the client off)
        const outbox = yield* Queue.unbounded<Connection.Message>()
        const peer: Peer = { connection, outbox, owed: 0, since: 0, watched: false, scope: yield* Effect.scope }
        const sender = yield* Effect.forkChild(Stream.runForEach(Stream.fromQueue(peer.outbox), (message) =>
          Effect.andThen(
            Effect.ignore(connection.send(message)),
            Effect.sync(() => {
              peer.owed -= sizeOf(message)
            })
          )))
        clients.set(id, peer)
        yield* output.emit({
          event: "open",
          client: id,
          path: request.url,
          ...(request.remoteAddress === undefined ? {} : { remoteAddress: request.remoteAddress }),
          protocol: connection.protocol
        })
        controlChecks.add(checkControl)
        const result = yield* Effect.exit(messages)
        if (Exit.isFailure(result)) {
          const error = Option.getOrUndefined(Cause.findErrorOption(result.cause))
          if (error !== undefined) {
            yield* output.emit({ event: "error", client: id, tag: error._tag, message: Output.oneLine(error.message) })
          }
        }
        const info = yield* connection.closed
        yield* Fiber.interrupt(sender)
        controlChecks.delete(checkControl)
        yield* checkControl
        yield* closeEvent(info)
      })).pipe(
        // the server is shutting down: close with 1001 (going away)
        Effect.onInterrupt(() =>
          Effect.gen(function*() {
            const info = yield* Effect.orDie(connection.close(1001, "server shutting down"))
            yield* closeEvent(info)
          })
        ),
        Effect.ensuring(Effect.sync(() => {
          clients.delete(id)
          controlChecks.delete(checkControl)
          ended = Output.sumTotals([ended, connection.stats])
        }))
      )
    }

    yield* Effect.scoped(Effect.gen(function*() {
      const server = yield* NodeServer.serve(handler, {
        host: options.host,
        port: options.port,
        path: orUndefined(options.path),
        maxMessageSize: orUndefined(options.maxMessageSize),
        // (without --subprotocol, as ws's default handleProtocols and wscat: the client's first offer)
        selectProtocol: (offered) => accepted.length === 0 ? offered[0] : offered.find((p) => accepted.includes(p)),
        ...(tls === undefined ? {} : { tls })
      }).pipe(
        Effect.catch((error) => {
          const inUse = error._tag === "ServeError" && (error.cause as { code?: unknown } | undefined)?.code === "EADDRINUSE"
          return fail(output, `${Output.oneLine(error.message)}${inUse ? " (another process uses this port; --port 0 picks a free one)" : ""}`, {
            tag: error._tag
          })
        })
      )
      yield* output.emit({ event: "listening", url: server.url })
      if (mode === "interactive") {
        // every stdin line goes to every client; EOF on stdin leaves the server running
        yield* Effect.forkScoped(
          Stream.runForEach(stdinLines, (line) =>
            clients.size === 0
              ? (output.json ? Effect.void : Console.error("no client connected; line dropped"))
              : relay(line, [...clients.values()])).pipe(Effect.ignore)
        )
      }
      return yield* Effect.never
    })).pipe(
      Effect.ensuring(
        options.stats
          ? Effect.suspend(() =>
            output.emit({
              event: "stats",
              connections: lastId,
              ...Output.sumTotals([ended, ...[...clients.values()].map((c) => c.connection.stats)])
            })
          )
          : Effect.void
      )
    )
  })
).pipe(
  Command.withShortDescription("Start a WebSocket server (echo, broadcast, or stdin / stdout)"),
  Command.withDescription(
    "Start a WebSocket server. Prints `listening ws://HOST:PORT/PATH` on stdout as soon as it listens, then logs connections on stderr. Without --echo or --broadcast, received messages are printed on stdout (text as is, binary as `<binary N bytes: HEX>`) and each stdin line is sent to every client. SIGINT / SIGTERM close every connection with 1001 and exit 0."
  ),
  Command.withExamples([
    { command: "ews serve --port 8080 --echo", description: "An echo server on ws://127.0.0.1:8080/" },
    { command: "ews serve --port 0 --broadcast --path /chat", description: "A chat relay on a free port, at /chat only" },
    { command: "ews serve --host 0.0.0.0 -p 8443 --tls-cert cert.pem --tls-key key.pem --echo", description: "wss:// on every interface" },
    { command: "ews serve -p 8080 -s chat.v2 -s chat.v1 --json", description: "Accept two subprotocols, print JSON events" }
  ])
)
