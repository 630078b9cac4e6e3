// The registry of environment variables (lib/env.ts) is complete and is what the README shows: every
// PKV_ variable a source reads is registered, every native one registered is still read, and the README's
// table is the one rendered from the registry.
import { describe, expect, test } from "bun:test";
import { readdirSync, readFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { ENV, readEnv } from "../lib/env.ts";
import { envTable } from "../scripts/env-table.ts";

const ROOT = resolve(import.meta.dir, "..");

function sources(dir: string, pattern: RegExp): string[] {
  return (readdirSync(join(ROOT, dir), { recursive: true }) as string[])
    .filter((name) => pattern.test(name) && !name.startsWith("results"))
    .map((name) => readFileSync(join(ROOT, dir, name), "utf8"));
}

function namesIn(texts: string[], pattern: RegExp): Set<string> {
  const names = new Set<string>();
  for (const text of texts) for (const match of text.matchAll(pattern)) names.add(match[1]!);
  return names;
}

describe("environment variables", () => {
  test("every PKV_ variable TypeScript reads is registered", () => {
    const texts = ["lib", "examples", "bench", "scripts", "test"].flatMap((dir) => sources(dir, /\.ts$/));
    const read = namesIn(texts, /(?:process\.env\.|readEnv\(")(PKV_[A-Z0-9_]+)/g);
    expect(read.size).toBeGreaterThan(5);
    expect([...read].filter((name) => !(name in ENV))).toEqual([]);
  });

  test("the native variables registered are exactly those the native sources name", () => {
    // The name as the argument of getenv or of a helper around it (env_int, read_env, ...).
    const named = namesIn(sources("cuda/src", /\.(cpp|cu|h|cuh)$/), /\w*env\w*\(\s*"(PKV_[A-Z0-9_]+)"/gi);
    const registered = Object.entries(ENV).flatMap(([name, v]) => ((v.scope as string) === "native" ? [name] : []));
    expect(registered.sort()).toEqual([...named].sort());
  });

  test("the README's table is the registry's", () => {
    const readme = readFileSync(join(ROOT, "README.md"), "utf8");
    const section = readme.slice(readme.indexOf("## Environment variables"), readme.indexOf("\n## Building"));
    const table = section.split("\n").filter((line) => line.startsWith("|"));
    expect(table).toEqual(envTable().split("\n"));
  });

  test("readEnv treats an empty value as unset", () => {
    const saved = process.env.PKV_STEPS;
    try {
      process.env.PKV_STEPS = "";
      expect(readEnv("PKV_STEPS")).toBeUndefined();
      process.env.PKV_STEPS = "3";
      expect(readEnv("PKV_STEPS")).toBe("3");
    } finally {
      if (saved === undefined) delete process.env.PKV_STEPS;
      else process.env.PKV_STEPS = saved;
    }
  });
});
