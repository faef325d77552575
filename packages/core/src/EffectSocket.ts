/**
 * Bridges to effect's `effect/socket` module, so that code written against `Socket.Socket` or
 * `Socket.makeWebSocket` runs over this library's connections.
 *
 * - {@link toSocket} views an open {@link Connection.Connection} as a `Socket.Socket`.
 * - {@link makeWebSocketConstructor} / {@link layerWebSocketConstructor} provide
 *   `Socket.WebSocketConstructor`: the WHATWG-like objects it builds ({@link ClientWebSocket})
 *   open their connections with a connect function (by default the {@link Client.Client} in
 *   context), so `Socket.makeWebSocket(url)` dials through this library. Platform packages supply
 *   the connecting part (`NodeSocketAdapter` in `@effect-websocket/platform-node`).
 *
 * Messages keep their boundaries both ways: every received message is one element of a pulled
 * batch (text as a `string`, binary as a `Uint8Array`), every written chunk is one message.
 *
 * @since 0.1.0
 */
import { Cause, Deferred, Duration, Effect, Exit, Fiber, FiberSet, Latch, Layer, Option, Pull, Scope, Semaphore, Stream } from "effect"
import type { NonEmptyReadonlyArray } from "effect/Array"
import * as Socket from "effect/socket/Socket"
import * as Client from "./Client.ts"
import * as CloseStatus from "./CloseStatus.ts"
import type * as Connection from "./Connection.ts"
import { isBinaryData } from "./internal/bytes.ts"
import { utf8ByteLength } from "./internal/runtime.ts"
import { InvalidParameter } from "./WebSocketError.ts"

const closeError = (code: number, closeReason?: string | undefined) =>
  new Socket.SocketError({ reason: new Socket.SocketCloseError({ code, closeReason }) })

const writeError = (cause: unknown) => new Socket.SocketError({ reason: new Socket.SocketWriteError({ cause }) })

/** The reason a close code or reason may not be sent, or `undefined` when they may. */
const invalidClose = (code: number, reason: string): InvalidParameter | undefined => {
  if (!Number.isInteger(code) || !CloseStatus.isWireCloseCode(code)) {
    return new InvalidParameter({
      parameter: "close",
      message: `close status ${code} may not be sent: use 1000-1003, 1007-1014 or 3000-4999`
    })
  }
  const bytes = utf8ByteLength(reason)
  if (bytes > CloseStatus.MAX_CLOSE_REASON_LENGTH) {
    return new InvalidParameter({
      parameter: "close",
      message: `close reason is ${bytes} bytes, more than the ${CloseStatus.MAX_CLOSE_REASON_LENGTH} allowed`
    })
  }
  return undefined
}

// ---------------------------------------------------------------------------------------------
// Connection -> Socket
// ---------------------------------------------------------------------------------------------

/** Whether `bytes` spans the whole of its buffer (no other bytes can be reached through `bytes.buffer`). */
const ownsBuffer = (bytes: Uint8Array): boolean => bytes.byteOffset === 0 && bytes.byteLength === bytes.buffer.byteLength

/**
 * The messages with each binary one in an `ArrayBuffer` of its own, as `effect/socket`'s sockets
 * deliver them (a connection's small messages share a block of memory: code that reads
 * `chunk.buffer` would see other messages' bytes).
 */
const ownBuffers = (batch: NonEmptyReadonlyArray<Connection.Message>): NonEmptyReadonlyArray<Connection.Message> =>
  batch.every((m) => typeof m === "string" || ownsBuffer(m))
    ? batch
    : batch.map((m) => typeof m === "string" || ownsBuffer(m) ? m : m.slice()) as unknown as NonEmptyReadonlyArray<Connection.Message>

/**
 * Views an open connection as an `effect/socket` `Socket`.
 *
 * **Reader.** The connection is already open, so acquiring `reader` dials nothing and never fails:
 * it attaches to the connection's single message stream. Acquisitions are exclusive: while one
 * reader's scope is open, another acquisition waits until it closes (so two readers never split
 * the messages between them; acquiring a second reader in the scope of the first waits forever).
 * Messages the released reader did not pull stay queued for the next one. Each `pull` returns
 * the next message, in a batch of one (waiting when there is none), text as a `string` and binary
 * as a `Uint8Array` with an `ArrayBuffer` of its own. When the connection ends, the messages
 * received before the end are pulled first, then `pull` fails, for this reader and every later
 * one, with a `SocketError` wrapping:
 *
 * - `SocketCloseError({ code, closeReason })` after a closing handshake (code and reason from
 *   `connection.closed`: the peer's, or 1006 when the close timed out), whoever started it;
 * - `SocketReadError({ cause })` when the peer broke the protocol or the transport failed (`cause`
 *   is the {@link Connection.ConnectionError}).
 *
 * Closing a reader's scope fails a `pull` suspended on it with `SocketCloseError(1006)` (the
 * `Socket` contract; a batch arriving at that very moment may be lost with it), and leaves the
 * connection open: its lifetime is the scope that opened it. To read after a close, there is no
 * reconnecting: a retried reader reports the same close.
 *
 * **Writer.** Acquiring `writer` never fails and releasing it does nothing. `write` sends a
 * `string` as a text message and a `Uint8Array` as a binary one with `connection.send`
 * (completing once the frame is handed to the transport, so the transport's backpressure
 * applies); `writeAll` sends its chunks in order. Writing a `Socket.CloseEvent(code, reason)`
 * starts `connection.close(code, reason)` and returns without waiting for the peer's answer (the
 * reader then reports the close); a code or reason that may not be sent fails with
 * `SocketWriteError` wrapping `InvalidParameter`. Like a WHATWG `WebSocket`,
 * writes once a CloseEvent was written or the connection is closing or closed are discarded (the
 * reader reports why it ended); a transport failure fails the write with `SocketWriteError`, and
 * so does a write refused on an open connection (`InvalidProtocolOperation`: an earlier write
 * was interrupted half-way, leaving its frame incomplete).
 *
 * **Example**
 *
 * ```ts
 * import { EffectSocket } from "@effect-websocket/core"
 * import type { Connection } from "@effect-websocket/core"
 * import { Effect } from "effect"
 * import { Socket } from "effect/socket"
 *
 * const greet = (connection: Connection.Connection) =>
 *   Effect.scoped(Effect.gen(function*() {
 *     const socket = EffectSocket.toSocket(connection)
 *     const writer = yield* socket.writer
 *     const reader = yield* socket.reader
 *     yield* writer.write("hello")
 *     const batch = yield* reader.pull
 *     yield* writer.write(new Socket.CloseEvent(1000, "bye"))
 *     return batch
 *   }))
 * ```
 *
 * @category constructors
 * @since 0.1.0
 */
export const toSocket = (connection: Connection.Connection): Socket.Socket => {
  const readers = Semaphore.makeUnsafe(1)

  const reader: Socket.Socket["reader"] = Effect.gen(function*() {
    yield* Semaphore.takeScoped(readers, 1)
    const scope = yield* Effect.scope
    const messages = yield* Stream.toPull(connection.messages)
    const detached = Deferred.makeUnsafe<never, Socket.SocketError>()
    yield* Scope.addFinalizer(scope, Deferred.fail(detached, closeError(1006)))
    let ended: Socket.SocketError | undefined

    const end = (error: Socket.SocketError) =>
      Effect.suspend(() => {
        ended ??= error
        return Effect.fail(ended)
      })

    const pullMessages = Pull.matchEffect(messages, {
      onSuccess: (batch: NonEmptyReadonlyArray<Connection.Message>) => Effect.succeed(ownBuffers(batch)),
      onFailure: (cause) => {
        const error = Cause.findErrorOption(cause)
        return Option.isSome(error)
          ? end(new Socket.SocketError({ reason: new Socket.SocketReadError({ cause: error.value }) }))
          : Effect.failCause(cause as Cause.Cause<never>)
      },
      onDone: () => Effect.flatMap(connection.closed, (info) => end(closeError(info.code, info.reason)))
    })

    const pull: Effect.Effect<NonEmptyReadonlyArray<string | Uint8Array>, Socket.SocketError> = Effect.suspend(() => {
      if (Deferred.isDoneUnsafe(detached)) return Deferred.await(detached)
      if (ended !== undefined) return Effect.fail(ended)
      return Effect.raceFirst(pullMessages, Deferred.await(detached))
    })

    return { pull, upgrade: Socket.SocketUpgradeError.unsupported } satisfies Socket.Reader
  })

  /** Whether a CloseEvent was written: later writes are discarded, as after a WHATWG `close()`. */
  let closeWritten = false

  const send = (chunk: string | Uint8Array): Effect.Effect<void, Socket.SocketError> =>
    Effect.suspend(() => closeWritten ? Effect.void : connection.send(chunk)).pipe(
      Effect.catchTags({
        // closing or closed: discarded, the reader reports the close; refused on an open
        // connection (a frame left incomplete by an interrupted write): an error
        InvalidProtocolOperation: (error) => error.state === "Open" ? Effect.fail(writeError(error)) : Effect.void,
        InvalidParameter: (error) => Effect.fail(writeError(error)),
        TransportError: (error) => Effect.fail(writeError(error))
      })
    )

  const close = (event: Socket.CloseEvent): Effect.Effect<void, Socket.SocketError> =>
    Effect.suspend(() => {
      const reason = event.reason ?? ""
      const invalid = invalidClose(event.code, reason)
      if (invalid !== undefined) return Effect.fail(writeError(invalid))
      closeWritten = true
      // Runs until the handshake ends (bounded by the close timeout) whatever happens to the
      // writer.
      return Effect.asVoid(Effect.forkDetach(Effect.ignore(connection.close(event.code, reason)), { startImmediately: true }))
    })

  const write = (chunk: Uint8Array | string | Socket.CloseEvent): Effect.Effect<void, Socket.SocketError> =>
    Socket.isCloseEvent(chunk) ? close(chunk) : send(chunk)

  const writeAll = (chunks: NonEmptyReadonlyArray<Uint8Array | string>): Effect.Effect<void, Socket.SocketError> =>
    Effect.forEach(chunks, send, { discard: true })

  return Socket.make({ reader, writer: Effect.succeed({ write, writeAll }) })
}

// ---------------------------------------------------------------------------------------------
// WebSocketConstructor
// ---------------------------------------------------------------------------------------------

/**
 * The events a {@link ClientWebSocket} dispatches: `open`; `message` with `data` (a `string`, or
 * binary data as chosen by `binaryType`); `error` with the `error` that caused it; `close` with
 * `code`, `reason` and `wasClean`.
 *
 * @category models
 * @since 0.1.0
 */
export interface ClientWebSocketEvent extends Socket.WebSocketEvent {
  readonly type: "open" | "message" | "error" | "close"
  readonly data?: string | ArrayBuffer | Uint8Array
  readonly code?: number
  readonly reason?: string
  readonly wasClean?: boolean
  readonly error?: unknown
  readonly message?: string
}

/**
 * How a {@link ClientWebSocket} delivers binary messages: `"arraybuffer"` (the default) as an
 * `ArrayBuffer`, `"uint8array"` as a `Uint8Array`. (`"blob"`, the WHATWG default, is not
 * supported.)
 *
 * @category models
 * @since 0.1.0
 */
export type BinaryType = "arraybuffer" | "uint8array"

/**
 * A WHATWG-`WebSocket`-like object over a connection of this library, as built by the
 * constructor of {@link makeWebSocketConstructor}. It has what `Socket.fromWebSocket` uses, plus
 * the usual read-only properties, the ready-state constants, the `onopen` / `onmessage` /
 * `onerror` / `onclose` handlers, and `pause` / `resume`:
 *
 * - `readyState` goes 0 (connecting) → 1 (open) → 2 (closing, after `close()`) → 3 (closed);
 *   a failed connect goes from 0 to 3 with an `error` then a `close` event (code 1006).
 * - `send` queues a message (copying binary data) and returns; messages go out in order, and
 *   `bufferedAmount` counts the bytes queued but not yet handed to the transport. A string, and
 *   any other value but bytes (converted with `String`, as a WHATWG `WebSocket` does), is sent as
 *   text; a typed array, a `DataView`, an `ArrayBuffer` or a `SharedArrayBuffer` as binary. `send`
 *   throws while connecting, and for a `Blob` (not supported) or a detached `ArrayBuffer` (a
 *   `TypeError`, as with `ws`); it discards its message once closing or closed.
 * - Events are dispatched from the socket's fiber, never from inside the constructor, `send`,
 *   `close` or `resume`; a listener that throws is reported in the log.
 * - An `open` listener added once the socket is open (after its `open` event) is called with it
 *   (a WHATWG `WebSocket` would not): code that saw `readyState` 0 and listens a moment later
 *   does not wait for an `open` that went out in between.
 * - `close(code?, reason?)` sends the Close frame after the queued messages (without a code, an
 *   empty one: no code, no reason, as a WHATWG `WebSocket` and `ws` send it); the `close` event
 *   follows the closing handshake. A peer that keeps reading gets every queued message, however
 *   long it takes; once nothing has gone out for 5 seconds (a peer that reads nothing would hold
 *   them back for ever), the connection is cut (`close` with 1006, no `error`), as `ws` destroys
 *   a socket whose close times out. Once the connection has ended (the peer closed it), the
 *   socket is closing, even while paused with `message` events to come. While connecting,
 *   `close` abandons the connect (`error`, then `close` with 1006). It throws a `RangeError` for
 *   a code that may not be sent (other than 1000-1003, 1007-1014, 3000-4999) or a reason over
 *   123 UTF-8 bytes.
 * - `pause()` stops dispatching `message` events; the connection then stops reading once its
 *   message buffer is full, which slows the peer down. `resume()` (and `close()`) restarts them.
 *
 * @category models
 * @since 0.1.0
 */
export interface ClientWebSocket extends Socket.WebSocketLike {
  readonly url: string
  readonly readyState: 0 | 1 | 2 | 3
  readonly CONNECTING: 0
  readonly OPEN: 1
  readonly CLOSING: 2
  readonly CLOSED: 3
  /** Called with each event of its type, after the listeners added with `addEventListener`. */
  onopen: ((event: ClientWebSocketEvent) => void) | null
  onmessage: ((event: ClientWebSocketEvent) => void) | null
  onerror: ((event: ClientWebSocketEvent) => void) | null
  onclose: ((event: ClientWebSocketEvent) => void) | null
  /** The subprotocol the server selected, `""` until open or when none. */
  readonly protocol: string
  /** Always `""`: no extension is negotiated. */
  readonly extensions: string
  readonly bufferedAmount: number
  binaryType: BinaryType
  readonly isPaused: boolean
  send(data: string | ArrayBufferLike | ArrayBufferView): void
  pause(): void
  resume(): void
  addEventListener(
    type: "open" | "message" | "error" | "close",
    listener: (event: ClientWebSocketEvent) => void,
    options?: { readonly once?: boolean }
  ): void
  removeEventListener(type: "open" | "message" | "error" | "close", listener: (event: ClientWebSocketEvent) => void): void
}

/**
 * Opens a connection for a {@link ClientWebSocket}: `url` and the options derived from the
 * constructor's (`protocols`, `headers`); the connection belongs to the given scope.
 *
 * @category models
 * @since 0.1.0
 */
export type Connect<E = unknown, R = never> = (
  url: string,
  options: Client.ConnectOptions
) => Effect.Effect<Connection.Connection, E, R | Scope.Scope>

type EventType = "open" | "message" | "error" | "close"
type Listener = (event: ClientWebSocketEvent) => void
type Outgoing =
  | { readonly _tag: "data"; readonly data: string | Uint8Array; readonly size: number }
  | { readonly _tag: "close"; readonly code: number; readonly reason: string }

/**
 * How long a socket asked to close may go without sending anything of what was queued before
 * its Close (then its connection is cut, as `ws` destroys a socket whose close times out), and
 * how long closing a constructor's scope waits for such sockets.
 */
const CLOSING_GRACE = Duration.seconds(5)

const CONNECTING = 0 as const
const OPEN = 1 as const
const CLOSING = 2 as const
const CLOSED = 3 as const

const toBytes = (data: ArrayBufferLike | ArrayBufferView): Uint8Array =>
  ArrayBuffer.isView(data)
    ? new Uint8Array(data.buffer, data.byteOffset, data.byteLength).slice()
    : new Uint8Array(data).slice()

const toArrayBuffer = (bytes: Uint8Array): ArrayBuffer =>
  ownsBuffer(bytes) && bytes.buffer instanceof ArrayBuffer
    ? bytes.buffer
    : bytes.slice().buffer

class ClientWebSocketImpl implements ClientWebSocket {
  readyState: 0 | 1 | 2 | 3 = CONNECTING
  readonly CONNECTING = CONNECTING
  readonly OPEN = OPEN
  readonly CLOSING = CLOSING
  readonly CLOSED = CLOSED
  onopen: ((event: ClientWebSocketEvent) => void) | null = null
  onmessage: ((event: ClientWebSocketEvent) => void) | null = null
  onerror: ((event: ClientWebSocketEvent) => void) | null = null
  onclose: ((event: ClientWebSocketEvent) => void) | null = null
  protocol = ""
  readonly extensions = ""
  bufferedAmount = 0
  binaryType: BinaryType = "arraybuffer"
  /** Set by the constructor once the socket's fiber runs. */
  abandon: (() => void) | undefined = undefined
  /** The connection, once open. */
  connection: Connection.Connection | undefined = undefined
  /** Dispatches the `open` event, from a fiber of the socket's, to one `open` listener (see `addEventListener`). */
  lateOpen: ((listener: Listener) => void) | undefined = undefined
  /** Whether the `open` event went out. */
  private openDispatched = false
  readonly listeners: Record<EventType, Map<Listener, boolean>> = {
    open: new Map(),
    message: new Map(),
    error: new Map(),
    close: new Map()
  }
  readonly outgoing: Array<Outgoing> = []
  readonly work = Latch.makeUnsafe(false)
  readonly flowing = Latch.makeUnsafe(true)
  /** Whether `close` was called on the open socket: its closing is then bounded (see `run`). */
  closeRequested = false
  /** Messages handed to the connection, and whether the Close was: the progress of a closing socket. */
  private messagesSent = 0
  private closeSent = false
  /** Whether the socket was cut for making no progress while closing (no `error` event then). */
  private cut = false
  /** Opened once `close` was called on the open socket. */
  readonly closeAsked = Latch.makeUnsafe(false)
  private wakeScheduled = false
  private paused = false

  readonly url: string

  constructor(url: string) {
    this.url = url
  }

  get isPaused(): boolean {
    return this.paused
  }

  addEventListener(type: EventType, listener: Listener, options?: { readonly once?: boolean }): void {
    const listeners = this.listeners[type]
    if (listeners === undefined || listeners.has(listener)) return
    listeners.set(listener, options?.once === true)
    // A caller that saw `readyState` 0 and adds its `open` listener a moment later (as
    // `Socket.fromWebSocket` does, across a yield of its fiber) must not wait for an `open` that
    // went out in between: the listener gets it (a WHATWG WebSocket would not call it).
    if (type === "open" && this.openDispatched && this.readyState === OPEN) this.lateOpen?.(listener)
  }

  removeEventListener(type: EventType, listener: Listener): void {
    this.listeners[type]?.delete(listener)
  }

  send(data: string | ArrayBufferLike | ArrayBufferView): void {
    if (this.readyState === CONNECTING) {
      const error = new Error("the WebSocket is not open yet")
      error.name = "InvalidStateError"
      throw error
    }
    if (typeof Blob === "function" && (data as unknown) instanceof Blob) {
      throw new TypeError("a Blob cannot be sent: send its bytes (await blob.arrayBuffer())")
    }
    if (this.readyState !== OPEN) return
    // anything else than text or bytes is sent as its text, as a WHATWG WebSocket does (`send(5)` sends "5")
    const message = typeof data === "string" ? data : isBinaryData(data) ? toBytes(data) : String(data)
    const size = typeof message === "string" ? utf8ByteLength(message) : message.length
    this.bufferedAmount += size
    this.outgoing.push({ _tag: "data", data: message, size })
    this.wake()
  }

  close(code?: number, reason?: string): void {
    // (the reason is checked with or without a code, as a WHATWG WebSocket checks it)
    const invalid = invalidClose(code ?? CloseStatus.CloseStatus.Success, reason ?? "")
    if (invalid !== undefined) throw new RangeError(invalid.message)
    // without a code: an empty Close (the peer reports 1005), as `ws` and browsers send it
    const closeCode = code ?? CloseStatus.CloseStatus.Empty
    const closeReason = code === undefined ? "" : reason ?? ""
    if (this.readyState === CONNECTING) {
      this.readyState = CLOSING
      // after this call returns: the abandon dispatches `error` and `close`
      queueMicrotask(() => this.abandon?.())
      return
    }
    if (this.readyState !== OPEN) {
      // closing already (its connection may have ended while it was paused): it goes on, so
      // that the events still to come, and `close`, are dispatched
      if (this.readyState === CLOSING) this.resume()
      return
    }
    this.readyState = CLOSING
    this.closeRequested = true
    this.outgoing.push({ _tag: "close", code: closeCode, reason: closeReason })
    queueMicrotask(() => this.closeAsked.openUnsafe())
    this.resume()
  }

  pause(): void {
    this.paused = true
    this.flowing.closeUnsafe()
  }

  resume(): void {
    this.paused = false
    this.wake()
  }

  /**
   * Wakes the socket's fibers after the current call returns: opening a latch resumes its
   * waiters at once, and events must not be dispatched from inside `send`, `close` or `resume`.
   */
  private wake(): void {
    if (this.wakeScheduled) return
    this.wakeScheduled = true
    queueMicrotask(() => {
      this.wakeScheduled = false
      if (this.outgoing.length > 0) this.work.openUnsafe()
      if (!this.paused) this.flowing.openUnsafe()
    })
  }

  /**
   * Calls the listeners of `event.type` (only `only`, when given, if it is still one of them);
   * listeners that throw are reported in the log.
   */
  dispatch(event: ClientWebSocketEvent, only?: Listener): Effect.Effect<void> {
    return Effect.suspend(() => {
      const all = this.listeners[event.type]
      const listeners = only === undefined ? all : new Map(all.has(only) ? [[only, all.get(only)!]] : [])
      if (event.type === "open") this.openDispatched = true
      const failures: Array<unknown> = []
      const call = (listener: Listener) => {
        try {
          listener(event)
        } catch (error) {
          failures.push(error)
        }
      }
      for (const [listener, once] of Array.from(listeners)) {
        if (!all.has(listener)) continue
        if (once) all.delete(listener)
        call(listener)
      }
      const handler = this[`on${event.type}`]
      if (only === undefined && typeof handler === "function") call(handler)
      return failures.length === 0
        ? Effect.void
        : Effect.logError(`a WebSocket "${event.type}" listener threw`, ...failures)
    })
  }

  /** What the socket has sent so far: the messages handed to `connection`, and the bytes it holds not yet sent. */
  private progress(connection: Connection.Connection): string {
    return `${this.messagesSent}/${connection.bufferedAmount}`
  }

  /** Hands queued messages to the connection in order, then the Close when one is queued. */
  writeLoop(connection: Connection.Connection): Effect.Effect<void> {
    const self = this
    return Effect.gen(function*() {
      for (;;) {
        yield* self.work.await
        const item = self.outgoing.shift()
        if (item === undefined) {
          self.work.closeUnsafe()
          continue
        }
        if (item._tag === "close") {
          self.closeSent = true
          yield* Effect.ignore(connection.close(item.code, item.reason))
          return
        }
        const sent = yield* Effect.exit(connection.send(item.data))
        self.messagesSent++
        self.bufferedAmount -= item.size
        // closing or failed: the end of the message stream reports it
        if (Exit.isFailure(sent)) return
      }
    })
  }

  /** Connects, dispatches the events, and ends when the connection has. */
  run(connect: Connect<unknown, never>, options: Client.ConnectOptions): Effect.Effect<void> {
    const self = this
    let connection: Connection.Connection | undefined
    let opened = false
    let failure: unknown = undefined
    const body = Effect.gen(function*() {
      // events are dispatched after the constructor has returned and its caller added listeners
      yield* Effect.yieldNow
      // The connect runs in its own fiber so that abandoning it never waits for it to stop:
      // a connect that is slow to notice its interruption ends on its own, and a connection it
      // opens after the abandon is closed at once (its scope is already closed).
      const scope = yield* Effect.scope
      const connecting = yield* Effect.forkDetach(Scope.provide(connect(self.url, options), scope))
      const conn = yield* Fiber.join(connecting).pipe(
        Effect.onInterrupt(() => Effect.sync(() => connecting.interruptUnsafe())),
        Effect.tapError((error) => Effect.sync(() => failure = error))
      )
      connection = conn
      self.connection = conn
      if (self.readyState !== CONNECTING) return yield* Effect.interrupt
      self.readyState = OPEN
      self.protocol = conn.protocol
      opened = true
      const services = yield* Effect.context<never>()
      // (from the next step on: never from inside `addEventListener`)
      self.lateOpen = (listener) =>
        Effect.runForkWith(services)(Effect.andThen(Effect.yieldNow, self.dispatch({ type: "open" }, listener)))
      yield* self.dispatch({ type: "open" })
      yield* Effect.forkScoped(self.writeLoop(conn))
      // Once the connection is closed nothing more can be sent: the socket is closing (as a WHATWG
      // WebSocket is once the closing handshake started) even while `message` events are still to
      // come (a paused socket dispatches them only when resumed), and later sends are discarded
      // instead of queued for a write loop that has ended.
      yield* Effect.forkScoped(Effect.andThen(
        conn.closed,
        Effect.sync(() => {
          if (self.readyState === OPEN) self.readyState = CLOSING
          self.outgoing.length = 0
        })
      ))
      // Asked to close, the socket sends what was queued before, then its Close (whose handshake
      // the connection's close timeout bounds). A send that waits for a peer that reads nothing
      // would hold the Close back for ever: once nothing has gone out for the grace, the
      // connection is cut (1006), as `ws` destroys a socket whose close times out. A peer that
      // keeps reading gets everything, however long it takes.
      yield* Effect.forkScoped(Effect.gen(function*() {
        yield* self.closeAsked.await
        for (;;) {
          const before = self.progress(conn)
          yield* Effect.sleep(CLOSING_GRACE)
          if (self.closeSent) return
          if (self.progress(conn) === before) break
        }
        self.cut = true
        yield* conn.abort
      }))
      const read = yield* Effect.exit(
        Stream.runForEach(conn.messages, (message) =>
          self.flowing.whenOpen(
            self.dispatch({
              type: "message",
              data: typeof message === "string" || self.binaryType === "uint8array" ? message : toArrayBuffer(message)
            })
          ))
      )
      if (Exit.isFailure(read)) {
        const error = Cause.findErrorOption(read.cause)
        failure = Option.isSome(error) ? error.value : Cause.squash(read.cause)
        self.readyState = CLOSING
        if (!self.cut) yield* self.dispatch({ type: "error", error: failure, message: String(failure) })
      }
      yield* conn.closed
    }).pipe(Effect.scoped)

    return body.pipe(
      Effect.onExit((exit) =>
        Effect.gen(function*() {
          if (!opened) {
            const abandoned = self.readyState === CLOSING
            self.readyState = CLOSED
            const error = failure ?? (abandoned || Exit.isSuccess(exit)
              ? new Error("the WebSocket was closed before its connection opened")
              : Cause.squash(exit.cause))
            const message = error instanceof Error ? error.message : String(error)
            yield* self.dispatch({ type: "error", error, message })
            yield* self.dispatch({ type: "close", code: 1006, reason: "", wasClean: false })
            return
          }
          const info = yield* connection!.closed
          self.readyState = CLOSED
          self.bufferedAmount = 0
          self.outgoing.length = 0
          yield* self.dispatch({ type: "close", code: info.code, reason: info.reason, wasClean: info.clean })
        })
      ),
      Effect.ignore
    )
  }
}

const connectOptions = (options: Socket.WebSocketConstructorOptions | undefined): Client.ConnectOptions => {
  if (options === undefined) return {}
  if (typeof options === "string") return { protocols: [options] }
  if (Array.isArray(options)) return { protocols: options }
  const { headers, protocols } = options as Socket.WebSocketClientOptions
  return {
    ...(protocols === undefined ? {} : { protocols: typeof protocols === "string" ? [protocols] : protocols }),
    ...(headers === undefined ? {} : { headers })
  }
}

/**
 * Makes a `Socket.WebSocketConstructor` function whose {@link ClientWebSocket}s open their
 * connections with `connect` (given the URL, the subprotocols and the headers). Each socket runs
 * in its own fiber, with the services of the current context, owned by the current scope:
 * closing the scope lets the sockets asked to close finish (their queued messages, then their
 * Close; at most 5 seconds, after which they are cut), closes the open ones the same way (their
 * queued messages, then 1001, going away) and abandons the connecting ones.
 * Once the scope is closed, the constructor throws.
 *
 * @category constructors
 * @since 0.1.0
 */
export const makeWebSocketConstructor = <E, R>(
  connect: Connect<E, R>
): Effect.Effect<Socket.WebSocketConstructor["Service"], never, Scope.Scope | Exclude<R, Scope.Scope>> =>
  Effect.gen(function*() {
    const run = yield* FiberSet.makeRuntime<Exclude<R, Scope.Scope>>()
    /** The sockets whose fiber runs. */
    const sockets = new Map<ClientWebSocketImpl, Fiber.Fiber<void>>()
    // Runs before the fiber set interrupts the sockets: those asked to close get to send what
    // was queued before and their Close (bounded), as a platform's socket does once the program
    // that closed it has ended (`Socket.makeWebSocket` closes with 1000 as its scope ends).
    // Those still not done are cut, so that their interruption does not wait out a close timeout
    // (for a send the peer does not take) on top of the grace.
    // The open ones close with 1001 (going away) the same way, after what was queued: a message
    // `send` took goes out (it was dropped when the fiber set interrupted a socket that still had it).
    yield* Effect.addFinalizer(() =>
      Effect.forEach(
        Array.from(sockets).filter(([ws]) => {
          if (ws.readyState === OPEN) ws.close(1001)
          return ws.readyState === CLOSING && ws.closeRequested
        }),
        ([ws, fiber]) =>
          Effect.flatMap(
            Effect.timeoutOption(Fiber.await(fiber), CLOSING_GRACE),
            (done) => Option.isSome(done) || ws.connection === undefined ? Effect.void : ws.connection.abort
          ),
        { concurrency: "unbounded", discard: true }
      )
    )
    return (url: string, options?: Socket.WebSocketConstructorOptions | undefined): ClientWebSocket => {
      const ws = new ClientWebSocketImpl(url)
      const fiber = run(ws.run(connect as Connect<unknown, never>, connectOptions(options)) as Effect.Effect<void>)
      if (fiber.pollUnsafe() !== undefined) {
        throw new Error("the scope of this WebSocket constructor is closed")
      }
      sockets.set(ws, fiber)
      fiber.addObserver(() => {
        sockets.delete(ws)
        // What `Socket.makeWebSocket` keeps of an ended socket until its scope closes (a reader
        // acquired again and again in one scope, to reconnect) must not hold the connection: its
        // buffers, socket and fibers are released once it ended.
        ws.connection = undefined
        ws.abandon = undefined
        ws.lateOpen = undefined
      })
      ws.abandon = () => fiber.interruptUnsafe()
      return ws
    }
  })

/**
 * A layer with a `Socket.WebSocketConstructor` whose sockets connect with the
 * {@link Client.Client} in context: `Socket.makeWebSocket(url)` then runs over this library
 * (over the network with a platform client, in memory with `Client.layerMemory`). Closing the
 * layer closes the open sockets.
 *
 * @category layers
 * @since 0.1.0
 */
export const layerWebSocketConstructor: Layer.Layer<Socket.WebSocketConstructor, never, Client.Client> = Layer.effect(
  Socket.WebSocketConstructor,
  Effect.flatMap(Client.Client, (client) => makeWebSocketConstructor(client.connect))
)
