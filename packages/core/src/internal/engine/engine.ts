/**
 * The sans-I/O session engine behind a websocket.h handle: `send` and `receive` queue operations,
 * `getAction` hands out the next thing the driver must do (write buffers, fill a buffer, report a
 * completion) and `completeAction` reports what the driver did. Frames are built and parsed here
 * (RFC 6455 section 5), with every receive-side rule of section 7.2 of the spec enforced.
 *
 * No effect import, no I/O, no clock, no exceptions: failures come back as {@link Status} codes,
 * with details in {@link Engine.failure}; views handed out stay valid until the matching
 * `completeAction`.
 *
 * @since 0.1.0
 */
import {
  CLOSE_CODE_ABSENT as CLOSE_CODE_ABSENTImport,
  encodeCloseBody,
  encodeHeader,
  encodeHeaderStart,
  FrameHeader,
  HeaderError,
  headerBytesMissing,
  isControlOpcode,
  isMaskedOf,
  isValidWireCloseCode,
  MASK_KEY_LENGTH,
  MAX_CLOSE_REASON_LENGTH as MAX_CLOSE_REASON_LENGTHImport,
  MAX_CONTROL_PAYLOAD as MAX_CONTROL_PAYLOADImport,
  MAX_HEADER_LENGTH as MAX_HEADER_LENGTHImport,
  MAX_LENGTH_16 as MAX_LENGTH_16Import,
  MAX_LENGTH_7 as MAX_LENGTH_7Import,
  Opcode as OpcodeImport,
  opcodeOf,
  parseCloseCode,
  parseHeader,
  rsvOf
} from "./frame.ts"
import { ActionCode as ActionCodeImport, ActionQueue as QueueCodeImport } from "../../Action.ts"
import { BufferType as BufferTypeCodeImport } from "../../BufferType.ts"
import type { Copy } from "../../Transport.ts"
import { isDetached, isResizable } from "../bytes.ts"
import { applyMask, copyRange, MASK_INTO_NATIVE_THRESHOLD, maskInto } from "./mask.ts"
import { HandleState as HandleStateImport, stateNames } from "./state.ts"
import { allocatePlainUninitialized, decodeUtf8, nativeIsUtf8 as nativeIsUtf8Import } from "../runtime.ts"
import {
  ASCII_WORDS_LIMIT as ASCII_WORDS_LIMITImport,
  completeBoundary,
  isValidUtf8,
  skipAscii,
  UTF8_ACCEPT as UTF8_ACCEPTImport,
  UTF8_IS_UTF8_THRESHOLD as UTF8_IS_UTF8_THRESHOLDImport,
  UTF8_REJECT as UTF8_REJECTImport,
  utf8Step
} from "./utf8.ts"

// Micro-optimisation: V8 does not fold a value read through an imported binding (each read is a
// cell load, plus a property load for the constant objects: about 1 ns, dozens per frame), but it
// folds module-level constants. The imported constants are read through these aliases.
const ActionCode = ActionCodeImport
const QueueCode = QueueCodeImport
const BufferTypeCode = BufferTypeCodeImport
const HandleState = HandleStateImport
type HandleState = HandleStateImport
const Opcode = OpcodeImport
const CLOSE_CODE_ABSENT = CLOSE_CODE_ABSENTImport
const MAX_CLOSE_REASON_LENGTH = MAX_CLOSE_REASON_LENGTHImport
const MAX_CONTROL_PAYLOAD = MAX_CONTROL_PAYLOADImport
const MAX_HEADER_LENGTH = MAX_HEADER_LENGTHImport
const MAX_LENGTH_7 = MAX_LENGTH_7Import
const MAX_LENGTH_16 = MAX_LENGTH_16Import
const UTF8_ACCEPT = UTF8_ACCEPTImport
const ASCII_WORDS_LIMIT = ASCII_WORDS_LIMITImport
const UTF8_IS_UTF8_THRESHOLD = UTF8_IS_UTF8_THRESHOLDImport
const UTF8_REJECT = UTF8_REJECTImport
const nativeIsUtf8 = nativeIsUtf8Import

// The websocket.h constants, from the public modules (plain values, no effect import).
export { ActionCode, ActionQueue as QueueCode } from "../../Action.ts"
export { BufferType as BufferTypeCode } from "../../BufferType.ts"

/**
 * Why a Close with `closeStatus` and the reason `data` may not be sent (RFC 6455 sections 5.5.1
 * and 7.4), or `undefined` when it may.
 */
export const closeFrameProblem = (closeStatus: number | undefined, data: Uint8Array): string | undefined => {
  if (closeStatus === undefined) {
    if (data.length > 0) return "a close reason needs a close status"
  } else if (!isValidWireCloseCode(closeStatus)) {
    return `close status ${closeStatus} may not be sent: use 1000-1003, 1007-1014 or 3000-4999`
  }
  if (data.length > MAX_CLOSE_REASON_LENGTH) {
    return `close reason is ${data.length} bytes, more than the ${MAX_CLOSE_REASON_LENGTH} allowed`
  }
  if (!isValidUtf8(data)) return "a close reason must be UTF-8"
  return undefined
}

/**
 * What an engine call returns: `Ok`, or the kind of failure (details in {@link Engine.failure} /
 * {@link Engine.lastError}).
 *
 * @since 0.1.0
 */
export const Status = {
  Ok: 0,
  /** `E_INVALID_PROTOCOL_OPERATION` */
  InvalidOperation: 1,
  /** `E_INVALID_PROTOCOL_FORMAT` */
  InvalidFormat: 2,
  /** `E_INVALIDARG` */
  InvalidParameter: 3
} as const

/**
 * One of the {@link Status} values.
 *
 * @since 0.1.0
 */
export type Status = (typeof Status)[keyof typeof Status]

/**
 * Why the engine failed the connection on the receive side: the HRESULT kind, the close code to
 * send (RFC 6455 section 7.4.1) and a message.
 *
 * @since 0.1.0
 */
export interface Failure {
  readonly status: Status
  readonly closeStatus: number
  readonly message: string
}

/**
 * The action {@link Engine.getAction} hands out, filled in place (one record per caller, reused).
 *
 * @since 0.1.0
 */
export class ActionRecord {
  /** An {@link ActionCode}. */
  action: number = ActionCode.NoAction
  /** The queue the action belongs to ({@link QueueCode}.Send or .Receive). */
  queue: number = 0
  /** A {@link BufferTypeCode}, or 0 when not applicable. */
  bufferType: number = 0
  /** Number of buffers: 0, 1 or 2. */
  bufferCount = 0
  buffer0: Uint8Array = EMPTY
  buffer1: Uint8Array = EMPTY
  /** The close status of a received Close (1005 when absent, 1006 when the transport ended). */
  closeStatus = 0
  /** The application context of the send or receive this action belongs to. */
  context: unknown = undefined
  /** The action context: pass it to `completeAction`. */
  id = 0
  /**
   * SendToNetwork: the buffers were made for this action only (see {@link Engine.allocateFrame}):
   * the engine never touches them again, so the driver may hand them to the transport to keep.
   */
  owned = false
}

/**
 * The configuration of an engine, from the decoded handle properties.
 *
 * @since 0.1.0
 */
export interface EngineOptions {
  readonly isClient: boolean
  readonly receiveBufferSize: number
  readonly sendBufferSize: number
  readonly disableMasking: boolean
  readonly disableUtf8Verification: boolean
  readonly maxMessageSize: number
  readonly allocatedBuffer: Uint8Array | undefined
  /** Fills a buffer with cryptographically strong random bytes (masking keys). */
  readonly randomFill: (bytes: Uint8Array) => void
  /**
   * Hand out automatic pongs on the send queue only (see {@link Engine.pongWaiting}), for drivers
   * that serialize every network write through their send loop. Default: the receive queue, as
   * websocket.h does.
   */
  readonly pongsOnSendQueue?: boolean | undefined
}

const EMPTY = new Uint8Array(0)
const EMPTY_WORDS = new Int32Array(0)

/**
 * Free bytes kept in front of received data so that the tail of a text fragment that ends inside
 * a code point can be moved in front of the next fragment's payload and delivered with it.
 */
const RESERVE = 4

/** `bytes` as words (`words[k]` = `bytes[4k, 4k+4)`), when it is 4-aligned. */
const wordsOf = (bytes: Uint8Array): Int32Array | undefined =>
  (bytes.byteOffset & 3) === 0 ? new Int32Array(bytes.buffer, bytes.byteOffset, bytes.length >>> 2) : undefined
const CONTROL_FRAME_LENGTH = MAX_HEADER_LENGTH + MAX_CONTROL_PAYLOAD
/**
 * Automatic pongs that may wait to go out at once, so that a peer flooding pings and reading
 * nothing holds a bounded amount of memory. Beyond, the latest ping's pong takes the place of the
 * last one waiting (RFC 6455 section 5.5.3: an endpoint "MAY elect to send a Pong frame for only
 * the most recently processed Ping frame"). With pongs handed out on the send queue
 * (`pongsOnSendQueue`), the handle first waits for them to be written (the receive queue has no
 * action meanwhile), unless its driver says their writer waits (`coalescePongs`): a burst of pings
 * from a peer that reads is answered ping by ping.
 */
const MAX_WAITING_PONGS = 16
const KEY_POOL_SIZE = 4096
/**
 * The receive buffer a handle starts with (RESERVE included), when the receive buffer size is
 * larger: it grows to that size once a read fills it (the peer sends more than it holds). A
 * connection that stays idle or gets small messages so holds 4 KiB, not 64 KiB.
 */
const INITIAL_RECEIVE_BUFFER = 4096
/**
 * With {@link Engine.allocateFrame}, frames with payloads from this size on are handed out in
 * owned buffers (the transport keeps them, no copy); smaller ones from the handle's buffers: a
 * transport copies small writes anyway (the Node one gathers those up to 4 KiB into one write), so
 * a buffer of their own would be an allocation for nothing.
 */
const OWNED_PAYLOAD = 4096
/**
 * Masked data frames with payloads up to this many bytes are built whole when queued (see
 * `buildMaskedFrame`); from {@link MASK_INTO_NATIVE_THRESHOLD} bytes on, the native loop (where
 * `bufferutil` is installed) masks faster than the word loop there.
 */
const MAX_BUILT_PAYLOAD = MASK_INTO_NATIVE_THRESHOLD - 1
/** The header of a built frame: 2 bytes (4 with a 16-bit length, above {@link MAX_LENGTH_7} bytes) and the masking key. */
const SHORT_MASKED_HEADER = 6
const MEDIUM_MASKED_HEADER = 8
/**
 * Where the payload of a frame built whole starts in the send memory (which starts at a 4-byte
 * boundary): its masking key, right before it, and the payload are 4-byte aligned whatever the
 * header's length (the frame starts 2 bytes in with a 7-bit length, at the start with a 16-bit one).
 */
const BUILT_PAYLOAD_OFFSET = MEDIUM_MASKED_HEADER
/** The bytes of the send memory beyond the send buffer: a built frame of the largest payload the buffer allows takes them. */
const SEND_MEMORY_EXTRA = 2
/** The least chunk a text message is read straight into the caller's buffer in: room for whole code points. */
const MIN_DIRECT_TEXT = 8
/** After text that is not all ASCII, pieces checked without trying the ASCII skip first. */
const ASCII_PROBE_INTERVAL = 64
/** From this application buffer size on, headers are read on their own (see `receiveAction`). */
const DIRECT_HEADER_THRESHOLD = 8192

// Receive parser states.
const RS_HEADER = 0
const RS_PAYLOAD = 1
const RS_CONTROL = 2
const RS_FAILED = 3

// What the outstanding action of a queue is.
const OUT_NONE = 0
const OUT_SEND_FRAME = 1
const OUT_SEND_COMPLETE = 2
const OUT_RECEIVE_READ = 3
const OUT_RECEIVE_DELIVER = 4
const OUT_RECEIVE_DIRECT = 6
const OUT_PONG = 5

// Phases of the pending application send.
const SEND_IDLE = 0
const SEND_EMIT = 1
const SEND_COMPLETE = 2

// Who holds the wire while a frame goes out in several actions.
const WIRE_FREE = 0
const WIRE_SEND = 1

// Delivery kinds prepared by the parser.
const DELIVER_DATA = 0
const DELIVER_CONTROL = 1
const DELIVER_EOF = 2
const DELIVER_DIRECT = 3


/** Whether `n` is a whole number of bytes from 0 to `limit` (what a completion may report). */
const isByteCount = (n: number, limit: number): boolean => n >= 0 && n <= limit && Number.isInteger(n)

/**
 * One handle's protocol state machine.
 *
 * @since 0.1.0
 */
export class Engine {
  state: HandleState = HandleState.Created
  /** Pings received (each answered by an automatic pong). */
  pingsReceived = 0
  /** Set when the receive side failed the connection; sticky. */
  failure: Failure | undefined = undefined
  /** Details of the last failed call. */
  lastError: { readonly status: Status; readonly message: string; readonly closeStatus?: number } | undefined =
    undefined

  readonly isClient: boolean
  readonly verifyUtf8: boolean
  readonly maxMessageSize: number
  readonly receiveBufferSize: number
  readonly sendBufferSize: number
  /** Client: outgoing frames carry a key; zero when masking is disabled. */
  private readonly maskOutgoing: boolean
  private readonly zeroKey: boolean
  /** Server: incoming frames must be masked. */
  private readonly requireMasked: boolean
  private readonly randomFill: (bytes: Uint8Array) => void
  /** See {@link EngineOptions.pongsOnSendQueue}; a driver may switch it on when it takes over a handle. */
  pongsOnSendQueue: boolean
  /**
   * Where data frames are built. `undefined` (websocket.h): masked ones in the handle's send
   * buffer, which the next action reuses, after the handle's header buffer. A driver that does not
   * want to copy what it writes sets an allocator: for payloads of 4 KiB or more, each SendToNetwork
   * of a masked frame is then one new buffer (the header and the masked chunk together), and an
   * unmasked payload comes after a new header buffer; such actions are marked
   * {@link ActionRecord.owned}. The driver then promises that the payloads it sends are not
   * modified afterwards. Set while a frame is queued, it applies to that frame too.
   */
  get allocateFrame(): ((size: number) => Uint8Array) | undefined {
    return this.allocate
  }
  set allocateFrame(allocate: ((size: number) => Uint8Array) | undefined) {
    this.allocate = allocate
    // (a direct frame's SendToNetwork was set as the allocator then said: it is chosen again when handed out)
    if (!this.sendBuilt) this.sendReady = false
  }
  private allocate: ((size: number) => Uint8Array) | undefined = undefined

  // ---- memory ----
  /**
   * Receive buffer: RESERVE bytes, then up to receiveBufferSize bytes read from the network. It
   * starts at {@link INITIAL_RECEIVE_BUFFER} bytes and grows to `rcap` (see `growReceive`).
   */
  private rbuf: Uint8Array
  /** The memory of the receive buffer and where in it the buffer starts (see `receiveView`). */
  private rmemory: ArrayBufferLike
  private roffset: number
  /** The size the receive buffer may grow to: RESERVE + receiveBufferSize. */
  private readonly rcap: number
  /** The receive buffer as words (`rwords[k]` = `rbuf[4k, 4k+4)`), when it is 4-aligned. */
  private rwords: Int32Array | undefined
  /** Whether the outstanding read into the receive buffer was handed all of its free room. */
  private readToEnd = false
  /** Whether a read filled all the free room of a receive buffer that may still grow: the next one grows it. */
  private growReceive = false
  /** Text pieces until the next ASCII skip is tried (see `parse`). */
  private asciiProbeIn = 0
  /** Masked payload chunks of client data frames (4-byte aligned in its memory). */
  private readonly sbuf: Uint8Array
  /**
   * The send memory: {@link sbuf} and {@link SEND_MEMORY_EXTRA} bytes more, from a 4-byte boundary;
   * where masked data frames of up to {@link MAX_BUILT_PAYLOAD} bytes are built whole.
   */
  private readonly sendMemory: Uint8Array
  private readonly sendHeader = new Uint8Array(MAX_HEADER_LENGTH)
  /**
   * Where a control frame is built (made at the first one: the buffers a connection may never need
   * are made when first used, so that an idle one holds little).
   */
  private controlFrame: Uint8Array = EMPTY
  /** Where the pong answering a ping is built, before it is copied into a frame of its own (made at the first ping). */
  private pongFrame: Uint8Array = EMPTY
  /** Random bytes for masking keys (made at the first key: a server never needs them). */
  private keyPool: Uint8Array = EMPTY
  /** {@link keyPool} as 32-bit words, a key each. */
  private keyPoolWords: Int32Array = EMPTY_WORDS
  private keyPoolOffset = KEY_POOL_SIZE
  /** Masking key of the control frame being built (clients only: servers do not mask). */
  private readonly key: Uint8Array
  /** Masking key of the data frame being sent (it may go out in several actions; clients only). */
  private readonly sendKey: Uint8Array
  /** The view of `sbuf` handed out last. */
  private chunkView: Uint8Array = EMPTY
  /** The 32-bit words of {@link sendMemory} from a built frame's masking key on. */
  private readonly builtWords: Int32Array
  /** The view of {@link sendMemory} handed out last for a built frame. */
  private builtView: Uint8Array = EMPTY
  /** Micro-optimisation: views of the send header for each header length, each made at its first use (see `headerView`). */
  private readonly headerViews: Array<Uint8Array | undefined> = new Array(MAX_HEADER_LENGTH + 1)
  private nextId = 1

  // ---- send side ----
  private sendPhase = SEND_IDLE
  private sendType = 0
  private sendContext: unknown = undefined
  /** Whether the latest send to complete went out whole (see `sendWritten`). */
  private sendWhole = false
  private sendPayload: Uint8Array = EMPTY
  /**
   * The payload length the data frame's header declares: what goes out, whatever the caller's
   * view became since (a length-tracking view of a resizable buffer grows and shrinks with it);
   * 0 for a control frame, whose payload is copied when it is queued.
   */
  private sendLength = 0
  private sendOffset = 0
  private sendHeaderLength = 0
  private sendHeaderSent = false
  private sendDirect = false
  /** Whether the whole frame is in the send buffer already (see {@link buildMaskedFrame}). */
  private sendBuilt = false
  /** The longest payload {@link buildMaskedFrame} takes: -1 when frames are not masked. */
  private readonly maxBuiltPayload: number
  private sendIsControl = false
  private sendFrameLength = 0
  private sendOut = OUT_NONE
  private sendOutId = 0
  private sendOutBytes = 0
  private sendChunkLength = 0
  /**
   * Whether the pending frame's one SendToNetwork was set when it was queued (a frame built whole,
   * see `buildMaskedFrame`, or one that goes out direct, see `queueDirect`): its buffers.
   */
  private sendReady = false
  private readyBuffer0: Uint8Array = EMPTY
  private readyBuffer1: Uint8Array = EMPTY
  private readyCount = 0
  /** An application message is open: the last data send was a fragment of this kind (text or binary opcode). */
  private sendMessageOpcode = 0
  /** A SEND_TO_NETWORK completed short: the wire is corrupt, no further frames. */
  private sendBroken = false
  /** The open message's opcode before the pending data frame (see `queueDataFrame`). */
  private sendOpenBefore = 0
  private wireOwner = WIRE_FREE

  // ---- receive side ----
  private receivePending = false
  private receiveContext: unknown = undefined
  private receiveBuffer: Uint8Array | undefined = undefined
  private receiveOut = OUT_NONE
  private receiveOutId = 0
  private eof = false
  private readonly header = new FrameHeader()
  private rstate = RS_HEADER
  private rstart = RESERVE
  private rend = RESERVE
  /** Received payload bytes in [rstart, unmaskedEnd) are already unmasked and validated. */
  private unmaskedEnd = RESERVE
  private payloadRemaining = 0
  private payloadMaskOffset = 0
  private frameFin = false
  private frameMasked = false
  /** Opcode of the open received message (Text or Binary), 0 when none. */
  private messageOpcode = 0
  private messageSize = 0
  private utf8State = UTF8_ACCEPT
  /** Bytes of an incomplete code point at the end of a non-final text frame (made at the first one). */
  private carry: Uint8Array = EMPTY
  private carryLength = 0
  /** The pong frames waiting to go out, oldest first (at most {@link MAX_WAITING_PONGS}). */
  private readonly pongsWaiting: Array<Uint8Array> = []
  /** The pong frame handed out and not yet completed, if any. */
  private pongOut: Uint8Array | undefined = undefined
  // the prepared delivery
  private deliverKind = DELIVER_DATA
  /** Payload bytes read straight into the caller's receive buffer, waiting to be delivered. */
  private directLength = 0
  /** Room handed out with the outstanding ReceiveFromNetwork, in the receive buffer or the caller's. */
  private readRoom = 0
  /** Payload bytes the direct reads into the caller's buffer gather before they are delivered. */
  private directTarget = 0
  /** Whether `directTarget` is set by the size of a chunk rather than by the end of the frame. */
  private directCapped = false
  /** Bytes the latest direct read brought. */
  private directLastRead = 0
  /** The header length of the latest data frame: the guess for the next header read on its own. */
  private lastHeaderLength = 2 // the shortest header
  /** The view of the prepared delivery when validation already made it (see `parse`). */
  private deliverView: Uint8Array | undefined = undefined
  private deliverType = 0
  private deliverStart = 0
  private deliverEnd = 0
  private deliverCloseStatus = 0
  private deliverControlLength = 0

  constructor(options: EngineOptions) {
    this.isClient = options.isClient
    this.verifyUtf8 = !options.disableUtf8Verification
    this.maxMessageSize = options.maxMessageSize
    this.receiveBufferSize = options.receiveBufferSize
    this.sendBufferSize = options.sendBufferSize
    this.maskOutgoing = options.isClient
    this.zeroKey = options.isClient && options.disableMasking
    this.requireMasked = !options.isClient && !options.disableMasking
    this.randomFill = options.randomFill
    this.pongsOnSendQueue = options.pongsOnSendQueue === true
    this.key = this.maskOutgoing ? new Uint8Array(4) : EMPTY
    this.sendKey = this.maskOutgoing ? new Uint8Array(4) : EMPTY
    this.rcap = RESERVE + options.receiveBufferSize
    const allocated = options.allocatedBuffer
    let rbuf: Uint8Array
    const sendMemoryLength = options.sendBufferSize + SEND_MEMORY_EXTRA
    let sendMemory: Uint8Array
    if (allocated !== undefined) {
      rbuf = allocated.subarray(0, this.rcap)
      // (within the bytes an allocated buffer holds beyond the receive and send buffers)
      const send = this.rcap + ((-allocated.byteOffset - this.rcap) & 3)
      sendMemory = allocated.subarray(send, send + sendMemoryLength)
    } else {
      // (uninitialized: only the bytes read into it are ever looked at)
      rbuf = allocatePlainUninitialized(this.rcap < INITIAL_RECEIVE_BUFFER ? this.rcap : INITIAL_RECEIVE_BUFFER)
      sendMemory = this.isClient && !this.zeroKey ? new Uint8Array(sendMemoryLength) : EMPTY
    }
    this.sendMemory = sendMemory
    this.sbuf = sendMemory.subarray(0, options.sendBufferSize)
    // a built frame, header included, fits the send buffer, as every buffer the handle hands out
    const size = options.sendBufferSize
    this.maxBuiltPayload = this.maskOutgoing && !this.zeroKey
      ? Math.max(Math.min(MAX_LENGTH_7, size - SHORT_MASKED_HEADER), Math.min(MAX_BUILT_PAYLOAD, size - MEDIUM_MASKED_HEADER))
      : -1
    const key = BUILT_PAYLOAD_OFFSET - MASK_KEY_LENGTH
    this.builtWords = this.maxBuiltPayload < 0
      ? EMPTY_WORDS
      : new Int32Array(sendMemory.buffer, sendMemory.byteOffset + key, (sendMemoryLength - key) >>> 2)
    this.rbuf = rbuf
    this.rmemory = rbuf.buffer
    this.roffset = rbuf.byteOffset
    this.rwords = wordsOf(rbuf)
  }

  /** Makes `buffer` the receive buffer. */
  private useReceiveBuffer(buffer: Uint8Array): void {
    this.rbuf = buffer
    this.rmemory = buffer.buffer
    this.roffset = buffer.byteOffset
    this.rwords = wordsOf(buffer)
  }

  /**
   * The view of `rbuf[start, end)` as a plain `Uint8Array`, made from the memory directly
   * (micro-optimisation: `subarray` costs about 19 ns, this about 11, once per delivered message).
   * Unlike `subarray` it does not clamp: `0 <= start <= end <= rbuf.length` is the caller's to keep.
   */
  private receiveView(start: number, end: number): Uint8Array {
    return new Uint8Array(this.rmemory, this.roffset + start, end - start)
  }

  /**
   * The buffer of a ReceiveFromNetwork into the receive buffer: `rbuf[start, end)`, the view handed
   * out last when it is the same bytes (micro-optimisation: reads mostly ask for the same room, and
   * a view made for each was a fair part of what a large message allocates).
   */
  private readView(start: number, end: number): Uint8Array {
    const view = this.lastReadView
    if (view.byteOffset === this.roffset + start && view.length === end - start && this.lastReadMemory === this.rmemory) return view
    this.lastReadMemory = this.rmemory
    return this.lastReadView = this.receiveView(start, end)
  }
  private lastReadView: Uint8Array = EMPTY
  private lastReadMemory: ArrayBufferLike | undefined = undefined

  /**
   * Whether the latest send to complete (the one whose `IndicateSendComplete` is handed out, or was
   * last) went out whole; `false` when it was cancelled (the handle aborted, or a write that took
   * less than its action), as websocket.h reports both with the same action.
   */
  get sendWritten(): boolean {
    return this.sendWhole
  }

  /** Whether an automatic pong waits to be handed out (drivers with `pongsOnSendQueue` then run the send queue). */
  get pongWaiting(): boolean {
    return this.pongsWaiting.length > 0
  }

  /**
   * With `pongsOnSendQueue`: whether the receive queue waits for the automatic pongs to be written
   * (as many wait as may, see {@link MAX_WAITING_PONGS}) before it parses the next ping; it hands
   * out no action meanwhile.
   */
  get pongsBlockReading(): boolean {
    return this.pongsOnSendQueue && !this.coalescePongs && this.pongsWaiting.length >= MAX_WAITING_PONGS
  }

  /**
   * With `pongsOnSendQueue`: set by a driver whose pong writer waits (for the wire, or for a peer
   * that reads nothing), so that the handle reads on meanwhile, the latest ping's pong taking the
   * last place; cleared once the writer is done.
   */
  coalescePongs = false

  /**
   * Whether a fragmented message is open: a fragment was sent (or is being sent) and the final
   * frame was not. A data frame cancelled before any of it went out leaves this as it was.
   */
  get messageOpen(): boolean {
    return this.sendMessageOpcode !== 0
  }

  /** The name of the current state. */
  get stateName(): string {
    return stateNames[this.state]!
  }

  private error(status: Status, message: string, closeStatus?: number): Status {
    this.lastError = closeStatus === undefined ? { status, message } : { status, message, closeStatus }
    return status
  }

  /** Opens the session of a server whose handshake began (`WebSocketEndServerHandshake` done implicitly). */
  private ensureOpen(operation: string): Status {
    if (this.state === HandleState.HandshakeStarted && !this.isClient) this.state = HandleState.Open
    if (this.state >= HandleState.Open && this.state <= HandleState.Closed) return Status.Ok
    return this.error(Status.InvalidOperation, `${operation} is not allowed: ${this.why()}`)
  }

  private why(): string {
    switch (this.state) {
      case HandleState.Deleted:
        return "the handle was deleted"
      case HandleState.Aborted:
        return "the handle was aborted"
      case HandleState.Failed:
        return "the handshake failed; only abortHandle and deleteHandle are allowed"
      default:
        return `the handle is in state ${this.stateName} and the handshake is not complete`
    }
  }

  /** Fills `key` with the next masking key from the pooled random block (all zero without masking). */
  private nextKey(key: Uint8Array): Uint8Array {
    if (this.zeroKey) return key // stays all zero
    if (this.keyPoolOffset === KEY_POOL_SIZE) this.refillKeyPool()
    const pool = this.keyPool
    const o = this.keyPoolOffset
    key[0] = pool[o]!
    key[1] = pool[o + 1]!
    key[2] = pool[o + 2]!
    key[3] = pool[o + 3]!
    this.keyPoolOffset = o + 4
    return key
  }

  /** The next masking key as a 32-bit word, its bytes in memory as the key's (see {@link nextKey}). */
  private nextKeyWord(): number {
    if (this.keyPoolOffset === KEY_POOL_SIZE) this.refillKeyPool()
    const o = this.keyPoolOffset
    this.keyPoolOffset = o + 4
    return this.keyPoolWords[o >>> 2]!
  }

  /** New random bytes for the next keys. */
  private refillKeyPool(): void {
    if (this.keyPool.length === 0) {
      this.keyPool = new Uint8Array(KEY_POOL_SIZE)
      this.keyPoolWords = new Int32Array(this.keyPool.buffer)
    }
    this.randomFill(this.keyPool)
    this.keyPoolOffset = 0
  }

  // ------------------------------------------------------------------------------------------
  // WebSocketSend
  // ------------------------------------------------------------------------------------------

  /**
   * Queues one send (`WebSocketSend`). `payload` is the message data, the ping/pong payload, or the
   * UTF-8 close reason; `closeStatus` is the close code (undefined: empty Close body). The payload
   * must stay untouched until the matching `IndicateSendComplete`: a frame carries the length its
   * header declares, and a payload that lost bytes meanwhile (detached, shrunk) cancels its send,
   * but a buffer handed out from the caller's memory (an unmasked frame) is the caller's view
   * while it is written, as with `ws`.
   */
  send(bufferType: number, payload: Uint8Array | undefined, closeStatus: number | undefined, context: unknown): Status {
    const data = payload ?? EMPTY
    // Micro-optimisation: a whole message on an open handle with nothing outstanding (nearly every
    // send) passes every check of `sendChecked` in these few, and V8 can inline the lot.
    if (
      (bufferType === BufferTypeCode.BinaryMessage || bufferType === BufferTypeCode.Utf8Message) &&
      this.state === HandleState.Open && this.sendPhase === SEND_IDLE && !this.sendBroken && this.sendMessageOpcode === 0
    ) {
      const opcode = bufferType === BufferTypeCode.BinaryMessage ? Opcode.Binary : Opcode.Text
      if (this.goesDirect(data.length)) return this.queueDirect(bufferType, opcode, true, data, context, 0)
      return this.queueDataFrame(bufferType, opcode, true, data, context, 0)
    }
    return this.sendChecked(bufferType, data, closeStatus, context)
  }

  private sendChecked(bufferType: number, data: Uint8Array, closeStatus: number | undefined, context: unknown): Status {
    const open = this.ensureOpen("send")
    if (open !== Status.Ok) return open
    if (this.sendPhase !== SEND_IDLE) {
      return this.error(Status.InvalidOperation, "send is not allowed: another send is still outstanding")
    }
    if (this.sendBroken) {
      return this.error(Status.InvalidOperation, "send is not allowed: an earlier frame was only partly written")
    }
    let opcode: number
    let fin = true
    const openBefore = this.sendMessageOpcode
    switch (bufferType) {
      case BufferTypeCode.Utf8Message:
      case BufferTypeCode.Utf8Fragment:
      case BufferTypeCode.BinaryMessage:
      case BufferTypeCode.BinaryFragment: {
        if (this.state === HandleState.CloseSent || this.state === HandleState.Closed) {
          // "After sending a Close frame, the endpoint MUST NOT send any further data frames."
          return this.error(Status.InvalidOperation, "send is not allowed: a Close was already sent, only control frames may follow")
        }
        const kind = bufferType <= BufferTypeCode.Utf8Fragment ? Opcode.Text : Opcode.Binary
        if (this.sendMessageOpcode !== 0 && this.sendMessageOpcode !== kind) {
          return this.error(
            Status.InvalidOperation,
            `send is not allowed: a ${this.sendMessageOpcode === Opcode.Text ? "text" : "binary"} message is open, it cannot continue with ${kind === Opcode.Text ? "text" : "binary"}`
          )
        }
        opcode = this.sendMessageOpcode === 0 ? kind : Opcode.Continuation
        fin = bufferType === BufferTypeCode.Utf8Message || bufferType === BufferTypeCode.BinaryMessage
        this.sendMessageOpcode = fin ? 0 : kind
        break
      }
      case BufferTypeCode.Close: {
        if (this.state === HandleState.CloseSent || this.state === HandleState.Closed) {
          return this.error(Status.InvalidOperation, "send is not allowed: a Close was already sent")
        }
        const problem = closeFrameProblem(closeStatus, data)
        if (problem !== undefined) return this.error(Status.InvalidParameter, problem)
        opcode = Opcode.Close
        break
      }
      case BufferTypeCode.PingPong:
      case BufferTypeCode.UnsolicitedPong: {
        if (this.state === HandleState.Closed) {
          return this.error(Status.InvalidOperation, "send is not allowed: the closing handshake is complete")
        }
        if (data.length > MAX_CONTROL_PAYLOAD) {
          return this.error(
            Status.InvalidParameter,
            `a ${bufferType === BufferTypeCode.PingPong ? "ping" : "pong"} payload is at most ${MAX_CONTROL_PAYLOAD} bytes, got ${data.length}`
          )
        }
        opcode = bufferType === BufferTypeCode.PingPong ? Opcode.Ping : Opcode.Pong
        break
      }
      default:
        return this.error(Status.InvalidParameter, `0x${(bufferType >>> 0).toString(16)} is not a buffer type`)
    }
    if (!isControlOpcode(opcode)) {
      if (this.goesDirect(data.length)) return this.queueDirect(bufferType, opcode, fin, data, context, openBefore)
      return this.queueDataFrame(bufferType, opcode, fin, data, context, openBefore)
    }
    this.sendBuilt = false
    this.sendReady = false
    this.sendLength = 0
    if (this.controlFrame.length === 0) this.controlFrame = new Uint8Array(CONTROL_FRAME_LENGTH)
    this.buildControlFrame(this.controlFrame, opcode, data, closeStatus)
    if (opcode === Opcode.Close) {
      this.state = this.state === HandleState.CloseReceived ? HandleState.Closed : HandleState.CloseSent
    }
    this.queueFrame(bufferType, true, context)
    return Status.Ok
  }

  /**
   * Queues a data frame of `data` (a checked send); `openBefore` is the open message's opcode
   * before this frame (0: none), restored if the frame is cancelled before any of it went out.
   */
  private queueDataFrame(bufferType: number, opcode: number, fin: boolean, data: Uint8Array, context: unknown, openBefore: number): Status {
    this.sendOpenBefore = openBefore
    this.sendPayload = data
    this.sendLength = data.length
    this.sendReady = false
    if (data.length <= this.maxBuiltPayload) {
      this.buildMaskedFrame(opcode, fin, data)
    } else {
      const key = this.maskOutgoing ? this.nextKey(this.sendKey) : undefined
      this.sendHeaderLength = encodeHeader(this.sendHeader, 0, fin, 0, opcode, data.length, key)
      // Unmasked payloads (server, or a zero key) go out from the caller's memory: no copy.
      this.sendDirect = key === undefined || this.zeroKey
      this.sendBuilt = false
    }
    this.queueFrame(bufferType, false, context)
    return Status.Ok
  }

  /**
   * Writes a whole masked data frame with a payload of at most {@link MAX_BUILT_PAYLOAD} bytes
   * (the header, the masking key, then the payload masked: RFC 6455 section 5.3) into the send
   * memory, where it goes out from in one buffer.
   *
   * Micro-optimisation: one buffer (as `ws` merges a masked frame into one), and no header kept
   * apart to be copied or viewed later. The key and the payload are 4-byte aligned in memory
   * there: the key is taken and written as one 32-bit word, and the payload, copied, is masked a
   * word at a time (its last 0-3 bytes bytewise). Against writing the key and the masked payload
   * bytewise: masked 16-byte sends about 15 % faster, 125-byte ones about 30 %; against a header
   * apart and the chunk masked into the send buffer: 126- to 511-byte ones about 25 %.
   */
  private buildMaskedFrame(opcode: number, fin: boolean, data: Uint8Array): void {
    const memory = this.sendMemory
    const words = this.builtWords
    const keyWord = this.nextKeyWord()
    const length = data.length
    // (the payload first: one in the send memory itself is then read before it is written over; one
    // whose memory is gone, detached or out of bounds, reads as empty, and `set` would throw)
    if (length > 0) memory.set(data, BUILT_PAYLOAD_OFFSET)
    const start = length <= MAX_LENGTH_7 ? BUILT_PAYLOAD_OFFSET - SHORT_MASKED_HEADER : 0
    encodeHeaderStart(memory, start, fin, opcode, length, true)
    words[0] = keyWord
    const fullWords = length >>> 2
    for (let w = 1; w <= fullWords; w++) words[w] = words[w]! ^ keyWord
    // the last 0-3 bytes, with the key's first bytes (right before the payload)
    const tail = BUILT_PAYLOAD_OFFSET + (fullWords << 2)
    const end = BUILT_PAYLOAD_OFFSET + length
    const key = BUILT_PAYLOAD_OFFSET - MASK_KEY_LENGTH
    if (tail < end) memory[tail] = memory[tail]! ^ memory[key]!
    if (tail + 1 < end) memory[tail + 1] = memory[tail + 1]! ^ memory[key + 1]!
    if (tail + 2 < end) memory[tail + 2] = memory[tail + 2]! ^ memory[key + 2]!
    const frameLength = end - start
    this.sendFrameLength = frameLength
    this.sendDirect = false
    this.sendBuilt = true
    // Micro-optimisation: frames of the same size in a row reuse the view.
    // (a frame's length tells where it starts: 6-131 bytes 2 bytes in, longer ones at the start)
    if (this.builtView.length !== frameLength) this.builtView = memory.subarray(start, end)
    this.readyBuffer0 = this.builtView
    this.readyCount = 1
    this.sendOutBytes = frameLength
    this.sendReady = true
  }

  /**
   * Whether a data frame with a payload of `length` bytes goes out unmasked in one action whose
   * buffers are set when it is queued (see {@link queueDirect}): a server's, of up to 64 KiB (larger
   * ones take a 64-bit length; with `allocateFrame`, from {@link OWNED_PAYLOAD} bytes on the
   * header goes out in a buffer of its own).
   */
  private goesDirect(length: number): boolean {
    return !this.maskOutgoing && length <= MAX_LENGTH_16 && (this.allocate === undefined || length < OWNED_PAYLOAD)
  }

  /**
   * Queues an unmasked data frame that {@link goesDirect}: its header in the send header, its
   * SendToNetwork (that header, then `data` from the caller's memory, no copy) set already.
   *
   * Micro-optimisation: a server's whole send of a small message in a few lines, which V8 inlines
   * into `send`, and `getAction` hands out buffers set here instead of choosing how to emit the
   * frame (about 3 ns of about 40 a 16-byte message; more where a process also masks frames, as
   * a client, whose paths V8 then compiles into the same functions).
   */
  private queueDirect(bufferType: number, opcode: number, fin: boolean, data: Uint8Array, context: unknown, openBefore: number): Status {
    const total = data.length
    const h = encodeHeaderStart(this.sendHeader, 0, fin, opcode, total, false)
    this.sendOpenBefore = openBefore
    this.sendPayload = data
    this.sendLength = total
    this.sendHeaderLength = h
    this.sendDirect = true
    this.sendBuilt = false
    this.readyBuffer0 = this.headerView(h)
    this.readyBuffer1 = data
    this.readyCount = total > 0 ? 2 : 1
    this.sendChunkLength = total
    this.sendOutBytes = h + total
    this.sendReady = true
    this.queueFrame(bufferType, false, context)
    return Status.Ok
  }

  /** Makes the frame built for a send the pending one. */
  private queueFrame(bufferType: number, control: boolean, context: unknown): void {
    this.sendType = bufferType
    this.sendContext = context
    this.sendOffset = 0
    this.sendHeaderSent = false
    this.sendIsControl = control
    this.sendPhase = SEND_EMIT
  }

  /** Writes a whole control frame (header and payload) into `target`; sets sendFrameLength / pongLength. */
  private buildControlFrame(target: Uint8Array, opcode: number, data: Uint8Array, closeStatus: number | undefined): number {
    const bodyLength = opcode === Opcode.Close && closeStatus !== undefined ? 2 + data.length : data.length
    const key = this.maskOutgoing ? this.nextKey(this.key) : undefined
    const h = encodeHeader(target, 0, true, 0, opcode, bodyLength, key)
    if (opcode === Opcode.Close && closeStatus !== undefined) encodeCloseBody(target, h, closeStatus, data)
    else target.set(data, h)
    if (key !== undefined) applyMask(target, h, h + bodyLength, key, 0)
    const length = h + bodyLength
    if (target === this.controlFrame) this.sendFrameLength = length
    return length
  }

  // ------------------------------------------------------------------------------------------
  // WebSocketReceive
  // ------------------------------------------------------------------------------------------

  /**
   * Queues one receive (`WebSocketReceive`). With `buffer`, delivered data is copied there (at most
   * its length per chunk); without, delivered chunks are views into the engine's receive buffer.
   */
  receive(buffer: Uint8Array | undefined, context: unknown): Status {
    // Micro-optimisation: the open session's check inline, the rest out of line (see `sendAction`).
    if (this.state < HandleState.Open || this.state > HandleState.Closed) {
      const open = this.ensureOpen("receive")
      if (open !== Status.Ok) return open
    }
    if (this.receivePending) {
      return this.error(Status.InvalidOperation, "receive is not allowed: another receive is still outstanding")
    }
    if (this.state === HandleState.CloseReceived || this.state === HandleState.Closed) {
      return this.error(Status.InvalidOperation, "receive is not allowed: the peer's Close was already received")
    }
    if (buffer !== undefined && buffer.length === 0) {
      return this.error(Status.InvalidParameter, "a receive buffer must not be empty")
    }
    this.receivePending = true
    this.receiveContext = context
    this.receiveBuffer = buffer
    return Status.Ok
  }

  // ------------------------------------------------------------------------------------------
  // WebSocketAbortHandle
  // ------------------------------------------------------------------------------------------

  /** Aborts the session (`WebSocketAbortHandle`); a no-op before the handshake completed. */
  abort(): void {
    if (this.state >= HandleState.Open && this.state <= HandleState.Closed) this.state = HandleState.Aborted
  }

  // ------------------------------------------------------------------------------------------
  // WebSocketGetAction
  // ------------------------------------------------------------------------------------------

  /**
   * Fills `out` with the next action of `queue` (`WebSocketGetAction`). Returns a {@link Status}:
   * on the receive side a protocol violation by the peer fails with `InvalidFormat` or
   * `InvalidOperation`, and {@link Engine.failure} says why (sticky until the handle is aborted).
   */
  getAction(queue: number, out: ActionRecord): Status {
    out.action = ActionCode.NoAction
    out.owned = false
    out.bufferCount = 0
    out.bufferType = 0
    out.context = undefined
    out.id = 0
    out.queue = 0
    if (this.state < HandleState.Open || this.state >= HandleState.Failed) {
      const open = this.openForGetAction()
      if (open !== Status.Ok) return open
    }
    if ((queue & QueueCode.Send) !== 0 && this.sendAction(out)) return Status.Ok
    if ((queue & QueueCode.Receive) !== 0) return this.receiveAction(out)
    return Status.Ok
  }

  /** Whether a handle that is not open may hand out actions: a server's handle whose handshake began opens. */
  private openForGetAction(): Status {
    if (this.state < HandleState.HandshakeStarted || this.state >= HandleState.Failed) {
      return this.error(Status.InvalidOperation, `getAction is not allowed: ${this.why()}`)
    }
    return this.ensureOpen("getAction")
  }

  /** Hands out a read of payload straight into `room`, a part of the caller's receive buffer. */
  private readDirect(out: ActionRecord, room: Uint8Array): Status {
    out.action = ActionCode.ReceiveFromNetwork
    out.queue = QueueCode.Receive
    out.bufferCount = 1
    out.buffer0 = room
    out.context = this.receiveContext
    out.id = this.receiveOutId = this.newId()
    this.readRoom = room.length
    this.directView = room
    this.directUnmasked = 0
    this.receiveOut = OUT_RECEIVE_DIRECT
    return Status.Ok
  }

  /** The buffer of the outstanding direct read, and how much of it from its start {@link unmaskingCopy} filled. */
  private directView: Uint8Array = EMPTY
  private directUnmasked = 0

  /**
   * A copy for the outstanding ReceiveFromNetwork that unmasks as it copies, when that read is
   * of a masked frame's payload straight into the caller's buffer; `undefined` otherwise. A
   * driver that copies its transport's bytes into the action's buffer itself uses it instead of a
   * plain copy (`copy(source, start, end, buffer, at)`, in order from the buffer's start): the
   * payload is then gone over once instead of twice (a copy, then an unmask in place), and
   * `completeAction` unmasks only what was not copied so. Not part of `websocket.h`.
   */
  get copyForRead(): Copy | undefined {
    return this.receiveOut === OUT_RECEIVE_DIRECT && this.frameMasked ? this.unmaskingCopy : undefined
  }

  /** See {@link copyForRead}; a copy out of order, into other memory, or once no masked payload is being read, is a plain one. */
  private readonly unmaskingCopy: Copy = (source, start, end, target, targetStart) => {
    if (
      target === this.directView && targetStart === this.directUnmasked && this.receiveOut === OUT_RECEIVE_DIRECT && this.frameMasked
    ) {
      maskInto(source, start, end, target, targetStart, this.header.maskKey, (this.payloadMaskOffset + targetStart) & 3)
      this.directUnmasked = targetStart + end - start
    } else {
      copyRange(source, start, end, target, targetStart)
    }
  }

  private newId(): number {
    const id = this.nextId
    this.nextId = id === 0x7fffffff ? 1 : id + 1
    return id
  }

  private sendAction(out: ActionRecord): boolean {
    if (this.sendOut !== OUT_NONE) return false
    // Micro-optimisation: the common steps (a frame to hand out, a send done) in a few lines, the
    // rest in methods of their own, so that V8 inlines the lot into the driver's loop: about 10 ns
    // a message (of about 50) less than with everything here.
    const phase = this.sendPhase
    if (phase === SEND_IDLE) return this.pongsWaiting.length !== 0 && this.sendWaitingPong(out)
    if (phase === SEND_COMPLETE) return this.handOut(out, ActionCode.IndicateSendComplete, OUT_SEND_COMPLETE)
    if (
      !this.sendReady || this.state === HandleState.Aborted || this.sendBroken || this.pongOut !== undefined ||
      (!this.sendBuilt && this.sendPayload.length !== this.sendLength)
    ) {
      return this.sendUnusual(out)
    }
    // (a frame whose one SendToNetwork was set when it was queued, its payload's view as it was)
    out.buffer0 = this.readyBuffer0
    out.buffer1 = this.readyBuffer1
    out.bufferCount = this.readyCount
    return this.handOut(out, ActionCode.SendToNetwork, OUT_SEND_FRAME)
  }

  /**
   * Makes `out` an `action` of the pending send (SendToNetwork, whose buffers are set: the next
   * part of its frame; or IndicateSendComplete), outstanding as `kind`.
   */
  private handOut(out: ActionRecord, action: number, kind: number): boolean {
    out.queue = QueueCode.Send
    out.bufferType = this.sendType
    out.context = this.sendContext
    out.action = action
    out.id = this.sendOutId = this.newId()
    this.sendOut = kind
    this.sendReady = false
    return true
  }

  /**
   * A pong that had to wait for a frame of this queue goes out right after it, between sends,
   * so that it is not stuck while the receive queue waits for the network; a send that is done
   * says so first (its IndicateSendComplete), so that a pong that must wait does not hold it,
   * and a send queued meanwhile goes first: whoever writes that send is not made to write the
   * pong (cancelled, it would take the pong with it).
   */
  private sendWaitingPong(out: ActionRecord): boolean {
    if (!this.pongReady()) return false
    this.sendOutId = this.emitPong(out)
    this.sendOut = OUT_PONG
    return true
  }

  /**
   * The pending frame of a handle aborted or whose wire is broken, whose payload was lost, that
   * waits for a pong, or whose SendToNetwork was not set when it was queued (a control frame, the
   * chunks of a masked frame, a frame in owned buffers, a direct payload whose view grew since).
   */
  private sendUnusual(out: ActionRecord): boolean {
    if (this.state === HandleState.Aborted || this.sendBroken) {
      this.sendPhase = SEND_COMPLETE // cancelled: the frame never goes out
      this.sendWhole = false
    } else if (this.payloadLost()) {
      this.cancelLostPayload()
    }
    // Frames are never interleaved on the wire (spec 5.3): a queued frame waits while an automatic
    // pong handed out on the receive queue is being written. Control frames "MAY be injected in the
    // middle of a fragmented message" (RFC 6455 section 5.4): between frames, never inside one.
    if (this.sendPhase !== SEND_EMIT) return this.handOut(out, ActionCode.IndicateSendComplete, OUT_SEND_COMPLETE)
    if (this.pongOut !== undefined) return false
    this.emitFrame(out)
    return this.handOut(out, ActionCode.SendToNetwork, OUT_SEND_FRAME)
  }

  /** The next part of a frame whose SendToNetwork was not set when it was queued. */
  private emitFrame(out: ActionRecord): void {
    if (this.sendIsControl) this.emitControlFrame(out)
    else if (this.allocate !== undefined && this.sendLength >= OWNED_PAYLOAD) {
      if (this.sendDirect) this.emitOwnedHeader(out, this.allocate)
      else this.emitOwnedChunk(out, this.allocate)
    } else if (this.sendDirect) this.emitDirect(out)
    else this.emitChunk(out)
  }

  /**
   * Whether the caller's payload of the pending data frame holds fewer bytes than its header
   * declares (its buffer was detached or shrunk since `send`), so that the frame cannot be
   * completed; a frame built when queued has them already.
   */
  private payloadLost(): boolean {
    return !this.sendBuilt && this.sendPayload.length < this.sendLength
  }

  /**
   * Cancels a send whose payload lost bytes (see {@link payloadLost}), as a write of 0 bytes of it
   * would: nothing of it written, the wire and the open message are as they were; else the frame
   * is incomplete on the wire and no frame may follow.
   */
  private cancelLostPayload(): void {
    if (this.sendHeaderSent) this.sendBroken = true
    else this.sendMessageOpcode = this.sendOpenBefore
    this.wireOwner = WIRE_FREE
    this.sendPhase = SEND_COMPLETE
    this.sendWhole = false
  }

  /** The first `length` bytes of the send header (a view made once per length). */
  private headerView(length: number): Uint8Array {
    return this.headerViews[length] ??= this.sendHeader.subarray(0, length)
  }

  /** The whole control frame, built by `send`. */
  private emitControlFrame(out: ActionRecord): void {
    out.bufferCount = 1
    out.buffer0 = this.controlFrame.subarray(0, this.sendFrameLength)
    this.sendOutBytes = this.sendFrameLength
  }

  /**
   * An unmasked data frame (a server's, or a client's with a zero key) in one action: the header,
   * then the payload straight from the caller's memory, no copy (such a frame is never split).
   */
  private emitDirect(out: ActionRecord): void {
    const payload = this.sendPayload
    const total = this.sendLength
    const h = this.sendHeaderLength
    out.buffer0 = this.headerView(h)
    if (total > 0) {
      out.buffer1 = payload.length === total ? payload : payload.subarray(0, total)
      out.bufferCount = 2
    } else {
      out.bufferCount = 1
    }
    this.sendChunkLength = total
    this.sendOutBytes = h + total
  }

  /** The next chunk of a masked data frame (the header before the first), masked into the send buffer. */
  private emitChunk(out: ActionRecord): void {
    const payload = this.sendPayload
    const total = this.sendLength
    const remaining = total - this.sendOffset
    const sbuf = this.sbuf
    const length = remaining < sbuf.length ? remaining : sbuf.length
    // the key offset for this chunk is sendOffset & 3
    maskInto(payload, this.sendOffset, this.sendOffset + length, sbuf, 0, this.sendKey, this.sendOffset & 3)
    // Micro-optimisation: frames of the same size in a row reuse the view of the chunk.
    if (this.chunkView.length !== length) this.chunkView = length === sbuf.length ? sbuf : sbuf.subarray(0, length)
    const chunk = this.chunkView
    this.sendChunkLength = length
    if (!this.sendHeaderSent) {
      out.buffer0 = this.headerView(this.sendHeaderLength)
      if (length > 0) {
        out.buffer1 = chunk
        out.bufferCount = 2
      } else {
        out.bufferCount = 1
      }
      this.sendOutBytes = this.sendHeaderLength + length
    } else {
      out.buffer0 = chunk
      out.bufferCount = 1
      this.sendOutBytes = length
    }
    if (this.sendOffset + length < total) this.wireOwner = WIRE_SEND
  }

  /**
   * An unmasked frame in one action: a header in a new buffer of its own, then the payload from
   * the caller's memory (a direct send is never split, so its header always comes first).
   */
  private emitOwnedHeader(out: ActionRecord, allocate: (size: number) => Uint8Array): void {
    const h = this.sendHeaderLength
    const header = allocate(h)
    header.set(this.headerView(h), 0)
    const payload = this.sendPayload
    const total = this.sendLength
    this.sendChunkLength = total
    this.sendOutBytes = h + total
    out.buffer0 = header
    // An owned buffer may be kept by the transport after the send completes, when the caller may
    // use its memory again: a view that would grow with it is handed out as a view of fixed length.
    out.buffer1 = payload.length === total && !isResizable(payload.buffer) ? payload : payload.subarray(0, total)
    out.bufferCount = 2
    out.owned = true
  }

  /** The next chunk of a masked data frame (the header before the first) in a new buffer of its own. */
  private emitOwnedChunk(out: ActionRecord, allocate: (size: number) => Uint8Array): void {
    const payload = this.sendPayload
    const offset = this.sendOffset
    const remaining = this.sendLength - offset
    const length = remaining < this.sbuf.length ? remaining : this.sbuf.length
    const headerLength = this.sendHeaderSent ? 0 : this.sendHeaderLength
    const frame = allocate(headerLength + length)
    if (headerLength > 0) frame.set(this.headerView(headerLength), 0)
    maskInto(payload, offset, offset + length, frame, headerLength, this.sendKey, offset & 3)
    this.sendChunkLength = length
    this.sendOutBytes = headerLength + length
    out.buffer0 = frame
    out.bufferCount = 1
    out.owned = true
    if (offset + length < this.sendLength) this.wireOwner = WIRE_SEND
  }

  /**
   * Whether the pending automatic pong may go out now: never while a frame of the send queue is
   * being written (handed out, or between the actions of a long frame), one at a time, and not once
   * our Close is on its way (then it is dropped).
   */
  private pongReady(): boolean {
    if (
      this.pongsWaiting.length === 0 || this.pongOut !== undefined || this.wireOwner !== WIRE_FREE ||
      this.sendOut === OUT_SEND_FRAME
    ) return false
    if (
      this.state === HandleState.CloseSent || this.state === HandleState.Closed || this.state === HandleState.Aborted ||
      this.sendBroken
    ) {
      this.pongsWaiting.length = 0
      return false
    }
    return true
  }

  /** Hands out the oldest waiting automatic pong (it belongs to the receive queue whichever queue carries it). */
  private emitPong(out: ActionRecord): number {
    const frame = this.pongsWaiting.shift()!
    this.pongOut = frame
    out.action = ActionCode.SendToNetwork
    out.queue = QueueCode.Receive
    out.bufferType = BufferTypeCode.PingPong
    out.bufferCount = 1
    out.buffer0 = frame
    out.context = undefined
    return (out.id = this.newId())
  }

  private receiveAction(out: ActionRecord): Status {
    if (this.receiveOut !== OUT_NONE) return Status.Ok
    if (this.state === HandleState.Aborted) {
      this.pongsWaiting.length = 0
      if (!this.receivePending) return Status.Ok
      this.deliverKind = DELIVER_EOF
      return this.deliver(out)
    }
    if (!this.pongsOnSendQueue && this.pongReady()) {
      this.receiveOutId = this.emitPong(out)
      this.receiveOut = OUT_PONG
      return Status.Ok
    }
    if (!this.receivePending) return Status.Ok
    if (this.failure !== undefined) {
      return this.error(this.failure.status, this.failure.message, this.failure.closeStatus)
    }
    if (this.directLength > 0 && (this.eof || this.directLength >= this.directTarget || this.directCutShort())) {
      this.deliverKind = DELIVER_DIRECT
      return this.deliver(out)
    }
    if (this.eof) {
      this.deliverKind = DELIVER_EOF
      return this.deliver(out)
    }
    if (this.directLength > 0) {
      // Micro-optimisation: a short direct read is followed by more, into the same buffer, until
      // the chunk is whole: one delivery per chunk rather than one per transport read.
      return this.readDirect(out, this.receiveBuffer!.subarray(this.directLength, this.directTarget))
    }
    const parsed = this.parse()
    if (parsed === PARSE_DELIVER) return this.deliver(out)
    if (parsed === PARSE_FAILED) {
      const failure = this.failure!
      return this.error(failure.status, failure.message, failure.closeStatus)
    }
    if (parsed === PARSE_PONG) {
      this.receiveOutId = this.emitPong(out)
      this.receiveOut = OUT_PONG
      return Status.Ok
    }
    if (parsed === PARSE_PONGS_WAIT) return Status.Ok // no action until the pongs are written
    return this.requestBytes(out)
  }

  /**
   * Whether the chunk being read straight into the caller's buffer is delivered before it is whole:
   * when it ends only because a chunk is at most the receive buffer size (not at the end of the
   * frame) and the room left is smaller than the latest read. The next read would then most likely
   * be cut in two at that limit, and every transport read after it too: delivering now lets the next
   * chunk start where the transport's data does (one read per transport chunk, not two).
   */
  private directCutShort(): boolean {
    return this.directCapped && this.directTarget - this.directLength < this.directLastRead
  }

  /**
   * How many bytes a header read on its own asks for: what the header still lacks once its first
   * bytes are there; before that, as many as the latest data frame's header had (large messages of
   * one kind come in a row, and their header is then read in one go). A shorter header leaves a few
   * payload bytes in the receive buffer, handled as any bytes read ahead.
   */
  private headerBytesWanted(): number {
    return this.rend === this.rstart ? this.lastHeaderLength : headerBytesMissing(this.rbuf, this.rstart, this.rend)
  }

  /** Hands out a ReceiveFromNetwork: into the caller's buffer when payload can go there, else into the receive buffer. */
  private requestBytes(out: ActionRecord): Status {
    const app = this.receiveBuffer
    if (app !== undefined && this.rstate === RS_PAYLOAD) {
      // Micro-optimisation: payload goes straight into the caller's buffer, not through the receive
      // buffer (one copy fewer for large messages). Text may start with the held-back bytes of an
      // incomplete code point (already unmasked and checked), which move to the caller's buffer first.
      const pending = this.rend - this.rstart
      // a chunk never exceeds the receive buffer size, wherever it is read to
      let n = app.length < this.payloadRemaining ? app.length : this.payloadRemaining
      if (n > this.receiveBufferSize) n = this.receiveBufferSize
      if (
        pending === 0 ? this.messageOpcode === Opcode.Binary || n >= MIN_DIRECT_TEXT :
          this.messageOpcode === Opcode.Text && n >= MIN_DIRECT_TEXT && pending < 4 && this.unmaskedEnd >= this.rend
      ) {
        if (pending > 0) {
          app.set(this.receiveView(this.rstart, this.rend), 0)
          this.rstart = this.rend
        }
        this.directLength = pending
        this.directTarget = n
        this.directCapped = n < this.payloadRemaining
        return this.readDirect(out, pending === 0 && n === app.length ? app : app.subarray(pending, n))
      }
    }
    // make room and ask for bytes
    // Micro-optimisation: a caller whose buffer is large expects large messages; the next header
    // is then read on its own, so that the payload after it goes straight into that buffer.
    const headerOnly = app !== undefined && app.length >= DIRECT_HEADER_THRESHOLD && this.rstate === RS_HEADER &&
      this.carryLength === 0
    if (this.rstart === this.rend) {
      this.rstart = this.rend = this.unmaskedEnd = RESERVE
    } else if (this.rstart > RESERVE) {
      const shift = this.rstart - RESERVE
      this.rbuf.copyWithin(RESERVE, this.rstart, this.rend)
      this.rstart = RESERVE
      this.rend -= shift
      this.unmaskedEnd = this.unmaskedEnd > shift + RESERVE ? this.unmaskedEnd - shift : RESERVE
    }
    if (this.growReceive) {
      // the peer sends more than the buffer holds: it takes the full receive buffer size from now on
      this.growReceive = false
      const grown = allocatePlainUninitialized(this.rcap)
      grown.set(this.receiveView(0, this.rend), 0)
      this.useReceiveBuffer(grown)
    }
    out.action = ActionCode.ReceiveFromNetwork
    out.queue = QueueCode.Receive
    out.bufferCount = 1
    this.readToEnd = !headerOnly
    out.buffer0 = this.readView(this.rend, headerOnly ? this.rend + this.headerBytesWanted() : this.rbuf.length)
    this.readRoom = out.buffer0.length
    out.context = this.receiveContext
    out.id = this.receiveOutId = this.newId()
    this.receiveOut = OUT_RECEIVE_READ
    return Status.Ok
  }

  private fail(status: Status, closeStatus: number, message: string): number {
    this.failure = { status, closeStatus, message }
    this.rstate = RS_FAILED
    return PARSE_FAILED
  }

  /**
   * The rules a frame's first bytes break on their own: reserved bits, masking (`masked` is
   * `undefined` while the second byte has not arrived), a continuation or not. Judged as soon as
   * those bytes are there, whether or not the rest of the header is, so that a broken frame fails
   * at once even if the rest never comes; `PARSE_NEED_MORE` when none is broken.
   */
  private judgeFrameStart(rsv: number, opcode: number, masked: boolean | undefined): number {
    if (rsv !== 0) return this.failReservedBits(rsv)
    if (masked !== undefined && (masked ? this.isClient : this.requireMasked)) return this.failMasking(masked)
    if (!isControlOpcode(opcode) && (opcode === Opcode.Continuation) === (this.messageOpcode === 0)) {
      return this.failFrameOrder(opcode === Opcode.Continuation)
    }
    return PARSE_NEED_MORE
  }

  /** {@link judgeFrameStart} on the first bytes of a header that is not whole yet. */
  private judgePartialHeader(buf: Uint8Array): number {
    const b0 = buf[this.rstart]!
    const masked = this.rend - this.rstart >= 2 ? isMaskedOf(buf[this.rstart + 1]!) : undefined
    return this.judgeFrameStart(rsvOf(b0), opcodeOf(b0), masked)
  }

  private failReservedBits(rsv: number): number {
    // "MUST be 0 unless an extension is negotiated that defines meanings for non-zero values"
    return this.fail(Status.InvalidFormat, 1002, `reserved bits RSV${rsvNames(rsv)} set: this engine implements no extension that defines them`)
  }

  private failMasking(masked: boolean): number {
    // "The server MUST close the connection upon receiving a frame that is not masked."
    // "A client MUST close a connection if it detects a masked frame."
    return this.fail(Status.InvalidFormat, 1002, masked ? "a server frame is masked" : "a client frame is not masked")
  }

  /** A continuation with no message to continue, or a new data frame inside a fragmented message. */
  private failFrameOrder(continuation: boolean): number {
    return continuation
      ? this.fail(Status.InvalidOperation, 1002, "a continuation frame arrived with no message to continue")
      : this.fail(Status.InvalidOperation, 1002, "a new data frame arrived while a fragmented message is still open")
  }

  /**
   * Parses received bytes until something can be delivered, a pong must be sent, more bytes are
   * needed, or the peer broke a rule.
   */
  private parse(): number {
    const buf = this.rbuf
    for (;;) {
      switch (this.rstate) {
        case RS_HEADER: {
          const header = this.header
          const n = parseHeader(header, buf, this.rstart, this.rend)
          if (n === 0) return this.rend > this.rstart ? this.judgePartialHeader(buf) : PARSE_NEED_MORE
          // a length beyond 2^53-1 is too big for any message (1009, as ws answers); the others break the protocol
          if (n < 0) return this.fail(Status.InvalidFormat, n === HeaderError.LengthTooLarge ? 1009 : 1002, headerErrorMessage(n))
          const opcode = header.opcode
          const broken = this.judgeFrameStart(header.rsv, opcode, header.masked)
          if (broken !== PARSE_NEED_MORE) return broken
          this.rstart += n
          if (isControlOpcode(opcode)) {
            this.rstate = RS_CONTROL
            continue
          }
          this.lastHeaderLength = n
          if (opcode !== Opcode.Continuation) {
            this.messageOpcode = opcode
            this.messageSize = 0
            this.utf8State = UTF8_ACCEPT
          }
          this.messageSize += header.payloadLength
          if (this.messageSize > this.maxMessageSize) {
            return this.fail(
              Status.InvalidFormat,
              1009,
              `message of at least ${this.messageSize} bytes exceeds the maximum message size of ${this.maxMessageSize} bytes`
            )
          }
          this.frameFin = header.fin
          this.frameMasked = header.masked
          this.payloadRemaining = header.payloadLength
          this.payloadMaskOffset = 0
          this.unmaskedEnd = this.rstart
          if (this.carryLength > 0) {
            // Move the held-back bytes of an incomplete code point right in front of this payload
            // (they sit in consumed memory; RESERVE guarantees room).
            const k = this.carryLength
            buf.set(this.carry.subarray(0, k), this.rstart - k)
            this.rstart -= k
            this.payloadRemaining += k
            this.carryLength = 0
          }
          this.rstate = RS_PAYLOAD
          if (this.payloadRemaining === 0) {
            if (!this.frameFin) {
              this.rstate = RS_HEADER
              continue
            }
            return this.prepareData(this.rstart, this.rstart)
          }
          continue
        }
        case RS_PAYLOAD: {
          const start = this.rstart
          const available = this.rend - start
          if (available === 0) return PARSE_NEED_MORE
          const end = start + (available < this.payloadRemaining ? available : this.payloadRemaining)
          const from = this.unmaskedEnd > start ? this.unmaskedEnd : start
          if (from < end) {
            if (this.frameMasked) {
              applyMask(buf, from, end, this.header.maskKey, this.payloadMaskOffset & 3)
              this.payloadMaskOffset += end - from
            }
            if (this.messageOpcode === Opcode.Text && this.verifyUtf8) {
              let state: number
              // Micro-optimisation: where a native call would come next, an ASCII run (most JSON is
              // ASCII) is skipped a word at a time first; pure ASCII then needs no call. When text
              // is not ASCII, the next pieces go straight to the call (a failed skip costs branch
              // mispredictions), until a probe now and then.
              let checkFrom = from
              if (
                this.rwords !== undefined && this.utf8State === UTF8_ACCEPT && end - from >= UTF8_IS_UTF8_THRESHOLD &&
                end - from <= ASCII_WORDS_LIMIT && --this.asciiProbeIn <= 0
              ) {
                checkFrom = skipAscii(buf, this.rwords, from, end)
                this.asciiProbeIn = checkFrom === end ? 0 : ASCII_PROBE_INTERVAL
              }
              if (checkFrom === end) {
                state = UTF8_ACCEPT
              } else if (
                nativeIsUtf8 !== undefined && from === start && end - start === this.payloadRemaining && this.frameFin &&
                this.utf8State === UTF8_ACCEPT && end - start >= UTF8_IS_UTF8_THRESHOLD
              ) {
                // Micro-optimisation: the last frame of a message, whole in one piece, is validated
                // through the view that is then delivered (one view fewer, about 20 ns).
                const view = this.receiveView(start, end)
                state = nativeIsUtf8(view) ? UTF8_ACCEPT : UTF8_REJECT
                this.deliverView = view
              } else {
                state = utf8Step(this.utf8State, buf, checkFrom, end)
              }
              if (state === UTF8_REJECT) {
                return this.fail(Status.InvalidFormat, 1007, "a text message is not valid UTF-8")
              }
              this.utf8State = state
            }
            this.unmaskedEnd = end
          }
          const frameDone = end - start === this.payloadRemaining
          if (frameDone && this.frameFin) {
            if (this.messageOpcode === Opcode.Text && this.verifyUtf8 && this.utf8State !== UTF8_ACCEPT) {
              return this.fail(Status.InvalidFormat, 1007, "a text message ends inside a UTF-8 sequence")
            }
            return this.prepareData(start, end)
          }
          let deliverEnd = end
          if (this.messageOpcode === Opcode.Text) {
            deliverEnd = completeBoundary(buf, start, end)
            if (deliverEnd === start) {
              if (frameDone) {
                // the frame's whole remaining payload is an incomplete code point: carry it over
                this.holdCarry(start, end)
                continue
              }
              return PARSE_NEED_MORE
            }
          }
          return this.prepareData(start, deliverEnd)
        }
        case RS_CONTROL: {
          const header = this.header
          const length = header.payloadLength
          const start = this.rstart
          if (this.rend - start < length) return PARSE_NEED_MORE // compaction makes room
          // (before it is unmasked: the ping is parsed again once the pongs are written)
          if (header.opcode === Opcode.Ping && this.pongsBlockReading) return PARSE_PONGS_WAIT
          if (header.masked) applyMask(buf, start, start + length, header.maskKey, 0)
          const end = start + length
          switch (header.opcode) {
            case Opcode.Ping: {
              this.pingsReceived++
              // "Upon receipt of a Ping frame, an endpoint MUST send a Pong frame in response ...
              // with identical Application data"
              this.rstart = end
              this.rstate = RS_HEADER
              // Every ping is answered, in order, up to MAX_WAITING_PONGS waiting; beyond, the
              // latest takes the place of the last one waiting (unless reading waits, see above).
              if (this.pongFrame.length === 0) this.pongFrame = new Uint8Array(CONTROL_FRAME_LENGTH)
              const length = this.buildControlFrame(this.pongFrame, Opcode.Pong, this.receiveView(start, end), undefined)
              const pong = this.pongFrame.slice(0, length)
              if (this.pongsWaiting.length < MAX_WAITING_PONGS) this.pongsWaiting.push(pong)
              else this.pongsWaiting[MAX_WAITING_PONGS - 1] = pong
              if (!this.pongsOnSendQueue && this.pongReady()) return PARSE_PONG
              continue
            }
            case Opcode.Pong: {
              this.deliverKind = DELIVER_CONTROL
              this.deliverType = BufferTypeCode.PingPong
              this.deliverStart = start
              this.deliverEnd = end
              this.deliverControlLength = length
              return PARSE_DELIVER
            }
            default: { // Close
              // (a 1-byte body failed with the header)
              const code = parseCloseCode(buf, start, end)
              if (code !== CLOSE_CODE_ABSENT && !isValidWireCloseCode(code)) {
                return this.fail(Status.InvalidFormat, 1002, `a Close frame carries close code ${code}, which may not be sent`)
              }
              if (code !== CLOSE_CODE_ABSENT && !isValidUtf8(buf, start + 2, end)) {
                return this.fail(Status.InvalidFormat, 1007, "a close reason is not valid UTF-8")
              }
              this.deliverKind = DELIVER_CONTROL
              this.deliverType = BufferTypeCode.Close
              this.deliverCloseStatus = code === CLOSE_CODE_ABSENT ? 1005 : code
              this.deliverStart = code === CLOSE_CODE_ABSENT ? start : start + 2
              this.deliverEnd = end
              this.deliverControlLength = length
              return PARSE_DELIVER
            }
          }
        }
        default:
          return PARSE_FAILED
      }
    }
  }

  private holdCarry(start: number, end: number): void {
    const k = end - start
    if (this.carry.length === 0) this.carry = new Uint8Array(4)
    this.carry.set(this.receiveView(start, end), 0)
    this.carryLength = k
    this.payloadRemaining -= k
    this.rstart = end
    this.rstate = RS_HEADER
  }

  private prepareData(start: number, end: number): number {
    this.deliverKind = DELIVER_DATA
    this.deliverStart = start
    this.deliverEnd = end
    return PARSE_DELIVER
  }

  /** Fills `out` with the prepared IndicateReceiveComplete. */
  private deliver(out: ActionRecord): Status {
    out.action = ActionCode.IndicateReceiveComplete
    out.queue = QueueCode.Receive
    out.context = this.receiveContext
    out.bufferCount = 1
    out.closeStatus = 0
    // Micro-optimisation: one method per kind keeps this one small enough for V8 to inline.
    const kind = this.deliverKind
    if (kind === DELIVER_DATA) this.deliverData(out, this.receiveBuffer)
    else if (kind === DELIVER_CONTROL) this.deliverControl(out, this.receiveBuffer)
    else if (kind === DELIVER_EOF) this.deliverEof(out)
    else {
      const status = this.deliverDirect(out, this.receiveBuffer!)
      if (status !== Status.Ok) return status
    }
    out.id = this.receiveOutId = this.newId()
    this.receiveOut = OUT_RECEIVE_DELIVER
    return Status.Ok
  }

  /** Data from the receive buffer: a view of it, or copied into the caller's buffer. */
  private deliverData(out: ActionRecord, app: Uint8Array | undefined): void {
    const start = this.deliverStart
    let end = this.deliverEnd
    if (app !== undefined && end - start > app.length) {
      end = start + app.length
      if (this.messageOpcode === Opcode.Text) {
        const boundary = completeBoundary(this.rbuf, start, end)
        if (boundary > start) end = boundary
      }
      this.deliverEnd = end
    }
    out.bufferType = this.dataBufferType(end - start === this.payloadRemaining && this.frameFin)
    const made = this.deliverView
    this.deliverView = undefined
    let view = made !== undefined && made.length === end - start && made.byteOffset === this.roffset + start
      ? made
      : this.receiveView(start, end)
    if (app !== undefined) {
      app.set(view, 0)
      view = app.subarray(0, end - start)
    }
    out.buffer0 = view
  }

  /** Data read straight into the caller's buffer. */
  private deliverDirect(out: ActionRecord, app: Uint8Array): Status {
    let n = this.directLength
    const text = this.messageOpcode === Opcode.Text
    const last = n === this.payloadRemaining && this.frameFin
    if (text && last) {
      if (this.verifyUtf8 && this.utf8State !== UTF8_ACCEPT) {
        const message = "a text message ends inside a UTF-8 sequence"
        this.fail(Status.InvalidFormat, 1007, message)
        return this.error(Status.InvalidFormat, message, 1007)
      }
    } else if (text) {
      // The bytes of a code point cut by the end of the chunk go back to the receive buffer
      // (it is empty during direct reads), to come first in the next chunk.
      const end = completeBoundary(app, 0, n)
      if (end < n) {
        this.rbuf.set(app.subarray(end, n), RESERVE)
        this.rstart = RESERVE
        this.rend = this.unmaskedEnd = RESERVE + n - end
        this.directLength = n = end
      }
      if (n === 0) {
        // only part of a code point arrived before the transport ended
        this.deliverEof(out)
        return Status.Ok
      }
    }
    out.bufferType = this.dataBufferType(last)
    out.buffer0 = n === app.length ? app : app.subarray(0, n)
    return Status.Ok
  }

  /** The buffer type of a delivered piece of the current message: the message's end or a fragment. */
  private dataBufferType(last: boolean): number {
    const text = this.messageOpcode === Opcode.Text
    return last
      ? (text ? BufferTypeCode.Utf8Message : BufferTypeCode.BinaryMessage)
      : (text ? BufferTypeCode.Utf8Fragment : BufferTypeCode.BinaryFragment)
  }

  /** A received pong or Close. */
  private deliverControl(out: ActionRecord, app: Uint8Array | undefined): void {
    out.bufferType = this.deliverType
    out.closeStatus = this.deliverCloseStatus
    let view = this.receiveView(this.deliverStart, this.deliverEnd)
    // copied to the caller's buffer when it fits; else a view of the receive buffer: a pong's
    // payload or a close reason comes whole, there is no rest to deliver later
    if (app !== undefined && view.length <= app.length) {
      app.set(view, 0)
      view = app.subarray(0, view.length)
    }
    out.buffer0 = view
  }

  /** The end of the transport without a Close: status 1006. */
  private deliverEof(out: ActionRecord): void {
    this.deliverKind = DELIVER_EOF
    out.bufferType = BufferTypeCode.Close
    out.closeStatus = 1006
    out.buffer0 = EMPTY
  }

  // ------------------------------------------------------------------------------------------
  // WebSocketCompleteAction
  // ------------------------------------------------------------------------------------------

  /**
   * Reports what the driver did with action `id` (`WebSocketCompleteAction`): bytes written for
   * `SendToNetwork` (fewer than handed out cancels the send), bytes read for `ReceiveFromNetwork`
   * (0 = the transport ended), 0 otherwise. An unknown or already completed `id` fails with
   * `InvalidOperation`.
   */
  completeAction(id: number, bytesTransferred: number): Status {
    // Micro-optimisation: a small dispatcher that V8 inlines into the driver's loop, with one
    // method per queue (a call costs a few ns, and every message takes two completions).
    if (this.isSendOut(id)) return this.completeSend(bytesTransferred)
    if (this.isReceiveOut(id)) return this.completeReceive(id, bytesTransferred)
    return this.completeActionRefused()
  }

  /**
   * {@link completeAction} for an action of the send queue, for a driver's loop that serves that
   * queue: the same result for any `id`. Not part of `websocket.h`.
   *
   * Micro-optimisation: V8 compiles `completeAction` into a loop with the completion of both
   * queues once a handle's receive loop has run it too, and that takes the inlining budget the
   * rest of a send loop needs (a server's unmasked 16-byte sends, in a process that also decodes,
   * about 50 ns a message instead of 46).
   */
  completeSendAction(id: number, bytesTransferred: number): Status {
    return this.isSendOut(id) ? this.completeSend(bytesTransferred) : this.completeAction(id, bytesTransferred)
  }

  /** {@link completeAction} for an action of the receive queue (see {@link completeSendAction}). Not part of `websocket.h`. */
  completeReceiveAction(id: number, bytesTransferred: number): Status {
    return this.isReceiveOut(id) ? this.completeReceive(id, bytesTransferred) : this.completeAction(id, bytesTransferred)
  }

  /** Whether `id` is the outstanding action of the send queue. */
  private isSendOut(id: number): boolean {
    return id !== 0 && id === this.sendOutId && this.sendOut !== OUT_NONE
  }

  /** Whether `id` is the outstanding action of the receive queue. */
  private isReceiveOut(id: number): boolean {
    return id !== 0 && id === this.receiveOutId && this.receiveOut !== OUT_NONE
  }

  private completeActionRefused(): Status {
    return this.error(
      Status.InvalidOperation,
      "completeAction is not allowed: the action was already completed or does not belong to this handle"
    )
  }

  private completeSend(bytesTransferred: number): Status {
    // Micro-optimisation: a send done and a frame written whole (nearly every completion) here, the
    // rest in a method of its own (see `sendAction`).
    const kind = this.sendOut
    if (kind === OUT_SEND_COMPLETE) {
      this.sendOut = OUT_NONE
      this.sendOutId = 0
      this.sendPhase = SEND_IDLE
      this.sendPayload = EMPTY
      this.readyBuffer1 = EMPTY
      this.sendContext = undefined
      return Status.Ok
    }
    if (kind !== OUT_SEND_FRAME || bytesTransferred !== this.sendOutBytes) return this.completeSendUnusual(kind, bytesTransferred)
    this.sendOut = OUT_NONE
    this.sendOutId = 0
    // (a frame written whole from the handle's memory is done, whatever its payload became since)
    if (this.sendIsControl || this.sendBuilt) {
      this.sendPhase = SEND_COMPLETE
      this.sendWhole = true
      return Status.Ok
    }
    this.sendHeaderSent = true
    const offset = this.sendOffset + this.sendChunkLength
    this.sendOffset = offset
    if (offset >= this.sendLength) {
      this.sendPhase = SEND_COMPLETE
      this.sendWhole = true
      this.wireOwner = WIRE_FREE
    }
    return Status.Ok
  }

  /** Completes an automatic pong's write, or a frame's write that is not the whole of it (a bad count is refused). */
  private completeSendUnusual(kind: number, bytesTransferred: number): Status {
    const length = kind === OUT_PONG ? this.pongOut!.length : this.sendOutBytes
    if (!isByteCount(bytesTransferred, length)) return this.badWriteCount(bytesTransferred, length)
    this.sendOut = OUT_NONE
    this.sendOutId = 0
    if (kind === OUT_PONG) return this.completePong(bytesTransferred)
    // "the send is cancelled". Nothing of the frame written (0 bytes of its first action): the
    // wire is as it was and sends go on; else the frame is incomplete on it and none may follow.
    if (bytesTransferred > 0 || this.sendHeaderSent) this.sendBroken = true
    // as if the frame had never been sent: the message it opened or closed is as it was, and
    // so is the closing handshake (our Close may be sent again)
    else if (!this.sendIsControl) this.sendMessageOpcode = this.sendOpenBefore
    else if (this.sendType === BufferTypeCode.Close) this.unsendClose()
    this.wireOwner = WIRE_FREE
    this.sendPhase = SEND_COMPLETE
    this.sendWhole = false
    return Status.Ok
  }

  /** Undoes what queuing a Close did to the state, for a Close of which nothing was written. */
  private unsendClose(): void {
    if (this.state === HandleState.CloseSent) this.state = HandleState.Open
    else if (this.state === HandleState.Closed) this.state = HandleState.CloseReceived
  }

  /**
   * Which buffer the application lent the handle was detached (transferred) while the handle
   * still needs it: the payload of the pending send (or shrunk: fewer bytes than its frame
   * declares; not once the send is cancelled anyway, the handle aborted or its wire broken; a
   * short frame built when queued needs its payload no more, but is reported all the same, so
   * that a broken contract is reported whatever the payload's length), or the buffer of the
   * pending receive.
   */
  get detachedBuffer(): "send" | "receive" | undefined {
    if (
      this.sendPhase === SEND_EMIT && this.state !== HandleState.Aborted && !this.sendBroken &&
      this.sendPayload.length < this.sendLength
    ) return "send"
    const buffer = this.receiveBuffer
    return buffer !== undefined && isDetached(buffer.buffer) ? "receive" : undefined
  }

  /**
   * A write completed with a count that is not a number of bytes of its action (as for a read,
   * a bad parameter): the action stays outstanding. Any count from 0 to all of it is a write,
   * a partial one cancelling the send.
   */
  private badWriteCount(bytesTransferred: number, length: number): Status {
    return this.error(
      Status.InvalidParameter,
      `bytesTransferred must be an integer from 0 to ${length} for this send, got ${bytesTransferred}`
    )
  }

  private completeReceive(id: number, bytesTransferred: number): Status {
    const kind = this.receiveOut
    if (kind === OUT_PONG && !isByteCount(bytesTransferred, this.pongOut!.length)) {
      return this.badWriteCount(bytesTransferred, this.pongOut!.length)
    }
    this.receiveOut = OUT_NONE
    this.receiveOutId = 0
    switch (kind) {
      case OUT_RECEIVE_DELIVER:
        this.completeDelivery()
        return Status.Ok
      case OUT_PONG:
        return this.completePong(bytesTransferred)
      default:
        return this.completeRead(id, kind, bytesTransferred)
    }
  }

  /** A ReceiveFromNetwork done: into the receive buffer, or straight into the caller's. */
  private completeRead(id: number, kind: number, bytesTransferred: number): Status {
    const room = this.readRoom
    if (!isByteCount(bytesTransferred, room)) {
      this.receiveOut = kind // the read stays outstanding
      this.receiveOutId = id
      return this.error(
        Status.InvalidParameter,
        `bytesTransferred must be an integer from 0 to ${room} for this receive, got ${bytesTransferred}`
      )
    }
    // "RECEIVE_FROM_NETWORK with 0: the receive is cancelled": the transport ended
    if (bytesTransferred === 0) {
      this.eof = true
      this.directView = EMPTY
      return Status.Ok
    }
    if (kind === OUT_RECEIVE_READ) {
      this.rend += bytesTransferred
      if (bytesTransferred === room && this.readToEnd && this.rbuf.length < this.rcap) this.growReceive = true
      return Status.Ok
    }
    const from = this.directLength
    const app = this.receiveBuffer!
    if (this.frameMasked) {
      // (what the unmasking copy filled is unmasked already)
      const unmasked = this.directUnmasked < bytesTransferred ? this.directUnmasked : bytesTransferred
      if (unmasked < bytesTransferred) {
        applyMask(app, from + unmasked, from + bytesTransferred, this.header.maskKey, (this.payloadMaskOffset + unmasked) & 3)
      }
      this.payloadMaskOffset += bytesTransferred
    }
    this.directView = EMPTY
    this.directLength = from + bytesTransferred
    this.directLastRead = bytesTransferred
    if (this.messageOpcode === Opcode.Text && this.verifyUtf8) {
      // checked as it arrives: an invalid piece fails the connection before any of it is delivered
      const state = utf8Step(this.utf8State, app, from, from + bytesTransferred)
      if (state === UTF8_REJECT) this.fail(Status.InvalidFormat, 1007, "a text message is not valid UTF-8")
      else this.utf8State = state
    }
    return Status.Ok
  }

  private completePong(bytesTransferred: number): Status {
    if (bytesTransferred > 0 && bytesTransferred !== this.pongOut!.length) this.sendBroken = true
    this.pongOut = undefined
    return Status.Ok
  }

  private completeDelivery(): void {
    this.receivePending = false
    this.receiveContext = undefined
    this.receiveBuffer = undefined
    // Micro-optimisation: a data chunk (nearly every delivery) here, the others out of line, so
    // that V8 inlines this into a driver's loop (see `sendAction`).
    if (this.deliverKind !== DELIVER_DATA) {
      this.completeOtherDelivery()
      return
    }
    this.consumePayload(this.deliverEnd - this.deliverStart)
    this.rstart = this.deliverEnd
  }

  /** The end of a delivery of the end of stream, of a chunk read into the caller's buffer, or of a control frame. */
  private completeOtherDelivery(): void {
    switch (this.deliverKind) {
      case DELIVER_EOF:
        return
      case DELIVER_DIRECT:
        this.consumePayload(this.directLength)
        this.directLength = 0
        return
      default: // DELIVER_CONTROL
        this.rstart += this.deliverControlLength
        this.rstate = RS_HEADER
        // (an aborted handle stays aborted: a driver may drain the Close after `abort`)
        if (this.deliverType === BufferTypeCode.Close) {
          if (this.state === HandleState.CloseSent) this.state = HandleState.Closed
          else if (this.state === HandleState.Open) this.state = HandleState.CloseReceived
        }
    }
  }

  /** Accounts for `delivered` payload bytes handed to the application; at the frame's end, expects a header. */
  private consumePayload(delivered: number): void {
    this.payloadRemaining -= delivered
    if (this.payloadRemaining === 0) {
      this.rstate = RS_HEADER
      if (this.frameFin) {
        this.messageOpcode = 0
        this.messageSize = 0
      }
    }
  }

  /** Decodes a delivered close reason (a helper for drivers; not on the hot path). */
  static decodeReason(bytes: Uint8Array): string {
    return decodeUtf8(bytes)
  }
}

const PARSE_NEED_MORE = 0
const PARSE_DELIVER = 1
const PARSE_PONG = 2
const PARSE_FAILED = 3
/** A ping waits until the pongs waiting are written (see {@link Engine.pongsBlockReading}). */
const PARSE_PONGS_WAIT = 4

const headerErrorMessage = (code: number): string => {
  switch (code) {
    case HeaderError.ReservedOpcode:
      return "a frame uses a reserved opcode"
    case HeaderError.FragmentedControlFrame:
      return "a control frame is fragmented (FIN is 0)"
    case HeaderError.LengthMostSignificantBit:
      return "a 64-bit payload length has its most significant bit set"
    case HeaderError.LengthTooLarge:
      return "a payload length exceeds 2^53-1 bytes"
    case HeaderError.CloseBodyTruncated:
      return "a Close frame has a 1-byte body"
    default:
      return "a control frame payload is at most 125 bytes, its length in the 7-bit field (RFC 6455 sections 5.2 and 5.5)"
  }
}

const rsvNames = (rsv: number): string =>
  [(rsv & 4) !== 0 ? "1" : "", (rsv & 2) !== 0 ? "2" : "", (rsv & 1) !== 0 ? "3" : ""].filter((s) => s !== "").join("/")
