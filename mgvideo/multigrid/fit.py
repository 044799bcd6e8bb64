"""Does a schedule fit a dataset? A stage whose batches are larger than the clips a device holds would
train on nothing: its epochs have no iteration (the sampler drops an incomplete batch), an error. An epoch
shorter than the short cycle leaves its last shapes untrained, a warning."""

from __future__ import annotations

from mgvideo.errors import ScheduleError
from mgvideo.multigrid.iterations import stage_iterations
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


def short_epoch_warning(schedule: MultigridSchedule, dataset_size: int, batch_size: int,
                        world_size: int = 1) -> str | None:
    """One line of warning when an epoch of some stage has fewer iterations than its short cycle has slots,
    or None when every slot of every trained stage runs. The cycle restarts each epoch, so the last slots,
    the stage's own shape among them, would never train. Same inputs as `check_dataset_fits`; pure, cheap.
    """
    per_device = dataset_size // world_size
    cycled = [stage for stage in schedule.stages if stage.epochs > 0 and len(stage.slots) > 1]
    runs = {stage.index: stage_iterations(stage, dataset_size, batch_size, world_size) for stage in cycled}
    short = [stage for stage in cycled if runs[stage.index] < len(stage.slots)]
    if not short:
        return None
    # Every slot of a stage runs once an epoch holds one whole cycle: base batch x the sum of its factors.
    fits = min(per_device // sum(s.batch_factor for s in stage.slots) for stage in cycled)
    devices = f" on {world_size} devices" if world_size > 1 else ""
    first, n = short[0], runs[short[0].index]
    return (f"stage {first.index}: an epoch has {n} iteration{'s' * (n != 1)} (a {dataset_size}-clip "
            f"training set at base batch {batch_size} per device{devices}) but its short cycle has "
            f"{len(first.slots)} slots and restarts each epoch, so {_never_trained(first, n)}"
            f"{_likewise(short[1:], runs)}; for every shape to train use {_fix(fits, world_size)}, or "
            "multigrid.short_cycle=false")


def _never_trained(stage: Stage, runs: int) -> str:
    """'slot 3 (2x23x23, the stage's own shape) never trains', or the same for several slots."""
    lost = stage.slots[runs:]
    shapes = ", ".join(f"{s.frames}x{s.crop}x{s.crop}" for s in lost)
    if len(lost) == 1:
        return f"slot {runs + 1} ({shapes}, the stage's own shape) never trains"
    return f"slots {runs + 1}-{len(stage.slots)} ({shapes}; the last is the stage's own shape) never train"


def _likewise(others: list[Stage], runs: dict[int, int]) -> str:
    """'; likewise stages 3 (1 of 3 slots), 5 (1 of 3 slots)' for the other short stages (the first 3)."""
    if not others:
        return ""
    named = ", ".join(f"{s.index} ({runs[s.index]} of {len(s.slots)} slots)" for s in others[:3])
    more = f" and {len(others) - 3} more" if len(others) > 3 else ""
    return f"; likewise stage{'s' * (len(others) > 1)} {named}{more}"


def _fix(fits: int, world_size: int) -> str:
    if not fits:
        return "more training videos"
    return (f"a per-device base batch of at most {fits} (solver.batch_size {fits * world_size} on "
            f"{world_size} device(s)), more training videos")
