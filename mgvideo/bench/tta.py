"""`mgvideo bench tta`: time to a fixed target accuracy, baseline against multigrid (and its ablations),
on this machine, interleaved by seed, with the same model, data, evaluation points and hardware.

A bench config is a trainer recipe plus a `bench:` section (see configs/synthetic/bench.yaml). Each
variant is the recipe with the cycles switched as the variant says and its own hyperparameters applied.
The runs go to OUT/seed<k>/<variant>/ (the trainer's usual run folder); the tables, JSON and plot to OUT.
Every run decodes from the data's frame cache (`data.cache`), filled once before the first run's clock
starts, so no variant pays for decoding the videos.
"""

from __future__ import annotations

import argparse
import gc
import json
import random
import shutil
import time
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from mgvideo.bench import tta_report as R
from mgvideo.config import Config, load_config, override, resolve_recipe, yaml_key_lines
from mgvideo.errors import ConfigError
from mgvideo.multigrid.schedule import MultigridSchedule, Stage

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
    target_top1: float | None = None  # None: each seed's baseline final top-1
    eval_every_samples: int = 2400  # evaluations at the same sample counts for every variant
    # Dotted trainer overrides per variant; 'multigrid' also applies to long, short and random.
    overrides: dict[str, dict[str, Any]] = field(default_factory=dict)


def load_bench(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> tuple[BenchSpec, Config]:
    """Read a bench config; `overrides` are `key=value` (trainer keys, or `bench.<field>`)."""
    path = Path(path)
    try:
        text = path.read_text()
        raw = yaml.safe_load(text) or {}
        lines = yaml_key_lines(text)
    except OSError as err:
        raise ConfigError(f"{path}: cannot read bench config: {err.strerror}") from err
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: invalid YAML: {err}") from err
    if not isinstance(raw, dict) or not isinstance(raw.get("bench", {}), dict):
        raise ConfigError(f"{path}: expected trainer sections and a 'bench' mapping")
    bench_raw = dict(raw.pop("bench", None) or {})
    dotted: dict[str, Any] = {}
    for section, values in raw.items():
        if not isinstance(values, dict):
            raise ConfigError(f"{path}:{lines.get(section, '?')}: section '{section}' must be a mapping")
        dotted.update({f"{section}.{k}": v for k, v in values.items()})
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"override '{item}': expected key=value, e.g. bench.seeds=1")
        lines.pop(key, None)  # from now on this key comes from the command line
        if key.startswith("bench."):
            bench_raw[key[len("bench."):]] = yaml.safe_load(value)
        else:
            dotted[key] = yaml.safe_load(value)
    try:
        cfg = override(Config(), **dotted)  # all at once: fields are validated together
    except ConfigError as err:
        named = [k for k in dotted if k in str(err)]
        where = str(path)
        if named:
            where = f"{path}:{lines[named[0]]}" if named[0] in lines else "command line"
        raise ConfigError(f"{where}: {err}") from err
    return _bench_spec(bench_raw, path, lines), cfg


def load_any_config(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """A trainer recipe, or a bench config's multigrid run: what `plan`, `bench data` and `profile` read."""
    if not _is_bench_config(path):
        return load_config(path, overrides)
    spec, cfg = load_bench(path, overrides)
    return variant_config(cfg, spec, R.MULTIGRID, cfg.train.seed)


def _is_bench_config(path: str | Path) -> bool:
    try:
        raw = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError):
        return False  # load_config reports it, with the file's name
    return isinstance(raw, dict) and "bench" in raw


def _bench_spec(raw: dict[str, Any], path: Path, lines: dict[str, int]) -> BenchSpec:
    spec = BenchSpec()
    for key, value in raw.items():
        where = f"{path}:{lines.get('bench.' + key, '?')}: bench.{key}"
        if not hasattr(spec, key):
            raise ConfigError(f"{where} is not a bench setting (seeds, variants, target_top1, "
                              "eval_every_samples, overrides)")
        setattr(spec, key, value)
    where = f"{path}:{lines.get('bench', '?')}"
    if isinstance(spec.variants, str):
        spec.variants = [v.strip() for v in spec.variants.split(",") if v.strip()]
    if not isinstance(spec.seeds, int) or spec.seeds < 1:
        raise ConfigError(f"{where}: bench.seeds must be a positive integer, got {spec.seeds!r}")
    unknown = [v for v in spec.variants if v not in VARIANTS]
    if unknown or R.BASELINE not in spec.variants:
        raise ConfigError(f"{where}: bench.variants must include 'baseline' and come from "
                          f"{', '.join(VARIANTS)}; got {spec.variants}")
    if not isinstance(spec.eval_every_samples, int) or spec.eval_every_samples < 1:
        raise ConfigError(f"{where}: bench.eval_every_samples must be a positive integer")
    if spec.target_top1 is not None and not 0 < float(spec.target_top1) <= 100:
        raise ConfigError(f"{where}: bench.target_top1 must be a top-1 in (0, 100] or null")
    if not isinstance(spec.overrides, dict) or any(not isinstance(v, dict) for v in spec.overrides.values()):
        raise ConfigError(f"{where}: bench.overrides must map variant names to key: value mappings")
    spec.variants = [R.BASELINE] + [v for v in dict.fromkeys(spec.variants) if v != R.BASELINE]
    return spec


def variant_config(cfg: Config, spec: BenchSpec, variant: str, seed: int) -> Config:
    """The trainer config of one run: the variant's cycles, its hyperparameters, the seed and the shared
    evaluation points."""
    long_cycle, short_cycle, _ = VARIANTS[variant]
    dotted: dict[str, Any] = {"multigrid.long_cycle": long_cycle, "multigrid.short_cycle": short_cycle,
                              "train.seed": seed, "train.eval_period_samples": spec.eval_every_samples}
    if variant != R.BASELINE:
        dotted.update(spec.overrides.get(R.MULTIGRID, {}))
    dotted.update(spec.overrides.get(variant, {}))
    try:
        return override(cfg, **dotted)
    except ConfigError as err:
        raise ConfigError(f"bench.overrides.{variant}: {err}") from err


# ---- the random-shape ablation ----------------------------------------------------------------------


def random_shape_schedule(schedule: MultigridSchedule, seed: int) -> MultigridSchedule:
    """The paper's ablation: the same long-cycle shapes, but each epoch draws its shape at random instead
    of going coarse to fine. Within each LR step a shape is drawn with probability proportional to the
    epochs the ordered schedule gives it, so the expected cost (and the batch-scaled LR, B·T·S² constant)
    matches multigrid's; the fine-tuning stage stays last and unchanged."""
    rng = random.Random(seed)
    stages: list[Stage] = []
    for step in sorted({s.lr_step for s in schedule.stages if not s.finetune}):
        pool = [s for s in schedule.stages if s.lr_step == step and not s.finetune and s.epochs > 0]
        for epoch in range(pool[0].start_epoch, pool[-1].end_epoch):
            drawn = rng.choices(pool, weights=[s.epochs for s in pool])[0]
            stages.append(Stage(len(stages), step, drawn.batch_factor, drawn.frames, drawn.crop, epoch,
                                epoch + 1, drawn.slots))
    last = schedule.stages[-1]
    stages.append(Stage(len(stages), last.lr_step, last.batch_factor, last.frames, last.crop,
                        last.start_epoch, last.end_epoch, last.slots, finetune=True))
    shuffled = MultigridSchedule.__new__(MultigridSchedule)
    shuffled.__dict__.update(schedule.__dict__)
    ends = [s.end_epoch for s in stages]
    lrs = [schedule.cfg.gamma**s.lr_step * s.batch_factor for s in stages]
    shuffled.stages = tuple(stages)
    shuffled.steps = tuple([0] + ends[:-1] + [(ends[-2] + ends[-1]) // 2])
    shuffled.lrs = tuple(lrs[:-1] + [lrs[-2], lrs[-1]])
    return shuffled


# ---- running -----------------------------------------------------------------------------------------


def train_fresh(cfg: Config, out_dir: Path,
                schedule: MultigridSchedule | None = None) -> list[dict[str, Any]]:
    """Train one run from scratch with the trainer (a fresh clock and model: a benchmark run never
    resumes) and return its metrics records; its last evaluation is always of the final model."""
    from mgvideo.engine.runlog import read_records
    from mgvideo.engine.trainer import train

    shutil.rmtree(out_dir, ignore_errors=True)
    train(cfg, out_dir, schedule=schedule)
    return read_records(out_dir / "metrics.jsonl")


def clip_gflops_fn(cfg: Config):
    """`(frames, crop) -> training GFLOPs of one clip` for the config's model, counted on meta tensors."""
    import torch

    from mgvideo.models import build_model
    from mgvideo.models.flops import count_gmacs

    with torch.device("meta"):
        model = build_model(cfg.model.name, cfg.data.num_classes, **cfg.model.options)

    @cache
    def clip_gflops(frames: int, crop: int) -> float:
        return TRAIN_FLOP_FACTOR * count_gmacs(model, (1, 3, frames, crop, crop))

    return clip_gflops


def run_bench(spec: BenchSpec, cfg: Config, out: Path, log=print) -> dict[str, Any]:
    """Every variant for every seed, interleaved by seed (baseline first, so each seed's target is fixed
    before the others run); returns the JSON summary and writes tta.md, tta.json and tta.png to `out`."""
    out.mkdir(parents=True, exist_ok=True)
    flops = clip_gflops_fn(cfg)
    runs: list[R.RunFigures] = []
    started = time.perf_counter()
    for seed in range(spec.seeds):
        for variant in spec.variants:
            run_cfg = variant_config(cfg, spec, variant, seed)
            schedule = None
            if VARIANTS[variant][2]:
                from mgvideo.engine.builders import build_schedule

                schedule = random_shape_schedule(build_schedule(run_cfg), seed)
            records = train_fresh(run_cfg, out / f"seed{seed}" / variant, schedule)
            gc.collect()  # end the finished run's loader workers now
            figures = R.figures_from_records(variant, seed, records, flops)
            runs.append(figures)
            log(f"seed {seed} {variant}: final top-1 {figures.final_top1:.2f} after {figures.wall_s:.0f} s "
                f"({figures.iterations} iterations); bench time so far "
                f"{(time.perf_counter() - started) / 60:.1f} min")
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
        description="Train the baseline and multigrid (and ablations) with the same model, data and "
                    "evaluation points, interleaved by seed; report time to the target top-1.")
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
