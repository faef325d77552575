/**
 * The object behind a `WebSocket.Handle`: its state, its decoded properties, its source of
 * randomness and what the opening handshake left for the session.
 *
 * @since 0.1.0
 */
import type { Property } from "@effect-websocket/schema"
import { Effect } from "effect"
import { WebCrypto } from "effect/crypto/WebCrypto"
import { pipeArguments } from "effect/Pipeable"
import type { Scope } from "effect/Scope"
import { Engine } from "./engine/engine.ts"
import { HandleState } from "./engine/state.ts"

/** The Web Crypto API as the `WebCrypto` reference of `effect/crypto` supplies it. */
export type WebCryptoApi = typeof globalThis.crypto

/** @internal */
export const TypeId = "~@effect-websocket/core/WebSocket/Handle"

/** No names: what a handle offers until its handshake begins (shared: the lists are replaced, never changed). */
const NONE: ReadonlyArray<string> = Object.freeze([])

/** The engine's source of random bytes (masking keys) from `crypto`: one function per source, not per handle. */
const randomFills = new WeakMap<WebCryptoApi, (bytes: Uint8Array) => void>()
const randomFillOf = (crypto: WebCryptoApi): (bytes: Uint8Array) => void => {
  let fill = randomFills.get(crypto)
  if (fill === undefined) {
    fill = (bytes) => {
      crypto.getRandomValues(bytes)
    }
    randomFills.set(crypto, fill)
  }
  return fill
}

/** @internal */
export class HandleImpl {
  readonly [TypeId] = TypeId
  /** Client: the `Sec-WebSocket-Key` sent, until the handshake ends. */
  key: string | undefined = undefined
  /** Client: the subprotocols offered, in order. */
  offeredSubprotocols: ReadonlyArray<string> = NONE
  /** Client: the names of the extensions offered, in order. */
  offeredExtensions: ReadonlyArray<string> = NONE
  /** Whether a handshake call that may wait (for the accept digest) is under way. */
  handshakeCallUnderWay = false
  readonly kind: "client" | "server"
  readonly properties: Property.HandleProperties
  readonly crypto: WebCryptoApi
  /** The session engine; it also holds the handle's state. */
  readonly engine: Engine
  constructor(kind: "client" | "server", properties: Property.HandleProperties, crypto: WebCryptoApi) {
    this.kind = kind
    this.properties = properties
    this.crypto = crypto
    this.engine = new Engine({
      isClient: kind === "client",
      receiveBufferSize: properties.receiveBufferSize,
      sendBufferSize: properties.sendBufferSize,
      disableMasking: properties.disableMasking,
      disableUtf8Verification: properties.disableUtf8Verification,
      maxMessageSize: properties.maxMessageSize,
      allocatedBuffer: properties.allocatedBuffer,
      randomFill: randomFillOf(crypto)
    })
  }
  get state(): HandleState {
    return this.engine.state
  }
  set state(state: HandleState) {
    this.engine.state = state
  }
  get stateName(): string {
    return this.engine.stateName
  }
  pipe() {
    return pipeArguments(this, arguments)
  }
  toJSON() {
    return { _id: "WebSocket.Handle", kind: this.kind, state: this.stateName }
  }
  toString() {
    return `WebSocket.Handle(${this.kind}, ${this.stateName})`
  }
}

/**
 * A handle of `kind` with `properties` already decoded, owned by the current scope: closing it
 * deletes the handle (see {@link deleteHandle}). Its randomness comes from the `WebCrypto`
 * reference, read as it is made.
 *
 * @internal
 */
export const acquireHandle = (
  kind: "client" | "server",
  properties: Property.HandleProperties
): Effect.Effect<HandleImpl, never, Scope> =>
  Effect.gen(function*() {
    const crypto: WebCryptoApi = yield* WebCrypto
    return yield* Effect.acquireRelease(
      Effect.sync(() => new HandleImpl(kind, properties, crypto)),
      (handle) => Effect.sync(() => deleteHandle(handle))
    )
  })

/**
 * Deletes a handle (websocket.h `WebSocketDeleteHandle`): every later call on it fails. Idempotent.
 *
 * @internal
 */
export const deleteHandle = (handle: HandleImpl): void => {
  handle.state = HandleState.Deleted
  handle.key = undefined
}
