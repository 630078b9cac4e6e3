// Test and benchmark helpers ("persistentkv/testing"): a KV pool filled with known random data, and
// decode cases checked against the CPU reference. Tests, the GPU sweep and the benchmarks share them.
export * from "./decode-check";
export * from "./pool";
