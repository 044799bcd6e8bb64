#!/usr/bin/env bash
# The GPU check: does the CUDA training path run, and how fast, on one GPU. Seven parts, each under its own
# time limit, each followed by the report (OUTDIR/gpu_check.md and gpu_check.json), so a timeout still
# leaves the finished results:
#   syncs    a few training steps with host syncs forbidden (CUDA's sync debug mode): the step must not wait;
#   profile  SlowFast-R50 8x8 forward+backward (bf16, channels-last, training BN groups) at every shape of
#            its multigrid schedule, against the full shape (mgvideo profile); profile_cf the same in the
#            default memory format, which shows what channels-last (with sub-batch BN's regrouping) costs;
#   shapes   the same model trained briefly on a synthetic set, every shape with the real loader: ms/iteration
#            and data wait per shape (configs/gpu/shapes.yaml);
#   loader   loader clips/s at the coarsest shape with all cores;
#   tta      time to accuracy, baseline against multigrid, crop 112 (configs/gpu/bench.yaml, mgvideo bench tta);
#   vit      the same for a video transformer, VideoMAE ViT-S/16 at 16 x 112 with AdamW and no BN
#            (configs/synthetic/bench_vit.yaml; the schedule rounds shapes to the tubelet and patch).
# The tta and vit parts follow the benchmark's protocol (issue 12): evaluations at evenly spaced points of
# each run's own schedule, off the training clock. The full check fits one 10-minute command on an H100-class machine, set-up included.
#
#   scripts/gpu_check.sh OUTDIR            the full check (needs CUDA)
#   scripts/gpu_check.sh --smoke OUTDIR    the same pipeline on the CPU at toy size (make test runs it)
#
# PYTHON=/path/to/python chooses the interpreter. Wheels in ./wheels (e.g. PyAV for a machine without
# network) are installed first, without network, into OUTDIR/site. See README, "Checking a GPU machine".
set -euo pipefail

SMOKE=0
if [[ "${1:-}" == "--smoke" ]]; then SMOKE=1; shift; fi
if [[ $# -ne 1 ]]; then
  echo "usage: scripts/gpu_check.sh [--smoke] OUTDIR" >&2
  exit 2
fi
mkdir -p "$1"
OUT=$(cd "$1" && pwd)
cd "$(dirname "$0")/.."
REPO=$(pwd)
if [[ -z "${PYTHON:-}" ]]; then
  if [[ -x .venv/bin/python ]]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
if compgen -G "wheels/*.whl" >/dev/null; then
  "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --target "$OUT/site" wheels/*.whl
  export PYTHONPATH="$PYTHONPATH:$OUT/site"
fi

if (( SMOKE )); then
  DEVICE=cpu
  export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
  # Toy sizes: the tiny recipe's model, shapes and data (runs/data/synthetic_small, made if absent).
  PROFILE=(r3d_tiny --config configs/synthetic/tiny.yaml --batch-size 2 --iters 1 --num-classes 20)
  SHAPES=(configs/synthetic/tiny.yaml train.log_period=1 data.cache=none data.workers=1)
  LOADER=(configs/synthetic/tiny.yaml --workers 1 --clips 16)
  TTA=(model.name=c3d_tiny 'model.options={}' data.root=runs/data/synthetic_small data.synthetic_size=small
       data.frames=8 data.crop=32 solver.batch_size=2 solver.base_lr=0.05 'solver.steps=[0, 2]'
       solver.max_epoch=3 solver.warmup_epochs=0.5 train.precise_bn_batches=2 train.precise_bn_clips=0
       train.eval_batch_size=8 bench.eval_points=4 data.workers=0 train.log_period=5)
  SYNCS=(configs/synthetic/tiny.yaml)
  VIT=(data.root=runs/data/synthetic_small data.synthetic_size=small data.cache=none data.frames=8 data.crop=32
       'model.options={embed_dim: 32, depth: 2, num_heads: 2, frames: 8, crop: 32}' solver.batch_size=2
       'solver.steps=[0, 2]' solver.max_epoch=3 solver.warmup_epochs=0.5 bench.eval_points=4
       data.workers=0 train.log_period=5)
  LIMITS=(120 120 120 180 90 240 240)  # safety nets: an idle 2-core CPU takes about a quarter of each
else
  DEVICE=cuda
  PROFILE=(slowfast_r50_8x8 --config configs/kinetics/slowfast_r50_8x8_multigrid.yaml --batch-size 8
           --iters 5 --num-classes 400)
  SHAPES=(configs/gpu/shapes.yaml)
  LOADER=(configs/gpu/shapes.yaml --clips 1024)
  TTA=()
  SYNCS=(configs/synthetic/tiny.yaml data.workers=4)
  # VideoMAE ViT-S/16 at 16 x 112 (8 x 7 x 7 tokens): frames round to the tubelet (2), crops to the patch (16).
  VIT=(train.amp=bf16 train.pin_memory=true data.cache=none data.workers=-1 data.root=runs/data/synthetic
       model.name=videomae_vit_s16 'model.options={frames: 16, crop: 112, drop_path: 0.1}' data.frames=16
       data.crop=112 solver.batch_size=32 'solver.steps=[0, 4, 5]' solver.max_epoch=6 solver.warmup_epochs=0.5
       train.eval_batch_size=64 bench.eval_points=10)
  # Seconds per part: syncs, profile, profile_cf, shapes, loader, tta, vit (9.6 minutes, plus set-up).
  read -r -a LIMITS <<< "${GPU_CHECK_LIMITS:-30 55 40 105 35 220 90}"
fi

# Fail fast, before generating data, when this interpreter cannot run the check.
"$PYTHON" - "$DEVICE" "$OUT/env.json" <<'PY'
import json, os, sys
device, out = sys.argv[1], sys.argv[2]
try:
    import av, torch
except ImportError as err:
    sys.exit(f"gpu_check: {err}; bring the wheel (README: Checking a GPU machine) or set PYTHON=...")
if device == "cuda" and not torch.cuda.is_available():
    sys.exit(f"gpu_check: torch {torch.__version__} sees no CUDA device (CUDA build: {torch.version.cuda}); "
             "run on a GPU machine with a CUDA build of torch, set PYTHON=..., or use --smoke")
env = {"device": torch.cuda.get_device_name(0) if device == "cuda" else "cpu", "torch": torch.__version__,
       "cuda": torch.version.cuda, "av": av.__version__, "cores": os.cpu_count(), "python": sys.version.split()[0]}
json.dump(env, open(out, "w"))
print("gpu_check:", ", ".join(f"{k} {v}" for k, v in env.items()))
PY

# The synthetic sets (the default one for the loader and vit parts, the bench one with 2,000 validation
# clips for tta, a small one for shapes) are generated in the background while the GPU-bound parts run,
# and waited for before the parts that read them.
PREPARE=""
if (( ! SMOKE )); then
  {
    [[ -f runs/data/synthetic/meta.json ]] || "$PYTHON" -m mgvideo data synth --out runs/data/synthetic
    [[ -f runs/data/synthetic_bench/meta.json ]] ||
      "$PYTHON" -m mgvideo data synth --out runs/data/synthetic_bench --size bench
    "$PYTHON" scripts/gpu_check.py prepare configs/gpu/shapes.yaml
  } > "$OUT/prepare.log" 2>&1 &
  PREPARE=$!
fi
prepared() { if [[ -n "$PREPARE" ]]; then wait "$PREPARE" || echo "gpu_check: data generation failed"; fi; }

report() { "$PYTHON" scripts/gpu_check.py report "$OUT" || true; }
FAILED=()
# part NAME SECONDS COMMAND...: run one part under its limit; a failure or timeout is noted, not fatal.
part() {
  local name=$1 limit=$2; shift 2
  echo "gpu_check: part $name (limit ${limit}s)"
  local started=$SECONDS status=0
  timeout --signal=INT --kill-after=15 "$limit" "$@" > "$OUT/$name.log" 2>&1 || status=$?
  echo "gpu_check: part $name ended with status $status after $((SECONDS - started))s (log: $OUT/$name.log)"
  if (( status != 0 )); then
    FAILED+=("$name")
    tail -n 5 "$OUT/$name.log" | grep -v -E 'it/s\]|s/it\]' || true
  fi
  report
}

# mgvideo profile's JSON rows into FILE (renamed there once complete): bash -c CMD PYTHON FILE ARGS...
TO_JSON='"$0" -m mgvideo profile "${@:2}" > "$1.tmp" && mv "$1.tmp" "$1"'
PROFILE+=(--device "$DEVICE" --amp bf16 --json)
part syncs "${LIMITS[0]}" "$PYTHON" scripts/gpu_check.py syncs "${SYNCS[@]}" "$OUT/syncs.json" \
  train.device="$DEVICE" train.amp=bf16
part profile "${LIMITS[1]}" bash -c "$TO_JSON" "$PYTHON" "$OUT/profile.json" "${PROFILE[@]}" --channels-last
part profile_cf "${LIMITS[2]}" bash -c "$TO_JSON" "$PYTHON" "$OUT/profile_cf.json" "${PROFILE[@]}"
prepared
rm -rf "$OUT/shapes"  # a fresh run, never a resumed one
part shapes "${LIMITS[3]}" "$PYTHON" -m mgvideo train "${SHAPES[@]}" --out "$OUT/shapes" \
  train.device="$DEVICE" train.amp=bf16
part loader "${LIMITS[4]}" "$PYTHON" scripts/gpu_check.py loader "${LOADER[@]}" "$OUT/loader.json"
part tta "${LIMITS[5]}" "$PYTHON" -m mgvideo bench tta --config configs/gpu/bench.yaml --seeds 1 \
  --out "$OUT/tta" --json "$OUT/tta.json" train.device="$DEVICE" "${TTA[@]}"
part vit "${LIMITS[6]}" "$PYTHON" -m mgvideo bench tta --config configs/synthetic/bench_vit.yaml --seeds 1 \
  --variants baseline,multigrid --out "$OUT/vit" --json "$OUT/vit.json" train.device="$DEVICE" "${VIT[@]}"
echo "gpu_check: done; see $OUT/gpu_check.md"
if (( ${#FAILED[@]} )); then
  echo "gpu_check: failed or timed out: ${FAILED[*]}" >&2
  exit 1
fi
