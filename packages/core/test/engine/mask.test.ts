import { assert, describe, it } from "@effect/vitest"
import { Arbitrary, Effect, Schema } from "effect"
import { execFileSync } from "node:child_process"
import { createRequire } from "node:module"
import * as V8 from "node:v8"
import * as Vm from "node:vm"
import {
  applyMask,
  applyMaskPortable,
  applyMaskSimple,
  MASK_INTO_NATIVE_THRESHOLD,
  MASK_INTO_WORD_THRESHOLD,
  MASK_NATIVE_THRESHOLD,
  MASK_WORD_THRESHOLD,
  maskInto,
  maskIntoPortable
} from "../../src/internal/engine/mask.ts"
import { nativeMask } from "../../src/internal/runtime.ts"

const NO_BUFFERUTIL = "EFFECT_WEBSOCKET_NO_BUFFERUTIL"
/** Whether `bufferutil`, as core finds it, loads its native binary (not its JavaScript fallback). */
const bufferutilNative = (() => {
  const requireFromCore = createRequire(new URL("../../package.json", import.meta.url))
  const bufferutil = requireFromCore("bufferutil") as { readonly mask: unknown }
  return bufferutil.mask !== (requireFromCore("bufferutil/fallback") as { readonly mask: unknown }).mask
})()

/** Both implementations: with `bufferutil` for long ranges (installed here), and JavaScript only. */
const inPlace = [["applyMask", applyMask], ["applyMaskPortable", applyMaskPortable]] as const
const copying = [["maskInto", maskInto], ["maskIntoPortable", maskIntoPortable]] as const

const hex = (s: string): Uint8Array =>
  Uint8Array.from(s.replace(/\s+/g, "").match(/../g) ?? [], (h) => parseInt(h, 16))
const toHex = (bytes: Uint8Array): string => Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("")

/** A deterministic, non-periodic test pattern. */
const pattern = (length: number, seed: number): Uint8Array => {
  const bytes = new Uint8Array(length)
  let x = seed
  for (let i = 0; i < length; i++) {
    x = (x * 1103515245 + 12345) >>> 0
    bytes[i] = x >>> 24
  }
  return bytes
}

const KEY = hex("37fa213d")
const MAX_LENGTH = 300

const smallInt = (maximum: number) => Arbitrary.schema(Schema.Int.check(Schema.isBetween({ minimum: 0, maximum })))
const byte = smallInt(255)
/** Random bytes of a length drawn from 0..maxLength (not bounded by the generation size). */
const bytes = (maxLength: number) =>
  smallInt(maxLength).pipe(
    Arbitrary.flatMap((length) => Arbitrary.array(byte, { minLength: length, maxLength: length })),
    Arbitrary.map((values) => Uint8Array.from(values))
  )
const maskKey = Arbitrary.array(byte, { minLength: 4, maxLength: 4 }).pipe(
  Arbitrary.map((values) => Uint8Array.from(values))
)

describe("masking (RFC 6455 section 5.3)", () => {
  it("masks the RFC 6455 section 5.7 example", () => {
    const data = hex("48656c6c6f")
    applyMask(data, 0, data.length, KEY, 0)
    assert.strictEqual(toHex(data), "7f9f4d5158")
  })

  it("the thresholds leave room for the aligned head", () => {
    assert.isAtLeast(MASK_WORD_THRESHOLD, 8)
    assert.isAtLeast(MASK_INTO_WORD_THRESHOLD, 8)
  })

  /** Lengths 0..300, and around the native thresholds and well above them. */
  const LENGTHS = [
    ...Array.from({ length: MAX_LENGTH + 1 }, (_, i) => i),
    MASK_INTO_NATIVE_THRESHOLD - 1,
    MASK_INTO_NATIVE_THRESHOLD,
    MASK_INTO_NATIVE_THRESHOLD + 1,
    MASK_NATIVE_THRESHOLD - 1,
    MASK_NATIVE_THRESHOLD,
    MASK_NATIVE_THRESHOLD + 1,
    MASK_NATIVE_THRESHOLD + 7,
    4099,
    65536 + 5
  ]
  const LONGEST = LENGTHS[LENGTHS.length - 1]!

  it("bufferutil's native loop is found where it is installed (here, as a devDependency) and its binary loads", () => {
    // (no prebuilt binary for every platform, linux-arm64 and musl among them, and its install
    // script is not run here: there it is its JavaScript fallback, which is not used)
    assert.strictEqual(nativeMask !== undefined, bufferutilNative && (process.env[NO_BUFFERUTIL] ?? "") === "")
    assert.isAtLeast(MASK_NATIVE_THRESHOLD, MASK_INTO_NATIVE_THRESHOLD)
    assert.isAbove(MASK_INTO_NATIVE_THRESHOLD, 8)
  })

  /**
   * `typeof nativeMask` in a new process (the switch is read when the module is loaded), with
   * `environment` added to ours less the switch, after `prelude`.
   */
  const nativeMaskTypeIn = (environment: Record<string, string>, prelude = "") => {
    const withoutSwitch = { ...process.env }
    delete withoutSwitch[NO_BUFFERUTIL]
    const runtime = new URL("../../src/internal/runtime.ts", import.meta.url).href
    return execFileSync(process.execPath, [
      "--input-type=module",
      "-e",
      `${prelude}\nconst { nativeMask } = await import(${JSON.stringify(runtime)}); console.log(typeof nativeMask)`
    ], { env: { ...withoutSwitch, ...environment }, encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] }).trim()
  }

  it("EFFECT_WEBSOCKET_NO_BUFFERUTIL (set, not empty, as ws's WS_NO_BUFFER_UTIL) leaves bufferutil unused", () => {
    const found = bufferutilNative ? "function" : "undefined"
    assert.strictEqual(nativeMaskTypeIn({}), found)
    assert.strictEqual(nativeMaskTypeIn({ [NO_BUFFERUTIL]: "1" }), "undefined")
    assert.strictEqual(nativeMaskTypeIn({ [NO_BUFFERUTIL]: "0" }), "undefined")
    assert.strictEqual(nativeMaskTypeIn({ [NO_BUFFERUTIL]: "" }), found)
  })

  it("bufferutil's JavaScript fallback (where its native binary does not load) is not used: the word loop is faster", () => {
    // (as bufferutil's own index.js falls back when its binary is missing: every require of it gives its fallback)
    const withoutBinary = `const Module = process.getBuiltinModule("module")
      const load = Module._load
      Module._load = function(request, ...rest) {
        return load.call(this, request === "bufferutil" ? "bufferutil/fallback" : request, ...rest)
      }`
    assert.strictEqual(nativeMaskTypeIn({}, withoutBinary), "undefined")
  })

  it("not under Bun, whose Node-API may not take a plain Uint8Array where bufferutil asserts a Buffer", () => {
    const asBun = `Object.defineProperty(process, "versions", { value: { ...process.versions, bun: "1.2.0" } })`
    assert.strictEqual(nativeMaskTypeIn({}, asBun), "undefined")
  })

  it("an environment that may not be read (Deno without --allow-env) leaves the library loadable", () => {
    // as Deno's process.env does without the permission: reading a variable not allowed throws
    const denied = `const env = process.env
      process.env = new Proxy(env, {
        get(target, name) {
          if (String(name).startsWith("EFFECT_WEBSOCKET")) throw new Error("NotCapable: Requires env access to " + String(name))
          return target[name]
        }
      })`
    // (a switch that cannot be read is not set)
    assert.strictEqual(nativeMaskTypeIn({ [NO_BUFFERUTIL]: "1" }, denied), bufferutilNative ? "function" : "undefined")
  })

  it("without Node's modules (no process.getBuiltinModule, as in a browser) every export of the runtime falls back to plain JavaScript, with the same results", () => {
    /** What the runtime's exports give in a new process (ours less the switch), after `prelude`. */
    const probe = (prelude: string) => {
      const withoutSwitch = { ...process.env }
      delete withoutSwitch[NO_BUFFERUTIL]
      const runtime = new URL("../../src/internal/runtime.ts", import.meta.url).href
      return JSON.parse(execFileSync(process.execPath, [
        "--input-type=module",
        "-e",
        `${prelude}
        const r = await import(${JSON.stringify(runtime)})
        const uninitialized = r.allocateUninitialized(5)
        const plain = r.allocatePlainUninitialized(5)
        console.log(JSON.stringify({
          native: [typeof r.nativeSha1Base64, typeof r.nativeIsUtf8, typeof r.nativeMask],
          uninitialized: [uninitialized.length, uninitialized instanceof Uint8Array],
          plain: [plain.length, plain.buffer.byteLength, Object.getPrototypeOf(plain) === Uint8Array.prototype],
          encoded: [...r.encodeUtf8("a\\u00e9\\u20ac\\u{1f600}")],
          length: r.utf8ByteLength("a\\u00e9\\u20ac\\u{1f600}"),
          decoded: r.decodeUtf8(new Uint8Array([0xef, 0xbb, 0xbf, 0x61]))
        }))`
      ], { env: withoutSwitch, encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] }))
    }
    // (a received message's memory is its own: not a pooled Node Buffer's)
    const results = {
      uninitialized: [5, true],
      plain: [5, 5, true],
      encoded: [0x61, 0xc3, 0xa9, 0xe2, 0x82, 0xac, 0xf0, 0x9f, 0x98, 0x80],
      length: 10,
      decoded: "\uFEFFa"
    }
    assert.deepStrictEqual(probe(""), { native: ["function", "function", bufferutilNative ? "function" : "undefined"], ...results })
    assert.deepStrictEqual(probe("delete process.getBuiltinModule"), { native: ["undefined", "undefined", "undefined"], ...results })
  })

  for (const [name, mask] of inPlace) {
    it(`${name} equals applyMaskSimple for every length 0..300 and around the native threshold, start 0..7, key offset 0..3 and alignment`, () => {
      const original = pattern(LONGEST + 16, 1)
      for (let base = 0; base < 4; base++) {
        for (let start = 0; start < 8; start++) {
          for (let keyOffset = 0; keyOffset < 4; keyOffset++) {
            for (const length of LENGTHS) {
              const fast = original.slice(0, length + 16).subarray(base)
              const simple = fast.slice()
              mask(fast, start, start + length, KEY, keyOffset)
              applyMaskSimple(simple, start, start + length, KEY, keyOffset)
              for (let i = 0; i < fast.length; i++) {
                if (fast[i] !== simple[i]) {
                  assert.fail(`base ${base}, start ${start}, key offset ${keyOffset}, length ${length}: byte ${i}`)
                }
              }
            }
          }
        }
      }
    })
  }

  for (const [name, mask] of copying) {
    it(`${name} equals copy-then-applyMaskSimple for every length 0..300 and around the native thresholds, offsets 0..7 / 0..3, key offset 0..3`, () => {
      const source = pattern(LONGEST + 8, 2)
      const sourceCopy = source.slice()
      for (let sourceStart = 0; sourceStart < 8; sourceStart++) {
        for (let targetStart = 0; targetStart < 4; targetStart++) {
          for (let keyOffset = 0; keyOffset < 4; keyOffset++) {
            for (const length of LENGTHS) {
              const target = new Uint8Array(length + 8).fill(0xaa)
              const expected = new Uint8Array(length + 8).fill(0xaa)
              expected.set(source.subarray(sourceStart, sourceStart + length), targetStart)
              applyMaskSimple(expected, targetStart, targetStart + length, KEY, keyOffset)
              mask(source, sourceStart, sourceStart + length, target, targetStart, KEY, keyOffset)
              for (let i = 0; i < target.length; i++) {
                if (target[i] !== expected[i]) {
                  assert.fail(`source ${sourceStart}, target ${targetStart}, key ${keyOffset}, length ${length}`)
                }
              }
            }
          }
        }
      }
      assert.deepStrictEqual(source, sourceCopy)
    })
  }

  it("a detached buffer is never handed to the native loop (which would crash the process: at most a TypeError)", () => {
    /** Runs `f`: it may throw a TypeError (the JavaScript loop on a detached buffer), nothing else. */
    const survives = (f: () => void) => {
      try {
        f()
      } catch (error) {
        assert.instanceOf(error, TypeError)
      }
    }
    const data = pattern(4096, 4)
    const moved = (data.buffer as ArrayBuffer).transfer() // detaches data
    assert.strictEqual(moved.byteLength, 4096)
    assert.strictEqual(data.length, 0)
    survives(() => applyMask(data, 0, 4096, KEY, 1))
    survives(() => maskInto(pattern(4096, 5), 0, 4096, data, 0, KEY, 2))
    survives(() => maskInto(data, 0, 4096, new Uint8Array(4096), 0, KEY, 3))
  })

  it("a zero key is the identity", () => {
    const zero = new Uint8Array(4)
    for (const length of [0, 1, 5, MASK_WORD_THRESHOLD, 1000]) {
      const data = pattern(length, 3)
      const copy = data.slice()
      applyMask(data, 0, length, zero, 1)
      assert.deepStrictEqual(data, copy)
      const target = new Uint8Array(length)
      maskInto(data, 0, length, target, 0, zero, 2)
      assert.deepStrictEqual(target, copy)
    }
  })

  it("the same array masked again after its buffer grew or shrank (resizable ArrayBuffer)", () => {
    const buffer = new ArrayBuffer(256, { maxByteLength: 4096 })
    const data = new Uint8Array(buffer) // tracks the buffer's length
    const check = (length: number) => {
      data.set(pattern(length, length))
      const expected = data.slice(0, length)
      applyMaskSimple(expected, 0, length, KEY, 1)
      applyMask(data, 0, length, KEY, 1)
      assert.deepStrictEqual(data.subarray(0, length), expected, `${length} bytes`)
    }
    check(256)
    buffer.resize(4096)
    check(4096)
    buffer.resize(128)
    check(128)
    buffer.resize(2048)
    check(2048)
  })

  it("masks views of a SharedArrayBuffer, in place and into a copy, as views of an ArrayBuffer", () => {
    for (const length of [100, MASK_NATIVE_THRESHOLD + 5, 4096]) {
      const shared = new Uint8Array(new SharedArrayBuffer(length + 8))
      shared.set(pattern(length + 8, 9))
      const expected = shared.slice()
      applyMaskSimple(expected, 3, 3 + length, KEY, 1)
      const target = new Uint8Array(length + 8)
      maskInto(shared, 3, 3 + length, target, 3, KEY, 1)
      assert.deepStrictEqual(target.subarray(3, 3 + length), expected.subarray(3, 3 + length))
      applyMask(shared, 3, 3 + length, KEY, 1)
      assert.deepStrictEqual(Uint8Array.from(shared), expected)
    }
  })

  it("touches nothing outside the range", () => {
    const data = new Uint8Array(1024)
    applyMask(data, 3, 1021, KEY, 0)
    assert.strictEqual(data[2], 0)
    assert.strictEqual(data[1021], 0)
    assert.notStrictEqual(data[3], 0)
  })

  it.prop(
    "applyMask and applyMaskPortable equal applyMaskSimple on random data, keys and offsets",
    [bytes(2048), maskKey, smallInt(7), smallInt(3)],
    ([data, key, start, keyOffset]) => {
      const padded = new Uint8Array(data.length + start)
      padded.set(data, start)
      const simple = padded.slice()
      applyMaskSimple(simple, start, padded.length, key, keyOffset)
      for (const [, mask] of inPlace) {
        const fast = padded.slice()
        mask(fast, start, padded.length, key, keyOffset)
        assert.deepStrictEqual(fast, simple)
      }
    }
  )

  it.prop(
    "masking twice is the identity, in one piece or split anywhere",
    [bytes(1024), maskKey, smallInt(1024), smallInt(3)],
    ([data, key, split, keyOffset]) => {
      const at = Math.min(split, data.length)
      const work = data.slice()
      applyMask(work, 0, work.length, key, keyOffset)
      applyMask(work, 0, at, key, keyOffset)
      applyMask(work, at, work.length, key, (keyOffset + at) & 3)
      assert.deepStrictEqual(work, data)
    }
  )

  it.prop(
    "maskInto and maskIntoPortable leave the source untouched and equal applyMaskSimple on a copy",
    [bytes(1024), maskKey, smallInt(3), smallInt(3)],
    ([data, key, targetStart, keyOffset]) => {
      const expected = new Uint8Array(data.length + targetStart)
      expected.set(data, targetStart)
      applyMaskSimple(expected, targetStart, expected.length, key, keyOffset)
      for (const [, mask] of copying) {
        const source = data.slice()
        const target = new Uint8Array(data.length + targetStart)
        mask(source, 0, source.length, target, targetStart, key, keyOffset)
        assert.deepStrictEqual(source, data)
        assert.deepStrictEqual(target, expected)
      }
    }
  )
})

describe("memory", () => {
  V8.setFlagsFromString("--expose-gc")
  const gc = Vm.runInNewContext("gc") as () => void

  it.live("masking a large buffer does not keep it in memory (the word views kept for speed are of small buffers only)", () =>
    Effect.gen(function*() {
      const key = hex("37fa213d")
      const held = (() => {
        const large = new Uint8Array(4 * 1024 * 1024 + 3)
        applyMaskPortable(large, 1, large.length, key, 0)
        const other = new Uint8Array(2 * 1024 * 1024)
        maskIntoPortable(large, 0, other.length, other, 0, key, 0)
        return [new WeakRef(large.buffer), new WeakRef(other.buffer)]
      })()
      // (a weak reference holds its target until the current job ends)
      for (let i = 0; i < 3 && held.some((ref) => ref.deref() !== undefined); i++) {
        yield* Effect.sleep("10 millis")
        gc()
      }
      assert.deepStrictEqual(held.map((ref) => ref.deref() === undefined), [true, true])
    }))
})
