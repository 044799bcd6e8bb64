"""The options table of issue 18 from `mgvideo bench tta` summaries of several data draws: per variant and
draw, each seed's final top-1, the mean, its change against the reference multigrid of the same seeds,
training seconds and iterations.

    python scripts/options_table.py DRAW0/tta.json DRAW1/tta.json [--reference multigrid]
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path


def rows(summary: dict, reference: str) -> dict[str, dict]:
    """variant -> {seed: run} for one summary, with the reference's runs by seed."""
    by_variant: dict[str, dict[int, dict]] = {}
    for run in summary["runs"]:
        by_variant.setdefault(run["variant"], {})[run["seed"]] = run
    if reference not in by_variant:
        raise SystemExit(f"no '{reference}' runs in the summary")
    return by_variant


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("summaries", nargs="+", type=Path)
    parser.add_argument("--reference", default="multigrid")
    args = parser.parse_args()
    tables = [rows(json.loads(p.read_text()), args.reference) for p in args.summaries]
    variants = list(dict.fromkeys(v for t in tables for v in t))
    head = " | ".join(f"draw {i}: top-1 per seed (mean) | Δ vs {args.reference} | train s" for i in
                      range(len(tables)))
    print(f"| variant | {head} | iterations |")
    print("|---|" + "---|---|---|" * len(tables) + "---|")
    for variant in variants:
        cells, iterations = [], None
        for table in tables:
            runs = table.get(variant, {})
            if not runs:
                cells += ["–", "–", "–"]
                continue
            seeds = sorted(runs)
            tops = [runs[s]["final_top1"] for s in seeds]
            ref = [table[args.reference][s]["final_top1"] for s in seeds if s in table[args.reference]]
            delta = (statistics.fmean(t - r for t, r in zip(tops, ref)) if len(ref) == len(tops) else None)
            cells += [" / ".join(f"{t:.2f}" for t in tops) + f" ({statistics.fmean(tops):.2f})",
                      "–" if delta is None or variant == args.reference else f"{delta:+.2f}",
                      f"{statistics.fmean(runs[s]['train_s'] for s in seeds):.0f}"]
            iterations = runs[seeds[0]]["iterations"]
        print(f"| {variant} | " + " | ".join(cells) + f" | {iterations} |")


if __name__ == "__main__":
    main()
