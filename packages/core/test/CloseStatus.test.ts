/**
 * Tests of the close status constants and helpers `@effect-websocket/core` exports: the websocket.h
 * values, and the same wire rules and reason limit as the frame engine applies.
 */
import { assert, describe, it } from "@effect/vitest"
import { CloseStatus as SchemaCloseStatus } from "@effect-websocket/schema"
import { CloseStatus } from "../src/index.ts"
import * as frame from "../src/internal/engine/frame.ts"

describe("CloseStatus", () => {
  it("has the numeric values of websocket.h WEB_SOCKET_CLOSE_STATUS", () => {
    assert.deepStrictEqual(CloseStatus.CloseStatus, {
      Success: 1000,
      EndpointUnavailable: 1001,
      ProtocolError: 1002,
      InvalidDataType: 1003,
      Empty: 1005,
      Aborted: 1006,
      InvalidPayload: 1007,
      PolicyViolation: 1008,
      MessageTooBig: 1009,
      UnsupportedExtensions: 1010,
      ServerError: 1011,
      SecureHandshakeError: 1015
    })
  })

  it("only Empty, Aborted and SecureHandshakeError are local indications that never travel on the wire", () => {
    const local = Object.entries(CloseStatus.CloseStatus).filter(([, code]) => !CloseStatus.isWireCloseCode(code))
    assert.deepStrictEqual(local.map(([name]) => name).sort(), ["Aborted", "Empty", "SecureHandshakeError"])
  })

  it("isWireCloseCode is the rule the frame engine applies to Close frames, and the schema's", () => {
    const wrong: Array<number> = []
    for (let code = -1; code <= 65536; code++) {
      const wire = CloseStatus.isWireCloseCode(code)
      if (wire !== frame.isValidWireCloseCode(code) || wire !== SchemaCloseStatus.isWireCloseCode(code)) wrong.push(code)
    }
    assert.deepStrictEqual(wrong, [])
    for (const code of [1000.5, Number.NaN, Number.POSITIVE_INFINITY]) assert.isFalse(CloseStatus.isWireCloseCode(code))
  })

  it("MAX_CLOSE_REASON_LENGTH is the engine's limit, 123 bytes", () => {
    assert.strictEqual(CloseStatus.MAX_CLOSE_REASON_LENGTH, 123)
    assert.strictEqual(CloseStatus.MAX_CLOSE_REASON_LENGTH, frame.MAX_CLOSE_REASON_LENGTH)
  })

  it("truncateReason cuts at 123 UTF-8 bytes, between characters", () => {
    assert.strictEqual(CloseStatus.truncateReason("going away"), "going away")
    assert.strictEqual(CloseStatus.truncateReason("é".repeat(100)), "é".repeat(61))
    assert.strictEqual(CloseStatus.truncateReason("a" + "😀".repeat(40)), "a" + "😀".repeat(30))
    assert.strictEqual(CloseStatus.truncateReason("a\uD800b"), "a\uFFFDb")
  })
})
