"""The trainer in-process on the tiny recipe: outputs, multi-view test, and the bad-input errors."""

import argparse
import json
import re
from pathlib import Path

import pytest
import torch

from mgvideo.commands import train as train_command
from mgvideo.commands.test import evaluate_checkpoint
from mgvideo.config import load_config
from mgvideo.engine import builders, checkpoint
from mgvideo.engine.device import autocast_dtype
from mgvideo.engine.trainer import NonFiniteLossError, train
from mgvideo.errors import CheckpointError, ConfigError

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "configs" / "synthetic" / "tiny.yaml"
pytestmark = pytest.mark.slow


def tiny(*overrides):
    return load_config(TINY, [f"data.root={REPO / 'runs' / 'data' / 'synthetic_small'}", *overrides])


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("tiny")
    summary = train(tiny(), out)
    assert summary["iterations"] == 28
    return out


def test_outputs_of_a_run(run_dir):
    assert load_config(run_dir / "config.yaml") == tiny()
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in records if r["kind"] == "train"]
    evals = [r for r in records if r["kind"] == "eval"]
    assert sum(r["iterations"] for r in steps) == 28
    logged = sorted({r["step"] for r in steps})  # every log_period (5) steps, and at each epoch's end
    assert {5, 10, 15, 20, 25, 28} <= set(logged) and len(logged) < 28
    for key in ("loss", "top1", "lr", "frames", "crop", "batch", "clips_per_s", "data_wait", "time", "stage"):
        assert all(key in r for r in steps), key
    schedule = builders.build_schedule(tiny())
    assert {(r["frames"]) for r in steps if r["stage"] == 0} == {schedule.stages[0].frames}
    assert len(evals) >= 3 and all("top1" in r and r["time"] > 0 for r in evals)
    assert [r["time"] for r in evals] == sorted(r["time"] for r in evals)
    outputs = ("training.png", "shapes.png", "summary.json", "checkpoints/last.pt", "checkpoints/stage_00.pt")
    for name in outputs:
        assert (run_dir / name).exists(), name


def test_final_weights_are_a_plain_state_dict(run_dir):
    weights = checkpoint.model_state(run_dir / "model_final.pt")
    assert any(k.endswith("bn.running_var") for k in weights)
    model = builders.build_network(tiny(), 20)
    checkpoint.load_model_weights(model, weights, "model_final.pt")
    assert all(torch.isfinite(v).all() for v in weights.values() if v.is_floating_point())


def test_multi_view_test_writes_summary_and_per_class_csv(run_dir, tmp_path):
    summary = evaluate_checkpoint(tiny(), run_dir / "model_final.pt", tmp_path, views=2)
    assert summary["count"] == 20 and summary["views"] == 2 * 3 and summary["ensemble"] == "sum"
    assert 0 <= summary["top1"] <= summary["top5"] <= 100
    lines = (tmp_path / "per_class.csv").read_text().splitlines()
    assert lines[0] == "class,name,top1,support" and len(lines) == 21
    assert json.loads((tmp_path / "test_summary.json").read_text())["top1"] == summary["top1"]


def test_wrong_architecture_checkpoint_is_refused(run_dir, tmp_path):
    wider = tiny("model.options={width_per_group: 8, dropout: 0.0}")
    with pytest.raises(CheckpointError, match="architecture"):
        evaluate_checkpoint(wider, run_dir / "model_final.pt", tmp_path)
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "last.pt").write_bytes((run_dir / "checkpoints" / "last.pt").read_bytes())
    with pytest.raises(CheckpointError, match="architecture"):  # forced past the fingerprint: still refused
        train(wider, tmp_path, force=True)


def test_non_finite_loss_stops_with_iteration_and_shape_and_keeps_last_good(tmp_path):
    cfg = tiny("solver.base_lr=1.0e+30", "solver.warmup_epochs=0.0", "train.checkpoint_every_iters=1")
    shape = r"in steps \d+-\d+, clip shapes \d+x\d+x\d+ \(stage \d\)"
    with pytest.raises(NonFiniteLossError, match=shape) as err:
        train(cfg, tmp_path)
    first, last = map(int, re.search(r"steps (\d+)-(\d+)", str(err.value)).groups())
    assert first == last >= 2  # a checkpoint every step closes a window every step
    saved = checkpoint.load(tmp_path / "checkpoints" / "last.pt")
    assert saved["state"]["step"] == first - 1  # the last step that finished with a finite loss


def test_bad_config_fails_before_any_work(tmp_path):
    parser = argparse.ArgumentParser()
    train_command.register(parser.add_subparsers())
    args = parser.parse_args(["train", str(TINY), "--out", str(tmp_path / "run"), "solver.base_lrr=0.1"])
    with pytest.raises(ConfigError, match="solver.base_lrr.*did you mean 'solver.base_lr'"):
        args.func(args)
    assert not (tmp_path / "run").exists()


def test_amp_auto_is_off_on_cpu_and_fp16_needs_cuda():
    assert autocast_dtype(tiny(), torch.device("cpu")) is None  # train.amp defaults to auto
    assert autocast_dtype(tiny("train.amp=bf16"), torch.device("cpu")) == torch.bfloat16
    with pytest.raises(ConfigError, match="train.amp=fp16"):
        autocast_dtype(tiny("train.amp=fp16"), torch.device("cpu"))


def test_a_schedule_override_drives_the_shapes_and_the_final_model_is_evaluated(tmp_path):
    from mgvideo.multigrid.random_shapes import RandomShapeSchedule

    cfg = tiny("train.eval_period_samples=30")
    ordered = builders.build_schedule(cfg)
    shuffled = RandomShapeSchedule(ordered.cfg, seed=1)
    assert len(shuffled.stages) != len(ordered.stages)
    summary = train(cfg, tmp_path, schedule=shuffled)
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in records if r["kind"] == "train"]
    assert {r["stage"] for r in steps} == set(range(len(shuffled.stages)))
    assert all(r["frames"] == shuffled.stages[r["stage"]].frames for r in steps)
    evals = [r["samples"] for r in records if r["kind"] == "eval"]
    assert evals[-1] == summary["samples"] and len(evals) == len(set(evals))  # once, at the very end
    assert evals[0] >= 30
