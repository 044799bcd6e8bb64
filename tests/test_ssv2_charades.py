"""SSv2 and Charades train end to end on the synthetic set's variants: SSv2 with segment sampling and no
flip; Charades multi-label with mAP and max ensembling. Both use `train.eval_period` as single-stage runs."""

import json
from pathlib import Path

import pytest

from mgvideo.commands.test import evaluate_checkpoint
from mgvideo.config import load_config
from mgvideo.data.prepare import ensure_synthetic_data
from mgvideo.engine import builders
from mgvideo.engine.trainer import train

REPO = Path(__file__).resolve().parents[1]
SMALL = REPO / "runs" / "data" / "synthetic_small"
pytestmark = pytest.mark.slow


def single_stage(*overrides):
    """The tiny recipe as a two-epoch single-stage run evaluated after every epoch."""
    ensure_synthetic_data(load_config(REPO / "configs" / "synthetic" / "tiny.yaml", [f"data.root={SMALL}"]))
    return load_config(REPO / "configs" / "synthetic" / "tiny.yaml", [
        "multigrid.long_cycle=false", "multigrid.short_cycle=false", "solver.max_epoch=2", "solver.steps=[0]",
        "train.eval_period=1", "test.clips=2", "test.crops=1", *overrides])


def records(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def test_ssv2_trains_with_segment_sampling_and_no_flip(tmp_path):
    root = SMALL / "ssv2"
    cfg = single_stage("data.dataset=ssv2", f"data.root={root / 'videos'}",
                       f"data.train_list={root / 'something-something-v2-train.json'}",
                       f"data.val_list={root / 'something-something-v2-validation.json'}",
                       f"data.test_list={root / 'something-something-v2-validation.json'}",
                       f"data.labels_file={root / 'something-something-v2-labels.json'}",
                       "data.ssv2_ext=.mp4")
    train_set = builders.build_dataset(cfg, "train", builders.build_schedule(cfg).full_shape(2))
    assert (train_set.sampling, train_set.flip, len(train_set)) == ("segment", False, 10)
    summary = train(cfg, tmp_path)
    assert summary["iterations"] == 10  # 10 clips, batch 2, 2 epochs
    evals = [r for r in records(tmp_path) if r["kind"] == "eval"]
    assert [r["epoch"] for r in evals] == [1, 2] and all(0 <= r["top1"] <= 100 for r in evals)
    assert (tmp_path / "checkpoints" / "epoch_001.pt").exists()  # the period's checkpoint
    assert (tmp_path / "checkpoints" / "stage_00.pt").exists()
    result = evaluate_checkpoint(cfg, tmp_path / "model_final.pt", tmp_path / "test")
    assert result["count"] == 5 and result["ensemble"] == "sum" and "top1" in result


def test_charades_trains_multi_label_with_map_and_max_ensembling(tmp_path):
    root = SMALL / "charades"
    cfg = single_stage("data.dataset=charades", f"data.root={root / 'frames'}",
                       f"data.train_list={root / 'frame_lists' / 'train.csv'}",
                       f"data.val_list={root / 'frame_lists' / 'val.csv'}",
                       f"data.test_list={root / 'frame_lists' / 'val.csv'}", "solver.max_epoch=4",
                       "train.eval_period=2",
                       "model.options={width_per_group: 4, dropout: 0.0, head_act: sigmoid}")
    assert cfg.multi_label
    summary = train(cfg, tmp_path)
    assert summary["iterations"] == 4  # 3 clips, batch 2 (the last part-batch dropped), 4 epochs
    evals = [r for r in records(tmp_path) if r["kind"] == "eval"]
    assert [r["epoch"] for r in evals] == [2, 4] and all(0 <= r["mAP"] <= 100 for r in evals)
    assert (tmp_path / "checkpoints" / "epoch_002.pt").exists()
    assert not (tmp_path / "checkpoints" / "epoch_001.pt").exists()
    result = evaluate_checkpoint(cfg, tmp_path / "model_final.pt", tmp_path / "test")
    assert result["ensemble"] == "max" and result["count"] == 2 and 0 <= result["mAP"] <= 100
