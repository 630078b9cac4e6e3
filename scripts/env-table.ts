// The README's table of environment variables, rendered from the registry in lib/env.ts.
//   bun scripts/env-table.ts      prints it; test/env.test.ts checks the README holds exactly this
import { ENV } from "persistentkv";

const SCOPE = {
  library: "the library",
  native: "the native engine (measurements)",
  examples: "examples, benchmarks",
  tests: "the tests",
  build: "the native build",
} as const;

export function envTable(): string {
  const rows = Object.entries(ENV).map(
    ([name, v]) => `| \`${name}\` | ${SCOPE[v.scope]} | ${v.meaning} | ${v.default} |`,
  );
  return ["| variable | read by | meaning | default |", "| --- | --- | --- | --- |", ...rows].join("\n");
}

if (import.meta.main) console.log(envTable());
