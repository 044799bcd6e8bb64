"""`model.init_from`: every checkpoint format loads into a fresh model, a head of another class count is
re-initialised, anything else that does not fit is a one-line error naming the keys."""

import pickle
from pathlib import Path

import pytest
import torch
import yaml
from test_models_checkpoint import to_caffe2

from mgvideo.cli import main
from mgvideo.config import load_config
from mgvideo.data.prepare import ensure_synthetic_data
from mgvideo.engine import builders, checkpoint
from mgvideo.engine.init_from import check_class_count, class_counts, classifier_keys, load_pretrained
from mgvideo.engine.trainer import train
from mgvideo.errors import CheckpointError
from mgvideo.models import build_model

HEAD = ["head.projection.bias", "head.projection.weight"]


def randomized(model):
    """Random weights and statistics, so that a tensor that was not loaded shows."""
    torch.manual_seed(1)
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if tensor.is_floating_point():
                positive = "running_var" in name
                tensor.copy_(torch.rand_like(tensor) + 0.5 if positive else torch.randn_like(tensor))
    return model


def assert_backbone_equal(model, source, head_reinitialised):
    built = fresh(model.head.projection.out_features).state_dict()
    for key, value in model.state_dict().items():
        if key in HEAD and head_reinitialised:
            assert torch.equal(value, built[key]), key  # left as built: re-initialised
            assert value.shape != source[key].shape
        elif value.is_floating_point():
            assert torch.equal(value, source[key]), key


@pytest.fixture
def source():
    torch.manual_seed(0)
    return randomized(build_model("slowfast_tiny", 20)).state_dict()


def fresh(num_classes):
    torch.manual_seed(0)
    return build_model("slowfast_tiny", num_classes)


@pytest.mark.parametrize("fmt", ["model_final", "last", "pyth"])
def test_torch_formats_load_with_a_new_head(tmp_path, source, fmt):
    path = tmp_path / {"model_final": "model_final.pt", "last": "last.pt", "pyth": "checkpoint.pyth"}[fmt]
    if fmt == "model_final":
        checkpoint.save(source, path)
    elif fmt == "last":
        checkpoint.save({"model": source, "optimizer": {"state": {}}, "state": {"epoch": 3}}, path)
    else:  # PySlowFast: DDP-prefixed keys under model_state, with its own config and optimizer
        torch.save({"model_state": {f"module.{k}": v for k, v in source.items()}, "epoch": 7,
                    "cfg": yaml.safe_dump({"MODEL": {"NUM_CLASSES": 20}}),
                    "optimizer_state": {"state": {}}}, path)
    model = fresh(10)
    report = load_pretrained(model, path, 10)
    assert report.kind == {"model_final": "mgvideo weights", "last": "mgvideo checkpoint",
                           "pyth": "PySlowFast"}[fmt]
    assert report.reinitialised == HEAD and report.skipped == []
    assert len(report.loaded) == len(source) - 2
    assert_backbone_equal(model, source, head_reinitialised=True)
    assert "re-initialised 2 (head.projection.bias, head.projection.weight)" in report.message()


def test_same_class_count_loads_the_head_too(tmp_path, source):
    checkpoint.save(source, tmp_path / "w.pt")
    model = fresh(20)
    report = load_pretrained(model, tmp_path / "w.pt", 20)
    assert report.reinitialised == [] and len(report.loaded) == len(source)
    assert_backbone_equal(model, source, head_reinitialised=False)


def test_caffe2_pkl_loads_and_reports_unknown_blobs(tmp_path, source):
    blobs = {to_caffe2(k): v.numpy() for k, v in source.items() if "num_batches" not in k}
    blobs["conv1_w_momentum"] = blobs["conv1_w"] * 0  # optimizer state: dropped by the reader
    blobs["extra_blob"] = blobs["pred_b"].copy()
    with open(tmp_path / "k400.pkl", "wb") as f:
        pickle.dump({"blobs": blobs}, f, protocol=2)
    model = fresh(7)
    report = load_pretrained(model, tmp_path / "k400.pkl", 7)
    assert report.kind == "Caffe2" and report.reinitialised == HEAD and report.skipped == ["extra_blob"]
    assert_backbone_equal(model, source, head_reinitialised=True)


def test_a_folder_without_config_json_is_named(tmp_path):
    """A folder is read as a Hugging Face checkpoint (tests/test_hf.py loads a real one); without its
    config.json the error says so."""
    (tmp_path / "plain").mkdir()
    with pytest.raises(CheckpointError, match="config.json"):
        load_pretrained(fresh(5), tmp_path / "plain", 5)


def test_another_architecture_is_a_one_line_error_naming_keys(tmp_path, source):
    checkpoint.save(source, tmp_path / "w.pt")
    wider = build_model("slowfast_tiny", 20, width_per_group=16)
    with pytest.raises(CheckpointError) as err:
        load_pretrained(wider, tmp_path / "w.pt", 20)
    message = str(err.value)
    assert "\n" not in message and "w.pt" in message and "of another shape" in message
    assert "s1.pathway0_stem.conv.weight" in message and "model.name" in message
    partial = {k: v for k, v in source.items() if not k.startswith("s5.")}
    checkpoint.save(partial, tmp_path / "partial.pt")
    with pytest.raises(CheckpointError, match=r"missing: s5\.pathway0_res0"):
        load_pretrained(fresh(20), tmp_path / "partial.pt", 20)


def test_missing_and_foreign_files_are_refused(tmp_path):
    with pytest.raises(CheckpointError, match="model.init_from: .*nope.pt: no such file"):
        load_pretrained(fresh(5), tmp_path / "nope.pt", 5)
    torch.save({"epoch": 3, "note": "no weights"}, tmp_path / "odd.pt")
    with pytest.raises(CheckpointError, match="no model weights"):
        load_pretrained(fresh(5), tmp_path / "odd.pt", 5)


def test_the_classifier_is_the_last_linear_layer_with_the_class_count():
    keys = ["head.projection.weight", "head.projection.bias"]
    assert classifier_keys(build_model("slowfast_tiny", 9), 9) == keys
    assert classifier_keys(build_model("x3d_xs", 9), 9) == keys
    assert classifier_keys(build_model("slowfast_tiny", 9), 4) == []


def test_a_checkpoint_of_another_class_count_names_data_num_classes(tmp_path, capsys):
    """`mgvideo test` of a 20-class checkpoint with a 4-class config (a resume loads weights the same way)."""
    tiny = REPO / "configs" / "synthetic" / "tiny.yaml"
    checkpoint.save(builders.build_network(load_config(tiny), 20).state_dict(), tmp_path / "model_final.pt")
    args = ["test", str(tiny), str(tmp_path / "model_final.pt"), "--out", str(tmp_path / "test"),
            "data.num_classes=4"]
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "model.name" not in err[0], err
    assert (f"{tmp_path / 'model_final.pt'}: the checkpoint's classifier (head.projection.bias, "
            "head.projection.weight) has 20 classes and this config's model 4 (data.num_classes=4); set "
            "data.num_classes=20 to use it as it is, or start a new run from it with model.init_from="
            ) in err[0]


def test_only_a_class_count_alone_is_named_as_one(source):
    assert class_counts(fresh(4), source) == (20, 4, HEAD)
    assert class_counts(fresh(20), source) is None  # nothing differs
    check_class_count(fresh(20), source, "w.pt")
    wider = build_model("slowfast_tiny", 4, width_per_group=16)
    assert class_counts(wider, source) is None  # another architecture: load_model_weights names the keys
    assert class_counts(fresh(4), {k: v for k, v in source.items() if not k.startswith("s5.")}) is None
    named = r"^last.pt: the checkpoint's classifier .* set data\.num_classes=20 "
    with pytest.raises(CheckpointError, match=named):
        check_class_count(fresh(4), source, "last.pt")


# ---- through the trainer: a fine-tune on a dataset with another class count, then a plain resume ----

REPO = Path(__file__).resolve().parents[1]
SMALL = REPO / "runs" / "data" / "synthetic_small"


def ten_class_lists(tmp_path):
    """A 10-class Kinetics-format dataset: the synthetic set's first ten classes."""
    ensure_synthetic_data(load_config(REPO / "configs" / "synthetic" / "tiny.yaml", [f"data.root={SMALL}"]))
    for split in ("train", "val"):
        rows = [r for r in (SMALL / f"{split}.csv").read_text().splitlines() if int(r.split()[1]) < 10]
        (tmp_path / f"{split}10.csv").write_text("\n".join(rows) + "\n")


@pytest.mark.slow
def test_fine_tune_through_the_trainer_then_resume_ignores_init_from(tmp_path, capsys):
    ten_class_lists(tmp_path)
    torch.manual_seed(123)  # weights unlike the run's own seed-0 initialisation
    pretrained = builders.build_network(load_config(REPO / "configs" / "synthetic" / "tiny.yaml"), 20)
    checkpoint.save(pretrained.state_dict(), tmp_path / "model_final.pt")
    cfg = load_config(REPO / "configs" / "synthetic" / "tiny.yaml", [
        "data.dataset=kinetics", f"data.root={SMALL}", f"data.train_list={tmp_path / 'train10.csv'}",
        f"data.val_list={tmp_path / 'val10.csv'}", "data.num_classes=10", "multigrid.long_cycle=false",
        "multigrid.short_cycle=false", "solver.max_epoch=1", "solver.steps=[0]", "solver.warmup_epochs=0",
        "solver.base_lr=1.0e-6", "solver.weight_decay=0", f"model.init_from={tmp_path / 'model_final.pt'}"])
    summary = train(cfg, tmp_path / "ft")
    assert summary["iterations"] == 10
    out = capsys.readouterr().out
    assert f"init_from {tmp_path / 'model_final.pt'} (mgvideo weights): loaded" in out
    assert "re-initialised 2 (head.projection.bias, head.projection.weight)" in out
    tuned = checkpoint.model_state(tmp_path / "ft" / "model_final.pt")
    assert tuned["head.projection.weight"].shape[0] == 10
    for key, value in pretrained.state_dict().items():
        if key.endswith(".weight") and "bn" not in key and not key.startswith("head."):
            assert torch.allclose(tuned[key], value, atol=1e-3), key  # LR ~0: still the pretrained weights
    (tmp_path / "model_final.pt").unlink()  # a rerun resumes from last.pt and never reads init_from
    train(cfg, tmp_path / "ft")
    out = capsys.readouterr().out
    assert "resumed from" in out and "init_from" not in out
