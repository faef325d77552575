/**
 * The object behind a `WebSocket.Handle`: its state, its decoded properties, its source of
 * randomness and what the opening handshake left for the session.
 *
 * @since 0.1.0
 */
import type { Property } from "@effect-websocket/schema"
import { pipeArguments } from "effect/Pipeable"
import { HandleState, stateNames } from "./engine/state.ts"

/** The Web Crypto API as the `WebCrypto` reference of `effect/crypto` supplies it. */
export type WebCryptoApi = typeof globalThis.crypto

/** @internal */
export const TypeId = "~@effect-websocket/core/WebSocket/Handle"

/** @internal */
export class HandleImpl {
  readonly [TypeId] = TypeId
  state: HandleState = HandleState.Created
  /** Client: the `Sec-WebSocket-Key` sent, until the handshake ends. */
  key: string | undefined = undefined
  /** Client: the subprotocols offered, in order. */
  offeredSubprotocols: ReadonlyArray<string> = []
  /** Client: the names of the extensions offered, in order. */
  offeredExtensions: ReadonlyArray<string> = []
  readonly kind: "client" | "server"
  readonly properties: Property.HandleProperties
  readonly crypto: WebCryptoApi
  constructor(kind: "client" | "server", properties: Property.HandleProperties, crypto: WebCryptoApi) {
    this.kind = kind
    this.properties = properties
    this.crypto = crypto
  }
  get stateName(): string {
    return stateNames[this.state]!
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
