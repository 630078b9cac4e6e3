#!/usr/bin/env bash
# A dependent's install, offline: puts the two packed tarballs into a scratch Bun project outside the
# repository (by file path, with an empty package cache and no registry), and runs test/package/consumer.ts
# there on each backend given (default: cuda, then cpu): open the runtime from the platform package's
# prebuilt library, plan and run one decode step, compare it with referenceDecode. Needs only bun on PATH
# and the tarballs from scripts/pack-packages.sh; the type check of the same consumer runs in
# test/package.test.ts, where tsc is installed.
#
#   bash scripts/package-smoke.sh DIR [backend...]      DIR holds persistentkv-*.tgz and persistentkv-linux-x64-*.tgz
#
# Prints one JSON line per backend and writes them, with the device and the tarballs' sizes, to
# $OUT/package-smoke.json when OUT is set. Exits non-zero when a backend fails or mismatches.
set -euo pipefail
if [ $# -lt 1 ]; then
  echo "usage: bash scripts/package-smoke.sh DIR [cuda|cpu|auto ...]" >&2
  exit 2
fi
root=$(cd "$(dirname "$0")/.." && pwd)
packs=$(cd "$1" && pwd)
shift
backends=("$@")
[ ${#backends[@]} -gt 0 ] || backends=(cuda cpu)
main=$(ls "$packs"/persistentkv-[0-9]*.tgz | tail -1)
platform=$(ls "$packs"/persistentkv-linux-x64-*.tgz | tail -1)
command -v bun >/dev/null || { echo "package-smoke.sh: no bun on PATH" >&2; exit 1; }

project=$(mktemp -d "${TMPDIR:-/tmp}/pkv-smoke-XXXXXX")
trap 'rm -rf "$project"' EXIT
cp "$root/test/package/consumer.ts" "$project/"
cat >"$project/package.json" <<JSON
{ "name": "pkv-smoke", "private": true, "type": "module",
  "dependencies": { "persistentkv": "file:$main", "@persistentkv/linux-x64": "file:$platform" } }
JSON
# --offline, an empty cache and an unreachable registry: the install must need nothing but the tarballs.
(cd "$project" && BUN_INSTALL_CACHE_DIR="$project/.bun-cache" BUN_CONFIG_REGISTRY=http://127.0.0.1:9/ \
  bun install --offline >&2)

results=()
status=0
for backend in "${backends[@]}"; do
  if ! line=$(cd "$project" && env -u PKV_LIBRARY bun consumer.ts "$backend" | tail -1) || [ -z "$line" ]; then
    status=1
    line="{\"ok\":false,\"backend\":\"$backend\",\"error\":\"consumer.ts failed: see stderr\"}"
  fi
  echo "$line"
  results+=("$line")
done
if [ -n "${OUT:-}" ]; then
  {
    printf '{ "date": "%s", "main": "%s", "main_bytes": %s, "platform": "%s", "platform_bytes": %s,\n  "runs": [\n' \
      "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$(basename "$main")" "$(stat -c %s "$main")" \
      "$(basename "$platform")" "$(stat -c %s "$platform")"
    for i in "${!results[@]}"; do
      printf '    %s%s\n' "${results[$i]}" "$([ "$i" -lt $((${#results[@]} - 1)) ] && echo ,)"
    done
    printf '  ] }\n'
  } >"$OUT/package-smoke.json"
fi
exit "$status"
