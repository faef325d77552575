/**
 * The `ews` command: `ews serve` and `ews connect`, and how a run ends (exit status, flushing).
 *
 * @since 0.1.0
 */
import { Cause, Console, Effect, Exit, Runtime } from "effect"
import { CliOutput, Command } from "effect/cli"
import { failedOnInterrupt } from "./Common.ts"
import * as Connect from "./Connect.ts"
import * as Serve from "./Serve.ts"

/**
 * The version `ews --version` prints.
 *
 * @category constants
 * @since 0.1.0
 */
export const VERSION = "0.1.0"

/**
 * The `ews` command with its subcommands.
 *
 * @category commands
 * @since 0.1.0
 */
export const command = Command.make("ews").pipe(
  Command.withDescription(
    "A WebSocket client and server for the command line (like wscat / websocat), built on @effect-websocket. Run `ews <command> --help` for the flags of each command."
  ),
  Command.withExamples([
    { command: "ews serve --port 8080 --echo", description: "Start an echo server" },
    { command: "ews connect ws://127.0.0.1:8080/", description: "Connect and chat through stdin / stdout" }
  ]),
  Command.withSubcommands([Serve.command, Connect.command])
)

/**
 * A usage error's help and message go to stderr, so that stdout carries only what a run prints
 * (`ews connect --json ... | jq` does not read a help text); `--help` and `--version` print on
 * stdout.
 */
const usageOnStderr = CliOutput.layerPresenter({
  present: (event) =>
    event._tag === "InvalidInvocation"
      ? Effect.gen(function*() {
        const formatter = yield* CliOutput.Formatter
        yield* Console.error(formatter.formatHelpDoc(event.helpDoc))
        yield* Console.error(formatter.formatErrors(event.errors))
      })
      : CliOutput.defaultPresenter.present(event)
})

/**
 * Runs `ews` with the process arguments.
 *
 * @category running
 * @since 0.1.0
 */
export const run = Command.run(command, { version: VERSION }).pipe(Effect.provide(usageOnStderr))

/**
 * Runs `ews` with the given arguments (without `node` and the script).
 *
 * @category running
 * @since 0.1.0
 */
export const runWith = (args: ReadonlyArray<string>) =>
  Command.runWith(command, { version: VERSION })(args).pipe(Effect.provide(usageOnStderr))

/**
 * The exit status of a run: 0 on success and after SIGINT / SIGTERM (the connections were closed
 * on the way out) unless a connection then did not close normally (1), the failure's own status
 * otherwise (1 for every `ews` error and usage error).
 *
 * @category running
 * @since 0.1.0
 */
export const exitCode = <A, E>(exit: Exit.Exit<A, E>): number =>
  Exit.isSuccess(exit)
    ? 0
    : Cause.hasInterruptsOnly(exit.cause)
    ? (failedOnInterrupt.reported ? 1 : 0)
    : Runtime.getErrorExitCode(Cause.squash(exit.cause))

/**
 * Ends the process once stdout and stderr are flushed, or once a reader has read nothing for
 * {@link FLUSH_TIMEOUT_MS} (a paused pager): what it did not take is then lost, as with a signal.
 * A reader that is slow but reads is waited for.
 * Exiting explicitly matters: stdin may still be open (a server in `--echo` mode never reads it,
 * a client whose peer closed stops reading it), and it would keep the process alive.
 *
 * @category running
 * @since 0.1.0
 */
export const teardown: Runtime.Teardown = (exit, _onExit) => {
  const code = exitCode(exit)
  process.exitCode = code
  let pending = 2
  const done = () => {
    if (--pending === 0) process.exit(code)
  }
  let before = unwritten()
  let progressAt = Date.now()
  setInterval(() => {
    const now = unwritten()
    if (now.some((bytes, i) => bytes < before[i]!)) progressAt = Date.now()
    else if (Date.now() - progressAt >= FLUSH_TIMEOUT_MS) process.exit(code)
    before = now
  }, FLUSH_CHECK_MS)
  process.stdout.write("", done)
  process.stderr.write("", done)
}

/**
 * What stdout and stderr still hold, as counts that go down as a reader takes the bytes: each
 * stream's `writableLength`, and the `writeQueueSize` of its handle (pipes, TTYs, sockets). Both
 * are needed: Node counts a write handed to the system in `writableLength` until the whole of it
 * is written (8 MB on a pipe read at 1 MB/s stay 8 MB for 8 s), while the handle's queue falls as
 * the reader takes them.
 */
const unwritten = (): ReadonlyArray<number> =>
  [process.stdout, process.stderr].flatMap((stream) => {
    const queued: unknown = (stream as { readonly _handle?: { readonly writeQueueSize?: unknown } })._handle?.writeQueueSize
    return [stream.writableLength, typeof queued === "number" ? queued : 0]
  })

/** How long the end of a run waits for a reader of stdout or stderr that reads nothing. */
const FLUSH_TIMEOUT_MS = 2000
/** How often the end of a run looks whether a reader took something. */
const FLUSH_CHECK_MS = 100
