"""`mgvideo bench tta`: training time to a target accuracy, baseline against multigrid (and its
ablations), on this machine, interleaved by seed, with the same model, data and hardware.

A bench config is a trainer recipe plus a `bench:` section (see configs/synthetic/bench.yaml). Each
variant is the recipe with the cycles switched as the variant says and its own hyperparameters applied.
Every run is evaluated at `bench.eval_points` evenly spaced iterations of its own schedule (a baseline
budget run, a frontier point, at `bench.frontier_eval_points`); evaluation pauses the run's clock, so times
are data loading and training only (the wall-clock is reported too).
The runs go to OUT/seed<k>/<variant>/ (the trainer's usual run folder); the tables, JSON and plot to OUT.
Every run decodes from the data's frame cache (`data.cache`), filled once before the first run's clock
starts, so no variant pays for decoding the videos.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mgvideo.bench import tta_output as O
from mgvideo.bench import tta_report as R
from mgvideo.bench.bench_config import bench_variant_config, load_bench_config
from mgvideo.config import Config, override, resolve_recipe, to_dict
from mgvideo.engine.distributed import keep_process_group
from mgvideo.engine.records import Record, read_records
from mgvideo.errors import ConfigError

DEFAULT_CONFIG = "configs/synthetic/bench.yaml"
# Each base variant: its (long_cycle, short_cycle) switches and the schedule of the family it runs.
VARIANTS = {
    "baseline": (False, False, "multigrid"),
    "long": (True, False, "multigrid"),
    "short": (False, True, "multigrid"),
    "multigrid": (True, True, "multigrid"),
    "random": (True, True, "random"),
    "progressive": (False, False, "progressive"),
}
MULTIGRID_FAMILY = ("long", "short", "multigrid", "random")  # they take bench.overrides.multigrid
TRAIN_FLOP_FACTOR = 6.0  # FLOPs per clip = 2 (multiply + add) x 3 (forward + backward) x forward MACs


@dataclass(frozen=True)
class VariantName:
    """A variant as written on the command line: `base[+option...][@budget]`, e.g. `multigrid+finish`
    or `baseline@0.5`. Options are the bench config's `options`; the budget scales the recipe's epochs
    (max epoch, LR steps and warmup together), `match` to multigrid's training iterations."""

    base: str
    options: tuple[str, ...] = ()
    budget: float | str = 1.0

    @classmethod
    def parse(cls, text: str) -> VariantName:
        head, _, budget = text.partition("@")
        base, *options = head.split("+")
        if not budget:
            return cls(base, tuple(options))
        if budget == "match":
            return cls(base, tuple(options), "match")
        try:
            return cls(base, tuple(options), float(budget))
        except ValueError:
            raise ConfigError(f"variant '{text}': the budget after @ must be a number or 'match'") from None

    def __str__(self) -> str:
        budget = "" if self.budget == 1.0 else f"@{self.budget:g}" if isinstance(self.budget, float) else \
            f"@{self.budget}"
        return "+".join((self.base, *self.options)) + budget


@dataclass
class BenchSpec:
    """The `bench:` section: what to run and how to judge it."""

    seeds: int = 3
    variants: list[str] = field(default_factory=lambda: ["baseline", "multigrid"])
    target_top1: float | None = None  # None: the baseline's final top-1, mean over seeds
    eval_points: int = 20  # evaluations per run, evenly spaced over its own iterations (the last at the end)
    # Evaluations of a baseline budget run (baseline@0.5, @match): a frontier point, read at its end only,
    # so the default spends no evaluation time on its curve.
    frontier_eval_points: int = 1
    # Dotted trainer overrides per base variant; 'multigrid' also applies to long, short and random.
    overrides: dict[str, dict[str, Any]] = field(default_factory=dict)
    # Named options, each a mapping of dotted trainer overrides, used as `variant+option`.
    options: dict[str, dict[str, Any]] = field(default_factory=dict)
    reuse: bool = False  # keep a finished run whose folder holds the same config (an interrupted bench)
    report_only: bool = False  # train nothing: report the finished runs of the same config that OUT holds


def load_bench(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> tuple[BenchSpec, Config]:
    """Read a bench config; `overrides` are `key=value` (trainer keys, or `bench.<field>`)."""
    cfg, raw, origins = load_bench_config(path, overrides)
    return _bench_spec(raw or {}, origins, str(path)), cfg


def _bench_spec(raw: dict[str, Any], origins: dict[str, str], path: str) -> BenchSpec:
    """Validate the `bench:` mapping; errors name the file and line, or the command line."""
    spec = BenchSpec()
    for key, value in raw.items():
        if not hasattr(spec, key):
            raise ConfigError(f"{origins.get('bench.' + key, path)}: bench.{key} is not a bench setting "
                              f"({', '.join(f.name for f in dataclasses.fields(BenchSpec))})")
        setattr(spec, key, value)

    def where(key: str) -> str:
        return f"{origins.get('bench.' + key, path)}: bench.{key}"

    if isinstance(spec.variants, str):
        spec.variants = [v.strip() for v in spec.variants.split(",") if v.strip()]
    if not isinstance(spec.seeds, int) or isinstance(spec.seeds, bool) or spec.seeds < 1:
        raise ConfigError(f"{where('seeds')} must be a positive integer, got {spec.seeds!r}")
    if not isinstance(spec.options, dict) or any(not isinstance(v, dict) for v in spec.options.values()):
        raise ConfigError(f"{where('options')} must map option names to key: value mappings")
    spec.variants = [str(v) for v in spec.variants]
    names = [VariantName.parse(v) for v in spec.variants]
    unknown = [str(n) for n in names if n.base not in VARIANTS]
    if unknown or R.BASELINE not in spec.variants:
        raise ConfigError(f"{where('variants')} must include 'baseline' and be base[+option...][@budget] "
                          f"with a base from {', '.join(VARIANTS)}; got {spec.variants}")
    missing = sorted({o for n in names for o in n.options} - set(spec.options))
    if missing:
        raise ConfigError(f"{where('variants')}: option(s) {', '.join(missing)} are not defined in "
                          f"bench.options (defined: {', '.join(spec.options) or 'none'})")
    for key in ("eval_points", "frontier_eval_points"):
        value = getattr(spec, key)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ConfigError(f"{where(key)} must be a positive integer, got {value!r}")
    if spec.target_top1 is not None and not (isinstance(spec.target_top1, int | float)
                                             and 0 < float(spec.target_top1) <= 100):
        raise ConfigError(f"{where('target_top1')} must be a top-1 in (0, 100] or null")
    if not isinstance(spec.overrides, dict) or any(not isinstance(v, dict) for v in spec.overrides.values()):
        raise ConfigError(f"{where('overrides')} must map variant names to key: value mappings")
    spec.variants = [R.BASELINE] + [v for v in dict.fromkeys(spec.variants) if v != R.BASELINE]
    return spec


def variant_config(cfg: Config, spec: BenchSpec, variant: str, seed: int) -> Config:
    """The trainer config of one run: the variant's base (cycles and schedule), the bench's per-variant
    hyperparameters, its options, its budget, the seed and the evaluation protocol (`eval_points` evenly
    spaced over the run's own iterations; `frontier_eval_points` for a baseline budget run)."""
    name = VariantName.parse(variant)
    long_cycle, short_cycle, schedule = VARIANTS[name.base]
    dotted: dict[str, Any] = {}
    for option in name.options:
        dotted.update(spec.options[option])
    frontier_point = name.base == R.BASELINE and not name.options and name.budget != 1.0
    points = spec.frontier_eval_points if frontier_point else spec.eval_points
    dotted.update({"train.seed": seed, "train.eval_points": points, "train.eval_period_samples": 0,
                   "train.eval_period": 0})
    switches = {"multigrid.long_cycle": long_cycle, "multigrid.short_cycle": short_cycle,
                "multigrid.schedule": schedule}
    family = name.base in MULTIGRID_FAMILY
    run_cfg = bench_variant_config(cfg, spec.overrides, name.base, switches,
                                   f"bench config: variant {variant}", family, **dotted)
    budget = match_budget(cfg, spec) if name.budget == "match" else float(name.budget)
    return scale_budget(run_cfg, budget) if budget != 1.0 else run_cfg


def match_budget(cfg: Config, spec: BenchSpec) -> float:
    """The budget at which the baseline trains as many iterations as multigrid (baseline epochs of
    iterations of the bench's multigrid run over the baseline's epochs)."""
    from mgvideo.engine.builders import build_schedule

    multigrid = build_schedule(variant_config(cfg, spec, R.MULTIGRID, 0))
    return multigrid.total_iterations() / cfg.solver.max_epoch


def scale_budget(cfg: Config, budget: float) -> Config:
    """The recipe at `budget` times its epochs: max epoch, LR steps and warmup scaled together, rounded
    to whole epochs, the steps kept strictly increasing and inside the run."""
    s = cfg.solver
    if not budget > 0:
        raise ConfigError(f"bench budget: must be > 0 (got {budget!r})")
    max_epoch = max(int(round(s.max_epoch * budget)), len(s.steps))
    steps = [int(round(step * budget)) for step in s.steps]
    for i in range(len(steps) - 1, 0, -1):  # from the end: inside the run, then strictly increasing
        steps[i] = min(steps[i], (steps[i + 1] if i + 1 < len(steps) else max_epoch) - 1)
    for i in range(1, len(steps)):
        steps[i] = max(steps[i], steps[i - 1] + 1)
    return override(cfg, **{"solver.max_epoch": max_epoch, "solver.steps": steps,
                            "solver.warmup_epochs": s.warmup_epochs * max_epoch / s.max_epoch})


# ---- running -----------------------------------------------------------------------------------------


def train_fresh(cfg: Config, out_dir: Path, reuse: bool = False) -> tuple[list[Record], list[int]]:
    """Train one run from scratch with the trainer (a fresh clock and model: a benchmark run never
    resumes); return its metrics records (the last evaluation is of the final model) and the final
    model's top-1 hit per validation clip (empty for multi-label data). With `reuse`, a finished run
    in `out_dir` of the very same config is read instead of trained again."""
    from mgvideo.engine.trainer import read_val_hits, train

    if not (reuse and finished_with(cfg, out_dir)):
        shutil.rmtree(out_dir, ignore_errors=True)
        train(cfg, out_dir)
    hits = out_dir / "val_hits.json"
    return read_records(out_dir / "metrics.jsonl"), read_val_hits(hits) if hits.exists() else []


def finished_with(cfg: Config, out_dir: Path) -> bool:
    """Whether `out_dir` holds a finished run (its summary written) of exactly this config."""
    import yaml

    try:
        saved = yaml.safe_load((out_dir / "config.yaml").read_text())
    except (OSError, yaml.YAMLError):
        return False
    return (out_dir / "summary.json").exists() and saved == to_dict(cfg)


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
            folder = out / f"seed{seed}" / variant
            if spec.report_only and not finished_with(run_cfg, folder):
                log(f"seed {seed} {variant}: no finished run of this config in {out}; left out")
                continue
            records, hits = train_fresh(run_cfg, folder, spec.reuse or spec.report_only)
            gc.collect()  # end the finished run's loader workers now
            figures = R.figures_from_records(variant, seed, records, flops, hits)
            runs.append(figures)
            log(f"seed {seed} {variant}: final top-1 {figures.final_top1:.2f} after {figures.train_s:.0f} s "
                f"of training ({figures.wall_s:.0f} s with evaluation, {figures.iterations} iterations); "
                f"bench time so far {(time.perf_counter() - started) / 60:.1f} min")
    summary = R.compare(runs, spec.target_top1)
    summary["bench_minutes"] = round((time.perf_counter() - started) / 60, 2)
    summary["seeds"] = spec.seeds
    (out / "tta.md").write_text(O.markdown_table(summary))
    (out / "tta.json").write_text(json.dumps(summary, indent=2))
    O.plot_curves(summary, out / "tta.png")
    return summary


DESCRIPTION = """Train the baseline and multigrid (and ablations) with the same model and data, interleaved by
seed; report the training-time ratio and the final top-1 difference with 95 % intervals over seeds, the time
to the baseline's final top-1 (and to 80/90/95 % of it) on the seeds' mean curves, and the frontier of
final top-1 against training time (variant@budget), with the speed-up at equal accuracy on it. A run of the
default config takes about 28 minutes on a 2-core CPU (2 seeds x baseline, baseline@match and multigrid,
data ready), longer with more seeds or variants; --quick is a first look, and --reuse keeps the finished
runs of an interrupted benchmark."""


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "tta", help="time to a target accuracy: baseline vs multigrid on this machine",
        description=DESCRIPTION)
    parser.add_argument("--config", default=DEFAULT_CONFIG, help=f"bench config (default {DEFAULT_CONFIG})")
    parser.add_argument("--seeds", type=int, default=None, help="number of seeds (default: the config's)")
    parser.add_argument("--variants", default=None,
                        help=f"comma-separated, from {','.join(VARIANTS)} (default: the config's)")
    parser.add_argument("--out", type=Path, default=Path("runs/bench_tta"), help="output folder")
    parser.add_argument("--json", type=Path, default=None, help="also write the JSON summary here")
    parser.add_argument("--report-only", action="store_true",
                        help="train nothing: remake the tables, JSON and plot from the finished runs in OUT")
    parser.add_argument("--quick", action="store_true",
                        help="a first look: one seed and 5 evaluations per run (bench.yaml: about 10 minutes "
                             "on 2 cores, against about 28 for its 2 seeds and 20 evaluations)")
    parser.add_argument("--reuse", action="store_true",
                        help="keep finished runs in OUT whose config is the same (resume a stopped bench)")
    parser.add_argument("overrides", nargs="*", metavar="key=value",
                        help="trainer overrides for every run (e.g. data.workers=2) or bench.<field>=...")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    overrides = list(args.overrides)
    if args.seeds is not None:
        overrides.append(f"bench.seeds={args.seeds}")
    if args.variants is not None:
        overrides.append(f"bench.variants=[{args.variants}]")
    if args.reuse:
        overrides.append("bench.reuse=true")
    if args.report_only:
        overrides.append("bench.report_only=true")
    if args.quick:
        overrides += ["bench.seeds=1", "bench.eval_points=5"]
    spec, cfg = load_bench(resolve_recipe(args.config), overrides)
    summary = run_bench(spec, cfg, args.out)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(summary, indent=2))
    print((args.out / "tta.md").read_text())
    lead = summary.get("headline")
    print(lead["text"] if lead else "no variant against the baseline: nothing to compare")
    print(f"wrote {args.out / 'tta.md'}, {args.out / 'tta.json'}, {args.out / 'tta.png'}")
    return 0
