import { assert, describe, it } from "@effect/vitest"
import { Arbitrary, Duration, Schema } from "effect"
import { Options } from "../src/index.ts"
import { assertRejects, decodeFailure, decodeOk, decodes, intArbitrary } from "./utils.ts"

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
      // (a bigint is nanoseconds)
      assert.isTrue(Duration.equals(decodeOk(closeTimeout, 1500n), Duration.nanos(1500n)))
    })

    it("takes every unit of Duration.DurationObject, units left undefined as its type allows, and a plain object without a prototype", () => {
      const units: ReadonlyArray<readonly [Record<string, number>, Duration.Duration]> = [
        [{ weeks: 1 }, Duration.weeks(1)],
        [{ days: 2 }, Duration.days(2)],
        [{ hours: 3 }, Duration.hours(3)],
        [{ minutes: 4 }, Duration.minutes(4)],
        [{ seconds: 5 }, Duration.seconds(5)],
        [{ milliseconds: 6 }, Duration.millis(6)],
        [{ microseconds: 7 }, Duration.micros(7n)],
        [{ nanoseconds: 8 }, Duration.nanos(8n)]
      ]
      for (const [input, expected] of units) {
        assert.isTrue(Duration.equals(decodeOk(closeTimeout, input), expected), JSON.stringify(input))
      }
      const bare = Object.assign(Object.create(null) as object, { seconds: 5 })
      assert.isTrue(Duration.equals(decodeOk(closeTimeout, bare), Duration.seconds(5)))
      const partly: Duration.Input = { seconds: 5, minutes: undefined }
      assert.isTrue(Duration.equals(decodeOk(closeTimeout, partly), Duration.seconds(5)))
      // (but at least one unit is given, every key is a unit)
      assertRejects(closeTimeout, { seconds: undefined }, "closeTimeout must be a duration", "got object")
      assertRejects(closeTimeout, { seconds: 5, ages: undefined }, "closeTimeout must be a duration", "got object")
    })

    it("refuses units and pairs that are not finite numbers (Duration.fromInput reads them as zero or infinity)", () => {
      for (const input of [{ seconds: Number.NaN }, { seconds: Number.POSITIVE_INFINITY }, { minutes: 1, seconds: Number.NaN }]) {
        assertRejects(closeTimeout, input, "closeTimeout must be a duration", "got object")
      }
      for (const input of [[Number.NaN, 0], [0, Number.NaN], [Number.POSITIVE_INFINITY, 0], [1, Number.POSITIVE_INFINITY], [1, 2, 3], [1]]) {
        assertRejects(closeTimeout, input, "closeTimeout must be a duration")
      }
    })

    it("names the value it refuses", () => {
      assertRejects(closeTimeout, -1, "closeTimeout may not be negative, got -1")
      assertRejects(closeTimeout, -5n, "closeTimeout may not be negative, got -5")
      assertRejects(closeTimeout, "-2 seconds", "closeTimeout may not be negative, got \"-2 seconds\"")
      assertRejects(closeTimeout, Number.NaN, "closeTimeout must be a duration", "got NaN")
      assertRejects(closeTimeout, null, "closeTimeout must be a duration", "got null")
      assertRejects(closeTimeout, true, "closeTimeout must be a duration", "got true")
      assertRejects(closeTimeout, undefined, "closeTimeout must be a duration", "got undefined")
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
      assertRejects(Options.DurationInput("keepalive.timeout", { minimum: "positive", finite: true }), "Infinity", "keepalive.timeout must be finite")
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

    it("a close timeout may be zero (no wait for the peer's Close) or infinite (wait for ever)", () => {
      assert.isTrue(Duration.equals(decodeOk(Options.ConnectionOptions, { closeTimeout: 0 }).closeTimeout!, Duration.zero))
      assert.isTrue(Duration.equals(decodeOk(Options.ConnectionOptions, { closeTimeout: Number.POSITIVE_INFINITY }).closeTimeout!, Duration.infinity))
      assert.isTrue(Duration.equals(decodeOk(Options.ConnectionOptions, { closeTimeout: "Infinity" }).closeTimeout!, Duration.infinity))
      assertRejects(Options.ConnectionOptions, { closeTimeout: -1 }, "closeTimeout may not be negative, got -1")
    })

    it("names the first bad setting", () => {
      assertRejects(Options.ConnectionOptions, { messageBuffer: 0 }, "messageBuffer must be an integer of at least 1, got 0")
      assertRejects(Options.ConnectionOptions, { messageBuffer: 2.5 }, "messageBuffer", "2.5")
      assertRejects(Options.ConnectionOptions, { closeTimeout: "later" }, "closeTimeout must be a duration")
      assertRejects(Options.ConnectionOptions, { keepalive: { interval: 0 } }, "keepalive.interval must be more than zero")
      assertRejects(Options.ConnectionOptions, { keepalive: {} }, "interval")
      // (a keepalive that never fires, or a timeout that never cuts off a dead peer, is a mistake)
      assertRejects(Options.ConnectionOptions, { keepalive: { interval: Number.POSITIVE_INFINITY } }, "keepalive.interval must be finite")
      assertRejects(Options.ConnectionOptions, { keepalive: { interval: 1000, timeout: "Infinity" } }, "keepalive.timeout must be finite")
      assertRejects(Options.ConnectionOptions, { keepalive: { interval: 1000, timeout: -5 } }, "keepalive.timeout may not be negative, got -5")
      assertRejects(Options.ConnectionOptions, { keepalive: { interval: 1000, frame: "beep" } }, "frame")
      assert.isFalse(decodes(Options.ConnectionOptions, { protocol: 13 }))
      assert.strictEqual(decodeOk(Options.ConnectionOptions, { protocol: "chat" }).protocol, "chat")
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

    it("refuses fractions of a byte, and offers Infinity only where it is allowed", () => {
      assertRejects(Options.SocketBuffers, { highWaterMark: 1.5 }, "socketBuffers.highWaterMark must be a whole number of bytes of at least 1, got 1.5")
      assertRejects(Options.SocketBuffers, { writeBufferLimit: 0.5 }, "socketBuffers.writeBufferLimit must be a whole number of bytes of at least 0 (or Infinity), got 0.5")
      assertRejects(Options.SocketBuffers, { highWaterMark: 2 ** 53 }, "socketBuffers.highWaterMark")
      const message = decodeFailure(Options.SocketBuffers, { highWaterMark: 0 })
      assert.notInclude(message, "Infinity")
      assert.strictEqual(decodeOk(Options.ByteLimit("maxHeaderBytes", 1, false), 16384), 16384)
      assertRejects(Options.ByteLimit("maxHeaderBytes", 1, false), Number.POSITIVE_INFINITY, "maxHeaderBytes must be a whole number of bytes of at least 1, got Infinity")
    })
  })

  describe("RedirectOptions", () => {
    it("maxRedirects is a whole number from 0 and followRedirects a boolean", () => {
      assert.deepStrictEqual(decodeOk(Options.RedirectOptions, { followRedirects: true, maxRedirects: 0 }), { followRedirects: true, maxRedirects: 0 })
      assert.deepStrictEqual(decodeOk(Options.RedirectOptions, { maxRedirects: 20 }), { maxRedirects: 20 })
      assert.deepStrictEqual(decodeOk(Options.RedirectOptions, {}), {})
      for (const n of [-1, 1.5, Number.NaN, Number.POSITIVE_INFINITY, 2 ** 53]) {
        assertRejects(Options.RedirectOptions, { maxRedirects: n }, `maxRedirects must be a whole number from 0, got ${n}`)
      }
      for (const flag of ["yes", 1, null]) {
        assert.isFalse(decodes(Options.RedirectOptions, { followRedirects: flag }), String(flag))
      }
    })
  })

  describe("Host", () => {
    it("is a non-empty name or address without whitespace or control characters", () => {
      for (const host of ["127.0.0.1", "::1", "localhost", "example.com", "0.0.0.0", "fe80::1%eth0"]) {
        assert.strictEqual(decodeOk(Options.Host, host), host)
      }
      for (const host of ["", " ", "local host", "localhost ", "a\tb", "a\nb", "a\u0000b", "a\u007fb", "a\u00a0b", "a\u2028b"]) {
        assertRejects(Options.Host, host, "host must be a host name or address")
      }
      assertRejects(Options.Host, "a b", "got \"a b\"")
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
