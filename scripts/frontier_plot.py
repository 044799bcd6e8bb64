"""Final top-1 against training FLOPs, one panel per data draw, from `mgvideo bench tta` summaries: the
baseline's budgets (the full recipe, `@0.5`, `@match`) drawn as the frontier, every other variant as a
point with its seeds' range. Prints the figures as a markdown table.

    python scripts/frontier_plot.py DRAW1/tta.json DRAW2/tta.json --out docs/frontier_vit.png
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path


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


def is_baseline_budget(name: str) -> bool:
    return name == "baseline" or name.startswith("baseline@")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("summaries", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, help="PNG to write")
    parser.add_argument("--labels", help="comma-separated panel titles (default: the summaries' folders)")
    args = parser.parse_args()
    labels = args.labels.split(",") if args.labels else [p.parent.name for p in args.summaries]
    draws = [variant_points(json.loads(p.read_text())) for p in args.summaries]

    names = sorted({n for d in draws for n in d}, key=lambda n: (not is_baseline_budget(n), n))
    print("| variant | " + " | ".join(labels) + " | iterations | FLOPs |")
    print("|---" * (len(labels) + 3) + "|")
    for name in names:
        cells = [f"{d[name]['top1']:.2f} (n={d[name]['seeds']})" if name in d else "" for d in draws]
        first = next(d[name] for d in draws if name in d)
        print(f"| {name} | " + " | ".join(cells) + f" | {first['iterations']} | {first['flops']:.3f} |")

    if args.out:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, len(draws), figsize=(5.5 * len(draws), 4.5), sharey=True, squeeze=False)
        for ax, label, points in zip(axes[0], labels, draws):
            budget = sorted((p["flops"], p["top1"]) for n, p in points.items() if is_baseline_budget(n))
            ax.plot(*zip(*budget), "k-o", label="baseline budgets (frontier)")
            for name, p in points.items():
                if is_baseline_budget(name):
                    continue
                ax.errorbar(p["flops"], p["top1"], yerr=[[p["top1"] - p["low"]], [p["high"] - p["top1"]]],
                            fmt="o", capsize=3)
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
