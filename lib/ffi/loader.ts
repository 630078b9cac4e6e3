// Finds and opens the native library: $PKV_LIBRARY first, then this package's build output.
// A failure lists every path tried and how to build. PKV_DEBUG=1 logs every native call to stderr.
import { dlopen } from "bun:ffi";
import { existsSync } from "node:fs";
import { resolve } from "node:path";
import { LibraryNotFoundError, Status, VersionMismatchError } from "../errors";
import { symbols } from "./symbols";

/** The ABI this package was written against (PKV_ABI_VERSION in the header). */
export const ABI_VERSION = 1;
const LIBRARY = "libpersistentkv.so";

type Library = ReturnType<typeof dlopen<typeof symbols>>;
export type Native = Library["symbols"];

export function libraryCandidates(): string[] {
  const paths: string[] = [];
  if (process.env.PKV_LIBRARY) paths.push(resolve(process.env.PKV_LIBRARY));
  paths.push(resolve(import.meta.dir, "../../zig-out/lib", LIBRARY));
  return paths;
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
  const tried: string[] = [];
  for (const path of libraryCandidates()) {
    if (!existsSync(path)) {
      tried.push(`${path}: not found`);
      continue;
    }
    let library: Library;
    try {
      library = dlopen(path, symbols);
    } catch (error) {
      tried.push(`${path}: ${(error as Error).message}`);
      continue;
    }
    const abi = library.symbols.pkv_abi_version();
    if (abi !== ABI_VERSION) {
      library.close();
      throw new VersionMismatchError(
        Status.VERSION_MISMATCH,
        `${path} implements ABI ${abi}, but this package needs ABI ${ABI_VERSION}: rebuild with \`npm run build\``,
      );
    }
    return { path, symbols: process.env.PKV_DEBUG ? traced(library.symbols) : library.symbols };
  }
  throw new LibraryNotFoundError(
    -1,
    `cannot load ${LIBRARY}. Tried:\n  ${tried.join("\n  ")}\n` +
      "Build it with `npm run build` (needs nvcc), or point PKV_LIBRARY at a built copy.",
  );
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
