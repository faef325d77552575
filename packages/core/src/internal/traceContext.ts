/**
 * Trace context across the opening handshake, as effect's HTTP client and server carry it: the
 * client adds the `WebSocket.connect` span to its upgrade request (`traceparent` and `b3`), and
 * the server's `WebSocket.accept` span takes the span a request carries as its parent.
 */
import type { HttpHeader } from "@effect-websocket/schema"
import { Effect, Option, type Tracer } from "effect"
import * as Headers from "effect/http/Headers"
import { TracerPropagationEnabled } from "effect/http/HttpClient"
import * as HttpTraceContext from "effect/http/HttpTraceContext"

/** The names of the headers that carry a trace context (lower case). */
const TRACE_HEADERS: ReadonlySet<string> = new Set(["traceparent", "b3", "x-b3-traceid"])

/**
 * `headers` with the current span added as `traceparent` and `b3`, unless effect's
 * `HttpClient.TracerPropagationEnabled` is `false`, there is no span, or `headers` carry a trace
 * context already (the caller's is kept).
 */
export const withTraceContext = (
  headers: ReadonlyArray<HttpHeader.HttpHeader>
): Effect.Effect<ReadonlyArray<HttpHeader.HttpHeader>> =>
  Effect.gen(function*() {
    if (!(yield* TracerPropagationEnabled)) return headers
    if (headers.some((header) => TRACE_HEADERS.has(header.name.toLowerCase()))) return headers
    const span = yield* Effect.option(Effect.currentSpan)
    if (Option.isNone(span)) return headers
    const trace = HttpTraceContext.toHeaders(span.value)
    return [...headers, ...Object.keys(trace).map((name) => ({ name, value: trace[name]! }))]
  })

/** The span an upgrade request carries (W3C `traceparent`, or B3), if any. */
export const requestParent = (headers: Headers.Input): Tracer.ExternalSpan | undefined =>
  Option.getOrUndefined(HttpTraceContext.fromHeaders(Headers.fromInput(headers)))
