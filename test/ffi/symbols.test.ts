// lib/ffi/symbols.ts is the one FFI table; the header is the one source of truth. Every entry must name a
// header function with the same arguments (count and C type), and every header function must be in the table.
import { FFIType } from "bun:ffi";
import { describe, expect, test } from "bun:test";
import { symbols } from "../../lib/ffi/symbols.ts";
import { headerFunctions, headerText } from "../support/header.ts";

const declared = new Map(headerFunctions().map((f) => [f.name, f]));
const table = symbols as Record<string, { args: readonly (FFIType | string)[]; returns: FFIType | string }>;

// The FFI type a C parameter or return type must travel as. Pointers are ptr (out-parameters and host arrays
// alike), except strings the library returns.
function ffiTypeOf(c: string, isReturn: boolean): FFIType {
  const type = c.replace(/\b(const|struct)\b/g, "").trim();
  if (type.includes("*")) return isReturn && /^char\s*\*$/.test(type) ? FFIType.cstring : FFIType.ptr;
  const base = type.split(/\s+/)[0] ?? "";
  const scalars: Record<string, FFIType> = {
    void: FFIType.void,
    pkv_status: FFIType.i32,
    int32_t: FFIType.i32,
    uint32_t: FFIType.u32,
    int64_t: FFIType.i64,
    uint64_t: FFIType.u64,
    float: FFIType.f32,
    double: FFIType.f64,
  };
  const ffi = scalars[base];
  if (ffi === undefined) throw new Error(`no FFI mapping for C type "${c}": extend ffiTypeOf`);
  return ffi;
}

// symbols.ts may write types as FFIType members or as their string names ("ptr", "i32").
const byName = FFIType as unknown as Record<string, FFIType>;
const normalise = (t: FFIType | string) => (typeof t === "string" ? byName[t]! : t);
// "uint64_t bytes" -> "uint64_t", "pkv_runtime **out" -> "pkv_runtime **" (the header names every parameter).
const paramType = (param: string) => param.replace(/\w+$/, "").trim();

describe("FFI symbol table against the header", () => {
  test("the header parser sees every declaration", () => {
    const calls = [...headerText().matchAll(/\b(pkv_\w+)\s*\(/g)].map((m) => m[1]);
    expect([...declared.keys()].sort()).toEqual([...new Set(calls)].sort() as string[]);
    expect(declared.size).toBeGreaterThanOrEqual(29);
  });

  test("every header function is in the table", () => {
    const missing = [...declared.keys()].filter((name) => !(name in table));
    expect(missing).toEqual([]);
  });

  for (const [name, entry] of Object.entries(table)) {
    test(name, () => {
      const fn = declared.get(name);
      expect(fn, `${name} is not declared in cuda/include/persistentkv.h`).toBeDefined();
      expect(entry.args.length).toBe(fn!.params.length);
      expect(entry.args.map(normalise)).toEqual(fn!.params.map((p) => ffiTypeOf(paramType(p), false)));
      expect(normalise(entry.returns)).toBe(ffiTypeOf(fn!.returns, true));
    });
  }
});
