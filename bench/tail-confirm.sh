#!/bin/bash
# v7 confirmation (bench/NOTES-kernels.md): the default plan (dynamic tail) against PKV_PLAN_TAIL=0 (the plan
# before v7), interleaved twice in one session; sweep and sanitizer with the tail on every shape.
W=${W:-b8-bimodal,b8-uniform,b8-zipf,b4-long,b32-mixed,b1-bucketed,b128-serving,b256-short}
SETTINGS="old1 new1 old2 new2"
source bench/ab-lib.sh
run old1 PKV_PLAN_TAIL=0
run new1
run old2 PKV_PLAN_TAIL=0
run new2
t=$SECONDS
timeout 90 bun bench/sweep.ts >"$OUT/sweep.log" 2>&1
echo "sweep default rc=$? $((SECONDS - t))s"; grep -E "FAIL|passed" "$OUT/sweep.log" | tail -5
PKV_PLAN_TAIL_ALL=1 timeout 90 bun bench/sweep.ts >"$OUT/sweep-tail-all.log" 2>&1
echo "sweep tail-all rc=$?"; grep -E "FAIL|passed" "$OUT/sweep-tail-all.log" | tail -5
for tool in memcheck racecheck; do
  PKV_PLAN_TAIL_ALL=1 timeout 60 compute-sanitizer --tool $tool --error-exitcode 1 bun test/gpu/sanitize.ts >>"$OUT/sanitize.log" 2>&1
  echo "$tool tail-all rc=$?"; tail -1 "$OUT/sanitize.log"
done
echo "step | baseline(old1) | persistent: $SETTINGS | adaptive: $SETTINGS"
for f in $SETTINGS; do
  awk -v s=$f '$6=="us" {print $1"/"$2, $3"-"s, $5}' "$OUT/$f.log"
done | awk '{v[$1" "$2]=$3; if(!($1 in o)){o[$1]=++n; ord[n]=$1}}
  END {split("'"$SETTINGS"'",a," "); for(i=1;i<=n;i++){s=ord[i]; printf "%s %s |", s, v[s" baseline-old1"];
    for(j=1;j<=4;j++) printf " %s", v[s" persistent-"a[j]]; printf " |"; for(j=1;j<=4;j++) printf " %s", v[s" adaptive-"a[j]]; printf "\n"}}'
