"""The baseline frontier: interpolation, gain at equal time, speed-up at equal accuracy, and the JSON and
table `bench tta` builds from runs at several budgets."""

import json

import pytest

from mgvideo.bench import frontier as F
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
    assert fast == {"gain_at_equal_time": 10.0, "speedup_at_equal_accuracy": 2.0,
                    "beyond_frontier": False, "below_frontier_start": False}
    best = F.judge(CURVE, 150.0, 85.0)  # better than every budget: no speed-up can be read
    assert best["speedup_at_equal_accuracy"] is None and best["beyond_frontier"]
    weak = F.judge(CURVE, 50.0, 55.0)  # faster than the cheapest budget and below it
    assert weak["gain_at_equal_time"] is None and weak["below_frontier_start"]


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
    table = R.markdown_table(summary)
    assert "| multigrid | 0.275 | 150.0 | 76.00 | 10.00 | 2.00× |" in table
    assert "| baseline@0.5 | 0.500 | 200.0 | 71.00 | – | – |" in table
    json.dumps(summary)
