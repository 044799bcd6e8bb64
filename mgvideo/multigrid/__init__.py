"""The multigrid method as pieces for any PyTorch training loop: schedule, batch sampler, LR rule, BN."""

from mgvideo.multigrid.batchnorm import (
    BNPlan,
    SubBatchNorm3d,
    bn_groups_for,
    convert_model,
    set_bn_groups,
    sync_group,
)
from mgvideo.multigrid.fit import check_dataset_fits
from mgvideo.multigrid.iterations import RunLength, run_length, stage_iterations
from mgvideo.multigrid.lr import LRConfig, lr_at, set_lr
from mgvideo.multigrid.precise_bn import update_bn_stats
from mgvideo.multigrid.sampler import (
    FixedShapeBatchSampler,
    MultigridBatchSampler,
    count_batches,
    iterations_per_epoch,
)
from mgvideo.multigrid.schedule import ClipShape, MultigridConfig, MultigridSchedule, Slot, Stage

__all__ = [
    "BNPlan",
    "ClipShape",
    "FixedShapeBatchSampler",
    "LRConfig",
    "MultigridBatchSampler",
    "MultigridConfig",
    "MultigridSchedule",
    "RunLength",
    "Slot",
    "Stage",
    "SubBatchNorm3d",
    "bn_groups_for",
    "check_dataset_fits",
    "convert_model",
    "count_batches",
    "iterations_per_epoch",
    "lr_at",
    "run_length",
    "set_bn_groups",
    "set_lr",
    "stage_iterations",
    "sync_group",
    "update_bn_stats",
]
