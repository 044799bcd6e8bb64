"""How many iterations a schedule runs on a dataset, as the sampler deals them (both count with
`count_batches`): the one count that the evaluation steps, the summary, `mgvideo plan`, the fit check and
the integrations read, so they agree.

Every rank holds `dataset_size // world_size` clips of an epoch (the rest is left out, so that ranks run
the same number of iterations) and cuts them into batches whose sizes cycle through the stage's short-cycle
slots: base per-device batch x slot multiplier.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from mgvideo.multigrid.sampler import count_batches, iterations_per_epoch
from mgvideo.multigrid.schedule import MultigridSchedule, Stage


def slot_batches(stage: Stage, batch_size: int) -> list[int]:
    """The per-device batch of each short-cycle slot of `stage`, for a base per-device `batch_size`."""
    return [batch_size * slot.batch_factor for slot in stage.slots]


def stage_iterations(stage: Stage, dataset_size: int, batch_size: int, world_size: int = 1,
                     drop_last: bool = True) -> int:
    """Iterations of one epoch of `stage` on every rank."""
    factors = [slot.batch_factor for slot in stage.slots]
    return iterations_per_epoch(dataset_size, batch_size, world_size, factors, drop_last)


def baseline_iterations(baseline_epochs: int, dataset_size: int, batch_size: int, world_size: int = 1) -> int:
    """Iterations of the baseline (one shape, the base batch) over `baseline_epochs` on the same data."""
    return baseline_epochs * iterations_per_epoch(dataset_size, batch_size, world_size)


@dataclass(frozen=True)
class RunLength:
    """A run's iterations: for each epoch, the clips (all devices together) of each of its iterations, and
    the baseline's iteration count on the same data and devices."""

    epoch_clips: tuple[tuple[int, ...], ...]
    baseline: int

    @property
    def total(self) -> int:
        """Iterations of the whole run."""
        return sum(len(clips) for clips in self.epoch_clips)

    @property
    def iteration_saving(self) -> float:
        """The baseline's iterations over this run's."""
        return self.baseline / max(self.total, 1)

    def steps_before(self, epoch: int) -> int:
        """Iterations of the epochs before `epoch`."""
        return sum(len(clips) for clips in self.epoch_clips[:epoch])

    def with_epoch(self, epoch: int, clips: list[int]) -> RunLength:
        """The same run with epoch `epoch` dealt as `clips` (a resume with another number of processes)."""
        epochs = list(self.epoch_clips)
        epochs[epoch] = tuple(clips)
        return replace(self, epoch_clips=tuple(epochs))


def run_length(schedule: MultigridSchedule, dataset_size: int, batch_size: int, world_size: int = 1,
               baseline_epochs: int | None = None, drop_last: bool = True) -> RunLength:
    """The iterations `MultigridBatchSampler(schedule, dataset_size, batch_size, world_size=...)` deals,
    epoch by epoch; the baseline trains `baseline_epochs` (default: the schedule's baseline epochs,
    `schedule.cfg.max_epoch`) at the base batch."""
    per_rank = dataset_size // world_size
    epochs = []
    for epoch in range(schedule.max_epoch):
        sizes = slot_batches(schedule.stage_at(epoch), batch_size)
        iterations = count_batches(per_rank, sizes, drop_last)
        epochs.append(tuple(sizes[i % len(sizes)] * world_size for i in range(iterations)))
    if baseline_epochs is None:
        baseline_epochs = schedule.cfg.max_epoch
    baseline = baseline_iterations(baseline_epochs, dataset_size, batch_size, world_size)
    return RunLength(tuple(epochs), baseline)
