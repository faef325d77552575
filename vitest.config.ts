/**
 * The configuration a bare `vitest` (or `pnpm exec vitest run some.test.ts`) picks up: the same
 * projects as `pnpm test`, so that sibling packages resolve to their TypeScript sources and never
 * to a stale build.
 */
export { default } from "./vitest.workspace.ts"
