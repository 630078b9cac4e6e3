// The raw native layer for benchmarks and tools ("persistentkv/ffi"): the symbol table and the byte
// layouts of the ABI structs.
export * from "./layouts";
export * from "./loader";
