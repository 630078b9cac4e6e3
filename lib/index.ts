// persistentkv: decode attention over a paged KV cache, for Bun.
export { openRuntime, cudaDeviceCount, Runtime, type Backend, type DeviceInfo, type RuntimeOptions } from "./runtime";
export { DeviceBuffer, PinnedBuffer, NativeBuffer, type MemoryKind } from "./buffers";
export { Stream, Event } from "./streams";
export { Graph } from "./graphs";
export * from "./errors";
export { ABI_VERSION, libraryCandidates, libraryPath } from "./ffi/loader";
export { referenceDecode, type AttentionShape, type ReferenceDecodeArgs } from "./reference";
export { KVCache, Sequence, type KVCacheOptions, type KVCacheStats, type KVCacheSnapshot, type SequenceState } from "./kvcache";
export { DecodeEngine, Plan, type DecodeEngineOptions, type DecodePolicy, type DecodeKernel, type BatchSource, type RunOptions } from "./engine";
export { Scheduler, SyntheticModel, RequestTooLargeError, StepFailedError, type SchedulerOptions, type RequestSpec, type RequestHandle, type RequestResult, type TokenEvent, type ActiveRequest, type StepModel, type StepReport, type SchedulerTotals } from "./scheduler";
