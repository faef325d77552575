/**
 * The test projects of the monorepo: one per workspace package, each resolving sibling
 * packages to their TypeScript sources through the `@effect-websocket/source` export condition,
 * so tests run with no build step.
 */
import { defaultServerConditions } from "vite"
import { defineConfig } from "vitest/config"

const project = (name: string) => ({
  ssr: { resolve: { conditions: ["@effect-websocket/source", ...defaultServerConditions] } },
  test: {
    name,
    root: `packages/${name}`,
    include: ["test/**/*.test.ts"],
    environment: "node" as const
  }
})

export default defineConfig({
  test: {
    projects: [
      project("schema"),
      project("core"),
      project("platform-node"),
      {
        ...project("examples"),
        test: { ...project("examples").test, root: "examples", include: ["*.test.ts"] }
      }
    ]
  }
})
