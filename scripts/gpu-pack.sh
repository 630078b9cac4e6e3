#!/usr/bin/env bash
# Packs, into .gpu/ (ignored by git), what a GPU machine with no bun and no package registry needs to run
# this checkout: bun from node_modules (xz-compressed, about 39 MB), setup.sh to unpack it there, and the
# two npm packages built from zig-out/lib/ for scripts/package-smoke.sh. Build the library first
# (`npm run build -- -Dcuda-arch=sm_90` keeps what travels small), then carry .gpu/ and zig-out/.
#
#   bash scripts/gpu-pack.sh             then, on the GPU machine:  source .gpu/setup.sh && bun test
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
mkdir -p .gpu

bun_bin=$(ls node_modules/@oven/bun-linux-x64/bin/bun node_modules/bun/bin/bun.exe 2>/dev/null | head -1 || true)
[ -x "$bun_bin" ] || { echo "gpu-pack.sh: no bun in node_modules: run npm install first" >&2; exit 1; }
version=$("$bun_bin" --version)
if [ "$(cat .gpu/bun.version 2>/dev/null)" != "$version" ]; then
  echo "compressing bun $version into .gpu/bun.xz (about 30 s, once per bun version)" >&2
  xz -T0 -6 -c "$bun_bin" >.gpu/bun.xz.partial
  mv .gpu/bun.xz.partial .gpu/bun.xz
  echo "$version" >.gpu/bun.version
fi

cat >.gpu/setup.sh <<'SETUP'
# Sourced from the project's root on the GPU machine: unpacks bun into /tmp, puts it on PATH, and makes the
# GPU tests fail rather than skip when no device is visible.
if [ ! -x /tmp/pkv-bun/bun ]; then
  mkdir -p /tmp/pkv-bun
  { xz -dc .gpu/bun.xz 2>/dev/null ||
    python3 -c 'import lzma, shutil, sys; shutil.copyfileobj(lzma.open(".gpu/bun.xz"), sys.stdout.buffer)'; } >/tmp/pkv-bun/bun
  chmod +x /tmp/pkv-bun/bun
fi
export PATH=/tmp/pkv-bun:$PATH
export PKV_REQUIRE_GPU=1
echo "bun $(bun --version); GPU: $(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1)"
SETUP

if [ -f zig-out/lib/libpersistentkv.so ]; then
  rm -rf .gpu/packages
  bash scripts/pack-packages.sh --library zig-out/lib/libpersistentkv.so --out .gpu/packages >&2
fi
du -sh .gpu | awk '{ print "packed .gpu/ (" $1 "): carry it with zig-out/ (carry [\".gpu\", \"zig-out\"])" }'
