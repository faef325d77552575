import { assert, describe, it } from "@effect/vitest"
import { Cause, Effect, Exit, Fiber, Scheduler } from "effect"
import * as EventLoop from "../src/internal/eventLoop.ts"
import { Mailbox } from "../src/internal/mailbox.ts"

/** Lets the other fibers run until `fibers` are all done, or 20 times. */
const untilDone = (...fibers: ReadonlyArray<Fiber.Fiber<unknown, unknown>>) =>
  Effect.gen(function*() {
    for (let i = 0; i < 20 && fibers.some((fiber) => fiber.pollUnsafe() === undefined); i++) yield* Effect.yieldNow
  })

describe("Mailbox", () => {
  it.effect("offers up to its capacity, then refuses", () =>
    Effect.gen(function*() {
      const mailbox = new Mailbox<number, string>(2)
      assert.isTrue(mailbox.offer(1))
      assert.isTrue(mailbox.offer(2))
      assert.isFalse(mailbox.offer(3))
      assert.strictEqual(yield* mailbox.take, 1)
      assert.isTrue(mailbox.offer(3))
      assert.strictEqual(yield* mailbox.take, 2)
      assert.strictEqual(yield* mailbox.take, 3)
      assert.strictEqual(mailbox.size, 0)
    }))

  it.effect("its storage is bounded by the messages waiting at once, not by the messages that went through (a consumer always behind)", () =>
    Effect.gen(function*() {
      const mailbox = new Mailbox<number, never>(16)
      for (let i = 0; i < 8; i++) assert.isTrue(mailbox.offer(i))
      // as a reader that refills the mailbox once it is half empty, and a consumer that never empties it
      for (let i = 8; i < 100_000; i++) {
        assert.isTrue(mailbox.offer(i))
        assert.strictEqual(yield* mailbox.take, i - 8)
      }
      assert.strictEqual(mailbox.size, 8)
      assert.isAtMost(mailbox.storage, 16)
    }))

  it.effect("offerBeyondCapacity keeps a message past the capacity, in order, until the end", () =>
    Effect.gen(function*() {
      const mailbox = new Mailbox<number, string>(1)
      assert.isTrue(mailbox.offer(1))
      assert.isFalse(mailbox.offer(2))
      assert.isTrue(mailbox.offerBeyondCapacity(2))
      assert.isTrue(mailbox.offerBeyondCapacity(3))
      assert.strictEqual(mailbox.size, 3)
      mailbox.fail("gone")
      assert.isFalse(mailbox.offerBeyondCapacity(4))
      assert.deepStrictEqual([yield* mailbox.take, yield* mailbox.take, yield* mailbox.take], [1, 2, 3])
      assert.strictEqual(yield* Effect.flip(mailbox.take), "gone")
    }))

  it.effect("a waiting taker gets the next message", () =>
    Effect.gen(function*() {
      const mailbox = new Mailbox<string, never>(1)
      const taker = yield* Effect.forkChild(mailbox.take)
      yield* Effect.yieldNow
      assert.strictEqual(mailbox.waiting, 1)
      assert.isTrue(mailbox.offer("hi"))
      assert.strictEqual(yield* Fiber.join(taker), "hi")
    }))

  it.effect("a taker that yields as it starts to wait still gets a message offered, or the end, meanwhile", () =>
    Effect.gen(function*() {
      // the taker yields every `budget` steps and the offer (or the end) comes after `k` yields of
      // the test: it falls in turn on each step of the taker, between its look and its wait too
      for (const how of ["offer", "end"] as const) {
        for (let budget = 3; budget <= 8; budget++) {
          for (let k = 0; k <= 4; k++) {
            const mailbox = new Mailbox<string, never>(4)
            // `handedOver` is true exactly when the taker waited (its message came from the offerer)
            let waited = false
            const take = mailbox.taking(
              (m, handedOver) => handedOver === waited ? m : `handedOver ${handedOver} after waiting ${waited}`,
              () => void (waited = true)
            )
            const taker = yield* Effect.forkChild(
              Effect.exit(take).pipe(Effect.provideService(Scheduler.MaxOpsBeforeYield, budget))
            )
            for (let i = 0; i < k; i++) yield* Effect.yieldNow
            if (how === "offer") mailbox.offer("x")
            else mailbox.end()
            yield* untilDone(taker)
            const exit = taker.pollUnsafe()
            assert.isDefined(exit, `${how} after ${k} yields, the taker yielding every ${budget} steps`)
            if (how === "offer") assert.deepStrictEqual(exit, Exit.succeed(Exit.succeed("x")))
            else assert.isTrue(Exit.isSuccess(exit!) && Exit.isFailure(exit.value))
          }
        }
      }
    }))

  it.effect("taking makes one effect that hands a message mapped each time it runs, at once or after waiting (onWait then counts the taker)", () =>
    Effect.gen(function*() {
      const mailbox = new Mailbox<string, never>(2)
      assert.isTrue(mailbox.offer("a"))
      let waits = 0
      const onWait = () => {
        waits++
        assert.strictEqual(mailbox.waiting, waits, "the taker is registered when onWait runs")
      }
      const handedOver: Array<boolean> = []
      const takeOne = mailbox.taking((m, handed) => {
        handedOver.push(handed)
        return [m]
      }, onWait)
      assert.deepStrictEqual(yield* takeOne, ["a"])
      assert.strictEqual(waits, 0)
      const taker = yield* Effect.forkChild(takeOne)
      yield* Effect.yieldNow
      assert.strictEqual(waits, 1)
      assert.isTrue(mailbox.offer("b"))
      assert.strictEqual(mailbox.waiting, 0, "handed over")
      assert.deepStrictEqual(yield* Fiber.join(taker), ["b"])
      // the same effect run by several fibers at once: each run waits as a taker of its own
      waits = 0
      const takers = yield* Effect.forEach([1, 2, 3], () => Effect.forkChild(takeOne))
      yield* Effect.yieldNow
      assert.strictEqual(waits, 3)
      assert.strictEqual(mailbox.waiting, 3)
      for (const m of ["c", "d", "e"]) assert.isTrue(mailbox.offerBeyondCapacity(m))
      const got = yield* Effect.forEach(takers, Fiber.join)
      assert.deepStrictEqual(got, [["c"], ["d"], ["e"]])
      assert.deepStrictEqual(handedOver, [false, true, true, true, true], "handed over exactly to the runs that waited")
      mailbox.end()
      assert.isTrue(Exit.isFailure(yield* Effect.exit(takeOne)), "then the end, to every run")
    }))

  it.effect("a taker interrupted while it waits no longer counts as waiting, wherever it was in line", () =>
    Effect.gen(function*() {
      const mailbox = new Mailbox<string, never>(4)
      for (let round = 0; round < 3; round++) {
        const takers = yield* Effect.forEach([1, 2, 3], () => Effect.forkChild(mailbox.take))
        yield* Effect.yieldNow
        assert.strictEqual(mailbox.waiting, 3)
        yield* Fiber.interrupt(takers[round]!)
        assert.strictEqual(mailbox.waiting, 2)
        yield* Fiber.interruptAll(takers)
        assert.strictEqual(mailbox.waiting, 0)
      }
    }))

  it.effect("a message handed to a taker that was interrupted goes back to the front", () =>
    Effect.gen(function*() {
      const mailbox = new Mailbox<string, never>(4)
      const first = yield* Effect.forkChild(mailbox.take)
      yield* Effect.yieldNow
      assert.isTrue(mailbox.offer("a")) // handed to `first`, delivered in a microtask
      yield* Fiber.interrupt(first)
      yield* Effect.promise(() => Promise.resolve()) // let the microtask run
      assert.isTrue(mailbox.offer("b"))
      assert.strictEqual(yield* mailbox.take, "a")
      assert.strictEqual(yield* mailbox.take, "b")
    }))

  it.effect("a message handed to a taker interrupted before it ran keeps its place ahead of later ones, whoever takes next", () =>
    Effect.gen(function*() {
      const mailbox = new Mailbox<string, never>(4)
      const first = yield* Effect.forkChild(mailbox.take)
      yield* Effect.yieldNow
      assert.strictEqual(mailbox.waiting, 1)
      // in one step (no microtask in between): "a" goes to `first`, which is interrupted at once;
      // the next consumer then waits, and "b" arrives
      const next = yield* Effect.sync(() => {
        assert.isTrue(mailbox.offer("a"))
        first.interruptUnsafe()
        return Effect.runFork(Effect.all([mailbox.take, mailbox.take]))
      })
      yield* Effect.sync(() => {
        assert.strictEqual(mailbox.waiting, 1, "the next consumer waits")
        assert.isTrue(mailbox.offer("b"))
      })
      assert.deepStrictEqual(yield* Fiber.join(next), ["a", "b"])
    }))

  it.effect("a message handed to a taker interrupted before it ran goes to the next waiting taker", () =>
    Effect.gen(function*() {
      const mailbox = new Mailbox<string, never>(4)
      const first = yield* Effect.forkChild(mailbox.take)
      yield* Effect.yieldNow
      const second = yield* Effect.forkChild(mailbox.take)
      yield* Effect.yieldNow
      const third = yield* Effect.forkChild(mailbox.take)
      yield* Effect.yieldNow
      assert.strictEqual(mailbox.waiting, 3)
      yield* Effect.sync(() => {
        assert.isTrue(mailbox.offer("a")) // `first` is woken
        first.interruptUnsafe() // and goes away before it runs
      })
      yield* untilDone(second)
      assert.deepStrictEqual(second.pollUnsafe(), Exit.succeed("a"), "the next taker in line is woken in its place")
      assert.strictEqual(mailbox.waiting, 1)
      assert.isTrue(mailbox.offer("b"))
      assert.strictEqual(yield* Fiber.join(third), "b")
    }))

  it.effect("a woken taker whose message another fiber took first waits again, first in line (ahead of takers that came after it), and gets the next one", () =>
    Effect.gen(function*() {
      const mailbox = new Mailbox<string, never>(1)
      const first = yield* Effect.forkChild(mailbox.take)
      yield* Effect.yieldNow
      const second = yield* Effect.forkChild(mailbox.take)
      yield* Effect.yieldNow
      assert.strictEqual(mailbox.waiting, 2)
      yield* Effect.sync(() => {
        assert.isTrue(mailbox.offer("a")) // `first` is woken
        assert.strictEqual(mailbox.poll(), "a") // another consumer takes it first
      })
      yield* Effect.promise(() => Promise.resolve()) // `first` runs, finds nothing
      assert.strictEqual(mailbox.waiting, 2, "waits again")
      yield* Effect.sync(() => {
        assert.isTrue(mailbox.offer("b"))
        assert.isTrue(mailbox.offer("c"))
      })
      // the taker that waited longest gets the next message
      assert.deepStrictEqual([yield* Fiber.join(first), yield* Fiber.join(second)], ["b", "c"])
    }))

  it.effect("a woken taker whose message another fiber took first gets the end that came meanwhile", () =>
    Effect.gen(function*() {
      const mailbox = new Mailbox<string, never>(1)
      const taker = yield* Effect.forkChild(Effect.exit(mailbox.take))
      yield* Effect.yieldNow
      yield* Effect.sync(() => {
        assert.isTrue(mailbox.offer("a")) // `taker` is woken
        assert.strictEqual(mailbox.poll(), "a") // another consumer takes it first
        mailbox.end()
      })
      yield* untilDone(taker)
      const exit = taker.pollUnsafe()
      assert.isTrue(exit !== undefined && Exit.isSuccess(exit) && Exit.isFailure(exit.value), "the taker ended")
      assert.strictEqual(mailbox.waiting, 0)
    }))

  it.effect("once the event loop is overdue, a message is handed over on its next turn, not in a microtask", () =>
    Effect.gen(function*() {
      const mailbox = new Mailbox<string, never>(1)
      const taker = yield* Effect.forkChild(mailbox.take)
      yield* Effect.yieldNow
      yield* Effect.sync(() => {
        while (EventLoop.mayContinue()) {
          // spends the budget of wake-ups in a row, as two busy ends would
        }
        assert.isTrue(mailbox.offer("a"))
      })
      yield* Effect.promise(() => Promise.resolve())
      assert.isUndefined(taker.pollUnsafe(), "not within the same turn")
      yield* Effect.promise(() => new Promise<void>((resolve) => setImmediate(resolve)))
      yield* untilDone(taker)
      assert.deepStrictEqual(taker.pollUnsafe(), Exit.succeed("a"))
    }))

  it.effect("messages on their way to woken takers do not count against the capacity", () =>
    Effect.gen(function*() {
      const mailbox = new Mailbox<number, never>(2)
      const taker = yield* Effect.forkChild(mailbox.take)
      yield* Effect.yieldNow
      const accepted = yield* Effect.sync(() => [1, 2, 3, 4].map((n) => mailbox.offer(n)))
      assert.deepStrictEqual(accepted, [true, true, true, false])
      assert.strictEqual(yield* Fiber.join(taker), 1)
      assert.strictEqual(yield* mailbox.take, 2)
      assert.strictEqual(yield* mailbox.take, 3)
    }))

  it.effect("messages before the end are taken, then Done", () =>
    Effect.gen(function*() {
      const mailbox = new Mailbox<number, string>(4)
      mailbox.offer(1)
      mailbox.end()
      mailbox.fail("too late") // the first ending holds
      assert.isTrue(mailbox.isDone, "done, even with a message still waiting")
      assert.isFalse(mailbox.offer(2))
      assert.strictEqual(yield* mailbox.take, 1)
      const exit = yield* Effect.exit(mailbox.take)
      assert.isTrue(Exit.isFailure(exit) && Cause.isDone(Exit.findErrorOption(exit).pipe((o) => o._tag === "Some" ? o.value : undefined)))
    }))

  it.effect("messages before a failure are taken, then the failure; waiting takers get it too", () =>
    Effect.gen(function*() {
      const mailbox = new Mailbox<number, string>(4)
      const waiting = new Mailbox<number, string>(4)
      const takers = yield* Effect.forEach([1, 2], () => Effect.forkChild(Effect.flip(waiting.take)))
      yield* Effect.yieldNow
      assert.strictEqual(waiting.waiting, 2)
      waiting.fail("boom")
      waiting.end() // the first ending holds
      yield* untilDone(...takers)
      assert.deepStrictEqual(takers.map((t) => t.pollUnsafe()), [Exit.succeed("boom"), Exit.succeed("boom")])
      mailbox.offer(7)
      mailbox.fail("broken")
      assert.strictEqual(yield* mailbox.take, 7)
      assert.strictEqual(yield* Effect.flip(mailbox.take), "broken")
    }))
})
