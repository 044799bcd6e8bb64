"""Figures of the time-to-accuracy benchmark, computed from the runs' `metrics.jsonl` records: time to a
target top-1 on the seeds' mean curves, per-stage cost, FLOPs, training-time ratios, the frontier and the
headline, as the JSON summary (tta_output.py writes its tables and plot). Pure functions of the records
(no training here), so the harness logic is testable on its own.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from mgvideo.bench import frontier as F
from mgvideo.bench import tta_headline as H
from mgvideo.bench import tta_stats as S
from mgvideo.engine.records import EvalRecord, PreciseBNRecord, Record, TrainRecord

BASELINE = "baseline"
MULTIGRID = "multigrid"  # long + short cycle: the method itself


@dataclass
class RunFigures:
    """What one training run (one variant, one seed) measured. Times are the run's training clock (data
    loading and training; evaluation paused it) unless named wall."""

    variant: str
    seed: int
    evals: list[tuple[int, float, float]]  # (samples trained, training s, val top-1 %) per evaluation
    train_s: float  # the training clock at the run's last record
    iterations: int
    samples: int
    train_gflops: float  # forward + backward over every training clip
    stages: list[dict[str, Any]] = field(default_factory=list)
    wall_s: float = 0.0  # wall-clock of the whole run, evaluation included
    overhead_s: float = 0.0  # training clock outside the iterations (stage-end precise BN, checkpoints)
    eval_s: float = 0.0  # off the clock: evaluations (their precise BN at the full shape, then validation)
    stage_bn_s: float = 0.0  # of the overhead: precise BN at stage ends that no evaluation superseded
    val_hits: list[int] = field(default_factory=list)  # the final model's top-1 hit per validation clip
    target_top1: float = float("nan")
    time_to_target_s: float | None = None

    @property
    def final_top1(self) -> float:
        """Top-1 of the last evaluation (the run's final accuracy)."""
        return self.evals[-1][2] if self.evals else float("nan")


def median(values: Iterable[float | None]) -> float | None:
    """Median of the values that exist (None and NaN are left out); None if there are none."""
    kept = [v for v in values if v is not None and not math.isnan(v)]
    return statistics.median(kept) if kept else None


def figures_from_records(variant: str, seed: int, records: Sequence[Record],
                         clip_gflops: Callable[[int, int], float],
                         val_hits: Sequence[int] = ()) -> RunFigures:
    """Summarise one run's metrics records. `clip_gflops(frames, crop)` is the training cost (forward and
    backward) of one clip of that shape; `val_hits` the final model's per-clip top-1 hits."""
    its = [r for r in records if isinstance(r, TrainRecord)]
    validations = [r for r in records if isinstance(r, EvalRecord)]
    evals = [(int(r.samples), float(r.time), float(r.top1)) for r in validations]
    times = [r.time for r in records]
    train_s = max(times) if times else 0.0
    busy = sum(r.seconds for r in its)
    gflops = sum(r.batch * clip_gflops(r.frames, r.crop) for r in its)
    eval_s = sum(r.seconds for r in validations)
    walls = [r.wall for r in validations if r.wall is not None]
    wall_s = max(walls) if walls else train_s + eval_s
    stage_bn_s = sum(r.seconds for r in records if isinstance(r, PreciseBNRecord))
    return RunFigures(variant, seed, evals, train_s, _iterations(its), sum(r.batch for r in its), gflops,
                      stage_costs(its), wall_s, max(train_s - busy, 0.0), eval_s, stage_bn_s, list(val_hits))


def _iterations(its: Sequence[TrainRecord]) -> int:
    """Iterations covered by training records (a record sums `iterations` steps of one shape)."""
    return sum(r.iterations for r in its)


def stage_costs(its: Sequence[TrainRecord]) -> list[dict[str, Any]]:
    """Per long-cycle stage: iterations, mean ms/iteration, ms/clip and the fraction of time spent waiting
    for data, with the stage's shapes as 'TxS' strings."""
    by_stage: dict[int, list[TrainRecord]] = {}
    for r in its:
        by_stage.setdefault(int(r.stage), []).append(r)
    rows = []
    for stage, group in sorted(by_stage.items()):
        total = sum(r.seconds for r in group)
        waited = sum(r.data_wait * r.seconds for r in group)
        shapes = sorted({(r.frames, r.crop) for r in group}, key=lambda fc: fc[0] * fc[1] ** 2)
        rows.append({
            "stage": stage, "shapes": [f"{f}x{c}" for f, c in shapes], "iterations": _iterations(group),
            "ms_per_iter": round(1000 * total / _iterations(group), 1),
            "ms_per_clip": round(1000 * total / max(sum(r.batch for r in group), 1), 2),
            "data_wait": round(waited / total, 3) if total > 0 else 0.0,
        })
    return rows


def compare(runs: Sequence[RunFigures], configured_target: float | None,
            fractions: Sequence[float] = S.FRACTIONS) -> dict[str, Any]:
    """Pair every run with its seed's baseline against one target: the configured top-1, else the
    baselines' final top-1, mean over seeds. Sets `target_top1` and `time_to_target_s` on the runs.
    Returns the JSON summary: `headline` (multigrid's training-time ratio and final top-1 difference with
    their intervals, its speed-ups to the target and at equal accuracy), `speedup` (to the target, on the
    seeds' mean curves), `final_top1_delta`, `target_top1`, `val_clips`, `eval_on_clock`,
    `speedup_curve`, `frontier`, `variants` and `runs`."""
    baselines = {r.seed: r for r in runs if r.variant == BASELINE}
    missing = sorted({r.seed for r in runs} - set(baselines))
    if not baselines or missing:
        raise ValueError(f"the comparison needs a baseline run for every seed (missing: {missing})")
    target = (float(configured_target) if configured_target is not None
              else statistics.fmean(b.final_top1 for b in baselines.values()))
    for run in runs:
        run.target_top1 = target
        run.time_to_target_s = S.time_to_target(run.evals, target)
    variants = {name: _variant_summary([r for r in runs if r.variant == name], baselines, target, fractions)
                for name in dict.fromkeys(r.variant for r in runs)}
    frontier = _frontier(runs, baselines, variants)
    lead = next((n for n in (MULTIGRID, *variants) if n in variants and F.family(n) != BASELINE), None)
    mg = variants.get(MULTIGRID, {})
    return {
        "headline": None if lead is None else H.headline(lead, variants[lead], _round(target)),
        "frontier": frontier,
        "gain_at_equal_time": mg.get("gain_at_equal_time"),
        "speedup_at_equal_accuracy": mg.get("speedup_at_equal_accuracy"),
        "speedup_at_equal_accuracy_bound": mg.get("speedup_at_equal_accuracy_bound"),
        "speedup": mg.get("speedup"),
        "final_top1_delta": mg.get("final_top1_delta"),
        "target_top1": _round(target),
        "target_rule": ("configured" if configured_target is not None
                        else "baseline final top-1, mean over seeds"),
        "val_clips": max((len(r.val_hits) for r in runs), default=0) or None,
        "eval_on_clock": False,
        "speedup_curve": mg.get("speedup_curve", []),
        "variants": variants,
        "runs": [_run_json(r, baselines[r.seed]) for r in runs],
    }


def _frontier(runs: Sequence[RunFigures], baselines: dict[int, RunFigures],
              variants: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Every run as a frontier point (budget: its iterations over its seed's full baseline's), and each
    variant outside the baseline family judged against the baseline's curve (mean over seeds per
    budget): its gain at equal time and speed-up at equal accuracy, added to `variants`."""
    points = [{"variant": r.variant, "budget": _round(r.iterations / max(baselines[r.seed].iterations, 1), 3),
               "seed": r.seed, "train_s": _round(r.train_s, 1), "final_top1": _round(r.final_top1)}
              for r in runs]
    by_budget: dict[str, list[F.Point]] = {}
    for r in runs:
        if F.family(r.variant) == BASELINE:
            by_budget.setdefault(r.variant, []).append((r.train_s, r.final_top1))
    curve = F.mean_curve(by_budget)
    for name, v in variants.items():
        v["frontier_budgets"] = len(curve)
        if F.family(name) != BASELINE:
            mine = [r for r in runs if r.variant == name]
            v.update(F.judge(curve, statistics.fmean(r.train_s for r in mine),
                             statistics.fmean(r.final_top1 for r in mine)))
    return points


def _variant_summary(runs: Sequence[RunFigures], baselines: dict[int, RunFigures], target: float,
                     fractions: Sequence[float]) -> dict[str, Any]:
    """One variant over its seeds, each paired with its seed's baseline: accuracy with intervals,
    cost, and (outside the baseline family) speed-ups read off the seeds' mean curves."""
    paired = [(r, baselines[r.seed]) for r in runs]
    flop_ratio = [b.train_gflops / r.train_gflops for r, b in paired if r.train_gflops > 0]
    time_ratio = [b.train_s / r.train_s for r, b in paired if r.train_s > 0]
    mine = S.mean_curve([r.evals for r in runs])
    top1_ci = S.bootstrap_interval([r.val_hits for r in runs])
    delta_ci = S.bootstrap_interval([S.paired_differences(r.val_hits, b.val_hits) for r, b in paired])
    return {
        "seeds": len(runs),
        "time_to_target_s": _round(S.time_to_target(mine, target)),
        "reached": sum(r.time_to_target_s is not None for r in runs),
        **_speedups(runs, [b for _, b in paired], mine, target, fractions),
        "mean_curve": [{"time_s": round(t, 2), "top1": round(a, 2)} for _, t, a in mine],
        "final_top1": _round(statistics.fmean(r.final_top1 for r in runs)),
        "final_top1_ci95": _interval(top1_ci),
        "final_top1_delta": _round(statistics.fmean(r.final_top1 - b.final_top1 for r, b in paired)),
        "final_top1_delta_ci95": _interval(delta_ci),
        "train_s": _round(median(r.train_s for r in runs), 1),
        "wall_s": _round(median(r.wall_s for r in runs), 1),
        "eval_s": _round(median(r.eval_s for r in runs), 1),
        "iterations": median(r.iterations for r in runs),
        "train_gflops": _round(median(r.train_gflops for r in runs), 1),
        "ideal_flop_ratio": _round(median(flop_ratio), 3),
        **_time_ratio([b.train_s for _, b in paired], [r.train_s for r in runs]),
        "realised_fraction": _round(median(w / f for w, f in zip(time_ratio, flop_ratio)), 3),
        "overhead_s": _round(median(r.overhead_s for r in runs), 1),
        "stage_bn_s": _round(median(r.stage_bn_s for r in runs), 1),
    }


def _speedups(runs: Sequence[RunFigures], bases: Sequence[RunFigures], mine: Sequence[S.Eval],
              target: float, fractions: Sequence[float]) -> dict[str, Any]:
    """`speedup` (to the target), its `speedup_bound` and `speedup_curve` (at each fraction of it): the
    paired baselines' mean curve against the variant's. The mean curve, not the median of per-seed
    crossings: where the seeds straddle the target, a seed that misses it by a hair is not 'never'.
    None for the baseline family (frontier points: the frontier table judges them)."""
    contender = bool(runs) and F.family(runs[0].variant) != BASELINE
    base = S.mean_curve([b.evals for b in bases])
    curve = []
    for f in fractions:
        speedup, bound = S.curve_speedup(base, mine, f * target) if contender else (None, None)
        curve.append({"fraction": f, "target_top1": _round(f * target), "speedup": _round(speedup, 3),
                      "bound": bound})
    at_target = next((c for c in curve if c["fraction"] == 1.0), {})
    return {"speedup": at_target.get("speedup"), "speedup_bound": at_target.get("bound"),
            "speedup_curve": curve}


def _time_ratio(base_s: Sequence[float], mine_s: Sequence[float]) -> dict[str, Any]:
    """The baseline's mean training time over the variant's, with a 95 % interval over seeds."""
    ratio = statistics.fmean(base_s) / statistics.fmean(mine_s) if mine_s and min(mine_s) > 0 else None
    ci = S.ratio_interval(base_s, mine_s)
    return {"time_ratio": _round(ratio, 3),
            "time_ratio_ci95": None if ci is None else [round(ci[0], 3), round(ci[1], 3)]}


def _round(value: float | None, digits: int = 2) -> float | None:
    if value is None or math.isinf(value) or math.isnan(value):
        return None
    return round(value, digits)


def _interval(ci: tuple[float, float] | None) -> list[float] | None:
    return None if ci is None else [round(100 * ci[0], 2), round(100 * ci[1], 2)]


def _run_json(run: RunFigures, base: RunFigures) -> dict[str, Any]:
    out = asdict(run)
    del out["val_hits"]  # thousands of 0/1; val_hits.json in the run folder holds them
    out["final_top1"] = run.final_top1
    out["speedup"] = (None if run.variant == BASELINE
                      else _round(S.paired_speedup(base.evals, base.train_s, run.evals, run.target_top1), 3))
    out["evals"] = [{"samples": s, "time_s": round(t, 2), "top1": round(a, 2)} for s, t, a in run.evals]
    return out


