"""Precise BN: replace every BN layer's running statistics with the exact statistics of training batches.

Separate from sub-batch BN (``batchnorm.py``): it works on any model with ``_BatchNorm`` layers, and it
runs in whatever grouping the model is set to, so it computes the statistics that training normalised with.
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import partial

import torch
import torch.distributed as dist
from torch import nn

from mgvideo.errors import ConfigError
from mgvideo.multigrid.batchnorm import _check_positive

__all__ = ["update_bn_stats"]


class _Moments:
    """Exact per-channel count, mean and sum of squared deviations, merged batch by batch (Chan et al.)."""

    def __init__(self, channels: int, device: torch.device) -> None:
        self.count = 0.0
        self.mean = torch.zeros(channels, dtype=torch.float64, device=device)
        self.m2 = torch.zeros_like(self.mean)

    def add(self, x: torch.Tensor) -> None:
        dims = [0, *range(2, x.dim())]
        var, mean = torch.var_mean(x.float(), dim=dims, correction=0)
        n = x.numel() / x.shape[1]
        mean, m2 = mean.double(), var.double() * n
        delta, total = mean - self.mean, self.count + n
        self.mean = self.mean + delta * (n / total)
        self.m2 = self.m2 + m2 + delta * delta * (self.count * n / total)
        self.count = total

    def all_reduce(self) -> None:
        """Merge every rank's moments into the moments of all ranks' values together (collective)."""
        sums = torch.cat([self.mean.new_full((1,), self.count), self.mean * self.count])
        dist.all_reduce(sums)
        total = float(sums[0])
        mean = sums[1:] / max(total, 1.0)
        m2 = self.m2 + self.count * (self.mean - mean) ** 2
        dist.all_reduce(m2)
        self.count, self.mean, self.m2 = total, mean, m2


def _record_input(moments: _Moments, module: nn.Module, inputs: tuple) -> None:
    moments.add(inputs[0].detach())


@torch.no_grad()
def update_bn_stats(
    model: nn.Module,
    batches: Iterable,
    num_batches: int = 200,
    *,
    average_across_ranks: bool = False,
) -> int:
    """Precise BN: set every BN layer's running mean/var to the exact statistics of what it saw.

    Runs the model in training mode (so each layer normalises in whatever grouping the model is set to,
    as in training) over up to ``num_batches`` items of ``batches``, each a ready model input, and gives
    every BN layer the mean and unbiased variance of all its input values over those batches, whatever
    their sizes. fvcore's ``update_bn_stats`` (the reference) averages per-batch variances instead, which
    leaves out the spread of the batch means. Only ``running_mean`` and ``running_var`` change. Returns
    the number of batches used.

    ``average_across_ranks`` merges the statistics of all ranks (a collective: every rank must call it);
    the reference keeps each rank's own and checkpoints rank 0's.
    """
    _check_positive(num_batches, "num_batches")
    layers = [m for m in model.modules()
              if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    moments = [_Moments(m.num_features, m.running_mean.device) for m in layers]
    tracked = [m.num_batches_tracked.clone() for m in layers]
    hooks = [m.register_forward_pre_hook(partial(_record_input, s)) for m, s in zip(layers, moments)]
    was_training = model.training
    model.train()
    used = 0
    try:
        for _, inputs in zip(range(num_batches), batches):  # range first: no extra batch is drawn
            model(inputs)
            used += 1
    finally:
        for hook in hooks:
            hook.remove()
        model.train(was_training)
    if used == 0:
        raise ConfigError("update_bn_stats: `batches` yielded no batch to compute BN statistics from")
    for layer, stats, n in zip(layers, moments, tracked):
        if average_across_ranks:
            stats.all_reduce()
        if stats.count:
            layer.running_mean.copy_(stats.mean)
            layer.running_var.copy_(stats.m2 / max(stats.count - 1, 1))
        layer.num_batches_tracked.copy_(n)
    return used
