/**
 * The byte stream under a WebSocket connection: what the driver of a handle reads
 * `ReceiveFromNetwork` bytes from and writes `SendToNetwork` buffers to. Platform packages supply
 * sockets (`@effect-websocket/platform-node`); {@link makeMemoryPair} connects two ends in memory
 * for tests.
 *
 * @since 0.1.0
 */
import { Options } from "@effect-websocket/schema"
import { Context, Effect, Predicate, Schema } from "effect"
import type { Scope } from "effect/Scope"
import * as EventLoop from "./internal/eventLoop.ts"
import { decodeParameter } from "./internal/handshake.ts"
import { Ring } from "./internal/ring.ts"
import type { InvalidParameter } from "./WebSocketError.ts"

/**
 * A string identifying transports and their errors.
 *
 * @category type ids
 * @since 0.1.0
 */
export const TypeId = "~@effect-websocket/core/Transport"

/**
 * The transport failed: the connection was reset, a write hit a closed stream, the peer went away
 * without a Close frame. `cause` keeps the underlying error.
 *
 * @category errors
 * @since 0.1.0
 */
export class TransportError extends Schema.TaggedError<TransportError>()("TransportError", {
  message: Schema.String,
  cause: Schema.optionalKey(Schema.Defect())
}) {
  /** @internal */
  readonly [TypeId] = TypeId
}

/**
 * Copies `source[start, end)` into `target` from `targetStart`: what a reader gives
 * `tryRead.withCopy` of a {@link Transport} (a connection's copy unmasks a masked payload as it goes).
 *
 * @category models
 * @since 0.1.0
 */
export type Copy = (source: Uint8Array, start: number, end: number, target: Uint8Array, targetStart: number) => void

/**
 * A {@link Transport}'s `tryRead`: the bytes already there copied into `buffer` (their count), 0 at
 * the end, -1 when there are none yet; optionally with `withCopy`, the same read with the bytes
 * copied by the reader's {@link Copy}.
 *
 * @category models
 * @since 0.1.0
 */
export interface TryRead {
  (buffer: Uint8Array): number
  readonly withCopy?: ((buffer: Uint8Array, copy: Copy) => number) | undefined
}

/**
 * One connected byte stream.
 *
 * **Details**
 *
 * - `read(buffer)` waits for bytes, copies up to `buffer.length` into `buffer` and returns how
 *   many (an integer from 0 to `buffer.length`); 0 means the stream ended (the peer half-closed,
 *   or the transport was closed), and so do the reads after it. It is interruptible: interrupted
 *   while it waits, it read nothing (the caller may reuse `buffer`).
 * - `write(buffers, owned?)` writes the buffers in order, as one unit (writes never interleave),
 *   and completes once the transport no longer needs them: the caller may then reuse the memory.
 *   It waits while the transport's outgoing buffer is full (backpressure), before it takes the
 *   buffers: interrupted while it waits, it wrote nothing, and once it took them they go out
 *   whole (a connection relies on this to know whether an interrupted frame is on the wire). With
 *   `owned`, the caller gives the buffers away (it never touches them again): the transport may
 *   keep them instead of copying them.
 * - `end` half-closes: no more writes, the peer reads 0 once it has read everything.
 * - `close` closes both directions and releases the resource; idempotent. It may first let what
 *   is queued go out (a socket flushes, then ends): a connection waits for it at most its close
 *   timeout, then uses `destroy`.
 * - `destroy`, optional, is `close` at once: what is still queued is dropped, and the resource is
 *   released (no `close` follows it). Connections use it to cut off a peer they give up on (a
 *   close timeout, `abort`); without it they use `close`.
 * - `tryRead(buffer)`, optional, is `read` without waiting: the bytes already there, 0 at the end,
 *   or -1 when there are none yet (or the transport failed), and the caller uses `read`. Any other
 *   value (another negative number, more than `buffer` holds) ends the connection (1006), as a
 *   `read` that returns no byte count does.
 * - `tryRead.withCopy(buffer, copy)`, optional (a property of the `tryRead` function, see
 *   {@link TryRead}), is `tryRead` where the bytes are copied into `buffer` with
 *   `copy(source, start, end, buffer, at)` (`source[start, end)` to `buffer[at, ...)`, in order
 *   from the buffer's start) rather than by the transport. Connections pass a copy that unmasks a
 *   masked payload as it goes (large payloads are then gone over once instead of twice); without
 *   it they use `tryRead`. It belongs to its `tryRead`: a wrapper that replaces `tryRead`, or
 *   leaves it out, leaves it out too, so its reads are never bypassed.
 * - `whenReadable(listener)`, optional, calls `listener` once a `read` would not wait (bytes, the
 *   end or a failure are there): at once when that is so already, else from the transport's own
 *   event (a socket's; for a memory pair, the peer's write, end or close, or a later turn of the
 *   event loop). `listener` replaces the one set before and is called at most once (set it again
 *   to be called again); `undefined` clears it. It goes with `tryRead`: the listener takes the
 *   bytes with it, and may set itself again, write or close. A transport has one reader: its wait
 *   and a `read` waiting at the same time are not supported. Connections use it to read what
 *   arrives as it arrives, without waking a fiber per read; without it they use `read`. A wrapper
 *   that changes what reads return replaces `read`, `tryRead` and `whenReadable` together (or
 *   leaves the last two out).
 * - `tryWrite(buffers, owned?)`, optional, is `write` without waiting: it takes the buffers and returns
 *   `true` when it can do so at once (the caller may then reuse the memory), else it takes
 *   nothing and returns `false`, and the caller uses `write`. Connections use it to send without
 *   an effect per frame.
 * - `allocate(size)`, optional, gives memory for a buffer the caller fills and then writes with
 *   `owned`: a transport may hand out memory it recycles once such a write is done (fewer large
 *   allocations, so less garbage collection). Connections build large frames in it.
 * - `bufferedAmount()`, optional, is how many bytes writes handed over that the transport has not
 *   yet passed on (to the network, or to the peer of a memory pair): what `ws` reports as
 *   `bufferedAmount`.
 *
 * A connection takes a `read` or `write` that throws, dies or fails with something else than a
 * `TransportError`, and a `read` that returns something else than a byte count, as the
 * transport's failure: it ends with 1006 and a `TransportError` whose `cause` says what happened.
 *
 * @category models
 * @since 0.1.0
 */
export interface Transport {
  readonly [TypeId]: typeof TypeId
  readonly read: (buffer: Uint8Array) => Effect.Effect<number, TransportError>
  readonly write: (buffers: ReadonlyArray<Uint8Array>, owned?: boolean) => Effect.Effect<void, TransportError>
  readonly end: Effect.Effect<void>
  readonly close: Effect.Effect<void>
  readonly destroy?: Effect.Effect<void> | undefined
  readonly tryWrite?: ((buffers: ReadonlyArray<Uint8Array>, owned?: boolean) => boolean) | undefined
  readonly tryRead?: TryRead | undefined
  readonly whenReadable?: ((listener: (() => void) | undefined) => void) | undefined
  readonly allocate?: ((size: number) => Uint8Array) | undefined
  readonly bufferedAmount?: (() => number) | undefined
}

/**
 * The transport of a connection, as a service.
 *
 * @category services
 * @since 0.1.0
 */
export const Transport: Context.Service<Transport, Transport> = Context.Service<Transport>(
  "@effect-websocket/core/Transport"
)

/**
 * Whether `u` is a {@link Transport}.
 *
 * @category guards
 * @since 0.1.0
 */
export const isTransport = (u: unknown): u is Transport =>
  Predicate.hasProperty(u, TypeId) && Predicate.hasProperty(u, "read")

/**
 * Whether `u` is a {@link TransportError}.
 *
 * @category guards
 * @since 0.1.0
 */
export const isTransportError = (u: unknown): u is TransportError => u instanceof TransportError

/**
 * Builds a transport from its operations: the four it must have (`read`, `write`, `end`,
 * `close`), and any of the optional ones.
 *
 * @category constructors
 * @since 0.1.0
 */
export const make = (operations: Omit<Transport, typeof TypeId>): Transport => ({ [TypeId]: TypeId, ...operations })

/**
 * A transport that reports what passes through it: `onRead` sees the bytes of every read,
 * `onWrite` the buffers of every write (views, valid during the call). For debugging and
 * transcripts; the hooks must not keep the views.
 *
 * @category combinators
 * @since 0.1.0
 */
export const tap = (
  transport: Transport,
  hooks: {
    readonly onRead?: ((bytes: Uint8Array) => void) | undefined
    readonly onWrite?: ((buffers: ReadonlyArray<Uint8Array>) => void) | undefined
  }
): Transport =>
  make({
    read: (buffer) =>
      Effect.tap(transport.read(buffer), (n) =>
        Effect.sync(() => {
          if (n > 0) hooks.onRead?.(buffer.subarray(0, n))
        })),
    // reported once written: a write interrupted while it waits writes nothing
    write: (buffers, owned) => Effect.tap(transport.write(buffers, owned), () => Effect.sync(() => hooks.onWrite?.(buffers))),
    end: transport.end,
    close: transport.close,
    destroy: transport.destroy,
    allocate: transport.allocate,
    bufferedAmount: transport.bufferedAmount,
    whenReadable: transport.whenReadable,
    tryRead: transport.tryRead === undefined ? undefined : (buffer) => {
      const n = transport.tryRead!(buffer)
      if (n > 0) hooks.onRead?.(buffer.subarray(0, n))
      return n
    },
    tryWrite: transport.tryWrite === undefined ? undefined : (buffers, owned) => {
      const taken = transport.tryWrite!(buffers, owned)
      if (taken) hooks.onWrite?.(buffers)
      return taken
    }
  })

/** One direction of a memory pair: bounded chunks in flight, with waiting readers and writers. */
class Pipe {
  /** The chunks in flight. */
  readonly chunks = new Ring<Uint8Array>()
  /** Offset into the first chunk already read. */
  head = 0
  buffered = 0
  ended = false
  broken = false
  /** The reader closed its end: what is written is dropped (as a closed socket that still reads), its reads end. */
  discarding = false
  readerWaiting: (() => void) | undefined = undefined
  readonly writersWaiting: Array<() => void> = []
  readonly highWaterMark: number
  constructor(highWaterMark: number) {
    this.highWaterMark = highWaterMark
  }
  // A waiting reader (a fiber, or a listener of `whenReadable` that runs a connection's reader
  // steps) is woken at once, inside the caller: the two ends of a busy pair would take turns
  // forever without the event loop turning, so past a budget the wake-up waits for it.
  wakeReader() {
    const wake = this.readerWaiting
    this.readerWaiting = undefined
    if (wake !== undefined) EventLoop.wake(wake)
  }
  wakeWriters() {
    while (this.writersWaiting.length > 0 && (this.buffered < this.highWaterMark || this.broken || this.ended || this.discarding)) {
      EventLoop.wake(this.writersWaiting.shift()!)
    }
  }
  /** Copies what is buffered into `buffer` (with `copy` when given); -1 when nothing is and the pipe is still open. */
  take(buffer: Uint8Array, copy?: Copy): number {
    if (this.buffered === 0) return this.ended || this.broken || this.discarding ? 0 : -1
    let n = 0
    while (n < buffer.length && this.chunks.size > 0) {
      const chunk = this.chunks.peek()!
      const count = Math.min(buffer.length - n, chunk.length - this.head)
      if (copy !== undefined) copy(chunk, this.head, this.head + count, buffer, n)
      else buffer.set(count === chunk.length ? chunk : chunk.subarray(this.head, this.head + count), n)
      n += count
      this.head += count
      if (this.head === chunk.length) {
        this.chunks.shift()
        this.head = 0
      }
    }
    this.buffered -= n
    this.wakeWriters()
    return n
  }
}

/** How long a closed end of a memory pair drops what its peer writes before its writes fail. */
const DISCARD_MS = 1000

const memoryEnd = (incoming: Pipe, outgoing: Pipe): Transport => {
  /** The listener set with `whenReadable`, as the pipe wakes it (a call deferred to a later turn is dropped once it is cleared or replaced). */
  let readable: (() => void) | undefined = undefined
  const whenReadable = (listener: (() => void) | undefined): void => {
    if (readable !== undefined && incoming.readerWaiting === readable) incoming.readerWaiting = undefined
    readable = undefined
    if (listener === undefined) return
    if (incoming.buffered > 0 || incoming.ended || incoming.broken || incoming.discarding) return listener()
    const wake = () => {
      if (readable !== wake) return
      readable = undefined
      listener()
    }
    readable = wake
    incoming.readerWaiting = wake
  }
  const read = (buffer: Uint8Array): Effect.Effect<number, TransportError> =>
    Effect.suspend(() => {
      const n = incoming.take(buffer)
      if (n >= 0) return Effect.succeed(n)
      return Effect.callback<number>((resume) => {
        // woken by a write, the end or the close: the bytes are taken at once (a wait that starts
        // with bytes there already, written since the look above, is woken at once)
        const onWake = () => {
          const m = incoming.take(buffer)
          if (m < 0) whenReadable(onWake)
          else resume(Effect.succeed(m))
        }
        whenReadable(onWake)
        return Effect.sync(() => whenReadable(undefined))
      })
    })
  const tryWrite = (buffers: ReadonlyArray<Uint8Array>, owned?: boolean): boolean => {
    if (outgoing.broken || outgoing.ended || outgoing.buffered >= outgoing.highWaterMark) return false
    if (!outgoing.discarding) push(buffers, owned)
    return true
  }
  const push = (buffers: ReadonlyArray<Uint8Array>, owned: boolean | undefined) => {
    let total = 0
    for (const buffer of buffers) total += buffer.length
    if (total === 0) return
    if (owned === true) {
      for (const buffer of buffers) if (buffer.length > 0) outgoing.chunks.push(buffer)
    } else {
      // the caller may reuse its memory once write completes: one copy of the whole write
      const copy = new Uint8Array(total)
      let offset = 0
      for (const buffer of buffers) {
        copy.set(buffer, offset)
        offset += buffer.length
      }
      outgoing.chunks.push(copy)
    }
    outgoing.buffered += total
    outgoing.wakeReader()
  }
  const write = (buffers: ReadonlyArray<Uint8Array>, owned?: boolean): Effect.Effect<void, TransportError> =>
    Effect.suspend(() => {
      if (outgoing.broken || outgoing.ended) {
        return Effect.fail(new TransportError({ message: "write after the transport was closed" }))
      }
      if (outgoing.discarding) return Effect.void
      if (outgoing.buffered >= outgoing.highWaterMark) {
        return Effect.flatMap(
          Effect.callback<void>((resume) => {
            // looked at again as the wait starts (the fiber may have yielded since): room made
            // meanwhile woke no one
            if (outgoing.buffered < outgoing.highWaterMark || outgoing.broken || outgoing.ended || outgoing.discarding) {
              return resume(Effect.void)
            }
            const wake = () => resume(Effect.void)
            outgoing.writersWaiting.push(wake)
            return Effect.sync(() => {
              const i = outgoing.writersWaiting.indexOf(wake)
              if (i >= 0) outgoing.writersWaiting.splice(i, 1)
            })
          }),
          () => write(buffers, owned)
        )
      }
      push(buffers, owned)
      return Effect.void
    })
  const end = Effect.sync(() => {
    outgoing.ended = true
    outgoing.wakeReader()
    outgoing.wakeWriters() // writes waiting for room now fail
  })
  // Closed, the end drops what its peer still writes for a moment, as a closed socket reads and
  // drops until its peer ends, for at most a second (so the peer's answer to a Close is not a
  // failed write), and then is gone: the peer's writes fail (destroyed, at once: a reset). A peer
  // that reads nothing learns this way that the end is gone.
  const shut = (broken: boolean) =>
    Effect.sync(() => {
      outgoing.ended = true
      outgoing.wakeReader()
      outgoing.wakeWriters()
      if (broken) {
        incoming.broken = true
      } else if (!incoming.discarding && !incoming.broken) {
        incoming.discarding = true
        const timer = setTimeout(() => {
          incoming.broken = true
          incoming.wakeWriters()
        }, DISCARD_MS)
        ;(timer as { unref?: () => void }).unref?.()
      }
      incoming.chunks.clear()
      incoming.head = 0
      incoming.buffered = 0
      incoming.wakeReader()
      incoming.wakeWriters()
    })
  const close = shut(false)
  const destroy = shut(true)
  const tryRead: TryRead = Object.assign((buffer: Uint8Array): number => incoming.take(buffer), {
    withCopy: (buffer: Uint8Array, copy: Copy): number => incoming.take(buffer, copy)
  })
  const bufferedAmount = (): number => outgoing.buffered
  return make({ read, write, end, close, destroy, tryWrite, tryRead, whenReadable, bufferedAmount })
}

/**
 * The `highWaterMark` of a memory pair as {@link makeMemoryPair} takes it: 64 KiB when absent, else
 * a whole number of bytes of at least 1, or `Infinity`; another value is an `InvalidParameter`.
 *
 * @category constructors
 * @since 0.1.0
 */
export const memoryHighWaterMark = (highWaterMark: number | undefined): Effect.Effect<number, InvalidParameter> =>
  highWaterMark === undefined
    ? Effect.succeed(64 * 1024)
    : decodeParameter(Options.ByteLimit("highWaterMark", 1, true), "highWaterMark", highWaterMark)

/**
 * Two transports connected in memory: what one writes, the other reads. Each direction buffers
 * at most `highWaterMark` bytes (default 64 KiB; at least 1, or `Infinity`) before writers wait,
 * so backpressure behaves as over a socket; another value is an `InvalidParameter`. As with a
 * socket, an end that was closed drops what its peer still writes for a second (the peer's reads
 * end), and then makes its writes fail, as one that was destroyed does at once. Closing the scope
 * closes both ends.
 *
 * **Example**
 *
 * ```ts
 * import { Effect } from "effect"
 * import { Transport } from "@effect-websocket/core"
 *
 * const program = Effect.gen(function*() {
 *   const [a, b] = yield* Transport.makeMemoryPair()
 *   yield* a.write([new TextEncoder().encode("hi")])
 *   const buffer = new Uint8Array(16)
 *   return yield* b.read(buffer) // 2
 * })
 * ```
 *
 * @category testing
 * @since 0.1.0
 */
export const makeMemoryPair = (
  options?: { readonly highWaterMark?: number | undefined }
): Effect.Effect<readonly [Transport, Transport], InvalidParameter, Scope> =>
  Effect.tap(makeMemoryEnds(options), ([a, b]) => Effect.addFinalizer(() => Effect.andThen(a.close, b.close)))

/**
 * {@link makeMemoryPair} for two sides with lives of their own: no scope closes the ends, each
 * side closes its own (`close` or `destroy`), as each side of a socket does. What one end wrote
 * before it closed stays for the other to read, as a socket's peer reads what was sent before the
 * end; a scope that closed both ends at once would discard what the other had not read yet.
 *
 * @category testing
 * @since 0.1.0
 */
export const makeMemoryEnds = (
  options?: { readonly highWaterMark?: number | undefined }
): Effect.Effect<readonly [Transport, Transport], InvalidParameter> =>
  Effect.map(memoryHighWaterMark(options?.highWaterMark), (highWaterMark) => {
    const ab = new Pipe(highWaterMark)
    const ba = new Pipe(highWaterMark)
    return [memoryEnd(ba, ab), memoryEnd(ab, ba)] as const
  })
