"""The step context every forward of a run shares, and one training step with no host sync.

The step context is two decisions, each defined once here: `bn_plan`, the BN groups of a forward, and
`precision`, the autocast and kernels it runs under (`backward` takes the same kernels). `step_settings` is
the step rule: a step's LR and BN plan from the schedule, the fractional epoch and the batch's shape; our
trainer, the Lightning callback and the Accelerate recipe all call it. Training, precise
BN, evaluation, the compile warm-up and `mgvideo profile` all call them, so the warm-up passes exactly the
compile guards that training meets.

A step is forward and backward, then the optimizer step. Nothing here calls `.item()` or a collective; the
loss and accuracy stay on the device (see engine/window.py), so the host can queue the next step while the
device works. The step is two calls so that a step of several passes (`solver.accumulate`, or a memory
limit, `solver.max_clips_per_pass`) is a loop around the first:
`for part in passes: forward_backward(opt, part.clips, part.labels, 1 / len(passes))`, then
`optimizer_step(opt)`. A device holding several recipe devices' clips takes them in one pass.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import torch
from torch import nn

from mgvideo.multigrid.batchnorm import BNPlan, bn_groups_for, set_bn_groups
from mgvideo.multigrid.lr import LRConfig, lr_at, set_lr
from mgvideo.multigrid.schedule import ClipShape, MultigridSchedule

# mkldnn.flags() (safe_kernels) also sets oneDNN's TF32 mode, which warns each time; registered once here.
warnings.filterwarnings("ignore", message="TF32 acceleration on top of oneDNN")


@dataclass
class Optimization:
    """What a step needs: the model training calls (`wrapped`: DDP/compile around the run's model), the
    optimizer, the loss, the precision (autocast dtype and GradScaler, enabled for fp16 only) and the LR
    rule."""

    wrapped: nn.Module
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    loss_fn: nn.Module
    amp_dtype: torch.dtype | None
    lr_rule: LRConfig
    clip_grad_norm: float = 0.0
    micro_batches: int = 1  # forward/backward passes per optimizer step (device.device_plan; 1 in general)


def bn_plan(batch: int, stage_batch: int, bn_base_size: int, world_size: int = 1,
              micro_batches: int = 1) -> BNPlan:
    """The BN groups of each forward of a step of `batch` clips on one device, in a stage whose long-cycle
    batch is `stage_batch` (per device): `stage_batch // bn_base_size` groups, so one pass of the clips of
    8 recipe devices holding 8 clips each gets 8 groups of 8, as they would. With k `micro_batches` a
    forward holds every k-th clip and gets the groups a device holding only those would get, as on k times
    more devices; where k divides the group count, group j of pass i is group i + j·k of the single pass
    (which puts clip c in group c mod groups), so the passes normalise exactly as the single pass."""
    k = micro_batches
    return bn_groups_for(batch // k, stage_batch // k, bn_base_size, world_size)


@dataclass(frozen=True)
class StepSettings:
    """What a training step sets before its forward: the LR and the BN groups of each forward pass."""

    lr: float
    bn: BNPlan


def step_settings(schedule: MultigridSchedule, epoch: float, shape: ClipShape, batch: int, lr_rule: LRConfig,
                  bn_base_size: int, world_size: int = 1, micro_batches: int = 1) -> StepSettings:
    """The step rule: the LR at the fractional `epoch` (multigrid/lr.py), and the BN groups of a step of
    `batch` clips on one device dealt at `shape` (its stage's long-cycle batch, `shape.stage_batch`)."""
    return StepSettings(lr_at(epoch, schedule, lr_rule),
                        bn_plan(batch, shape.stage_batch, bn_base_size, world_size, micro_batches))


def apply_step_settings(settings: StepSettings, model: nn.Module, optimizers: Iterable[torch.optim.Optimizer],
                        ) -> None:
    """Write the step's LR into every optimizer and its BN groups into `model` (a no-op without BN)."""
    for optimizer in optimizers:
        set_lr(optimizer, settings.lr)
    set_bn_groups(model, settings.bn)


@contextlib.contextmanager
def precision(device: torch.device, amp_dtype: torch.dtype | None) -> Iterator[None]:
    """Around every forward: autocast to `amp_dtype` on `device`'s type (none for fp32), on `safe_kernels`."""
    autocast = contextlib.nullcontext() if amp_dtype is None else torch.autocast(device.type, dtype=amp_dtype)
    with safe_kernels(device, amp_dtype), autocast:
        yield


def backward(loss: torch.Tensor, device: torch.device, amp_dtype: torch.dtype | None) -> None:
    """`loss.backward()` on the kernels its forward ran on, outside autocast (as torch advises)."""
    with safe_kernels(device, amp_dtype):
        loss.backward()


def safe_kernels(device: torch.device, amp_dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    """On the CPU under bf16, no oneDNN: its bf16 conv3d weight gradient is intermittently NaN for a 1x1
    input with padding, and it crashed channels-last runs (torch 2.13)."""
    if device.type == "cpu" and amp_dtype is not None:
        return torch.backends.mkldnn.flags(enabled=False)
    return contextlib.nullcontext()


def forward_backward(opt: Optimization, clips: torch.Tensor, labels: torch.Tensor,
                     scale: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward under the run's `precision`, loss in fp32, backward of `scale` x loss (gradients add up
    across calls).

    Returns the detached loss and the number of correct top-1 predictions, both still on the device.
    """
    with precision(clips.device, opt.amp_dtype):
        logits = opt.wrapped(clips)
    loss = opt.loss_fn(logits.float(), labels)
    backward(opt.scaler.scale(loss * scale if scale != 1.0 else loss), clips.device, opt.amp_dtype)
    with torch.no_grad():
        correct = _correct(logits, labels)
    return loss.detach(), correct


def gradient_sync(model: nn.Module, sync: bool) -> contextlib.AbstractContextManager:
    """Around one micro-batch's backward: DDP all-reduces the gradients only when `sync` (the last one)."""
    ddp = getattr(model, "_orig_mod", model)  # torch.compile's wrapper holds the DDP module
    if sync or not isinstance(ddp, nn.parallel.DistributedDataParallel):
        return contextlib.nullcontext()
    return ddp.no_sync()


def optimizer_step(opt: Optimization) -> None:
    """Unscale (fp16), clip if asked, step, update the scaler and clear the gradients."""
    if opt.clip_grad_norm > 0:
        opt.scaler.unscale_(opt.optimizer)
        params = [p for group in opt.optimizer.param_groups for p in group["params"]]
        torch.nn.utils.clip_grad_norm_(params, opt.clip_grad_norm)
    opt.scaler.step(opt.optimizer)  # skips the step (no sync here) when fp16 gradients overflowed
    opt.scaler.update()
    opt.optimizer.zero_grad(set_to_none=True)


def _correct(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Top-1 hits as a float tensor; multi-label targets (float) count the argmax landing on a positive."""
    top = logits.argmax(dim=1)
    if labels.is_floating_point():
        return labels.gather(1, top[:, None]).gt(0).sum().float()
    return (top == labels).sum().float()
