/**
 * Tests of `ews`'s shared parts: how it reads stdin (the lines of `--binary` over any chunking of
 * the input), and its ping and pong events.
 */
import { assert, describe, it } from "@effect/vitest"
import { Arbitrary, Effect, Schema, Stdio, Stream } from "effect"
import { controlFrames, stdinByteLines } from "../src/Common.ts"
import type * as Output from "../src/Output.ts"

const int = (minimum: number, maximum: number) => Arbitrary.schema(Schema.Int.check(Schema.isBetween({ minimum, maximum })))
/** LF, CR and two other bytes (one not UTF-8). */
const byte = Arbitrary.map(int(0, 3), (i) => [0x0a, 0x0d, 0x61, 0xff][i]!)

/** The lines of `input` as the JSDoc says: split at LF, a CR before it dropped, a last line without LF kept. */
const expectedLines = (input: ReadonlyArray<number>): Array<Array<number>> => {
  const lines: Array<Array<number>> = []
  let line: Array<number> = []
  for (const b of input) {
    if (b === 0x0a) {
      lines.push(line.at(-1) === 0x0d ? line.slice(0, -1) : line)
      line = []
    } else line.push(b)
  }
  if (line.length > 0) lines.push(line.at(-1) === 0x0d ? line.slice(0, -1) : line)
  return lines
}

/** `stdinByteLines` over `chunks` as stdin. */
const linesOf = (chunks: ReadonlyArray<Uint8Array>) =>
  Effect.map(
    Stream.runCollect(stdinByteLines).pipe(Effect.provide(Stdio.layerTest({ stdin: Stream.fromIterable(chunks) }))),
    (lines) => Array.from(lines, (line) => Array.from(line))
  )

describe("stdinByteLines (--binary)", () => {
  it.effect.prop(
    "splits the bytes at LF, whatever the chunks they come in",
    { input: Arbitrary.array(byte, { maxLength: 60 }), cuts: Arbitrary.array(int(0, 60), { maxLength: 8 }) },
    ({ input, cuts }) =>
      Effect.gen(function*() {
        const at = [0, ...cuts.filter((c) => c < input.length).sort((a, b) => a - b), input.length]
        const chunks = at.slice(1).map((end, i) => Uint8Array.from(input.slice(at[i], end)))
        assert.deepStrictEqual(yield* linesOf(chunks), expectedLines(input))
      }),
    // (lists grow with the check's size, 10 by default: up to 60 bytes, so that the cuts fall inside)
    { arbitrary: { size: 60 } }
  )

  it.effect("a line of many chunks is joined once, not once per chunk", () =>
    Effect.gen(function*() {
      // 2 000 chunks of 64 KiB: joined at every chunk, this copied about 130 GB
      const chunk = new Uint8Array(64 * 1024).fill(0x61)
      const chunks = [...Array.from({ length: 2000 }, () => chunk), Uint8Array.of(0x0a)]
      const lines = yield* Effect.map(
        Stream.runCollect(stdinByteLines).pipe(Effect.provide(Stdio.layerTest({ stdin: Stream.fromIterable(chunks) }))),
        (all) => Array.from(all, (line) => line.length)
      )
      assert.deepStrictEqual(lines, [2000 * 64 * 1024])
    }))
})

describe("controlFrames", () => {
  it.effect("checks that run at once while an event waits for stdout report each ping once", () =>
    Effect.gen(function*() {
      const events: Array<string> = []
      // an output whose events wait, as they do for a full stdout
      const output: Output.Output = {
        json: true,
        emit: (event) => Effect.andThen(Effect.sync(() => events.push(event.event)), Effect.yieldNow),
        message: () => Effect.void
      }
      const stats = { messagesIn: 0, bytesIn: 0, messagesOut: 0, bytesOut: 0, pingsIn: 0, pongsIn: 0 }
      const check = controlFrames(stats, output)
      stats.pingsIn = 1
      // the watcher's poll and a message's check at the same time
      yield* Effect.all([check, check], { concurrency: "unbounded" })
      assert.deepStrictEqual(events, ["ping"])
      stats.pingsIn = 2
      stats.pongsIn = 1
      yield* check
      assert.deepStrictEqual(events, ["ping", "ping", "pong"])
    }))
})
