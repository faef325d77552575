/**
 * Codec benchmark: the sans-I/O frame engine of `@effect-websocket/core` next to the framing code
 * of the `ws` package (its `Receiver` stream and its `Sender`, writing to a socket that counts).
 *
 * For every frame size, direction (masked = client to server, unmasked = server to client), payload
 * type (text: mostly ASCII JSON with 2- to 4-byte code points; ascii: the same JSON in ASCII only;
 * binary) and operation (decode = receive, encode = send) each contender runs for a fixed time box,
 * alternating ours / ws, and the medians of the repetitions are printed.
 *
 * Masking: where the optional package `bufferutil` is installed (it is a devDependency here) both
 * contenders use its native loop for long frames; `--bufferutil=without` makes both mask in
 * JavaScript, as where it is not installed.
 *
 * Processes: the cases of each role run in a process of their own, as a server or a client is:
 * a server's (decode masked, encode unmasked), then a client's (decode unmasked, encode masked).
 * V8 compiles code for the paths it has seen run, so code that both roles share (both contenders'
 * own) is compiled in each for what that role does, not for both. `--processes=one` runs every
 * case in this process instead, as in a program that is a server and a client at once.
 *
 * Usage: `node codec.ts [--reps=N] [--time=MS] [--warmup=MS] [--filter=REGEX] [--contender=ours|ws|both]
 * [--bufferutil=without] [--processes=roles|one]` (`--filter` matches "op dir type size", e.g.
 * `--filter="decode masked text (16|125) B"`; `--contender=ours` is handy under `node --cpu-prof`,
 * with `--processes=one`). Defaults: 3 repetitions of 250 ms, a process per role.
 */
import { spawnSync } from "node:child_process"
import { webcrypto } from "node:crypto"
import { createRequire } from "node:module"
import type { Writable } from "node:stream"
import type { Engine } from "../packages/core/src/internal/engine/engine.ts"
import { applyBufferutilOption, argument, formatNumber, formatRatio, median, printTable, sizeLabel } from "./report.ts"

// (before ws and the engine are imported: both look for bufferutil when they are loaded)
applyBufferutilOption()
const ws = await import("ws")
const engineModule = await import("../packages/core/src/internal/engine/engine.ts")
const { HandleState } = await import("../packages/core/src/internal/engine/state.ts")
const { nativeMask } = await import("../packages/core/src/internal/runtime.ts")
const { MASK_INTO_NATIVE_THRESHOLD, MASK_NATIVE_THRESHOLD } = await import("../packages/core/src/internal/engine/mask.ts")
const { ActionRecord, Engine: EngineClass } = engineModule

// The driver loops below read the websocket.h constants through module-level aliases, as a fast
// driver does: V8 folds those, not reads through an imported binding (about 1 ns each).
const ActionCode = engineModule.ActionCode
const BufferTypeCode = engineModule.BufferTypeCode
const QueueCode = engineModule.QueueCode
const Status = engineModule.Status

// ws exports its Receiver and Sender classes but @types/ws does not declare them.
interface FrameOptions {
  readonly fin: boolean
  readonly generateMask: ((mask: Buffer) => void) | undefined
  readonly mask: boolean
  readonly maskBuffer: Buffer | undefined
  readonly opcode: number
  readonly readOnly: boolean
  readonly rsv1: boolean
}
interface ReceiverOptions {
  readonly isServer: boolean
  readonly binaryType: "nodebuffer"
  readonly maxPayload: number
  readonly skipUTF8Validation: boolean
  readonly allowSynchronousEvents: boolean
}
interface SendOptions {
  readonly binary: boolean
  readonly compress: boolean
  readonly fin: boolean
  readonly mask: boolean
}
interface CountingSocket {
  cork(): void
  uncork(): void
  write(chunk: Buffer): boolean
}
const { Receiver, Sender } = ws as unknown as {
  readonly Receiver: new(options: ReceiverOptions) => Writable
  readonly Sender: {
    new(socket: CountingSocket): { send(data: Buffer, options: SendOptions, cb: undefined): void }
    frame(data: Buffer, options: FrameOptions): Array<Buffer>
  }
}

// ---------------------------------------------------------------------------------------------
// Settings
// ---------------------------------------------------------------------------------------------

const REPS = Math.max(1, Number(argument("reps") ?? 3))
/** Timed milliseconds per measurement (one contender, one repetition). */
const TIME_MS = Math.max(10, Number(argument("time") ?? 250))
/** Timed milliseconds per contender and configuration in the warm-up round. */
const WARMUP_MS = Math.max(5, Number(argument("warmup") ?? 25))
const FILTER = argument("filter") === undefined ? undefined : new RegExp(argument("filter")!)
const CONTENDER = argument("contender") ?? "both"
/** `roles`: the cases of each role in a process of its own (see above); `one`: all in this process. */
const PROCESSES = argument("processes") ?? "roles"
/** Set in the process of one role: run that role's cases and report their samples to the parent. */
const ROLE = argument("role")
if (PROCESSES !== "roles" && PROCESSES !== "one") throw new Error(`--processes must be roles or one, got ${PROCESSES}`)
if (ROLE !== undefined && ROLE !== "server" && ROLE !== "client") throw new Error(`--role must be server or client, got ${ROLE}`)

/** Size of one transport read, as a socket delivers it. */
const CHUNK = 64 * 1024
const EMPTY = new Uint8Array(0)
/** Engine receive and send buffer size (the largest allowed: best throughput). */
const ENGINE_BUFFER = 65536
const MAX_MESSAGE = 100 * 1024 * 1024
/** Approximate payload bytes per pass (one pass = one timed slice). */
const PASS_BYTES = 1024 * 1024

const SIZES = [16, 125, 1024, 64 * 1024, 1024 * 1024]
const OPS = ["decode", "encode"] as const
const DIRS = ["masked", "unmasked"] as const
const TYPES = ["text", "ascii", "binary"] as const

type Op = (typeof OPS)[number]
type Dir = (typeof DIRS)[number]
type Type = (typeof TYPES)[number]

interface Config {
  readonly op: Op
  readonly dir: Dir
  readonly type: Type
  readonly size: number
  readonly label: string
}

/** Whose work a case is: a server decodes masked frames and encodes unmasked ones, a client the other way round. */
const roleOf = (op: Op, dir: Dir): "server" | "client" => (op === "decode") === (dir === "masked") ? "server" : "client"

const randomFill = (bytes: Uint8Array): void => {
  // getRandomValues fills at most 65536 bytes per call
  for (let o = 0; o < bytes.length; o += 65536) {
    webcrypto.getRandomValues(bytes.subarray(o, Math.min(bytes.length, o + 65536)))
  }
}

// ---------------------------------------------------------------------------------------------
// Payloads and wire data
// ---------------------------------------------------------------------------------------------

/** Mostly ASCII JSON-like text with 2-, 3- and 4-byte sequences. */
const TEXT_PATTERN = Buffer.from(
  "{\"user\":\"Zoë\",\"t\":\"日本😀\",\"id\":12345,\"text\":\"lorem ipsum dolor sit amet, Ångström café\"},",
  "utf8"
)

/** The same JSON-like text in ASCII only (as most JSON on the wire is). */
const ASCII_PATTERN = Buffer.from(
  "{\"user\":\"Zoe\",\"t\":\"abc:-)\",\"id\":12345,\"text\":\"lorem ipsum dolor sit amet, Angstrom cafe\"},",
  "utf8"
)

/** `size` bytes of valid UTF-8 text: the pattern repeated, cut at a code point, padded with spaces. */
const textPayload = (size: number, pattern: Buffer): Buffer => {
  const out = Buffer.alloc(size, 0x20)
  let o = 0
  while (o < size) {
    const n = Math.min(pattern.length, size - o)
    pattern.copy(out, o, 0, n)
    o += n
  }
  // back off to the start of a code point that does not fit completely
  let end = size
  let i = size - 1
  while (i >= 0 && (out[i]! & 0xc0) === 0x80) i--
  if (i >= 0) {
    const lead = out[i]!
    const length = lead < 0x80 ? 1 : lead < 0xe0 ? 2 : lead < 0xf0 ? 3 : 4
    if (i + length > size) end = i
  }
  out.fill(0x20, end)
  if (!Buffer.from(out.toString("utf8"), "utf8").equals(out)) throw new Error("text payload is not UTF-8")
  return out
}

const payloadFor = (type: Type, size: number): Buffer => {
  if (type === "text") return textPayload(size, TEXT_PATTERN)
  if (type === "ascii") return textPayload(size, ASCII_PATTERN)
  const out = Buffer.allocUnsafe(size)
  randomFill(out)
  return out
}

const framesPerPass = (size: number): number => Math.max(4, Math.floor(PASS_BYTES / size))

interface Wire {
  readonly frames: number
  /** Untouched copies of the transport chunks. */
  readonly pristine: ReadonlyArray<Buffer>
  /** The chunks handed out; restored from `pristine` before every pass (ws unmasks in place). */
  readonly chunks: ReadonlyArray<Buffer>
  readonly bytes: number
}

/** `frames` frames of `payload` (each with a fresh masking key when masked), cut into 64 KiB reads. */
const buildWire = (config: Config, payload: Buffer): Wire => {
  const frames = framesPerPass(config.size)
  const parts: Array<Buffer> = []
  const opcode = config.type === "binary" ? 2 : 1
  for (let i = 0; i < frames; i++) {
    const list = Sender.frame(payload, {
      fin: true,
      generateMask: undefined,
      mask: config.dir === "masked",
      maskBuffer: undefined,
      opcode,
      readOnly: true,
      rsv1: false
    })
    for (const part of list) parts.push(Buffer.from(part))
  }
  const wire = Buffer.concat(parts)
  const pristine: Array<Buffer> = []
  const chunks: Array<Buffer> = []
  for (let o = 0; o < wire.length; o += CHUNK) {
    const piece = wire.subarray(o, Math.min(wire.length, o + CHUNK))
    const a = Buffer.allocUnsafeSlow(piece.length)
    piece.copy(a)
    const b = Buffer.allocUnsafeSlow(piece.length)
    piece.copy(b)
    pristine.push(a)
    chunks.push(b)
  }
  return { frames, pristine, chunks, bytes: wire.length }
}

const restore = (wire: Wire): void => {
  for (let i = 0; i < wire.chunks.length; i++) wire.chunks[i]!.set(wire.pristine[i]!)
}

// ---------------------------------------------------------------------------------------------
// Contenders: each returns a "session" whose pass() runs one timed slice and returns the payload
// bytes the application got (decode) or the bytes handed to the transport (encode).
// ---------------------------------------------------------------------------------------------

interface Session {
  /** Frames processed per pass. */
  readonly frames: number
  readonly before?: () => void
  /** One timed slice: the pass `repeat` times (decode: always 1, the wire is restored in between). */
  readonly pass: (repeat: number) => void
  /** Whether several passes may run in one timed slice (encode). */
  readonly repeatable: boolean
  /** Messages delivered (decode) or frames sent (encode) so far, for a sanity check. */
  readonly count: () => number
  /** Message bytes the application got (decode) or bytes handed to the transport (encode). */
  readonly bytes: () => number
  /** Whether bytes() must be exactly frames x size (decode) rather than at least (encode). */
  readonly exactBytes: boolean
}

const fail = (what: string, engine: Engine): never => {
  throw new Error(`${what}: ${JSON.stringify(engine.lastError ?? engine.failure)}`)
}

const newEngine = (isClient: boolean): Engine => {
  const engine = new EngineClass({
    isClient,
    receiveBufferSize: ENGINE_BUFFER,
    sendBufferSize: ENGINE_BUFFER,
    disableMasking: false,
    disableUtf8Verification: false,
    maxMessageSize: MAX_MESSAGE,
    allocatedBuffer: undefined,
    randomFill
  })
  engine.state = HandleState.Open // as after the opening handshake
  return engine
}

/**
 * Ours, receive side. The masked direction is a server receiving from a client. Every transport
 * chunk is copied into the engine's ReceiveFromNetwork buffer (as a driver must; with the
 * handle's unmasking copy where it offers one, as connections do). The consumer
 * gets every message whole: a message delivered in one chunk is used as is (a view into the
 * engine's buffer, like ws's zero-copy view into the socket buffer); the chunks of a message
 * delivered in several are copied into one new buffer, as ws concatenates fragments (and frames
 * that straddle transport reads) into a new Buffer.
 */
/** From this message size on, messages are received straight into their own buffer. */
const MIN_DIRECT_START = 8192

/** The least room added when the buffer of a message is full. */
const MIN_TAIL = 16 * 1024

const oursDecode = (config: Config, wire: Wire): Session => {
  const engine = newEngine(config.dir === "unmasked")
  const action = new ActionRecord()
  // The message being assembled from several chunks: a new buffer per message (the application
  // owns it, as with ws), sized from the previous message and doubled when too small.
  let accumulator: Uint8Array = EMPTY
  let accumulated = 0
  let sizeHint = 0
  /** Whether the pending receive was given the message buffer: data then arrives in place (as in the connection). */
  let inPlace = false
  let messages = 0
  let messageBytes = 0
  // the outstanding ReceiveFromNetwork action between passes
  let readId = 0
  let readBuffer: Uint8Array | undefined = undefined
  if (engine.receive(undefined, undefined) !== Status.Ok) fail("receive", engine)

  const pass = (): void => {
    const chunks = wire.chunks
    let ci = 0
    let chunk = chunks[0]!
    let offset = 0
    for (;;) {
      if (readBuffer !== undefined) {
        if (ci === chunks.length) return // everything delivered: keep the read outstanding
        const room = readBuffer.length
        const left = chunk.length - offset
        const n = left < room ? left : room
        // (as the connection does: a masked payload read straight into the message's buffer is
        // unmasked as it is copied, with the handle's copy)
        const copy = engine.copyForRead
        if (copy !== undefined) copy(chunk, offset, offset + n, readBuffer, 0)
        else readBuffer.set(n === chunk.length ? chunk : chunk.subarray(offset, offset + n), 0)
        offset += n
        if (offset === chunk.length) {
          ci++
          offset = 0
          if (ci < chunks.length) chunk = chunks[ci]!
        }
        const id = readId
        readBuffer = undefined
        if (engine.completeReceiveAction(id, n) !== Status.Ok) fail("completeAction(read)", engine)
      }
      if (engine.getAction(QueueCode.Receive, action) !== Status.Ok) fail("getAction", engine)
      switch (action.action) {
        case ActionCode.ReceiveFromNetwork:
          readId = action.id
          readBuffer = action.buffer0
          break
        case ActionCode.IndicateReceiveComplete: {
          const view = action.buffer0
          const type = action.bufferType
          if (type === BufferTypeCode.Utf8Message || type === BufferTypeCode.BinaryMessage) {
            if (accumulated === 0) {
              // one chunk: a view (of the engine's buffer, or of the message buffer it was read into)
              messageBytes += view.length
              if (inPlace) accumulator = EMPTY // that buffer is the message now
              else sizeHint = view.length
            } else {
              accumulated = append(view, accumulated)
              const message = accumulator.subarray(0, accumulated)
              messageBytes += message.length
              sizeHint = accumulated
              accumulator = EMPTY
              accumulated = 0
            }
            messages++
          } else {
            accumulated = append(view, accumulated)
          }
          if (engine.completeReceiveAction(action.id, 0) !== Status.Ok) fail("completeAction(deliver)", engine)
          // The rest of a message goes straight into its buffer (the websocket.h receive with an
          // application buffer), so large payloads are not copied through the engine's buffer.
          // When messages are large, the next one is received into a new buffer of the size of the
          // last one from its start: the engine then reads its header on its own and the payload
          // straight into that buffer.
          const into = accumulated === 0 ? start() : tail()
          inPlace = into !== undefined
          if (engine.receive(into, undefined) !== Status.Ok) fail("receive", engine)
          break
        }
        default:
          throw new Error(`unexpected action ${action.action}`)
      }
    }
  }

  /** The buffer for the next message when messages are large, `undefined` otherwise. */
  const start = (): Uint8Array | undefined => {
    if (sizeHint < MIN_DIRECT_START) return undefined
    if (accumulator.length < sizeHint) accumulator = Buffer.allocUnsafe(sizeHint)
    return accumulator
  }

  /** Room after the assembled part, grown when small. */
  const tail = (): Uint8Array => {
    if (accumulated === accumulator.length) grow(accumulated + MIN_TAIL)
    return accumulator.subarray(accumulated)
  }
  const grow = (need: number): void => {
    let capacity = 2 * Math.max(accumulator.length, 1)
    while (capacity < need) capacity *= 2
    const grown = Buffer.allocUnsafe(capacity)
    if (accumulated > 0) grown.set(accumulator.subarray(0, accumulated))
    accumulator = grown
  }

  const append = (view: Uint8Array, at: number): number => {
    const need = at + view.length
    // already in place: received into the tail
    if (inPlace) return need
    if (need > accumulator.length) {
      let capacity = at === 0 && sizeHint >= need ? sizeHint : 2 * Math.max(accumulator.length, view.length)
      while (capacity < need) capacity *= 2
      const grown = Buffer.allocUnsafe(capacity)
      if (at > 0) grown.set(accumulator.subarray(0, at))
      accumulator = grown
    }
    accumulator.set(view, at)
    return need
  }

  return { frames: wire.frames, before: () => restore(wire), pass, count: () => messages, bytes: () => messageBytes, exactBytes: true, repeatable: false }
}

/**
 * ws, receive side: a `Receiver` (the Writable that `WebSocket` feeds with socket data) gets each
 * transport chunk through `write`, as `socket.on("data")` does. ws validates text as UTF-8 and
 * emits one Buffer per message (fragments concatenated).
 */
const wsDecode = (config: Config, wire: Wire): Session => {
  const receiver = new Receiver({
    isServer: config.dir === "masked",
    binaryType: "nodebuffer",
    maxPayload: MAX_MESSAGE,
    skipUTF8Validation: false,
    allowSynchronousEvents: true
  })
  let messages = 0
  let messageBytes = 0
  receiver.on("message", (data: Buffer) => {
    messages++
    messageBytes += data.length
  })
  receiver.on("error", (error: Error) => {
    throw error
  })
  const pass = (): void => {
    const chunks = wire.chunks
    for (let i = 0; i < chunks.length; i++) receiver.write(chunks[i]!)
  }
  return { frames: wire.frames, before: () => restore(wire), pass, count: () => messages, bytes: () => messageBytes, exactBytes: true, repeatable: false }
}

/**
 * Ours, send side: `send` then the send queue drained (SendToNetwork: the bytes of its one or two
 * buffers are counted, not copied; IndicateSendComplete). A client masks into its send buffer,
 * in actions of at most 64 KiB.
 */
const oursEncode = (config: Config, payload: Buffer): Session => {
  const engine = newEngine(config.dir === "masked")
  const action = new ActionRecord()
  const bufferType = config.type === "binary" ? BufferTypeCode.BinaryMessage : BufferTypeCode.Utf8Message
  const frames = framesPerPass(config.size)
  let sent = 0
  let wireBytes = 0
  const pass = (repeat: number): void => {
    for (let i = 0; i < frames * repeat; i++) {
      if (engine.send(bufferType, payload, undefined, undefined) !== Status.Ok) fail("send", engine)
      for (;;) {
        if (engine.getAction(QueueCode.Send, action) !== Status.Ok) fail("getAction", engine)
        if (action.action === ActionCode.SendToNetwork) {
          const n = action.bufferCount === 2 ? action.buffer0.length + action.buffer1.length : action.buffer0.length
          wireBytes += n
          if (engine.completeSendAction(action.id, n) !== Status.Ok) fail("completeAction(send)", engine)
        } else if (action.action === ActionCode.IndicateSendComplete) {
          if (engine.completeSendAction(action.id, 0) !== Status.Ok) fail("completeAction(complete)", engine)
          break
        } else {
          throw new Error(`unexpected action ${action.action}`)
        }
      }
      sent++
    }
  }
  return { frames, pass, count: () => sent, bytes: () => wireBytes, exactBytes: false, repeatable: true }
}

/**
 * ws, send side: its `Sender#send` (what `WebSocket#send` calls for a Buffer: framing, a masked
 * payload masked into a new buffer, then `cork` / `write` / `uncork` on the socket) writing to a
 * socket that counts the bytes. Masking keys come from ws's default pooled `randomFillSync`.
 */
const wsEncode = (config: Config, payload: Buffer): Session => {
  const binary = config.type === "binary"
  const mask = config.dir === "masked"
  const frames = framesPerPass(config.size)
  let sent = 0
  let wireBytes = 0
  // ws's own sender (`Sender#send`, what `WebSocket#send` calls) writing to a socket that only
  // counts: the same work as ours, from the message to buffers handed to the transport.
  const socket = {
    cork: () => {},
    uncork: () => {},
    write: (chunk: Buffer) => {
      wireBytes += chunk.length
      return true
    }
  }
  const sender = new Sender(socket)
  const options = { binary, compress: false, fin: true, mask }
  const pass = (repeat: number): void => {
    for (let i = 0; i < frames * repeat; i++) {
      sender.send(payload, options, undefined)
      sent++
    }
  }
  return { frames, pass, count: () => sent, bytes: () => wireBytes, exactBytes: false, repeatable: true }
}

// ---------------------------------------------------------------------------------------------
// Measurement
// ---------------------------------------------------------------------------------------------

interface Sample {
  readonly framesPerSecond: number
  readonly megabytesPerSecond: number
}

const yieldToLoop = (): Promise<void> => new Promise((resolve) => setImmediate(resolve))

/** Minimum length of one timed slice, so that the clock reads stay negligible. */
const MIN_SLICE = 1_000_000n

/** Runs timed slices until `budgetMs` of timed work; untimed preparation between slices. */
const measure = async (session: Session, size: number, budgetMs: number): Promise<Sample> => {
  const budget = BigInt(Math.round(budgetMs * 1e6))
  let elapsed = 0n
  let expected = 0
  let repeat = 1
  const start = session.count()
  const startBytes = session.bytes()
  while (elapsed < budget) {
    session.before?.()
    const t0 = process.hrtime.bigint()
    session.pass(repeat)
    const slice = process.hrtime.bigint() - t0
    elapsed += slice
    expected += session.frames * repeat
    if (session.repeatable && slice < MIN_SLICE) repeat *= 2
  }
  const frames = session.count() - start
  if (frames !== expected) {
    throw new Error(`expected ${expected} messages, got ${frames}`)
  }
  // decode: every message arrives whole; encode: at least the payloads went out
  const bytes = session.bytes() - startBytes
  if (session.exactBytes ? bytes !== frames * size : bytes < frames * size) {
    throw new Error(`expected ${frames * size} bytes, got ${bytes}`)
  }
  await yieldToLoop() // let stream bookkeeping scheduled with nextTick run
  const seconds = Number(elapsed) / 1e9
  return { framesPerSecond: frames / seconds, megabytesPerSecond: (frames * size) / seconds / 1e6 }
}

interface Inputs {
  readonly payload: Buffer
  readonly wire: Wire | undefined
}

const prepare = (config: Config): Inputs => {
  const payload = payloadFor(config.type, config.size)
  return { payload, wire: config.op === "decode" ? buildWire(config, payload) : undefined }
}

const session = (contender: "ours" | "ws", config: Config, inputs: Inputs): Session => {
  if (config.op === "decode") {
    return contender === "ours" ? oursDecode(config, inputs.wire!) : wsDecode(config, inputs.wire!)
  }
  return contender === "ours" ? oursEncode(config, inputs.payload) : wsEncode(config, inputs.payload)
}

// ---------------------------------------------------------------------------------------------
// Main
// ---------------------------------------------------------------------------------------------

const describeWs = (): string => {
  const require = createRequire(import.meta.url)
  const version = (require("ws/package.json") as { version: string }).version
  const has = (name: string): boolean => {
    try {
      require.resolve(name)
      return true
    } catch {
      return false
    }
  }
  /** Whether `ws` finds `name` (resolved from where `ws` is, as `ws` requires it). */
  const hasFromWs = (name: string): boolean => {
    try {
      createRequire(require.resolve("ws")).resolve(name)
      return true
    } catch {
      return false
    }
  }
  const http = require("node:http") as { websocketMask?: unknown }
  const buffer = require("node:buffer") as { isUtf8?: unknown }
  const utf8 = typeof buffer.isUtf8 === "function"
    ? "JS loop below 24 B, buffer.isUtf8 from 24 B"
    : has("utf-8-validate")
    ? "JS loop below 32 B, utf-8-validate from 32 B"
    : "JS loop"
  const masking = typeof http.websocketMask === "function"
    ? "http.websocketMask from 24 B"
    : hasFromWs("bufferutil") && process.env.WS_NO_BUFFER_UTIL === undefined
    ? "bufferutil from 32/48 B"
    : "JS byte loop (bufferutil not used)"
  return `ws ${version}; UTF-8 validation: ${utf8}; masking: ${masking}`
}

const configs: Array<Config> = []
for (const op of OPS) {
  for (const dir of DIRS) {
    for (const type of TYPES) {
      for (const size of SIZES) {
        const label = `${op} ${dir} ${type} ${sizeLabel(size)}`
        if (ROLE !== undefined && roleOf(op, dir) !== ROLE) continue
        if (FILTER === undefined || FILTER.test(label)) configs.push({ op, dir, type, size, label })
      }
    }
  }
}

const contenders: ReadonlyArray<"ours" | "ws"> = CONTENDER === "ours" ? ["ours"] : CONTENDER === "ws" ? ["ws"] : ["ours", "ws"]

interface Row {
  readonly label: string
  readonly ours: Sample | undefined
  readonly ws: Sample | undefined
}

/** Measures `configs` in this process: the medians of each contender on each case. */
const measureAll = async (): Promise<Array<Row>> => {
  const inputs = new Map<Config, Inputs>()
  for (const config of configs) inputs.set(config, prepare(config))

  /** A short run of each contender on `config`, left out of the results. */
  const warmUp = async (config: Config): Promise<void> => {
    for (const contender of contenders) await measure(session(contender, config, inputs.get(config)!), config.size, WARMUP_MS)
  }

  // Warm-up: every code path of both contenders once, so that the measured rounds see settled
  // type feedback whatever their order.
  for (const config of configs) await warmUp(config)

  const rows: Array<Row> = []
  for (const config of configs) {
    const samples: Record<"ours" | "ws", Array<Sample>> = { ours: [], ws: [] }
    // each contender settles on this case first (the code it shares with other cases was last
    // compiled for those)
    await warmUp(config)
    for (let r = 0; r < REPS; r++) {
      for (const contender of contenders) {
        samples[contender].push(await measure(session(contender, config, inputs.get(config)!), config.size, TIME_MS))
      }
    }
    const summary = (list: Array<Sample>): Sample | undefined =>
      list.length === 0 ? undefined : {
        framesPerSecond: median(list.map((s) => s.framesPerSecond)),
        megabytesPerSecond: median(list.map((s) => s.megabytesPerSecond))
      }
    const row = { label: config.label, ours: summary(samples.ours), ws: summary(samples.ws) }
    rows.push(row)
    process.stderr.write(`  ${config.label}: ${formatRatio(row.ours?.framesPerSecond, row.ws?.framesPerSecond)}\n`)
  }
  return rows
}

/** Runs the cases of `role` in a new process of this benchmark (same options) and returns its rows. */
const measureRole = (role: "server" | "client"): Array<Row> => {
  const child = spawnSync(process.execPath, [...process.execArgv, process.argv[1]!, ...process.argv.slice(2), `--role=${role}`], {
    encoding: "utf8",
    stdio: ["ignore", "pipe", "inherit"],
    maxBuffer: 16 * 1024 * 1024
  })
  if (child.status !== 0) throw new Error(`the ${role}'s process failed (${child.status ?? child.signal})`)
  return JSON.parse(child.stdout) as Array<Row>
}

const main = async (): Promise<void> => {
  if (ROLE !== undefined) {
    process.stdout.write(JSON.stringify(await measureAll()))
    return
  }
  const started = performance.now()
  console.log(`node ${process.version}; ${describeWs()}`)
  console.log(`ours: masking: ${nativeMask === undefined ? "JavaScript word loop" : `bufferutil from ${MASK_INTO_NATIVE_THRESHOLD} B (send) / ${MASK_NATIVE_THRESHOLD} B (receive)`}`)
  console.log(
    `engine: receiveBufferSize ${ENGINE_BUFFER}, sendBufferSize ${ENGINE_BUFFER}; transport reads of ${CHUNK} B; ` +
      `${REPS} x ${TIME_MS} ms per contender and case; ` +
      (PROCESSES === "roles" ? "a process per role (server: decode masked, encode unmasked; client: the others)" : "one process")
  )

  const measured = PROCESSES === "roles" ? [...measureRole("server"), ...measureRole("client")] : await measureAll()
  const byLabel = new Map(measured.map((row) => [row.label, row]))

  console.log("")
  console.log(`codec (median of ${REPS}, ratio = ours / ws; > 1 means faster; MB = 10^6 payload bytes)`)
  const header = ["op", "dir", "type", "size", "ours MB/s", "ws MB/s", "ours fr/s", "ws fr/s", "ratio"]
  const table = configs.map((config) => {
    const { ours, ws } = byLabel.get(config.label)!
    return [
      config.op,
      config.dir,
      config.type,
      sizeLabel(config.size),
      formatNumber(ours?.megabytesPerSecond),
      formatNumber(ws?.megabytesPerSecond),
      formatNumber(ours?.framesPerSecond),
      formatNumber(ws?.framesPerSecond),
      formatRatio(ours?.framesPerSecond, ws?.framesPerSecond)
    ]
  })
  printTable(header, table, 4)
  console.log(`\ntotal ${((performance.now() - started) / 1000).toFixed(1)} s`)
}

await main()
