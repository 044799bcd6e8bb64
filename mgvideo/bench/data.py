"""`mgvideo bench data`: loader throughput at every multigrid shape against the model's consumption rate.

For each distinct clip shape of the schedule it times the loader (clips/s) with several worker counts: with
and without resizing inside the decoder, and from the decoded-frame cache (`data.cache`, filled before the
timing). It times a forward/backward pass of the model at that shape and batch, then marks which of the
two is the bottleneck (for the decoders; the cache column shows what a cached run gets). Figures depend on
the machine and on its load.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from mgvideo.data.annotations import Annotations, read_kinetics
from mgvideo.data.cache import FrameCache
from mgvideo.data.datasets import VideoClipDataset, largest_short_side
from mgvideo.data.loader import build_loader
from mgvideo.multigrid.schedule import ClipShape, MultigridConfig, MultigridSchedule

CACHE_SAMPLE = 256  # videos the cache column reads (a real dataset is not decoded whole for a benchmark)


def register(subparsers) -> None:
    parser = subparsers.add_parser("data", help="loader clips/s per multigrid shape vs model consumption",
                                   description=__doc__)
    parser.add_argument("--config", help="a trainer YAML: its data, model, schedule and batch are used")
    parser.add_argument("--data", help="synthetic dataset folder (train.csv); default: generate a small one")
    parser.add_argument("--model", default="c3d_tiny", help="model preset timed for consumption")
    parser.add_argument("--frames", type=int, default=16, help="the schedule's full T (no --config)")
    parser.add_argument("--crop", type=int, default=64, help="the schedule's full crop S (no --config)")
    parser.add_argument("--rate", type=int, default=2, help="the base sampling rate (no --config)")
    parser.add_argument("--batch", type=int, default=2, help="base per-device batch (no --config)")
    parser.add_argument("--clips", type=int, default=64, help="clips timed per loader measurement")
    parser.add_argument("--workers", default="0,1,2", help="comma-separated worker counts")
    parser.add_argument("--json", action="store_true", help="print the rows as JSON instead of a table")
    parser.set_defaults(func=run)


def distinct_shapes(schedule: MultigridSchedule, batch: int) -> list[tuple[int, ClipShape]]:
    """(per-device batch, shape) of every distinct clip shape in the schedule, coarsest first."""
    seen: dict[tuple, tuple[int, ClipShape]] = {}
    for stage in schedule.stages:
        for size, shape in schedule.shapes(stage, batch):
            seen.setdefault((shape.frames, shape.crop, shape.min_rate, shape.max_rate), (size, shape))
    return sorted(seen.values(), key=lambda item: item[1].frames * item[1].crop ** 2)


def loader_rate(annotations: Annotations, shape: ClipShape, batch: int, workers: int, resize: bool,
                clips: int, seed: int = 0, cache: FrameCache | None = None,
                unreadable: set[str] | None = None) -> float:
    """Clips/s of a loader at one shape, after one warm-up batch (which absorbs the worker start). Bad
    videos are skipped without a warning and added to `unreadable`, for one line after the table."""
    dataset = VideoClipDataset(annotations, shape, decoder_resize=resize, seed=seed, cache=cache)
    dataset.warn = False
    rng = np.random.default_rng(seed)
    count = max(2, -(-clips // batch)) + 1
    batches = [[(int(i), shape) for i in rng.integers(0, len(dataset), batch)] for _ in range(count)]
    loader = build_loader(dataset, batches, workers=workers, seed=seed)
    iterator = iter(loader)
    next(iterator)
    start = time.perf_counter()
    timed = sum(len(b) for b in iterator)
    rate = timed / (time.perf_counter() - start)
    del iterator, loader  # stops the workers
    if unreadable is not None:
        unreadable.update(dataset.unreadable_paths())
    return rate


def model_rate(model: torch.nn.Module, shape: ClipShape, batch: int, iters: int = 2) -> float:
    """Clips/s the model trains at: forward + backward of one batch at this shape (after a warm-up)."""
    model.train()
    x = torch.randn(batch, 3, shape.frames, shape.crop, shape.crop)
    y = torch.zeros(batch, dtype=torch.long)
    for step in range(iters + 1):
        if step == 1:
            start = time.perf_counter()
        model.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(model(x), y).backward()
    return batch * iters / (time.perf_counter() - start)


def _setup(args: argparse.Namespace, scratch: str
           ) -> tuple[MultigridSchedule, Annotations, dict, int, FrameCache]:
    """Schedule, training annotations, model (name and options), base batch and frame cache, from --config
    (its own cache, if it has one) or flags."""
    if args.config:  # the trainer's YAML: the same builders the trainer uses
        from mgvideo.config import load_any_config
        from mgvideo.data.prepare import ensure_synthetic_data
        from mgvideo.engine import builders

        cfg = load_any_config(args.config)
        ensure_synthetic_data(cfg)
        model = {"name": cfg.model.name, **cfg.model.options}
        cache = builders.build_frame_cache(cfg) or FrameCache(Path(scratch) / "frames",
                                                              largest_short_side(cfg.data.crop))
        return builders.build_schedule(cfg), builders.read_split(cfg, cfg.data.train_list), model, \
            cfg.solver.batch_size, cache
    schedule = MultigridSchedule(MultigridConfig(frames=args.frames, crop=args.crop, sampling_rate=args.rate))
    root = Path(args.data) if args.data else _small_synthetic(scratch)
    annotations = read_kinetics(root / "train.csv", classes=root / "classes.txt")
    cache = FrameCache(Path(scratch) / "frames", largest_short_side(args.crop))
    return schedule, annotations, {"name": args.model}, args.batch, cache


def _small_synthetic(scratch: str) -> Path:
    from mgvideo.data import synthetic

    synthetic.generate(scratch, seed=0, size="small")
    return Path(scratch)


def run(args: argparse.Namespace) -> int:
    """Measure and print one row per shape (a generated dataset is deleted afterwards)."""
    with tempfile.TemporaryDirectory(prefix="mgvideo-bench-data-") as scratch:
        return _measure(args, scratch)


def _measure(args: argparse.Namespace, scratch: str) -> int:
    from mgvideo.models import build_model

    schedule, annotations, model_args, batch, cache = _setup(args, scratch)
    workers = [int(w) for w in args.workers.split(",")]
    # The cache column reads a sample of the videos, stored before timing (as a run fills its cache up front).
    cached = dataclasses.replace(annotations, records=annotations.records[:CACHE_SAMPLE])
    cache.fill([r.path for r in cached.records], max(1, *workers))
    model = build_model(model_args.pop("name"), annotations.num_classes, **model_args)
    rows, unreadable = [], set()
    for size, shape in distinct_shapes(schedule, batch):
        row = {"T": shape.frames, "crop": shape.crop, "rate": f"{shape.min_rate}-{shape.max_rate}",
               "batch": size, "model": model_rate(model, shape, size)}
        for resize in (True, False):
            for w in workers:
                row[f"{'dec' if resize else 'post'}_w{w}"] = loader_rate(
                    annotations, shape, size, w, resize, args.clips, unreadable=unreadable)
        for w in workers:
            row[f"cache_w{w}"] = loader_rate(cached, shape, size, w, True, args.clips, cache=cache,
                                             unreadable=unreadable)
        best = max(row[f"dec_w{w}"] for w in workers)
        row["resize_speedup"] = float(np.mean([row[f"dec_w{w}"] / row[f"post_w{w}"] for w in workers]))
        row["bottleneck"] = "data" if best < row["model"] else "model"
        rows.append(row)
        if not args.json:
            _print_row(row, workers, header=len(rows) == 1)
    if args.json:
        print(json.dumps(rows, indent=1))
    if unreadable:  # after the table, not in the middle of it
        print(f"skipped {len(unreadable)} unreadable videos (other videos read instead): "
              f"{', '.join(sorted(unreadable))}", file=sys.stderr)
    return 0


def _print_row(row: dict, workers: list[int], header: bool) -> None:
    cols = [f"{kind}_w{w}" for kind in ("dec", "post", "cache") for w in workers]
    if header:
        print("loader clips/s (dec_wN: resized in the decoder, N workers; post_wN: decoded at full size, "
              "then resized; cache_wN: read from the decoded-frame cache)")
        print(f"{'T':>3} {'crop':>4} {'rate':>5} {'batch':>5} " + " ".join(f"{c:>9}" for c in cols)
              + f" {'resize x':>8} {'model':>8} bottleneck   (resize x: dec/post, mean over worker counts)")
    print(f"{row['T']:>3} {row['crop']:>4} {row['rate']:>5} {row['batch']:>5} "
          + " ".join(f"{row[c]:>9.1f}" for c in cols)
          + f" {row['resize_speedup']:>8.2f} {row['model']:>8.1f} {'<- ' + row['bottleneck']}", flush=True)
