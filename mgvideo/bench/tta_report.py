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

BASELINE = "baseline"
MULTIGRID = "multigrid"  # long + short cycle: the method itself


@dataclass
class RunFigures:
    """What one training run (one variant, one seed) measured."""

    variant: str
    seed: int
    evals: list[tuple[int, float, float]]  # (samples trained, wall-clock s, val top-1 %) per evaluation
    wall_s: float  # the run's clock at its last record
    iterations: int
    samples: int
    train_gflops: float  # forward + backward over every training clip
    stages: list[dict[str, Any]] = field(default_factory=list)
    overhead_s: float = 0.0  # wall-clock spent outside training iterations (eval, precise BN, checkpoints)
    eval_s: float = 0.0  # of which evaluations (their precise BN at the full shape, then validation)
    stage_bn_s: float = 0.0  # of which precise BN at stage ends that no evaluation superseded
    target_top1: float = float("nan")
    time_to_target_s: float | None = None

    @property
    def final_top1(self) -> float:
        """Top-1 of the last evaluation (the run's final accuracy)."""
        return self.evals[-1][2] if self.evals else float("nan")


def time_to_target(evals: Iterable[tuple[int, float, float]], target: float) -> float | None:
    """Wall-clock seconds at the first evaluation whose top-1 reaches `target`; None if none does.

    The time is the clock when that evaluation finished: the moment the run could know it got there.
    """
    for _, seconds, top1 in evals:
        if top1 >= target - 1e-9:
            return seconds
    return None


def choose_target(configured: float | None, baseline_final: float) -> float:
    """The target top-1, fixed before multigrid runs: the configured value, else the baseline's final."""
    if configured is not None:
        return float(configured)
    return float(baseline_final)


def speedup(baseline_s: float | None, other_s: float | None) -> float | None:
    """Baseline time over the other's time. 0 when the other never reached the target (infinitely slow);
    None when the baseline itself did not (only possible with a configured target)."""
    if baseline_s is None:
        return None
    if other_s is None:
        return 0.0
    return baseline_s / max(other_s, 1e-9)


def median(values: Iterable[float | None]) -> float | None:
    """Median of the values that exist (None and NaN are left out); None if there are none."""
    kept = [v for v in values if v is not None and not math.isnan(v)]
    return statistics.median(kept) if kept else None


def figures_from_records(variant: str, seed: int, records: Sequence[dict[str, Any]],
                         clip_gflops: Callable[[int, int], float]) -> RunFigures:
    """Summarise one run's metrics records. `clip_gflops(frames, crop)` is the training cost (forward and
    backward) of one clip of that shape."""
    its = [r for r in records if r["kind"] == "train"]
    evals = [(int(r["samples"]), float(r["time"]), float(r["top1"])) for r in records if r["kind"] == "eval"]
    times = [r["time"] for r in records if "time" in r]
    wall = max(times) if times else 0.0
    busy = sum(_iteration_seconds(r) for r in its)
    gflops = sum(r["batch"] * clip_gflops(r["frames"], r["crop"]) for r in its)
    eval_s = sum(r.get("bn_s", 0.0) + r.get("val_s", 0.0) for r in records if r["kind"] == "eval")
    stage_bn_s = sum(r["seconds"] for r in records if r["kind"] == "precise_bn")
    return RunFigures(variant, seed, evals, wall, _iterations(its), sum(r["batch"] for r in its), gflops,
                      stage_costs(its), max(wall - busy, 0.0), eval_s, stage_bn_s)


def _iterations(its: Sequence[dict[str, Any]]) -> int:
    """Iterations covered by training records (a record sums `iterations` steps of one shape)."""
    return sum(r.get("iterations", 1) for r in its)


def _iteration_seconds(record: dict[str, Any]) -> float:
    return record["batch"] / max(record["clips_per_s"], 1e-9)


def stage_costs(its: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per long-cycle stage: iterations, mean ms/iteration, ms/clip and the fraction of time spent waiting
    for data, with the stage's shapes as 'TxS' strings."""
    by_stage: dict[int, list[dict[str, Any]]] = {}
    for r in its:
        by_stage.setdefault(int(r["stage"]), []).append(r)
    rows = []
    for stage, group in sorted(by_stage.items()):
        seconds = [_iteration_seconds(r) for r in group]
        total = sum(seconds)
        waited = sum(r["data_wait"] * s for r, s in zip(group, seconds))
        shapes = sorted({(r["frames"], r["crop"]) for r in group}, key=lambda fc: fc[0] * fc[1] ** 2)
        rows.append({
            "stage": stage, "shapes": [f"{f}x{c}" for f, c in shapes], "iterations": _iterations(group),
            "ms_per_iter": round(1000 * total / _iterations(group), 1),
            "ms_per_clip": round(1000 * total / max(sum(r["batch"] for r in group), 1), 2),
            "data_wait": round(waited / total, 3) if total > 0 else 0.0,
        })
    return rows


def compare(runs: Sequence[RunFigures], configured_target: float | None) -> dict[str, Any]:
    """Pair every run with its seed's baseline: target, time to target and speed-up per run, then the
    medians per variant. Sets `target_top1` and `time_to_target_s` on the runs. Returns the JSON summary
    (`speedup`, `final_top1_delta`, `target_top1`, `runs`, `variants`)."""
    baselines = {r.seed: r for r in runs if r.variant == BASELINE}
    if not baselines:
        raise ValueError("the comparison needs a baseline run for every seed")
    rows = []
    for run in runs:
        base = baselines.get(run.seed)
        if base is None:
            raise ValueError(f"seed {run.seed} has no baseline run")
        run.target_top1 = choose_target(configured_target, base.final_top1)
        run.time_to_target_s = time_to_target(run.evals, run.target_top1)
        rows.append(run)
    variants: dict[str, dict[str, Any]] = {}
    for name in dict.fromkeys(r.variant for r in rows):
        variants[name] = _variant_summary([r for r in rows if r.variant == name], baselines)
    mg = variants.get(MULTIGRID, {})
    targets = [r.target_top1 for r in rows if r.variant == BASELINE]
    return {
        "speedup": mg.get("speedup"),
        "final_top1_delta": mg.get("final_top1_delta"),
        "target_top1": _round(median(targets)),
        "target_rule": "configured" if configured_target is not None else "baseline final top-1, per seed",
        "variants": variants,
        "runs": [_run_json(r, baselines[r.seed]) for r in rows],
    }


def _variant_summary(runs: Sequence[RunFigures], baselines: dict[int, RunFigures]) -> dict[str, Any]:
    paired = [(r, baselines[r.seed]) for r in runs]
    flop_ratio = [b.train_gflops / r.train_gflops for r, b in paired if r.train_gflops > 0]
    wall_ratio = [b.wall_s / r.wall_s for r, b in paired if r.wall_s > 0]
    return {
        "seeds": len(runs),
        "time_to_target_s": _round(median(_inf(r.time_to_target_s) for r in runs)),
        "reached": sum(r.time_to_target_s is not None for r in runs),
        "speedup": _round(median(speedup(b.time_to_target_s, r.time_to_target_s) for r, b in paired), 3),
        "final_top1": _round(median(r.final_top1 for r in runs)),
        "final_top1_delta": _round(median(r.final_top1 - b.final_top1 for r, b in paired)),
        "wall_s": _round(median(r.wall_s for r in runs), 1),
        "iterations": median(r.iterations for r in runs),
        "train_gflops": _round(median(r.train_gflops for r in runs), 1),
        "ideal_flop_ratio": _round(median(flop_ratio), 3),
        "wall_ratio": _round(median(wall_ratio), 3),
        "realised_fraction": _round(median(w / f for w, f in zip(wall_ratio, flop_ratio)), 3),
        "overhead_s": _round(median(r.overhead_s for r in runs), 1),
        "eval_s": _round(median(r.eval_s for r in runs), 1),
        "stage_bn_s": _round(median(r.stage_bn_s for r in runs), 1),
    }


def _inf(value: float | None) -> float:
    return math.inf if value is None else value


def _round(value: float | None, digits: int = 2) -> float | None:
    if value is None or math.isinf(value):
        return None
    return round(value, digits)


def _run_json(run: RunFigures, base: RunFigures) -> dict[str, Any]:
    out = asdict(run)
    out["final_top1"] = run.final_top1
    out["speedup"] = _round(speedup(base.time_to_target_s, run.time_to_target_s), 3)
    out["evals"] = [{"samples": s, "time_s": round(t, 2), "top1": round(a, 2)} for s, t, a in run.evals]
    return out


# ---- outputs ---------------------------------------------------------------------------------------


def _fmt(value: Any, digits: int = 1, suffix: str = "") -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}{suffix}"
    return f"{value}{suffix}"


def markdown_table(summary: dict[str, Any]) -> str:
    """The benchmark's tables: medians per variant, then every run, then per-stage cost of seed 0."""
    lines = [
        f"Target top-1: {_fmt(summary['target_top1'], 2)} % ({summary['target_rule']}).",
        "",
        "| variant | seeds | time to target (s) | speed-up | final top-1 | Δ vs baseline | wall (s) "
        "| iterations | train TFLOPs | ideal FLOP ratio | wall ratio | realised | overhead (s) "
        "| of which eval (s) | stage BN (s) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, v in summary["variants"].items():
        lines.append(
            f"| {name} | {v['seeds']} | {_fmt(v['time_to_target_s'])} ({v['reached']}/{v['seeds']}) "
            f"| {_fmt(v['speedup'], 2, '×')} | {_fmt(v['final_top1'], 2)} | {_fmt(v['final_top1_delta'], 2)} "
            f"| {_fmt(v['wall_s'])} | {_fmt(v['iterations'], 0)} | {_fmt(_tera(v['train_gflops']), 2)} "
            f"| {_fmt(v['ideal_flop_ratio'], 2, '×')} | {_fmt(v['wall_ratio'], 2, '×')} "
            f"| {_fmt(_pct(v['realised_fraction']), 0, ' %')} | {_fmt(v['overhead_s'])} "
            f"| {_fmt(v['eval_s'])} | {_fmt(v['stage_bn_s'])} |"
        )
    lines += ["", "Per run:", "",
              "| seed | variant | target | time to target (s) | speed-up | final top-1 | wall (s) "
              "| iterations |", "|---|---|---|---|---|---|---|---|"]
    for r in summary["runs"]:
        lines.append(
            f"| {r['seed']} | {r['variant']} | {_fmt(r['target_top1'], 2)} | {_fmt(r['time_to_target_s'])} "
            f"| {_fmt(r['speedup'], 2, '×')} | {_fmt(r['final_top1'], 2)} | {_fmt(r['wall_s'])} "
            f"| {r['iterations']} |"
        )
    lines += ["", "Where the time goes (first seed; ms per iteration and the share of it spent waiting "
              "for data):", "",
              "| variant | stage | shapes (TxS) | iterations | ms/iter | ms/clip | data wait |",
              "|---|---|---|---|---|---|---|"]
    first = summary["runs"][0]["seed"] if summary["runs"] else None
    for r in (r for r in summary["runs"] if r["seed"] == first):
        for s in r["stages"]:
            wait = 100 * s["data_wait"]
            lines.append(f"| {r['variant']} | {s['stage']} | {' '.join(s['shapes'])} | {s['iterations']} "
                         f"| {s['ms_per_iter']:.0f} | {s['ms_per_clip']:.1f} | {wait:.0f} % |")
    return "\n".join(lines) + "\n"


def _tera(gflops: float | None) -> float | None:
    return None if gflops is None else gflops / 1000


def _pct(fraction: float | None) -> float | None:
    return None if fraction is None else 100 * fraction


def plot_curves(summary: dict[str, Any], path: Path) -> Path:
    """PNG of val top-1 against wall-clock minutes, one line per run (colour: variant; style: seed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    colours: dict[str, str] = {}
    styles = ["-", "--", ":", "-."]
    for r in summary["runs"]:
        colour = colours.setdefault(r["variant"], f"C{len(colours)}")
        seeds = sorted({x["seed"] for x in summary["runs"]})
        style = styles[seeds.index(r["seed"]) % len(styles)]
        xs = [e["time_s"] / 60 for e in r["evals"]]
        ys = [e["top1"] for e in r["evals"]]
        ax.plot(xs, ys, style, marker="o", ms=3, color=colour, label=f"{r['variant']} seed {r['seed']}")
    if summary["target_top1"] is not None:
        ax.axhline(summary["target_top1"], color="grey", lw=0.8, ls="--", label="target (median)")
    ax.set(xlabel="wall-clock (min): data loading, training and evaluation", ylabel="val top-1 (%)",
           title="time to accuracy: baseline vs multigrid")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
