/**
 * The metrics connections report through `effect`'s `Metric` module: counters of messages and
 * bytes each way, connections open and closed (with the close code and whether it was clean).
 * Every metric carries a `side` attribute (`client` or `server`). They cost a few additions per
 * message and show up wherever the application exports `effect` metrics.
 *
 * @since 0.1.0
 */
import { Metric } from "effect"

/**
 * Messages received.
 *
 * @category metrics
 * @since 0.1.0
 */
export const messagesReceived = Metric.counter("websocket_messages_received_total", {
  description: "WebSocket messages received",
  incremental: true
})

/**
 * Payload bytes received.
 *
 * @category metrics
 * @since 0.1.0
 */
export const bytesReceived = Metric.counter("websocket_bytes_received_total", {
  description: "WebSocket message bytes received",
  incremental: true
})

/**
 * Messages sent.
 *
 * @category metrics
 * @since 0.1.0
 */
export const messagesSent = Metric.counter("websocket_messages_sent_total", {
  description: "WebSocket messages sent",
  incremental: true
})

/**
 * Payload bytes sent.
 *
 * @category metrics
 * @since 0.1.0
 */
export const bytesSent = Metric.counter("websocket_bytes_sent_total", {
  description: "WebSocket message bytes sent",
  incremental: true
})

/**
 * Connections open now.
 *
 * @category metrics
 * @since 0.1.0
 */
export const connectionsOpen = Metric.gauge("websocket_connections_open", { description: "WebSocket connections open" })

/**
 * Connections closed, with `code` and `clean` attributes. `code` is the close code below 3000 (those
 * RFC 6455 defines), and `3xxx` / `4xxx` for those of libraries and applications
 * (3000-4999): a peer chooses them, and one series per code would let any peer add thousands
 * (see {@link closeCodeLabel}).
 *
 * @category metrics
 * @since 0.1.0
 */
export const connectionsClosed = Metric.counter("websocket_connections_closed_total", {
  description: "WebSocket connections closed",
  incremental: true
})

/**
 * The `code` attribute of {@link connectionsClosed} for a close code: the code itself from 1000
 * to 2999, `3xxx` or `4xxx` above.
 *
 * @category metrics
 * @since 0.1.0
 */
export const closeCodeLabel = (code: number): string => code >= 4000 ? "4xxx" : code >= 3000 ? "3xxx" : String(code)

/**
 * Failed attempts to open a connection (client) or refused upgrade requests (server), with a
 * `reason` attribute. Client: the error's tag (`ConnectError`, `HandshakeRejected`,
 * `InvalidProtocolFormat`, ...). Server: the handshake error's tag (`InvalidProtocolFormat`,
 * `UnsupportedProtocolVersion`, ...), `Rejected` (by `authorize`), `NotFound` (another path),
 * `MethodNotAllowed`, `HttpVersionNotSupported`, `RequestBody` (a request with a body: 400),
 * `ServerError` (a callback failed, or `selectProtocol` picked what the client did not offer: 500), `ShuttingDown` (an upgrade handler whose scope has
 * closed: 503), and for
 * a standalone server the requests Node's parser refuses: `BadRequest`, `HeaderTooLarge`,
 * `RequestTimeout`.
 *
 * @category metrics
 * @since 0.1.0
 */
export const handshakeFailures = Metric.counter("websocket_handshake_failures_total", {
  description: "WebSocket opening handshakes that failed",
  incremental: true
})

/** A counter of the same series as `metric`'s, with the `side` attribute built in. */
const sidedCounter = (metric: Metric.Metric<number, Metric.CounterState<number>>, side: string) =>
  Metric.counter(metric.id, { description: metric.description, incremental: true, attributes: { side } })

const makeSide = (side: "client" | "server") => ({
  messagesReceived: sidedCounter(messagesReceived, side),
  bytesReceived: sidedCounter(bytesReceived, side),
  messagesSent: sidedCounter(messagesSent, side),
  bytesSent: sidedCounter(bytesSent, side),
  connectionsOpen: Metric.gauge(connectionsOpen.id, { description: connectionsOpen.description, attributes: { side } }),
  /** {@link connectionsClosed} by `code` label and `clean` (see {@link closedCounter}). */
  connectionsClosed: new Map<string, Metric.Metric<number, Metric.CounterState<number>>>()
})

const sides = { client: makeSide("client"), server: makeSide("server") }

/**
 * The connection metrics of one side, with the `side` attribute built in: the same series as
 * `withAttributes(metric, { side })`, whose series key `effect` then works out once instead of on
 * every update.
 *
 * @internal
 */
export const ofSide = (side: "client" | "server") => sides[side]

/**
 * The counter of {@link connectionsClosed} for one side, close code and cleanness: the same series
 * as `withAttributes(connectionsClosed, { side, code, clean })`, made at its first use and kept
 * (at most 2 002 labels a side, each clean or not: see {@link closeCodeLabel}), so that a connection's close does not
 * work out a series key.
 *
 * @internal
 */
export const closedCounter = (side: "client" | "server", code: number, clean: boolean) => {
  const counters = sides[side].connectionsClosed
  const label = closeCodeLabel(code)
  const key = clean ? label : `${label} unclean`
  let counter = counters.get(key)
  if (counter === undefined) {
    counter = Metric.counter(connectionsClosed.id, {
      description: connectionsClosed.description,
      incremental: true,
      attributes: { side, code: label, clean: String(clean) }
    })
    counters.set(key, counter)
  }
  return counter
}
