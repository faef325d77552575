/**
 * A small vocabulary for driving a session engine by hand in tests: build an engine, feed it wire
 * bytes in chosen pieces, collect what it delivers and what it writes, and check its failures.
 *
 * @since 0.1.0
 */
import { assert } from "@effect/vitest"
import {
  ActionCode,
  ActionRecord,
  BufferTypeCode,
  Engine,
  type EngineOptions,
  QueueCode,
  Status
} from "../../src/internal/engine/engine.ts"
import { FrameHeader, parseHeader } from "../../src/internal/engine/frame.ts"
import { applyMask } from "../../src/internal/engine/mask.ts"
import { HandleState } from "../../src/internal/engine/state.ts"
import * as Transport from "../../src/Transport.ts"
import { Arbitrary, Schema } from "effect"

// ---------------------------------------------------------------------------------------------
// Bytes
// ---------------------------------------------------------------------------------------------

/**
 * Bytes from a 32-bit seed (xorshift), for long random payloads without a generated array per
 * byte; without a period, so that bytes put in the wrong place show.
 */
export const seededBytes = (length: number, seed: number): Uint8Array => {
  const out = new Uint8Array(length)
  let x = seed | 1
  for (let i = 0; i < length; i++) {
    x ^= x << 13
    x ^= x >>> 17
    x ^= x << 5
    out[i] = x & 0xff
  }
  return out
}

/** Bytes from hex, whitespace ignored: `hex("81 05 48656c6c6f")`. */
export const hex = (s: string): Uint8Array =>
  Uint8Array.from(s.replace(/\s+/g, "").match(/../g) ?? [], (h) => parseInt(h, 16))

/** Lower-case hex of `bytes`, no separators. */
export const toHex = (bytes: Uint8Array): string => Buffer.from(bytes.buffer, bytes.byteOffset, bytes.length).toString("hex")

/** Accepts hex or bytes. */
export const bytesOf = (wire: string | Uint8Array): Uint8Array => typeof wire === "string" ? hex(wire) : wire

/** The concatenation of `parts`. */
export const concat = (parts: ReadonlyArray<Uint8Array>): Uint8Array => {
  let length = 0
  for (const part of parts) length += part.length
  const out = new Uint8Array(length)
  let offset = 0
  for (const part of parts) {
    out.set(part, offset)
    offset += part.length
  }
  return out
}

/** `length` bytes counting 0, 1, ..., 255, 0, ... (the payload of the RFC-style binary fixtures). */
export const counting = (length: number): Uint8Array => Uint8Array.from({ length }, (_, i) => i & 0xff)

export const utf8Encoder = new TextEncoder()
export const utf8 = (s: string): Uint8Array => utf8Encoder.encode(s)
const fatalDecoder = new TextDecoder("utf-8", { fatal: true })

/** Decodes `bytes` as UTF-8, throwing on invalid input. */
export const decodeUtf8 = (bytes: Uint8Array): string => fatalDecoder.decode(bytes)

/** Whether `bytes` is valid UTF-8 on its own. */
export const isUtf8 = (bytes: Uint8Array): boolean => {
  try {
    fatalDecoder.decode(bytes)
    return true
  } catch {
    return false
  }
}

// ---------------------------------------------------------------------------------------------
// Engines
// ---------------------------------------------------------------------------------------------

/** The masking key of the RFC 6455 section 5.7 masked examples. */
export const RFC_KEY = hex("37fa213d")

/** A `randomFill` that repeats `key`, so that every masking key drawn is `key`. */
export const repeatKey = (key: Uint8Array) => (bytes: Uint8Array): void => {
  for (let i = 0; i < bytes.length; i++) bytes[i] = key[i & 3]!
}

export type EngineOverrides = { -readonly [K in keyof EngineOptions]?: EngineOptions[K] }

/** An engine in the `Open` state, as after the handshake; masking keys are {@link RFC_KEY} by default. */
export const makeEngine = (isClient: boolean, overrides: EngineOverrides = {}): Engine => {
  const engine = new Engine({
    isClient,
    receiveBufferSize: 4096,
    sendBufferSize: isClient ? 4096 : 16,
    disableMasking: false,
    disableUtf8Verification: false,
    maxMessageSize: 64 * 1024 * 1024,
    allocatedBuffer: undefined,
    randomFill: repeatKey(RFC_KEY),
    ...overrides
  })
  engine.state = HandleState.Open
  return engine
}

export const makeClient = (overrides: EngineOverrides = {}): Engine => makeEngine(true, overrides)
export const makeServer = (overrides: EngineOverrides = {}): Engine => makeEngine(false, overrides)

// ---------------------------------------------------------------------------------------------
// Single actions
// ---------------------------------------------------------------------------------------------

/** One action handed out by `getAction`; `buffers` are the engine's live views. */
export interface Step {
  readonly status: Status
  readonly action: number
  readonly queue: number
  readonly bufferType: number
  readonly buffers: ReadonlyArray<Uint8Array>
  readonly closeStatus: number
  readonly context: unknown
  readonly id: number
}

const record = new ActionRecord()

/** Calls `getAction(queue)` once. */
export const next = (engine: Engine, queue: number = QueueCode.All): Step => {
  const status = engine.getAction(queue, record)
  const buffers = record.bufferCount === 0 ? [] : record.bufferCount === 1 ? [record.buffer0] : [record.buffer0, record.buffer1]
  return {
    status,
    action: record.action,
    queue: record.queue,
    bufferType: record.bufferType,
    buffers,
    closeStatus: record.closeStatus,
    context: record.context,
    id: record.id
  }
}

/** The bytes of a step's buffers, copied. */
export const stepBytes = (step: Step): Uint8Array => concat(step.buffers)

/** Asserts the step is `action` (and on `queue` when given). */
export const expectAction = (step: Step, action: number, queue?: number): Step => {
  assert.strictEqual(step.status, Status.Ok, "getAction succeeds")
  assert.strictEqual(step.action, action, `action ${step.action}, expected ${action}`)
  if (queue !== undefined) assert.strictEqual(step.queue, queue, "queue")
  return step
}

/** Completes a step: all of its bytes for `SendToNetwork`, 0 otherwise, unless `bytes` is given. */
export const complete = (engine: Engine, step: Step, bytes?: number): void => {
  let n = bytes ?? 0
  if (bytes === undefined && step.action === ActionCode.SendToNetwork) for (const b of step.buffers) n += b.length
  const status = engine.completeAction(step.id, n)
  if (status !== Status.Ok) assert.fail(`completeAction: ${engine.lastError?.message}`)
}

// ---------------------------------------------------------------------------------------------
// Receive side
// ---------------------------------------------------------------------------------------------

/** One `IndicateReceiveComplete`, its data copied. */
export interface Delivery {
  readonly bufferType: number
  readonly data: Uint8Array
  readonly closeStatus: number
  readonly context: unknown
}

/** What a {@link feed} saw. */
export interface FeedResult {
  readonly deliveries: Array<Delivery>
  /** Bytes the receive queue wrote (automatic pongs). */
  readonly sent: Array<Uint8Array>
  /** Reads copied with the engine's `copyForRead` (see {@link FeedOptions.copies}). */
  unmaskingReads: number
  /** The status of a failing `getAction`, if any. */
  failed: Status | undefined
  /** The input left unread (not yet asked for by the engine). */
  unread: number
}

interface ReceiveSide {
  /** A ReceiveFromNetwork handed out and not completed. */
  read: Step | undefined
  receiving: boolean
  closed: boolean
}

const sides = new WeakMap<Engine, ReceiveSide>()

const sideOf = (engine: Engine): ReceiveSide => {
  let side = sides.get(engine)
  if (side === undefined) {
    side = { read: undefined, receiving: false, closed: false }
    sides.set(engine, side)
  }
  return side
}

export interface FeedOptions {
  /** Sizes of the pieces the wire is handed over in; the last one repeats. Default: one piece. */
  readonly chunks?: ReadonlyArray<number> | number | undefined
  /** Report the end of the transport once the wire is consumed. */
  readonly eof?: boolean | undefined
  /** An application receive buffer (copy mode). */
  readonly buffer?: Uint8Array | undefined
  /** The queue to drive the receive side on. Default: Receive. */
  readonly queue?: number | undefined
  /** Write automatic pongs waiting on the send queue as they appear (for `pongsOnSendQueue`). */
  readonly drivePongs?: boolean | undefined
  /**
   * Copy a read's bytes with the engine's `copyForRead` where it offers one, as a transport with
   * chunks of these sizes would (cycled over the reads: each read's bytes are cut in pieces of
   * the next size; 0 copies that read plainly). Default: every read copied plainly.
   */
  readonly copies?: ReadonlyArray<number> | undefined
}

/**
 * Feeds `wire` to `engine` in pieces: keeps one receive queued, answers `ReceiveFromNetwork` with
 * the next piece (as much of it as fits), writes automatic pongs, and collects every delivery,
 * until the engine wants bytes that are not there (that read stays outstanding for the next
 * call), a Close arrives, or `getAction` fails.
 */
export const feed = (engine: Engine, wire: string | Uint8Array, options: FeedOptions = {}): FeedResult => {
  const bytes = bytesOf(wire)
  const sizes = options.chunks === undefined ? [Math.max(bytes.length, 1)] : typeof options.chunks === "number" ? [options.chunks] : options.chunks
  const queue = options.queue ?? QueueCode.Receive
  const side = sideOf(engine)
  const result: FeedResult = { deliveries: [], sent: [], failed: undefined, unread: 0, unmaskingReads: 0 }
  let reads = 0
  let offset = 0
  let piece = 0
  let pieceLeft = Math.min(sizes[0]!, bytes.length)
  for (let guard = 0; guard < 10_000_000; guard++) {
    if (side.closed) break
    if (options.drivePongs === true && engine.pongWaiting) {
      const pongStep = next(engine, QueueCode.Send)
      if (pongStep.action !== ActionCode.NoAction) {
        expectAction(pongStep, ActionCode.SendToNetwork)
        assert.strictEqual(pongStep.bufferType, BufferTypeCode.PingPong, "only a pong is waiting on the send queue")
        result.sent.push(stepBytes(pongStep))
        complete(engine, pongStep)
      }
    }
    if (!side.receiving) {
      const status = engine.receive(options.buffer, guard)
      if (status !== Status.Ok) assert.fail(`receive: ${engine.lastError?.message}`)
      side.receiving = true
    }
    let step = side.read
    if (step === undefined) {
      step = next(engine, queue)
      if (step.status !== Status.Ok) {
        result.failed = step.status
        break
      }
    }
    switch (step.action) {
      case ActionCode.ReceiveFromNetwork: {
        if (offset === bytes.length) {
          if (options.eof === true) {
            side.read = undefined
            complete(engine, step, 0)
            continue
          }
          side.read = step
          result.unread = 0
          return result
        }
        side.read = undefined
        const target = step.buffers[0]!
        if (target.length === 0) assert.fail("a read gets room")
        if (pieceLeft === 0) {
          piece++
          pieceLeft = Math.min(sizes[Math.min(piece, sizes.length - 1)]!, bytes.length - offset)
        }
        const n = Math.min(pieceLeft, target.length)
        const copy = options.copies === undefined ? undefined : engine.copyForRead
        const pieceSize = options.copies === undefined ? 0 : options.copies[reads++ % options.copies.length]!
        if (copy !== undefined && pieceSize > 0) {
          result.unmaskingReads++
          for (let at = 0; at < n; at += pieceSize) copy(bytes, offset + at, offset + Math.min(n, at + pieceSize), target, at)
        } else {
          target.set(bytes.subarray(offset, offset + n), 0)
        }
        offset += n
        pieceLeft -= n
        complete(engine, step, n)
        continue
      }
      case ActionCode.SendToNetwork: {
        result.sent.push(stepBytes(step))
        complete(engine, step)
        continue
      }
      case ActionCode.IndicateReceiveComplete: {
        const data = step.buffers[0]!.slice()
        result.deliveries.push({ bufferType: step.bufferType, data, closeStatus: step.closeStatus, context: step.context })
        complete(engine, step)
        side.receiving = false
        if (step.bufferType === BufferTypeCode.Close) side.closed = true
        continue
      }
      case ActionCode.IndicateSendComplete: {
        complete(engine, step)
        continue
      }
      default:
        // (no action while pongs wait to be written: a driver of pongs writes them, then reads on)
        if (options.drivePongs === true && engine.pongWaiting) continue
        result.unread = bytes.length - offset
        return result
    }
  }
  result.unread = bytes.length - offset
  return result
}

const isDataType = (type: number): boolean => type >= BufferTypeCode.Utf8Message && type <= BufferTypeCode.BinaryFragment
const isTextType = (type: number): boolean => type === BufferTypeCode.Utf8Message || type === BufferTypeCode.Utf8Fragment
const isMessageEnd = (type: number): boolean => type === BufferTypeCode.Utf8Message || type === BufferTypeCode.BinaryMessage

/** A delivered message, chunks joined, or a control delivery. */
export type Received =
  | { readonly kind: "text" | "binary"; readonly data: Uint8Array; readonly chunks: number }
  | { readonly kind: "close"; readonly closeStatus: number; readonly data: Uint8Array }
  | { readonly kind: "pong"; readonly data: Uint8Array }

/**
 * Joins data chunks into messages, asserting the chunk types: `*Fragment` for every chunk but
 * the last of a message, `*Message` for the last, text and binary never mixed.
 */
export const messagesOf = (deliveries: ReadonlyArray<Delivery>): Array<Received> => {
  const out: Array<Received> = []
  let open: Array<Uint8Array> = []
  let openText: boolean | undefined = undefined
  for (const d of deliveries) {
    if (isDataType(d.bufferType)) {
      const text = isTextType(d.bufferType)
      if (openText !== undefined) assert.strictEqual(text, openText, "a message keeps its type across chunks")
      openText = text
      open.push(d.data)
      if (isMessageEnd(d.bufferType)) {
        out.push({ kind: text ? "text" : "binary", data: concat(open), chunks: open.length })
        open = []
        openText = undefined
      }
    } else if (d.bufferType === BufferTypeCode.Close) {
      out.push({ kind: "close", closeStatus: d.closeStatus, data: d.data })
    } else {
      assert.strictEqual(d.bufferType, BufferTypeCode.PingPong, "a control delivery is a Close or a Pong")
      out.push({ kind: "pong", data: d.data })
    }
  }
  assert.strictEqual(open.length, 0, "no message left open")
  return out
}

/** {@link messagesOf} without the chunk counts, for comparing deliveries split differently. */
export const contentOf = (deliveries: ReadonlyArray<Delivery>): Array<unknown> =>
  messagesOf(deliveries).map((m) =>
    m.kind === "close" ? { kind: m.kind, closeStatus: m.closeStatus, data: toHex(m.data) } : { kind: m.kind, data: toHex(m.data) }
  )

/** Asserts that the receive side failed with `status`, close code `closeStatus` and a message matching `message`. */
export const expectFailure = (
  engine: Engine,
  result: FeedResult,
  status: Status,
  closeStatus: number,
  message: RegExp
): void => {
  assert.strictEqual(result.failed, status, `getAction fails with status ${status}`)
  const failure = engine.failure
  assert.isDefined(failure)
  assert.strictEqual(failure!.status, status)
  assert.strictEqual(failure!.closeStatus, closeStatus)
  assert.match(failure!.message, message)
  assert.strictEqual(engine.lastError?.status, status)
  assert.strictEqual(engine.lastError?.closeStatus, closeStatus)
  // sticky: the next getAction fails the same way
  const again = next(engine, QueueCode.Receive)
  assert.strictEqual(again.status, status, "the failure is sticky")
}

// ---------------------------------------------------------------------------------------------
// Send side
// ---------------------------------------------------------------------------------------------

/** What {@link drainSends} saw. */
export interface Drained {
  /** Everything written, in order. */
  readonly wire: Uint8Array
  /** The SendToNetwork actions, their bytes copied. */
  readonly writes: Array<{ readonly queue: number; readonly bufferType: number; readonly buffers: Array<Uint8Array> }>
  /** The application contexts of the IndicateSendComplete actions. */
  readonly completed: Array<unknown>
}

/** Runs `queue` (Send by default) until NoAction, writing every SendToNetwork in full. */
export const drainSends = (engine: Engine, queue: number = QueueCode.Send): Drained => {
  const writes: Drained["writes"] = []
  const completed: Array<unknown> = []
  for (let guard = 0; guard < 1_000_000; guard++) {
    const step = next(engine, queue)
    assert.strictEqual(step.status, Status.Ok, `getAction: ${engine.lastError?.message}`)
    if (step.action === ActionCode.NoAction) break
    if (step.action === ActionCode.SendToNetwork) {
      writes.push({ queue: step.queue, bufferType: step.bufferType, buffers: step.buffers.map((b) => b.slice()) })
    } else if (step.action === ActionCode.IndicateSendComplete) {
      completed.push(step.context)
    } else {
      assert.fail(`drainSends: unexpected action ${step.action}`)
    }
    complete(engine, step)
  }
  return { wire: concat(writes.flatMap((w) => w.buffers)), writes, completed }
}

/** Queues one send, asserting it is accepted. */
export const send = (
  engine: Engine,
  bufferType: number,
  payload?: Uint8Array | string,
  closeStatus?: number,
  context?: unknown
): void => {
  const data = typeof payload === "string" ? hex(payload) : payload
  const status = engine.send(bufferType, data, closeStatus, context)
  assert.strictEqual(status, Status.Ok, `send: ${engine.lastError?.message}`)
}

/** Queues one send and returns everything it wrote. */
export const sendAndDrain = (
  engine: Engine,
  bufferType: number,
  payload?: Uint8Array | string,
  closeStatus?: number
): Uint8Array => {
  send(engine, bufferType, payload, closeStatus)
  return drainSends(engine).wire
}

/** Asserts a call failed with `status` and a message matching `message`. */
export const expectRejected = (engine: Engine, status: Status, expected: Status, message: RegExp): void => {
  assert.strictEqual(status, expected, `status ${status}, expected ${expected}`)
  assert.strictEqual(engine.lastError?.status, expected)
  assert.match(engine.lastError!.message, message)
}

/** Asserts `engine.send(bufferType, payload, closeStatus)` fails with `expected` and a message matching `message`. */
export const expectSendRejected = (
  engine: Engine,
  expected: Status,
  message: RegExp,
  bufferType: number,
  payload?: Uint8Array,
  closeStatus?: number
): void => expectRejected(engine, engine.send(bufferType, payload, closeStatus, undefined), expected, message)

// ---------------------------------------------------------------------------------------------
// Frames on the wire
// ---------------------------------------------------------------------------------------------

/** One frame read back from the wire, payload unmasked. */
export interface WireFrame {
  readonly fin: boolean
  readonly rsv: number
  readonly opcode: number
  readonly masked: boolean
  readonly maskKey: Uint8Array
  readonly payload: Uint8Array
}

/** Splits `wire` into frames with `parseHeader`, asserting it holds whole, well-formed frames. */
export const parseFrames = (wire: Uint8Array): Array<WireFrame> => {
  const frames: Array<WireFrame> = []
  const header = new FrameHeader()
  let offset = 0
  while (offset < wire.length) {
    const n = parseHeader(header, wire, offset, wire.length)
    assert.isAbove(n, 0, `a whole, valid header at offset ${offset}`)
    const start = offset + n
    const end = start + header.payloadLength
    assert.isAtMost(end, wire.length, "the whole payload is on the wire")
    const payload = wire.slice(start, end)
    applyMask(payload, 0, payload.length, header.maskKey, 0)
    frames.push({
      fin: header.fin,
      rsv: header.rsv,
      opcode: header.opcode,
      masked: header.masked,
      maskKey: header.maskKey.slice(),
      payload
    })
    offset = end
  }
  return frames
}

/** An arbitrary integer from `minimum` to `maximum`. */
export const int = (minimum: number, maximum: number) =>
  Arbitrary.schema(Schema.Int.check(Schema.isBetween({ minimum, maximum })))

const EDGE_CODE_POINTS = [0x00, 0x7f, 0x80, 0x7ff, 0x800, 0xd7ff, 0xe000, 0xfffd, 0xffff, 0x10000, 0x10ffff]

/** A code point, by UTF-8 length class (ASCII, 2 bytes, 3 bytes without surrogates, astral), with the range edges over-represented. */
export const codePoint = Arbitrary.all([int(0, 4), int(0, 0x10ffff)]).pipe(
  Arbitrary.map(([kind, value]) => {
    switch (kind) {
      case 0:
        return value % 0x80
      case 1:
        return 0x80 + (value % (0x800 - 0x80))
      case 2: {
        const cp = 0x800 + (value % (0x10000 - 0x800))
        return cp >= 0xd800 && cp <= 0xdfff ? cp + 0x800 : cp
      }
      case 3:
        return 0x10000 + (value % 0x100000)
      default:
        return EDGE_CODE_POINTS[value % EDGE_CODE_POINTS.length]!
    }
  })
)


// ---------------------------------------------------------------------------------------------
// The unmasking copy (copyForRead, tryRead.withCopy)
// ---------------------------------------------------------------------------------------------

/** A client frame with its payload masked with `key` (4 bytes, none zero), built without the engine. */
export const maskedFrame = (opcode: number, payload: Uint8Array, key: ReadonlyArray<number>, fin = true): Uint8Array => {
  const length = payload.length
  const header: Array<number> = [(fin ? 0x80 : 0) | opcode]
  if (length < 126) header.push(0x80 | length)
  else if (length < 65536) header.push(0x80 | 126, length >>> 8, length & 0xff)
  else header.push(0x80 | 127, 0, 0, 0, 0, (length >>> 24) & 0xff, (length >>> 16) & 0xff, (length >>> 8) & 0xff, length & 0xff)
  header.push(...key)
  const out = new Uint8Array(header.length + length)
  out.set(header)
  for (let i = 0; i < length; i++) out[header.length + i] = payload[i]! ^ key[i & 3]!
  return out
}

/**
 * `transport` with its copying read counted: the reads made with a reader's copy, and the copies
 * to a place that is not a whole masking key from the buffer's start (handed on as they are).
 */
export const countingCopies = (transport: Transport.Transport) => {
  const counts = { copyingReads: 0, misaligned: 0 }
  const counted = Transport.make({
    ...transport,
    tryRead: Object.assign((buffer: Uint8Array) => transport.tryRead!(buffer), {
      withCopy: (buffer: Uint8Array, copy: Transport.Copy) => {
        counts.copyingReads++
        return transport.tryRead!.withCopy!(buffer, (source, start, end, target, targetStart) => {
          if ((targetStart & 3) !== 0) counts.misaligned++
          copy(source, start, end, target, targetStart)
        })
      }
    })
  })
  return { transport: counted, counts }
}

/**
 * Feeds a server handle's own reads from `wire` (a frame header, read before its payload) until it
 * offers its unmasking copy; returns that outstanding read and the bytes fed.
 */
export const readHeaderByHand = (server: Engine, wire: Uint8Array): { read: Step; offset: number } => {
  let offset = 0
  let read = expectAction(next(server, QueueCode.Receive), ActionCode.ReceiveFromNetwork)
  for (let i = 0; i < 10 && server.copyForRead === undefined; i++) {
    const room = read.buffers[0]!
    room.set(wire.subarray(offset, offset + room.length))
    offset += room.length
    complete(server, read, room.length)
    read = expectAction(next(server, QueueCode.Receive), ActionCode.ReceiveFromNetwork)
  }
  return { read, offset }
}
