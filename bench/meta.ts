// Provenance fields every benchmark result carries.
import { execSync } from "node:child_process";

/** The commit measured: $PKV_COMMIT where set (the GPU machine's copy of the tree may carry a stale .git), else git's HEAD. */
export function commit(): string {
  if (process.env.PKV_COMMIT) return process.env.PKV_COMMIT;
  try {
    return execSync("git rev-parse HEAD", { stdio: ["ignore", "pipe", "ignore"] })
      .toString()
      .trim();
  } catch {
    return "unknown";
  }
}
