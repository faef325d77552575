#!/usr/bin/env node
/**
 * The `ews` executable.
 *
 * @since 0.1.0
 */
import { NodeRuntime, NodeServices } from "@effect/platform-node"
import { Effect, Fiber } from "effect"
import { run, teardown } from "./Cli.ts"
import { failedOnInterrupt } from "./Common.ts"
import { oneLine } from "./Output.ts"

/**
 * Runs `ews`; when the reader of stdout or stderr goes away (`ews connect URL | head -1`), stops
 * as on SIGINT (the connections close with 1001) instead of dying of the EPIPE. What is written
 * after that is dropped. Any other failure to write them (a full disk, an I/O error) stops it the
 * same way, with exit status 1 and, for stdout, `ews: cannot write to stdout: <reason>` on stderr.
 */
const main = Effect.withFiber((fiber) => {
  let failed = false
  const onError = (stream: "stdout" | "stderr") => (error: NodeJS.ErrnoException) => {
    if (error.code !== "EPIPE") {
      failedOnInterrupt.reported = true
      if (stream === "stdout" && !failed) process.stderr.write(`ews: cannot write to stdout: ${oneLine(error.message)}\n`)
      failed = true
    }
    Effect.runFork(Fiber.interrupt(fiber))
  }
  process.stdout.on("error", onError("stdout"))
  process.stderr.on("error", onError("stderr"))
  process.on("SIGINT", onSignal)
  process.on("SIGTERM", onSignal)
  return run
})

/**
 * The first SIGINT / SIGTERM closes the connections (the runtime interrupts the command); a second
 * one, while they are still closing, ends the process at once with the status of a process that
 * signal killed (130 for SIGINT, 143 for SIGTERM), as a shell user pressing Ctrl-C twice expects.
 */
let signals = 0
const onSignal = (signal: NodeJS.Signals) => {
  if (++signals < 2) return
  process.stderr.write("ews: interrupted again; exiting without waiting for the connections to close\n")
  process.exit(signal === "SIGTERM" ? 143 : 130)
}

main.pipe(Effect.provide(NodeServices.layer), NodeRuntime.runMain({ teardown }))
