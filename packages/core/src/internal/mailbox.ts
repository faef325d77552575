/**
 * A bounded mailbox between one producer that never waits (it checks `offer`'s result) and the
 * fibers that take from it. A taker that waits is woken in a microtask and takes the first message
 * then, so a connection's consumer runs before the next network event instead of a scheduler turn
 * later, and messages keep their order even when a taker is interrupted on its way.
 * Messages offered before the end (or a failure) are all taken before it.
 *
 * @since 0.1.0
 */
import { Cause, Effect, Exit } from "effect"
import * as EventLoop from "./eventLoop.ts"
import { Ring } from "./ring.ts"

interface Taker<A, E> {
  readonly resume: (effect: Effect.Effect<any, E | Cause.Done>) => void
  /** What the taker is handed for a message (`handedOver`: by the offerer, in its fiber). */
  readonly map: (a: A, handedOver: boolean) => unknown
  cancelled: boolean
}

const identity = <A>(a: A): A => a

/** Runs `f` soon: in a microtask, or on the next turn of the event loop once it is overdue. */
const handOver = (f: () => void): void => {
  if (EventLoop.mayContinue()) queueMicrotask(f)
  else EventLoop.nextTurn(f)
}

/** @internal */
export class Mailbox<A, E> {
  private readonly items = new Ring<A>()
  private ending: Exit.Exit<never, E | Cause.Done> | undefined = undefined
  private readonly takers: Array<Taker<A, E>> = []
  /** Takers woken and not yet run: the messages waiting for them do not count against the capacity. */
  private woken = 0
  readonly capacity: number

  constructor(capacity: number) {
    this.capacity = capacity
  }

  /** Messages waiting. */
  get size(): number {
    return this.items.size
  }

  /** Fibers waiting for a message. */
  get waiting(): number {
    return this.takers.length
  }

  /** Whether the mailbox ended or failed. */
  get isDone(): boolean {
    return this.ending !== undefined
  }

  /**
   * Keeps `a` and wakes the first waiting taker, if any; `false` when full or done (then `a` is not
   * taken). A woken taker takes the first message when it runs, so messages keep their order
   * whichever taker ends up with them.
   */
  offer(a: A): boolean {
    if (this.ending !== undefined) return false
    if (this.size - this.woken >= this.capacity) return false
    return this.offerBeyondCapacity(a)
  }

  /**
   * {@link offer} whatever the capacity (`false` only when done): for a producer that can no longer
   * be slowed down (its source broke) and must not drop what it already holds.
   */
  offerBeyondCapacity(a: A): boolean {
    if (this.ending !== undefined) return false
    this.items.push(a)
    const taker = this.takers.shift()
    if (taker !== undefined) this.wakeUp(taker)
    return true
  }

  /**
   * Hands `taker` the first message soon. If it went away meanwhile, the next waiting taker is woken
   * instead; if another fiber took the message meanwhile, the taker waits again, first in line.
   */
  private wakeUp(taker: Taker<A, E>): void {
    this.woken++
    handOver(() => {
      this.woken--
      if (taker.cancelled) {
        const next = this.size > this.woken ? this.takers.shift() : undefined
        if (next !== undefined) this.wakeUp(next)
        return
      }
      const a = this.poll()
      if (a !== undefined) taker.resume(Effect.succeed(taker.map(a, true)))
      else if (this.ending !== undefined) taker.resume(this.ending)
      else this.takers.unshift(taker)
    })
  }

  /** The next message, if one waits. */
  poll(): A | undefined {
    return this.items.shift()
  }

  /** Slots of storage held for waiting messages (for tests: bounded by the most waiting at once). */
  get storage(): number {
    return this.items.capacity
  }

  /** Takes the next message, waiting for one; fails with `Cause.Done` after the end, or with the failure. */
  readonly take: Effect.Effect<A, E | Cause.Done> = this.taking(identity)

  /**
   * An effect that takes the next message as `map(message, handedOver)` (`handedOver`: `map` runs
   * in the offerer's fiber, not the taker's), waiting for one (`onWait` is called
   * once this taker counts in `waiting`); fails with `Cause.Done` after the end, or with the failure.
   *
   * Micro-optimisation: made once and run for every message, so that its functions live as long as
   * the mailbox (V8 threw away the optimised code of a wait made per take at every full collection,
   * and compiled it again).
   */
  taking<B>(map: (a: A, handedOver: boolean) => B, onWait?: () => void): Effect.Effect<B, E | Cause.Done> {
    const wait = Effect.callback<B, E | Cause.Done>((resume) => {
      // looked at again as the wait starts: the fiber may have yielded since the look below, and
      // a message offered (or the end) meanwhile found no taker to wake
      const ready = this.poll()
      if (ready !== undefined) return resume(Effect.succeed(map(ready, false)))
      if (this.ending !== undefined) return resume(this.ending)
      const taker: Taker<A, E> = { resume, map, cancelled: false }
      this.takers.push(taker)
      onWait?.()
      return Effect.sync(() => {
        taker.cancelled = true
        const i = this.takers.indexOf(taker)
        if (i >= 0) this.takers.splice(i, 1)
      })
    })
    return Effect.suspend(() => {
      const a = this.poll()
      if (a !== undefined) return Effect.succeed(map(a, false))
      if (this.ending !== undefined) return this.ending
      return wait
    })
  }

  /** Ends the mailbox: takers get what waits, then `Cause.Done`. */
  end(): void {
    this.finish(Exit.fail(Cause.Done()))
  }

  /** Fails the mailbox: takers get what waits, then `error`. */
  fail(error: E): void {
    this.finish(Exit.fail(error))
  }

  private finish(exit: Exit.Exit<never, E | Cause.Done>): void {
    if (this.ending !== undefined) return
    this.ending = exit
    const takers = this.takers.splice(0)
    for (const taker of takers) queueMicrotask(() => taker.cancelled || taker.resume(exit))
  }
}
