"""engine/resume.py with two gloo processes, each with its own `--out`: the newest checkpoint any rank holds
reaches every rank, and ranks that cannot follow stop together with one line naming the rank."""

import json
import os
import socket
from pathlib import Path

import pytest
import torch

from mgvideo.config import Config, load_config, to_dict
from mgvideo.engine import checkpoint, resume
from mgvideo.engine import distributed as D
from mgvideo.errors import CheckpointError

pytestmark = [pytest.mark.multiprocess, pytest.mark.timeout(300)]
FP = "f00d"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def save(out: Path, name: str, step: int, cfg: Config, fingerprint: str = FP) -> None:
    state = {"state": {"step": step, "records": 2}, "fingerprint": fingerprint, "config": to_dict(cfg),
             "model": {"w": torch.full((3,), float(step))}}
    checkpoint.save(state, out / "checkpoints" / name)


def _worker(rank: int, port: int, base: str, case: str) -> None:
    os.environ.update(WORLD_SIZE="2", RANK=str(rank), LOCAL_RANK="0", MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    out = Path(base) / f"node{rank}"  # one folder per simulated node
    cfg = load_config(None, ["solver.base_lr=0.2"] if case == "config" and rank == 1 else [])
    facts = {"training videos": 39 if case == "data" and rank == 1 else 40}
    if case == "newest":
        save(out, "stage_00.pt", 3, cfg) if rank == 0 else save(out, "last.pt", 5, cfg)
        if rank == 1:  # its log: 2 records the checkpoint saw, and one of a crashed segment
            (out / "metrics.jsonl").write_text('{"a": 1}\n{"b": 2}\n{"c": 3}\n')
    if case == "fingerprint":
        save(out, "last.pt", 5, cfg, fingerprint="beef") if rank == 1 else None
    info = D.init(torch.device("cpu"), timeout_minutes=2)
    try:
        agreed = resume.agree(cfg, out, FP, False, info, facts, torch.device("cpu"))
        result = {"step": agreed.saved["state"]["step"], "w": agreed.saved["model"]["w"].tolist(),
                  "source": agreed.source, "provider": agreed.provider, "metrics": agreed.metrics}
    except CheckpointError as err:
        result = {"error": str(err)}
    (Path(base) / f"rank{rank}.json").write_text(json.dumps(result))
    D.leave()


def run_pair(tmp_path: Path, case: str) -> list[dict]:
    import torch.multiprocessing as mp

    mp.spawn(_worker, args=(free_port(), str(tmp_path), case), nprocs=2, join=True)
    return [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]


def test_the_newest_checkpoint_any_rank_holds_reaches_every_rank(tmp_path):
    results = run_pair(tmp_path, "newest")
    for result in results:  # rank 0 had only an older stage checkpoint: it receives rank 1's last.pt
        assert result["step"] == 5 and result["w"] == [5.0, 5.0, 5.0] and result["provider"] == 1
        assert result["source"] == f"{tmp_path / 'node1' / 'checkpoints' / 'last.pt'} (rank 1)"
        assert result["metrics"] == '{"a": 1}\n{"b": 2}\n'  # node 0's log is short: the provider's lines


@pytest.mark.parametrize("case, words", [
    ("data", ["rank 1", "cannot follow rank 0", "training videos: 40 on rank 0, 39 here"]),
    ("config", ["rank 1", "cannot follow rank 0", "solver.base_lr: 0.1 on rank 0, 0.2 here"]),
    ("fingerprint", ["node1/checkpoints/last.pt", "fingerprint beef differs", "--force"]),
])
def test_ranks_that_cannot_follow_stop_together_with_one_line(tmp_path, case, words):
    results = run_pair(tmp_path, case)
    assert results[0] == results[1]  # every rank stops, with the same line
    assert all(word in results[0].get("error", "") for word in words), results[0]
    assert "\n" not in results[0]["error"]


def test_a_fresh_job_has_nothing_to_resume(tmp_path):
    # No rank holds a checkpoint: nothing is sent, and the run starts from scratch.
    info = D.DistInfo()
    agreed = resume.agree(load_config(None), tmp_path, FP, False, info, {"training videos": 4},
                          torch.device("cpu"))
    assert agreed.saved is None and agreed.provider == -1


def test_a_node_with_a_short_log_gets_the_providers_lines(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"a": 1}\n')
    resume.restore_metrics(tmp_path, '{"a": 1}\n{"b": 2}\n', records=2)
    assert path.read_text() == '{"a": 1}\n{"b": 2}\n'
    path.write_text('{"a": 1}\n{"b": 2}\n{"c": 3}\n')  # long enough: RunLog cuts it back itself
    resume.restore_metrics(tmp_path, '{"x": 0}\n{"y": 0}\n', records=2)
    assert path.read_text().startswith('{"a": 1}')
