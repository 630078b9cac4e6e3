// persistentkv: decode attention over a paged KV cache, for Bun. Everything a user, an example or a
// benchmark needs is exported here; the raw symbol table and struct layouts are the subpath
// "persistentkv/ffi", and the test pool and decode checks "persistentkv/testing".
export { VERSION, ABI_VERSION } from "./version";
export { ENV, readEnv, type EnvName, type EnvVariable } from "./env";
export { openRuntime, cudaDeviceCount, Runtime, type Backend, type DeviceInfo, type RuntimeOptions } from "./runtime";
export { DeviceBuffer, PinnedBuffer, NativeBuffer, type HostArray, type MemoryKind } from "./buffers";
export { type DType, type KVDType, DTYPE_BYTES, encode, decode, encodeE4m3, decodeE4m3 } from "./dtype";
export { Stream, Event } from "./streams";
export { Graph } from "./graphs";
export * from "./errors";
export { libraryCandidates, libraryPath, LIBRARY_FILE, PLATFORM_PACKAGES } from "./ffi/loader";
export { referenceDecode, type AttentionShape, type Fp8AttentionShape, type ReferenceDecodeArgs } from "./reference";
export { referenceMultiquery, type ReferenceMultiqueryArgs } from "./reference-multiquery";
export {
  KVCache,
  Sequence,
  type KVCacheOptions,
  type KVCacheStats,
  type KVCacheSnapshot,
  type SequenceState,
} from "./kvcache";
export type { KVData } from "./cache/kv-arguments";
export {
  DecodeEngine,
  Plan,
  type PlanKernel,
  type PlanOptions,
  type DecodeEngineOptions,
  type DecodePolicy,
  type DecodeKernel,
  type BatchSource,
  type RunOptions,
} from "./engine";
export type { CreateDecodeEngineOptions, EngineFromCacheOptions } from "./engine-options";
export type { PolicyTable, CellMeasurement } from "./policy/table";
export type { CalibrateOptions, ModelShape as CalibrationShape } from "./policy/calibrate";
export {
  Scheduler,
  HostStepRunner,
  SyntheticModel,
  RequestTooLargeError,
  StepFailedError,
  ModelOutputError,
  quantile,
  LatencyHistogram,
  LATENCY_BUCKETS_MS,
  type FinishReason,
  type Outcome,
  type SchedulerOptions,
  type HostOptions,
  type RunnerOptions,
  type HostStepRunnerOptions,
  type StepRunner,
  type DecodeResult,
  type PoolShape,
  type RequestSpec,
  type RequestHandle,
  type RequestResult,
  type TokenEvent,
  type ActiveRequest,
  type StepModel,
  type StepReport,
  type SchedulerTotals,
  type SchedulerCache,
  type SchedulerEngine,
  type CacheStats,
  type ModelShape,
  type SyntheticShape,
} from "./scheduler";
export type { SchedulerPlan } from "./scheduler/ports";
export {
  createDemoStack,
  sizesFor,
  CPU_SIZES,
  GPU_SIZES,
  type DemoSizes,
  type DemoStack,
  type DemoOptions,
  type DemoParts,
  type DemoRunner,
} from "./scheduler/demo";
export { startServer, type ServeOptions, type RunningServer } from "./http/server";
export { renderMetrics, METRICS_CONTENT_TYPE, type MetricsSource } from "./http/metrics";
export { ApiError } from "./http/api-error";
export type { Address } from "./interop/address";
export { KVPool, type KVPoolOptions, type KVPoolMemory } from "./interop/kvpool";
export type { KVPoolLayout, TokenPositions } from "./interop/layout";
export type { CallerPageTable, PagedTable, CallerBlockTable } from "./interop/paged-plan";
export {
  memoryInfo,
  pageBytes,
  pagesFor,
  swapPagesFor,
  type MemoryInfo,
  type PageShape,
  type SizedKVCacheOptions,
} from "./cache/memory";
export {
  DeviceStepRunner,
  type DeviceStepRunnerOptions,
  type DeviceRunnerStats,
  type RunnerRuntime,
} from "./serving/device-runner";
export {
  type DeviceStep,
  type DeviceStepModel,
  type DeviceModelShape,
  STEP_ROW_BYTES,
  STEP_ROW_INTS,
  writeStepRow,
} from "./serving/device-model";
export { SyntheticDeviceModel } from "./serving/synthetic-device";
export { SYNTHETIC_TABLE_ENTRIES } from "./scheduler/synthetic";
export * from "./sharded/index";
