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

/**
 * Runs `attempt` under an {@link InterruptAt} for every `k` from 1, with fibers yielding every 2, 3
 * and 4 steps, until for each the operation completed before its interruption 3 times. `attempt`
 * gets the scheduler and a label for its assertions, and says whether the operation completed.
 */
export const sweepInterruptions = <E, R>(attempt: (scheduler: InterruptAt, at: string) => Effect.Effect<boolean, E, R>) =>
  Effect.gen(function*() {
    for (const ops of [3, 4, 5]) {
      for (let k = 1, completed = 0; completed < 3; k++) {
        if (yield* attempt(new InterruptAt(k, ops), `yielding every ${ops - 1} steps, interrupted at task ${k}`)) completed++
      }
    }
  })

/** Waits (real time, at most `ms`) until `condition` holds; whether it did. */
export const eventually = (condition: () => boolean, ms = 3000) =>
  Effect.promise(() =>
    new Promise<boolean>((resolve) => {
      const started = Date.now()
      const check = () => condition() ? resolve(true) : Date.now() - started > ms ? resolve(false) : setTimeout(check, 5)
      check()
    })
  )
