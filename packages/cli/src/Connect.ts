/**
 * `ews connect URL`: a WebSocket client. Interactive by default (stdin lines out, received
 * messages on stdout, EOF closes with 1000); `--echo` sends every received message back until the
 * peer closes.
 *
 * Exit status: 0 when the closing handshake completed with 1000, 1001 or 1005; 1 otherwise, with a
 * one-line reason on stderr (refused, host not found, handshake rejected with status N, protocol
 * error with close code N, connection lost, closed with code N).
 *
 * @since 0.1.0
 */
import { Client, type Connection } from "@effect-websocket/core"
import { NodeClient } from "@effect-websocket/platform-node"
import { HttpHeader } from "@effect-websocket/schema"
import { Cause, Duration, Effect, Exit, Fiber, Option, Schema, type Stdio, Stream } from "effect"
import type { PlatformError } from "effect/PlatformError"
import { Argument, Command, Flag } from "effect/cli"
import { HttpsProxyAgent } from "https-proxy-agent"
import * as Net from "node:net"
import type * as Tls from "node:tls"
import {
  controlFrames,
  failedOnInterrupt,
  fail,
  json,
  NORMAL_CLOSE_CODES,
  orUndefined,
  stats,
  stdinByteLines,
  stdinLines,
  subprotocols,
  watchControlFrames
} from "./Common.ts"
import * as Output from "./Output.ts"

const decodeHeader = Schema.decodeUnknownExit(HttpHeader.HttpHeader)

/**
 * Parses `Name: value` into a header, or says what is wrong with it.
 *
 * @category parsing
 * @since 0.1.0
 */
export const parseHeader = (raw: string): HttpHeader.HttpHeader | string => {
  const colon = raw.indexOf(":")
  if (colon <= 0) return `invalid header ${JSON.stringify(raw)}: expected "Name: value"`
  const decoded = decodeHeader({ name: raw.slice(0, colon).trim(), value: raw.slice(colon + 1).trim() })
  if (Exit.isSuccess(decoded)) return decoded.value
  const problem = Option.match(Cause.findErrorOption(decoded.cause), { onNone: () => "malformed", onSome: (e) => e.message })
  return `invalid header ${JSON.stringify(raw)}: ${Output.oneLine(problem)}`
}

/** A string flag's value parsed with `parse`, which says in a string what is wrong with a value it refuses. */
const parsedWith = <A extends object>(parse: (raw: string) => A | string) =>
  Flag.filterMap((raw: string) => {
    const parsed = parse(raw)
    return typeof parsed === "string" ? Option.none() : Option.some(parsed)
  }, (raw) => {
    const parsed = parse(raw)
    return typeof parsed === "string" ? parsed : `invalid value ${JSON.stringify(raw)}`
  })

const header = Flag.String("header").pipe(
  Flag.withAlias("H"),
  Flag.withMetavar("'Name: value'"),
  Flag.withDescription("Add a request header (repeatable), e.g. -H 'Authorization: Bearer abc'"),
  parsedWith(parseHeader),
  Flag.atLeast(0)
)

/**
 * Parses the `--proxy` URL (`http://` when it has no scheme, as with wscat), or says what is wrong
 * with it.
 *
 * @category parsing
 * @since 0.1.0
 */
export const parseProxy = (raw: string): URL | string => {
  const withScheme = /^[a-z][a-z0-9+.-]*:\/\//i.test(raw) ? raw : `http://${raw}`
  if (!URL.canParse(withScheme)) return `invalid proxy ${JSON.stringify(raw)}: not a URL`
  const url = new URL(withScheme)
  if (url.protocol !== "http:" && url.protocol !== "https:") {
    return `invalid proxy ${JSON.stringify(raw)}: an http:// or https:// proxy is needed, not ${url.protocol}//`
  }
  try {
    // (the proxy agent decodes them only once it is connected to the proxy)
    decodeURIComponent(url.username)
    decodeURIComponent(url.password)
  } catch {
    return `invalid proxy ${JSON.stringify(raw)}: user and password must be percent-encoded (%25 for %)`
  }
  return url
}

const flags = {
  url: Argument.String("url").pipe(
    Argument.withDescription(
      "ws://, wss://, http://, https:// or ws+unix:///path.sock:/request-path URL to connect to (ws:// when it has no scheme, as with wscat)"
    ),
    // `127.0.0.1:8080/chat` means ws://127.0.0.1:8080/chat (a URL with no `scheme://`); what is
    // no URL even so is left as typed, for the error to show
    Argument.map((url) => /^[a-z][a-z0-9+.-]*:\/\//i.test(url) || !URL.canParse(`ws://${url}`) ? url : `ws://${url}`)
  ),
  subprotocol: subprotocols("Offer this subprotocol (repeatable, in order of preference)"),
  header,
  origin: Flag.String("origin").pipe(
    Flag.withMetavar("origin"),
    Flag.withDescription("Send this Origin header, as a browser would (e.g. https://example.com)"),
    Flag.optional
  ),
  echo: Flag.Boolean("echo").pipe(
    Flag.withDescription(
      "Send every received message back unchanged (same type) until the peer closes; stdin is not read and messages are not printed (use --json to see them)"
    ),
    Flag.withDefault(false)
  ),
  binary: Flag.Boolean("binary").pipe(
    Flag.withDescription("Send each stdin line as a binary message (its bytes as read, not decoded) instead of a text message"),
    Flag.withDefault(false)
  ),
  pingInterval: Flag.Int("ping-interval").pipe(
    Flag.withMetavar("ms"),
    Flag.withDescription(
      "Send a ping every MS milliseconds while the connection is open (pongs show as `pong` events); with --ping-timeout, MS after the wait for the last answer"
    ),
    Flag.filter((ms) => ms > 0, (ms) => `--ping-interval must be a positive number of milliseconds, got ${ms}`),
    Flag.optional
  ),
  pingTimeout: Flag.Int("ping-timeout").pipe(
    Flag.withMetavar("ms"),
    Flag.withDescription(
      "With --ping-interval: when the peer sends nothing within MS milliseconds of a ping, cut the connection (a dead peer) and exit 1"
    ),
    Flag.filter((ms) => ms > 0, (ms) => `--ping-timeout must be a positive number of milliseconds, got ${ms}`),
    Flag.optional
  ),
  wait: Flag.Int("wait").pipe(
    Flag.withMetavar("ms"),
    Flag.withDescription(
      "When stdin ends, keep receiving for MS milliseconds before closing (for replies to the last lines; default 0)"
    ),
    Flag.filter((ms) => ms >= 0, (ms) => `--wait must be a number of milliseconds, got ${ms}`),
    Flag.withDefault(0)
  ),
  insecure: Flag.Boolean("insecure").pipe(
    Flag.withAlias("k"),
    Flag.withDescription("wss://: accept any server certificate (self-signed, wrong host name): TLS rejectUnauthorized false"),
    Flag.withDefault(false)
  ),
  proxy: Flag.String("proxy").pipe(
    Flag.withMetavar("url"),
    Flag.withDescription(
      "Connect through this HTTP proxy, in a CONNECT tunnel, as wscat's --proxy: http://host:port (http:// when it has no scheme), or https:// for a proxy spoken to over TLS; user:password@ in it (percent-encoded) authenticates to the proxy"
    ),
    parsedWith(parseProxy),
    Flag.optional
  ),
  json,
  stats
}

/** Node's codes for a server certificate that the client refused (which --insecure accepts). */
const CERTIFICATE_CODES = /^(ERR_TLS_CERT_|CERT_|DEPTH_ZERO_SELF_SIGNED_CERT|SELF_SIGNED_CERT_IN_CHAIN|UNABLE_TO_|HOSTNAME_MISMATCH)/

/** Reports why `connect` failed and fails; through a proxy, saying so (its refusal reads as the server's). */
const connectFailure = (output: Output.Output, error: Client.ConnectFailure, proxy: URL | undefined) => {
  const through = proxy === undefined ? "" : ` (through the proxy at ${proxy.host})`
  switch (error._tag) {
    case "ConnectError": {
      const code = (error.cause as { code?: unknown } | undefined)?.code
      const what = {
        // (a Unix socket that is not there is refused too, as Node reports it: ENOENT)
        Refused: code === "ENOENT" ? "no such socket" : "connection refused",
        HostNotFound: "host not found",
        Timeout: "timed out",
        Tls: "TLS error",
        InvalidUrl: "invalid URL",
        Unknown: "cannot connect"
      }[error.reason]
      // (only a certificate the client refused; not e.g. a server that does not speak TLS: EPROTO)
      const hint = error.reason === "Tls" && typeof code === "string" && CERTIFICATE_CODES.test(code)
        ? " (--insecure accepts any certificate)"
        : ""
      return fail(output, `${what}: ${Output.oneLine(error.message)}${hint}${through}`, { tag: `ConnectError.${error.reason}` })
    }
    case "HandshakeRejected":
      return fail(
        output,
        `handshake rejected with status ${error.status}${error.statusText === "" ? "" : ` ${error.statusText}`} by ${error.url}${
          error.reason === undefined ? "" : `: ${Output.oneLine(error.reason)}`
        }${through}`,
        { tag: error._tag, status: error.status }
      )
    case "InvalidParameter":
      return fail(output, `invalid option: ${Output.oneLine(error.message)}`, { tag: error._tag })
    default:
      return fail(output, `handshake failed: ${Output.oneLine(error.message)}`, { tag: error._tag })
  }
}

/** Reports how the connection ended; fails unless it ended normally. */
const finish = (
  output: Output.Output,
  connection: Connection.Connection,
  info: Connection.CloseInfo,
  error: Connection.ConnectionError | undefined,
  printStats: boolean
) =>
  Effect.gen(function*() {
    yield* output.emit({ event: "close", code: info.code, reason: info.reason, clean: info.clean, initiator: info.initiator })
    if (printStats) yield* output.emit({ event: "stats", ...Output.totalsOf(connection.stats) })
    if (error !== undefined) {
      if (error._tag === "TransportError") {
        return yield* fail(output, `connection lost: ${Output.oneLine(error.message)}`, { tag: error._tag, code: info.code })
      }
      return yield* fail(
        output,
        `protocol error, closed with code ${info.code}: ${Output.oneLine(error.message)}`,
        { tag: error._tag, code: info.code }
      )
    }
    if (!info.clean) {
      const reason = info.reason === "" ? "" : `: ${Output.inline(info.reason)}`
      return yield* fail(output, `connection closed abnormally with code ${Output.describeCode(info.code)}${reason}`, {
        tag: "AbnormalClose",
        code: info.code
      })
    }
    if (!NORMAL_CLOSE_CODES.has(info.code)) {
      const reason = info.reason === "" ? "" : `: ${Output.inline(info.reason)}`
      return yield* fail(output, `connection closed with code ${Output.describeCode(info.code)}${reason}`, {
        tag: "CloseCode",
        code: info.code
      })
    }
  })

/**
 * TLS settings for `wss://`: `--insecure` turns certificate checks off. An IP address is not
 * sent as the TLS server name (SNI may only carry host names, RFC 6066; Node warns otherwise).
 */
const tlsOptions = (url: string, insecure: boolean): Tls.ConnectionOptions | undefined => {
  let ipHost = false
  try {
    const hostname = new URL(url).hostname
    ipHost = Net.isIP(hostname.startsWith("[") ? hostname.slice(1, -1) : hostname) !== 0
  } catch {
    // an invalid URL is reported by connect
  }
  if (!insecure && !ipHost) return undefined
  return { ...(insecure ? { rejectUnauthorized: false } : {}), ...(ipHost ? { servername: undefined } : {}) }
}

/**
 * The `connect` command.
 *
 * @category commands
 * @since 0.1.0
 */
export const command = Command.make(
  "connect",
  flags,
  Effect.fn("ews.connect")(function*(options) {
    const output = Output.make(options.json)
    const pingInterval = orUndefined(options.pingInterval)
    const pingTimeout = orUndefined(options.pingTimeout)
    if (pingTimeout !== undefined && pingInterval === undefined) {
      return yield* fail(output, "--ping-timeout needs --ping-interval (the pings it waits for an answer to)")
    }
    const keepalive = pingInterval === undefined ? undefined : {
      interval: Duration.millis(pingInterval),
      ...(pingTimeout === undefined ? {} : { timeout: Duration.millis(pingTimeout) })
    }
    const connectOptions: NodeClient.ConnectOptions = {
      protocols: options.subprotocol,
      headers: options.header,
      origin: orUndefined(options.origin),
      tls: tlsOptions(options.url, options.insecure),
      agent: Option.match(options.proxy, { onNone: () => undefined, onSome: (proxy) => new HttpsProxyAgent(proxy) }),
      ...(keepalive === undefined ? {} : { connection: { keepalive } })
    }
    yield* Effect.scoped(Effect.gen(function*() {
      const connection = yield* NodeClient.connect(options.url, connectOptions).pipe(
        Effect.catch((error) => connectFailure(output, error, Option.getOrUndefined(options.proxy))),
        // SIGINT / SIGTERM during the opening handshake: nothing was closed, so this is no success
        Effect.onInterrupt(() =>
          Effect.orDie(fail(output, "interrupted before the connection was open", { tag: "Interrupted" }))
        )
      )
      yield* output.emit({ event: "open", url: Client.redactedUrl(options.url), protocol: connection.protocol })
      const checkControl = controlFrames(connection.stats, output)
      yield* Effect.forkScoped(watchControlFrames(checkControl))

      // (the pings and pongs that came before a message are reported before it)
      const received = options.echo
        ? Stream.runForEach(connection.messages, (message) =>
          Effect.andThen(
            Effect.andThen(checkControl, output.message(message, undefined, false)),
            Effect.ignore(connection.send(message))
          ))
        : Stream.runForEach(connection.messages, (message) => Effect.andThen(checkControl, output.message(message)))
      // stdin: every line is a message; EOF starts the closing handshake (1000)
      const lines: Stream.Stream<string | Uint8Array, PlatformError, Stdio.Stdio> = options.binary ? stdinByteLines : stdinLines
      const send = Stream.runForEach(lines, (line) => connection.send(line)).pipe(
        Effect.andThen(options.wait > 0 ? Effect.sleep(Duration.millis(options.wait)) : Effect.void),
        Effect.andThen(connection.close(1000)),
        Effect.ignore
      )

      const session = Effect.gen(function*() {
        const sender = options.echo ? undefined : yield* Effect.forkChild(send)
        const result = yield* Effect.exit(received)
        if (sender !== undefined) yield* Fiber.interrupt(sender)
        const info = yield* connection.closed
        yield* checkControl
        return { info, error: Exit.isFailure(result) ? Option.getOrUndefined(Cause.findErrorOption(result.cause)) : undefined }
      }).pipe(
        // SIGINT / SIGTERM: close with 1001 and still say how it ended
        Effect.onInterrupt(() =>
          Effect.flatMap(Effect.orDie(connection.close(1001)), (info) =>
            Effect.catch(finish(output, connection, info, undefined, options.stats), () =>
              Effect.sync(() => {
                failedOnInterrupt.reported = true
              })))
        )
      )
      const { error, info } = yield* session
      yield* finish(output, connection, info, error, options.stats)
    }))
  })
).pipe(
  Command.withShortDescription("Connect to a WebSocket server (stdin lines out, received messages on stdout)"),
  Command.withDescription(
    "Connect to a WebSocket server. Each stdin line is sent as a message (text, or binary with --binary) and each received message is printed on stdout (text as is, binary as `<binary N bytes: HEX>`); EOF on stdin closes the connection with 1000. Exit status 0 after a normal close (1000, 1001, 1005), 1 otherwise with a one-line reason on stderr."
  ),
  Command.withExamples([
    { command: "ews connect ws://127.0.0.1:8080/", description: "Chat interactively" },
    {
      command: "echo hello | ews connect ws://127.0.0.1:8080/ --wait 500",
      description: "Send one message, print what comes back within half a second, close"
    },
    { command: "ews connect wss://localhost:8443/ --insecure -s chat -H 'Authorization: Bearer abc'", description: "TLS with a self-signed certificate, a subprotocol and a header" },
    { command: "ews connect 'ws://127.0.0.1:9001/runCase?case=1' --echo", description: "Echo everything back (a conformance test suite's client driver)" },
    { command: "ews connect ws://127.0.0.1:8080/ --json --stats < /dev/null", description: "Machine-readable events, then the counts" }
  ])
)
