"""`mgvideo bench tta`: training time to a target accuracy, baseline against multigrid (and its
ablations), on this machine, interleaved by seed, with the same model, data and hardware.

A bench config is a trainer recipe plus a `bench:` section (see configs/synthetic/bench.yaml). Each
variant is the recipe with the cycles switched as the variant says and its own hyperparameters applied.
Every run is evaluated at `bench.eval_points` evenly spaced iterations of its own schedule; evaluation
pauses the run's clock, so times are data loading and training only (the wall-clock is reported too).
The runs go to OUT/seed<k>/<variant>/ (the trainer's usual run folder); the tables, JSON and plot to OUT.
Every run decodes from the data's frame cache (`data.cache`), filled once before the first run's clock
starts, so no variant pays for decoding the videos.
"""

from __future__ import annotations

import argparse
import gc
import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mgvideo.bench import tta_report as R
from mgvideo.config import Config, bench_variant_config, load_config_with, resolve_recipe
from mgvideo.engine.distributed import keep_process_group
from mgvideo.errors import ConfigError
from mgvideo.multigrid.random_shapes import RandomShapeSchedule
from mgvideo.multigrid.schedule import MultigridSchedule

DEFAULT_CONFIG = "configs/synthetic/bench.yaml"
# Cycle switches of each variant: (long_cycle, short_cycle, random shapes).
VARIANTS = {
    "baseline": (False, False, False),
    "long": (True, False, False),
    "short": (False, True, False),
    "multigrid": (True, True, False),
    "random": (True, True, True),
}
TRAIN_FLOP_FACTOR = 6.0  # FLOPs per clip = 2 (multiply + add) x 3 (forward + backward) x forward MACs


@dataclass
class BenchSpec:
    """The `bench:` section: what to run and how to judge it."""

    seeds: int = 3
    variants: list[str] = field(default_factory=lambda: ["baseline", "multigrid"])
    target_top1: float | None = None  # None: the baseline's final top-1, mean over seeds
    eval_points: int = 20  # evaluations per run, evenly spaced over its own iterations (the last at the end)
    # Dotted trainer overrides per variant; 'multigrid' also applies to long, short and random.
    overrides: dict[str, dict[str, Any]] = field(default_factory=dict)


def load_bench(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> tuple[BenchSpec, Config]:
    """Read a bench config; `overrides` are `key=value` (trainer keys, or `bench.<field>`)."""
    cfg, raw, origins = load_config_with(path, overrides, extra="bench")
    return _bench_spec(raw or {}, origins, str(path)), cfg


def _bench_spec(raw: dict[str, Any], origins: dict[str, str], path: str) -> BenchSpec:
    """Validate the `bench:` mapping; errors name the file and line, or the command line."""
    spec = BenchSpec()
    for key, value in raw.items():
        if not hasattr(spec, key):
            raise ConfigError(f"{origins.get('bench.' + key, path)}: bench.{key} is not a bench setting "
                              f"(seeds, variants, target_top1, eval_points, overrides)")
        setattr(spec, key, value)

    def where(key: str) -> str:
        return f"{origins.get('bench.' + key, path)}: bench.{key}"

    if isinstance(spec.variants, str):
        spec.variants = [v.strip() for v in spec.variants.split(",") if v.strip()]
    if not isinstance(spec.seeds, int) or isinstance(spec.seeds, bool) or spec.seeds < 1:
        raise ConfigError(f"{where('seeds')} must be a positive integer, got {spec.seeds!r}")
    unknown = [v for v in spec.variants if v not in VARIANTS]
    if unknown or R.BASELINE not in spec.variants:
        raise ConfigError(f"{where('variants')} must include 'baseline' and come from "
                          f"{', '.join(VARIANTS)}; got {spec.variants}")
    if not isinstance(spec.eval_points, int) or isinstance(spec.eval_points, bool) or spec.eval_points < 1:
        raise ConfigError(f"{where('eval_points')} must be a positive integer, got {spec.eval_points!r}")
    if spec.target_top1 is not None and not (isinstance(spec.target_top1, int | float)
                                             and 0 < float(spec.target_top1) <= 100):
        raise ConfigError(f"{where('target_top1')} must be a top-1 in (0, 100] or null")
    if not isinstance(spec.overrides, dict) or any(not isinstance(v, dict) for v in spec.overrides.values()):
        raise ConfigError(f"{where('overrides')} must map variant names to key: value mappings")
    spec.variants = [R.BASELINE] + [v for v in dict.fromkeys(spec.variants) if v != R.BASELINE]
    return spec


def variant_config(cfg: Config, spec: BenchSpec, variant: str, seed: int) -> Config:
    """The trainer config of one run: the variant's cycles, its hyperparameters, the seed and the
    evaluation protocol (`eval_points` evenly spaced over the run's own iterations)."""
    long_cycle, short_cycle, _ = VARIANTS[variant]
    return bench_variant_config(cfg, spec.overrides, variant, (long_cycle, short_cycle), "bench config",
                                **{"train.seed": seed, "train.eval_points": spec.eval_points,
                                   "train.eval_period_samples": 0, "train.eval_period": 0})


def variant_schedule(run_cfg: Config, variant: str, seed: int) -> MultigridSchedule | None:
    """The random-shape ablation's schedule (seeded), or None: the trainer builds the config's own."""
    if not VARIANTS[variant][2]:
        return None
    from mgvideo.engine.builders import build_schedule

    return RandomShapeSchedule(build_schedule(run_cfg).cfg, seed)


# ---- running -----------------------------------------------------------------------------------------


def train_fresh(cfg: Config, out_dir: Path,
                schedule: MultigridSchedule | None = None) -> tuple[list[dict[str, Any]], list[int]]:
    """Train one run from scratch with the trainer (a fresh clock and model: a benchmark run never
    resumes); return its metrics records (the last evaluation is of the final model) and the final
    model's top-1 hit per validation clip (empty for multi-label data)."""
    from mgvideo.engine.runlog import read_records
    from mgvideo.engine.trainer import train

    shutil.rmtree(out_dir, ignore_errors=True)
    train(cfg, out_dir, schedule=schedule)
    hits = out_dir / "val_hits.json"
    return read_records(out_dir / "metrics.jsonl"), json.loads(hits.read_text()) if hits.exists() else []


def clip_gflops_fn(cfg: Config):
    """`(frames, crop) -> training GFLOPs of one clip` for the config's model, counted on meta tensors."""
    from mgvideo.models.flops import clip_cost_fn

    gmacs = clip_cost_fn(cfg.model.name, cfg.data.num_classes, **cfg.model.options)
    return lambda frames, crop: TRAIN_FLOP_FACTOR * gmacs(frames, crop)


def run_bench(spec: BenchSpec, cfg: Config, out: Path, log=print) -> dict[str, Any]:
    """Every variant for every seed, interleaved by seed (baseline first, so each seed's target is fixed
    before the others run); returns the JSON summary and writes tta.md, tta.json and tta.png to `out`."""
    out.mkdir(parents=True, exist_ok=True)
    keep_process_group()  # under torchrun: one process group for every run, not one per run
    flops = clip_gflops_fn(cfg)
    runs: list[R.RunFigures] = []
    started = time.perf_counter()
    for seed in range(spec.seeds):
        for variant in spec.variants:
            run_cfg = variant_config(cfg, spec, variant, seed)
            schedule = variant_schedule(run_cfg, variant, seed)
            records, hits = train_fresh(run_cfg, out / f"seed{seed}" / variant, schedule)
            gc.collect()  # end the finished run's loader workers now
            figures = R.figures_from_records(variant, seed, records, flops, hits)
            runs.append(figures)
            log(f"seed {seed} {variant}: final top-1 {figures.final_top1:.2f} after {figures.train_s:.0f} s "
                f"of training ({figures.wall_s:.0f} s with evaluation, {figures.iterations} iterations); "
                f"bench time so far {(time.perf_counter() - started) / 60:.1f} min")
    summary = R.compare(runs, spec.target_top1)
    summary["bench_minutes"] = round((time.perf_counter() - started) / 60, 2)
    summary["seeds"] = spec.seeds
    (out / "tta.md").write_text(R.markdown_table(summary))
    (out / "tta.json").write_text(json.dumps(summary, indent=2))
    R.plot_curves(summary, out / "tta.png")
    return summary


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "tta", help="time to a target accuracy: baseline vs multigrid on this machine",
        description="Train the baseline and multigrid (and ablations) with the same model and data, "
                    "interleaved by seed; report training time to the baseline's final top-1 and to "
                    "80/90/95 % of it, with bootstrap intervals.")
    parser.add_argument("--config", default=DEFAULT_CONFIG, help=f"bench config (default {DEFAULT_CONFIG})")
    parser.add_argument("--seeds", type=int, default=None, help="number of seeds (default: the config's)")
    parser.add_argument("--variants", default=None,
                        help=f"comma-separated, from {','.join(VARIANTS)} (default: the config's)")
    parser.add_argument("--out", type=Path, default=Path("runs/bench_tta"), help="output folder")
    parser.add_argument("--json", type=Path, default=None, help="also write the JSON summary here")
    parser.add_argument("overrides", nargs="*", metavar="key=value",
                        help="trainer overrides for every run (e.g. data.workers=2) or bench.<field>=...")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    overrides = list(args.overrides)
    if args.seeds is not None:
        overrides.append(f"bench.seeds={args.seeds}")
    if args.variants is not None:
        overrides.append(f"bench.variants=[{args.variants}]")
    spec, cfg = load_bench(resolve_recipe(args.config), overrides)
    summary = run_bench(spec, cfg, args.out)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(summary, indent=2))
    print((args.out / "tta.md").read_text())
    print(f"speed-up to target (median over {spec.seeds} seeds): {R._fmt(summary['speedup'], 2, '×')}; "
          f"final top-1 delta {R._fmt(summary['final_top1_delta'], 2)} points; "
          f"wrote {args.out / 'tta.md'}, {args.out / 'tta.json'}, {args.out / 'tta.png'}")
    return 0
