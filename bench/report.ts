/**
 * What the benchmarks share: command-line options, size labels, medians, number formatting and
 * the printed table.
 */

/** The value of `--name=value` on the command line, if given. */
export const argument = (name: string): string | undefined => {
  const prefix = `--${name}=`
  const found = process.argv.find((a) => a.startsWith(prefix))
  return found === undefined ? undefined : found.slice(prefix.length)
}

/**
 * `--bufferutil=without`: sets the switches of `ws` and ours so that both mask in JavaScript
 * although `bufferutil` is installed. Both read them when they are loaded (and child processes
 * inherit them), so this runs before either is imported. Returns whether the option was given.
 */
export const applyBufferutilOption = (): boolean => {
  if (argument("bufferutil") !== "without") return false
  process.env.WS_NO_BUFFER_UTIL = "1"
  process.env.EFFECT_WEBSOCKET_NO_BUFFERUTIL = "1"
  return true
}

/** `16 B`, `1 KiB`, `1 MiB`. */
export const sizeLabel = (size: number): string =>
  size >= 1024 * 1024 ? `${size / 1024 / 1024} MiB` : size >= 1024 ? `${size / 1024} KiB` : `${size} B`

/** The median of `values`. */
export const median = (values: ReadonlyArray<number>): number => {
  const sorted = [...values].sort((a, b) => a - b)
  const mid = sorted.length >> 1
  return sorted.length % 2 === 1 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2
}

/** A number in a few characters: `1.25M`, `340k`, `812`, `12.5`, `3.41`; `-` when absent. */
export const formatNumber = (value: number | undefined): string => {
  if (value === undefined) return "-"
  if (value >= 1e6) return `${(value / 1e6).toFixed(2)}M`
  if (value >= 1e4) return `${(value / 1e3).toFixed(0)}k`
  if (value >= 100) return value.toFixed(0)
  if (value >= 10) return value.toFixed(1)
  return value.toFixed(2)
}

/** `ours / ws` with two decimals; `-` when either is absent. */
export const formatRatio = (ours: number | undefined, ws: number | undefined): string =>
  ours === undefined || ws === undefined ? "-" : (ours / ws).toFixed(2)

/** Prints a table: the first `leftColumns` columns left-aligned, the others right-aligned. */
export const printTable = (
  header: ReadonlyArray<string>,
  rows: ReadonlyArray<ReadonlyArray<string>>,
  leftColumns: number
): void => {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((row) => row[i]!.length)))
  const line = (cells: ReadonlyArray<string>): string =>
    cells.map((c, i) => (i < leftColumns ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join("  ")
  console.log(line(header))
  for (const row of rows) console.log(line(row))
}
