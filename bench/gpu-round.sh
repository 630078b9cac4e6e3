#!/bin/bash
# One device round: GPU tests, correctness sweep, compute-sanitizer (both math paths), benchmark.
# Run from the repository root on the GPU machine with bun on PATH; logs go to $OUT (or ./gpu-out).
OUT=${OUT:-gpu-out}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,clocks.mem,temperature.gpu,power.draw --format=csv,noheader
timeout 200 bun test test/gpu >"$OUT/test.log" 2>&1
echo "gpu tests rc=$?"; grep -E "^\(fail\)|pass$|fail$" "$OUT/test.log" | tail -8
timeout 240 bun bench/sweep.ts >"$OUT/sweep.log" 2>&1
echo "sweep rc=$?"; grep -E "FAIL|passed" "$OUT/sweep.log" | tail -12
for math in tensor-cores cuda-cores; do
  for tool in memcheck racecheck; do
    PKV_DECODE_MATH=$math timeout 120 compute-sanitizer --tool $tool --error-exitcode 1 bun test/gpu/sanitize.ts >>"$OUT/sanitize.log" 2>&1
    echo "$tool $math rc=$?"; tail -1 "$OUT/sanitize.log"
  done
done
timeout 240 bun bench/decode.ts --out "$OUT" ${BENCH_ARGS} >"$OUT/bench.log" 2>&1
echo "bench rc=$?"; grep -E "ceiling|plan cost" "$OUT/bench.log"
# The CUDA-core body on the same steps, for the notes (tables stay in the log).
[ -n "$CORES_ONLY" ] && PKV_DECODE_MATH=${ALT_MATH:-cuda-cores} timeout 150 bun bench/decode.ts --out /tmp/cores --only "$CORES_ONLY" ${ALT_ARGS} >"$OUT/bench-cores.log" 2>&1
[ -n "$PROFILE" ] && timeout 120 ncu --clock-control none --kernel-name regex:decode_ --launch-skip 2 --launch-count 1 \
  --section SpeedOfLight --section MemoryWorkloadAnalysis --section WarpStateStats --section Occupancy --section SchedulerStats \
  --section LaunchStats bun bench/profile.ts $PROFILE >"$OUT/ncu.log" 2>&1
echo "done"
