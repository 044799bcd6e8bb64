"""`mgvideo plan`: JSON output matches the schedule, the plot is a PNG, bad flags exit 2 naming the flag."""

import json

import pytest

from mgvideo.cli import main
from mgvideo.multigrid import MultigridConfig, MultigridSchedule


def run_cli(capsys, *argv):
    try:
        code = main(["plan", *argv])
    except SystemExit as exc:  # argparse rejects a malformed value itself
        code = exc.code
    out = capsys.readouterr()
    return code, out.out, out.err


def test_json_is_one_object_matching_the_schedule(capsys):
    code, out, _ = run_cli(capsys, "--json")
    assert code == 0
    data = json.loads(out)
    assert set(data) == {"stages", "steps", "lrs", "max_epoch", "iteration_saving"}
    expected = MultigridSchedule(MultigridConfig())
    assert data["steps"] == list(expected.steps) and data["max_epoch"] == 358
    assert data["lrs"] == pytest.approx(list(expected.lrs))
    assert data["iteration_saving"] == pytest.approx(5.75)
    assert [s["end_epoch"] for s in data["stages"]] == expected.stage_ends()
    assert data["stages"][0] == {"lr_step": 0, "batch_factor": 8, "frames": 8, "crop": 158, "end_epoch": 73}


def test_json_for_charades_flags(capsys):
    code, out, _ = run_cli(capsys, "--json", "--frames", "64", "--steps", "0,41,49", "--max-epoch", "57",
                           "--long-cycle-factors", "0.25,0.7071;0.5,0.7071;0.5,1;1,1",
                           "--short-cycle-factors", "0.5,0.7071")
    assert code == 0
    assert json.loads(out)["steps"] == [0, 31, 47, 60, 67, 73, 76, 79, 80, 83]


def test_json_stages_empty_without_long_cycle(capsys):
    code, out, _ = run_cli(capsys, "--json", "--no-long-cycle")
    data = json.loads(out)
    assert code == 0 and data["stages"] == [] and data["steps"] == [0, 141, 231, 294]
    code, out, _ = run_cli(capsys, "--json", "--no-long-cycle", "--no-short-cycle")
    assert json.loads(out)["max_epoch"] == 239 and json.loads(out)["iteration_saving"] == 1


def test_table_lists_stages_bn_and_iterations(capsys):
    code, out, _ = run_cli(capsys, "--frames", "64", "--steps", "0,41,49", "--max-epoch", "57",
                           "--batch-size", "2")
    assert code == 0
    rows = [line.split() for line in out.splitlines()[1:10]]
    assert [r[0] for r in rows] == [str(i) for i in range(9)]
    assert "sub×2" in rows[0] and "BN" in rows[1] and "sync×2" in rows[2] and "sync×4" in rows[3]
    assert "FLOPs vs baseline" in out and "iteration saving" in out


def test_plot_writes_a_png(capsys, tmp_path):
    path = tmp_path / "plan.png"
    code, out, _ = run_cli(capsys, "--plot", str(path), "--lr-policy", "cosine", "--max-epoch", "196")
    assert code == 0 and str(path) in out
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000


@pytest.mark.parametrize(("argv", "flag"), [
    (["--steps", "0,94,94"], "--steps"),
    (["--steps", "0,x"], "--steps"),
    (["--max-epoch", "100"], "--max-epoch"),
    (["--crop", "0"], "--crop"),
    (["--gamma", "0"], "--gamma"),
    (["--epoch-factor", "-2"], "--epoch-factor"),
    (["--long-cycle-factors", "0.25;1"], "--long-cycle-factors"),
    (["--long-cycle-factors", "0.25,0"], "--long-cycle-factors"),
    (["--short-cycle-factors", "0.001,0.5"], "--short-cycle-factors"),
    (["--lr-policy", "linear"], "--lr-policy"),
    (["--base-lr", "-0.1"], "--base-lr"),
    (["--devices", "0"], "--devices"),
    (["--dataset-size", "4", "--devices", "8"], "--dataset-size"),
    (["--plot", "plan.jpg"], "--plot"),
])
def test_bad_flags_exit_2_naming_the_flag(capsys, argv, flag):
    code, _, err = run_cli(capsys, *argv)
    assert code == 2 and flag in err


def test_config_recipe_gives_the_same_schedule_as_the_trainer(capsys):
    code, out, _ = run_cli(capsys, "--json", "--config", "configs/charades/slowfast_r50_16x8_multigrid.yaml")
    assert code == 0
    assert json.loads(out)["steps"] == [0, 31, 47, 60, 67, 73, 76, 79, 80, 83]
    code, out, _ = run_cli(capsys, "--json", "--config", "configs/charades/slowfast_r50_16x8_multigrid.yaml",
                           "multigrid.long_cycle=false")
    assert code == 0 and json.loads(out)["stages"] == []


def test_config_errors_name_the_key_and_overrides_need_a_config(capsys):
    code, _, err = run_cli(capsys, "--config", "configs/synthetic/tiny.yaml", "solver.max_epok=3")
    assert code == 2 and "solver.max_epok" in err
    code, _, err = run_cli(capsys, "solver.max_epoch=3")
    assert code == 2 and "--config" in err


def test_a_bench_config_plans_its_multigrid_run(capsys):
    from mgvideo.bench.tta import load_bench, variant_config
    from mgvideo.engine.builders import build_schedule

    spec, cfg = load_bench("configs/synthetic/bench.yaml", ["solver.max_epoch=25"])
    expected = build_schedule(variant_config(cfg, spec, "multigrid", 0))
    code, out, _ = run_cli(capsys, "--json", "--config", "configs/synthetic/bench.yaml",
                           "solver.max_epoch=25")
    assert code == 0 and expected.stages  # the long cycle is on, whatever the file's own multigrid section
    assert json.loads(out)["steps"] == list(expected.steps)
