/**
 * Binary data given at run time (what `send` takes besides text): typed arrays, `DataView`s,
 * `ArrayBuffer`s and `SharedArrayBuffer`s, as `ws` and the WHATWG `WebSocket` take them.
 *
 * @since 0.1.0
 */

/**
 * Whether `data` is a `SharedArrayBuffer` (false where the runtime has none).
 *
 * @internal
 */
export const isSharedArrayBuffer = (data: unknown): data is SharedArrayBuffer =>
  typeof SharedArrayBuffer === "function" && data instanceof SharedArrayBuffer

/**
 * Whether `data` is binary data: a typed array, a `DataView`, an `ArrayBuffer` or a
 * `SharedArrayBuffer` (whether or not its bytes can still be read).
 *
 * @internal
 */
export const isBinaryData = (data: unknown): data is ArrayBufferLike | ArrayBufferView =>
  ArrayBuffer.isView(data) || data instanceof ArrayBuffer || isSharedArrayBuffer(data)

/**
 * Whether `buffer` was detached (transferred): its bytes are gone, and a view of it reads as empty
 * or throws.
 *
 * @internal
 */
export const isDetached = (buffer: ArrayBufferLike): boolean => (buffer as { readonly detached?: boolean }).detached === true

/**
 * Whether `buffer` can change its length (a resizable `ArrayBuffer` or a growable
 * `SharedArrayBuffer`): a length-tracking view of it grows and shrinks with it.
 *
 * @internal
 */
export const isResizable = (buffer: ArrayBufferLike): boolean =>
  (buffer as { readonly resizable?: boolean }).resizable === true ||
  (buffer as { readonly growable?: boolean }).growable === true
