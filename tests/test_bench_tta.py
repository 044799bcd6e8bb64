"""`mgvideo bench tta`: the harness logic on made-up metric streams (time to target, medians, target
choice, JSON keys, tables), the bench config and the random-shape ablation, and one tiny end-to-end run."""

import json
import math
from pathlib import Path

import pytest

from mgvideo.bench import tta
from mgvideo.bench import tta_report as R
from mgvideo.cli import main
from mgvideo.errors import ConfigError
from mgvideo.multigrid.schedule import MultigridConfig, MultigridSchedule

REPO = Path(__file__).resolve().parents[1]


def figures(variant, seed, curve, wall=None, gflops=100.0):
    """A run whose evaluations are (samples, seconds, top-1) points."""
    evals = [(i * 100, t, a) for i, (t, a) in enumerate(curve, 1)]
    return R.RunFigures(variant, seed, evals, wall or curve[-1][0], len(curve) * 10, len(curve) * 100, gflops)


# ---- time to target, target choice, speed-up, medians --------------------------------------------


def test_time_to_target_is_the_first_evaluation_reaching_it():
    evals = [(100, 10.0, 20.0), (200, 20.0, 55.0), (300, 30.0, 50.0), (400, 40.0, 60.0)]
    assert R.time_to_target(evals, 55.0) == 20.0  # equal counts as reached
    assert R.time_to_target(evals, 56.0) == 40.0  # the dip at 30 s does not matter
    assert R.time_to_target(evals, 60.1) is None
    assert R.time_to_target([], 1.0) is None


def test_target_is_the_configured_value_or_the_baseline_final():
    assert R.choose_target(None, 71.25) == 71.25
    assert R.choose_target(40, 71.25) == 40.0


def test_speedup_and_unreached_targets():
    assert R.speedup(300.0, 100.0) == 3.0
    assert R.speedup(300.0, None) == 0.0  # never got there: infinitely slow
    assert R.speedup(None, 100.0) is None  # the baseline missed a configured target


def test_median_skips_missing_values():
    assert R.median([3.0, None, 1.0, float("nan"), 2.0]) == 2.0
    assert R.median([1.0, 4.0]) == 2.5
    assert R.median([None]) is None


# ---- figures from metric records -----------------------------------------------------------------


def test_figures_from_records_counts_iterations_flops_and_stage_costs():
    records = [
        {"kind": "train", "stage": 0, "frames": 4, "crop": 16, "batch": 8, "clips_per_s": 80.0,
         "data_wait": 0.5, "time": 0.1},
        {"kind": "train", "stage": 0, "frames": 4, "crop": 8, "batch": 32, "clips_per_s": 160.0,
         "data_wait": 0.0, "time": 0.3},
        {"kind": "eval", "samples": 40, "time": 1.0, "top1": 30.0, "top5": 80.0, "bn_s": 0.1, "val_s": 0.2},
        {"kind": "precise_bn", "step": 2, "time": 1.2, "seconds": 0.15},
        {"kind": "train", "stage": 1, "frames": 8, "crop": 16, "batch": 4, "clips_per_s": 10.0,
         "data_wait": 0.25, "time": 1.4},
        {"kind": "eval", "samples": 44, "time": 2.0, "top1": 35.0, "top5": 85.0},
    ]
    run = R.figures_from_records("multigrid", 1, records, lambda f, c: f * c / 64)
    assert (run.iterations, run.samples, run.final_top1) == (3, 44, 35.0)
    assert run.train_gflops == pytest.approx(8 * 1.0 + 32 * 0.5 + 4 * 2.0)
    assert run.evals == [(40, 1.0, 30.0), (44, 2.0, 35.0)]
    assert run.wall_s == 2.0
    assert run.overhead_s == pytest.approx(2.0 - (0.1 + 0.2 + 0.4))  # time outside the iterations
    assert (run.eval_s, run.stage_bn_s) == (pytest.approx(0.3), 0.15)  # the part of it that is known
    stage0, stage1 = run.stages
    assert stage0["shapes"] == ["4x8", "4x16"] and stage0["iterations"] == 2
    assert stage0["ms_per_iter"] == pytest.approx(150.0)
    assert stage0["data_wait"] == pytest.approx(0.05 / 0.3, abs=1e-3)
    assert stage1["ms_per_clip"] == pytest.approx(100.0)


# ---- the comparison and its outputs --------------------------------------------------------------


def three_seeds():
    runs = []
    for seed, (mg_at, mg_final) in enumerate([(50.0, 61.0), (100.0, 59.0), (None, 58.0)]):
        runs.append(figures("baseline", seed, [(100.0, 40.0), (200.0, 55.0), (300.0, 60.0)], gflops=300.0))
        mg_curve = [(50.0, 50.0), (100.0, 60.0 if mg_at == 100.0 else 55.0), (150.0, mg_final)]
        if mg_at == 50.0:
            mg_curve[0] = (50.0, 60.0)
        runs.append(figures("multigrid", seed, mg_curve, gflops=75.0))
    return runs


def test_compare_pairs_each_seed_with_its_baseline():
    summary = R.compare(three_seeds(), None)
    assert {"speedup", "final_top1_delta", "target_top1", "runs"} <= summary.keys()
    assert summary["target_top1"] == 60.0
    speedups = [r["speedup"] for r in summary["runs"] if r["variant"] == "multigrid"]
    assert speedups == [6.0, 3.0, 0.0]  # 300/50, 300/100, never reached
    assert summary["speedup"] == 3.0  # the median over seeds
    assert summary["final_top1_delta"] == -1.0  # median of +1, -1, -2
    mg = summary["variants"]["multigrid"]
    assert mg["reached"] == 2 and mg["ideal_flop_ratio"] == 4.0
    assert mg["wall_ratio"] == 2.0 and mg["realised_fraction"] == 0.5
    json.dumps(summary)  # plain JSON: no infinities or dataclasses left


def test_compare_with_a_configured_target_and_without_a_baseline():
    summary = R.compare(three_seeds(), 50.0)
    assert summary["target_top1"] == 50.0 and summary["target_rule"] == "configured"
    assert summary["variants"]["multigrid"]["speedup"] == 4.0  # 200 / 50 on every seed
    with pytest.raises(ValueError, match="baseline"):
        R.compare([figures("multigrid", 0, [(1.0, 1.0)])], None)


def test_markdown_table_and_plot(tmp_path):
    summary = R.compare(three_seeds(), None)
    table = R.markdown_table(summary)
    assert "Target top-1: 60.00 %" in table
    assert "| multigrid | 3 | 100.0 (2/3) | 3.00× | 59.00 | -1.00 |" in table
    assert "| 2 | multigrid | 60.00 | – | 0.00× | 58.00 |" in table
    png = R.plot_curves(summary, tmp_path / "tta.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# ---- bench config -----------------------------------------------------------------------------------

BENCH_YAML = """\
bench:
  seeds: 2
  variants: [multigrid, baseline]
  overrides:
    baseline: {solver.base_lr: 0.2}
    multigrid: {solver.base_lr: 0.1}
    long: {solver.weight_decay: 0.001}
data:
  frames: 8
solver:
  steps: [0, 4]
  max_epoch: 6
"""


def test_bad_override_is_blamed_on_the_command_line(tmp_path):
    path = tmp_path / "bench.yaml"
    path.write_text(BENCH_YAML)
    with pytest.raises(ConfigError, match="^command line: .*solver.weight_decay"):
        tta.load_bench(path, ["solver.weight_decay=lots"])


def test_any_config_reads_a_recipe_or_a_bench_configs_multigrid_run(tmp_path):
    from mgvideo.config import load_config

    bench = tmp_path / "bench.yaml"
    bench.write_text(BENCH_YAML)
    cfg = tta.load_any_config(bench, ["data.crop=48"])
    assert cfg.multigrid.long_cycle and cfg.multigrid.short_cycle  # the multigrid arm, not the base config
    assert cfg.solver.base_lr == 0.1 and cfg.data.crop == 48
    recipe = tmp_path / "run.yaml"
    recipe.write_text("solver:\n  base_lr: 0.3\n")
    assert tta.load_any_config(recipe) == load_config(recipe)


def test_bench_config_variants_and_overrides(tmp_path):
    path = tmp_path / "bench.yaml"
    path.write_text(BENCH_YAML)
    spec, cfg = tta.load_bench(path, ["bench.seeds=1", "data.crop=48"])
    assert spec.seeds == 1 and spec.variants == ["baseline", "multigrid"]  # baseline always first
    assert (cfg.data.frames, cfg.data.crop, cfg.solver.max_epoch) == (8, 48, 6)
    base = tta.variant_config(cfg, spec, "baseline", 0)
    assert (base.multigrid.long_cycle, base.multigrid.short_cycle, base.solver.base_lr) == (False, False, 0.2)
    long = tta.variant_config(cfg, spec, "long", 3)
    assert (long.multigrid.long_cycle, long.multigrid.short_cycle) == (True, False)
    assert (long.solver.base_lr, long.solver.weight_decay, long.train.seed) == (0.1, 0.001, 3)
    assert long.train.eval_period_samples == spec.eval_every_samples


@pytest.mark.parametrize("text, message", [
    ("bench:\n  seeds: 2\n  sedes: 3\n", "bench.yaml:3: bench.sedes is not a bench setting"),
    ("bench:\n  variants: [multigrid]\n", "must include 'baseline'"),
    ("bench: {}\ndata:\n  frames: 8\n  crop: -4\n", "bench.yaml:4"),
    ("bench: {}\nsolver:\n  max_epoch: 2\n", "bench.yaml"),
])
def test_bad_bench_config_names_file_and_line(tmp_path, text, message):
    path = tmp_path / "bench.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message.replace(".", r"\.").replace("[", r"\[")):
        tta.load_bench(path)


# ---- random-shape ablation ----------------------------------------------------------------------------


def test_random_shapes_keep_the_cost_budget_and_lr_rule():
    ordered = MultigridSchedule(MultigridConfig(frames=16, crop=64, steps=(0, 6, 9), max_epoch=11))
    shuffled = tta.random_shape_schedule(ordered, seed=0)
    assert shuffled.max_epoch == ordered.max_epoch
    last, ordered_last = shuffled.stages[-1], ordered.stages[-1]
    assert last.finetune and last.slots == ordered_last.slots
    assert (last.start_epoch, last.end_epoch) == (ordered_last.start_epoch, ordered_last.end_epoch)
    shapes = {(s.batch_factor, s.frames, s.crop) for s in ordered.stages}
    drawn = [shuffled.stage_at(e) for e in range(shuffled.max_epoch)]
    assert {(s.batch_factor, s.frames, s.crop) for s in drawn} <= shapes
    assert len({(s.frames, s.crop) for s in drawn[:-3]}) > 1
    assert [s.lr_step for s in drawn] == [ordered.stage_at(e).lr_step for e in range(ordered.max_epoch)]
    for epoch in range(ordered.stages[-1].start_epoch):  # before fine-tuning: LR = gamma^k x batch factor
        stage = shuffled.stage_at(epoch)
        assert shuffled.relative_lr(epoch + 0.5) == pytest.approx(0.1**stage.lr_step * stage.batch_factor)
    assert drawn != [ordered.stage_at(e) for e in range(ordered.max_epoch)]
    again = tta.random_shape_schedule(ordered, seed=0)
    assert again.stages == shuffled.stages  # seeded
    assert math.isclose(sum(s.epochs for s in shuffled.stages), ordered.max_epoch)


# ---- end to end -------------------------------------------------------------------------------------

TINY_BENCH = """\
bench:
  seeds: 1
  eval_every_samples: 20
  overrides:
    baseline: {solver.max_epoch: 3, solver.steps: [0, 2]}
data:
  dataset: synthetic
  root: %s
  synthetic_size: small
  num_classes: 20
  frames: 8
  crop: 32
  sampling_rate: 2
  workers: 0
model:
  name: r3d_tiny
  options: {width_per_group: 4, dropout: 0.2}
  bn_base_size: 2
solver:
  batch_size: 2
  base_lr: 0.05
  steps: [0, 2]
  max_epoch: 3
  warmup_epochs: 0.5
train:
  device: cpu
  precise_bn_batches: 2
  checkpoint_minutes: 0
"""


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_bench_tta_end_to_end(tmp_path):
    config = tmp_path / "bench.yaml"
    config.write_text(TINY_BENCH % (REPO / "runs" / "data" / "synthetic_small"))
    out, report = tmp_path / "out", tmp_path / "report.json"
    code = main(["bench", "tta", "--config", str(config), "--out", str(out), "--json", str(report)])
    assert code == 0
    summary = json.loads(report.read_text())
    assert {"speedup", "final_top1_delta", "target_top1", "runs"} <= summary.keys()
    runs = {r["variant"]: r for r in summary["runs"]}
    assert set(runs) == {"baseline", "multigrid"}
    base, mg = runs["baseline"], runs["multigrid"]
    assert summary["target_top1"] == base["final_top1"]
    assert base["iterations"] == 3 * 40 // 2  # 3 epochs of 40 clips at batch 2
    assert mg["iterations"] < base["iterations"] and mg["train_gflops"] < base["train_gflops"]
    for run in (base, mg):
        samples = [e["samples"] for e in run["evals"]]
        assert samples[-1] == run["samples"]  # the final model is always evaluated
        assert all(b > a for a, b in zip(samples, samples[1:]))
        assert run["evals"][0]["samples"] >= 20 and run["stages"]
    assert (out / "tta.md").read_text().startswith("Target top-1")
    assert (out / "tta.png").stat().st_size > 0
    assert json.loads((out / "tta.json").read_text()) == summary
