// lib/ must import without cycles: each module depends only on what it needs, and shared types live in
// lib/types.ts rather than in a module that imports its users back.
import { describe, expect, test } from "bun:test";
import { resolve } from "node:path";
import { importCycles, importGraph } from "./support/imports.ts";

describe("the import graph of lib/", () => {
  test("has no cycle", () => {
    const cycles = importCycles(importGraph(resolve(import.meta.dir, "../lib")));
    expect(cycles.map((cycle) => cycle.join(" -> "))).toEqual([]);
  });

  test("the check finds a cycle, type-only imports included", () => {
    const graph = new Map([
      ["a.ts", ["b.ts"]],
      ["b.ts", ["c.ts"]],
      ["c.ts", ["a.ts"]],
      ["d.ts", ["a.ts"]],
    ]);
    expect(importCycles(graph)).toEqual([["a.ts", "b.ts", "c.ts", "a.ts"]]);
    expect(
      importCycles(
        new Map([
          ["a.ts", ["b.ts"]],
          ["b.ts", []],
        ]),
      ),
    ).toEqual([]);
  });

  test("reads type-only and multi-line imports from the source", () => {
    const graph = importGraph(resolve(import.meta.dir, "../lib"));
    expect(graph.get("engine.ts")).toContain("types.ts"); // `import type { ... } from "./types"`
    expect(graph.get("kvcache.ts")).toContain("cache/sequence.ts"); // spread over several lines
    expect(graph.get("index.ts")).toContain("runtime.ts"); // `export { ... } from`
  });
});
