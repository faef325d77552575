/**
 * Pieces both commands share: the failure that ends `ews` with a one-line reason, the flags
 * `--json` / `--stats` / `--subprotocol`, the stdin line stream, and the watcher that turns the
 * connection's control-frame counters into `ping` / `pong` events.
 *
 * @since 0.1.0
 */
import type { Connection } from "@effect-websocket/core"
import { Token } from "@effect-websocket/schema"
import { Data, Duration, Effect, Option, Runtime, Stdio, Stream } from "effect"
import { Flag } from "effect/cli"
import type { PlatformError } from "effect/PlatformError"
import type { Output } from "./Output.ts"

/**
 * Ends `ews` with a non-zero exit status. The reason has already been printed (through
 * {@link fail}), so the runtime does not report it again.
 *
 * @category errors
 * @since 0.1.0
 */
export class CliFailure extends Data.TaggedError("CliFailure")<{
  readonly message: string
  readonly exitCode: number
}> {
  override get [Runtime.errorExitCode](): number {
    return this.exitCode
  }
  override get [Runtime.errorReported](): boolean {
    return false
  }
}

/**
 * Whether a command stopped by SIGINT / SIGTERM reported a failure on its way out (its connection
 * did not close normally): the exit status is then 1, as for any other failure, not the 0 of an
 * interrupted run.
 *
 * @category models
 * @since 0.1.0
 */
export const failedOnInterrupt = { reported: false }

/**
 * Reports an error (one line on stderr; also a JSON `error` event with `--json`) and fails with
 * a {@link CliFailure}.
 *
 * @category constructors
 * @since 0.1.0
 */
export const fail = (
  output: Output,
  message: string,
  details?: { readonly tag?: string; readonly code?: number; readonly status?: number }
): Effect.Effect<never, CliFailure> =>
  Effect.andThen(
    output.emit({
      event: "error",
      tag: details?.tag ?? "UsageError",
      message,
      ...(details?.code === undefined ? {} : { code: details.code }),
      ...(details?.status === undefined ? {} : { status: details.status })
    }),
    Effect.fail(new CliFailure({ message, exitCode: 1 }))
  )

/**
 * `--json`.
 *
 * @category flags
 * @since 0.1.0
 */
export const json = Flag.Boolean("json").pipe(
  Flag.withDescription(
    "Print one JSON object per line on stdout for every event (listening, open, message with type/size/preview, ping, pong, close with code/reason, error with tag, stats)"
  ),
  Flag.withDefault(false)
)

/**
 * `--stats`.
 *
 * @category flags
 * @since 0.1.0
 */
export const stats = Flag.Boolean("stats").pipe(
  Flag.withDescription("At exit, print how many messages and bytes went each way (on stderr; a `stats` event with --json)"),
  Flag.withDefault(false)
)

/**
 * `--subprotocol` / `-s`, repeatable; each value must be an RFC 7230 token.
 *
 * @category flags
 * @since 0.1.0
 */
export const subprotocols = (description: string) =>
  Flag.String("subprotocol").pipe(
    Flag.withAlias("s"),
    Flag.withMetavar("name"),
    Flag.withDescription(description),
    Flag.filter(Token.isToken, (s) => `${JSON.stringify(s)} is not a valid subprotocol name (an RFC 7230 token)`),
    Flag.atLeast(0)
  )

/**
 * The lines read from stdin (without their line terminators), until EOF.
 *
 * @category constructors
 * @since 0.1.0
 */
export const stdinLines: Stream.Stream<string, PlatformError, Stdio.Stdio> = Stream.unwrap(
  Effect.map(Effect.service(Stdio.Stdio), (stdio) => stdio.stdin.pipe(Stream.decodeText(), Stream.splitLines))
)

/**
 * The lines read from stdin as bytes, as they came (not decoded: bytes that are not UTF-8 stay
 * as they are), split at LF, a CR before it dropped as text lines drop it (a lone CR stays: text
 * lines also end there, but these bytes need not be text); until EOF.
 *
 * @category constructors
 * @since 0.1.0
 */
export const stdinByteLines: Stream.Stream<Uint8Array, PlatformError, Stdio.Stdio> = Stream.unwrap(
  Effect.map(Effect.service(Stdio.Stdio), (stdio) =>
    Stream.suspend(() => {
      /**
       * The start of a line whose end has not come yet, in the pieces it came in (joined once the
       * line ends: joined at every chunk, a long line would be copied once per chunk).
       */
      let pieces: Array<Uint8Array> = []
      const lineOf = (last: Uint8Array) => {
        const bytes = pieces.length === 0 ? last : Buffer.concat([...pieces, last])
        pieces = []
        return bytes.at(-1) === 0x0d ? bytes.subarray(0, -1) : bytes
      }
      return stdio.stdin.pipe(
        Stream.map((chunk) => {
          const lines: Array<Uint8Array> = []
          let start = 0
          for (let end = chunk.indexOf(0x0a); end !== -1; end = chunk.indexOf(0x0a, start)) {
            lines.push(lineOf(chunk.slice(start, end)))
            start = end + 1
          }
          if (start < chunk.length) pieces.push(chunk.slice(start))
          return lines
        }),
        Stream.flattenIterable,
        Stream.concat(Stream.suspend(() => (pieces.length === 0 ? Stream.empty : Stream.make(lineOf(new Uint8Array(0))))))
      )
    }))
)

/**
 * How often the control-frame counters are looked at.
 *
 * @category constants
 * @since 0.1.0
 */
export const CONTROL_POLL = Duration.millis(25)

/**
 * Emits a `ping` / `pong` event for every control frame counted in `stats` since the last call.
 * The library answers pings by itself and reports control frames only as counters: they are
 * looked at before each message is shown (so a ping that came before a message is shown before
 * it) and, between messages, by polling (see {@link watchControlFrames}).
 *
 * @category constructors
 * @since 0.1.0
 */
export const controlFrames = (stats: Connection.Stats, output: Output, client?: number) => {
  let pings = stats.pingsIn
  let pongs = stats.pongsIn
  const base = client === undefined ? {} : { client }
  const emit = Effect.gen(function*() {
    // (the frames are claimed before the events are written: a check that runs meanwhile, while
    // a write waits for stdout, emits only what came after them)
    const newPings = stats.pingsIn - pings
    const newPongs = stats.pongsIn - pongs
    pings += newPings
    pongs += newPongs
    for (let i = 0; i < newPings; i++) yield* output.emit({ event: "ping", ...base })
    for (let i = 0; i < newPongs; i++) yield* output.emit({ event: "pong", ...base })
  })
  // (nothing new, nearly always: no effect to run)
  return Effect.suspend(() => pings === stats.pingsIn && pongs === stats.pongsIn ? Effect.void : emit)
}

/**
 * Runs `check` every {@link CONTROL_POLL} until interrupted (a connection's, or every
 * connection's of a server at once).
 *
 * @category constructors
 * @since 0.1.0
 */
export const watchControlFrames = (check: Effect.Effect<void>): Effect.Effect<never> =>
  Effect.forever(Effect.andThen(Effect.sleep(CONTROL_POLL), check))

/**
 * Close codes after which a connection counts as having ended normally.
 *
 * @category constants
 * @since 0.1.0
 */
export const NORMAL_CLOSE_CODES: ReadonlySet<number> = new Set([1000, 1001, 1005])

/**
 * The value of an optional flag, or `undefined`.
 *
 * @category utils
 * @since 0.1.0
 */
export const orUndefined = <A>(option: Option.Option<A>): A | undefined => Option.getOrUndefined(option)
