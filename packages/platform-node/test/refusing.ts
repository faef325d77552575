/**
 * Server options for tests of refused upgrades: the endpoint is `/ws`, where `?deny` gets 403
 * from `authorize`, `?throw` makes `authorize` throw, and `?unoffered` makes `selectProtocol` pick a
 * subprotocol the client did not offer (server faults: 500).
 */
import type { Client } from "@effect-websocket/core"
import { Effect } from "effect"
import { NodeServer } from "../src/index.ts"

export const refusingOptions: Client.ServeOptions = {
  path: "/ws",
  authorize: (request) =>
    request.url === "/ws?deny"
      ? Effect.fail(new NodeServer.Rejection({ status: 403, message: "no" }))
      : request.url === "/ws?throw"
      ? Effect.sync(() => {
        throw new Error("authorize broke")
      })
      : Effect.void,
  selectProtocol: (offered, request) => request.url === "/ws?unoffered" ? "unoffered" : offered[0]
}
