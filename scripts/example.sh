#!/usr/bin/env bash
# Set up a fresh Debian/Ubuntu machine and run the main job on the built-in digits example:
# inspect the bundled SiT, convert it to PPFlow (verified), fine-tune, sample, and show where it all went.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
for pkg in libopenblas-dev libzip-dev zlib1g-dev libjson-c-dev libpng-dev libjpeg62-turbo-dev libssl-dev pkg-config; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq --no-install-recommends "${need[@]}"
fi

bin="$(scripts/build.sh)"
out="runs/digits"
mkdir -p "$out"
# Everything below writes into the example's own folder; --force lets a second run replace what the first
# wrote (the toolkit still refuses to replace anything it did not write).

echo "== 1. inspect the bundled SiT"
"$bin/ppconvert" inspect examples/digits/digits-sit.zip | sed -n 1,20p  # sed reads to the end: head would close the pipe and, under pipefail, fail the script with SIGPIPE

echo "== 2. convert it to a 2-level PPFlow model: the paper's rule, then the calibrated initializer (the defaults)"
"$bin/ppconvert" from-dit examples/digits/digits-sit.zip --levels 2 --out "$out/digits-sit-ppf2" \
  --data examples/digits/digits.safetensors --json "$out/convert-report.json" --force
"$bin/ppconvert" from-dit examples/digits/digits-sit.zip --levels 2 --out "$out/digits-sit-ppf2-calibrated" \
  --init calibrated --data examples/digits/digits.safetensors --json "$out/convert-calibrated-report.json" --force

echo "== 3. fine-tune with recipes/digits-ppf2.json and recipes/digits-ppf3.json (calibrated conversions, 300 steps each)"
"$bin/ppfinetune" --recipe recipes/digits-ppf2.json --out "$out/finetune" --force
"$bin/ppfinetune" --recipe recipes/digits-ppf3.json --out "$out/finetune-ppf3" --force

echo "== 4. sample digits from the source SiT and from the fine-tuned PPFlow model (same noise, no guidance)"
"$bin/ppsample" examples/digits/digits-sit.zip --per-class 8 --steps 50 --png "$out/sit-samples.png" --out "$out/sit-samples.safetensors" --force
"$bin/ppsample" "$out/finetune/final" --per-class 8 --steps 50 --cfg-scales 1 --png "$out/ppflow-samples.png" --out "$out/ppflow-samples.safetensors" --force
"$bin/ppsample" "$out/finetune-ppf3/final" --per-class 8 --steps 50 --cfg-scales 1 --png "$out/ppflow3-samples.png" --force

echo
echo "== 5. score samples with the toolkit's own metric (docs/QUALITY.md): 200 unguided samples each, 50 Euler steps"
# Fewer samples than QUALITY.md's 1000 x several seeds, so the example stays short: expect larger FDs.
eval_row() {  # NAME MODEL
  "$bin/ppsample" eval "$2" --data examples/digits/digits.safetensors --count 200 --seeds 0 --json > "$out/eval-$1.json"
  python3 - "$1" "$out/eval-$1.json" <<'PY' 2>/dev/null || echo "$1: see $out/eval-$1.json"
import json, sys
r = json.load(open(sys.argv[2]))["runs"][0]
print("%-22s %8.2f %9.3f %12.3f %10.1f" % (sys.argv[1], r["fd"], r["accuracy"], r["flops_per_image"] / 1e9, r["seconds_per_image"] * 1000))
PY
}
printf "%-22s %8s %9s %12s %10s\n" model FD accuracy "GFLOP/image" "ms/image"
eval_row source-sit examples/digits/digits-sit.zip
eval_row untuned-ppf2 "$out/digits-sit-ppf2-calibrated"
eval_row finetuned-ppf2 "$out/finetune/final"
eval_row finetuned-ppf3 "$out/finetune-ppf3/final"
echo
echo "done:"
echo "  converted models:    $out/digits-sit-ppf2/ and $out/digits-sit-ppf2-calibrated/ (reports: $out/convert-*.json)"
echo "  fine-tuned models:   $out/finetune/final/ (PPFlow-2; metrics: $out/finetune/metrics.jsonl, loss curves: $out/finetune/loss-level-*.svg)"
echo "                       and $out/finetune-ppf3/final/ (PPFlow-3)"
echo "  quality:             $out/eval-*.json (the table above; docs/QUALITY.md has the full measurements)"
echo "  samples:             $out/sit-samples.png (source SiT) next to $out/ppflow-samples.png (fine-tuned PPFlow-2)"
echo "                       and $out/ppflow3-samples.png (fine-tuned PPFlow-3)"

