"""DDP on CPU: two gloo processes under torchrun match one process with the same global batch, cross
stage changes (and cross-device BN) without hanging, and `--max-restarts` recovers from a killed rank."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mgvideo.engine import checkpoint

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "configs" / "synthetic" / "tiny.yaml"
pytestmark = [pytest.mark.slow, pytest.mark.multiprocess, pytest.mark.timeout(600)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def train(out: Path, nproc: int, *extra: str, crash: tuple[int, int] | None = None, restarts: int = 0):
    launcher = [] if nproc == 1 else [
        "-m", "torch.distributed.run", "--nproc-per-node", str(nproc), "--master-addr", "127.0.0.1",
        "--master-port", str(free_port()), "--max-restarts", str(restarts)]
    # crash (step, rank): SIGKILL that rank after that step, through the trainer's test hooks.
    program = ["-m", "mgvideo", "train"] if crash is None else [
        str(REPO / "tests" / "crash_train.py"), "--crash-at", str(crash[0]), "--crash-rank", str(crash[1])]
    # A gentle LR and BN groups of 8 clips: with tiny groups of tiny clips the run is chaotic, and
    # summation-order noise (which differs between 1 and 2 processes) would grow without bound.
    # A record per iteration, to compare the losses step by step.
    cmd = [sys.executable, *launcher, *program, str(TINY), "--out", str(out),
           "data.workers=0", "solver.base_lr=0.002", "solver.warmup_start_lr=0.0005", "model.bn_base_size=8",
           "train.log_period=1", *extra]
    full_env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, cwd=REPO, env=full_env, capture_output=True, text=True, timeout=500)
    (out / "launch.log").write_text(done.stdout + done.stderr)
    assert done.returncode == 0, done.stdout[-1500:] + done.stderr[-3000:]
    return checkpoint.model_state(out / "model_final.pt"), losses(out)


def losses(out: Path) -> list[float]:
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [r["loss"] for r in records if r["kind"] == "train"]


@pytest.fixture(scope="module")
def single(tmp_path_factory):
    return train(tmp_path_factory.mktemp("one"), 1)


def assert_close(a: tuple, b: tuple) -> None:
    (weights_a, losses_a), (weights_b, losses_b) = a, b
    assert len(losses_a) == len(losses_b) == 28
    assert losses_a == pytest.approx(losses_b, rel=1e-3)
    for key in weights_a:
        if weights_a[key].is_floating_point():
            assert torch.allclose(weights_a[key], weights_b[key], rtol=1e-2, atol=1e-3), key
        else:
            assert torch.equal(weights_a[key], weights_b[key]), key


def test_two_processes_match_one_with_the_same_global_batch(tmp_path, single):
    two = train(tmp_path, 2)
    assert_close(two, single)  # also: rank 0 alone writes the log (28 records, not 56)
    assert (tmp_path / "launch.log").read_text().count('"iteration_saving"') == 1  # one summary printed
    assert (tmp_path / "checkpoints" / "stage_03.pt").exists()  # went through every stage change


def test_max_restarts_resumes_after_a_killed_rank(tmp_path, single):
    two = train(tmp_path, 2, "train.checkpoint_every_iters=4", crash=(10, 1), restarts=1)
    assert "resumed from" in (tmp_path / "launch.log").read_text()
    assert_close(two, single)



BENCH_2 = """\
bench: {seeds: 1, eval_points: 1}
data: {dataset: synthetic, root: %s, synthetic_size: small, num_classes: 20, frames: 8, crop: 32,
       sampling_rate: 2, workers: 0}
model: {name: r3d_tiny, options: {width_per_group: 4}, bn_base_size: 2}
solver: {batch_size: 2, base_lr: 0.01, steps: [0, 1], max_epoch: 2, warmup_epochs: 0.0}
train: {device: cpu, precise_bn_batches: 1, checkpoint_minutes: 0, log_period: 50}
"""


def _bench_worker(rank: int, port: int, config: str, out: str) -> None:
    """One rank of a 2-process `bench tta` (what torchrun would start), counting process-group joins."""
    import torch.distributed as dist

    from mgvideo.bench.tta import load_bench, run_bench

    os.environ.update(WORLD_SIZE="2", RANK=str(rank), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port), OMP_NUM_THREADS="1")
    joins = []
    init = dist.init_process_group
    dist.init_process_group = lambda *args, **kwargs: joins.append(1) or init(*args, **kwargs)
    spec, cfg = load_bench(config)
    summary = run_bench(spec, cfg, Path(out), log=lambda line: None)
    (Path(out) / f"rank{rank}.json").write_text(json.dumps({"joins": len(joins), "runs": [
        r["variant"] for r in summary["runs"]], "live": dist.is_initialized()}))


def test_a_two_process_bench_of_two_runs_shares_one_process_group(tmp_path):
    # bench tta trains its runs in turn in the same processes; joining a process group per run reused the
    # store's keys and kept the BN sync groups of a destroyed group. Here BN pools the 2 ranks (sync_size 2).
    import torch.multiprocessing as mp

    config = tmp_path / "bench.yaml"
    config.write_text(BENCH_2 % (REPO / "runs" / "data" / "synthetic_small"))
    mp.spawn(_bench_worker, args=(free_port(), str(config), str(tmp_path)), nprocs=2, join=True)
    for rank in range(2):
        result = json.loads((tmp_path / f"rank{rank}.json").read_text())
        assert result == {"joins": 1, "runs": ["baseline", "multigrid"], "live": True}  # left at exit
