"""Accelerate: `accelerator.prepare` re-shards a multigrid batch sampler (why `prepare_loader` exists),
`prepare_loader` keeps it whole and checks it, and examples/accelerate_multigrid.py trains the trainer's
per-iteration (batch, T, S, LR, BN) sequence on 1 and on 2 processes (torchrun, gloo)."""

import contextlib
import io

import pytest
import torch
from accelerate import Accelerator
from accelerate.data_loader import prepare_data_loader
from test_integrations_trainer import (
    EXAMPLES,
    TRAIN_CLIPS,
    assert_same_steps,
    assert_summary,
    free_port,
    load_example,
    read_trace,
    run_script,
    tiny_config,
    trainer_steps,
)
from torch.utils.data import DataLoader, Dataset

from mgvideo.engine import builders
from mgvideo.errors import ConfigError
from mgvideo.integrations.accelerate import DeviceLoader, prepare_loader
from mgvideo.multigrid import MultigridBatchSampler


class Items(Dataset):
    """What a clip dataset would decode, reduced to (index, T, S) of the clip asked for."""

    def __len__(self):
        return TRAIN_CLIPS

    def __getitem__(self, item):
        index, shape = item
        return torch.tensor([index, shape.frames, shape.crop])


def loader_of(rank: int, world_size: int, epoch: int = 6) -> DataLoader:
    """A loader of (index, T, S) rows on tiny.yaml's schedule, as rank `rank` of `world_size` has it."""
    sampler = MultigridBatchSampler(builders.build_schedule(tiny_config()), TRAIN_CLIPS, 2 // world_size,
                                    rank=rank, world_size=world_size)
    sampler.set_epoch(epoch)
    return DataLoader(Items(), batch_sampler=sampler)


def rows(loader) -> list[list[list[int]]]:
    return [batch.tolist() for batch in loader]


def test_accelerate_prepare_splits_the_multigrid_batches_between_processes():
    """What `accelerator.prepare` does on 2 processes (its prepare_data_loader, with the process index
    given): BatchSamplerShard deals each rank's batches out again, so ranks lose batches and disagree on
    shapes. Should accelerate ever keep a batch sampler whole, this fails and prepare_loader can go."""
    own, prepared = [], []
    for rank in (0, 1):
        own.append(rows(loader_of(rank, 2)))
        prepared.append(rows(prepare_data_loader(loader_of(rank, 2), num_processes=2, process_index=rank)))
        assert len(prepared[rank]) < len(own[rank])
    assert [len(b) for b in own[0]] == [len(b) for b in own[1]]  # ours: the same shapes on both ranks
    assert len(prepared[0][0]) != len(prepared[1][0])  # re-sharded: different shapes at the same step


def test_prepare_loader_keeps_the_batches_and_prepare_passes_it_through():
    accelerator = Accelerator(cpu=True)
    loader = prepare_loader(accelerator, loader_of(0, 1))
    assert isinstance(loader, DeviceLoader) and accelerator.prepare(loader) is loader
    assert len(loader) == len(loader_of(0, 1)) and rows(loader) == rows(loader_of(0, 1))
    assert all(batch.device == accelerator.device for batch in loader)


def test_prepare_loader_refuses_a_sampler_of_another_process_or_kind():
    accelerator = Accelerator(cpu=True)
    with pytest.raises(ConfigError, match="rank 1 of 2, this process is 0 of 1"):
        prepare_loader(accelerator, loader_of(1, 2))
    with pytest.raises(ConfigError, match="must be a MultigridBatchSampler"):
        prepare_loader(accelerator, DataLoader(range(8), batch_size=2))
    accelerator.gradient_accumulation_steps = 2
    try:
        with pytest.raises(ConfigError, match="gradient_accumulation_steps=2 is not supported"):
            prepare_loader(accelerator, loader_of(0, 1))
    finally:
        accelerator.gradient_accumulation_steps = 1


@pytest.mark.slow
def test_one_process_trains_the_trainers_sequence(tmp_path):
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        load_example("accelerate_multigrid").main(["--trace", str(tmp_path)])
    expected = trainer_steps()
    assert_same_steps(read_trace(tmp_path), expected)
    assert_summary(printed.getvalue(), expected)


@pytest.mark.slow
@pytest.mark.multiprocess
def test_two_processes_train_the_trainers_sequence(tmp_path):
    done = run_script(["-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-addr", "127.0.0.1",
                       "--master-port", str(free_port()), str(EXAMPLES / "accelerate_multigrid.py"),
                       "--trace", str(tmp_path)])
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    for rank in (0, 1):
        assert_same_steps(read_trace(tmp_path, rank), trainer_steps(2, rank))
    assert done.stdout.count("iterations against the baseline's") == 1
    assert_summary(done.stdout, trainer_steps(2, 0))
