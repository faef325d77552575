/**
 * `Transport`s over Node.js streams: `net.Socket`, `tls.TLSSocket`, or any `Duplex`.
 *
 * Backpressure is real both ways: incoming data is buffered up to `highWaterMark` bytes, then the
 * socket is paused until the connection reads; outgoing data is buffered up to `writeBufferLimit`
 * bytes (copied, so the caller may reuse its memory at once, unless the caller gave the buffers
 * away), then writes wait for `drain`.
 *
 * @since 0.1.0
 */
import { Transport } from "@effect-websocket/core"
import { Effect } from "effect"
import * as Net from "node:net"
import type { Duplex } from "node:stream"
import { readIntoSharedBuffer } from "./internal/sharedReads.ts"

/**
 * How much a socket transport buffers each way (the client's and the server's `socketBuffers`).
 *
 * **Details**
 *
 * Both bounds are what makes backpressure work: a connection whose peer does not read stops
 * `send` once `writeBufferLimit` bytes wait, and a peer that sends faster than the application
 * reads is paused once `highWaterMark` bytes wait. Two peers that each answer every message from
 * the fiber that reads, with more bytes in flight than these buffers and the kernel's hold, wait on
 * each other; send from a fiber of its own, or raise `writeBufferLimit` above the bytes in flight
 * (`ws` never waits: its send buffer has no bound).
 *
 * @category models
 * @since 0.1.0
 */
export interface BufferOptions {
  /**
   * Bytes read ahead of the connection before the socket is paused. The read that reaches them may
   * bring more: what the stream delivers at once (up to 64 KiB from a socket read the usual way,
   * 256 KiB from one read into the shared buffer, see {@link fromDuplex}). Default 64 KiB.
   */
  readonly highWaterMark?: number | undefined
  /**
   * Bytes the socket may hold, written but not yet handed to the operating system, before writes
   * wait for it to drain. Default 1 MiB; a smaller value than the stream's own
   * `writableHighWaterMark` (16 KiB for sockets) acts as that mark.
   */
  readonly writeBufferLimit?: number | undefined
}

/**
 * Options of {@link fromDuplex}.
 *
 * @category models
 * @since 0.1.0
 */
export interface Options extends BufferOptions {
  /** Bytes that arrived before the transport was made (the `head` of an HTTP upgrade). */
  readonly head?: Uint8Array | undefined
}

/** Writes larger than this are not copied (a copy would cost more than waiting for Node). */
const COPY_LIMIT = 64 * 1024
/** Copied writes up to this size are gathered in the shared slab (see {@link sharedSlab}). */
const GATHER_LIMIT = 4 * 1024
const SLAB_SIZE = 16 * 1024
/** No slab: that of a transport that gathers nothing (nothing is ever written into it). */
const NO_SLAB = Buffer.alloc(0)
/**
 * The memory that the small writes of every transport of the thread are gathered in, as Node's own
 * pool hands out small buffers: a transport gathers the bytes of a tick where the last one stopped
 * ({@link sharedEnd}), and a new slab of {@link SLAB_SIZE} bytes replaces a full one. No part of a
 * slab is handed out twice (a socket keeps what it writes until it is written, and another stream
 * may keep it for good): a slab is freed once no part of it is referenced. A transport holds its
 * part only while it gathers, so an idle connection holds none.
 */
let sharedSlab: Buffer = NO_SLAB
/** Where the next part of {@link sharedSlab} starts. */
let sharedEnd = 0

/**
 * Frame memory that transports hand out (`allocate`) and take back once Node has written it:
 * buffers of {@link POOLED_SIZE} bytes (a 64 KiB chunk and the longest frame header), shared by
 * every transport of the process, at most {@link POOL_LIMIT} of them kept. A client masks large
 * messages into them, so a steady stream of large sends allocates nothing.
 *
 * Only sockets take part: once a socket's write is done the operating system (or TLS) has copied
 * the bytes, whereas other streams may pass the very buffer on to a reader that keeps it.
 */
const POOLED_SIZE = 64 * 1024 + 14 // RFC 6455 section 5.2: 2 + 8 (length) + 4 (masking key) header bytes
/** Requests from this size on are served from the pool (smaller ones come from Node's own pool). */
const POOLED_MIN = 16 * 1024
const POOL_LIMIT = 32
const pool: Array<ArrayBuffer> = []
/** The memory that came from the pool: only that goes back to it (other owned buffers may be the application's). */
const pooled = new WeakSet<ArrayBuffer>()

const allocate = (size: number): Uint8Array => {
  if (size < POOLED_MIN || size > POOLED_SIZE) return Buffer.allocUnsafe(size)
  let memory = pool.pop()
  if (memory === undefined) {
    memory = Buffer.allocUnsafeSlow(POOLED_SIZE).buffer as ArrayBuffer
    pooled.add(memory)
  }
  return new Uint8Array(memory, 0, size)
}

/** `write(buffer)`, giving `buffer`'s memory back to the pool once written when it came from there. */
const writeMaybePooled = (write: (buffer: Uint8Array, done?: () => void) => void, buffer: Uint8Array): void => {
  // small buffers (frame headers) skip the `buffer` getter and the lookup
  const memory = buffer.length < POOLED_MIN ? undefined : buffer.buffer as ArrayBuffer
  if (memory === undefined || !pooled.has(memory)) {
    write(buffer)
    return
  }
  write(buffer, () => {
    if (pool.length < POOL_LIMIT) pool.push(memory)
  })
}

/** What a write to a socket that closed fails with. */
const closedError = () => new Transport.TransportError({ message: "write after the socket was closed" })

/** The bytes of `buffers` together. */
const totalLength = (buffers: ReadonlyArray<Uint8Array>): number => {
  let total = 0
  for (let i = 0; i < buffers.length; i++) total += buffers[i]!.length
  return total
}

const toError = (cause: unknown, message: string) =>
  new Transport.TransportError({ message: cause instanceof Error ? `${message}: ${cause.message}` : message, cause })

/**
 * A chunk a stream delivered, as a `Buffer` over its memory (a socket's chunks are already): a view
 * of any kind, or an `ArrayBuffer`; `undefined` for a string or a value.
 */
const bytesOf = (chunk: unknown): Buffer | undefined => {
  if (Buffer.isBuffer(chunk)) return chunk
  if (ArrayBuffer.isView(chunk)) return Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength)
  if (chunk instanceof ArrayBuffer) return Buffer.from(chunk)
  return undefined
}

/** What a stream delivers instead of bytes, for an error message: `strings`, `Objects`, ... */
const describeChunk = (chunk: unknown): string =>
  typeof chunk === "string"
    ? "strings"
    : chunk === null
    ? "null"
    : typeof chunk === "object"
    ? `${chunk.constructor?.name ?? "object"}s`
    : `${typeof chunk}s`

/**
 * A transport over a connected `Duplex` (a `net.Socket`, a `tls.TLSSocket`, ...). The transport
 * takes the stream over: it listens for `data`, `end`, `error` and `close`, makes it half-open
 * (`allowHalfOpen`: the peer's end ends reading only), and destroys the stream on `close`.
 *
 * Any stream will do: its chunks are read as bytes (a `Buffer`, any typed array or `DataView`, an
 * `ArrayBuffer`; a stream that delivers strings, one with an encoding set, or a view whose memory
 * was transferred away fails the transport with a `TransportError`), a write that throws fails
 * the transport as a write that reports an error does, and the bytes of a stream in object mode
 * are counted for `writeBufferLimit`.
 *
 * A `net.Socket` over TCP or IPC (not TLS) with nothing buffered, no encoding and no `data`
 * listener of its own is read without new memory per read, as with Node's `onread` option: every
 * such socket of the thread reads into one buffer of 256 KiB, whose bytes are copied straight into
 * the connection's buffers when it waits for them (else into memory the transport keeps until it
 * does). Its `data` events then no longer fire; its `end`, `error` and `close` events do.
 *
 * @category constructors
 * @since 0.1.0
 */
export const fromDuplex = (socket: Duplex, options?: Options): Transport.Transport => {
  const highWaterMark = options?.highWaterMark ?? 64 * 1024
  const bufferLimit = options?.writeBufferLimit ?? 1024 * 1024
  /**
   * The chunk being taken (from `head` on), then those that came after it. (Micro-optimisation:
   * a reader that keeps up finds one chunk at a time, and a queue of chunks cost an allocation
   * for nearly every chunk that went through it.)
   */
  let current: Buffer | undefined = undefined
  const later: Array<Buffer> = []
  let head = 0
  let buffered = 0
  let ended = false
  let failure: Transport.TransportError | undefined = undefined
  let wakeReader: (() => void) | undefined = undefined
  if (options?.head !== undefined && options.head.length > 0) {
    current = bytesOf(options.head)
    buffered = options.head.length
  }
  const wake = () => {
    const resume = wakeReader
    wakeReader = undefined
    resume?.()
  }
  /** Whether the transport was closed: what still arrives is dropped (see `close`). */
  let discarding = false
  /**
   * How many of our `socket.write` calls are running. A stream that is not a socket (an in-process
   * peer) may deliver its answer from inside our write: the reader is then woken once the tick
   * ends, not in the middle of the write's bookkeeping (it would write again from there).
   */
  let writing = 0
  let wakeScheduled = false
  const wakeAfterWrites = () => {
    wakeScheduled = false
    wake()
  }
  /** Takes bytes that arrived: buffered for the reader, which is woken. */
  const arrived = (chunk: Buffer): void => {
    if (current === undefined) current = chunk
    else later.push(chunk)
    buffered += chunk.length
    // A waiting reader takes the bytes at once (it runs in `wake`): the socket is paused only when
    // they stay, so that a reader that keeps up never stops Node's read loop.
    if (writing === 0) wake()
    else if (!wakeScheduled) {
      wakeScheduled = true
      process.nextTick(wakeAfterWrites)
    }
    if (buffered >= highWaterMark && !socket.isPaused()) socket.pause()
  }
  socket.on("data", (given: unknown) => {
    // (what a stream still delivers once the transport failed would follow bytes that are lost)
    if (discarding || failure !== undefined) return
    let chunk: Buffer | undefined
    try {
      chunk = bytesOf(given)
    } catch (cause) {
      // (a view whose memory was transferred away: its bytes are gone)
      return fail(toError(cause, "the stream delivered bytes that cannot be read"))
    }
    if (chunk === undefined) {
      const message = `the stream delivers ${describeChunk(given)}, not bytes (a stream with an encoding set, or in object mode)`
      return fail(new Transport.TransportError({ message }))
    }
    arrived(chunk)
  })
  // A TCP or pipe socket reads into memory shared by every such socket: a waiting reader copies
  // what it takes at once, and what it did not take is copied out before the next read overwrites it.
  readIntoSharedBuffer(socket, 1, (bytes) => {
    if (discarding || failure !== undefined) return
    arrived(bytes)
    // (untaken, the read is the chunk being taken or, behind others, the last one queued)
    if (current === bytes) {
      current = Buffer.from(bytes.subarray(head))
      head = 0
    } else if (later.length > 0 && later[later.length - 1] === bytes) {
      later[later.length - 1] = Buffer.from(bytes)
    }
  })
  socket.on("end", () => {
    ended = true
    wake()
  })
  socket.on("error", (cause) => {
    failure ??= toError(cause, "socket error")
    wake()
  })
  socket.on("close", () => {
    ended = true
    wake()
  })
  // The transport ends its side itself, once the closing handshake is done: a peer's FIN (or TLS
  // close_notify) must not end it first (Node's default for client and TLS sockets, and for any
  // stream made with `allowHalfOpen: false`), or the Close answering a peer that sent a broken
  // frame and its end at once could not be written.
  socket.allowHalfOpen = true
  // What happened before the transport took the stream over (a peer that ended, went away or
  // failed while the opening handshake was still being answered) is not emitted again: it is read
  // off the stream. Bytes that came before stay buffered in it and arrive first.
  if (socket.readableEnded || socket.destroyed) ended = true
  if (socket.errored !== null) failure ??= toError(socket.errored, "socket error")

  /**
   * Fails the transport (readers and writers get `error` once the bytes read before it are taken)
   * and releases the stream.
   */
  function fail(error: Transport.TransportError): void {
    failure ??= error
    dropGathered()
    try {
      socket.destroy()
    } catch {
      // (a stream whose destroy throws is released as far as it goes)
    }
    wake()
  }

  /**
   * The bytes written and not yet handed on by the stream. A stream in object mode counts its
   * writes, not their bytes, in `writableLength`: those are counted here, as they complete.
   */
  const objectMode = socket.writableObjectMode
  let objectModeBytes = 0
  const queuedBytes = (): number => objectMode ? objectModeBytes : socket.writableLength

  /**
   * `socket.write`; a write that throws (a stream's own code) fails the transport, as a write
   * that reports an error does, instead of throwing out of the caller (or out of the end of the tick).
   */
  function toSocket(buffer: Uint8Array, done?: (error?: Error | null) => void): boolean {
    let callback = done
    if (objectMode) {
      const length = buffer.length
      objectModeBytes += length
      callback = (error) => {
        objectModeBytes -= length
        done?.(error)
      }
    }
    writing++
    try {
      return socket.write(buffer, callback)
    } catch (cause) {
      fail(toError(cause, "write failed"))
      return true
    } finally {
      writing--
    }
  }

  /**
   * `socket.uncork()` or `socket.end()`, which hand the stream the writes it held (a corked
   * socket's, Node's own buffer): guarded as {@link toSocket}, since the stream's `write` runs in them.
   */
  function handOverHeld(call: "uncork" | "end"): void {
    writing++
    try {
      socket[call]()
    } catch (cause) {
      fail(toError(cause, "write failed"))
    } finally {
      writing--
    }
  }

  /** Copies buffered bytes into `buffer` (with `copy` when given); -1 when there are none yet. */
  const take = (buffer: Uint8Array, copy?: Transport.Copy): number => {
    if (buffered === 0) return ended || failure !== undefined ? 0 : -1
    let n = 0
    while (n < buffer.length && current !== undefined) {
      const chunk = current
      const count = Math.min(buffer.length - n, chunk.length - head)
      // (`Buffer#copy` makes no view of the part copied, as `subarray` would)
      if (copy !== undefined) copy(chunk, head, head + count, buffer, n)
      else chunk.copy(buffer, n, head, head + count)
      n += count
      head += count
      if (head === chunk.length) {
        current = later.length > 0 ? later.shift() : undefined
        head = 0
      }
    }
    buffered -= n
    if (buffered < highWaterMark && socket.isPaused()) socket.resume()
    return n
  }

  /** `take`, or -1 once the transport failed with nothing left to read (`read` then reports the failure). */
  const tryTake = (buffer: Uint8Array, copy?: Transport.Copy): number =>
    buffered === 0 && failure !== undefined ? -1 : take(buffer, copy)
  const tryRead: Transport.TryRead = Object.assign((buffer: Uint8Array): number => tryTake(buffer), { withCopy: tryTake })

  const whenReadable = (listener: (() => void) | undefined): void => {
    if (listener !== undefined && (buffered > 0 || ended || failure !== undefined)) {
      wakeReader = undefined
      return listener()
    }
    wakeReader = listener
    // a reader that waits gets what comes (see `take`: the socket is paused while bytes stay)
    if (listener !== undefined && socket.isPaused()) socket.resume()
  }

  /** The outcome of a read now: bytes taken, the end (0) or the failure; `undefined` while nothing came. */
  const readNow = (buffer: Uint8Array): Effect.Effect<number, Transport.TransportError> | undefined => {
    const n = tryRead(buffer)
    if (n >= 0) return Effect.succeed(n)
    return failure === undefined ? undefined : Effect.fail(failure)
  }

  const read = (buffer: Uint8Array): Effect.Effect<number, Transport.TransportError> =>
    Effect.suspend(() => {
      const ready = readNow(buffer)
      if (ready !== undefined) return ready
      return Effect.callback<number, Transport.TransportError>((resume) => {
        // woken by data, the end, an error or the close: the outcome is taken at once (a wait that
        // starts with one there already, since the look above, is woken at once)
        const onWake = () => {
          const outcome = readNow(buffer)
          if (outcome === undefined) whenReadable(onWake)
          else resume(outcome)
        }
        whenReadable(onWake)
        return Effect.sync(() => whenReadable(undefined))
      })
    })

  /**
   * Writes up to 64 KiB (a frame header and its payload, nearly always) are copied, so the write
   * completes at once once the socket's buffer holds at most `writeBufferLimit` bytes: frames
   * pipeline instead of waiting one event-loop turn each. Buffers the caller gives away (`owned`)
   * are not copied, whatever their size, and complete the same way. Other larger writes hand the
   * caller's memory to Node and complete when Node is done with it (interrupting that wait does
   * not take the bytes back).
   *
   * Micro-optimisation: small copied writes of a tick are gathered one after the other (in the
   * shared slab) and reach the socket as one buffer when the tick ends (one `socket.write` for many
   * frames), and the socket is corked from a tick's first larger write taken at once to the end of
   * the tick, or until it holds more than `writeBufferLimit` bytes, so that those writes reach the
   * operating system in one `writev` (a client's 1 MiB message is 16 frame parts) rather than one
   * system call each.
   */
  /** The gathered bytes not yet handed to the socket: `slab[gatheredStart, gatheredEnd)`. */
  let slab: Buffer = NO_SLAB
  let gatheredStart = 0
  let gatheredEnd = 0
  let flushScheduled = false
  /** Forgets the gathered bytes (and the slab they are in). */
  const dropGathered = () => {
    slab = NO_SLAB
    gatheredStart = gatheredEnd = 0
  }
  const flushGathered = () => {
    if (gatheredEnd === gatheredStart) return
    const bytes = slab.subarray(gatheredStart, gatheredEnd)
    dropGathered()
    // a socket destroyed meanwhile takes nothing more (the failure is already reported)
    if (!socket.destroyed) toSocket(bytes)
  }
  /** Whether the socket is corked until the tick ends (see `corkUntilEndOfTick`). */
  let corked = false
  /** Lets the held writes go. */
  const uncork = () => {
    corked = false
    handOverHeld("uncork")
  }
  /** Hands the socket the writes held back until the end of the tick: the gathered bytes, then the cork. */
  const releaseHeldWrites = () => {
    flushGathered()
    if (corked) uncork()
  }
  const endOfTick = () => {
    flushScheduled = false
    releaseHeldWrites()
  }
  const scheduleEndOfTick = () => {
    if (flushScheduled) return
    flushScheduled = true
    process.nextTick(endOfTick)
  }
  /** Holds the socket's writes until the tick ends, when they go out together. */
  const corkUntilEndOfTick = () => {
    if (corked) return
    corked = true
    socket.cork()
    scheduleEndOfTick()
  }
  /**
   * Lets the held writes go at once when they are more than `bufferLimit` bytes: the bytes of a tick
   * never make writes wait for `drain` (nor show in `bufferedAmount`) beyond what they did uncorked.
   */
  const uncorkWhenFull = () => {
    if (corked && queuedBytes() > bufferLimit) uncork()
  }
  /**
   * Whether writes must wait for `drain`: the socket holds more than `bufferLimit` bytes not yet
   * handed to the operating system, and Node said so (a `write` returned `false`, so `drain` comes).
   * The bytes gathered this tick (at most a slab) join them when the tick ends.
   */
  const mustWait = () => queuedBytes() > bufferLimit && socket.writableNeedDrain
  /** Copies `buffers` into one buffer (gathered until the tick ends when small) and writes it. */
  const copyAndWrite = (buffers: ReadonlyArray<Uint8Array>, total: number): void => {
    let target: Buffer
    let offset: number
    if (total <= GATHER_LIMIT) {
      // The gathered bytes grow while nothing was gathered after them and the slab has room; else
      // they go to the socket, held by the cork until the tick ends (the tick's writes still reach
      // the operating system together), and the next ones are gathered where the slab's free part starts.
      if (slab !== sharedSlab || gatheredEnd !== sharedEnd || sharedEnd + total > sharedSlab.length) {
        if (gatheredEnd > gatheredStart) {
          corkUntilEndOfTick()
          flushGathered()
          uncorkWhenFull()
        }
        if (sharedEnd + total > sharedSlab.length) {
          sharedSlab = Buffer.allocUnsafe(SLAB_SIZE)
          sharedEnd = 0
        }
        slab = sharedSlab
        gatheredStart = gatheredEnd = sharedEnd
      }
      target = slab
      offset = gatheredEnd
      gatheredEnd += total
      sharedEnd = gatheredEnd
      scheduleEndOfTick()
    } else {
      flushGathered()
      corkUntilEndOfTick()
      target = Buffer.allocUnsafe(total)
      offset = 0
    }
    for (let i = 0; i < buffers.length; i++) {
      target.set(buffers[i]!, offset)
      offset += buffers[i]!.length
    }
    if (target !== slab) {
      toSocket(target)
      uncorkWhenFull()
    }
  }

  /** Writes buffers given away by the caller as they are (Node keeps them until written), in one `writev`. */
  const writeOwned = (buffers: ReadonlyArray<Uint8Array>): void => {
    flushGathered()
    corkUntilEndOfTick()
    for (let i = 0; i < buffers.length; i++) writeMaybePooled(toSocket, buffers[i]!)
    uncorkWhenFull()
  }

  /**
   * Writes `buffers` without waiting when it can: small ones gathered, owned ones as they are,
   * others up to the copy limit copied. `false` for a larger write the caller did not give away.
   */
  const writeNow = (buffers: ReadonlyArray<Uint8Array>, owned: boolean | undefined): boolean => {
    const total = totalLength(buffers)
    if (total <= GATHER_LIMIT || (owned !== true && total <= COPY_LIMIT)) {
      copyAndWrite(buffers, total)
      return true
    }
    if (owned !== true) return false
    writeOwned(buffers)
    return true
  }

  const tryWrite = (buffers: ReadonlyArray<Uint8Array>, owned?: boolean): boolean => {
    if (failure !== undefined || socket.destroyed || !socket.writable || mustWait()) return false
    return writeNow(buffers, owned) && failure === undefined
  }

  /** Waits until the socket's buffer drains (or the socket closes: then fails). */
  const drained = Effect.callback<void, Transport.TransportError>((resume) => {
    // looked at again as the wait starts: the fiber may have yielded since `mustWait`, and a
    // `drain` or `close` emitted meanwhile would never come again
    if (socket.destroyed) return resume(Effect.fail(failure ?? closedError()))
    if (!mustWait()) return resume(Effect.void)
    const onDrain = () => {
      socket.off("close", onClose)
      resume(Effect.void)
    }
    const onClose = () => {
      socket.off("drain", onDrain)
      resume(Effect.fail(failure ?? closedError()))
    }
    socket.once("drain", onDrain)
    socket.once("close", onClose)
    return Effect.sync(() => {
      socket.off("drain", onDrain)
      socket.off("close", onClose)
    })
  })

  const write = (buffers: ReadonlyArray<Uint8Array>, owned?: boolean): Effect.Effect<void, Transport.TransportError> =>
    Effect.suspend(() => {
      if (failure !== undefined) return Effect.fail(failure)
      if (socket.destroyed || !socket.writable) return Effect.fail(closedError())
      // Bounded buffering: a write waits while the socket holds more than `bufferLimit` bytes not
      // yet handed to the operating system, then takes its buffers at once. Interrupted while it
      // waits, it took nothing; once taken, the bytes go out whole (what a frame needs).
      if (mustWait()) return Effect.andThen(drained, write(buffers, owned))
      if (writeNow(buffers, owned)) return failure === undefined ? Effect.void : Effect.fail(failure)
      return writeAndWait(buffers)
    })

  const writeAndWait = (buffers: ReadonlyArray<Uint8Array>): Effect.Effect<void, Transport.TransportError> =>
    Effect.callback<void, Transport.TransportError>((resume) => {
      flushGathered() // what was written before goes first
      const last = buffers.length - 1
      if (last > 0) socket.cork()
      let needDrain = false
      let written = false
      let drained = true
      const done = () => {
        if (written && drained) resume(Effect.void)
      }
      for (let i = 0; i <= last; i++) {
        const buffer = buffers[i]!
        if (i < last) {
          toSocket(buffer)
        } else {
          needDrain = !toSocket(buffer, (error) => {
            if (error) return resume(Effect.fail(toError(error, "write failed")))
            written = true
            done()
          })
        }
      }
      if (last > 0) handOverHeld("uncork")
      if (failure !== undefined) return resume(Effect.fail(failure))
      if (needDrain) {
        drained = false
        socket.once("drain", () => {
          drained = true
          done()
        })
      }
    })

  const end = Effect.sync(() => {
    if (socket.writableEnded) return
    flushGathered()
    handOverHeld("end")
  })

  /** Drops what was read and not taken, and what still arrives (see `discarding`). */
  const discardIncoming = () => {
    discarding = true
    current = undefined
    later.length = 0
    head = 0
    buffered = 0
  }

  /**
   * Flushes what is queued, sends FIN, and releases the socket once both sides are done: what we
   * wrote handed to the operating system, and the peer's side ended (at most a second later).
   * Meanwhile what the peer still sends is read and dropped: closing a socket with unread bytes
   * makes the operating system answer with a reset, and a reset can make the peer lose our last
   * frames (a Close) before its application has read them.
   */
  const close = Effect.sync(() => {
    if (socket.destroyed) return
    discardIncoming()
    const timer = setTimeout(() => socket.destroy(), 1000)
    timer.unref()
    socket.once("close", () => clearTimeout(timer))
    if (!socket.writableEnded) {
      flushGathered()
      handOverHeld("end")
    }
    let written = socket.writableFinished
    let peerEnded = socket.readableEnded || !socket.readable
    const release = () => {
      if (written && peerEnded) socket.destroy()
    }
    if (!written) {
      socket.once("finish", () => {
        written = true
        release()
      })
    }
    if (!peerEnded) {
      if (socket.isPaused()) socket.resume()
      socket.once("end", () => {
        peerEnded = true
        release()
      })
    }
    release()
  })

  /**
   * Releases the socket now, dropping what is read and what waits for room. Writes that already
   * completed (gathered until the end of the tick, or held by the cork) are handed to the socket
   * first, as `ws`'s `terminate()` does with what it wrote: over TCP a send that reported success
   * is not taken back by an abort in the same tick. (A TLS socket encrypts what it is handed
   * later: destroyed at once, it loses it, with `ws` as with Node's own `write` then `destroy`.)
   */
  const destroy = Effect.sync(() => {
    discardIncoming()
    releaseHeldWrites()
    socket.destroy()
  })

  return Transport.make({
    read,
    write,
    end,
    close,
    destroy,
    tryWrite,
    tryRead,
    whenReadable,
    allocate: socket instanceof Net.Socket ? allocate : undefined,
    // what the socket queues, and what this tick gathered for it
    bufferedAmount: () => queuedBytes() + gatheredEnd - gatheredStart
  })
}
