// Types that several modules share. They live here, importing nothing of the library's classes, so that
// the runtime can create caches and engines while those depend only on what they need of a runtime.
import type { Pointer } from "bun:ffi";
import type { Owner } from "./lifetime";

export type Backend = "cuda" | "cpu";

export interface DeviceInfo {
  name: string;
  backend: Backend;
  device: number;
  totalMemory: number;
  l2Bytes: number;
  multiprocessors: number;
  computeCapability: [number, number];
  maxSharedPerBlock: number;
  maxSharedPerSM: number;
  maxThreadsPerSM: number;
}

/** What a native object made from a runtime needs of it: the native handle, and a place to register. */
export interface RuntimeContext extends Owner {
  readonly handle: Pointer;
  readonly backend: Backend;
  readonly info: DeviceInfo;
}

export type DecodePolicy = "baseline" | "persistent" | "adaptive";
export type DecodeKernel = "baseline" | "persistent";
