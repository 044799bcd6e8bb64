"""Progressive resizing as a schedule of the multigrid family: the baseline's epochs and LR, crops
growing coarse to fine, and the closing-phase options of the multigrid schedule."""

import pytest

from mgvideo.errors import ScheduleError
from mgvideo.multigrid import MultigridBatchSampler
from mgvideo.multigrid.lr import LRConfig, lr_at
from mgvideo.multigrid.progressive import ProgressiveConfig, ProgressiveSchedule
from mgvideo.multigrid.schedule import MultigridConfig, MultigridSchedule

BENCH = MultigridConfig(frames=16, crop=48, steps=(0, 14, 18), max_epoch=20)


def test_progressive_keeps_the_baselines_epochs_and_lr():
    prog = ProgressiveSchedule(BENCH)
    base = MultigridSchedule(MultigridConfig(frames=16, crop=48, steps=(0, 14, 18), max_epoch=20,
                                             long_cycle=False, short_cycle=False))
    assert prog.max_epoch == base.max_epoch == 20
    assert (prog.steps, prog.lrs) == (base.steps, base.lrs)
    lr = LRConfig(base_lr=0.05, warmup_epochs=1.0, warmup_start_lr=0.01)
    for epoch in (0.0, 0.5, 3.0, 14.0, 17.9, 19.5):
        assert lr_at(epoch, prog, lr) == lr_at(epoch, base, lr)
    assert prog.total_iterations() == 20  # same iterations: the saving is in their cost
    assert prog.flop_ratio() < 0.8


def test_progressive_crops_ramp_monotonically_to_full_and_stay():
    prog = ProgressiveSchedule(BENCH, ProgressiveConfig(start_scale=0.5, ramp_end=0.8, crop_step=8))
    crops = [prog.stage_at(e).crop for e in range(prog.max_epoch)]
    assert crops[0] == 24 and crops == sorted(crops)
    assert all(c % 8 == 0 for c in crops)
    assert crops[16:] == [48] * 4  # full size for the last 20 %
    assert all(s.frames == 16 and s.batch_factor == 1 and len(s.slots) == 1 for s in prog.stages)
    assert len(prog.stages) == len(set(crops))  # one stage per crop: precise BN at each change only
    # Every batch keeps the batch size; clips keep the view (a resize, not a zoom).
    sampler = MultigridBatchSampler(prog, dataset_size=64, batch_size=8, seed=0)
    batch = next(iter(sampler))
    assert len(batch) == 8 and batch[0][1].crop == 24 and batch[0][1].same_view


@pytest.mark.parametrize("kwargs", [{"start_scale": 0.0}, {"ramp_end": 1.5}, {"crop_step": 0}])
def test_bad_progressive_settings_are_named(kwargs):
    with pytest.raises(ScheduleError, match=next(iter(kwargs))):
        ProgressiveConfig(**kwargs)


def test_finetune_without_short_cycle_trains_the_full_shape_only():
    ref = MultigridSchedule(BENCH)
    plain = MultigridSchedule(MultigridConfig(**{**BENCH.__dict__, "finetune_short_cycle": False}))
    assert len(ref.stages[-1].slots) == 3
    assert [(s.batch_factor, s.frames, s.crop) for s in plain.stages[-1].slots] == [(1, 16, 48)]
    assert plain.stages[:-1] == ref.stages[:-1]  # the cycles are the reference's
    assert plain.stages[-1].epochs == ref.stages[-1].epochs
    assert plain.total_iterations() > ref.total_iterations()  # the same epochs in smaller batches


def test_finetune_fraction_sets_an_uncompressed_full_shape_finish():
    ref = MultigridSchedule(BENCH)
    longer = MultigridSchedule(MultigridConfig(**{**BENCH.__dict__, "finetune_fraction": 0.15}))
    assert longer.stages[:-1] == ref.stages[:-1]
    assert longer.stages[-1].epochs == 3  # 15 % of the baseline's 20 epochs
    assert longer.max_epoch == ref.stages[-1].start_epoch + 3
    assert longer.steps[-1] == (longer.steps[-2] + longer.max_epoch) // 2  # the reference's LR split
    with pytest.raises(ScheduleError, match="finetune_fraction"):
        MultigridSchedule(MultigridConfig(**{**BENCH.__dict__, "finetune_fraction": 1.5}))


def test_closing_phase_defaults_are_the_reference():
    assert MultigridSchedule(BENCH).stages == MultigridSchedule(
        MultigridConfig(**{**BENCH.__dict__, "finetune_short_cycle": True, "finetune_fraction": 0.0})).stages
