"""The random-shape ablation schedule: same shapes and cost budget as the ordered long cycle, drawn at
random per epoch, validated like any schedule, and following the config's LR policy (steps or cosine)."""

import math

import pytest

from mgvideo.errors import ScheduleError
from mgvideo.multigrid.random_shapes import RandomShapeSchedule
from mgvideo.multigrid.schedule import MultigridConfig, MultigridSchedule

CFG = MultigridConfig(frames=16, crop=64, steps=(0, 6, 9), max_epoch=11)


def test_random_shapes_keep_the_shapes_cost_budget_and_step_lr_rule():
    ordered, shuffled = MultigridSchedule(CFG), RandomShapeSchedule(CFG, seed=0)
    assert shuffled.max_epoch == ordered.max_epoch
    last, ordered_last = shuffled.stages[-1], ordered.stages[-1]
    assert last.finetune and last.slots == ordered_last.slots
    assert (last.start_epoch, last.end_epoch) == (ordered_last.start_epoch, ordered_last.end_epoch)
    shapes = {(s.batch_factor, s.frames, s.crop) for s in ordered.stages}
    drawn = [shuffled.stage_at(e) for e in range(shuffled.max_epoch)]
    assert {(s.batch_factor, s.frames, s.crop) for s in drawn} <= shapes
    assert len({(s.frames, s.crop) for s in drawn[:-3]}) > 1
    assert [s.lr_step for s in drawn] == [ordered.stage_at(e).lr_step for e in range(ordered.max_epoch)]
    for epoch in range(ordered.stages[-1].start_epoch):  # before fine-tuning: LR = gamma^k x batch factor
        stage = shuffled.stage_at(epoch)
        assert shuffled.relative_lr(epoch + 0.5) == pytest.approx(0.1**stage.lr_step * stage.batch_factor)
    assert drawn != [ordered.stage_at(e) for e in range(ordered.max_epoch)]
    assert RandomShapeSchedule(CFG, seed=0).stages == shuffled.stages  # seeded
    assert RandomShapeSchedule(CFG, seed=1).stages != shuffled.stages
    assert math.isclose(sum(s.epochs for s in shuffled.stages), ordered.max_epoch)


def test_random_shapes_honour_the_cosine_policy():
    cfg = MultigridConfig(frames=16, crop=64, steps=(), lr_policy="cosine", max_epoch=12)
    shuffled = RandomShapeSchedule(cfg, seed=3)
    for epoch in (0.5, 3.5, 7.5, shuffled.max_epoch - 0.5):
        stage = shuffled.stage_at(epoch)
        cosine = 0.5 * (1 + math.cos(math.pi * epoch / shuffled.max_epoch))
        assert shuffled.relative_lr(epoch) == pytest.approx(stage.batch_factor * cosine)


def test_random_shapes_are_validated_like_any_schedule():
    with pytest.raises(ScheduleError, match="^steps: must start at 0"):
        RandomShapeSchedule(MultigridConfig(steps=(1, 5)), seed=0)
    with pytest.raises(ScheduleError, match="^long_cycle:"):
        RandomShapeSchedule(MultigridConfig(long_cycle=False), seed=0)
