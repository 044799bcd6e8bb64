#!/usr/bin/env bash
# The GPU check: does the CUDA training path run, and how fast, on one GPU. Eight parts, each under its own
# time limit; every part writes its rows (a shape, a run) as it measures them, and the report
# (OUTDIR/gpu_check.md and gpu_check.json) is rebuilt after each part, so a part stopped at its limit still
# contributes what it finished:
#   syncs    a few training steps with host syncs forbidden (CUDA's sync debug mode), bf16 and fp16 (CPU: bf16);
#   profile  SlowFast-R50 8x8 forward+backward (bf16, channels-last, training BN groups) at every shape of
#            its multigrid schedule, the full shape first (mgvideo profile --json, one row per line);
#            profile_cf the same in the default memory format;
#   compile  the same model under torch.compile (as train.compile) on a few shapes: compile seconds per
#            shape and ms/iteration compiled against eager;
#   shapes   the same model trained briefly on a synthetic set, every shape with the real loader: ms/iteration
#            and data wait per shape (configs/gpu/shapes.yaml; rows from its metrics.jsonl);
#   loader   loader clips/s at the coarsest shape with all cores;
#   tta      time to accuracy, baseline against multigrid, crop 112 (configs/gpu/bench.yaml, mgvideo bench tta);
#   vit      the same for a video transformer, VideoMAE ViT-S/16 at 16 x 112 with AdamW and no BN
#            (configs/synthetic/bench_vit.yaml; the schedule rounds shapes to the tubelet and patch).
# tta and vit are summarised from tta.json, or, for a part stopped early, from each run's metrics.jsonl.
# The limits total 480 s, leaving two minutes of a 10-minute command for set-up.
#
#   scripts/gpu_check.sh OUTDIR            the full check (needs CUDA)
#   scripts/gpu_check.sh --smoke OUTDIR    the same pipeline on the CPU at toy size (make test runs it)
#
# GPU_CHECK_LIMITS="s1 ... s8" sets the eight part limits in seconds, in the order above (syncs profile
# profile_cf compile shapes loader tta vit), for the full check and --smoke alike; GPU_CHECK_ITERS sets the
# profile parts' timed iterations per shape. PYTHON=/path/to/python chooses the interpreter. Wheels in
# ./wheels (e.g. PyAV for a machine without network) are installed first, without network, into
# OUTDIR/site. See README, "Checking a GPU machine".
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
  AMPS=bf16
  export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
  # Toy sizes: the tiny recipe's model, shapes and data (runs/data/synthetic_small, made if absent).
  PROFILE=(r3d_tiny --config configs/synthetic/tiny.yaml --batch-size 2 --iters "${GPU_CHECK_ITERS:-1}"
           --num-classes 20)
  COMPILE=(r3d_tiny --config configs/synthetic/tiny.yaml --batch-size 2 --shapes 2 --num-classes 20
           --backend aot_eager)  # the compile pipeline without Inductor's code generation, which is slow here
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
  # Safety nets: an idle 2-core CPU takes about a quarter of each.
  read -r -a LIMITS <<< "${GPU_CHECK_LIMITS:-120 120 120 180 180 90 240 240}"
else
  DEVICE=cuda
  AMPS=bf16,fp16
  PROFILE=(slowfast_r50_8x8 --config configs/kinetics/slowfast_r50_8x8_multigrid.yaml --batch-size 8
           --iters "${GPU_CHECK_ITERS:-5}" --num-classes 400)
  COMPILE=(slowfast_r50_8x8 --config configs/kinetics/slowfast_r50_8x8_multigrid.yaml --batch-size 8
           --shapes 3 --num-classes 400)
  SHAPES=(configs/gpu/shapes.yaml)
  LOADER=(configs/gpu/shapes.yaml --clips 1024)
  TTA=()
  SYNCS=(configs/synthetic/tiny.yaml data.workers=4)
  # VideoMAE ViT-S/16 at 16 x 112 (8 x 7 x 7 tokens): frames round to the tubelet (2), crops to the patch (16).
  VIT=(train.amp=bf16 train.pin_memory=true data.cache=none data.workers=-1 data.root=runs/data/synthetic
       model.name=videomae_vit_s16 'model.options={frames: 16, crop: 112, drop_path: 0.1}' data.frames=16
       data.crop=112 solver.batch_size=32 'solver.steps=[0, 4, 5]' solver.max_epoch=6 solver.warmup_epochs=0.5
       train.eval_batch_size=64 bench.eval_points=10)
  # Seconds per part: syncs, profile, profile_cf, compile, shapes, loader, tta, vit (480 s, plus set-up).
  read -r -a LIMITS <<< "${GPU_CHECK_LIMITS:-30 45 30 60 80 25 150 60}"
fi
if (( ${#LIMITS[@]} != 8 )); then
  echo "gpu_check: GPU_CHECK_LIMITS needs 8 numbers (syncs profile profile_cf compile shapes loader tta vit)" >&2
  exit 2
fi

# Fail fast, before generating data or any GPU work, when this interpreter or machine cannot run the check:
# every runtime dependency imports, /dev/shm (the loader workers' shared memory) and the disk have room.
"$PYTHON" - "$DEVICE" "$OUT" <<'PY'
import importlib, json, os, shutil, sys
device, out = sys.argv[1], sys.argv[2]
versions = {}
for name in ("torch", "numpy", "av", "yaml", "tqdm", "matplotlib", "safetensors"):
    try:
        versions[name] = getattr(importlib.import_module(name), "__version__", "?")
    except ImportError as err:
        sys.exit(f"gpu_check: cannot import {name} ({err}); bring the wheel (README: Checking a GPU machine) "
                 "or set PYTHON=...")
print("gpu_check: imports " + ", ".join(f"{k} {v}" for k, v in versions.items()))
import torch
if device == "cuda" and not torch.cuda.is_available():
    sys.exit(f"gpu_check: torch {torch.__version__} sees no CUDA device (CUDA build: {torch.version.cuda}); "
             "run on a GPU machine with a CUDA build of torch, set PYTHON=..., or use --smoke")
def free_gb(path):
    return shutil.disk_usage(path).free / 2**30 if os.path.exists(path) else 0.0
shm, disk = free_gb("/dev/shm"), free_gb(out)
print(f"gpu_check: /dev/shm {shm:.1f} GB free" + ("" if shm >= 1 else
      " (under 1 GB: loader workers may fail; docker: --shm-size=8g)"))
print(f"gpu_check: disk {disk:.1f} GB free at {out}" + ("" if disk >= 5 else " (under 5 GB: data may not fit)"))
if shm < 0.25 or disk < 1:
    sys.exit("gpu_check: not enough /dev/shm or disk to run the check")
env = {"device": torch.cuda.get_device_name(0) if device == "cuda" else "cpu", "torch": torch.__version__,
       "cuda": torch.version.cuda, "av": versions["av"], "cores": os.cpu_count(),
       "python": sys.version.split()[0], "shm_gb": round(shm, 1), "disk_gb": round(disk, 1)}
json.dump(env, open(os.path.join(out, "env.json"), "w"))
print("gpu_check:", ", ".join(f"{k} {v}" for k, v in env.items()))
PY

# The synthetic sets (the default one for the loader and vit parts, the bench one with 2,000 validation
# clips for tta, a small one for shapes) are generated in the background while the GPU-bound parts run,
# and waited for before the parts that read them: at the lowest priority, one thread per process, and the
# generator's own two worker processes, so that the timed parts keep the cores they need.
PREPARE=""
if (( ! SMOKE )); then
  (
    export OMP_NUM_THREADS=1
    renice -n 19 "$BASHPID" >/dev/null 2>&1 || true
    [[ -f runs/data/synthetic/meta.json ]] || "$PYTHON" -m mgvideo data synth --out runs/data/synthetic
    [[ -f runs/data/synthetic_bench/meta.json ]] ||
      "$PYTHON" -m mgvideo data synth --out runs/data/synthetic_bench --size bench
    "$PYTHON" scripts/gpu_check.py prepare configs/gpu/shapes.yaml
  ) > "$OUT/prepare.log" 2>&1 &
  PREPARE=$!
fi
prepared() { if [[ -n "$PREPARE" ]]; then wait "$PREPARE" || echo "gpu_check: data generation failed"; fi; }

report() { "$PYTHON" scripts/gpu_check.py report "$OUT" || true; }
FAILED=()
# part NAME SECONDS COMMAND...: run one part under its limit (SIGINT, then SIGKILL 10 s later); a failure or
# timeout is noted, not fatal, and the report is rebuilt from whatever rows the part has written.
part() {
  local name=$1 limit=$2; shift 2
  echo "gpu_check: part $name (limit ${limit}s)"
  local started=$SECONDS status=0
  timeout --signal=INT --kill-after=10 "$limit" "$@" > "$OUT/$name.log" 2>&1 || status=$?
  echo "gpu_check: part $name ended with status $status after $((SECONDS - started))s (log: $OUT/$name.log)"
  echo "{\"part\": \"$name\", \"status\": $status, \"seconds\": $((SECONDS - started)), \"limit\": $limit}" \
    >> "$OUT/parts.jsonl"
  if (( status != 0 )); then
    FAILED+=("$name")
    tail -n 5 "$OUT/$name.log" | grep -v -E 'it/s\]|s/it\]' || true
  fi
  report
}

rm -f "$OUT"/parts.jsonl "$OUT"/syncs.jsonl "$OUT"/profile*.jsonl "$OUT"/compile.jsonl
# mgvideo profile's rows, one JSON object per line as each shape is measured: bash -c CMD PYTHON FILE ARGS...
# exec: the time limit's SIGINT must reach Python itself, not a shell waiting on it.
TO_JSONL='exec "$0" -m mgvideo profile "${@:2}" > "$1"'
PROFILE+=(--device "$DEVICE" --amp bf16 --json)
part syncs "${LIMITS[0]}" "$PYTHON" scripts/gpu_check.py syncs --amp "$AMPS" --out "$OUT/syncs.jsonl" \
  "${SYNCS[@]}" train.device="$DEVICE"
part profile "${LIMITS[1]}" bash -c "$TO_JSONL" "$PYTHON" "$OUT/profile.jsonl" "${PROFILE[@]}" --channels-last
part profile_cf "${LIMITS[2]}" bash -c "$TO_JSONL" "$PYTHON" "$OUT/profile_cf.jsonl" "${PROFILE[@]}"
part compile "${LIMITS[3]}" "$PYTHON" scripts/gpu_check.py compile "${COMPILE[@]}" --device "$DEVICE" \
  --out "$OUT/compile.jsonl"
prepared
rm -rf "$OUT/shapes"  # a fresh run, never a resumed one
part shapes "${LIMITS[4]}" "$PYTHON" -m mgvideo train "${SHAPES[@]}" --out "$OUT/shapes" \
  train.device="$DEVICE" train.amp=bf16
part loader "${LIMITS[5]}" "$PYTHON" scripts/gpu_check.py loader "${LOADER[@]}" "$OUT/loader.json"
rm -rf "$OUT/tta" "$OUT/vit" "$OUT/tta.json" "$OUT/vit.json"
part tta "${LIMITS[6]}" "$PYTHON" -m mgvideo bench tta --config configs/gpu/bench.yaml --seeds 1 \
  --out "$OUT/tta" --json "$OUT/tta.json" train.device="$DEVICE" "${TTA[@]}"
part vit "${LIMITS[7]}" "$PYTHON" -m mgvideo bench tta --config configs/synthetic/bench_vit.yaml --seeds 1 \
  --variants baseline,multigrid --out "$OUT/vit" --json "$OUT/vit.json" train.device="$DEVICE" "${VIT[@]}"
echo "gpu_check: done; see $OUT/gpu_check.md"
if (( ${#FAILED[@]} )); then
  echo "gpu_check: failed or timed out: ${FAILED[*]}" >&2
  exit 1
fi
