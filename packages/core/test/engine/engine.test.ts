import { assert, describe, it } from "@effect/vitest"
import { Arbitrary, Schema } from "effect"
import { ActionCode, ActionRecord, BufferTypeCode, type Engine, QueueCode, Status } from "../../src/internal/engine/engine.ts"
import { Opcode } from "../../src/internal/engine/frame.ts"
import { HandleState } from "../../src/internal/engine/state.ts"
import {
  complete,
  concat,
  contentOf,
  codePoint,
  counting,
  decodeUtf8,
  drainSends,
  type EngineOverrides,
  expectAction,
  expectFailure,
  expectRejected,
  expectSendRejected,
  feed,
  type FeedOptions,
  hex,
  int,
  isUtf8,
  makeClient,
  makeEngine,
  makeServer,
  messagesOf,
  next,
  parseFrames,
  readHeaderByHand,
  RFC_KEY,
  seededBytes,
  send,
  sendAndDrain,
  stepBytes,
  toHex,
  utf8
} from "./helpers.ts"

const { Utf8Message, Utf8Fragment, BinaryMessage, BinaryFragment, Close, PingPong, UnsolicitedPong } = BufferTypeCode

// ---------------------------------------------------------------------------------------------
// Fixtures: RFC 6455 section 5.7, and streams built from them
// ---------------------------------------------------------------------------------------------

interface ReceiveFixture {
  readonly name: string
  readonly client: boolean
  readonly wire: string
  /** The deliveries, as {@link contentOf} renders them. */
  readonly expected: ReadonlyArray<unknown>
  /** What the receive side writes (automatic pongs), hex. */
  readonly sent?: string
  /** Split at every byte boundary (false: at a sample of them, for the 64 KiB fixture). */
  readonly everyBoundary?: boolean
}

const text = (s: string) => ({ kind: "text", data: toHex(utf8(s)) })
const binary = (bytes: Uint8Array) => ({ kind: "binary", data: toHex(bytes) })
const pong = (s: string) => ({ kind: "pong", data: toHex(utf8(s)) })
const closed = (closeStatus: number, reason = "") => ({ kind: "close", closeStatus, data: toHex(utf8(reason)) })

const receiveFixtures: ReadonlyArray<ReceiveFixture> = [
  {
    name: "a single-frame masked text message at a server",
    client: false,
    wire: "81 85 37fa213d 7f9f4d5158",
    expected: [text("Hello")]
  },
  {
    name: "a single-frame unmasked text message at a client",
    client: true,
    wire: "81 05 48656c6c6f",
    expected: [text("Hello")]
  },
  {
    name: "a fragmented unmasked text message",
    client: true,
    wire: "01 03 48656c 80 02 6c6f",
    expected: [text("Hello")]
  },
  {
    name: "a fragmented masked text message",
    client: false,
    wire: "01 83 37fa213d 7f9f4d 80 82 37fa213d 5b95",
    expected: [text("Hello")]
  },
  {
    name: "an unmasked Ping at a client, answered with a masked Pong",
    client: true,
    wire: "89 05 48656c6c6f",
    expected: [],
    sent: "8a 85 37fa213d 7f9f4d5158"
  },
  {
    name: "a masked Ping at a server, answered with an unmasked Pong",
    client: false,
    wire: "89 85 37fa213d 7f9f4d5158",
    expected: [],
    sent: "8a 05 48656c6c6f"
  },
  {
    name: "an unmasked Pong at a client",
    client: true,
    wire: "8a 05 48656c6c6f",
    expected: [pong("Hello")]
  },
  {
    name: "a masked Pong at a server",
    client: false,
    wire: "8a 85 37fa213d 7f9f4d5158",
    expected: [pong("Hello")]
  },
  {
    name: "a 256-byte binary message (16-bit length)",
    client: true,
    wire: "82 7e 0100" + toHex(counting(256)),
    expected: [binary(counting(256))]
  },
  {
    name: "a 65536-byte binary message (64-bit length)",
    client: true,
    wire: "82 7f 0000000000010000" + toHex(counting(65536)),
    expected: [binary(counting(65536))],
    everyBoundary: false
  },
  {
    name: "control frames between the fragments of a message, then a Close",
    client: true,
    wire: "01 03 48656c 89 05 48656c6c6f 8a 00 00 00 80 02 6c6f 82 00 88 05 03e8 627965",
    expected: [pong(""), text("Hello"), binary(new Uint8Array(0)), closed(1000, "bye")],
    sent: "8a 85 37fa213d 7f9f4d5158"
  },
  {
    name: "a masked stream: text split inside a code point, binary, empty text, Close",
    client: false,
    // "é€" = c3a9 e282ac, fragmented as c3 | a9e2 | 82ac; then a 0x02 message "ab"; "" ; Close 1001
    wire: "01 81 00000000 c3  00 82 00000000 a9e2  80 82 00000000 82ac" +
      " 82 82 37fa213d 5698  81 80 37fa213d  88 82 00000000 03e9",
    expected: [text("é€"), binary(utf8("ab")), text(""), closed(1001)]
  }
]

interface Outcome {
  readonly content: Array<unknown>
  readonly sent: string
  readonly failed: Status | undefined
}

const wireBytes = new Map<string, Uint8Array>()
const wireOf = (fixture: ReceiveFixture): Uint8Array => {
  let bytes = wireBytes.get(fixture.wire)
  if (bytes === undefined) {
    bytes = hex(fixture.wire)
    wireBytes.set(fixture.wire, bytes)
  }
  return bytes
}

const receiveAll = (fixture: ReceiveFixture, options: FeedOptions & { engine?: EngineOverrides } = {}): Outcome => {
  const engine = makeEngine(fixture.client, options.engine)
  const result = feed(engine, wireOf(fixture), options)
  return { content: contentOf(result.deliveries), sent: toHex(concat(result.sent)), failed: result.failed }
}

/** Split points: every boundary, or for a long wire every one in the first and last 300 bytes and every 251st. */
const splitPoints = (length: number, every: boolean): Array<number> => {
  const points: Array<number> = []
  for (let i = 1; i < length; i++) {
    if (every || i < 300 || length - i < 300 || i % 251 === 0) points.push(i)
  }
  return points
}

describe("RFC 6455 section 5.7 examples, received", () => {
  for (const fixture of receiveFixtures) {
    it(fixture.name, () => {
      const outcome = receiveAll(fixture)
      assert.strictEqual(outcome.failed, undefined)
      assert.deepStrictEqual(outcome.content, fixture.expected)
      assert.strictEqual(outcome.sent, toHex(hex(fixture.sent ?? "")))
    })
  }

  it("the fragmented message arrives as Utf8Fragment then Utf8Message", () => {
    const engine = makeClient()
    const { deliveries } = feed(engine, "01 03 48656c 80 02 6c6f")
    assert.deepStrictEqual(deliveries.map((d) => [d.bufferType, toHex(d.data)]), [
      [Utf8Fragment, "48656c"],
      [Utf8Message, "6c6f"]
    ])
  })

  it("binary messages arrive as BinaryMessage, in one chunk when they fit the receive buffer", () => {
    const engine = makeClient({ receiveBufferSize: 65536 })
    const { deliveries } = feed(engine, "82 7e 0100" + toHex(counting(256)) + "82 7f 0000000000010000" + toHex(counting(65536)))
    assert.deepStrictEqual(deliveries[0]!.bufferType, BinaryMessage)
    assert.deepStrictEqual(deliveries[0]!.data, counting(256))
    // the 64 KiB message shares the 64 KiB buffer with its header: a fragment, then the rest
    assert.deepStrictEqual(deliveries.slice(1).map((d) => d.bufferType), [BinaryFragment, BinaryMessage])
    assert.deepStrictEqual(concat(deliveries.slice(1).map((d) => d.data)), counting(65536))
  })

  it("a received Pong completes the receive as PingPong, a Ping does not", () => {
    const engine = makeClient()
    const ping = feed(engine, "89 05 48656c6c6f")
    assert.deepStrictEqual(ping.deliveries, [])
    assert.strictEqual(ping.sent.length, 1)
    const received = feed(engine, "8a 05 48656c6c6f")
    assert.deepStrictEqual(received.deliveries.map((d) => [d.bufferType, toHex(d.data)]), [[PingPong, "48656c6c6f"]])
  })
})

describe("RFC 6455 section 5.7 examples, sent", () => {
  it("a server sends Hello unmasked", () => {
    assert.strictEqual(toHex(sendAndDrain(makeServer(), Utf8Message, utf8("Hello"))), "810548656c6c6f")
  })

  it("a client sends Hello masked with the key drawn", () => {
    assert.strictEqual(toHex(sendAndDrain(makeClient(), Utf8Message, utf8("Hello"))), "818537fa213d7f9f4d5158")
  })

  it("a client with masking disabled sends a zero key", () => {
    const wire = sendAndDrain(makeClient({ disableMasking: true }), Utf8Message, utf8("Hello"))
    assert.strictEqual(toHex(wire), "81850000000048656c6c6f")
  })

  it("a server sends 256 and 65536 binary bytes with 16-bit and 64-bit lengths", () => {
    const server = makeServer()
    assert.strictEqual(toHex(sendAndDrain(server, BinaryMessage, counting(256))), "827e0100" + toHex(counting(256)))
    assert.strictEqual(
      toHex(sendAndDrain(server, BinaryMessage, counting(65536))),
      "827f0000000000010000" + toHex(counting(65536))
    )
  })

  it("a client masks 256 and 65536 binary bytes", () => {
    const client = makeClient({ sendBufferSize: 4096 })
    for (const length of [256, 65536]) {
      const frames = parseFrames(sendAndDrain(client, BinaryMessage, counting(length)))
      assert.strictEqual(frames.length, 1)
      assert.isTrue(frames[0]!.masked)
      assert.strictEqual(toHex(frames[0]!.maskKey), "37fa213d")
      assert.deepStrictEqual(frames[0]!.payload, counting(length))
    }
  })

  it("a server payload goes out from the caller's memory, header and payload as two buffers", () => {
    const server = makeServer()
    const payload = counting(300)
    send(server, BinaryMessage, payload, undefined, "ctx")
    const step = expectAction(next(server, QueueCode.Send), ActionCode.SendToNetwork, QueueCode.Send)
    assert.strictEqual(step.buffers.length, 2)
    assert.strictEqual(toHex(step.buffers[0]!), "827e012c")
    assert.strictEqual(step.buffers[1]!.buffer, payload.buffer)
    assert.strictEqual(step.context, "ctx")
    assert.strictEqual(step.bufferType, BinaryMessage)
    complete(server, step)
    const done = expectAction(next(server, QueueCode.Send), ActionCode.IndicateSendComplete, QueueCode.Send)
    assert.strictEqual(done.context, "ctx")
    complete(server, done)
    assert.strictEqual(next(server, QueueCode.Send).action, ActionCode.NoAction)
  })

  it("pings and pongs: Ping with Hello, an empty unsolicited Pong", () => {
    assert.strictEqual(toHex(sendAndDrain(makeClient(), PingPong, utf8("Hello"))), "898537fa213d7f9f4d5158")
    assert.strictEqual(toHex(sendAndDrain(makeServer(), PingPong)), "8900")
    assert.strictEqual(toHex(sendAndDrain(makeServer(), UnsolicitedPong)), "8a00")
    assert.strictEqual(toHex(sendAndDrain(makeClient(), UnsolicitedPong)), "8a8037fa213d")
  })

  it("a client's masked send leaves the caller's payload untouched", () => {
    const payload = utf8("Hello")
    sendAndDrain(makeClient(), Utf8Message, payload)
    assert.strictEqual(toHex(payload), "48656c6c6f")
  })
})

describe("received bytes split anywhere (spanning multiple reads)", () => {
  for (const fixture of receiveFixtures) {
    const every = fixture.everyBoundary !== false
    it(`${fixture.name}: split at ${every ? "every byte boundary" : "a sample of byte boundaries"}`, () => {
      const reference = receiveAll(fixture)
      const length = wireOf(fixture).length
      for (const at of splitPoints(length, every)) {
        const outcome = receiveAll(fixture, { chunks: [at, length - at] })
        assert.deepStrictEqual(outcome, reference, `split at ${at}`)
      }
    })
    it(`${fixture.name}: one byte at a time`, () => {
      assert.deepStrictEqual(receiveAll(fixture, { chunks: 1 }), receiveAll(fixture))
    })
  }

  it("4 KiB of text in frames cut inside code points, 256-byte receive buffer, split in two at every 7th boundary", () => {
    const message = "aé€😀".repeat(410) // 10 bytes a time
    const payload = utf8(message)
    // frames of 333 bytes: their boundaries fall inside code points
    const frames: Array<Uint8Array> = []
    for (let i = 0; i < payload.length; i += 333) {
      const part = payload.subarray(i, Math.min(i + 333, payload.length))
      const first = i === 0
      const fin = i + 333 >= payload.length
      frames.push(hex(((fin ? 0x80 : 0) | (first ? 1 : 0)).toString(16).padStart(2, "0") + "7e" + part.length.toString(16).padStart(4, "0")), part)
    }
    const wire = concat(frames)
    const fixture: ReceiveFixture = { name: "", client: true, wire: toHex(wire), expected: [] }
    const engineOptions = { engine: { receiveBufferSize: 256 } }
    const reference = receiveAll(fixture, engineOptions)
    assert.deepStrictEqual(reference.content, [text(message)])
    for (let at = 1; at < wire.length; at += 7) {
      assert.deepStrictEqual(receiveAll(fixture, { ...engineOptions, chunks: [at, wire.length - at] }), reference, `split at ${at}`)
    }
  })
})

// ---------------------------------------------------------------------------------------------
// Receive-side rules (spec 7.2)
// ---------------------------------------------------------------------------------------------

const failing = (
  client: boolean,
  wire: string,
  status: Status,
  closeStatus: number,
  message: RegExp,
  overrides: EngineOverrides = {}
) => {
  const engine = makeEngine(client, overrides)
  const result = feed(engine, wire)
  expectFailure(engine, result, status, closeStatus, message)
  return result
}

describe("masking (RFC 6455 section 5.3)", () => {
  it("a server fails on an unmasked client frame (1002)", () => {
    failing(false, "81 05 48656c6c6f", Status.InvalidFormat, 1002, /client frame is not masked/)
  })

  it("a server fails on an unmasked control frame too", () => {
    failing(false, "89 00", Status.InvalidFormat, 1002, /not masked/)
  })

  it("a server with masking disabled accepts unmasked frames, and masked ones", () => {
    const engine = makeServer({ disableMasking: true })
    const result = feed(engine, "81 05 48656c6c6f 81 85 37fa213d 7f9f4d5158")
    assert.strictEqual(result.failed, undefined)
    assert.deepStrictEqual(contentOf(result.deliveries), [text("Hello"), text("Hello")])
  })

  it("a client fails on a masked server frame (1002)", () => {
    failing(true, "81 85 37fa213d 7f9f4d5158", Status.InvalidFormat, 1002, /server frame is masked/)
  })

  it("a client fails on a masked frame even with a zero key", () => {
    failing(true, "82 80 00000000", Status.InvalidFormat, 1002, /server frame is masked/)
  })
})

describe("base framing (RFC 6455 section 5.2)", () => {
  for (const [bits, name] of [["c1", "RSV1"], ["a1", "RSV2"], ["91", "RSV3"], ["f1", "RSV1/2/3"]] as const) {
    it(`${name} set without an extension (1002)`, () => {
      failing(true, `${bits} 05 48656c6c6f`, Status.InvalidFormat, 1002, new RegExp(`reserved bits ${name} set`))
    })
  }

  it("RSV bits on a masked frame at a server (1002)", () => {
    failing(false, "c1 85 37fa213d 7f9f4d5158", Status.InvalidFormat, 1002, /RSV1/)
  })

  for (const opcode of [0x3, 0x4, 0x5, 0x6, 0x7, 0xb, 0xc, 0xd, 0xe, 0xf]) {
    it(`reserved opcode 0x${opcode.toString(16)} (1002)`, () => {
      const b0 = (0x80 | opcode).toString(16)
      failing(true, `${b0} 00`, Status.InvalidFormat, 1002, /reserved opcode/)
      failing(false, `${b0} 80 00000000`, Status.InvalidFormat, 1002, /reserved opcode/)
    })
  }

  it("a reserved opcode fails from the first byte, before the rest of the header", () => {
    failing(true, "83", Status.InvalidFormat, 1002, /reserved opcode/)
  })

  it("a 64-bit length with its most significant bit set (1002)", () => {
    failing(true, "82 7f 8000000000000000", Status.InvalidFormat, 1002, /most significant bit/)
  })

  it("a 64-bit length above 2^53-1 is too big for any message (1009, as ws answers)", () => {
    failing(true, "82 7f 0020000000000000", Status.InvalidFormat, 1009, /2\^53-1/)
    failing(true, "82 7f 7fffffffffffffff", Status.InvalidFormat, 1009, /2\^53-1/)
  })

  it("a non-minimal length encoding is accepted", () => {
    const result = feed(makeClient(), "82 7e 0003 616263 82 7f 0000000000000001 64")
    assert.deepStrictEqual(contentOf(result.deliveries), [binary(utf8("abc")), binary(utf8("d"))])
  })
})

describe("control frames (RFC 6455 section 5.5)", () => {
  it("a Ping with a 126-byte payload (1002)", () => {
    failing(true, "89 7e 007e" + "00".repeat(126), Status.InvalidFormat, 1002, /at most 125 bytes/)
  })

  it("a Close with a 126-byte payload, announced with a 7-bit length of 126 (1002)", () => {
    failing(false, "88 fe 007e", Status.InvalidFormat, 1002, /at most 125 bytes/)
  })

  it("a Ping of 5 bytes with a 16-bit length: its length belongs in the 7-bit field (1002, as ws refuses it)", () => {
    failing(true, "89 7e 0005 0102030405", Status.InvalidFormat, 1002, /at most 125 bytes, its length in the 7-bit field/)
  })

  it("a 125-byte Ping is answered", () => {
    const result = feed(makeServer(), "89 fd 00000000" + "61".repeat(125))
    assert.strictEqual(result.failed, undefined)
    assert.strictEqual(toHex(concat(result.sent)), "8a7d" + "61".repeat(125))
  })

  it("a fragmented Ping, FIN=0 (1002)", () => {
    failing(true, "09 00", Status.InvalidFormat, 1002, /control frame is fragmented/)
  })

  it("a fragmented Close and Pong (1002)", () => {
    failing(true, "08 00", Status.InvalidFormat, 1002, /fragmented/)
    failing(true, "0a 00", Status.InvalidFormat, 1002, /fragmented/)
  })
})

describe("the first bytes of a frame are judged as they arrive", () => {
  // each wire stops inside a header (a length that needs more bytes, or no length byte yet)
  it("reserved bits, a continuation or not, and masking fail before the rest of the header comes (1002)", () => {
    failing(true, "c1", Status.InvalidFormat, 1002, /reserved bits RSV1 set/)
    failing(true, "80", Status.InvalidOperation, 1002, /continuation frame arrived with no message/)
    failing(true, "01 01 61 82", Status.InvalidOperation, 1002, /new data frame arrived while a fragmented message/)
    failing(false, "81 7e 00", Status.InvalidFormat, 1002, /client frame is not masked/)
    failing(true, "81 fe", Status.InvalidFormat, 1002, /server frame is masked/)
  })

  it("the valid start of a header waits for the rest", () => {
    for (const [client, wire] of [[true, "81"], [true, "01 01 61 80 7f 00"], [false, "82 fe 01"], [true, "89"]] as const) {
      const engine = makeEngine(client)
      const result = feed(engine, wire)
      assert.isUndefined(result.failed, wire)
      assert.isUndefined(engine.failure, wire)
    }
    const lenient = makeServer({ disableMasking: true })
    assert.isUndefined(feed(lenient, "81 7e").failed, "a server with masking disabled")
  })
})

describe("fragmentation (RFC 6455 section 5.4)", () => {
  it("a continuation frame with no message to continue (1002, InvalidOperation)", () => {
    failing(true, "80 02 6c6f", Status.InvalidOperation, 1002, /continuation frame arrived with no message/)
  })

  it("a continuation after a complete message (1002, InvalidOperation)", () => {
    const result = failing(true, "81 05 48656c6c6f 00 01 61", Status.InvalidOperation, 1002, /continuation/)
    assert.deepStrictEqual(contentOf(result.deliveries), [text("Hello")])
  })

  it("a new text frame inside a fragmented message (1002, InvalidOperation)", () => {
    const result = failing(true, "01 03 48656c 81 02 6c6f", Status.InvalidOperation, 1002, /fragmented message is still open/)
    assert.deepStrictEqual(result.deliveries.map((d) => [d.bufferType, toHex(d.data)]), [[Utf8Fragment, "48656c"]])
  })

  it("a new binary frame inside a fragmented text message (1002, InvalidOperation)", () => {
    failing(false, "01 80 00000000 82 80 00000000", Status.InvalidOperation, 1002, /still open/)
  })

  it("empty fragments are skipped; an empty final frame ends the message with an empty chunk", () => {
    const { deliveries } = feed(makeClient(), "01 00 00 03 48656c 00 00 00 02 6c6f 80 00")
    assert.deepStrictEqual(deliveries.map((d) => [d.bufferType, toHex(d.data)]), [
      [Utf8Fragment, "48656c"],
      [Utf8Fragment, "6c6f"],
      [Utf8Message, ""]
    ])
  })

  it("binary fragments arrive as BinaryFragment then BinaryMessage", () => {
    const { deliveries } = feed(makeClient(), "02 01 01 00 01 02 80 01 03")
    assert.deepStrictEqual(deliveries.map((d) => [d.bufferType, toHex(d.data)]), [
      [BinaryFragment, "01"],
      [BinaryFragment, "02"],
      [BinaryMessage, "03"]
    ])
  })
})

describe("UTF-8 (RFC 6455 sections 5.6 and 8.1)", () => {
  it("invalid UTF-8 in a single text frame (1007)", () => {
    failing(true, "81 02 c328", Status.InvalidFormat, 1007, /not valid UTF-8/)
  })

  it("a surrogate, an overlong form and a code point above U+10FFFF (1007)", () => {
    failing(true, "81 03 eda080", Status.InvalidFormat, 1007, /not valid UTF-8/)
    failing(true, "81 02 c0af", Status.InvalidFormat, 1007, /not valid UTF-8/)
    failing(true, "81 04 f4908080", Status.InvalidFormat, 1007, /not valid UTF-8/)
  })

  it("a surrogate, an overlong form and a code point above U+10FFFF followed by more text (1007)", () => {
    // with 4 bytes or more left, the JavaScript path checks a whole sequence from its lead byte
    // (not the DFA byte by byte): each rule must hold there too
    failing(true, "81 04 eda08041", Status.InvalidFormat, 1007, /not valid UTF-8/) // U+D800, a surrogate
    failing(true, "81 04 edbfbf41", Status.InvalidFormat, 1007, /not valid UTF-8/) // U+DFFF
    failing(true, "81 04 e09fbf41", Status.InvalidFormat, 1007, /not valid UTF-8/) // U+07FF, overlong 3-byte form
    failing(true, "81 04 e0808041", Status.InvalidFormat, 1007, /not valid UTF-8/) // U+0000, overlong 3-byte form
    failing(true, "81 04 c0af4141", Status.InvalidFormat, 1007, /not valid UTF-8/) // "/", overlong 2-byte form
    failing(true, "81 05 f08fbfbf41", Status.InvalidFormat, 1007, /not valid UTF-8/) // U+FFFF, overlong 4-byte form
    failing(true, "81 05 f490808041", Status.InvalidFormat, 1007, /not valid UTF-8/) // U+110000
    // and their valid neighbours pass
    const engine = makeClient()
    const result = feed(engine, "81 04 ed9fbf41 81 04 e0a08041 81 04 c2804141 81 05 f09080 8041 81 05 f48fbfbf41")
    assert.strictEqual(result.failed, undefined, engine.failure?.message)
    assert.strictEqual(messagesOf(result.deliveries).length, 5)
  })

  it("fails as soon as a fragment is already invalid, before the rest of the message arrives", () => {
    const engine = makeClient()
    // first fragment: "Hel" c3 28 (invalid), the frame announces 200 bytes of which 5 arrived
    const result = feed(engine, "01 7e 00c8 48656c c328")
    expectFailure(engine, result, Status.InvalidFormat, 1007, /not valid UTF-8/)
  })

  it("fails on an invalid first fragment while the final fragment is still to come", () => {
    const engine = makeServer()
    const result = feed(engine, "01 82 00000000 c328")
    expectFailure(engine, result, Status.InvalidFormat, 1007, /not valid UTF-8/)
    assert.deepStrictEqual(result.deliveries, [])
  })

  it("a text message that ends inside a code point (1007)", () => {
    failing(true, "81 03 48 e282", Status.InvalidFormat, 1007, /ends inside a UTF-8 sequence/)
  })

  it("a fragmented text message that ends inside a code point (1007)", () => {
    const result = failing(true, "01 02 48e2 80 01 82", Status.InvalidFormat, 1007, /ends inside a UTF-8 sequence/)
    assert.deepStrictEqual(result.deliveries.map((d) => toHex(d.data)), ["48"])
  })

  it("a code point split across fragments is valid, and delivered whole", () => {
    const { deliveries } = feed(makeClient(), "01 02 48e2 00 01 82 80 01 ac")
    assert.deepStrictEqual(deliveries.map((d) => [d.bufferType, decodeUtf8(d.data)]), [
      [Utf8Fragment, "H"],
      [Utf8Message, "€"]
    ])
  })

  it("invalid UTF-8 is accepted with disableUtf8Verification", () => {
    const engine = makeClient({ disableUtf8Verification: true })
    const result = feed(engine, "81 02 c328 81 03 48 e282")
    assert.strictEqual(result.failed, undefined)
    assert.deepStrictEqual(result.deliveries.map((d) => [d.bufferType, toHex(d.data)]), [
      [Utf8Message, "c328"],
      [Utf8Message, "48e282"]
    ])
  })

  it("invalid UTF-8 read straight into the caller's buffer is accepted with disableUtf8Verification", () => {
    // a long message (read in pieces into the caller's buffer) with a byte that is never valid,
    // a stray continuation byte and, at its end, a code point cut short
    const payload = concat([utf8("a€😀".repeat(2000)), hex("ff 80"), utf8("b".repeat(5000)), hex("e282")])
    const wire = sendAndDrain(makeServer(), Utf8Message, payload)
    for (const chunks of [1000, 4099]) {
      const result = feed(makeClient({ disableUtf8Verification: true }), wire, { chunks, buffer: new Uint8Array(9000) })
      assert.strictEqual(result.failed, undefined)
      assert.strictEqual(result.deliveries.at(-1)!.bufferType, Utf8Message)
      assert.deepStrictEqual(concat(result.deliveries.map((d) => d.data)), payload)
    }
  })

  it.prop("a code point left open is not completed by a run of 48 or more ASCII bytes (1007), however the bytes arrive", [
    int(0xc2, 0xf4),
    int(48, 300),
    int(0, 1)
  ], ([lead, run, fragmented]) => {
    // the lead byte ends a read (one frame) or a non-final frame, and the ASCII run comes in one piece after it
    const ascii = utf8("x".repeat(run))
    const wire = fragmented === 1
      ? fragmentedText(concat([Uint8Array.of(lead), ascii]), [1])
      : sendAndDrain(makeServer(), Utf8Message, concat([Uint8Array.of(lead), ascii]))
    const headerAndLead = fragmented === 1 ? 3 : wire.length - run
    for (const chunks of [undefined, [headerAndLead, wire.length]]) {
      const engine = makeClient()
      const result = feed(engine, wire, { chunks })
      expectFailure(engine, result, Status.InvalidFormat, 1007, /not valid UTF-8/)
      assert.strictEqual(result.deliveries.length, 0, "nothing of the message is delivered")
    }
  })

  it("text of 48 bytes and more in a receive buffer that is not 4-byte aligned (an allocated buffer at an odd offset)", () => {
    const memory = new Uint8Array(1 + 4096 + 16 + 4096 + 64)
    for (const offset of [1, 2, 3]) {
      const allocated = memory.subarray(offset)
      const ascii = "x".repeat(100)
      const wire = concat([
        sendAndDrain(makeServer(), Utf8Message, utf8(ascii)),
        sendAndDrain(makeServer(), Utf8Message, utf8(ascii + "é" + ascii)),
        sendAndDrain(makeServer(), Utf8Message, concat([utf8(ascii), hex("ff"), utf8(ascii)]))
      ])
      const engine = makeClient({ allocatedBuffer: allocated })
      const result = feed(engine, wire)
      expectFailure(engine, result, Status.InvalidFormat, 1007, /not valid UTF-8/)
      assert.deepStrictEqual(result.deliveries.map((d) => decodeUtf8(d.data)), [ascii, ascii + "é" + ascii])
    }
  })

  it.prop("text of 48 bytes and more (word-wise ASCII skip): ASCII, mixed and invalid messages in any order", [
    Arbitrary.array(Arbitrary.all([int(0, 2), int(48, 600), int(0, 1 << 20)]), { minLength: 1, maxLength: 150 }).pipe(
      // an invalid message ends the connection: only the last one may be (one in three would end
      // nearly every list within a few messages)
      Arbitrary.map((messages) =>
        messages.map(([kind, length, at], i) => [kind === 2 && i + 1 < messages.length ? 0 : kind, length, at] as const)
      )
    )
  ], ([messages]) => {
    // 0: ASCII; 1: ASCII with a 2-byte code point somewhere; 2: ASCII with an invalid byte somewhere
    const sender = makeServer()
    const wires: Array<Uint8Array> = []
    const expected: Array<string> = []
    let invalid = false
    for (const [kind, length, at] of messages) {
      const payload = utf8("x".repeat(length))
      const position = at % (length - 1)
      if (kind === 1) payload.set([0xc3, 0xa9], position)
      if (kind === 2) payload[position] = 0xff
      wires.push(sendAndDrain(sender, Utf8Message, payload))
      if (kind === 2) {
        invalid = true
        break
      }
      expected.push(decodeUtf8(payload))
    }
    for (const chunks of [undefined, 37]) {
      const engine = makeClient()
      const result = feed(engine, concat(wires), { chunks })
      if (invalid) expectFailure(engine, result, Status.InvalidFormat, 1007, /not valid UTF-8/)
      else assert.strictEqual(result.failed, undefined)
      const received: Array<string> = []
      let pieces: Array<Uint8Array> = []
      for (const d of result.deliveries) {
        pieces.push(d.data)
        if (d.bufferType === Utf8Message) {
          received.push(decodeUtf8(concat(pieces)))
          pieces = []
        }
      }
      assert.deepStrictEqual(received, expected)
    }
  }, { arbitrary: { size: 150 } }) // (lists grow with the check's size, 10 by default: up to 150 messages)

  it("binary messages are not checked", () => {
    const { deliveries, failed } = feed(makeClient(), "82 02 c328")
    assert.strictEqual(failed, undefined)
    assert.deepStrictEqual(contentOf(deliveries), [binary(hex("c328"))])
  })
})

describe("UTF-8 read straight into the caller's buffer", () => {
  /** About 30 KB of text with 1- to 4-byte code points, so that reads cut code points. */
  const longText = "a€😀ßxyz日本".repeat(1500)
  const options = (chunks: number) => ({ chunks, buffer: new Uint8Array(9000) })

  it("code points cut by reads and chunks come out whole, every chunk valid on its own", () => {
    for (const isClient of [true, false]) {
      const wire = sendAndDrain(makeEngine(!isClient), Utf8Message, utf8(longText))
      for (const chunks of [1000, 777, 4099, 3]) {
        const result = feed(makeEngine(isClient, { receiveBufferSize: 4096 }), wire, options(chunks))
        assert.strictEqual(result.failed, undefined)
        for (const d of result.deliveries) {
          assert.isTrue(isUtf8(d.data), "each chunk is valid UTF-8")
          assert.isAtMost(d.data.length, 4096)
        }
        assert.strictEqual(result.deliveries.at(-1)!.bufferType, Utf8Message)
        assert.strictEqual(decodeUtf8(concat(result.deliveries.map((d) => d.data))), longText)
      }
    }
  })

  it("a fragmented message whose frames cut code points", () => {
    const payload = utf8(longText)
    const sender = makeServer()
    const cuts = [0, 10001, 20002, payload.length]
    const parts: Array<Uint8Array> = []
    for (let i = 0; i + 1 < cuts.length; i++) {
      parts.push(sendAndDrain(sender, i + 2 === cuts.length ? Utf8Message : Utf8Fragment, payload.subarray(cuts[i]!, cuts[i + 1]!)))
    }
    const result = feed(makeClient({ receiveBufferSize: 4096 }), concat(parts), options(1500))
    assert.strictEqual(result.failed, undefined)
    for (const d of result.deliveries) assert.isTrue(isUtf8(d.data))
    assert.strictEqual(decodeUtf8(concat(result.deliveries.map((d) => d.data))), longText)
  })

  it("invalid UTF-8 fails (1007) and nothing invalid is delivered", () => {
    const payload = utf8(longText)
    payload[25000] = 0xff
    const wire = sendAndDrain(makeServer(), Utf8Message, payload)
    const engine = makeClient({ receiveBufferSize: 4096 })
    const result = feed(engine, wire, options(1000))
    expectFailure(engine, result, Status.InvalidFormat, 1007, /not valid UTF-8/)
    for (const d of result.deliveries) assert.isTrue(isUtf8(d.data))
    assert.isBelow(concat(result.deliveries.map((d) => d.data)).length, 25000)
  })

  it("a long text message that ends inside a code point (1007)", () => {
    const payload = concat([utf8(longText), hex("e282")])
    const wire = sendAndDrain(makeServer(), Utf8Message, payload)
    const engine = makeClient({ receiveBufferSize: 4096 })
    const result = feed(engine, wire, options(1000))
    expectFailure(engine, result, Status.InvalidFormat, 1007, /ends inside a UTF-8 sequence/)
  })
})

describe("a masked payload unmasked as the driver copies it (copyForRead)", () => {
  const binary = seededBytes(100_000, 3)
  const text = "a€😀ßxyz日本".repeat(5000)
  const wireOf = () => concat([sendAndDrain(makeClient(), BinaryMessage, binary), sendAndDrain(makeClient(), Utf8Message, utf8(text))])

  it("read straight into the caller's buffer, in pieces of any size, the messages come out as sent", () => {
    for (const copies of [[1], [3, 1000], [65536], [0, 7], [4096, 0]]) {
      for (const chunks of [65536, 1000, 9001]) {
        const result = feed(makeServer({ receiveBufferSize: 200_000 }), wireOf(), { chunks, buffer: new Uint8Array(200_000), copies })
        assert.strictEqual(result.failed, undefined)
        assert.isAbove(result.unmaskingReads, 0, "the handle offered its copy")
        const [first, second] = messagesOf(result.deliveries)
        assert.deepStrictEqual(first!.data, binary)
        assert.strictEqual(decodeUtf8(second!.data), text)
      }
    }
  })

  it("is offered only for a direct read of a masked payload, and copies out of order or elsewhere plainly", () => {
    const server = makeServer({ receiveBufferSize: 200_000 })
    const wire = wireOf()
    assert.strictEqual(server.receive(new Uint8Array(200_000), undefined), Status.Ok)
    // the first reads are the handle's own, of the header (2 bytes, then the 64-bit length and
    // the key): no copy offered
    assert.strictEqual(server.copyForRead, undefined)
    const { offset: headerLength, read } = readHeaderByHand(server, wire)
    assert.strictEqual(headerLength, 2 + 8 + 4)
    const copy = server.copyForRead
    assert.isDefined(copy)
    const target = read.buffers[0]!
    const payload = wire.subarray(headerLength, headerLength + 3000)
    // the second thousand bytes first (out of order: plain), then the first thousand in order
    // (unmasked), then the third thousand after them (unmasked): the handle unmasks the rest
    copy!(payload, 1000, 2000, target, 1000)
    copy!(payload, 0, 1000, target, 0)
    copy!(payload, 2000, 3000, target, 2000)
    // into other memory: plain
    const elsewhere = new Uint8Array(10)
    copy!(payload, 3000 - 10, 3000, elsewhere, 0)
    assert.deepStrictEqual(elsewhere, payload.subarray(3000 - 10, 3000))
    complete(server, read, 3000)
    assert.strictEqual(server.copyForRead, undefined, "no read outstanding")
    // the rest in reads of at most 40 000 bytes, each copied with the handle's copy
    let offset = headerLength + 3000
    for (;;) {
      const step = next(server, QueueCode.Receive)
      if (step.action === ActionCode.IndicateReceiveComplete) {
        assert.strictEqual(step.bufferType, BinaryMessage)
        assert.deepStrictEqual(step.buffers[0], binary)
        break
      }
      expectAction(step, ActionCode.ReceiveFromNetwork)
      const room = step.buffers[0]!
      const n = Math.min(room.length, 40_000)
      server.copyForRead!(wire, offset, offset + n, room, 0)
      offset += n
      complete(server, step, n)
    }
    assert.strictEqual(offset, headerLength + binary.length)
  })

  it("a read whose first bytes (not a whole number of masking keys) were copied with it and the rest plainly is unmasked right", () => {
    const payload = seededBytes(3000, 11)
    const wire = sendAndDrain(makeClient(), BinaryMessage, payload)
    for (let copied = 1; copied <= 7; copied++) {
      const server = makeServer({ receiveBufferSize: 4096 })
      assert.strictEqual(server.receive(new Uint8Array(10000), undefined), Status.Ok)
      const { offset: headerLength, read } = readHeaderByHand(server, wire)
      const target = read.buffers[0]!
      // the first `copied` bytes with the handle's copy (unmasked), the rest of the read plainly (still masked)
      server.copyForRead!(wire, headerLength, headerLength + copied, target, 0)
      const n = Math.min(target.length, 1000)
      target.set(wire.subarray(headerLength + copied, headerLength + n), copied)
      complete(server, read, n)
      // the rest plainly, in reads of at most 1000 bytes
      let offset = headerLength + n
      let step = next(server, QueueCode.Receive)
      while (step.action === ActionCode.ReceiveFromNetwork) {
        const room = step.buffers[0]!
        const m = Math.min(room.length, 1000, wire.length - offset)
        room.set(wire.subarray(offset, offset + m))
        offset += m
        complete(server, step, m)
        step = next(server, QueueCode.Receive)
      }
      expectAction(step, ActionCode.IndicateReceiveComplete)
      assert.strictEqual(step.bufferType, BinaryMessage)
      assert.deepStrictEqual(step.buffers[0], payload, `${copied} bytes copied unmasked`)
    }
  })

  it("is never offered to a client (a server's frames are not masked)", () => {
    const wire = sendAndDrain(makeServer(), BinaryMessage, binary)
    const result = feed(makeClient({ receiveBufferSize: 200_000 }), wire, { chunks: 1000, buffer: new Uint8Array(200_000), copies: [100] })
    assert.strictEqual(result.unmaskingReads, 0)
    assert.deepStrictEqual(messagesOf(result.deliveries)[0]!.data, binary)
  })
})

describe("closing (RFC 6455 sections 5.5.1 and 7.4)", () => {
  it("an invalid UTF-8 close reason (1007)", () => {
    failing(true, "88 04 03e8 c328", Status.InvalidFormat, 1007, /close reason is not valid UTF-8/)
  })

  for (const code of [0, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2999, 5000, 65535]) {
    it(`close code ${code} on the wire (1002)`, () => {
      const wire = "88 02 " + code.toString(16).padStart(4, "0")
      failing(true, wire, Status.InvalidFormat, 1002, new RegExp(`close code ${code}`))
    })
  }

  for (const code of [1000, 1001, 1002, 1003, 1007, 1011, 1012, 1014, 3000, 3999, 4000, 4999]) {
    it(`close code ${code} is accepted with its reason`, () => {
      const engine = makeServer()
      const result = feed(engine, "88 85 00000000 " + code.toString(16).padStart(4, "0") + "627965")
      assert.strictEqual(result.failed, undefined)
      assert.deepStrictEqual(contentOf(result.deliveries), [closed(code, "bye")])
      assert.strictEqual(engine.state, HandleState.CloseReceived)
    })
  }

  it("a 1-byte Close body (1002), as soon as the header says so", () => {
    failing(true, "88 01 03", Status.InvalidFormat, 1002, /1-byte body/)
    failing(true, "88 01", Status.InvalidFormat, 1002, /1-byte body/)
  })

  it("an empty Close body is reported as 1005", () => {
    const { deliveries } = feed(makeClient(), "88 00")
    assert.strictEqual(deliveries.length, 1)
    assert.strictEqual(deliveries[0]!.bufferType, Close)
    assert.strictEqual(deliveries[0]!.closeStatus, 1005)
    assert.strictEqual(deliveries[0]!.data.length, 0)
  })

  it("frames after a received Close are not delivered, and receiving again is an invalid operation", () => {
    const engine = makeClient()
    const result = feed(engine, "88 02 03e8 81 05 48656c6c6f")
    assert.deepStrictEqual(contentOf(result.deliveries), [closed(1000)])
    expectRejected(engine, engine.receive(undefined, undefined), Status.InvalidOperation, /Close was already received/)
  })

  it("sending Close after receiving one reaches Closed; Close sent first then received too", () => {
    const a = makeServer()
    feed(a, "88 82 00000000 03e8")
    assert.strictEqual(toHex(sendAndDrain(a, Close, undefined, 1000)), "880203e8")
    assert.strictEqual(a.state, HandleState.Closed)
    const b = makeClient()
    assert.strictEqual(toHex(sendAndDrain(b, Close)), "888037fa213d")
    assert.strictEqual(b.state, HandleState.CloseSent)
    assert.deepStrictEqual(contentOf(feed(b, "88 00").deliveries), [closed(1005)])
    assert.strictEqual(b.state, HandleState.Closed)
  })

  it("once the closing handshake is complete (Closed), another Close is refused and the state stays Closed", () => {
    const server = makeServer()
    feed(server, "88 82 00000000 03e8")
    assert.strictEqual(toHex(sendAndDrain(server, Close, undefined, 1000)), "880203e8")
    assert.strictEqual(server.state, HandleState.Closed)
    expectSendRejected(server, Status.InvalidOperation, /a Close was already sent/, Close, undefined, 1000)
    assert.strictEqual(server.state, HandleState.Closed)
  })

  it("an answering Close of which nothing was written (0 bytes) takes the handle back to CloseReceived: it may be sent again", () => {
    const server = makeServer()
    feed(server, "88 82 00000000 03e8")
    assert.strictEqual(server.state, HandleState.CloseReceived)
    send(server, Close, undefined, 1000, "answer")
    assert.strictEqual(server.state, HandleState.Closed)
    complete(server, expectAction(next(server, QueueCode.Send), ActionCode.SendToNetwork), 0)
    const done = expectAction(next(server, QueueCode.Send), ActionCode.IndicateSendComplete)
    assert.isFalse(server.sendWritten)
    complete(server, done)
    assert.strictEqual(server.state, HandleState.CloseReceived)
    assert.strictEqual(toHex(sendAndDrain(server, Close, undefined, 1000)), "880203e8")
    assert.strictEqual(server.state, HandleState.Closed)
  })
})

describe("message size limit (spec 5.4, 1009)", () => {
  it("one frame over maxMessageSize fails before its payload arrives", () => {
    const result = failing(true, "82 7e 0065", Status.InvalidFormat, 1009, /exceeds the maximum message size of 100 bytes/, {
      maxMessageSize: 100
    })
    assert.strictEqual(result.deliveries.length, 0)
  })

  it("fragments adding up to more than maxMessageSize", () => {
    const result = failing(
      true,
      "02 32" + "00".repeat(50) + "00 32" + "00".repeat(50) + "80 01 00",
      Status.InvalidFormat,
      1009,
      /at least 101 bytes/,
      { maxMessageSize: 100 }
    )
    assert.deepStrictEqual(result.deliveries.map((d) => d.data.length), [50, 50])
  })

  it("a message of exactly maxMessageSize bytes, and the next message counts from zero", () => {
    const engine = makeClient({ maxMessageSize: 100 })
    const result = feed(engine, "02 32" + "00".repeat(50) + "80 32" + "00".repeat(50) + "82 64" + "00".repeat(100))
    assert.strictEqual(result.failed, undefined)
    assert.deepStrictEqual(messagesOf(result.deliveries).map((m) => m.data.length), [100, 100])
  })

  it("control frames do not count", () => {
    const engine = makeClient({ maxMessageSize: 3 })
    const result = feed(engine, "01 02 6869 89 7d" + "00".repeat(125) + "80 01 21")
    assert.strictEqual(result.failed, undefined)
    assert.deepStrictEqual(contentOf(result.deliveries), [text("hi!")])
  })
})

// ---------------------------------------------------------------------------------------------
// Chunking and buffers (spec 5.4, section 4)
// ---------------------------------------------------------------------------------------------

/** Frames `payload` as an unmasked text message cut into frames at `cuts` (byte offsets). */
const fragmentedText = (payload: Uint8Array, cuts: ReadonlyArray<number>): Uint8Array => {
  const bounds = [0, ...cuts, payload.length]
  const parts: Array<Uint8Array> = []
  for (let i = 0; i + 1 < bounds.length; i++) {
    const part = payload.subarray(bounds[i]!, bounds[i + 1]!)
    const fin = i + 2 === bounds.length
    const b0 = (fin ? 0x80 : 0) | (i === 0 ? Opcode.Text : Opcode.Continuation)
    const header = part.length <= 125
      ? [b0, part.length]
      : [b0, 126, part.length >>> 8, part.length & 0xff]
    parts.push(Uint8Array.from(header), part)
  }
  return concat(parts)
}

const checkTextChunks = (deliveries: ReadonlyArray<{ bufferType: number; data: Uint8Array }>, maxChunk: number) => {
  for (const d of deliveries) {
    assert.isAtMost(d.data.length, maxChunk, "chunk within the receive buffer")
    assert.isTrue(isUtf8(d.data), `chunk ${toHex(d.data.subarray(0, 8))}... is valid UTF-8 on its own`)
  }
}

/** A binary message of `length` counting bytes on the wire from the peer, the receiving engine and an application buffer. */
const binaryReceiver = (isClient: boolean, length: number, receiveBufferSize: number, appLength: number) => {
  const payload = counting(length)
  return {
    payload,
    wire: sendAndDrain(makeEngine(!isClient), BinaryMessage, payload),
    engine: makeEngine(isClient, { receiveBufferSize }),
    app: new Uint8Array(appLength)
  }
}

/**
 * Receives the next whole message from `wire` (read from `cursor.offset` on) into `app`, each
 * receive given the rest of `app` after what was delivered; a read brings what the room handed out
 * holds, at most `readSize(room, offset)` bytes. Returns every read (room, whether into `app`), every
 * delivery (buffer type, length) and the bytes received.
 */
const receiveMessage = (
  engine: Engine,
  wire: Uint8Array,
  cursor: { offset: number },
  app: Uint8Array,
  readSize: (room: number, offset: number) => number = (room) => room
) => {
  const reads: Array<readonly [room: number, intoApp: boolean]> = []
  const deliveries: Array<readonly [type: number, length: number]> = []
  let received = 0
  for (;;) {
    assert.strictEqual(engine.receive(app.subarray(received), "r"), Status.Ok)
    let step = next(engine, QueueCode.Receive)
    while (step.action === ActionCode.ReceiveFromNetwork) {
      const target = step.buffers[0]!
      reads.push([target.length, target.buffer === app.buffer])
      const n = Math.min(readSize(target.length, cursor.offset), wire.length - cursor.offset)
      target.set(wire.subarray(cursor.offset, cursor.offset + n))
      cursor.offset += n
      complete(engine, step, n)
      step = next(engine, QueueCode.Receive)
    }
    expectAction(step, ActionCode.IndicateReceiveComplete)
    const type = step.bufferType
    deliveries.push([type, step.buffers[0]!.length])
    received += step.buffers[0]!.length
    complete(engine, step)
    if (type === BinaryMessage || type === Utf8Message) return { reads, deliveries, received }
  }
}

describe("chunking (spec 5.4)", () => {
  const message = "é€😀ü中".repeat(800) // 14 bytes a time: 11200 bytes
  const payload = utf8(message)

  it("the receive buffer starts at 4 KiB and grows to the receive buffer size once a read fills it; every byte arrives", () => {
    /** Feeds `wire` in reads of at most `chunk` bytes; the rooms handed out and the data delivered. */
    const drive = (wire: Uint8Array, chunk: number) => {
      const engine = makeServer({ receiveBufferSize: 65536 })
      const rooms: Array<number> = []
      const data: Array<Uint8Array> = []
      let offset = 0
      assert.strictEqual(engine.receive(undefined, undefined), Status.Ok)
      for (let guard = 0; guard < 10_000; guard++) {
        const step = next(engine, QueueCode.Receive)
        if (step.action === ActionCode.ReceiveFromNetwork) {
          const room = step.buffers[0]!
          rooms.push(room.length)
          if (offset === wire.length) break
          const n = Math.min(room.length, chunk, wire.length - offset)
          room.set(wire.subarray(offset, offset + n), 0)
          offset += n
          complete(engine, step, n)
        } else {
          expectAction(step, ActionCode.IndicateReceiveComplete)
          data.push(step.buffers[0]!.slice())
          complete(engine, step)
          assert.strictEqual(engine.receive(undefined, undefined), Status.Ok)
        }
      }
      return { rooms, data: concat(data) }
    }
    const bytes = counting(100_000)
    const masked = bytes.map((b, i) => b ^ RFC_KEY[i & 3]!)
    const large = drive(concat([hex("82 ff 00 00 00 00 00 01 86 a0 37fa213d"), masked]), 1 << 20)
    assert.strictEqual(large.rooms[0], 4092, "a handle starts with 4 KiB")
    assert.isAbove(large.rooms[1]!, 60_000, "a read that filled it grows it")
    assert.strictEqual(toHex(large.data), toHex(bytes))
    // reads one byte short of the room offered never fill it: it stays at 4 KiB
    const short = drive(concat([hex("82 ff 00 00 00 00 00 01 86 a0 37fa213d"), masked]), 4091)
    assert.strictEqual(Math.max(...short.rooms), 4092, "a read that did not fill it does not grow it")
    assert.strictEqual(toHex(short.data), toHex(bytes))
    // reads that never fill it (small messages, a quiet peer) leave it at 4 KiB
    const small = drive(concat(Array.from({ length: 50 }, () => hex("82 83 37fa213d 36fb23"))), 90)
    assert.strictEqual(small.data.length, 150)
    assert.isAtMost(Math.max(...small.rooms), 4092)
  })

  it("with a caller's buffer of exactly 8 KiB a header is read on its own; such reads do not grow the receive buffer, though they fill what they offer", () => {
    const engine = makeClient({ receiveBufferSize: 65536 })
    const sender = makeServer()
    // headers read on their own (a caller's buffer of 8 KiB), payloads read into that buffer
    const wire = concat(Array.from({ length: 3 }, () => sendAndDrain(sender, BinaryMessage, counting(300))))
    const cursor = { offset: 0 }
    for (let i = 0; i < 3; i++) {
      const app = new Uint8Array(8192)
      const { reads, received } = receiveMessage(engine, wire, cursor, app)
      assert.deepStrictEqual(app.subarray(0, received), counting(300))
      // (8 KiB exactly is enough for the header to be read on its own: its first 2 bytes, then the rest)
      assert.deepStrictEqual(reads.slice(0, i === 0 ? 3 : 2), i === 0 ? [[2, false], [2, false], [300, true]] : [[4, false], [300, true]])
    }
    // then a receive with no buffer of its own: the receive buffer is still 4 KiB
    assert.strictEqual(engine.receive(undefined, undefined), Status.Ok)
    const read = expectAction(next(engine, QueueCode.Receive), ActionCode.ReceiveFromNetwork)
    assert.strictEqual(read.buffers[0]!.length, 4092)
  })

  it("a small receive buffer is memory of its own: a delivered view's ArrayBuffer holds nothing else", () => {
    for (const receiveBufferSize of [256, 1000, 4000, 65536]) {
      const engine = makeClient({ receiveBufferSize })
      assert.strictEqual(engine.receive(undefined, undefined), Status.Ok)
      const read = next(engine, QueueCode.Receive)
      expectAction(read, ActionCode.ReceiveFromNetwork)
      const wire = hex("82 03 010203")
      read.buffers[0]!.set(wire, 0)
      complete(engine, read, wire.length)
      const step = next(engine, QueueCode.Receive)
      expectAction(step, ActionCode.IndicateReceiveComplete)
      const view = step.buffers[0]!
      assert.strictEqual(toHex(view), "010203")
      // (not a slice of a pool shared with unrelated buffers, whose bytes would show through `.buffer`)
      assert.isAtMost(view.buffer.byteLength, Math.min(receiveBufferSize + 4, 4096), `receiveBufferSize ${receiveBufferSize}`)
    }
  })

  it("a 10 KiB text frame arrives in chunks of at most 256 bytes, each valid UTF-8", () => {
    const engine = makeClient({ receiveBufferSize: 256 })
    const { deliveries } = feed(engine, concat([hex("81 7e" + payload.length.toString(16).padStart(4, "0")), payload]))
    assert.isAbove(deliveries.length, 40)
    checkTextChunks(deliveries, 256)
    const [m] = messagesOf(deliveries)
    assert.strictEqual(decodeUtf8(m!.data), message)
  })

  it("frame boundaries inside code points: every chunk is still valid UTF-8 on its own", () => {
    // cuts at odd offsets, most of them inside a code point
    const cuts: Array<number> = []
    for (let at = 1; at < payload.length; at += 1 + (cuts.length * 37) % 301) cuts.push(at)
    const wire = fragmentedText(payload, cuts)
    for (const chunks of [undefined, 1, [3, 7, 250, 11]]) {
      const engine = makeClient({ receiveBufferSize: 256 })
      const { deliveries, failed } = feed(engine, wire, { chunks })
      assert.strictEqual(failed, undefined)
      checkTextChunks(deliveries, 256)
      const [m] = messagesOf(deliveries)
      assert.strictEqual(decodeUtf8(m!.data), message)
    }
  })

  it("a masked 10 KiB text frame at a server with a 256-byte buffer", () => {
    const masked = payload.map((b, i) => b ^ [0x37, 0xfa, 0x21, 0x3d][i & 3]!)
    const engine = makeServer({ receiveBufferSize: 256 })
    const { deliveries } = feed(
      engine,
      concat([hex("81 fe" + payload.length.toString(16).padStart(4, "0") + "37fa213d"), masked]),
      { chunks: [5, 100, 1] }
    )
    checkTextChunks(deliveries, 256)
    assert.strictEqual(decodeUtf8(messagesOf(deliveries)[0]!.data), message)
  })

  it("binary data is chunked by the receive buffer, not by frames", () => {
    const engine = makeClient({ receiveBufferSize: 256 })
    const { deliveries } = feed(engine, "82 7e 0400" + toHex(counting(1024)))
    // 252 bytes share the first read with the header, then 256, 256, 256 and 4
    assert.deepStrictEqual(deliveries.map((d) => [d.bufferType, d.data.length]), [
      [BinaryFragment, 252],
      [BinaryFragment, 256],
      [BinaryFragment, 256],
      [BinaryFragment, 256],
      [BinaryMessage, 4]
    ])
    for (const d of deliveries) assert.isAtMost(d.data.length, 256)
    assert.deepStrictEqual(messagesOf(deliveries)[0]!.data, counting(1024))
  })

  it("with an application buffer, chunks are copied there and fit it", () => {
    const engine = makeClient()
    const app = new Uint8Array(10)
    assert.strictEqual(engine.receive(app, "r1"), Status.Ok)
    const read = expectAction(next(engine, QueueCode.Receive), ActionCode.ReceiveFromNetwork)
    const wire = hex("81 0d " + toHex(utf8("Hello, world!")))
    read.buffers[0]!.set(wire)
    complete(engine, read, wire.length)
    const first = expectAction(next(engine, QueueCode.Receive), ActionCode.IndicateReceiveComplete)
    assert.strictEqual(first.buffers[0]!.buffer, app.buffer, "the chunk is the application's buffer")
    assert.strictEqual(decodeUtf8(first.buffers[0]!), "Hello, wor")
    assert.strictEqual(first.bufferType, Utf8Fragment)
    assert.strictEqual(first.context, "r1")
    complete(engine, first)
    assert.strictEqual(engine.receive(app, "r2"), Status.Ok)
    const second = expectAction(next(engine, QueueCode.Receive), ActionCode.IndicateReceiveComplete)
    assert.strictEqual(decodeUtf8(second.buffers[0]!), "ld!")
    assert.strictEqual(second.bufferType, Utf8Message)
    assert.strictEqual(second.context, "r2")
  })

  it("with an application buffer, text is split between code points", () => {
    const engine = makeClient()
    const app = new Uint8Array(7)
    const message = "€€€€€" // 15 bytes
    const { deliveries } = feed(engine, concat([hex("81 0f"), utf8(message)]), { buffer: app })
    assert.deepStrictEqual(deliveries.map((d) => [d.bufferType, decodeUtf8(d.data)]), [
      [Utf8Fragment, "€€"],
      [Utf8Fragment, "€€"],
      [Utf8Message, "€"]
    ])
  })

  it("with an application buffer smaller than a code point, every byte still arrives, in order", () => {
    const message = "😀é😀" // 4 + 2 + 4 bytes
    const wire = concat([hex("81 0a"), utf8(message)])
    for (const size of [1, 2, 3]) {
      // one read, the header on its own first, one byte a time
      for (const readSize of [wire.length, 2, 1]) {
        const engine = makeClient()
        const app = new Uint8Array(size)
        const deliveries: Array<{ bufferType: number; data: Uint8Array }> = []
        let offset = 0
        // (bounded: a handle that delivers nothing would deliver it forever)
        for (let guard = 0; guard < 100 && deliveries.at(-1)?.bufferType !== Utf8Message; guard++) {
          const step = next(engine, QueueCode.Receive)
          if (step.action === ActionCode.NoAction) {
            assert.strictEqual(engine.receive(app, undefined), Status.Ok)
          } else if (step.action === ActionCode.ReceiveFromNetwork) {
            const n = Math.min(step.buffers[0]!.length, readSize, wire.length - offset)
            step.buffers[0]!.set(wire.subarray(offset, offset + n))
            offset += n
            complete(engine, step, n)
          } else {
            expectAction(step, ActionCode.IndicateReceiveComplete)
            deliveries.push({ bufferType: step.bufferType, data: step.buffers[0]!.slice() })
            complete(engine, step)
          }
        }
        const label = `buffer of ${size}, reads of ${readSize}`
        for (const d of deliveries) {
          assert.isAbove(d.data.length, 0, label)
          assert.isAtMost(d.data.length, size, label)
        }
        assert.deepStrictEqual(deliveries.map((d) => d.bufferType), [
          ...Array.from({ length: deliveries.length - 1 }, () => Utf8Fragment),
          Utf8Message
        ], label)
        assert.strictEqual(decodeUtf8(concat(deliveries.map((d) => d.data))), message, label)
      }
    }
  })

  it("with an application buffer, control payloads are copied too", () => {
    const app = new Uint8Array(64)
    const { deliveries } = feed(makeClient(), "8a 02 6869 88 04 03e8 6f6b", { buffer: app })
    assert.deepStrictEqual(contentOf(deliveries), [pong("hi"), closed(1000, "ok")])
  })

  it("with an application buffer exactly the size of a control payload, the payload is copied there", () => {
    for (const [wire, data] of [["8a 02 6869", "6869"], ["88 04 03e8 6f6b", "6f6b"]] as const) {
      const engine = makeClient()
      const app = new Uint8Array(2)
      assert.strictEqual(engine.receive(app, undefined), Status.Ok)
      const read = expectAction(next(engine, QueueCode.Receive), ActionCode.ReceiveFromNetwork)
      read.buffers[0]!.set(hex(wire))
      complete(engine, read, hex(wire).length)
      const step = expectAction(next(engine, QueueCode.Receive), ActionCode.IndicateReceiveComplete)
      assert.strictEqual(step.buffers[0]!.buffer, app.buffer, "the payload is in the application's buffer")
      assert.strictEqual(toHex(step.buffers[0]!), data)
    }
  })

  it("with an application buffer too small for a pong's payload or a close reason, they come whole all the same", () => {
    const reason = "a reason of some length"
    const wire = concat([hex("8a 0b"), utf8("pong-prefix"), hex(`88 ${(2 + reason.length).toString(16)} 03e8`), utf8(reason)])
    const { deliveries } = feed(makeClient(), wire, { buffer: new Uint8Array(4) })
    assert.deepStrictEqual(contentOf(deliveries), [pong("pong-prefix"), closed(1000, reason)])
  })


  it("with an application buffer, binary payload is read straight into it, masked or not", () => {
    for (const isClient of [true, false]) {
      const { payload, wire, engine, app } = binaryReceiver(isClient, 10000, 256, 3000)
      const received: Array<Uint8Array> = []
      let offset = 0
      let directReads = 0
      for (let guard = 0; guard < 100; guard++) {
        assert.strictEqual(engine.receive(app, "r"), Status.Ok)
        let step = next(engine, QueueCode.Receive)
        while (step.action === ActionCode.ReceiveFromNetwork) {
          const target = step.buffers[0]!
          if (target.buffer === app.buffer) directReads++
          const n = Math.min(target.length, wire.length - offset, 1500) // the transport delivers 1500 at most
          target.set(wire.subarray(offset, offset + n))
          offset += n
          complete(engine, step, n)
          step = next(engine, QueueCode.Receive)
        }
        expectAction(step, ActionCode.IndicateReceiveComplete)
        assert.strictEqual(step.buffers[0]!.buffer, app.buffer)
        received.push(step.buffers[0]!.slice())
        const bufferType = step.bufferType
        complete(engine, step)
        if (bufferType === BinaryMessage) break
        assert.strictEqual(bufferType, BinaryFragment)
      }
      assert.deepStrictEqual(concat(received), payload)
      assert.isAbove(directReads, 3, "most of the payload skipped the receive buffer")
    }
  })

  it("with an application buffer of 8 KiB or more, a header is not read on its own while a code point cut by the last fragment is held back", () => {
    const engine = makeClient({ receiveBufferSize: 65536 })
    const app = new Uint8Array(8192)
    const reads: Array<number> = []
    const wire = hex("01 03 4142c3 80 01 a9")
    const cursor = { offset: 0 }
    const take = (n: number) => {
      const read = expectAction(next(engine, QueueCode.Receive), ActionCode.ReceiveFromNetwork)
      const target = read.buffers[0]!
      reads.push(target.length)
      target.set(wire.subarray(cursor.offset, cursor.offset + n))
      cursor.offset += n
      complete(engine, read, n)
    }
    assert.strictEqual(engine.receive(app, "r"), Status.Ok)
    take(2) // the first header, read on its own
    take(3)
    const ab = expectAction(next(engine, QueueCode.Receive), ActionCode.IndicateReceiveComplete)
    assert.deepStrictEqual([ab.bufferType, toHex(stepBytes(ab))], [Utf8Fragment, "4142"])
    complete(engine, ab)
    assert.strictEqual(engine.receive(app, "r"), Status.Ok)
    take(3) // with c3 held back, the next header comes in a read of the whole free receive buffer
    const e = expectAction(next(engine, QueueCode.Receive), ActionCode.IndicateReceiveComplete)
    assert.deepStrictEqual([e.bufferType, decodeUtf8(stepBytes(e))], [Utf8Message, "é"])
    assert.deepStrictEqual(reads, [2, 4092, 4092])
  })

  it("the byte of a code point held back from the last fragment moves to the front of the receive buffer: the next read gets all the room after it", () => {
    const engine = makeClient()
    const rooms: Array<number> = []
    const take = (bytes: string) => {
      const read = expectAction(next(engine, QueueCode.Receive), ActionCode.ReceiveFromNetwork)
      rooms.push(read.buffers[0]!.length)
      read.buffers[0]!.set(hex(bytes))
      complete(engine, read, hex(bytes).length)
    }
    assert.strictEqual(engine.receive(undefined, "r"), Status.Ok)
    take("01 01 c3")
    // the continuation's header comes alone: the held-back c3 is all of its payload so far
    take("80 01")
    take("a9")
    const e = expectAction(next(engine, QueueCode.Receive), ActionCode.IndicateReceiveComplete)
    assert.deepStrictEqual([e.bufferType, decodeUtf8(stepBytes(e))], [Utf8Message, "é"])
    assert.deepStrictEqual(rooms, [4092, 4092, 4091])
  })

  it("with an application buffer of 8 KiB or more, a header is read on its own, then the payload into the buffer", () => {
    const payload = counting(70000)
    const wire = sendAndDrain(makeServer(), BinaryMessage, payload) // 82 7f <8-byte length> <payload>
    const engine = makeClient({ receiveBufferSize: 65536 })
    const app = new Uint8Array(70000)
    const { reads } = receiveMessage(engine, wire, { offset: 0 }, app)
    assert.deepStrictEqual(app, payload)
    // 2 header bytes, the 8 bytes of the length, then the payload in receive-buffer-sized reads
    assert.deepStrictEqual(reads, [[2, false], [8, false], [65536, true], [70000 - 65536, true]])
  })

  it("transport chunks of the receive buffer size that do not line up with the payload are read once each, not cut in two", () => {
    for (const isClient of [true, false]) {
      const size = 65536
      const { payload, wire, engine, app } = binaryReceiver(isClient, 16 * size, size, 16 * size)
      // the transport hands out its data in chunks of `size` bytes: a read takes what is left of the
      // current chunk, up to the room it is given (as a socket's data events are read)
      const cursor = { offset: 0 }
      const { reads, deliveries } = receiveMessage(engine, wire, cursor, app, (room, offset) => Math.min(room, size - (offset % size)))
      for (const [, length] of deliveries) assert.isAtMost(length, size)
      assert.deepStrictEqual(app, payload)
      // the header's two reads, then one read per transport chunk (17: the header moved the payload
      // across one more); cut at every chunk limit, this would be 2 reads per chunk
      assert.strictEqual(reads.length, 2 + Math.ceil(wire.length / size))
    }
  })

  it("large messages in a row: the header of each after the first is read in one go; a shorter header after them loses nothing", () => {
    for (const isClient of [true, false]) {
      const sizes = [70000, 70000, 70000, 300, 70000, 20, 70000]
      const payloads = sizes.map((size, i) => counting(size + i).subarray(i))
      const sender = makeEngine(!isClient)
      const wire = concat(payloads.map((p) => sendAndDrain(sender, BinaryMessage, p)))
      const engine = makeEngine(isClient, { receiveBufferSize: 65536 })
      const cursor = { offset: 0 }
      const headerReads: Array<number> = []
      for (const payload of payloads) {
        const app = new Uint8Array(100000)
        const { reads, received } = receiveMessage(engine, wire, cursor, app)
        assert.deepStrictEqual(app.subarray(0, received), payload)
        // reads into the engine's buffer: the header's
        headerReads.push(reads.filter(([, intoApp]) => !intoApp).length)
      }
      // 2 + 8 (+ 4 masking key) bytes: two reads for the first header, then one; the 300-byte
      // message's shorter header (4 (+ 4)) is read with some payload, and so is the 20-byte one's
      assert.deepStrictEqual(headerReads.slice(0, 3), [2, 1, 1])
      assert.strictEqual(cursor.offset, wire.length)
    }
  })

  it("short direct reads gather in the caller's buffer: one delivery per chunk, and what was read comes before the end", () => {
    for (const isClient of [true, false]) {
      const { payload, wire, engine, app } = binaryReceiver(isClient, 70000, 65536, 70000)
      const { deliveries } = receiveMessage(engine, wire, { offset: 0 }, app, (room) => Math.min(room, 1000)) // 1000 bytes per read
      // the chunk is delivered when the next 1000-byte read would not fit in it (65000 < 65536)
      assert.deepStrictEqual(deliveries, [[BinaryFragment, 65000], [BinaryMessage, 5000]])
      assert.deepStrictEqual(app, payload)
    }
    // the transport ends in the middle of a chunk: the bytes read so far are delivered, then the end
    const wire = sendAndDrain(makeServer(), BinaryMessage, counting(20000))
    const engine = makeClient({ receiveBufferSize: 65536 })
    const app = new Uint8Array(20000)
    assert.strictEqual(engine.receive(app, "r"), Status.Ok)
    const sent = wire.length - 100 // the last 100 bytes never come
    let offset = 0
    let step = next(engine, QueueCode.Receive)
    while (step.action === ActionCode.ReceiveFromNetwork) {
      const n = Math.min(step.buffers[0]!.length, sent - offset, 5000)
      step.buffers[0]!.set(wire.subarray(offset, offset + n))
      offset += n
      complete(engine, step, n) // 0 once everything sent was read: the transport ended
      step = next(engine, QueueCode.Receive)
    }
    expectAction(step, ActionCode.IndicateReceiveComplete)
    assert.deepStrictEqual([step.bufferType, step.buffers[0]!.length], [BinaryFragment, 20000 - 100])
    assert.deepStrictEqual(step.buffers[0], counting(20000).subarray(0, 19900))
    complete(engine, step)
    assert.strictEqual(engine.receive(app, "r"), Status.Ok)
    step = expectAction(next(engine, QueueCode.Receive), ActionCode.IndicateReceiveComplete)
    assert.deepStrictEqual([step.bufferType, step.closeStatus], [Close, 1006])
  })

  it("a read that exactly fills what is left of the chunk is waited for: the chunk comes whole", () => {
    for (const isClient of [true, false]) {
      const { payload, wire, engine, app } = binaryReceiver(isClient, 70000, 65536, 70000)
      // reads of 1024 bytes: 64 of them fill the 65536-byte chunk exactly
      const { deliveries } = receiveMessage(engine, wire, { offset: 0 }, app, (room) => Math.min(room, 1024))
      assert.deepStrictEqual(deliveries, [[BinaryFragment, 65536], [BinaryMessage, 70000 - 65536]])
      assert.deepStrictEqual(app, payload)
    }
  })

  it("an allocated buffer holds the receive buffer", () => {
    const allocated = new Uint8Array(256 + 4096 + 256)
    const engine = makeClient({ receiveBufferSize: 256, allocatedBuffer: allocated })
    send(engine, BinaryMessage, counting(10))
    const frames = parseFrames(drainSends(engine).wire)
    assert.deepStrictEqual(frames[0]!.payload, counting(10))
    assert.strictEqual(engine.receive(undefined, undefined), Status.Ok)
    const read = expectAction(next(engine, QueueCode.Receive), ActionCode.ReceiveFromNetwork)
    assert.strictEqual(read.buffers[0]!.buffer, allocated.buffer)
    assert.isAtMost(read.buffers[0]!.length, 256)
  })

  it("an allocated buffer that starts inside its memory: reads and deliveries stay in its part", () => {
    // guard bytes on either side of the handle's part, which must never be written
    const memory = new Uint8Array(64 + 256 + 4096 + 256 + 64).fill(0xee)
    const allocated = memory.subarray(64, memory.length - 64)
    const inside = (view: Uint8Array) => {
      assert.strictEqual(view.buffer, memory.buffer)
      assert.isAtLeast(view.byteOffset, allocated.byteOffset)
      assert.isAtMost(view.byteOffset + view.length, allocated.byteOffset + 4 + 256)
    }
    const engine = makeServer({ receiveBufferSize: 256, allocatedBuffer: allocated })
    // masked text (its first 7 bytes read by hand), binary, a ping (its pong) and text again
    const hello = hex("81 85 37fa213d 7f9f4d5158") // "Hello"
    assert.strictEqual(engine.receive(undefined, undefined), Status.Ok)
    const read = expectAction(next(engine, QueueCode.Receive), ActionCode.ReceiveFromNetwork)
    inside(read.buffers[0]!)
    read.buffers[0]!.set(hello.subarray(0, 7), 0)
    complete(engine, read, 7)
    const first = expectAction(next(engine, QueueCode.Receive), ActionCode.IndicateReceiveComplete)
    inside(first.buffers[0]!)
    assert.deepStrictEqual([first.bufferType, toHex(first.buffers[0]!)], [Utf8Fragment, "48"])
    complete(engine, first)
    const rest = concat([hello.subarray(7), hex("82 83 37fa213d 36f822"), hex("89 80 37fa213d"), hello])
    const { deliveries, sent } = feed(engine, rest, { chunks: [5, 100], drivePongs: true })
    assert.deepStrictEqual(
      messagesOf(deliveries).map((m) => [m.kind, toHex(m.data)]),
      [["text", "656c6c6f"], ["binary", "010203"], ["text", "48656c6c6f"]]
    )
    assert.deepStrictEqual(sent.map(toHex), ["8a00"])
    assert.isTrue(memory.subarray(0, 64).every((b) => b === 0xee))
    assert.isTrue(memory.subarray(memory.length - 64).every((b) => b === 0xee))
  })
})

describe("end of the transport (spec 3.9, 1006)", () => {
  it("a read completed with 0 bytes completes the receive with Close 1006", () => {
    const engine = makeClient()
    const { deliveries } = feed(engine, "", { eof: true })
    assert.deepStrictEqual(deliveries.map((d) => [d.bufferType, d.closeStatus, d.data.length]), [[Close, 1006, 0]])
  })

  it("the end of the transport in the middle of a message", () => {
    const engine = makeClient()
    const { deliveries } = feed(engine, "01 03 48656c 80 05 6c6f", { eof: true })
    assert.deepStrictEqual(deliveries.map((d) => [d.bufferType, d.closeStatus, toHex(d.data)]), [
      [Utf8Fragment, 0, "48656c"],
      [Utf8Fragment, 0, "6c6f"],
      [Close, 1006, ""]
    ])
  })

  it("the end of the transport when only part of a code point was read into the caller's buffer: Close 1006, no empty chunk", () => {
    // a 256-byte text frame whose header comes first (its payload is then read into the caller's
    // buffer), then 1 to 3 bytes of a 4-byte code point, then the end of the transport
    for (let k = 1; k <= 3; k++) {
      const wire = concat([hex("81 7e 0100"), utf8("😀").subarray(0, k)])
      const result = feed(makeClient(), wire, { chunks: [4, k], buffer: new Uint8Array(9000), eof: true })
      assert.strictEqual(result.failed, undefined)
      assert.deepStrictEqual(result.deliveries.map((d) => [d.bufferType, d.closeStatus, d.data.length]), [[Close, 1006, 0]])
    }
  })

  it("a read completed with more bytes than it offered is an invalid parameter", () => {
    const engine = makeClient()
    engine.receive(undefined, undefined)
    const read = expectAction(next(engine, QueueCode.Receive), ActionCode.ReceiveFromNetwork)
    expectRejected(engine, engine.completeAction(read.id, read.buffers[0]!.length + 1), Status.InvalidParameter, /bytesTransferred/)
    // the read is still outstanding
    read.buffers[0]!.set(hex("8a00"))
    complete(engine, read, 2)
    assert.strictEqual(expectAction(next(engine, QueueCode.Receive), ActionCode.IndicateReceiveComplete).bufferType, PingPong)
  })

  it("a header read on its own (large caller buffer) takes no more bytes than it offered", () => {
    const engine = makeClient()
    engine.receive(new Uint8Array(16 * 1024), undefined)
    const read = expectAction(next(engine, QueueCode.Receive), ActionCode.ReceiveFromNetwork)
    assert.strictEqual(read.buffers[0]!.length, 2, "the first two header bytes only")
    expectRejected(engine, engine.completeAction(read.id, 3), Status.InvalidParameter, /bytesTransferred/)
    read.buffers[0]!.set(hex("8a00"))
    complete(engine, read, 2)
    assert.strictEqual(expectAction(next(engine, QueueCode.Receive), ActionCode.IndicateReceiveComplete).bufferType, PingPong)
  })
})

// ---------------------------------------------------------------------------------------------
// Send side (spec 3.6, 5.5, 7.3)
// ---------------------------------------------------------------------------------------------

describe("sending", () => {
  it("text fragments: opcode 1 without FIN, then opcode 0 with FIN", () => {
    const server = makeServer()
    assert.strictEqual(toHex(sendAndDrain(server, Utf8Fragment, utf8("Hel"))), "010348656c")
    assert.strictEqual(toHex(sendAndDrain(server, Utf8Message, utf8("lo"))), "80026c6f")
    const client = makeClient()
    assert.strictEqual(toHex(sendAndDrain(client, Utf8Fragment, utf8("Hel"))), "018337fa213d7f9f4d")
    assert.strictEqual(toHex(sendAndDrain(client, Utf8Message, utf8("lo"))), "808237fa213d5b95")
  })

  it("binary fragments, with a control frame between them", () => {
    const server = makeServer()
    const wire = concat([
      sendAndDrain(server, BinaryFragment, hex("01")),
      sendAndDrain(server, PingPong),
      sendAndDrain(server, BinaryFragment, hex("02")),
      sendAndDrain(server, BinaryMessage, hex("03"))
    ])
    assert.strictEqual(toHex(wire), "020101" + "8900" + "000102" + "800103")
  })

  it("text and binary do not mix in an open message", () => {
    const server = makeServer()
    sendAndDrain(server, Utf8Fragment, utf8("a"))
    expectSendRejected(server, Status.InvalidOperation, /text message is open, it cannot continue with binary/, BinaryMessage, hex("00"))
    expectSendRejected(server, Status.InvalidOperation, /text message is open/, BinaryFragment, hex("00"))
    // the message can still be finished
    assert.strictEqual(toHex(sendAndDrain(server, Utf8Message, utf8("b"))), "800162")
    sendAndDrain(server, BinaryFragment, hex("00"))
    expectSendRejected(server, Status.InvalidOperation, /binary message is open, it cannot continue with text/, Utf8Message, utf8("x"))
  })

  it("one outstanding send at a time", () => {
    const server = makeServer()
    send(server, Utf8Message, utf8("a"))
    expectSendRejected(server, Status.InvalidOperation, /another send is still outstanding/, PingPong)
    drainSends(server)
    send(server, PingPong)
  })

  it("no data after a Close was sent, but pings are allowed", () => {
    const server = makeServer()
    assert.strictEqual(toHex(sendAndDrain(server, Close, utf8("bye"), 1000)), "880503e8627965")
    assert.strictEqual(server.state, HandleState.CloseSent)
    expectSendRejected(server, Status.InvalidOperation, /Close was already sent/, Utf8Message, utf8("x"))
    expectSendRejected(server, Status.InvalidOperation, /Close was already sent/, BinaryFragment, utf8("x"))
    expectSendRejected(server, Status.InvalidOperation, /Close was already sent/, Close, undefined, 1000)
    assert.strictEqual(toHex(sendAndDrain(server, PingPong)), "8900")
    assert.strictEqual(toHex(sendAndDrain(server, UnsolicitedPong)), "8a00")
  })

  it("after the closing handshake even pings are refused", () => {
    const server = makeServer()
    sendAndDrain(server, Close)
    feed(server, "88 80 00000000")
    assert.strictEqual(server.state, HandleState.Closed)
    expectSendRejected(server, Status.InvalidOperation, /closing handshake is complete/, PingPong)
  })

  it("data may still be sent after the peer's Close", () => {
    const server = makeServer()
    feed(server, "88 80 00000000")
    assert.strictEqual(server.state, HandleState.CloseReceived)
    assert.strictEqual(toHex(sendAndDrain(server, Utf8Message, utf8("late"))), "81046c617465")
  })

  it("getAction before the session: refused on a client whose handshake only began and on a new handle; a server's handle whose handshake began opens (its end is implicit)", () => {
    const record = new ActionRecord()
    for (const [name, engine, state, expected] of [
      ["client, handshake begun", makeClient(), HandleState.HandshakeStarted, Status.InvalidOperation],
      ["client, created", makeClient(), HandleState.Created, Status.InvalidOperation],
      ["server, created", makeServer(), HandleState.Created, Status.InvalidOperation],
      ["server, handshake begun", makeServer(), HandleState.HandshakeStarted, Status.Ok]
    ] as const) {
      engine.state = state
      assert.strictEqual(engine.getAction(QueueCode.All, record), expected, name)
      assert.strictEqual(engine.state, expected === Status.Ok ? HandleState.Open : state, name)
      if (expected !== Status.Ok) assert.match(engine.lastError!.message, /getAction is not allowed/, name)
      else assert.strictEqual(record.action, ActionCode.NoAction, `${name}: nothing queued`)
    }
  })

  it("every state: getAction and receive are allowed on an open session (a server's begun handshake opens it), refused otherwise with the same lastError as before; an allowed call leaves lastError alone", () => {
    const notComplete = (op: string, state: string) => `${op} is not allowed: the handle is in state ${state} and the handshake is not complete`
    const refusal = (op: string, why: string) => `${op} is not allowed: ${why}`
    const cases: ReadonlyArray<readonly [boolean, HandleState, string | undefined, string | undefined, HandleState]> = [
      // [isClient, state, getAction's refusal, receive's refusal, state after]
      [true, HandleState.Created, notComplete("getAction", "Created"), notComplete("receive", "Created"), HandleState.Created],
      [false, HandleState.Created, notComplete("getAction", "Created"), notComplete("receive", "Created"), HandleState.Created],
      [true, HandleState.HandshakeStarted, notComplete("getAction", "HandshakeStarted"), notComplete("receive", "HandshakeStarted"), HandleState.HandshakeStarted],
      [false, HandleState.HandshakeStarted, undefined, undefined, HandleState.Open],
      [true, HandleState.Open, undefined, undefined, HandleState.Open],
      [false, HandleState.CloseSent, undefined, undefined, HandleState.CloseSent],
      [true, HandleState.CloseReceived, undefined, "receive is not allowed: the peer's Close was already received", HandleState.CloseReceived],
      [false, HandleState.Closed, undefined, "receive is not allowed: the peer's Close was already received", HandleState.Closed],
      [true, HandleState.Aborted, undefined, refusal("receive", "the handle was aborted"), HandleState.Aborted],
      [false, HandleState.Failed, refusal("getAction", "the handshake failed; only abortHandle and deleteHandle are allowed"), refusal("receive", "the handshake failed; only abortHandle and deleteHandle are allowed"), HandleState.Failed],
      [true, HandleState.Deleted, refusal("getAction", "the handle was deleted"), refusal("receive", "the handle was deleted"), HandleState.Deleted]
    ]
    const sentinel = { status: Status.InvalidFormat, message: "untouched" }
    for (const [isClient, state, getActionRefusal, receiveRefusal, after] of cases) {
      for (const first of ["getAction", "receive"] as const) {
        const name = `${isClient ? "client" : "server"} in ${state}, ${first} first`
        const engine = makeEngine(isClient)
        engine.state = state
        engine.lastError = sentinel
        const calls = first === "getAction" ? ["getAction", "receive"] as const : ["receive", "getAction"] as const
        for (const call of calls) {
          const refusal = call === "getAction" ? getActionRefusal : receiveRefusal
          const status = call === "getAction"
            ? engine.getAction(QueueCode.All, new ActionRecord())
            : engine.receive(undefined, "r")
          if (refusal === undefined) {
            assert.strictEqual(status, Status.Ok, `${name}: ${call}`)
            assert.strictEqual(engine.lastError, sentinel, `${name}: ${call} leaves lastError`)
          } else {
            assert.strictEqual(status, Status.InvalidOperation, `${name}: ${call}`)
            assert.deepStrictEqual(engine.lastError, { status: Status.InvalidOperation, message: refusal }, `${name}: ${call}`)
            engine.lastError = sentinel
          }
        }
        assert.strictEqual(engine.state, after, name)
      }
    }
  })

  it("a server's frames and a zero-key client's of 0 to 65536 bytes, whole or fragments: one SendToNetwork of the header (minimal length field) and the caller's own payload, owned or not", () => {
    const lengthField = (length: number): string =>
      length <= 125 ? "" : length <= 0xffff ? length.toString(16).padStart(4, "0") : length.toString(16).padStart(16, "0")
    const lengthByte = (length: number): number => length <= 125 ? length : length <= 0xffff ? 126 : 127
    for (const who of ["server", "zero-key client"] as const) {
      for (const owned of [false, true]) {
        const engine = who === "server" ? makeServer() : makeClient({ disableMasking: true })
        if (owned) engine.allocateFrame = (n) => new Uint8Array(n)
        for (const length of [0, 1, 125, 126, 127, 4095, 4096, 65535, 65536]) {
          // a text message in three fragments, then a whole binary message
          for (const [bufferType, first] of [[Utf8Fragment, 0x01], [Utf8Fragment, 0x00], [Utf8Message, 0x80], [BinaryMessage, 0x82]] as const) {
            const name = `${who}${owned ? ", allocateFrame" : ""}: ${length} B, first byte ${first.toString(16)}`
            const payload = new Uint8Array(length).fill(0x61)
            send(engine, bufferType, payload, undefined, name)
            const out = new ActionRecord()
            assert.strictEqual(engine.getAction(QueueCode.Send, out), Status.Ok, name)
            assert.strictEqual(out.action, ActionCode.SendToNetwork, name)
            const step = { id: out.id, buffers: out.bufferCount === 1 ? [out.buffer0] : [out.buffer0, out.buffer1] }
            const maskBit = who === "server" ? 0 : 0x80
            const header = first.toString(16).padStart(2, "0") + (maskBit | lengthByte(length)).toString(16).padStart(2, "0") +
              lengthField(length) + (who === "server" ? "" : "00000000")
            assert.strictEqual(toHex(step.buffers[0]!), header, name)
            assert.strictEqual(out.bufferCount, length === 0 ? 1 : 2, name)
            if (length > 0) assert.strictEqual(step.buffers[1], payload, `${name}: the caller's own payload, no copy`)
            assert.strictEqual(out.owned, owned && length >= 4096, name)
            assert.strictEqual(engine.completeAction(step.id, header.length / 2 + length), Status.Ok, name)
            const done = expectAction(next(engine, QueueCode.Send), ActionCode.IndicateSendComplete, QueueCode.Send)
            assert.strictEqual(done.context, name)
            complete(engine, done)
            assert.isTrue(engine.sendWritten, name)
          }
        }
      }
    }
  })

  it("completeAction on a send's actions: a count that is no byte count of the action is refused (InvalidParameter) and the action stays outstanding; IndicateSendComplete takes any count; a second completion is refused", () => {
    const refused = "completeAction is not allowed: the action was already completed or does not belong to this handle"
    const setups: ReadonlyArray<readonly [string, () => Engine, number]> = [
      ["client, a frame built whole", () => {
        const e = makeClient()
        send(e, BinaryMessage, counting(10), undefined, "ctx")
        return e
      }, 16],
      ["client, a frame in chunks", () => {
        const e = makeClient({ sendBufferSize: 16 })
        send(e, BinaryMessage, counting(300), undefined, "ctx")
        return e
      }, 8 + 16],
      ["server, a frame from the caller's memory", () => {
        const e = makeServer()
        send(e, BinaryMessage, counting(200), undefined, "ctx")
        return e
      }, 4 + 200],
      ["server, an owned frame", () => {
        const e = makeServer()
        e.allocateFrame = (n) => new Uint8Array(n)
        send(e, BinaryMessage, counting(5000), undefined, "ctx")
        return e
      }, 4 + 5000],
      ["server, a ping", () => {
        const e = makeServer()
        send(e, PingPong, counting(5), undefined, "ctx")
        return e
      }, 7],
      ["server, an automatic pong on the send queue", () => {
        const e = makeServer({ pongsOnSendQueue: true })
        // (after a frame of the pong's length: the pong's write is not taken for that frame's)
        sendAndDrain(e, PingPong, counting(5))
        feed(e, "89 85 37fa213d 7f9f4d5158")
        return e
      }, 7]
    ]
    for (const [name, setup, length] of setups) {
      for (const bad of [-1, -0.5, 0.5, 1.5, length - 0.5, length + 1, NaN, Infinity, -Infinity]) {
        const engine = setup()
        const write = expectAction(next(engine, QueueCode.Send), ActionCode.SendToNetwork)
        assert.strictEqual(stepBytes(write).length, length, name)
        expectRejected(engine, engine.completeAction(write.id, bad), Status.InvalidParameter, /bytesTransferred/)
        assert.strictEqual(
          engine.lastError!.message,
          `bytesTransferred must be an integer from 0 to ${length} for this send, got ${bad}`,
          `${name}, ${bad}`
        )
        // still outstanding: nothing else is handed out, and the whole write completes it
        assert.strictEqual(next(engine, QueueCode.Send).action, ActionCode.NoAction, `${name}, ${bad}`)
        assert.strictEqual(engine.completeAction(write.id, length), Status.Ok, `${name}, ${bad}`)
        expectRejected(engine, engine.completeAction(write.id, length), Status.InvalidOperation, /already completed/)
        assert.strictEqual(engine.lastError!.message, refused)
        const rest = next(engine, QueueCode.Send)
        if (write.queue === QueueCode.Receive) {
          // the pong: nothing more on the send queue
          assert.strictEqual(rest.action, ActionCode.NoAction, name)
          continue
        }
        let done = rest
        while (done.action === ActionCode.SendToNetwork) {
          complete(engine, done)
          done = next(engine, QueueCode.Send)
        }
        expectAction(done, ActionCode.IndicateSendComplete, QueueCode.Send)
        assert.strictEqual(done.context, "ctx", name)
        assert.strictEqual(engine.completeAction(done.id, bad), Status.Ok, `${name}: IndicateSendComplete with ${bad}`)
        assert.isTrue(engine.sendWritten, name)
        expectRejected(engine, engine.completeAction(done.id, 0), Status.InvalidOperation, /already completed/)
        assert.strictEqual(next(engine, QueueCode.Send).action, ActionCode.NoAction, name)
      }
    }
  })

  for (const code of [1005, 1006, 1015, 999, 0, 1004, 2999, 5000, 1.5]) {
    it(`close status ${code} may not be sent (InvalidParameter)`, () => {
      const server = makeServer()
      expectSendRejected(server, Status.InvalidParameter, /may not be sent/, Close, undefined, code)
      assert.strictEqual(server.state, HandleState.Open)
    })
  }

  it("a close reason of 124 bytes is an invalid parameter, 123 bytes is fine", () => {
    const server = makeServer()
    expectSendRejected(server, Status.InvalidParameter, /124 bytes, more than the 123 allowed/, Close, new Uint8Array(124).fill(0x61), 1000)
    assert.strictEqual(toHex(sendAndDrain(server, Close, new Uint8Array(123).fill(0x61), 1000)), "887d03e8" + "61".repeat(123))
  })

  it("a close reason must be UTF-8 and needs a status", () => {
    const server = makeServer()
    expectSendRejected(server, Status.InvalidParameter, /must be UTF-8/, Close, hex("c328"), 1000)
    expectSendRejected(server, Status.InvalidParameter, /needs a close status/, Close, utf8("x"))
  })

  it("a ping payload of 126 bytes is an invalid parameter, 125 bytes is fine", () => {
    const server = makeServer()
    expectSendRejected(server, Status.InvalidParameter, /at most 125 bytes, got 126/, PingPong, new Uint8Array(126))
    expectSendRejected(server, Status.InvalidParameter, /pong payload/, UnsolicitedPong, new Uint8Array(126))
    assert.strictEqual(toHex(sendAndDrain(server, PingPong, new Uint8Array(125))), "897d" + "00".repeat(125))
  })

  it("an unknown buffer type is an invalid parameter", () => {
    const server = makeServer()
    expectSendRejected(server, Status.InvalidParameter, /not a buffer type/, 0x80000007)
    expectSendRejected(server, Status.InvalidParameter, /not a buffer type/, 0x1ff)
  })

  it("a client frame larger than the send buffer goes out in several actions that make one frame", () => {
    const client = makeClient({ sendBufferSize: 16 })
    const payload = counting(100)
    const { writes, wire, completed } = (() => {
      send(client, BinaryMessage, payload, undefined, "big")
      return drainSends(client)
    })()
    assert.deepStrictEqual(writes.map((w) => w.buffers.map((b) => b.length)), [[6, 16], [16], [16], [16], [16], [16], [4]])
    assert.strictEqual(toHex(writes[0]!.buffers[0]!), "82e437fa213d")
    const frames = parseFrames(wire)
    assert.strictEqual(frames.length, 1)
    assert.deepStrictEqual(frames[0]!.payload, payload)
    assert.deepStrictEqual(payload, counting(100), "the caller's payload is untouched")
    assert.deepStrictEqual(completed, ["big"])
  })

  it("a partial write cancels the send: IndicateSendComplete follows and later sends fail", () => {
    const server = makeServer()
    send(server, BinaryMessage, counting(100), undefined, "s")
    const write = expectAction(next(server, QueueCode.Send), ActionCode.SendToNetwork)
    complete(server, write, 50)
    const done = expectAction(next(server, QueueCode.Send), ActionCode.IndicateSendComplete)
    assert.strictEqual(done.context, "s")
    complete(server, done)
    assert.strictEqual(next(server, QueueCode.Send).action, ActionCode.NoAction)
    expectSendRejected(server, Status.InvalidOperation, /only partly written/, BinaryMessage, counting(1))
    expectSendRejected(server, Status.InvalidOperation, /only partly written/, PingPong)
  })

  it("a write of 0 bytes of a frame's first action cancels the send and leaves the wire usable", () => {
    const server = makeServer()
    send(server, BinaryMessage, counting(100), undefined, "s")
    complete(server, expectAction(next(server, QueueCode.Send), ActionCode.SendToNetwork), 0)
    const done = expectAction(next(server, QueueCode.Send), ActionCode.IndicateSendComplete)
    assert.strictEqual(done.context, "s")
    complete(server, done)
    // nothing of it is on the wire: the next message goes out whole
    send(server, BinaryMessage, counting(3))
    const { wire } = drainSends(server)
    assert.deepStrictEqual(parseFrames(wire).map((f) => f.payload), [counting(3)])
  })

  it("a first fragment cancelled with 0 bytes opens no message: the next message goes out whole", () => {
    const server = makeServer()
    send(server, Utf8Fragment, utf8("part"))
    complete(server, expectAction(next(server, QueueCode.Send), ActionCode.SendToNetwork), 0)
    complete(server, expectAction(next(server, QueueCode.Send), ActionCode.IndicateSendComplete))
    send(server, BinaryMessage, counting(3))
    const frames = parseFrames(drainSends(server).wire)
    assert.deepStrictEqual(frames.map((f) => [f.opcode, f.fin]), [[0x2, true]])
  })

  it("a final fragment cancelled with 0 bytes leaves its message open, to be ended by the next send", () => {
    const server = makeServer()
    send(server, Utf8Fragment, utf8("part"))
    drainSends(server)
    send(server, Utf8Message, utf8("end"))
    complete(server, expectAction(next(server, QueueCode.Send), ActionCode.SendToNetwork), 0)
    complete(server, expectAction(next(server, QueueCode.Send), ActionCode.IndicateSendComplete))
    // the message is still open: binary cannot start, text continues it
    expectSendRejected(server, Status.InvalidOperation, /text message is open/, BinaryMessage, counting(1))
    send(server, Utf8Message, utf8("end"))
    assert.deepStrictEqual(parseFrames(drainSends(server).wire).map((f) => [f.opcode, f.fin]), [[0x0, true]])
  })

  it("a write of 0 bytes after a frame's first action leaves the frame incomplete: later sends fail", () => {
    const client = makeClient({ sendBufferSize: 16 })
    send(client, BinaryMessage, counting(100))
    complete(client, expectAction(next(client, QueueCode.Send), ActionCode.SendToNetwork))
    complete(client, expectAction(next(client, QueueCode.Send), ActionCode.SendToNetwork), 0)
    complete(client, expectAction(next(client, QueueCode.Send), ActionCode.IndicateSendComplete))
    expectSendRejected(client, Status.InvalidOperation, /only partly written/, BinaryMessage, counting(1))
  })

  it("a partial write in the middle of a multi-action frame cancels the rest", () => {
    const client = makeClient({ sendBufferSize: 16 })
    send(client, BinaryMessage, counting(100))
    complete(client, expectAction(next(client, QueueCode.Send), ActionCode.SendToNetwork))
    complete(client, expectAction(next(client, QueueCode.Send), ActionCode.SendToNetwork), 3)
    expectAction(next(client, QueueCode.Send), ActionCode.IndicateSendComplete)
  })

  it("an action can be completed once", () => {
    const server = makeServer()
    send(server, PingPong)
    const write = expectAction(next(server, QueueCode.Send), ActionCode.SendToNetwork)
    complete(server, write)
    expectRejected(server, server.completeAction(write.id, 2), Status.InvalidOperation, /already completed/)
    expectRejected(server, server.completeAction(12345, 0), Status.InvalidOperation, /does not belong/)
    expectRejected(server, server.completeAction(0, 0), Status.InvalidOperation, /already completed/)
  })

  it("action ids wrap from 2^31-1 to 1, never 0 (which no action has): every action stays completable", () => {
    const server = makeServer()
    // (as after 2^31 - 2 actions, which a long-lived connection reaches)
    ;(server as unknown as { nextId: number }).nextId = 0x7fffffff
    send(server, PingPong)
    const last = expectAction(next(server, QueueCode.Send), ActionCode.SendToNetwork)
    assert.strictEqual(last.id, 0x7fffffff)
    complete(server, last)
    const wrapped = expectAction(next(server, QueueCode.Send), ActionCode.IndicateSendComplete)
    assert.strictEqual(wrapped.id, 1)
    complete(server, wrapped)
  })

  it("one action per queue at a time", () => {
    const client = makeClient({ sendBufferSize: 16 })
    send(client, BinaryMessage, counting(40))
    expectAction(next(client, QueueCode.Send), ActionCode.SendToNetwork)
    assert.strictEqual(next(client, QueueCode.Send).action, ActionCode.NoAction)
  })
})

// ---------------------------------------------------------------------------------------------
// Ping/pong and the wire (spec 5.3, 5.6)
// ---------------------------------------------------------------------------------------------

describe("automatic pongs (RFC 6455 section 5.5.2)", () => {
  it("a ping arriving while a client frame is half written is answered after the frame, in the handle's buffers or in owned ones (allocateFrame)", () => {
    for (const owned of [false, true]) {
      const client = makeClient({ sendBufferSize: 16 })
      if (owned) client.allocateFrame = (size) => new Uint8Array(size)
      const payload = counting(owned ? 4096 : 100)
      send(client, BinaryMessage, payload, undefined, "data")
      const first = expectAction(next(client, QueueCode.Send), ActionCode.SendToNetwork, QueueCode.Send)
      const written = [stepBytes(first)]
      complete(client, first)
      // the ping arrives now: the receive queue may not write its pong in the middle of the frame
      const received = feed(client, "89 05 48656c6c6f")
      assert.deepStrictEqual(received.sent, [])
      assert.isTrue(client.pongWaiting)
      // the rest of the frame, then the pong, then the completion
      const rest = drainSends(client)
      assert.deepStrictEqual(rest.completed, ["data"])
      const pongWrites = rest.writes.filter((w) => w.bufferType === PingPong)
      assert.strictEqual(pongWrites.length, 1)
      assert.strictEqual(pongWrites[0]!.queue, QueueCode.Receive, "the pong belongs to the receive queue")
      assert.strictEqual(rest.writes[rest.writes.length - 1], pongWrites[0], "the pong is written after the last piece of the frame")
      const frames = parseFrames(concat([...written, rest.wire]))
      assert.deepStrictEqual(frames.map((f) => [f.opcode, f.fin, f.masked]), [[Opcode.Binary, true, true], [Opcode.Pong, true, true]])
      assert.deepStrictEqual(frames[0]!.payload, payload)
      assert.strictEqual(decodeUtf8(frames[1]!.payload), "Hello")
    }
  })

  it("the receive queue answers the ping itself once the frame is written", () => {
    const client = makeClient({ sendBufferSize: 16 })
    send(client, BinaryMessage, counting(40), undefined, "data")
    complete(client, expectAction(next(client, QueueCode.Send), ActionCode.SendToNetwork))
    assert.strictEqual(client.receive(undefined, "r"), Status.Ok)
    const read1 = expectAction(next(client, QueueCode.Receive), ActionCode.ReceiveFromNetwork)
    read1.buffers[0]!.set(hex("89 01 41"))
    complete(client, read1, 3)
    // the ping is parsed, its pong has to wait: the receive queue asks for more bytes instead
    const read2 = expectAction(next(client, QueueCode.Receive), ActionCode.ReceiveFromNetwork)
    assert.isTrue(client.pongWaiting)
    complete(client, expectAction(next(client, QueueCode.Send), ActionCode.SendToNetwork))
    complete(client, expectAction(next(client, QueueCode.Send), ActionCode.SendToNetwork))
    read2.buffers[0]!.set(hex("8a 00"))
    complete(client, read2, 2)
    // the frame is out: the receive queue hands out the pong, then the Pong that arrived
    const pongStep = expectAction(next(client, QueueCode.Receive), ActionCode.SendToNetwork, QueueCode.Receive)
    assert.strictEqual(toHex(stepBytes(pongStep)), "8a8137fa213d" + (0x41 ^ 0x37).toString(16))
    assert.strictEqual(pongStep.context, undefined)
    complete(client, pongStep)
    const delivered = expectAction(next(client, QueueCode.Receive), ActionCode.IndicateReceiveComplete)
    assert.strictEqual(delivered.bufferType, PingPong)
    assert.strictEqual(delivered.context, "r")
    complete(client, delivered)
    assert.strictEqual(expectAction(next(client, QueueCode.Send), ActionCode.IndicateSendComplete).context, "data")
  })

  it("with pongsOnSendQueue the pong comes out of the send queue", () => {
    const server = makeServer({ pongsOnSendQueue: true })
    const received = feed(server, "89 85 37fa213d 7f9f4d5158")
    assert.deepStrictEqual(received.sent, [])
    assert.isTrue(server.pongWaiting)
    const drained = drainSends(server)
    assert.strictEqual(toHex(drained.wire), "8a0548656c6c6f")
    assert.isFalse(server.pongWaiting)
  })

  it("with pongsOnSendQueue the pong waits for a half-written frame too", () => {
    const client = makeClient({ sendBufferSize: 16, pongsOnSendQueue: true })
    send(client, BinaryMessage, counting(40), undefined, "data")
    const first = expectAction(next(client, QueueCode.Send), ActionCode.SendToNetwork)
    const written = stepBytes(first)
    complete(client, first)
    feed(client, "89 00")
    const rest = drainSends(client)
    assert.deepStrictEqual(rest.writes.map((w) => w.bufferType), [BinaryMessage, BinaryMessage, PingPong])
    const frames = parseFrames(concat([written, rest.wire]))
    assert.deepStrictEqual(frames.map((f) => f.opcode), [Opcode.Binary, Opcode.Pong])
    assert.deepStrictEqual(frames[0]!.payload, counting(40))
  })

  it("a send queued while a pong waits goes out first, and its writer never gets the pong (cancelled, it would take the pong along)", () => {
    const server = makeServer({ pongsOnSendQueue: true })
    feed(server, "89 85 37fa213d 7f9f4d5158")
    assert.isTrue(server.pongWaiting)
    send(server, BinaryMessage, counting(3), undefined, "data")
    // the send's writer is interrupted before anything of its frame is written
    const frame = expectAction(next(server, QueueCode.Send), ActionCode.SendToNetwork)
    assert.strictEqual(frame.bufferType, BinaryMessage)
    complete(server, frame, 0)
    const done = expectAction(next(server, QueueCode.Send), ActionCode.IndicateSendComplete)
    assert.strictEqual(done.context, "data")
    assert.isFalse(server.sendWritten)
    complete(server, done)
    // the pong is still owed, for whoever runs the send queue next
    assert.isTrue(server.pongWaiting)
    assert.strictEqual(toHex(drainSends(server).wire), "8a0548656c6c6f")
  })

  it("every ping waiting for the wire is answered, in order; beyond 16 waiting, the latest takes the last place", () => {
    const range = (from: number, to: number) => Array.from({ length: to - from + 1 }, (_, i) => from + i)
    for (const [pings, answered] of [[3, range(1, 3)], [16, range(1, 16)], [40, [...range(1, 15), 40]]] as const) {
      const client = makeClient({ sendBufferSize: 16 })
      send(client, BinaryMessage, counting(40))
      const first = expectAction(next(client, QueueCode.Send), ActionCode.SendToNetwork)
      const written = stepBytes(first)
      complete(client, first)
      // pings with a 1-byte payload: 1, 2, ...
      feed(client, range(1, pings).map((p) => `89 01 ${p.toString(16).padStart(2, "0")}`).join(" "))
      const frames = parseFrames(concat([written, drainSends(client).wire]))
      assert.strictEqual(frames[0]!.opcode, Opcode.Binary)
      assert.deepStrictEqual(frames.slice(1).map((f) => [f.opcode, f.payload[0]]), answered.map((p) => [Opcode.Pong, p]), `${pings} pings`)
    }
  })

  it("with pongsOnSendQueue, reading waits while 16 pongs wait, so that a burst is answered ping by ping; unless the driver coalesces", () => {
    const range = (from: number, to: number) => Array.from({ length: to - from + 1 }, (_, i) => from + i)
    const pings = range(1, 40).map((p) => `89 01 ${p.toString(16).padStart(2, "0")}`).join(" ")
    const pongsOf = (wire: Uint8Array) => parseFrames(wire).map((f) => [f.opcode, f.payload[0]])
    // nobody writes the pongs: the receive queue has no action once 16 wait, the 17th ping unread
    const stalled = makeClient({ pongsOnSendQueue: true })
    feed(stalled, pings)
    assert.isTrue(stalled.pongsBlockReading)
    assert.strictEqual(next(stalled, QueueCode.Receive).action, ActionCode.NoAction)
    assert.deepStrictEqual(pongsOf(drainSends(stalled).wire), range(1, 16).map((p) => [Opcode.Pong, p]))
    // written, the handle reads on, from the 17th ping
    assert.isFalse(stalled.pongsBlockReading)
    const rest = feed(stalled, new Uint8Array(0), { drivePongs: true })
    assert.deepStrictEqual(pongsOf(concat([...rest.sent, drainSends(stalled).wire])), range(17, 40).map((p) => [Opcode.Pong, p]))
    // a driver that writes them as they come: all 40 answered, in order
    const driven = makeClient({ pongsOnSendQueue: true })
    const result = feed(driven, pings, { drivePongs: true })
    assert.deepStrictEqual(pongsOf(concat([...result.sent, drainSends(driven).wire])), range(1, 40).map((p) => [Opcode.Pong, p]))
    // a driver whose writer waits: reading goes on, the latest ping's pong in the last place
    const coalescing = makeClient({ pongsOnSendQueue: true })
    coalescing.coalescePongs = true
    assert.strictEqual(feed(coalescing, pings).unread, 0)
    assert.deepStrictEqual(pongsOf(drainSends(coalescing).wire), [...range(1, 15), 40].map((p) => [Opcode.Pong, p]))
  })

  it("a pong being written is not overwritten by the answer to a newer ping", () => {
    const server = makeServer({ pongsOnSendQueue: true })
    feed(server, "89 85 37fa213d 7f9f4d5158")
    const first = expectAction(next(server, QueueCode.Send), ActionCode.SendToNetwork)
    const view = first.buffers[0]!
    assert.strictEqual(toHex(view), "8a0548656c6c6f")
    // a second ping is parsed while the first pong is still being written
    feed(server, "89 82 00000000 4142")
    assert.strictEqual(toHex(view), "8a0548656c6c6f", "the pong handed out is left alone")
    complete(server, first)
    assert.strictEqual(toHex(drainSends(server).wire), "8a024142")
  })

  it("a pong being written on the send queue is not overwritten in the default mode either", () => {
    const client = makeClient({ sendBufferSize: 16 })
    send(client, BinaryMessage, counting(20))
    complete(client, expectAction(next(client, QueueCode.Send), ActionCode.SendToNetwork))
    feed(client, "89 01 31")
    complete(client, expectAction(next(client, QueueCode.Send), ActionCode.SendToNetwork))
    // the send that is done says so first, then the pong that waited for its frame goes out
    complete(client, expectAction(next(client, QueueCode.Send), ActionCode.IndicateSendComplete))
    const pong1 = expectAction(next(client, QueueCode.Send), ActionCode.SendToNetwork)
    const bytes1 = toHex(stepBytes(pong1))
    // the receive queue parses another ping while the first pong is on its way
    const second = feed(client, "89 01 32")
    assert.strictEqual(toHex(stepBytes(pong1)), bytes1)
    complete(client, pong1)
    const pongs = [...parseFrames(hex(bytes1)), ...parseFrames(concat(second.sent)), ...parseFrames(drainSends(client, QueueCode.All).wire)]
    assert.deepStrictEqual(pongs.map((f) => decodeUtf8(f.payload)), ["1", "2"])
  })

  it("an application frame waits while an automatic pong is being written", () => {
    const client = makeClient({ sendBufferSize: 16 })
    client.receive(undefined, undefined)
    const read = expectAction(next(client, QueueCode.Receive), ActionCode.ReceiveFromNetwork)
    read.buffers[0]!.set(hex("89 01 31"))
    complete(client, read, 3)
    const pongStep = expectAction(next(client, QueueCode.Receive), ActionCode.SendToNetwork, QueueCode.Receive)
    // the send queue is driven while the pong is still being written
    send(client, BinaryMessage, counting(40))
    assert.strictEqual(next(client, QueueCode.Send).action, ActionCode.NoAction, "the frame waits for the pong")
    complete(client, pongStep)
    const frames = parseFrames(concat([stepBytes(pongStep), drainSends(client).wire]))
    assert.deepStrictEqual(frames.map((f) => f.opcode), [Opcode.Pong, Opcode.Binary])
  })

  it("an automatic pong waits while an application frame is being written", () => {
    const server = makeServer()
    send(server, BinaryMessage, counting(300), undefined, "data")
    const frame = expectAction(next(server, QueueCode.Send), ActionCode.SendToNetwork, QueueCode.Send)
    // the ping is parsed while header and payload are still being written
    const received = feed(server, "89 82 00000000 4142")
    assert.deepStrictEqual(received.sent, [], "the pong does not go out in the middle of the frame")
    complete(server, frame)
    const rest = drainSends(server)
    assert.deepStrictEqual(rest.completed, ["data"])
    const frames = parseFrames(concat([stepBytes(frame), rest.wire]))
    assert.deepStrictEqual(frames.map((f) => [f.opcode, toHex(f.payload.subarray(0, 2))]), [[Opcode.Binary, "0001"], [Opcode.Pong, "4142"]])
  })

  it("no automatic pong once our Close was sent", () => {
    const server = makeServer()
    sendAndDrain(server, Close, undefined, 1000)
    const result = feed(server, "89 85 37fa213d 7f9f4d5158")
    assert.deepStrictEqual(result.sent, [])
    assert.isFalse(server.pongWaiting)
    assert.strictEqual(toHex(drainSends(server, QueueCode.All).wire), "")
  })

  /** A server that received an empty Ping, and the SendToNetwork of its automatic pong. */
  const pongHandedOut = () => {
    const server = makeServer()
    server.receive(undefined, undefined)
    const read = expectAction(next(server, QueueCode.Receive), ActionCode.ReceiveFromNetwork)
    read.buffers[0]!.set(hex("89 80 00000000"))
    complete(server, read, 6)
    return { server, pong: expectAction(next(server, QueueCode.Receive), ActionCode.SendToNetwork) }
  }

  it("a partial pong write breaks the wire: later sends fail", () => {
    const { server, pong } = pongHandedOut()
    complete(server, pong, 1)
    expectSendRejected(server, Status.InvalidOperation, /partly written/, PingPong)
  })

  it("a pong write of 0 bytes leaves the wire usable", () => {
    const { server, pong } = pongHandedOut()
    complete(server, pong, 0)
    send(server, BinaryMessage, counting(3))
    assert.deepStrictEqual(parseFrames(drainSends(server).wire).map((f) => f.payload), [counting(3)])
  })

  it("a frame waiting behind an automatic pong that is then written only in part is cancelled, never written on the broken wire: a server's or a client's message, whole in one action when queued, and a ping", () => {
    for (const isClient of [false, true]) {
      for (const [type, payload] of [[BinaryMessage, counting(20)], [BinaryFragment, counting(0)], [PingPong, utf8("hi")]] as const) {
        const label = `${isClient ? "client" : "server"}, buffer type ${type}, ${payload.length} B`
        const engine = makeEngine(isClient)
        assert.strictEqual(engine.receive(undefined, "r"), Status.Ok)
        const read = expectAction(next(engine, QueueCode.Receive), ActionCode.ReceiveFromNetwork)
        const ping = isClient ? hex("8900") : hex("8980 00000000")
        read.buffers[0]!.set(ping)
        complete(engine, read, ping.length)
        const pong = expectAction(next(engine, QueueCode.Receive), ActionCode.SendToNetwork, QueueCode.Receive)
        send(engine, type, payload, undefined, "frame")
        assert.strictEqual(next(engine, QueueCode.Send).action, ActionCode.NoAction, `${label}: the frame waits for the pong`)
        complete(engine, pong, 1)
        const drained = drainSends(engine)
        assert.deepStrictEqual(drained.writes, [], `${label}: nothing written after the cut pong`)
        assert.deepStrictEqual(drained.completed, ["frame"], label)
        assert.isFalse(engine.sendWritten, `${label}: cancelled`)
        expectSendRejected(engine, Status.InvalidOperation, /partly written/, PingPong)
      }
    }
  })
})

describe("abort (spec 3.10)", () => {
  it("a pending send completes unwritten, a pending receive completes with Close 1006, new calls fail", () => {
    const server = makeServer()
    send(server, BinaryMessage, counting(10), undefined, "s")
    assert.strictEqual(server.receive(undefined, "r"), Status.Ok)
    server.abort()
    assert.strictEqual(server.state, HandleState.Aborted)
    const done = expectAction(next(server, QueueCode.Send), ActionCode.IndicateSendComplete)
    assert.strictEqual(done.context, "s")
    complete(server, done)
    const closedStep = expectAction(next(server, QueueCode.Receive), ActionCode.IndicateReceiveComplete)
    assert.strictEqual(closedStep.bufferType, Close)
    assert.strictEqual(closedStep.closeStatus, 1006)
    assert.strictEqual(closedStep.context, "r")
    complete(server, closedStep)
    assert.strictEqual(next(server, QueueCode.All).action, ActionCode.NoAction)
    expectSendRejected(server, Status.InvalidOperation, /aborted/, PingPong)
    expectRejected(server, server.receive(undefined, undefined), Status.InvalidOperation, /aborted/)
  })

  it("abort in the middle of a multi-action frame completes the send", () => {
    const client = makeClient({ sendBufferSize: 16 })
    send(client, BinaryMessage, counting(100))
    complete(client, expectAction(next(client, QueueCode.Send), ActionCode.SendToNetwork))
    client.abort()
    expectAction(next(client, QueueCode.Send), ActionCode.IndicateSendComplete)
  })

  it("a send cancelled by abort reports itself unwritten even after a send that went out whole (sendWritten), a frame whole in one action or not", () => {
    for (const [isClient, length] of [[false, 10], [false, 70000], [true, 10], [true, 5000]] as const) {
      const label = `${isClient ? "client" : "server"}, ${length} B`
      const engine = makeEngine(isClient)
      send(engine, BinaryMessage, counting(3), undefined, "first")
      assert.deepStrictEqual(drainSends(engine).completed, ["first"], label)
      assert.isTrue(engine.sendWritten, label)
      send(engine, BinaryMessage, counting(length), undefined, "second")
      engine.abort()
      const done = expectAction(next(engine, QueueCode.Send), ActionCode.IndicateSendComplete)
      assert.strictEqual(done.context, "second", label)
      assert.isFalse(engine.sendWritten, `${label}: cancelled, nothing written`)
      complete(engine, done)
      assert.strictEqual(next(engine, QueueCode.Send).action, ActionCode.NoAction, label)
    }
  })

  it("an outstanding read finishes, then the receive completes with Close 1006", () => {
    const client = makeClient()
    client.receive(undefined, undefined)
    const read = expectAction(next(client, QueueCode.Receive), ActionCode.ReceiveFromNetwork)
    client.abort()
    assert.strictEqual(next(client, QueueCode.Receive).action, ActionCode.NoAction)
    complete(client, read, 0)
    const step = expectAction(next(client, QueueCode.Receive), ActionCode.IndicateReceiveComplete)
    assert.strictEqual(step.closeStatus, 1006)
  })

  it("abort clears a failure: the queues drain", () => {
    const client = makeClient()
    const result = feed(client, "83")
    assert.strictEqual(result.failed, Status.InvalidFormat)
    client.abort()
    const step = expectAction(next(client, QueueCode.Receive), ActionCode.IndicateReceiveComplete)
    assert.strictEqual(step.closeStatus, 1006)
  })

  it("abort once the closing handshake is complete (Closed): the answering Close still queued completes unwritten", () => {
    const client = makeClient()
    const received = feed(client, "88 02 03e8")
    assert.deepStrictEqual(contentOf(received.deliveries), [{ kind: "close", closeStatus: 1000, data: "" }])
    send(client, Close, undefined, 1000, "close")
    assert.strictEqual(client.state, HandleState.Closed)
    client.abort()
    // "No Close frame is produced": the queued one is cancelled, as any queued send
    assert.strictEqual(client.state, HandleState.Aborted)
    const done = expectAction(next(client, QueueCode.Send), ActionCode.IndicateSendComplete)
    assert.strictEqual(done.context, "close")
    assert.isFalse(client.sendWritten)
    complete(client, done)
    assert.strictEqual(next(client, QueueCode.All).action, ActionCode.NoAction)
  })

  it("automatic pongs still waiting when the handle is aborted are dropped once the receive queue runs: none waits (pongWaiting), none is written", () => {
    const server = makeServer({ pongsOnSendQueue: true })
    assert.strictEqual(server.receive(undefined, "r"), Status.Ok)
    const read = expectAction(next(server, QueueCode.Receive), ActionCode.ReceiveFromNetwork)
    read.buffers[0]!.set(hex("89 85 37fa213d 7f9f4d5158"))
    complete(server, read, 11)
    // the ping is parsed and its pong waits for the send queue; the receive queue reads on
    const more = expectAction(next(server, QueueCode.Receive), ActionCode.ReceiveFromNetwork)
    assert.isTrue(server.pongWaiting)
    server.abort()
    complete(server, more, 0)
    const closed = expectAction(next(server, QueueCode.Receive), ActionCode.IndicateReceiveComplete)
    assert.strictEqual(closed.closeStatus, 1006)
    assert.isFalse(server.pongWaiting, "the pong of an aborted handle waits no more")
    complete(server, closed)
    assert.strictEqual(next(server, QueueCode.All).action, ActionCode.NoAction)
  })

  it("abort before the handshake is a no-op", () => {
    const engine = makeClient()
    engine.state = HandleState.Created
    engine.abort()
    assert.strictEqual(engine.state, HandleState.Created)
    expectSendRejected(engine, Status.InvalidOperation, /handshake is not complete/, PingPong)
    const step = next(engine, QueueCode.All)
    assert.strictEqual(step.status, Status.InvalidOperation)
  })
})

// ---------------------------------------------------------------------------------------------
// Client and server engines back to back (properties)
// ---------------------------------------------------------------------------------------------


type Content = { readonly text: string } | { readonly bytes: Uint8Array }

/** Text of up to 750 random code points (up to 3000 bytes), or up to 3000 random bytes. */
const content: Arbitrary.Arbitrary<Content> = Arbitrary.all([int(0, 1), int(0, 750), int(0, 3000), int(0, 0x7fffffff)]).pipe(
  Arbitrary.flatMap(([kind, codePoints, length, seed]) =>
    kind === 0
      ? Arbitrary.array(codePoint, { minLength: codePoints, maxLength: codePoints }).pipe(
        Arbitrary.map((cps): Content => ({ text: String.fromCodePoint(...cps) }))
      )
      : Arbitrary.Constant<Content>({ bytes: seededBytes(length, seed) })
  )
)

interface MessagePlan {
  readonly content: Content
  /** Fragment boundaries, as fractions of the payload (0 fragments: sent whole). */
  readonly cuts: ReadonlyArray<number>
  /** Ping payload lengths, one per frame position (-1: no ping there). */
  readonly pings: ReadonlyArray<number>
}

const messagePlan: Arbitrary.Arbitrary<MessagePlan> = Arbitrary.all({
  content,
  cuts: Arbitrary.array(int(0, 1000), { maxLength: 4 }),
  pings: Arbitrary.array(int(-3, 125), { maxLength: 5 })
})

const scenario = Arbitrary.all({
  messages: Arbitrary.array(messagePlan, { minLength: 1, maxLength: 5 }),
  chunks: Arbitrary.array(int(1, 700), { minLength: 1, maxLength: 8 }),
  receiveBufferSize: int(256, 1024),
  sendBufferSize: int(16, 1024),
  pongsOnSendQueue: Arbitrary.schema(Schema.Boolean),
  /** An application receive buffer of this size (0: none; binary payload may then skip the receive buffer). */
  appBuffer: int(0, 600),
  /** Reads copied with the handle's unmasking copy where it offers one, in pieces of these sizes (see `feed`). */
  copies: Arbitrary.array(int(0, 700), { maxLength: 4 })
})

type Scenario = typeof scenario extends Arbitrary.Arbitrary<infer A> ? A : never

/** The same with a receive buffer larger than a handle starts with, and reads that may fill it (it then grows). */
const growingScenario: Arbitrary.Arbitrary<Scenario> = Arbitrary.all({
  plan: scenario,
  receiveBufferSize: int(4097, 65536),
  chunks: Arbitrary.array(int(1, 20000), { minLength: 1, maxLength: 8 })
}).pipe(Arbitrary.map(({ chunks, plan, receiveBufferSize }) => ({ ...plan, chunks, receiveBufferSize })))

const payloadOf = (c: Content): Uint8Array => "text" in c ? utf8(c.text) : c.bytes

/** Sends every planned message from `sender`, returning the wire and the ping payloads sent. */
const sendPlan = (sender: Engine, plan: Scenario): { wire: Uint8Array; pings: Array<string> } => {
  const parts: Array<Uint8Array> = []
  const pings: Array<string> = []
  for (const message of plan.messages) {
    const payload = payloadOf(message.content)
    const text = "text" in message.content
    const bounds = [...new Set(message.cuts.map((c) => Math.floor((c / 1000) * payload.length)))].sort((a, b) => a - b)
    const edges = [0, ...bounds, payload.length]
    for (let i = 0; i + 1 < edges.length; i++) {
      const ping = message.pings[i] ?? -1
      if (ping >= 0) {
        const data = seededBytes(ping, i + 7)
        pings.push(toHex(data))
        send(sender, PingPong, data)
        parts.push(drainSends(sender).wire)
      }
      const last = i + 2 === edges.length
      const type = text ? (last ? Utf8Message : Utf8Fragment) : (last ? BinaryMessage : BinaryFragment)
      send(sender, type, payload.subarray(edges[i]!, edges[i + 1]!))
      parts.push(drainSends(sender).wire)
    }
  }
  return { wire: concat(parts), pings }
}

const backToBack = (clientSends: boolean, plan: Scenario) => {
  const sender = makeEngine(clientSends, { sendBufferSize: plan.sendBufferSize })
  const receiver = makeEngine(!clientSends, { receiveBufferSize: plan.receiveBufferSize, pongsOnSendQueue: plan.pongsOnSendQueue })
  const { wire, pings } = sendPlan(sender, plan)
  // masks never leak: every frame of a client has MASK=1, of a server MASK=0
  for (const frame of parseFrames(wire)) assert.strictEqual(frame.masked, clientSends)
  const result = feed(receiver, wire, {
    chunks: plan.chunks,
    drivePongs: plan.pongsOnSendQueue,
    // above 550, a buffer large enough for the engine to read headers on their own
    buffer: plan.appBuffer === 0 ? undefined : new Uint8Array(plan.appBuffer > 550 ? 9000 : Math.max(4, plan.appBuffer)),
    copies: plan.copies.length === 0 ? undefined : plan.copies
  })
  assert.strictEqual(result.failed, undefined, receiver.failure?.message)
  // (a client's frames are not masked: nothing to unmask)
  if (!clientSends) assert.strictEqual(result.unmaskingReads, 0)
  for (const d of result.deliveries) {
    assert.isAtMost(d.data.length, plan.receiveBufferSize, "a chunk fits the receive buffer")
    if (d.bufferType === Utf8Fragment || d.bufferType === Utf8Message) assert.isTrue(isUtf8(d.data), "a text chunk is valid UTF-8 on its own")
  }
  const received = messagesOf(result.deliveries)
  assert.strictEqual(received.length, plan.messages.length)
  plan.messages.forEach((message, i) => {
    const got = received[i]!
    if ("text" in message.content) {
      assert.strictEqual(got.kind, "text")
      assert.strictEqual(decodeUtf8(got.data), message.content.text)
    } else {
      assert.strictEqual(got.kind, "binary")
      assert.deepStrictEqual(got.data, message.content.bytes)
    }
  })
  // every ping answered, in order, by the receiver, with its own masking rule (on either queue:
  // fewer than 16 wait at once)
  const pongWire = concat([...result.sent, drainSends(receiver, QueueCode.All).wire])
  assert.deepStrictEqual(parseFrames(pongWire).map((f) => toHex(f.payload)), pings)
  for (const f of parseFrames(pongWire)) {
    assert.strictEqual(f.opcode, Opcode.Pong)
    assert.strictEqual(f.masked, !clientSends)
  }
}

describe("client and server engines back to back", () => {
  it.prop("client to server: messages survive fragmenting, pings and any chunking", [scenario], ([plan]) => {
    backToBack(true, plan)
  }, { timeout: 20000, arbitrary: { runs: 40 } })

  it.prop("server to client: messages survive fragmenting, pings and any chunking", [scenario], ([plan]) => {
    backToBack(false, plan)
  }, { timeout: 20000, arbitrary: { runs: 40 } })

  it.prop("both ways with a receive buffer that grows from 4 KiB as reads fill it", [growingScenario], ([plan]) => {
    backToBack(true, plan)
    backToBack(false, plan)
  }, { timeout: 20000, arbitrary: { runs: 40 } })
})

describe("masked frames in buffers of their own (allocateFrame)", () => {
  it.prop("the wire is the same as without it (client and server), one new buffer per action", [scenario], ([plan]) => {
    for (const isClient of [true, false]) {
      const plain = makeEngine(isClient, { sendBufferSize: plan.sendBufferSize })
      const owning = makeEngine(isClient, { sendBufferSize: plan.sendBufferSize })
      const allocated: Array<Uint8Array> = []
      owning.allocateFrame = (size) => {
        const buffer = new Uint8Array(size)
        allocated.push(buffer)
        return buffer
      }
      assert.deepStrictEqual(sendPlan(owning, plan).wire, sendPlan(plain, plan).wire)
      assert.strictEqual(new Set(allocated).size, allocated.length, "no buffer is handed out twice")
    }
  }, { timeout: 20000, arbitrary: { runs: 40 } })

  it("masked frames of 4 KiB or more come out owned (header and masked chunk together); smaller and control frames do not", () => {
    const engine = makeClient({ sendBufferSize: 4096 })
    engine.allocateFrame = (size) => new Uint8Array(size)
    const record = new ActionRecord()
    const actions: Array<{ owned: boolean; bytes: Uint8Array; count: number }> = []
    const drain = () => {
      for (;;) {
        assert.strictEqual(engine.getAction(QueueCode.Send, record), Status.Ok)
        if (record.action === ActionCode.NoAction) return
        const n = record.action === ActionCode.SendToNetwork
          ? record.buffer0.length + (record.bufferCount === 2 ? record.buffer1.length : 0)
          : 0
        if (record.action === ActionCode.SendToNetwork) {
          const bytes = record.bufferCount === 2 ? concat([record.buffer0, record.buffer1]) : record.buffer0
          actions.push({ owned: record.owned, bytes, count: record.bufferCount })
        }
        assert.strictEqual(engine.completeAction(record.id, n), Status.Ok)
      }
    }
    const payload = counting(5000)
    for (const [type, data] of [[BinaryMessage, payload], [BinaryMessage, counting(20)], [PingPong, utf8("hi")]] as const) {
      assert.strictEqual(engine.send(type, data, undefined, undefined), Status.Ok)
      drain()
    }
    // 5000 bytes in chunks of at most 4096: header (2 + 2 + 4 key) + 4096, then 904; 20 bytes (a
    // short frame, whole in the send buffer: one buffer); the ping
    assert.deepStrictEqual(actions.map((a) => [a.owned, a.count, a.bytes.length]), [
      [true, 1, 8 + 4096],
      [true, 1, 904],
      [false, 1, 6 + 20],
      [false, 1, 6 + 2]
    ])
    const frames = parseFrames(concat(actions.map((a) => a.bytes)))
    assert.deepStrictEqual(frames.map((f) => [f.masked, f.payload.length]), [[true, 5000], [true, 20], [true, 2]])
    assert.deepStrictEqual(frames[0]!.payload, payload)
    // the payload is untouched
    assert.deepStrictEqual(payload, counting(5000))
  })

  it("an owned masked frame in chunks that are not a multiple of 4 bytes: each chunk is masked from its key position", () => {
    // (the property above never reaches 4 KiB, where frames come out owned)
    const plain = makeClient({ sendBufferSize: 1001 })
    const owning = makeClient({ sendBufferSize: 1001 })
    owning.allocateFrame = (size) => new Uint8Array(size)
    const payload = counting(5000)
    const wire = sendAndDrain(owning, BinaryMessage, payload)
    const frames = parseFrames(wire)
    assert.deepStrictEqual(frames.map((f) => [f.masked, f.payload.length]), [[true, 5000]])
    assert.deepStrictEqual(frames[0]!.payload, payload)
    assert.deepStrictEqual(wire, sendAndDrain(plain, BinaryMessage, payload))
  })

  it("an unmasked payload of 4 KiB or more goes out as it is, after a header of its own", () => {
    const engine = makeServer({ sendBufferSize: 16 })
    const headers: Array<Uint8Array> = []
    engine.allocateFrame = (size) => {
      const buffer = new Uint8Array(size)
      headers.push(buffer)
      return buffer
    }
    const record = new ActionRecord()
    for (const [length, owned] of [[4095, false], [4096, true], [70000, true]] as const) {
      const payload = counting(length)
      assert.strictEqual(engine.send(BinaryMessage, payload, undefined, undefined), Status.Ok)
      assert.strictEqual(engine.getAction(QueueCode.Send, record), Status.Ok)
      assert.strictEqual(record.action, ActionCode.SendToNetwork)
      assert.strictEqual(record.owned, owned, `${length} bytes`)
      assert.strictEqual(record.bufferCount, 2)
      assert.strictEqual(record.buffer1, payload, "the caller's memory, not a copy")
      if (owned) assert.strictEqual(record.buffer0, headers.at(-1), "a header buffer of its own")
      const frame = parseFrames(concat([record.buffer0, record.buffer1]))
      assert.deepStrictEqual([frame.length, frame[0]!.masked, frame[0]!.payload.length], [1, false, length])
      assert.strictEqual(engine.completeAction(record.id, record.buffer0.length + record.buffer1.length), Status.Ok)
      assert.strictEqual(engine.getAction(QueueCode.Send, record), Status.Ok)
      assert.strictEqual(record.action, ActionCode.IndicateSendComplete)
      assert.strictEqual(engine.completeAction(record.id, 0), Status.Ok)
    }
    assert.strictEqual(headers.length, 2)
  })
})

describe("a payload whose memory changes size after send (a length-tracking view of a resizable buffer)", () => {
  /** `bytes` in a length-tracking view of a resizable buffer that may grow to `max`. */
  const resizable = (bytes: Uint8Array, max = 1 << 16) => {
    const buffer = new ArrayBuffer(bytes.length, { maxByteLength: max })
    const view = new Uint8Array(buffer)
    view.set(bytes)
    return { buffer, view }
  }
  const detach = (bytes: Uint8Array) => void structuredClone(bytes.buffer, { transfer: [bytes.buffer as ArrayBuffer] })

  it("a receive's buffer detached while its receive is pending is reported (detachedBuffer); once the receive completed, no longer", () => {
    const engine = makeClient()
    const pending = new Uint8Array(16)
    assert.strictEqual(engine.receive(pending, "r"), Status.Ok)
    detach(pending)
    assert.strictEqual(engine.detachedBuffer, "receive")
    const other = makeClient()
    const app = new Uint8Array(16)
    assert.strictEqual(other.receive(app, "r"), Status.Ok)
    const read = expectAction(next(other, QueueCode.Receive), ActionCode.ReceiveFromNetwork)
    read.buffers[0]!.set(hex("82 02 0102"))
    complete(other, read, 4)
    const delivered = expectAction(next(other, QueueCode.Receive), ActionCode.IndicateReceiveComplete)
    assert.strictEqual(toHex(stepBytes(delivered)), "0102")
    complete(other, delivered)
    // the caller has its buffer back: what it does with it is no concern of the handle's
    detach(app)
    assert.strictEqual(other.detachedBuffer, undefined)
  })

  it("grown before its frame goes out: exactly the bytes its header declares, from the caller's memory or masked, owned or not", () => {
    for (
      const [name, engine, length] of [
        ["server", makeServer(), 20],
        ["server, allocateFrame", Object.assign(makeServer(), { allocateFrame: (n: number) => new Uint8Array(n) }), 5000],
        ["client, built", makeClient(), 20],
        ["client, chunks", makeClient({ sendBufferSize: 256 }), 1000],
        ["client, allocateFrame", Object.assign(makeClient(), { allocateFrame: (n: number) => new Uint8Array(n) }), 5000]
      ] as const
    ) {
      const { buffer, view } = resizable(counting(length), 3 * length)
      send(engine, BinaryMessage, view)
      buffer.resize(3 * length) // the caller breaks the contract: the view is longer now
      view.fill(0xee, length)
      assert.strictEqual(engine.detachedBuffer, undefined, `${name}: every declared byte is still there`)
      const { wire, completed } = drainSends(engine)
      assert.strictEqual(completed.length, 1, name)
      assert.isTrue(engine.sendWritten, name)
      const frames = parseFrames(wire)
      assert.deepStrictEqual(frames.map((f) => toHex(f.payload)), [toHex(counting(length))], name)
      // and the wire is usable: the next message reads back after it
      const after = parseFrames(sendAndDrain(engine, BinaryMessage, counting(3)))
      assert.deepStrictEqual(after.map((f) => f.payload.length), [3], name)
    }
  })

  it("shrunk or detached before anything of its frame went out: reported (detachedBuffer), then cancelled as a write of 0 bytes would", () => {
    for (const how of ["shrunk", "detached"] as const) {
      for (const [name, engine] of [["server", makeServer()], ["client", makeClient({ sendBufferSize: 256 })]] as const) {
        const { buffer, view } = resizable(counting(1000))
        // a fragment: cancelled, it leaves no message open
        send(engine, BinaryFragment, view)
        if (how === "shrunk") buffer.resize(10)
        else detach(view)
        assert.strictEqual(engine.detachedBuffer, "send", `${how} ${name}`)
        const { wire, completed } = drainSends(engine)
        assert.strictEqual(wire.length, 0, `${how} ${name}: nothing on the wire`)
        assert.strictEqual(completed.length, 1, `${how} ${name}: the send completes`)
        assert.isFalse(engine.sendWritten, `${how} ${name}: cancelled`)
        assert.strictEqual(engine.detachedBuffer, undefined)
        // no message open: a whole text message follows, not a continuation
        const frames = parseFrames(sendAndDrain(engine, Utf8Message, utf8("next")))
        assert.deepStrictEqual(frames.map((f) => [f.opcode, f.fin, decodeUtf8(f.payload)]), [[Opcode.Text, true, "next"]])
      }
    }
  })

  it("shrunk or detached while a client's frame is out in pieces: the send is cut, no garbage follows, later sends are refused", () => {
    for (const how of ["shrunk", "detached"] as const) {
      for (const allocate of [false, true]) {
        const engine = makeClient({ sendBufferSize: 256 })
        if (allocate) engine.allocateFrame = (n) => new Uint8Array(n)
        const { buffer, view } = resizable(counting(5000))
        send(engine, BinaryMessage, view)
        const first = next(engine, QueueCode.Send)
        assert.strictEqual(first.action, ActionCode.SendToNetwork)
        const written = concat(first.buffers)
        complete(engine, first)
        if (how === "shrunk") buffer.resize(100)
        else detach(view)
        const rest = drainSends(engine)
        assert.strictEqual(rest.wire.length, 0, `${how}${allocate ? ", owned" : ""}: no more bytes of the frame`)
        assert.strictEqual(rest.completed.length, 1)
        assert.isFalse(engine.sendWritten)
        assert.isBelow(written.length, 5000)
        expectSendRejected(engine, Status.InvalidOperation, /only partly written/, BinaryMessage, counting(3))
      }
    }
  })

  const record = new ActionRecord()
  /** The handed-out buffers' total length, looked at again (they may be the caller's live views). */
  const lengthOf = (buffers: ReadonlyArray<Uint8Array>) => buffers.reduce((n, b) => n + b.length, 0)

  it("the caller's memory handed out in an owned buffer (unmasked, with allocateFrame) is a view of exactly the declared length: growing it while written, or once the send is done (the transport may keep the buffer), adds nothing to the frame", () => {
    // (a buffer that is not owned is done with when its send completes: while it is written, the
    // payload is the caller's to leave untouched, as with ws)
    for (
      const [name, engine, length] of [
        ["server, allocateFrame", Object.assign(makeServer(), { allocateFrame: (n: number) => new Uint8Array(n) }), 5000],
        [
          "client with a zero key, allocateFrame",
          Object.assign(makeClient({ randomFill: (b: Uint8Array) => b.fill(0) }), { allocateFrame: (n: number) => new Uint8Array(n) }),
          4096
        ]
      ] as const
    ) {
      const { buffer, view } = resizable(counting(length), 3 * length)
      send(engine, BinaryMessage, view)
      const step = expectAction(next(engine, QueueCode.Send), ActionCode.SendToNetwork)
      const handedOut = lengthOf(step.buffers)
      const frame = concat(step.buffers)
      assert.deepStrictEqual(parseFrames(frame).map((f) => f.payload.length), [length], name)
      // the driver's write waits for room meanwhile (a slow peer): the caller grows its buffer
      buffer.resize(2 * length)
      assert.strictEqual(lengthOf(step.buffers), handedOut, `${name}: the buffers handed out still hold one frame, no byte past it`)
      buffer.resize(length)
      complete(engine, step)
      assert.strictEqual(drainSends(engine).completed.length, 1)
      assert.isTrue(engine.sendWritten, name)
      // done: the caller may use its memory again; a transport that kept an owned buffer still
      // holds exactly the frame
      buffer.resize(3 * length)
      assert.strictEqual(lengthOf(step.buffers), handedOut, `${name}: after IndicateSendComplete`)
    }
  })

  it("abortHandle with a lost payload: the send is cancelled, and the payload is no longer reported (the queues drain)", () => {
    for (const how of ["shrunk", "detached"] as const) {
      for (const [name, engine] of [["server", makeServer()], ["client", makeClient({ sendBufferSize: 256 })]] as const) {
        const { buffer, view } = resizable(counting(1000))
        send(engine, BinaryMessage, view, undefined, "ctx")
        if (how === "shrunk") buffer.resize(10)
        else detach(view)
        assert.strictEqual(engine.detachedBuffer, "send", `${how} ${name}`)
        engine.abort()
        // its bytes are needed no more: nothing of the frame goes out after an abort
        assert.strictEqual(engine.detachedBuffer, undefined, `${how} ${name}: the aborted handle's queues drain`)
        const { wire, completed } = drainSends(engine)
        assert.strictEqual(wire.length, 0)
        assert.deepStrictEqual(completed, ["ctx"])
        assert.isFalse(engine.sendWritten)
      }
    }
  })

  it("a lost fragment that continues an open message, or ends it, is cancelled and leaves that message open as it was", () => {
    for (const how of ["shrunk", "detached"] as const) {
      for (const [name, make] of [["server", () => makeServer()], ["client", () => makeClient({ sendBufferSize: 256 })]] as const) {
        for (const lostType of [BinaryFragment, BinaryMessage]) {
          const engine = make()
          const first = parseFrames(sendAndDrain(engine, BinaryFragment, counting(200)))
          assert.deepStrictEqual(first.map((f) => [f.opcode, f.fin]), [[Opcode.Binary, false]])
          const { buffer, view } = resizable(counting(1000))
          send(engine, lostType, view)
          if (how === "shrunk") buffer.resize(0)
          else detach(view)
          const lost = drainSends(engine)
          assert.strictEqual(lost.wire.length, 0, `${how} ${name}`)
          assert.isFalse(engine.sendWritten)
          // still a binary message open: text cannot start, binary continues it
          expectSendRejected(engine, Status.InvalidOperation, /binary message is open/, Utf8Message, utf8("x"))
          const rest = parseFrames(sendAndDrain(engine, BinaryMessage, counting(300)))
          assert.deepStrictEqual(rest.map((f) => [f.opcode, f.fin, f.payload.length]), [[Opcode.Continuation, true, 300]], `${how} ${name}`)
        }
      }
    }
  })

  it("a frame waiting behind an automatic pong being written: lost payload or abort cancel it at once (IndicateSendComplete, nothing written; a lost one opens no message), a built one still waits and goes out whole", () => {
    /** Hands out the automatic pong of an empty ping on the receive queue. */
    const pongOut = (engine: Engine, isClient: boolean) => {
      assert.strictEqual(engine.receive(undefined, "r"), Status.Ok)
      const read = expectAction(next(engine, QueueCode.Receive), ActionCode.ReceiveFromNetwork)
      const ping = isClient ? hex("8900") : hex("8980 00000000")
      read.buffers[0]!.set(ping)
      complete(engine, read, ping.length)
      return expectAction(next(engine, QueueCode.Receive), ActionCode.SendToNetwork, QueueCode.Receive)
    }
    for (const how of ["shrunk", "detached", "aborted"] as const) {
      for (const [name, isClient, engine] of [
        ["server", false, makeServer()],
        ["server, allocateFrame", false, Object.assign(makeServer(), { allocateFrame: (n: number) => new Uint8Array(n) })],
        ["client, in chunks", true, makeClient({ sendBufferSize: 256 })]
      ] as const) {
        const label = `${how}, ${name}`
        const { buffer, view } = resizable(counting(5000))
        send(engine, BinaryFragment, view, undefined, "frame")
        const pong = pongOut(engine, isClient)
        assert.strictEqual(next(engine, QueueCode.Send).action, ActionCode.NoAction, `${label}: the frame waits for the pong`)
        if (how === "shrunk") buffer.resize(10)
        else if (how === "detached") detach(view)
        else engine.abort()
        const done = expectAction(next(engine, QueueCode.Send), ActionCode.IndicateSendComplete, QueueCode.Send)
        assert.strictEqual(done.context, "frame", label)
        complete(engine, done)
        assert.isFalse(engine.sendWritten, `${label}: cancelled`)
        if (how !== "aborted") assert.isFalse(engine.messageOpen, `${label}: the fragment opened no message`)
        assert.strictEqual(next(engine, QueueCode.Send).action, ActionCode.NoAction, label)
        assert.strictEqual(engine.completeAction(pong.id, stepBytes(pong).length), Status.Ok, label)
        if (how === "aborted") continue
        const frames = parseFrames(concat([stepBytes(pong), sendAndDrain(engine, Utf8Message, utf8("next"))]))
        assert.deepStrictEqual(frames.map((f) => [f.opcode, f.fin, f.payload.length]), [[Opcode.Pong, true, 0], [Opcode.Text, true, 4]], label)
      }
    }
    // a frame built when queued has its payload already: it waits for the pong, then goes out whole
    const client = makeClient()
    const { view } = resizable(counting(10))
    send(client, BinaryMessage, view, undefined, "built")
    const pong = pongOut(client, true)
    detach(view)
    assert.strictEqual(next(client, QueueCode.Send).action, ActionCode.NoAction, "the built frame waits for the pong")
    complete(client, pong)
    const { wire, completed } = drainSends(client)
    assert.deepStrictEqual(completed, ["built"])
    assert.isTrue(client.sendWritten)
    assert.deepStrictEqual(parseFrames(wire).map((f) => toHex(f.payload)), [toHex(counting(10))])
  })

  it("a pong waiting behind a frame cut by a lost payload is dropped (no frame may follow an incomplete one); behind one lost before anything went out, it goes out", () => {
    const ping = hex("8901 70") // a server's ping "p"
    for (const cutMidFrame of [true, false]) {
      const engine = makeClient({ sendBufferSize: 256, pongsOnSendQueue: true })
      const { buffer, view } = resizable(counting(5000))
      send(engine, BinaryMessage, view)
      if (cutMidFrame) complete(engine, expectAction(next(engine, QueueCode.Send), ActionCode.SendToNetwork))
      const fed = feed(engine, ping)
      assert.deepStrictEqual(fed.sent, [])
      buffer.resize(100)
      const { wire, completed } = drainSends(engine)
      assert.strictEqual(completed.length, 1)
      assert.isFalse(engine.sendWritten)
      const frames = parseFrames(wire)
      if (cutMidFrame) {
        assert.strictEqual(wire.length, 0, "nothing after the incomplete frame, not even the pong")
        assert.isFalse(engine.pongWaiting, "the pong was dropped, not left waiting for good")
      } else {
        assert.deepStrictEqual(frames.map((f) => [f.opcode, decodeUtf8(f.payload)]), [[Opcode.Pong, "p"]])
        assert.isFalse(engine.pongWaiting)
      }
    }
  })

  it("a view with an offset into a resizable buffer: out of bounds once it shrank (lost), back in bounds once it grew again (nothing lost)", () => {
    for (const [name, make] of [["server", () => makeServer()], ["client", () => makeClient({ sendBufferSize: 256 })]] as const) {
      for (const tracking of [false, true]) {
        const engine = make()
        const buffer = new ArrayBuffer(1100, { maxByteLength: 4000 })
        new Uint8Array(buffer).set(counting(1100))
        const view = tracking ? new Uint8Array(buffer, 100) : new Uint8Array(buffer, 100, 1000)
        send(engine, BinaryMessage, view)
        buffer.resize(50) // the view is out of its buffer's bounds: length 0
        assert.strictEqual(view.length, 0)
        assert.strictEqual(engine.detachedBuffer, "send", `${name}${tracking ? ", tracking" : ""}`)
        buffer.resize(tracking ? 3000 : 1100) // back (the bytes past 50 are zeros now)
        assert.strictEqual(engine.detachedBuffer, undefined)
        const { wire } = drainSends(engine)
        assert.isTrue(engine.sendWritten)
        const expected = new Uint8Array(1000) // the declared length, of what the view holds now
        assert.deepStrictEqual(parseFrames(wire).map((f) => toHex(f.payload)), [toHex(expected)], name)
        // shrunk again and left so: cancelled, and the wire is usable
        send(engine, BinaryMessage, view)
        buffer.resize(60)
        assert.strictEqual(drainSends(engine).wire.length, 0)
        assert.isFalse(engine.sendWritten)
        assert.deepStrictEqual(parseFrames(sendAndDrain(engine, Utf8Message, utf8("ok"))).map((f) => decodeUtf8(f.payload)), ["ok"])
      }
    }
  })

  it("empty payloads: a detached or emptied empty view lost nothing, its empty frame goes out", () => {
    for (const [name, engine] of [["server", makeServer()], ["client", makeClient({ sendBufferSize: 256 })]] as const) {
      const { view } = resizable(new Uint8Array(0), 10)
      send(engine, BinaryMessage, view)
      detach(view)
      assert.strictEqual(engine.detachedBuffer, undefined, name)
      const frames = parseFrames(drainSends(engine).wire)
      assert.isTrue(engine.sendWritten, name)
      assert.deepStrictEqual(frames.map((f) => [f.opcode, f.payload.length]), [[Opcode.Binary, 0]])
    }
  })

  it("a send cancelled by a write of 0 bytes, then a lost one, then control frames and a shorter message: each goes out with the length its own header declares", () => {
    for (const [name, make] of [["server", () => makeServer()], ["client", () => makeClient({ sendBufferSize: 256 })]] as const) {
      const engine = make()
      send(engine, BinaryMessage, counting(2000))
      const first = expectAction(next(engine, QueueCode.Send), ActionCode.SendToNetwork)
      complete(engine, first, 0) // cancelled, nothing written
      assert.strictEqual(drainSends(engine).completed.length, 1)
      assert.isFalse(engine.sendWritten)
      const { buffer, view } = resizable(counting(3000))
      send(engine, BinaryMessage, view)
      buffer.resize(2999)
      assert.strictEqual(drainSends(engine).wire.length, 0, name)
      assert.isFalse(engine.sendWritten)
      // a ping: nothing of the lost payload is looked at any more
      const { buffer: pingBuffer, view: pingView } = resizable(utf8("hi"))
      send(engine, PingPong, pingView)
      pingBuffer.resize(0)
      assert.strictEqual(engine.detachedBuffer, undefined, "a control frame is built when queued")
      const pingFrames = parseFrames(drainSends(engine).wire)
      assert.deepStrictEqual(pingFrames.map((f) => [f.opcode, decodeUtf8(f.payload)]), [[Opcode.Ping, "hi"]])
      const frames = parseFrames(sendAndDrain(engine, BinaryMessage, counting(700)))
      assert.deepStrictEqual(frames.map((f) => toHex(f.payload)), [toHex(counting(700))], name)
    }
  })

  it("a send whose payload was lost before it went out leaves nothing behind: the next message, of any length, goes out whole", () => {
    for (const [name, make] of [["server", () => makeServer()], ["client", () => makeClient({ sendBufferSize: 256 })]] as const) {
      for (const allocate of [false, true]) {
        for (const size of [0, 100, 5000, 70000]) {
          const engine = make()
          if (allocate) engine.allocateFrame = (n) => new Uint8Array(n)
          const { buffer, view } = resizable(counting(300))
          send(engine, BinaryMessage, view)
          buffer.resize(299)
          assert.strictEqual(drainSends(engine).wire.length, 0)
          const frames = parseFrames(sendAndDrain(engine, BinaryMessage, counting(size)))
          assert.deepStrictEqual(frames.map((f) => toHex(f.payload)), [toHex(counting(size))], `${name} ${allocate} ${size}`)
        }
      }
    }
  })

  it("with allocateFrame, a payload that grew past the owned size after send goes out as its declared length decides (not in a buffer of its own)", () => {
    for (const client of [false, true]) {
      let allocations = 0
      const engine = client ? makeClient({ sendBufferSize: 256 }) : makeServer()
      engine.allocateFrame = (n) => {
        allocations++
        return new Uint8Array(n)
      }
      const { buffer, view } = resizable(counting(300), 10000)
      send(engine, BinaryMessage, view)
      buffer.resize(10000)
      let owned = false
      let wire: Uint8Array = new Uint8Array(0)
      for (;;) {
        const status = engine.getAction(QueueCode.Send, record)
        assert.strictEqual(status, Status.Ok)
        if (record.action === ActionCode.NoAction) break
        const buffers = record.bufferCount === 0 ? [] : record.bufferCount === 1 ? [record.buffer0] : [record.buffer0, record.buffer1]
        owned ||= record.owned
        wire = concat([wire, ...buffers])
        engine.completeAction(record.id, lengthOf(buffers))
      }
      assert.isFalse(owned, client ? "client" : "server")
      assert.strictEqual(allocations, 0)
      assert.deepStrictEqual(parseFrames(wire).map((f) => toHex(f.payload)), [toHex(counting(300))])
    }
  })
})

describe("allocateFrame set or cleared between send and getAction", () => {
  const record = new ActionRecord()
  const buffersOf = (r: ActionRecord) => r.bufferCount === 2 ? [r.buffer0, r.buffer1] : r.bufferCount === 1 ? [r.buffer0] : []

  it("a server's data frame of 4 KiB to 64 KiB queued without allocateFrame, set before the frame is handed out: owned, its header in a new buffer, the payload a view of exactly its declared length", () => {
    for (const length of [4096, 5000, 65535]) {
      for (const resizable of [false, true]) {
        const label = `${length} B${resizable ? ", length-tracking view" : ""}`
        const engine = makeServer()
        const buffer = resizable ? new ArrayBuffer(length, { maxByteLength: 2 * length }) : new ArrayBuffer(length)
        const view = new Uint8Array(buffer)
        view.set(counting(length))
        send(engine, BinaryMessage, view, undefined, "m")
        const allocated: Array<Uint8Array> = []
        engine.allocateFrame = (n) => {
          const b = new Uint8Array(n)
          allocated.push(b)
          return b
        }
        assert.strictEqual(engine.getAction(QueueCode.Send, record), Status.Ok, label)
        assert.strictEqual(record.action, ActionCode.SendToNetwork, label)
        assert.isTrue(record.owned, `${label}: owned, as allocateFrame now says`)
        assert.strictEqual(record.bufferCount, 2, label)
        assert.deepStrictEqual(allocated, [record.buffer0], `${label}: the header in the one buffer allocated`)
        assert.strictEqual(toHex(record.buffer0), length <= 125 ? "" : `827e${length.toString(16).padStart(4, "0")}`, label)
        if (resizable) {
          assert.notStrictEqual(record.buffer1, view, `${label}: not the caller's length-tracking view`)
          ;(buffer as ArrayBuffer).resize(2 * length)
        }
        assert.strictEqual(record.buffer1.length, length, label)
        assert.strictEqual(engine.completeAction(record.id, 4 + length), Status.Ok, label)
        assert.deepStrictEqual(drainSends(engine).completed, ["m"], label)
        assert.isTrue(engine.sendWritten, label)
      }
    }
  })

  it("a server's data frame of 4 KiB to 64 KiB queued with allocateFrame, cleared before the frame is handed out: the header in the handle's memory and the caller's view, not owned, nothing allocated", () => {
    const engine = makeServer()
    let allocations = 0
    engine.allocateFrame = (n) => {
      allocations++
      return new Uint8Array(n)
    }
    const payload = counting(5000)
    send(engine, BinaryMessage, payload)
    engine.allocateFrame = undefined
    assert.strictEqual(engine.getAction(QueueCode.Send, record), Status.Ok)
    assert.strictEqual(record.action, ActionCode.SendToNetwork)
    assert.isFalse(record.owned)
    const buffers = buffersOf(record)
    assert.strictEqual(buffers.length, 2)
    assert.strictEqual(buffers[1], payload)
    assert.strictEqual(toHex(buffers[0]!), "827e1388")
    assert.strictEqual(allocations, 0)
    assert.strictEqual(engine.completeAction(record.id, 5004), Status.Ok)
    expectAction(next(engine, QueueCode.Send), ActionCode.IndicateSendComplete)
  })

  it("a client's frame built whole when queued goes out as built, whatever allocateFrame becomes before it is handed out: one buffer, masked with the key drawn at send, nothing allocated", () => {
    for (const length of [0, 1, 2, 3, 5, 125, 126, 511]) {
      for (const setBefore of [false, true]) {
        const label = `${length} B, allocateFrame ${setBefore ? "cleared" : "set"} after send`
        const engine = makeClient()
        let allocations = 0
        const allocate = (n: number) => {
          allocations++
          return new Uint8Array(n)
        }
        if (setBefore) engine.allocateFrame = allocate
        const payload = seededBytes(length, length + 1)
        send(engine, BinaryMessage, payload, undefined, "m")
        engine.allocateFrame = setBefore ? undefined : allocate
        assert.strictEqual(engine.getAction(QueueCode.Send, record), Status.Ok, label)
        assert.strictEqual(record.action, ActionCode.SendToNetwork, label)
        assert.isFalse(record.owned, label)
        assert.strictEqual(record.bufferCount, 1, `${label}: the whole frame in one buffer`)
        const frames = parseFrames(record.buffer0.slice())
        assert.deepStrictEqual(
          frames.map((f) => [f.opcode, f.fin, f.masked, toHex(f.maskKey), toHex(f.payload)]),
          [[Opcode.Binary, true, true, toHex(RFC_KEY), toHex(payload)]],
          label
        )
        assert.strictEqual(engine.completeAction(record.id, record.buffer0.length), Status.Ok, label)
        assert.deepStrictEqual(drainSends(engine).completed, ["m"], label)
        assert.isTrue(engine.sendWritten, label)
        assert.strictEqual(allocations, 0, label)
      }
    }
  })
})

describe("a server's frame queued while an automatic pong is being written", () => {
  /** Hands out the automatic pong of an empty ping on the receive queue. */
  const pongOut = (engine: Engine) => {
    assert.strictEqual(engine.receive(undefined, "r"), Status.Ok)
    const read = expectAction(next(engine, QueueCode.Receive), ActionCode.ReceiveFromNetwork)
    const ping = hex("8980 00000000")
    read.buffers[0]!.set(ping)
    complete(engine, read, ping.length)
    return expectAction(next(engine, QueueCode.Receive), ActionCode.SendToNetwork, QueueCode.Receive)
  }

  it("waits for the pong, then goes out in one action from the caller's memory (header, then the payload), whatever size its view grew to meanwhile", () => {
    for (const [length, grow] of [[0, false], [20, false], [20, true], [4095, true], [65535, false]] as const) {
      const label = `${length} B${grow ? ", grown" : ""}`
      const engine = makeServer()
      const buffer = new ArrayBuffer(length, { maxByteLength: length + 100 })
      const view = new Uint8Array(buffer)
      view.set(counting(length))
      const pong = pongOut(engine)
      send(engine, BinaryFragment, view, undefined, "frame")
      assert.strictEqual(next(engine, QueueCode.Send).action, ActionCode.NoAction, `${label}: the frame waits for the pong`)
      if (grow) buffer.resize(length + 100)
      complete(engine, pong)
      const step = expectAction(next(engine, QueueCode.Send), ActionCode.SendToNetwork, QueueCode.Send)
      assert.strictEqual(step.buffers.length, length === 0 ? 1 : 2, label)
      if (length > 0) {
        assert.strictEqual(step.buffers[1]!.length, length, `${label}: exactly the declared length`)
        assert.strictEqual(step.buffers[1]!.buffer, buffer, `${label}: from the caller's memory`)
        if (!grow) assert.strictEqual(step.buffers[1], view, label)
      }
      const wire = stepBytes(step)
      complete(engine, step)
      assert.deepStrictEqual(drainSends(engine).completed, ["frame"], label)
      assert.isTrue(engine.sendWritten, label)
      const frames = parseFrames(concat([stepBytes(pong), wire]))
      assert.deepStrictEqual(
        frames.map((f) => [f.opcode, f.fin, toHex(f.payload)]),
        [[Opcode.Pong, true, ""], [Opcode.Binary, false, toHex(counting(length))]],
        label
      )
    }
  })
})

describe("completeSendAction and completeReceiveAction", () => {
  const record = new ActionRecord()
  /** A ping, then a masked 3-byte binary message: what a client sends a server. */
  const fromClient = hex("8980 00000000 8283 01020304 000000")

  it.prop("give completeAction's result for any id and count, whichever queue the action came from", [
    Arbitrary.array(Arbitrary.all([int(0, 5), int(0, 5), int(0, 3)]), { minLength: 1, maxLength: 60 })
  ], ([script]) => {
    // the same script on a server with each of the three methods; every step's result alike
    const run = (method: "completeAction" | "completeSendAction" | "completeReceiveAction") => {
      const engine = makeServer({ sendBufferSize: 16 })
      const log: Array<unknown> = []
      let sendId = 0
      let receiveId = 0
      let staleId = 0
      let fed = 0
      let read = 0
      for (const [op, which, count] of script) {
        if (op === 0) log.push(engine.send(BinaryMessage, counting(which * 7), undefined, undefined))
        else if (op === 1) log.push(engine.receive(undefined, undefined))
        else if (op <= 3) {
          const status = engine.getAction(op === 2 ? QueueCode.Send : QueueCode.Receive, record)
          if (record.action === ActionCode.ReceiveFromNetwork) {
            // the client's bytes, a few at a time; the rest of the buffer zeroed, so that a completion
            // that claims more than was written gives every run the same bytes (not whatever the
            // uninitialized memory held)
            read = Math.min(record.buffer0.length, fromClient.length - fed, 1 + which)
            record.buffer0.fill(0)
            record.buffer0.set(fromClient.subarray(fed, fed + read))
            fed += read
          }
          if (record.id !== 0) {
            staleId = op === 2 ? sendId : receiveId
            if (op === 2) sendId = record.id
            else receiveId = record.id
          }
          const buffers = record.bufferCount === 2 ? [record.buffer0, record.buffer1] : record.bufferCount === 1 ? [record.buffer0] : []
          // (a read's buffer: its length; what it held before is not the handle's to say)
          const isRead = record.action === ActionCode.ReceiveFromNetwork
          log.push([status, record.action, record.queue, record.bufferType, buffers.map((b) => isRead ? b.length : toHex(b))])
        } else {
          const id = [sendId, receiveId, staleId, 0, 12345, sendId][which]!
          const whole = record.action === ActionCode.SendToNetwork ? record.buffer0.length + (record.bufferCount === 2 ? record.buffer1.length : 0) : 0
          const n = record.action === ActionCode.ReceiveFromNetwork ? [read, 0, 1, -1][count]! : [whole, 0, 1, -1][count]!
          log.push([engine[method](id, n), engine.lastError?.message])
        }
        log.push([engine.state, engine.sendWritten, engine.failure?.message])
      }
      return log
    }
    const expected = run("completeAction")
    assert.deepStrictEqual(run("completeSendAction"), expected, JSON.stringify(script))
    assert.deepStrictEqual(run("completeReceiveAction"), expected, JSON.stringify(script))
  }, { arbitrary: { size: 60 } })
})
