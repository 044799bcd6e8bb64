"""The learning rate as a function of the fractional epoch: schedule policy, multigrid scaling and warmup."""

from __future__ import annotations

from dataclasses import dataclass

from mgvideo.errors import ConfigError
from mgvideo.multigrid.schedule import MultigridSchedule


@dataclass(frozen=True)
class LRConfig:
    """Base LR and linear warmup. Defaults: the Kinetics SlowFast 8x8 recipe (spec §1.5, §3)."""

    base_lr: float = 0.1
    warmup_epochs: float = 34.0
    warmup_start_lr: float = 0.01
    # The reference warms up over the same number of epochs whatever the schedule; True stretches the
    # warmup by the multigrid epoch stretch (max epoch / baseline max epoch).
    rescale_warmup: bool = False

    def __post_init__(self) -> None:
        if not self.base_lr > 0:
            raise ConfigError(f"base_lr: must be > 0 (got {self.base_lr!r})")
        if not self.warmup_epochs >= 0:
            raise ConfigError(f"warmup_epochs: must be >= 0 (got {self.warmup_epochs!r})")
        if not self.warmup_start_lr >= 0:
            raise ConfigError(f"warmup_start_lr: must be >= 0 (got {self.warmup_start_lr!r})")


def warmup_epochs(schedule: MultigridSchedule, cfg: LRConfig) -> float:
    """Warmup length in this schedule's epochs."""
    return cfg.warmup_epochs * (schedule.epoch_stretch if cfg.rescale_warmup else 1.0)


def lr_at(epoch: float, schedule: MultigridSchedule, cfg: LRConfig) -> float:
    """The LR to use at a fractional epoch (epoch + iteration / iterations per epoch).

    base LR × the schedule's relative LR (steps with the long-cycle batch multiplier, or cosine × that
    multiplier); during warmup, a straight line from `warmup_start_lr` at epoch 0 to the policy's LR at
    the end of warmup, as the reference. The short cycle never changes the LR.
    """
    lr = cfg.base_lr * schedule.relative_lr(epoch)
    warmup = warmup_epochs(schedule, cfg)
    if epoch < warmup:
        end = cfg.base_lr * schedule.relative_lr(warmup)
        lr = cfg.warmup_start_lr + epoch * (end - cfg.warmup_start_lr) / warmup
    return lr


def set_lr(optimizer, lr: float) -> None:
    """Write `lr` into every parameter group of a torch optimizer."""
    for group in optimizer.param_groups:
        group["lr"] = lr
