"""The accuracy-time frontier of the time-to-accuracy benchmark: the baseline recipe at several budgets
gives a curve of final top-1 against training time, and any other run is judged against that curve:
its gain at equal time, and its speed-up at equal accuracy. Pure functions of (time, top-1) numbers.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import Any

Point = tuple[float, float]  # (training seconds, final top-1 %)


def family(variant: str) -> str:
    """The variant without its budget: `baseline@0.5` -> `baseline`, `multigrid+finish@2` ->
    `multigrid+finish`. Runs of one family at several budgets form one curve."""
    return variant.partition("@")[0]


def mean_curve(points_by_budget: dict[str, list[Point]]) -> list[Point]:
    """One point per budget (the mean over its seeds), sorted by time."""
    means = [(statistics.fmean(t for t, _ in pts), statistics.fmean(a for _, a in pts))
             for pts in points_by_budget.values() if pts]
    return sorted(means)


def accuracy_at(curve: Sequence[Point], seconds: float) -> float | None:
    """The curve's top-1 at `seconds`, interpolated linearly between its points; None outside it."""
    if not curve or not curve[0][0] <= seconds <= curve[-1][0]:
        return None
    for (t0, a0), (t1, a1) in zip(curve, curve[1:]):
        if t0 <= seconds <= t1:
            return a0 if t1 == t0 else a0 + (a1 - a0) * (seconds - t0) / (t1 - t0)
    return curve[0][1]  # a single point at exactly `seconds`


def time_to_accuracy(curve: Sequence[Point], top1: float) -> float | None:
    """The first training time at which the curve reaches `top1`, interpolated linearly between its
    points; None if it never does. A curve that starts above `top1` gives its first point's time: the
    true crossing lies earlier, so a speed-up read from it is an upper bound, flagged by the caller."""
    for i, (t, a) in enumerate(curve):
        if a >= top1:
            if i == 0:
                return t
            t0, a0 = curve[i - 1]
            return t0 + (t - t0) * (top1 - a0) / (a - a0)
    return None


def gain_at(curve: Sequence[Point], seconds: float, top1: float) -> tuple[float | None, str | None]:
    """Points of `top1` over the frontier at `seconds`, with its bound. Outside the frontier's span, the
    baseline is taken to do no better with less time than its cheapest budget (a lower bound on the gain,
    'lower') and no worse with more than its longest (an upper bound, 'upper'); None without a frontier."""
    if not curve:
        return None, None
    inside = accuracy_at(curve, seconds)
    if inside is not None:
        return round(top1 - inside, 2), None
    if seconds < curve[0][0]:
        return round(top1 - curve[0][1], 2), "lower"
    return round(top1 - curve[-1][1], 2), "upper"


def judge(curve: Sequence[Point], seconds: float, top1: float) -> dict[str, Any]:
    """A run (or a mean over seeds) at (`seconds`, `top1`) against the baseline frontier `curve`:
    `gain_at_equal_time` (points over the frontier at the same training time) with its bound,
    `speedup_at_equal_accuracy` (the frontier's time to `top1` over `seconds`), `beyond_frontier` (the run
    ends above every budget: the frontier would need more than its longest budget's time, so the
    speed-up is a lower bound), `below_frontier_start` (the cheapest budget already beats the run: an
    upper bound), and `speedup_at_equal_accuracy_bound`: 'lower', 'upper' or None (a crossing)."""
    gain, gain_bound = gain_at(curve, seconds, top1)
    beyond = bool(curve) and top1 > max(a for _, a in curve)
    below = bool(curve) and top1 <= curve[0][1]
    reach = curve[-1][0] if beyond else time_to_accuracy(curve, top1)
    return {
        "gain_at_equal_time": gain,
        "gain_at_equal_time_bound": gain_bound,
        "speedup_at_equal_accuracy": None if reach is None or seconds <= 0 else round(reach / seconds, 3),
        "speedup_at_equal_accuracy_bound": "lower" if beyond else "upper" if below else None,
        "beyond_frontier": beyond,
        "below_frontier_start": below,
    }
