/**
 * A first-in first-out queue on a circular array: what it holds is bounded by the most items
 * waiting at once (rounded up to a power of two), not by how many went through, and released
 * once empty when a burst grew it past 64 slots; up to that, taking the last item allocates
 * nothing. An array used as a queue with a read index does neither: emptied
 * only once every item was taken, it grows by one slot per item for as long as a consumer stays
 * a few behind.
 *
 * @since 0.1.0
 */

/** Slots of a ring's first storage. */
const INITIAL_SLOTS = 8

/** The most slots a ring keeps once empty: the storage a burst grew beyond it is released. */
const RETAINED_SLOTS = 64

/**
 * A first-in first-out queue whose storage is bounded by the most items it held at once (see
 * the module's description): the message buffer of a connection and the pipes of a memory pair.
 *
 * @internal
 */
export class Ring<A> {
  private slots: Array<A | undefined> = []
  /** The index of the first item. */
  private first = 0
  private count = 0

  /** Items in the queue. */
  get size(): number {
    return this.count
  }

  /** Slots of storage held (for tests: bounded by the most items held at once). */
  get capacity(): number {
    return this.slots.length
  }

  /** Adds `a` at the end. */
  push(a: A): void {
    if (this.count === this.slots.length) this.grow()
    this.slots[(this.first + this.count) & (this.slots.length - 1)] = a
    this.count++
  }

  /** The first item, `undefined` when empty. */
  peek(): A | undefined {
    return this.count === 0 ? undefined : this.slots[this.first]
  }

  /** Removes and returns the first item, `undefined` when empty. */
  shift(): A | undefined {
    if (this.count === 0) return undefined
    const a = this.slots[this.first]
    this.slots[this.first] = undefined
    this.first = (this.first + 1) & (this.slots.length - 1)
    if (--this.count === 0 && this.slots.length > RETAINED_SLOTS) this.release()
    return a
  }

  /** Drops every item (the storage is kept, up to {@link RETAINED_SLOTS}). */
  clear(): void {
    while (this.count > 0) this.shift()
    this.first = 0
  }

  private release(): void {
    this.slots = []
    this.first = 0
  }

  private grow(): void {
    const old = this.slots
    const slots = new Array<A | undefined>(old.length === 0 ? INITIAL_SLOTS : 2 * old.length).fill(undefined)
    for (let i = 0; i < this.count; i++) slots[i] = old[(this.first + i) & (old.length - 1)]
    this.slots = slots
    this.first = 0
  }
}
