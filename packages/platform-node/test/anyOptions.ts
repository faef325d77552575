/**
 * Option objects as untyped callers might build them, for the "any options" property tests of
 * the client and the server.
 */
import { Arbitrary, Schema } from "effect"

const int = (minimum: number, maximum: number) => Arbitrary.schema(Schema.Int.check(Schema.isBetween({ minimum, maximum })))

/**
 * Arbitrary option objects over `paths` (dotted, e.g. `"connection.closeTimeout"`): each path is
 * absent, or set to one of `values`. A path is set when its die shows 3 (a middle value, since
 * generated integers lean to the ends of their range), so most objects set a few paths.
 */
export const anyOptions = (
  paths: ReadonlyArray<string>,
  values: ReadonlyArray<unknown>
): Arbitrary.Arbitrary<Record<string, unknown>> =>
  Arbitrary.map(
    Arbitrary.array(Arbitrary.all([int(0, 6), int(0, values.length - 1)]), { minLength: paths.length, maxLength: paths.length }),
    (choices) => {
      const options: Record<string, unknown> = {}
      paths.forEach((path, i) => {
        const [die, choice] = choices[i]!
        if (die !== 3) return
        const keys = path.split(".")
        let target = options
        for (const key of keys.slice(0, -1)) target = (target[key] ??= {}) as Record<string, unknown>
        target[keys[keys.length - 1]!] = values[choice]
      })
      return options
    }
  )

/** The tags of the errors in a failure's cause (`Die` / `Interrupt` for those). */
export const failureTags = (reasons: ReadonlyArray<{ readonly _tag: string; readonly error?: unknown }>): ReadonlyArray<string> =>
  reasons.map((r) => (r._tag === "Fail" ? String((r.error as { _tag?: unknown })._tag) : r._tag))
