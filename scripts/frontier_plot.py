"""Final top-1 against training FLOPs, one panel per data draw, from `mgvideo bench tta` summaries: the
baseline's budgets (the full recipe, `@0.5`, `@match`) drawn as the frontier, every other variant as a
point with its seeds' range. Prints the figures as a markdown table, then each variant's change against the
baseline pooled over the draws (seed by seed, with a bootstrap interval) and its training-time ratio.

    python scripts/frontier_plot.py DRAW1/tta.json DRAW2/tta.json --out docs/frontier_vit.png
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import mgvideo.bench.tta_stats as S


def variant_points(summary: dict) -> dict[str, dict]:
    """variant -> FLOPs against the full baseline (mean over seeds), mean / min / max final top-1, seeds."""
    by_variant: dict[str, list[dict]] = {}
    for run in summary["runs"]:
        by_variant.setdefault(run["variant"], []).append(run)
    if "baseline" not in by_variant:
        raise SystemExit("no 'baseline' runs in the summary")
    full = statistics.fmean(r["train_gflops"] for r in by_variant["baseline"])
    points = {}
    for name, runs in by_variant.items():
        top1 = [r["final_top1"] for r in runs]
        points[name] = {"flops": statistics.fmean(r["train_gflops"] for r in runs) / full,
                        "top1": statistics.fmean(top1), "low": min(top1), "high": max(top1),
                        "seeds": len(runs),
                        "iterations": round(statistics.fmean(r["iterations"] for r in runs))}
    return points


def paired_deltas(summaries: list[dict], variant: str, reference: str = "baseline") -> list[float]:
    """Final top-1 of the variant minus the reference's (the full baseline's), per (draw, seed) both ran."""
    deltas = []
    for summary in summaries:
        top1 = {(r["variant"], r["seed"]): r["final_top1"] for r in summary["runs"]}
        deltas += [v - top1[(reference, seed)] for (name, seed), v in top1.items()
                   if name == variant and (reference, seed) in top1]
    return deltas


def bootstrap_interval(values: list[float]) -> tuple[float, float]:
    """95 % interval of the mean of paired values, resampling them: the bench's own bootstrap
    (`tta_stats.bootstrap_interval`), each value a seed of one clip (deterministic)."""
    return S.bootstrap_interval([[v] for v in values])


def time_ratio(summary: dict, variant: str) -> float | None:
    """The baseline's mean training seconds over the variant's, in one summary."""
    seconds = {}
    for r in summary["runs"]:
        seconds.setdefault(r["variant"], []).append(r["train_s"])
    if variant not in seconds:
        return None
    return statistics.fmean(seconds["baseline"]) / statistics.fmean(seconds[variant])


def is_baseline_budget(name: str) -> bool:
    return name == "baseline" or name.startswith("baseline@")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("summaries", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, help="PNG to write")
    parser.add_argument("--labels", help="comma-separated panel titles (default: the summaries' folders)")
    parser.add_argument("--variants", help="comma-separated variants to show (default: all); the baseline's "
                        "budgets are always shown")
    parser.add_argument("--reference", default="baseline",
                        help="the variant the pooled change is taken against (default: the full baseline)")
    args = parser.parse_args()
    labels = args.labels.split(",") if args.labels else [p.parent.name for p in args.summaries]
    summaries = [json.loads(p.read_text()) for p in args.summaries]
    draws = [variant_points(summary) for summary in summaries]

    names = sorted({n for d in draws for n in d}, key=lambda n: (not is_baseline_budget(n), n))
    if args.variants:
        wanted = set(args.variants.split(","))
        names = [n for n in names if is_baseline_budget(n) or n in wanted]
    print("| variant | " + " | ".join(labels) + " | iterations | FLOPs |")
    print("|---" * (len(labels) + 3) + "|")
    for name in names:
        cells = [f"{d[name]['top1']:.2f} (n={d[name]['seeds']})" if name in d else "" for d in draws]
        first = next(d[name] for d in draws if name in d)
        print(f"| {name} | " + " | ".join(cells) + f" | {first['iterations']} | {first['flops']:.3f} |")

    print(f"\n| variant | draws | seed pairs | Δ top-1 vs {args.reference}, pooled (95 % CI) "
          "| training-time ratio per draw |")
    print("|---|---|---|---|---|")
    for name in names:
        deltas = paired_deltas(summaries, name, args.reference)
        if name == args.reference or len(deltas) < 2:
            continue
        low, high = bootstrap_interval(deltas)
        ratios = [time_ratio(summary, name) for summary in summaries]
        shown = " / ".join(f"{r:.2f}x" if r else "–" for r in ratios)
        print(f"| {name} | {sum(r is not None for r in ratios)} | {len(deltas)} | "
              f"{statistics.fmean(deltas):+.2f} ({low:+.2f} to {high:+.2f}) | {shown} |")

    if args.out:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        colours = {name: plt.get_cmap("tab10")(i % 10) for i, name in enumerate(names)}
        fig, axes = plt.subplots(1, len(draws), figsize=(5.5 * len(draws), 4.5), sharey=True, squeeze=False)
        for ax, label, points in zip(axes[0], labels, draws):
            budget = sorted((p["flops"], p["top1"]) for n, p in points.items() if is_baseline_budget(n))
            ax.plot(*zip(*budget), "k-o", label="baseline budgets (frontier)")
            for name, p in points.items():
                if is_baseline_budget(name) or name not in colours:
                    continue
                ax.errorbar(p["flops"], p["top1"], yerr=[[p["top1"] - p["low"]], [p["high"] - p["top1"]]],
                            fmt="o", capsize=3, color=colours[name])
                ax.annotate(name.replace("multigrid", "mg"), (p["flops"], p["top1"]), fontsize=7,
                            xytext=(4, 3), textcoords="offset points")
            ax.set_title(label)
            ax.set_xlabel("training FLOPs / full baseline's")
            ax.grid(alpha=0.3)
        axes[0][0].set_ylabel("final val top-1 (%), mean and range over seeds")
        axes[0][0].legend(loc="lower right", fontsize=8)
        fig.tight_layout()
        fig.savefig(args.out, dpi=110)
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
