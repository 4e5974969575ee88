#!/usr/bin/env bash
# GPU check for medclip training (one GPU, about 5 minutes, offline). Run from the repository root:
#   bash scripts/gpu_check.sh [OUT_DIR]            (PYTHON=... picks the interpreter; default python3)
# 1. the tests marked `gpu` (bf16 / fp16 autocast, gradient checkpointing, gradient cache on CUDA);
# 2. a short bf16 `medclip train` run of ViT-B/16 + a BERT-base sized text tower on a synthetic archive: pairs/s
#    and peak memory from its metrics.jsonl;
# 3. scripts/bench_train.py on the same towers: medclip vs open_clip pairs/s, MFU (fraction of the bf16 matmul peak
#    measured in the same run), CUDA peak memory, host syncs and dispatched ops per step, how busy the GPU is in a
#    profiled step (its top kernels go to OUT/profile.txt), and the gradient cache's memory at a 4,096 batch; then
#    medclip with its packed text attention as FlashAttention's variable-length kernel (model.text.varlen_attention)
#    and as one padded block instead of 4 length buckets (at batch 128 a GPU step is bound by how many kernels the
#    host issues, not by FLOPs: see docs/training.md).
# The BERT-base tower is randomly initialised (BertConfig defaults: 12 layers, 768 wide; the MiniLM uncased
# tokenizer has the same vocabulary), so nothing is downloaded; throughput does not depend on the weights.
# A failing section is reported and the next one still runs; the exit status is 1 if any section failed.
set -uo pipefail
OUT=${1:-/tmp/medclip_gpu_check}
PY=${PYTHON:-python3}
mkdir -p "$OUT"
rm -f "$OUT"/profile*.txt  # bench_train.py --profile appends
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
export PYTHONPATH="${PYTHONPATH:-}:$(pwd)"
FAILED=()
step() { printf '\n=== %s (%ss elapsed) ===\n' "$1" "$SECONDS"; }
check() {  # check NAME COMMAND...: run, and record a failure without stopping
  local name=$1
  shift
  "$@" || { echo "!!! $name failed (exit $?)"; FAILED+=("$name"); }
}

step "device"
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv,noheader || true
"$PY" -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; print(torch.__version__, torch.version.cuda, torch.cuda.get_device_name())" || exit 1

step "BERT-base sized text tower (random init) -> $OUT/bert_base"
"$PY" - "$OUT/bert_base" <<'PYEOF' || exit 1
import sys
from transformers import AutoTokenizer, BertConfig, BertModel
from medclip.text.tokenizer import resolve_text_model
BertModel(BertConfig(), add_pooling_layer=False).save_pretrained(sys.argv[1])
AutoTokenizer.from_pretrained(resolve_text_model("minilm")).save_pretrained(sys.argv[1])
PYEOF

step "pytest -m gpu"
check "pytest -m gpu" timeout 150 "$PY" -m pytest -q -m gpu tests/train/test_gpu.py -p no:cacheprovider

step "medclip train: ViT-B/16 + BERT-base, bf16, 30 steps of 128 pairs"
train_run() {
  "$PY" -m medclip.cli --quiet synth cxr "$OUT/archive" --studies 160 --seed 0 > /dev/null &&
    "$PY" -m medclip.cli --quiet manifest "$OUT/archive" --layout dicom --out "$OUT/manifest" --salt gpu-check > /dev/null &&
    timeout 150 "$PY" -m medclip.cli --quiet train cxr_vitb16_clinicalbert "data.manifest=$OUT/manifest" \
      "train.out_dir=$OUT/run" "model.text.name=$OUT/bert_base" train.max_steps=30 train.batch_size=128 \
      train.log_every=5 train.checkpoint_every=30 train.device=cuda data.num_workers=4 &&
    "$PY" - "$OUT/run/metrics.jsonl" <<'PYEOF'
import json, sys
records = [json.loads(line) for line in open(sys.argv[1])]
last = records[-1]
rates = [r["pairs_per_s"] for r in records[1:]] or [last["pairs_per_s"]]
print(json.dumps({"steps": last["step"], "loss": round(last["loss"], 4), "pairs_per_s": round(sorted(rates)[len(rates) // 2], 1),
                  "peak_mem_gib": round(last.get("mem_gb", 0.0), 2)}))
PYEOF
}
check "medclip train" train_run

step "bench_train.py: medclip vs open_clip on ViT-B/16 + BERT-base, bf16"
if "$PY" -c "import open_clip" 2>/dev/null; then
  check "bench_train.py" timeout 240 "$PY" scripts/bench_train.py --device cuda --image-tower vit_base_patch16_224 \
    --text-tower "$OUT/bert_base" --batch 128 --precisions bf16 --setups trainable --steps 10 --rounds 3 \
    --warmup 3 --memory-batch 4096 --memory-micro-batch 512 --out "$OUT/bench_train.json" \
    --profile "$OUT/profile.txt"
  ab() {  # ab NAME FLAG: the bench again (fewer rounds, no memory trace) with one medclip option changed
    step "bench_train.py A/B: $1 ($2)"
    check "bench_train.py $2" timeout 120 "$PY" scripts/bench_train.py --device cuda --image-tower vit_base_patch16_224 \
      --text-tower "$OUT/bert_base" --batch 128 --precisions bf16 --setups trainable --steps 8 --rounds 2 --warmup 2 \
      --memory-batch 0 "$2" --out "$OUT/bench_train_$1.json" --profile "$OUT/profile_$1.txt"
  }
  ab varlen --varlen-attention  # FlashAttention's variable-length kernel: one attention call per layer, no padding
  ab buckets1 --length-buckets=1  # the packed attention as one padded block
else
  echo "open_clip is not installed: pip install -e '.[bench]' to compare; skipping"
fi
step "done"
if ((${#FAILED[@]})); then
  echo "failed sections: ${FAILED[*]}"
  exit 1
fi
