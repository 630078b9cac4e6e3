// Finds and opens the native library, in this order:
//   1. $PKV_LIBRARY, when set: that file or an error that says so (never a silent fallback, since whoever
//      set it expects that build to run);
//   2. the platform package (@persistentkv/linux-x64, an optional dependency holding the prebuilt library);
//   3. the repository's build output (zig-out/lib/), for a checkout built with `npm run build`.
// A failure lists every place tried and what to install or set. The library must implement this
// package's ABI and report its version. PKV_DEBUG=1 logs every native call to stderr.
import { dlopen } from "bun:ffi";
import { existsSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { readEnv } from "../env";
import { LibraryNotFoundError, Status, VersionMismatchError } from "../errors";
import { ABI_VERSION, VERSION } from "../version";
import { symbols } from "./symbols";

export { ABI_VERSION };
export const LIBRARY_FILE = "libpersistentkv.so";
/** The package holding the prebuilt library for each platform published (`${process.platform}-${process.arch}`). */
export const PLATFORM_PACKAGES: Readonly<Record<string, string>> = { "linux-x64": "@persistentkv/linux-x64" };

type Library = ReturnType<typeof dlopen<typeof symbols>>;
export type Native = Library["symbols"];

/** One place the loader looks: a path, or why there is none (a platform package that is not installed). */
interface Candidate {
  from: string;
  path?: string;
  missing?: string;
}

function platformCandidate(): Candidate {
  const platform = `${process.platform}-${process.arch}`;
  const name = PLATFORM_PACKAGES[platform];
  if (!name) return { from: "platform package", missing: `none is published for ${platform}` };
  try {
    // Resolved from this file, so it finds the package wherever the dependent's installer put it.
    const manifest = fileURLToPath(import.meta.resolve(`${name}/package.json`));
    return { from: name, path: join(dirname(manifest), LIBRARY_FILE) };
  } catch {
    return { from: name, missing: "not installed" };
  }
}

function buildOutput(): Candidate {
  return { from: "build output", path: resolve(import.meta.dir, "../../zig-out/lib", LIBRARY_FILE) };
}

/** The paths the loader would try, in order: $PKV_LIBRARY alone when set, else the platform package's and the build output. */
export function libraryCandidates(): string[] {
  const override = readEnv("PKV_LIBRARY");
  if (override) return [resolve(override)];
  return [platformCandidate(), buildOutput()].flatMap((c) => (c.path ? [c.path] : []));
}

let loaded: { path: string; symbols: Native } | undefined;

/** The native symbols, loaded once. */
export function native(): Native {
  loaded ??= load();
  return loaded.symbols;
}

/** Path of the loaded library (loads it if needed). */
export function libraryPath(): string {
  native();
  return loaded!.path;
}

function load(): { path: string; symbols: Native } {
  const override = readEnv("PKV_LIBRARY");
  if (override) {
    const path = resolve(override);
    const opened = open(path);
    if (typeof opened === "string")
      throw new LibraryNotFoundError(
        -1,
        `PKV_LIBRARY=${override} cannot be loaded (${opened}), and nothing else is tried while it is set. ` +
          `Point it at a built ${LIBRARY_FILE}, or unset it to use the installed library.`,
      );
    return { path, symbols: opened };
  }
  const tried: string[] = [];
  for (const candidate of [platformCandidate(), buildOutput()]) {
    if (!candidate.path) {
      tried.push(`${candidate.from}: ${candidate.missing}`);
      continue;
    }
    const opened = open(candidate.path);
    if (typeof opened !== "string") return { path: candidate.path, symbols: opened };
    tried.push(`${candidate.path} (${candidate.from}): ${opened}`);
  }
  const platform = PLATFORM_PACKAGES[`${process.platform}-${process.arch}`];
  const install = platform
    ? `Install the prebuilt library with \`npm install ${platform}@${VERSION}\` (or \`bun add ${platform}@${VERSION}\`; ` +
      "it is an optional dependency of persistentkv, so an install that skips optional dependencies leaves it out), "
    : "";
  throw new LibraryNotFoundError(
    -1,
    `cannot load ${LIBRARY_FILE}. Tried:\n  ${tried.join("\n  ")}\n${install}` +
      "or build it in a checkout of the repository with `npm run build` (CUDA 13's nvcc) or `npm run build:cpu` " +
      "(CPU backend only), or set PKV_LIBRARY to the path of a built library.",
  );
}

// The library's symbols, or why it cannot be used: missing, not loadable. A library of another ABI or
// version throws, since a later candidate would hide a stale install rather than fix it.
function open(path: string): Native | string {
  if (!existsSync(path)) return "not found";
  let library: Library;
  try {
    library = dlopen(path, symbols);
  } catch (error) {
    return (error as Error).message;
  }
  const abi = library.symbols.pkv_abi_version();
  const version = abi === ABI_VERSION ? String(library.symbols.pkv_version()) : undefined;
  if (abi !== ABI_VERSION || version !== VERSION) {
    library.close();
    const found =
      abi !== ABI_VERSION
        ? `implements ABI ${abi}, but this package needs ABI ${ABI_VERSION}`
        : `is version ${version}, but this package is ${VERSION}`;
    throw new VersionMismatchError(
      Status.VERSION_MISMATCH,
      `${path} ${found}: install the matching library (${PLATFORM_PACKAGES["linux-x64"]}@${VERSION}) or rebuild with \`npm run build\``,
    );
  }
  return readEnv("PKV_DEBUG") ? traced(library.symbols) : library.symbols;
}

function traced(raw: Native): Native {
  const wrapped: Record<string, unknown> = {};
  for (const [name, fn] of Object.entries(raw) as [string, (...args: unknown[]) => unknown][]) {
    wrapped[name] = (...args: unknown[]) => {
      const start = performance.now();
      const result = fn(...args);
      const us = ((performance.now() - start) * 1000).toFixed(1);
      process.stderr.write(`[pkv] ${name}(${args.map(describe).join(", ")}) -> ${String(result)} ${us}us\n`);
      return result;
    };
  }
  return wrapped as Native;
}

function describe(arg: unknown): string {
  if (ArrayBuffer.isView(arg)) return `${arg.constructor.name}(${arg.byteLength}B)`;
  return String(arg);
}
