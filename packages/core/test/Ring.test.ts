import { assert, describe, it } from "@effect/vitest"
import { Arbitrary, Effect, Schema } from "effect"
import { Ring } from "../src/internal/ring.ts"

const int = (minimum: number, maximum: number) => Arbitrary.schema(Schema.Int.check(Schema.isBetween({ minimum, maximum })))

/** How many slots of a ring's storage hold an item: no more than it has (one taken is not kept alive). */
const held = (ring: Ring<unknown>) => (Reflect.get(ring, "slots") as Array<unknown>).filter((a) => a !== undefined).length

/** The storage a ring may hold after at most `most` items at once: a power of two, at least 8. */
const bound = (most: number) => {
  let slots = 8
  while (slots < most) slots *= 2
  return slots
}

describe("Ring", () => {
  it.effect.prop(
    "takes items in the order they came, and holds storage for the most waiting at once, not for all that went through (at most 64 slots once empty)",
    // a positive number is pushed, anything else takes the first item; in bursts (n > 0: n items
    // pushed, else 1 - n taken), so that the storage grows past 64 slots and is emptied again
    {
      ops: Arbitrary.array(int(-100, 100), { minLength: 0, maxLength: 40 }).pipe(
        Arbitrary.map((bursts) => {
          let pushed = 0
          return bursts.flatMap((n) => n > 0 ? Array.from({ length: n }, () => ++pushed) : Array<number>(1 - n).fill(0))
        })
      )
    },
    ({ ops }) =>
      Effect.sync(() => {
        const ring = new Ring<number>()
        const model: Array<number> = []
        let most = 0
        for (const op of ops) {
          if (op > 0) {
            ring.push(op)
            model.push(op)
          } else {
            assert.strictEqual(ring.peek(), model[0])
            assert.strictEqual(ring.shift(), model.shift())
          }
          most = Math.max(most, model.length)
          assert.strictEqual(ring.size, model.length)
          assert.strictEqual(held(ring), model.length, "a taken item is not kept")
          assert.isAtMost(ring.capacity, bound(most))
          if (model.length === 0) assert.isAtMost(ring.capacity, 64)
        }
        const rest: Array<number | undefined> = []
        while (ring.size > 0) rest.push(ring.shift())
        assert.deepStrictEqual(rest, model)
        assert.strictEqual(ring.shift(), undefined)
      }),
    // (lists grow with the check's size, 10 by default: up to 40 bursts)
    { arbitrary: { size: 40 } }
  )

  it.effect("a queue a few items behind for a million items keeps the storage of those few", () =>
    Effect.sync(() => {
      const ring = new Ring<number>()
      for (let i = 0; i < 5; i++) ring.push(i)
      // (compared in the loop, asserted once: a million assertions take seconds)
      let outOfOrder = 0
      for (let i = 5; i < 1_000_000; i++) {
        ring.push(i)
        if (ring.shift() !== i - 5) outOfOrder++
      }
      assert.strictEqual(outOfOrder, 0)
      assert.strictEqual(ring.size, 5)
      assert.strictEqual(ring.capacity, 8)
    }))

  it.effect("the storage a burst grew is released once the ring is empty; small storage is kept", () =>
    Effect.sync(() => {
      const ring = new Ring<number>()
      for (let i = 0; i < 100_000; i++) ring.push(i)
      assert.strictEqual(ring.capacity, 131_072)
      for (let i = 0; i < 99_999; i++) ring.shift()
      assert.strictEqual(ring.capacity, 131_072, "kept while an item waits")
      assert.strictEqual(ring.shift(), 99_999)
      assert.strictEqual(ring.capacity, 0, "released once empty")
      for (let i = 0; i < 40; i++) ring.push(i)
      for (let i = 0; i < 40; i++) ring.shift()
      assert.strictEqual(ring.capacity, 64, "64 slots or fewer stay for the next items")
      ring.push(1)
      assert.strictEqual(ring.shift(), 1)
    }))

  it.effect("clear drops every item and keeps the storage; the ring goes on from empty", () =>
    Effect.sync(() => {
      const ring = new Ring<string>()
      for (const s of ["a", "b", "c", "d", "e", "f", "g", "h", "i"]) ring.push(s)
      ring.shift()
      ring.clear()
      assert.strictEqual(ring.size, 0)
      assert.strictEqual(held(ring), 0, "the items are not kept")
      assert.strictEqual(ring.peek(), undefined)
      assert.strictEqual(ring.capacity, 16)
      ring.push("j")
      ring.push("k")
      assert.deepStrictEqual([ring.shift(), ring.shift(), ring.shift()], ["j", "k", undefined])
    }))
})
