"""Does a schedule fit a dataset? A stage whose batches are larger than the clips a device holds would
train on nothing: its epochs have no iteration (the sampler drops an incomplete batch)."""

from __future__ import annotations

from mgvideo.errors import ScheduleError
from mgvideo.multigrid.schedule import MultigridSchedule, Slot, Stage


def check_dataset_fits(schedule: MultigridSchedule, dataset_size: int, batch_size: int,
                       world_size: int = 1) -> None:
    """Raise ScheduleError (one line) naming the first stage with a per-device batch larger than the
    clips per device (`dataset_size // world_size`), for a base per-device batch of `batch_size`.

    Pure and cheap: call it once before training. Stages of zero epochs never train and are not checked.
    """
    per_device = dataset_size // world_size
    trained = [stage for stage in schedule.stages if stage.epochs > 0]
    largest = max((slot.batch_factor for stage in trained for slot in stage.slots), default=1)
    for stage in trained:
        for slot in stage.slots:
            if batch_size * slot.batch_factor > per_device:
                raise ScheduleError(_too_large(stage, slot, batch_size, dataset_size, world_size,
                                               fits=per_device // largest))


def _too_large(stage: Stage, slot: Slot, batch_size: int, dataset_size: int, world_size: int,
               fits: int) -> str:
    """The error: the stage, its batch and the dataset size, and what would fit."""
    kind = "long-cycle shape" if slot == stage.slots[-1] else "short-cycle slot"
    fix = (f"a per-device base batch of at most {fits} (solver.batch_size {fits * world_size} on "
           f"{world_size} device(s); plan: --batch-size {fits})" if fits else "more training videos")
    return (f"stage {stage.index}: its per-device batch of {batch_size * slot.batch_factor} clips ({kind} "
            f"{slot.frames}x{slot.crop}x{slot.crop}, base batch {batch_size} x {slot.batch_factor}) exceeds "
            f"the {dataset_size // world_size} clips per device of a {dataset_size}-clip training set on "
            f"{world_size} device(s), so its epochs would train on nothing; use {fix}, or fewer and milder "
            "shapes (multigrid.long_cycle_factors, multigrid.short_cycle=false, multigrid.long_cycle=false)")
