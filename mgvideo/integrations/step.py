"""What `mgvideo train` sets before each optimizer step, for any loop: the LR and the batch's BN groups.

Framework-free (torch, mgvideo.multigrid and the step context of engine/step.py only), shared by the
Lightning callback and the Accelerate recipe, so that both make exactly the trainer's calls
(engine/trainer.py, `train_epoch` and `train_step`).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from mgvideo.engine.step import step_plan
from mgvideo.multigrid.batchnorm import BNPlan, set_bn_groups
from mgvideo.multigrid.lr import LRConfig, lr_at, set_lr
from mgvideo.multigrid.sampler import MultigridBatchSampler, count_batches, iterations_per_epoch


def configure_step(model: nn.Module, optimizers: Iterable[torch.optim.Optimizer],
                   sampler: MultigridBatchSampler, lr_config: LRConfig, iteration: int, batch_size: int,
                   bn_base_size: int = 8) -> tuple[float, BNPlan]:
    """Set the LR of every optimizer and the BN groups of `model` for the `iteration`-th batch (0-based) of
    the sampler's current epoch, a batch of `batch_size` clips on this device; returns (LR, BN plan).

    As the trainer: the LR at the fractional epoch `epoch + iteration / iterations`, and BN groups from the
    stage's long-cycle batch (cross-device statistics when a device holds fewer clips than a group).
    """
    lr = lr_at(sampler.epoch + iteration / len(sampler), sampler.schedule, lr_config)
    for optimizer in optimizers:
        set_lr(optimizer, lr)
    plan = step_plan(batch_size, sampler.stage_batch, bn_base_size, sampler.world_size)
    set_bn_groups(model, plan)
    return lr, plan


def iteration_counts(sampler: MultigridBatchSampler) -> tuple[int, int]:
    """(iterations of the whole schedule, iterations of the baseline) on this sampler's data and devices,
    as the `iterations` and `baseline_iterations` of `mgvideo train`'s summary."""
    schedule, per_rank = sampler.schedule, sampler.dataset_size // sampler.world_size
    total = 0
    for epoch in range(schedule.max_epoch):
        sizes = [size for size, _ in schedule.shapes(schedule.stage_at(epoch), sampler.batch_size)]
        total += count_batches(per_rank, sizes, sampler.drop_last)
    baseline = schedule.cfg.max_epoch * iterations_per_epoch(sampler.dataset_size, sampler.batch_size,
                                                              sampler.world_size)
    return total, baseline
