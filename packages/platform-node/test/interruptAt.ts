import { Effect, type Fiber, type Scheduler } from "effect"

/**
 * A scheduler under which the fibers of an operation yield every `ops - 1` steps (every step with
 * 2; connecting over a socket needs 3 or more to make progress), and the `k`-th of their tasks
 * first calls `atTask` (e.g. interrupts the operation): sweeping `k` interrupts an operation at
 * every step, including just as a network event resumes it.
 */
export class InterruptAt implements Scheduler.Scheduler {
  readonly executionMode = "async" as const
  tasks = 0
  atTask: () => void = () => {}
  readonly k: number
  readonly ops: number
  constructor(k: number, ops: number) {
    this.k = k
    this.ops = ops
  }
  shouldYield(fiber: Fiber.Fiber<unknown, unknown>) {
    return fiber.currentOpCount >= this.ops
  }
  makeDispatcher(): Scheduler.SchedulerDispatcher {
    return {
      scheduleTask: (task) => {
        setImmediate(() => {
          if (++this.tasks === this.k) this.atTask()
          task()
        })
      },
      flush: () => {}
    }
  }
}

/** Waits (real time, at most `ms`) until `condition` holds; whether it did. */
export const eventually = (condition: () => boolean, ms = 3000) =>
  Effect.promise(() =>
    new Promise<boolean>((resolve) => {
      const started = Date.now()
      const check = () => condition() ? resolve(true) : Date.now() - started > ms ? resolve(false) : setTimeout(check, 5)
      check()
    })
  )
