"""Batch norm over groups of clips, as multigrid needs it (precise BN is in ``precise_bn.py``).

Multigrid keeps the number of clips that share BN statistics near ``bn_base_size`` (8) while the batch
grows and shrinks with the clip shape. ``SubBatchNorm3d`` is a ``BatchNorm3d`` (same state dict) whose
training-mode forward normalises each of ``groups`` groups of this device's batch with its own statistics,
or pools statistics over ``sync_size`` ranks when a device holds fewer clips than a group.

Per iteration the trainer calls ``plan = bn_groups_for(...)`` (pure) and ``set_bn_groups(model, plan)``
(sets two ints per module; process groups are created once and cached).

Running statistics. The reference (PySlowFast ``SubBatchNorm3d``) keeps one running mean/var per split and
folds them with ``aggregate_stats`` at the end of every epoch: mean of the split running means, and mean
of the split running vars plus the variance of the split running means. Our group count changes from one
iteration to the next, so we keep only ``BatchNorm3d``'s buffers and fold at every step instead: a training
forward updates them (same momentum rule as ``BatchNorm3d``) with

    mean = mean_j(m_j)        var = (mean_j(s_j) + var_j(m_j)) * n / (n - 1)

where m_j, s_j are the mean and biased variance of group j, and n the batch's values per channel. With
equal groups this is, by the law of total variance, exactly what ``BatchNorm3d`` would record for the whole
batch. It is the reference's formula applied per batch rather than to the running averages. The two differ
in the between-group term: the reference takes the spread of the split *running* means, which the moving
average shrinks (to about momentum / (2 - momentum) of the per-batch spread, ~5% at 0.1), so its eval
variance is nearly the within-group one, below ours by most of the variance of group means. The reference
also corrects each split's variance for bias (n_g / (n_g - 1)) where we correct the total (n / (n - 1)).
Precise BN (``precise_bn.update_bn_stats``) replaces the buffers with exact population statistics either way.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from mgvideo.errors import ConfigError


def _check_positive(value: object, field: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{field} must be a positive integer, got {value!r}")


def _largest_divisor_at_most(n: int, limit: int) -> int:
    return max(d for d in range(1, min(n, limit) + 1) if n % d == 0)


@dataclass(frozen=True)
class BNPlan:
    """How training-mode BN groups clips in one iteration.

    ``groups`` > 1 splits this device's batch into that many equal groups, clip i going to group
    i % groups (the reference's split). ``sync_size`` > 1 pools statistics over that many consecutive
    ranks instead. Both 1 is plain BN.
    """

    groups: int = 1
    sync_size: int = 1

    def __post_init__(self) -> None:
        _check_positive(self.groups, "BNPlan.groups")
        _check_positive(self.sync_size, "BNPlan.sync_size")
        if self.groups > 1 and self.sync_size > 1:
            raise ConfigError(
                f"BNPlan: groups={self.groups} and sync_size={self.sync_size} cannot both be above 1")

    @property
    def plain(self) -> bool:
        """True when the plan is ordinary per-device batch norm."""
        return self.groups == 1 and self.sync_size == 1


def bn_groups_for(
    batch: int,
    stage_batch: int,
    bn_base_size: int = 8,
    world_size: int = 1,
    fixed_group_size: bool = False,
) -> BNPlan:
    """Decide how BN groups this device's ``batch`` clips (pure; identical on every rank).

    By default the group count follows the stage's long-cycle batch, as the reference does:
    ``stage_batch // bn_base_size`` local groups (so a short-cycle batch 2-4x larger puts 2-4x more clips in
    each group), or, when ``stage_batch < bn_base_size``, statistics pooled over ``bn_base_size //
    stage_batch`` ranks. With ``fixed_group_size`` the same rule is applied to ``batch`` instead, so groups
    stay near ``bn_base_size`` clips in short-cycle iterations too.

    Fallbacks (documented, never silent crashes): a ``batch`` the group count does not divide (a last,
    partial batch) is split into the largest number of equal groups not above it; a sync size that does not
    divide ``world_size`` becomes its largest divisor not above it (1 on a single device: plain BN).
    In sync mode every rank must pass the same arguments, or the ranks' collectives will not match.
    """
    for value, field in ((batch, "batch"), (stage_batch, "stage_batch"), (bn_base_size, "bn_base_size"),
                         (world_size, "world_size")):
        _check_positive(value, field)
    clips = batch if fixed_group_size else stage_batch
    if clips >= bn_base_size:
        return BNPlan(groups=_largest_divisor_at_most(batch, clips // bn_base_size))
    return BNPlan(sync_size=_largest_divisor_at_most(world_size, bn_base_size // clips))


# The BN sync groups of the live default process group, by size. `release_sync_groups` empties it before
# the default group is destroyed: a cached group would keep its gloo/NCCL state alive past
# destroy_process_group (an abort at interpreter exit), and would be stale for the next default group.
_SYNC_GROUPS: dict[int, dist.ProcessGroup] = {}
_SYNC_OWNER: list[weakref.ref] = []  # the default group the cached ones were made under


def sync_group(size: int) -> dist.ProcessGroup:
    """The process group of ``size`` consecutive ranks that holds this rank, created once per default
    process group and cached.

    The first call for a given size is collective: every rank must make it, in the same order, because
    ``new_group`` is called on every rank for every block of ranks.
    """
    if not (dist.is_available() and dist.is_initialized()):
        raise ConfigError(f"cross-device BN over {size} ranks needs torch.distributed to be initialised")
    world_group = dist.group.WORLD
    if not _SYNC_OWNER or _SYNC_OWNER[0]() is not world_group:  # a new default group: start afresh
        release_sync_groups()
        _SYNC_OWNER.append(weakref.ref(world_group))
    world, rank = dist.get_world_size(), dist.get_rank()
    if size not in _SYNC_GROUPS:
        if world % size:
            raise ConfigError(f"BN sync_size={size} does not divide world_size={world}")
        if size == world:
            _SYNC_GROUPS[size] = world_group
        else:
            for start in range(0, world, size):
                group = dist.new_group(list(range(start, start + size)))
                if start <= rank < start + size:
                    _SYNC_GROUPS[size] = group
    return _SYNC_GROUPS[size]


def release_sync_groups() -> None:
    """Forget the cached BN sync groups; call it before ``dist.destroy_process_group`` (then gc.collect())."""
    _SYNC_GROUPS.clear()
    _SYNC_OWNER.clear()


class _AllReduceSum(torch.autograd.Function):
    """Sum over the BN sync group of ``size`` ranks; the gradient of every rank's input is the summed
    output gradient. The graph keeps the size, not the group, so no graph keeps a group alive."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor, size: int) -> torch.Tensor:
        ctx.size = size
        out = tensor.clone()
        dist.all_reduce(out, group=sync_group(size))
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        grad = grad.clone()
        dist.all_reduce(grad, group=sync_group(ctx.size))
        return grad, None


class _GroupBatchNorm(torch.autograd.Function):
    """Batch norm of (N, C, ...) with statistics per (group, channel), clip i in group i % k, for input
    that is not contiguous (channels-last), where merging groups into channels is not a view. Nothing
    full-size is copied: per-clip sums (fast reductions over T x H x W), folded per group, and elementwise
    ops over the (N/k, k, C, ...) view, which splitting the batch dimension makes in any layout. Sums and
    per-channel factors are fp32 for reduced-precision input, as ``batch_norm``'s are. Returns the output
    and the per-group mean and biased variance, each (1, k, C, 1, 1, 1)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, k: int, weight: torch.Tensor | None, bias: torch.Tensor | None,
                eps: float):
        x6 = _grouped(x, k)
        acc = torch.float64 if x.dtype == torch.float64 else torch.float32
        count = x.numel() // (k * x.shape[1])
        mean = _group_sum(x.sum(_SPACE, dtype=acc), k) / count
        square = _group_sum(torch.linalg.vector_norm(x, 2, _SPACE, dtype=acc).square_(), k) / count
        var = (square - mean * mean).clamp_min_(0)
        invstd = torch.rsqrt(var + eps)
        scale = invstd if weight is None else invstd * weight.view(_CHANNEL)
        shift = -mean * scale
        if bias is not None:
            shift = shift + bias.view(_CHANNEL)
        if _compiling():  # the compiler fuses the cast; out= would lose the layout
            y = torch.addcmul(shift, x6, scale).to(x.dtype).view(x.shape)
        else:  # computed in fp32, written in x's dtype and layout (channels-last stays so)
            y = torch.empty_like(x)
            torch.addcmul(shift, x6, scale, out=_grouped(y, k))
        ctx.k, ctx.bias_dtype = k, None if bias is None else bias.dtype
        ctx.save_for_backward(x, mean, invstd, weight)
        ctx.mark_non_differentiable(mean, var)
        return y, mean, var

    @staticmethod
    def backward(ctx, grad: torch.Tensor, *_):
        x, mean, invstd, weight = ctx.saved_tensors
        k, acc = ctx.k, mean.dtype
        count = x.numel() // (k * x.shape[1])
        centred = _grouped(x, k) - mean.to(x.dtype)  # in x's dtype: sum(dy * (x - mean)) cannot cancel
        grad6 = _grouped(grad, k)
        sum_grad = _group_sum(grad.sum(_SPACE, dtype=acc), k)
        dot = _group_sum((grad6 * centred).view(x.shape).sum(_SPACE, dtype=acc), k)
        dx = dw = db = None
        if ctx.needs_input_grad[0]:  # dx = a * dy + b * (x - mean) + c, per (group, channel)
            a = invstd if weight is None else invstd * weight.view(_CHANNEL)
            b = -a * invstd * invstd * dot / count
            c = -a * sum_grad / count
            dx = torch.addcmul(c, centred, b, out=centred).addcmul_(grad6, a).view(x.shape)
        if ctx.needs_input_grad[2]:
            dw = (dot * invstd).sum((0, 1)).flatten().to(weight.dtype)
        if ctx.needs_input_grad[3]:
            db = sum_grad.sum((0, 1)).flatten().to(ctx.bias_dtype)
        return dx, None, dw, db, None


_SPACE = (2, 3, 4)  # T, H, W of (N, C, T, H, W)
_CHANNEL = (1, 1, -1, 1, 1, 1)  # a per-channel vector against the (N/k, k, C, T, H, W) view


def _compiling() -> bool:
    """Whether torch.compile is tracing this call (torch.compiler.is_compiling, 2.3+)."""
    compiler = getattr(torch, "compiler", None)
    return bool(compiler is not None and hasattr(compiler, "is_compiling") and compiler.is_compiling())


def _grouped(x: torch.Tensor, k: int) -> torch.Tensor:
    """(N, C, ...) as (N/k, k, C, ...): clip i at [i // k, i % k]; a view in any memory format."""
    return x.view(x.shape[0] // k, k, *x.shape[1:])


def _group_sum(per_clip: torch.Tensor, k: int) -> torch.Tensor:
    """Per-clip (N, C) sums folded into per-group (1, k, C, 1, 1, 1) sums."""
    return _grouped(per_clip, k).sum(0, keepdim=True)[..., None, None, None]


class SubBatchNorm3d(nn.BatchNorm3d):
    """``BatchNorm3d`` that, in training, normalises groups of clips (or pools ranks) with their own stats.

    ``groups`` and ``sync_size`` are plain attributes (set them with ``set_bn_groups``), not state, so the
    state dict is ``BatchNorm3d``'s and checkpoints load either way. Eval mode is plain ``BatchNorm3d``.
    """

    def __init__(self, num_features: int, *args, bn_base_size: int = 8, **kwargs) -> None:
        super().__init__(num_features, *args, **kwargs)
        self.bn_base_size = bn_base_size  # recorded for repr; the plan carries the grouping
        self.groups = 1
        self.sync_size = 1

    @classmethod
    def from_batchnorm(cls, bn: nn.BatchNorm3d, bn_base_size: int = 8) -> SubBatchNorm3d:
        """Wrap ``bn``'s own parameter and buffer tensors, so optimisers holding them keep working."""
        new = cls(bn.num_features, bn.eps, bn.momentum, bn.affine, bn.track_running_stats,
                  device="meta", bn_base_size=bn_base_size)
        for name, param in bn.named_parameters(recurse=False):
            setattr(new, name, param)
        for name, buf in bn.named_buffers(recurse=False):
            setattr(new, name, buf)
        return new.train(bn.training)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, groups={self.groups}, sync_size={self.sync_size}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or (self.groups == 1 and self.sync_size == 1):
            return super().forward(x)
        self._check_input_dim(x)
        factor = self._update_factor()
        if self.sync_size > 1:
            return self._forward_sync(x, factor)
        return self._forward_groups(x, factor)

    def _update_factor(self) -> float | None:
        """BatchNorm's running-average weight for this step; None when no running stats are kept."""
        if not self.track_running_stats or self.running_mean is None:
            return None
        self.num_batches_tracked.add_(1)
        return 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum

    def _forward_groups(self, x: torch.Tensor, factor: float | None) -> torch.Tensor:
        k, (n, c) = self.groups, x.shape[:2]
        if n % k:
            raise ConfigError(
                f"SubBatchNorm3d: a batch of {n} clips cannot be split into {k} equal BN groups; plan the "
                "groups with bn_groups_for() (it falls back to a divisor of the batch)")
        if x.is_contiguous():  # (N, C, ...) as (N/k, k*C, ...) is a view: one fused batch_norm call
            return self._forward_reshaped(x, factor)
        y, mean, var = _GroupBatchNorm.apply(x, k, self.weight, self.bias, self.eps)
        if factor is not None:
            self._update_running(mean.view(k, c), var.view(k, c), x.numel() // c, factor)
        return y

    def _forward_reshaped(self, x: torch.Tensor, factor: float | None) -> torch.Tensor:
        k, (n, c) = self.groups, x.shape[:2]
        mean = var = None
        if factor is not None:  # momentum 1 makes batch_norm leave each group's stats in these buffers
            mean = torch.zeros(c * k, device=x.device, dtype=self.running_mean.dtype)
            var = torch.ones(c * k, device=x.device, dtype=self.running_var.dtype)
        # Viewing (N, C, ...) as (N/k, k*C, ...) puts clip i's channels in block i % k.
        weight = None if self.weight is None else self.weight.repeat(k)
        bias = None if self.bias is None else self.bias.repeat(k)
        y = F.batch_norm(x.view(n // k, c * k, *x.shape[2:]), mean, var, weight, bias, True, 1.0, self.eps)
        if factor is not None:
            per_group = x.numel() // (c * k)
            self._update_running(mean.view(k, c), var.view(k, c) * ((per_group - 1) / per_group),
                                 per_group * k, factor)
        return y.view(x.shape)

    def _forward_sync(self, x: torch.Tensor, factor: float | None) -> torch.Tensor:
        c = x.shape[1]
        dims = [0, *range(2, x.dim())]
        xs = x if x.dtype in (torch.float32, torch.float64) else x.float()
        local_var, local_mean = torch.var_mean(xs, dim=dims, correction=0)
        count = local_mean.new_full((1,), x.numel() // c)
        # Sums of x and x^2 (and the count) over the group; the reduction is differentiable.
        sums = torch.cat([local_mean * count, (local_var + local_mean * local_mean) * count, count])
        sums = _AllReduceSum.apply(sums, self.sync_size)
        total = sums[-1]
        mean = sums[:c] / total
        var = (sums[c:2 * c] / total - mean * mean).clamp_min(0)
        scale = torch.rsqrt(var + self.eps)
        if self.weight is not None:
            scale = scale * self.weight
        shift = -mean * scale
        if self.bias is not None:
            shift = shift + self.bias
        shape = (1, c) + (1,) * (x.dim() - 2)
        y = torch.addcmul(shift.view(shape), x, scale.view(shape)).to(x.dtype)
        if factor is not None:
            self._update_running(mean.detach()[None], var.detach()[None], total.detach(), factor)
        return y

    @torch.no_grad()
    def _update_running(self, means: torch.Tensor, variances: torch.Tensor, count, factor: float) -> None:
        """Fold per-group (k, C) means and biased variances into the buffers (law of total variance)."""
        mean = means.mean(0)
        var = (variances.mean(0) + means.var(0, correction=0)) * (count / (count - 1))
        self.running_mean.lerp_(mean.to(self.running_mean.dtype), factor)
        self.running_var.lerp_(var.to(self.running_var.dtype), factor)


def convert_model(model: nn.Module, bn_base_size: int = 8) -> nn.Module:
    """Swap every ``nn.BatchNorm3d`` in ``model`` for a ``SubBatchNorm3d`` sharing its weights and stats.

    Works in place and returns the model (or the replacement, if ``model`` itself is a ``BatchNorm3d``).
    New modules start as plain BN; ``set_bn_groups`` turns grouping on.
    """
    _check_positive(bn_base_size, "bn_base_size")
    if type(model) is nn.BatchNorm3d:
        return SubBatchNorm3d.from_batchnorm(model, bn_base_size)
    for name, child in model.named_children():
        new = convert_model(child, bn_base_size)
        if new is not child:
            setattr(model, name, new)
    return model


def has_batchnorm(model: nn.Module) -> bool:
    """Whether ``model`` has any BN layer (a transformer has none: no sub-batch BN, no precise BN)."""
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


def set_bn_groups(model: nn.Module, plan: BNPlan) -> int:
    """Apply ``plan`` to every ``SubBatchNorm3d`` in ``model``; returns how many modules it set.

    Cheap enough to call every iteration; a model without BN layers is left alone. A sync plan's process
    group is created at its first use, so that call must happen on every rank.
    """
    count = 0
    groups, sync_size = plan.groups, plan.sync_size
    for module in model.modules():
        if isinstance(module, SubBatchNorm3d):
            if module.groups != groups or module.sync_size != sync_size:  # Module.__setattr__ is slow
                module.groups, module.sync_size = groups, sync_size
            count += 1
    if count == 0 and not plan.plain and has_batchnorm(model):
        raise ConfigError(f"set_bn_groups: the model has no SubBatchNorm3d to apply {plan} to; "
                          "call convert_model(model) first")
    if count and sync_size > 1:  # every rank holds the same model, so every rank gets here
        sync_group(sync_size)
    return count
