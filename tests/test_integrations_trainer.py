"""What the Lightning and Accelerate examples are held to: the per-iteration (batch, T, S, LR, BN groups)
sequence of `mgvideo train` on configs/synthetic/tiny.yaml, computed here by the trainer's own library calls
and checked against the real trainer. Also: the core never imports either framework.
"""

import importlib.util
import json
import os
import re
import socket
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from mgvideo.config import load_config
from mgvideo.engine import builders
from mgvideo.engine import run as engine_run
from mgvideo.engine.device import device_plan
from mgvideo.engine.trainer import train
from mgvideo.integrations.step import iteration_counts
from mgvideo.multigrid.batchnorm import SubBatchNorm3d, bn_groups_for
from mgvideo.multigrid.lr import lr_at
from mgvideo.multigrid.sampler import MultigridBatchSampler

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "configs" / "synthetic" / "tiny.yaml"
EXAMPLES = REPO / "examples"
TRAIN_CLIPS = 40  # the tiny synthetic set's training clips; the examples' CLIPS
FIELDS = ("epoch", "batch", "frames", "crop", "lr", "bn")


def tiny_config():
    root = REPO / "runs" / "data" / "synthetic_small"
    return load_config(TINY, [f"data.root={root}", "train.log_period=1"])


def trainer_steps(world_size: int = 1, rank: int = 0, dataset_size: int = TRAIN_CLIPS) -> list[dict]:
    """Each iteration of `mgvideo train` on tiny.yaml as rank `rank` of `world_size`, by the calls the
    trainer makes (engine/run.py builds the sampler; trainer.py `train_epoch` takes the LR, `train_step`
    the BN plan): epoch, per-device batch, T, S, LR, [BN groups, sync size], dataset indices."""
    cfg = tiny_config()
    schedule, plan = builders.build_schedule(cfg), device_plan(cfg, world_size)
    lr_config, k = builders.build_lr_config(cfg, plan.lr_scale), plan.micro_batches
    sampler = MultigridBatchSampler(schedule, dataset_size, plan.batch, rank=rank, world_size=world_size,
                                    seed=cfg.train.seed)
    steps = []
    for epoch in range(schedule.max_epoch):
        sampler.set_epoch(epoch)
        iterations = len(sampler)
        for it, batch in enumerate(sampler):
            bn = bn_groups_for(len(batch) // k, sampler.stage_batch // k, cfg.model.bn_base_size, world_size)
            shape = batch[0][1]
            steps.append({"epoch": epoch, "batch": len(batch), "frames": shape.frames, "crop": shape.crop,
                          "lr": lr_at(epoch + it / iterations, schedule, lr_config),
                          "bn": [bn.groups, bn.sync_size], "indices": [index for index, _ in batch]})
    return steps


def read_trace(directory: Path, rank: int = 0) -> list[dict]:
    return [json.loads(line) for line in (directory / f"rank{rank}.jsonl").read_text().splitlines()]


def assert_same_steps(trace: list[dict], expected: list[dict], fields=(*FIELDS, "indices")) -> None:
    assert len(trace) == len(expected)
    for i, (got, want) in enumerate(zip(trace, expected)):
        assert {f: got[f] for f in fields} == {f: want[f] for f in fields}, f"iteration {i}"


def assert_summary(printed: str, steps: list[dict]) -> None:
    """The example prints the shapes it trained on and its iterations against the baseline's."""
    cfg = tiny_config()
    baseline = cfg.solver.max_epoch * (TRAIN_CLIPS // cfg.solver.batch_size)
    assert f"{len(steps)} iterations against the baseline's {baseline} " in printed
    shapes = Counter((s["batch"], s["frames"], s["crop"]) for s in steps)
    listed = {tuple(map(int, m[:3])): int(m[3]) for m in re.findall(r"(\d+)x(\d+)x(\d+) \((\d+)\)", printed)}
    assert listed == dict(shapes)


def load_example(name: str):
    """An example as a module, in this process (its `main(argv)` runs it)."""
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_script(cmd: list[str], timeout: int = 600) -> subprocess.CompletedProcess:
    """A Python command with this checkout's mgvideo, single-threaded, on a free rendezvous port."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO), "MASTER_ADDR": "127.0.0.1",
           "MASTER_PORT": str(free_port())}
    return subprocess.run([sys.executable, *cmd], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture(scope="module")
def real_trainer(tmp_path_factory):
    """The real trainer on tiny.yaml, one record per step: metrics.jsonl, plus the BN plan and the
    sampler, read by a test hook after each step."""
    plans, samplers = [], []

    def after_step(run):
        bn = next(m for m in run.model.modules() if isinstance(m, SubBatchNorm3d))
        plans.append([bn.groups, bn.sync_size])
        samplers.append(run.data.sampler)

    out = tmp_path_factory.mktemp("trainer")
    summary = train(tiny_config(), out, hooks=engine_run.TestHooks(after_step=after_step))
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in records if r["kind"] == "train"]
    for step, plan in zip(steps, plans, strict=True):
        step["bn"] = plan
    return summary, steps, samplers[0]


@pytest.mark.slow
def test_the_reference_sequence_is_the_real_trainers(real_trainer):
    summary, steps, sampler = real_trainer
    expected = trainer_steps()
    assert len(steps) == len(expected) == summary["iterations"]
    assert [r["iterations"] for r in steps] == [1] * len(steps)
    for record, want in zip(steps, expected):
        assert [record[f] for f in ("batch", "frames", "crop", "lr", "bn")] == [
            want[f] for f in ("batch", "frames", "crop", "lr", "bn")]
    assert (sampler.dataset_size, sampler.batch_size, sampler.seed) == (TRAIN_CLIPS, 2, 0)
    # the trainer's summary counts are what the examples print
    assert iteration_counts(sampler) == (summary["iterations"], summary["baseline_iterations"])


def test_the_sequence_has_every_kind_of_step():
    """The comparison is worth something: several shapes, LRs (warmup included) and BN plans, and on two
    devices cross-device BN and disjoint shares of the data."""
    one, two = trainer_steps(), [trainer_steps(2, r) for r in (0, 1)]
    assert len({(s["frames"], s["crop"]) for s in one}) >= 6 and len({s["lr"] for s in one}) >= 5
    assert {tuple(s["bn"]) for s in one} >= {(8, 1), (1, 1)}
    assert any(s["bn"][1] == 2 for s in two[0])
    assert [s["batch"] * 2 for s in two[0]] == [s["batch"] for s in one]
    for a, b in zip(*two):
        assert not set(a["indices"]) & set(b["indices"])


def test_the_core_imports_neither_framework():
    code = ("import sys, mgvideo, mgvideo.multigrid, mgvideo.integrations, mgvideo.integrations.step, "
            "mgvideo.cli, mgvideo.engine.trainer\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in "
            "('lightning', 'pytorch_lightning', 'accelerate')))")
    done = run_script(["-c", code])
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
