"""One builder per concern: turn config sections into the schedule, LR rule, model, optimizer and loss."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
from torch import nn

from mgvideo.config import Config, override
from mgvideo.data.datasets import VideoClipDataset
from mgvideo.data.prepare import build_frame_cache, build_video_store, read_split
from mgvideo.engine.optim import build_optimizer  # noqa: F401  (callers import it from here)
from mgvideo.engine.step import precision
from mgvideo.errors import ConfigError, ScheduleError
from mgvideo.models import build_model
from mgvideo.models.zoo import shape_multiple
from mgvideo.multigrid.batchnorm import BNPlan, bn_groups_for, convert_model, set_bn_groups
from mgvideo.multigrid.lr import LRConfig, check_warmup_of
from mgvideo.multigrid.progressive import ProgressiveConfig, ProgressiveSchedule
from mgvideo.multigrid.random_shapes import RandomShapeSchedule
from mgvideo.multigrid.schedule import ClipShape, MultigridConfig, MultigridSchedule

# The config key behind each MultigridConfig field, so that a schedule error names what to edit.
SCHEDULE_KEYS = {
    "frames": "data.frames", "crop": "data.crop", "sampling_rate": "data.sampling_rate",
    "steps": "solver.steps", "max_epoch": "solver.max_epoch", "gamma": "solver.gamma",
    "lr_policy": "solver.lr_policy",
    "epoch_factor": "multigrid.epoch_factor", "long_cycle_factors": "multigrid.long_cycle_factors",
    "short_cycle_factors": "multigrid.short_cycle_factors", "scale_jitter": "multigrid.scale_jitter",
    "eval_freq": "multigrid.eval_freq", "finetune_fraction": "multigrid.finetune_fraction",
    "progressive start_scale": "multigrid.progressive_start_scale",
    "progressive ramp_end": "multigrid.progressive_ramp_end",
    "progressive crop_step": "multigrid.progressive_crop_step",
}


def build_schedule(cfg: Config) -> MultigridSchedule:
    """The multigrid schedule of this run (a one-stage schedule for the baseline)."""
    d, m, s = cfg.data, cfg.multigrid, cfg.solver
    try:
        config = MultigridConfig(
            frames=d.frames, crop=d.crop, steps=tuple(s.steps), max_epoch=s.max_epoch, gamma=s.gamma,
            lr_policy=s.lr_policy, long_cycle=m.long_cycle, short_cycle=m.short_cycle,
            epoch_factor=m.epoch_factor, long_cycle_factors=tuple(tuple(f) for f in m.long_cycle_factors),
            short_cycle_factors=tuple(m.short_cycle_factors), sampling_rate=d.sampling_rate,
            short_cycle_relative=m.short_cycle_relative, scale_jitter=m.scale_jitter,
            eval_freq=m.eval_freq, shape_multiple=run_shape_multiple(cfg),
            finetune_short_cycle=m.finetune_short_cycle, finetune_fraction=m.finetune_fraction,
        )
        if m.schedule == "random":
            return RandomShapeSchedule(config, cfg.train.seed)
        if m.schedule == "progressive":
            return ProgressiveSchedule(config, ProgressiveConfig(
                m.progressive_start_scale, m.progressive_ramp_end, m.progressive_crop_step))
        return MultigridSchedule(config)
    except ScheduleError as err:
        field, _, problem = str(err).partition(": ")
        raise ScheduleError(f"{SCHEDULE_KEYS.get(field, field)}: {problem}") from None


def baseline_config(cfg: Config) -> Config:
    """The baseline of a run's recipe: the same config with both cycles off, on the ordered schedule (the
    random and progressive schedules have no baseline form of their own)."""
    return override(cfg, **{"multigrid.long_cycle": False, "multigrid.short_cycle": False,
                            "multigrid.schedule": "multigrid"})


def run_shape_multiple(cfg: Config) -> tuple[int, int]:
    """`multigrid.shape_multiple`, or the model's own (a ViT's tubelet and patch sizes) when unset."""
    if cfg.multigrid.shape_multiple:
        return tuple(cfg.multigrid.shape_multiple)
    return shape_multiple(cfg.model.name, cfg.model.options)


def build_lr_config(cfg: Config, world_size: int = 1) -> LRConfig:
    """The LR rule's inputs: base LR and warmup, scaled as `device_plan` says for `world_size` devices."""
    s = cfg.solver
    scale = device_plan(cfg, world_size).lr_scale
    return LRConfig(base_lr=s.base_lr * scale, warmup_epochs=s.warmup_epochs,
                    warmup_start_lr=s.warmup_start_lr * scale, rescale_warmup=s.rescale_warmup,
                    batch_scaling=s.lr_batch_scaling)


def check_warmup(cfg: Config, schedule: MultigridSchedule) -> None:
    """ConfigError naming solver.warmup_epochs when the warmup outlasts the run (multigrid.lr)."""
    try:
        sv = cfg.solver
        check_warmup_of(schedule, LRConfig(base_lr=sv.base_lr, warmup_epochs=sv.warmup_epochs,
                                           rescale_warmup=sv.rescale_warmup))
    except ConfigError as err:
        raise ConfigError(f"solver.{err}") from None


def schedule_fingerprint_data(schedule: MultigridSchedule) -> dict:
    """What of the schedule goes into the resume fingerprint (so a code change to it is caught too)."""
    return {"schedule": schedule.to_dict(), "shapes": [dataclasses.astuple(s)[:7] for s in schedule.stages]}


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


def eval_shape(cfg: Config, batch: int) -> ClipShape:
    """The validation shape: the full T×S at the recipe's sampling rate, the same for every schedule."""
    d = cfg.data
    return ClipShape(frames=d.frames, crop=d.crop, min_rate=d.sampling_rate, max_rate=d.sampling_rate,
                     base_crop=d.crop, stage_batch=batch, stage=-1, slot=0)


def select_device(name: str) -> torch.device:
    """cpu, cuda, or auto (cuda when available)."""
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("train.device: cuda was asked for but torch sees no CUDA device")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


def build_loss(cfg: Config) -> nn.Module:
    """Cross-entropy (with optional label smoothing), or BCE on logits for multi-label data."""
    if cfg.multi_label:
        return nn.BCEWithLogitsLoss()
    return nn.CrossEntropyLoss(label_smoothing=cfg.solver.label_smoothing)


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
    TF32 tensor cores."""
    if device.type != "cuda":
        return
    torch.backends.cudnn.benchmark = True
    matmul, conv = torch.backends.cuda.matmul, getattr(torch.backends.cudnn, "conv", None)
    if hasattr(matmul, "fp32_precision") and hasattr(conv, "fp32_precision"):  # torch 2.9+
        matmul.fp32_precision = conv.fp32_precision = "tf32"
    else:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True


def build_dataset(cfg: Config, split: str, shape: ClipShape) -> VideoClipDataset:
    """The train / val / test dataset; `shape` is its default shape (the sampler usually decides)."""
    d, t = cfg.data, cfg.test
    list_name = {"train": d.train_list, "val": d.val_list, "test": d.test_list}[split]
    return VideoClipDataset(
        read_split(cfg, list_name), shape, mode=split, sampling="segment" if d.dataset == "ssv2" else "rate",
        flip=d.flip, test_clips=t.clips, test_crops=t.crops, test_size=t.crop_size or d.crop,
        seed=cfg.train.seed, cache=build_frame_cache(cfg), store=build_video_store(cfg),
    )


def build_network(cfg: Config, num_classes: int) -> nn.Module:
    """The zoo model with multigrid's group BN swapped in (its state dict keeps plain BN keys)."""
    model = build_model(cfg.model.name, num_classes, **cfg.model.options)
    return convert_model(model, cfg.model.bn_base_size)


def compile_model(model: nn.Module, net: nn.Module, schedule: MultigridSchedule, cfg: Config, batch: int,
                  device: torch.device, amp_dtype: torch.dtype | None, world_size: int = 1,
                  backend: str = "inductor", micro_batches: int = 1) -> nn.Module:
    """`torch.compile` without dynamic shapes, warmed up on every shape the run will see.

    Each distinct (batch, T, S, BN plan) compiles once, here rather than mid-training: the warm-up runs
    under the training autocast and sets each shape's BN plan, so that training meets only graphs whose
    guards it already passed. The cache limit is raised to hold them all. The warm-up leaves weights, BN
    statistics and gradients as they were. `batch` is one forward's (a micro-batch's) base batch; with
    `micro_batches` k > 1 a forward takes every k-th clip of the step's batch, so the warm-up inputs have
    those strides too (Dynamo guards on them).
    """
    import torch._dynamo

    plans = warmup_plans(schedule, cfg, batch, world_size)
    limit = 2 * len(plans) + 2
    torch._dynamo.config.cache_size_limit = max(torch._dynamo.config.cache_size_limit, limit)
    if hasattr(torch._dynamo.config, "accumulated_cache_size_limit"):  # 2.2+: the total over all frames
        torch._dynamo.config.accumulated_cache_size_limit = max(
            torch._dynamo.config.accumulated_cache_size_limit, limit)
    compiled = torch.compile(model, dynamic=False, backend=backend)
    saved = {k: v.clone() for k, v in net.state_dict().items()}
    memory = torch.channels_last_3d if cfg.train.channels_last else torch.contiguous_format
    for b, frames, crop, plan in plans:
        set_bn_groups(net, plan)
        k = micro_batches
        x = torch.zeros(b * k, 3, frames, crop, crop, device=device).contiguous(memory_format=memory)[::k]
        with precision(device, amp_dtype):  # the training step's autocast and kernels
            out = compiled(x)
            out.float().sum().backward()
    net.load_state_dict(saved)
    net.zero_grad(set_to_none=True)
    return compiled


def warmup_plans(schedule: MultigridSchedule, cfg: Config, batch: int,
                 world_size: int = 1) -> list[tuple[int, int, int, BNPlan]]:
    """Every distinct (batch, T, S, BN plan) that training will see, by the trainer's BN rule."""
    plans = []
    for stage in schedule.stages:
        for b, shape in schedule.shapes(stage, batch):
            plan = bn_groups_for(b, shape.stage_batch, cfg.model.bn_base_size, world_size)
            if (b, shape.frames, shape.crop, plan) not in plans:
                plans.append((b, shape.frames, shape.crop, plan))
    return plans


def use_compile_cache() -> None:
    """Turn on torch.compile's on-disk caches (Inductor's FX graph cache, and AOTAutograd's where torch has
    it), so that a resumed run on this machine loads the kernels its first segment compiled instead of
    compiling them again. They stay where torch keeps them (a per-user folder in the temp directory),
    never in the run's folder: generated code is not read back from a folder that may come from elsewhere."""
    import torch._inductor.config as inductor_config

    if hasattr(inductor_config, "fx_graph_cache"):  # 2.2+; on by default from 2.5
        inductor_config.fx_graph_cache = True
    import torch._functorch.config as functorch_config

    if hasattr(functorch_config, "enable_autograd_cache"):  # 2.5+
        functorch_config.enable_autograd_cache = True
