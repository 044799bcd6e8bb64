"""One builder per concern: turn config sections into the schedule, LR rule, datasets, model and loss (the
devices are engine/device.py's, compiling engine/compile.py's)."""

from __future__ import annotations

import dataclasses

from torch import nn

from mgvideo.config import Config, override
from mgvideo.data.datasets import VideoClipDataset
from mgvideo.data.prepare import build_frame_cache, build_video_store, read_split
from mgvideo.engine.device import device_plan
from mgvideo.engine.optim import build_optimizer  # noqa: F401  (callers import it from here)
from mgvideo.errors import ConfigError, ScheduleError
from mgvideo.models import build_model
from mgvideo.models.zoo import shape_multiple
from mgvideo.multigrid.batchnorm import convert_model
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


def eval_shape(cfg: Config, batch: int) -> ClipShape:
    """The validation shape: the full T×S at the recipe's sampling rate, the same for every schedule."""
    d = cfg.data
    return ClipShape(frames=d.frames, crop=d.crop, min_rate=d.sampling_rate, max_rate=d.sampling_rate,
                     base_crop=d.crop, stage_batch=batch, stage=-1, slot=0)


def build_loss(cfg: Config) -> nn.Module:
    """Cross-entropy (with optional label smoothing), or BCE on logits for multi-label data."""
    if cfg.multi_label:
        return nn.BCEWithLogitsLoss()
    return nn.CrossEntropyLoss(label_smoothing=cfg.solver.label_smoothing)


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
