/**
 * The idiomatic layer over a websocket.h handle: a connection that sends whole messages (or a
 * `Stream` of fragments), exposes received messages as a `Stream`, answers pings, runs the
 * closing handshake with a timeout, and optionally keeps the connection alive. It drives the
 * handle's `getAction` / `completeAction` loop over a {@link Transport.Transport}.
 *
 * Buffering is bounded both ways: received messages wait in a queue of `messageBuffer` entries
 * (when it is full the connection stops reading, so the peer is slowed by the transport), and
 * `send` completes only once its frame is handed to the transport, which itself waits when its
 * outgoing buffer is full.
 *
 * @since 0.1.0
 */
import { Cause, Deferred, Exit, Duration, Effect, Fiber, Option, Predicate, Semaphore, Stream } from "effect"
import { type HttpHeader, Options as OptionsSchema } from "@effect-websocket/schema"
import type { Scope } from "effect/Scope"
import * as BufferType from "./BufferType.ts"
import { CloseStatus } from "./CloseStatus.ts"
import { ActionCode, ActionRecord, closeFrameProblem, type Engine, QueueCode, Status } from "./internal/engine/engine.ts"
import { HandleState } from "./internal/engine/state.ts"
import { AddCloseListener, type TakesCloseListeners } from "./internal/closeListener.ts"
import { decodeParameter, describeValue } from "./internal/handshake.ts"
import { engineError } from "./internal/engineError.ts"
import { isBinaryData, isDetached, isSharedArrayBuffer } from "./internal/bytes.ts"
import { Mailbox } from "./internal/mailbox.ts"
import { allocatePlainUninitialized, allocateUninitialized, decodeUtf8, encodeUtf8 } from "./internal/runtime.ts"
import * as Metrics from "./Metrics.ts"
import type { HandleImpl } from "./internal/handle.ts"
import type { Transport } from "./Transport.ts"
import { makeMemoryPair as makeMemoryPairTransport, TransportError } from "./Transport.ts"
import * as WebSocket from "./WebSocket.ts"
import type { Handle } from "./WebSocket.ts"
import { InvalidParameter, InvalidProtocolFormat, InvalidProtocolOperation } from "./WebSocketError.ts"

/**
 * A string identifying connections.
 *
 * @category type ids
 * @since 0.1.0
 */
export const TypeId = "~@effect-websocket/core/Connection"

/** What `Effect.uninterruptibleMask` hands over: makes an effect interruptible again. */
type Restore = <A, E, R>(effect: Effect.Effect<A, E, R>) => Effect.Effect<A, E, R>

/**
 * A received message: text as a `string`, binary as a `Uint8Array`.
 *
 * **Gotchas**
 *
 * A binary message is the application's: nothing else writes to its bytes. Small ones (up to
 * 2 KiB) are views into a block shared with other messages, as Node's `Buffer` pool does: read the
 * view (or `.slice()` it), not its whole `.buffer`, or use `byteOffset` and `byteLength` with it.
 *
 * @category models
 * @since 0.1.0
 */
export type Message = string | Uint8Array

/**
 * What `send`, `sendFragments` and `ping` take: text as a `string`, bytes as any typed array, a
 * `DataView`, an `ArrayBuffer` or a `SharedArrayBuffer` (as with `ws`). A received
 * {@link Message} can be sent as it is.
 *
 * A string goes out as its UTF-8 bytes: a lone surrogate (half of a pair, which UTF-8 cannot
 * carry) becomes U+FFFD, as with `ws`, `TextEncoder` and browsers. Bytes whose buffer was detached
 * (transferred) are refused with `InvalidParameter` (`ws` throws a `TypeError`).
 *
 * @category models
 * @since 0.1.0
 */
export type Outgoing = string | ArrayBufferView | ArrayBufferLike

/**
 * How a connection ended.
 *
 * @category models
 * @since 0.1.0
 */
export interface CloseInfo {
  /**
   * The close code: the peer's (1005 when its Close had none); ours when we failed the connection
   * because the peer broke the protocol (1002, 1007, 1009); 1006 when no Close came back (the
   * transport ended without one, the peer did not answer in time, or the connection was aborted).
   */
  readonly code: number
  /**
   * The reason that came with the code: the peer's (UTF-8); when we failed the connection (1002,
   * 1007, 1009) or it ended without a Close (1006), our own explanation, which never went on the
   * wire (the Close we send then has an empty reason, as with `ws`).
   */
  readonly reason: string
  /**
   * Whether both Close frames were exchanged (RFC 6455 section 7.1.4: "cleanly"): the peer's
   * received and ours handed to the transport. A peer that resets the connection right after its
   * Close may not get our answer: the close is clean here, where `ws` (whose answer's write then
   * fails) says it is not; a reset that comes once the answer was written is clean for both.
   */
  readonly clean: boolean
  /** Who sent the first Close: `"local"`, `"remote"`, or `"none"` when the connection ended without one. */
  readonly initiator: "local" | "remote" | "none"
}

/**
 * Why a connection failed: the peer broke the protocol (the close code sent is in `closeStatus`),
 * or the transport failed or ended without a Close frame.
 *
 * @category errors
 * @since 0.1.0
 */
export type ConnectionError = InvalidProtocolFormat | InvalidProtocolOperation | TransportError

/**
 * Counts of what went through a connection.
 *
 * @category models
 * @since 0.1.0
 */
export interface Stats {
  readonly messagesIn: number
  readonly bytesIn: number
  readonly messagesOut: number
  readonly bytesOut: number
  /**
   * Pings received. The connection answers each itself, in order (of a flood that keeps more than
   * 16 pongs waiting for the wire, the latest takes the last place, as RFC 6455 section 5.5.3
   * allows), and none once its own Close is sent (queued).
   */
  readonly pingsIn: number
  readonly pongsIn: number
}

/**
 * An open WebSocket connection.
 *
 * @category models
 * @since 0.1.0
 */
export interface Connection {
  readonly [TypeId]: typeof TypeId
  /** `"client"` or `"server"`. */
  readonly kind: "client" | "server"
  /** The negotiated subprotocol, or `""`. */
  readonly protocol: string
  /** The headers of the opening handshake: the upgrade request and the `101` response. */
  readonly handshake: Handshake
  /**
   * Sends one message: a `string` as text, a `Uint8Array` as binary. Completes once the frame is
   * handed to the transport. Concurrent sends go out one after the other. Fails with
   * `InvalidProtocolOperation` once the connection is closing or closed, and with
   * `InvalidParameter` for anything else than text or bytes (as `ws` does, an `ArrayBuffer`, a
   * `SharedArrayBuffer` or another typed array or `DataView` is sent as its bytes; bytes whose
   * buffer was detached are refused too), and with `TransportError` when the
   * transport broke (the peer went away): the connection then ends with 1006 (unless it was
   * ending already: the peer's Close, or a frame of the peer's that broke the protocol, says how).
   *
   * Interrupted while it waits for the transport (a peer that does not read) before any of it
   * went out, a send leaves nothing on the wire and the connection goes on. A client's message
   * larger than its send buffer (64 KiB by default) goes out in parts: interrupted after the
   * first, it leaves its frame incomplete, and nothing may follow it on the wire (RFC 6455 section
   * 5.4): later sends and pings fail with `InvalidProtocolOperation`, and `close` cannot send its
   * Close: it ends our side of the transport once what was written went out (earlier sends that
   * reported success reach the peer) and waits, within the close timeout, for the peer to end its
   * side, then reports 1006, not clean (`abort` cuts the transport at once, dropping what it holds).
   *
   * A `Uint8Array` is handed over, not copied (as with `ws` and Node's `socket.write`): the
   * transport may still hold it after `send` completes, so do not modify it afterwards.
   */
  readonly send: (message: Outgoing) => Effect.Effect<void, InvalidProtocolOperation | InvalidParameter | TransportError>
  /**
   * Sends one message as fragments: every element of `fragments` becomes a frame (text or binary as
   * chosen by `type`), and an empty final frame closes the message. A string that ends with the
   * first half of a surrogate pair keeps it for the next fragment, so that text cut anywhere
   * (between UTF-16 code units) arrives whole; bytes may be cut anywhere too, inside a UTF-8
   * sequence as well (RFC 6455 section 5.6). Other sends wait until it is
   * complete; `ping` and `close` do not (control frames may go out between fragments), and once
   * the Close is sent (or the connection ended), the rest of the message fails with
   * `InvalidProtocolOperation`: a wait for the next fragment stops then (the stream is
   * interrupted), and so do the sends waiting behind the message. When
   * `fragments` fails or the send is interrupted after a fragment went out, the message stays
   * incomplete on the wire: later sends fail with `InvalidProtocolOperation` (only pings and
   * `close` remain possible; not even those when a fragment itself was cut half-way, as a `send`
   * can be). Like `send`, fragments are handed over, not copied.
   */
  readonly sendFragments: <E, R>(
    fragments: Stream.Stream<Outgoing, E, R>,
    type: "text" | "binary"
  ) => Effect.Effect<void, InvalidProtocolOperation | InvalidParameter | TransportError | E, R>
  /**
   * Sends a Ping with an optional payload (bytes, or a string sent as UTF-8) of at most 125 bytes;
   * the Pong shows up in `stats.pongsIn` (a peer may answer only the latest of pings sent in a
   * row, RFC 6455 section 5.5.3). Pings may still go out after our Close, while the peer's answer
   * is awaited (RFC 6455 forbids data frames only, and websocket.h sends control frames in
   * `CloseSent`; `ws` refuses them once closing); once the connection ended, `ping` fails with
   * `InvalidProtocolOperation`.
   */
  readonly ping: (payload?: Outgoing) => Effect.Effect<void, InvalidProtocolOperation | InvalidParameter | TransportError>
  /**
   * The received messages, in order, for one consumer at a time: a consumer that stops
   * (`Stream.take`, interruption) leaves the messages it did not take to the next one. Ends after
   * the peer's Close (or ours, once answered or once `close` stopped waiting for the answer);
   * fails with a {@link ConnectionError} when the peer breaks the protocol, the transport ends
   * without a Close frame, or the connection was aborted (`TransportError`, 1006).
   *
   * A message is the consumer's once its pull returned it: a consumer interrupted between that pull
   * and handling the message loses it, and operators that read ahead (`Stream.mapEffect` with
   * `concurrency`, `merge`, `buffer`, `timeout`, `interruptWhen`) drop what they hold when the
   * stream stops, as with any `effect` stream. Two consumers at once each get some of the
   * messages, each in order. Once our `close` started, a consumer that still runs gets every
   * message that came before the peer's Close (as `ws` emits them after its `close()`): reading
   * waits for it, within the close timeout. With no stream running, messages beyond
   * `messageBuffer` are then dropped, so that the peer's answer to our Close gets through; and so
   * they are when the only consumer itself closes (it calls `close` while handling a message, say
   * to refuse bad input with a 4xxx code, from the fiber that pulls, as in `Stream.runForEach` or
   * a `Stream.mapEffect` without concurrency): it takes no message until `close` returns, and the
   * peer's answer must not wait behind those it will not take (the buffered ones stay its to take,
   * and none after a dropped one). A consumer that reads ahead (`concurrency`, `buffer`) pulls in
   * another fiber: there, fork the close (`Effect.forkDetach(connection.close(4000))`; it ends by
   * itself, within the close timeout, where a `forkChild` from `mapEffect`'s fiber for the element
   * is interrupted with that fiber before it starts) and let the stream go on, or the close waits
   * for the consumer within the close timeout.
   *
   * Messages nobody takes are not dropped (as `ws` drops those no listener takes): once
   * `messageBuffer` of them wait, the connection stops reading, and so sees neither the peer's
   * Close nor the end of its socket until a send fails. A handler that has no use for them drains
   * them (`Stream.runDrain(connection.messages)`, which also ends when the connection does).
   */
  readonly messages: Stream.Stream<Message, ConnectionError>
  /**
   * Starts the closing handshake with `code` (default 1000) and `reason`, and waits until it
   * completes, or the close timeout cuts the transport (the timeout also bounds waiting for a send
   * in progress). Once started it goes through whether or not the caller keeps waiting: an
   * interrupted `close` only stops waiting. Returns how the connection ended; calling it again
   * returns the same. `code` 1005 (`CloseStatus.Empty`) sends an empty Close (no code, no reason:
   * the peer reports 1005), as `ws`'s and a browser's `close()` without a code do. Fails with
   * `InvalidParameter` for a code that may not be sent (1006, 1015, 1004, below 1000, ...), a
   * reason over 123 UTF-8 bytes, or a reason with 1005. The reason goes out as its
   * UTF-8, a lone surrogate as U+FFFD (as with `ws` and browsers), as a message's text does.
   */
  readonly close: (code?: number, reason?: string) => Effect.Effect<CloseInfo, InvalidParameter>
  /**
   * Completes with how the connection ended, once it has: also when a send or ping fails because
   * the transport broke (1006), though the connection was not reading (see {@link messages}).
   */
  readonly closed: Effect.Effect<CloseInfo>
  /**
   * Cuts the transport at once, without a closing handshake: what is still queued is dropped, as
   * with `ws`'s `terminate()`. The close code is 1006.
   */
  readonly abort: Effect.Effect<void>
  /** What went through the connection so far. */
  readonly stats: Stats
  /**
   * Bytes of frames handed to the transport that it has not yet passed on to the network, as
   * `ws`'s `bufferedAmount` (0 when the transport cannot tell). Since `send` waits while the
   * transport's outgoing buffer is full, it stays within about that limit
   * (`socketBuffers.writeBufferLimit` over Node sockets) and one message (a message is handed over
   * whole) rather than growing: a broadcast can use it to skip, or cut off, a client that falls
   * behind.
   */
  readonly bufferedAmount: number
}

/**
 * The headers exchanged in the opening handshake.
 *
 * @category models
 * @since 0.1.0
 */
export interface Handshake {
  readonly requestHeaders: ReadonlyArray<HttpHeader.HttpHeader>
  readonly responseHeaders: ReadonlyArray<HttpHeader.HttpHeader>
}

/**
 * Keepalive settings: a frame every `interval` while the connection is open; with `timeout`, a
 * peer that does not answer a ping (nor send anything) within it is cut off. The next ping is then
 * due `interval` after that wait, so a peer that goes silent (frozen, asleep: it neither sends
 * nor takes our bytes) is cut off at most `interval` + 2 × `timeout` later, unless a send of
 * ours is still being taken or the message buffer is full (see below).
 *
 * **Gotchas**
 *
 * - A ping waits for a send in progress (a frame is never cut by another). When it cannot go out
 *   within `timeout` but the transport took more of that send meanwhile, the peer is reading: it
 *   is slow, not dead, and is not cut off (the next ping is tried an interval later). Only a peer
 *   that neither sends anything nor takes any of our bytes within `timeout` is. Bytes taken by
 *   the peer's system or the network count as taken: a frozen process whose system still accepts
 *   bytes is cut off once their buffers are full, which behind a large send over a slow link
 *   takes as long as filling them.
 * - A ping that went out is answered only once the peer has read what the transport and the
 *   network held ahead of it (a socket's buffers, megabytes after a large send): over a slow link,
 *   choose a `timeout` longer than the peer takes to read that.
 * - While the message buffer is full (the application takes no messages, `messageBuffer` of them
 *   wait, and another one came), the connection reads nothing (see {@link Connection.messages}),
 *   so it cannot see an answer: keepalive then does not judge the peer, and a peer that went
 *   silent meanwhile stays connected, however long. Judging resumes with reading, once the
 *   application takes messages again (the round in progress then counts as answered).
 *
 * @see websocket.h `WEB_SOCKET_KEEPALIVE_INTERVAL_PROPERTY_TYPE` (the interval; the frame is the
 * application's choice)
 * @category models
 * @since 0.1.0
 */
export interface KeepaliveOptions {
  readonly interval: Duration.Input
  /**
   * How long to wait for any traffic after a ping before giving up on the peer (1006); also how
   * long the ping may wait to go out behind a send that waits for room: a peer that meanwhile
   * neither sent anything nor took any of that send's bytes is given up on too (one that sends but
   * reads nothing is not: bound such a send with `Effect.timeout`). Pings only: with
   * `frame: "pong"` no answer is expected, and nothing is cut off.
   */
  readonly timeout?: Duration.Input | undefined
  /**
   * `"ping"` (default) expects an answer; `"pong"` sends unsolicited pongs, as websocket.h's users
   * do: they tell the peer that we are alive, but nothing tells us whether the peer is (`timeout`
   * does not apply, and a frozen peer stays connected).
   */
  readonly frame?: "ping" | "pong" | undefined
}

/**
 * Options of {@link make}.
 *
 * @category models
 * @since 0.1.0
 */
export interface Options {
  /**
   * How long to wait for the peer's Close, and for our answer to the peer's Close to go out
   * (behind a send that waits for a peer that reads nothing). Default 5 seconds. Once both Close
   * frames have passed, a client waits for the server to end the transport first (RFC 6455
   * section 7.1.1) for at most a second (and at most this), then ends its own side.
   */
  readonly closeTimeout?: Duration.Input | undefined
  /**
   * How many received messages may wait for the consumer before reading pauses. Default 16. Once
   * a send finds the transport broken, the messages in what the transport still held are queued
   * beyond it (none is dropped): as many as its read buffer holds (over Node sockets
   * `socketBuffers.highWaterMark`, 64 KiB, and the read that reached it; thousands of messages
   * when they are tiny).
   */
  readonly messageBuffer?: number | undefined
  readonly keepalive?: KeepaliveOptions | undefined
  /** The negotiated subprotocol, reported as {@link Connection.protocol}. */
  readonly protocol?: string | undefined
  /** The handshake headers, reported as {@link Connection.handshake}. */
  readonly handshake?: Handshake | undefined
  /**
   * The close code sent when the connection's scope closes while it is open (1005: an empty Close,
   * as with {@link Connection.close}). Default 1001 (going away).
   */
  readonly closeCodeOnScopeClose?: number | undefined
}

/** The close code that asks for an empty Close (websocket.h's NULL close buffer): 1005, reported by the peer. */
const EMPTY_CLOSE = CloseStatus.Empty

/** The close status a Close frame carries for `code`: none for {@link EMPTY_CLOSE}. */
const closeStatusOnWire = (code: number): number | undefined => code === EMPTY_CLOSE ? undefined : code

/**
 * Whether `u` is a {@link Connection}.
 *
 * @category guards
 * @since 0.1.0
 */
export const isConnection = (u: unknown): u is Connection => Predicate.hasProperty(u, TypeId)

/**
 * A connection's {@link Stats}, counted in place; `pingsIn` is the handle's own count. A class
 * (not an object literal with a getter, which V8 keeps as a dictionary): every connection has one.
 * `pingsIn` is an own enumerable accessor, in the place it had in the object literal, so that a
 * spread (`{ ...stats }`, a snapshot), `Object.keys`, JSON and `Equal` see all six counts; its
 * getter is shared, so that every instance keeps the same (fast) map.
 */
class ConnectionStats implements Stats {
  messagesIn = 0
  bytesIn = 0
  messagesOut = 0
  bytesOut = 0
  declare readonly pingsIn: number
  declare pongsIn: number
  readonly #engine: Engine
  constructor(engine: Engine) {
    this.#engine = engine
    Object.defineProperty(this, "pingsIn", ConnectionStats.#pingsIn)
    this.pongsIn = 0
  }
  static readonly #pingsIn: PropertyDescriptor = {
    get(this: ConnectionStats): number {
      return this.#engine.pingsReceived
    },
    enumerable: true,
    configurable: true
  }
}

/** What a {@link Connection} is made of, but its `bufferedAmount` (the transport's). */
type ConnectionFields = Omit<Connection, typeof TypeId | "bufferedAmount">

/**
 * A {@link Connection}: a class (not an object literal with a getter, which V8 keeps as a
 * dictionary), so that every connection's record stays small. `bufferedAmount` is an own
 * enumerable accessor (last, as in the object literal), so that a spread of a connection keeps it;
 * its getter is shared, so that every instance keeps the same (fast) map.
 */
class ConnectionImpl implements Connection, TakesCloseListeners {
  readonly [TypeId] = TypeId
  readonly kind: Connection["kind"]
  readonly protocol: string
  readonly handshake: Handshake
  readonly send: Connection["send"]
  readonly sendFragments: Connection["sendFragments"]
  readonly ping: Connection["ping"]
  readonly messages: Connection["messages"]
  readonly close: Connection["close"]
  readonly closed: Connection["closed"]
  readonly abort: Connection["abort"]
  readonly stats: Stats
  declare readonly bufferedAmount: number
  readonly #transport: Transport
  readonly #closedDeferred: Deferred.Deferred<CloseInfo>
  /** Called as `closed` completes (see `complete` in {@link make}), then emptied. */
  readonly #closeListeners: Array<() => void>
  constructor(
    fields: ConnectionFields,
    transport: Transport,
    closedDeferred: Deferred.Deferred<CloseInfo>,
    closeListeners: Array<() => void>
  ) {
    this.kind = fields.kind
    this.protocol = fields.protocol
    this.handshake = fields.handshake
    this.send = fields.send
    this.sendFragments = fields.sendFragments
    this.ping = fields.ping
    this.messages = fields.messages
    this.close = fields.close
    this.closed = fields.closed
    this.abort = fields.abort
    this.stats = fields.stats
    this.#transport = transport
    this.#closedDeferred = closedDeferred
    this.#closeListeners = closeListeners
    Object.defineProperty(this, "bufferedAmount", ConnectionImpl.#bufferedAmount)
  }
  [AddCloseListener](listener: () => void): void {
    if (Deferred.isDoneUnsafe(this.#closedDeferred)) listener()
    else this.#closeListeners.push(listener)
  }
  static readonly #bufferedAmount: PropertyDescriptor = {
    get(this: ConnectionImpl): number {
      return this.#transport.bufferedAmount?.() ?? 0
    },
    enumerable: true,
    configurable: true
  }
}

/**
 * Micro-optimisation: small binary messages are copied into slices of a shared slab instead of an
 * allocation each (as Node's `Buffer` pool does): a slab lives as long as a message cut from it.
 */
const SLAB_SIZE = 16 * 1024
const SLAB_MAX_MESSAGE = 2 * 1024
let slab = new Uint8Array(0)
let slabOffset = 0

/** A copy of `view` that outlives the handle's receive buffer. */
const copyOut = (view: Uint8Array): Uint8Array => {
  const length = view.length
  if (length > SLAB_MAX_MESSAGE) return view.slice()
  if (slabOffset + length > slab.length) {
    slab = allocatePlainUninitialized(SLAB_SIZE)
    slabOffset = 0
  }
  const copy = slab.subarray(slabOffset, slabOffset + length)
  copy.set(view)
  slabOffset = (slabOffset + length + 7) & ~7 // keep slices 8-byte aligned
  return copy
}

/** No bytes (shared: nothing is ever written into it). */
const NO_BYTES = new Uint8Array(0)

/** From this size of the last message on, the next one is received straight into a buffer of its own. */
const DIRECT_MESSAGE_SIZE = 8192

/** Messages counted before the metrics are updated (they are also updated when a connection waits for the network). */
const METRIC_BATCH = 64

/** The least time between two metric updates made because a connection waits for the network. */
const METRIC_INTERVAL_MS = 50

/** The largest buffer a connection keeps between text messages for assembling the next one. */
const RETAINED_ACCUMULATOR = 1024 * 1024

// What became of the latest send queued on a handle (see `sendOutcome`).
const SEND_PENDING = 0
const SEND_WRITTEN = 1
const SEND_CANCELLED = 2

/**
 * The bytes of a view other than a `Uint8Array`, or `undefined` when they cannot be read: its
 * buffer was detached, or it is a `DataView` outside its (resized) buffer, whose getters throw.
 */
const viewBytes = (view: ArrayBufferView): Uint8Array | undefined => {
  if (isDetached(view.buffer)) return undefined
  try {
    return new Uint8Array(view.buffer, view.byteOffset, view.byteLength)
  } catch {
    return undefined
  }
}

/**
 * The bytes of binary data given at run time: a `Uint8Array` (a `Buffer`) as it is, another typed
 * array, a `DataView`, an `ArrayBuffer` or a `SharedArrayBuffer` as a view of its bytes (what `ws`
 * sends for them); `undefined` for anything else, and for memory whose bytes are gone (a detached,
 * transferred, buffer: `ws` throws a `TypeError` for it).
 */
const bytesOf = (data: unknown): Uint8Array | undefined => {
  // (a detached view reads as empty: only then is its buffer looked at)
  if (data instanceof Uint8Array) return data.length === 0 && isDetached(data.buffer) ? undefined : data
  if (ArrayBuffer.isView(data)) return viewBytes(data)
  if (data instanceof ArrayBuffer || isSharedArrayBuffer(data)) return isDetached(data) ? undefined : new Uint8Array(data)
  return undefined
}

/** The bytes of a message, fragment or ping payload: text as UTF-8, binary data as {@link bytesOf}. */
const payloadOf = (data: unknown): Uint8Array | undefined => typeof data === "string" ? encodeUtf8(data) : bytesOf(data)

/** A `sendFragments` type that is neither `"text"` nor `"binary"` (from untyped code). */
const notAMessageType = (type: unknown): InvalidParameter =>
  new InvalidParameter({
    parameter: "type",
    message: `a message's type is "text" or "binary", got ${typeof type === "string" ? JSON.stringify(type) : describeValue(type)}`
  })

const notAMessage = (parameter: string, value: unknown): InvalidParameter =>
  new InvalidParameter({
    parameter,
    message: isBinaryData(value)
      ? `a ${parameter}'s bytes cannot be read: its ArrayBuffer is detached (transferred), or the ${describeValue(value)} lies outside its resized ArrayBuffer`
      : `a ${parameter} is a string (text) or bytes (a Uint8Array, another typed array, an ArrayBuffer), got ${describeValue(value)}`
  })

/**
 * Checks connection options and decodes their durations: an `InvalidParameter` names the first bad
 * one (a close timeout that is not a duration or is negative, a message buffer below 1, a keepalive
 * interval or timeout that is not positive and finite, a close code that may not be sent). {@link make}
 * runs it first; clients and servers run it before they connect or listen.
 *
 * @category constructors
 * @since 0.1.0
 */
export const decodeOptions = (options: Options | undefined) =>
  decodeParameter(OptionsSchema.ConnectionOptions, "connection", options ?? {})

/** What a transport's write threw (or died with), as the failed write it is. */
/** A transport operation (`"read"`, `"write"`) that threw `cause`, as the transport's failure. */
const operationFailed = (operation: string, cause: unknown) => new TransportError({ message: `${operation} failed`, cause })

/**
 * The failure of a transport whose `read` (or `tryRead`, which may also say -1: none yet) returned
 * something else than a byte count that fits the buffer; `undefined` for a count that does. The
 * bytes of such a read cannot be told, so the connection ends (1006) rather than lose or invent any.
 */
const badReadCount = (operation: "read" | "tryRead", n: unknown, length: number): TransportError | undefined =>
  Number.isInteger(n) && (n as number) >= 0 && (n as number) <= length
    ? undefined
    : new TransportError({
      message: `${operation} returned ${String(n)}, not a byte count from 0 to ${length}${operation === "tryRead" ? " (or -1)" : ""}`
    })

/**
 * A transport operation's failure as a `TransportError`: its own when it failed with one; else
 * (a defect, a throw, an interruption, or a failure of another type from an implementation that
 * breaks its contract) one that keeps the cause.
 */
const transportFailure = (cause: Cause.Cause<unknown>, operation: string): TransportError => {
  const error = Cause.findErrorOption(cause)
  return Option.isSome(error) && error.value instanceof TransportError ? error.value : operationFailed(operation, Cause.squash(cause))
}

/** Why a step of a connection's reader stopped: it needs bytes (its read is outstanding). */
const STEP_READ = 0
/** A write found the transport broken while the reader needed bytes. */
const STEP_LOST = 1
/** Automatic pongs wait for a writer. */
const STEP_PONGS = 2
/** `getAction` failed: the peer broke the protocol. */
const STEP_FAILED = 3
/** A message waits for room in the message buffer (`held`). */
const STEP_HELD = 4
/** The peer's Close, or the end without one (1006). */
const STEP_CLOSE = 5
/** The handle takes no more receives: the reader is done. */
const STEP_END = 6
/** The step threw (a transport's `tryRead`, a hook of `Transport.tap`, an allocation): a failed read. */
const STEP_THREW = 7
/** Each reason as the outcome of the reader's wait for the network (made once, for every connection). */
const STEP_OUTCOMES = [STEP_READ, STEP_LOST, STEP_PONGS, STEP_FAILED, STEP_HELD, STEP_CLOSE, STEP_END, STEP_THREW].map((
  step
) => Effect.succeed(step))

/**
 * Runs a connection over an open handle (its handshake complete) and a transport, owned by the
 * current scope. Closing the scope closes the connection (1001 by default, bounded by the close
 * timeout), stops its fibers and closes the transport; the handle itself belongs to its own scope.
 *
 * @category constructors
 * @since 0.1.0
 */
export const make = (
  handle: Handle,
  transport: Transport,
  options?: Options
): Effect.Effect<Connection, InvalidParameter, Scope> =>
  // Whole or not at all (nothing here waits): interrupted between counting the connection open
  // and adding the finalizer that closes it, it would stay counted open forever.
  Effect.uninterruptible(Effect.gen(function*() {
    const settings = yield* decodeOptions(options)
    const h = handle as unknown as HandleImpl
    const engine = h.engine
    // Every network write goes through the send queue under the wire lock, so frames never interleave.
    engine.pongsOnSendQueue = true
    // Frames go to the transport without a copy: masked ones are built in buffers of their own,
    // larger unmasked payloads follow a header of their own (payloads are handed over, see `send`).
    // The transport may supply (and recycle) that memory.
    engine.allocateFrame = transport.allocate ?? allocateUninitialized
    const closeTimeout = settings.closeTimeout ?? Duration.seconds(5)
    /** How long the answer to a peer's Close waits for the consumer to handle earlier messages. */
    const consumerGrace = Duration.min(closeTimeout, Duration.seconds(1))
    /**
     * How long a client waits, once both Close frames have passed, for the server to end the
     * transport before it ends its own side: as browsers do, with a bound short enough that a
     * server waiting for the client's end (a plain `net` server) costs a second, not the close timeout.
     */
    const serverEndGrace = Duration.min(closeTimeout, Duration.seconds(1))
    const mailbox = new Mailbox<Message, ConnectionError>(settings.messageBuffer ?? 16)
    const closedDeferred = yield* Deferred.make<CloseInfo>()
    /** Plain callbacks of the library's own (see `internal/closeListener.ts`), run as `closed` completes. */
    const closeListeners: Array<() => void> = []
    /**
     * Held for a whole message by `sendFragments`, and by a `send` that has to wait for the wire;
     * made at its first use (most connections never need it).
     */
    let messageLock: Semaphore.Semaphore | undefined = undefined
    const withMessageLock = <A, E, R>(effect: Effect.Effect<A, E, R>): Effect.Effect<A, E, R> =>
      Effect.suspend(() => (messageLock ??= Semaphore.makeUnsafe(1)).withPermit(effect))
    const stats = new ConnectionStats(engine)
    const sendRecord = new ActionRecord()
    let initiator: CloseInfo["initiator"] = "none"
    /** A fragmented message was left incomplete on the wire: no data frame may follow it. */
    let messageLeftOpen = false
    /**
     * The consumer of `messages`: how many streams run, how many wait for a message, and who waits
     * for the consumer to be idle (no stream, or every message handled and the next one asked for).
     */
    let consumers = 0
    /** The fiber that took the latest message (see `closedByConsumer`). */
    let lastTaker: Fiber.Fiber<unknown, unknown> | undefined = undefined
    /** Whether `close` was called by the consumer as it handled a message: it takes none until `close` returns (see `dropping`). */
    let closedByConsumer = false
    let consumerIdle: Deferred.Deferred<void> | undefined = undefined
    const consumerIsIdle = () => consumers === 0 || (mailbox.waiting > 0 && mailbox.size === 0)
    const signalIfIdle = () => {
      if (consumerIdle !== undefined && consumerIsIdle()) {
        Deferred.doneUnsafe(consumerIdle, Exit.void)
        consumerIdle = undefined
      }
    }
    /** Resumes the reader waiting for room in the message buffer. */
    let wakeReader: (() => void) | undefined = undefined
    const wake = () => {
      const resume = wakeReader
      if (resume !== undefined) {
        wakeReader = undefined
        resume()
      }
    }
    /**
     * The reader, stopped by a full message buffer, goes on once the buffer is half empty
     * (micro-optimisation: it then offers a run of messages per wake-up instead of one).
     */
    const resumeReadingAt = mailbox.capacity >> 1
    const asPull = (message: Message) => [message] as const
    /**
     * A message taken as a pull, waking the reader once the buffer is down to where reading
     * resumes: also for a message taken as a wait starts or handed over after it (the reader may
     * have started to wait for the consumer meanwhile, and the consumer's next take may wait too).
     */
    const takenAsPull = (message: Message, handedOver: boolean) => {
      if (!handedOver) lastTaker = Fiber.getCurrent() // (else it was when its wait started)
      if (mailbox.size <= resumeReadingAt) wake()
      return asPull(message)
    }
    const startsWaiting = () => {
      lastTaker = Fiber.getCurrent()
      signalIfIdle()
    }
    /** One message for the stream's pull, as the array a pull yields (one message at a time, see `messages`). */
    const takeOne: Effect.Effect<readonly [Message], ConnectionError | Cause.Done> = mailbox.taking(takenAsPull, startsWaiting)
    // (counted in the step that adds the finalizer: an interruption in between would leave the
    // consumer counted, and the answer to a peer's Close would wait for it in vain)
    const messages = Stream.unwrap(Effect.acquireRelease(
      Effect.sync(() => {
        consumers++
        return Stream.fromPull(Effect.succeed(takeOne))
      }),
      () =>
        Effect.sync(() => {
          consumers--
          lastTaker = undefined // (a fiber whose stream ended is no consumer, whatever it took)
          signalIfIdle()
          // a reader waiting for room while we close no longer waits for anyone (see `dropping`)
          if (consumers === 0) wake()
        })
    ))
    /** Counts reads that brought bytes: the keepalive watches it for signs of life. */
    let activity = 0
    /**
     * Counts writes the transport took (a frame, or a part of a large one): while a ping waits for
     * the wire behind a send that waits for room, a write taken is a sign that the peer takes our
     * bytes (the keepalive watches it).
     */
    let writesTaken = 0
    /**
     * Whether the reader waits for the consumer (the message buffer is full): it reads nothing
     * meanwhile, so a silent peer then says nothing about the peer (keepalive).
     */
    let waitingForConsumer = false
    /** Completed when a local close starts: see `dropping`. */
    const closing = yield* Deferred.make<void>()
    /**
     * Whether messages the message buffer has no room for are dropped: once a local close started
     * and no stream consumes them, or the consumer is the one closing (the peer's answer to our
     * Close must get through; a consumer that runs gets them, the close timeout bounding its wait).
     */
    const dropping = () => (consumers === 0 || closedByConsumer) && Deferred.isDoneUnsafe(closing)
    let transportClosed = false
    /**
     * Why a write failed while the connection was open (see `lostTransport`): the reader then no
     * longer waits, for the consumer or the network, and ends the connection once it has taken what
     * the transport still held.
     */
    let lost: TransportError | undefined = undefined
    /**
     * Whether the reader waits for the network (in `transport.read`, or for `whenReadable`, whose
     * steps run to completion and then wait again or wake the reader): it then holds no message and
     * is not ending the connection, so a failed write may stop it (see `lostTransport`).
     */
    let readingNetwork = false
    const connectionScope = yield* Effect.scope

    // Metrics are updated in place with the context captured here: no effect per message.
    const context = yield* Effect.context()
    const metrics = Metrics.ofSide(h.kind)
    metrics.connectionsOpen.modifyUnsafe(1, context)
    // Micro-optimisation: the counters reach the metrics in batches (a registry lookup each): every
    // METRIC_BATCH messages, when the connection ends, and when the reader waits for the network, at
    // most every METRIC_INTERVAL_MS (a timer sends what a wait left unreported, and what sends
    // counted while the reader waits: a connection that only sends is reported as often).
    let unreportedIn = 0
    let unreportedBytesIn = 0
    let unreportedOut = 0
    let unreportedBytesOut = 0
    let lastReport = 0
    let reportTimer: ReturnType<typeof setTimeout> | undefined = undefined
    const reportWhileWaiting = () => {
      if (unreportedIn === 0 && unreportedOut === 0) return
      if (Date.now() - lastReport >= METRIC_INTERVAL_MS) return reportMetrics()
      reportLater()
    }
    /** Reports what is counted by then in METRIC_INTERVAL_MS (one timer at a time). */
    const reportLater = () => {
      if (reportTimer !== undefined) return
      reportTimer = setTimeout(() => {
        reportTimer = undefined
        reportMetrics()
      }, METRIC_INTERVAL_MS)
      // the timer does not keep a Node process alive
      ;(reportTimer as { unref?: () => void }).unref?.()
    }
    const reportMetrics = () => {
      lastReport = Date.now()
      if (unreportedIn > 0) {
        metrics.messagesReceived.updateUnsafe(unreportedIn, context)
        metrics.bytesReceived.updateUnsafe(unreportedBytesIn, context)
        unreportedIn = unreportedBytesIn = 0
      }
      if (unreportedOut > 0) {
        metrics.messagesSent.updateUnsafe(unreportedOut, context)
        metrics.bytesSent.updateUnsafe(unreportedBytesOut, context)
        unreportedOut = unreportedBytesOut = 0
      }
    }
    const countIn = (size: number) => {
      stats.messagesIn++
      stats.bytesIn += size
      unreportedBytesIn += size
      // (also while the consumer holds the reader back: no wait for the network reports them then)
      if (++unreportedIn >= METRIC_BATCH) reportMetrics()
      else reportLater()
    }
    const countOut = (size: number) => {
      stats.messagesOut++
      stats.bytesOut += size
      unreportedBytesOut += size
      if (++unreportedOut >= METRIC_BATCH) reportMetrics()
      else reportLater()
    }
    /**
     * Completed once no data frame can go out any more (our Close is queued, or the connection
     * ended): a `sendFragments` that waits for its stream's next fragment stops waiting then, and
     * so do the sends queued behind its message. Made by the first `sendFragments`.
     */
    let dataEnded: Deferred.Deferred<void> | undefined = undefined
    const endData = () => {
      if (dataEnded !== undefined) Deferred.doneUnsafe(dataEnded, Exit.void)
    }
    const awaitDataEnded = Effect.suspend(() => {
      dataEnded ??= Deferred.makeUnsafe<void>()
      const open = (engine.state === HandleState.Open || engine.state === HandleState.CloseReceived) &&
        !Deferred.isDoneUnsafe(closedDeferred)
      if (!open) endData()
      return Deferred.await(dataEnded)
    })

    // The metrics are updated in the same step as `closed` completes: whoever waits for it may
    // close the connection's scope at once, and nothing after that step would run.
    const complete = (info: CloseInfo) =>
      Effect.sync(() => {
        if (Deferred.isDoneUnsafe(closedDeferred)) return
        if (reportTimer !== undefined) clearTimeout(reportTimer)
        reportTimer = undefined
        reportMetrics()
        metrics.connectionsOpen.modifyUnsafe(-1, context)
        Metrics.closedCounter(h.kind, info.code, info.clean).updateUnsafe(1, context)
        Deferred.doneUnsafe(closedDeferred, Exit.succeed(info))
        for (const listener of closeListeners.splice(0)) listener()
        // (last: what it wakes reads the connection as closed)
        endData()
      })

    /**
     * The flag and the start of the transport's close (or destroy) go together, uninterruptibly: a
     * fiber interrupted between them (the reader, by a close timeout) would leave the flag set and
     * the socket open. The close runs in a fiber of its own and only the wait for it can be
     * interrupted: a close that takes long (a transport that flushes first) must not hold the
     * close timeout, which interrupts the reader. A cut is not waited for at all: it is for a
     * peer given up on, and a transport without `destroy` cuts with a close that may take long.
     */
    const runTransportClose = (cut: boolean) =>
      Effect.uninterruptibleMask((restore) =>
        Effect.suspend(() => {
          if (!cut && transportClosed) return Effect.void
          transportClosed = true
          const close = cut ? transport.destroy ?? transport.close : transport.close
          const closing = Effect.forkDetach(close, { startImmediately: true })
          if (cut) return Effect.asVoid(closing)
          // Waited for within the close timeout, whatever becomes of it (a close that fails or
          // dies is the transport's business, not the connection's end); past it, cut
          return Effect.flatMap(closing, (fiber) =>
            restore(Effect.flatMap(Effect.timeoutOption(Fiber.await(fiber), closeTimeout), (done) =>
              Option.isSome(done) || transport.destroy === undefined
                ? Effect.void
                : Effect.asVoid(Effect.forkDetach(transport.destroy, { startImmediately: true })))))
        })
      )
    const closeTransport = runTransportClose(false)
    /** Closes the transport at once, dropping what is queued: for a peer given up on (close timeout, abort, dead peer). */
    const cutTransport = runTransportClose(true)

    /**
     * The wire lock: one holder runs the send queue at a time, the others wait in order. It can be
     * taken synchronously (`tryTakeWire`), so that a send finding the wire free runs without an
     * effect per frame and keeps the lock only if a write must wait.
     */
    let wireHeld = false
    const wireWaiters: Array<{ readonly resume: () => void; granted: boolean }> = []
    const tryTakeWire = (): boolean => {
      if (wireHeld) return false
      wireHeld = true
      return true
    }
    const releaseWire = () => {
      const next = wireWaiters.shift()
      if (next === undefined) {
        wireHeld = false
      } else {
        next.granted = true // the lock passes to the next waiter, still held
        next.resume()
      }
    }
    const releaseWireEffect = Effect.sync(releaseWire)
    /**
     * Runs `use(restore)` holding the wire lock. The lock is taken where nothing can interrupt (at
     * once when free), and only the wait for it can be interrupted; interrupted however late in
     * that wait (even once the lock was handed over), the waiter gives it back or leaves the queue.
     * Under the lock nothing can interrupt either, but what `use` wraps in `restore` (the waits of
     * the transport): so the handle's send queue is never left half-run.
     */
    const withWire = <A, E, R>(use: (restore: Restore) => Effect.Effect<A, E, R>): Effect.Effect<A, E, R> =>
      Effect.uninterruptibleMask((restore) =>
        Effect.suspend(() => {
          const holding = Effect.ensuring(Effect.suspend(() => use(restore)), releaseWireEffect)
          if (tryTakeWire()) return holding
          const waiter: { resume: () => void; granted: boolean } = { resume: () => {}, granted: false }
          const wait = Effect.callback<void>((resume) => {
            // tried again as the wait starts: the wire may have come free (the fiber may have yielded)
            if (tryTakeWire()) {
              waiter.granted = true
              return resume(Effect.void)
            }
            waiter.resume = () => resume(Effect.void)
            wireWaiters.push(waiter)
            return Effect.void // (interruptible: what the interruption undoes is done by `leave`)
          })
          const leave = Effect.sync(() => {
            if (waiter.granted) return releaseWire()
            const i = wireWaiters.indexOf(waiter)
            if (i >= 0) wireWaiters.splice(i, 1)
          })
          return Effect.andThen(Effect.onInterrupt(restore(wait), () => leave), holding)
        })
      )

    const buffersOf = (record: ActionRecord) =>
      record.bufferCount === 2 ? [record.buffer0, record.buffer1] : [record.buffer0]

    /** Writes the SendToNetwork action `id`, then runs the rest of the send queue (call under the wire lock). */
    const writeAction = (
      id: number,
      buffers: ReadonlyArray<Uint8Array>,
      bytes: number,
      owned: boolean,
      restore: Restore
    ): Effect.Effect<void, TransportError> => {
      // An interrupted write (only its wait for room can be) took nothing: cancel it on the handle.
      const write = Effect.onInterrupt(restore(guardedWrite(buffers, owned)), () =>
        Effect.andThen(
          Effect.sync(() => engine.completeSendAction(id, 0)),
          drainSendQueue
        ))
      return Effect.matchEffect(write, {
        onFailure: (error) => writeFailed(id, error),
        onSuccess: () => {
          writesTaken++
          engine.completeSendAction(id, bytes)
          return runSendQueue(restore)
        }
      })
    }

    /**
     * The transport's `write`, a throw or a defect of it (a broken wrapper, a hook of
     * `Transport.tap`) made a failed write, as a throwing read is a failed read.
     */
    const guardedWrite = (buffers: ReadonlyArray<Uint8Array>, owned: boolean): Effect.Effect<void, TransportError> =>
      Effect.catchCauseIf(
        Effect.suspend(() => transport.write(buffers, owned)),
        (cause) => !Cause.hasInterruptsOnly(cause),
        (cause) => Effect.fail(transportFailure(cause, "write"))
      )

    /** The write of SendToNetwork action `id` failed: the send is cancelled and the transport lost. */
    const writeFailed = (id: number, error: TransportError): Effect.Effect<never, TransportError> => {
      engine.completeSendAction(id, 0) // cancels the send: the frame is incomplete on the wire
      return Effect.andThen(Effect.andThen(drainSendQueue, lostTransport(error)), Effect.fail(error))
    }

    /** What became of the latest send queued on the handle (under the wire lock, one at a time). */
    let sendResult = SEND_PENDING
    /** Queues a send whose completion counts `messageBytes` as a message sent (`undefined`: not a message end). */
    const queueSend = (type: number, payload: Uint8Array | undefined, closeStatus: number | undefined, messageBytes: number | undefined) => {
      sendResult = SEND_PENDING
      const status = engine.send(type, payload, closeStatus, messageBytes)
      if (type === BufferType.BufferType.Close && status === Status.Ok) endData()
      return status
    }

    /**
     * The outcome of the send just run (ask while holding the wire): done when it went out whole; an
     * `InvalidProtocolOperation` when it was cut (the handle aborted or deleted while it was written,
     * or the caller's payload detached or shrunk meanwhile).
     */
    const sendOutcome = (): Effect.Effect<void, InvalidProtocolOperation> =>
      sendResult === SEND_WRITTEN
        ? Effect.void
        : sendResult === SEND_CANCELLED
        ? Effect.fail(
          new InvalidProtocolOperation({
            operation: "send",
            state: engine.stateName,
            message: closedMessage(
              "the send was cancelled: the handle was aborted or deleted while it was being written, or the payload's memory was detached or shrunk meanwhile"
            )
          })
        )
        : Effect.die(new Error("the send queue stopped before the send completed"))
    /** {@link sendOutcome} once the send queue has run. */
    const afterSend = Effect.suspend(sendOutcome)

    /**
     * Runs the send queue without yielding while the transport takes every write at once; returns
     * `undefined` when the queue is done, or the effect that finishes it once a write must wait.
     */
    const runSendQueueSync = (restore: Restore): Effect.Effect<void, TransportError> | undefined => {
      const record = sendRecord
      for (;;) {
        if (engine.getAction(QueueCode.Send, record) !== Status.Ok) {
          // the handle can go no further (deleted while a write was on its way): the send is cut
          sendResult = SEND_CANCELLED
          return undefined
        }
        switch (record.action) {
          case ActionCode.SendToNetwork: {
            const buffers = buffersOf(record)
            const bytes = record.bufferCount === 2 ? record.buffer0.length + record.buffer1.length : record.buffer0.length
            if (transport.tryWrite !== undefined) {
              let taken: boolean
              try {
                taken = transport.tryWrite(buffers, record.owned)
              } catch (cause) {
                return writeFailed(record.id, operationFailed("write", cause))
              }
              if (taken) {
                writesTaken++
                engine.completeSendAction(record.id, bytes)
                continue
              }
            }
            return writeAction(record.id, buffers, bytes, record.owned, restore)
          }
          case ActionCode.IndicateSendComplete: {
            // The send that holds the wire is done, in this step: a message is counted here, and
            // what the queue holds after it (a pong queued meanwhile) is not part of it; whoever
            // queued that writes it once the wire is theirs (the reader, see `flushPong`).
            const messageBytes = record.context as number | undefined
            sendResult = engine.sendWritten ? SEND_WRITTEN : SEND_CANCELLED
            engine.completeSendAction(record.id, 0)
            if (sendResult === SEND_WRITTEN && messageBytes !== undefined) countOut(messageBytes)
            return undefined
          }
          default:
            return undefined
        }
      }
    }

    /** Hands every pending SendToNetwork of the send queue to the transport (call under the wire lock). */
    const runSendQueue = (restore: Restore): Effect.Effect<void, TransportError> =>
      Effect.suspend(() => runSendQueueSync(restore) ?? Effect.void)

    /**
     * Completes what is left of the send whose write was cut, without writing it, up to its
     * IndicateSendComplete (a pong queued after it stays for whoever queued it).
     */
    const drainSendQueue = Effect.sync(() => {
      for (let i = 0; i < 8; i++) {
        engine.getAction(QueueCode.Send, sendRecord)
        if (sendRecord.action === ActionCode.NoAction) return
        engine.completeSendAction(sendRecord.id, 0)
        if (sendRecord.action === ActionCode.IndicateSendComplete) return
      }
    })

    /**
     * Queues one frame on the handle and writes it out; the frame that ends a message counts it as
     * sent (`messageBytes`), in the step that completes it (so that an interruption cannot skip it).
     */
    const sendFrame = (
      type: number,
      payload: Uint8Array | undefined,
      closeStatus: number | undefined,
      messageBytes?: number
    ): Effect.Effect<void, InvalidProtocolOperation | InvalidParameter | TransportError> =>
      withWire((restore): Effect.Effect<void, InvalidProtocolOperation | InvalidParameter | TransportError> => {
        if (queueSend(type, payload, closeStatus, messageBytes) !== Status.Ok) {
          const error = engine.lastError!
          return Effect.fail(
            error.status === Status.InvalidParameter
              ? new InvalidParameter({ parameter: type === BufferType.BufferType.Close ? "close" : "payload", message: error.message })
              : new InvalidProtocolOperation({ operation: "send", state: engine.stateName, message: closedMessage(error.message) })
          )
        }
        return Effect.andThen(runSendQueue(restore), afterSend)
      })

    const closedMessage = (message: string) =>
      Deferred.isDoneUnsafe(closedDeferred) ? "the connection is closed" : message

    const flushPong = Effect.suspend(() => (engine.pongWaiting ? withWire(runSendQueue) : Effect.void))

    const finish = (info: CloseInfo, error?: ConnectionError) =>
      Effect.gen(function*() {
        if (error === undefined) mailbox.end()
        else mailbox.fail(error)
        yield* complete(info)
      })

    /** Who sent the first Close, as ours is about to go: the peer, when its Close came already. */
    const firstClose = (): CloseInfo["initiator"] => engine.state === HandleState.CloseReceived ? "remote" : "local"

    /**
     * Sends our Close with `code` (bounded by the close timeout) if one may still go, then ends the
     * connection without waiting for an answer, reporting `reportedCode` and `reason`.
     */
    const closeUnanswered = (code: number, reportedCode: number, reason: string, error?: ConnectionError) =>
      Effect.gen(function*() {
        if (engine.state === HandleState.Open || engine.state === HandleState.CloseReceived) {
          if (initiator === "none") initiator = firstClose()
          yield* Effect.ignore(Effect.timeout(sendFrame(BufferType.BufferType.Close, undefined, closeStatusOnWire(code)), closeTimeout))
        }
        engine.abort()
        yield* closeTransport
        yield* finish({ code: reportedCode, reason, clean: false, initiator }, error)
      })

    /** The peer broke the protocol: send the close code it earned, cut the transport, fail. */
    const failProtocol = (error: InvalidProtocolFormat | InvalidProtocolOperation) =>
      Effect.gen(function*() {
        const code = error.closeStatus ?? 1002
        // the messages that came before the broken frame are handled first, as with a Close
        if (engine.state === HandleState.Open || engine.state === HandleState.CloseReceived) yield* awaitConsumerIdle
        yield* closeUnanswered(code, code, error.message, error)
      })

    const failTransport = (error: TransportError) =>
      Effect.gen(function*() {
        engine.abort()
        yield* closeTransport
        yield* finish({ code: 1006, reason: error.message, clean: false, initiator }, error)
      })

    /**
     * A write failed while the connection was open: the peer is gone. The connection ends (1006)
     * though the reader may not see it: it reads nothing while the consumer is behind (a handler
     * that sends and never takes its messages), and a paused socket reports no end. So the reader is
     * told (and woken if it waits for the consumer): it keeps the messages it holds beyond the
     * message buffer, takes what the transport still holds without waiting for more (what came
     * before the failure is not dropped, and comes before it), then ends the connection. A reader
     * waiting for the network is stopped and the connection ended by a fiber of its own: it holds
     * nothing then, and a transport whose writes fail may go on waiting for reads (sockets and
     * memory pairs end them, a transport that fails its writes on its own need not). Once a Close
     * went either way, the closing handshake ends the connection (within the close timeout), and
     * once the reader is ending it (a broken frame, the end of the transport), the reader does,
     * with what it found.
     */
    const lostTransport = (error: TransportError) =>
      Effect.suspend(() => {
        if (lost !== undefined || Deferred.isDoneUnsafe(closedDeferred) || engine.state !== HandleState.Open) return Effect.void
        lost = error
        wake()
        if (!readingNetwork) return Effect.void
        // (whole or not at all; in the connection's scope, so that no fiber outlives it)
        return Effect.asVoid(Effect.forkIn(
          Effect.uninterruptible(Effect.gen(function*() {
            // (looked at again: the read may have completed meanwhile, and the reader then sees
            // `lost` itself, before it reads again)
            if (!readingNetwork || Deferred.isDoneUnsafe(closedDeferred)) return
            yield* Fiber.interrupt(reader)
            yield* failTransport(error)
          })),
          connectionScope
        ))
      })

    /** Reads, and drops, what the peer still sends until it ends its side (once the reader is done). */
    const readUntilPeerEnd = Effect.suspend(() => {
      const scratch = new Uint8Array(1024)
      const loop: Effect.Effect<void, TransportError> = Effect.flatMap(
        transport.read(scratch),
        (n) => (n === 0 ? Effect.void : loop)
      )
      return loop
    })

    /**
     * The client waits (for at most {@link serverEndGrace}) for the server to end the transport
     * first (RFC 6455 section 7.1.1: the client SHOULD wait for the server to close, and MAY close
     * at any time after both Close frames).
     */
    const awaitTransportEnd = Effect.ignore(Effect.timeout(readUntilPeerEnd, serverEndGrace))

    /**
     * Waits (at most a second) until the application has handled the messages that arrived before
     * the peer's Close, a broken frame or the end of the peer's side: its consumer asks for the
     * next message with none left. An echo handler then answers every message before our Close
     * goes out, as with `ws`, where messages are handled before the frame behind them is parsed.
     */
    const awaitConsumerIdle = Effect.suspend(() => {
      if (consumerIsIdle()) return Effect.void
      const idle = Deferred.makeUnsafe<void>()
      consumerIdle = idle
      return Effect.ignore(Effect.timeout(Deferred.await(idle), consumerGrace))
    })

    /** How the closing handshake ended once both Close frames went, while the transport's end may still be awaited. */
    let answered: CloseInfo | undefined = undefined

    const onPeerClose = (code: number, reason: string) =>
      Effect.gen(function*() {
        let clean = true
        /** Whether our answer could not go out within the close timeout (a peer that reads nothing). */
        let unanswered = false
        // (the peer's Close came first, whoever sends the answer: a `close` made while the answer
        // waits for the consumer sends it, and the peer still started the closing handshake)
        if (engine.state === HandleState.CloseReceived) {
          initiator = "remote"
          yield* awaitConsumerIdle
        }
        if (engine.state === HandleState.CloseReceived) {
          // "If an endpoint receives a Close frame and did not previously send a Close frame, the
          // endpoint MUST send a Close frame in response" (echoing the code and reason it received);
          // bounded by the close timeout, as `ws`'s answer is: a send may hold the wire, waiting
          // for a peer that reads nothing (frozen) and that keepalive no longer watches
          const echoed = yield* Effect.exit(Effect.timeoutOption(
            sendFrame(BufferType.BufferType.Close, code === EMPTY_CLOSE ? undefined : encodeUtf8(reason), closeStatusOnWire(code)),
            closeTimeout
          ))
          unanswered = echoed._tag === "Success" && Option.isNone(echoed.value)
          clean = echoed._tag === "Success" && !unanswered
        }
        answered = { code, reason, clean, initiator }
        mailbox.end()
        if (unanswered) yield* cutTransport
        else if (h.kind === "client") yield* awaitTransportEnd
        yield* closeTransport
        yield* complete({ code, reason, clean, initiator })
      })

    /** The message being assembled from several chunks; sized from the previous one, doubled when too small (up to maxMessageSize). */
    let accumulator = NO_BYTES
    let accumulated = 0
    let sizeHint = 0
    /**
     * Whether the pending receive was given the accumulator (from `accumulated` on): its data then
     * arrives in place there. (Micro-optimisation: cheaper than comparing `buffer`s, a getter.)
     */
    let receivingInPlace = false
    /**
     * The room after the assembled part of the message to receive the rest into, when it can hold
     * a control frame's payload too (a Pong or a Close arriving meanwhile is copied there);
     * `undefined` otherwise, and chunks come through the handle's buffer. (Micro-optimisation: at
     * most a chunk, the receive buffer size, which the handle then fills and hands back as it is,
     * with no view of its own.)
     */
    const accumulatorTail = (): Uint8Array | undefined =>
      accumulator.length - accumulated < 128
        ? undefined
        : accumulator.subarray(accumulated, accumulated + engine.receiveBufferSize)
    /**
     * When messages are large (the last one was from 8 KiB to 1 MiB), the buffer to receive the
     * next one into from its start: the handle then reads the header on its own and binary payload
     * goes straight into it. `undefined` otherwise: the buffer is made before the next message shows
     * its size, and one larger than the retained size would stay with a connection gone quiet.
     */
    const messageStart = (): Uint8Array | undefined => {
      if (sizeHint < DIRECT_MESSAGE_SIZE || sizeHint > RETAINED_ACCUMULATOR) return undefined
      if (accumulator.length < sizeHint) accumulator = allocatePlainUninitialized(sizeHint)
      return accumulator
    }
    const append = (view: Uint8Array) => {
      const need = accumulated + view.length
      if (receivingInPlace) {
        accumulated = need // received in place
        return
      }
      if (need > accumulator.length) {
        // doubled, but never past the largest message the handle lets through
        let capacity = accumulated === 0 && sizeHint >= need ? sizeHint : Math.min(2 * accumulator.length, engine.maxMessageSize)
        if (capacity < need) capacity = need
        const grown = allocatePlainUninitialized(capacity)
        if (accumulated > 0) grown.set(accumulator.subarray(0, accumulated))
        accumulator = grown
      }
      accumulator.set(view, accumulated)
      accumulated = need
    }
    /** The received message that `record` completes: text decoded, binary copied out of the handle's buffer. */
    const deliver = (record: ActionRecord): Message => {
      const type = record.bufferType
      const view = record.buffer0
      const text = type === BufferType.BufferType.Utf8Message || type === BufferType.BufferType.Utf8Fragment
      let message: Message
      if (accumulated === 0) {
        sizeHint = view.length
        if (receivingInPlace) {
          // received into the message buffer (see messageStart)
          if (text) {
            message = decodeUtf8(view)
          } else if (accumulator.length > 2 * view.length) {
            message = view.slice()
          } else {
            message = view
            accumulator = NO_BYTES
          }
        } else {
          message = text ? decodeUtf8(view) : copyOut(view)
        }
      } else {
        append(view)
        const joined = accumulator.length === accumulated ? accumulator : accumulator.subarray(0, accumulated)
        sizeHint = accumulated
        if (text) {
          message = decodeUtf8(joined)
          // the accumulator stays for the next message, unless it is large
          if (accumulator.length > RETAINED_ACCUMULATOR) accumulator = NO_BYTES
        } else {
          // the message takes the accumulator; a copy when more than half of it would be slack
          message = accumulator.length > 2 * accumulated ? joined.slice() : joined
          accumulator = NO_BYTES
        }
        accumulated = 0
      }
      return message
    }

    /** Whether a fiber writes the automatic pongs the reader queued (see `writePongs`). */
    let writingPongs = false
    /** The writer is done: the next pongs are waited for again (see `readStep`). */
    const pongWriterDone = () => {
      writingPongs = false
      engine.coalescePongs = false
    }
    const writePongs: Effect.Effect<void> = Effect.gen(function*() {
      for (let i = 0; i < 1000 && engine.pongWaiting; i++) {
        const flushed = yield* Effect.exit(flushPong)
        if (flushed._tag === "Failure") {
          pongWriterDone()
          const error = Cause.findErrorOption(flushed.cause)
          if (Option.isNone(error) || Deferred.isDoneUnsafe(closedDeferred) || lost !== undefined) return
          return yield* Effect.andThen(Fiber.interrupt(reader), failTransport(error.value))
        }
      }
      pongWriterDone() // (in the same step as the last look at `pongWaiting`)
    })

    /**
     * The message the reader read and counted but could not hand over yet (the consumer is behind),
     * from its first refused offer until it is offered or dropped.
     */
    let held: Message | undefined = undefined
    /** Whether a message was dropped because the consumer closes (see `dropping`): those after it are too. */
    let droppedOne = false
    /**
     * The reader stopped (an abort, a dead peer, the close timeout): the message it held still
     * reaches the consumer, ahead of the end, unless it is dropped (see `dropping`). Done as the
     * reader ends, not around its wait: it may be stopped once woken, before it offered the message
     * again.
     */
    const readerStopped = Effect.sync(() => {
      readingNetwork = false
      const message = held
      held = undefined
      if (message !== undefined && !dropping()) mailbox.offerBeyondCapacity(message)
    })

    /** Whether the reader ever ran (it does not when the connection's scope was closed already). */
    let readerRan = false
    // The reader is a loop of synchronous steps (`readStep`) and of what only its fiber can do
    // (wait, fork, fail, close). While it waits for the network, a transport with `whenReadable`
    // runs the steps itself as bytes arrive (`onReadable`), and the fiber is woken only when a step
    // stops on something else: the usual message costs no fiber wake-up.
    const readRecord = new ActionRecord()
    /** Whether the handle has a receive queued for the next message or chunk. */
    let receiveQueued = false
    /** Whether `readRecord` holds an action of `getAction` not handled yet (and its status). */
    let actionTaken = false
    let actionStatus: Status = Status.Ok
    /** The outstanding ReceiveFromNetwork: its action id (0: none) and buffer. */
    let readId = 0
    let readBuffer: Uint8Array = new Uint8Array(0)
    /** Reads completed: whether a step woken by the transport found bytes. */
    let readsDone = 0
    /** The peer's Close (or 1006, the end without one) that a step stopped on. */
    let peerCloseCode = 0
    let peerCloseReason = ""
    /**
     * One step of the reader, as far as it goes without an effect: bytes already there are read,
     * frames handled, messages handed to the consumer. Returns why it stopped (`STEP_*`).
     */
    const readStep = (): number => {
      const record = readRecord
      for (;;) {
        if (!receiveQueued) {
          // The rest of a message that came in several chunks is received straight into its buffer
          // (the websocket.h receive with an application buffer): binary payload then skips the
          // handle's receive buffer.
          const into = accumulated === 0 ? messageStart() : accumulatorTail()
          receivingInPlace = into !== undefined
          if (engine.receive(into, undefined) !== Status.Ok) return STEP_END
          receiveQueued = true
        }
        if (readId !== 0) {
          // Micro-optimisation: bytes already there are taken without an effect; a masked payload
          // read straight into a message's buffer is unmasked as the transport copies it.
          const tryRead = transport.tryRead
          const copy = engine.copyForRead
          const n = tryRead === undefined
            ? -1
            : copy !== undefined && tryRead.withCopy !== undefined
            ? tryRead.withCopy(readBuffer, copy)
            : tryRead(readBuffer)
          if (n === -1) return lost !== undefined ? STEP_LOST : STEP_READ
          stepFailure = badReadCount("tryRead", n, readBuffer.length)
          if (stepFailure !== undefined) return STEP_THREW
          completeRead(n)
        }
        if (!actionTaken) {
          actionStatus = engine.getAction(QueueCode.Receive, record)
          actionTaken = true
          // (written by a fiber of its own: the reader waiting for the wire would stop reading, and a
          // send that holds the wire may wait for a peer that reads nothing until its own send is done)
          if (engine.pongWaiting && !writingPongs) {
            idleActions = 0
            return STEP_PONGS
          }
        }
        actionTaken = false
        if (actionStatus !== Status.Ok) return STEP_FAILED
        if (record.action === ActionCode.ReceiveFromNetwork) {
          readId = record.id
          readBuffer = record.buffer0
          continue
        }
        // As many pongs wait as may: the handle parses on once they are written (the receive stays
        // queued). Their writer, started above, wrote them at once unless it waits for the wire or
        // the transport (a peer that reads nothing): then later pings share the last place, and
        // reading goes on.
        if (record.action === ActionCode.NoAction) {
          if (engine.pongsBlockReading) {
            if (!writingPongs) return STEP_PONGS
            engine.coalescePongs = true
            continue
          }
          // (the pongs were written meanwhile: the handle parses on; twice in a row without pongs
          // to write would be a loop never left)
          if (++idleActions > 1) {
            stepFailure = new TransportError({ message: "the handle handed out no receive action twice in a row" })
            return STEP_THREW
          }
          continue
        }
        idleActions = 0
        receiveQueued = false
        if (record.action !== ActionCode.IndicateReceiveComplete) continue
        const type = record.bufferType
        if (BufferType.isData(type)) {
          if (!BufferType.isMessageEnd(type)) {
            append(record.buffer0)
            engine.completeReceiveAction(record.id, 0)
            continue
          }
          const size = accumulated + record.buffer0.length
          const message = deliver(record)
          engine.completeReceiveAction(record.id, 0)
          countIn(size)
          if (droppedOne || !mailbox.offer(message)) {
            held = message
            return STEP_HELD
          }
          continue
        }
        if (type === BufferType.BufferType.PingPong) {
          stats.pongsIn++
          engine.completeReceiveAction(record.id, 0)
          continue
        }
        // Close: the peer's, or 1006 when the transport ended without one
        peerCloseCode = record.closeStatus
        peerCloseReason = peerCloseCode === 1006 ? "" : decodeUtf8(record.buffer0)
        engine.completeReceiveAction(record.id, 0)
        return STEP_CLOSE
      }
    }
    /** How many times in a row the receive queue handed out no action (see `readStep`). */
    let idleActions = 0
    /** What the last step threw, as the transport's failure (see `STEP_THREW`). */
    let stepFailure: TransportError | undefined = undefined
    /** {@link readStep}, with what it throws kept as a failed read: the fiber then ends the connection (1006). */
    const safeReadStep = (): number => {
      try {
        return readStep()
      } catch (cause) {
        stepFailure = operationFailed("read", cause)
        return STEP_THREW
      }
    }
    /** Completes the outstanding read with the `n` bytes it got (0: the end). */
    const completeRead = (n: number) => {
      const id = readId
      readId = 0
      readsDone++
      if (n > 0) activity++
      engine.completeReceiveAction(id, n)
    }
    /** Resumes the reader waiting for the network, while it waits (see `awaitReadable`). */
    let readableResume: ((outcome: Effect.Effect<number>) => void) | undefined = undefined
    /**
     * Called by the transport once bytes (or the end, or a failure) arrived while the reader waits:
     * the steps run here, and the fiber is woken only when one stops on something else than more
     * bytes to wait for, or when the transport woke it with none (a failure: `read` reports it).
     */
    const onReadable = () => {
      if (readableResume === undefined) return
      // Called again from within (the transport calls at once when bytes came meanwhile: a memory
      // peer's writer, woken by the room a step made, wrote more): the loop below goes on instead.
      if (stepping) {
        readableAgain = true
        return
      }
      stepping = true
      try {
        for (;;) {
          const before = readsDone
          const step = safeReadStep()
          // (looked at again: the step may have run other fibers, a memory peer's writer woken by
          // the room it made, and one of them may have stopped the reader meanwhile)
          const resume = readableResume
          if (resume === undefined) return
          if (step === STEP_READ && readsDone !== before) {
            reportWhileWaiting()
            readableAgain = false
            transport.whenReadable!(onReadable)
            if (readableAgain) continue
            return
          }
          readableResume = undefined
          stepping = false // (the fiber runs inside `resume`, and may wait for the network again)
          return resume(STEP_OUTCOMES[step]!)
        }
      } finally {
        stepping = false
      }
    }
    /** Whether `onReadable` is running, and whether it was called again meanwhile. */
    let stepping = false
    let readableAgain = false
    /** Waits until a step stops on something the fiber must do (made once: see `Mailbox.taking`). */
    const awaitReadable = Effect.callback<number>((resume) => {
      readableResume = resume
      transport.whenReadable!(onReadable)
      return stopAwaitingReadable
    })
    const stopAwaitingReadable = Effect.sync(() => {
      readableResume = undefined
      transport.whenReadable!(undefined)
    })

    const readLoop = Effect.gen(function*() {
      readerRan = true
      let step = safeReadStep()
      for (;;) {
        switch (step) {
          case STEP_READ: {
            reportWhileWaiting()
            readingNetwork = true
            if (transport.whenReadable !== undefined) {
              step = yield* awaitReadable
              readingNetwork = false
              // woken without bytes (a failure, a transport without `tryRead`, an early call):
              // `read` says what happened
              if (step !== STEP_READ) continue
              readingNetwork = true
            }
            // (a `read` that throws, dies or fails otherwise than its type says fails the transport)
            const read = yield* Effect.exit(Effect.suspend(() => transport.read(readBuffer)))
            readingNetwork = false
            if (read._tag === "Failure") {
              completeRead(0)
              return yield* failTransport(transportFailure(read.cause, "read"))
            }
            const badCount = badReadCount("read", read.value, readBuffer.length)
            if (badCount !== undefined) {
              completeRead(0)
              return yield* failTransport(badCount)
            }
            completeRead(read.value)
            break
          }
          case STEP_LOST:
            // a write found the transport broken: what it held was read, and no more is coming
            completeRead(0)
            return yield* failTransport(lost!)
          case STEP_PONGS:
            writingPongs = true // (before the fork: the writer may be done before it returns)
            yield* Effect.forkScoped(writePongs, { startImmediately: true })
            break
          case STEP_FAILED:
            return yield* failProtocol(engineError(engine, "getAction", "queue") as InvalidProtocolFormat | InvalidProtocolOperation)
          case STEP_HELD: {
            // The consumer is behind: wait (reading stops, so the peer is slowed by the transport),
            // unless we are closing and no stream consumes (see `dropping`): then the peer's Close
            // reply must get through, and messages nobody reads are dropped. Once the transport
            // broke (see `lostTransport`), there is no one left to slow down: the message is kept
            // beyond the buffer.
            const message = held!
            for (;;) {
              if (dropping()) {
                // (and, for a consumer that closes, so are the later ones: what it gets after its
                // close stays a run without gaps)
                if (closedByConsumer) droppedOne = true
                break
              }
              if (mailbox.isDone) return
              if (mailbox.offer(message)) break
              if (lost !== undefined) {
                mailbox.offerBeyondCapacity(message)
                break
              }
              waitingForConsumer = true
              yield* Effect.callback<void>((resume) => {
                // (looked at again as the wait starts: the fiber may have yielded since, and the
                // wake-up found no one waiting: a failed write, a local close, or a consumer that
                // took the messages meanwhile, down to where reading resumes, and then waits)
                if (lost !== undefined || dropping() || mailbox.size <= resumeReadingAt) {
                  return resume(Effect.void)
                }
                wakeReader = () => resume(Effect.void)
                return Effect.sync(() => {
                  wakeReader = undefined
                })
              }).pipe(Effect.ensuring(Effect.sync(() => {
                waitingForConsumer = false
                activity++ // the peer's answer may be waiting unread meanwhile
              })))
            }
            held = undefined
            break
          }
          case STEP_CLOSE: {
            if (peerCloseCode === 1006) {
              // The peer ended its side without a Close; it may still read (a half-closed TCP
              // connection): the application handles what came before, as with a Close.
              if (engine.state === HandleState.Open) yield* awaitConsumerIdle
              return yield* failTransport(
                new TransportError({ message: "the connection ended without a Close frame (1006)" })
              )
            }
            return yield* onPeerClose(peerCloseCode, peerCloseReason)
          }
          case STEP_THREW:
            return yield* failTransport(stepFailure!)
          default: // STEP_END
            return
        }
        step = safeReadStep()
      }
    })

    const reader = yield* Effect.forkScoped(Effect.onInterrupt(readLoop, () => readerStopped))

    /**
     * The closing handshake started by the first `close`: once asked for, the Close goes out and
     * the close timeout applies whether or not the caller keeps waiting (as `ws`'s `close`, which
     * cannot be taken back); a caller that is interrupted only stops waiting.
     */
    let closingHandshake: Fiber.Fiber<CloseInfo> | undefined = undefined

    /**
     * Whether the transport still works: no write failed, it was not closed, and the handle was not
     * aborted. A Close the handle refuses then is refused because a frame of ours was only partly
     * written (an interrupted send): the framing is broken, not the transport.
     */
    const transportIntact = () =>
      lost === undefined && !transportClosed && !Deferred.isDoneUnsafe(closedDeferred) &&
      (engine.state === HandleState.Open || engine.state === HandleState.CloseReceived)

    /**
     * Ends the connection whose Close cannot be written because a frame of ours was only partly
     * written, over a transport that works: the transport still holds earlier messages whose sends
     * reported success (a socket's buffer), and a cut would drop them. So the reader stops, our side
     * is ended (what was written goes out first, then the end), and what the peer still sends is
     * dropped until it ends its side; `true` once it has (the transport may then be closed
     * gracefully). The caller bounds the wait by the close timeout, and cuts the transport after it.
     */
    const endWithoutClose: Effect.Effect<boolean> = Effect.gen(function*() {
      yield* Effect.uninterruptible(Effect.suspend(() => {
        engine.abort()
        return Fiber.interrupt(reader)
      }))
      const ended = yield* Effect.exit(Effect.andThen(transport.end, readUntilPeerEnd))
      return Exit.isSuccess(ended)
    })

    /**
     * Whether our Close was refused because another went out while it waited for the wire (the
     * answer to the peer's Close, or the Close that fails the connection): the closing handshake is
     * then that one's, and ours is not needed.
     */
    const anotherCloseSent = (cause: Cause.Cause<unknown>): boolean => {
      const error = Cause.findErrorOption(cause)
      return Option.isSome(error) && Predicate.isTagged(error.value, "InvalidProtocolOperation") &&
        (engine.state === HandleState.CloseSent || engine.state === HandleState.Closed)
    }

    const runClosingHandshake = (code: number, reason: Uint8Array): Effect.Effect<CloseInfo> =>
      Effect.gen(function*() {
        /** Why our Close is not on the wire: not written yet (""), could not be (why), or it is (`undefined`). */
        let unsent: string | undefined = ""
        /** Whether the peer ended its side after ours was ended without a Close (see `endWithoutClose`). */
        let peerEnded = false
        const handshake = Effect.gen(function*() {
          if (!Deferred.isDoneUnsafe(closedDeferred) && (engine.state === HandleState.Open || engine.state === HandleState.CloseReceived)) {
            if (initiator === "none") initiator = firstClose()
            yield* Deferred.succeed(closing, undefined)
            wake()
            // a control frame: it may go out between the fragments of a message (RFC 6455 section 5.4)
            const sent = yield* Effect.exit(sendFrame(BufferType.BufferType.Close, reason, closeStatusOnWire(code)))
            if (sent._tag === "Failure" && !anotherCloseSent(sent.cause)) {
              // the Close could not be written (the wire is broken): no answer can come
              const error = Cause.findErrorOption(sent.cause)
              unsent = Option.isSome(error) ? error.value.message : "interrupted"
              if (Option.isSome(error) && error.value._tag === "InvalidProtocolOperation" && transportIntact()) {
                peerEnded = yield* endWithoutClose
              }
              return Option.none<CloseInfo>()
            }
          }
          unsent = undefined
          return Option.some(yield* Deferred.await(closedDeferred))
        })
        // the timeout also bounds the wait for a send in progress (a peer that stopped reading)
        const info = Option.flatten(yield* Effect.timeoutOption(handshake, closeTimeout))
        if (Option.isSome(info)) return info.value
        // The peer never answered: cut it off. Or it did, and only the end of its side is late:
        // the closing handshake is complete all the same.
        // (the reader stops first: it would take the end of the transport for the peer's doing)
        yield* Effect.uninterruptible(Effect.gen(function*() {
          // (looked at before the reader stops: a reader waiting for the consumer may have the answer unread)
          const unread = waitingForConsumer
          engine.abort()
          yield* Fiber.interrupt(reader)
          yield* (answered === undefined && !peerEnded ? cutTransport : closeTransport)
          yield* finish(
            answered ?? {
              code: 1006,
              reason: unsent === undefined
                ? unread
                  ? "the messages were not taken in time: the peer's answer to the Close was not read"
                  : "the peer did not answer the Close in time"
                : unsent === ""
                ? "the Close could not be sent in time (the peer does not read)"
                : `the Close could not be sent: ${unsent}`,
              clean: false,
              initiator
            }
          )
        }))
        return yield* Deferred.await(closedDeferred)
      })

    const close = (code = 1000, reason = ""): Effect.Effect<CloseInfo, InvalidParameter> =>
      Effect.gen(function*() {
        if (typeof reason !== "string") {
          return yield* new InvalidParameter({ parameter: "reason", message: `a close reason is a string, got ${describeValue(reason)}` })
        }
        // checked here (by the handle's own rule), so that a bad code or reason leaves the
        // connection as it was
        const reasonBytes = encodeUtf8(reason)
        const problem = code === EMPTY_CLOSE
          ? reasonBytes.length > 0 ? `close status ${EMPTY_CLOSE} sends an empty Close, which has no room for a reason` : undefined
          : closeFrameProblem(code, reasonBytes)
        if (problem !== undefined) return yield* new InvalidParameter({ parameter: "close", message: problem })
        // (the consumer, between two pulls: it waits for this close, not for a message)
        if (consumers === 1 && mailbox.waiting === 0 && lastTaker !== undefined && lastTaker === Fiber.getCurrent()) {
          closedByConsumer = true
        }
        if (closingHandshake === undefined) closingHandshake = yield* Effect.forkDetach(runClosingHandshake(code, reasonBytes))
        return yield* Fiber.join(closingHandshake)
      })

    // (whole or not at all: interrupted half-way it would leave a connection that looks open)
    const abort = Effect.uninterruptible(Effect.gen(function*() {
      engine.abort()
      yield* Fiber.interrupt(reader)
      yield* cutTransport
      yield* finish({ code: 1006, reason: "aborted", clean: false, initiator }, new TransportError({ message: "the connection was aborted" }))
    }))

    /** Why a data send fails once a message was left open: that message, or our Close when it went out since. */
    const messageLeftOpenError = (operation: string) =>
      new InvalidProtocolOperation({
        operation,
        state: engine.stateName,
        message: closedMessage(
          engine.state === HandleState.CloseSent || engine.state === HandleState.Closed
            ? `${operation} is not allowed: a Close was already sent, only control frames may follow`
            : `${operation} is not allowed: an earlier fragmented message was left incomplete`
        )
      })

    /** Whether `sendFragments` has a message open: other data frames must wait for `messageLock`. */
    let fragmenting = false
    const resetFragmenting = Effect.sync(() => {
      fragmenting = false
    })

    /**
     * Sends a whole message at once when the wire is free and no fragmented message is open
     * (micro-optimisation: the wire lock only, no effect when the transport takes the frame at once;
     * a write that must wait keeps the lock longer); `undefined` otherwise. Call it masked.
     */
    const sendWholeNow = (
      type: number,
      payload: Uint8Array,
      restore: Restore
    ): Effect.Effect<void, InvalidProtocolOperation | TransportError> | undefined => {
      if (fragmenting || messageLeftOpen || waitingBehindMessage > 0 || !tryTakeWire()) return undefined
      if (queueSend(type, payload, undefined, payload.length) !== Status.Ok) {
        releaseWire()
        return Effect.fail(
          new InvalidProtocolOperation({ operation: "send", state: engine.stateName, message: closedMessage(engine.lastError!.message) })
        )
      }
      const rest = runSendQueueSync(restore)
      if (rest === undefined) {
        // (asked before the wire goes: the next holder may run at once, inside `releaseWire`, and
        // queue a send of its own)
        const outcome = sendOutcome()
        releaseWire()
        return outcome
      }
      // (only the transport's waits in `rest` can be interrupted)
      return Effect.ensuring(
        Effect.andThen(rest, afterSend),
        releaseWireEffect
      )
    }

    /**
     * How many sends wait for a fragmented message to end (for `messageLock`): a send that comes
     * later goes after them, as sends go out in the order they were made.
     */
    let waitingBehindMessage = 0

    /**
     * A whole message under the wire lock; `false` when it must wait behind a fragmented message
     * (see `waitingBehindMessage`; `behindMessage`: it is the one that waited).
     */
    const sendWholeLocked = (type: number, payload: Uint8Array, behindMessage = false) =>
      withWire((restore): Effect.Effect<boolean, InvalidProtocolOperation | TransportError> => {
        if (fragmenting || (waitingBehindMessage > 0 && !behindMessage)) return Effect.succeed(false)
        if (messageLeftOpen) return Effect.fail(messageLeftOpenError("send"))
        if (queueSend(type, payload, undefined, payload.length) !== Status.Ok) {
          return Effect.fail(
            new InvalidProtocolOperation({
              operation: "send",
              state: engine.stateName,
              message: closedMessage(engine.lastError!.message)
            })
          )
        }
        return Effect.as(Effect.andThen(runSendQueue(restore), afterSend), true)
      })

    /**
     * A whole message that could not go out at once: under the wire lock once it is free, or, when
     * a fragmented message is open (`sendWholeLocked` says `false`), after it under `messageLock`.
     */
    const sendWholeLater = (type: number, payload: Uint8Array): Effect.Effect<void, InvalidProtocolOperation | TransportError> =>
      Effect.flatMap(sendWholeLocked(type, payload), (sent) => {
        if (sent) return Effect.void
        waitingBehindMessage++
        let counted = true
        const uncount = () => {
          if (counted) waitingBehindMessage--
          counted = false
        }
        return Effect.ensuring(
          withMessageLock(Effect.uninterruptibleMask((restore) =>
            Effect.suspend(() => {
              uncount()
              return restore(Effect.flatMap(sendWholeLocked(type, payload, true), (sentNow) =>
                sentNow
                  ? Effect.void
                  // under messageLock no fragmented message can be open: a send is never reported done unsent
                  : Effect.die(new Error("a whole message found a fragmented message open under the message lock"))))
            })
          )),
          Effect.sync(uncount)
        )
      })

    const send = (message: Outgoing): Effect.Effect<void, InvalidProtocolOperation | InvalidParameter | TransportError> =>
      Effect.uninterruptibleMask((restore): Effect.Effect<void, InvalidProtocolOperation | InvalidParameter | TransportError> => {
        const text = typeof message === "string"
        const payload = payloadOf(message)
        if (payload === undefined) return Effect.fail(notAMessage("message", message))
        const type = text ? BufferType.BufferType.Utf8Message : BufferType.BufferType.BinaryMessage
        // Micro-optimisation: one lock (the wire's) per message, and no effect at all when the
        // transport takes the frame at once.
        return sendWholeNow(type, payload, restore) ?? restore(sendWholeLater(type, payload))
      })

    /**
     * `send` for each element of `fragments`, in order (`Stream.runForEach`), until no data frame can
     * go out any more: a wait for the next element (or for the wire, held by our Close) then ends,
     * failing as a send would. (One race per message, not per element: a race forks.)
     */
    const sendEach = <E, R>(
      fragments: Stream.Stream<Outgoing, E, R>,
      send: (fragment: Outgoing) => Effect.Effect<void, InvalidProtocolOperation | InvalidParameter | TransportError>
    ): Effect.Effect<void, InvalidProtocolOperation | InvalidParameter | TransportError | E, R> =>
      Effect.raceFirst(
        Stream.runForEach(fragments, send),
        Effect.andThen(
          awaitDataEnded,
          Effect.suspend(() =>
            Effect.fail(
              new InvalidProtocolOperation({
                operation: "sendFragments",
                state: engine.stateName,
                message: closedMessage("sendFragments cannot go on: a Close was sent, only control frames may follow")
              })
            )
          )
        )
      )

    /** `sendFragments` of a checked type: one message, under the message lock. */
    const sendFragmented = <E, R>(
      fragments: Stream.Stream<Outgoing, E, R>,
      type: "text" | "binary"
    ): Effect.Effect<void, InvalidProtocolOperation | InvalidParameter | TransportError | E, R> =>
      withMessageLock(Effect.ensuring(
        Effect.gen(function*() {
          if (messageLeftOpen) return yield* Effect.fail(messageLeftOpenError("sendFragments"))
          fragmenting = true
          const fragmentType = type === "text" ? BufferType.BufferType.Utf8Fragment : BufferType.BufferType.BinaryFragment
          const lastType = type === "text" ? BufferType.BufferType.Utf8Message : BufferType.BufferType.BinaryMessage
          let bytes = 0
          /**
           * The high surrogate that ended the latest string fragment: it goes out with the next
           * fragment, so that a surrogate pair split between two strings arrives whole (each half
           * alone would become U+FFFD).
           */
          let highSurrogate = ""
          const sendFragment = (fragment: Outgoing): Effect.Effect<void, InvalidProtocolOperation | InvalidParameter | TransportError> => {
            let data: unknown = fragment
            if (typeof fragment === "string") {
              const text = highSurrogate === "" ? fragment : highSurrogate + fragment
              const last = text.charCodeAt(text.length - 1)
              highSurrogate = last >= 0xd800 && last <= 0xdbff ? text.slice(-1) : ""
              data = highSurrogate === "" ? text : text.slice(0, -1)
            }
            const payload = payloadOf(data)
            if (payload === undefined) return Effect.fail(notAMessage("fragment", fragment))
            if (highSurrogate === "" || typeof fragment === "string") {
              bytes += payload.length
              return sendFrame(fragmentType, payload, undefined)
            }
            // bytes after a high surrogate: it stays alone (U+FFFD), in a frame before them
            const lone = encodeUtf8(highSurrogate)
            highSurrogate = ""
            bytes += lone.length + payload.length
            return Effect.andThen(sendFrame(fragmentType, lone, undefined), sendFrame(fragmentType, payload, undefined))
          }
          yield* sendEach(fragments, sendFragment).pipe(
            // (counted as the final frame is written: a step after it could be skipped by an
            // interruption; `bytes` is read then, once every fragment went out)
            Effect.andThen(Effect.suspend(() => {
              // a high surrogate that ended the last fragment stays alone: U+FFFD, in the final frame
              const rest = highSurrogate === "" ? undefined : encodeUtf8(highSurrogate)
              return sendFrame(lastType, rest, undefined, bytes + (rest?.length ?? 0))
            })),
            // a message that began on the wire and did not end there stays open: no data may follow
            // (asked of the handle: an interruption may come between a frame and what follows it)
            Effect.onError(() =>
              Effect.sync(() => {
                if (engine.messageOpen) messageLeftOpen = true
              })
            )
          )
        }),
        // (installed before the flag is set: a finalizer added after it would be lost to an
        // interruption in between, and a flag left set makes every later send report success
        // without sending)
        resetFragmenting
      )) as Effect.Effect<void, InvalidProtocolOperation | InvalidParameter | TransportError | E, R>

    const sendFragments = <E, R>(
      fragments: Stream.Stream<Outgoing, E, R>,
      type: "text" | "binary"
    ): Effect.Effect<void, InvalidProtocolOperation | InvalidParameter | TransportError | E, R> =>
      // (checked before the lock: a bad call does not wait for another message)
      type !== "text" && type !== "binary" ? Effect.fail(notAMessageType(type)) : sendFragmented(fragments, type)

    const ping = (payload?: Outgoing) => {
      const bytes = payload === undefined ? undefined : payloadOf(payload)
      if (payload !== undefined && bytes === undefined) return Effect.fail(notAMessage("payload", payload))
      // a control frame: it may go out between the fragments of a message (RFC 6455 section 5.4)
      return sendFrame(BufferType.BufferType.PingPong, bytes, undefined)
    }

    if (settings.keepalive !== undefined) {
      const { interval, timeout } = settings.keepalive
      const frame = settings.keepalive.frame === "pong" ? BufferType.BufferType.UnsolicitedPong : BufferType.BufferType.PingPong
      const deadPeer = (message: string) =>
        Effect.andThen(Effect.andThen(Fiber.interrupt(reader), cutTransport), failTransport(new TransportError({ message })))
      const keepalive = Effect.gen(function*() {
        for (;;) {
          yield* Effect.sleep(interval)
          if (engine.state !== HandleState.Open) return
          const before = activity
          if (timeout === undefined || frame !== BufferType.BufferType.PingPong) {
            const sent = yield* Effect.exit(sendFrame(frame, undefined, undefined))
            if (sent._tag === "Failure") return
            continue
          }
          const writesBefore = writesTaken
          // A ping that cannot even go out within the timeout waits behind a send that waits for
          // room. When the transport took more of that send meanwhile, or the peer sent anything,
          // it is alive, only slow, and the next ping is tried an interval later. When it did
          // neither (it reads nothing and says nothing), the ping counts as unanswered: a dead
          // peer is cut off all the same.
          const sent = yield* Effect.exit(Effect.timeoutOption(sendFrame(frame, undefined, undefined), timeout))
          if (sent._tag === "Failure") return
          if (Option.isNone(sent.value)) {
            if (activity !== before || writesTaken !== writesBefore || waitingForConsumer || engine.state !== HandleState.Open) {
              continue
            }
            return yield* deadPeer(`no answer from the peer within ${Duration.format(timeout)}: a ping could not even be sent`)
          }
          yield* Effect.sleep(timeout)
          if (activity === before && !waitingForConsumer && engine.state === HandleState.Open) {
            return yield* deadPeer(`no answer from the peer within ${Duration.format(timeout)} of a ping`)
          }
        }
      })
      yield* Effect.forkScoped(keepalive)
    }

    const closeCodeOnScopeClose = settings.closeCodeOnScopeClose ?? 1001
    yield* Effect.addFinalizer(() =>
      Effect.gen(function*() {
        if (!Deferred.isDoneUnsafe(closedDeferred)) {
          // The scope was already closed as the connection was made (a connect that completed
          // after its caller gave up): the reader never ran, so no answer to our Close can be
          // read, and the connection ends at once instead of waiting out the close timeout.
          yield* (!readerRan && reader.pollUnsafe() !== undefined
            ? closeUnanswered(closeCodeOnScopeClose, 1006, "the connection was closed as it was made: no answer could be read")
            : Effect.ignore(close(closeCodeOnScopeClose)))
        }
        engine.abort()
        yield* closeTransport
        mailbox.end()
      })
    )

    return new ConnectionImpl({
      kind: h.kind,
      protocol: options?.protocol ?? "",
      handshake: options?.handshake ?? { requestHeaders: [], responseHeaders: [] },
      send,
      sendFragments,
      ping,
      messages,
      close,
      closed: Deferred.await(closedDeferred),
      abort,
      stats
    }, transport, closedDeferred, closeListeners)
  }))

/**
 * A client connection and a server connection joined in memory, their opening handshake done with
 * the handle functions: for tests and examples of code written against {@link Connection}.
 *
 * @category testing
 * @since 0.1.0
 */
export const makeMemoryPair = (options?: {
  readonly client?: WebSocket.HandleProperties | undefined
  readonly server?: WebSocket.HandleProperties | undefined
  readonly connection?: Options | undefined
  /** Bytes each direction of the transport buffers before writers wait. */
  readonly highWaterMark?: number | undefined
}): Effect.Effect<readonly [client: Connection, server: Connection], InvalidParameter, Scope> =>
  Effect.gen(function*() {
    const client = yield* WebSocket.createClientHandle(options?.client)
    const server = yield* WebSocket.createServerHandle(options?.server)
    const exchange = Effect.gen(function*() {
      const { requestHeaders } = yield* WebSocket.beginClientHandshake(client, {
        initialHeaders: [{ name: "Host", value: "memory" }]
      })
      const { responseHeaders } = yield* WebSocket.beginServerHandshake(server, { requestHeaders })
      yield* WebSocket.endServerHandshake(server)
      yield* WebSocket.endClientHandshake(client, { responseHeaders })
      return { requestHeaders, responseHeaders }
    })
    const handshake = yield* Effect.orDie(exchange)
    const [a, b] = yield* makeMemoryPairTransport({ highWaterMark: options?.highWaterMark })
    const clientConnection = yield* make(client, a, { ...options?.connection, handshake })
    const serverConnection = yield* make(server, b, { ...options?.connection, handshake })
    return [clientConnection, serverConnection] as const
  })
