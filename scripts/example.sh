#!/usr/bin/env bash
# Set up a fresh Debian/Ubuntu machine and run the main job on the built-in digits example:
# inspect the bundled SiT, convert it to PPFlow (verified), fine-tune, sample, and show where it all went.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
for pkg in libopenblas-dev libzip-dev libjson-c-dev pkg-config; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq --no-install-recommends "${need[@]}"
fi

swift build -c release
bin="$(swift build -c release --show-bin-path)"
out="runs/digits"
mkdir -p "$out"

echo "== 1. inspect the bundled SiT"
"$bin/ppconvert" inspect examples/digits/digits-sit.zip | head -20

echo "== 2. convert it to a 2-level PPFlow model (verified against the source)"
"$bin/ppconvert" from-dit examples/digits/digits-sit.zip --levels 2 --out "$out/digits-sit-ppf2" --json "$out/convert-report.json"

if [ -x "$bin/ppfinetune" ] && "$bin/ppfinetune" --help 2>/dev/null | grep -q recipe; then
  echo "== 3. fine-tune it with recipes/digits-ppf2.json (converts the SiT again, calibrated on the digits)"
  rm -rf "$out/finetune"  # a run folder is never silently reused; this one belongs to the example
  "$bin/ppfinetune" --recipe recipes/digits-ppf2.json --out "$out/finetune"
fi

if [ -x "$bin/ppsample" ] && "$bin/ppsample" --help 2>/dev/null | grep -q png; then
  echo "== 4. sample digits from the source SiT and from the PPFlow model"
  "$bin/ppsample" examples/digits/digits-sit.zip --per-class 4 --steps 50 --png "$out/sit-samples.png" --out "$out/sit-samples.safetensors"
  model="$out/digits-sit-ppf2"; [ -d "$out/finetune/final" ] && model="$out/finetune/final"
  "$bin/ppsample" "$model" --per-class 4 --steps 50 --png "$out/ppflow-samples.png" --out "$out/ppflow-samples.safetensors"
fi

echo
echo "done. Outputs in $out/:"
ls -1 "$out"
