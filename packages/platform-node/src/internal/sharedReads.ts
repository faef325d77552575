/**
 * Reads into one buffer shared by the sockets of a thread: Node's `onread` option of
 * `net.Socket`, turned on for a socket that already exists (one that `node:http` handed over
 * after an upgrade, which no public option can reach).
 *
 * A socket read the usual way gets new memory for every read (up to 64 KiB outside V8's heap,
 * which the collector must account for and free) and passes it through the `Readable` machinery
 * as a `data` event. With the shared buffer, each read lands in the same memory and goes straight
 * to a callback, which must copy out what it keeps before it returns: the next read of any socket
 * overwrites it. The reads of a TCP or pipe handle run one at a time, from the event loop's poll,
 * never inside JavaScript that runs already, so one buffer serves every such socket of a thread.
 * TLS sockets are left out: a write, an end or a renegotiation from JavaScript can make Node
 * decrypt pending bytes at once, a read inside whatever callback is running, maybe one that still
 * uses the shared buffer.
 *
 * Node keeps the `onread` option under symbols of its own (`kBuffer`, `kBufferCb`, `kBufferGen`)
 * and tells the socket's handle with `useUserBuffer`; both are found by feature detection on a
 * socket made with the option, and where they are not as expected, sockets keep their `data`
 * events.
 *
 * @internal
 */
import * as Net from "node:net"
import type { Duplex } from "node:stream"

/**
 * The size of the shared buffer: a read takes at most this much. Node's own reads take at most
 * 64 KiB; larger reads bring a large message in fewer system calls and wake-ups (measured on
 * Node 24 over loopback: an echo server at 64 KiB and 1 MiB messages spends about a tenth less
 * CPU per message with 256 KiB than with 64 KiB).
 */
const SHARED_READ_SIZE = 256 * 1024

let sharedBuffer: Buffer | undefined = undefined

interface OnreadKeys {
  readonly buffer: symbol
  readonly callback: symbol
  readonly generator: symbol
}

/**
 * Where a socket made with the `onread` option keeps it (checked on such a socket: the buffer,
 * the callback, and no buffer generator); `undefined` when this Node keeps it otherwise.
 */
const onreadKeys: OnreadKeys | undefined = (() => {
  try {
    const buffer = Buffer.alloc(1)
    const callback = () => true
    const probe = new Net.Socket({ onread: { buffer, callback } })
    const state = probe as unknown as Record<symbol, unknown>
    const find = (description: string) =>
      Object.getOwnPropertySymbols(probe).find((symbol) => symbol.description === description)
    const bufferKey = find("kBuffer")
    const callbackKey = find("kBufferCb")
    const generatorKey = find("kBufferGen")
    probe.destroy()
    if (bufferKey === undefined || callbackKey === undefined || generatorKey === undefined) return undefined
    if (state[bufferKey] !== buffer || state[callbackKey] !== callback || state[generatorKey] !== null) return undefined
    return { buffer: bufferKey, callback: callbackKey, generator: generatorKey }
  } catch {
    return undefined
  }
})()

interface StreamHandle {
  readonly useUserBuffer?: unknown
}

/**
 * Whether the reads of `handle` come from the event loop's poll only, never while JavaScript
 * runs: a TCP or pipe handle (not TLS, nor a handle over a JavaScript stream).
 */
const readsFromEventLoop = (handle: StreamHandle): boolean => {
  const kind = handle.constructor?.name
  return kind === "TCP" || kind === "Pipe"
}

/**
 * Makes `socket` read into the shared buffer and hand every read to `onBytes` (a view of the
 * shared buffer, valid only until `onBytes` returns), instead of emitting `data`. A `net.Socket`
 * over TCP or IPC qualifies while it has nothing buffered, no encoding, and no `data` listener
 * but `dataListeners` of the caller's; `false` for any other stream (TLS, or any `Duplex`), which
 * keeps its `data` events. Pausing and resuming the socket stops and restarts its reads (a socket
 * handed over paused stays paused), and its end, errors and close are emitted as before.
 */
export const readIntoSharedBuffer = (
  socket: Duplex,
  dataListeners: number,
  onBytes: (bytes: Buffer) => void
): boolean => {
  if (onreadKeys === undefined || !(socket instanceof Net.Socket)) return false
  const handle = (socket as unknown as { readonly _handle?: StreamHandle | null })._handle
  const state = socket as unknown as Record<symbol, unknown>
  if (
    handle == null || typeof handle.useUserBuffer !== "function" || !readsFromEventLoop(handle) ||
    socket.destroyed || socket.connecting || socket.readableLength > 0 ||
    socket.readableEncoding !== null || socket.listenerCount("data") !== dataListeners ||
    state[onreadKeys.buffer] != null
  ) return false
  const buffer = sharedBuffer ??= Buffer.allocUnsafeSlow(SHARED_READ_SIZE)
  state[onreadKeys.buffer] = buffer
  state[onreadKeys.callback] = (nread: number, into: Buffer) => {
    onBytes(into.subarray(0, nread))
  }
  state[onreadKeys.generator] = null
  ;(handle.useUserBuffer as (buffer: Buffer) => void).call(handle, buffer)
  // (a pause made before only stopped `data` events, the socket kept reading: now it stops reading)
  if (socket.isPaused()) socket.pause()
  return true
}
