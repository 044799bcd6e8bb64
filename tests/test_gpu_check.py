"""`scripts/gpu_check.sh --smoke`: the GPU check's whole pipeline (syncs, profile, compile, per-shape
training, loader, time to accuracy, report) on the CPU at toy size, so that the script cannot rot between
GPU runs; and a part stopped at its limit keeps the rows it finished."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


def test_gpu_check_smoke_writes_every_part(tmp_path):
    env = {**os.environ, "PYTHON": sys.executable, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(["bash", str(REPO / "scripts" / "gpu_check.sh"), "--smoke", str(tmp_path)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=850)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    result = json.loads((tmp_path / "gpu_check.json").read_text())
    assert result["env"]["device"] == "cpu"
    assert [(r["amp"], r["steps"], r["sync"]) for r in result["syncs"]] == [("bf16", 4, None)]  # no read
    assert [r["part"] for r in result["parts"]] == ["syncs", "profile", "profile_cf", "compile", "shapes",
                                                    "loader", "tta", "vit"]
    assert all(r["status"] == 0 for r in result["parts"])
    profile = result["profile"]
    assert profile[0]["time_ratio"] == 1.0 and len(profile) >= 8  # the full shape first
    assert {r["bn_groups"] for r in profile} > {1}  # coarse shapes ran with sub-batch BN groups
    assert len(result["profile_cf"]) == len(profile)  # and again in the default memory format
    compiled = result["compile"]
    assert len(compiled) == 2 and all(r["compile_s"] > 0 and r["compiled_ms"] > 0 for r in compiled)
    shapes = result["train_shapes"]
    assert len(shapes) >= 5 and all(0 <= r["data_wait"] <= 1 and r["ms_per_iter"] > 0 for r in shapes)
    assert result["loader"]["clips_per_s"] > 0 and result["loader"]["frames"] == 2  # the coarsest, T/4
    assert set(result["tta"]["variants"]) == {"baseline", "multigrid"}
    table = (tmp_path / "gpu_check.md").read_text()
    for heading in ("Model cost", "torch.compile per shape", "Training per shape", "Loader at the coarsest",
                    "Time to accuracy"):
        assert heading in table


def test_a_part_stopped_at_its_limit_keeps_its_finished_rows(tmp_path):
    # GPU_CHECK_LIMITS applies to --smoke: every part but profile gets 1 s (stopped at once), and profile,
    # with 400 timed iterations per shape (about 20 s a shape on an idle 2-core CPU, 5x that on a busy one),
    # is stopped partway through its 10 shapes.
    env = {**os.environ, "PYTHON": sys.executable, "OMP_NUM_THREADS": "1",
           "GPU_CHECK_LIMITS": "1 240 1 1 1 1 1 1", "GPU_CHECK_ITERS": "400"}
    done = subprocess.run(["bash", str(REPO / "scripts" / "gpu_check.sh"), "--smoke", str(tmp_path)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=850)
    assert done.returncode == 1, done.stdout[-3000:] + done.stderr[-3000:]  # parts stopped: noted, not fatal
    result = json.loads((tmp_path / "gpu_check.json").read_text())
    status = {r["part"]: r for r in result["parts"]}
    assert len(status) == 8 and status["profile"]["status"] in (124, 130, 137)
    written = [json.loads(line) for line in (tmp_path / "profile.jsonl").read_text().splitlines()]
    assert 1 <= len(written) < 10 and result["profile"] == written  # the finished shapes, each whole
    assert written[0]["time_ratio"] == 1.0
    assert "Model cost" in (tmp_path / "gpu_check.md").read_text()
