#!/bin/bash
# Experiment v7 (bench/NOTES-kernels.md): planner tail/grain settings, same run, persistent kernel times.
# Run from the repository root on the GPU machine with bun on PATH; logs go to $OUT (or ./gpu-out).
W=${W:-b8-bimodal,b8-uniform,b8-zipf,b4-long,b32-mixed,b1-bucketed,b128-serving}
SETTINGS="default tail20 tail10 tail30 pb2 default2"
source bench/ab-lib.sh
run default
run tail20 PKV_PLAN_TAIL=20 PKV_PLAN_TAIL_PIECES=3
run tail10 PKV_PLAN_TAIL=10 PKV_PLAN_TAIL_PIECES=2
run tail30 PKV_PLAN_TAIL=30 PKV_PLAN_TAIL_PIECES=3
run pb2 PKV_PLAN_PER_BLOCK=2
run default2
# Correctness of the tail split on every shape (TAIL_ALL: small steps too).
t=$SECONDS
PKV_PLAN_TAIL=20 PKV_PLAN_TAIL_ALL=1 timeout 90 bun bench/sweep.ts >"$OUT/sweep-tail.log" 2>&1
echo "sweep tail rc=$? $((SECONDS - t))s"; grep -E "FAIL|passed" "$OUT/sweep-tail.log" | tail -5
for tool in memcheck racecheck; do
  PKV_PLAN_TAIL=20 PKV_PLAN_TAIL_ALL=1 timeout 60 compute-sanitizer --tool $tool --error-exitcode 1 bun test/gpu/sanitize.ts >>"$OUT/sanitize-tail.log" 2>&1
  echo "$tool tail rc=$?"; tail -1 "$OUT/sanitize-tail.log"
done
# Table: persistent-kernel us per step and setting (baseline us of the first run for reference).
echo "step base(default) $SETTINGS"
for f in $SETTINGS; do
  awk -v s=$f '$3=="persistent" && $6=="us" {print $1"/"$2, s, $5} $3=="baseline" && $6=="us" && s=="default" {print $1"/"$2, "base", $5}' "$OUT/$f.log"
done | awk '{k[$1]=1; v[$1" "$2]=$3; if(!($1 in o)){o[$1]=++n; ord[n]=$1}}
  END {for(i=1;i<=n;i++){s=ord[i]; printf "%s %s", s, v[s" base"]; split("'"$SETTINGS"'",a," "); for(j in a) ; for(j=1;j<=6;j++) printf " %s", v[s" "a[j]]; printf "\n"}}'
grep -h "tasks" "$OUT/tail20.log" | awk '$3=="persistent"' | head -12 | awk '{print "tail20 plan:", $1, $2, $(NF-5), $(NF-4), $(NF-1), $NF}'
