"""Statistics of the time-to-accuracy benchmark: bootstrap intervals over seeds and validation clips, and
the speed-up at fractions of the target. Pure functions of numbers (no training), so they are testable."""

from __future__ import annotations

import statistics
from collections.abc import Sequence

import numpy as np

FRACTIONS = (0.8, 0.9, 0.95, 1.0)  # of the target top-1: where the speed-up curve is read


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


def time_to_target(evals: Sequence[tuple[int, float, float]], target: float) -> float | None:
    """Training seconds at the first evaluation whose top-1 reaches `target`; None if none does.

    The time is the clock at that evaluation: the moment the run could know it got there.
    """
    for _, seconds, top1 in evals:
        if top1 >= target - 1e-9:
            return seconds
    return None


def paired_speedup(base_evals: Sequence[tuple[int, float, float]], base_total_s: float,
                   evals: Sequence[tuple[int, float, float]], target: float) -> float | None:
    """Baseline time to `target` over the other run's. None when the other never reaches it. A baseline
    seed that never reaches it counts its whole training time: a lower bound on its
    time, so the speed-up is understated, never inflated."""
    other = time_to_target(evals, target)
    if other is None:
        return None
    base = time_to_target(base_evals, target)
    return (base_total_s if base is None else base) / max(other, 1e-9)


def median_speedup(values: Sequence[float | None]) -> float | None:
    """The median speed-up over seeds, a seed that never reached the target counting as infinitely slow
    (0); None when the median itself is such a seed: the target is, on the whole, never reached."""
    if not values:
        return None
    median = statistics.median(0.0 if v is None else v for v in values)
    return None if median == 0.0 else median


def median_or_none(values: Sequence[float]) -> float | None:
    """The median, or None for no values."""
    return statistics.median(values) if values else None
