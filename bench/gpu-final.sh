#!/bin/bash
# A whole device round for the committed results, a call a phase, each within the device's 10-minute limit:
#   bash bench/gpu-final.sh check   the suite with PKV_REQUIRE_GPU=1, the C ABI fuzz under memcheck, the
#                                   correctness sweep and memcheck/racecheck of every kernel variant
#   bash bench/gpu-final.sh shared  the shared-prefix kernels: the default's GPU tests three times and the
#                                   mma.sync kernel's once (PKV_SHARED_KERNEL=mma), memcheck/racecheck of
#                                   both, the shared benchmark
#   bash bench/gpu-final.sh perf    the ceiling search, calibration, the decode benchmark (with an A/B against
#                                   the tree in $AB_OLD when it is set), host micro benchmarks, swap,
#                                   serving replay, the package smoke test
# Run from the repository root on the GPU machine after `source .gpu/setup.sh`; everything lands in
# $OUT/<phase>.tgz (one file comes back), with a summary printed last.
phase=${1:?usage: bash bench/gpu-final.sh check|shared|perf}
OUT=${OUT:-gpu-out}
R="$OUT/$phase"
mkdir -p "$R"
export PKV_CACHE_DIR="$R/calibration"
step() { # name, timeout, command...
  local name=$1 limit=$2; shift 2
  local t0=$(date +%s)
  timeout "$limit" "$@" >"$R/$name.log" 2>&1
  echo "$name rc=$? $(($(date +%s) - t0))s" | tee -a "$R/summary.txt"
}
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,clocks.mem,temperature.gpu,power.draw --format=csv,noheader | tee "$R/summary.txt"
# Every kernel variant the settings can select: the defaults, each strategy forced onto small steps, the
# other math body and the other loader.
VARIANTS=('{}' '{"claimMinTiles":1}' '{"tailMinSplits":0}' '{"tailMinSplits":0,"tailEndTiles":0}' '{"math":"cuda-cores"}' '{"loader":"cp-async"}')

if [ "$phase" = check ]; then
  step tests 300 bun test
  grep -E "^\(fail\)|^ *[0-9]+ (pass|fail|skip)$" "$R/tests.log" | tail -8 | tee -a "$R/summary.txt"
  # API errors are the fuzz's own refused allocations; memcheck counts memory errors only.
  step fuzz-memcheck 200 compute-sanitizer --tool memcheck --report-api-errors no --error-exitcode 1 \
    bun test/support/fuzz-abi-child.ts --backend cuda --calls 6000 --seed 7 --last-call "$R/fuzz-last-call.txt"
  tail -2 "$R/fuzz-memcheck.log" | tee -a "$R/summary.txt"
  for i in "${!VARIANTS[@]}"; do
    step "sweep-$i" 120 bun bench/sweep.ts --settings "${VARIANTS[$i]}"
    echo "  ${VARIANTS[$i]}: $(grep -E "FAIL|passed" "$R/sweep-$i.log" | tail -1)" | tee -a "$R/summary.txt"
  done
  for tool in memcheck racecheck; do
    for i in "${!VARIANTS[@]}"; do
      step "$tool-$i" 120 compute-sanitizer --tool "$tool" --error-exitcode 1 bun test/gpu/sanitize.ts "${VARIANTS[$i]}"
      echo "  ${VARIANTS[$i]}: $(tail -1 "$R/$tool-$i.log")" | tee -a "$R/summary.txt"
    done
  done
fi

if [ "$phase" = shared ]; then
  shared_checks() { # name, test runs: the shared GPU tests, then memcheck/racecheck, of the kernel the env picks
    for i in $(seq "$2"); do
      step "shared-tests-$1-$i" 120 bun test test/gpu/shared-prefix.test.ts
      grep -E "^\(fail\)|^ *[0-9]+ (pass|fail)$" "$R/shared-tests-$1-$i.log" | tee -a "$R/summary.txt"
    done
    for tool in memcheck racecheck; do
      step "shared-$tool-$1" 120 compute-sanitizer --tool "$tool" --error-exitcode 1 bun test/gpu/sanitize-shared.ts
      tail -1 "$R/shared-$tool-$1.log" | tee -a "$R/summary.txt"
    done
  }
  shared_checks default 3
  PKV_SHARED_KERNEL=mma shared_checks mma 1
  step shared-bench 150 bun bench/shared.ts --out "$R"
  grep -A6 "^## Bars" "$R"/shared-*.md | tee -a "$R/summary.txt"
fi

if [ "$phase" = perf ]; then
  step read-ceiling 120 bash -c "nvcc -O3 -std=c++17 -arch=sm_90 -o /tmp/read-ceiling bench/read-ceiling.cu && /tmp/read-ceiling"
  tail -1 "$R/read-ceiling.log" | tee -a "$R/summary.txt"
  step probe 60 bun bench/probe.ts --out "$R/probe.json"
  step calibrate 120 bun scripts/calibrate.ts
  tail -1 "$R/calibrate.log" | tee -a "$R/summary.txt"
  # Same-session A/B of kernel times: the old tree and this one, twice, interleaved.
  if [ -n "$AB_OLD" ]; then
    for pass in 1 2; do
      step "ab-old-$pass" 150 bash -c "cd '$AB_OLD' && PKV_CACHE_DIR='$PWD/$R/calibration-old' bun bench/decode.ts --out '$PWD/$R/ab-old-$pass'"
      step "ab-new-$pass" 150 bun bench/decode.ts --out "$R/ab-new-$pass"
    done
  fi
  step decode 150 bun bench/decode.ts --out "$R"
  grep -A6 "^## Bars" "$R"/decode-*.md | tee -a "$R/summary.txt"
  step micro 90 bun bench/micro.ts --out "$R/micro.json"
  step swap 90 bun bench/swap.ts --gib 1 --repeats 5 --out "$R/swap.json"
  step serve 150 bun bench/serve.ts --backend cuda --requests 192 --rate 16 --out "$R/serve.json"
  step package-smoke 120 env OUT="$R" bash scripts/package-smoke.sh .gpu/packages cuda cpu
  tail -2 "$R/package-smoke.log" | tee -a "$R/summary.txt"
fi
tar czf "$OUT/$phase.tgz" -C "$OUT" "$phase" && rm -rf "$R"
echo done
