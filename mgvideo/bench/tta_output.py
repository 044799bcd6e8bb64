"""The time-to-accuracy benchmark's outputs, from compare's JSON summary: the markdown tables (headline,
per variant, speed-up curve, per run, frontier, per-stage cost) and the PNG plot."""

from __future__ import annotations

import statistics
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from mgvideo.bench import frontier as F
from mgvideo.bench.tta_headline import FRONTIER_BOUNDS
from mgvideo.bench.tta_report import BASELINE


def _fmt(value: Any, digits: int = 1, suffix: str = "", missing: str = "–") -> str:
    if value is None:
        return missing
    if isinstance(value, float):
        return f"{value:.{digits}f}{suffix}"
    return f"{value}{suffix}"


def markdown_table(summary: dict[str, Any]) -> str:
    """The benchmark's tables, after the headline: per variant, the speed-up curve, every run, the
    frontier, then per-stage cost of seed 0. Times are training time (evaluation paused the clock); the
    wall column includes evaluation."""
    clips = summary.get("val_clips")
    lead = summary.get("headline")
    lines = [f"**{lead['text']}**", ""] if lead else []
    lines += [
        f"Target top-1: {_fmt(summary['target_top1'], 2)} % ({summary['target_rule']}); validation clips: "
        f"{_fmt(clips)}. Times are training time: evaluation is off the clock and shown on its own. Time "
        "to target and speed-ups are read off the seeds' mean curves (top-1 and time averaged over seeds at "
        "each evaluation point); (k/n): the seeds that reach the target on their own.",
        "",
        "| variant | seeds | time to target (s) | speed-up | final top-1 (95 % CI) | Δ vs baseline (95 % CI) "
        "| training (s) | wall incl. eval (s) | eval (s) | iterations | train TFLOPs | ideal FLOP ratio "
        "| time ratio (95 % CI) | realised | overhead (s) | stage BN (s) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    lines += [_variant_row(name, v) for name, v in summary["variants"].items()]
    lines += ["", "Speed-up at fractions of the target (the seeds' mean curves):", "",
              "| variant | " + " | ".join(f"{100 * c['fraction']:.0f} % ({_fmt(c['target_top1'], 2)})"
                                        for c in summary["speedup_curve"]) + " |",
              "|---|" + "---|" * len(summary["speedup_curve"])]
    for name, v in summary["variants"].items():
        if F.family(name) != BASELINE:
            lines.append(f"| {name} | " + " | ".join(_speedup(c["speedup"], name, c.get("bound"))
                                                   for c in v["speedup_curve"]) + " |")
    lines += ["", "Per run (its own time to target):", "",
              "| seed | variant | time to target (s) | speed-up | final top-1 | training (s) | wall (s) "
              "| iterations |", "|---|---|---|---|---|---|---|---|"]
    for r in summary["runs"]:
        lines.append(
            f"| {r['seed']} | {r['variant']} | {_fmt(r['time_to_target_s'], 1, '', 'never')} "
            f"| {_speedup(r['speedup'], r['variant'])} "
            f"| {_fmt(r['final_top1'], 2)} | {_fmt(r['train_s'])} | {_fmt(r['wall_s'])} | {r['iterations']} |"
        )
    return "\n".join(lines + _frontier_rows(summary) + _stage_rows(summary)) + "\n"


def _variant_row(name: str, v: dict[str, Any]) -> str:
    """One variant's row of the first table."""
    return (
        f"| {name} | {v['seeds']} | {_fmt(v['time_to_target_s'], 1, '', 'never')} "
        f"({v['reached']}/{v['seeds']}) "
        f"| {_speedup(v['speedup'], name, v.get('speedup_bound'))} "
        f"| {_fmt(v['final_top1'], 2)} {_ci(v['final_top1_ci95'])} "
        f"| {_fmt(v['final_top1_delta'], 2)} {_ci(v['final_top1_delta_ci95'])} "
        f"| {_fmt(v['train_s'])} | {_fmt(v['wall_s'])} | {_fmt(v['eval_s'])} "
        f"| {_fmt(v['iterations'], 0)} "
        f"| {_fmt(_tera(v['train_gflops']), 2)} | {_fmt(v['ideal_flop_ratio'], 2, '×')} "
        f"| {_fmt(v['time_ratio'], 2, '×')} {_ci(v.get('time_ratio_ci95'), 2)} "
        f"| {_fmt(_pct(v['realised_fraction']), 0, ' %')} "
        f"| {_fmt(v['overhead_s'])} | {_fmt(v['stage_bn_s'])} |"
    )


def _speedup(value: float | None, variant: str, bound: str | None = None) -> str:
    """A speed-up cell: '–' on the baseline's rows (its budgets are frontier points), 'never' where the
    target was not reached, '≥' where the baseline never reached it (its whole time counts)."""
    if F.family(variant) == BASELINE:
        return "–"
    return ("≥ " if bound == "lower" else "") + _fmt(value, 2, "×", "never")


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
        gain, speedup = "–", "–"  # the baseline's own budgets are the frontier
        if F.family(name) != BASELINE:
            gain = _gain_cell(v.get("gain_at_equal_time"), v.get("gain_at_equal_time_bound"))
            speedup = _equal_accuracy_cell(v.get("speedup_at_equal_accuracy"),
                                           v.get("speedup_at_equal_accuracy_bound"))
        lines.append(
            f"| {name} | {_fmt(_mean(p['budget'] for p in pts), 3)} "
            f"| {_fmt(_mean(p['train_s'] for p in pts))} "
            f"| {_fmt(_mean(p['final_top1'] for p in pts), 2)} | {gain} | {speedup} |")
    return lines


def _gain_cell(gain: float | None, bound: str | None) -> str:
    """'+10.00', or a bound where the run lies outside the budgets' span of time: '≥ +16.00'."""
    if gain is None:
        return "– (no baseline budget)"
    return {"lower": "≥ ", "upper": "≤ "}.get(bound or "", "") + f"{gain:+.2f}"


def _equal_accuracy_cell(speedup: float | None, bound: str | None) -> str:
    """'2.65×', or a bound with its reason: '≥ 3.13× (it ends above every baseline budget)'."""
    if bound in FRONTIER_BOUNDS:
        return f"{'≥' if bound == 'lower' else '≤'} {_fmt(speedup, 2, '×')} ({FRONTIER_BOUNDS[bound]})"
    return _fmt(speedup, 2, "×", "– (no baseline budget)")


def _mean(values: Iterable[float | None]) -> float | None:
    kept = [v for v in values if v is not None]
    return statistics.fmean(kept) if kept else None


def _ci(interval: list[float] | None, digits: int = 1) -> str:
    return "" if interval is None else f"({interval[0]:.{digits}f}–{interval[1]:.{digits}f})"


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
    """PNG: val top-1 against training minutes (each run thin, each variant's mean curve over its seeds
    thick) with the target fractions as dashed lines; beside it, the speed-up at each fraction of the
    target read off the mean curves; then the frontier."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, bx, fx) = plt.subplots(1, 3, figsize=(17, 5), gridspec_kw={"width_ratios": [2, 1, 1.3]})
    colours = _plot_runs(ax, summary)
    for name, v in summary["variants"].items():
        points = [(100 * c["fraction"], c["speedup"]) for c in v["speedup_curve"] if c["speedup"] is not None]
        if F.family(name) != BASELINE and points:
            bx.plot(*zip(*points), marker="o", color=colours.get(name), label=name)
    bx.axhline(1.0, color="grey", lw=0.7)
    bx.set(xlabel="% of the target top-1", ylabel="speed-up over the baseline (×)",
           title="speed-up curve (the seeds' mean curves)")
    bx.grid(alpha=0.3)
    bx.legend(fontsize=7)
    _plot_frontier(fx, summary)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _plot_runs(ax, summary: dict[str, Any]) -> dict[str, str]:
    """Each run's top-1 against training minutes (colour: variant; style: seed), each variant's mean
    curve when it has several seeds, and the target fractions; returns the colour of each variant."""
    colours: dict[str, str] = {}
    styles = ["-", "--", ":", "-."]
    seeds = sorted({x["seed"] for x in summary["runs"]})
    for r in summary["runs"]:
        colour = colours.setdefault(r["variant"], f"C{len(colours)}")
        style = styles[seeds.index(r["seed"]) % len(styles)]
        xs = [e["time_s"] / 60 for e in r["evals"]]
        ys = [e["top1"] for e in r["evals"]]
        ax.plot(xs, ys, style, marker="o", ms=3, lw=1, alpha=0.6, color=colour,
                label=f"{r['variant']} seed {r['seed']}")
    for name, v in summary["variants"].items():
        if v["seeds"] > 1 and v.get("mean_curve"):
            xs = [e["time_s"] / 60 for e in v["mean_curve"]]
            ax.plot(xs, [e["top1"] for e in v["mean_curve"]], lw=2.5, color=colours.get(name),
                    label=f"{name}: mean of {v['seeds']} seeds")
    for c in summary["speedup_curve"]:
        if c["target_top1"] is not None:
            ax.axhline(c["target_top1"], color="grey", lw=0.7, ls="--")
    ax.set(xlabel="training time (min): data loading and training, evaluation excluded",
           ylabel="val top-1 (%)", title="time to accuracy (grey: 80, 90, 95, 100 % of the target)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return colours


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
