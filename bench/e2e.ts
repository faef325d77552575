/**
 * End-to-end echo benchmark over loopback (127.0.0.1): WebSocket messages sent, echoed and
 * received whole, through real sockets, `node:http` upgrades and the Effect runtime.
 *
 * Two comparisons, each between our implementation and `ws`, with everything else the same:
 * - side "server": the `ws` client against our echo server
 *   (`NodeServer.serve((c) => Stream.runForEach(c.messages, (m) => c.send(m)))`) and against a
 *   `ws` echo server (`socket.send(data, { binary: isBinary })`);
 * - side "client": our client (`NodeClient.connect`, `connection.messages`, `connection.send`)
 *   and the `ws` client, both against the `ws` echo server.
 * Both clients work alike: the first messages go out at once, then every echo received (checked)
 * triggers the next send from the message handler until the time is up.
 *
 * Modes: "latency" keeps 1 message in flight (send, await the echo, send the next) and reports the
 * median round-trip time; "throughput" keeps 100 in flight. Messages are binary, of 16 B, 1 KiB,
 * 64 KiB and 1 MiB; every echo is checked (count, length, content of the first one, last byte of
 * every one).
 *
 * Layout: each server and each client runs in its own child process (`e2e-worker.ts`), so the
 * client and the server of a measurement each have an event loop (and a core) of their own, and
 * the contenders never share a heap. This process only coordinates: it is idle while a
 * measurement runs. One measurement opens a new connection, sends new messages for `--time`
 * milliseconds, waits for the ones in flight, and closes the connection; only the part from the
 * first send to the last echo is timed. Contenders alternate (ours, ws, ours, ws, ...), after one
 * warm-up measurement each; the medians of the repetitions are printed. No garbage collection is
 * forced between measurements: a forced full collection resets V8's heap sizing (the young
 * generation shrinks back), and the collections that follow it would be measured instead of a
 * process in its steady state, as a server runs.
 *
 * "CPU µs/msg" is the CPU time (user + system) of the process being compared (the server for side
 * "server", the client for side "client") divided by the messages echoed: it stays meaningful
 * when the machine is noisy or the other side is the bottleneck.
 *
 * The fixed side is `ws` by default. With `--peer=ours` it is ours instead (our client against both
 * servers, both clients against our server): when the fixed side is the slower one (the `ws` client
 * masks large messages in JavaScript under `--bufferutil=without`), it sets the pace whoever is
 * compared, and the comparison says little; a faster peer shows more of the compared side. Our
 * client then writes without a bound, as the `ws` client does, so that two peers of ours that both
 * echo from the fiber that reads never wait on each other (see `socketBuffers` in the README).
 *
 * Usage: `node --conditions=@effect-websocket/source e2e.ts [--reps=N] [--time=MS] [--warmup=MS]
 * [--filter=REGEX] [--contender=ours|ws|both] [--peer=ws|ours] [--bufferutil=without]
 * [--cpu-prof=ours-server,ours-client,...] [--cpu-prof-dir=DIR]`
 * (`--filter` matches "mode side size", e.g. `--filter="throughput server (16 B|1 KiB)"`;
 * `--cpu-prof` starts the named workers under `node --cpu-prof`). Defaults: 3 repetitions of 500 ms.
 */
import { fork, type ChildProcess } from "node:child_process"
import { createRequire } from "node:module"
import * as Os from "node:os"
import { fileURLToPath } from "node:url"
import type { RunRequest, RunResult, ToParent, ToWorker } from "./e2e-worker.ts"
import { applyBufferutilOption, argument, formatNumber, formatRatio, median, printTable, sizeLabel } from "./report.ts"

// ---------------------------------------------------------------------------------------------
// Settings
// ---------------------------------------------------------------------------------------------

const REPS = Math.max(1, Number(argument("reps") ?? 3))
/** Milliseconds during which new messages are sent, per measurement. */
const TIME_MS = Math.max(20, Number(argument("time") ?? 500))
const WARMUP_MS = Math.max(10, Number(argument("warmup") ?? 250))
const FILTER = argument("filter") === undefined ? undefined : new RegExp(argument("filter")!)
const CONTENDER = argument("contender") ?? "both"
/** The fixed other side of each comparison: the `ws` client and server (default), or ours. */
const PEER: Contender = argument("peer") === "ours" ? "ours" : "ws"
const CPU_PROF = new Set((argument("cpu-prof") ?? "").split(",").filter((s) => s !== ""))
const CPU_PROF_DIR = argument("cpu-prof-dir") ?? "profiles"
/** `--bufferutil=without`: every worker (they inherit the switches) masks in JavaScript. */
const WITHOUT_BUFFERUTIL = applyBufferutilOption()
/** A measurement that has not finished this long after its sending time is a failure. */
const LIMIT_MS = 30_000
/** Time to start a worker. */
const START_LIMIT_MS = 30_000

const SIZES = [16, 1024, 64 * 1024, 1024 * 1024]
const MODES = [
  { mode: "latency", inFlight: 1 },
  { mode: "throughput", inFlight: 100 }
] as const
const SIDES = ["server", "client"] as const

type Mode = (typeof MODES)[number]["mode"]
type Side = (typeof SIDES)[number]
type Contender = "ours" | "ws"

interface Config {
  readonly mode: Mode
  readonly inFlight: number
  readonly side: Side
  readonly size: number
  readonly label: string
}

// ---------------------------------------------------------------------------------------------
// Workers
// ---------------------------------------------------------------------------------------------

const WORKER = fileURLToPath(new URL("./e2e-worker.ts", import.meta.url))

interface Worker {
  readonly name: string
  readonly child: ChildProcess
  readonly url: string
  readonly request: <A extends ToParent>(message: ToWorker & { readonly id: number }, limitMs: number) => Promise<A>
}

const workers: Array<Worker> = []
let nextId = 1

const startWorker = (role: "server" | "client", impl: Contender): Promise<Worker> => {
  const name = `${impl}-${role}`
  const execArgv = ["--conditions=@effect-websocket/source"]
  if (CPU_PROF.has(name)) execArgv.push("--cpu-prof", `--cpu-prof-dir=${CPU_PROF_DIR}`, `--cpu-prof-name=${name}-${process.pid}.cpuprofile`)
  const child = fork(WORKER, [role, impl], { execArgv, stdio: ["ignore", "inherit", "inherit", "ipc"] })
  const pending = new Map<number, { resolve: (m: ToParent) => void; reject: (e: Error) => void }>()
  let failure: Error | undefined = undefined
  const failAll = (error: Error) => {
    failure ??= error
    for (const p of pending.values()) p.reject(error)
    pending.clear()
  }
  child.on("exit", (code, signal) => failAll(new Error(`worker ${name} exited (${signal ?? code})`)))
  child.on("error", (error) => failAll(error))
  return new Promise<Worker>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`worker ${name} did not start`)), START_LIMIT_MS)
    child.on("exit", () => {
      clearTimeout(timer)
      reject(failure)
    })
    child.on("message", (message: ToParent) => {
      if (message.type === "ready") {
        clearTimeout(timer)
        const worker: Worker = {
          name,
          child,
          url: message.url,
          request: <A extends ToParent>(request: ToWorker & { readonly id: number }, limitMs: number) =>
            new Promise<A>((resolve, reject) => {
              if (failure !== undefined) return reject(failure)
              const timer = setTimeout(() => {
                pending.delete(request.id)
                reject(new Error(`worker ${name} did not answer within ${limitMs} ms`))
              }, limitMs)
              pending.set(request.id, {
                resolve: (m) => {
                  clearTimeout(timer)
                  resolve(m as A)
                },
                reject: (e) => {
                  clearTimeout(timer)
                  reject(e)
                }
              })
              child.send(request)
            })
        }
        workers.push(worker)
        resolve(worker)
        return
      }
      const waiting = pending.get(message.id)
      if (waiting === undefined) return
      pending.delete(message.id)
      if (message.type === "error") waiting.reject(new Error(`${name}: ${message.message}`))
      else waiting.resolve(message)
    })
  })
}

/** Disconnects every worker (they exit, writing their CPU profiles), killing those that linger. */
const stopWorkers = async (): Promise<void> => {
  await Promise.all(workers.map((worker) =>
    new Promise<void>((resolve) => {
      const child = worker.child
      if (child.exitCode !== null || child.signalCode !== null) return resolve()
      const timer = setTimeout(() => {
        child.kill("SIGKILL")
        resolve()
      }, 10_000)
      child.once("exit", () => {
        clearTimeout(timer)
        resolve()
      })
      if (child.connected) child.disconnect()
      else child.kill("SIGKILL")
    })
  ))
}

// ---------------------------------------------------------------------------------------------
// Measurement
// ---------------------------------------------------------------------------------------------

interface Sample {
  readonly messagesPerSecond: number
  readonly megabytesPerSecond: number
  /** Median round-trip time in µs (latency mode), else undefined. */
  readonly rttUs: number | undefined
  /** CPU µs per message of the process being compared. */
  readonly cpuUsPerMessage: number
}

interface Pair {
  readonly client: Worker
  readonly server: Worker
}

const measure = async (config: Config, pair: Pair, timeMs: number): Promise<Sample> => {
  const request: RunRequest = {
    type: "run",
    id: nextId++,
    url: pair.server.url,
    mode: config.mode,
    size: config.size,
    inFlight: config.inFlight,
    unboundedWrites: PEER === "ours",
    timeMs,
    limitMs: timeMs + LIMIT_MS
  }
  const before = await pair.server.request<{ type: "cpu"; id: number; cpuUs: number }>({ type: "cpu", id: nextId++ }, 10_000)
  const result = await pair.client.request<RunResult>(request, request.limitMs + 10_000)
  const after = await pair.server.request<{ type: "cpu"; id: number; cpuUs: number }>({ type: "cpu", id: nextId++ }, 10_000)
  if (result.messages < 1 || result.bytes !== result.messages * config.size) {
    throw new Error(`${config.label}: ${result.messages} echoes with ${result.bytes} bytes`)
  }
  const seconds = result.elapsedMs / 1000
  const cpuUs = config.side === "server" ? after.cpuUs - before.cpuUs : result.cpuUs
  return {
    messagesPerSecond: result.messages / seconds,
    megabytesPerSecond: result.bytes / seconds / 1e6,
    rttUs: result.rttMedianUs >= 0 ? result.rttMedianUs : undefined,
    cpuUsPerMessage: cpuUs / result.messages
  }
}

const summary = (list: ReadonlyArray<Sample>): Sample | undefined =>
  list.length === 0 ? undefined : {
    messagesPerSecond: median(list.map((s) => s.messagesPerSecond)),
    megabytesPerSecond: median(list.map((s) => s.megabytesPerSecond)),
    rttUs: list[0]!.rttUs === undefined ? undefined : median(list.map((s) => s.rttUs!)),
    cpuUsPerMessage: median(list.map((s) => s.cpuUsPerMessage))
  }

// ---------------------------------------------------------------------------------------------
// Main
// ---------------------------------------------------------------------------------------------

const configs: Array<Config> = []
for (const { mode, inFlight } of MODES) {
  for (const size of SIZES) {
    for (const side of SIDES) {
      const label = `${mode} ${side} ${sizeLabel(size)}`
      if (FILTER === undefined || FILTER.test(label)) configs.push({ mode, inFlight, side, size, label })
    }
  }
}

const contenders: ReadonlyArray<Contender> = CONTENDER === "ours" ? ["ours"] : CONTENDER === "ws" ? ["ws"] : ["ours", "ws"]

const main = async (): Promise<void> => {
  const started = performance.now()
  const require = createRequire(import.meta.url)
  const wsVersion = (require("ws/package.json") as { version: string }).version
  console.log(`node ${process.version}; ws ${wsVersion}; ${Os.availableParallelism()} CPUs (${Os.cpus()[0]?.model ?? "?"})`)
  console.log(
    `end-to-end echo over 127.0.0.1, binary messages; client and server in separate processes; ` +
      `${REPS} x ${TIME_MS} ms per contender and case (warm-up ${WARMUP_MS} ms)`
  )
  console.log(`masking (both contenders and peers): ${WITHOUT_BUFFERUTIL ? "JavaScript (--bufferutil=without)" : "bufferutil where installed"}`)

  const needs = new Set<string>()
  for (const config of configs) {
    for (const contender of contenders) {
      needs.add(config.side === "server" ? `${contender}-server` : `${PEER}-server`)
      needs.add(config.side === "client" ? `${contender}-client` : `${PEER}-client`)
    }
  }
  const started_ = await Promise.all([...needs].map((name) => {
    const [impl, role] = name.split("-") as [Contender, "server" | "client"]
    return startWorker(role, impl).then((worker) => [name, worker] as const)
  }))
  const byName = new Map(started_)
  const pairOf = (config: Config, contender: Contender): Pair =>
    config.side === "server"
      ? { client: byName.get(`${PEER}-client`)!, server: byName.get(`${contender}-server`)! }
      : { client: byName.get(`${contender}-client`)!, server: byName.get(`${PEER}-server`)! }

  // Warm-up: every code path of every contender once, so that the measured rounds see settled
  // type feedback whatever their order.
  for (const config of configs) {
    for (const contender of contenders) await measure(config, pairOf(config, contender), WARMUP_MS)
  }

  const rows: Array<{ config: Config; ours: Sample | undefined; ws: Sample | undefined }> = []
  for (const config of configs) {
    const samples: Record<Contender, Array<Sample>> = { ours: [], ws: [] }
    for (let r = 0; r < REPS; r++) {
      // alternate which contender goes first, so that neither always follows the other
      const order = r % 2 === 0 ? contenders : [...contenders].reverse()
      for (const contender of order) samples[contender].push(await measure(config, pairOf(config, contender), TIME_MS))
    }
    const row = { config, ours: summary(samples.ours), ws: summary(samples.ws) }
    rows.push(row)
    const spread = (list: ReadonlyArray<Sample>) =>
      list.map((s) => formatNumber(s.messagesPerSecond)).join(" ")
    process.stderr.write(
      `  ${config.label}: ${formatRatio(row.ours?.messagesPerSecond, row.ws?.messagesPerSecond)}  (ours ${spread(samples.ours)} / ws ${spread(samples.ws)} msg/s)\n`
    )
  }
  await stopWorkers()

  console.log("")
  console.log(
    `e2e echo (median of ${REPS}; ratio = ours / ws messages per second, > 1 means faster; MB = 10^6 payload bytes ` +
      `one way; RTT = median round trip; CPU µs/msg = CPU time of the compared side per message)`
  )
  console.log(`side server: ${PEER} client -> our server vs ws server; side client: our client vs ws client -> ${PEER} server`)
  const header = [
    "mode",
    "in flight",
    "side",
    "size",
    "ours msg/s",
    "ws msg/s",
    "ours MB/s",
    "ws MB/s",
    "ours RTT µs",
    "ws RTT µs",
    "ours CPU µs/msg",
    "ws CPU µs/msg",
    "ratio"
  ]
  const table = rows.map(({ config, ours, ws }) => [
    config.mode,
    String(config.inFlight),
    config.side,
    sizeLabel(config.size),
    formatNumber(ours?.messagesPerSecond),
    formatNumber(ws?.messagesPerSecond),
    formatNumber(ours?.megabytesPerSecond),
    formatNumber(ws?.megabytesPerSecond),
    formatNumber(ours?.rttUs),
    formatNumber(ws?.rttUs),
    formatNumber(ours?.cpuUsPerMessage),
    formatNumber(ws?.cpuUsPerMessage),
    formatRatio(ours?.messagesPerSecond, ws?.messagesPerSecond)
  ])
  printTable(header, table, 4)
  console.log(`\ntotal ${((performance.now() - started) / 1000).toFixed(1)} s`)
}

/** Whatever happens, the run ends: a generous bound on the whole benchmark. */
const watchdog = setTimeout(() => {
  console.error("e2e: the benchmark took too long; stopping")
  for (const worker of workers) worker.child.kill("SIGKILL")
  process.exit(1)
}, 15 * 60_000)
watchdog.unref()

try {
  await main()
} catch (error) {
  await stopWorkers()
  throw error
}
