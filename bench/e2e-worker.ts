/**
 * One side of the end-to-end benchmark (`e2e.ts`), run as a child process so that client and
 * server each get their own event loop (and, on a machine with two cores or more, their own core).
 *
 * `node e2e-worker.ts server ours|ws`: an echo server on 127.0.0.1 (a free port); sends
 * `{ type: "ready", url }` over IPC, then answers `{ type: "cpu" }` with its CPU time.
 *
 * `node e2e-worker.ts client ours|ws`: runs the measurements the parent asks for
 * (`{ type: "run", ... }`, see `RunRequest`) and answers with a `RunResult`.
 *
 * Every message is binary. Both roles exit when the parent goes away (IPC disconnect).
 */
import { NodeClient, NodeServer } from "../packages/platform-node/src/index.ts"
import { Effect, Stream } from "effect"
import { WebSocket, WebSocketServer } from "ws"

export interface RunRequest {
  readonly type: "run"
  readonly id: number
  readonly url: string
  readonly mode: "latency" | "throughput"
  readonly size: number
  /** Messages kept in flight (1 for latency). */
  readonly inFlight: number
  /** Our client writes without a bound (`socketBuffers.writeBufferLimit: Infinity`), as the `ws` client does. */
  readonly unboundedWrites: boolean
  /** New messages are sent until this many milliseconds have passed; then the ones in flight are awaited. */
  readonly timeMs: number
  /** Give up (and fail) when the measurement has not finished after this many milliseconds. */
  readonly limitMs: number
}

export interface RunResult {
  readonly type: "result"
  readonly id: number
  readonly messages: number
  readonly bytes: number
  readonly elapsedMs: number
  /** Median round-trip time in microseconds (one message in flight), else -1. */
  readonly rttMedianUs: number
  /** CPU time (user + system) of this process during the timed part, in microseconds. */
  readonly cpuUs: number
}

export interface RunFailure {
  readonly type: "error"
  readonly id: number
  readonly message: string
}

export type ToParent =
  | { readonly type: "ready"; readonly url: string }
  | { readonly type: "cpu"; readonly id: number; readonly cpuUs: number }
  | RunResult
  | RunFailure

export type ToWorker = RunRequest | { readonly type: "cpu"; readonly id: number }

const [role, impl] = process.argv.slice(2)
if ((role !== "server" && role !== "client") || (impl !== "ours" && impl !== "ws")) {
  throw new Error(`usage: node e2e-worker.ts server|client ours|ws (got ${role} ${impl})`)
}

const post = (message: ToParent): void => {
  process.send!(message)
}

process.on("disconnect", () => process.exit(0))

const cpuMicros = (): number => {
  const usage = process.cpuUsage()
  return usage.user + usage.system
}

// ---------------------------------------------------------------------------------------------
// Servers
// ---------------------------------------------------------------------------------------------

const startOurs = (): void => {
  const program = Effect.gen(function*() {
    const server = yield* NodeServer.serve((connection) =>
      Stream.runForEach(connection.messages, (message) => connection.send(message))
    )
    post({ type: "ready", url: server.url })
    return yield* Effect.never
  }).pipe(Effect.scoped)
  Effect.runFork(program).addObserver((exit) => {
    console.error("our echo server stopped", exit)
    process.exit(1)
  })
}

const startWs = (): void => {
  const server = new WebSocketServer({ host: "127.0.0.1", port: 0, perMessageDeflate: false, maxPayload: 64 * 1024 * 1024 })
  server.on("connection", (socket) => {
    socket.on("message", (data: Buffer, isBinary: boolean) => socket.send(data, { binary: isBinary }))
    socket.on("error", () => {})
  })
  server.on("listening", () => {
    const address = server.address() as { port: number }
    post({ type: "ready", url: `ws://127.0.0.1:${address.port}/` })
  })
}

// ---------------------------------------------------------------------------------------------
// Clients
// ---------------------------------------------------------------------------------------------

/** Round-trip times of the current measurement (one message in flight), in milliseconds. */
const RTTS = new Float64Array(2_000_000)

/** The state of one measurement, shared by both clients: what was sent and what came back. */
class Tally {
  sent = 0
  received = 0
  bytes = 0
  /** Set once `deadline` has passed: no new message is sent. */
  stopped = false
  readonly rtts: Float64Array
  rttCount = 0
  /** Send time of the message in flight (one in flight only). */
  sentAt = 0
  start = 0
  end = 0
  cpuStart = 0
  cpuEnd = 0
  deadline = 0

  readonly request: RunRequest
  readonly payload: Uint8Array

  constructor(request: RunRequest, payload: Uint8Array) {
    this.request = request
    this.payload = payload
    this.rtts = request.inFlight === 1 ? RTTS : RTTS.subarray(0, 0)
  }

  begin(): void {
    this.cpuStart = cpuMicros()
    this.start = performance.now()
    this.deadline = this.start + this.request.timeMs
  }

  /** Counts a message about to be sent. */
  onSend(): void {
    this.sent++
    if (this.request.inFlight === 1) this.sentAt = performance.now()
  }

  /** Checks an echo; returns true when another message may be sent. */
  onEcho(data: Uint8Array): boolean {
    const now = performance.now()
    if (data.length !== this.payload.length) {
      throw new Error(`echo of ${data.length} bytes, expected ${this.payload.length}`)
    }
    this.received++
    this.bytes += data.length
    if (this.received > this.sent) throw new Error(`${this.received} echoes for ${this.sent} messages`)
    // every byte of the first echo and the last byte of every echo
    if (this.received === 1 ? !sameBytes(data, this.payload) : data[data.length - 1] !== this.payload[data.length - 1]) {
      throw new Error(`echo ${this.received} differs from the message sent`)
    }
    if (this.request.inFlight === 1 && this.rttCount < this.rtts.length) this.rtts[this.rttCount++] = now - this.sentAt
    if (!this.stopped && now >= this.deadline) this.stopped = true
    if (this.stopped && this.received === this.sent) {
      this.end = now
      this.cpuEnd = cpuMicros()
    }
    return !this.stopped
  }

  get done(): boolean {
    return this.stopped && this.received === this.sent
  }

  result(): RunResult {
    if (!this.done) throw new Error(`unfinished: ${this.received} of ${this.sent} echoes`)
    const rtts = this.rtts.subarray(0, this.rttCount).sort()
    return {
      type: "result",
      id: this.request.id,
      messages: this.received,
      bytes: this.bytes,
      elapsedMs: this.end - this.start,
      rttMedianUs: rtts.length === 0 ? -1 : 1000 * (rtts.length % 2 === 1
        ? rtts[rtts.length >> 1]!
        : (rtts[(rtts.length >> 1) - 1]! + rtts[rtts.length >> 1]!) / 2),
      cpuUs: this.cpuEnd - this.cpuStart
    }
  }
}

const sameBytes = (a: Uint8Array, b: Uint8Array): boolean =>
  Buffer.from(a.buffer, a.byteOffset, a.byteLength).equals(Buffer.from(b.buffer, b.byteOffset, b.byteLength))

const payloads = new Map<number, Uint8Array>()
const payloadOf = (size: number): Uint8Array => {
  let payload = payloads.get(size)
  if (payload === undefined) {
    payload = new Uint8Array(size)
    for (let i = 0; i < size; i++) payload[i] = (i * 131 + 17) & 0xff
    payloads.set(size, payload)
  }
  return payload
}

const limitError = (tally: Tally): Error =>
  new Error(`no finish within ${tally.request.limitMs} ms: ${tally.received} echoes of ${tally.sent} messages`)

/** The `ws` client: `send` on open and on every echo while the time lasts. */
const runWs = (request: RunRequest): Promise<RunResult> =>
  new Promise((resolve, reject) => {
    const tally = new Tally(request, payloadOf(request.size))
    const payload = tally.payload
    const socket = new WebSocket(request.url, { perMessageDeflate: false, maxPayload: 64 * 1024 * 1024 })
    socket.binaryType = "nodebuffer"
    let settled = false
    const settle = (outcome: () => void) => {
      if (settled) return
      settled = true
      clearTimeout(timer)
      socket.close()
      outcome()
    }
    const timer = setTimeout(() => settle(() => reject(limitError(tally))), request.limitMs)
    socket.on("error", (error) => settle(() => reject(error)))
    socket.on("close", () => settle(() => reject(new Error(`closed after ${tally.received} echoes of ${tally.sent} messages`))))
    socket.on("open", () => {
      tally.begin()
      for (let i = 0; i < request.inFlight; i++) {
        tally.onSend()
        socket.send(payload, { binary: true })
      }
    })
    socket.on("message", (data: Buffer, isBinary: boolean) => {
      try {
        if (!isBinary) throw new Error("a text echo")
        if (tally.onEcho(data)) {
          tally.onSend()
          socket.send(payload, { binary: true })
        } else if (tally.done) {
          settle(() => resolve(tally.result()))
        }
      } catch (error) {
        settle(() => reject(error))
      }
    })
  })

/**
 * Our client, shaped like the `ws` one: the first messages sent, then `connection.messages`
 * consumed by one fiber that sends the next message for every echo while the time lasts. (A `ws`
 * echo server reads whatever it is sent, so a send waiting for the socket cannot stall the echoes it
 * waits for; against our server, which waits as well, `unboundedWrites` lifts our bound.)
 */
const runOurs = (request: RunRequest): Promise<RunResult> => {
  const tally = new Tally(request, payloadOf(request.size))
  const payload = tally.payload
  const program = Effect.gen(function*() {
    const connection = yield* NodeClient.connect(
      request.url,
      request.unboundedWrites ? { socketBuffers: { writeBufferLimit: Number.POSITIVE_INFINITY } } : undefined
    )
    tally.begin()
    for (let i = 0; i < request.inFlight; i++) {
      tally.onSend()
      yield* connection.send(payload)
    }
    yield* Stream.runForEachWhile(connection.messages, (message) => {
      if (typeof message === "string") return Effect.die(new Error("a text echo"))
      if (tally.onEcho(message)) {
        tally.onSend()
        return Effect.as(connection.send(payload), true)
      }
      return Effect.succeed(!tally.done)
    })
    if (!tally.done) throw new Error(`the messages ended after ${tally.received} echoes of ${tally.sent} messages`)
    return tally.result()
  }).pipe(
    Effect.timeoutOrElse({ duration: request.limitMs, orElse: () => Effect.die(limitError(tally)) }),
    Effect.scoped
  )
  return Effect.runPromise(program)
}

const startClient = (): void => {
  const run = impl === "ours" ? runOurs : runWs
  process.on("message", (message: ToWorker) => {
    if (message.type !== "run") return
    run(message).then(
      (result) => post(result),
      (error: unknown) => post({ type: "error", id: message.id, message: error instanceof Error ? error.stack ?? error.message : String(error) })
    )
  })
  post({ type: "ready", url: "" })
}

if (role === "server") {
  process.on("message", (message: ToWorker) => {
    if (message.type === "cpu") {
      post({ type: "cpu", id: message.id, cpuUs: cpuMicros() })
    }
  })
  if (impl === "ours") startOurs()
  else startWs()
} else {
  startClient()
}
