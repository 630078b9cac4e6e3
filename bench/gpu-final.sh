#!/bin/bash
# One full device round for the committed results: the test suite with PKV_REQUIRE_GPU=1, calibration,
# the decode benchmark, host micro benchmarks, swap bandwidth, the serving replay, the B8 example, the
# probe, the correctness sweep and memcheck of the KV cache's GPU paths. Run from the repository root on
# the GPU machine after `source .gpu/setup.sh`; everything lands in $OUT/final.tgz (one file comes back).
OUT=${OUT:-gpu-out}
R="$OUT/final"
mkdir -p "$R"
export PKV_CACHE_DIR="$R/calibration"
step() { # name, timeout, command...
  local name=$1 limit=$2; shift 2
  local t0=$(date +%s)
  timeout "$limit" "$@" >"$R/$name.log" 2>&1
  echo "$name rc=$? $(($(date +%s) - t0))s" | tee -a "$R/summary.txt"
}
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,clocks.mem,temperature.gpu,power.draw --format=csv,noheader | tee "$R/summary.txt"
step tests 240 bun test
grep -E "^\(fail\)| pass$| fail$| skip$" "$R/tests.log" | tail -6 | tee -a "$R/summary.txt"
step calibrate 150 bun scripts/calibrate.ts
tail -1 "$R/calibrate.log" | tee -a "$R/summary.txt"
step decode 300 bun bench/decode.ts --out "$R"
grep -A4 "^## Bars" "$R"/decode-*.md | tee -a "$R/summary.txt"
step micro 90 bun bench/micro.ts --out "$R/micro.json"
step swap 90 bun bench/swap.ts --gib 1 --repeats 5 --out "$R/swap.json"
step probe 60 bun bench/probe.ts --out "$R/probe.json"
step example 120 bun examples/b8-batch.ts
step serve 150 bun bench/serve.ts --backend cuda --requests 192 --rate 16 --out "$R/serve.json"
step sweep 200 bun bench/sweep.ts
grep -E "FAIL|passed" "$R/sweep.log" | tail -3 | tee -a "$R/summary.txt"
# Claiming on every step it can take (the sweep's and sanitizer's steps are mostly under its threshold).
step sweep-claim 200 env PKV_PLAN_CLAIM=1 bun bench/sweep.ts
grep -E "FAIL|passed" "$R/sweep-claim.log" | tail -3 | tee -a "$R/summary.txt"
step cuda-calls 120 bash -c "nvcc -O2 -arch=sm_90 -o /tmp/cuda-calls bench/cuda-calls.cu && /tmp/cuda-calls"
step memcheck-kvcache 150 compute-sanitizer --tool memcheck --error-exitcode 1 bun test test/gpu/kvcache.test.ts
tail -2 "$R/memcheck-kvcache.log" | tee -a "$R/summary.txt"
for tool in memcheck racecheck; do
  step "$tool-decode" 150 compute-sanitizer --tool "$tool" --error-exitcode 1 bun test/gpu/sanitize.ts
  tail -1 "$R/$tool-decode.log" | tee -a "$R/summary.txt"
  step "$tool-decode-claim" 150 env PKV_PLAN_CLAIM=1 compute-sanitizer --tool "$tool" --error-exitcode 1 bun test/gpu/sanitize.ts
  tail -1 "$R/$tool-decode-claim.log" | tee -a "$R/summary.txt"
done
tar czf "$OUT/final.tgz" -C "$OUT" final && rm -rf "$R"
echo done
