/**
 * The test projects of the monorepo: one per workspace package, each resolving sibling
 * packages to their TypeScript sources through the `@effect-websocket/source` export condition,
 * so tests run with no build step.
 *
 * `interop` runs `packages/platform-node/test/interop` against peers we did not write (`ws`,
 * Python `websockets`, Chromium, Node.js's built-in `WebSocket`, OpenSSL). It needs those
 * installed (`.ci/run interop` installs them), so it only runs when selected:
 * `pnpm run test:interop` (`--project interop`).
 */
import { defaultServerConditions } from "vite"
import { configDefaults, defineConfig } from "vitest/config"

const project = (
  name: string,
  options?: {
    readonly root?: string
    readonly include?: Array<string>
    readonly exclude?: Array<string>
    readonly testTimeout?: number
  }
) => ({
  ssr: { resolve: { conditions: ["@effect-websocket/source", ...defaultServerConditions] } },
  test: {
    name,
    root: options?.root ?? `packages/${name}`,
    include: options?.include ?? ["test/**/*.test.ts"],
    ...(options?.exclude === undefined ? {} : { exclude: [...configDefaults.exclude, ...options.exclude] }),
    ...(options?.testTimeout === undefined ? {} : { testTimeout: options.testTimeout }),
    environment: "node" as const
  }
})

/** Whether the command line selects the `interop` project (`--project interop` or `--project=interop`). */
const interopSelected = process.argv.some((arg, i) =>
  arg === "--project=interop" || ((arg === "--project" || arg === "--projects") && process.argv[i + 1] === "interop")
)

export default defineConfig({
  test: {
    projects: [
      project("schema"),
      project("core"),
      project("platform-node", { exclude: ["test/interop/**"] }),
      project("examples", { root: "examples", include: ["*.test.ts"] }),
      project("cli", { testTimeout: 30_000 }),
      ...(interopSelected
        ? [project("interop", {
          root: "packages/platform-node",
          include: ["test/interop/**/*.test.ts"],
          testTimeout: 30_000
        })]
        : [])
    ]
  }
})
