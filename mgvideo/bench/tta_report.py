"""Figures of the time-to-accuracy benchmark, computed from the runs' `metrics.jsonl` records: time to a
target top-1, per-stage cost, FLOPs, per-seed speed-ups and their medians, and the markdown / JSON / PNG
outputs. Pure functions of the records (no training here), so the harness logic is testable on its own.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from mgvideo.bench import frontier as F
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
    Returns the JSON summary: `speedup` (median over seeds at the target), `final_top1_delta`,
    `target_top1`, `val_clips`, `eval_on_clock`, `speedup_curve`, `variants` and `runs`."""
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
    mg = variants.get(MULTIGRID, {})
    return {
        "frontier": frontier,
        "gain_at_equal_time": mg.get("gain_at_equal_time"),
        "speedup_at_equal_accuracy": mg.get("speedup_at_equal_accuracy"),
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
        if F.family(name) != BASELINE:
            mine = [r for r in runs if r.variant == name]
            v.update(F.judge(curve, statistics.fmean(r.train_s for r in mine),
                             statistics.fmean(r.final_top1 for r in mine)))
    return points


def _variant_summary(runs: Sequence[RunFigures], baselines: dict[int, RunFigures], target: float,
                     fractions: Sequence[float]) -> dict[str, Any]:
    paired = [(r, baselines[r.seed]) for r in runs]
    flop_ratio = [b.train_gflops / r.train_gflops for r, b in paired if r.train_gflops > 0]
    time_ratio = [b.train_s / r.train_s for r, b in paired if r.train_s > 0]
    baseline = bool(runs) and runs[0].variant == BASELINE  # no speed-up over itself
    curve = [{"fraction": f, "target_top1": _round(f * target),
              "speedup": None if baseline else _round(S.median_speedup(
                  [S.paired_speedup(b.evals, b.train_s, r.evals, f * target) for r, b in paired]), 3)}
             for f in fractions]
    top1_ci = S.bootstrap_interval([r.val_hits for r in runs])
    delta_ci = S.bootstrap_interval([S.paired_differences(r.val_hits, b.val_hits) for r, b in paired])
    return {
        "seeds": len(runs),
        "time_to_target_s": _round(median(_inf(r.time_to_target_s) for r in runs)),
        "reached": sum(r.time_to_target_s is not None for r in runs),
        "speedup": next((c["speedup"] for c in curve if c["fraction"] == 1.0), None),
        "speedup_curve": curve,
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
        "time_ratio": _round(median(time_ratio), 3),
        "realised_fraction": _round(median(w / f for w, f in zip(time_ratio, flop_ratio)), 3),
        "overhead_s": _round(median(r.overhead_s for r in runs), 1),
        "stage_bn_s": _round(median(r.stage_bn_s for r in runs), 1),
    }


def _inf(value: float | None) -> float:
    return math.inf if value is None else value


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


# ---- outputs ---------------------------------------------------------------------------------------


def _fmt(value: Any, digits: int = 1, suffix: str = "", missing: str = "–") -> str:
    if value is None:
        return missing
    if isinstance(value, float):
        return f"{value:.{digits}f}{suffix}"
    return f"{value}{suffix}"


def markdown_table(summary: dict[str, Any]) -> str:
    """The benchmark's tables: per variant, the speed-up curve, every run, then per-stage cost of seed 0.
    Times are training time (evaluation paused the clock); the wall column includes evaluation."""
    clips = summary.get("val_clips")
    lines = [
        f"Target top-1: {_fmt(summary['target_top1'], 2)} % ({summary['target_rule']}); validation clips: "
        f"{_fmt(clips)}. Times are training time: evaluation is off the clock and shown on its own.",
        "",
        "| variant | seeds | time to target (s) | speed-up | final top-1 (95 % CI) | Δ vs baseline (95 % CI) "
        "| training (s) | wall incl. eval (s) | eval (s) | iterations | train TFLOPs | ideal FLOP ratio "
        "| time ratio | realised | overhead (s) | stage BN (s) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, v in summary["variants"].items():
        lines.append(
            f"| {name} | {v['seeds']} | {_fmt(v['time_to_target_s'], 1, '', 'never')} "
            f"({v['reached']}/{v['seeds']}) "
            f"| {_speedup(v['speedup'], name)} | {_fmt(v['final_top1'], 2)} {_ci(v['final_top1_ci95'])} "
            f"| {_fmt(v['final_top1_delta'], 2)} {_ci(v['final_top1_delta_ci95'])} "
            f"| {_fmt(v['train_s'])} | {_fmt(v['wall_s'])} | {_fmt(v['eval_s'])} "
            f"| {_fmt(v['iterations'], 0)} "
            f"| {_fmt(_tera(v['train_gflops']), 2)} | {_fmt(v['ideal_flop_ratio'], 2, '×')} "
            f"| {_fmt(v['time_ratio'], 2, '×')} | {_fmt(_pct(v['realised_fraction']), 0, ' %')} "
            f"| {_fmt(v['overhead_s'])} | {_fmt(v['stage_bn_s'])} |"
        )
    lines += ["", "Speed-up at fractions of the target (median over seeds):", "",
              "| variant | " + " | ".join(f"{100 * c['fraction']:.0f} % ({_fmt(c['target_top1'], 2)})"
                                        for c in summary["speedup_curve"]) + " |",
              "|---|" + "---|" * len(summary["speedup_curve"])]
    for name, v in summary["variants"].items():
        if name != BASELINE:
            lines.append(f"| {name} | " + " | ".join(_speedup(c["speedup"], name) for c in v["speedup_curve"])
                         + " |")
    lines += ["", "Per run:", "",
              "| seed | variant | time to target (s) | speed-up | final top-1 | training (s) | wall (s) "
              "| iterations |", "|---|---|---|---|---|---|---|---|"]
    for r in summary["runs"]:
        lines.append(
            f"| {r['seed']} | {r['variant']} | {_fmt(r['time_to_target_s'], 1, '', 'never')} "
            f"| {_speedup(r['speedup'], r['variant'])} "
            f"| {_fmt(r['final_top1'], 2)} | {_fmt(r['train_s'])} | {_fmt(r['wall_s'])} | {r['iterations']} |"
        )
    return "\n".join(lines + _frontier_rows(summary) + _stage_rows(summary)) + "\n"


def _speedup(value: float | None, variant: str) -> str:
    """A speed-up cell: '–' on the baseline's own row, 'never' where the target was not reached."""
    return "–" if variant == BASELINE else _fmt(value, 2, "×", "never")


def _frontier_rows(summary: dict[str, Any]) -> list[str]:
    """Final top-1 against training time per variant (means over seeds), judged against the baseline's
    budgets: gain at equal time and speed-up at equal accuracy."""
    lines = ["", "Frontier: final top-1 against training time (means over seeds). Budget: training "
             "iterations over the full baseline's. Judged against the baseline recipe at its budgets.", "",
             "| variant | budget | training (s) | final top-1 | gain at equal time (points) "
             "| speed-up at equal accuracy |", "|---|---|---|---|---|---|"]
    by_variant: dict[str, list[dict[str, Any]]] = {}
    for p in summary.get("frontier", []):
        by_variant.setdefault(p["variant"], []).append(p)
    for name, pts in by_variant.items():
        v = summary["variants"].get(name, {})
        judged = F.family(name) != BASELINE
        speedup = v.get("speedup_at_equal_accuracy")
        cell = (_fmt(speedup, 2, "×", "never") if not v.get("below_frontier_start")
                else f"≤ {_fmt(speedup, 2, '×')} (the smallest budget already beats it)")
        if v.get("beyond_frontier"):
            cell = "beyond the frontier (no budget reaches it)"
        lines.append(
            f"| {name} | {_fmt(_mean(p['budget'] for p in pts), 3)} "
            f"| {_fmt(_mean(p['train_s'] for p in pts))} "
            f"| {_fmt(_mean(p['final_top1'] for p in pts), 2)} "
            f"| {_fmt(v.get('gain_at_equal_time'), 2, '', 'outside the frontier') if judged else '–'} "
            f"| {cell if judged else '–'} |")
    return lines


def _mean(values: Iterable[float | None]) -> float | None:
    kept = [v for v in values if v is not None]
    return statistics.fmean(kept) if kept else None


def _ci(interval: list[float] | None) -> str:
    return "" if interval is None else f"({interval[0]:.1f}–{interval[1]:.1f})"


def _stage_rows(summary: dict[str, Any]) -> list[str]:
    lines = ["", "Where the time goes (first seed; ms per iteration and the share of it spent waiting "
             "for data):", "",
             "| variant | stage | shapes (TxS) | iterations | ms/iter | ms/clip | data wait |",
             "|---|---|---|---|---|---|---|"]
    first = summary["runs"][0]["seed"] if summary["runs"] else None
    for r in (r for r in summary["runs"] if r["seed"] == first):
        for s in r["stages"]:
            wait = 100 * s["data_wait"]
            lines.append(f"| {r['variant']} | {s['stage']} | {' '.join(s['shapes'])} | {s['iterations']} "
                         f"| {s['ms_per_iter']:.0f} | {s['ms_per_clip']:.1f} | {wait:.0f} % |")
    return lines


def _tera(gflops: float | None) -> float | None:
    return None if gflops is None else gflops / 1000


def _pct(fraction: float | None) -> float | None:
    return None if fraction is None else 100 * fraction


def plot_curves(summary: dict[str, Any], path: Path) -> Path:
    """PNG: val top-1 against training minutes, one line per run (colour: variant; style: seed), with the
    target fractions as dashed lines; beside it, the speed-up at each fraction of the target."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, bx, fx) = plt.subplots(1, 3, figsize=(17, 5), gridspec_kw={"width_ratios": [2, 1, 1.3]})
    colours: dict[str, str] = {}
    styles = ["-", "--", ":", "-."]
    seeds = sorted({x["seed"] for x in summary["runs"]})
    for r in summary["runs"]:
        colour = colours.setdefault(r["variant"], f"C{len(colours)}")
        style = styles[seeds.index(r["seed"]) % len(styles)]
        xs = [e["time_s"] / 60 for e in r["evals"]]
        ys = [e["top1"] for e in r["evals"]]
        ax.plot(xs, ys, style, marker="o", ms=3, color=colour, label=f"{r['variant']} seed {r['seed']}")
    for c in summary["speedup_curve"]:
        if c["target_top1"] is not None:
            ax.axhline(c["target_top1"], color="grey", lw=0.7, ls="--")
    ax.set(xlabel="training time (min): data loading and training, evaluation excluded",
           ylabel="val top-1 (%)", title="time to accuracy (grey: 80, 90, 95, 100 % of the target)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    for name, v in summary["variants"].items():
        points = [(100 * c["fraction"], c["speedup"]) for c in v["speedup_curve"] if c["speedup"] is not None]
        if name != BASELINE and points:
            bx.plot(*zip(*points), marker="o", color=colours.get(name), label=name)
    bx.axhline(1.0, color="grey", lw=0.7)
    bx.set(xlabel="% of the target top-1", ylabel="speed-up over the baseline (×)",
           title="speed-up curve (median over seeds)")
    bx.grid(alpha=0.3)
    bx.legend(fontsize=7)
    _plot_frontier(fx, summary)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _plot_frontier(ax, summary: dict[str, Any]) -> None:
    """Final top-1 against training time: each run a dot, each family (a variant at its budgets) a line
    through its budgets' means, so that the baseline's frontier and multigrid's curve can be compared."""
    families: dict[str, dict[str, list[tuple[float, float]]]] = {}
    for p in summary.get("frontier", []):
        if p["train_s"] is not None and p["final_top1"] is not None:
            by_budget = families.setdefault(F.family(p["variant"]), {})
            by_budget.setdefault(p["variant"], []).append((p["train_s"] / 60, p["final_top1"]))
    for i, (name, by_budget) in enumerate(families.items()):
        colour = f"C{i}"
        for pts in by_budget.values():
            ax.scatter(*zip(*pts), s=12, color=colour, alpha=0.5)
        curve = F.mean_curve(by_budget)
        ax.plot(*zip(*curve), marker="o", color=colour, label=f"{name} ({len(by_budget)} budgets)")
    ax.set(xlabel="training time (min)", ylabel="final val top-1 (%)",
           title="frontier: final top-1 against training time")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
