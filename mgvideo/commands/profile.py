"""`mgvideo profile MODEL`: forward+backward cost of a model at every shape of a multigrid schedule.

Multigrid keeps batch x T x S^2 roughly constant, so every shape should cost about the same per iteration;
this shows how close a model and device come to that (small shapes are often less efficient), together with
clips/s and peak memory. Figures depend on the machine and on its load.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from mgvideo.errors import ConfigError
from mgvideo.models.zoo import PRESETS, build_model
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
    parser.add_argument("--num-classes", type=int, default=400)
    parser.add_argument("--json", action="store_true", help="print the rows as one JSON list")
    parser.set_defaults(func=run)


def schedule_shapes(model: str, config: str | None, batch: int) -> list[tuple[int, int, int]]:
    """Distinct (batch, frames, crop) of the schedule, in training order; the full shape comes last."""
    if config:
        from mgvideo.config import load_any_config
        from mgvideo.engine.builders import build_schedule

        schedule = build_schedule(load_any_config(Path(config)))
    else:
        p = PRESETS[model]
        schedule = MultigridSchedule(
            MultigridConfig(frames=p.frames, crop=p.crop, sampling_rate=p.sampling_rate)
        )
    shapes: list[tuple[int, int, int]] = []
    for stage in schedule.stages:
        for b, shape in schedule.shapes(stage, batch):
            if (b, shape.frames, shape.crop) not in shapes:
                shapes.append((b, shape.frames, shape.crop))
    full = (batch, schedule.cfg.frames, schedule.cfg.crop)
    return [s for s in shapes if s != full] + [full]


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
) -> dict:
    """Seconds per forward+backward iteration and peak memory at one (batch, T, S)."""
    clip = torch.randn(batch, 3, frames, crop, crop, device=device)
    if channels_last:
        clip = clip.contiguous(memory_format=torch.channels_last_3d)
    labels = torch.randint(0, model.head.projection.out_features, (batch,), device=device)
    _reset_peak_memory(device)
    elapsed = 0.0
    for i in range(iters + 1):  # the first iteration warms up and is not timed
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        model.zero_grad(set_to_none=True)
        F.cross_entropy(model(clip), labels).backward()
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
    model = build_model(args.model, args.num_classes).to(device).train()
    if args.channels_last:
        model = model.to(memory_format=torch.channels_last_3d)
    rows = []
    for b, t, s in schedule_shapes(args.model, args.config, args.batch_size):
        try:
            rows.append(time_shape(model, b, t, s, args.iters, device, args.channels_last))
        except ValueError as err:  # e.g. BN over a single value: batch 1 at a clip the net pools to 1x1x1
            raise ConfigError(f"profile: {args.model} fails at batch {b}, T={t}, S={s}: {err}") from err
    base = rows[-1]["sec_per_iter"]
    for row in rows:
        row["time_ratio"] = row["sec_per_iter"] / base
    if args.json:
        print(json.dumps(rows))
        return 0
    layout = " (channels_last_3d)" if args.channels_last else ""
    print(f"{args.model} on {device}{layout}, base batch {args.batch_size}, {args.iters} timed iterations")
    print(f"{'batch':>6}{'T':>5}{'S':>6}{'ms/iter':>10}{'clips/s':>10}{'peak MB':>10}{'vs full':>9}")
    for r in rows:
        print(
            f"{r['batch']:>6}{r['frames']:>5}{r['crop']:>6}{r['sec_per_iter'] * 1e3:>10.1f}"
            f"{r['clips_per_sec']:>10.2f}{r['peak_mb']:>10.0f}{r['time_ratio']:>9.2f}"
        )
    print("peak MB: " + ("torch.cuda.max_memory_allocated" if device.type == "cuda" else "process peak RSS"))
    return 0
