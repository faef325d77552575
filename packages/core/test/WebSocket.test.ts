import { assert, describe, it } from "@effect/vitest"
import { ConfigProvider, Effect, Exit, Fiber, Layer, Option, Schema } from "effect"
import { WebCrypto } from "effect/crypto/WebCrypto"
import { BufferType, WebSocket, WebSocketError } from "../src/index.ts"

type Header = { readonly name: string; readonly value: string }

const RFC_KEY = "dGhlIHNhbXBsZSBub25jZQ=="
const RFC_ACCEPT = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="

const validRequest: ReadonlyArray<Header> = [
  { name: "Host", value: "example.com" },
  { name: "Upgrade", value: "websocket" },
  { name: "Connection", value: "Upgrade" },
  { name: "Sec-WebSocket-Key", value: RFC_KEY },
  { name: "Sec-WebSocket-Version", value: "13" }
]

const header = (headers: ReadonlyArray<Header>, name: string) =>
  headers.find((h) => h.name.toLowerCase() === name.toLowerCase())?.value

/** The headers without those named `name`. */
const drop = (name: string) => (headers: ReadonlyArray<Header>) => headers.filter((h) => h.name !== name)

const without = (name: string) => drop(name)(validRequest)
const replacing = (name: string, value: string) => [...without(name), { name, value }]

/** Runs the server side on `requestHeaders` and returns the failure. */
const serverFailure = (requestHeaders: ReadonlyArray<Header>, options: { subprotocol?: string; extensions?: Array<string> } = {}) =>
  Effect.gen(function*() {
    const server = yield* WebSocket.createServerHandle()
    return yield* Effect.flip(WebSocket.beginServerHandshake(server, { requestHeaders, ...options }))
  })

/** Runs a full client/server handshake in memory. */
const handshake = (client: WebSocket.ClientHandshakeOptions = {}, server: { subprotocol?: string; extensions?: Array<string> } = {}) =>
  Effect.gen(function*() {
    const clientHandle = yield* WebSocket.createClientHandle()
    const serverHandle = yield* WebSocket.createServerHandle()
    const request = yield* WebSocket.beginClientHandshake(clientHandle, {
      ...client,
      initialHeaders: [{ name: "Host", value: "127.0.0.1:8080" }]
    })
    const { responseHeaders } = yield* WebSocket.beginServerHandshake(serverHandle, {
      requestHeaders: request.requestHeaders,
      ...server
    })
    yield* WebSocket.endServerHandshake(serverHandle)
    const result = yield* WebSocket.endClientHandshake(clientHandle, { responseHeaders })
    return { request, responseHeaders, result, clientHandle, serverHandle }
  })

describe("opening handshake", () => {
  it.effect("computes the RFC 6455 sample Sec-WebSocket-Accept", () =>
    Effect.gen(function*() {
      const server = yield* WebSocket.createServerHandle()
      const { responseHeaders } = yield* WebSocket.beginServerHandshake(server, { requestHeaders: validRequest })
      assert.strictEqual(header(responseHeaders, "Sec-WebSocket-Accept"), RFC_ACCEPT)
      assert.strictEqual(header(responseHeaders, "Upgrade"), "websocket")
      assert.strictEqual(header(responseHeaders, "Connection"), "Upgrade")
      assert.strictEqual(header(responseHeaders, "Sec-WebSocket-Protocol"), undefined)
    }))

  it.effect("computes the accept value for the all-zero key", () =>
    Effect.gen(function*() {
      const server = yield* WebSocket.createServerHandle()
      const { responseHeaders } = yield* WebSocket.beginServerHandshake(server, {
        requestHeaders: replacing("Sec-WebSocket-Key", "AAAAAAAAAAAAAAAAAAAAAA==")
      })
      assert.strictEqual(header(responseHeaders, "Sec-WebSocket-Accept"), "ICX+Yqv66kxgM0FcWaLWlFLwTAI=")
    }))

  it.effect("client and server complete the handshake in memory", () =>
    Effect.gen(function*() {
      const { request, result } = yield* handshake()
      const headers = request.additionalHeaders
      assert.strictEqual(header(headers, "Upgrade"), "websocket")
      assert.strictEqual(header(headers, "Connection"), "Upgrade")
      assert.strictEqual(header(headers, "Sec-WebSocket-Version"), "13")
      assert.match(header(headers, "Sec-WebSocket-Key")!, /^[A-Za-z0-9+/]{22}==$/)
      assert.strictEqual(header(request.requestHeaders, "Host"), "127.0.0.1:8080")
      assert.isTrue(Option.isNone(result.selectedSubprotocol))
      assert.deepStrictEqual(result.selectedExtensions, [])
    }))

  it.effect("every client handshake uses a fresh key", () =>
    Effect.gen(function*() {
      const a = yield* handshake()
      const b = yield* handshake()
      assert.notStrictEqual(header(a.request.additionalHeaders, "Sec-WebSocket-Key"), header(b.request.additionalHeaders, "Sec-WebSocket-Key"))
    }))

  it.effect("negotiates a subprotocol and extensions", () =>
    Effect.gen(function*() {
      const { request, responseHeaders, result } = yield* handshake(
        { subprotocols: ["chat", "superchat"], extensions: ["foo; a=1", "bar"] },
        { subprotocol: "superchat", extensions: ["bar; x=2"] }
      )
      assert.strictEqual(header(request.additionalHeaders, "Sec-WebSocket-Protocol"), "chat, superchat")
      assert.strictEqual(header(request.additionalHeaders, "Sec-WebSocket-Extensions"), "foo; a=1, bar")
      assert.strictEqual(header(responseHeaders, "Sec-WebSocket-Protocol"), "superchat")
      assert.strictEqual(header(responseHeaders, "Sec-WebSocket-Extensions"), "bar; x=2")
      assert.deepStrictEqual(result.selectedSubprotocol, Option.some(1))
      assert.deepStrictEqual(result.subprotocol, Option.some("superchat"))
      assert.deepStrictEqual(result.selectedExtensions, [1])
      assert.deepStrictEqual(result.extensions, [{ name: "bar", params: [{ name: "x", value: "2" }] }])
    }))

  it.effect("an additional header replaces an initial header of the same name", () =>
    Effect.gen(function*() {
      const client = yield* WebSocket.createClientHandle()
      const { requestHeaders } = yield* WebSocket.beginClientHandshake(client, {
        initialHeaders: [{ name: "Host", value: "h" }, { name: "connection", value: "keep-alive" }]
      })
      assert.deepStrictEqual(requestHeaders.filter((h) => h.name.toLowerCase() === "connection"), [
        { name: "Connection", value: "Upgrade" }
      ])
      assert.strictEqual(header(requestHeaders, "Host"), "h")
    }))

  it.effect("accepts list headers spread over several fields and in any case", () =>
    Effect.gen(function*() {
      const server = yield* WebSocket.createServerHandle()
      const { responseHeaders } = yield* WebSocket.beginServerHandshake(server, {
        requestHeaders: [
          ...without("Connection").filter((h) => h.name !== "Upgrade"),
          { name: "connection", value: "keep-alive" },
          { name: "CONNECTION", value: "upgrade" },
          { name: "upgrade", value: "WebSocket" },
          { name: "Sec-WebSocket-Protocol", value: "a" },
          { name: "Sec-WebSocket-Protocol", value: "b, c" }
        ],
        subprotocol: "c"
      })
      assert.strictEqual(header(responseHeaders, "Sec-WebSocket-Protocol"), "c")
    }))
})

describe("malformed requests", () => {
  const cases: ReadonlyArray<readonly [string, ReadonlyArray<Header>, string, string | undefined, RegExp]> = [
    ["missing Upgrade", without("Upgrade"), "InvalidProtocolFormat", "Upgrade", /Upgrade header is missing/],
    ["Upgrade: h2c", replacing("Upgrade", "h2c"), "InvalidProtocolFormat", "Upgrade", /must include "websocket"/],
    ["Upgrade: websocket beside an element that is not a protocol", replacing("Upgrade", "websocket, @@"), "InvalidProtocolFormat", "Upgrade", /"@@", which is not a protocol/],
    ["missing Connection", without("Connection"), "InvalidProtocolFormat", "Connection", /missing/],
    ["Connection without upgrade", replacing("Connection", "keep-alive"), "InvalidProtocolFormat", "Connection", /"Upgrade"/],
    ["missing Host", without("Host"), "InvalidProtocolFormat", "Host", /Host header is missing/],
    ["missing key", without("Sec-WebSocket-Key"), "InvalidProtocolFormat", "Sec-WebSocket-Key", /missing/],
    ["key of 15 bytes", replacing("Sec-WebSocket-Key", "AAAAAAAAAAAAAAAAAAAA"), "InvalidProtocolFormat", "Sec-WebSocket-Key", /16 bytes, got 15 bytes/],
    ["key of 17 bytes", replacing("Sec-WebSocket-Key", "AAAAAAAAAAAAAAAAAAAAAAA="), "InvalidProtocolFormat", "Sec-WebSocket-Key", /16 bytes, got 17 bytes/],
    ["key not base64", replacing("Sec-WebSocket-Key", "not a base64 key!!!!!!=="), "InvalidProtocolFormat", "Sec-WebSocket-Key", /must be base64/],
    ["duplicate key", [...validRequest, { name: "sec-websocket-key", value: RFC_KEY }], "InvalidProtocolFormat", "Sec-WebSocket-Key", /appears 2 times/],
    ["missing version", without("Sec-WebSocket-Version"), "InvalidProtocolFormat", "Sec-WebSocket-Version", /missing/],
    ["malformed version", replacing("Sec-WebSocket-Version", "thirteen"), "InvalidProtocolFormat", "Sec-WebSocket-Version", /version number/],
    ["version 8", replacing("Sec-WebSocket-Version", "8"), "UnsupportedProtocolVersion", undefined, /Version 8 is not supported/],
    ["version 14", replacing("Sec-WebSocket-Version", "14"), "UnsupportedProtocolVersion", undefined, /Version 14 is not supported/],
    ["invalid subprotocol token", [...validRequest, { name: "Sec-WebSocket-Protocol", value: "chat, su/per" }], "InvalidProtocolFormat", "Sec-WebSocket-Protocol", /"su\/per"/],
    ["subprotocol offered twice", [...validRequest, { name: "Sec-WebSocket-Protocol", value: "chat" }, { name: "Sec-WebSocket-Protocol", value: "chat" }], "InvalidProtocolFormat", "Sec-WebSocket-Protocol", /"chat" is offered twice/],
    ["empty subprotocol list", [...validRequest, { name: "Sec-WebSocket-Protocol", value: " , " }], "InvalidProtocolFormat", "Sec-WebSocket-Protocol", /at least one/],
    ["malformed extension parameter", [...validRequest, { name: "Sec-WebSocket-Extensions", value: "foo; =1" }], "InvalidProtocolFormat", "Sec-WebSocket-Extensions", /parameter name/],
    ["quoted extension value not a token", [...validRequest, { name: "Sec-WebSocket-Extensions", value: "foo; a=\"b c\"" }], "InvalidProtocolFormat", "Sec-WebSocket-Extensions", /not a token/],
    ["header name with a colon", [...validRequest, { name: "X:Y", value: "1" }], "InvalidProtocolFormat", undefined, /not a token/],
    ["header value with CRLF", [...validRequest, { name: "X", value: "a\r\nb" }], "InvalidProtocolFormat", "X", /control character/]
  ]
  for (const [name, requestHeaders, tag, headerName, message] of cases) {
    it.effect(name, () =>
      Effect.gen(function*() {
        const error = yield* serverFailure(requestHeaders)
        assert.strictEqual(error._tag, tag)
        assert.match(error.message, message)
        if (error._tag === "InvalidProtocolFormat") {
          assert.strictEqual(error.hresult, 0x83760002)
          assert.strictEqual(error.header, headerName)
        }
      }))
  }

  it.effect("an unsupported version carries the supported versions", () =>
    Effect.gen(function*() {
      const error = yield* serverFailure(replacing("Sec-WebSocket-Version", "8"))
      assert.isTrue(error._tag === "UnsupportedProtocolVersion")
      if (error._tag === "UnsupportedProtocolVersion") {
        assert.deepStrictEqual(error.supported, [13])
        assert.strictEqual(error.received, 8)
        assert.strictEqual(error.hresult, 0x83760005)
      }
    }))

  it.effect("selecting a subprotocol the client did not offer", () =>
    Effect.gen(function*() {
      const error = yield* serverFailure([...validRequest, { name: "Sec-WebSocket-Protocol", value: "chat" }], {
        subprotocol: "superchat"
      })
      assert.strictEqual(error._tag, "UnsupportedSubprotocol")
      if (error._tag === "UnsupportedSubprotocol") {
        assert.deepStrictEqual(error.offered, ["chat"])
        assert.strictEqual(error.selected, "superchat")
        assert.strictEqual(error.hresult, 0x83760004)
      }
    }))

  it.effect("selecting an extension the client did not offer", () =>
    Effect.gen(function*() {
      const error = yield* serverFailure(validRequest, { extensions: ["permessage-deflate"] })
      assert.strictEqual(error._tag, "UnsupportedExtension")
    }))

  it.effect("selecting a malformed subprotocol is an invalid parameter", () =>
    Effect.gen(function*() {
      const error = yield* serverFailure([...validRequest, { name: "Sec-WebSocket-Protocol", value: "chat" }], {
        subprotocol: "not a token"
      })
      assert.strictEqual(error._tag, "InvalidParameter")
    }))

  it.effect("selecting the empty subprotocol is an invalid parameter, not a selection of none", () =>
    Effect.gen(function*() {
      const error = yield* serverFailure([...validRequest, { name: "Sec-WebSocket-Protocol", value: "chat" }], { subprotocol: "" })
      assert.deepStrictEqual([error._tag, error._tag === "InvalidParameter" && error.parameter], ["InvalidParameter", "subprotocol"])
    }))

  it.effect("selecting a subprotocol when the client offered none", () =>
    Effect.gen(function*() {
      const error = yield* serverFailure(validRequest, { subprotocol: "chat" })
      assert.strictEqual(error._tag, "UnsupportedSubprotocol")
      if (error._tag === "UnsupportedSubprotocol") {
        assert.deepStrictEqual([error.offered, error.selected], [[], "chat"])
        assert.strictEqual(error.message, "subprotocol \"chat\" was selected but the client offered none")
      }
    }))

  it.effect("a server's extension selection names an offered extension exactly, as the client compares them", () =>
    Effect.gen(function*() {
      const request = [...validRequest, { name: "Sec-WebSocket-Extensions", value: "foo, bar" }]
      const other = yield* serverFailure(request, { extensions: ["bar", "baz"] })
      assert.strictEqual(other._tag, "UnsupportedExtension")
      if (other._tag === "UnsupportedExtension") assert.deepStrictEqual([other.offered, other.selected], [["foo", "bar"], "baz"])
      const cased = yield* serverFailure(request, { extensions: ["Foo"] })
      assert.deepStrictEqual([cased._tag, cased._tag === "UnsupportedExtension" && cased.selected], ["UnsupportedExtension", "Foo"])
    }))

  it.effect("a client offers each subprotocol once, in a list (RFC 6455 section 4.1: \"MUST all be unique strings\")", () =>
    Effect.gen(function*() {
      const offer = (subprotocols: unknown, extensions?: unknown) =>
        Effect.gen(function*() {
          const client = yield* WebSocket.createClientHandle()
          return yield* Effect.flip(WebSocket.beginClientHandshake(client, { subprotocols, extensions } as never))
        })
      const twice = yield* offer(["chat", "superchat", "chat"])
      assert.strictEqual(twice._tag, "InvalidParameter")
      assert.match(twice.message, /"chat" is offered twice/)
      for (const [subprotocols, extensions] of [["chat", undefined], [{ 0: "chat" }, undefined], [undefined, "permessage-deflate"]]) {
        const error = yield* offer(subprotocols, extensions)
        assert.strictEqual(error._tag, "InvalidParameter", JSON.stringify([subprotocols, extensions]))
        assert.match(error.message, /is a list/)
      }
      // names differing in case are different subprotocols
      const { result } = yield* handshake({ subprotocols: ["chat", "Chat"] }, { subprotocol: "Chat" })
      assert.strictEqual(Option.getOrUndefined(result.subprotocol), "Chat")
    }))

  it.effect("initialHeaders may not make offers: a server's pick of one the handle never offered would be refused", () =>
    Effect.gen(function*() {
      for (const [name, value] of [["Sec-WebSocket-Protocol", "chat"], ["sec-websocket-extensions", "foo"]] as const) {
        const client = yield* WebSocket.createClientHandle()
        const error = yield* Effect.flip(WebSocket.beginClientHandshake(client, {
          initialHeaders: [{ name: "Host", value: "h" }, { name, value }]
        }))
        assert.deepStrictEqual(
          [error._tag, error._tag === "InvalidParameter" ? error.parameter : "", error.message.includes(`may not set ${name}`)],
          ["InvalidParameter", "initialHeaders", true]
        )
      }
    }))

  it.effect("a bad header of initialHeaders is named in a one-line message, as any other parameter's problem", () =>
    Effect.gen(function*() {
      const client = yield* WebSocket.createClientHandle()
      const error = yield* Effect.flip(WebSocket.beginClientHandshake(client, {
        initialHeaders: [{ name: "Host", value: "h" }, { name: "X", value: "a\rb" }]
      }))
      assert.deepStrictEqual([error._tag, error._tag === "InvalidParameter" && error.parameter], ["InvalidParameter", "initialHeaders"])
      assert.notInclude(error.message, "\n")
      assert.match(error.message, /^initialHeaders: .*header X.*control character.* \(at \[1\]\)$/)
    }))

  it.effect("a server's extension selection must be a list: otherwise an InvalidParameter, not a TypeError", () =>
    Effect.gen(function*() {
      for (const extensions of ["permessage-deflate", 1, { 0: "x" }]) {
        const error = yield* serverFailure(validRequest, { extensions } as never)
        assert.strictEqual(error._tag, "InvalidParameter", JSON.stringify(extensions))
        assert.match(error.message, /extensions is a list/)
      }
    }))

  it.effect("a failed handshake leaves the handle failed", () =>
    Effect.gen(function*() {
      const server = yield* WebSocket.createServerHandle()
      yield* Effect.flip(WebSocket.beginServerHandshake(server, { requestHeaders: without("Upgrade") }))
      const error = yield* Effect.flip(WebSocket.beginServerHandshake(server, { requestHeaders: validRequest }))
      assert.strictEqual(error._tag, "InvalidProtocolOperation")
      assert.match(error.message, /handshake failed/)
    }))

  it.effect("a failed server handle refuses another beginServerHandshake whatever the request or the selection", () =>
    Effect.gen(function*() {
      const server = yield* WebSocket.createServerHandle()
      yield* Effect.flip(WebSocket.beginServerHandshake(server, { requestHeaders: without("Upgrade") }))
      for (const options of [{ requestHeaders: without("Host") }, { requestHeaders: validRequest, subprotocol: "not a token" }]) {
        const error = yield* Effect.flip(WebSocket.beginServerHandshake(server, options))
        assert.deepStrictEqual(
          [error._tag, error._tag === "InvalidProtocolOperation" && error.state],
          ["InvalidProtocolOperation", "Failed"],
          JSON.stringify(options)
        )
      }
    }))

  it.effect("the spaces and tabs around a single-valued header are not part of its value (RFC 9110 section 5.5)", () =>
    Effect.gen(function*() {
      for (const version of [" 13", "13 ", "\t13\t"]) {
        const server = yield* WebSocket.createServerHandle()
        const requestHeaders = [
          ...validRequest.filter((h) => !h.name.startsWith("Sec-WebSocket-")),
          { name: "Sec-WebSocket-Key", value: ` ${RFC_KEY}\t` },
          { name: "Sec-WebSocket-Version", value: version }
        ]
        const { responseHeaders } = yield* WebSocket.beginServerHandshake(server, { requestHeaders })
        assert.strictEqual(header(responseHeaders, "Sec-WebSocket-Accept"), RFC_ACCEPT, JSON.stringify(version))
      }
      // another version around blanks is an unsupported one (426), not a malformed one (400)
      const other = yield* serverFailure(replacing("Sec-WebSocket-Version", "8 "))
      assert.strictEqual(other._tag, "UnsupportedProtocolVersion")
      // and a client takes the server's single-valued headers so too
      const client = yield* WebSocket.createClientHandle()
      const server = yield* WebSocket.createServerHandle()
      const { requestHeaders } = yield* WebSocket.beginClientHandshake(client, {
        subprotocols: ["chat"],
        initialHeaders: [{ name: "Host", value: "h" }]
      })
      const { responseHeaders } = yield* WebSocket.beginServerHandshake(server, { requestHeaders, subprotocol: "chat" })
      const padded = responseHeaders.map((h) => ({ ...h, value: ` ${h.value} ` }))
      const result = yield* WebSocket.endClientHandshake(client, { responseHeaders: padded })
      assert.strictEqual(Option.getOrUndefined(result.subprotocol), "chat")
    }))

  it.effect("a header value with a character it may not hold is named in header, on one line, the value not repeated", () =>
    Effect.gen(function*() {
      const error = yield* serverFailure(replacing("Sec-WebSocket-Key", `${RFC_KEY}\u0000`))
      assert.strictEqual(error._tag, "InvalidProtocolFormat")
      if (error._tag === "InvalidProtocolFormat") assert.strictEqual(error.header, "Sec-WebSocket-Key")
      assert.strictEqual(
        error.message,
        "malformed header list at [4]: the value of header Sec-WebSocket-Key contains a control character (U+0000 at index 24 of 25)"
      )
      // the same from the server's response
      const client = yield* WebSocket.createClientHandle()
      yield* WebSocket.beginClientHandshake(client)
      const response = yield* Effect.flip(WebSocket.endClientHandshake(client, {
        responseHeaders: [{ name: "Upgrade", value: "websocket" }, { name: "Set-Cookie", value: "sid=SECRET\u0007" }]
      }))
      assert.deepStrictEqual(
        [response._tag, response._tag === "InvalidProtocolFormat" ? response.header : undefined, response.message],
        ["InvalidProtocolFormat", "Set-Cookie", "malformed header list at [1]: the value of header Set-Cookie contains a control character (U+0007 at index 10 of 11)"]
      )
    }))

  it.effect("a server selects an extension once: one selected twice is an invalid parameter", () =>
    Effect.gen(function*() {
      const request = [...validRequest, { name: "Sec-WebSocket-Extensions", value: "foo, foo; x=1" }]
      const error = yield* serverFailure(request, { extensions: ["foo", "foo; x=1"] })
      assert.deepStrictEqual(
        [error._tag, error._tag === "InvalidParameter" ? error.parameter : undefined, error.message],
        ["InvalidParameter", "extensions[1]", "extension \"foo\" is selected twice"]
      )
    }))

  it.effect("each extension offered or selected names exactly one extension", () =>
    Effect.gen(function*() {
      const offer = yield* Effect.flip(WebSocket.beginClientHandshake(yield* WebSocket.createClientHandle(), { extensions: ["a, b"] }))
      assert.deepStrictEqual(
        [offer._tag, offer._tag === "InvalidParameter" && offer.parameter, offer.message],
        ["InvalidParameter", "extensions[0]", "extensions[0] must name exactly one extension, got 2"]
      )
      const requestHeaders = [...validRequest, { name: "Sec-WebSocket-Extensions", value: "a, b" }]
      const selection = yield* Effect.flip(
        WebSocket.beginServerHandshake(yield* WebSocket.createServerHandle(), { requestHeaders, extensions: ["a, b"] })
      )
      assert.deepStrictEqual([selection._tag, selection.message], ["InvalidParameter", "extensions[0] must name exactly one extension, got 2"])
    }))
})

describe("client-side response checks", () => {
  const respond = (edit: (response: ReadonlyArray<Header>) => ReadonlyArray<Header>, offer: WebSocket.ClientHandshakeOptions = {}) =>
    Effect.gen(function*() {
      const client = yield* WebSocket.createClientHandle()
      const server = yield* WebSocket.createServerHandle()
      const { requestHeaders } = yield* WebSocket.beginClientHandshake(client, {
        ...offer,
        initialHeaders: [{ name: "Host", value: "h" }]
      })
      const { responseHeaders } = yield* WebSocket.beginServerHandshake(server, { requestHeaders })
      return yield* Effect.flip(WebSocket.endClientHandshake(client, { responseHeaders: edit(responseHeaders) }))
    })
  const add = (name: string, value: string) => (headers: ReadonlyArray<Header>) => [...headers, { name, value }]

  it.effect("wrong accept", () =>
    Effect.gen(function*() {
      const error = yield* respond((h) => [...drop("Sec-WebSocket-Accept")(h), { name: "Sec-WebSocket-Accept", value: RFC_ACCEPT }])
      assert.strictEqual(error._tag, "InvalidProtocolFormat")
      if (error._tag === "InvalidProtocolFormat") assert.strictEqual(error.header, "Sec-WebSocket-Accept")
      assert.match(error.message, /expected/)
    }))

  it.effect("an accept value that differs only in the case of a letter (base64 is case-sensitive)", () =>
    Effect.gen(function*() {
      const error = yield* respond((h) => {
        const accept = header(h, "Sec-WebSocket-Accept")!
        // the first letter, so that the value stays canonical base64 of 20 bytes
        const i = accept.search(/[A-Za-z]/)
        const c = accept[i]!
        const flipped = accept.slice(0, i) + (c === c.toLowerCase() ? c.toUpperCase() : c.toLowerCase()) + accept.slice(i + 1)
        return [...drop("Sec-WebSocket-Accept")(h), { name: "Sec-WebSocket-Accept", value: flipped }]
      })
      assert.strictEqual(error._tag, "InvalidProtocolFormat")
      if (error._tag === "InvalidProtocolFormat") assert.strictEqual(error.header, "Sec-WebSocket-Accept")
      assert.match(error.message, /expected/)
    }))

  it.effect("missing accept", () =>
    Effect.gen(function*() {
      const error = yield* respond(drop("Sec-WebSocket-Accept"))
      assert.strictEqual(error._tag, "InvalidProtocolFormat")
      assert.match(error.message, /Sec-WebSocket-Accept header is missing/)
    }))

  it.effect("missing Upgrade and wrong Connection", () =>
    Effect.gen(function*() {
      const a = yield* respond(drop("Upgrade"))
      assert.strictEqual(a._tag, "InvalidProtocolFormat")
      const b = yield* respond((h) => [...drop("Connection")(h), { name: "Connection", value: "close" }])
      assert.strictEqual(b._tag, "InvalidProtocolFormat")
      if (b._tag === "InvalidProtocolFormat") assert.strictEqual(b.header, "Connection")
    }))

  it.effect("an Upgrade naming another protocol besides websocket (RFC 6455 section 4.1: any other value fails)", () =>
    Effect.gen(function*() {
      for (const edit of [
        (h: ReadonlyArray<Header>) => [...drop("Upgrade")(h), { name: "Upgrade", value: "websocket, h2c" }],
        (h: ReadonlyArray<Header>) => [...drop("Upgrade")(h), { name: "Upgrade", value: "h2c, WebSocket" }],
        add("Upgrade", "h2c")
      ]) {
        const error = yield* respond(edit)
        assert.strictEqual(error._tag, "InvalidProtocolFormat")
        if (error._tag === "InvalidProtocolFormat") assert.strictEqual(error.header, "Upgrade")
        assert.match(error.message, /must be "websocket" alone/)
      }
      // websocket in any case, the list's empty elements aside, is fine
      for (const value of ["WebSocket", " websocket ,", "websocket, websocket"]) {
        const client = yield* WebSocket.createClientHandle()
        const server = yield* WebSocket.createServerHandle()
        const { requestHeaders } = yield* WebSocket.beginClientHandshake(client, { initialHeaders: [{ name: "Host", value: "h" }] })
        const { responseHeaders } = yield* WebSocket.beginServerHandshake(server, { requestHeaders })
        yield* WebSocket.endClientHandshake(client, { responseHeaders: [...drop("Upgrade")(responseHeaders), { name: "upgrade", value }] })
      }
    }))

  it.effect("unoffered subprotocol", () =>
    Effect.gen(function*() {
      const error = yield* respond(add("Sec-WebSocket-Protocol", "other"), { subprotocols: ["chat"] })
      assert.strictEqual(error._tag, "UnsupportedSubprotocol")
      if (error._tag === "UnsupportedSubprotocol") {
        assert.deepStrictEqual(error.offered, ["chat"])
        assert.strictEqual(error.selected, "other")
      }
    }))

  it.effect("subprotocol when none was offered", () =>
    Effect.gen(function*() {
      const error = yield* respond(add("Sec-WebSocket-Protocol", "chat"))
      assert.strictEqual(error._tag, "UnsupportedSubprotocol")
    }))

  it.effect("unoffered extension", () =>
    Effect.gen(function*() {
      const error = yield* respond(add("Sec-WebSocket-Extensions", "permessage-deflate"), { extensions: ["foo"] })
      assert.strictEqual(error._tag, "UnsupportedExtension")
      if (error._tag === "UnsupportedExtension") assert.strictEqual(error.hresult, 0x83760003)
    }))

  it.effect("an extension selected twice (ws refuses such a response too)", () =>
    Effect.gen(function*() {
      for (const edit of [add("Sec-WebSocket-Extensions", "foo, foo"), (h: ReadonlyArray<Header>) => add("Sec-WebSocket-Extensions", "foo; x=1")(add("Sec-WebSocket-Extensions", "foo")(h))]) {
        const error = yield* respond(edit, { extensions: ["foo"] })
        assert.deepStrictEqual(
          [error._tag, error._tag === "InvalidProtocolFormat" ? error.header : undefined, error.message],
          ["InvalidProtocolFormat", "Sec-WebSocket-Extensions", "Sec-WebSocket-Extensions selects extension \"foo\" twice"]
        )
      }
    }))

  it.effect("two subprotocol headers", () =>
    Effect.gen(function*() {
      const error = yield* respond((h) => add("Sec-WebSocket-Protocol", "a")(add("Sec-WebSocket-Protocol", "a")(h)), {
        subprotocols: ["a"]
      })
      assert.strictEqual(error._tag, "InvalidProtocolFormat")
    }))

  it.effect("a subprotocol named in two fields is refused as appearing twice", () =>
    Effect.gen(function*() {
      const error = yield* respond((h) => add("Sec-WebSocket-Protocol", "b")(add("Sec-WebSocket-Protocol", "a")(h)), {
        subprotocols: ["a", "b"]
      })
      assert.deepStrictEqual(
        [error._tag, error._tag === "InvalidProtocolFormat" && error.header, error.message],
        ["InvalidProtocolFormat", "Sec-WebSocket-Protocol", "Sec-WebSocket-Protocol appears 2 times; it must appear at most once"]
      )
    }))

  it.effect("an unoffered subprotocol is reported by its name, without the blanks around the field value", () =>
    Effect.gen(function*() {
      const error = yield* respond(add("Sec-WebSocket-Protocol", " other\t"), { subprotocols: ["chat"] })
      assert.deepStrictEqual([error._tag, error._tag === "UnsupportedSubprotocol" && error.selected], ["UnsupportedSubprotocol", "other"])
    }))
})

describe("extensions negotiated through the handshake", () => {
  it.effect("are the application's to implement: the session refuses a frame with RSV1 (1002), saying why truly", () =>
    Effect.gen(function*() {
      const { clientHandle, result } = yield* handshake({ extensions: ["permessage-deflate"] }, { extensions: ["permessage-deflate"] })
      assert.deepStrictEqual(result.selectedExtensions, [0])
      yield* WebSocket.receive(clientHandle)
      const action = yield* WebSocket.getAction(clientHandle, "Receive")
      assert.strictEqual(action._tag, "ReceiveFromNetwork")
      if (action._tag !== "ReceiveFromNetwork") return
      // "Hello" compressed, RSV1 set (RFC 7692 section 7.2.3.1)
      const frame = Uint8Array.from([0xc1, 0x07, 0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00])
      action.buffer.set(frame)
      yield* WebSocket.completeAction(clientHandle, action.token, frame.length)
      const error = yield* Effect.flip(WebSocket.getAction(clientHandle, "Receive"))
      assert.deepStrictEqual(
        [error._tag, error.message],
        ["InvalidProtocolFormat", "reserved bits RSV1 set: this engine implements no extension that defines them"]
      )
    }))
})

describe("handle life cycle", () => {
  it.effect("end before begin, begin twice", () =>
    Effect.gen(function*() {
      const client = yield* WebSocket.createClientHandle()
      const early = yield* Effect.flip(WebSocket.endClientHandshake(client, { responseHeaders: [] }))
      assert.strictEqual(early._tag, "InvalidProtocolOperation")
      assert.strictEqual(early.hresult, 0x83760001)
      yield* WebSocket.beginClientHandshake(client)
      const twice = yield* Effect.flip(WebSocket.beginClientHandshake(client))
      assert.strictEqual(twice._tag, "InvalidProtocolOperation")
      const server = yield* WebSocket.createServerHandle()
      const serverEarly = yield* Effect.flip(WebSocket.endServerHandshake(server))
      assert.strictEqual(serverEarly._tag, "InvalidProtocolOperation")
      yield* WebSocket.beginServerHandshake(server, { requestHeaders: validRequest })
      const serverTwice = yield* Effect.flip(WebSocket.beginServerHandshake(server, { requestHeaders: validRequest }))
      assert.strictEqual(serverTwice._tag, "InvalidProtocolOperation")
      yield* WebSocket.endServerHandshake(server)
      yield* WebSocket.endServerHandshake(server)
    }))

  it.effect("a handle is released when its scope closes", () =>
    Effect.gen(function*() {
      const client = yield* Effect.scoped(WebSocket.createClientHandle())
      const error = yield* Effect.flip(WebSocket.beginClientHandshake(client))
      assert.strictEqual(error._tag, "InvalidProtocolOperation")
      assert.match(error.message, /deleted/)
    }))

  it.effect("deleteHandle releases early and is idempotent", () =>
    Effect.gen(function*() {
      const server = yield* WebSocket.createServerHandle()
      yield* WebSocket.deleteHandle(server)
      yield* WebSocket.deleteHandle(server)
      const error = yield* Effect.flip(WebSocket.beginServerHandshake(server, { requestHeaders: validRequest }))
      assert.strictEqual(error._tag, "InvalidProtocolOperation")
      assert.isTrue(error._tag === "InvalidProtocolOperation" && error.state === "Deleted")
    }))

  /** A Web Crypto other than the global one: the accept digest is awaited (as where `node:crypto` is missing). */
  const awaitedDigest = Layer.succeed(WebCrypto, {
    getRandomValues: globalThis.crypto.getRandomValues.bind(globalThis.crypto),
    subtle: globalThis.crypto.subtle
  } as typeof globalThis.crypto)

  /** A client handle whose handshake is begun, with the response of a server to it. */
  const begunClient = Effect.gen(function*() {
    const client = yield* WebSocket.createClientHandle().pipe(Effect.provide(awaitedDigest))
    const { requestHeaders } = yield* WebSocket.beginClientHandshake(client, { initialHeaders: [{ name: "Host", value: "h" }] })
    const { responseHeaders } = yield* WebSocket.beginServerHandshake(yield* WebSocket.createServerHandle(), { requestHeaders })
    return { client, responseHeaders }
  })

  it.effect("a handle deleted while its handshake computes the accept value stays deleted, and the handshake says so", () =>
    Effect.gen(function*() {
      const deletedMidway = <A, E>(handle: WebSocket.Handle, handshake: Effect.Effect<A, E>) =>
        Effect.gen(function*() {
          const fiber = yield* Effect.forkChild(Effect.flip(handshake), { startImmediately: true })
          yield* WebSocket.deleteHandle(handle)
          const error = (yield* Fiber.join(fiber)) as WebSocketError.WebSocketError
          assert.deepStrictEqual(
            [error._tag, error._tag === "InvalidProtocolOperation" && error.state],
            ["InvalidProtocolOperation", "Deleted"],
            String(handle)
          )
          assert.match(error.message, /the handle was deleted/)
          assert.include(String(handle), "Deleted")
          const send = yield* Effect.flip(WebSocket.send(handle, "BinaryMessage", new Uint8Array([1])))
          assert.match(send.message, /the handle was deleted/)
        })
      const server = yield* WebSocket.createServerHandle().pipe(Effect.provide(awaitedDigest))
      yield* deletedMidway(server, WebSocket.beginServerHandshake(server, { requestHeaders: validRequest }))
      const { client, responseHeaders } = yield* begunClient
      yield* deletedMidway(client, WebSocket.endClientHandshake(client, { responseHeaders }))
    }))

  it.effect("two handshake calls at once on one handle: the first one's outcome holds, the second fails and leaves it so", () =>
    Effect.gen(function*() {
      const twice = <A, E>(handshake: Effect.Effect<A, E>) =>
        Effect.gen(function*() {
          const first = yield* Effect.forkChild(handshake, { startImmediately: true })
          const second = yield* Effect.forkChild(Effect.flip(handshake), { startImmediately: true })
          yield* Fiber.join(first)
          const error = (yield* Fiber.join(second)) as WebSocketError.WebSocketError
          assert.strictEqual(error._tag, "InvalidProtocolOperation")
        })
      const server = yield* WebSocket.createServerHandle().pipe(Effect.provide(awaitedDigest))
      yield* twice(WebSocket.beginServerHandshake(server, { requestHeaders: validRequest }))
      assert.include(String(server), "HandshakeStarted")
      yield* WebSocket.endServerHandshake(server)
      const { client, responseHeaders } = yield* begunClient
      yield* twice(WebSocket.endClientHandshake(client, { responseHeaders }))
      assert.include(String(client), "Open")
      yield* WebSocket.send(client, "BinaryMessage", new Uint8Array([1]))
      // and one that fails first (a wrong accept value) leaves the handle failed for the other
      const failing = yield* begunClient
      const wrong = [...drop("Sec-WebSocket-Accept")(failing.responseHeaders), { name: "Sec-WebSocket-Accept", value: RFC_ACCEPT }]
      const first = yield* Effect.forkChild(Effect.flip(WebSocket.endClientHandshake(failing.client, { responseHeaders: wrong })), {
        startImmediately: true
      })
      const second = yield* Effect.forkChild(
        Effect.flip(WebSocket.endClientHandshake(failing.client, { responseHeaders: failing.responseHeaders })),
        { startImmediately: true }
      )
      assert.strictEqual((yield* Fiber.join(first))._tag, "InvalidProtocolFormat")
      assert.match((yield* Fiber.join(second)).message, /another handshake call on this handle is under way/)
      assert.include(String(failing.client), "Failed")
    }))

  it.effect("a refused handshake call names itself and the handle's state", () =>
    Effect.gen(function*() {
      const client = yield* WebSocket.createClientHandle()
      const early = yield* Effect.flip(WebSocket.endClientHandshake(client, { responseHeaders: [] }))
      assert.deepStrictEqual(
        [early._tag, early._tag === "InvalidProtocolOperation" && [early.operation, early.state]],
        ["InvalidProtocolOperation", ["endClientHandshake", "Created"]]
      )
      const server = yield* WebSocket.createServerHandle()
      yield* WebSocket.beginServerHandshake(server, { requestHeaders: validRequest })
      const twice = yield* Effect.flip(WebSocket.beginServerHandshake(server, { requestHeaders: validRequest }))
      assert.deepStrictEqual(
        [twice._tag, twice._tag === "InvalidProtocolOperation" && [twice.operation, twice.state]],
        ["InvalidProtocolOperation", ["beginServerHandshake", "HandshakeStarted"]]
      )
    }))

  it.effect("a handshake call interrupted while it computes the accept value leaves the handle to the next call", () =>
    Effect.gen(function*() {
      const server = yield* WebSocket.createServerHandle().pipe(Effect.provide(awaitedDigest))
      const begin = yield* Effect.forkChild(WebSocket.beginServerHandshake(server, { requestHeaders: validRequest }), {
        startImmediately: true
      })
      yield* Fiber.interrupt(begin)
      assert.include(String(server), "Created")
      const { responseHeaders } = yield* WebSocket.beginServerHandshake(server, { requestHeaders: validRequest })
      assert.strictEqual(header(responseHeaders, "Sec-WebSocket-Accept"), RFC_ACCEPT)
      const begun = yield* begunClient
      const end = yield* Effect.forkChild(WebSocket.endClientHandshake(begun.client, { responseHeaders: begun.responseHeaders }), {
        startImmediately: true
      })
      yield* Fiber.interrupt(end)
      assert.include(String(begun.client), "HandshakeStarted")
      yield* WebSocket.endClientHandshake(begun.client, { responseHeaders: begun.responseHeaders })
      assert.include(String(begun.client), "Open")
    }))

  it.effect("two handshake calls at once: the second fails at once, even when its digest would come before the first one's", () =>
    Effect.gen(function*() {
      // (a Web Crypto whose first digest comes last: the thread pool of a busy machine may do that)
      const firstDigestLast = () => {
        let calls = 0
        return Layer.succeed(WebCrypto, {
          getRandomValues: globalThis.crypto.getRandomValues.bind(globalThis.crypto),
          subtle: {
            digest: async (algorithm: string, data: Uint8Array<ArrayBuffer>) => {
              if (calls++ === 0) await new Promise((resolve) => setTimeout(resolve, 30))
              return globalThis.crypto.subtle.digest(algorithm, data)
            }
          }
        } as unknown as typeof globalThis.crypto)
      }
      const both = <A, E>(handshake: Effect.Effect<A, E>) =>
        Effect.gen(function*() {
          const first = yield* Effect.forkChild(handshake, { startImmediately: true })
          const second = yield* Effect.forkChild(Effect.flip(handshake), { startImmediately: true })
          const error = (yield* Fiber.join(second)) as WebSocketError.WebSocketError
          assert.strictEqual(error._tag, "InvalidProtocolOperation")
          assert.match(error.message, /another handshake call on this handle is under way/)
          return yield* Fiber.join(first)
        })
      const server = yield* WebSocket.createServerHandle().pipe(Effect.provide(firstDigestLast()))
      yield* both(WebSocket.beginServerHandshake(server, { requestHeaders: validRequest }))
      assert.include(String(server), "HandshakeStarted")
      const client = yield* WebSocket.createClientHandle().pipe(Effect.provide(firstDigestLast()))
      const { requestHeaders } = yield* WebSocket.beginClientHandshake(client, { initialHeaders: [{ name: "Host", value: "h" }] })
      const { responseHeaders } = yield* WebSocket.beginServerHandshake(yield* WebSocket.createServerHandle(), { requestHeaders })
      yield* both(WebSocket.endClientHandshake(client, { responseHeaders }))
      assert.include(String(client), "Open")
    }))

  it.effect("a server handle takes the server defaults: an allocated buffer of 4096 + 16 + 256 bytes is enough", () =>
    Effect.gen(function*() {
      const server = yield* WebSocket.createServerHandle({ allocatedBuffer: new Uint8Array(4096 + 16 + 256) })
      assert.strictEqual(server.kind, "server")
      const error = yield* Effect.flip(WebSocket.createClientHandle({ allocatedBuffer: new Uint8Array(4096 + 16 + 256) }))
      assert.match(error.message, /= 8448 bytes, got 4368/)
    }))

  it.effect("data-last forms", () =>
    Effect.gen(function*() {
      const server = yield* WebSocket.createServerHandle()
      const { responseHeaders } = yield* server.pipe(WebSocket.beginServerHandshake({ requestHeaders: validRequest }))
      assert.strictEqual(header(responseHeaders, "Sec-WebSocket-Accept"), RFC_ACCEPT)
    }))

  const badProperties: ReadonlyArray<readonly [string, unknown, RegExp]> = [
    ["receive buffer too small", { receiveBufferSize: 255 }, /receiveBufferSize must be an integer from 256 to 65536, got 255/],
    ["receive buffer too large", { receiveBufferSize: 65537 }, /65537/],
    ["send buffer too small", { sendBufferSize: 15 }, /sendBufferSize/],
    ["fractional size", { receiveBufferSize: 4096.5 }, /4096.5/],
    ["allocated buffer too small", { allocatedBuffer: new Uint8Array(100) }, /8448/],
    ["keepalive is global", { keepaliveInterval: 20000 }, /global property/],
    ["unknown property", { receiveBufferSzie: 4096 }, /receiveBufferSzie/]
  ]
  for (const [name, properties, message] of badProperties) {
    it.effect(`out-of-range properties: ${name}`, () =>
      Effect.gen(function*() {
        const error = yield* Effect.flip(WebSocket.createClientHandle(properties as WebSocket.HandleProperties))
        assert.strictEqual(error._tag, "InvalidParameter")
        assert.strictEqual(error.hresult, 0x80070057)
        assert.match(error.message, message)
        assert.isTrue(WebSocketError.isWebSocketError(error))
      }))
  }

  it.effect("accepts properties in range", () =>
    Effect.gen(function*() {
      const handle = yield* WebSocket.createServerHandle({
        receiveBufferSize: 256,
        sendBufferSize: 65536,
        disableMasking: true,
        disableUtf8Verification: true,
        allocatedBuffer: new Uint8Array(256 + 65536 + 256),
        maxMessageSize: 1024
      })
      assert.strictEqual(handle.kind, "server")
    }))
})

describe("parameters that throw as they are read", () => {
  it.effect("a getter or a proxy that throws is an InvalidParameter, not a defect", () =>
    Effect.gen(function*() {
      const throwing = {
        get receiveBufferSize(): number {
          throw new Error("boom")
        }
      }
      const proxy = new Proxy({}, {
        ownKeys: () => {
          throw new Error("no keys")
        }
      })
      for (const properties of [throwing, proxy]) {
        const error = yield* Effect.flip(WebSocket.createServerHandle(properties as never))
        assert.strictEqual(error._tag, "InvalidParameter")
        assert.match(error.message, /could not be read: (boom|no keys)/)
      }
      const client = yield* WebSocket.createClientHandle()
      const headers = new Proxy([], {
        get: (target, key) => {
          if (key === "length") throw new Error("no length")
          return Reflect.get(target, key)
        }
      })
      const error = yield* Effect.flip(WebSocket.beginClientHandshake(client, { initialHeaders: headers as never }))
      assert.deepStrictEqual([error._tag, error.message], ["InvalidParameter", "initialHeaders could not be read: no length"])
      // a list of offers, an options object with a getter that throws, on either side
      const offers = yield* Effect.flip(WebSocket.beginClientHandshake(yield* WebSocket.createClientHandle(), { subprotocols: headers as never }))
      assert.deepStrictEqual([offers._tag, offers.message], ["InvalidParameter", "subprotocols could not be read: no length"])
      const getter = {
        get subprotocols(): ReadonlyArray<string> {
          throw new Error("no offers")
        }
      }
      const options = yield* Effect.flip(WebSocket.beginClientHandshake(yield* WebSocket.createClientHandle(), getter))
      assert.deepStrictEqual([options._tag, options.message], ["InvalidParameter", "options could not be read: no offers"])
      const server = yield* Effect.flip(WebSocket.beginServerHandshake(yield* WebSocket.createServerHandle(), {
        get requestHeaders(): ReadonlyArray<{ name: string; value: string }> {
          throw new Error("no request")
        }
      }))
      assert.deepStrictEqual([server._tag, server.message], ["InvalidParameter", "options could not be read: no request"])
    }))

  it.effect("headers from the peer that throw as they are read are a malformed header list, on either side", () =>
    Effect.gen(function*() {
      const throwing = new Proxy([], {
        get: () => {
          throw new Error("no headers")
        }
      })
      const server = yield* Effect.flip(WebSocket.beginServerHandshake(yield* WebSocket.createServerHandle(), { requestHeaders: throwing }))
      assert.deepStrictEqual([server._tag, server.message], ["InvalidProtocolFormat", "the header list could not be read: no headers"])
      const client = yield* WebSocket.createClientHandle()
      yield* WebSocket.beginClientHandshake(client)
      const error = yield* Effect.flip(WebSocket.endClientHandshake(client, { responseHeaders: throwing }))
      assert.deepStrictEqual([error._tag, error.message], ["InvalidProtocolFormat", "the header list could not be read: no headers"])
      // (an options object that throws as it is read is the caller's, as for beginServerHandshake)
      const response = new Proxy({ responseHeaders: [] }, {
        get: () => {
          throw new Error("no response")
        }
      })
      const other = yield* WebSocket.createClientHandle()
      yield* WebSocket.beginClientHandshake(other)
      const options = yield* Effect.flip(WebSocket.endClientHandshake(other, response))
      assert.deepStrictEqual([options._tag, options.message], ["InvalidParameter", "response could not be read: no response"])
    }))
})

describe("handshake options", () => {
  it.effect("an option of another name (a misspelt one) or options that are not an object are an InvalidParameter", () =>
    Effect.gen(function*() {
      const misspelt = yield* Effect.flip(
        WebSocket.beginClientHandshake(yield* WebSocket.createClientHandle(), { subprotocol: ["chat"] } as never)
      )
      assert.deepStrictEqual([misspelt._tag, misspelt.message], [
        "InvalidParameter",
        "options has no option \"subprotocol\": the options are subprotocols, extensions, initialHeaders"
      ])
      const notObject = yield* Effect.flip(WebSocket.beginClientHandshake(yield* WebSocket.createClientHandle(), "chat" as never))
      assert.deepStrictEqual([notObject._tag, notObject.message], ["InvalidParameter", "options is an object, got string"])
      const server = yield* Effect.flip(
        WebSocket.beginServerHandshake(yield* WebSocket.createServerHandle(), { requestHeaders: validRequest, subprotocols: "chat" } as never)
      )
      assert.deepStrictEqual([server._tag, server.message], [
        "InvalidParameter",
        "options has no option \"subprotocols\": the options are requestHeaders, subprotocol, extensions"
      ])
    }))

  it.effect("a caller's mistake in the options leaves the handle as it was; the peer's mistake fails it", () =>
    Effect.gen(function*() {
      const client = yield* WebSocket.createClientHandle()
      const server = yield* WebSocket.createServerHandle()
      const { requestHeaders } = yield* WebSocket.beginClientHandshake(client, { initialHeaders: [{ name: "Host", value: "h" }] })
      const misspelt = yield* Effect.flip(WebSocket.endClientHandshake(client, { responseHeader: [] } as never))
      assert.deepStrictEqual([misspelt._tag, misspelt.message], [
        "InvalidParameter",
        "response has no option \"responseHeader\": the options are responseHeaders"
      ])
      assert.include(String(client), "HandshakeStarted")
      const serverMisspelt = yield* Effect.flip(WebSocket.beginServerHandshake(server, { requestHeaders, subprotocl: "chat" } as never))
      assert.strictEqual(serverMisspelt._tag, "InvalidParameter")
      assert.include(String(server), "Created")
      // a malformed selection is the caller's too
      const malformed = yield* Effect.flip(WebSocket.beginServerHandshake(server, { requestHeaders, subprotocol: "a b" }))
      assert.strictEqual(malformed._tag, "InvalidParameter")
      assert.include(String(server), "Created")
      // so both handshakes can still complete
      const { responseHeaders } = yield* WebSocket.beginServerHandshake(server, { requestHeaders })
      yield* WebSocket.endClientHandshake(client, { responseHeaders })
      assert.include(String(client), "Open")
      // while a bad request or response fails the handle
      const failedServer = yield* WebSocket.createServerHandle()
      yield* Effect.flip(WebSocket.beginServerHandshake(failedServer, { requestHeaders: without("Host") }))
      assert.include(String(failedServer), "Failed")
      const failedClient = yield* WebSocket.createClientHandle()
      yield* WebSocket.beginClientHandshake(failedClient)
      yield* Effect.flip(WebSocket.endClientHandshake(failedClient, { responseHeaders: [] }))
      assert.include(String(failedClient), "Failed")
    }))

  it.effect("endClientHandshake on a server handle is refused and leaves its handshake as it was", () =>
    Effect.gen(function*() {
      const server = yield* WebSocket.createServerHandle()
      yield* WebSocket.beginServerHandshake(server, { requestHeaders: validRequest })
      const error = yield* Effect.flip(WebSocket.endClientHandshake(server as never, { responseHeaders: [] }))
      assert.strictEqual(error._tag, "InvalidProtocolOperation")
      assert.include(String(server), "HandshakeStarted")
      yield* WebSocket.endServerHandshake(server)
      assert.include(String(server), "Open")
    }))

  it.effect("each handshake function refuses a handle of the other kind and leaves it as it was: a client opens only on a checked response", () =>
    Effect.gen(function*() {
      const server = yield* WebSocket.createServerHandle()
      const notServer = yield* Effect.flip(WebSocket.beginClientHandshake(server as unknown as WebSocket.ClientHandle))
      assert.deepStrictEqual(
        [notServer._tag, notServer.message],
        ["InvalidProtocolOperation", "beginClientHandshake needs a client handle, got a server handle"]
      )
      assert.include(String(server), "Created")
      yield* WebSocket.beginServerHandshake(server, { requestHeaders: validRequest })
      const client = yield* WebSocket.createClientHandle()
      const notClient = yield* Effect.flip(WebSocket.beginServerHandshake(client as never, { requestHeaders: validRequest }))
      assert.deepStrictEqual(
        [notClient._tag, notClient.message],
        ["InvalidProtocolOperation", "beginServerHandshake needs a server handle, got a client handle"]
      )
      assert.include(String(client), "Created")
      yield* WebSocket.beginClientHandshake(client)
      const unchecked = yield* Effect.flip(WebSocket.endServerHandshake(client as never))
      assert.deepStrictEqual(
        [unchecked._tag, unchecked.message],
        ["InvalidProtocolOperation", "endServerHandshake needs a server handle, got a client handle"]
      )
      assert.include(String(client), "HandshakeStarted")
      assert.strictEqual((yield* Effect.flip(WebSocket.send(client, "BinaryMessage", new Uint8Array([1]))))._tag, "InvalidProtocolOperation")
    }))
})

describe("BufferType", () => {
  it("reads a buffer type's C value signed (as C code holds the enum) or not as the same buffer type", () => {
    for (const [name, value] of Object.entries(BufferType.BufferType)) {
      const signed = value | 0
      assert.isBelow(signed, 0)
      assert.deepStrictEqual(
        [BufferType.nameOf(signed), BufferType.isData(signed), BufferType.isText(signed), BufferType.isMessageEnd(signed)],
        [name, BufferType.isData(value), BufferType.isText(value), BufferType.isMessageEnd(value)]
      )
    }
    for (const value of [0x80000007, -1, -0.5, -3e9, -2147483649.5, Number.NaN, 0x180000000]) {
      assert.deepStrictEqual([BufferType.nameOf(value), BufferType.isData(value), BufferType.isText(value)], [undefined, false, false])
    }
  })

  it("the guards classify each buffer type as the table says", () => {
    const all = Object.values(BufferType.BufferType)
    assert.deepStrictEqual(all.map(BufferType.isData), [true, true, true, true, false, false, false])
    assert.deepStrictEqual(all.map(BufferType.isText), [true, true, false, false, false, false, false])
    assert.deepStrictEqual(all.map(BufferType.isMessageEnd), [true, false, true, false, false, false, false])
  })

  it("unsigned reads a negative 32-bit integer as its unsigned value and returns other numbers as given", () => {
    assert.strictEqual(BufferType.unsigned(-2147483648), 0x80000000)
    assert.strictEqual(BufferType.unsigned(-1), 0xffffffff)
    for (const value of [0x80000000, 7, 0, -0.5, -1.5, -2147483649]) {
      assert.strictEqual(BufferType.unsigned(value), value, String(value))
    }
  })
})

describe("getGlobalProperty", () => {
  it.effect("SupportedVersions is [13]", () =>
    Effect.gen(function*() {
      assert.deepStrictEqual(yield* WebSocket.getGlobalProperty("SupportedVersions"), [13])
    }))
  it.effect("KeepaliveInterval defaults to 30000", () =>
    Effect.gen(function*() {
      assert.strictEqual(yield* WebSocket.getGlobalProperty("KeepaliveInterval"), 30000)
    }))
  it.effect("an unknown property is an invalid parameter", () =>
    Effect.gen(function*() {
      const exit = yield* Effect.exit(WebSocket.getGlobalProperty("ReceiveBufferSize" as WebSocket.GlobalProperty))
      assert.isTrue(Exit.isFailure(exit))
    }))

  it.effect("KeepaliveInterval reads WEBSOCKET_KEEPALIVE_INTERVAL, raising values below 15000 to 15000", () =>
    Effect.gen(function*() {
      const read = (value: string) =>
        WebSocket.getGlobalProperty("KeepaliveInterval").pipe(
          Effect.provide(ConfigProvider.layer(ConfigProvider.fromUnknown({ WEBSOCKET_KEEPALIVE_INTERVAL: value })))
        )
      assert.strictEqual(yield* read("60000"), 60000)
      assert.strictEqual(yield* read("15000"), 15000)
      assert.strictEqual(yield* read("1000"), 15000)
      for (const bad of ["-1", "4294967296", "soon"]) {
        const error = yield* Effect.flip(read(bad))
        assert.deepStrictEqual([error._tag, error.parameter], ["InvalidParameter", "KeepaliveInterval"], bad)
      }
    }))
})

describe("arbitrary input", () => {
  const Name = Schema.Literals([
    "Host", "Upgrade", "Connection", "Sec-WebSocket-Key", "Sec-WebSocket-Version", "Sec-WebSocket-Protocol",
    "Sec-WebSocket-Extensions", "Sec-WebSocket-Accept", "X"
  ])
  const Value = Schema.Union([
    Schema.String,
    Schema.Literals(["websocket", "Upgrade", "13", "8", RFC_KEY, RFC_ACCEPT, "chat, superchat", "a; b=\"c\"", "x;"])
  ])
  const Headers = Schema.Array(Schema.Struct({ name: Schema.Union([Name, Schema.String]), value: Value }))
  const expected = new Set([
    "InvalidProtocolFormat", "UnsupportedProtocolVersion", "UnsupportedSubprotocol", "UnsupportedExtension",
    "InvalidParameter"
  ])

  it.effect.prop("arbitrary request headers never throw or defect", { headers: Headers }, ({ headers }) =>
    Effect.gen(function*() {
      const server = yield* WebSocket.createServerHandle()
      const exit = yield* Effect.exit(WebSocket.beginServerHandshake(server, { requestHeaders: headers, subprotocol: "chat" }))
      if (Exit.isFailure(exit)) {
        const error = Exit.findErrorOption(exit)
        assert.isTrue(Option.isSome(error) && expected.has(error.value._tag))
      }
    }))

  /** Values of every kind an untyped caller might pass as a handshake option. */
  const AnyOption = Schema.Union([
    Schema.Undefined,
    Schema.Null,
    Schema.Number,
    Schema.String,
    Schema.Array(Schema.Union([Schema.String, Schema.Number, Schema.Null])),
    Schema.Array(Schema.Struct({ name: Schema.Union([Name, Schema.String]), value: Schema.Union([Value, Schema.Number]) })),
    Schema.Record(Schema.String, Schema.String)
  ])

  it.effect.prop(
    "any handshake options from untyped callers end in a typed error or a handshake, never a defect",
    { subprotocols: AnyOption, extensions: AnyOption, initialHeaders: AnyOption, subprotocol: AnyOption, selected: AnyOption },
    ({ extensions, initialHeaders, selected, subprotocol, subprotocols }) =>
      Effect.gen(function*() {
        const client = yield* WebSocket.createClientHandle()
        const begun = yield* Effect.exit(WebSocket.beginClientHandshake(client, { subprotocols, extensions, initialHeaders } as never))
        const server = yield* WebSocket.createServerHandle()
        const requestHeaders = Exit.isSuccess(begun) ? begun.value.requestHeaders : validRequest
        const accepted = yield* Effect.exit(
          WebSocket.beginServerHandshake(server, { requestHeaders, subprotocol, extensions: selected } as never)
        )
        for (const exit of [Exit.asVoid(begun), Exit.asVoid(accepted)]) {
          if (Exit.isFailure(exit)) {
            const error = Exit.findErrorOption(exit)
            assert.isTrue(Option.isSome(error) && expected.has(error.value._tag), String(exit.cause))
          }
        }
      }),
    { arbitrary: { runs: 300 } }
  )

  it.effect.prop("arbitrary response headers never throw or defect", { headers: Headers }, ({ headers }) =>
    Effect.gen(function*() {
      const client = yield* WebSocket.createClientHandle()
      yield* WebSocket.beginClientHandshake(client, { subprotocols: ["chat"], extensions: ["a"] })
      const exit = yield* Effect.exit(WebSocket.endClientHandshake(client, { responseHeaders: headers }))
      if (Exit.isFailure(exit)) {
        const error = Exit.findErrorOption(exit)
        assert.isTrue(Option.isSome(error) && expected.has(error.value._tag))
      }
    }))
})
