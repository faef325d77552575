/**
 * WebSocket servers on Node.js. The HTTP part of the opening handshake goes through `node:http`
 * (its parser enforces the HTTP grammar, header size limits and request timeouts); this module
 * checks what HTTP cannot see (method, version, path), asks the application whether to accept,
 * runs `beginServerHandshake`, writes the `101` response and runs each connection's handler in its
 * own fiber.
 *
 * - {@link makeUpgradeHandler}: a listener for the `upgrade` event of any `node:http` /
 *   `node:https` server (like `ws`'s `noServer` mode).
 * - {@link serve} / {@link layer}: a standalone server on a host and port ({@link layerConfig}: its
 *   options read from `Config`).
 *
 * Bad requests never reach the handler: `400 Bad Request` with a short reason (`426 Upgrade
 * Required` with `Sec-WebSocket-Version: 13` and `Upgrade: websocket` for another version; `400`
 * with `Sec-WebSocket-Version: 13` for a missing or malformed one), `405` for a method other than
 * GET, `404` for another path, `400` for a request with a body, and the application's own status
 * when it rejects a request.
 *
 * @since 0.1.0
 */
import { Client, Connection, WebSocket, WebSocketError } from "@effect-websocket/core"
import { HttpHeader, Options } from "@effect-websocket/schema"
import { Cause, Config, Context, Duration, Effect, Exit, Fiber, FiberSet, Layer, Option, Predicate, Schema } from "effect"
import type { Scope, Tracer } from "effect"
import { EventEmitter } from "node:events"
import * as Http from "node:http"
import * as Https from "node:https"
import * as Net from "node:net"
import type { Duplex } from "node:stream"
import type * as Tls from "node:tls"
import { decodeTls } from "./internal/tlsOption.ts"
import * as NodeTransport from "./NodeTransport.ts"

/**
 * A string identifying this module's values.
 *
 * @category type ids
 * @since 0.1.0
 */
export const TypeId = "~@effect-websocket/platform-node/NodeServer"

/**
 * Returned by an `authorize` hook to refuse a request with an HTTP status (401, 403, ...): the
 * same class as `Client.Rejection`, so that a hook works with `Client.layerMemory` too.
 *
 * @category errors
 * @since 0.1.0
 */
export const Rejection: typeof Client.Rejection = Client.Rejection

/**
 * An `authorize` hook's refusal (see the value of the same name).
 *
 * @category errors
 * @since 0.1.0
 */
export type Rejection = Client.Rejection

/**
 * The server could not start (e.g. the port is in use).
 *
 * @category errors
 * @since 0.1.0
 */
export class ServeError extends Schema.TaggedError<ServeError>()("ServeError", {
  message: Schema.String,
  cause: Schema.optionalKey(Schema.Defect())
}) {}

/**
 * Options of {@link makeUpgradeHandler}.
 *
 * @category models
 * @since 0.1.0
 */
export interface UpgradeOptions<RA = never> extends Client.ServeOptions<RA> {
  /** How much each connection's socket buffers each way before backpressure applies (defaults: 64 KiB read, 1 MiB write). */
  readonly socketBuffers?: NodeTransport.BufferOptions | undefined
}

/**
 * Options of {@link serve}.
 *
 * @category models
 * @since 0.1.0
 */
export interface ServeOptions<RA = never> extends UpgradeOptions<RA> {
  /** Default `127.0.0.1`. */
  readonly host?: string | undefined
  /** Default 0: a free port (read it from the returned address). */
  readonly port?: number | undefined
  /**
   * Serve `wss://` with these TLS settings, which give the server its identity: `cert` and `key`,
   * `pfx`, `SNICallback` or `pskCallback` (or anonymous cipher suites only). Without one no
   * handshake could succeed, and the server does not start; nor with settings Node refuses (a key
   * that does not match its certificate, a wrong passphrase): an `InvalidParameter` naming `tls`.
   */
  readonly tls?: Tls.SecureContextOptions & Tls.TlsOptions | undefined
  /**
   * Time a client has to send its whole upgrade request. Default 10 seconds. Node checks its
   * request timeouts on an interval (here a quarter of this timeout, at most a second), so a slow
   * client is dropped up to that much later. With `tls`, the TLS handshake has as long again
   * before it (unless `tls.handshakeTimeout` says otherwise): Node's request clock starts once
   * the TLS handshake is done, so a client may take up to about twice this in all.
   */
  readonly handshakeTimeout?: Duration.Input | undefined
  /**
   * Size of the request headers in bytes (the request target, and every header's name and value,
   * as Node's parser counts them) from which a request gets 431. Default 16 KiB (Node's).
   */
  readonly maxHeaderBytes?: number | undefined
  /** How long shutting down waits for connections to finish their closing handshake. Default 5 seconds. */
  readonly shutdownTimeout?: Duration.Input | undefined
}

/**
 * Why a server did not start: it could not listen ({@link ServeError}), or an option is invalid
 * (`InvalidParameter`, naming it).
 *
 * @category errors
 * @since 0.1.0
 */
export type ServeFailure = ServeError | WebSocketError.InvalidParameter

/**
 * A running server.
 *
 * @category models
 * @since 0.1.0
 */
export interface Server extends Client.Server {
  readonly [TypeId]: typeof TypeId
  readonly address: Net.AddressInfo
  /**
   * `ws://host:port/path` (or `wss://`): the `host` option when it is a name (`localhost`), else the
   * address bound, IPv6 in brackets.
   */
  readonly url: string
}

/**
 * The running server, as a service (see {@link layer}).
 *
 * @category services
 * @since 0.1.0
 */
export const Server: Context.Service<Server, Server> = Context.Service<Server>("@effect-websocket/platform-node/NodeServer")

/**
 * Whether `u` is a {@link Server}.
 *
 * @category guards
 * @since 0.1.0
 */
export const isServer = (u: unknown): u is Server => Predicate.hasProperty(u, TypeId)


/**
 * Ends our side of a socket after `data` (if any) and destroys it a second later at the latest:
 * a client that does not end its side does not hold it.
 */
const endSocket = (socket: Duplex, data?: string) => {
  if (data === undefined) socket.end()
  else socket.end(data)
  const timer = setTimeout(() => socket.destroy(), 1000)
  timer.unref()
  socket.once("close", () => clearTimeout(timer))
}

/** Writes a short HTTP error response (see `Client.refusalResponse`) and closes the socket. */
const refuse = (
  socket: Duplex,
  status: number,
  message: string,
  headers: ReadonlyArray<HttpHeader.HttpHeader> = []
) => {
  if (socket.destroyed) return
  const response = Client.refusalResponse(message, headers, status)
  writeHead(socket, `HTTP/1.1 ${status} ${Http.STATUS_CODES[status] ?? "Error"}`, response.headers)
  endSocket(socket, response.body)
}

/**
 * Writes a response's status line and header lines. Header values are Latin-1 (`obs-text`, as
 * `node:http` writes them and its parser reads them), so the bytes are written as such, not in
 * UTF-8 (the body is UTF-8).
 */
const writeHead = (socket: Duplex, statusLine: string, headers: ReadonlyArray<HttpHeader.HttpHeader>) => {
  socket.write(`${[statusLine, ...headers.map((h) => `${h.name}: ${h.value}`)].join("\r\n")}\r\n\r\n`, "latin1")
}

/** How long a shutting-down server lets its last sockets end on their own before destroying them (at most its shutdownTimeout). */
const SOCKET_GRACE_MS = 1000

/** The longest delay a Node timer takes (about 24.8 days); a longer one fires at once. */
const MAX_TIMER_MS = 2 ** 31 - 1

/**
 * Most header lines a request to the server of `req` may have, as Node's parser reads the server's
 * `maxHeadersCount`: 1000 when it is not a number, none when it comes to 0 or less as a 32-bit
 * integer (0, a negative number, `Infinity`, `NaN`).
 */
const maxHeadersCount = (req: Http.IncomingMessage): number => {
  const limit: unknown = (req.socket as Net.Socket & { readonly server?: { readonly maxHeadersCount?: unknown } }).server?.maxHeadersCount
  return typeof limit === "number" ? (limit << 1) / 2 : Client.DEFAULT_MAX_HEADERS_COUNT
}

/**
 * Refuses an upgrade request with `status`: counted in the handshake failures with `reason`, and
 * recorded on the `WebSocket.accept` span.
 */
const refused = (
  reason: string,
  socket: Duplex,
  status: number,
  message: string,
  headers?: ReadonlyArray<HttpHeader.HttpHeader>
): Effect.Effect<void> =>
  Effect.andThen(
    Client.serverHandshakeFailed(reason, status),
    Effect.sync(() => refuse(socket, status, message, headers))
  )

/** The answer to a request that comes while the server shuts down (or after): 503, as a closed `ws` server's. */
const shuttingDown = (socket: Duplex): Effect.Effect<void> => refused("ShuttingDown", socket, 503, "the server is shutting down")

/**
 * The request target as path and query: an absolute URI (`GET http://host/chat`, which RFC 6455
 * section 4.2.1 allows) gives its path and query.
 */
const requestTarget = (target: string | undefined): string => {
  if (target === undefined || target === "") return "/"
  if (target.startsWith("/") || !/^(https?|wss?):\/\//i.test(target)) return target
  try {
    const parsed = new URL(target)
    return parsed.pathname + parsed.search
  } catch {
    return target
  }
}

/** The path of a request's target, without the query (what a server's `path` is matched against). */
const requestPath = (target: string | undefined): string => requestTarget(target).split("?")[0]!

/** Runs the answer to an upgrade request in its `WebSocket.accept` span, the child of the span the request carries (no stack trace: it would point into this module). */
const inAcceptSpan = (req: Http.IncomingMessage) =>
  Effect.withSpan("WebSocket.accept", {
    attributes: { "url.path": requestPath(req.url) },
    parent: Client.requestParent(req.headers)
  }, { captureStackTrace: false })

/** A socket's `error` listener: its errors surface through the transport (one function for every socket). */
const ignoreError = (): void => {}

/** The `node:http` request behind each upgrade request of this module's servers (see {@link incomingMessage}). */
const incomingMessages = new WeakMap<Client.UpgradeRequest, Http.IncomingMessage>()

/**
 * The `node:http` request behind an upgrade request that a server of this module (or an upgrade
 * handler) handed to `authorize` or to the handler; `undefined` for one made elsewhere (in memory,
 * say). It is what `ws` hands to `verifyClient` and to its `connection` listeners as `req`: its
 * `socket` is a `tls.TLSSocket` on a `wss://` server, with the client's certificate
 * (`getPeerCertificate()`) and whether it was verified (`authorized`, with `requestCert`), and
 * whatever a framework put on the request before the upgrade reached this module.
 *
 * **Example**
 *
 * ```ts
 * import type { Client } from "@effect-websocket/core"
 * import { NodeServer } from "@effect-websocket/platform-node"
 * import { Effect } from "effect"
 * import type * as Tls from "node:tls"
 *
 * // with `tls: { cert, key, ca, requestCert: true, rejectUnauthorized: false }`
 * const authorize = (request: Client.UpgradeRequest) => {
 *   const socket = NodeServer.incomingMessage(request)?.socket as Tls.TLSSocket | undefined
 *   return socket?.authorized === true
 *     ? Effect.void
 *     : Effect.fail(new NodeServer.Rejection({ status: 401, message: "a client certificate is required" }))
 * }
 * ```
 *
 * @category getters
 * @since 0.1.0
 */
export const incomingMessage = (request: Client.UpgradeRequest): Http.IncomingMessage | undefined =>
  incomingMessages.get(request)

/**
 * A listener for the `upgrade` event of a `node:http` or `node:https` server, running `handler`
 * for every accepted connection in its own fiber, owned by the current scope: closing it
 * interrupts the handlers, which closes their connections with 1001; from then on the listener
 * answers every upgrade request with 503, as a closed `ws` server does.
 *
 * Several listeners share the event by path, as `ws`'s `noServer` users route upgrades: a
 * request goes to a listener of ours whose `path` is its path, else to one of ours without a
 * `path` (it serves every path), an open one before one whose scope is closing (answering 503);
 * one that none of ours serves is left to the server's other `upgrade` listeners (another
 * library's answers it, or not, as it will), and answered 404 by one of ours only when no other
 * is attached. Each request gets at most one answer from ours. A listener attached through `once`
 * takes part as one attached with `on` (and is spent by the first request, which it may leave to
 * another); a wrapper that passes the server on as `this` counts as another library's listener
 * (a request none of ours serves is then left to it); a router of the application's own that
 * calls the listener as a plain function hands it the request: answered whatever its path, unless
 * a listener of ours attached to the server took it already.
 *
 * **Example**
 *
 * ```ts
 * import { NodeServer } from "@effect-websocket/platform-node"
 * import { Effect, Stream } from "effect"
 * import * as Http from "node:http"
 *
 * const program = Effect.scoped(Effect.gen(function*() {
 *   const server = Http.createServer((_req, res) => res.end("hello"))
 *   const onUpgrade = yield* NodeServer.makeUpgradeHandler((connection) =>
 *     Stream.runForEach(connection.messages, connection.send), { path: "/echo" })
 *   server.on("upgrade", onUpgrade)
 *   server.listen(8080)
 *   return yield* Effect.never // connections are accepted while this scope is open
 * }))
 * ```
 *
 * @category constructors
 * @since 0.1.0
 */
export const makeUpgradeHandler = <E, R, RA = never>(
  handler: Client.Handler<E, R>,
  options?: UpgradeOptions<RA>
): Effect.Effect<(request: Http.IncomingMessage, socket: Duplex, head: Buffer) => void, WebSocketError.InvalidParameter, Scope.Scope | R | RA> =>
  Effect.gen(function*() {
    yield* Client.checkServeOptions(options, handler)
    const socketBuffers = yield* Client.decodeOption(Options.SocketBuffers, "socketBuffers", options?.socketBuffers ?? {})
    const run = yield* FiberSet.makeRuntime<R | RA>()
    // Runs before the fibers are interrupted: from then on (and once the scope is closed, when
    // `run` would start nothing) a request gets 503, as from a closing `ws` server, rather than
    // a socket left unanswered.
    const route: UpgradeRoute = { path: options?.path, closing: false }
    yield* Effect.addFinalizer(() =>
      Effect.sync(() => {
        route.closing = true
      })
    )
    const services = yield* Effect.context<never>()
    const makeHandle = yield* Client.serverHandleMaker(options)
    const accept = (req: Http.IncomingMessage, socket: Duplex, head: Buffer) => {
      /**
       * A failed handshake: answered with the status a server owes (a fault of the server's own is
       * logged); anything but a handshake error is a 500 (see below).
       */
      const refuseHandshake = (cause: Cause.Cause<Client.ServerHandshakeFailure | WebSocketError.InvalidProtocolOperation>) => {
        const failure = Cause.findErrorOption(cause)
        if (Option.isNone(failure)) return Effect.failCause(cause)
        const error = failure.value
        return Client.answerHandshakeFailure(error, (status, headers) => refused(error._tag, socket, status, error.message, headers))
      }
      /** Whether the 101 went out: from then on a failure can only drop the socket. */
      let switched = false
      /** Whether a connection took the socket over: it then ends it (gracefully) when its scope closes. */
      let handedOver = false
      /**
       * What the upgrade made: the connection, with the `WebSocket.accept` span (the handler's
       * parent); `undefined` while none was made (the request was answered otherwise). Set rather
       * than returned: an ended span keeps its exit, and the handler's fibers keep the span, so
       * that exit must not hold the connection (its buffers and socket) once it ended.
       */
      let accepted:
        | {
          readonly connection: Connection.Connection
          readonly request: Client.UpgradeRequest
          readonly span: Option.Option<Tracer.AnySpan>
        }
        | undefined
      /**
       * The upgrade, in the `WebSocket.accept` span. Its resources live in the scope around it and
       * the handler. Made when it runs: what it is made of is not kept while the handler runs.
       */
      const upgrade = () => Effect.gen(function*() {
        const url = requestTarget(req.url)
        const pathname = url.split("?")[0]!
        if (req.method !== "GET") {
          return yield* refused("MethodNotAllowed", socket, 405, `the WebSocket handshake needs GET, not ${req.method}`, [{ name: "Allow", value: "GET" }])
        }
        if (req.httpVersionMajor < 1 || (req.httpVersionMajor === 1 && req.httpVersionMinor < 1)) {
          return yield* refused("HttpVersionNotSupported", socket, 505, "the WebSocket handshake needs HTTP/1.1 or later")
        }
        // More header lines than the server's `maxHeadersCount`: Node 24 answers 431 itself, Node 22
        // keeps a few more than that and drops the rest without a word, which could hide one that
        // matters (an `Origin`, say); a 431 from both
        const headerLimit = maxHeadersCount(req)
        if (headerLimit > 0 && req.rawHeaders.length > 2 * headerLimit) {
          return yield* refused("HeaderTooLarge", socket, 431, Client.HEADERS_TOO_LARGE)
        }
        // Node hands what follows the headers to the connection: a body would be taken for frames
        const contentLength = req.headers["content-length"]
        if (req.headers["transfer-encoding"] !== undefined || (contentLength !== undefined && !/^0+$/.test(contentLength))) {
          return yield* refused("RequestBody", socket, 400, "the WebSocket handshake request has no body")
        }
        if (options?.path !== undefined && pathname !== options.path) {
          return yield* refused("NotFound", socket, 404, `no WebSocket endpoint at ${pathname}`)
        }
        const headers = HttpHeader.fromRawHeaders(req.rawHeaders)
        // checked before any hook sees the request, as `ws` does before `verifyClient`
        const checked = yield* Effect.exit(Client.checkUpgradeRequest(headers))
        if (Exit.isFailure(checked)) return yield* refuseHandshake(checked.cause)
        const offered = checked.value
        const request: Client.UpgradeRequest = {
          url,
          headers,
          protocols: offered,
          remoteAddress: req.socket.remoteAddress,
          remotePort: req.socket.remotePort
        }
        incomingMessages.set(request, req)
        if (options?.authorize !== undefined) {
          const authorize = options.authorize
          const verdict = yield* Effect.exit(Client.runCallback("authorize hook", () => authorize(request)))
          if (Exit.isFailure(verdict)) {
            const rejection = verdict.cause.reasons.find((r) => r._tag === "Fail")
            if (rejection !== undefined && rejection._tag === "Fail" && rejection.error instanceof Rejection) {
              // (a refusal that cannot be sent is the server's fault: a 500 (see below))
              const { headers, message, status } = yield* Client.rejectionAnswer(rejection.error)
              return yield* refused("Rejected", socket, status, message, headers)
            }
            return yield* Effect.failCause(verdict.cause) // not a refusal: a 500 (see below)
          }
        }
        const handle = yield* makeHandle
        const selected = Client.selectProtocolFor(options, request)
        const handshake = yield* Effect.exit(
          WebSocket.beginServerHandshake(handle, { requestHeaders: headers, subprotocol: selected })
        )
        if (Exit.isFailure(handshake)) return yield* refuseHandshake(handshake.cause)
        const responseHeaders = [...handshake.value.responseHeaders, ...yield* Client.responseHeadersFor(options, request)]
        // A client that reset the connection meanwhile is gone: nothing to answer, nobody to
        // serve, as `ws` checks. (One that only ended its side is served: it may still read.)
        if (socket.destroyed || !socket.writable) {
          socket.destroy()
          return
        }
        switched = true
        writeHead(socket, "HTTP/1.1 101 Switching Protocols", responseHeaders)
        yield* WebSocket.endServerHandshake(handle).pipe(Effect.orDie)
        if ("setNoDelay" in socket && typeof socket.setNoDelay === "function") (socket as Net.Socket).setNoDelay(true)
        const socketTransport = NodeTransport.fromDuplex(socket, { ...socketBuffers, head })
        const transport = yield* Client.wrappedTransport(options?.wrapTransport, socketTransport)
        const connection = yield* Client.makeTakingOver(handle, transport, {
          ...options?.connection,
          protocol: selected ?? "",
          handshake: { requestHeaders: headers, responseHeaders }
        }, () => {
          handedOver = true
        })
        accepted = { connection, request, span: yield* Effect.option(Effect.currentSpan) }
      })
      /**
       * Whatever else ends the upgrade early (an application callback that throws, fails or is
       * interrupted, a defect, interruption at shutdown), the request is answered while no 101
       * went out: 500 (logged), or 503 when the server shuts down (as a closed ws server answers
       * one still in its verifyClient), a refusal like the others; else the socket goes (unless a
       * connection took it over: its scope closed it, and destroying it now could cut what it
       * still flushes). A socket left open would hold its client, and the server's shutdown,
       * forever.
       */
      const settle = (exit: Exit.Exit<void, unknown>): Effect.Effect<void, unknown> => {
        if (Exit.isSuccess(exit) || handedOver) return exit
        const interrupted = Exit.hasInterrupts(exit)
        if (switched) {
          return Effect.andThen(
            interrupted ? Effect.void : Effect.logError("WebSocket connection setup failed; its socket is destroyed", exit.cause),
            Effect.sync(() => socket.destroyed || socket.destroy())
          ).pipe(Effect.andThen(exit))
        }
        if (route.closing && interrupted) return shuttingDown(socket)
        return Effect.andThen(
          Client.logServerFault(exit.cause),
          refused("ServerError", socket, 500, "the upgrade failed")
        ).pipe(Effect.andThen(exit))
      }
      // The answer is settled in the span, uninterruptibly: the span of a request refused at
      // shutdown ends as a success, as any refusal's, the interruption landing after it.
      const answered = () =>
        Effect.uninterruptibleMask((restore) =>
          Effect.flatMap(Effect.exit(restore(upgrade())), settle).pipe(inAcceptSpan(req))
        ).pipe(Client.annotateRequestLogs(requestTarget(req.url), req.socket.remoteAddress))
      // The connection's resources live in this scope: when the server shuts down, interrupting
      // this fiber closes it, and the connection's finalizer runs the closing handshake (1001).
      // The accept span ends with the upgrade, as in memory and as the client's `WebSocket.connect`
      // does: the handler runs after it, as its child, for as long as the connection lasts.
      return Effect.scoped(Effect.flatMap(Effect.suspend(answered), () => {
        if (accepted === undefined) return Effect.void
        const { connection, request, span } = accepted
        accepted = undefined
        return Client.runHandler(handler, connection, request, span)
      }))
    }
    const listener = function(this: unknown, req: Http.IncomingMessage, socket: Duplex, head: Buffer) {
      // (as a listener of a server's `upgrade` event, `server.on("upgrade", ...)` calling it: a
      // request for another path may be another listener's; called as a plain function, by a
      // router, the request is ours unless a listener of ours took it already)
      if (leftToOthers(this instanceof EventEmitter ? this : undefined, listener, req)) return
      socket.on("error", ignoreError) // errors surface through the transport; never crash the process
      // The answer to the request (and later the closing handshake) must get out even when the
      // client ended its side right after the request (TLS sockets end ours with it by default, and
      // so does any stream made with `allowHalfOpen: false`).
      socket.allowHalfOpen = true
      if (route.closing) {
        return Effect.runSyncWith(services)(inAcceptSpan(req)(shuttingDown(socket)))
      }
      run(accept(req, socket, head))
    }
    ;(listener as Routed)[ROUTE] = route
    return listener
  })

/** What an `upgrade` listener of {@link makeUpgradeHandler} serves: its path (`undefined`: every path), and whether its scope is closing. */
interface UpgradeRoute {
  readonly path: string | undefined
  closing: boolean
}

/** Where a listener of {@link makeUpgradeHandler} keeps its route (a global symbol: two copies of this module share the event too). */
const ROUTE = Symbol.for("@effect-websocket/platform-node/NodeServer/UpgradeRoute")

interface Routed {
  [ROUTE]?: UpgradeRoute
}

const routeOf = (listener: Function): UpgradeRoute | undefined => (listener as Routed)[ROUTE]

/** Set on a request that a listener of ours took (a global symbol, as {@link ROUTE}): the others leave it. */
const TAKEN = Symbol.for("@effect-websocket/platform-node/NodeServer/taken")

/**
 * How closely `route` serves `pathname`, the lower the closer: an open listener before a closing
 * one (which answers 503), and of those its exact path before every path; then those that do not
 * serve it ({@link NOT_SERVED} and after), which answer 404 (503 when closing), an open one first.
 */
const rank = (route: UpgradeRoute, pathname: string): number => {
  const closing = route.closing ? 1 : 0
  if (route.path === pathname) return 2 * closing
  if (route.path === undefined) return 2 * closing + 1
  return NOT_SERVED + closing
}

/** The {@link rank} from which a listener does not serve a request. */
const NOT_SERVED = 4

/**
 * Whether a request that `listener` got from `server`'s `upgrade` event (`undefined`: from a
 * router that called it as a plain function) is another listener's, as `ws`'s `noServer` users
 * route upgrades by path. A listener of ours takes a request unless one of ours that serves it
 * more closely (see {@link rank}) is attached to the server, or, when it does not serve it,
 * unless any other listener is attached that might (one of ours that serves it, or another
 * library's, which answers it or not); the first to take a request marks it, and the others leave
 * it. So each request gets at most one answer from ours: a request none of ours serves, with no
 * other listener attached, gets 404 (503 once closing).
 */
const leftToOthers = (server: EventEmitter | undefined, listener: Function, req: Http.IncomingMessage): boolean => {
  const marks = req as { [TAKEN]?: true }
  if (marks[TAKEN] === true) return true
  const pathname = requestPath(req.url)
  const own = rank(routeOf(listener)!, pathname)
  const left = server !== undefined && server.listeners("upgrade").some((other) => {
    if (other === listener) return false
    const route = routeOf(other)
    return route === undefined ? own >= NOT_SERVED : rank(route, pathname) < own
  })
  if (!left) marks[TAKEN] = true
  return left
}

/**
 * Starts a standalone WebSocket server (`node:http`, or `node:https` with `tls`) on `host:port`,
 * running `handler` for every connection. Requests that are not WebSocket upgrades get
 * `426 Upgrade Required`, which closes their connection (a request pipelined behind one is not
 * served). Owned by the current scope: closing it stops accepting, closes every
 * connection with 1001 (waiting up to `shutdownTimeout` for their closing handshakes) and releases
 * every socket.
 *
 * @category constructors
 * @since 0.1.0
 */
export const serve = <E, R, RA = never>(
  handler: Client.Handler<E, R>,
  options?: ServeOptions<RA>
): Effect.Effect<Server, ServeFailure, Scope.Scope | Exclude<R | RA, Client.Server>> =>
  Effect.gen(function*() {
    // (before anything listens; the upgrade handler below checks the options again, for itself)
    yield* Client.checkServeOptions(options, handler)
    const port = yield* Client.decodeOption(Options.Port, "port", options?.port ?? 0)
    const host = yield* Client.decodeOption(Options.Host, "host", options?.host ?? "127.0.0.1")
    const maxHeaderBytes = yield* Client.decodeMaxHeaderBytes(options?.maxHeaderBytes)
    // (whole milliseconds, as Node's timeouts take them; beyond a timer's range, as good as none)
    const handshakeTimeout = Math.min(
      Math.ceil(Duration.toMillis(yield* Client.decodeTimeout("handshakeTimeout", options?.handshakeTimeout, Duration.seconds(10)))),
      MAX_TIMER_MS
    )
    const shutdownTimeout = yield* Client.decodeTimeout("shutdownTimeout", options?.shutdownTimeout, Duration.seconds(5), "zero")
    const tls = yield* decodeTls(options?.tls, "server")
    const serverOptions: Https.ServerOptions = {
      ...tls,
      // a client that does not finish its TLS handshake is dropped as one that sends no request
      // (the request's own clock starts after it)
      ...(tls !== undefined ? { handshakeTimeout: tls.handshakeTimeout ?? handshakeTimeout } : {}),
      maxHeaderSize: maxHeaderBytes,
      headersTimeout: handshakeTimeout,
      requestTimeout: handshakeTimeout,
      connectionsCheckingInterval: Math.min(1000, Math.max(10, Math.ceil(handshakeTimeout / 4)))
    }
    /**
     * Sockets whose last request was answered with `Connection: close`: a request pipelined behind
     * it is not served (RFC 9112 section 9.6), the socket ends once the answer is out.
     */
    const lastAnswered = new WeakSet<Duplex>()
    const onRequest = (req: Http.IncomingMessage, res: Http.ServerResponse) => {
      lastAnswered.add(req.socket)
      // (RFC 9110 section 7.8: the sender of Upgrade sends the "Upgrade" connection option too)
      res.writeHead(426, { "Content-Type": "text/plain; charset=utf-8", Upgrade: "websocket", Connection: "Upgrade, close" })
      res.end("this is a WebSocket endpoint\n")
    }
    const server = yield* Effect.try({
      try: () =>
        tls !== undefined
          ? Https.createServer(serverOptions, onRequest)
          : Http.createServer(serverOptions, onRequest),
      catch: (cause): ServeError | WebSocketError.InvalidParameter => {
        const message = cause instanceof Error ? cause.message : String(cause)
        // (the other options were checked: what Node refuses here are the TLS settings, a key
        // that does not match its certificate, a wrong passphrase, a certificate that does not parse)
        return tls !== undefined
          ? new WebSocketError.InvalidParameter({ parameter: "tls", message: `tls: ${message}`, cause })
          : new ServeError({ message: `cannot create the server: ${message}`, cause })
      }
    })
    // requests that Node's parser refuses before any upgrade: counted as refused upgrades too
    // (in the program's metrics); a connection that failed (reset) is no request, as for Node
    const services = yield* Effect.context<never>()
    server.on("clientError", (error: Error & { code?: string }, socket) => {
      if (error.code === "ECONNRESET" || !socket.writable) return socket.destroy()
      if (lastAnswered.has(socket)) return endSocket(socket)
      if (error.code?.startsWith("ERR_TLS") === true) {
        // the TLS handshake did not finish: nothing can be answered in HTTP; a client that is
        // too slow for it counts as one that sends no request in time
        if (error.code === "ERR_TLS_HANDSHAKE_TIMEOUT") Effect.runSyncWith(services)(Client.serverHandshakeFailed("RequestTimeout", 408))
        return socket.destroy()
      }
      const [reason, status, message] = error.code === "HPE_HEADER_OVERFLOW"
        ? ["HeaderTooLarge", 431, Client.HEADERS_TOO_LARGE] as const
        : error.code === "ERR_HTTP_REQUEST_TIMEOUT"
        ? ["RequestTimeout", 408, "the request took too long"] as const
        : ["BadRequest", 400, "malformed HTTP request"] as const
      Effect.runSyncWith(services)(Client.serverHandshakeFailed(reason, status))
      refuse(socket, status, message)
    })
    /** Every TCP connection, including those still in their TLS handshake, which Node's `closeAllConnections` does not know. */
    const sockets = new Set<Net.Socket>()
    // (one listener for every socket, the socket its `this`; `on`, not `once`, which wraps it for
    // every socket: a socket closes once)
    const forget = function(this: Net.Socket) {
      sockets.delete(this)
    }
    server.on("connection", (socket: Net.Socket) => {
      sockets.add(socket)
      socket.on("close", forget)
    })
    /** When the shutdown must be over (`Date.now()` ms): shutdownTimeout after accepting stopped. */
    let deadline: number | undefined = undefined
    // Runs last: the connections have ended; what is still open a moment later (a socket ending
    // gracefully, a client still in its TLS handshake) is destroyed, so the shutdown is bounded:
    // that moment is cut short by the shutdown's deadline.
    const grace = Math.min(SOCKET_GRACE_MS, Math.ceil(Duration.toMillis(shutdownTimeout)))
    yield* Effect.addFinalizer(() =>
      Effect.callback<void>((resume) => {
        const wait = deadline === undefined ? grace : Math.max(0, Math.min(grace, deadline - Date.now()))
        const timer = setTimeout(() => sockets.forEach((socket) => socket.destroy()), wait)
        server.close(() => {
          clearTimeout(timer)
          resume(Effect.void)
        })
        server.closeAllConnections()
      })
    )
    yield* Effect.callback<void, ServeError>((resume) => {
      const onError = (cause: Error) =>
        resume(Effect.fail(new ServeError({ message: `cannot listen on ${host}:${port}: ${cause.message}`, cause })))
      server.once("error", onError)
      server.listen(port, host, () => {
        server.off("error", onError)
        resume(Effect.void)
      })
    })
    /** The connections open: each from when its handler starts until it closes or its handler ends. */
    const tracked = Client.trackConnections(handler, options)
    // Shutdown is bounded by shutdownTimeout even when the connections' own close timeout is longer:
    // past it, the closing handshakes still waiting for a silent peer are cut off (1006), those of
    // connections whose handler already returned too. The watchdog starts once accepting stops and
    // goes once every connection has closed.
    let watchdog: Fiber.Fiber<void> | undefined = undefined
    yield* Effect.addFinalizer(() => watchdog === undefined ? Effect.void : Fiber.interrupt(watchdog))
    /** `listener`, for an upgrade request that is not pipelined behind a last one (that socket just ends). */
    const unlessAfterLast = (listener: (req: Http.IncomingMessage, socket: Duplex, head: Buffer) => void) =>
    (req: Http.IncomingMessage, socket: Duplex, head: Buffer) => {
      if (!lastAnswered.has(socket)) return listener(req, socket, head)
      socket.on("error", ignoreError) // (Node no longer listens to an upgraded socket's errors)
      endSocket(socket)
    }
    const onUpgrade = unlessAfterLast(yield* makeUpgradeHandler(tracked.handler, { ...options, authorize: tracked.authorize }))
    server.on("upgrade", onUpgrade)
    // Runs first on shutdown: stop accepting before the connections are closed. The listener
    // closes (as a closed ws server's); an upgrade that still comes, over a connection already
    // open, is answered 503, as one to a closed upgrade handler.
    const refuseShuttingDown = unlessAfterLast((_req, socket) => Effect.runSyncWith(services)(shuttingDown(socket)))
    yield* Effect.addFinalizer(() =>
      Effect.andThen(
        Effect.sync(() => {
          deadline = Date.now() + Math.ceil(Duration.toMillis(shutdownTimeout))
          server.off("upgrade", onUpgrade)
          server.on("upgrade", refuseShuttingDown)
          server.close()
        }),
        Effect.map(
          Effect.forkDetach(Effect.andThen(
            Effect.sleep(shutdownTimeout),
            Effect.andThen(
              Effect.flatMap(tracked.server.clients, Effect.forEach((connection) => connection.abort, { discard: true })),
              // (and the connections whose handler returned, still closing: their sockets)
              Effect.sync(() => sockets.forEach((socket) => socket.destroy()))
            )
          )),
          (fiber) => {
            watchdog = fiber
          }
        )
      )
    )
    const address = server.address() as Net.AddressInfo
    // a host name given stays in the URL (the name a certificate carries); an address is the one bound
    const urlHost = Net.isIP(host) === 0 ? host : address.family === "IPv6" ? `[${address.address}]` : address.address
    tracked.listening(`${tls !== undefined ? "wss" : "ws"}://${urlHost}:${address.port}${options?.path ?? "/"}`)
    return {
      [TypeId]: TypeId,
      address,
      url: tracked.server.url,
      connections: tracked.server.connections,
      clients: tracked.server.clients
    } satisfies Server
  })

/**
 * A layer running {@link serve}: the {@link Server} service tells its address, and the same server
 * is also provided as the platform-agnostic `Client.Server` (its open connections), which
 * `Client.layerMemory` provides too.
 *
 * @category layers
 * @since 0.1.0
 */
export const layer = <E, R, RA = never>(
  handler: Client.Handler<E, R>,
  options?: ServeOptions<RA>
): Layer.Layer<Server | Client.Server, ServeFailure, Exclude<Exclude<R | RA, Client.Server>, Scope.Scope>> =>
  Layer.effectContext(Effect.map(serve(handler, options), (server) => Context.make(Server, server).pipe(Context.add(Client.Server, server))))

/**
 * {@link layer} with its options read from `Config`, as `NodeHttpServer.layerConfig` reads those of
 * an HTTP server: each option a `Config` of its own (`{ host: Config.String("HOST"), port:
 * Config.Port("PORT") }`; a value that is no `Config`, such as a function, as `Config.succeed(value)`),
 * or all of them as one `Config`. A configuration that is missing or invalid fails the layer with
 * its `ConfigError`.
 *
 * **Example**
 *
 * ```ts
 * import { NodeServer } from "@effect-websocket/platform-node"
 * import { Config, Stream } from "effect"
 *
 * const EchoServer = NodeServer.layerConfig(
 *   (connection) => Stream.runForEach(connection.messages, (message) => connection.send(message)),
 *   { host: Config.String("HOST").pipe(Config.withDefault("127.0.0.1")), port: Config.Port("PORT") }
 * )
 * ```
 *
 * @category layers
 * @since 0.1.0
 */
export const layerConfig = <E, R, RA = never>(
  handler: Client.Handler<E, R>,
  options: Config.Wrap<ServeOptions<RA>>
): Layer.Layer<Server | Client.Server, ServeFailure | Config.ConfigError, Exclude<Exclude<R | RA, Client.Server>, Scope.Scope>> =>
  Layer.unwrap(Effect.map(Config.unwrap(options), (resolved) => layer(handler, resolved)))
