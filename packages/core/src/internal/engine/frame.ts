/**
 * The base framing protocol (RFC 6455 section 5.2): opcodes, the frame header and its wire
 * encoding, and the body of a Close frame (sections 5.5.1 and 7.4).
 *
 * Sans-I/O: the parser reads a header from a byte range and consumes nothing until the whole
 * header is present; the encoder writes one into a caller-owned buffer. Neither allocates nor
 * throws. Rules that depend on the endpoint or on negotiated extensions (RSV bits, the MASK bit,
 * fragmentation order) are the engine's to check.
 *
 * @since 0.1.0
 */

/**
 * Frame opcodes (RFC 6455 section 5.2); 0x3-0x7 and 0xB-0xF are reserved.
 *
 * @category constants
 * @since 0.1.0
 */
export const Opcode = {
  /** %x0, continues a fragmented message (section 5.4). */
  Continuation: 0x0,
  /** %x1, first frame of a text message. */
  Text: 0x1,
  /** %x2, first frame of a binary message. */
  Binary: 0x2,
  /** %x8, connection close (section 5.5.1). */
  Close: 0x8,
  /** %x9, ping (section 5.5.2). */
  Ping: 0x9,
  /** %xA, pong (section 5.5.3). */
  Pong: 0xA
} as const

/**
 * One of the {@link Opcode} values.
 *
 * @category models
 * @since 0.1.0
 */
export type Opcode = (typeof Opcode)[keyof typeof Opcode]

/**
 * The RSV bits as they appear in {@link FrameHeader.rsv} (RFC 6455 section 5.2): RSV1 is the
 * highest of the three.
 *
 * @category constants
 * @since 0.1.0
 */
export const Rsv = {
  /** RSV1, e.g. "compressed" under permessage-deflate (RFC 7692). */
  Rsv1: 0b100,
  /** RSV2. */
  Rsv2: 0b010,
  /** RSV3. */
  Rsv3: 0b001
} as const

/**
 * The largest control frame payload (RFC 6455 section 5.5): "All control frames MUST have a
 * payload length of 125 bytes or less".
 *
 * @category constants
 * @since 0.1.0
 */
export const MAX_CONTROL_PAYLOAD = 125

/**
 * The longest frame header (RFC 6455 section 5.2): 2 bytes, 8 of extended payload length and 4 of
 * masking key.
 *
 * @category constants
 * @since 0.1.0
 */
export const MAX_HEADER_LENGTH = 14

/**
 * The largest payload length accepted (2^53 - 1): a 64-bit length (RFC 6455 section 5.2) must be
 * exact as a JavaScript number.
 *
 * @category constants
 * @since 0.1.0
 */
export const MAX_SAFE_PAYLOAD_LENGTH = Number.MAX_SAFE_INTEGER

/**
 * The longest close reason in bytes (RFC 6455 section 5.5): the 125-byte control payload less the
 * 2-byte status code.
 *
 * @category constants
 * @since 0.1.0
 */
export const MAX_CLOSE_REASON_LENGTH = MAX_CONTROL_PAYLOAD - 2

// Header bits (RFC 6455 section 5.2).
const FIN_BIT = 0x80
const RSV_SHIFT = 4
const RSV_BITS = 0b111
const OPCODE_BITS = 0x0f
const MASK_BIT = 0x80
const LENGTH_BITS = 0x7f
/** 7-bit length value announcing a 16-bit extended length. */
const LENGTH_16 = 126
/** 7-bit length value announcing a 64-bit extended length. */
const LENGTH_64 = 127
/** Most significant bit of the first byte of a 64-bit length. */
const LENGTH_64_MSB = 0x80
/**
 * The largest payload length of the 7-bit length field (RFC 6455 section 5.2).
 *
 * @category constants
 * @since 0.1.0
 */
export const MAX_LENGTH_7 = 125
/**
 * The largest payload length of the 16-bit length field (RFC 6455 section 5.2).
 *
 * @category constants
 * @since 0.1.0
 */
export const MAX_LENGTH_16 = 0xffff
const BASE_HEADER_LENGTH = 2
const EXTENDED_16_LENGTH = 2
const EXTENDED_64_LENGTH = 8
/**
 * The length of a masking key (RFC 6455 section 5.2).
 *
 * @category constants
 * @since 0.1.0
 */
export const MASK_KEY_LENGTH = 4
/** 2^32, to split and join the two 32-bit halves of a 64-bit length. */
const UINT32_RANGE = 0x1_0000_0000
/** Largest high half of a 64-bit length not above 2^53 - 1. */
const MAX_SAFE_HIGH_WORD = 0x1f_ffff
/** Status code length at the start of a Close body (section 5.5.1). */
const CLOSE_CODE_LENGTH = 2
/** Opcodes with this bit set are control frames (section 5.5). */
const CONTROL_BIT = 0x8

/**
 * Whether `opcode` is a control frame opcode, Close, Ping or Pong (RFC 6455 section 5.5).
 *
 * @category guards
 * @since 0.1.0
 */
export const isControlOpcode = (opcode: number): boolean => (opcode & CONTROL_BIT) !== 0

/**
 * Whether `opcode` is one of the six opcodes RFC 6455 section 5.2 defines (not reserved).
 *
 * @category guards
 * @since 0.1.0
 */
export const isKnownOpcode = (opcode: number): boolean =>
  opcode <= Opcode.Binary ? opcode >= Opcode.Continuation : opcode >= Opcode.Close && opcode <= Opcode.Pong

/**
 * Header errors {@link parseHeader} detects from the header alone (RFC 6455 sections 5.2 and
 * 5.5), as negative return values; all call for close status 1002.
 *
 * @category errors
 * @since 0.1.0
 */
export const HeaderError = {
  /**
   * Opcode 0x3-0x7 or 0xB-0xF: "If an unknown opcode is received, the receiving endpoint MUST
   * _Fail the WebSocket Connection_" (section 5.2).
   */
  ReservedOpcode: -1,
  /** Close, Ping or Pong with FIN = 0: control frames "MUST NOT be fragmented" (section 5.5). */
  FragmentedControlFrame: -2,
  /** 64-bit length with its most significant bit set: "the most significant bit MUST be 0" (section 5.2). */
  LengthMostSignificantBit: -3,
  /** 64-bit length above 2^53 - 1, beyond what this implementation represents exactly. */
  LengthTooLarge: -4,
  /**
   * Control frame payload above 125 bytes, or a 16- or 64-bit length code on a control frame: "All
   * control frames MUST have a payload length of 125 bytes or less" (section 5.5), and "the minimal
   * number of bytes MUST be used to encode the length" (section 5.2).
   */
  ControlPayloadTooLong: -5,
  /**
   * Close frame with a 1-byte body: a body, if any, "MUST contain a 2-byte unsigned integer"
   * first (section 5.5.1).
   */
  CloseBodyTruncated: -6
} as const

/**
 * One of the {@link HeaderError} values.
 *
 * @category errors
 * @since 0.1.0
 */
export type HeaderError = (typeof HeaderError)[keyof typeof HeaderError]

/**
 * A parsed frame header (RFC 6455 section 5.2), filled in place by {@link parseHeader} so that a
 * receiver reuses one instance for every frame.
 *
 * @category models
 * @since 0.1.0
 */
export class FrameHeader {
  /** FIN: this is the final fragment of a message. */
  fin: boolean
  /** RSV1-RSV3 as a 3-bit number, RSV1 highest (see {@link Rsv}). */
  rsv: number
  /** The 4-bit opcode (see {@link Opcode}). */
  opcode: number
  /** MASK: the payload is masked with {@link FrameHeader.maskKey}. */
  masked: boolean
  /** Payload length in bytes, at most {@link MAX_SAFE_PAYLOAD_LENGTH}. */
  payloadLength: number
  /** Masking-key (section 5.3), owned by this instance; all zero when the frame is not masked. */
  readonly maskKey: Uint8Array
  /** Header length in bytes, 2 to {@link MAX_HEADER_LENGTH}. */
  headerLength: number

  constructor() {
    this.fin = false
    this.rsv = 0
    this.opcode = Opcode.Continuation
    this.masked = false
    this.payloadLength = 0
    this.maskKey = new Uint8Array(MASK_KEY_LENGTH)
    this.headerLength = 0
  }
}

/**
 * Reads the frame header at `bytes[start, end)` into `header` (RFC 6455 section 5.2).
 *
 * **Details**
 *
 * Returns the header length once the whole header is present (and only then fills `header`), `0`
 * while more bytes are needed, or a negative {@link HeaderError} as soon as the bytes so far show
 * the header is invalid. Non-minimal length encodings are accepted for data frames; a control
 * frame must use the 7-bit length (its payload is at most 125 bytes and the minimal encoding is
 * required), so a 16- or 64-bit length code fails it at once. The RSV bits and the MASK bit are
 * reported, not judged: they depend on the endpoint and on negotiated extensions.
 *
 * @category constructors
 * @since 0.1.0
 */
export const parseHeader = (header: FrameHeader, bytes: Uint8Array, start: number, end: number): number => {
  const available = end - start
  if (available < 1) return 0
  const b0 = bytes[start]!
  const opcode = opcodeOf(b0)
  const fin = (b0 & FIN_BIT) !== 0
  // "If an unknown opcode is received, the receiving endpoint MUST _Fail the WebSocket Connection_."
  if (!isKnownOpcode(opcode)) return HeaderError.ReservedOpcode
  const control = isControlOpcode(opcode)
  // "Control frames themselves MUST NOT be fragmented."
  if (control && !fin) return HeaderError.FragmentedControlFrame
  if (available < BASE_HEADER_LENGTH) return 0
  const b1 = bytes[start + 1]!
  const masked = isMaskedOf(b1)
  let payloadLength = b1 & LENGTH_BITS
  // "All control frames MUST have a payload length of 125 bytes or less", in the 7-bit form: a
  // 16- or 64-bit length code is too long already
  if (control && payloadLength > MAX_LENGTH_7) return HeaderError.ControlPayloadTooLong
  let length = BASE_HEADER_LENGTH
  if (payloadLength === LENGTH_16) {
    length += EXTENDED_16_LENGTH
    if (available < length) return 0
    payloadLength = (bytes[start + 2]! << 8) | bytes[start + 3]!
  } else if (payloadLength === LENGTH_64) {
    length += EXTENDED_64_LENGTH
    if (available < length) return 0
    const b2 = bytes[start + 2]!
    // "the most significant bit MUST be 0"
    if ((b2 & LENGTH_64_MSB) !== 0) return HeaderError.LengthMostSignificantBit
    const high = ((b2 << 24) | (bytes[start + 3]! << 16) | (bytes[start + 4]! << 8) | bytes[start + 5]!) >>> 0
    if (high > MAX_SAFE_HIGH_WORD) return HeaderError.LengthTooLarge
    const b6 = bytes[start + 6]!
    const low = ((b6 << 24) | (bytes[start + 7]! << 16) | (bytes[start + 8]! << 8) | bytes[start + 9]!) >>> 0
    // Micro-optimisation: a length below 2^32 is taken as is. `high * UINT32_RANGE + low` is
    // a floating-point result even when high is 0, and once a heap number was stored in
    // `payloadLength`, V8 reads that field (and the engine's counters fed from it) as a double
    // in every frame after: 25-35 % slower small frames for the rest of the process.
    payloadLength = high === 0 ? low : high * UINT32_RANGE + low
  }
  if (opcode === Opcode.Close && payloadLength === 1) return HeaderError.CloseBodyTruncated
  if (masked) {
    if (available < length + MASK_KEY_LENGTH) return 0
    const key = header.maskKey
    key[0] = bytes[start + length]!
    key[1] = bytes[start + length + 1]!
    key[2] = bytes[start + length + 2]!
    key[3] = bytes[start + length + 3]!
    length += MASK_KEY_LENGTH
  } else {
    const key = header.maskKey
    key[0] = 0
    key[1] = 0
    key[2] = 0
    key[3] = 0
  }
  header.fin = fin
  header.rsv = rsvOf(b0)
  header.opcode = opcode
  header.masked = masked
  header.payloadLength = payloadLength
  header.headerLength = length
  return length
}

/**
 * How many more bytes the incomplete header at `bytes[start, end)` needs (RFC 6455 section 5.2):
 * the first two bytes tell the length encoding and whether a masking key follows.
 *
 * @category constructors
 * @since 0.1.0
 */
export const headerBytesMissing = (bytes: Uint8Array, start: number, end: number): number => {
  const available = end - start
  if (available < BASE_HEADER_LENGTH) return BASE_HEADER_LENGTH - available
  const b1 = bytes[start + 1]!
  const code = b1 & LENGTH_BITS
  const total = BASE_HEADER_LENGTH +
    (code === LENGTH_16 ? EXTENDED_16_LENGTH : code === LENGTH_64 ? EXTENDED_64_LENGTH : 0) +
    (isMaskedOf(b1) ? MASK_KEY_LENGTH : 0)
  return total - available
}

/**
 * The reserved bits (RSV1-3 as a number from 0 to 7) of the frame whose first byte is `b0`.
 *
 * @category getters
 * @since 0.1.0
 */
export const rsvOf = (b0: number): number => (b0 >>> RSV_SHIFT) & RSV_BITS

/**
 * The opcode of the frame whose first byte is `b0`.
 *
 * @category getters
 * @since 0.1.0
 */
export const opcodeOf = (b0: number): number => b0 & OPCODE_BITS

/**
 * Whether the frame whose second byte is `b1` is masked.
 *
 * @category getters
 * @since 0.1.0
 */
export const isMaskedOf = (b1: number): boolean => (b1 & MASK_BIT) !== 0

/**
 * The length of the minimal header for a payload of `payloadLength` bytes (RFC 6455 section 5.2):
 * 2, 4 or 10 bytes, plus 4 when masked.
 *
 * @category constructors
 * @since 0.1.0
 */
export const headerLength = (payloadLength: number, masked: boolean): number =>
  (payloadLength <= MAX_LENGTH_7
    ? BASE_HEADER_LENGTH
    : payloadLength <= MAX_LENGTH_16
    ? BASE_HEADER_LENGTH + EXTENDED_16_LENGTH
    : BASE_HEADER_LENGTH + EXTENDED_64_LENGTH) + (masked ? MASK_KEY_LENGTH : 0)

/**
 * Writes the header of a frame whose payload length fits the 7- or the 16-bit field (at most
 * 65535 bytes; RFC 6455 section 5.2), no reserved bits set, at `offset`: up to the masking key of
 * a masked one, which is the caller's to write after it. Returns the bytes written: 2 or 4.
 *
 * Micro-optimisation: {@link encodeHeader} for the frames of nearly every send, small enough for
 * V8 to inline into a driver's loop with the rest of the send.
 *
 * @category constructors
 * @since 0.1.0
 */
export const encodeHeaderStart = (
  target: Uint8Array,
  offset: number,
  fin: boolean,
  opcode: number,
  payloadLength: number,
  masked: boolean
): number => {
  target[offset] = (fin ? FIN_BIT : 0) | (opcode & OPCODE_BITS)
  const maskBit = masked ? MASK_BIT : 0
  if (payloadLength <= MAX_LENGTH_7) {
    target[offset + 1] = maskBit | payloadLength
    return BASE_HEADER_LENGTH
  }
  target[offset + 1] = maskBit | LENGTH_16
  target[offset + 2] = payloadLength >>> 8
  target[offset + 3] = payloadLength & 0xff
  return BASE_HEADER_LENGTH + EXTENDED_16_LENGTH
}

/**
 * Writes a frame header at `target[offset]` with the minimal length encoding (RFC 6455 section
 * 5.2) and returns the number of bytes written ({@link headerLength}).
 *
 * **Details**
 *
 * `rsv` holds RSV1-RSV3 as a 3-bit number (see {@link Rsv}); MASK is set and the key written when
 * `maskKey` is given (4 bytes, possibly all zero).
 *
 * **Gotchas**
 *
 * Nothing is validated: the caller passes a known opcode, a length from 0 to
 * {@link MAX_SAFE_PAYLOAD_LENGTH} (at most 125 for control frames, FIN set on them) and a target
 * with {@link MAX_HEADER_LENGTH} bytes free.
 *
 * @category constructors
 * @since 0.1.0
 */
export const encodeHeader = (
  target: Uint8Array,
  offset: number,
  fin: boolean,
  rsv: number,
  opcode: number,
  payloadLength: number,
  maskKey: Uint8Array | undefined
): number => {
  // "the minimal number of bytes MUST be used to encode the length"
  let i: number
  if (payloadLength <= MAX_LENGTH_16) {
    i = offset + encodeHeaderStart(target, offset, fin, opcode, payloadLength, maskKey !== undefined)
  } else {
    target[offset] = (fin ? FIN_BIT : 0) | (opcode & OPCODE_BITS)
    target[offset + 1] = (maskKey === undefined ? 0 : MASK_BIT) | LENGTH_64
    i = offset + BASE_HEADER_LENGTH
    const high = Math.floor(payloadLength / UINT32_RANGE)
    const low = payloadLength >>> 0
    target[i] = high >>> 24
    target[i + 1] = (high >>> 16) & 0xff
    target[i + 2] = (high >>> 8) & 0xff
    target[i + 3] = high & 0xff
    target[i + 4] = low >>> 24
    target[i + 5] = (low >>> 16) & 0xff
    target[i + 6] = (low >>> 8) & 0xff
    target[i + 7] = low & 0xff
    i += EXTENDED_64_LENGTH
  }
  if (rsv !== 0) target[offset] = target[offset]! | ((rsv & RSV_BITS) << RSV_SHIFT)
  if (maskKey !== undefined) {
    target[i] = maskKey[0]!
    target[i + 1] = maskKey[1]!
    target[i + 2] = maskKey[2]!
    target[i + 3] = maskKey[3]!
    i += MASK_KEY_LENGTH
  }
  return i - offset
}

/**
 * Returned by {@link parseCloseCode} for an empty Close body: no status code, reported locally as
 * 1005 (RFC 6455 section 7.1.5).
 *
 * @category constants
 * @since 0.1.0
 */
export const CLOSE_CODE_ABSENT = -1

/**
 * Returned by {@link parseCloseCode} for a one-byte Close body, which cannot hold the 2-byte code
 * (RFC 6455 section 5.5.1); a protocol error (1002).
 *
 * @category constants
 * @since 0.1.0
 */
export const CLOSE_CODE_TRUNCATED = -2

/**
 * The status code at the start of the Close body `bytes[start, end)` (RFC 6455 section 5.5.1), or
 * {@link CLOSE_CODE_ABSENT} for an empty body, or {@link CLOSE_CODE_TRUNCATED} for a 1-byte body.
 *
 * **Details**
 *
 * "If there is a body, the first two bytes of the body MUST be a 2-byte unsigned integer (in
 * network byte order) representing a status code"; the reason, `bytes[start + 2, end)`, must be
 * valid UTF-8. Whether the code may appear on the wire is {@link isValidWireCloseCode}'s call.
 *
 * @category constructors
 * @since 0.1.0
 */
export const parseCloseCode = (bytes: Uint8Array, start: number, end: number): number => {
  const length = end - start
  if (length === 0) return CLOSE_CODE_ABSENT
  if (length < CLOSE_CODE_LENGTH) return CLOSE_CODE_TRUNCATED
  return (bytes[start]! << 8) | bytes[start + 1]!
}

/**
 * Whether a received Close frame may carry `code` (RFC 6455 section 7.4, spec 7.4): 1000-1003,
 * 1007-1014 and 3000-4999; anything else is a protocol error (1002).
 *
 * **Details**
 *
 * 1004 is reserved; 1005, 1006 and 1015 "MUST NOT be set as a status code in a Close control frame
 * by an endpoint"; 0-999 and 1016-2999 are not assigned; 5000 and up do not exist.
 *
 * @category guards
 * @since 0.1.0
 */
export const isValidWireCloseCode = (code: number): boolean =>
  Number.isInteger(code) &&
  ((code >= 1000 && code <= 1003) || (code >= 1007 && code <= 1014) || (code >= 3000 && code <= 4999))

/**
 * Whether a local Close may send `code` (RFC 6455 section 7.4, spec 7.4): the same set as
 * {@link isValidWireCloseCode}. An empty body (the NULL buffer of `WebSocketSend`) sends no code.
 *
 * @category guards
 * @since 0.1.0
 */
export const isValidSendCloseCode = (code: number): boolean => isValidWireCloseCode(code)

/**
 * Writes a Close body, the status code in network byte order then the reason bytes, at
 * `target[offset]` (RFC 6455 section 5.5.1) and returns the number of bytes written.
 *
 * **Gotchas**
 *
 * Nothing is validated: the caller passes a code allowed by {@link isValidSendCloseCode} and a
 * UTF-8 reason of at most {@link MAX_CLOSE_REASON_LENGTH} bytes.
 *
 * @category constructors
 * @since 0.1.0
 */
export const encodeCloseBody = (target: Uint8Array, offset: number, code: number, reasonBytes: Uint8Array): number => {
  target[offset] = code >>> 8
  target[offset + 1] = code & 0xff
  target.set(reasonBytes, offset + CLOSE_CODE_LENGTH)
  return CLOSE_CODE_LENGTH + reasonBytes.length
}
