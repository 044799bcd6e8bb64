"""`mgvideo bench data`: a loader cost model per multigrid shape. For every distinct clip shape of the
schedule it measures clips/s per loader worker (CPU time of one process, so that a busy machine does not
distort it), from the original videos and (where there is one) from the
multi-resolution store, says where a clip's time goes, and how many workers keep up with the model.

Videos: `--list LIST --root DIR` (yours), else the recipe's synthetic set, else generated Kinetics-like
videos (340x256 H.264, GOP 32, 10 s), for which a store is also prepared. Model rate: `--model-clips-per-s X`
(the full shape's training clips/s per device; other shapes scaled by T*S^2, as multigrid keeps an
iteration's cost constant) or `--profile FILE` (`mgvideo profile --json` rows, matched by T and S). The
figures depend on the machine and its load.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from mgvideo.bench.data_cost import STAGES, breakdown
from mgvideo.data.annotations import Annotations, read_kinetics
from mgvideo.data.datasets import VideoClipDataset
from mgvideo.data.formats import dataset_format
from mgvideo.data.loader import build_loader
from mgvideo.data.store import VideoStore
from mgvideo.errors import ConfigError
from mgvideo.multigrid.schedule import ClipShape, MultigridConfig, MultigridSchedule


def register(subparsers) -> None:
    parser = subparsers.add_parser("data", help="loader cost model: clips/s per worker at every shape",
                                   description=__doc__)
    parser.add_argument("--config", help="a recipe: its schedule, batch and data section are used")
    parser.add_argument("--list", help="a Kinetics-style list (path label) of the videos to read")
    parser.add_argument("--root", help="folder the list's paths are relative to (default: the list's)")
    parser.add_argument("--data", help="a synthetic dataset folder (reads its train.csv)")
    parser.add_argument("--store", help="a store made by `mgvideo data prepare` for these videos (with "
                        "their root as its --root)")
    parser.add_argument("--videos", type=int, default=8, help="Kinetics-like videos to generate (no --list)")
    parser.add_argument("--synth-dir", help="where generated videos (and their store) go; kept, and reused "
                        "by later runs (default: a temporary folder)")
    rate = parser.add_mutually_exclusive_group()
    rate.add_argument("--model-clips-per-s", type=float, help="the model's training clips/s per device at "
                      "the full shape")
    rate.add_argument("--profile", help="`mgvideo profile --json` output: per-shape clips/s")
    parser.add_argument("--frames", type=int, default=16, help="the schedule's full T (no --config)")
    parser.add_argument("--crop", type=int, default=64, help="the schedule's full crop S (no --config)")
    parser.add_argument("--rate", type=int, default=2, help="the base sampling rate (no --config)")
    parser.add_argument("--batch", type=int, default=2, help="base per-device batch (no --config)")
    parser.add_argument("--clips", type=int, default=32, help="clips timed per shape and source")
    parser.add_argument("--json", nargs="?", const="-", metavar="FILE",
                        help="write the rows as JSON to FILE (alone: print them instead of the table)")
    parser.set_defaults(func=run)


def distinct_shapes(schedule: MultigridSchedule, batch: int) -> list[tuple[int, ClipShape]]:
    """(per-device batch, shape) of every distinct clip shape in the schedule, coarsest first."""
    seen: dict[tuple, tuple[int, ClipShape]] = {}
    for stage in schedule.stages:
        for size, shape in schedule.shapes(stage, batch):
            seen.setdefault((shape.frames, shape.crop, shape.min_rate, shape.max_rate), (size, shape))
    return sorted(seen.values(), key=lambda item: item[1].frames * item[1].crop ** 2)


def loader_rate(annotations: Annotations, shape: ClipShape, batch: int, workers: int, resize: bool,
                clips: int, seed: int = 0, cache=None, store: VideoStore | None = None) -> float:
    """Clips/s of a loader at one shape, after one warm-up batch (which absorbs the worker start)."""
    dataset = VideoClipDataset(annotations, shape, decoder_resize=resize, seed=seed, cache=cache, store=store)
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
    return rate


def model_rates(args: argparse.Namespace, shapes: list[tuple[int, ClipShape]]) -> list[float | None]:
    """The model's clips/s per device at each shape, from --profile or --model-clips-per-s (else None)."""
    if args.profile:
        try:
            text = Path(args.profile).read_text()
            rows = json.loads(text) if text.lstrip().startswith("[") else [
                json.loads(line) for line in text.splitlines() if line.strip()]
        except (OSError, ValueError) as err:
            raise ConfigError(f"--profile: cannot read {args.profile}: {err}") from err
        by_shape = {(r["frames"], r["crop"]): r["clips_per_sec"] for r in rows}
        return [by_shape.get((s.frames, s.crop)) for _, s in shapes]
    if args.model_clips_per_s:
        full = shapes[-1][1]
        return [args.model_clips_per_s * full.frames * full.crop ** 2 / (s.frames * s.crop ** 2)
                for _, s in shapes]
    return [None] * len(shapes)


def _setup(args: argparse.Namespace, scratch: str):
    """(schedule, base batch, annotations, store or None, where the videos came from)."""
    cfg = None
    if args.config:
        from mgvideo.bench.bench_config import load_any_config
        from mgvideo.engine import builders
        from mgvideo.engine.device import per_device_batch

        cfg = load_any_config(args.config)
        # the per-device batch on the recipe's own device count (what one GPU's loader must fill)
        devices = cfg.solver.recipe_devices or 1
        schedule, batch = builders.build_schedule(cfg), per_device_batch(cfg, devices)
    else:
        schedule = MultigridSchedule(MultigridConfig(frames=args.frames, crop=args.crop,
                                                     sampling_rate=args.rate))
        batch = args.batch
    if args.data:
        args.list, args.root = str(Path(args.data) / "train.csv"), args.data
    if args.list:
        root = args.root or os.path.dirname(os.path.abspath(args.list))
        return schedule, batch, read_kinetics(args.list, root), _given_store(args, root), args.list
    if cfg is not None and dataset_format(cfg.data.dataset).generated:
        from mgvideo.data.prepare import ensure_synthetic_data

        ensure_synthetic_data(cfg)
        annotations = builders.read_split(cfg, cfg.data.train_list)
        return schedule, batch, annotations, _given_store(args, cfg.data.root), cfg.data.root
    return (schedule, batch, *_kinetics_like(args, cfg, scratch))


def _given_store(args: argparse.Namespace, root: str) -> VideoStore | None:
    """--store, for the videos under `root` (its entries are keyed relative to it)."""
    return VideoStore(args.store, root) if args.store else None


def _kinetics_like(args: argparse.Namespace, cfg, scratch: str):
    """Generated Kinetics-like videos, and a store of them (for a recipe's sides) unless one is given."""
    from mgvideo.data.kinetics_like import generate_kinetics_like
    from mgvideo.data.prepare import prepare_store

    root = args.synth_dir or os.path.join(scratch, "kinetics_like")
    workers = max(1, min(args.videos, len(os.sched_getaffinity(0))))
    generate_kinetics_like(root, args.videos, workers=workers)
    annotations = read_kinetics(os.path.join(root, "train.csv"), root)
    store = _given_store(args, root)
    if store is None:
        if cfg is not None:
            from mgvideo.data.prepare import recipe_store_sides
            from mgvideo.engine.builders import build_schedule

            sides = recipe_store_sides(cfg, build_schedule(cfg))
        else:
            sides = sorted({args.crop, round(args.crop * 320 / 224), round(args.crop * 128 / 224)})
        directory = os.path.join(root, "store")
        summary = prepare_store([r.path for r in annotations.records], directory, sides, workers, log=print,
                                root=root)
        print(f"store {directory}: sides {sides}, {summary['bytes'] / 1e6:.1f} MB for "
              f"{summary['seconds'] / 3600:.3f} h ({summary['gb_per_hour']:.2f} GB per hour of video)")
        store = VideoStore(directory, root)
    return annotations, store, f"{args.videos} Kinetics-like videos in {root}"


def run(args: argparse.Namespace) -> int:
    """Measure and print one row per shape and source (generated data in a temporary folder is deleted)."""
    with tempfile.TemporaryDirectory(prefix="mgvideo-bench-data-") as scratch:
        return _measure(args, scratch)


def _measure(args: argparse.Namespace, scratch: str) -> int:
    schedule, batch, annotations, store, where = _setup(args, scratch)
    shapes = distinct_shapes(schedule, batch)
    rates = model_rates(args, shapes)
    sources = [("original", None)] + ([("store", store)] if store is not None else [])
    to_stdout = args.json == "-"
    if not to_stdout:
        print(f"videos: {where}; clips/s per loader worker (on a core of its own: CPU time), CPU ms per clip "
              "by stage")
        _print_header()
    rows, unreadable, missed = [], set(), {}
    for (size, shape), model in zip(shapes, rates):
        for source, chosen in sources:
            dataset = VideoClipDataset(annotations, shape, seed=0, store=chosen)
            dataset.warn = False  # bad videos are named once, after the table
            cost = breakdown(dataset, shape, size, args.clips)
            per_worker = 1e3 / sum(cost[s] for s in STAGES)  # one worker on a core of its own
            row = {"frames": shape.frames, "crop": shape.crop, "rate": f"{shape.min_rate}-{shape.max_rate}",
                   "batch": size, "stage_batch": shape.stage_batch, "source": source,
                   "clips_per_s": round(per_worker, 2), "ms": {k: round(cost[k], 3) for k in STAGES},
                   "copies": cost.get("copies", {})}
            if model is not None:
                row["model_clips_per_s"] = round(model, 1)
                row["workers_needed"] = round(model / per_worker, 2)
            rows.append(row)
            unreadable.update(dataset.unreadable_paths())
            missed.update(dict.fromkeys(dataset.store_miss_paths()))
            if not to_stdout:
                _print_row(row)
    _summary(rows, to_stdout)
    if unreadable:
        print(f"skipped {len(unreadable)} unreadable videos (other videos read instead): "
              f"{', '.join(sorted(unreadable))}", file=sys.stderr)
    if missed:  # their store rows partly measured the originals
        print(f"store: {len(missed)} videos read from their originals (no entry, or a stale one): "
              f"{', '.join(list(missed)[:10])}{' ...' if len(missed) > 10 else ''}", file=sys.stderr)
    if args.json:
        text = json.dumps(rows, indent=1)
        if to_stdout:
            print(text)
        else:
            Path(args.json).write_text(text + "\n")
    return 0


def _print_header() -> None:
    print(f"{'T':>3} {'crop':>4} {'rate':>5} {'batch':>5} {'source':>8} {'clips/s':>8} "
          + " ".join(f"{s[:8]:>8}" for s in STAGES) + f" {'model/s':>8} {'workers':>7}")


def _print_row(row: dict) -> None:
    model = ""
    if "workers_needed" in row:
        model = f"{row['model_clips_per_s']:>8.1f} {row['workers_needed']:>7.1f}"
    print(f"{row['frames']:>3} {row['crop']:>4} {row['rate']:>5} {row['batch']:>5} {row['source']:>8} "
          f"{row['clips_per_s']:>8.1f} " + " ".join(f"{row['ms'][s]:>8.2f}" for s in STAGES) + f" {model}",
          flush=True)


def _summary(rows: list[dict], quiet: bool) -> None:
    """The headline ratio: the coarsest shape's best source against the full shape from the originals."""
    full = next(r for r in reversed(rows) if r["source"] == "original")
    coarse = [r for r in rows if (r["frames"], r["crop"]) == (rows[0]["frames"], rows[0]["crop"])]
    best = max(coarse, key=lambda r: r["clips_per_s"])
    if not quiet:
        ratio = best["clips_per_s"] / full["clips_per_s"]
        print(f"coarsest shape from the {best['source']}: {ratio:.2f}x the clips/s per worker of the full "
              "shape from the originals")
