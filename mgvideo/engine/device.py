"""The devices a run trains on: which device, its backend settings, the autocast dtype, and how the recipe's
global batch and LR map onto the devices that run (`device_plan`)."""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch

from mgvideo.config import Config
from mgvideo.errors import ConfigError


def select_device(name: str) -> torch.device:
    """cpu, cuda, or auto (cuda when available)."""
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("train.device: cuda was asked for but torch sees no CUDA device")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


def autocast_dtype(cfg: Config, device: torch.device) -> torch.dtype | None:
    """The AMP dtype, or None. `auto`: bf16 on a CUDA device that supports it, none elsewhere; `bf16` also
    runs on the CPU (so tests exercise autocast); `fp16` needs CUDA."""
    amp = cfg.train.amp
    if amp == "auto":
        return torch.bfloat16 if device.type == "cuda" and torch.cuda.is_bf16_supported() else None
    if amp == "none":
        return None
    if amp == "fp16" and device.type != "cuda":
        raise ConfigError(f"train.amp=fp16 needs a CUDA device (this run is on {device.type}); "
                          "use train.amp=bf16 or none")
    return torch.bfloat16 if amp == "bf16" else torch.float16


def configure_device(device: torch.device) -> None:
    """Per-process backend settings on CUDA: cuDNN picks the fastest kernel per shape (a run has 10-30
    shapes), and fp32 matmuls and convolutions (what autocast leaves in fp32, and runs without AMP) use
    TF32 tensor cores (`enable_tf32`)."""
    if device.type != "cuda":
        return
    torch.backends.cudnn.benchmark = True
    enable_tf32()


def enable_tf32() -> None:
    """fp32 matmuls (cuBLAS) and convolutions (cuDNN) on TF32, readable as TF32 through both of torch's
    precision APIs: the legacy flags (`get_float32_matmul_precision`, `matmul.allow_tf32`, which Inductor
    and Lightning read) and the per-backend `fp32_precision` (torch 2.9+).

    Torch keeps the two records apart and raises when a legacy flag is read while they disagree; setting
    only `fp32_precision` leaves the legacy matmul precision at "highest". The legacy setters write both
    records, so they are the ones used. Needs no GPU: the flags are process-wide settings.
    """
    with warnings.catch_warnings():  # torch 2.9-2.10 warn once that the legacy setters will be deprecated
        warnings.filterwarnings("ignore", message="Please use the new API settings")
        torch.set_float32_matmul_precision("high")  # legacy "high"; cuda and mkldnn matmul "tf32"
        torch.backends.cudnn.allow_tf32 = True  # cuDNN convolutions and RNNs "tf32"


@dataclass(frozen=True)
class DevicePlan:
    """How a recipe's global batch and LR map onto the devices that run (see `device_plan`)."""

    devices: int
    recipe_devices: int  # what the recipe's batch and LR are for (0: any)
    batch: int  # long-cycle base clips per device per optimizer step (what the sampler deals)
    micro_batches: int  # forward/backward passes per step on each device; gradients are summed
    lr_scale: float
    scaling: str

    @property
    def global_batch(self) -> int:
        """Clips per optimizer step, all devices together."""
        return self.batch * self.devices

    def describe(self, base_lr: float) -> str:
        """One line saying what the run does with its devices (printed by `train` and `plan`)."""
        micro = (f" in {self.micro_batches} micro-batches of {self.batch // self.micro_batches}"
                 if self.micro_batches > 1 else "")
        lr = (f"base LR {base_lr * self.lr_scale:g} ({base_lr:g} x {self.devices}/{self.recipe_devices}, "
              "linear scaling)" if self.lr_scale != 1 else f"base LR {base_lr:g}")
        if self.recipe_devices in (0, self.devices):
            devices = f"devices: {self.devices} ({'as the recipe' if self.recipe_devices else 'any'})"
        else:
            devices = f"devices: {self.devices} (recipe: {self.recipe_devices}, {self.scaling})"
        return f"{devices}; per-device batch {self.batch}{micro}; global batch {self.global_batch}; {lr}"


def device_plan(cfg: Config, world_size: int) -> DevicePlan:
    """Per-device batch, micro-batches and LR scale for `world_size` devices (pure).

    `solver.batch_size` is the recipe's global batch on `solver.recipe_devices` devices (0: any). On fewer
    devices, `accumulate` keeps that global batch and the LR, each device summing gradients over the
    micro-batches a recipe device would hold; `linear_lr` keeps the recipe's per-device batch, so the
    global batch shrinks and the LR with it. On more devices the global batch is split further.
    """
    s = cfg.solver
    recipe = s.recipe_devices or world_size
    split = s.device_scaling == "accumulate" or world_size == recipe
    per_device = s.batch_size // (world_size if split else recipe)
    if s.batch_size % (world_size if split else recipe):
        raise ConfigError(f"solver.batch_size ({s.batch_size}) must be divisible by the "
                          f"{world_size if split else recipe} devices")
    shortfall = recipe // world_size if split and world_size < recipe else 1
    if split and world_size < recipe and recipe % world_size:
        raise ConfigError(f"solver.recipe_devices ({recipe}) must be a multiple of the {world_size} devices "
                          "that run, to accumulate gradients (or set solver.device_scaling=linear_lr)")
    micro = s.accumulate * shortfall
    if per_device % micro:
        raise ConfigError(f"solver.accumulate: the per-device batch of {per_device} clips does not split "
                          f"into {micro} micro-batches")
    return DevicePlan(world_size, s.recipe_devices, per_device, micro, 1.0 if split else world_size / recipe,
                      s.device_scaling)


def per_device_batch(cfg: Config, world_size: int) -> int:
    """The long-cycle base batch of one device per optimizer step (`device_plan`)."""
    return device_plan(cfg, world_size).batch
