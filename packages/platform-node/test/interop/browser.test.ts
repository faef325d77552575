/**
 * Interoperability with a real browser: headless Chromium loads a page from a `node:http` server
 * whose `upgrade` event runs our `makeUpgradeHandler`, and the page's script talks to our echo
 * handler with the browser's own `WebSocket`.
 */
import { assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import * as Fs from "node:fs/promises"
import * as Http from "node:http"
import type { Duplex } from "node:stream"
import { NodeServer } from "../../src/index.ts"
import {
  attempt,
  digest,
  echoHandler,
  fixture,
  listenOnLoopback,
  Mailbox,
  type ServerSide,
  spawnChild,
  tempDir,
  within
} from "./helpers.ts"

const CHROMIUM_FLAGS = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-dev-shm-usage",
  "--no-first-run",
  "--no-default-browser-check",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
  "--disable-extensions",
  "--disable-quic",
  "--mute-audio",
  "--disable-breakpad",
  "--disable-crash-reporter"
]

/** A `node:http` server on 127.0.0.1 serving the page (a fixture) and taking reports, closed with the scope. */
const pageServer = (
  onUpgrade: (request: Http.IncomingMessage, socket: Duplex, head: Buffer) => void,
  pageFixture = "browser_page.html"
) =>
  Effect.gen(function*() {
    const page = yield* attempt("reading the page", () => Fs.readFile(fixture(pageFixture)))
    const reportScript = yield* attempt("reading the report script", () => Fs.readFile(fixture("browser_report.js")))
    const reports = new Mailbox<string>()
    const held: Array<() => void> = []
    const server = Http.createServer((request, response) => {
      if (request.method === "GET" && request.url === "/") {
        response.writeHead(200, { "Content-Type": "text/html; charset=utf-8", "Cache-Control": "no-store" })
        return response.end(page)
      }
      if (request.method === "GET" && request.url === "/report.js") {
        response.writeHead(200, { "Content-Type": "text/javascript; charset=utf-8", "Cache-Control": "no-store" })
        return response.end(reportScript)
      }
      if (request.method === "GET" && request.url === "/hold") {
        // answered once the report is in (or after 15 s): keeps the page loading until then
        const release = () => {
          clearTimeout(timer)
          if (!response.writableEnded) response.writeHead(204).end()
        }
        const timer = setTimeout(release, 15_000)
        held.push(release)
        return
      }
      if (request.method === "POST" && request.url === "/report") {
        let body = ""
        request.setEncoding("utf8").on("data", (chunk: string) => (body += chunk)).on("end", () => {
          reports.push(body)
          response.writeHead(204).end()
          for (const release of held.splice(0)) release()
        })
        return
      }
      response.writeHead(404).end()
    })
    server.on("upgrade", onUpgrade)
    const port = yield* Effect.acquireRelease(
      listenOnLoopback(server, "the page server"),
      () =>
        Effect.ignore(within(
          Effect.callback<void>((resume) => {
            for (const release of held.splice(0)) release()
            server.close(() => resume(Effect.void))
            server.closeAllConnections()
          }),
          5_000,
          "the page server to close"
        ))
    )
    return { url: `http://127.0.0.1:${port}/`, origin: `http://127.0.0.1:${port}`, reports: reports.take }
  })

/**
 * Headless Chromium, with a fresh profile, dumping the DOM of `url` once it has loaded; killed
 * with its helpers when the scope closes.
 */
const loadInChromium = (url: string) =>
  Effect.gen(function*() {
    const profile = yield* tempDir("interop-chromium-")
    const chromium = yield* spawnChild(
      "chromium",
      [...CHROMIUM_FLAGS, `--user-data-dir=${profile}`, "--dump-dom", "--virtual-time-budget=5000", url],
      { group: true }
    )
    chromium.process.stdin!.end()
    const output = () => {
      const { stderr, stdout } = chromium.output()
      const state = chromium.process.exitCode ?? chromium.process.signalCode ?? "running"
      return `Chromium (${state}) stdout:\n${stdout.slice(-3000)}\nstderr:\n${stderr.slice(-3000)}`
    }
    const explain = (error: Error) => new Error(`${error.message}\n${output()}`)
    return { chromium, output, explain }
  })

describe("Chromium → our server", () => {
  it.live("a page's WebSocket echoes text and binary through our upgrade handler, gets fragments, answers our ping, closes with 4000", () =>
    Effect.gen(function*() {
      const sides = new Mailbox<ServerSide>()
      const origins: Array<string | undefined> = []
      const onUpgrade = yield* NodeServer.makeUpgradeHandler(echoHandler(sides.push), {
        path: "/ws",
        selectProtocol: (offered) => (offered.includes("browser-chat") ? "browser-chat" : undefined),
        authorize: (request) =>
          Effect.sync(() => {
            origins.push(request.headers.find((h) => h.name.toLowerCase() === "origin")?.value)
          })
      })
      const http = yield* pageServer(onUpgrade)
      const { chromium, explain, output } = yield* loadInChromium(http.url)
      const side = yield* within(sides.take, 30_000, "Chromium to connect").pipe(Effect.mapError(explain))
      yield* side.connection.ping(new TextEncoder().encode("ping from node"))
      const report = yield* within(http.reports, 20_000, "the page's report").pipe(
        Effect.mapError((error) => explain(new Error(`${error.message}; our server received ${JSON.stringify(side.received)}`)))
      )
      assert.match(report, /^INTEROP-OK checks=12 protocol=browser-chat$/, output())
      const result = yield* within(chromium.exit, 20_000, "Chromium to exit")
      assert.include(result.stdout, "INTEROP-OK checks=12", `the dumped DOM:\n${result.stdout}\n${output()}`)
      assert.deepStrictEqual(origins, [http.origin])
      assert.strictEqual(side.connection.protocol, "browser-chat")
      assert.strictEqual(side.connection.stats.pongsIn, 1)
      const info = yield* within(side.connection.closed, 5_000, "our connection to close")
      assert.deepStrictEqual(info, { code: 4000, reason: "browser done", clean: true, initiator: "remote" })
      assert.deepStrictEqual(side.received.slice(0, 3), [
        digest("hello from the browser"),
        digest("ünïcödé ☃ and 😀"),
        digest("")
      ])
      assert.deepStrictEqual(side.received.slice(3).map((d) => `${d.kind}:${d.size}`), [
        "text:70000",
        "binary:0",
        "binary:1",
        "binary:125",
        "binary:126",
        "binary:65535",
        "binary:65536",
        "binary:1048576",
        "text:9"
      ])
    }), 60_000)

  it.live("a page sees our closes with 1000, 1001, 1011 and 4999 (a 123-byte reason) as sent, and our refused upgrade as 1006 with no reason", () =>
    Effect.gen(function*() {
      const sides = new Mailbox<ServerSide>()
      const asked: Array<string> = []
      const onUpgrade = yield* NodeServer.makeUpgradeHandler(echoHandler(sides.push), {
        path: "/ws",
        authorize: (request) =>
          Effect.suspend(() => {
            asked.push(request.url)
            return request.url === "/ws?refuse"
              ? Effect.fail(new NodeServer.Rejection({ status: 403, message: "not for this page" }))
              : Effect.void
          })
      })
      const http = yield* pageServer(onUpgrade, "browser_close_page.html")
      const { chromium, explain, output } = yield* loadInChromium(http.url)
      const report = yield* within(http.reports, 30_000, "the page's report").pipe(Effect.mapError(explain))
      assert.match(report, /^INTEROP-OK checks=8$/, output())
      yield* within(chromium.exit, 20_000, "Chromium to exit").pipe(Effect.mapError(explain))
      const long = "é".repeat(61) + "x"
      const closes: Array<unknown> = []
      for (let i = 0; i < 4; i++) {
        const side = yield* within(sides.take, 1_000, "a connection of the page")
        closes.push(yield* within(side.connection.closed, 5_000, "our connection to close"))
      }
      const byCode = (a: unknown, b: unknown) => (a as { code: number }).code - (b as { code: number }).code
      assert.deepStrictEqual(closes.sort(byCode), [
        { code: 1000, reason: "normal", clean: true, initiator: "local" },
        { code: 1001, reason: "going away", clean: true, initiator: "local" },
        { code: 1011, reason: "server error", clean: true, initiator: "local" },
        { code: 4999, reason: long, clean: true, initiator: "local" }
      ])
      // the refused request reached authorize, never the handler
      assert.deepStrictEqual([...asked].sort(), ["/ws", "/ws", "/ws", "/ws", "/ws?refuse"])
    }), 60_000)
})
