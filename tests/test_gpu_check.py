"""`scripts/gpu_check.sh --smoke`: the GPU check's whole pipeline (profile, per-shape training, loader,
time to accuracy, report) on the CPU at toy size, so that the script cannot rot between GPU runs."""

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
    assert result["syncs"]["steps"] == 4 and result["syncs"]["sync"] is None  # no value read in a step
    profile = result["profile"]
    assert profile[-1]["time_ratio"] == 1.0 and len(profile) >= 8
    assert {r["bn_groups"] for r in profile} > {1}  # coarse shapes ran with sub-batch BN groups
    assert len(result["profile_cf"]) == len(profile)  # and again in the default memory format
    shapes = result["train_shapes"]
    assert len(shapes) >= 5 and all(0 <= r["data_wait"] <= 1 and r["ms_per_iter"] > 0 for r in shapes)
    assert result["loader"]["clips_per_s"] > 0 and result["loader"]["frames"] == 2  # the coarsest, T/4
    assert set(result["tta"]["variants"]) == {"baseline", "multigrid"}
    table = (tmp_path / "gpu_check.md").read_text()
    for heading in ("Model cost", "Training per shape", "Loader at the coarsest", "Time to accuracy"):
        assert heading in table
