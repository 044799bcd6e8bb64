"""`mgvideo demo [--out DIR] [--with-baseline]`: the whole method on a CPU in a few minutes.

Generates the synthetic videos if missing, trains a small 3D CNN with multigrid, runs the multi-view
test, and prints a summary table and where the plots are. Rerunning resumes or reuses finished parts.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from mgvideo.config import load_config, resolve_recipe
from mgvideo.engine.builders import baseline_config

RECIPE = "synthetic/demo"


def register(subparsers) -> None:
    parser = subparsers.add_parser("demo", help="generate data, train with multigrid, test, summarise (CPU)")
    parser.add_argument("--out", type=Path, default=Path("runs/demo"), help="output directory")
    parser.add_argument("--with-baseline", action="store_true",
                        help="also train the baseline schedule, for a measured comparison (about 3x longer)")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="overrides of the demo recipe")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from mgvideo.commands.test import evaluate_checkpoint
    from mgvideo.engine.trainer import train

    started = time.perf_counter()
    cfg = load_config(resolve_recipe(RECIPE), args.overrides)
    variants = {"multigrid": cfg}
    if args.with_baseline:
        variants["baseline"] = baseline_config(cfg)
    rows = {}
    for name, variant in variants.items():
        out = args.out / name
        summary = _finished(out) or train(variant, out)
        test = evaluate_checkpoint(variant, out / "model_final.pt", out / "test")
        rows[name] = (summary, test)
    print(_table(rows))
    print(f"\nplots: {args.out / 'multigrid' / 'training.png'}, {args.out / 'multigrid' / 'shapes.png'}")
    print(f"demo wall-clock (data, training, testing): {(time.perf_counter() - started) / 60:.1f} min")
    if line := cache_line(cfg):
        print(line)
    return 0


def cache_line(cfg) -> str:
    """How much disk the decoded-frame cache takes, and where (it is far larger than the videos)."""
    from mgvideo.data.prepare import build_frame_cache

    cache = build_frame_cache(cfg)
    if cache is None or not cache.directory.is_dir():
        return ""
    cached = _bytes(cache.directory)
    videos = _bytes(Path(cfg.data.root)) - cached if cache.directory.is_relative_to(cfg.data.root) else \
        _bytes(Path(cfg.data.root))
    return (f"frame cache: {cached / 1e9:.2f} GB of decoded frames in {cache.directory} (the videos: "
            f"{videos / 1e6:.0f} MB); delete it to free the space, or set data.cache=none to decode on the "
            "fly")


def _bytes(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())


def _finished(out: Path) -> dict | None:
    """The summary of a run that already completed (so a rerun skips straight to testing)."""
    path = out / "summary.json"
    return json.loads(path.read_text()) if path.exists() and (out / "model_final.pt").exists() else None


def _table(rows: dict[str, tuple[dict, dict]]) -> str:
    head = (f"{'schedule':<10} {'val top-1':>9} {'test top-1':>10} {'test top-5':>10} {'views':>5} "
            f"{'train min':>9} {'iterations':>10} {'baseline its':>12} {'saving':>7}")
    lines = [head, "-" * len(head)]
    for name, (summary, test) in rows.items():
        val = summary["val"].get("top1", float("nan"))
        lines.append(
            f"{name:<10} {val:>9.2f} {test['top1']:>10.2f} {test['top5']:>10.2f} {test['views']:>5} "
            f"{summary['wall_clock_s'] / 60:>9.2f} {summary['iterations']:>10} "
            f"{summary['baseline_iterations']:>12} {summary['iteration_saving']:>6.2f}x"
        )
    lines.append("val: 1 centre clip at the full shape after precise BN; test: clips x 3 crops, summed "
                 "softmax; saving: baseline-schedule iterations / iterations run")
    return "\n".join(lines)
