// How the decode benchmarks time a step, in one place so that every bench measures the same way: kernel
// time from CUDA events around one launch with L2 flushed first (as bench/workloads/peers-h200.md times
// FlashInfer), wall time on the host clock around plan + runs + sync, and the streaming-read ceiling of
// the same run that bandwidths are a fraction of.
import type { Runtime } from "persistentkv";

export const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

/** The value after `name` on the command line, or `fallback`. */
export function cliArg(args: readonly string[], name: string, fallback: string): string {
  return args.includes(name) ? args[args.indexOf(name) + 1]! : fallback;
}

/** Streaming-read bandwidth (GB/s) of a 2 GiB read, 16-byte loads: the decode ceiling on this device. */
export function readCeiling(rt: Runtime, bytes = 2 ** 31): number {
  const ceiling = rt.probeReadBandwidth({ bytes, iterations: 20 });
  console.log(`${rt.info.name}: streaming-read ceiling ${ceiling.toFixed(1)} GB/s`);
  return ceiling;
}

/** Kernel times (us) of `reps` launches `launch(i)`, one between two events, L2 flushed before each. */
export function kernelSamples(rt: Runtime, launch: (i: number) => void, reps: number): number[] {
  using start = rt.createEvent();
  using stop = rt.createEvent();
  const us: number[] = [];
  for (let i = 0; i < reps; i++) {
    rt.flushL2();
    start.record();
    launch(i);
    stop.record();
    stop.synchronize();
    us.push(stop.elapsedSince(start) * 1000);
  }
  return us;
}

/** Median kernel time (us) of `launch(i)` (kernelSamples). */
export function kernelUs(rt: Runtime, launch: (i: number) => void, reps: number): number {
  return median(kernelSamples(rt, launch, reps));
}

/** Median wall time (us) of `step()` (plan + upload + runs, as the serving loop sees it) and a sync, L2 cold. */
export function wallUs(rt: Runtime, step: () => void, reps: number): number {
  const times: number[] = [];
  for (let i = 0; i < reps; i++) {
    rt.flushL2();
    rt.synchronize();
    const t = performance.now();
    step();
    rt.synchronize();
    times.push(performance.now() - t);
  }
  return median(times) * 1000;
}
