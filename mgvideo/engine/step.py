"""One training step with no host sync: forward and backward under the run's precision, then the optimizer
step. Nothing here calls `.item()` or a collective; the loss and accuracy stay on the device (see
engine/window.py), so the host can queue the next step while the device works.

The step is two calls so that gradient accumulation is a loop around the first:
`for part in micro_batches: forward_backward(opt, part.clips, part.labels, 1 / len(micro_batches))`,
then `optimizer_step(opt)`.
"""

from __future__ import annotations

import contextlib
import warnings
from dataclasses import dataclass

import torch
from torch import nn

from mgvideo.multigrid.lr import LRConfig

# mkldnn.flags() (safe_kernels) also sets oneDNN's TF32 mode, which warns each time; registered once here.
warnings.filterwarnings("ignore", message="TF32 acceleration on top of oneDNN")


@dataclass
class Optimization:
    """What a step needs: the model training calls (DDP/compile-wrapped), the optimizer, the loss, the
    precision (autocast dtype and GradScaler, enabled for fp16 only) and the LR rule."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    loss_fn: nn.Module
    amp_dtype: torch.dtype | None
    lr: LRConfig
    clip_grad_norm: float = 0.0
    micro_batches: int = 1  # forward/backward passes per optimizer step (builders.device_plan)

    def autocast(self, device: torch.device) -> contextlib.AbstractContextManager:
        """The training autocast as a context; a no-op without AMP."""
        return autocast(device, self.amp_dtype)

    def kernels(self, device: torch.device) -> contextlib.AbstractContextManager:
        """Around forward and backward: see `safe_kernels`."""
        return safe_kernels(device, self.amp_dtype)


def autocast(device: torch.device, amp_dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    """Autocast to `amp_dtype` on `device`'s type; a no-op for None (fp32)."""
    if amp_dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=amp_dtype)


@contextlib.contextmanager
def precision(device: torch.device, amp_dtype: torch.dtype | None):
    """The training precision for a forward that is not a training step (precise BN, evaluation, the
    compile warm-up, profile): the same autocast and kernel guard as `forward_backward`."""
    with safe_kernels(device, amp_dtype), autocast(device, amp_dtype):
        yield


def safe_kernels(device: torch.device, amp_dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    """Around forward and backward: on the CPU under bf16, without oneDNN, whose bf16 conv3d weight gradient
    is intermittently NaN for a 1x1 input with padding, and which crashed channels-last runs (torch 2.13)."""
    if device.type == "cpu" and amp_dtype is not None:
        return torch.backends.mkldnn.flags(enabled=False)
    return contextlib.nullcontext()


def forward_backward(opt: Optimization, clips: torch.Tensor, labels: torch.Tensor,
                     scale: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward under autocast, loss in fp32, backward of `scale` x loss (gradients add up across calls).

    Returns the detached loss and the number of correct top-1 predictions, both still on the device.
    """
    with opt.kernels(clips.device):
        with opt.autocast(clips.device):
            logits = opt.model(clips)
        loss = opt.loss_fn(logits.float(), labels)
        opt.scaler.scale(loss * scale if scale != 1.0 else loss).backward()
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
