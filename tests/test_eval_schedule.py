"""The evaluation schedule (engine/eval_schedule.py): the steps it lists are those the trainer evaluated at
when it decided step by step from its checkpointed state (`next_eval`, `eval_step`), for each cadence, on
one and on several devices, uninterrupted or resumed at any step; and the clips per iteration it counts
are those the sampler deals."""

import dataclasses

import pytest

from mgvideo.config import load_config, override
from mgvideo.engine import builders
from mgvideo.engine.device import device_plan
from mgvideo.engine.eval_schedule import eval_steps
from mgvideo.multigrid.fit import check_dataset_fits
from mgvideo.multigrid.iterations import run_length
from mgvideo.multigrid.sampler import MultigridBatchSampler

BASE = ["data.frames=8", "data.crop=32", "solver.batch_size=4", "solver.steps=[0, 4]", "solver.max_epoch=5"]
CFG = load_config(None, BASE)
SINGLE_STAGE = ["multigrid.long_cycle=false", "multigrid.short_cycle=false"]
CADENCES = {
    "reference": [],
    "reference_freq_1": ["multigrid.eval_freq=1"],
    "short_cycle_only": ["multigrid.long_cycle=false"],
    "period_1": [*SINGLE_STAGE, "train.eval_period=1"],
    "period_2": [*SINGLE_STAGE, "train.eval_period=2"],
    "samples_30": ["train.eval_period_samples=30"],
    "samples_100": ["train.eval_period_samples=100"],
    "samples_7": ["train.eval_period_samples=7"],
    "points_1": ["train.eval_points=1"],
    "points_4": ["train.eval_points=4"],
    "points_7": ["train.eval_points=7"],
    "points_many": ["train.eval_points=500"],  # more points than iterations
}


@dataclasses.dataclass
class OldState:
    step: int = 0
    samples: int = 0
    next_eval: int = 0
    eval_step: int = -1


def old_eval_steps(cfg, schedule, clips, resume_at=()):
    """What the trainer did before the schedule existed (its cadence functions, verbatim in substance),
    restarting from the checkpointed state after each step in `resume_at`."""
    t, total = cfg.train, sum(len(epoch) for epoch in clips)
    state, evaluated = OldState(), []

    def start():  # train(): the first periodic point, unless the checkpoint carried one
        state.next_eval = state.next_eval or t.eval_period_samples

    def periodic_eval_due():
        by_samples = bool(t.eval_period_samples) and state.samples >= state.next_eval
        points = t.eval_points
        if not points:
            return by_samples
        last = max(state.eval_step, 0)
        return by_samples or state.step * points // max(total, 1) > last * points // max(total, 1)

    def eval_due(epoch):
        if epoch + 1 == schedule.max_epoch:
            return state.eval_step != state.step
        if t.eval_period:
            return (epoch + 1) % t.eval_period == 0
        if t.eval_period_samples == 0 and t.eval_points == 0:
            return schedule.is_eval_epoch(epoch)
        return periodic_eval_due()

    def mark_evaluated():
        evaluated.append(state.step)
        state.eval_step = state.step
        while t.eval_period_samples and state.next_eval <= state.samples:
            state.next_eval += t.eval_period_samples

    start()
    for epoch, iterations in enumerate(clips):
        for i, n in enumerate(iterations, 1):
            state.step, state.samples = state.step + 1, state.samples + n
            if i < len(iterations) and periodic_eval_due():
                mark_evaluated()
            if state.step in resume_at:  # a checkpoint here, then a new process
                state = dataclasses.replace(state)
                start()
        if eval_due(epoch):
            mark_evaluated()
    return evaluated


def epoch_clips(schedule, videos, batch, world_size=1):
    return [list(epoch) for epoch in run_length(schedule, videos, batch, world_size).epoch_clips]


def run_layout(name, world_size=1, videos=300):
    """The config, schedule and clips per iteration of a run with cadence `name` on `world_size` devices."""
    cfg = load_config(None, BASE + CADENCES[name])
    schedule, batch = builders.build_schedule(cfg), device_plan(cfg, world_size).batch
    check_dataset_fits(schedule, videos, batch, world_size)  # as build_run: every epoch trains
    return cfg, schedule, epoch_clips(schedule, videos, batch, world_size)


@pytest.mark.parametrize("world_size", [1, 2, 4])
@pytest.mark.parametrize("name", list(CADENCES))
def test_the_schedule_lists_the_steps_the_trainer_evaluated_at(name, world_size):
    cfg, schedule, clips = run_layout(name, world_size)
    expected = old_eval_steps(cfg, schedule, clips)
    assert eval_steps(cfg.train, schedule, clips) == expected
    assert expected[-1] == sum(len(epoch) for epoch in clips)  # the final model, always


@pytest.mark.parametrize("name", ["samples_30", "samples_7", "points_4", "period_2", "reference"])
def test_a_resumed_run_evaluated_where_an_uninterrupted_one_did(name):
    cfg, schedule, clips = run_layout(name, world_size=2)
    expected = eval_steps(cfg.train, schedule, clips)
    total = sum(len(epoch) for epoch in clips)
    for at in range(1, total + 1):
        assert old_eval_steps(cfg, schedule, clips, resume_at={at}) == expected, f"resumed after step {at}"
    assert old_eval_steps(cfg, schedule, clips, resume_at=set(range(1, total + 1))) == expected


def test_samples_count_every_device():
    cfg, schedule, one = run_layout("samples_30", world_size=1)
    _, _, two = run_layout("samples_30", world_size=2)
    assert sum(map(sum, one)) == sum(map(sum, two))  # the same clips in all, half the batch per device
    steps = eval_steps(cfg.train, schedule, two)
    flat = [n for epoch in two for n in epoch]
    crossings = [s for s in range(1, len(flat) + 1) if sum(flat[:s]) // 30 > sum(flat[: s - 1]) // 30]
    assert steps == sorted({*crossings, len(flat)})


@pytest.mark.parametrize("world_size", [1, 2, 3])
def test_epoch_clips_are_what_the_sampler_deals(world_size):
    schedule = builders.build_schedule(CFG)
    clips = epoch_clips(schedule, 50, 2, world_size)
    assert len(clips) == schedule.max_epoch
    for rank in range(world_size):
        sampler = MultigridBatchSampler(schedule, 50, 2, rank=rank, world_size=world_size)
        for epoch in range(schedule.max_epoch):
            sampler.set_epoch(epoch)
            assert [len(batch) * world_size for batch in sampler] == clips[epoch]


def test_points_need_no_schedule_of_epochs():
    cfg = override(CFG, **{"train.eval_points": 3})
    schedule = builders.build_schedule(cfg)
    assert eval_steps(cfg.train, schedule, [[1] * 10]) == [4, 7, 10]  # ceil(k * 10 / 3)
