#!/usr/bin/env bash
# The GPU check: does the CUDA training path run, and how fast, on one GPU, in one 10-minute command that
# leaves 90 s to spare (a GPU is lent rarely, for 15 minutes with its start-up). The plan is PLAN in
# scripts/gpu_check.py (`scripts/gpu_check.py plan --markdown` prints it): the parts in order of value, so
# that a run cut short has brought back the figures that matter most, each with its limit, the synthetic set
# it reads and its headline figure, which comes back within the limit:
#   syncs      a few training steps with host syncs forbidden (CUDA's sync debug mode), bf16 and fp16 (CPU: bf16);
#   profile    SlowFast-R50 8x8 forward+backward (bf16, channels-last, training BN groups) at every shape of
#              its multigrid schedule, the full shape first (mgvideo profile --json, one row per line);
#   shapes     the same model trained briefly on a synthetic set, every shape with the real loader: ms/iteration
#              and data wait per shape (configs/gpu/shapes.yaml; rows from its metrics.jsonl);
#   loader     loader clips/s at the coarsest shape with all cores;
#   tta        time to accuracy, baseline against multigrid, crop 112 (configs/gpu/bench.yaml, mgvideo bench tta);
#   compile    the same SlowFast under torch.compile (as train.compile) at the full shape: compile seconds and
#              ms/iteration compiled against eager (the eager row is written first);
#   vit        the same two arms for VideoMAE ViT-S/16 at 16 x 112 with AdamW and no BN (configs/gpu/bench_vit.yaml);
#   profile_cf profile in the default memory format, as many shapes as its limit allows.
# Every part writes its rows as it measures them, and the report (OUTDIR/gpu_check.md and gpu_check.json) is
# rebuilt after each part, so a part stopped at its limit still contributes what it finished; tta and vit are
# summarised from tta.json or, stopped early, from each run's metrics.jsonl. The synthetic sets are generated
# in the background, in the order the parts first need them, under their own limit; a part waits for its
# set. A part whose limit (plus its overhead) no longer fits in the budget is skipped and reported so.
#
#   scripts/gpu_check.sh OUTDIR            the full check (needs CUDA)
#   scripts/gpu_check.sh --smoke OUTDIR    the same plan on the CPU at toy size, every second x2 (make test)
#
# GPU_CHECK_LIMITS="s1 ... s8" sets the part limits in seconds, in plan order (syncs profile shapes loader tta
# compile vit profile_cf); GPU_CHECK_SCALE multiplies every planned second (limits, budget, overheads);
# GPU_CHECK_BUDGET sets the seconds after which no part runs; GPU_CHECK_ITERS the profile parts' timed
# iterations per shape. PYTHON=/path/to/python chooses the interpreter. Wheels in ./wheels (e.g. PyAV for a
# machine without network) are installed first, without network, into OUTDIR/site. See README, "Checking a
# GPU machine".
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
  MODE=(--smoke)
  export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
  # Toy sizes: the tiny recipe's model, shapes and data (runs/data/synthetic_small, made if absent).
  PROFILE=(r3d_tiny --config configs/synthetic/tiny.yaml --batch-size 2 --iters "${GPU_CHECK_ITERS:-1}"
           --num-classes 20)
  COMPILE=(r3d_tiny --config configs/synthetic/tiny.yaml --batch-size 2 --num-classes 20
           --backend aot_eager)  # the compile pipeline without Inductor's code generation, which is slow here
  SHAPES=(configs/synthetic/tiny.yaml train.log_period=1 data.cache=none data.workers=1)
  LOADER=(configs/synthetic/tiny.yaml --workers 1 --clips 16)
  TTA=(model.name=c3d_tiny 'model.options={}' data.root=runs/data/synthetic_small data.synthetic_size=small
       data.frames=8 data.crop=32 solver.batch_size=2 solver.base_lr=0.05 'solver.steps=[0, 2]'
       solver.max_epoch=3 solver.warmup_epochs=0.5 train.precise_bn_batches=2 train.precise_bn_clips=0
       train.eval_batch_size=8 bench.eval_points=4 data.workers=0 train.log_period=5)
  SYNCS=(configs/synthetic/tiny.yaml)
  VIT=(model.name=vit_tiny 'model.options={embed_dim: 32, depth: 2, num_heads: 2, frames: 8, crop: 32}'
       data.root=runs/data/synthetic_small data.synthetic_size=small data.frames=8 data.crop=32
       solver.batch_size=2 'solver.steps=[0, 2]' solver.max_epoch=3 train.eval_batch_size=8
       bench.eval_points=4 data.workers=0 train.log_period=5)
else
  DEVICE=cuda
  AMPS=bf16,fp16
  MODE=()
  PROFILE=(slowfast_r50_8x8 --config configs/kinetics/slowfast_r50_8x8_multigrid.yaml --batch-size 8
           --iters "${GPU_CHECK_ITERS:-5}" --num-classes 400)
  # One shape: a cold Inductor compile of SlowFast-R50 takes most of a minute (an estimate), per shape.
  COMPILE=(slowfast_r50_8x8 --config configs/kinetics/slowfast_r50_8x8_multigrid.yaml --batch-size 8
           --num-classes 400)
  SHAPES=(configs/gpu/shapes.yaml)
  LOADER=(configs/gpu/shapes.yaml --clips 1024)
  TTA=()
  SYNCS=(configs/synthetic/tiny.yaml data.workers=4)
  VIT=()
fi

# The plan, scaled for this run: budget, overhead and grace (seconds), the data generation's limit, and one
# `part NAME LIMIT DATA` line per part in order of value.
PLAN=$("$PYTHON" scripts/gpu_check.py plan "${MODE[@]}" --limits "${GPU_CHECK_LIMITS:-}" \
  --scale "${GPU_CHECK_SCALE:-0}" --budget "${GPU_CHECK_BUDGET:-0}") || exit 2
NAMES=() LIMITS=() NEEDS=()
while read -r key a b c; do
  case $key in
    part) NAMES+=("$a"); LIMITS+=("$b"); NEEDS+=("$c") ;;
    budget) BUDGET=$a ;;
    overhead) OVERHEAD=$a ;;
    grace) GRACE=$a ;;
    data) DATA_LIMIT=$a ;;
  esac
done <<< "$PLAN"

# Fail fast, before generating data or any GPU work, when this interpreter or machine cannot run the check:
# every runtime dependency imports, /dev/shm (the loader workers' shared memory) and the disk have room.
"$PYTHON" scripts/gpu_check.py precheck "$DEVICE" "$OUT"

rm -rf "$OUT"/{parts,data,syncs,profile,profile_cf,compile}.jsonl "$OUT"/{shapes,tta,vit} \
  "$OUT"/{loader,tta,vit}.json
# The synthetic sets, generated while the first (GPU-bound) parts run: in the order the parts first need
# them, each noted in data.jsonl when complete, at the lowest priority and one thread per process, under
# their own limit.
OMP_NUM_THREADS=1 nice -n 19 timeout --kill-after=5 "$DATA_LIMIT" \
  "$PYTHON" scripts/gpu_check.py prepare "$OUT" "${MODE[@]}" > "$OUT/prepare.log" 2>&1 &
PREPARE=$!
trap 'kill "$PREPARE" 2>/dev/null || true' EXIT  # timeout passes the signal on to the generator

fits() { (( BUDGET - SECONDS >= $1 + OVERHEAD )); }  # SECONDS: since this script started
# await_data SET LIMIT: wait until the synthetic set SET ('-': none) is complete, as long as a part of LIMIT
# seconds still fits; false if it did not come (the generator ended without it) or time ran out.
await_data() {
  [[ $1 == - ]] && return 0
  local ready="\"data\": \"$1\", \"ok\": true"
  until grep -q "$ready" "$OUT/data.jsonl" 2>/dev/null; do
    if ! kill -0 "$PREPARE" 2>/dev/null; then  # the generator has ended: its last line may be this set's
      grep -q "$ready" "$OUT/data.jsonl" 2>/dev/null
      return
    fi
    fits "$2" || return 1
    sleep 1
  done
}

report() { "$PYTHON" scripts/gpu_check.py report "$OUT" || true; }
# part NAME SECONDS COMMAND...: run one part under its limit (SIGINT, then SIGKILL GRACE s later); a failure
# or timeout is noted, not fatal, and the report is rebuilt from whatever rows the part has written.
part() {
  local name=$1 limit=$2; shift 2
  echo "gpu_check: part $name (limit ${limit}s, at ${SECONDS}s)"
  local started=$SECONDS status=0
  timeout --signal=INT --kill-after="$GRACE" "$limit" "$@" > "$OUT/$name.log" 2>&1 || status=$?
  echo "gpu_check: part $name ended with status $status after $((SECONDS - started))s (log: $OUT/$name.log)"
  echo "{\"part\": \"$name\", \"status\": $status, \"seconds\": $((SECONDS - started)), \"limit\": $limit," \
    "\"start\": $started}" >> "$OUT/parts.jsonl"
  if (( status != 0 )); then
    tail -n 5 "$OUT/$name.log" | grep -v -E 'it/s\]|s/it\]' || true
  fi
  report
}
skip() {  # skip NAME LIMIT REASON
  echo "gpu_check: part $1 skipped: $3"
  echo "{\"part\": \"$1\", \"status\": null, \"seconds\": 0, \"limit\": $2, \"start\": $SECONDS," \
    "\"skipped\": \"$3\"}" >> "$OUT/parts.jsonl"
  report
}

# mgvideo profile's rows, one JSON object per line as each shape is measured: bash -c CMD PYTHON FILE ARGS...
# exec: the time limit's SIGINT must reach Python itself, not a shell waiting on it.
TO_JSONL='exec "$0" -m mgvideo profile "${@:2}" > "$1"'
PROFILE+=(--device "$DEVICE" --amp bf16 --json)
part_command() {  # the command line of part $1, into CMD
  case $1 in
    syncs) CMD=("$PYTHON" scripts/gpu_check.py syncs --amp "$AMPS" --out "$OUT/syncs.jsonl" "${SYNCS[@]}"
                train.device="$DEVICE") ;;
    profile) CMD=(bash -c "$TO_JSONL" "$PYTHON" "$OUT/profile.jsonl" "${PROFILE[@]}" --channels-last) ;;
    shapes) CMD=("$PYTHON" -m mgvideo train "${SHAPES[@]}" --out "$OUT/shapes" train.device="$DEVICE"
                 train.amp=bf16) ;;
    loader) CMD=("$PYTHON" scripts/gpu_check.py loader "${LOADER[@]}" "$OUT/loader.json") ;;
    tta) CMD=("$PYTHON" -m mgvideo bench tta --config configs/gpu/bench.yaml --seeds 1 --out "$OUT/tta"
              --json "$OUT/tta.json" train.device="$DEVICE" "${TTA[@]}") ;;
    compile) CMD=("$PYTHON" scripts/gpu_check.py compile "${COMPILE[@]}" --device "$DEVICE"
                  --out "$OUT/compile.jsonl") ;;
    vit) CMD=("$PYTHON" -m mgvideo bench tta --config configs/gpu/bench_vit.yaml --seeds 1 --out "$OUT/vit"
              --json "$OUT/vit.json" train.device="$DEVICE" "${VIT[@]}") ;;
    profile_cf) CMD=(bash -c "$TO_JSONL" "$PYTHON" "$OUT/profile_cf.jsonl" "${PROFILE[@]}") ;;
    *) echo "gpu_check: the plan names part $1, which has no command here" >&2; exit 2 ;;
  esac
}

for i in "${!NAMES[@]}"; do
  name=${NAMES[$i]} limit=${LIMITS[$i]} data=${NEEDS[$i]}
  if ! fits "$limit"; then
    skip "$name" "$limit" "$((BUDGET - SECONDS)) s of the ${BUDGET} s budget left, it needs $((limit + OVERHEAD))"
    continue
  fi
  if ! await_data "$data" "$limit"; then
    skip "$name" "$limit" "its synthetic set ($data) was not ready (see prepare.log and data.jsonl)"
    continue
  fi
  part_command "$name"
  part "$name" "$limit" "${CMD[@]}"
done
echo "gpu_check: done at ${SECONDS}s; see $OUT/gpu_check.md"
"$PYTHON" scripts/gpu_check.py report "$OUT" --final
