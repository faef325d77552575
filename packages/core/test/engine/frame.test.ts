import { assert, describe, it } from "@effect/vitest"
import { Arbitrary, Schema } from "effect"
import {
  CLOSE_CODE_ABSENT,
  CLOSE_CODE_TRUNCATED,
  encodeCloseBody,
  encodeHeader,
  FrameHeader,
  HeaderError,
  headerLength,
  isControlOpcode,
  isKnownOpcode,
  isValidSendCloseCode,
  isValidWireCloseCode,
  MAX_CLOSE_REASON_LENGTH,
  MAX_CONTROL_PAYLOAD,
  MAX_HEADER_LENGTH,
  MAX_SAFE_PAYLOAD_LENGTH,
  Opcode,
  parseCloseCode,
  parseHeader,
  Rsv
} from "../../src/internal/engine/frame.ts"
import { applyMask, maskInto } from "../../src/internal/engine/mask.ts"

const hex = (s: string): Uint8Array =>
  Uint8Array.from(s.replace(/\s+/g, "").match(/../g) ?? [], (h) => parseInt(h, 16))
const toHex = (bytes: Uint8Array): string => Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("")

/** Parses `wire` as one frame: the header, and the payload unmasked. */
const parseFrame = (wire: Uint8Array) => {
  const header = new FrameHeader()
  const length = parseHeader(header, wire, 0, wire.length)
  assert.isAbove(length, 0, "complete header")
  const payload = wire.slice(length, length + header.payloadLength)
  applyMask(payload, 0, payload.length, header.maskKey, 0)
  return { header, length, payload }
}

/** Serializes a frame as a sender does: header, then the payload masked into place. */
const serializeFrame = (
  fin: boolean,
  opcode: number,
  payload: Uint8Array,
  maskKey: Uint8Array | undefined
): Uint8Array => {
  const wire = new Uint8Array(headerLength(payload.length, maskKey !== undefined) + payload.length)
  const length = encodeHeader(wire, 0, fin, 0, opcode, payload.length, maskKey)
  if (maskKey === undefined) wire.set(payload, length)
  else maskInto(payload, 0, payload.length, wire, length, maskKey, 0)
  return wire
}

const filled = (length: number): Uint8Array => Uint8Array.from({ length }, (_, i) => i & 0xff)

interface Example {
  readonly name: string
  readonly wire: string
  readonly fin: boolean
  readonly opcode: number
  readonly maskKey: string | undefined
  readonly payload: string
}

/** RFC 6455 section 5.7. */
const examples: ReadonlyArray<Example> = [
  {
    name: "a single-frame unmasked text message",
    wire: "81 05 48656c6c6f",
    fin: true,
    opcode: Opcode.Text,
    maskKey: undefined,
    payload: "48656c6c6f"
  },
  {
    name: "a single-frame masked text message",
    wire: "81 85 37fa213d 7f9f4d5158",
    fin: true,
    opcode: Opcode.Text,
    maskKey: "37fa213d",
    payload: "48656c6c6f"
  },
  {
    name: "a fragmented unmasked text message, first fragment",
    wire: "01 03 48656c",
    fin: false,
    opcode: Opcode.Text,
    maskKey: undefined,
    payload: "48656c"
  },
  {
    name: "a fragmented unmasked text message, second fragment",
    wire: "80 02 6c6f",
    fin: true,
    opcode: Opcode.Continuation,
    maskKey: undefined,
    payload: "6c6f"
  },
  {
    name: "an unmasked Ping",
    wire: "89 05 48656c6c6f",
    fin: true,
    opcode: Opcode.Ping,
    maskKey: undefined,
    payload: "48656c6c6f"
  },
  {
    name: "a masked Pong",
    wire: "8a 85 37fa213d 7f9f4d5158",
    fin: true,
    opcode: Opcode.Pong,
    maskKey: "37fa213d",
    payload: "48656c6c6f"
  },
  {
    name: "256 bytes binary message in a single unmasked frame",
    wire: "82 7e 0100" + toHex(filled(256)),
    fin: true,
    opcode: Opcode.Binary,
    maskKey: undefined,
    payload: toHex(filled(256))
  },
  {
    name: "64KiB binary message in a single unmasked frame",
    wire: "82 7f 0000000000010000" + toHex(filled(65536)),
    fin: true,
    opcode: Opcode.Binary,
    maskKey: undefined,
    payload: toHex(filled(65536))
  }
]

const int = (minimum: number, maximum: number) =>
  Arbitrary.schema(Schema.Int.check(Schema.isBetween({ minimum, maximum })))

const knownOpcodes = [Opcode.Continuation, Opcode.Text, Opcode.Binary, Opcode.Close, Opcode.Ping, Opcode.Pong]

/** A payload length, spread over the 7-bit, 16-bit and 64-bit encodings and their edges. */
const payloadLength = Arbitrary.all([int(0, 3), int(0, MAX_SAFE_PAYLOAD_LENGTH)]).pipe(
  Arbitrary.map(([kind, value]) => {
    switch (kind) {
      case 0:
        return value % 126
      case 1:
        return 126 + (value % (65536 - 126))
      case 2:
        return Math.max(65536, value)
      default:
        return [0, 125, 126, 65535, 65536, 2 ** 32 - 1, 2 ** 32, MAX_SAFE_PAYLOAD_LENGTH][value % 8]!
    }
  })
)

const frameHeader = Arbitrary.all({
  fin: Arbitrary.schema(Schema.Boolean),
  rsv: int(0, 7),
  opcode: int(0, knownOpcodes.length - 1).pipe(Arbitrary.map((i) => knownOpcodes[i]!)),
  payloadLength,
  maskKey: Arbitrary.all([
    Arbitrary.schema(Schema.Boolean),
    Arbitrary.array(int(0, 255), { minLength: 4, maxLength: 4 })
  ]).pipe(Arbitrary.map(([masked, key]) => masked ? Uint8Array.from(key) : undefined))
}).pipe(
  // control frames are final and carry at most 125 bytes; a Close body is never 1 byte long
  Arbitrary.map((h) => {
    if (!isControlOpcode(h.opcode)) return h
    const length = h.payloadLength % (MAX_CONTROL_PAYLOAD + 1)
    return { ...h, fin: true, payloadLength: h.opcode === Opcode.Close && length === 1 ? 2 : length }
  })
)

describe("frame header (RFC 6455 section 5.2)", () => {
  describe("RFC 6455 section 5.7 examples", () => {
    for (const example of examples) {
      it(`parses and serializes ${example.name}`, () => {
        const wire = hex(example.wire)
        const { header, length, payload } = parseFrame(wire)
        assert.strictEqual(header.fin, example.fin)
        assert.strictEqual(header.rsv, 0)
        assert.strictEqual(header.opcode, example.opcode)
        assert.strictEqual(header.masked, example.maskKey !== undefined)
        assert.strictEqual(toHex(header.maskKey), example.maskKey ?? "00000000")
        assert.strictEqual(header.payloadLength, hex(example.payload).length)
        assert.strictEqual(header.headerLength, length)
        assert.strictEqual(length + header.payloadLength, wire.length)
        assert.strictEqual(toHex(payload), example.payload)
        const maskKey = example.maskKey === undefined ? undefined : hex(example.maskKey)
        assert.strictEqual(toHex(serializeFrame(example.fin, example.opcode, payload, maskKey)), toHex(wire))
      })

      it(`needs more bytes for every strict prefix of the header of ${example.name}`, () => {
        const wire = hex(example.wire)
        const header = new FrameHeader()
        const length = parseHeader(header, wire, 0, wire.length)
        for (let end = 0; end < length; end++) {
          assert.strictEqual(parseHeader(header, wire, 0, end), 0, `${end} bytes`)
        }
        // and at an offset inside a larger buffer
        const shifted = new Uint8Array(wire.length + 3)
        shifted.set(wire, 3)
        assert.strictEqual(parseHeader(header, shifted, 3, 3 + length - 1), 0)
        assert.strictEqual(parseHeader(header, shifted, 3, shifted.length), length)
      })
    }
  })

  it("fills nothing until the header is complete", () => {
    const header = new FrameHeader()
    assert.strictEqual(parseHeader(header, hex("82 7e 01"), 0, 3), 0)
    assert.strictEqual(header.opcode, Opcode.Continuation)
    assert.strictEqual(header.payloadLength, 0)
    assert.strictEqual(parseHeader(header, hex("81 85 37fa21"), 0, 5), 0)
    assert.isFalse(header.masked)
    assert.strictEqual(toHex(header.maskKey), "00000000")
  })

  it("clears the masking key of an unmasked frame after a masked one", () => {
    const header = new FrameHeader()
    assert.strictEqual(parseHeader(header, hex("81 85 37fa213d"), 0, 6), 6)
    assert.strictEqual(toHex(header.maskKey), "37fa213d")
    assert.strictEqual(parseHeader(header, hex("81 05"), 0, 2), 2)
    assert.strictEqual(toHex(header.maskKey), "00000000")
  })

  it("reports the RSV bits without judging them", () => {
    const header = new FrameHeader()
    assert.strictEqual(parseHeader(header, hex("c1 00"), 0, 2), 2)
    assert.strictEqual(header.rsv, Rsv.Rsv1)
    assert.strictEqual(parseHeader(header, hex("a1 00"), 0, 2), 2)
    assert.strictEqual(header.rsv, Rsv.Rsv2)
    assert.strictEqual(parseHeader(header, hex("91 00"), 0, 2), 2)
    assert.strictEqual(header.rsv, Rsv.Rsv3)
    assert.strictEqual(parseHeader(header, hex("f9 00"), 0, 2), 2)
    assert.strictEqual(header.rsv, Rsv.Rsv1 | Rsv.Rsv2 | Rsv.Rsv3)
  })

  it("accepts non-minimal length encodings", () => {
    const header = new FrameHeader()
    assert.strictEqual(parseHeader(header, hex("82 7e 007c"), 0, 4), 4)
    assert.strictEqual(header.payloadLength, 124)
    assert.strictEqual(parseHeader(header, hex("82 7f 000000000000007c"), 0, 10), 10)
    assert.strictEqual(header.payloadLength, 124)
  })

  it("reads 64-bit lengths up to 2^53 - 1", () => {
    const header = new FrameHeader()
    assert.strictEqual(parseHeader(header, hex("82 ff 001fffffffffffff 01020304"), 0, 14), MAX_HEADER_LENGTH)
    assert.strictEqual(header.payloadLength, MAX_SAFE_PAYLOAD_LENGTH)
    assert.strictEqual(parseHeader(header, hex("82 7f 00000001 00000000"), 0, 10), 10)
    assert.strictEqual(header.payloadLength, 2 ** 32)
    assert.strictEqual(parseHeader(header, hex("82 7f 00000000 ffffffff"), 0, 10), 10)
    assert.strictEqual(header.payloadLength, 2 ** 32 - 1)
  })

  describe("header errors", () => {
    const expectError = (wire: string, error: HeaderError, firstDetectable: number) => {
      const bytes = hex(wire)
      const header = new FrameHeader()
      assert.strictEqual(parseHeader(header, bytes, 0, bytes.length), error, wire)
      // detected as soon as the offending bytes are in, not before
      for (let end = 0; end < firstDetectable; end++) {
        assert.strictEqual(parseHeader(header, bytes, 0, end), 0, `${wire}: ${end} bytes`)
      }
      assert.strictEqual(parseHeader(header, bytes, 0, firstDetectable), error, `${wire}: ${firstDetectable} bytes`)
    }

    it("rejects every reserved opcode from the first byte", () => {
      for (let opcode = 0; opcode < 16; opcode++) {
        if (isKnownOpcode(opcode)) continue
        expectError(`${(0x80 | opcode).toString(16)} 00`, HeaderError.ReservedOpcode, 1)
        expectError(`${opcode.toString(16).padStart(2, "0")} 00`, HeaderError.ReservedOpcode, 1)
      }
    })

    it("rejects a fragmented control frame", () => {
      expectError("08 00", HeaderError.FragmentedControlFrame, 1)
      expectError("09 00", HeaderError.FragmentedControlFrame, 1)
      expectError("0a 00", HeaderError.FragmentedControlFrame, 1)
    })

    it("rejects a control frame longer than 125 bytes from its length code", () => {
      expectError("89 7e 007e", HeaderError.ControlPayloadTooLong, 2)
      expectError("88 7f 0000000000010000", HeaderError.ControlPayloadTooLong, 2)
      expectError("8a fe 00ff 37fa213d", HeaderError.ControlPayloadTooLong, 2)
      // even when the extended length, non-minimally, says 125 or less (RFC 6455 section 5.2:
      // "the minimal number of bytes MUST be used to encode the length")
      expectError("89 7e 007d", HeaderError.ControlPayloadTooLong, 2)
      expectError("8a 7f 0000000000000005", HeaderError.ControlPayloadTooLong, 2)
    })

    it("rejects a Close frame with a 1-byte body from its header", () => {
      expectError("88 01", HeaderError.CloseBodyTruncated, 2)
      expectError("88 81 37fa213d", HeaderError.CloseBodyTruncated, 2)
    })

    it("rejects a 64-bit length with the most significant bit set", () => {
      expectError("82 7f 8000000000000000", HeaderError.LengthMostSignificantBit, 10)
      expectError("82 ff ffffffffffffffff 37fa213d", HeaderError.LengthMostSignificantBit, 10)
    })

    it("rejects a 64-bit length above 2^53 - 1", () => {
      expectError("82 7f 0020000000000000", HeaderError.LengthTooLarge, 10)
      expectError("82 7f 7fffffffffffffff", HeaderError.LengthTooLarge, 10)
    })

    it("error codes are distinct and negative", () => {
      const codes = Object.values(HeaderError)
      assert.strictEqual(new Set(codes).size, codes.length)
      for (const code of codes) assert.isBelow(code, 0)
    })
  })

  it("headerLength switches encoding at 126 and 65536 bytes", () => {
    assert.strictEqual(headerLength(0, false), 2)
    assert.strictEqual(headerLength(125, false), 2)
    assert.strictEqual(headerLength(126, false), 4)
    assert.strictEqual(headerLength(65535, false), 4)
    assert.strictEqual(headerLength(65536, false), 10)
    assert.strictEqual(headerLength(MAX_SAFE_PAYLOAD_LENGTH, false), 10)
    assert.strictEqual(headerLength(125, true), 6)
    assert.strictEqual(headerLength(MAX_SAFE_PAYLOAD_LENGTH, true), MAX_HEADER_LENGTH)
  })

  it("encodeHeader switches encoding at 126 and 65536 bytes: the minimal one at every edge", () => {
    // "the minimal number of bytes MUST be used to encode the length"
    const target = new Uint8Array(MAX_HEADER_LENGTH)
    for (
      const [length, expected] of [
        [125, "827d"],
        [126, "827e007e"],
        [65535, "827effff"],
        [65536, "827f0000000000010000"]
      ] as const
    ) {
      const written = encodeHeader(target, 0, true, 0, Opcode.Binary, length, undefined)
      assert.strictEqual(toHex(target.subarray(0, written)), expected, `${length}`)
      assert.strictEqual(written, headerLength(length, false), `${length}`)
    }
  })

  it("encodes RSV bits and a zero masking key", () => {
    const target = new Uint8Array(MAX_HEADER_LENGTH)
    assert.strictEqual(encodeHeader(target, 0, true, Rsv.Rsv1, Opcode.Text, 5, new Uint8Array(4)), 6)
    assert.strictEqual(toHex(target.subarray(0, 6)), "c18500000000")
    assert.strictEqual(encodeHeader(target, 2, false, 0, Opcode.Binary, 200, undefined), 4)
    assert.strictEqual(toHex(target.subarray(2, 6)), "027e00c8")
  })

  it.prop("encodeHeader and parseHeader round-trip", [frameHeader, int(0, 3)], ([h, offset]) => {
    const target = new Uint8Array(offset + MAX_HEADER_LENGTH + 1)
    const written = encodeHeader(target, offset, h.fin, h.rsv, h.opcode, h.payloadLength, h.maskKey)
    assert.strictEqual(written, headerLength(h.payloadLength, h.maskKey !== undefined))
    const header = new FrameHeader()
    for (let end = offset; end < offset + written; end++) {
      assert.strictEqual(parseHeader(header, target, offset, end), 0)
    }
    assert.strictEqual(parseHeader(header, target, offset, target.length), written)
    assert.strictEqual(header.fin, h.fin)
    assert.strictEqual(header.rsv, h.rsv)
    assert.strictEqual(header.opcode, h.opcode)
    assert.strictEqual(header.masked, h.maskKey !== undefined)
    assert.strictEqual(header.payloadLength, h.payloadLength)
    assert.strictEqual(header.headerLength, written)
    assert.strictEqual(toHex(header.maskKey), h.maskKey === undefined ? "00000000" : toHex(h.maskKey))
  })
})

describe("opcodes (RFC 6455 section 5.2)", () => {
  it("classifies all 16 opcodes", () => {
    const known = new Set<number>(knownOpcodes)
    for (let opcode = 0; opcode < 16; opcode++) {
      assert.strictEqual(isKnownOpcode(opcode), known.has(opcode), `${opcode}`)
    }
    assert.deepStrictEqual(knownOpcodes.filter(isControlOpcode), [Opcode.Close, Opcode.Ping, Opcode.Pong])
  })
})

describe("close frame body (RFC 6455 sections 5.5.1 and 7.4)", () => {
  it("reads the status code, or reports an absent or truncated one", () => {
    assert.strictEqual(parseCloseCode(hex(""), 0, 0), CLOSE_CODE_ABSENT)
    assert.strictEqual(parseCloseCode(hex("03"), 0, 1), CLOSE_CODE_TRUNCATED)
    assert.strictEqual(parseCloseCode(hex("03e8"), 0, 2), 1000)
    assert.strictEqual(parseCloseCode(hex("ff 0fa0 627965"), 1, 6), 4000)
    assert.strictEqual(parseCloseCode(hex("ffff"), 0, 2), 65535)
  })

  it("encodes the status code in network byte order, then the reason", () => {
    const target = new Uint8Array(2 + MAX_CLOSE_REASON_LENGTH)
    assert.strictEqual(encodeCloseBody(target, 0, 1000, hex("627965")), 5)
    assert.strictEqual(toHex(target.subarray(0, 5)), "03e8627965")
    assert.strictEqual(encodeCloseBody(target, 1, 4999, hex("")), 2)
    assert.strictEqual(toHex(target.subarray(1, 3)), "1387")
  })

  it("accepts exactly 1000-1003, 1007-1014 and 3000-4999 on the wire", () => {
    for (let code = 0; code < 70000; code++) {
      const expected = (code >= 1000 && code <= 1003) || (code >= 1007 && code <= 1014) ||
        (code >= 3000 && code <= 4999)
      if (isValidWireCloseCode(code) !== expected) assert.fail(`wire ${code}`)
      if (isValidSendCloseCode(code) !== expected) assert.fail(`send ${code}`)
    }
    for (const code of [999, 1004, 1005, 1006, 1015, 1016, 2999, 5000, 1000.5, -1000, Number.NaN]) {
      assert.isFalse(isValidWireCloseCode(code), `${code}`)
      assert.isFalse(isValidSendCloseCode(code), `${code}`)
    }
  })
})
