"""The time-to-accuracy benchmark's headline: the figures that survive seed noise, in the order a reader
should weigh them. First the training-time ratio and the final top-1 difference, each with its 95 %
interval over seeds; then the speed-up to the target read off the seeds' mean curves, and the speed-up
at equal accuracy on the baseline's frontier, with '≥' or '≤' where only a bound can be read.

Why this order: with a few seeds, a per-seed time to target flips between a value and 'never' when a seed
ends a hair below the target, so it cannot lead; the time ratio and the accuracy difference do not flip.
"""

from __future__ import annotations

import math
from typing import Any

KEYS = ("seeds", "time_ratio", "time_ratio_ci95", "final_top1_delta", "final_top1_delta_ci95",
        "speedup", "speedup_bound", "speedup_at_equal_accuracy", "speedup_at_equal_accuracy_bound",
        "frontier_budgets")
FRONTIER_BOUNDS = {"lower": "it ends above every baseline budget",
                   "upper": "the cheapest baseline budget already beats it"}


def headline(variant: str, figures: dict[str, Any], target_top1: float | None) -> dict[str, Any]:
    """The headline of `variant` against the baseline, from its summary `figures` (compare's
    `variants[variant]`): those figures (`speedup` renamed `speedup_to_target`) and their one-line
    `text`."""
    kept = {key: figures.get(key) for key in KEYS}
    kept["speedup_to_target"] = kept.pop("speedup")
    kept["speedup_to_target_bound"] = kept.pop("speedup_bound")
    return {"variant": variant, **kept, "text": headline_text(variant, kept, target_top1)}


def headline_text(variant: str, h: dict[str, Any], target_top1: float | None) -> str:
    """One line: '<variant>, N seeds: 3.13× less training time (95 % CI ...); final top-1 +0.30 points
    (95 % CI ...); to the target ... on the seeds' mean curves: 3.13× sooner; at equal accuracy on the
    baseline's frontier (2 budgets): ≥ 3.1×'."""
    seeds = h["seeds"]
    target = "–" if target_top1 is None else f"{target_top1:.2f} %"
    parts = [
        _time_ratio(h["time_ratio"], h["time_ratio_ci95"]),
        f"final top-1 {_signed(h['final_top1_delta'])} points{_delta_ci(h['final_top1_delta_ci95'])}",
        f"to the target top-1 {target} on the seeds' mean curves: "
        + _speedup(h["speedup_to_target"], h["speedup_to_target_bound"], "never", " sooner",
                   {"lower": "the baseline's mean curve never reaches it"}),
        f"at equal accuracy on the baseline's frontier ({_budgets(h['frontier_budgets'])}): "
        + _speedup(h["speedup_at_equal_accuracy"], h["speedup_at_equal_accuracy_bound"],
                   "– (no baseline budget)", "", FRONTIER_BOUNDS),
    ]
    return f"{variant} against the baseline, {seeds} seed{'' if seeds == 1 else 's'}: " + "; ".join(parts)


def _time_ratio(ratio: float | None, ci: list[float] | None) -> str:
    """'3.13× less training time (95 % CI 2.86–3.40×)'; a ratio under 1 is said as 'more'."""
    if ratio is None:
        return "training time: –"
    if ratio >= 1:
        interval = "" if ci is None else f" (95 % CI {ci[0]:.2f}–{ci[1]:.2f}×)"
        return f"{ratio:.2f}× less training time{interval}"
    interval = "" if ci is None else f" (95 % CI {1 / ci[1]:.2f}–{1 / ci[0]:.2f}×)"
    return f"{1 / ratio:.2f}× more training time{interval}"


def _speedup(value: float | None, bound: str | None, missing: str, suffix: str = "",
             why: dict[str, str] | None = None) -> str:
    """A speed-up, or its bound with the reason (`why[bound]`): a lower bound is rounded down and an upper
    bound up, to one decimal, so that the printed bound still holds."""
    if value is None:
        return missing
    reason = f" ({why[bound]})" if why and bound in why else ""
    if bound == "lower":
        return f"≥ {math.floor(value * 10 + 1e-9) / 10:.1f}×{suffix}{reason}"
    if bound == "upper":
        return f"≤ {math.ceil(value * 10 - 1e-9) / 10:.1f}×{suffix}{reason}"
    return f"{value:.2f}×{suffix}"


def _signed(value: float | None) -> str:
    return "–" if value is None else f"{value:+.2f}"


def _delta_ci(ci: list[float] | None) -> str:
    return "" if ci is None else f" (95 % CI {ci[0]:+.2f} to {ci[1]:+.2f})"


def _budgets(count: int | None) -> str:
    return f"{count or 0} budget{'' if count == 1 else 's'}"
