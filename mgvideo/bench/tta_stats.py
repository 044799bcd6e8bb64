"""Statistics of the time-to-accuracy benchmark: bootstrap intervals over seeds and validation clips, and
the speed-up at fractions of the target read off the seeds' mean curves. Pure functions of numbers (no
training), so they are testable."""

from __future__ import annotations

import statistics
from collections.abc import Sequence

import numpy as np

FRACTIONS = (0.8, 0.9, 0.95, 1.0)  # of the target top-1: where the speed-up curve is read
Eval = tuple[int, float, float]  # (samples trained, training s, val top-1 %) at one evaluation


def bootstrap_interval(per_seed: Sequence[Sequence[float]], reps: int = 2000, level: float = 0.95,
                       seed: int = 0) -> tuple[float, float] | None:
    """A `level` interval for the mean over seeds of each seed's mean over clips, resampling seeds and,
    within each drawn seed, its clips (both with replacement). `per_seed` holds one value per validation
    clip (1/0 top-1 hits, or paired hit differences) for each seed; None when there are none."""
    arrays = [np.asarray(values, dtype=np.float64) for values in per_seed if len(values)]
    if not arrays:
        return None
    rng = np.random.default_rng(seed)
    stats = np.empty(reps)
    for r in range(reps):
        chosen = rng.integers(len(arrays), size=len(arrays))
        stats[r] = np.mean([arrays[i][rng.integers(len(arrays[i]), size=len(arrays[i]))].mean()
                            for i in chosen])
    tail = 100 * (1 - level) / 2
    low, high = np.percentile(stats, [tail, 100 - tail])
    return float(low), float(high)


def paired_differences(hits: Sequence[int], base_hits: Sequence[int]) -> list[int]:
    """Per-clip hit differences (-1, 0, 1) of two runs on the same validation clips; [] if they differ."""
    if len(hits) != len(base_hits):
        return []
    return [a - b for a, b in zip(hits, base_hits)]


def time_to_target(evals: Sequence[Eval], target: float) -> float | None:
    """Training seconds at the first evaluation whose top-1 reaches `target`; None if none does.

    The time is the clock at that evaluation: the moment the run could know it got there.
    """
    for _, seconds, top1 in evals:
        if top1 >= target - 1e-9:
            return seconds
    return None


def paired_speedup(base_evals: Sequence[Eval], base_total_s: float, evals: Sequence[Eval],
                   target: float) -> float | None:
    """Baseline time to `target` over the other run's. None when the other never reaches it. A baseline
    seed that never reaches it counts its whole training time: a lower bound on its
    time, so the speed-up is understated, never inflated."""
    other = time_to_target(evals, target)
    if other is None:
        return None
    base = time_to_target(base_evals, target)
    return (base_total_s if base is None else base) / max(other, 1e-9)


def mean_curve(per_seed: Sequence[Sequence[Eval]]) -> list[Eval]:
    """The seeds' mean learning curve: at each evaluation, the mean samples, training seconds and top-1.

    Seeds of one variant share its schedule, and `train.eval_points` puts the k-th evaluation of every
    run at iteration ceil(k * total / N) of its own schedule: index k is the same point of each seed's
    run. A seed with fewer evaluations (a run stopped early) cuts the curve to its length.
    """
    curves = [c for c in per_seed if c]
    if not curves:
        return []
    return [(round(statistics.fmean(c[k][0] for c in curves)), statistics.fmean(c[k][1] for c in curves),
             statistics.fmean(c[k][2] for c in curves)) for k in range(min(len(c) for c in curves))]


def curve_speedup(base: Sequence[Eval], other: Sequence[Eval],
                  target: float) -> tuple[float | None, str | None]:
    """The baseline's time to `target` over the other's, both read off curves (the seeds' mean curves),
    with its bound: (None, None) when the other never reaches `target`; a baseline that never does counts
    its whole curve's time, so the speed-up is then a lower bound ('lower')."""
    mine = time_to_target(other, target)
    if mine is None or not base:
        return None, None
    reach = time_to_target(base, target)
    if reach is None:
        return base[-1][1] / max(mine, 1e-9), "lower"
    return reach / max(mine, 1e-9), None


def ratio_interval(numerators: Sequence[float], denominators: Sequence[float], reps: int = 2000,
                   level: float = 0.95, seed: int = 0) -> tuple[float, float] | None:
    """A `level` interval for the ratio of means sum(numerators) / sum(denominators) (e.g. the baseline's
    training time over multigrid's), resampling the seeds' pairs with replacement as `bootstrap_interval`
    does; None for fewer than 2 seeds, where resampling seeds says nothing."""
    num, den = np.asarray(numerators, dtype=np.float64), np.asarray(denominators, dtype=np.float64)
    if len(num) < 2 or len(num) != len(den):
        return None
    drawn = np.random.default_rng(seed).integers(len(num), size=(reps, len(num)))
    ratios = num[drawn].sum(axis=1) / np.maximum(den[drawn].sum(axis=1), 1e-12)
    tail = 100 * (1 - level) / 2
    low, high = np.percentile(ratios, [tail, 100 - tail])
    return float(low), float(high)

