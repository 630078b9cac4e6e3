// lib/ffi/layouts.ts is the one TypeScript copy of the ABI structs' byte layouts. Each layout must match its
// header struct field for field (names, C types, order), and its size the library's sizeof where the ABI
// reports one.
import { describe, expect, test } from "bun:test";
import { ATTENTION_SHAPE, type FieldType, LAYOUTS, PLAN_INFO, StructLayout } from "../../lib/ffi/layouts.ts";
import { native } from "../../lib/ffi/loader.ts";
import { headerText } from "../support/header.ts";

/** The fields of `typedef struct <name> { ... } <name>;` as [snake_case name, C type, array length]. */
function headerStruct(name: string): [string, string, number | undefined][] {
  const body = headerText().match(new RegExp(`typedef struct ${name} \\{([^}]*)\\}\\s*${name};`))?.[1];
  if (body === undefined) throw new Error(`the header declares no struct ${name}`);
  return body
    .split(";")
    .map((line) => line.trim())
    .filter((line) => line !== "")
    .map((line) => {
      const m = line.match(/^(\w+)\s+(\w+)(?:\[(\d+)\])?$/);
      if (!m) throw new Error(`${name}: cannot read the field "${line}"`);
      return [m[2]!, m[1]!, m[3] === undefined ? undefined : Number(m[3])];
    });
}

const camel = (snake: string) => snake.replace(/_([a-z0-9])/g, (_, c: string) => c.toUpperCase());

function cType(type: FieldType): string {
  if (typeof type !== "string") return "char";
  return { i32: "int32_t", f32: "float", i64: "int64_t" }[type];
}

describe("ABI struct layouts", () => {
  for (const layout of LAYOUTS)
    test(`${layout.name} matches the header field for field`, () => {
      const fields = Object.entries(layout.fields as Record<string, FieldType>);
      const ours = fields.map(([field, type]) => [
        field,
        cType(type),
        typeof type === "string" ? undefined : type.chars,
      ]);
      expect(ours).toEqual(headerStruct(layout.name).map(([field, type, length]) => [camel(field), type, length]));
    });

  test("sizes agree with the library's sizeof where the ABI reports one", () => {
    const sizes: Record<string, number> = {};
    for (const layout of LAYOUTS) {
      const reporter = (native() as unknown as Record<string, (() => number) | undefined>)[`${layout.name}_size`];
      if (reporter) sizes[layout.name] = reporter();
    }
    expect(Object.keys(sizes)).toContain("pkv_device_info");
    expect(Object.keys(sizes)).toContain("pkv_plan_info");
    for (const layout of LAYOUTS)
      if (sizes[layout.name] !== undefined)
        expect([layout.name, layout.size]).toEqual([layout.name, sizes[layout.name]!]);
  });

  test("offsets follow C alignment: an int64 after an int32 starts at 8; the size rounds to the widest field", () => {
    const mixed = new StructLayout("example", { a: "i32", b: "i64", c: "i32" });
    expect([mixed.offsets.a, mixed.offsets.b, mixed.offsets.c, mixed.size]).toEqual([0, 8, 16, 24]);
    expect(PLAN_INFO.offsets.planId).toBe(16);
    expect(ATTENTION_SHAPE.size).toBe(24);
  });

  test("encode and decode round-trip every field type", () => {
    const layout = new StructLayout("example", { name: { chars: 8 }, big: "i64", small: "i32", scale: "f32" });
    const values = { name: "H200", big: 2 ** 40 + 3, small: -7, scale: 0.125 };
    expect(layout.decode(layout.encode(values))).toEqual(values);
    expect(() => layout.encode({ ...values, name: "12345678" })).toThrow("exceeds 7 bytes");
    expect(() => layout.decode(new Uint8Array(layout.size - 1))).toThrow(RangeError);
    const negative = { ...values, big: -(2 ** 40) - 5 };
    expect(layout.decode(layout.encode(negative))).toEqual(negative);
  });

  test("a decoder reads the buffer's current bytes on every call", () => {
    const bytes = PLAN_INFO.alloc();
    const read = PLAN_INFO.decoder(bytes);
    expect(read().planId).toBe(0);
    bytes.set(
      PLAN_INFO.encode({
        totalTokens: 3 * 2 ** 32 + 7,
        kvBytes: 1,
        planId: 9,
        kernel: 1,
        batch: 2,
        numTasks: 3,
        maxSplits: 4,
        grid: 5,
        uniqueKvBytes: 2 ** 33 + 1,
        sharedTasks: 6,
        sharedRows: 7,
        loader: 2,
      }),
    );
    expect(read()).toEqual({
      totalTokens: 3 * 2 ** 32 + 7,
      kvBytes: 1,
      planId: 9,
      kernel: 1,
      batch: 2,
      numTasks: 3,
      maxSplits: 4,
      grid: 5,
      uniqueKvBytes: 2 ** 33 + 1,
      sharedTasks: 6,
      sharedRows: 7,
      loader: 2,
    });
  });
});
