"""Progressive resizing as a schedule (FFCV's ResNet recipes, composer's ProgressiveResizing): the crop
grows from coarse to fine over the run at a fixed batch, and the LR schedule is the baseline's.

Pure Python (no torch), like schedule.py. It shares the sampler, sub-batch BN and LR rule with multigrid:
only the stages differ. The saving comes from cheaper iterations, not from fewer of them.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from mgvideo.errors import ScheduleError
from mgvideo.multigrid.schedule import (
    MultigridConfig,
    MultigridSchedule,
    Slot,
    Stage,
    round_to_multiple,
)


@dataclass(frozen=True)
class ProgressiveConfig:
    """The ramp. Defaults follow composer: scale 0.5 at the start, full size for the last 20 %."""

    start_scale: float = 0.5  # first crop, relative to the full crop
    ramp_end: float = 0.8  # fraction of the run at which the full crop is reached (and kept)
    crop_step: int = 8  # crops are multiples of this (FFCV rounds to 32 px at 224), so stages stay few

    def __post_init__(self) -> None:
        if not 0 < self.start_scale <= 1:
            raise ScheduleError(f"progressive start_scale: must be in (0, 1] (got {self.start_scale!r})")
        if not 0 < self.ramp_end <= 1:
            raise ScheduleError(f"progressive ramp_end: must be in (0, 1] (got {self.ramp_end!r})")
        if not isinstance(self.crop_step, int) or self.crop_step < 1:
            raise ScheduleError(f"progressive crop_step: must be a positive integer (got {self.crop_step!r})")


class ProgressiveSchedule(MultigridSchedule):
    """The baseline's epochs, steps and LRs, with epoch e trained at crop S·s(e), where s rises linearly
    from `start_scale` at epoch 0 to 1 at `ramp_end` of the run. Consecutive epochs of one crop form one
    stage (its end gets precise BN, as every stage). Frames, batch and the LR never change.
    """

    def __init__(self, cfg: MultigridConfig, ramp: ProgressiveConfig | None = None) -> None:
        # The baseline's one-stage schedule gives the validated epochs, steps and LRs to keep.
        # Smaller crops keep the full view at a lower resolution, as a resize does (FFCV, composer).
        super().__init__(replace(cfg, long_cycle=False, short_cycle=False, scale_jitter="same_view"))
        self.ramp = ramp or ProgressiveConfig()
        crops = [self._crop(epoch) for epoch in range(self.max_epoch)]
        stages: list[Stage] = []
        start = 0
        for epoch in range(1, self.max_epoch + 1):
            if epoch == self.max_epoch or crops[epoch] != crops[start]:
                stages.append(Stage(len(stages), 0, 1, cfg.frames, crops[start], start, epoch,
                                    (Slot(1, cfg.frames, crops[start]),)))
                start = epoch
        self.stages = tuple(replace(s, lr_step=self.step_index(s.start_epoch)) for s in stages)
        self.iteration_saving = 1.0

    def _crop(self, epoch: int) -> int:
        """The crop of one epoch: the ramp's scale at the epoch's start, rounded to the crop step."""
        full = self.cfg.crop
        progress = min(epoch / (self.ramp.ramp_end * self.max_epoch), 1.0)
        scale = self.ramp.start_scale + (1.0 - self.ramp.start_scale) * progress
        step = max(self.ramp.crop_step, self.cfg.shape_multiple[1])
        return min(full, round_to_multiple(full * scale, step)) if scale < 1 else full
