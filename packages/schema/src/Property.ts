/**
 * Handle properties (`WEB_SOCKET_PROPERTY`) with the ranges and defaults of websocket.h, decoded
 * once when a handle is created; and the global properties `WebSocketGetGlobalProperty` reads.
 *
 * @since 0.1.0
 */
import { Schema, SchemaTransformation } from "effect"

/**
 * Defaults of the handle properties, per handle kind.
 *
 * @see websocket.h `WEB_SOCKET_PROPERTY_TYPE` (documented defaults)
 * @category constants
 * @since 0.1.0
 */
export const defaults = {
  client: { receiveBufferSize: 4096, sendBufferSize: 4096 },
  server: { receiveBufferSize: 4096, sendBufferSize: 16 },
  /** 64 MiB: a peer cannot make a handle buffer more than this for one message. */
  maxMessageSize: 64 * 1024 * 1024
} as const

/**
 * Bytes an allocated buffer needs beyond the receive and send buffers.
 *
 * @see websocket.h `WEB_SOCKET_ALLOCATED_BUFFER_PROPERTY_TYPE` ("receive + send + 256")
 * @category constants
 * @since 0.1.0
 */
export const ALLOCATED_BUFFER_OVERHEAD = 256

const intBetween = (name: string, minimum: number, maximum: number) =>
  Schema.Number.check(
    Schema.makeFilter((n: number) =>
      (Number.isInteger(n) && n >= minimum && n <= maximum) ||
      `${name} must be an integer from ${minimum} to ${maximum}, got ${n}`
    )
  )

const GLOBAL_ONLY = ["keepaliveInterval", "supportedVersions"] as const

/**
 * The handle properties a caller may pass to `createClientHandle` / `createServerHandle`. Every key
 * is optional (a key set to `undefined` takes the default, as with every other option); decode with `{ onExcessProperty: "error" }` to reject unknown keys, as the handle
 * constructors do.
 *
 * @see websocket.h `WEB_SOCKET_PROPERTY` with `WEB_SOCKET_RECEIVE_BUFFER_SIZE_PROPERTY_TYPE` (0),
 * `..._SEND_BUFFER_SIZE_...` (1), `..._DISABLE_MASKING_...` (2), `..._ALLOCATED_BUFFER_...` (3),
 * `..._DISABLE_UTF8_VERIFICATION_...` (4)
 * @category schemas
 * @since 0.1.0
 */
export const HandlePropertiesInput = Schema.Struct({
  /**
   * The most bytes read per `RECEIVE_FROM_NETWORK` and the largest chunk delivered: 256-65536,
   * default 4096. Without `allocatedBuffer`, a handle starts with at most 4 KiB and grows to this
   * size once a read fills what it has (a peer that sends more), so idle handles stay small.
   */
  receiveBufferSize: Schema.optional(intBetween("receiveBufferSize", 256, 65536)),
  /** Engine send buffer: 16-65536, default 4096 (client) or 16 (server). */
  sendBufferSize: Schema.optional(intBetween("sendBufferSize", 16, 65536)),
  /** Client: send with a zero masking key. Server: accept unmasked frames. Default false. */
  disableMasking: Schema.optional(Schema.Boolean),
  /** Memory the handle works in instead of allocating: at least receive + send + 256 bytes. */
  allocatedBuffer: Schema.optional(Schema.Uint8Array),
  /** Skip UTF-8 validation of received text. Default false. */
  disableUtf8Verification: Schema.optional(Schema.Boolean),
  /** Largest message accepted, in bytes; larger ones fail with close code 1009. Default 64 MiB. */
  maxMessageSize: Schema.optional(intBetween("maxMessageSize", 1, Number.MAX_SAFE_INTEGER)),
  /** Global only: present so that passing it gets a precise error. */
  keepaliveInterval: Schema.optionalKey(Schema.Unknown),
  /** Global only: present so that passing it gets a precise error. */
  supportedVersions: Schema.optionalKey(Schema.Unknown)
})

/**
 * The handle properties a caller may pass.
 *
 * @category models
 * @since 0.1.0
 */
export type HandlePropertiesInput = Omit<typeof HandlePropertiesInput.Type, (typeof GLOBAL_ONLY)[number]>

/**
 * Every handle property with its value or default.
 *
 * @category models
 * @since 0.1.0
 */
export interface HandleProperties {
  readonly receiveBufferSize: number
  readonly sendBufferSize: number
  readonly disableMasking: boolean
  readonly allocatedBuffer: Uint8Array | undefined
  readonly disableUtf8Verification: boolean
  readonly maxMessageSize: number
}

const resolve = (kind: "client" | "server") => (input: typeof HandlePropertiesInput.Type): HandleProperties => ({
  receiveBufferSize: input.receiveBufferSize ?? defaults[kind].receiveBufferSize,
  sendBufferSize: input.sendBufferSize ?? defaults[kind].sendBufferSize,
  disableMasking: input.disableMasking ?? false,
  allocatedBuffer: input.allocatedBuffer,
  disableUtf8Verification: input.disableUtf8Verification ?? false,
  maxMessageSize: input.maxMessageSize ?? defaults.maxMessageSize
})

const ResolvedHandleProperties = Schema.Struct({
  receiveBufferSize: Schema.Number,
  sendBufferSize: Schema.Number,
  disableMasking: Schema.Boolean,
  allocatedBuffer: Schema.UndefinedOr(Schema.Uint8Array),
  disableUtf8Verification: Schema.Boolean,
  maxMessageSize: Schema.Number
})

const makeHandleProperties = (kind: "client" | "server") =>
  HandlePropertiesInput.check(
    Schema.makeFilter((input) => {
      for (const key of GLOBAL_ONLY) {
        if (input[key] !== undefined) {
          return `${key} is a global property: read it with getGlobalProperty, it cannot be set on a handle`
        }
      }
      const resolved = resolve(kind)(input)
      const needed = resolved.receiveBufferSize + resolved.sendBufferSize + ALLOCATED_BUFFER_OVERHEAD
      if (resolved.allocatedBuffer !== undefined && resolved.allocatedBuffer.byteLength < needed) {
        return `allocatedBuffer must hold receiveBufferSize + sendBufferSize + ${ALLOCATED_BUFFER_OVERHEAD} = ${needed} bytes, got ${resolved.allocatedBuffer.byteLength}`
      }
      return true
    })
  ).pipe(
    Schema.decodeTo(
      ResolvedHandleProperties,
      SchemaTransformation.transform<HandleProperties, typeof HandlePropertiesInput.Type>({
        decode: resolve(kind),
        encode: (resolved) => {
          const { allocatedBuffer, ...rest } = resolved
          return allocatedBuffer === undefined ? rest : { ...rest, allocatedBuffer }
        }
      })
    )
  )

/**
 * The properties of a client handle, decoded to {@link HandleProperties} with the client defaults.
 *
 * @see websocket.h `WebSocketCreateClientHandle` (`pProperties`, `ulPropertyCount`)
 * @category schemas
 * @since 0.1.0
 */
export const ClientHandleProperties = makeHandleProperties("client")

/**
 * The properties of a server handle, decoded to {@link HandleProperties} with the server defaults.
 *
 * @see websocket.h `WebSocketCreateServerHandle`
 * @category schemas
 * @since 0.1.0
 */
export const ServerHandleProperties = makeHandleProperties("server")

/**
 * The keepalive interval in milliseconds: 30000 by default, and never below 15000 (lower values
 * are raised to 15000).
 *
 * @see websocket.h `WEB_SOCKET_KEEPALIVE_INTERVAL_PROPERTY_TYPE`
 * @category schemas
 * @since 0.1.0
 */
export const KeepaliveInterval = intBetween("keepaliveInterval", 0, 0xffffffff).pipe(
  Schema.decodeTo(
    Schema.Number,
    SchemaTransformation.transform({ decode: (n) => Math.max(n, MIN_KEEPALIVE_INTERVAL), encode: (n) => n })
  )
)

/**
 * The smallest keepalive interval, in milliseconds.
 *
 * @see websocket.h `WEB_SOCKET_KEEPALIVE_INTERVAL_PROPERTY_TYPE` (floor 15000)
 * @category constants
 * @since 0.1.0
 */
export const MIN_KEEPALIVE_INTERVAL = 15000

/**
 * The default keepalive interval, in milliseconds.
 *
 * @category constants
 * @since 0.1.0
 */
export const DEFAULT_KEEPALIVE_INTERVAL = 30000
