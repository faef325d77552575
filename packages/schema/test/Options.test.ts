import { assert, describe, it } from "@effect/vitest"
import { Arbitrary, Duration, Schema } from "effect"
import { Options } from "../src/index.ts"
import { assertRejects, decodeOk, decodes, intArbitrary } from "./utils.ts"

const closeTimeout = Options.DurationInput("closeTimeout", { minimum: "zero", finite: false })
const interval = Options.DurationInput("interval", { minimum: "positive", finite: true })

/** Numbers of every kind: integers, fractions, the edges, NaN and the infinities. */
const anyNumber: Arbitrary.Arbitrary<number> = Arbitrary.schema(Schema.Number)

describe("Options", () => {
  describe("DurationInput", () => {
    it("decodes every form of Duration.Input to a Duration", () => {
      assert.isTrue(Duration.equals(decodeOk(closeTimeout, 1500), Duration.millis(1500)))
      assert.isTrue(Duration.equals(decodeOk(closeTimeout, "2 seconds"), Duration.seconds(2)))
      assert.isTrue(Duration.equals(decodeOk(closeTimeout, Duration.minutes(1)), Duration.minutes(1)))
      assert.isTrue(Duration.equals(decodeOk(closeTimeout, [1, 500]), Duration.nanos(1_000_000_500n)))
      assert.isTrue(Duration.equals(decodeOk(closeTimeout, 0), Duration.zero))
      assert.isTrue(Duration.equals(decodeOk(closeTimeout, { seconds: 2, milliseconds: 5 }), Duration.millis(2005)))
      assert.isTrue(Duration.equals(decodeOk(closeTimeout, "Infinity"), Duration.infinity))
    })

    it("refuses what is not a duration, negative ones, zero or infinity where they make no sense", () => {
      assertRejects(closeTimeout, "soon", "closeTimeout must be a duration", "\"soon\"")
      assertRejects(closeTimeout, null, "closeTimeout must be a duration")
      assertRejects(closeTimeout, { seconds: "x" }, "closeTimeout must be a duration")
      assertRejects(closeTimeout, { secs: 5 }, "closeTimeout must be a duration")
      // objects with no units would read as zero (`millis` is a unit of the strings, not of the objects)
      assertRejects(closeTimeout, { millis: 5000 }, "closeTimeout must be a duration")
      assertRejects(closeTimeout, {}, "closeTimeout must be a duration")
      assertRejects(closeTimeout, new Number(5000), "closeTimeout must be a duration")
      assertRejects(closeTimeout, new Date(), "closeTimeout must be a duration")
      assertRejects(closeTimeout, new (class Later {})(), "closeTimeout must be a duration")
      assert.isTrue(Duration.equals(decodeOk(closeTimeout, { seconds: 5 }), Duration.seconds(5)))
      assertRejects(closeTimeout, -1, "closeTimeout may not be negative")
      assertRejects(closeTimeout, Number.NaN, "closeTimeout must be a duration")
      assertRejects(interval, 0, "interval must be more than zero")
      assertRejects(interval, Number.POSITIVE_INFINITY, "interval must be finite")
      assertRejects(interval, "-5 seconds", "interval may not be negative")
    })

    it.prop(
      "a number of milliseconds decodes iff it is a duration the rules allow",
      { ms: anyNumber },
      ({ ms }) => {
        const isDuration = !Number.isNaN(ms) && ms !== Number.NEGATIVE_INFINITY
        assert.strictEqual(decodes(closeTimeout, ms), isDuration && ms >= 0, `closeTimeout ${ms}`)
        // (a positive number of milliseconds below half a nanosecond is zero)
        const positive = ms > 0 && !Duration.isZero(Duration.millis(ms))
        assert.strictEqual(decodes(interval, ms), isDuration && positive && Number.isFinite(ms), `interval ${ms}`)
      },
      { arbitrary: { runs: 500 } }
    )
  })

  describe("ConnectionOptions", () => {
    it("takes the documented settings, durations decoded", () => {
      const decoded = decodeOk(Options.ConnectionOptions, {
        closeTimeout: "3 seconds",
        messageBuffer: 1,
        keepalive: { interval: 20_000, timeout: "5 seconds", frame: "pong" },
        closeCodeOnScopeClose: 4000
      })
      assert.isTrue(Duration.equals(decoded.closeTimeout!, Duration.seconds(3)))
      assert.strictEqual(decoded.messageBuffer, 1)
      assert.isTrue(Duration.equals(decoded.keepalive!.interval, Duration.seconds(20)))
      assert.isTrue(Duration.equals(decoded.keepalive!.timeout!, Duration.seconds(5)))
      assert.strictEqual(decoded.keepalive!.frame, "pong")
      assert.strictEqual(decoded.closeCodeOnScopeClose, 4000)
      assert.deepStrictEqual(decodeOk(Options.ConnectionOptions, {}), {})
    })

    it("names the first bad setting", () => {
      assertRejects(Options.ConnectionOptions, { messageBuffer: 0 }, "messageBuffer must be an integer of at least 1, got 0")
      assertRejects(Options.ConnectionOptions, { messageBuffer: 2.5 }, "messageBuffer", "2.5")
      assertRejects(Options.ConnectionOptions, { closeTimeout: "later" }, "closeTimeout must be a duration")
      assertRejects(Options.ConnectionOptions, { keepalive: { interval: 0 } }, "keepalive.interval must be more than zero")
      assertRejects(Options.ConnectionOptions, { keepalive: {} }, "interval")
      assertRejects(Options.ConnectionOptions, { keepalive: { interval: 1000, frame: "beep" } }, "frame")
      assertRejects(Options.ConnectionOptions, { closeCodeOnScopeClose: 1006 }, "close code 1006 may not be sent", "1005 for an empty Close")
      // (1005 asks for an empty Close, as Connection.close(1005) does)
      assert.strictEqual(Schema.decodeUnknownSync(Options.ConnectionOptions)({ closeCodeOnScopeClose: 1005 }).closeCodeOnScopeClose, 1005)
    })

    it("a keepalive timeout must be more than zero, as its interval (a zero timeout would cut off every peer)", () => {
      for (const timeout of [0, "0 millis", Duration.zero]) {
        assertRejects(Options.ConnectionOptions, { keepalive: { interval: 1000, timeout } }, "keepalive.timeout must be more than zero")
      }
      const decoded = decodeOk(Options.ConnectionOptions, { keepalive: { interval: 1000, timeout: 1 } })
      assert.isTrue(Duration.equals(decoded.keepalive!.timeout!, Duration.millis(1)))
    })

    it.prop(
      "a message buffer decodes iff it is a whole number of at least 1",
      { n: anyNumber },
      ({ n }) => {
        assert.strictEqual(decodes(Options.ConnectionOptions, { messageBuffer: n }), Number.isSafeInteger(n) && n >= 1, String(n))
      },
      { arbitrary: { runs: 300 } }
    )
  })

  describe("SocketBuffers", () => {
    it("takes byte counts, and Infinity for an unbounded write buffer only", () => {
      assert.deepStrictEqual(decodeOk(Options.SocketBuffers, { highWaterMark: 1, writeBufferLimit: 0 }), {
        highWaterMark: 1,
        writeBufferLimit: 0
      })
      assert.strictEqual(decodeOk(Options.SocketBuffers, { writeBufferLimit: Number.POSITIVE_INFINITY }).writeBufferLimit, Number.POSITIVE_INFINITY)
      assertRejects(Options.SocketBuffers, { highWaterMark: 0 }, "socketBuffers.highWaterMark must be a whole number of bytes of at least 1")
      assertRejects(Options.SocketBuffers, { highWaterMark: Number.POSITIVE_INFINITY }, "socketBuffers.highWaterMark")
      assertRejects(Options.SocketBuffers, { writeBufferLimit: Number.NaN }, "socketBuffers.writeBufferLimit", "NaN")
      assertRejects(Options.SocketBuffers, { writeBufferLimit: -1 }, "socketBuffers.writeBufferLimit")
    })
  })

  describe("RequestPath", () => {
    it("starts with / and carries no query or fragment", () => {
      for (const path of ["/", "/chat", "/a/b%20c"]) assert.strictEqual(decodeOk(Options.RequestPath, path), path)
      assertRejects(Options.RequestPath, "chat", "path must start with \"/\"")
      assertRejects(Options.RequestPath, "", "path must start with \"/\"")
      assertRejects(Options.RequestPath, "/chat?room=1", "no query or fragment")
      assertRejects(Options.RequestPath, "/chat#top", "no query or fragment")
    })

    it("is written as clients send it: what WHATWG URL parsing encodes or resolves could never match raw", () => {
      // (sent as they are: `[`, `]`, `|` and a stray `%` too)
      // (`//x` too: `ws://host//x` sends it, as a request path that is not a URL with host `x`)
      for (const path of ["/a/b%20c", "/caf%C3%A9", "/x;v=1/@me:8080", "/~user/a.b_c-d!$&'()*+,=", "/a[b]", "/a|b", "/100%", "//x", "//"]) {
        assert.strictEqual(decodeOk(Options.RequestPath, path), path)
      }
      assertRejects(Options.RequestPath, "/a b", "(\"/a%20b\")")
      assertRejects(Options.RequestPath, "/é", "(\"/%C3%A9\")")
      // (not `^`: Node 24's URL parser encodes it, Node 22's does not)
      assertRejects(Options.RequestPath, "/a{b}`", "(\"/a%7Bb%7D%60\")")
      assertRejects(Options.RequestPath, "/a\\b", "(\"/a/b\")")
      assertRejects(Options.RequestPath, "/a/../b", "(\"/b\")")
      assertRejects(Options.RequestPath, "//x/../y", "(\"//y\")")
    })
  })

  describe("Port", () => {
    it.prop(
      "an integer decodes iff it is a TCP port",
      { port: intArbitrary(-70_000, 140_000) },
      ({ port }) => {
        assert.strictEqual(decodes(Options.Port, port), port >= 0 && port <= 65535, String(port))
      },
      { arbitrary: { runs: 300 } }
    )

    it("refuses fractions and non-numbers", () => {
      assertRejects(Options.Port, 80.5, "port must be an integer from 0 to 65535, got 80.5")
      assertRejects(Options.Port, "80")
    })

    it("the edges: 0 and 65535 are ports, -1 and 65536 are not", () => {
      assert.strictEqual(decodeOk(Options.Port, 0), 0)
      assert.strictEqual(decodeOk(Options.Port, 65535), 65535)
      assertRejects(Options.Port, -1, "port must be an integer from 0 to 65535, got -1")
      assertRejects(Options.Port, 65536, "port must be an integer from 0 to 65535, got 65536")
    })
  })

  describe("SocketPath", () => {
    it("a NUL is allowed at the start only (an abstract socket): anywhere else, the second character included, it is refused", () => {
      assert.strictEqual(decodeOk(Options.SocketPath, "/tmp/s.sock"), "/tmp/s.sock")
      assert.strictEqual(decodeOk(Options.SocketPath, "\0abstract"), "\0abstract")
      for (const path of ["", "/a\0b", "\0\0", "\0a\0", "a\0"]) {
        assertRejects(Options.SocketPath, path, "socketPath must be a non-empty path")
      }
    })
  })
})
