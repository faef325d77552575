/**
 * How error messages show a value that came from outside: quoted, and cut short when long (a
 * header value may be as long as the header limit allows; a message and a log line should not be).
 *
 * @since 0.1.0
 */

/** The characters of a value shown in full; a longer one is cut there. */
const SHOWN = 80

/** `value` as a JSON string, cut after {@link SHOWN} characters with a note of its full length. */
export const quote = (value: string): string =>
  value.length <= SHOWN
    ? JSON.stringify(value)
    : `${JSON.stringify(value.slice(0, SHOWN))}... (${value.length} characters)`
