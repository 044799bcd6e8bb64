"""What a new user meets first: a refused command leaves the run folder alone, and a missing file, a
Ctrl-C or a closed pipe gives one line and a status, never a traceback."""

import subprocess
import sys
from pathlib import Path

import pytest

from mgvideo.cli import main
from mgvideo.config import load_config, save_config, to_dict
from mgvideo.engine import checkpoint

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "configs" / "synthetic" / "tiny.yaml"
DATA = REPO / "runs" / "data" / "synthetic_small"


def one_error_line(capsys, status_line: str = "error") -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Traceback" not in err[0], err
    assert status_line in err[0]
    return err[0]


@pytest.fixture
def kinetics_args(tmp_path):
    return ["train", str(TINY), "--out", str(tmp_path / "run"), "data.dataset=kinetics"]


def test_missing_data_root_is_one_line(kinetics_args, tmp_path, capsys):
    assert main([*kinetics_args, f"data.root={tmp_path / 'nowhere'}"]) == 2
    line = one_error_line(capsys)
    assert "data.root" in line and "nowhere" in line
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("key", ["train_list", "labels_file"])
def test_missing_list_or_labels_file_names_its_key(kinetics_args, key, capsys):
    assert main([*kinetics_args, f"data.root={DATA}", f"data.{key}=missing.csv"]) == 2
    line = one_error_line(capsys)
    assert f"data.{key}" in line and str(DATA / "missing.csv") in line


def test_shipped_kinetics_recipe_without_its_data(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["train", "kinetics/i3d_r50_baseline", "--out", str(tmp_path / "k"), "train.device=cpu"]) == 2
    assert "data.root" in one_error_line(capsys)


def test_data_check_on_a_missing_list(tmp_path, capsys):
    assert main(["data", "check", str(tmp_path / "nope.csv")]) == 2
    assert "nope.csv: no such annotation file" in one_error_line(capsys)


def test_any_missing_file_is_one_line(monkeypatch, capsys):
    def missing(*args, **kwargs):
        open("/nonexistent/file.bin")

    monkeypatch.setattr("mgvideo.commands.models.run", missing)
    monkeypatch.setattr("mgvideo.engine.trainer.train", missing)
    assert main(["train", str(TINY)]) == 2
    assert "/nonexistent/file.bin: No such file" in one_error_line(capsys)


def test_ctrl_c_is_one_line_with_status_130(monkeypatch, capsys):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("mgvideo.engine.trainer.train", interrupted)
    assert main(["train", str(TINY)]) == 130
    line = one_error_line(capsys, "interrupted")
    assert line.endswith("rerun the same command to resume")


def test_plan_into_a_closed_pipe_is_quiet():
    done = subprocess.run(f"{sys.executable} -m mgvideo plan | head -1", shell=True, capture_output=True,
                          text=True, cwd=REPO, timeout=120)
    assert done.stdout.startswith("stage") and "Traceback" not in done.stderr and "Error" not in done.stderr


def test_refused_resume_leaves_the_run_folder_and_names_the_changes(tmp_path, capsys):
    out = tmp_path / "run"
    cfg = load_config(TINY, [f"data.root={DATA}"])
    saved = {"fingerprint": "0123456789abcdef", "config": to_dict(cfg)}
    checkpoint.save(saved, out / "checkpoints" / "last.pt")
    save_config(cfg, out / "config.yaml")
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    args = ["train", str(TINY), "--out", str(out), f"data.root={DATA}", "model.name=c3d_tiny",
            "model.options={}"]
    assert main(args) == 2
    line = one_error_line(capsys)
    assert "model.name: 'r3d_tiny' -> 'c3d_tiny'" in line
    assert "model.options: {'width_per_group': 4, 'dropout': 0.0} -> {}" in line
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before


@pytest.mark.parametrize("content", ["object", "text"])
def test_a_file_that_is_not_a_checkpoint_is_one_line_without_torch_advice(tmp_path, capsys, content):
    import datetime

    import torch

    path = tmp_path / "weights.pt"
    if content == "object":
        torch.save({"when": datetime.date(2020, 1, 1)}, path)  # would need unpickling an arbitrary class
    else:
        path.write_text("these are not weights\n")
    assert main(["test", str(TINY), str(path)]) == 2
    line = one_error_line(capsys)
    assert str(path) in line and "cannot read checkpoint" in line
    assert "weights_only=False" not in line and "set to `False`" not in line


def test_a_misspelt_model_name_gets_a_suggestion_before_any_work(tmp_path, capsys):
    for command in (["train", str(TINY), "--out", str(tmp_path / "run")], ["plan", "--config", str(TINY)]):
        assert main([*command, "model.name=r3d_tiyn"]) == 2
        line = one_error_line(capsys)
        assert "model.name: unknown preset 'r3d_tiyn' (did you mean 'r3d_tiny'?)" in line
    assert not (tmp_path / "run").exists()


def test_an_empty_labels_file_means_none(kinetics_args, capsys):
    from mgvideo.config import load_config

    assert load_config(TINY, ["data.labels_file="]).data.labels_file == ""
    assert main(["plan", "--config", str(TINY), "data.labels_file="]) == 0


def test_bench_tta_help_says_how_long_it_takes(capsys):
    with pytest.raises(SystemExit):
        main(["bench", "tta", "--help"])
    assert "about 28 minutes" in " ".join(capsys.readouterr().out.split())  # with the @match budget
