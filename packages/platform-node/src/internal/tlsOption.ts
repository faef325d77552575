/**
 * The `tls` option of clients and servers, checked up front as the other options are.
 *
 * @since 0.1.0
 */
import { WebSocketError } from "@effect-websocket/core"
import { Effect } from "effect"

/** What a server needs of its TLS options to complete any handshake: an identity. */
const SERVER_IDENTITY = ["cert", "pfx", "SNICallback", "pskCallback"]

/** Cipher suites without certificates (anonymous Diffie-Hellman): a server that offers only those needs none. */
const ANONYMOUS_CIPHERS = /aNULL|ADH|AECDH/i

/** Whether the options a server copies (own enumerable ones, as a spread does) give it an identity. */
const hasServerIdentity = (tls: Record<string, unknown>): boolean => {
  const own = (key: string) => Object.prototype.propertyIsEnumerable.call(tls, key) && tls[key] !== undefined
  return SERVER_IDENTITY.some(own) || (own("ciphers") && typeof tls.ciphers === "string" && ANONYMOUS_CIPHERS.test(tls.ciphers))
}

/**
 * `tls` when it is Node's TLS options, an object (`undefined`: none); an `InvalidParameter` naming
 * `tls` otherwise, and for a server's options that give no identity (a certificate, a `pfx`, an
 * `SNICallback` or a `pskCallback`, or anonymous cipher suites only), with which no client could
 * complete a handshake.
 */
export const decodeTls = <T extends object>(tls: T | undefined, side: "client" | "server"): Effect.Effect<T | undefined, WebSocketError.InvalidParameter> => {
  if (tls === undefined) return Effect.succeed(undefined)
  const value: unknown = tls
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    return Effect.fail(
      new WebSocketError.InvalidParameter({ parameter: "tls", message: `tls must be an object of TLS options, got ${value === null ? "null" : Array.isArray(value) ? "an array" : typeof value}` })
    )
  }
  if (side === "server" && !hasServerIdentity(value as Record<string, unknown>)) {
    return Effect.fail(
      new WebSocketError.InvalidParameter({
        parameter: "tls",
        message: "a server's tls needs its identity: cert (and key), pfx, SNICallback or pskCallback, as its own properties (a server does not read secureContext)"
      })
    )
  }
  return Effect.succeed(tls)
}
