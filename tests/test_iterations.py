"""The one count of a run's iterations (multigrid/iterations.py) is what the sampler deals, epoch by epoch,
on any number of devices, and the baseline's is the baseline sampler's."""

from dataclasses import replace

import pytest

from mgvideo.multigrid.iterations import run_length, stage_iterations
from mgvideo.multigrid.sampler import MultigridBatchSampler
from mgvideo.multigrid.schedule import MultigridConfig, MultigridSchedule

CFG = MultigridConfig(frames=8, crop=32, steps=(0, 4, 6), max_epoch=8)


def dealt(schedule, videos, batch, world_size):
    """Per epoch, the clips (all ranks) of each batch rank 0's sampler deals."""
    sampler = MultigridBatchSampler(schedule, videos, batch, rank=0, world_size=world_size)
    epochs = []
    for epoch in range(schedule.max_epoch):
        sampler.set_epoch(epoch)
        epochs.append(tuple(len(b) * world_size for b in sampler))
        assert len(sampler) == len(epochs[-1])
    return tuple(epochs)


@pytest.mark.parametrize("world_size", [1, 2, 3])
@pytest.mark.parametrize("long_cycle, short_cycle", [(1, 1), (1, 0), (0, 1), (0, 0)])
def test_the_run_length_is_what_the_sampler_deals(world_size, long_cycle, short_cycle):
    schedule = MultigridSchedule(replace(CFG, long_cycle=bool(long_cycle), short_cycle=bool(short_cycle)))
    length = run_length(schedule, 61, 2, world_size)
    assert length.epoch_clips == dealt(schedule, 61, 2, world_size)
    assert length.total == sum(map(len, length.epoch_clips))
    for stage in schedule.stages:
        if stage.epochs:
            assert stage_iterations(stage, 61, 2, world_size) == len(length.epoch_clips[stage.start_epoch])
    baseline = MultigridSchedule(replace(CFG, long_cycle=False, short_cycle=False))
    assert length.baseline == sum(map(len, dealt(baseline, 61, 2, world_size)))
    assert length.iteration_saving == length.baseline / length.total


def test_a_re_dealt_epoch_changes_that_epoch_only():
    length = run_length(MultigridSchedule(CFG), 61, 2)
    changed = length.with_epoch(3, [4, 4])
    assert changed.epoch_clips[3] == (4, 4) and changed.epoch_clips[:3] == length.epoch_clips[:3]
    assert changed.steps_before(4) == length.steps_before(3) + 2 and changed.baseline == length.baseline
