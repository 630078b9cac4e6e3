// The TypeScript status table must match the header's #defines exactly, every code must map to its own
// typed class, and the native pkv_status_name must agree with the TypeScript name.
import { describe, expect, test } from "bun:test";
import * as pkv from "../lib/index.ts";
import { native } from "../lib/ffi/loader.ts";
import { headerDefines } from "./support/header.ts";

// PKV_OK and PKV_ERR_* from the header, keyed by the TypeScript name (OK, INVALID_ARGUMENT, ...).
const headerStatus = new Map(
  [...headerDefines()]
    .filter(([name]) => name === "PKV_OK" || name.startsWith("PKV_ERR_"))
    .map(([name, code]) => [name === "PKV_OK" ? "OK" : name.slice("PKV_ERR_".length), code] as const),
);

// OUT_OF_MEMORY -> OutOfMemoryError: the naming rule lib/errors.ts follows.
const className = (name: string) =>
  `${name
    .split("_")
    .map((w) => w[0] + w.slice(1).toLowerCase())
    .join("")}Error`;

describe("status codes", () => {
  test("the header defines the codes (parser sanity)", () => {
    expect(headerStatus.get("OK")).toBe(0);
    expect(headerStatus.size).toBeGreaterThanOrEqual(10);
  });

  test("lib/errors.ts Status equals the header's PKV_OK / PKV_ERR_* exactly", () => {
    expect({ ...pkv.Status } as Record<string, number>).toEqual(Object.fromEntries(headerStatus));
  });

  test("codes are distinct", () => {
    const codes = Object.values(pkv.Status);
    expect(new Set(codes).size).toBe(codes.length);
  });

  for (const [name, code] of headerStatus) {
    if (name === "OK") continue;
    test(`${code} -> ${className(name)}`, () => {
      const Class = (pkv as unknown as Record<string, unknown>)[className(name)];
      expect(typeof Class).toBe("function");
      const error = pkv.errorFor(code, `message for ${name}`);
      expect(error).toBeInstanceOf(Class as new (...args: never[]) => unknown);
      expect(error).toBeInstanceOf(pkv.PkvError);
      expect(error).toBeInstanceOf(Error);
      expect(error.code).toBe(code);
      expect(error.status).toBe(`PKV_ERR_${name}`);
      expect(error.name).toBe(className(name));
      expect(error.message).toBe(`message for ${name}`);
    });
  }

  test("each code has its own class (no two codes share one)", () => {
    const classes = [...headerStatus.values()].filter((c) => c !== 0).map((c) => pkv.errorFor(c, "").constructor);
    expect(new Set(classes).size).toBe(classes.length);
  });

  test("an unknown code gives the base PkvError", () => {
    const error = pkv.errorFor(999, "what");
    expect(error.constructor).toBe(pkv.PkvError);
    expect(error.status).toBe("PKV_UNKNOWN_STATUS");
  });

  test("fail() throws the typed error", () => {
    expect(() => pkv.fail(pkv.Status.OUT_OF_PAGES, "pool is full")).toThrow(pkv.OutOfPagesError);
    expect(() => pkv.fail(pkv.Status.OUT_OF_PAGES, "pool is full")).toThrow("pool is full");
  });
});

describe("pkv_status_name (native) agrees with statusName (TypeScript)", () => {
  for (const [name, code] of headerStatus) {
    const full = name === "OK" ? "PKV_OK" : `PKV_ERR_${name}`;
    test(full, () => {
      expect(String(native().pkv_status_name(code))).toBe(full);
      expect(pkv.statusName(code)).toBe(full);
    });
  }
  // One past the highest code, so a code added to the header later does not turn this test wrong.
  for (const code of [-1, Math.max(...headerStatus.values()) + 1, 999, 2 ** 31 - 1]) {
    test(`unknown code ${code}`, () => {
      expect(String(native().pkv_status_name(code))).toBe("PKV_UNKNOWN_STATUS");
      expect(pkv.statusName(code)).toBe("PKV_UNKNOWN_STATUS");
    });
  }
});
