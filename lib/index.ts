// persistentkv: decode attention over a paged KV cache, for Bun.
export { openRuntime, cudaDeviceCount, Runtime, type Backend, type DeviceInfo, type RuntimeOptions } from "./runtime";
export { DeviceBuffer, PinnedBuffer, NativeBuffer, type MemoryKind } from "./buffers";
export { Stream, Event } from "./streams";
export { Graph } from "./graphs";
export * from "./errors";
export { ABI_VERSION, libraryCandidates, libraryPath } from "./ffi/loader";
export { referenceDecode, type AttentionShape, type ReferenceDecodeArgs } from "./reference";
