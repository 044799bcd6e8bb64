"""scripts/frontier_plot.py: final top-1 against training FLOPs from bench summaries."""

import json
import sys

import pytest
from script_modules import load_script


def summary(runs):
    return {"runs": [{"variant": v, "seed": s, "final_top1": top1, "train_gflops": gf, "iterations": it,
                      "train_s": gf} for v, s, top1, gf, it in runs]}


RUNS = [("baseline", 0, 60.0, 100.0, 5400), ("baseline", 1, 70.0, 102.0, 5400),
        ("baseline@0.5", 0, 30.0, 50.5, 2700), ("multigrid", 0, 50.0, 25.0, 1514),
        ("multigrid", 1, 56.0, 26.0, 1514)]


def test_points_are_means_over_seeds_against_the_full_baselines_flops():
    points = load_script("frontier_plot").variant_points(summary(RUNS))
    assert points["baseline"] == {"flops": 1.0, "top1": 65.0, "low": 60.0, "high": 70.0, "seeds": 2,
                                  "iterations": 5400}
    assert points["multigrid"]["flops"] == pytest.approx(25.5 / 101.0)
    assert points["multigrid"]["top1"] == 53.0 and points["baseline@0.5"]["seeds"] == 1


def test_it_prints_one_row_per_variant_and_draws_a_panel_per_draw(tmp_path, capsys, monkeypatch):
    module = load_script("frontier_plot")
    paths = []
    for draw in (1, 2):
        path = tmp_path / f"d{draw}" / "tta.json"
        path.parent.mkdir()
        path.write_text(json.dumps(summary(RUNS)))
        paths.append(str(path))
    monkeypatch.setattr(sys, "argv", ["frontier_plot", *paths, "--out", str(tmp_path / "f.png")])
    module.main()
    out = capsys.readouterr().out
    per_draw, pooled = out.split("\n\n")[:2]
    rows = [line for line in per_draw.splitlines() if line.startswith("| ") and "---" not in line]
    assert [r.split(" | ")[0] for r in rows[1:]] == ["| baseline", "| baseline@0.5", "| multigrid"]
    assert "53.00 (n=2) | 53.00 (n=2)" in per_draw
    # pooled: 4 pairs of -10 / -14; the time ratio 101 / 25.5 on each draw
    assert "| multigrid | 2 | 4 | -12.00 (" in pooled and "3.96x / 3.96x" in pooled
    assert (tmp_path / "f.png").stat().st_size > 1000


def test_a_summary_without_the_baseline_is_an_error():
    with pytest.raises(SystemExit, match="baseline"):
        load_script("frontier_plot").variant_points(summary(RUNS[3:]))


def test_pooled_deltas_pair_seeds_within_each_draw():
    module = load_script("frontier_plot")
    other = summary([("baseline", 0, 80.0, 100.0, 5400), ("multigrid", 0, 70.0, 25.0, 1514)])
    deltas = module.paired_deltas([summary(RUNS), other], "multigrid")
    assert sorted(deltas) == [-14.0, -10.0, -10.0]  # 50 - 60, 56 - 70, then 70 - 80 of the other draw
    assert module.paired_deltas([summary(RUNS), other], "multigrid", "baseline@0.5") == [20.0]  # 50 - 30
    low, high = module.bootstrap_interval(deltas)
    assert -14.0 <= low <= high <= -10.0
    assert module.bootstrap_interval(deltas) == (low, high)  # deterministic
    assert module.time_ratio(summary(RUNS), "missing") is None
