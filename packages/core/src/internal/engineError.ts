/**
 * The tagged error of a failed engine call, from the details the engine recorded.
 *
 * @since 0.1.0
 */
import { InvalidParameter, InvalidProtocolFormat, InvalidProtocolOperation } from "../WebSocketError.ts"
import { type Engine, Status } from "./engine/engine.ts"

/**
 * Maps `engine.lastError` to its tagged error: `InvalidFormat` to `InvalidProtocolFormat`,
 * `InvalidParameter` to `InvalidParameter` (naming `parameter`), anything else to
 * `InvalidProtocolOperation` (naming `operation`); the close status travels along where there is one.
 */
export const engineError = (
  engine: Engine,
  operation: string,
  parameter: string
): InvalidProtocolFormat | InvalidProtocolOperation | InvalidParameter => {
  const error = engine.lastError!
  switch (error.status) {
    case Status.InvalidFormat:
      return new InvalidProtocolFormat(
        error.closeStatus === undefined ? { message: error.message } : { message: error.message, closeStatus: error.closeStatus }
      )
    case Status.InvalidParameter:
      return new InvalidParameter({ parameter, message: error.message })
    default:
      return new InvalidProtocolOperation(
        error.closeStatus === undefined
          ? { operation, state: engine.stateName, message: error.message }
          : { operation, state: engine.stateName, message: error.message, closeStatus: error.closeStatus }
      )
  }
}
