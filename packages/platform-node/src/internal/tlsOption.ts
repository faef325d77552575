/**
 * The `tls` option of clients and servers, checked up front as the other options are.
 *
 * @since 0.1.0
 */
import { WebSocketError } from "@effect-websocket/core"
import { Effect } from "effect"

/** Cipher suites without certificates (anonymous Diffie-Hellman): a server that offers only those needs none. */
const ANONYMOUS_CIPHERS = /aNULL|ADH|AECDH/i

/** Whether a TLS option holds something: not `undefined`, `null`, an empty string, list or buffer. */
const present = (value: unknown): boolean =>
  value !== undefined && value !== null && !((typeof value === "string" || Array.isArray(value) || ArrayBuffer.isView(value)) &&
    (ArrayBuffer.isView(value) ? value.byteLength : value.length) === 0)

/**
 * Whether the options a server copies (own enumerable ones, as a spread does) give it an identity:
 * a certificate with its key (or an OpenSSL engine's `privateKeyIdentifier`), a `pfx`, an
 * `SNICallback` or `pskCallback` function, or anonymous cipher suites only.
 */
const hasServerIdentity = (tls: Record<string, unknown>): boolean => {
  const own = (key: string) => Object.prototype.propertyIsEnumerable.call(tls, key) ? tls[key] : undefined
  const ciphers = own("ciphers")
  return (present(own("cert")) && (present(own("key")) || present(own("privateKeyIdentifier")))) || present(own("pfx")) ||
    typeof own("SNICallback") === "function" || typeof own("pskCallback") === "function" ||
    (typeof ciphers === "string" && ANONYMOUS_CIPHERS.test(ciphers))
}

/**
 * `tls` when it is Node's TLS options, an object (`undefined`: none); an `InvalidParameter` naming
 * `tls` otherwise, and for a server's options that give no identity (a certificate and its key, a
 * `pfx`, an `SNICallback` or a `pskCallback`, or anonymous cipher suites only), with which no
 * client could complete a handshake.
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
        message: "a server's tls needs its identity: cert and key, pfx, SNICallback or pskCallback, as its own properties (a server does not read secureContext)"
      })
    )
  }
  return Effect.succeed(tls)
}
