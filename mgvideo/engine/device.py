"""The devices a run trains on: which device, its backend settings, the autocast dtype, and how the recipe's
global batch and LR map onto the devices that run (`device_plan`)."""

from __future__ import annotations

import ctypes
import os
import sys
import warnings
from dataclasses import dataclass

import torch

from mgvideo.config import Config
from mgvideo.engine.step import bn_plan
from mgvideo.errors import ConfigError
from mgvideo.models.zoo import PRESETS
from mgvideo.multigrid.schedule import ClipShape, MultigridSchedule


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
    """Per-process backend settings. CUDA: cuDNN picks the fastest kernel per shape (a run has 10-30
    shapes), and fp32 matmuls and convolutions (what autocast leaves in fp32, and runs without AMP) use
    TF32 tensor cores (`enable_tf32`). CPU: freed memory stays in the process (`keep_freed_memory`)."""
    if device.type == "cpu":
        keep_freed_memory()
    if device.type != "cuda":
        return
    torch.backends.cudnn.benchmark = True
    enable_tf32()


M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters
MMAP_THRESHOLD_MAX = 32 * 2**20  # glibc's largest on 64-bit: bigger blocks are always mapped
TRIM_THRESHOLD = 2**31 - 1  # mallopt takes an int: the heap keeps up to 2 GiB of free memory on top
MALLOC_ENV = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")


def keep_freed_memory(libc: object | None = None) -> bool:
    """Have glibc keep freed host memory for reuse instead of handing it back to the OS at once.

    By default glibc maps large blocks afresh and unmaps them when freed, and trims the heap's free top,
    raising its mapping threshold only as freed blocks show their sizes. A CPU step frees and reallocates
    its activations (tens of MB) every iteration, so a process pays page faults for them for a whole run:
    the CNN bench's multigrid run took 91-95 s as a process's first run and 77-80 s after it, and 82-83 s
    in every position with these settings (README, "Results on this machine"). Training then holds its peak
    memory until it ends. Not applied where `MALLOC_MMAP_THRESHOLD_` or `MALLOC_TRIM_THRESHOLD_` is set
    (the user's choice) or where the C library is not glibc. Returns whether it was applied."""
    if any(name in os.environ for name in MALLOC_ENV):
        return False
    if libc is None:
        if not sys.platform.startswith("linux"):
            return False
        try:
            libc = ctypes.CDLL("libc.so.6")
        except OSError:
            return False
        if not hasattr(libc, "gnu_get_libc_version"):  # glibc only: musl's mallopt does nothing
            return False
    return bool(libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_MAX)) and bool(
        libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))


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
    step_passes: int  # `micro_batches`; 0: unknown (a pass limit, and no schedule to apply it to)
    lr_scale: float
    scaling: str
    accumulate: int = 1  # solver.accumulate: the passes the user asked for
    max_clips_per_pass: int = 0  # solver.max_clips_per_pass (0: no limit)
    largest_batch: int = 0  # the schedule's largest per-device batch, where a limit was applied
    bn_base_size: int = 0  # clips per BN group (0: a model without BN)

    @property
    def global_batch(self) -> int:
        """Clips per optimizer step, all devices together."""
        return self.batch * self.devices

    @property
    def micro_batches(self) -> int:
        """Forward/backward passes per step on each device, gradients summed (pass i: every k-th clip
        from i). Raises ValueError where the plan was made without the schedule its pass limit needs."""
        if not self.step_passes:
            raise ValueError("solver.max_clips_per_pass is set: the passes per step need the run's schedule, "
                             "device_plan(cfg, world_size, schedule)")
        return self.step_passes

    def describe(self, base_lr: float) -> str:
        """One line saying what the run does with its devices (printed by `train` and `plan`)."""
        lr = (f"base LR {base_lr * self.lr_scale:g} ({base_lr:g} x {self.devices}/{self.recipe_devices}, "
              "linear scaling)" if self.lr_scale != 1 else f"base LR {base_lr:g}")
        if self.recipe_devices in (0, self.devices):
            devices = f"devices: {self.devices} ({'as the recipe' if self.recipe_devices else 'any'})"
        else:
            devices = f"devices: {self.devices} (recipe: {self.recipe_devices}, {self.scaling})"
        return f"{devices}; {self.passes()}; global batch {self.global_batch}; {lr}"

    def passes(self) -> str:
        """The per-device batch, how many passes a step takes on each device, and why."""
        k = self.micro_batches
        count = f"{k} passes of {self.batch // k} per step" if k > 1 else "1 pass per step"
        why = []
        if self.largest_batch:
            limit = f"solver.max_clips_per_pass={self.max_clips_per_pass}"
            why.append(f"{limit} at the largest batch, {self.largest_batch} clips" if k > self.accumulate
                       else f"the largest batch, {self.largest_batch} clips, within {limit}")
        if self.accumulate > 1 and k == self.accumulate:
            why.append(f"solver.accumulate={self.accumulate}")
        if self.scaling == "accumulate" and self.devices < self.recipe_devices:
            why.append(f"the recipe's {self.recipe_devices} devices' global batch on {self.devices}")
        if why and self.bn_base_size:
            why.append(self._bn_groups())
        return f"per-device batch {self.batch}, {count}" + (f" ({'; '.join(why)})" if why else "")

    def _bn_groups(self) -> str:
        """The BN groups of a long-cycle step, as training sets them (`bn_plan`)."""
        args = (self.batch, self.batch, self.bn_base_size, self.devices, self.micro_batches)
        size, sync = _group_size(*args), bn_plan(*args).sync_size
        return f"BN in groups of {size}" + (f" across {sync} devices" if sync > 1 else "")


def device_plan(cfg: Config, world_size: int, schedule: MultigridSchedule | None = None) -> DevicePlan:
    """Per-device batch, passes per step and LR scale for `world_size` devices (pure).

    `solver.batch_size` is the recipe's global batch on `solver.recipe_devices` devices (0: any). On fewer
    devices, `accumulate` keeps that global batch and the LR: each device holds the clips of several
    recipe devices, in one pass, with the same BN groups of `model.bn_base_size` clips; `linear_lr` keeps
    the recipe's per-device batch, so the global batch shrinks and the LR with it. On more devices the
    global batch is split further.

    A step takes `solver.accumulate` passes (pass i holding every k-th clip from i, gradients summed),
    or more where `solver.max_clips_per_pass` asks: the fewest that hold the schedule's largest batch
    within the limit, a run-wide count. Applying that limit needs `schedule`; without it the plan's batch
    and LR scale hold, and reading its `micro_batches` raises.
    """
    s = cfg.solver
    per_device, lr_scale = _split(cfg, world_size)
    if per_device % s.accumulate:
        raise ConfigError(f"solver.accumulate: the per-device batch of {per_device} clips does not split "
                          f"into {s.accumulate} passes")
    preset = PRESETS.get(cfg.model.name)  # an unknown name is refused where the model is built
    bn = 0 if preset is not None and preset.family == "vit" else cfg.model.bn_base_size  # ViT: no BN
    passes, largest = s.accumulate, 0
    if s.max_clips_per_pass and schedule is None:
        passes = 0
    elif s.max_clips_per_pass:
        steps = [(b, shape) for stage in schedule.stages for b, shape in schedule.shapes(stage, per_device)]
        largest = max(b for b, _ in steps)
        passes = _fewest_passes(per_device, largest, s.accumulate, s.max_clips_per_pass)
        if bn:
            _check_bn_groups_kept(steps, passes, s.accumulate, bn, world_size, s.max_clips_per_pass)
    return DevicePlan(world_size, s.recipe_devices, per_device, passes, lr_scale, s.device_scaling,
                      s.accumulate, s.max_clips_per_pass, largest, bn)


def per_device_batch(cfg: Config, world_size: int) -> int:
    """The long-cycle base batch of one device per optimizer step (`device_plan`)."""
    return _split(cfg, world_size)[0]


def _split(cfg: Config, world_size: int) -> tuple[int, float]:
    """(per-device batch, LR scale): `accumulate` splits the global batch over the devices that run,
    `linear_lr` over the recipe's devices."""
    s = cfg.solver
    recipe = s.recipe_devices or world_size
    split = s.device_scaling == "accumulate" or world_size == recipe
    devices = world_size if split else recipe
    if s.batch_size % devices:
        raise ConfigError(f"solver.batch_size ({s.batch_size}) must be divisible by the {devices} devices")
    return s.batch_size // devices, 1.0 if split else world_size / recipe


def _fewest_passes(per_device: int, largest: int, at_least: int, limit: int) -> int:
    """The fewest passes, at least `at_least` and dividing the base batch (so every batch of the schedule,
    a multiple of it, splits evenly), whose pass of the `largest` batch holds at most `limit` clips."""
    for k in range(at_least, per_device + 1):
        if per_device % k == 0 and largest // k <= limit:
            return k
    raise ConfigError(f"solver.max_clips_per_pass={limit}: the largest batch, {largest} clips per device, "
                      f"cannot be split below {largest // per_device} clips a pass (one base clip each); "
                      "raise it or run on more devices")


def _check_bn_groups_kept(steps: list[tuple[int, ClipShape]], passes: int, accumulate: int, bn: int,
                          world_size: int, limit: int) -> None:
    """ConfigError if the passes the limit adds would change any step's BN group size: a limit is a
    memory setting, and must not change what the run computes."""
    for b, shape in steps:
        want, got = (_group_size(b, shape.stage_batch, bn, world_size, k) for k in (accumulate, passes))
        if got != want:
            raise ConfigError(
                f"solver.max_clips_per_pass={limit}: {passes} passes per step would normalise the {b}-clip "
                f"batch at T={shape.frames} S={shape.crop} in BN groups of {got} clips instead of {want} "
                "(model.bn_base_size); raise the limit, run on more devices, or set solver.accumulate to "
                "accept the smaller groups")


def _group_size(batch: int, stage_batch: int, bn_base_size: int, world_size: int, passes: int) -> int:
    """Clips per BN statistic when a step of `batch` clips takes `passes` passes (`bn_plan`)."""
    plan = bn_plan(batch, stage_batch, bn_base_size, world_size, passes)
    return batch // passes // plan.groups * plan.sync_size
