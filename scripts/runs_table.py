"""Final top-1, training time, iterations, and per-stage ms per iteration and share of it spent waiting
for data, of the run folders a bench or `tta.train_fresh` left in OUT/seedS/VARIANT, each variant against
a reference variant of the same seeds.

    python scripts/runs_table.py runs/cnn29_d1 runs/cnn29_d2 --reference multigrid
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

from mgvideo.bench.tta_report import stage_costs
from mgvideo.engine.records import EvalRecord, TrainRecord, read_records

sys.path.insert(0, str(Path(__file__).resolve().parent))
from frontier_plot import bootstrap_interval  # noqa: E402


def read_run(folder: Path) -> dict | None:
    """Final top-1, training seconds, iterations and stage costs of a finished run folder; None otherwise."""
    if not (folder / "summary.json").exists():
        return None
    records = read_records(folder / "metrics.jsonl")
    evals = [r for r in records if isinstance(r, EvalRecord)]
    steps = [r for r in records if isinstance(r, TrainRecord)]
    return {"top1": evals[-1].top1, "train_s": max(r.time for r in records),
            "iterations": sum(r.iterations for r in steps), "stages": stage_costs(steps)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("outs", nargs="+", type=Path)
    parser.add_argument("--reference", default="multigrid")
    args = parser.parse_args()
    for out in args.outs:
        runs: dict[str, dict[int, dict]] = {}
        for folder in sorted(out.glob("seed*/*")):
            run = read_run(folder)
            if run is not None:
                runs.setdefault(folder.name, {})[int(folder.parent.name[4:])] = run
        print(f"\n{out}")
        print("| variant | top-1 per seed (mean) | Δ vs reference, paired (95 % CI) | train s | iterations |")
        print("|---|---|---|---|---|")
        reference = runs.get(args.reference, {})
        for name, by_seed in sorted(runs.items()):
            seeds = sorted(by_seed)
            top1 = [by_seed[s]["top1"] for s in seeds]
            shown = " / ".join(f"{t:.2f}" for t in top1) + f" ({statistics.fmean(top1):.2f})"
            deltas = [by_seed[s]["top1"] - reference[s]["top1"] for s in seeds if s in reference]
            delta = "–"
            if name != args.reference and len(deltas) >= 2:
                low, high = bootstrap_interval(deltas)
                delta = f"{statistics.fmean(deltas):+.2f} ({low:+.2f} to {high:+.2f})"
            seconds = statistics.fmean(by_seed[s]["train_s"] for s in seeds)
            print(f"| {name} | {shown} | {delta} | {seconds:.1f} | {by_seed[seeds[0]]['iterations']} |")
        for name, by_seed in sorted(runs.items()):
            first = by_seed[min(by_seed)]
            stages = ", ".join(f"{s['stage']}: {s['ms_per_iter']:.0f} ({100 * s['data_wait']:.0f} %)"
                               for s in first["stages"])
            print(f"{name}, seed {min(by_seed)}: ms per iteration by stage (waiting for data): {stages}")


if __name__ == "__main__":
    main()
