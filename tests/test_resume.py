"""Exact resume: runs killed with SIGKILL (mid-run, and between a checkpoint's temp write and rename)
finish with final weights bitwise equal to an uninterrupted run's, with 0 and with 2 loader workers."""

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
    if crash_at is not None:
        env["MGVIDEO_TEST_CRASH_AT_ITER"] = str(crash_at)
    if crash_in_save:
        env[checkpoint.CRASH_BEFORE_RENAME_ENV] = "1"
    cmd = [sys.executable, "-m", "mgvideo", "train", str(TINY), "--out", str(out),
           "train.checkpoint_every_iters=4", *overrides]
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


def weights(out: Path) -> dict:
    return checkpoint.model_state(out / "model_final.pt")


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("reference")
    done = train(out, "data.workers=0")
    assert done.returncode == 0, done.stderr[-2000:]
    return weights(out)


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
    assert_bitwise_equal(weights(tmp_path), reference)
    steps = [line for line in (tmp_path / "metrics.jsonl").read_text().splitlines() if '"train"' in line]
    assert len(steps) == len(set(steps)) == 28  # no duplicated or missing iteration records


def test_killed_run_resumes_bitwise_with_2_workers(tmp_path, reference):
    first = train(tmp_path, "data.workers=2", crash_at=19)
    assert first.returncode == -signal.SIGKILL
    last = train(tmp_path, "data.workers=2")
    assert last.returncode == 0, last.stderr[-2000:]
    assert_bitwise_equal(weights(tmp_path), reference)  # also: workers do not change the result


def test_changed_config_is_refused_unless_forced(tmp_path):
    first = train(tmp_path, "data.workers=0", crash_at=2)
    assert first.returncode == -signal.SIGKILL
    refused = train(tmp_path, "data.workers=0", "solver.base_lr=0.07")
    assert refused.returncode == 2 and "fingerprint" in refused.stderr and "--force" in refused.stderr
