"""The tiny recipe that the Lightning and Accelerate examples train (configs/synthetic/tiny.yaml's schedule
and LR): random clips at the shape each batch asks for, and a one-conv network with sub-batch BN.
It imports no framework."""

from collections import Counter

import torch
from torch import nn
from torch.utils.data import Dataset

from mgvideo.integrations.step import iteration_counts
from mgvideo.multigrid import (
    LRConfig,
    MultigridBatchSampler,
    MultigridConfig,
    MultigridSchedule,
    convert_model,
)

SCHEDULE = MultigridSchedule(MultigridConfig(frames=8, crop=32, steps=(0, 4), max_epoch=5, sampling_rate=2))
LR = LRConfig(base_lr=0.05, warmup_epochs=0.5, warmup_start_lr=0.01)
CLIPS, GLOBAL_BATCH, BN_BASE_SIZE, CLASSES = 40, 2, 2, 4


class RandomClips(Dataset):
    """Stands in for a video dataset: the clip that `shape` asks for (noise seeded by the index)."""

    def __len__(self):
        return CLIPS

    def __getitem__(self, item):
        index, shape = item
        noise = torch.Generator().manual_seed(index)
        return torch.randn(3, shape.frames, shape.crop, shape.crop, generator=noise), index % CLASSES, index


def tiny_net() -> nn.Sequential:
    """Conv, BN, ReLU, pool, linear, its BatchNorm3d made sub-batch BN; seeded, the same in every process."""
    torch.manual_seed(0)
    return convert_model(nn.Sequential(
        nn.Conv3d(3, 8, 3, padding=1), nn.BatchNorm3d(8), nn.ReLU(),
        nn.AdaptiveAvgPool3d(1), nn.Flatten(), nn.Linear(8, CLASSES)))


def print_summary(sampler: MultigridBatchSampler, shapes: Counter) -> None:
    """The shapes trained on, (batch, T, S) -> iterations, and the iterations saved against the baseline."""
    ran, baseline = iteration_counts(sampler)
    listed = ", ".join(f"{b}x{t}x{s} ({n})" for (b, t, s), n in sorted(shapes.items()))
    print(f"trained on (batch x T x S per device, iterations): {listed}")
    print(f"{ran} iterations against the baseline's {baseline} ({baseline / ran:.2f}x fewer)")
