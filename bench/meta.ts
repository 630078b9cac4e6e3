// Provenance fields every benchmark result carries.
import { execSync } from "node:child_process";

/** The commit measured. The GPU machine runs a copy of the tree that may have no .git: then $PKV_COMMIT. */
export function commit(): string {
  try {
    return execSync("git rev-parse HEAD", { stdio: ["ignore", "pipe", "ignore"] }).toString().trim();
  } catch {
    return process.env.PKV_COMMIT ?? "unknown";
  }
}
