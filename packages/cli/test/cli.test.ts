import { assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import { spawn } from "node:child_process"
import { readFileSync } from "node:fs"
import { ewsRun } from "./fixtures.ts"

// the version the package is published as, which `ews --version` must print
const packageVersion: string = JSON.parse(readFileSync(new URL("../package.json", import.meta.url), "utf8")).version

describe("ews command line", () => {
  it.live("--help documents both commands; each command's --help documents its flags", () =>
    Effect.gen(function*() {
      const [root, serve, connect] = yield* Effect.all([
        ewsRun(["--help"]),
        ewsRun(["serve", "--help"]),
        ewsRun(["connect", "--help"])
      ], { concurrency: "unbounded" })
      assert.strictEqual(root.code, 0)
      const rootText = root.stdout.join("\n")
      assert.match(rootText, /^\s+serve\s+\S/m)
      assert.match(rootText, /^\s+connect\s+\S/m)
      assert.strictEqual(serve.code, 0)
      const serveText = serve.stdout.join("\n")
      for (
        const flag of [
          "--host",
          "--port",
          "--path",
          "--echo",
          "--broadcast",
          "--subprotocol",
          "--max-message-size",
          "--tls-cert",
          "--tls-key",
          "--json",
          "--stats"
        ]
      ) assert.include(serveText, flag)
      assert.strictEqual(connect.code, 0)
      const connectText = connect.stdout.join("\n")
      for (
        const flag of [
          "<url>",
          "--subprotocol",
          "--header, -H",
          "--origin",
          "--echo",
          "--binary",
          "--ping-interval",
          "--wait",
          "--insecure",
          "--json",
          "--stats"
        ]
      ) assert.include(connectText, flag)
    }))

  it.live("--version", () =>
    Effect.gen(function*() {
      const result = yield* ewsRun(["--version"])
      assert.strictEqual(result.code, 0)
      assert.deepStrictEqual(result.stdout, [`ews v${packageVersion}`])
    }))

  it.live("an unknown flag: non-zero exit naming it, help and error on stderr, nothing on stdout", () =>
    Effect.gen(function*() {
      const [connect, serve] = yield* Effect.all([
        ewsRun(["connect", "ws://127.0.0.1:1/", "--json", "--bogus"]),
        ewsRun(["serve", "--port", "0", "--nope"])
      ], { concurrency: "unbounded" })
      assert.strictEqual(connect.code, 1)
      assert.include(connect.stderr, "Unrecognized flag: --bogus")
      assert.include(connect.stderr, "ews connect [flags] <url>")
      assert.deepStrictEqual(connect.stdout, [])
      assert.strictEqual(serve.code, 1)
      assert.include(serve.stderr, "Unrecognized flag: --nope")
      assert.deepStrictEqual(serve.stdout, [])
    }))

  it.live("invalid values: non-zero exit with a message", () =>
    Effect.gen(function*() {
      const results = yield* Effect.all([
        ewsRun(["serve", "--port", "70000"]),
        ewsRun(["serve", "--port", "http"]),
        ewsRun(["serve", "--echo", "--broadcast", "--port", "0"]),
        ewsRun(["serve", "--path", "nochar", "--port", "0"]),
        ewsRun(["connect", "ws://127.0.0.1:1/", "-H", "no colon"]),
        ewsRun(["connect", "ws://127.0.0.1:1/", "-H", ": value"]),
        ewsRun(["connect", "ws://127.0.0.1:1/", "-s", "bad protocol"]),
        ewsRun(["connect", "ws://127.0.0.1:1/", "--ping-interval", "0"]),
        ewsRun(["connect", "ws://127.0.0.1:1/", "--ping-interval", "100", "--ping-timeout", "0"]),
        ewsRun(["connect"]),
        ewsRun(["bogus"])
      ], { concurrency: 3 })
      for (const result of results) assert.strictEqual(result.code, 1, result.stderr)
      const [port, portText, modes, path, header, headerName, protocol, ping, pingTimeout, missing, subcommand] = results.map((r) => r.stderr)
      assert.include(port, "--port must be between 0 and 65535, got 70000")
      assert.include(portText, "--port")
      assert.strictEqual(modes!.trim(), "ews: --echo and --broadcast cannot be used together")
      assert.include(path, `--path must start with "/"`)
      assert.include(header, `invalid header "no colon": expected "Name: value"`)
      assert.include(headerName, `invalid header ": value": expected "Name: value"`)
      assert.include(protocol, `"bad protocol" is not a valid subprotocol name`)
      assert.include(ping, "--ping-interval must be a positive number of milliseconds")
      assert.include(pingTimeout, "--ping-timeout must be a positive number of milliseconds, got 0")
      assert.include(missing, "Missing required argument: url")
      assert.include(subcommand, "bogus")
    }))

  it.live("--port 65535, the last port, is a valid value (the run goes on to read the TLS files, and fails there)", () =>
    Effect.gen(function*() {
      // (missing TLS files: the run stops before it listens, whatever uses port 65535)
      const result = yield* ewsRun(["serve", "--port", "65535", "--tls-cert", "/nonexistent/cert.pem", "--tls-key", "/nonexistent/key.pem"])
      assert.strictEqual(result.code, 1)
      assert.notInclude(result.stderr, "--port must be between")
      assert.include(result.stderr, `cannot read TLS certificate file "/nonexistent/cert.pem"`)
    }))

  it.live("the end of a run waits for a reader of stdout that is slow but reads: nothing is cut", () =>
    Effect.callback<void>((resume) => {
      // 8 MiB written, then the run ends; the reader takes about 1.5 MB/s (much more than the 2 s
      // the end waits for a reader that reads nothing; Node hands the 8 MiB to the pipe in one
      // write, which it counts as unwritten until the reader has taken all of it)
      const cli = new URL("../src/Cli.ts", import.meta.url).href
      const script = `import { Exit } from "effect"; import { teardown } from ${JSON.stringify(cli)};
        const line = "x".repeat(1023) + "\\n"; for (let i = 0; i < 8192; i++) process.stdout.write(line);
        teardown(Exit.void, () => {})`
      const child = spawn(process.execPath, ["--conditions=@effect-websocket/source", "--input-type=module", "-e", script], {
        stdio: ["ignore", "pipe", "inherit"]
      })
      let received = 0
      child.stdout.on("data", (chunk: Buffer) => {
        received += chunk.length
        child.stdout.pause()
        setTimeout(() => child.stdout.resume(), 40)
      })
      child.on("close", (code) =>
        resume(Effect.sync(() => assert.deepStrictEqual({ code, received }, { code: 0, received: 8 * 1024 * 1024 }))))
    }), { timeout: 20_000 })
})
