import { assert, describe, it, vi } from "@effect/vitest"
import { Effect, Metric, Stream } from "effect"
import { Connection, Metrics } from "../src/index.ts"

const count = (metric: Metric.Metric<number, Metric.CounterState<number>>, attributes: Record<string, string>) =>
  Effect.map(Metric.value(Metric.withAttributes(metric, attributes)), (state) => Number(state.count))

const open = (side: string) =>
  Effect.map(Metric.value(Metric.withAttributes(Metrics.connectionsOpen, { side })), (state) => Number(state.value))

/** Gives every other fiber many chances to run. */
const settle = Effect.gen(function*() {
  for (let i = 0; i < 500; i++) yield* Effect.yieldNow
})

describe("Metrics", () => {
  it.effect("counts reach the metrics every 64 messages, when the reader waits 50 ms or more after the last update, and by a timer 50 ms after a count (one timer at a time)", () =>
    Effect.gen(function*() {
      // the timer and the time between updates are the runtime's (setTimeout, Date), frozen here
      vi.useFakeTimers({ toFake: ["setTimeout", "clearTimeout", "Date"] })
      yield* Effect.addFinalizer(() => Effect.sync(() => vi.useRealTimers()))
      const sent = count(Metrics.messagesSent, { side: "client" })
      const received = count(Metrics.messagesReceived, { side: "server" })
      const bytesReceived = count(Metrics.bytesReceived, { side: "server" })
      const before = { sent: yield* sent, received: yield* received, bytes: yield* bytesReceived }
      const delta = Effect.gen(function*() {
        return {
          sent: (yield* sent) - before.sent,
          received: (yield* received) - before.received,
          bytes: (yield* bytesReceived) - before.bytes
        }
      })
      const [client, server] = yield* Connection.makeMemoryPair({ connection: { messageBuffer: 256 } })
      yield* settle
      yield* client.send("m")
      yield* settle
      // the server's reader waits again, long after its last update (never): it reports at once;
      // the client's send is left to its timer
      assert.deepStrictEqual(yield* delta, { sent: 0, received: 1, bytes: 1 })
      for (let i = 0; i < 63; i++) yield* client.send("mm")
      yield* settle
      // the 64th message counted by the client: a batch; the server has 63 waiting (too soon after its update)
      assert.deepStrictEqual(yield* delta, { sent: 64, received: 1, bytes: 1 })
      yield* client.send("mmm")
      yield* settle
      // the 64th message counted by the server since its update: a batch
      assert.deepStrictEqual(yield* delta, { sent: 64, received: 65, bytes: 1 + 63 * 2 + 3 })
      vi.advanceTimersByTime(50) // the client's timer
      assert.deepStrictEqual(yield* delta, { sent: 65, received: 65, bytes: 130 })
      // a timer again for the next count
      yield* client.send("m")
      yield* settle
      assert.strictEqual((yield* delta).sent, 65)
      vi.advanceTimersByTime(50)
      assert.deepStrictEqual(yield* delta, { sent: 66, received: 66, bytes: 131 })
      // one timer at a time: a count made while it is pending is reported by it, not by a timer of its own
      yield* client.send("m")
      vi.advanceTimersByTime(30)
      yield* client.send("m")
      vi.advanceTimersByTime(20)
      assert.strictEqual((yield* delta).sent, 68)
      yield* client.send("m")
      vi.advanceTimersByTime(30)
      assert.strictEqual((yield* delta).sent, 68, "reported 50 ms after the count, not earlier")
      vi.advanceTimersByTime(20)
      assert.strictEqual((yield* delta).sent, 69)
      // sends are reported too when the reader waits again 50 ms after the last update (a pong came)
      yield* client.send("m")
      vi.setSystemTime(Date.now() + 50) // (the timer is not run)
      yield* server.ping()
      yield* settle
      assert.strictEqual(client.stats.pongsIn + server.stats.pongsIn, 1)
      assert.strictEqual((yield* delta).sent, 70)
      assert.deepStrictEqual([server.stats.messagesIn, server.stats.bytesIn], [70, 135])
    }))

  it.live("an open, idle connection has reported what it counted within a moment", () =>
    Effect.gen(function*() {
      const before = yield* count(Metrics.messagesReceived, { side: "server" })
      const [client, server] = yield* Connection.makeMemoryPair()
      yield* client.send("m")
      yield* Stream.runDrain(Stream.take(server.messages, 1)) // reported when the reader waits
      for (let i = 0; i < 4; i++) yield* client.send("m")
      yield* Stream.runDrain(Stream.take(server.messages, 4)) // too soon after: left to the timer
      yield* Effect.sleep("200 millis") // more than the 50 ms between updates while waiting
      assert.strictEqual((yield* count(Metrics.messagesReceived, { side: "server" })) - before, 5)
    }))

  it.live("what a connection counted is reported by the time it is closed, also what was still waiting to be reported", () =>
    Effect.gen(function*() {
      const sentBefore = yield* count(Metrics.messagesSent, { side: "client" })
      const receivedBefore = yield* count(Metrics.messagesReceived, { side: "server" })
      const [client, server] = yield* Connection.makeMemoryPair()
      yield* client.send("m")
      yield* Stream.runDrain(Stream.take(server.messages, 1)) // reported when the reader waits
      for (let i = 0; i < 4; i++) yield* client.send("m")
      yield* Stream.runDrain(Stream.take(server.messages, 4)) // too soon after: not reported yet
      yield* client.close()
      yield* server.closed
      assert.strictEqual((yield* count(Metrics.messagesSent, { side: "client" })) - sentBefore, 5)
      assert.strictEqual((yield* count(Metrics.messagesReceived, { side: "server" })) - receivedBefore, 5)
    }))

  it.live("messages received while the consumer is behind are reported within a moment too (they waited for the consumer)", () =>
    Effect.gen(function*() {
      const before = yield* count(Metrics.messagesReceived, { side: "server" })
      const [client, server] = yield* Connection.makeMemoryPair()
      for (let i = 0; i < 30; i++) yield* client.send("m")
      yield* Effect.sleep("200 millis") // nobody takes the server's messages: its reader is held
      const counted = server.stats.messagesIn
      assert.isAbove(counted, 0)
      assert.strictEqual((yield* count(Metrics.messagesReceived, { side: "server" })) - before, counted)
    }))

  it.live("a connection that only sends has reported its sends within a moment too (they waited for its close)", () =>
    Effect.gen(function*() {
      const before = yield* count(Metrics.messagesSent, { side: "server" })
      const [client, server] = yield* Connection.makeMemoryPair()
      yield* Effect.sleep("100 millis") // both readers wait for the network
      for (let i = 0; i < 5; i++) yield* server.send("m")
      yield* Stream.runDrain(Stream.take(client.messages, 5))
      yield* Effect.sleep("200 millis")
      assert.strictEqual((yield* count(Metrics.messagesSent, { side: "server" })) - before, 5)
    }))

  it.effect("connections count messages, bytes, and how they closed", () =>
    Effect.gen(function*() {
      const before = {
        received: yield* count(Metrics.messagesReceived, { side: "server" }),
        bytes: yield* count(Metrics.bytesReceived, { side: "server" }),
        sent: yield* count(Metrics.messagesSent, { side: "client" }),
        closed: yield* count(Metrics.connectionsClosed, { side: "client", code: "1000", clean: "true" })
      }
      const openBefore = { client: yield* open("client"), server: yield* open("server") }
      const [client, server] = yield* Connection.makeMemoryPair()
      assert.strictEqual((yield* open("client")) - openBefore.client, 1, "one client connection open")
      assert.strictEqual((yield* open("server")) - openBefore.server, 1, "one server connection open")
      yield* client.send("abc")
      yield* client.send(new Uint8Array(10))
      yield* Stream.runDrain(Stream.take(server.messages, 2))
      yield* client.close(1000)
      assert.strictEqual((yield* open("client")) - openBefore.client, 0, "the client is closed")
      assert.strictEqual((yield* count(Metrics.messagesReceived, { side: "server" })) - before.received, 2)
      assert.strictEqual((yield* count(Metrics.bytesReceived, { side: "server" })) - before.bytes, 13)
      assert.strictEqual((yield* count(Metrics.messagesSent, { side: "client" })) - before.sent, 2)
      assert.strictEqual(
        (yield* count(Metrics.connectionsClosed, { side: "client", code: "1000", clean: "true" })) - before.closed,
        1
      )
    }))

  it.effect("closes are counted by code, application codes (3000-4999) by their thousand: a peer cannot add a series per code", () =>
    Effect.gen(function*() {
      const closed = (code: string) => count(Metrics.connectionsClosed, { side: "server", code, clean: "true" })
      const before = { app3: yield* closed("3xxx"), app4: yield* closed("4xxx"), normal: yield* closed("1000") }
      for (const code of [3000, 3999, 4001, 4999, 1000]) {
        const [client, server] = yield* Connection.makeMemoryPair()
        yield* client.close(code)
        yield* server.closed
      }
      assert.strictEqual((yield* closed("3xxx")) - before.app3, 2)
      assert.strictEqual((yield* closed("4xxx")) - before.app4, 2)
      assert.strictEqual((yield* closed("1000")) - before.normal, 1)
      assert.strictEqual(yield* closed("4001"), 0)
      assert.deepStrictEqual([999, 1000, 1015, 2999, 3000, 3999, 4000, 4999].map(Metrics.closeCodeLabel), ["999", "1000", "1015", "2999", "3xxx", "3xxx", "4xxx", "4xxx"])
    }))

  it.effect("a connection that ended without a closing handshake counts as closed with clean false", () =>
    Effect.gen(function*() {
      const closed = (clean: string) => count(Metrics.connectionsClosed, { side: "client", code: "1006", clean })
      const before = { clean: yield* closed("true"), unclean: yield* closed("false") }
      const [client] = yield* Connection.makeMemoryPair()
      yield* client.abort
      assert.deepInclude(yield* client.closed, { code: 1006, clean: false })
      assert.strictEqual((yield* closed("false")) - before.unclean, 1)
      assert.strictEqual((yield* closed("true")) - before.clean, 0)
      // the counters a close updates are kept per side, code and cleanness: one of each
      const counter = Metrics.closedCounter
      assert.strictEqual(counter("client", 1006, false), counter("client", 1006, false))
      assert.strictEqual(counter("client", 4001, true), counter("client", 4999, true), "one label, one counter")
      for (const [side, code, clean] of [["client", 1006, true], ["server", 1006, false], ["server", 1006, true]] as const) {
        const series = () => count(Metrics.connectionsClosed, { side, code: "1006", clean: String(clean) })
        const start = yield* series()
        yield* Metric.update(counter(side, code, clean), 1)
        assert.strictEqual((yield* series()) - start, 1, `${side} ${clean}`)
      }
      assert.strictEqual((yield* closed("false")) - before.unclean, 1)
    }))

  it.effect("a message sent with sendFragments counts its bytes, as one sent whole does", () =>
    Effect.gen(function*() {
      const before = yield* count(Metrics.bytesSent, { side: "client" })
      const [client, server] = yield* Connection.makeMemoryPair()
      yield* client.sendFragments(Stream.make("abc", "de"), "text")
      yield* client.sendFragments(Stream.make(new Uint8Array(4), new Uint8Array(0), new Uint8Array(6)), "binary")
      yield* client.send("xyz")
      yield* Stream.runDrain(Stream.take(server.messages, 3))
      assert.deepStrictEqual([client.stats.messagesOut, client.stats.bytesOut], [3, 18])
      assert.deepStrictEqual([server.stats.messagesIn, server.stats.bytesIn], [3, 18])
      yield* client.close(1000)
      assert.strictEqual((yield* count(Metrics.bytesSent, { side: "client" })) - before, 18)
    }))
})
