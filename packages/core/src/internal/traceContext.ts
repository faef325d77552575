/**
 * Trace context across the opening handshake, as effect's HTTP client and server carry it: the
 * client adds the `WebSocket.connect` span to its upgrade request (`traceparent` and `b3`), and
 * the server's `WebSocket.accept` span takes the span a request carries as its parent.
 */
import type { HttpHeader } from "@effect-websocket/schema"
import { Effect, Option, Tracer } from "effect"
import * as Headers from "effect/http/Headers"
import { TracerPropagationEnabled } from "effect/http/HttpClient"
import * as HttpTraceContext from "effect/http/HttpTraceContext"

/** The names of the headers that carry a trace context (lower case). */
const TRACE_HEADERS: ReadonlySet<string> = new Set(["traceparent", "b3", "x-b3-traceid"])

/** Span ids the trace headers can carry (W3C's: hex, a trace id of up to 32 digits, a span id of 16). */
const TRACE_ID = /^[0-9a-f]{1,32}$/
const SPAN_ID = /^[0-9a-f]{16}$/

/**
 * `headers` with the current span added as `traceparent` and `b3`, unless propagation is off (as
 * for effect's HTTP client: `Tracer.DisablePropagation`, or `HttpClient.TracerPropagationEnabled`
 * `false`), there is no span or none that the headers can carry (a disabled tracer's), or
 * `headers` carry a trace context already (the caller's is kept).
 */
export const withTraceContext = (
  headers: ReadonlyArray<HttpHeader.HttpHeader>
): Effect.Effect<ReadonlyArray<HttpHeader.HttpHeader>> =>
  Effect.gen(function*() {
    if ((yield* Tracer.DisablePropagation) || !(yield* TracerPropagationEnabled)) return headers
    if (headers.some((header) => TRACE_HEADERS.has(header.name.toLowerCase()))) return headers
    const span = yield* Effect.option(Effect.currentSpan)
    if (Option.isNone(span) || !TRACE_ID.test(span.value.traceId) || !SPAN_ID.test(span.value.spanId)) return headers
    const trace = HttpTraceContext.toHeaders(span.value)
    return [...headers, ...Object.keys(trace).map((name) => ({ name, value: trace[name]! }))]
  })

/** The span an upgrade request carries (W3C `traceparent`, or B3), if any. */
export const requestParent = (headers: Headers.Input): Tracer.ExternalSpan | undefined =>
  Option.getOrUndefined(HttpTraceContext.fromHeaders(Headers.fromInput(headers)))
