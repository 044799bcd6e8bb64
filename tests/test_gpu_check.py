"""`scripts/gpu_check.sh`: its plan (one table, in order of value, within a 10-minute command with 90 s to
spare, rehearsed on the CPU with the same order and scaled limits); `--smoke`, the whole pipeline on the CPU
at toy size, so that the script cannot rot between GPU runs, each part bringing back its headline figure
within its scaled limit; and a part stopped at its limit keeps the rows it finished."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from script_modules import load_script

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "gpu_check.sh"

load_script("gpu_check_report")
gpu_check = load_script("gpu_check")


def _plan(*args: str) -> dict:
    """What the shell script reads: `scripts/gpu_check.py plan ARGS`, as settings and parts."""
    out = subprocess.run([sys.executable, str(REPO / "scripts" / "gpu_check.py"), "plan", *args], cwd=REPO,
                         capture_output=True, text=True, check=True).stdout
    rows = [line.split() for line in out.splitlines()]
    parts = [(name, int(limit), data) for _, name, limit, data in (r for r in rows if r[0] == "part")]
    return {"parts": parts, **{key: int(value) for key, value in (r for r in rows if r[0] != "part")}}


def test_the_rehearsal_runs_the_cuda_plan_in_its_order_with_scaled_limits():
    cuda, smoke = _plan(), _plan("--smoke")
    assert [p[0] for p in cuda["parts"]] == [p[0] for p in smoke["parts"]] == [p.name for p in gpu_check.PLAN]
    assert [p[2] for p in cuda["parts"]] == [p[2] for p in smoke["parts"]]  # the same data, in the same order
    scale = gpu_check.SMOKE_SCALE
    assert [s[1] for s in smoke["parts"]] == [round(c[1] * scale) for c in cuda["parts"]]
    assert smoke["budget"] == round(cuda["budget"] * scale) and smoke["overhead"] >= cuda["overhead"] * scale
    assert _plan("--limits", "1 2 3 4 5 6 7 8", "--smoke")["parts"][4][1] == 5  # GPU_CHECK_LIMITS, unscaled


def test_the_plan_orders_parts_by_value_and_leaves_90_s_of_the_10_minute_command():
    assert [p.name for p in gpu_check.PLAN][:5] == ["syncs", "profile", "shapes", "loader", "tta"]
    cuda = _plan()
    spent = gpu_check.SETUP_S + sum(limit + cuda["overhead"] for _, limit, _ in cuda["parts"])
    assert spent == gpu_check.planned_seconds() and spent <= 600 - 90 == cuda["budget"]
    assert cuda["overhead"] >= cuda["grace"] + 1  # the report after a part, and a part's SIGINT-to-SIGKILL
    last = next(i for i, p in enumerate(gpu_check.PLAN) if p.data == gpu_check.data_order()[-1])
    before = sum(limit + cuda["overhead"] for _, limit, _ in cuda["parts"][:last])
    assert cuda["data"] <= before  # the last set's limit ends before its first reader would start


def test_the_data_the_first_parts_need_is_generated_first():
    first_need = []
    for part in gpu_check.PLAN:
        if part.data and part.data not in first_need:
            first_need.append(part.data)
    assert gpu_check.data_order() == first_need == ["small", "shapes", "default"]
    assert set(gpu_check.DATA) == set(first_need)


def test_every_planned_part_has_a_command_and_wrong_limits_are_refused():
    script = SCRIPT.read_text()
    assert all(f"    {p.name}) CMD=(" in script for p in gpu_check.PLAN)
    done = subprocess.run([sys.executable, str(REPO / "scripts" / "gpu_check.py"), "plan", "--limits",
                           "1 2"], cwd=REPO, capture_output=True, text=True)
    assert done.returncode != 0 and "needs 8 numbers (syncs profile shapes" in done.stderr


def test_a_bench_headline_needs_both_arms_evaluated():
    reached = {p.name: p.reached for p in gpu_check.PLAN}["tta"]
    run = {"variant": "baseline", "evals": [{"top1": 40.0}]}
    started = {**run, "variant": "multigrid", "evals": []}
    assert not reached({"tta": {"partial": True, "runs": [run]}})
    assert not reached({"tta": {"partial": True, "runs": [run, started]}})
    assert reached({"tta": {"partial": True, "runs": [run, {**run, "variant": "multigrid"}]}})
    assert reached({"tta": {"variants": {"baseline": {}, "multigrid": {}}}}) and not reached({})


def test_the_report_reads_whole_rows_and_fails_a_part_stopped_before_its_headline(tmp_path):
    parts = [{"part": "syncs", "status": 0, "seconds": 9, "limit": 30, "start": 4},
             {"part": "profile", "status": 124, "seconds": 60, "limit": 60, "start": 14},
             {"part": "tta", "status": None, "seconds": 0, "limit": 120, "start": 80, "skipped": "budget"}]
    (tmp_path / "parts.jsonl").write_text("".join(json.dumps(r) + "\n" for r in parts))
    sync = {"amp": "bf16", "device": "cpu", "steps": 4, "sync": None}
    (tmp_path / "syncs.jsonl").write_text(json.dumps(sync) + '\n{"amp": "fp1')  # a line cut by a kill

    def final() -> subprocess.CompletedProcess:
        command = [sys.executable, str(REPO / "scripts" / "gpu_check.py"), "report", str(tmp_path), "--final"]
        return subprocess.run(command, cwd=REPO, capture_output=True, text=True)

    done = final()  # profile stopped at its limit without a row: before its headline
    assert done.returncode == 1 and "before their headline: profile" in done.stderr
    assert "skipped (no time or no data left for them): tta" in done.stderr
    result = json.loads((tmp_path / "gpu_check.json").read_text())
    assert result["syncs"] == [sync] and [r["reached"] for r in result["parts"]] == [True, False, False]
    row = {"batch": 8, "frames": 8, "crop": 112, "sec_per_iter": 0.5, "clips_per_sec": 16.0, "peak_mb": 900.0,
           "time_ratio": 1.0}
    (tmp_path / "profile.jsonl").write_text(json.dumps(row) + "\n")
    assert final().returncode == 0  # stopped at its limit with its headline in: fine
    table = (tmp_path / "gpu_check.md").read_text()
    assert "| profile | stopped at its limit (124) | 14 | 60 | 60 | SlowFast-R50" in table
    assert "| 8 | 8 | 112 |  | 500.0 | 16.0 | 900 | 1.00 | - |" in table


@pytest.mark.slow
@pytest.mark.timeout(1200)  # the rehearsal's budget is 1020 s; it takes about a minute on 2 idle cores
def test_gpu_check_smoke_brings_back_every_headline_within_its_scaled_limit(tmp_path):
    env = {**os.environ, "PYTHON": sys.executable, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(["bash", str(SCRIPT), "--smoke", str(tmp_path)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=1100)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    result = json.loads((tmp_path / "gpu_check.json").read_text())
    assert result["env"]["device"] == "cpu"
    assert [(r["amp"], r["steps"], r["sync"]) for r in result["syncs"]] == [("bf16", 4, None)]  # no read
    planned = _plan("--smoke")["parts"]
    assert [(r["part"], r["limit"]) for r in result["parts"]] == [(name, limit) for name, limit, _ in planned]
    for r in result["parts"]:  # the same order and limits as planned, each headline in within its limit
        assert r["status"] == 0 and r["reached"] and r["seconds"] <= r["limit"], r
    assert [r["start"] for r in result["parts"]] == sorted(r["start"] for r in result["parts"])
    data = [json.loads(line) for line in (tmp_path / "data.jsonl").read_text().splitlines()]
    assert [d["data"] for d in data] == [*gpu_check.data_order(), "end"] and all(d.get("ok", 1) for d in data)
    profile = result["profile"]
    assert profile[0]["time_ratio"] == 1.0 and len(profile) >= 8  # the full shape first
    assert {r["bn_groups"] for r in profile} > {1}  # coarse shapes ran with sub-batch BN groups
    assert len(result["profile_cf"]) == len(profile)  # and again in the default memory format
    compiled = result["compile"]  # its eager row first, then replaced by the compiled one
    assert len(compiled) == 1 and compiled[0]["compile_s"] > 0 and compiled[0]["compiled_ms"] > 0
    assert (tmp_path / "compile.jsonl").read_text().count("\n") == 2
    shapes = result["train_shapes"]
    assert len(shapes) >= 5 and all(0 <= r["data_wait"] <= 1 and r["ms_per_iter"] > 0 for r in shapes)
    assert result["loader"]["clips_per_s"] > 0 and result["loader"]["frames"] == 2  # the coarsest, T/4
    assert set(result["tta"]["variants"]) == set(result["vit"]["variants"]) == {"baseline", "multigrid"}
    table = (tmp_path / "gpu_check.md").read_text()
    for heading in ("Model cost", "torch.compile per shape", "Training per shape", "Loader at the coarsest",
                    "Time to accuracy, a 3D CNN", "Time to accuracy, a video ViT"):
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


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_a_part_stopped_at_its_limit_keeps_its_finished_rows_and_one_past_the_budget_is_skipped(tmp_path):
    # Every part but profile and tta gets 1 s (stopped at once). Profile's limit is reached on cue rather
    # than by the clock, which would make the test depend on this machine's speed: once its first shape's
    # row is written, its `timeout` gets SIGALRM, the signal of its own timer, and acts as at the limit
    # (SIGINT to the profile, exit status 124). 400 timed iterations a shape leave seconds between rows.
    # tta's 5000 s can never fit the rehearsal's budget: it is skipped, and the parts after it still run.
    env = {**os.environ, "PYTHON": sys.executable, "OMP_NUM_THREADS": "1",
           "GPU_CHECK_LIMITS": "1 600 1 1 5000 1 1 1", "GPU_CHECK_ITERS": "400"}
    rows, log = tmp_path / "profile.jsonl", tmp_path.parent / "gpu_check_output.txt"
    with open(log, "w") as out:
        check = subprocess.Popen(["bash", str(SCRIPT), "--smoke", str(tmp_path)],
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
    output = log.read_text()
    assert check.returncode == 1, output[-3000:]  # parts stopped before their headline: noted, not fatal
    result = json.loads((tmp_path / "gpu_check.json").read_text())
    status = {r["part"]: r for r in result["parts"]}
    assert list(status) == [p.name for p in gpu_check.PLAN]
    assert status["profile"]["status"] == 124 and status["profile"]["reached"]  # stopped, its headline in
    assert status["tta"]["status"] is None and "budget" in status["tta"]["skipped"]
    stopped = [p for p in status if p not in ("profile", "tta")]
    assert all(status[p]["status"] and not status[p]["reached"] for p in stopped)
    assert "failed, or stopped before their headline: syncs shapes loader compile vit profile_cf" in output
    assert "skipped (no time or no data left for them): tta" in output
    written = [json.loads(line) for line in (tmp_path / "profile.jsonl").read_text().splitlines()]
    assert 1 <= len(written) < 10 and result["profile"] == written  # the finished shapes, each whole
    assert written[0]["time_ratio"] == 1.0
    assert "Model cost" in (tmp_path / "gpu_check.md").read_text()


def test_the_precheck_states_the_dev_shm_the_recipe_needs_on_this_machines_gpus():
    from mgvideo.data.loader import default_workers

    need, workers = gpu_check.shm_need(gpu_check.RECIPE, 8)  # 8 clips of 3 x 32 x 224^2 a device
    assert workers == default_workers(8) and need == 8 * (2 * (2 * workers + 2) * 38_535_168 + 6 * 4096)
    line = gpu_check.shm_line(0.01, 8)
    assert f"--shm-size={-(-need // 2**30)}g" in line and "too little for this check" in line
    assert "too little" not in gpu_check.shm_line(1000.0, 8)
