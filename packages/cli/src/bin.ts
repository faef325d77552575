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

/**
 * Runs `ews`; when the reader of stdout or stderr goes away (`ews connect URL | head -1`), stops
 * as on SIGINT (the connections close with 1001) instead of dying of the EPIPE. What is written
 * after that is dropped. Any other failure to write them (a full disk, an I/O error) stops it the
 * same way, with exit status 1.
 */
const main = Effect.withFiber((fiber) => {
  const onError = (error: NodeJS.ErrnoException) => {
    if (error.code !== "EPIPE") failedOnInterrupt.reported = true
    Effect.runFork(Fiber.interrupt(fiber))
  }
  process.stdout.on("error", onError)
  process.stderr.on("error", onError)
  process.on("SIGINT", onSignal)
  process.on("SIGTERM", onSignal)
  return run
})

/**
 * The first SIGINT / SIGTERM closes the connections (the runtime interrupts the command); a second
 * one, while they are still closing, ends the process at once with status 130, as a shell user
 * pressing Ctrl-C twice expects.
 */
let signals = 0
const onSignal = () => {
  if (++signals < 2) return
  process.stderr.write("ews: interrupted again; exiting without waiting for the connections to close\n")
  process.exit(130)
}

main.pipe(Effect.provide(NodeServices.layer), NodeRuntime.runMain({ teardown }))
