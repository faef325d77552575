/**
 * What `ews` prints. Every observable thing is an {@link Event}; an {@link Output} renders it
 * either for people (received messages on stdout, everything else on stderr) or, with `--json`,
 * as one JSON object per line on stdout.
 *
 * Plain rendering of a received message: text is printed as it is, followed by a newline; binary
 * is printed as one line `<binary N bytes: HEX>`, with the hex of at most the first
 * {@link PREVIEW_BYTES} bytes (and `...` when there are more).
 *
 * @since 0.1.0
 */
import type { Connection } from "@effect-websocket/core"
import { Console, Effect } from "effect"

/**
 * Bytes of a binary message shown (as hex) in a preview.
 *
 * @category constants
 * @since 0.1.0
 */
export const PREVIEW_BYTES = 64

/**
 * Characters of a text message shown in a JSON preview.
 *
 * @category constants
 * @since 0.1.0
 */
export const PREVIEW_CHARS = 256

/**
 * Counts of what went through one connection, or through all of a server's connections.
 *
 * @category models
 * @since 0.1.0
 */
export interface Totals {
  readonly messagesIn: number
  readonly bytesIn: number
  readonly messagesOut: number
  readonly bytesOut: number
  readonly pongsIn: number
}

/**
 * Everything `ews` reports. `client` numbers a server's connections from 1.
 *
 * @category models
 * @since 0.1.0
 */
export type Event =
  | { readonly event: "listening"; readonly url: string }
  | {
    readonly event: "open"
    readonly client?: number
    readonly url?: string
    readonly path?: string
    readonly remoteAddress?: string
    readonly protocol: string
  }
  | {
    readonly event: "message"
    readonly client?: number
    readonly type: "text" | "binary"
    readonly size: number
    readonly preview: string
    readonly truncated: boolean
  }
  | { readonly event: "ping"; readonly client?: number }
  | { readonly event: "pong"; readonly client?: number }
  | {
    readonly event: "close"
    readonly client?: number
    readonly code: number
    readonly reason: string
    readonly clean: boolean
    readonly initiator: "local" | "remote" | "none"
  }
  | {
    readonly event: "error"
    readonly client?: number
    readonly tag: string
    readonly message: string
    readonly code?: number
    readonly status?: number
  }
  | ({ readonly event: "stats"; readonly client?: number; readonly connections?: number } & Totals)

/**
 * Renders events.
 *
 * @category models
 * @since 0.1.0
 */
export interface Output {
  readonly json: boolean
  readonly emit: (event: Event) => Effect.Effect<void>
  /** A received message as an event (or, in plain mode, not at all when `print` is false). */
  readonly message: (message: Connection.Message, client?: number, print?: boolean) => Effect.Effect<void>
}

const utf8 = new TextEncoder()

const hex = (bytes: Uint8Array): string => Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString("hex")

/**
 * The event describing a received message, with a preview: the first {@link PREVIEW_CHARS}
 * characters of a text, the hex of the first {@link PREVIEW_BYTES} bytes of a binary message.
 *
 * @category constructors
 * @since 0.1.0
 */
export const messageEvent = (message: Connection.Message, client?: number): Event => {
  const base = client === undefined ? {} : { client }
  if (typeof message === "string") {
    let preview = message.length > PREVIEW_CHARS ? message.slice(0, PREVIEW_CHARS) : message
    // never cut a surrogate pair in half
    if (preview.length < message.length && /[\uD800-\uDBFF]$/.test(preview)) preview = preview.slice(0, -1)
    return {
      event: "message",
      ...base,
      type: "text",
      size: utf8.encode(message).length,
      preview,
      truncated: preview.length < message.length
    }
  }
  return {
    event: "message",
    ...base,
    type: "binary",
    size: message.length,
    preview: hex(message.subarray(0, PREVIEW_BYTES)),
    truncated: message.length > PREVIEW_BYTES
  }
}

/**
 * How a binary message is printed in plain mode: `<binary N bytes: HEX>`.
 *
 * @category formatting
 * @since 0.1.0
 */
export const formatBinary = (bytes: Uint8Array): string =>
  bytes.length === 0
    ? "<binary 0 bytes>"
    : `<binary ${bytes.length} byte${bytes.length === 1 ? "" : "s"}: ${hex(bytes.subarray(0, PREVIEW_BYTES))}${
      bytes.length > PREVIEW_BYTES ? "..." : ""
    }>`

const CLOSE_NAMES: Record<number, string> = {
  1000: "normal closure",
  1001: "going away",
  1002: "protocol error",
  1003: "unsupported data",
  1005: "no status",
  1006: "abnormal closure",
  1007: "invalid payload data",
  1008: "policy violation",
  1009: "message too big",
  1010: "mandatory extension",
  1011: "internal error",
  1012: "service restart",
  1013: "try again later",
  1014: "bad gateway",
  1015: "TLS handshake failure"
}

/**
 * `1000 (normal closure)`, `4000`, ...
 *
 * @category formatting
 * @since 0.1.0
 */
export const describeCode = (code: number): string => {
  const name = CLOSE_NAMES[code]
  return name === undefined ? `${code}` : `${code} (${name})`
}

/**
 * Error messages on one line.
 *
 * @category formatting
 * @since 0.1.0
 */
export const oneLine = (s: string): string =>
  // (split, not one replace: `\s*[\r\n]+\s*` takes time quadratic in a run of blanks)
  s.split(/[\r\n]+/).map((line) => line.trim()).filter((line) => line !== "").join(" ")

/**
 * Text a peer chose (a close reason) for the middle of one of our lines: escaped as in a JSON
 * string, without the quotes, so that a line break in it cannot start a line that looks like ours.
 *
 * @category formatting
 * @since 0.1.0
 */
export const inline = (s: string): string => JSON.stringify(s).slice(1, -1)

/**
 * `s` with control characters (C0, DEL, C1: a terminal's escape sequences start with them) and
 * line separators written as `\uXXXX`: what a peer chose (a status text, a close reason) cannot
 * drive the terminal that shows our own lines. (Escaped in JSON too, where it stays the same string.)
 */
const printable = (s: string): string =>
  s.replace(/[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, "0")}`)

/**
 * Settles at stdout's next `drain` (or when it fails or closes): one wait, with one set of
 * listeners, that every writer stopped by a full stdout shares.
 */
let drained: Promise<void> | undefined
const nextDrain = (): Promise<void> =>
  drained ??= new Promise<void>((resolve) => {
    const stdout = process.stdout
    const done = () => {
      stdout.off("drain", done)
      stdout.off("close", done)
      stdout.off("error", done)
      drained = undefined
      resolve()
    }
    stdout.on("drain", done)
    stdout.on("close", done)
    stdout.on("error", done)
  })

/**
 * Writes `line` to stdout and waits while stdout is full (a slow reader of a pipe): received
 * messages are then taken no faster than they are printed, so the connection stops reading
 * rather than memory growing (as `websocat` does). Stops waiting if stdout fails or closes.
 * A fiber that is being stopped (SIGINT / SIGTERM: what it prints on its way out, such as the
 * close and stats events) writes without waiting, even where it cannot be interrupted; the end of
 * the run bounds how long the rest is waited for (see `Cli.teardown`).
 */
const stdoutLine = (line: string): Effect.Effect<void> =>
  Effect.suspend(() => {
    const stdout = process.stdout
    if (stdout.write(`${line}\n`) || stdout.destroyed) return Effect.void
    // (interruptible in a finalizer too: a fiber already interrupted does not start the wait)
    return Effect.asVoid(Effect.exit(Effect.interruptible(Effect.promise(nextDrain))))
  })

const prefix = (client: number | undefined) => (client === undefined ? "" : `[#${client}] `)

const plural = (n: number, word: string) => `${n} ${word}${n === 1 ? "" : "s"}`

const plain = (event: Event): Effect.Effect<void> => {
  switch (event.event) {
    case "listening":
      return Console.log(`listening ${event.url}`)
    case "open": {
      const protocol = event.protocol === "" ? "" : ` (subprotocol ${event.protocol})`
      return event.client === undefined
        ? Console.error(`connected to ${event.url ?? "?"}${protocol}`)
        : Console.error(`${prefix(event.client)}connected from ${event.remoteAddress ?? "?"} to ${event.path ?? "/"}${protocol}`)
    }
    case "message":
      return Effect.void // printed by `Output.message`
    case "ping":
      return Console.error(`${prefix(event.client)}received ping`)
    case "pong":
      return Console.error(`${prefix(event.client)}received pong`)
    case "close": {
      const reason = event.reason === "" ? "" : ` ${printable(JSON.stringify(event.reason))}`
      const by = event.initiator === "local" ? "by us" : event.initiator === "remote" ? "by the peer" : "without a closing handshake"
      return Console.error(
        `${prefix(event.client)}closed ${describeCode(event.code)}${reason}, ${by}${event.clean ? "" : " (not clean)"}`
      )
    }
    case "error":
      return Console.error(`${event.client === undefined ? "ews: " : prefix(event.client)}${printable(event.message)}`)
    case "stats": {
      const connections = event.connections === undefined ? "" : `${plural(event.connections, "connection")}, `
      return Console.error(
        `${prefix(event.client)}stats: ${connections}received ${plural(event.messagesIn, "message")} (${
          plural(event.bytesIn, "byte")
        }), sent ${plural(event.messagesOut, "message")} (${plural(event.bytesOut, "byte")}), ${plural(event.pongsIn, "pong")} received`
      )
    }
  }
}

/**
 * An {@link Output}: JSON lines on stdout with `json`, otherwise plain text. In JSON mode errors
 * are also printed as one line on stderr, so a failing run always says why there.
 *
 * @category constructors
 * @since 0.1.0
 */
export const make = (json: boolean): Output => {
  const emit = (event: Event): Effect.Effect<void> =>
    json
      ? Effect.andThen(
        stdoutLine(printable(JSON.stringify(event))),
        event.event === "error" && event.client === undefined ? Console.error(`ews: ${printable(event.message)}`) : Effect.void
      )
      : plain(event)
  const message = (message: Connection.Message, client?: number, print = true): Effect.Effect<void> =>
    json
      ? emit(messageEvent(message, client))
      : print
      ? stdoutLine(typeof message === "string" ? message : formatBinary(message))
      : Effect.void
  return { json, emit, message }
}

/**
 * The counts of a connection.
 *
 * @category constructors
 * @since 0.1.0
 */
export const totalsOf = (stats: Connection.Stats): Totals => ({
  messagesIn: stats.messagesIn,
  bytesIn: stats.bytesIn,
  messagesOut: stats.messagesOut,
  bytesOut: stats.bytesOut,
  pongsIn: stats.pongsIn
})

/**
 * The sum of several connections' counts.
 *
 * @category constructors
 * @since 0.1.0
 */
export const sumTotals = (all: Iterable<Totals>): Totals => {
  let messagesIn = 0, bytesIn = 0, messagesOut = 0, bytesOut = 0, pongsIn = 0
  for (const s of all) {
    messagesIn += s.messagesIn
    bytesIn += s.bytesIn
    messagesOut += s.messagesOut
    bytesOut += s.bytesOut
    pongsIn += s.pongsIn
  }
  return { messagesIn, bytesIn, messagesOut, bytesOut, pongsIn }
}
