/**
 * Where a WebSocket URL leads (RFC 6455 section 3): scheme, host, port, request path, the
 * credentials of its userinfo, and the URL as messages may show it (credentials redacted).
 * Shared by every client, so that they accept and refuse the same URLs.
 *
 * @since 0.1.0
 */
import { encodeUtf8 } from "./runtime.ts"

/**
 * The target of a WebSocket URL.
 *
 * @category models
 * @since 0.1.0
 */
export interface Target {
  /** The URL itself, against which a redirect's `Location` is resolved. */
  readonly url: string
  readonly secure: boolean
  readonly hostname: string
  readonly port: number
  readonly host: string
  readonly path: string
  readonly socketPath: string | undefined
  /** `user:password` from the URL's userinfo (percent-decoded), sent as Basic authorization, as `ws` does. */
  readonly credentials: string | undefined
}

const credentialsOf = (parsed: URL): string | undefined =>
  parsed.username === "" && parsed.password === ""
    ? undefined
    : `${percentDecoded(parsed.username)}:${percentDecoded(parsed.password)}`

/** `s` percent-decoded, or as it is when it is not valid percent-encoding (`%ZZ`). */
const percentDecoded = (s: string): string => {
  try {
    return decodeURIComponent(s)
  } catch {
    return s
  }
}

/**
 * The text of a URL given as a string or a `URL` object (both are accepted, as by `ws` and the
 * WHATWG `WebSocket`), `undefined` for anything else (from untyped code).
 *
 * @category constructors
 * @since 0.1.0
 */
export const urlText = (url: unknown): string | undefined =>
  typeof url === "string" ? url : url instanceof URL ? url.href : undefined

/**
 * Control characters (C0 and C1: CR, LF, NUL, NEL, ...) and the Unicode line and paragraph
 * separators, which a URL shown in a message or a log line must not carry.
 */
const UNPRINTABLE = /[\x00-\x1f\x7f-\x9f\u2028\u2029]/g

/** What may be userinfo in a string that is not a URL: after the scheme, up to its last `@`. */
const CREDENTIALS = /^([^:/?#]*:\/\/)[^]*@/

/**
 * Query parameter names that carry credentials as a rule: those OpenTelemetry's URL conventions
 * redact (`sig`, `Signature`, `AWSAccessKeyId`, ...), and the names WebSocket servers commonly
 * take a token under (a browser cannot send an `Authorization` header with its upgrade request):
 * any name that contains one of these words, whatever the case (`access_token`, `x-api-key`,
 * `client_secret`, `session_id`, ...).
 */
const SECRET_PARAMETER = /token|secret|passw|key|sig|auth|session|credential|jwt/i

/** `search` (a URL's query, with its `?`) with the values of the parameters {@link SECRET_PARAMETER} names replaced. */
const redactedQuery = (search: string): string => {
  if (search === "") return search
  let changed = false
  // (parameters and the separators between them, `&` or `;`, which some servers take too)
  const parameters = search.slice(1).split(/([&;])/).map((parameter, i) => {
    const equals = i % 2 === 1 ? -1 : parameter.indexOf("=")
    if (equals === -1) return parameter
    let name = parameter.slice(0, equals)
    try {
      name = decodeURIComponent(name.replace(/\+/g, " "))
    } catch {
      // (not valid percent-encoding: compared as it is)
    }
    if (!SECRET_PARAMETER.test(name)) return parameter
    changed = true
    return `${parameter.slice(0, equals)}=REDACTED`
  })
  return changed ? `?${parameters.join("")}` : search
}

/**
 * `url` with the password and user name of its userinfo replaced, and the values of query
 * parameters that carry credentials as a rule (see {@link SECRET_PARAMETER}) and any fragment,
 * for error messages and spans
 * (in a string that does not parse as a URL, all from its scheme to its last `@`, and its query and
 * fragment taken as a URL's); with no control
 * characters or line separators (a URL parser drops or escapes them, and so does this for a
 * string that is not a URL: a line break cannot forge a log line). A value that is neither a
 * string nor a `URL` is named by its type.
 *
 * @category constructors
 * @since 0.1.0
 */
export const redacted = (url: unknown): string => {
  const text = urlText(url)
  if (text === undefined) return url === null || url === undefined ? String(url) : `a value of type ${typeof url}`
  try {
    const parsed = new URL(text)
    const search = redactedQuery(parsed.search)
    // (a fragment, which a WebSocket URL may not have, is never sent: it may hold a token, as in
    // an OAuth redirect's `#access_token=`)
    const hash = parsed.hash === "" ? "" : "#REDACTED"
    if (parsed.username === "" && parsed.password === "" && search === parsed.search && hash === parsed.hash) {
      return text.search(UNPRINTABLE) === -1 ? text : parsed.href
    }
    if (parsed.username !== "") parsed.username = "REDACTED"
    if (parsed.password !== "") parsed.password = "REDACTED"
    parsed.search = search
    parsed.hash = hash
    return parsed.href
  } catch {
    // (not a URL, but credentials may be in it all the same: all from its scheme to its last "@"
    // goes, and its query and fragment, taken as a URL's, are redacted as a URL's)
    const hashAt = text.indexOf("#")
    const beforeHash = hashAt === -1 ? text : text.slice(0, hashAt)
    const queryAt = beforeHash.indexOf("?")
    const cut = (queryAt === -1 ? beforeHash : beforeHash.slice(0, queryAt) + redactedQuery(beforeHash.slice(queryAt))) +
      (hashAt === -1 ? "" : "#REDACTED")
    return cut.replace(CREDENTIALS, "$1REDACTED@").replace(UNPRINTABLE, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, "0")}`)
  }
}

/**
 * The target of `url`, or why there is none (`shown` is the URL as error messages show it;
 * `socketPath`, a Unix socket to connect to instead of the host).
 *
 * @category constructors
 * @since 0.1.0
 */
export const parseTarget = (url: string | URL, shown: string, socketPath: string | undefined): Target | string => {
  const text = urlText(url)
  if (text === undefined) return `the URL must be a string or a URL object, got ${shown}`
  let parsed: URL
  try {
    parsed = new URL(text)
  } catch {
    return `${JSON.stringify(shown)} is not a URL`
  }
  const credentials = credentialsOf(parsed)
  const unix = parsed.protocol === "ws+unix:"
  const secure = parsed.protocol === "wss:" || parsed.protocol === "https:"
  if (!unix && !secure && parsed.protocol !== "ws:" && parsed.protocol !== "http:") {
    return `${shown} is not a ws://, wss://, http:// or https:// URL`
  }
  if (parsed.hash !== "") return `${shown} has a fragment, which WebSocket URLs may not have (RFC 6455 section 3)`
  if (unix) {
    // ws+unix:///path/to.sock:/request/path (the request path may hold colons too)
    const colon = parsed.pathname.indexOf(":")
    const path = colon === -1 ? parsed.pathname : parsed.pathname.slice(0, colon)
    const requestPath = colon === -1 ? "" : parsed.pathname.slice(colon + 1)
    if (path === "") return `${shown} names no socket path (ws+unix:///path/to.sock:/request/path)`
    return { url: text, secure: false, hostname: "localhost", port: 80, host: "localhost", path: (requestPath || "/") + parsed.search, socketPath: path, credentials }
  }
  // Node would take port 0 for "the default port" and connect there
  if (parsed.port === "0" && socketPath === undefined) return `${shown} names port 0, which cannot be connected to`
  const hostname = parsed.hostname.startsWith("[") ? parsed.hostname.slice(1, -1) : parsed.hostname
  return {
    url: text,
    secure,
    hostname,
    port: parsed.port === "" ? (secure ? 443 : 80) : Number(parsed.port),
    host: parsed.host,
    path: (parsed.pathname || "/") + parsed.search,
    socketPath,
    credentials
  }
}

/**
 * `headers` with the Basic authorization of `target`'s credentials added, as `ws` sends them,
 * unless they have an `Authorization` header already.
 *
 * @category constructors
 * @since 0.1.0
 */
export const withCredentials = <H extends { readonly name: string; readonly value: string }>(
  headers: ReadonlyArray<H>,
  target: Target
): ReadonlyArray<H | { readonly name: string; readonly value: string }> =>
  target.credentials === undefined || headers.some((h) => h.name.toLowerCase() === "authorization")
    ? headers
    : [...headers, { name: "Authorization", value: `Basic ${base64(encodeUtf8(target.credentials))}` }]

const base64 = (bytes: Uint8Array): string => {
  let binary = ""
  for (let i = 0; i < bytes.length; i++) binary += String.fromCharCode(bytes[i]!)
  return btoa(binary)
}
