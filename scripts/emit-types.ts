// Emits dist/types/ (the .d.ts files the published package points its "types" at) and makes every
// relative import in them name its file ("./runtime" -> "./runtime.js"), as nodenext module resolution
// requires; bundler resolution accepts both. npm runs it as the prepare script: before packing, after a
// plain `npm install`, and when a dependent installs the package from git.
import { existsSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { dirname, join, resolve } from "node:path";

const ROOT = resolve(import.meta.dir, "..");
const OUT = join(ROOT, "dist/types");

rmSync(OUT, { recursive: true, force: true });
const tsc = Bun.spawnSync({
  cmd: [join(ROOT, "node_modules/.bin/tsc"), "-p", join(ROOT, "tsconfig.build.json")],
  stdio: ["ignore", "inherit", "inherit"],
});
if (tsc.exitCode !== 0) throw new Error(`tsc -p tsconfig.build.json exited ${tsc.exitCode}`);

// `from "./x"`, `import("./x")` and `export * from "./x"`: the specifier of every relative import.
const SPECIFIER = /(\bfrom\s+|\bimport\s*\(\s*)(["'])(\.{1,2}\/[^"']*)\2/g;

function qualify(file: string, specifier: string): string {
  const base = specifier.replace(/\.(ts|js)$/, "");
  const dir = dirname(file);
  if (existsSync(join(dir, `${base}.d.ts`))) return `${base}.js`;
  if (existsSync(join(dir, base, "index.d.ts"))) return `${base}/index.js`;
  throw new Error(`${file}: import "${specifier}" names no emitted declaration`);
}

let files = 0;
for (const name of readdirSync(OUT, { recursive: true }) as string[]) {
  if (!name.endsWith(".d.ts")) continue;
  const file = join(OUT, name);
  const text = readFileSync(file, "utf8");
  writeFileSync(
    file,
    text.replace(SPECIFIER, (_, lead, quote, spec) => `${lead}${quote}${qualify(file, spec)}${quote}`),
  );
  files++;
}
console.log(`dist/types: ${files} declaration files`);
