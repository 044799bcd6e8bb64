"""Simulated nodes: two torchrun agents (`--nnodes 2`, c10d rendezvous on localhost), each in its own
working directory with its own node-local `--out`, its own copy of the annotation lists and of the
multi-resolution store, and no original videos. A worker killed mid-run is restarted by torchrun and the job
ends bitwise equal to an uninterrupted one; a job stopped after two processes goes on with one."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mgvideo.config import load_config
from mgvideo.data.prepare import prepare_data
from mgvideo.engine import checkpoint

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "configs" / "synthetic" / "tiny.yaml"
pytestmark = [pytest.mark.slow, pytest.mark.multiprocess, pytest.mark.timeout(900)]
# The recipe as a real dataset (kinetics lists, no frame cache) read from the store alone; a gentle LR.
RECIPE = ["data.dataset=kinetics", "data.root=data", "data.store=store", "data.workers=0",
          "solver.base_lr=0.002", "solver.warmup_start_lr=0.0005", "model.bn_base_size=8",
          "train.log_period=1", "train.checkpoint_every_iters=4"]


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    """A store of the tiny synthetic set (training and validation videos), made once."""
    cfg = load_config(TINY)
    prepare_data(cfg, log=lambda line: None)
    root, out = Path(cfg.data.root), tmp_path_factory.mktemp("store") / "store"
    for split in ("train.csv", "val.csv"):
        done = subprocess.run([sys.executable, "-m", "mgvideo", "data", "prepare", "--config", str(TINY),
                               str(root / split), "--root", str(root), "--out", str(out)],
                              cwd=REPO, capture_output=True, text=True, timeout=600,
                              env={**os.environ, "OMP_NUM_THREADS": "1"})
        assert done.returncode == 0, done.stderr[-2000:]
    return out


def make_nodes(base: Path, store: Path, names=("node_a", "node_b")) -> list[Path]:
    """Node folders holding the lists and a copy of the store: no video files at all."""
    root = Path(load_config(TINY).data.root)
    nodes = []
    for name in names:
        node = base / name
        (node / "data").mkdir(parents=True)
        for name in ("train.csv", "val.csv", "classes.txt"):
            shutil.copy(root / name, node / "data" / name)
        shutil.copytree(store, node / "store")
        nodes.append(node)
    return nodes


def launch(nodes: list[Path], *extra: str, crash: tuple[int, int] | None = None, restarts: int = 1,
           nproc_total: int = 2) -> list[subprocess.CompletedProcess]:
    """One torchrun agent per node folder (working directory), all joining one c10d rendezvous."""
    port = free_port()
    program = [str(REPO / "tests" / "crash_train.py")]
    if crash is not None:
        program += ["--crash-at", str(crash[0]), "--crash-rank", str(crash[1])]
    agents = []
    for node in nodes:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", str(len(nodes)),
               "--nproc-per-node", str(nproc_total // len(nodes)), "--rdzv-backend", "c10d",
               "--rdzv-endpoint", f"127.0.0.1:{port}", "--rdzv-id", "mgvideo-test",
               "--max-restarts", str(restarts), *program, str(TINY), "--out", "run", *RECIPE, *extra]
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
        agents.append(subprocess.Popen(cmd, cwd=node, env=env, stdout=subprocess.PIPE,
                                       stderr=subprocess.STDOUT, text=True))
    done = []
    for node, agent in zip(nodes, agents):
        out, _ = agent.communicate(timeout=600)
        (node / "launch.log").write_text(out)
        done.append(subprocess.CompletedProcess(agent.args, agent.returncode, out))
    return done


def weights(path: Path) -> dict:
    return checkpoint.model_state(path)


def assert_bitwise_equal(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, f"{len(different)} tensors differ, e.g. {different[:3]}"


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, store) -> dict:
    nodes = make_nodes(tmp_path_factory.mktemp("uninterrupted"), store)
    for agent in launch(nodes):
        assert agent.returncode == 0, agent.stdout[-3000:]
    return weights(nodes[0] / "run" / "model_final.pt")


def test_two_nodes_survive_a_killed_worker_and_end_bitwise_equal(tmp_path, store, uninterrupted):
    nodes = make_nodes(tmp_path, store)
    agents = launch(nodes, crash=(19, 1), restarts=1)
    for agent in agents:
        assert agent.returncode == 0, agent.stdout[-3000:]
    logs = "".join((node / "run" / "train.log").read_text() for node in nodes)
    assert "resumed from" in logs
    for node in nodes:  # each node's own --out holds the whole run
        assert_bitwise_equal(weights(node / "run" / "model_final.pt"), uninterrupted)
        summary = json.loads((node / "run" / "summary.json").read_text())
        assert summary["iterations"] == 28 and summary["store_misses"] == 0
        records = [json.loads(line) for line in (node / "run" / "metrics.jsonl").read_text().splitlines()]
        assert [r["step"] for r in records if r["kind"] == "train"] == list(range(1, 29))


def test_a_job_stopped_with_two_processes_goes_on_with_one(tmp_path, store, uninterrupted):
    nodes = make_nodes(tmp_path, store)
    agents = launch(nodes, crash=(19, 1), restarts=0)  # no restart: the job stops
    assert all(agent.returncode != 0 for agent in agents)
    saved = checkpoint.load(nodes[1] / "run" / "checkpoints" / "last.pt")
    assert saved["sampler"]["world_size"] == 2 and 0 < saved["state"]["step"] < 28
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "mgvideo", "train", str(TINY), "--out", "run", *RECIPE],
                          cwd=nodes[1], env={**env, "PYTHONPATH": str(REPO)}, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    log = (nodes[1] / "run" / "train.log").read_text()
    assert "saved with 2 processes, going on with 1" in log and "global batch 2 (unchanged)" in log
    summary = json.loads((nodes[1] / "run" / "summary.json").read_text())
    assert summary["iterations"] == 28 and summary["val"] and summary["store_misses"] == 0
    # The same global batch and LR: the one-process ending is close to the two-process run's.
    final = weights(nodes[1] / "run" / "model_final.pt")
    for key, value in uninterrupted.items():
        if value.is_floating_point():
            assert torch.allclose(final[key], value, rtol=1e-2, atol=1e-3), key
