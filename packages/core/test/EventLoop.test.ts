/**
 * The event-loop fairness of `internal/eventLoop.ts`: its budget of wake-ups in a row, and where
 * the runtime has no `setImmediate` (a browser, or a runtime with web APIs only) its
 * `MessageChannel` fallback (the module loaded afresh with `setImmediate` hidden, here on Node's
 * event loop).
 */
import { afterEach, assert, describe, it, vi } from "@effect/vitest"

type EventLoopModule = typeof import("../src/internal/eventLoop.ts")

const hidden: Array<[string, PropertyDescriptor]> = []

/** `internal/eventLoop.ts` loaded while `setImmediate` (and `also`) is hidden (restored after each test). */
const loadWithoutSetImmediate = async (also: ReadonlyArray<string> = []): Promise<EventLoopModule> => {
  const g = globalThis as Record<string, unknown>
  for (const name of ["setImmediate", "clearImmediate", ...also]) {
    const descriptor = Object.getOwnPropertyDescriptor(g, name)
    if (descriptor !== undefined) hidden.push([name, descriptor])
    delete g[name]
  }
  vi.resetModules()
  try {
    return await import("../src/internal/eventLoop.ts")
  } finally {
    restore()
  }
}

const restore = () => {
  for (const [name, descriptor] of hidden.splice(0)) Object.defineProperty(globalThis, name, descriptor)
}

afterEach(restore)

/** How many of the event loop's active resources are `MessagePort`s. */
const messagePorts = () => process.getActiveResourcesInfo().filter((name) => name === "MessagePort").length

/** How many `setImmediate` callbacks wait. */
const immediates = () => process.getActiveResourcesInfo().filter((name) => name === "Immediate").length

/** `internal/eventLoop.ts` loaded afresh: no wake-up counted yet. */
const loadFresh = async (): Promise<EventLoopModule> => {
  vi.resetModules()
  return await import("../src/internal/eventLoop.ts")
}

describe("the budget of wake-ups in a row", () => {
  it("wake-ups spread over turns cost no callback per turn: the budget is renewed once per 64", async () => {
    const EventLoop = await loadFresh()
    const before = immediates()
    for (let turn = 1; turn <= 63; turn++) {
      assert.isTrue(EventLoop.mayContinue())
      assert.strictEqual(immediates(), before, `a setImmediate after the wake-up of turn ${turn}`)
      await new Promise<void>((resolve) => setImmediate(resolve))
    }
    assert.isTrue(EventLoop.mayContinue())
    assert.strictEqual(immediates(), before + 1, "the 64th wake-up has the budget renewed once the event loop turns")
    for (let i = 0; i < 100; i++) assert.isTrue(EventLoop.mayContinue())
    assert.strictEqual(immediates(), before + 1, "one renewal per row, not one per wake-up past the 64th")
    await new Promise<void>((resolve) => setImmediate(resolve))
    assert.strictEqual(immediates(), before)
  })

  it("a row within one turn stops at the budget, which is renewed once the event loop turned", async () => {
    const EventLoop = await loadFresh()
    let allowed = 0
    while (EventLoop.mayContinue()) allowed++
    assert.strictEqual(allowed, 1024)
    assert.isFalse(EventLoop.mayContinue(), "still overdue within the same turn")
    await new Promise<void>((resolve) => setImmediate(resolve))
    assert.isTrue(EventLoop.mayContinue(), "renewed once the event loop turned")
    // the renewed budget is a whole one, and is renewed again: every row of wake-ups gets its turn
    for (let row = 0; row < 3; row++) {
      allowed = 1
      while (EventLoop.mayContinue()) allowed++
      assert.strictEqual(allowed, 1024, `row ${row}`)
      await new Promise<void>((resolve) => setImmediate(resolve))
      assert.isTrue(EventLoop.mayContinue(), `renewed after row ${row}`)
    }
  })
})

describe("the event loop without setImmediate (MessageChannel fallback)", () => {
  it("nextTurn runs callbacks in order on later turns", async () => {
    const EventLoop = await loadWithoutSetImmediate()
    const ran: Array<number> = []
    await new Promise<void>((resolve) => {
      EventLoop.nextTurn(() => ran.push(1))
      EventLoop.nextTurn(() => ran.push(2))
      EventLoop.nextTurn(resolve)
      ran.push(0)
    })
    assert.deepStrictEqual(ran, [0, 1, 2])
  })

  it("the channel holds the process open only while a callback waits, as setImmediate does", async () => {
    const before = messagePorts()
    const EventLoop = await loadWithoutSetImmediate()
    assert.strictEqual(messagePorts(), before, "an idle channel does not keep the event loop alive")
    let resolve!: () => void
    const ran = new Promise<void>((r) => (resolve = r))
    EventLoop.nextTurn(resolve)
    assert.strictEqual(messagePorts(), before + 1, "a waiting callback keeps the event loop alive")
    await ran
    assert.strictEqual(messagePorts(), before, "once none waits, the channel does not keep the process from exiting")
  })

  it("the budget is renewed by a timer, not by a channel message (Node delivers those ahead of timers)", async () => {
    const EventLoop = await loadWithoutSetImmediate()
    const timeouts = () => process.getActiveResourcesInfo().filter((name) => name === "Timeout").length
    const [ports, timers] = [messagePorts(), timeouts()]
    for (let i = 0; i < 64; i++) assert.isTrue(EventLoop.mayContinue())
    assert.deepStrictEqual([messagePorts() - ports, timeouts() - timers], [0, 1])
    await new Promise<void>((resolve) => setTimeout(resolve, 0))
  })

  it("without MessageChannel either, nextTurn waits for a timer: not a microtask, which would run within the same turn", async () => {
    const EventLoop = await loadWithoutSetImmediate(["MessageChannel"])
    const ran: Array<string> = []
    await new Promise<void>((resolve) => {
      EventLoop.nextTurn(() => ran.push("nextTurn"))
      queueMicrotask(() => ran.push("microtask"))
      setTimeout(() => {
        ran.push("timer")
        resolve()
      }, 0)
    })
    assert.deepStrictEqual(ran, ["microtask", "nextTurn", "timer"])
  })

  it("two ends waking each other do not starve a timer: it fires within a few budgets of wake-ups", async () => {
    const EventLoop = await loadWithoutSetImmediate()
    let wakes = 0
    let stop = false
    const firedAfter = await new Promise<number>((resolve) => {
      setTimeout(() => {
        stop = true
        resolve(wakes)
      }, 0)
      // each wake-up schedules the next, as the two ends of a busy in-memory pair do
      const step = () => {
        wakes++
        if (!stop && wakes < 5_000_000) EventLoop.wake(step)
      }
      step()
    })
    // with setImmediate: about 1024 (one budget) per turn. A MessageChannel message is not a turn
    // of Node's event loop, which delivers up to 1000 of them before it runs timers: renewing the
    // budget on each let about a million wake-ups run first.
    assert.isBelow(firedAfter, 50_000, `wake-ups before a setTimeout(0) fired: ${firedAfter}`)
  })
})
