/**
 * WebSocket clients on Node.js: `connect` sends the upgrade request through `node:http` /
 * `node:https` (Node's HTTP parser does the HTTP part), requires `101 Switching Protocols`, hands
 * the response headers to `endClientHandshake`, then runs a `Connection` over the socket.
 *
 * @since 0.1.0
 */
import { Client, Connection, WebSocket, WebSocketError } from "@effect-websocket/core"
import type { HttpHeader } from "@effect-websocket/schema"
import { HttpHeader as Headers, Options } from "@effect-websocket/schema"
import { Config, Duration, Effect, Layer } from "effect"
import type { Scope } from "effect/Scope"
import * as Http from "node:http"
import * as Https from "node:https"
import * as Net from "node:net"
import type * as Tls from "node:tls"
import { decodeTls } from "./internal/tlsOption.ts"
import * as NodeTransport from "./NodeTransport.ts"

/**
 * Options of {@link connect}: those of every platform, plus TLS settings and a Unix socket path.
 *
 * @category models
 * @since 0.1.0
 */
export interface ConnectOptions extends Client.ConnectOptions {
  /**
   * TLS settings for `wss://` (`ca`, `cert`, `key`, `rejectUnauthorized`, `servername`, ...). The
   * URL says where to connect: a `host`, `port` or `path` here does not change it (as with `ws`).
   */
  readonly tls?: Tls.ConnectionOptions | undefined
  /**
   * Connect to this Unix domain socket instead of the URL's host (also
   * `ws+unix:///path.sock:/request-path`): a non-empty path (`"\0name"` for a Linux abstract socket).
   */
  readonly socketPath?: string | undefined
  /** How much the socket buffers each way before backpressure applies (defaults: 64 KiB read, 1 MiB write). */
  readonly socketBuffers?: NodeTransport.BufferOptions | undefined
  /**
   * Follow redirects: a `3xx` answer with a `Location` header leads to a new attempt at that URL
   * (relative to the current one), as `ws`'s `followRedirects` does. `Authorization` and `Cookie`
   * headers, and the credentials of the URL, are dropped from the first hop that leaves the
   * original host (another host or port, or another socket path) or goes from `wss://` to `ws://`
   * on, and a custom `Host` header from the first hop to another host on; until then the URL's
   * credentials go along even when a `Location` names none, as with `ws`. The handshake timeout
   * bounds all the hops together. Default false: a redirect is a `HandshakeRejected`.
   */
  readonly followRedirects?: boolean | undefined
  /** How many redirects are followed at most (default 10); the answer beyond is a `HandshakeRejected`. */
  readonly maxRedirects?: number | undefined
  /**
   * The `http.Agent` that makes the connection (an `https.Agent` for `wss://`; any object with the
   * `addRequest` of one, as Node takes), as `ws`'s `agent` option: a proxy agent, say, that opens
   * an HTTP `CONNECT` tunnel. Redirects are followed through it too (one to the other scheme needs
   * an agent that serves both, as proxy agents do). The upgraded socket leaves the agent's pool and
   * is the connection's. Not with a socket path (an agent connects by host and port). An attempt
   * cut off while the agent still waits for its socket (a proxy that does not answer) leaves that
   * socket to the agent. Default: none (a connection of the request's own).
   */
  readonly agent?: Http.Agent | undefined
}

const TLS_CODES = /^(ERR_TLS_|ERR_SSL_|CERT_|DEPTH_ZERO_SELF_SIGNED_CERT|SELF_SIGNED_CERT_IN_CHAIN|UNABLE_TO_(GET|VERIFY)|HOSTNAME_MISMATCH|ERR_OSSL)/

/**
 * The {@link Client.ConnectError} for a failed request: `secure` when it is over TLS,
 * `inTlsHandshake` once the server answered its TLS handshake and before it completed (a server
 * that refuses our certificate, or the lack of one, may just reset the connection then; a reset
 * before any answer is not the TLS handshake's doing).
 */
const connectError = (url: string, cause: unknown, secure: boolean, inTlsHandshake = false): Client.ConnectError => {
  const code = (cause as { code?: unknown } | undefined)?.code
  // (OpenSSL's messages end with a line break)
  const message = (cause instanceof Error ? cause.message : String(cause)).trimEnd()
  const reason = code === "ECONNREFUSED" || code === "ENOENT"
    ? "Refused"
    : code === "ENOTFOUND" || code === "EAI_AGAIN"
    ? "HostNotFound"
    : code === "ETIMEDOUT"
    ? "Timeout"
    // (a TLS handshake with a server that does not speak TLS ends in EPROTO: "wrong version number")
    : typeof code === "string" && (TLS_CODES.test(code) || (secure && code === "EPROTO") || (inTlsHandshake && code === "ECONNRESET"))
    ? "Tls"
    : "Unknown"
  return new Client.ConnectError({ reason, url, message: `connecting to ${url} failed: ${message}`, cause })
}

interface Upgraded {
  readonly response: Http.IncomingMessage
  readonly socket: Net.Socket
  readonly head: Uint8Array
}

/** The handshake error of a 101 response that does not upgrade to WebSocket (RFC 6455 section 4.1). */
const switchingWithout = (response: Http.IncomingMessage): WebSocketError.InvalidProtocolFormat =>
  response.headers.upgrade === undefined
    ? new WebSocketError.InvalidProtocolFormat({
      header: "Upgrade",
      message: "the 101 response has no Upgrade header (it must be \"websocket\")"
    })
    : new WebSocketError.InvalidProtocolFormat({
      header: "Connection",
      message: `the 101 response's Connection header (${JSON.stringify(response.headers.connection ?? "")}) does not contain \"Upgrade\"`
    })

/** How long a refusal's body is read for its reason at most (see `Client.REJECTION_REASON_LENGTH`). */
const REASON_WAIT_MS = 100

type RequestFailure = Client.ConnectError | Client.HandshakeRejected | WebSocketError.InvalidProtocolFormat | WebSocketError.InvalidParameter

/** When and how a refusal is answered: the connect's deadline (`Date.now()` ms), and whether a redirect is followed. */
interface Answering {
  readonly deadline: number
  readonly followRedirects: boolean
}

/**
 * Sends the upgrade request and waits for the 101 response; `onUpgrade` is given the socket as it
 * arrives, before the waiting fiber is resumed. A refusal's reason (the start of a text body) is
 * waited for at most {@link REASON_WAIT_MS}, and at most half the time left before the deadline:
 * a refusal is reported as one, not as a timeout, and a redirect that will be followed not at all.
 */
const request = (
  url: string,
  target: Client.Target,
  headers: ReadonlyArray<HttpHeader.HttpHeader>,
  tls: Tls.ConnectionOptions | undefined,
  agent: Http.Agent | undefined,
  answering: Answering,
  onUpgrade: (socket: Net.Socket) => void
): Effect.Effect<Upgraded, RequestFailure> =>
  Effect.callback<Upgraded, RequestFailure>((resume) => {
    if (agent !== undefined && target.socketPath !== undefined) {
      // (an agent would connect to the request's host and port instead: Node's default, localhost:80)
      return resume(Effect.fail(
        new WebSocketError.InvalidParameter({
          parameter: "agent",
          message: `agent: an agent connects by host and port, not to the socket path of ${url}`
        })
      ))
    }
    const raw: Array<[string, string]> = headers.map((h) => [h.name, h.value])
    const options: Https.RequestOptions = {
      // SNI carries host names only (RFC 6066 section 3), never an IP address; the URL's host,
      // port and path win over those of the TLS options (as with ws)
      ...(target.secure ? { ...(Net.isIP(target.hostname) === 0 ? { servername: target.hostname } : {}), ...tls } : {}),
      method: "GET",
      path: target.path,
      headers: raw as unknown as Http.OutgoingHttpHeaders,
      setHost: false,
      agent: agent ?? false,
      ...(target.socketPath === undefined
        ? { host: target.hostname, hostname: target.hostname, port: target.port }
        : { socketPath: target.socketPath })
    }
    let req: Http.ClientRequest
    try {
      req = (target.secure ? Https.request : Http.request)(options)
    } catch (cause) {
      // Node checks the TLS settings and the agent's protocol (and little else) as the request is made
      const message = cause instanceof Error ? cause.message : String(cause)
      return resume(Effect.fail(
        (cause as { code?: unknown } | undefined)?.code === "ERR_INVALID_PROTOCOL"
          // (the URL says which: after a redirect to the other scheme, it is not the one given)
          ? new WebSocketError.InvalidParameter({ parameter: "agent", message: `agent: ${message} (for ${url})` })
          : new WebSocketError.InvalidParameter({ parameter: "tls", message: `tls: ${message}` })
      ))
    }
    // the connection ends its side itself, after the closing handshake, even when the server's end
    // comes with the 101 response (see NodeTransport.fromDuplex)
    /** Whether the server answered our TLS handshake and it is not done yet (a reset then is its refusal). */
    let inTlsHandshake = false
    req.on("socket", (socket) => {
      socket.allowHalfOpen = true
      if (target.secure) {
        // (key material is made once the server answered: from then on the handshake is under way)
        const onKeylog = () => void (inTlsHandshake = true)
        socket.once("keylog", onKeylog)
        socket.once("secureConnect", () => {
          inTlsHandshake = false
          socket.off("keylog", onKeylog)
        })
      }
    })
    let settled = false
    let stopReading = () => {}
    req.on("upgrade", (response, socket, head) => {
      settled = true
      // Node takes its own error listener off the socket it hands over: until the transport adds
      // its own, a reset from the peer would be an uncaught exception. The transport reads such an
      // error off the socket (`socket.errored`) when it takes it over.
      socket.on("error", () => {})
      onUpgrade(socket as Net.Socket)
      resume(Effect.succeed({ response, socket: socket as Net.Socket, head }))
    })
    req.on("response", (response) => {
      settled = true
      const status = response.statusCode ?? 0
      const statusText = response.statusMessage ?? ""
      // Node hands over the socket of a 101 only with `Connection: Upgrade` and an `Upgrade` header
      if (status === 101) {
        req.destroy()
        return resume(Effect.fail(switchingWithout(response)))
      }
      // the start of a text body says why (a server of ours writes its reason there): read for a
      // moment (see above), enough for the reason
      const headers = Headers.fromRawHeaders(response.rawHeaders)
      const textual = Client.hasTextBody(headers)
      let body = ""
      let answered = false
      let timer: ReturnType<typeof setTimeout> | undefined = undefined
      const done = () => {
        if (answered) return
        answered = true
        clearTimeout(timer)
        req.destroy()
        resume(Effect.fail(Client.handshakeRejected(url, status, statusText, headers, body)))
      }
      const followed = answering.followRedirects && isRedirect(status) && (response.headers.location ?? "") !== ""
      const wait = Math.min(REASON_WAIT_MS, (answering.deadline - Date.now()) / 2)
      if (!textual || followed || wait < 1) return done()
      timer = setTimeout(done, wait)
      stopReading = () => clearTimeout(timer)
      response.setEncoding("utf8")
      response.on("data", (chunk: string) => {
        body += chunk
        if (body.length >= Client.REJECTION_REASON_LENGTH) done()
      })
      response.once("end", done)
      response.once("error", done)
    })
    req.on("error", (cause) => {
      if (!settled) resume(Effect.fail(connectError(url, cause, target.secure, inTlsHandshake)))
    })
    req.end()
    // interrupted (a handshake timeout, say) before the answer was handed on, even while the
    // reason of a refusal is read: the request goes at once
    return Effect.sync(() => {
      stopReading()
      req.destroy()
    })
  })

/**
 * Opens a WebSocket connection to `url` (`ws://`, `wss://`, `http://`, `https://`,
 * `ws+unix:///path.sock:/path`; a string or a `URL`), owned by the current scope: closing the
 * scope closes it (1001) and releases the socket. A connection that ends first (closed by either side, aborted, lost)
 * is released then, so a program that reconnects within one long-lived scope keeps nothing of
 * the connections that ended; the messages that came before the end can still be taken.
 *
 * Fails with `ConnectError` (refused, host not found, timeout, TLS, invalid URL),
 * `HandshakeRejected` (any status but 101, with the status and headers), or the handshake errors
 * of `WebSocket.endClientHandshake` (`InvalidProtocolFormat`, `UnsupportedSubprotocol`,
 * `UnsupportedExtension`); `InvalidParameter` for a malformed option.
 *
 * **Example**
 *
 * ```ts
 * import { NodeClient } from "@effect-websocket/platform-node"
 * import { Effect, Stream } from "effect"
 *
 * const program = Effect.scoped(Effect.gen(function*() {
 *   const connection = yield* NodeClient.connect("ws://127.0.0.1:8080/chat", { protocols: ["chat"] })
 *   yield* connection.send("hello")
 *   const [reply] = yield* Stream.runCollect(Stream.take(connection.messages, 1))
 *   yield* connection.close(1000)
 *   return reply
 * }))
 * ```
 *
 * @category constructors
 * @since 0.1.0
 */
export const connect = (
  url: string | URL,
  options?: ConnectOptions
): Effect.Effect<Connection.Connection, Client.ConnectFailure, Scope> => {
  /** The URL as errors and the span show it. */
  const shown = Client.redactedUrl(url)
  return Effect.gen(function*() {
    // (first: it reads the options, so that one that throws as it is read is an InvalidParameter)
    const timeout = yield* Client.checkConnectOptions(options)
    const socketBuffers = yield* Client.decodeOption(Options.SocketBuffers, "socketBuffers", options?.socketBuffers ?? {})
    const redirects = {
      ...yield* Client.decodeOption(Options.RedirectOptions, "followRedirects", { followRedirects: options?.followRedirects }),
      ...yield* Client.decodeOption(Options.RedirectOptions, "maxRedirects", { maxRedirects: options?.maxRedirects })
    }
    yield* decodeTls(options?.tls, "client")
    // (what Node takes for an agent: anything with `addRequest`, as the agents of a few proxy packages)
    const agent: unknown = options?.agent
    if (agent !== undefined && typeof (agent as { addRequest?: unknown } | null)?.addRequest !== "function") {
      return yield* new WebSocketError.InvalidParameter({
        parameter: "agent",
        message: "agent must be an http.Agent (an https.Agent for wss://), or an object with its addRequest"
      })
    }
    const socketPath = options?.socketPath === undefined
      ? undefined
      : yield* Client.decodeOption(Options.SocketPath, "socketPath", options.socketPath)
    const target = Client.parseTarget(url, shown, socketPath)
    if (typeof target === "string") return yield* new Client.ConnectError({ reason: "InvalidUrl", url: shown, message: target })
    const deadline = Date.now() + Duration.toMillis(timeout)
    const attempt = (hop: Hop): Effect.Effect<Connection.Connection, Client.ConnectFailure, Scope> =>
      Client.releaseOnEnd(open(hop, timeout, { deadline, followRedirects: hop.followsRedirect }, socketBuffers, options))
    if (redirects.followRedirects !== true) {
      return yield* attempt({ target, shown, headers: Client.headerList(options?.headers), followsRedirect: false })
    }
    // the handshake timeout bounds the whole connect, not each hop: a server that redirects every
    // request just within it would otherwise hold the caller maxRedirects times as long
    return yield* followRedirects(attempt, target, shown, Client.headerList(options?.headers), {
      maxRedirects: redirects.maxRedirects ?? 10,
      socketPath
    }).pipe(Effect.timeoutOrElse({ duration: timeout, orElse: () => Effect.fail(Client.connectTimedOut(shown, timeout)) }))
  }).pipe(Client.instrumentConnect(shown))
}

/** One attempt of {@link connect}: its target, the URL as errors show it, and the extra request headers. */
interface Hop {
  readonly target: Client.Target
  readonly shown: string
  readonly headers: ReadonlyArray<HttpHeader.HttpHeader>
  /** Whether a redirect answering this hop is followed (`followRedirects`, and redirects left). */
  readonly followsRedirect: boolean
}

const isRedirect = (status: number): boolean => status >= 300 && status < 400

/**
 * Runs `attempt` and, while it is answered with a redirect, again at the `Location`, as `ws`
 * does: credentials and cookies do not follow to another host or from `wss://` to `ws://`.
 */
const followRedirects = (
  attempt: (hop: Hop) => Effect.Effect<Connection.Connection, Client.ConnectFailure, Scope>,
  original: Client.Target,
  shown: string,
  headers: ReadonlyArray<HttpHeader.HttpHeader>,
  { maxRedirects, socketPath }: { readonly maxRedirects: number; readonly socketPath: string | undefined }
): Effect.Effect<Connection.Connection, Client.ConnectFailure, Scope> => {
  const from = (hop: Hop, followed: number): Effect.Effect<Connection.Connection, Client.ConnectFailure, Scope> =>
    Effect.catchTag(attempt(hop), "HandshakeRejected", (rejected) => {
      // (the first, as Node keeps of a repeated Location)
      const location = Headers.getAll(rejected.headers, "Location")[0]
      // (an empty Location is none, as with ws: it would lead back to the same URL)
      if (!isRedirect(rejected.status) || location === undefined || location === "") return Effect.fail(rejected)
      if (followed >= maxRedirects) {
        return Effect.fail(
          new Client.HandshakeRejected({ ...rejected, message: `${rejected.message}; not followed: ${maxRedirects} redirects already` })
        )
      }
      let next: string
      try {
        next = new URL(location, hop.target.url).toString()
      } catch {
        return Effect.fail(
          new Client.ConnectError({ reason: "InvalidUrl", url: hop.shown, message: `${hop.shown} redirects to "${Client.redactedUrl(location)}", which is not a URL` })
        )
      }
      const nextShown = Client.redactedUrl(next)
      const target = Client.parseTarget(next, nextShown, socketPath)
      if (typeof target === "string") return Effect.fail(new Client.ConnectError({ reason: "InvalidUrl", url: nextShown, message: target }))
      // (through a socket path, the request still goes to the host it names: both must stay)
      const sameHost = target.host === original.host && target.socketPath === original.socketPath
      const keepCredentials = sameHost && !(original.secure && !target.secure)
      const kept = hop.headers.filter((h) => {
        const name = h.name.toLowerCase()
        return name === "authorization" || name === "cookie" ? keepCredentials : name === "host" ? sameHost : true
      })
      // as with ws, the credentials sent so far go on to the same host, also when the Location
      // names none (or others: the first win), and even credentials in the new URL are not sent
      // to another host
      const credentials = keepCredentials ? hop.target.credentials ?? target.credentials : undefined
      return from({ target: { ...target, credentials }, shown: nextShown, headers: kept, followsRedirect: followed + 1 < maxRedirects }, followed + 1)
    })
  return from({ target: original, shown, headers, followsRedirect: maxRedirects > 0 }, 0)
}

/** Opens the socket of one hop, runs the opening handshake over it, and starts the connection. */
const open = (
  hop: Hop,
  timeout: Duration.Duration,
  answering: Answering,
  socketBuffers: NodeTransport.BufferOptions,
  options: ConnectOptions | undefined
): Effect.Effect<Connection.Connection, Client.ConnectFailure, Scope> =>
  Effect.gen(function*() {
    const { shown, target } = hop
    const handle = yield* WebSocket.createClientHandle(Client.handleProperties(options))
    const headers = Client.requestHeaderList(target.host, { origin: options?.origin, headers: hop.headers })
    const initialHeaders = yield* Client.withTraceContext(Client.withCredentials(headers, target))
    const { requestHeaders } = yield* WebSocket.beginClientHandshake(handle, {
      subprotocols: options?.protocols,
      initialHeaders
    }).pipe(Effect.catchTag("InvalidProtocolOperation", (error) => Effect.die(error)))
    // The socket is the attempt's until the connection takes it over; from then on the connection
    // releases it after its closing handshake (cutting it here could lose a last Close still being
    // encrypted by TLS). Its release is in place before the request goes: an interruption just as
    // the 101 arrives, before an `acquireRelease` would have added it, must not leave it open.
    let upgradedSocket: Net.Socket | undefined = undefined
    let handedOver = false
    yield* Effect.addFinalizer(() => Effect.sync(() => handedOver || upgradedSocket?.destroy()))
    // (interruptible: the handshake timeout must be able to cut a server that never answers)
    const upgraded = yield* request(shown, target, requestHeaders, options?.tls, options?.agent, answering, (socket) => {
      upgradedSocket = socket
    }).pipe(Effect.timeoutOrElse({ duration: timeout, orElse: () => Effect.fail(Client.connectTimedOut(shown, timeout)) }))
    const responseHeaders = Headers.fromRawHeaders(upgraded.response.rawHeaders)
    const result = yield* WebSocket.endClientHandshake(handle, { responseHeaders }).pipe(
      Effect.catchTag("InvalidProtocolOperation", (error) => Effect.die(error))
    )
    upgraded.socket.setNoDelay(true)
    const socketTransport = NodeTransport.fromDuplex(upgraded.socket, { ...socketBuffers, head: upgraded.head })
    const transport = yield* Client.wrappedTransport(options?.wrapTransport, socketTransport)
    const connection = yield* Client.makeTakingOver(handle, transport, {
      ...options?.connection,
      protocol: yield* Client.selectedProtocol(options?.protocols, result),
      handshake: { requestHeaders, responseHeaders }
    }, () => {
      handedOver = true
    })
    return connection
  })

/**
 * The {@link Client.Client} of Node.js.
 *
 * @category constructors
 * @since 0.1.0
 */
export const make: Client.Client = Client.Client.of({ connect })

/**
 * A layer with the Node.js {@link Client.Client}: programs written against `Client.connect` reach
 * real servers. Swap it for `Client.layerMemory(handler)` in tests.
 *
 * @category layers
 * @since 0.1.0
 */
export const layer: Layer.Layer<Client.Client> = Layer.succeed(Client.Client, make)

/**
 * {@link layer} with `defaults` for every connection: the Node.js settings (`tls`, `socketPath`,
 * `socketBuffers`, `followRedirects`, ...) that `Client.connect`'s options, those of every
 * platform, do not have. The options given to `connect` come first (merged one level deep: a
 * `connection` given there replaces the default one); one given as `undefined` is not given,
 * and the default holds.
 *
 * @category layers
 * @since 0.1.0
 */
export const layerWith = (defaults: ConnectOptions): Layer.Layer<Client.Client> =>
  Layer.succeed(Client.Client, Client.Client.of({ connect: (url, options) => connect(url, withDefaults(defaults, options)) }))

/**
 * {@link layerWith} with its defaults read from `Config`, as `NodeServer.layerConfig` reads a
 * server's options: each a `Config` of its own (`{ handshakeTimeout: Config.Duration("WS_TIMEOUT")
 * }`; a value that is no `Config`, such as an agent, as `Config.succeed(value)` or mapped from one),
 * or all of them as one `Config`. A configuration that is missing or invalid fails the layer with
 * its `ConfigError`.
 *
 * **Example**
 *
 * ```ts
 * import { NodeClient } from "@effect-websocket/platform-node"
 * import { Config } from "effect"
 * import { HttpsProxyAgent } from "https-proxy-agent"
 *
 * // through the proxy that HTTPS_PROXY names, when it is set
 * const ClientLayer = NodeClient.layerConfig({
 *   agent: Config.String("HTTPS_PROXY").pipe(
 *     Config.option,
 *     Config.map((proxy) => proxy._tag === "Some" ? new HttpsProxyAgent(proxy.value) : undefined)
 *   )
 * })
 * ```
 *
 * @category layers
 * @since 0.1.0
 */
export const layerConfig = (defaults: Config.Wrap<ConnectOptions>): Layer.Layer<Client.Client, Config.ConfigError> =>
  Layer.unwrap(Effect.map(Config.unwrap(defaults), layerWith))

/** `options` over `defaults`, one level deep; an option given as `undefined` leaves the default. */
const withDefaults = (defaults: ConnectOptions, options: ConnectOptions | undefined): ConnectOptions => {
  const merged: Record<string, unknown> = { ...defaults }
  for (const [name, value] of Object.entries(options ?? {})) {
    if (value !== undefined) merged[name] = value
  }
  return merged
}
