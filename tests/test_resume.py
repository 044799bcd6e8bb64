"""Exact resume: runs killed with SIGKILL (mid-run, and between a checkpoint's temp write and rename)
finish with final weights bitwise equal to an uninterrupted run's, with 0 and with 2 loader workers.
Faults are injected through the trainer's test hooks, by tests/crash_train.py."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mgvideo.engine import checkpoint

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "configs" / "synthetic" / "tiny.yaml"
pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


def train(out: Path, *overrides: str, crash_at: int | None = None, crash_in_save: bool = False):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    faults = ["--crash-at", str(crash_at)] if crash_at is not None else []
    faults += ["--crash-in-save"] if crash_in_save else []
    launcher = [str(REPO / "tests" / "crash_train.py"), *faults] if faults else ["-m", "mgvideo", "train"]
    cmd = [sys.executable, *launcher, str(TINY), "--out", str(out), "train.checkpoint_every_iters=4",
           *overrides]
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


def weights(out: Path) -> dict:
    return checkpoint.model_state(out / "model_final.pt")


def train_records(out: Path) -> list[tuple]:
    """What a training record says about the run (its time and throughput vary)."""
    keys = ("step", "stage", "frames", "crop", "iterations", "batch", "loss", "top1", "lr")
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [tuple(r[k] for k in keys) for r in records if r["kind"] == "train"]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("reference")
    done = train(out, "data.workers=0")
    assert done.returncode == 0, done.stderr[-2000:]
    return weights(out), train_records(out)


def assert_bitwise_equal(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, f"{len(different)} tensors differ, e.g. {different[:3]}"


def test_killed_runs_resume_bitwise_with_0_workers(tmp_path, reference):
    first = train(tmp_path, "data.workers=0", crash_at=6)
    assert first.returncode == -signal.SIGKILL
    state = checkpoint.load(tmp_path / "checkpoints" / "last.pt")["state"]
    assert state["step"] == 4  # the every-4-iterations checkpoint; steps 5-6 are lost and redone
    second = train(tmp_path, "data.workers=0", crash_in_save=True)  # dies inside the next save
    assert second.returncode == 137
    assert list((tmp_path / "checkpoints").glob(".last.pt.tmp*")), "the temp file should be left behind"
    assert checkpoint.load(tmp_path / "checkpoints" / "last.pt")["state"]["step"] == 4  # intact
    third = train(tmp_path, "data.workers=0")
    assert third.returncode == 0, third.stderr[-2000:]
    assert "resumed from" in third.stdout + third.stderr
    assert not list((tmp_path / "checkpoints").glob(".last.pt.tmp*"))  # the dead write's file is gone
    assert "removed 1 unfinished checkpoint writes" in (tmp_path / "train.log").read_text()
    assert_bitwise_equal(weights(tmp_path), reference[0])
    records = train_records(tmp_path)
    assert records == reference[1]  # no duplicated or missing records, and the same losses
    assert sum(r[4] for r in records) == 28  # every iteration is in one record


def test_killed_run_resumes_bitwise_with_2_workers(tmp_path, reference):
    first = train(tmp_path, "data.workers=2", crash_at=19)
    assert first.returncode == -signal.SIGKILL
    last = train(tmp_path, "data.workers=2")
    assert last.returncode == 0, last.stderr[-2000:]
    assert_bitwise_equal(weights(tmp_path), reference[0])  # also: workers do not change the result


def test_changed_config_is_refused_unless_forced(tmp_path):
    first = train(tmp_path, "data.workers=0", crash_at=2)
    assert first.returncode == -signal.SIGKILL
    log = (tmp_path / "train.log").read_text()  # the start-up line: devices, batch, passes, data source
    assert "devices: 1 (any); per-device batch 2, 1 pass per step" in log
    assert "data: frame cache runs/data/synthetic_small/.frame_cache" in log
    refused = train(tmp_path, "data.workers=0", "solver.base_lr=0.07")
    assert refused.returncode == 2 and "fingerprint" in refused.stderr and "--force" in refused.stderr


def test_an_unreadable_last_pt_is_set_aside_and_the_run_resumes_from_the_newest_readable(tmp_path,
                                                                                          reference):
    # A disk that filled or a copy cut short leaves a last.pt that cannot be read: the run goes on from
    # the newest checkpoint beside it that can (a stage checkpoint), and loses nothing.
    first = train(tmp_path, "data.workers=0", crash_at=19)
    assert first.returncode == -signal.SIGKILL
    folder = tmp_path / "checkpoints"
    last = folder / "last.pt"
    stages = {p.name: checkpoint.load(p)["state"]["step"] for p in folder.glob("stage_*.pt")}
    assert stages and max(stages.values()) < checkpoint.load(last)["state"]["step"]
    last.write_bytes(last.read_bytes()[: last.stat().st_size // 2])
    second = train(tmp_path, "data.workers=0")
    assert second.returncode == 0, second.stderr[-2000:]
    newest = max(stages, key=stages.get)
    log = (tmp_path / "train.log").read_text()
    assert "last.pt cannot be read; set aside as last.pt.unreadable-" in log
    assert f"resumed from {folder / newest}" in log
    assert len(list(folder.glob("last.pt.unreadable-*"))) == 1  # kept, not deleted
    assert_bitwise_equal(weights(tmp_path), reference[0])
    assert train_records(tmp_path) == reference[1]
