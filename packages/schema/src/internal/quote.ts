/**
 * How error messages show a value that came from outside: quoted, and cut short when long (a
 * header value may be as long as the header limit allows; a message and a log line should not be).
 *
 * @since 0.1.0
 */

/** The characters of a value shown in full; a longer one is cut there. */
const SHOWN = 80

/**
 * What `JSON.stringify` leaves as it is but a reader could not tell from a space or from nothing:
 * separators other than the space (U+00A0, U+2028, ...), controls beyond ASCII (U+0080 to
 * U+009F), format characters and whatever else Unicode says to draw as nothing (U+200B, U+FEFF,
 * U+034F, variation selectors, ...), and the blanks drawn as a space (the Hangul fillers, which
 * are among those, and U+2800).
 */
const UNSEEN = /[^\P{Z} ]|\p{C}|\p{Default_Ignorable_Code_Point}|\u2800/gu

/** A JSON escape of `char` (a pair of them for a character beyond U+FFFF). */
const escapeUnseen = (char: string): string => {
  let out = ""
  for (let i = 0; i < char.length; i++) out += `\\u${char.charCodeAt(i).toString(16).padStart(4, "0")}`
  return out
}

/** `value` as a JSON string with unseen characters escaped (`"13\u00a0"`, not a look-alike `"13 "`). */
const show = (value: string): string => JSON.stringify(value).replace(UNSEEN, escapeUnseen)

/** `value` as a JSON string, cut after {@link SHOWN} characters with a note of its full length. */
export const quote = (value: string): string =>
  value.length <= SHOWN
    ? show(value)
    : `${show(value.slice(0, SHOWN))}... (${value.length} characters)`
