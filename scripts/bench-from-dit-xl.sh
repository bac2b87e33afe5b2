#!/usr/bin/env bash
# Benchmark (issue 12): `ppconvert from-dit` of the 2.7 GB random SiT-XL/2 `.pt` (no verification: the
# conversion, the source hash, the writing and the output hash) against `openssl dgst -sha256` of the
# written model.safetensors, alternated pair by pair in the same run, timed with /usr/bin/time.
#
#   scripts/bench-from-dit-xl.sh [--out-dir DIR] [--pairs N] [--force]
#
# Each round converts into a fresh folder under DIR (default /dev/shm/ppflow-from-dit, tmpfs: the disk's
# write-back is not what is measured) and removes it afterwards, outside the timing; --force instead
# replaces one folder each round (the removal of the old output is then inside the timing). Makes the
# checkpoint with `ppconvert bench-io` when /tmp/ppflow-bench/sit-xl-2-random.pt is missing. Each round also
# times `cp` of the source into DIR (removed before the conversion): what writing the bytes alone costs there.
# PPFLOW_BIN=DIR uses binaries built elsewhere. Results go to docs/BENCHMARKS.md by hand.
set -euo pipefail
cd "$(dirname "$0")/.."
dir=/dev/shm/ppflow-from-dit
pairs=5
force=0
while [ $# -gt 0 ]; do
  case "$1" in
    --out-dir) dir="$2"; shift 2 ;;
    --pairs) pairs="$2"; shift 2 ;;
    --force) force=1; shift ;;
    -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
    *) echo "bench-from-dit-xl.sh: unknown argument $1" >&2; exit 64 ;;
  esac
done
bin="${PPFLOW_BIN:-$(scripts/build.sh)}"
source=/tmp/ppflow-bench/sit-xl-2-random.pt
[ -f "$source" ] || "$bin/ppconvert" bench-io --dir /tmp/ppflow-bench --repeats 1 >/dev/null
mkdir -p "$dir"
echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//'), $(nproc) cores"
times=$(mktemp)
trap 'rm -f "$times"; rm -rf "$dir/out" "$dir/copy.pt"' EXIT
ratios=()
for round in $(seq 0 "$pairs"); do              # round 0 warms the page cache and is not counted
  out="$dir/out"
  /usr/bin/time -f "%e" -o "$times" cp "$source" "$dir/copy.pt"
  read -r cp_wall < "$times"
  rm -f "$dir/copy.pt"
  [ "$force" = 1 ] || rm -rf "$out"
  /usr/bin/time -f "%e %U %S" -o "$times" "$bin/ppconvert" from-dit "$source" --levels 2 --heads 16 \
    --objective velocity --no-verify --out "$out" --force >/dev/null 2>&1
  read -r a_wall a_user a_sys < "$times"
  /usr/bin/time -f "%e %U %S" -o "$times" openssl dgst -sha256 "$out/model.safetensors" >/dev/null
  read -r b_wall b_user b_sys < "$times"
  [ "$round" = 0 ] && continue
  ratio=$(python3 -c "print(f'{$a_wall / $b_wall:.2f}')")
  ratios+=("$ratio")
  echo "pair $round: from-dit ${a_wall} s (user $a_user, sys $a_sys), openssl dgst ${b_wall} s (user $b_user, sys $b_sys), ratio $ratio; cp ${cp_wall} s"
done
echo "ratios: ${ratios[*]}; median $(printf '%s\n' "${ratios[@]}" | sort -n | python3 -c 'import sys; v=[float(x) for x in sys.stdin]; print(sorted(v)[len(v)//2])')"
