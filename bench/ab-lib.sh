# Shared by the same-session A/B scripts (tail-sweep.sh, tail-confirm.sh): sourced from the repository root
# on the GPU machine with bun on PATH. Logs go to $OUT (or ./gpu-out); W names the workloads.
OUT=${OUT:-gpu-out}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,clocks.mem,temperature.gpu,power.draw --format=csv,noheader
# run NAME [VAR=value...]: the decode benchmark over $W with those settings, into $OUT/NAME.log.
run() {
  local name=$1; shift
  local t=$SECONDS
  env "$@" timeout 90 bun bench/decode.ts --out "$OUT/$name" --only "$W" >"$OUT/$name.log" 2>&1
  echo "$name rc=$? $((SECONDS - t))s $(head -1 "$OUT/$name.log")"
}
