/**
 * The options of connections, clients and servers that are not handle properties: timeouts,
 * buffer bounds, keepalive, the close code sent when a scope closes, the listening port. Decoded
 * once, where a connection, a client attempt or a server starts, so that a bad value is an
 * `InvalidParameter` at once rather than a crash, a busy loop or a hang later.
 *
 * @since 0.1.0
 */
import { Duration, Option, Schema, SchemaTransformation } from "effect"
import { CloseRequestCode } from "./CloseStatus.ts"
import { quote } from "./internal/quote.ts"

/** The keys of `Duration.DurationObject`. */
const UNITS = new Set(["weeks", "days", "hours", "minutes", "seconds", "milliseconds", "microseconds", "nanoseconds"])

/**
 * Whether `input` is a plain object of units (`{ seconds: 5 }`) with a number for at least one of
 * them, every key a unit and every value a number or `undefined`, as `Duration.DurationObject`'s type
 * allows (not a boxed `Number`, a `Date` or `{}`, which have no units and would read as zero).
 */
const isUnitObject = (input: object): boolean => {
  const prototype = Object.getPrototypeOf(input)
  if (prototype !== Object.prototype && prototype !== null) return false
  const entries = Object.entries(input)
  return entries.some(([, value]) => value !== undefined) &&
    entries.every(([unit, value]) => UNITS.has(unit) && (value === undefined || (typeof value === "number" && Number.isFinite(value))))
}

/** Whether `input` has the shape of one of the forms of `Duration.Input`. */
const isDurationInput = (input: unknown): boolean => {
  switch (typeof input) {
    case "number":
      return !Number.isNaN(input)
    case "bigint":
    case "string":
      return true
    case "object":
      if (input === null) return false
      if (Duration.isDuration(input)) return true
      if (Array.isArray(input)) return input.length === 2 && input.every((n) => typeof n === "number" && Number.isFinite(n))
      return isUnitObject(input)
    default:
      return false
  }
}

/**
 * The duration `input` stands for, `undefined` when it is none. Duration.fromInput is lenient (it
 * reads `null`, `NaN` and `{ seconds: "x" }` as zero), hence the shape check first.
 */
const durationOf = (input: unknown): Duration.Duration | undefined => {
  if (!isDurationInput(input)) return undefined
  try {
    return Option.getOrUndefined(Duration.fromInput(input as Duration.Input))
  } catch {
    return undefined
  }
}

/**
 * A duration as the options take it (`Duration.Input`: a `Duration`, milliseconds, `"5 seconds"`,
 * ...), decoded to a `Duration`. `minimum` is `"zero"` (zero allowed) or `"positive"`; `finite`
 * refuses `Infinity`.
 *
 * @category schemas
 * @since 0.1.0
 */
export const DurationInput = (
  name: string,
  rules: { readonly minimum: "zero" | "positive"; readonly finite: boolean }
) =>
  Schema.Unknown.check(
    Schema.makeFilter((input: unknown) => {
      const duration = durationOf(input)
      if (duration === undefined) {
        return `${name} must be a duration (milliseconds, "5 seconds", a Duration, ...), got ${formatInput(input)}`
      }
      // (a negative number of milliseconds too small for a nanosecond still says "negative")
      if (Duration.isNegative(duration) || (typeof input === "number" && input < 0)) return `${name} may not be negative, got ${formatInput(input)}`
      if (rules.minimum === "positive" && Duration.isZero(duration)) return `${name} must be more than zero`
      if (rules.finite && !Duration.isFinite(duration)) return `${name} must be finite`
      return true
    })
  ).pipe(
    Schema.decodeTo(
      Schema.Duration,
      SchemaTransformation.transform<Duration.Duration, unknown>({
        decode: (input) => durationOf(input)!,
        encode: (duration) => duration
      })
    )
  )

const formatInput = (input: unknown): string => {
  if (typeof input === "string") return quote(input)
  if (typeof input === "number" || typeof input === "bigint" || typeof input === "boolean") return String(input)
  return input === null ? "null" : typeof input
}

const count = (name: string, minimum: number) =>
  Schema.Number.check(
    Schema.makeFilter((n: number) =>
      (Number.isSafeInteger(n) && n >= minimum) || `${name} must be an integer of at least ${minimum}, got ${n}`
    )
  )

/**
 * A byte bound: a whole number of at least `minimum`, or `Infinity` when `unbounded` is allowed.
 *
 * @category schemas
 * @since 0.1.0
 */
export const ByteLimit = (name: string, minimum: number, unbounded: boolean) =>
  Schema.Number.check(
    Schema.makeFilter((n: number) =>
      (Number.isSafeInteger(n) && n >= minimum) || (unbounded && n === Number.POSITIVE_INFINITY) ||
      `${name} must be a whole number of bytes of at least ${minimum}${unbounded ? " (or Infinity)" : ""}, got ${n}`
    )
  )

/**
 * The keepalive of a connection: a frame every `interval` (positive, finite), with an optional
 * dead-peer `timeout` (positive, finite) after each ping (it does not apply to `frame: "pong"`).
 *
 * @see websocket.h `WEB_SOCKET_KEEPALIVE_INTERVAL_PROPERTY_TYPE`
 * @category schemas
 * @since 0.1.0
 */
export const KeepaliveOptions = Schema.Struct({
  interval: DurationInput("keepalive.interval", { minimum: "positive", finite: true }),
  timeout: Schema.optional(DurationInput("keepalive.timeout", { minimum: "positive", finite: true })),
  frame: Schema.optional(Schema.Literals(["ping", "pong"]))
})

/**
 * The settings of a connection (see `Connection.Options` in `@effect-websocket/core`): the close
 * timeout (zero or more, `Infinity` allowed), the message buffer (at least 1 message), the
 * keepalive, and the close code sent when the connection's scope closes (one that may be sent, or
 * 1005 for an empty Close).
 *
 * @category schemas
 * @since 0.1.0
 */
export const ConnectionOptions = Schema.Struct({
  closeTimeout: Schema.optional(DurationInput("closeTimeout", { minimum: "zero", finite: false })),
  messageBuffer: Schema.optional(count("messageBuffer", 1)),
  keepalive: Schema.optional(KeepaliveOptions),
  protocol: Schema.optional(Schema.String),
  handshake: Schema.optional(Schema.Unknown),
  closeCodeOnScopeClose: Schema.optional(CloseRequestCode)
})

/**
 * How much a socket buffers each way: `highWaterMark` bytes read ahead (at least 1) and
 * `writeBufferLimit` bytes written but not yet sent (0 or more, or `Infinity` for no bound).
 *
 * @category schemas
 * @since 0.1.0
 */
export const SocketBuffers = Schema.Struct({
  highWaterMark: Schema.optional(ByteLimit("socketBuffers.highWaterMark", 1, false)),
  writeBufferLimit: Schema.optional(ByteLimit("socketBuffers.writeBufferLimit", 0, true))
})

/**
 * Whether a client follows HTTP redirects (`3xx` with a `Location`) in the opening handshake, and
 * how many at most: a whole number from 0.
 *
 * @category schemas
 * @since 0.1.0
 */
export const RedirectOptions = Schema.Struct({
  followRedirects: Schema.optional(Schema.Boolean),
  maxRedirects: Schema.optional(Schema.Number.check(
    Schema.makeFilter((n: number) =>
      (Number.isSafeInteger(n) && n >= 0) || `maxRedirects must be a whole number from 0, got ${n}`
    )
  ))
})

/**
 * A TCP port to listen on: 0 (any free port) to 65535.
 *
 * @category schemas
 * @since 0.1.0
 */
export const Port = Schema.Number.check(
  Schema.makeFilter((n: number) =>
    (Number.isInteger(n) && n >= 0 && n <= 65535) || `port must be an integer from 0 to 65535, got ${n}`
  )
)

/**
 * A host name or address to listen on: a non-empty string without spaces or control characters
 * (`127.0.0.1`, `::1`, `localhost`, ...).
 *
 * @category schemas
 * @since 0.1.0
 */
export const Host = Schema.String.check(
  Schema.makeFilter((s: string) =>
    (s.length > 0 && !/[\s\x00-\x1f\x7f]/.test(s)) || `host must be a host name or address, got ${quote(s)}`
  )
)

/**
 * A Unix domain socket (or Windows named pipe) to connect to: a non-empty path, with a NUL at its
 * start only (a Linux abstract socket, `"\0name"`).
 *
 * @category schemas
 * @since 0.1.0
 */
export const SocketPath = Schema.String.check(
  Schema.makeFilter((s: string) =>
    (s.length > 0 && s.indexOf("\0", 1) === -1) ||
    `socketPath must be a non-empty path, with a NUL at its start only (an abstract socket), got ${quote(s)}`
  )
)

/**
 * A path as WHATWG URL parsing (browsers, `ws`, our clients) sends it: percent-encoded where it
 * encodes, dot segments resolved. (Appended to an origin, not resolved against it: `//x` alone
 * would be read as a URL with host `x`, where `ws://host//x` sends `//x`.)
 */
const asSent = (path: string): string => {
  try {
    return new URL(`ws://x${path}`).pathname
  } catch {
    return path
  }
}

/**
 * A request path a server answers on: it starts with `/`, has no query or fragment (the query is
 * ignored when matching), and is written as clients send it. WHATWG URL parsing (browsers, `ws`,
 * our clients) percent-encodes a space, a non-ASCII character, `"`, `<`, `>`, `^`, a backtick,
 * `{` and `}`, turns `\` into `/` and resolves `.` and `..` segments, so a path written otherwise
 * could never match (`/a%20b`, not `/a b`); the error gives the path as sent.
 *
 * @category schemas
 * @since 0.1.0
 */
export const RequestPath = Schema.String.check(
  Schema.makeFilter((path: string) =>
    !(path.startsWith("/") && !path.includes("?") && !path.includes("#"))
      ? `path must start with "/" and have no query or fragment, got ${quote(path)}`
      : asSent(path) === path ||
        `path must be written as clients send it (${quote(asSent(path))}), got ${quote(path)}`
  )
)
