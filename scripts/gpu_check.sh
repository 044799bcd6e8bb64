#!/usr/bin/env bash
# Short time-to-accuracy check on one CUDA GPU: baseline vs multigrid (long + short cycle), SlowFast-R50
# 8x8 (fast pathway 32 frames, here at crop 112) with bf16 AMP on the synthetic dataset, one seed, with the
# benchmark's protocol: evaluation at evenly spaced points of each run's schedule, off the training clock,
# on the bench set's 2,000 validation clips.
# Writes tta.md, tta.json and tta.png (and the run folders) to OUTDIR. Meant to finish in under 8 minutes
# on one H100-class GPU, data generation included.
#
#   scripts/gpu_check.sh OUTDIR            (PYTHON=/path/to/python to choose the interpreter)
set -euo pipefail

if [[ $# -ne 1 ]]; then
  echo "usage: scripts/gpu_check.sh OUTDIR" >&2
  exit 2
fi
OUT=$1
cd "$(dirname "$0")/.."
if [[ -z "${PYTHON:-}" ]]; then
  if [[ -x .venv/bin/python ]]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi

# Fail fast, before generating data, when this interpreter has no CUDA (e.g. the CPU-only dev venv).
"$PYTHON" - <<'PY'
import sys
try:
    import torch
except ImportError:
    sys.exit("gpu_check: torch is not importable by this interpreter; set PYTHON=...")
if not torch.cuda.is_available():
    sys.exit(f"gpu_check: torch {torch.__version__} sees no CUDA device (CUDA build: {torch.version.cuda}); "
             "run on a GPU machine with a CUDA build of torch, or set PYTHON=...")
print(f"gpu_check: {torch.cuda.get_device_name(0)}, torch {torch.__version__}, CUDA {torch.version.cuda}")
PY

WORKERS=$(( $(nproc) > 10 ? 8 : $(nproc) - 2 ))
(( WORKERS < 1 )) && WORKERS=1
mkdir -p "$OUT"

# The frame cache is off: with many workers each would hold its own copy of every video.
timeout --signal=INT 470 "$PYTHON" -m mgvideo bench tta --config configs/synthetic/bench.yaml \
  --seeds 1 --variants baseline,multigrid --out "$OUT" --json "$OUT/tta.json" \
  data.cache=none bench.eval_points=10 \
  train.device=cuda train.amp=bf16 train.pin_memory=true train.channels_last=true \
  data.workers="$WORKERS" \
  model.name=slowfast_r50_8x8 'model.options={}' model.bn_base_size=8 \
  data.frames=32 data.crop=112 data.sampling_rate=2 \
  solver.batch_size=32 solver.base_lr=0.1 'solver.steps=[0, 3, 5]' solver.max_epoch=6 \
  solver.warmup_epochs=0.5 train.precise_bn_batches=10 train.eval_batch_size=64 \
  2>&1 | tee "$OUT/gpu_check.log" | { grep -v --line-buffered -E 'it/s\]|s/it\]' || true; }

echo "gpu_check: wrote $OUT/tta.md, $OUT/tta.json, $OUT/tta.png"
