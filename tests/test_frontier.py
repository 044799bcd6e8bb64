"""The baseline frontier: interpolation, gain at equal time, speed-up at equal accuracy, and the JSON and
table `bench tta` builds from runs at several budgets."""

import json

import pytest

from mgvideo.bench import frontier as F
from mgvideo.bench import tta_output as O
from mgvideo.bench import tta_report as R

CURVE = [(100.0, 60.0), (200.0, 70.0), (400.0, 80.0)]  # the baseline at three budgets


def test_accuracy_at_interpolates_inside_the_curve_only():
    assert F.accuracy_at(CURVE, 150.0) == pytest.approx(65.0)
    assert F.accuracy_at(CURVE, 400.0) == 80.0
    assert F.accuracy_at(CURVE, 99.0) is None and F.accuracy_at(CURVE, 401.0) is None
    assert F.accuracy_at([], 1.0) is None


def test_time_to_accuracy_is_the_first_crossing():
    assert F.time_to_accuracy(CURVE, 75.0) == pytest.approx(300.0)
    assert F.time_to_accuracy(CURVE, 80.0) == 400.0
    assert F.time_to_accuracy(CURVE, 80.1) is None
    dip = [(100.0, 60.0), (200.0, 58.0), (300.0, 70.0)]
    assert F.time_to_accuracy(dip, 64.0) == pytest.approx(250.0)  # after the dip, from 58 at 200 s


def test_judge_a_run_against_the_frontier():
    fast = F.judge(CURVE, 150.0, 75.0)  # the baseline needs 300 s for 75 %: 2x; at 150 s it has 65 %
    assert fast == {"gain_at_equal_time": 10.0, "gain_at_equal_time_bound": None,
                    "speedup_at_equal_accuracy": 2.0, "speedup_at_equal_accuracy_bound": None,
                    "beyond_frontier": False, "below_frontier_start": False}
    # Better than every budget: the frontier would need more than its longest budget's 400 s, so the
    # speed-up is at least 400 / 150, not unknown.
    best = F.judge(CURVE, 150.0, 85.0)
    assert best["speedup_at_equal_accuracy"] == pytest.approx(2.667) and best["beyond_frontier"]
    assert best["speedup_at_equal_accuracy_bound"] == "lower"
    weak = F.judge(CURVE, 50.0, 55.0)  # faster than the cheapest budget and below it
    assert weak["below_frontier_start"] and weak["speedup_at_equal_accuracy_bound"] == "upper"
    # Less time than the cheapest budget: with less, the baseline would do no better than its 60 %.
    assert (weak["gain_at_equal_time"], weak["gain_at_equal_time_bound"]) == (-5.0, "lower")
    late = F.judge(CURVE, 500.0, 79.0)  # more time than the longest budget: at most 1 point behind
    assert (late["gain_at_equal_time"], late["gain_at_equal_time_bound"]) == (-1.0, "upper")
    assert F.judge([], 100.0, 50.0)["gain_at_equal_time"] is None


def test_family_strips_the_budget_only():
    assert F.family("baseline@0.5") == "baseline"
    assert F.family("multigrid+finish@2") == "multigrid+finish"
    assert F.family("multigrid") == "multigrid"


def run(variant, seed, seconds, top1, iterations):
    return R.RunFigures(variant, seed, [(1, seconds, top1)], seconds, iterations, iterations * 8, 1.0)


def test_compare_reports_the_frontier_and_multigrid_against_it():
    runs = []
    for seed, shift in ((0, 0.0), (1, 2.0)):
        runs += [run("baseline", seed, 400.0, 80.0 + shift, 4000),
                 run("baseline@0.5", seed, 200.0, 70.0 + shift, 2000),
                 run("baseline@0.25", seed, 100.0, 60.0 + shift, 1000),
                 run("multigrid", seed, 150.0, 75.0 + shift, 1100)]
    summary = R.compare(runs, None)
    assert summary["frontier"][:2] == [
        {"variant": "baseline", "budget": 1.0, "seed": 0, "train_s": 400.0, "final_top1": 80.0},
        {"variant": "baseline@0.5", "budget": 0.5, "seed": 0, "train_s": 200.0, "final_top1": 70.0}]
    assert {p["budget"] for p in summary["frontier"] if p["variant"] == "multigrid"} == {0.275}
    # Means: baseline (100, 61), (200, 71), (400, 81); multigrid (150, 76): +10 points, 300 s / 150 s.
    assert summary["gain_at_equal_time"] == 10.0
    assert summary["speedup_at_equal_accuracy"] == 2.0
    assert summary["speedup"] is None  # 76 never reaches the full baseline's 81: null, not 0
    table = O.markdown_table(summary)
    assert "| multigrid | 0.275 | 150.0 | 76.00 | +10.00 | 2.00× |" in table
    assert "| baseline@0.5 | 0.500 | 200.0 | 71.00 | – | – |" in table
    json.dumps(summary)
