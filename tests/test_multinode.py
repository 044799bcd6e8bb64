"""Simulated nodes: two torchrun agents (`--nnodes 2`, c10d rendezvous on localhost), each in its own
working directory with its own node-local `--out`, its own copy of the annotation lists and of the
multi-resolution store, and no original videos. A worker killed mid-run is restarted by torchrun and the job
ends bitwise equal to an uninterrupted one; when a whole node dies, the other goes on alone."""

import json
import os
import shutil
import subprocess
import sys
import time
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


def launch(nodes: list[Path], *, crash: list[str] = (), nnodes: str = "2", restarts: int = 1
           ) -> list[subprocess.CompletedProcess]:
    """One torchrun agent per node folder (its working directory), all joining one c10d rendezvous that the
    first node hosts; `crash` (tests/crash_train.py's flags) is given to the last node only."""
    port = free_port()
    agents = []
    for k, node in enumerate(nodes):
        faults = list(crash) if k == len(nodes) - 1 else []
        conf = f"join_timeout=120,last_call_timeout=2,is_host={int(k == 0)}"
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", nnodes, "--nproc-per-node", "1",
               "--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{port}", "--rdzv-id", "mgvideo-test",
               "--rdzv-conf", conf, "--max-restarts", str(restarts), str(REPO / "tests" / "crash_train.py"),
               *faults, str(TINY), "--out", "run", *RECIPE]
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
        agents.append(subprocess.Popen(cmd, cwd=node, env=env, stdout=subprocess.PIPE,
                                       stderr=subprocess.STDOUT, text=True))
        if k == 0:
            time.sleep(1)  # the host's store first: it outlives the other node
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
    agents = launch(nodes, crash=["--crash-at", "19"], restarts=1)  # mid-epoch; last checkpoint at 16
    for agent in agents:
        assert agent.returncode == 0, agent.stdout[-3000:]
    logs = "".join((node / "run" / "train.log").read_text() for node in nodes)
    assert logs.count("resumed from run/checkpoints/last.pt") == 2  # once on each node, from its own copy
    for node in nodes:  # each node's own --out holds the whole run
        assert_bitwise_equal(weights(node / "run" / "model_final.pt"), uninterrupted)
        summary = json.loads((node / "run" / "summary.json").read_text())
        assert summary["iterations"] == 28 and summary["store_misses"] == 0
        records = [json.loads(line) for line in (node / "run" / "metrics.jsonl").read_text().splitlines()]
        assert [r["step"] for r in records if r["kind"] == "train"] == list(range(1, 29))


def test_a_node_that_dies_leaves_the_job_to_go_on_with_one_process(tmp_path, store, uninterrupted):
    # torchrun --nnodes 1:2: the second node dies with its agent; the first restarts alone, resumes from its
    # own --out with one process instead of two, and shares the rest of the epoch out anew.
    nodes = make_nodes(tmp_path, store)
    agents = launch(nodes, crash=["--crash-at", "19", "--crash-node"], nnodes="1:2", restarts=1)
    assert agents[0].returncode == 0, agents[0].stdout[-3000:]
    assert agents[1].returncode == -9 and not (nodes[1] / "run" / "model_final.pt").exists()
    log = (nodes[0] / "run" / "train.log").read_text()
    assert "resumed from run/checkpoints/last.pt at epoch 6, iteration 4" in log
    assert "saved with 2 processes, going on with 1" in log and "global batch 2 (unchanged)" in log
    summary = json.loads((nodes[0] / "run" / "summary.json").read_text())
    assert summary["iterations"] == 28 and summary["val"] and summary["store_misses"] == 0
    # The same global batch, LR and clips per step: one process ends close to the two-process run.
    final = weights(nodes[0] / "run" / "model_final.pt")
    for key, value in uninterrupted.items():
        if value.is_floating_point():
            assert torch.allclose(final[key], value, rtol=1e-2, atol=1e-3), key
