// Runners for tests: the host path over a demo stack's parts, with a hook before each decode (to count
// steps, fail one, or pretend GPU work takes time).
import type { DemoParts, DemoRunner } from "../../lib/scheduler/demo";
import { HostStepRunner } from "../../lib/scheduler/host-runner";

export function hookedHostRunner(
  { cache, engine, model, sizes }: DemoParts,
  hooks: { beforeDecode?: () => void; dispose?: () => void },
): DemoRunner {
  const host = new HostStepRunner({
    cache,
    engine,
    model,
    shape: { ...sizes, maxPagesPerSequence: sizes.numPages },
    maxBatch: sizes.maxBatch,
  });
  return {
    maxBatch: host.maxBatch,
    prefill: (...args) => host.prefill(...args),
    decode: async (...args) => {
      hooks.beforeDecode?.();
      return host.decode(...args);
    },
    dispose: hooks.dispose,
  };
}
