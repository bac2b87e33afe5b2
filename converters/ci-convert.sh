#!/usr/bin/env bash
# Ready-to-copy CI job: convert a DiT/SiT checkpoint to PPFlow, verify it, prove the conversion is
# deterministic, and fail loudly when the result drifts from the hash recorded in the repository.
#
#   converters/ci-convert.sh SOURCE [LEVELS ...]        (default levels: 2 3)
#
# Environment: PPCONVERT (the binary; default: build it), OUT_DIR (default: a temporary folder),
# EXPECTED_DIR (default: converters/expected; a file <source stem>-ppf<L>.sha256 there pins the
# expected sha256 of model.safetensors; a missing file is created, which you then commit; under CI=true
# a missing file is an error).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
source_path="$1"; shift
levels=("$@"); [ ${#levels[@]} -gt 0 ] || levels=(2 3)
if [ -z "${PPCONVERT:-}" ]; then
  PPCONVERT="$(cd "$here/.." && scripts/build.sh)/ppconvert"
fi
out_dir="${OUT_DIR:-$(mktemp -d)}"
expected_dir="${EXPECTED_DIR:-$here/expected}"
stem="$(basename "$source_path")"; stem="${stem%.*}"
status=0
for L in "${levels[@]}"; do
  name="$stem-ppf$L"
  echo "== $name"
  # 1. Convert with verification (exit 1 if the finest level does not reproduce the source).
  "$PPCONVERT" from-dit "$source_path" --levels "$L" --out "$out_dir/$name" --json "$out_dir/$name.json"
  hash=$(grep -o '"output_sha256": "[0-9a-f]*"' "$out_dir/$name.json" | grep -o '[0-9a-f]\{64\}')
  # 2. Determinism: a second conversion must give the same bytes (--check compares every file).
  "$PPCONVERT" from-dit "$source_path" --levels "$L" --out "$out_dir/$name" --check --no-verify
  # 3. Independent re-verification of the written folder against the source.
  "$PPCONVERT" verify "$out_dir/$name" --against "$source_path"
  # 4. Drift: compare with the pinned hash.
  pinned="$expected_dir/$name.sha256"
  if [ -f "$pinned" ]; then
    if [ "$(cat "$pinned")" != "$hash" ]; then
      echo "DRIFT: $name model.safetensors sha256 $hash, expected $(cat "$pinned") ($pinned)" >&2
      status=1
    else
      echo "pinned hash matches: $hash"
    fi
  elif [ -n "${CI:-}" ]; then
    echo "MISSING PIN: $pinned does not exist; run this script locally once and commit the file it writes" >&2
    status=1
  else
    mkdir -p "$expected_dir"; echo "$hash" > "$pinned"
    echo "no pinned hash for $name; wrote $pinned (commit it)"
  fi
done
exit $status
