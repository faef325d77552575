/**
 * What `WebSocket.getAction` hands out (websocket.h `WEB_SOCKET_ACTION`) and the queues it reads
 * (`WEB_SOCKET_ACTION_QUEUE`), with the C numeric values.
 *
 * @since 0.1.0
 */
import type { BufferType } from "./BufferType.ts"

/**
 * Action codes with their websocket.h values.
 *
 * @see websocket.h `WEB_SOCKET_ACTION`
 * @category constants
 * @since 0.1.0
 */
export const ActionCode = {
  /** 0 `WEB_SOCKET_NO_ACTION`: nothing to do now on this queue. */
  NoAction: 0,
  /** 1 `WEB_SOCKET_SEND_TO_NETWORK_ACTION`: write every buffer, in order. */
  SendToNetwork: 1,
  /** 2 `WEB_SOCKET_INDICATE_SEND_COMPLETE_ACTION`: the send is done; its payload may be reused. */
  IndicateSendComplete: 2,
  /** 3 `WEB_SOCKET_RECEIVE_FROM_NETWORK_ACTION`: read into the buffer. */
  ReceiveFromNetwork: 3,
  /** 4 `WEB_SOCKET_INDICATE_RECEIVE_COMPLETE_ACTION`: a chunk, a Close or a Pong arrived. */
  IndicateReceiveComplete: 4
} as const

/**
 * The action queues with their websocket.h values.
 *
 * @see websocket.h `WEB_SOCKET_ACTION_QUEUE`
 * @category constants
 * @since 0.1.0
 */
export const ActionQueue = {
  /** 0x1 `WEB_SOCKET_SEND_ACTION_QUEUE`: actions of application sends. */
  Send: 0x1,
  /** 0x2 `WEB_SOCKET_RECEIVE_ACTION_QUEUE`: receive actions and automatic pongs. */
  Receive: 0x2,
  /** 0x3 `WEB_SOCKET_ALL_ACTION_QUEUE` */
  All: 0x3
} as const

/**
 * The name of an action queue.
 *
 * @category models
 * @since 0.1.0
 */
export type ActionQueue = keyof typeof ActionQueue

/**
 * The C value of an action queue (`WEB_SOCKET_ACTION_QUEUE`): 1, 2 or 3.
 *
 * @category models
 * @since 0.1.0
 */
export type ActionQueueCode = (typeof ActionQueue)[ActionQueue]

/**
 * A string identifying action tokens.
 *
 * @category type ids
 * @since 0.1.0
 */
export const TokenTypeId = "~@effect-websocket/core/Action/Token"

/**
 * The one-shot action context of an action: hand it to exactly one `WebSocket.completeAction`.
 *
 * @see websocket.h `pvActionContext`
 * @category models
 * @since 0.1.0
 */
export interface ActionToken {
  readonly [TokenTypeId]: typeof TokenTypeId
  /** @internal */
  readonly id: number
}

/**
 * Nothing to do on the queue now (stop the loop; work may be waiting behind another queue's action).
 *
 * @see websocket.h `WEB_SOCKET_NO_ACTION`
 * @category models
 * @since 0.1.0
 */
export interface NoAction {
  readonly _tag: "NoAction"
  readonly action: typeof ActionCode.NoAction
}

/**
 * Write `buffers` to the transport, in order, then complete with the number of bytes written.
 * The buffers are views of memory that stays valid until then: the frame header, then payload
 * (the caller's own memory when no masking is needed).
 *
 * @see websocket.h `WEB_SOCKET_SEND_TO_NETWORK_ACTION`
 * @category models
 * @since 0.1.0
 */
export interface SendToNetwork {
  readonly _tag: "SendToNetwork"
  readonly action: typeof ActionCode.SendToNetwork
  /** `"Receive"` for an automatic pong, else `"Send"`. */
  readonly queue: "Send" | "Receive"
  readonly bufferType: BufferType
  readonly buffers: ReadonlyArray<Uint8Array>
  /** The context given to `send` (undefined for an automatic pong). */
  readonly applicationContext: unknown
  readonly token: ActionToken
}

/**
 * The send with `applicationContext` is finished; complete with 0.
 *
 * @see websocket.h `WEB_SOCKET_INDICATE_SEND_COMPLETE_ACTION`
 * @category models
 * @since 0.1.0
 */
export interface IndicateSendComplete {
  readonly _tag: "IndicateSendComplete"
  readonly action: typeof ActionCode.IndicateSendComplete
  readonly bufferType: BufferType
  readonly applicationContext: unknown
  readonly token: ActionToken
}

/**
 * Read from the transport into `buffer` (a view of the handle's receive buffer, or, for the
 * payload of a message received with a buffer of the application's, of that buffer: the bytes
 * then go straight there; valid until completed), then complete with the number of bytes read; 0
 * means the transport ended.
 *
 * @see websocket.h `WEB_SOCKET_RECEIVE_FROM_NETWORK_ACTION`
 * @category models
 * @since 0.1.0
 */
export interface ReceiveFromNetwork {
  readonly _tag: "ReceiveFromNetwork"
  readonly action: typeof ActionCode.ReceiveFromNetwork
  readonly buffer: Uint8Array
  readonly applicationContext: unknown
  readonly token: ActionToken
}

/**
 * The receive with `applicationContext` is complete: `data` is a chunk of a message
 * (`Utf8Fragment`/`Utf8Message`/`BinaryFragment`/`BinaryMessage`), the payload of a Pong
 * (`PingPong`) or the UTF-8 reason of a Close (`Close`, with `closeStatus`: 1005 when the frame had
 * none, 1006 when the transport ended without one). `data` is valid until completed; complete with 0.
 *
 * @see websocket.h `WEB_SOCKET_INDICATE_RECEIVE_COMPLETE_ACTION`
 * @category models
 * @since 0.1.0
 */
export interface IndicateReceiveComplete {
  readonly _tag: "IndicateReceiveComplete"
  readonly action: typeof ActionCode.IndicateReceiveComplete
  readonly bufferType: BufferType
  readonly data: Uint8Array
  /** The close status, for a `Close` buffer type. */
  readonly closeStatus: number | undefined
  readonly applicationContext: unknown
  readonly token: ActionToken
}

/**
 * An action from `WebSocket.getAction`.
 *
 * @see websocket.h `WEB_SOCKET_ACTION`
 * @category models
 * @since 0.1.0
 */
export type Action = NoAction | SendToNetwork | IndicateSendComplete | ReceiveFromNetwork | IndicateReceiveComplete
