/**
 * Fairness towards the event loop. Fibers that wake each other synchronously (an Effect fiber
 * resumed from a callback runs at once, inside the caller) or through microtasks, such as the two
 * ends of an in-memory transport, can go on forever without the event loop turning: timers, I/O
 * and every other fiber would starve. Such wake-ups ask {@link mayContinue} first, and past a
 * budget go through {@link nextTurn} instead.
 *
 * @since 0.1.0
 */

/** Wake-ups allowed in a row without the event loop turning (a few hundred microseconds of work). */
const BUDGET = 1024

/**
 * The wake-up of a row that has the budget renewed once the event loop turns. Not the first: a
 * renewal per turn was a `setImmediate` per message with one message in flight (about 0.4 µs of
 * CPU per round trip); wake-ups spread over turns now share one per 64, and a row within a single
 * turn still stops within {@link BUDGET} (a few dozen wake-ups counted on earlier turns come off it).
 */
const RENEW_AT = 64

let inARow = 0

const immediate = (globalThis as { readonly setImmediate?: (f: () => void) => unknown }).setImmediate

/** What is used of a `MessagePort`: `ref` and `unref` are Node's (and Bun's), absent in browsers. */
interface Port {
  onmessage: (() => void) | null
  postMessage(message: undefined): void
  ref?: () => void
  unref?: () => void
}

/**
 * Runs `f` on a later turn of the event loop: `setImmediate` where the runtime has it, else a
 * `MessageChannel` message (browsers clamp `setTimeout(f, 0)` to 4 ms), else `setTimeout`.
 *
 * @internal
 */
export const nextTurn: (f: () => void) => void = (() => {
  if (immediate !== undefined) return (f) => void immediate(f)
  if (typeof MessageChannel === "function") {
    const queue: Array<() => void> = []
    const channel = new MessageChannel()
    const port = channel.port1 as unknown as Port
    // (setting onmessage starts the port, in browsers; in Node and Bun it also holds the process
    // open, as a pending immediate does: only while a callback waits, so that it can exit)
    port.onmessage = () => {
      const f = queue.shift()
      if (queue.length === 0) port.unref?.()
      f?.()
    }
    port.unref?.()
    return (f) => {
      if (queue.length === 0) port.ref?.()
      queue.push(f)
      ;(channel.port2 as unknown as Port).postMessage(undefined)
    }
  }
  return (f) => void setTimeout(f, 0)
})()

/**
 * Runs `f` once the event loop has turned, timers included, to renew the budget: `setImmediate`,
 * else `setTimeout`. Not a `MessageChannel` message: Node delivers those in batches of up to 1000,
 * ahead of timers, so a budget renewed by each let two busy in-memory ends run for seconds before
 * a due timer (measured: a 20 ms sleep took 3 s).
 */
const afterTimers: (f: () => void) => void = immediate !== undefined
  ? nextTurn
  : (f) => void setTimeout(f, 0)

const reset = () => {
  inARow = 0
}

/**
 * Counts one wake-up: `true` while the budget lasts (wake at once), `false` once the event loop
 * is overdue (wake through {@link nextTurn}). The budget renews when the event loop has turned
 * after the {@link RENEW_AT}th wake-up of the row.
 *
 * @internal
 */
export const mayContinue = (): boolean => {
  if (++inARow === RENEW_AT) afterTimers(reset)
  return inARow <= BUDGET
}

/**
 * Runs `f` now while the budget lasts (see {@link mayContinue}), else on the next turn.
 *
 * @internal
 */
export const wake = (f: () => void): void => {
  if (mayContinue()) f()
  else nextTurn(f)
}
