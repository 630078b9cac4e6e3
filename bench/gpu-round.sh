#!/bin/bash
# One device round: GPU tests, correctness sweep, compute-sanitizer (both math paths), benchmark.
# Run from the repository root on the GPU machine with bun on PATH; logs go to $OUT (or ./gpu-out).
OUT=${OUT:-gpu-out}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,clocks.mem,temperature.gpu,power.draw --format=csv,noheader
timeout 200 bun test test/gpu >"$OUT/test.log" 2>&1
echo "gpu tests rc=$?"; grep -E "^\(fail\)|pass$|fail$" "$OUT/test.log" | tail -8
timeout 240 bun bench/sweep.ts --out "$OUT/sweep.json" >"$OUT/sweep.log" 2>&1
echo "sweep rc=$?"; grep -E "FAIL|passed" "$OUT/sweep.log" | tail -12
for math in tensor-cores cuda-cores; do
  for tool in memcheck racecheck; do
    PKV_DECODE_MATH=$math timeout 120 compute-sanitizer --tool $tool --error-exitcode 1 bun test/gpu/sanitize.ts >>"$OUT/sanitize.log" 2>&1
    echo "$tool $math rc=$?"; tail -1 "$OUT/sanitize.log"
  done
done
timeout 240 bun bench/decode.ts --out "$OUT" ${BENCH_ARGS} >"$OUT/bench.log" 2>&1
echo "bench rc=$?"
