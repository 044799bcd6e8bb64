"""The learning rate as a function of the fractional epoch: schedule policy, multigrid scaling and warmup."""

from __future__ import annotations

from dataclasses import dataclass

from mgvideo.errors import ConfigError
from mgvideo.multigrid.schedule import MultigridSchedule

BATCH_SCALINGS = ("linear", "sqrt", "none")


@dataclass(frozen=True)
class LRConfig:
    """Base LR and linear warmup. Defaults: the Kinetics SlowFast 8x8 recipe (PySlowFast's
    SLOWFAST_8x8_R50_stepwise_multigrid: LR 0.1, 34 warmup epochs from 0.01); a shorter schedule needs its
    own `warmup_epochs` (`lr_at` refuses a warmup longer than the run)."""

    base_lr: float = 0.1
    warmup_epochs: float = 34.0
    warmup_start_lr: float = 0.01
    # The reference warms up over the same number of epochs whatever the schedule; True stretches the
    # warmup by the multigrid epoch stretch (max epoch / baseline max epoch).
    rescale_warmup: bool = False
    # How the LR follows the long cycle's batch multiplier B: 'linear' (×B, the reference), 'sqrt'
    # (×√B, the usual rule for adaptive optimizers such as AdamW) or 'none' (the LR ignores B).
    batch_scaling: str = "linear"

    def __post_init__(self) -> None:
        if not self.base_lr > 0:
            raise ConfigError(f"base_lr: must be > 0 (got {self.base_lr!r})")
        if not self.warmup_epochs >= 0:
            raise ConfigError(f"warmup_epochs: must be >= 0 (got {self.warmup_epochs!r})")
        if not self.warmup_start_lr >= 0:
            raise ConfigError(f"warmup_start_lr: must be >= 0 (got {self.warmup_start_lr!r})")
        if self.batch_scaling not in BATCH_SCALINGS:
            raise ConfigError(f"batch_scaling: must be one of {', '.join(BATCH_SCALINGS)} "
                              f"(got {self.batch_scaling!r})")


def warmup_epochs(schedule: MultigridSchedule, cfg: LRConfig) -> float:
    """Warmup length in this schedule's epochs."""
    return cfg.warmup_epochs * (schedule.epoch_stretch if cfg.rescale_warmup else 1.0)


def check_warmup_of(schedule: MultigridSchedule, cfg: LRConfig) -> None:
    """Raise ConfigError when the warmup outlasts the run: the whole run would be a slow ramp (often
    downward, from a start LR above the stepped-down LR), never reaching the schedule's LR."""
    warmup = warmup_epochs(schedule, cfg)
    if warmup > schedule.max_epoch:
        default = " (the default: the Kinetics recipe's)" if cfg.warmup_epochs == 34.0 else ""
        raise ConfigError(f"warmup_epochs: the warmup of {warmup:g} epochs{default} is longer than the "
                          f"{schedule.max_epoch}-epoch run; set it below {schedule.max_epoch} (0 for none)")


def policy_lr(epoch: float, schedule: MultigridSchedule, cfg: LRConfig) -> float:
    """The LR at a fractional epoch before warmup: base LR × the schedule's relative LR (steps with the
    long-cycle batch multiplier B, or cosine × B), with B replaced by √B under `batch_scaling='sqrt'` and
    by 1 under 'none'."""
    lr = cfg.base_lr * schedule.relative_lr(epoch)
    if cfg.batch_scaling != "linear":
        # The multiplier in force is the stage's: the fine-tuning stage shares the last stage's shape.
        factor = schedule.stage_at(epoch).batch_factor
        lr /= factor ** 0.5 if cfg.batch_scaling == "sqrt" else factor
    return lr


def lr_at(epoch: float, schedule: MultigridSchedule, cfg: LRConfig) -> float:
    """The LR to use at a fractional epoch (epoch + iteration / iterations per epoch).

    The policy's LR (`policy_lr`); during warmup, a straight line from `warmup_start_lr` at epoch 0 to
    the policy's LR at the end of warmup, as the reference. The short cycle never changes the LR.
    """
    lr = policy_lr(epoch, schedule, cfg)
    warmup = warmup_epochs(schedule, cfg)
    if warmup > schedule.max_epoch:
        check_warmup_of(schedule, cfg)
    if epoch < warmup:
        end = policy_lr(warmup, schedule, cfg)
        lr = cfg.warmup_start_lr + epoch * (end - cfg.warmup_start_lr) / warmup
    return lr


def set_lr(optimizer, lr: float) -> None:
    """Write `lr` into every parameter group of a torch optimizer, times the group's `lr_scale` if it has
    one (layer-wise LR decay, engine/optim.py)."""
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)
