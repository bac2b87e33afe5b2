#!/usr/bin/env bash
# Benchmark: steps/s of a PPFlow-B-2 fine-tuning recipe on random 32x32x4 latents, the way a user would
# run it: a random SiT-B/2 (official key names) -> `ppconvert from-dit` -> `ppfinetune validate --timed-steps`.
#
#   scripts/bench-finetune-b2.sh [--dir DIR] [--threads N] [--steps N]
#
# Needs python3 with numpy (for the random weights and latents only; not used by the toolkit). Writes about
# 1.1 GB into DIR (default /tmp/ppflow-bench-b2). PPFLOW_BIN=DIR uses binaries built elsewhere. Results go
# to docs/BENCHMARKS.md by hand.
set -euo pipefail
cd "$(dirname "$0")/.."
dir=/tmp/ppflow-bench-b2
threads=2
steps=3
while [ $# -gt 0 ]; do
  case "$1" in
    --dir) dir="$2"; shift 2 ;;
    --threads) threads="$2"; shift 2 ;;
    --steps) steps="$2"; shift 2 ;;
    -h|--help) sed -n '2,9p' "$0"; exit 0 ;;
    *) echo "bench-finetune-b2.sh: unknown argument $1" >&2; exit 64 ;;
  esac
done
mkdir -p "$dir"
if [ -n "${PPFLOW_BIN:-}" ]; then
  bin="$PPFLOW_BIN"                     # already built binaries (e.g. another --scratch-path)
else
  bin=$(scripts/build.sh)
fi

if [ ! -f "$dir/sit-b2.safetensors" ] || [ ! -f "$dir/latents.safetensors" ]; then
  python3 - "$dir" <<'EOF'
import json, struct, sys
import numpy as np

def save(path, tensors):
    header, offset, blobs = {}, 0, []
    for name, array in tensors.items():
        blob = np.ascontiguousarray(array).tobytes()
        dtype = {np.float32: "F32", np.int64: "I64"}[array.dtype.type]
        header[name] = {"dtype": dtype, "shape": list(array.shape), "data_offsets": [offset, offset + len(blob)]}
        offset += len(blob)
        blobs.append(blob)
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    with open(path + ".tmp", "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text)
        for blob in blobs:
            f.write(blob)
    import os; os.replace(path + ".tmp", path)

folder = sys.argv[1]
rng = np.random.default_rng(0)
D, depth, C, P, classes, tokens = 768, 12, 4, 2, 1000, 256
def w(*shape): return (rng.standard_normal(shape) * 0.02).astype(np.float32)
t = {"x_embedder.proj.weight": w(D, C, P, P), "x_embedder.proj.bias": w(D),
     "t_embedder.mlp.0.weight": w(D, 256), "t_embedder.mlp.0.bias": w(D),
     "t_embedder.mlp.2.weight": w(D, D), "t_embedder.mlp.2.bias": w(D),
     "y_embedder.embedding_table.weight": w(classes + 1, D), "pos_embed": w(1, tokens, D)}
for i in range(depth):
    b = f"blocks.{i}."
    t.update({b + "attn.qkv.weight": w(3 * D, D), b + "attn.qkv.bias": w(3 * D),
              b + "attn.proj.weight": w(D, D), b + "attn.proj.bias": w(D),
              b + "mlp.fc1.weight": w(4 * D, D), b + "mlp.fc1.bias": w(4 * D),
              b + "mlp.fc2.weight": w(D, 4 * D), b + "mlp.fc2.bias": w(D),
              b + "adaLN_modulation.1.weight": w(6 * D, D), b + "adaLN_modulation.1.bias": w(6 * D)})
t.update({"final_layer.linear.weight": w(P * P * 2 * C, D), "final_layer.linear.bias": w(P * P * 2 * C),
          "final_layer.adaLN_modulation.1.weight": w(2 * D, D), "final_layer.adaLN_modulation.1.bias": w(2 * D)})
save(f"{folder}/sit-b2.safetensors", t)
save(f"{folder}/latents.safetensors", {"latents": rng.standard_normal((512, C, 32, 32)).astype(np.float32),
                                       "labels": rng.integers(0, classes, 512).astype(np.int64)})
EOF
fi

"$bin/ppconvert" from-dit "$dir/sit-b2.safetensors" --levels 2 --heads 12 --objective velocity --no-verify --out "$dir/ppflow-b2" >/dev/null
cat > "$dir/recipe.json" <<EOF
{ "name": "ppflow-b2-random", "start": { "checkpoint": "ppflow-b2" },
  "data": { "train": ["latents.safetensors"], "validation_fraction": 0.02 },
  "pyramid": { "shares": [0.5, 0.5] }, "batch_size": 8, "steps": 20,
  "learning_rate": { "peak": 1e-4 }, "ema_decay": 0.9999, "label_dropout": 0.1, "output": "run" }
EOF
echo "PPFlow-B-2 recipe, batch 8 (4 coarse + 4 full), $threads thread(s):"
/usr/bin/time -f "peak RSS %M KB, wall %e s" "$bin/ppfinetune" validate --recipe "$dir/recipe.json" --threads "$threads" --timed-steps "$steps"
