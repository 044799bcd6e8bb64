"""`mgvideo profile MODEL`: forward+backward cost of a model at every shape of a multigrid schedule.

Multigrid keeps batch x T x S^2 roughly constant, so every shape should cost about the same per iteration;
this shows how close a model and device come to that (small shapes are often less efficient), together with
clips/s and peak memory. Each shape runs with the BN groups training gives it (sub-batch BN) and, with
--amp, under the training autocast. Figures depend on the machine and on its load.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import signal
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from mgvideo.engine.device import configure_device
from mgvideo.engine.step import backward, bn_plan, precision
from mgvideo.errors import ConfigError
from mgvideo.models.zoo import PRESETS, build_model, shape_multiple
from mgvideo.multigrid.batchnorm import convert_model, set_bn_groups
from mgvideo.multigrid.schedule import MultigridConfig, MultigridSchedule


def register(subparsers) -> None:
    """Add the `profile` subcommand."""
    parser = subparsers.add_parser(
        "profile", help="time forward+backward at every multigrid shape", description=__doc__
    )
    parser.add_argument("model", help=f"model preset: {', '.join(PRESETS)}")
    parser.add_argument(
        "--config", help="a trainer YAML: its data shape and multigrid section give the shapes"
    )
    parser.add_argument("--batch-size", type=int, default=1, help="base batch (at the full T x S); default 1")
    parser.add_argument("--iters", type=int, default=3, help="timed iterations per shape (after 1 warm-up)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--channels-last", action="store_true", help="use torch.channels_last_3d")
    parser.add_argument("--amp", choices=("none", "bf16", "fp16"), default="none",
                        help="autocast dtype of the forward pass, as train.amp")
    parser.add_argument("--bn-base-size", type=int, default=None,
                        help="clips per BN group (default: the config's model.bn_base_size, else 8)")
    parser.add_argument("--num-classes", type=int, default=400)
    parser.add_argument("--json", action="store_true",
                        help="print each row as one JSON object per line as soon as it is measured (the "
                             "full shape first), so that a run stopped early keeps the rows it finished")
    parser.set_defaults(func=run)


def schedule_shapes(model: str, config: str | None, batch: int) -> list[tuple[int, int, int, int]]:
    """Distinct (batch, frames, crop, stage batch) of the schedule, in training order; the full shape comes
    last. The stage batch (the stage's long-cycle batch) decides the BN groups, as in training."""
    if config:
        from mgvideo.bench.bench_config import load_any_config
        from mgvideo.engine.builders import build_schedule

        schedule = build_schedule(load_any_config(Path(config)))
    else:
        p = PRESETS[model]
        schedule = MultigridSchedule(
            MultigridConfig(frames=p.frames, crop=p.crop, sampling_rate=p.sampling_rate,
                            shape_multiple=shape_multiple(model))
        )
    shapes: list[tuple[int, int, int, int]] = []
    for stage in schedule.stages:
        for b, shape in schedule.shapes(stage, batch):
            if (b, shape.frames, shape.crop, shape.stage_batch) not in shapes:
                shapes.append((b, shape.frames, shape.crop, shape.stage_batch))
    full = (batch, schedule.cfg.frames, schedule.cfg.crop, batch)
    return [s for s in shapes if s != full] + [full]


def _config_bn_base_size(config: str | None) -> int:
    if not config:
        return 8
    from mgvideo.bench.bench_config import load_any_config

    return load_any_config(Path(config)).model.bn_base_size


def _config_model_options(config: str | None, model: str) -> dict:
    """The config's model options (a ViT's width, depth and input size) when it names the same model."""
    if not config:
        return {}
    from mgvideo.bench.bench_config import load_any_config

    cfg = load_any_config(Path(config))
    return dict(cfg.model.options) if cfg.model.name == model else {}


def _reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return
    try:  # glibc keeps freed heap mapped; hand it back so the previous shape's peak does not linger
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
    try:  # Linux: writing 5 to clear_refs resets the process's peak RSS (VmHWM)
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def _peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def time_shape(
    model: torch.nn.Module,
    batch: int,
    frames: int,
    crop: int,
    iters: int,
    device: torch.device,
    channels_last: bool,
    amp_dtype: torch.dtype | None = None,
) -> dict:
    """Seconds per forward+backward iteration and peak memory at one (batch, T, S)."""
    clip = torch.randn(batch, 3, frames, crop, crop, device=device)
    if channels_last:
        clip = clip.contiguous(memory_format=torch.channels_last_3d)
    head = model.head  # a CNN's head holds its classifier as `projection`, a ViT's is the classifier
    labels = torch.randint(0, getattr(head, "projection", head).out_features, (batch,), device=device)
    _reset_peak_memory(device)
    elapsed = 0.0
    for i in range(iters + 1):  # the first iteration warms up and is not timed
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        model.zero_grad(set_to_none=True)
        with precision(device, amp_dtype):  # the training step's autocast and kernels
            logits = model(clip)
        backward(F.cross_entropy(logits.float(), labels), device, amp_dtype)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if i:
            elapsed += time.perf_counter() - start
    seconds = elapsed / iters
    return {
        "batch": batch,
        "frames": frames,
        "crop": crop,
        "sec_per_iter": seconds,
        "clips_per_sec": batch / seconds,
        "peak_mb": _peak_memory_mb(device),
    }


def run(args: argparse.Namespace) -> int:
    """Profile every shape; print a table (or JSON) with time ratios to the full shape."""
    if args.model not in PRESETS:
        raise ConfigError(f"profile: unknown model {args.model!r}; valid choices: {', '.join(PRESETS)}")
    if args.batch_size < 1 or args.iters < 1:
        raise ConfigError("profile: --batch-size and --iters must be >= 1")
    if args.device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("profile: --device cuda requested but CUDA is not available")
    device = torch.device(args.device)
    configure_device(device)  # as in training
    bn_base = args.bn_base_size or _config_bn_base_size(args.config)
    options = _config_model_options(args.config, args.model)
    model = convert_model(build_model(args.model, args.num_classes, **options), bn_base).to(device).train()
    if args.channels_last:
        model = model.to(memory_format=torch.channels_last_3d)
    amp_dtype = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}[args.amp]
    shapes = schedule_shapes(args.model, args.config, args.batch_size)
    rows: list[dict] = []
    if args.json:  # a time limit stops it by SIGINT, which a background job of a plain shell ignores
        signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        for b, t, s, stage_batch in [shapes[-1], *shapes[:-1]]:  # the full shape first: every ratio is known
            plan = bn_plan(b, stage_batch, bn_base)  # training's rule, on one device
            set_bn_groups(model, plan)
            try:
                row = time_shape(model, b, t, s, args.iters, device, args.channels_last, amp_dtype)
            except ValueError as err:  # e.g. BN over a single value: batch 1 at a clip the net pools to 1x1x1
                raise ConfigError(f"profile: {args.model} fails at batch {b}, T={t}, S={s}: {err}") from err
            row = {**row, "bn_groups": plan.groups}
            row["time_ratio"] = row["sec_per_iter"] / (rows[0] if rows else row)["sec_per_iter"]
            rows.append(row)
            if args.json:
                print(json.dumps(row), flush=True)
    except KeyboardInterrupt:  # SIGINT (e.g. a time limit): the rows printed so far stand
        if args.json:
            return 130
        raise
    if args.json:
        return 0
    rows = rows[1:] + rows[:1]  # the table in schedule order, the full shape last
    layout = " (channels_last_3d)" if args.channels_last else ""
    print(f"{args.model} on {device}{layout}, amp {args.amp}, base batch {args.batch_size}, "
          f"{args.iters} timed iterations, BN groups of {bn_base} clips per stage batch")
    print(f"{'batch':>6}{'T':>5}{'S':>6}{'groups':>7}{'ms/iter':>10}{'clips/s':>10}{'peak MB':>10}"
          f"{'vs full':>9}")
    for r in rows:
        print(
            f"{r['batch']:>6}{r['frames']:>5}{r['crop']:>6}{r['bn_groups']:>7}"
            f"{r['sec_per_iter'] * 1e3:>10.1f}{r['clips_per_sec']:>10.2f}"
            f"{r['peak_mb']:>10.0f}{r['time_ratio']:>9.2f}"
        )
    print("peak MB: " + ("torch.cuda.max_memory_allocated" if device.type == "cuda" else "process peak RSS"))
    return 0
