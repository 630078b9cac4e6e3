// Reads cuda/include/persistentkv.h as text, so tests check the TypeScript tables against the one source
// of truth instead of against a second hand-written copy.
import { readFileSync } from "node:fs";
import { resolve } from "node:path";

export const HEADER_PATH = resolve(import.meta.dir, "../../cuda/include/persistentkv.h");

/** The header without comments (a comment may mention names that are not declarations). */
export function headerText(): string {
  return readFileSync(HEADER_PATH, "utf8")
    .replace(/\/\*[\s\S]*?\*\//g, " ")
    .replace(/\/\/.*$/gm, "");
}

/** Every `#define NAME <integer>` (parenthesised negatives included), e.g. PKV_ERR_CUDA -> 7. */
export function headerDefines(): Map<string, number> {
  const defines = new Map<string, number>();
  for (const m of headerText().matchAll(/^#define\s+(PKV_\w+)\s+\(?(-?\d+)\)?\s*$/gm)) defines.set(m[1]!, Number(m[2]));
  return defines;
}

export interface HeaderFunction {
  name: string;
  returns: string; // e.g. "pkv_status", "const char *"
  params: string[]; // each parameter's declaration, e.g. "uint64_t bytes"; [] for (void)
}

/** Every function the header declares (the ABI's entry points). */
export function headerFunctions(): HeaderFunction[] {
  const functions: HeaderFunction[] = [];
  // A declaration is `<return type> pkv_name(<params>);`, possibly over several lines.
  const declaration = /^[ \t]*((?:const\s+)?[A-Za-z_]\w*\s*\**)\s*(pkv_\w+)\s*\(([^()]*)\)\s*;/gm;
  for (const m of headerText().matchAll(declaration)) {
    const inside = m[3]!.replace(/\s+/g, " ").trim();
    const params = inside === "" || inside === "void" ? [] : inside.split(",").map((p) => p.trim());
    functions.push({ name: m[2]!, returns: m[1]!.replace(/\s+/g, " ").trim(), params });
  }
  return functions;
}
