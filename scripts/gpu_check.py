"""The GPU check's plan and helpers (scripts/gpu_check.sh runs them).

    python scripts/gpu_check.py plan [--smoke] [--limits "S1 ... S8"] [--scale X] [--budget S] [--markdown]
    python scripts/gpu_check.py precheck DEVICE OUTDIR
    python scripts/gpu_check.py prepare OUTDIR [--smoke]
    python scripts/gpu_check.py syncs --out OUT.jsonl [--amp bf16,fp16] CONFIG [key=value ...]
    python scripts/gpu_check.py compile MODEL --config CONFIG --out OUT.jsonl [--shapes N] [--backend B]
    python scripts/gpu_check.py loader CONFIG OUT.json [--workers N] [--clips K] [key=value ...]
    python scripts/gpu_check.py report OUTDIR [--final]

`PLAN` is the one statement of the check: its parts in order of value, each with its limit, the synthetic
set it reads and the figure it exists for; `plan` prints it for the shell script, scaled for the CPU
rehearsal (--smoke). Each measuring helper appends one JSON line per row (an AMP dtype, a shape) as soon as
it is measured. `report` gathers whatever rows the parts have written in OUTDIR into gpu_check.md and
gpu_check.json (scripts/gpu_check_report.py, with each part's headline check); the shell script calls it
after every part, so a part stopped at its limit still counts.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from gpu_check_report import Check, arms_evaluated, compiled, rows_in, write_report

COMMAND_S = 600  # a lent GPU is one 10-minute command, start-up included
SPARE_S = 90  # of which the plan leaves this much unplanned
BUDGET_S = COMMAND_S - SPARE_S  # no part starts unless its limit and overhead fit before this
# Estimates for the GPU machine (no GPU run yet): set-up before the first part (wheels, the pre-check's
# imports and CUDA start; 4 s on the 2-core CPU), the report after each part (0.15 s measured on the
# CPU) and the grace between a limit's SIGINT and its SIGKILL.
SETUP_S, REPORT_S, GRACE_S = 25, 1, 5
OVERHEAD_S = REPORT_S + GRACE_S  # per part, outside its limit
DATA_S = 180  # the background data generation's own limit (about 40 s estimated: 3,600 videos, 8 processes)
SMOKE_SCALE = 2  # the CPU rehearsal: the same plan, every second multiplied by this


@dataclass(frozen=True)
class Part:
    """One part of the check: `limit` seconds on the GPU machine (estimates until a GPU run: README),
    `data` the synthetic set it reads (a key of DATA, or ''), `headline` the figure it exists for, which
    comes back within the limit, and `reached`, whether a report (gpu_check.json's dict) holds it."""

    name: str
    limit: int
    data: str
    headline: str
    reached: Check


PLAN = (  # in order of value: a GPU run that ends early has brought back the first ones
    Part("syncs", 30, "small", "host syncs between log points (none expected), bf16 then fp16",
         rows_in("syncs")),
    Part("profile", 60, "", "SlowFast-R50 ms/iteration at every schedule shape, bf16, channels-last, the "
         "full shape first", rows_in("profile")),
    Part("shapes", 70, "shapes", "ms/iteration and data wait per shape, training with the real loader",
         rows_in("train_shapes")),
    Part("loader", 20, "shapes", "loader clips/s at the coarsest shape, all cores", rows_in("loader")),
    Part("tta", 120, "default", "top-1 against training seconds, baseline then multigrid (3D CNN, crop 112)",
         arms_evaluated("tta")),
    Part("compile", 65, "", "torch.compile seconds and compiled against eager ms/iteration, full shape",
         compiled),
    Part("vit", 40, "default", "the same two arms for VideoMAE ViT-S/16 at 16 x 112", arms_evaluated("vit")),
    Part("profile_cf", 25, "", "ms/iteration in the default memory format, the full shape first",
         rows_in("profile_cf")),
)
DATA = {  # a synthetic set: the config that names it on the GPU machine, and in the CPU rehearsal
    "small": ("configs/synthetic/tiny.yaml", "configs/synthetic/tiny.yaml"),
    "shapes": ("configs/gpu/shapes.yaml", "configs/synthetic/tiny.yaml"),
    "default": ("configs/gpu/bench.yaml", "configs/synthetic/tiny.yaml"),
}


def data_order(parts: tuple[Part, ...] = PLAN) -> list[str]:
    """The synthetic sets in the order the parts first need them: the order they are generated in."""
    return list(dict.fromkeys(p.data for p in parts if p.data))


def planned_seconds(parts: tuple[Part, ...] = PLAN) -> int:
    """What the whole plan may take on the GPU machine: set-up, every limit and every part's overhead."""
    return SETUP_S + sum(p.limit + OVERHEAD_S for p in parts)


def scaled(smoke: bool, limits: str = "", scale: float = 0, budget: int = 0) -> dict:
    """The plan as one run uses it: the CUDA plan's seconds times `scale` (default 1, or SMOKE_SCALE with
    `smoke`), `limits` (the parts' seconds in plan order) replacing the scaled limits where given."""
    scale = scale or (SMOKE_SCALE if smoke else 1)
    seconds = [round(p.limit * scale) for p in PLAN]
    if limits.strip():
        seconds = [int(x) for x in limits.split()]
        if len(seconds) != len(PLAN):
            sys.exit(f"gpu_check: GPU_CHECK_LIMITS needs {len(PLAN)} numbers "
                     f"({' '.join(p.name for p in PLAN)}), not {len(seconds)}")
    return {"budget": budget or round(BUDGET_S * scale), "overhead": math.ceil(OVERHEAD_S * scale),
            "grace": math.ceil(GRACE_S * scale), "data": round(DATA_S * scale),
            "parts": [(p.name, limit, p.data or "-") for p, limit in zip(PLAN, seconds)]}


def plan(args: argparse.Namespace) -> None:
    """Print the plan: for the shell script one `key value` line each and one `part NAME LIMIT DATA` line
    per part, or a markdown table (--markdown)."""
    run = scaled(args.smoke, args.limits, args.scale, args.budget)
    if args.markdown:
        print("| part | limit s | CPU rehearsal s | data | headline figure |\n|---|---|---|---|---|")
        smoke = dict((name, limit) for name, limit, _ in scaled(True)["parts"])
        for p in PLAN:
            print(f"| {p.name} | {p.limit} | {smoke[p.name]} | {p.data or '-'} | {p.headline} |")
        print(f"\nLimits {sum(p.limit for p in PLAN)} s; with set-up ({SETUP_S} s) and {OVERHEAD_S} s a part "
              f"(report, stop grace) {planned_seconds()} s, leaving {COMMAND_S - planned_seconds()} s of "
              f"{COMMAND_S}.")
        return
    for key in ("budget", "overhead", "grace", "data"):
        print(key, run[key])
    for name, limit, data in run["parts"]:
        print("part", name, limit, data)


def precheck(args: argparse.Namespace) -> None:
    """Fail fast, before any data or GPU work, where this interpreter or machine cannot run the check:
    every runtime dependency imports, CUDA is there, /dev/shm and the disk have room. Writes env.json."""
    import importlib
    import shutil

    versions = {}
    for name in ("torch", "numpy", "av", "yaml", "tqdm", "matplotlib", "safetensors"):
        try:
            versions[name] = getattr(importlib.import_module(name), "__version__", "?")
        except ImportError as err:
            sys.exit(f"gpu_check: cannot import {name} ({err}); bring the wheel (README: Checking a GPU "
                     "machine) or set PYTHON=...")
    print("gpu_check: imports " + ", ".join(f"{k} {v}" for k, v in versions.items()))
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit(f"gpu_check: torch {torch.__version__} sees no CUDA device (CUDA build: "
                 f"{torch.version.cuda}); run on a GPU machine with a CUDA build of torch, set PYTHON=..., "
                 "or use --smoke")
    free = {path: shutil.disk_usage(path).free / 2**30 if os.path.exists(path) else 0.0
            for path in ("/dev/shm", args.outdir)}
    shm, disk = free["/dev/shm"], free[args.outdir]
    print(shm_line(shm, torch.cuda.device_count() if args.device == "cuda" else 1))
    print(f"gpu_check: disk {disk:.1f} GB free at {args.outdir}" + ("" if disk >= 5 else
          " (under 5 GB: data may not fit)"))
    if shm < 0.25 or disk < 1:
        sys.exit("gpu_check: not enough /dev/shm or disk to run the check")
    env = {"device": torch.cuda.get_device_name(0) if args.device == "cuda" else "cpu",
           "torch": torch.__version__, "cuda": torch.version.cuda, "av": versions["av"],
           "cores": os.cpu_count(), "python": sys.version.split()[0], "shm_gb": round(shm, 1),
           "disk_gb": round(disk, 1)}
    Path(args.outdir, "env.json").write_text(json.dumps(env))
    print("gpu_check:", ", ".join(f"{k} {v}" for k, v in env.items()))


RECIPE = "configs/kinetics/slowfast_r50_8x8_multigrid.yaml"  # the training the shm hint is for


def shm_line(free_gb: float, gpus: int) -> str:
    """/dev/shm free against what the loaders need (data.loader.shm_need_bytes): this check's largest
    (the shapes part, one process), and the Kinetics SlowFast recipe's on this node's GPUs, as the size a
    container needs (docker's default 64 MB stops the workers at their first batch)."""
    check, workers = shm_need(DATA["shapes"][0], 1)
    train, train_workers = shm_need(RECIPE, max(gpus, 1))
    line = (f"gpu_check: /dev/shm {free_gb:.1f} GiB free; the loaders need up to {check / 2**30:.1f} GiB "
            f"for this check ({workers} workers), {train / 2**30:.1f} GiB to train {RECIPE} on {gpus} GPU(s) "
            f"here ({train_workers} workers each; docker: --shm-size={math.ceil(train / 2**30)}g)")
    return line + (" - too little for this check: loader workers may fail" if free_gb * 2**30 < check else "")


def shm_need(config: str, ranks: int) -> tuple[int, int]:
    """(bytes, workers per process): the /dev/shm `config`'s training loaders need with `ranks` processes
    on this node, from the largest batch of its schedule and of its validation."""
    from mgvideo.bench.bench_config import load_any_config
    from mgvideo.bench.data import distinct_shapes
    from mgvideo.data.loader import PREFETCH_FACTOR, default_workers, largest_batch_bytes, shm_need_bytes
    from mgvideo.engine import builders
    from mgvideo.engine.device import device_plan

    cfg = load_any_config(config)
    schedule = builders.build_schedule(cfg)
    devices = device_plan(cfg, ranks, schedule)  # a loader batch is a device's whole step, all its passes
    shapes = [(b, s.frames, s.crop) for b, s in distinct_shapes(schedule, devices.batch)]
    micro = devices.batch // devices.micro_batches
    shapes.append((cfg.train.eval_batch_size or micro, cfg.data.frames, cfg.data.crop))  # as run.py sizes it
    workers = cfg.data.workers if cfg.data.workers >= 0 else default_workers(ranks)
    return shm_need_bytes(ranks, workers, PREFETCH_FACTOR, largest_batch_bytes(shapes)), workers


def prepare(args: argparse.Namespace) -> None:
    """Generate the plan's synthetic sets in the order its parts first need them, each noted in
    OUTDIR/data.jsonl as soon as it is complete (the shell script waits on those lines), then an end line."""
    from mgvideo.bench.bench_config import load_any_config
    from mgvideo.data.prepare import ensure_synthetic_data

    log = Path(args.outdir) / "data.jsonl"
    workers = max(1, min(8, (os.cpu_count() or 2) // 2))  # the GPU-bound first parts leave the cores free
    for name in data_order():
        config, start = DATA[name][1 if args.smoke else 0], time.perf_counter()
        try:
            ensure_synthetic_data(load_any_config(config), workers)
        except Exception as err:  # noted, not fatal: the parts that read this set are skipped
            _append(log, {"data": name, "ok": False, "error": f"{type(err).__name__}: {err}"})
            continue
        _append(log, {"data": name, "ok": True, "config": config,
                      "seconds": round(time.perf_counter() - start, 1)})
    _append(log, {"data": "end"})


def syncs(args: argparse.Namespace) -> None:
    """Train a few steps with host syncs forbidden, once per AMP dtype in `--amp`: CUDA's sync debug mode on
    a GPU, and on the CPU the Tensor methods that read a value. Appends, per dtype, which steps ran and the
    first sync met, if any."""
    failed = False
    for amp in args.amp.split(","):
        result = {"amp": amp, **_sync_steps(args, amp)}
        _append(args.out, result)
        print(f"syncs: {result}")
        failed = failed or bool(result["sync"])
    if failed:
        sys.exit(1)


def _sync_steps(args: argparse.Namespace, amp: str) -> dict:
    import tempfile

    from mgvideo.config import load_config
    from mgvideo.engine.run import build_run
    from mgvideo.engine.step import step_settings
    from mgvideo.engine.trainer import close_window, dropout_seeds, train_step

    run = build_run(load_config(args.config, [*args.overrides, f"train.amp={amp}"]), Path(tempfile.mkdtemp()))
    epoch = run.schedule.max_epoch - 1
    run.data.sampler.set_epoch(epoch)
    loaded = iter(run.data.loader)
    batches = [next(loaded) for _ in range(args.steps)]

    def step(batch, number):  # as train_epoch's
        settings = step_settings(run.schedule, epoch, batch.shape, len(batch), run.opt.lr_rule,
                                 run.cfg.model.bn_base_size)
        x = run.inputs(batch)
        seeds = dropout_seeds(0, number, run.info, run.opt.micro_batches)
        return (*train_step(run.opt, run.model, x.clips, x.labels, settings, seeds), x.clips)

    for batch in batches:  # warm-up at these shapes (cuDNN picks its kernels) before the checked steps
        step(batch, 0)
    result = {"device": run.inputs.device.type, "steps": 0, "sync": None}
    with _no_syncs(run.inputs.device):
        try:
            for number, batch in enumerate(batches, 1):
                loss, correct, clips = step(batch, number)
                run.window.add(number, 0, clips, loss, correct, batch.skipped, 0.01, 0.0, 0.0)
                result["steps"] = number
        except RuntimeError as err:  # CUDA's sync debug mode raises RuntimeError
            result["sync"] = str(err).splitlines()[0]
    run.state.step = result["steps"]
    close_window(run)  # the log point's sync, allowed
    run.log.close()
    return result


def _append(path: str | Path, row: dict) -> None:
    """One JSON line, written and flushed at once: a part stopped later keeps it."""
    with open(path, "a") as f:
        f.write(json.dumps(row) + "\n")


def compile_shapes(args: argparse.Namespace) -> None:
    """`torch.compile` as train.compile uses it (no dynamic shapes, the training autocast, channels-last and
    BN groups) on the first `--shapes` shapes of the schedule (the full one first): per shape, the seconds
    its first compiled forward+backward takes (compilation) and ms/iteration compiled against eager. A row
    with the eager figure and no compile seconds comes first, replaced in the report once compiled."""
    import torch

    from mgvideo.commands.profile import schedule_shapes, time_shape
    from mgvideo.engine.step import backward, bn_plan, precision
    from mgvideo.models.zoo import build_model
    from mgvideo.multigrid.batchnorm import convert_model, set_bn_groups

    device = torch.device(args.device)
    amp = torch.bfloat16
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    import torch._dynamo

    torch._dynamo.config.cache_size_limit = max(torch._dynamo.config.cache_size_limit, 4 * args.shapes)
    net = convert_model(build_model(args.model, args.num_classes), 8).to(device).train()
    net = net.to(memory_format=torch.channels_last_3d)
    compiled = torch.compile(net, dynamic=False, backend=args.backend)
    shapes = schedule_shapes(args.model, args.config, args.batch_size)
    for b, t, s, stage_batch in [shapes[-1], *shapes[:-1]][: args.shapes]:
        set_bn_groups(net, bn_plan(b, stage_batch, 8))
        eager = time_shape(net, b, t, s, args.iters, device, True, amp)
        row = {"batch": b, "frames": t, "crop": s, "backend": args.backend, "compile_s": None,
               "eager_ms": round(1000 * eager["sec_per_iter"], 1)}
        _append(args.out, row)  # a compilation stopped at the limit still says it took longer than that
        x = torch.randn(b, 3, t, s, s, device=device).contiguous(memory_format=torch.channels_last_3d)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        with precision(device, amp):
            loss = compiled(x).float().sum()
        backward(loss, device, amp)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        first = time.perf_counter() - start
        fast = time_shape(compiled, b, t, s, args.iters, device, True, amp)
        row = {**row, "compile_s": round(first, 2), "compiled_ms": round(1000 * fast["sec_per_iter"], 1)}
        row["speedup"] = round(row["eager_ms"] / max(row["compiled_ms"], 1e-6), 2)
        _append(args.out, row)
        print(f"compile: {row}", flush=True)


@contextlib.contextmanager
def _no_syncs(device):
    import torch

    if device.type == "cuda":
        torch.cuda.set_sync_debug_mode("error")
        try:
            yield
        finally:
            torch.cuda.set_sync_debug_mode("default")
        return
    saved = {name: getattr(torch.Tensor, name) for name in ("item", "tolist", "__bool__", "__float__")}

    def refuse(self, *args):
        raise RuntimeError("a Tensor value was read on the host during a training step")

    for name in saved:
        setattr(torch.Tensor, name, refuse)
    try:
        yield
    finally:
        for name, method in saved.items():
            setattr(torch.Tensor, name, method)


def loader(args: argparse.Namespace) -> None:
    """Clips/s of the training loader at the schedule's coarsest shape, with `--workers` processes."""
    from mgvideo.bench.data import distinct_shapes, loader_rate
    from mgvideo.config import load_config
    from mgvideo.data.loader import resolve_workers
    from mgvideo.data.prepare import ensure_synthetic_data
    from mgvideo.engine import builders
    from mgvideo.engine.device import per_device_batch

    cfg = load_config(args.config, args.overrides)
    ensure_synthetic_data(cfg)
    batch = per_device_batch(cfg, 1)
    size, shape = distinct_shapes(builders.build_schedule(cfg), batch)[0]
    annotations = builders.read_split(cfg, cfg.data.train_list)
    workers = args.workers or resolve_workers(-1)
    rate = loader_rate(annotations, shape, size, workers, resize=True, clips=args.clips)
    row = {"frames": shape.frames, "crop": shape.crop, "batch": size, "workers": workers,
           "cores": os.cpu_count(), "clips": args.clips, "clips_per_s": round(rate, 1)}
    Path(args.out).write_text(json.dumps(row, indent=2))
    print(f"loader at the coarsest shape {shape.frames}x{shape.crop} (batch {size}), {workers} workers: "
          f"{rate:.1f} clips/s")


def report(args: argparse.Namespace) -> int:
    """Rebuild OUTDIR's gpu_check.md and gpu_check.json; with --final, exit 1 if a part failed or missed its
    headline."""
    checks, headlines = {p.name: p.reached for p in PLAN}, {p.name: p.headline for p in PLAN}
    return write_report(Path(args.outdir), checks, headlines, args.final)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    sub = parser.add_subparsers(required=True)
    p = sub.add_parser("plan")
    p.add_argument("--smoke", action="store_true", help="the CPU rehearsal: every second x SMOKE_SCALE")
    p.add_argument("--limits", default="", help="the parts' limits in plan order (GPU_CHECK_LIMITS)")
    p.add_argument("--scale", type=float, default=0, help="seconds multiplier (GPU_CHECK_SCALE)")
    p.add_argument("--budget", type=int, default=0, help="seconds no part may run past (GPU_CHECK_BUDGET)")
    p.add_argument("--markdown", action="store_true")
    p.set_defaults(func=plan)
    p = sub.add_parser("precheck")
    p.add_argument("device", choices=("cpu", "cuda"))
    p.add_argument("outdir")
    p.set_defaults(func=precheck)
    p = sub.add_parser("prepare")
    p.add_argument("outdir")
    p.add_argument("--smoke", action="store_true")
    p.set_defaults(func=prepare)
    p = sub.add_parser("syncs")  # options first: the config's overrides follow it
    p.add_argument("--out", required=True)
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--amp", default="bf16", help="comma-separated train.amp values, checked in turn")
    p.add_argument("config")
    p.add_argument("overrides", nargs="*")
    p.set_defaults(func=syncs)
    p = sub.add_parser("compile")
    p.add_argument("model")
    p.add_argument("--config", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--shapes", type=int, default=1)
    p.add_argument("--iters", type=int, default=3)
    p.add_argument("--num-classes", type=int, default=400)
    p.add_argument("--device", default="cuda")
    p.add_argument("--backend", default="inductor")
    p.set_defaults(func=compile_shapes)
    p = sub.add_parser("loader")
    p.add_argument("config")
    p.add_argument("out")
    p.add_argument("--workers", type=int, default=0, help="0: the trainer's default for this machine")
    p.add_argument("--clips", type=int, default=256)
    p.add_argument("overrides", nargs="*")
    p.set_defaults(func=loader)
    p = sub.add_parser("report")
    p.add_argument("outdir")
    p.add_argument("--final", action="store_true", help="exit 1 if a part failed or missed its headline")
    p.set_defaults(func=report)
    args = parser.parse_args(argv)
    return args.func(args) or 0


if __name__ == "__main__":
    sys.exit(main())
