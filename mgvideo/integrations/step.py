"""What `mgvideo train` sets before each optimizer step, for any loop: the LR and the batch's BN groups.

Framework-free (torch, mgvideo.multigrid and the step rule of engine/step.py only), shared by the
Lightning callback and the Accelerate recipe, so that both make exactly the trainer's calls
(`engine.step.step_settings`, then `apply_step_settings`).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from mgvideo.engine.step import StepSettings, apply_step_settings, step_settings
from mgvideo.multigrid.iterations import run_length
from mgvideo.multigrid.lr import LRConfig
from mgvideo.multigrid.sampler import MultigridBatchSampler
from mgvideo.multigrid.schedule import ClipShape


def configure_step(model: nn.Module, optimizers: Iterable[torch.optim.Optimizer],
                   sampler: MultigridBatchSampler, lr_config: LRConfig, iteration: int, batch_size: int,
                   bn_base_size: int = 8, shape: ClipShape | None = None) -> StepSettings:
    """Set the LR of every optimizer and the BN groups of `model` for the `iteration`-th batch (0-based) of
    the sampler's current epoch, a batch of `batch_size` clips on this device; returns the settings.

    `shape` is the batch's `ClipShape` where the batch carries it (mgvideo's collated `Batch.shape`);
    a plain `(clips, labels)` batch takes the stage shape of the sampler's epoch, which has the same stage
    and long-cycle batch.
    """
    if shape is None:
        shape = sampler.schedule.shapes(sampler.stage, sampler.batch_size)[-1][1]
    epoch = sampler.epoch + iteration / len(sampler)
    settings = step_settings(sampler.schedule, epoch, shape, batch_size, lr_config, bn_base_size,
                             sampler.world_size)
    apply_step_settings(settings, model, optimizers)
    return settings


def iteration_counts(sampler: MultigridBatchSampler) -> tuple[int, int]:
    """(iterations of the whole schedule, iterations of the baseline) on this sampler's data and devices,
    as the `iterations` and `baseline_iterations` of `mgvideo train`'s summary (multigrid/iterations.py)."""
    length = run_length(sampler.schedule, sampler.dataset_size, sampler.batch_size, sampler.world_size,
                        drop_last=sampler.drop_last)
    return length.total, length.baseline
