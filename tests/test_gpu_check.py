"""`scripts/gpu_check.sh --smoke`: the GPU check's whole pipeline (syncs, profile, compile, per-shape
training, loader, time to accuracy, report) on the CPU at toy size, so that the script cannot rot between
GPU runs; and a part stopped at its limit keeps the rows it finished."""

import json
import os
import signal
import subprocess
import sys
import time
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


def _timeout_running(argument: str) -> int | None:
    """The pid of the `timeout` process whose command line has `argument`, if one runs."""
    for entry in Path("/proc").iterdir():
        try:
            args = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:  # not a process, or it has just ended
            continue
        if args and Path(args[0].decode()).name == "timeout" and argument.encode() in args:
            return int(entry.name)
    return None


def test_a_part_stopped_at_its_limit_keeps_its_finished_rows(tmp_path):
    # Every part but profile gets 1 s (stopped at once). Profile's limit is reached on cue rather than by the
    # clock, which would make the test depend on this machine's speed: once its first shape's row is
    # written, its `timeout` gets SIGALRM, the signal of its own timer, and acts as at the limit (SIGINT to
    # the profile, exit status 124). 400 timed iterations a shape leave seconds between rows.
    env = {**os.environ, "PYTHON": sys.executable, "OMP_NUM_THREADS": "1",
           "GPU_CHECK_LIMITS": "1 600 1 1 1 1 1 1", "GPU_CHECK_ITERS": "400"}
    rows, log = tmp_path / "profile.jsonl", tmp_path.parent / "gpu_check_output.txt"
    with open(log, "w") as out:
        check = subprocess.Popen(["bash", str(REPO / "scripts" / "gpu_check.sh"), "--smoke", str(tmp_path)],
                                 cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT,
                                 start_new_session=True)
    try:
        while check.poll() is None and not (rows.exists() and rows.read_text().count("\n") >= 1):
            time.sleep(0.1)
        timer = _timeout_running(str(rows))
        assert timer is not None, "the profile part ended before its first row was seen"
        os.kill(timer, signal.SIGALRM)
        check.wait(timeout=600)
    finally:
        if check.poll() is None:  # a failed wait: stop the script and the part it runs, not the script alone
            os.killpg(check.pid, signal.SIGKILL)
    assert check.returncode == 1, log.read_text()[-3000:]  # parts stopped: noted, not fatal
    result = json.loads((tmp_path / "gpu_check.json").read_text())
    status = {r["part"]: r for r in result["parts"]}
    assert len(status) == 8 and status["profile"]["status"] == 124
    written = [json.loads(line) for line in (tmp_path / "profile.jsonl").read_text().splitlines()]
    assert 1 <= len(written) < 10 and result["profile"] == written  # the finished shapes, each whole
    assert written[0]["time_ratio"] == 1.0
    assert "Model cost" in (tmp_path / "gpu_check.md").read_text()
