"""The bench's headline survives seed noise (issue 31): the training-time ratio and the final top-1 difference
with their intervals lead, time to target is read off the seeds' mean curves, a run above every baseline
budget gets a lower bound, and the default bench configs carry baseline budgets so the frontier is a curve."""

import numpy as np
import pytest

from mgvideo.bench import tta
from mgvideo.bench import tta_headline as H
from mgvideo.bench import tta_output as O
from mgvideo.bench import tta_report as R
from mgvideo.bench import tta_stats as S
from mgvideo.engine.builders import build_schedule

POINTS = 20  # evaluations per run, as bench.yaml


def hits(top1: float, seed: int, clips: int = 2000) -> list[int]:
    """Per-clip top-1 hits of a run ending at `top1` % on `clips` validation clips, in a seeded order."""
    ones = round(top1 * clips / 100)
    return np.random.default_rng(seed).permutation([1] * ones + [0] * (clips - ones)).tolist()


def run(variant: str, seed: int, train_s: float, last: list[float]) -> R.RunFigures:
    """A run of POINTS evaluations at k / POINTS of its `train_s`, ending with the top-1s `last`; the
    earlier ones climb linearly from 30 % to the first of them."""
    ramp = [30 + (last[0] - 30) * k / (POINTS - len(last) + 1) for k in range(1, POINTS - len(last) + 1)]
    curve = ramp + last
    evals = [(k * 100, train_s * k / POINTS, top1) for k, top1 in enumerate(curve, 1)]
    return R.RunFigures(variant, seed, evals, train_s, POINTS * 10, POINTS * 100, 1.0,
                        val_hits=hits(curve[-1], 10 * seed + len(variant)))


def issue_runs() -> list[R.RunFigures]:
    """Issue 31's held-out draw: the baseline's seeds end at 83.10 and 87.30 % (mean 85.20, the target)
    after 340 and 286 s, multigrid's at 85.15 and 85.85 % after 100 s each: +0.30 points, 3.13x less time.
    Baseline seed 1 reaches 85.20 at its 19th evaluation, multigrid seed 1 at its 19th, multigrid seed 0
    never (by 0.05 points)."""
    return [run("baseline", 0, 340.0, [82.5, 82.9, 83.1]), run("multigrid", 0, 100.0, [84.6, 84.9, 85.15]),
            run("baseline", 1, 286.0, [84.9, 85.5, 87.3]), run("multigrid", 1, 100.0, [85.0, 85.3, 85.85])]


def test_the_issues_straddling_seeds_give_the_time_ratio_the_difference_and_a_lower_bound():
    summary = R.compare(issue_runs(), None)
    assert summary["target_top1"] == 85.2
    # Per seed: multigrid seed 0 never reaches 85.20, seed 1 does 2.86x sooner (271.7 s against 95 s).
    # Their median, with 'never' as 0, was the old headline's 1.43x.
    assert [r["speedup"] for r in summary["runs"] if r["variant"] == "multigrid"] == [None, 2.86]
    # Mean curves: the baseline's reaches 85.20 at its last point (313 s), multigrid's (85.50) at 100 s.
    assert summary["speedup"] == 3.13
    # No baseline budget ends as high as multigrid: the frontier would need more than 313 s.
    assert summary["speedup_at_equal_accuracy"] == 3.13
    h = summary["headline"]
    assert h["variant"] == "multigrid" and h["seeds"] == 2
    assert h["time_ratio"] == 3.13  # 313 s against 100 s, mean over seeds
    assert h["time_ratio_ci95"] == [2.86, 3.4]  # resampling the seeds: 286 / 100 to 340 / 100
    assert h["final_top1_delta"] == 0.3
    low, high = h["final_top1_delta_ci95"]
    assert low < 0.3 < high
    assert (h["speedup_to_target"], h["speedup_to_target_bound"]) == (3.13, None)
    assert (h["speedup_at_equal_accuracy"], h["speedup_at_equal_accuracy_bound"]) == (3.13, "lower")
    text = h["text"]
    assert text.startswith("multigrid against the baseline, 2 seeds: 3.13× less training time "
                           "(95 % CI 2.86–3.40×); final top-1 +0.30 points")
    assert f"(95 % CI {low:+.2f} to {high:+.2f})" in text
    assert "85.20 % on the seeds' mean curves: 3.13× sooner" in text
    assert "≥ 3.1× (it ends above every baseline budget)" in text
    assert "1.43" not in text and "never" not in text
    assert O.markdown_table(summary).startswith(f"**{text}**")


def test_time_to_target_is_read_off_the_mean_curve():
    a = [(100, 10.0, 50.0), (200, 20.0, 70.0), (300, 30.0, 80.0)]
    b = [(100, 12.0, 40.0), (200, 22.0, 58.0), (300, 32.0, 64.0), (400, 40.0, 99.0)]  # one more point
    assert S.mean_curve([a, b]) == [(100, 11.0, 45.0), (200, 21.0, 64.0), (300, 31.0, 72.0)]
    assert S.mean_curve([]) == [] and S.mean_curve([a]) == a
    # One seed reaches 70 at 20 s, the other never: the median of the per-seed times was 'never'; the
    # mean curve gets there at its third point.
    runs = [R.RunFigures("baseline", s, [(300, 40.0, 70.0)], 40.0, 30, 300, 1.0) for s in (0, 1)]
    runs += [R.RunFigures("multigrid", 0, a, 30.0, 30, 300, 1.0), R.RunFigures("multigrid", 1, b[:3], 32.0,
                                                                               30, 300, 1.0)]
    mg = R.compare(runs, 70.0)["variants"]["multigrid"]
    assert mg["reached"] == 1 and mg["time_to_target_s"] == 31.0
    assert mg["speedup"] == pytest.approx(40.0 / 31.0, abs=1e-3)
    assert mg["mean_curve"][-1] == {"time_s": 31.0, "top1": 72.0}


def test_a_baseline_mean_curve_short_of_a_configured_target_gives_a_lower_bound():
    base, other = [(1, 100.0, 50.0), (2, 200.0, 60.0)], [(1, 50.0, 70.0)]
    assert S.curve_speedup(base, other, 65.0) == (4.0, "lower")  # its whole 200 s counts
    assert S.curve_speedup(base, other, 55.0) == (4.0, None)
    assert S.curve_speedup(base, other, 71.0) == (None, None)


def test_time_ratio_interval_resamples_seeds():
    assert S.ratio_interval([300.0], [100.0]) is None  # one seed: nothing to resample
    low, high = S.ratio_interval([340.0, 286.0, 313.0], [100.0, 100.0, 100.0])
    assert 2.86 <= low < 3.13 < high <= 3.4


def test_bounds_are_rounded_so_that_they_still_hold():
    figures = {"seeds": 1, "time_ratio": 0.8, "time_ratio_ci95": None, "final_top1_delta": -1.0,
               "final_top1_delta_ci95": None, "speedup": None, "speedup_bound": None,
               "speedup_at_equal_accuracy": 1.21, "speedup_at_equal_accuracy_bound": "upper",
               "frontier_budgets": 1}
    text = H.headline("random", figures, 60.0)["text"]
    assert text.startswith("random against the baseline, 1 seed: 1.25× more training time; final top-1 "
                           "-1.00 points; to the target top-1 60.00 % on the seeds' mean curves: never")
    assert text.endswith("(1 budget): ≤ 1.3× (the cheapest baseline budget already beats it)")
    figures.update(speedup_at_equal_accuracy=3.19, speedup_at_equal_accuracy_bound="lower")
    assert "≥ 3.1×" in H.headline("random", figures, 60.0)["text"]


def flop_timed_runs(path: str, accuracy: dict[str, float]) -> tuple[tta.BenchSpec, list[R.RunFigures]]:
    """One run per default variant of the bench config at `path`, two seeds, each taking time in
    proportion to its training FLOPs (baseline epochs of full-shape clips) and ending at `accuracy` of its
    family or budget."""
    spec, cfg = tta.load_bench(path)
    runs = []
    for seed in range(2):
        for variant in spec.variants:
            schedule = build_schedule(tta.variant_config(cfg, spec, variant, seed))
            seconds = 15.0 * schedule.flop_ratio() * schedule.cfg.max_epoch
            top1 = accuracy.get(variant, accuracy["budget"]) + seed
            runs.append(R.RunFigures(variant, seed, [(1, seconds, top1)], seconds, 1, 1, 1.0))
    return spec, runs


@pytest.mark.parametrize("path, budgets", [("configs/synthetic/bench.yaml", {"match"}),
                                           ("configs/synthetic/bench_vit.yaml", {0.5, "match"})])
def test_default_benches_carry_baseline_budgets_so_the_frontier_is_a_curve(path, budgets):
    spec, cfg = tta.load_bench(path)
    names = [tta.VariantName.parse(v) for v in spec.variants]
    assert budgets <= {n.budget for n in names if n.base == "baseline" and not n.options}
    matched = tta.variant_config(cfg, spec, "baseline@match", 0)
    multigrid = tta.variant_config(cfg, spec, "multigrid", 0)
    assert matched.solver.max_epoch == round(build_schedule(multigrid).total_iterations())  # its iterations
    assert matched.solver.max_epoch < cfg.solver.max_epoch and not matched.multigrid.long_cycle
    # A budget run is a frontier point: evaluated at its end only, off the clock like every evaluation.
    assert (matched.train.eval_points, multigrid.train.eval_points) == (1, spec.eval_points)

    spec, runs = flop_timed_runs(path, {"baseline": 86.0, "multigrid": 85.0, "budget": 70.0})
    summary = R.compare(runs, None)
    mg = summary["variants"]["multigrid"]
    assert mg["frontier_budgets"] == 1 + len(budgets)
    # 85.5 lies between the budgets (70.5) and the full baseline (86.5): a crossing, not a bound.
    assert mg["speedup_at_equal_accuracy"] > 1 and mg["speedup_at_equal_accuracy_bound"] is None
    assert mg["gain_at_equal_time"] is not None and mg["gain_at_equal_time"] > 10
    assert "no baseline budget" not in O.markdown_table(summary)


def test_the_command_prints_the_headline(tmp_path, monkeypatch, capsys):
    from mgvideo.cli import main

    path = tmp_path / "bench.yaml"
    path.write_text("bench:\n  seeds: 1\n")
    summary = R.compare(issue_runs(), None)

    def fake_bench(spec, cfg, out):
        out.mkdir(parents=True, exist_ok=True)
        (out / "tta.md").write_text(O.markdown_table(summary))
        return summary

    monkeypatch.setattr(tta, "run_bench", fake_bench)
    assert main(["bench", "tta", "--config", str(path), "--out", str(tmp_path / "o")]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert summary["headline"]["text"] in printed and not any("median over" in line for line in printed)
