// The packages as a dependent gets them: both are packed (scripts/pack-packages.sh, with the library this
// checkout built), installed by file path into a scratch Bun project outside the repository with no
// registry, type-checked there under bundler and nodenext resolution with strict flags, and run: the
// consumer opens the CPU runtime from the platform package and matches referenceDecode. Also checks what
// the tarballs hold and that every version agrees.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { cpSync, existsSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { VERSION } from "../lib/version.ts";
import { native } from "../lib/ffi/loader.ts";

const ROOT = resolve(import.meta.dir, "..");
const LIBRARY = join(ROOT, "zig-out/lib/libpersistentkv.so");
const TSC = join(ROOT, "node_modules/.bin/tsc");
const PLATFORM = "@persistentkv/linux-x64";
// npm packs and tsc emits the declarations; where either is missing (the GPU machine carries neither),
// scripts/package-smoke.sh covers the install and the run from tarballs packed elsewhere.
const npm = Bun.which("npm");
const packable = npm !== null && existsSync(TSC);
if (!packable && process.env.CI) throw new Error("test/package.test.ts needs npm on PATH and node_modules in CI");
if (!packable)
  console.warn("skipping the package tests: no npm or no node_modules/.bin/tsc (see scripts/package-smoke.sh)");

const json = (path: string) => JSON.parse(readFileSync(path, "utf8"));
const manifest = json(join(ROOT, "package.json"));

function run(cmd: string[], cwd: string, env: Record<string, string | undefined> = {}): string {
  const child = Bun.spawnSync({ cmd, cwd, env: { ...process.env, PKV_LIBRARY: undefined, ...env } });
  const output = `${child.stdout.toString()}${child.stderr.toString()}`;
  if (child.exitCode !== 0) throw new Error(`${cmd.join(" ")} (in ${cwd}) exited ${child.exitCode}:\n${output}`);
  return child.stdout.toString();
}

function tarList(tgz: string): string[] {
  return run(["tar", "tzf", tgz], ROOT).trim().split("\n").sort();
}

// The strict flags a dependent may have, with each module resolution mode the type check runs under.
function consumerTsconfig(moduleResolution: "bundler" | "nodenext"): object {
  return {
    compilerOptions: {
      target: "ESNext",
      lib: ["ESNext"],
      module: moduleResolution === "bundler" ? "Preserve" : "NodeNext",
      moduleResolution,
      types: ["bun"],
      // @types/bun from this checkout: the scratch project installs nothing but the two tarballs.
      typeRoots: [join(ROOT, "node_modules/@types")],
      noEmit: true,
      strict: true,
      noUncheckedIndexedAccess: true,
      exactOptionalPropertyTypes: true,
      noImplicitOverride: true,
      noPropertyAccessFromIndexSignature: true,
      noUnusedLocals: true,
      noUnusedParameters: true,
      noImplicitReturns: true,
      noFallthroughCasesInSwitch: true,
      verbatimModuleSyntax: true,
      isolatedModules: true,
      skipLibCheck: false,
    },
    files: ["consumer.ts"],
  };
}

describe.skipIf(!packable)("packages", () => {
  let scratch = "";
  let mainTgz = "";
  let platformTgz = "";

  beforeAll(() => {
    expect(existsSync(LIBRARY)).toBe(true);
    scratch = mkdtempSync(join(tmpdir(), "pkv-package-"));
    const packed = run(
      ["bash", "scripts/pack-packages.sh", "--library", LIBRARY, "--out", join(scratch, "packs")],
      ROOT,
    );
    [mainTgz = "", platformTgz = ""] = packed.trim().split("\n").slice(-2);
  }, 120_000);
  afterAll(() => rmSync(scratch, { recursive: true, force: true }));

  test("the main package holds the sources, declarations, header and docs, and nothing else", () => {
    expect(mainTgz).toEndWith(`persistentkv-${VERSION}.tgz`);
    const files = tarList(mainTgz).map((f) => f.replace(/^package\//, ""));
    const allowed =
      /^(lib\/.+\.ts|dist\/types\/.+\.d\.ts|cuda\/include\/persistentkv\.h|package\.json|README\.md|LICENSE|CHANGELOG\.md)$/;
    expect(files.filter((f) => !allowed.test(f))).toEqual([]);
    for (const f of [
      "lib/index.ts",
      "lib/ffi/loader.ts",
      "dist/types/index.d.ts",
      "dist/types/ffi/index.d.ts",
      "lib/testing/index.ts",
      "LICENSE",
    ])
      expect(files).toContain(f);
    // No test suites, benchmarks, results or CI (lib/testing/ is the public "persistentkv/testing" subpath).
    expect(files.some((f) => /^(test|bench|scripts|\.ci)\/|results/.test(f))).toBe(false);
    // Well under 1 MB: sources and declarations only.
    expect(statSync(mainTgz).size).toBeLessThan(256 * 1024);
  });

  test("the platform package holds the library this checkout built, for linux x64 only", () => {
    expect(platformTgz).toEndWith(`persistentkv-linux-x64-${VERSION}.tgz`);
    expect(tarList(platformTgz)).toEqual([
      "package/LICENSE",
      "package/README.md",
      "package/libpersistentkv.so",
      "package/package.json",
    ]);
    const platform = json(join(ROOT, "packages/linux-x64/package.json"));
    expect(platform).toMatchObject({
      name: PLATFORM,
      version: VERSION,
      os: ["linux"],
      cpu: ["x64"],
      license: "Apache-2.0",
    });
    expect(statSync(platformTgz).size).toBeGreaterThan(statSync(mainTgz).size);
  });

  test("a scratch project installs both tarballs with no registry, type-checks strictly and decodes on the CPU", () => {
    const project = join(scratch, "consumer");
    cpSync(join(ROOT, "test/package/consumer.ts"), join(project, "consumer.ts"));
    writeFileSync(
      join(project, "package.json"),
      JSON.stringify({
        name: "consumer",
        private: true,
        type: "module",
        dependencies: { persistentkv: `file:${mainTgz}`, [PLATFORM]: `file:${platformTgz}` },
      }),
    );
    // --offline, an empty package cache and an unreachable registry: any registry access would fail.
    run(["bun", "install", "--offline"], project, {
      BUN_INSTALL_CACHE_DIR: join(scratch, "bun-cache"),
      BUN_CONFIG_REGISTRY: "http://127.0.0.1:9/",
      NPM_CONFIG_REGISTRY: "http://127.0.0.1:9/",
    });
    for (const mode of ["bundler", "nodenext"] as const) {
      writeFileSync(join(project, `tsconfig.${mode}.json`), JSON.stringify(consumerTsconfig(mode)));
      run([TSC, "-p", `tsconfig.${mode}.json`], project);
    }
    const result = JSON.parse(run(["bun", "consumer.ts", "cpu"], project).trim().split("\n").pop()!);
    expect(result).toMatchObject({ ok: true, version: VERSION, backend: "cpu" });
    expect(result.library).toBe(join(project, "node_modules", PLATFORM, "libpersistentkv.so"));
    expect(result.maxError).toBeLessThanOrEqual(2e-3);
  }, 120_000);
});

describe("package manifest", () => {
  test("exports with types, files, engines, repository, license and the platform package as an optional dependency", () => {
    expect(manifest.exports["."]).toEqual({
      types: "./dist/types/index.d.ts",
      bun: "./lib/index.ts",
      default: "./lib/index.ts",
    });
    expect(manifest.files).not.toContain("test/");
    expect(manifest.engines.bun).toBeString();
    expect(manifest.repository.url).toBeString();
    expect(manifest.license).toBe("Apache-2.0");
    expect(readFileSync(join(ROOT, "LICENSE"), "utf8")).toContain(
      "Apache License\n                           Version 2.0",
    );
    expect(manifest.optionalDependencies).toEqual({ [PLATFORM]: VERSION });
  });

  test("package.json, the platform package, VERSION, the CHANGELOG and the native library agree on the version", () => {
    expect(manifest.version).toBe(VERSION);
    expect(json(join(ROOT, "packages/linux-x64/package.json")).version).toBe(VERSION);
    expect(readFileSync(join(ROOT, "CHANGELOG.md"), "utf8")).toMatch(
      new RegExp(`^## ${VERSION.replaceAll(".", "\\.")}\\b`, "m"),
    );
    expect(String(native().pkv_version())).toBe(VERSION);
  });

  test("the test command runs the lint, and .ci/run runs exactly the README's test command", () => {
    expect(manifest.scripts.test).toContain("npm run lint");
    const readme = readFileSync(join(ROOT, "README.md"), "utf8");
    expect(readme).toContain("npm install && npm test");
    const ci = readFileSync(join(ROOT, ".ci/run"), "utf8");
    expect(ci).toContain("npm install ||");
    expect(ci).toContain("npm test 2>&1");
  });
});
