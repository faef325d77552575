/**
 * `ews`, a WebSocket command-line client and server, as commands that other programs may run or
 * embed.
 *
 * @since 0.1.0
 */

/** @since 0.1.0 */
export * as Cli from "./Cli.ts"
/** @since 0.1.0 */
export * as Connect from "./Connect.ts"
/** @since 0.1.0 */
export * as Serve from "./Serve.ts"
/** @since 0.1.0 */
export * as Output from "./Output.ts"
