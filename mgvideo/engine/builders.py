"""One builder per concern: turn config sections into the schedule, LR rule, model, optimizer and loss."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import torch
from torch import nn

from mgvideo.config import Config
from mgvideo.data.annotations import Annotations, read_annotations
from mgvideo.data.cache import FrameCache, cache_directory
from mgvideo.data.datasets import VideoClipDataset, largest_short_side
from mgvideo.errors import ConfigError
from mgvideo.models import build_model
from mgvideo.multigrid.batchnorm import convert_model
from mgvideo.multigrid.lr import LRConfig
from mgvideo.multigrid.schedule import ClipShape, MultigridConfig, MultigridSchedule


def build_schedule(cfg: Config) -> MultigridSchedule:
    """The multigrid schedule of this run (a one-stage schedule for the baseline)."""
    d, m, s = cfg.data, cfg.multigrid, cfg.solver
    return MultigridSchedule(
        MultigridConfig(
            frames=d.frames, crop=d.crop, steps=tuple(s.steps), max_epoch=s.max_epoch, gamma=s.gamma,
            lr_policy=s.lr_policy, long_cycle=m.long_cycle, short_cycle=m.short_cycle,
            epoch_factor=m.epoch_factor, long_cycle_factors=tuple(tuple(f) for f in m.long_cycle_factors),
            short_cycle_factors=tuple(m.short_cycle_factors), sampling_rate=d.sampling_rate,
            short_cycle_relative=m.short_cycle_relative, scale_jitter=m.scale_jitter,
            eval_freq=m.eval_freq,
        )
    )


def build_lr_config(cfg: Config) -> LRConfig:
    """The LR rule's inputs: base LR and warmup."""
    s = cfg.solver
    return LRConfig(base_lr=s.base_lr, warmup_epochs=s.warmup_epochs, warmup_start_lr=s.warmup_start_lr,
                    rescale_warmup=s.rescale_warmup)


def schedule_fingerprint_data(schedule: MultigridSchedule) -> dict:
    """What of the schedule goes into the resume fingerprint (so a code change to it is caught too)."""
    return {"schedule": schedule.to_dict(), "shapes": [dataclasses.astuple(s)[:7] for s in schedule.stages]}


def per_device_batch(cfg: Config, world_size: int) -> int:
    """The long-cycle base batch of one device: the global batch split over the devices."""
    if cfg.solver.batch_size % world_size:
        raise ConfigError(f"solver.batch_size ({cfg.solver.batch_size}) must be divisible by the "
                          f"{world_size} devices")
    return cfg.solver.batch_size // world_size


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


def build_optimizer(model: nn.Module, cfg: Config) -> torch.optim.SGD:
    """SGD with momentum (optionally nesterov); optionally no weight decay on BN and bias (1-d params)."""
    s = cfg.solver
    decay, no_decay = [], []
    for param in model.parameters():
        if param.requires_grad:
            (no_decay if param.ndim <= 1 and not s.bn_weight_decay else decay).append(param)
    groups = [{"params": decay, "weight_decay": s.weight_decay}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    return torch.optim.SGD(groups, lr=s.base_lr, momentum=s.momentum, nesterov=s.nesterov)


def build_loss(cfg: Config) -> nn.Module:
    """Cross-entropy (with optional label smoothing), or BCE on logits for multi-label data."""
    if cfg.multi_label:
        return nn.BCEWithLogitsLoss()
    return nn.CrossEntropyLoss(label_smoothing=cfg.solver.label_smoothing)


def autocast_dtype(cfg: Config, device: torch.device) -> torch.dtype | None:
    """The AMP dtype, or None; AMP is a CUDA feature here (on CPU it is refused rather than ignored)."""
    if cfg.train.amp == "none":
        return None
    if device.type != "cuda":
        raise ConfigError(f"train.amp={cfg.train.amp} needs a CUDA device (this run is on {device.type})")
    return torch.bfloat16 if cfg.train.amp == "bf16" else torch.float16


def read_split(cfg: Config, list_name: str) -> Annotations:
    """Read one split's annotation file (`data.root / list_name`) in the dataset's format."""
    d = cfg.data
    root = Path(d.root)
    fmt = {"kinetics": "kinetics", "synthetic": "kinetics", "ssv2": "ssv2", "charades": "charades"}[d.dataset]
    options: dict = {}
    if fmt == "ssv2":
        options["labels"] = root / (d.labels_file or "labels.json")
    elif fmt == "kinetics" and d.labels_file:
        options["classes"] = root / d.labels_file
    annotations = read_annotations(fmt, root / list_name, root, **options)
    if annotations.num_classes > d.num_classes:
        raise ConfigError(f"data.num_classes is {d.num_classes} but {root / list_name} has "
                          f"{annotations.num_classes} classes")
    annotations.num_classes = d.num_classes
    return annotations


def build_dataset(cfg: Config, split: str, shape: ClipShape) -> VideoClipDataset:
    """The train / val / test dataset; `shape` is its default shape (the sampler usually decides)."""
    d, t = cfg.data, cfg.test
    list_name = {"train": d.train_list, "val": d.val_list, "test": d.test_list}[split]
    return VideoClipDataset(
        read_split(cfg, list_name), shape, mode=split, sampling="segment" if d.dataset == "ssv2" else "rate",
        flip=d.flip, test_clips=t.clips, test_crops=t.crops, test_size=t.crop_size or d.crop,
        seed=cfg.train.seed, cache=build_frame_cache(cfg),
    )


def build_frame_cache(cfg: Config) -> FrameCache | None:
    """The run's decoded-frame cache (`data.cache`), sized for the largest clip any split asks for."""
    d = cfg.data
    mode = ("disk" if d.dataset == "synthetic" else "none") if d.cache == "auto" else d.cache
    if mode == "none":
        return None
    side = largest_short_side(d.crop, cfg.test.crop_size or d.crop)
    return FrameCache(cache_directory(mode, d.root, d.cache_dir), side)


def fill_frame_cache(cfg: Config, datasets: list[VideoClipDataset], log=print) -> None:
    """Decode every video of `datasets` into their (shared) cache up front, with `data.workers` processes,
    so that training never waits on a first decode and the decoding time shows on its own line."""
    cached = [ds for ds in datasets if ds.cache is not None]
    if cached:
        paths = [r.path for ds in cached for r in ds.records if r.frame_paths is None]
        cached[0].cache.fill(paths, max(1, cfg.data.workers), log)


def ensure_synthetic_data(cfg: Config) -> None:
    """For `data.dataset: synthetic`, generate the videos into `data.root` if they are not there yet."""
    d = cfg.data
    if d.dataset != "synthetic":
        return
    from mgvideo.data import synthetic  # imported lazily: only synthetic runs need it

    meta = Path(d.root) / "meta.json"  # written last, so it exists only for a complete set
    if meta.exists() and synthetic.matches(json.loads(meta.read_text()), d.root, d.synthetic_seed):
        return
    if d.synthetic_size in synthetic.SIZES:
        synthetic.generate(d.root, seed=d.synthetic_seed, size=d.synthetic_size)
        return
    train, _, val = d.synthetic_size.partition("x")
    if not (train.isdigit() and val.isdigit() and int(train) > 0 and int(val) > 0):
        raise ConfigError(f"data.synthetic_size: {d.synthetic_size!r} is not one of "
                          f"{sorted(synthetic.SIZES)} nor TRAINxVAL videos per class (e.g. 24x8)")
    spec = synthetic.SizeSpec(int(train), int(val), 2, 2, 2, 2)  # the SSv2/Charades variants stay tiny
    synthetic.generate_with(d.root, d.synthetic_seed, spec)


def build_network(cfg: Config, num_classes: int) -> nn.Module:
    """The zoo model with multigrid's group BN swapped in (its state dict keeps plain BN keys)."""
    model = build_model(cfg.model.name, num_classes, **cfg.model.options)
    return convert_model(model, cfg.model.bn_base_size)


def compile_model(model: nn.Module, net: nn.Module, schedule: MultigridSchedule, cfg: Config, batch: int,
                  device: torch.device) -> nn.Module:
    """`torch.compile` without dynamic shapes, warmed up on every shape the run will see.

    Each distinct (batch, T, S) compiles once, here rather than mid-training; the cache limit is raised to
    hold them all. The warm-up leaves weights, BN statistics and gradients as they were.
    """
    import torch._dynamo

    shapes = {(b, s.frames, s.crop) for stage in schedule.stages for b, s in schedule.shapes(stage, batch)}
    shapes.add((batch, cfg.data.frames, cfg.data.crop))
    torch._dynamo.config.cache_size_limit = max(torch._dynamo.config.cache_size_limit, 2 * len(shapes) + 2)
    compiled = torch.compile(model, dynamic=False)
    saved = {k: v.clone() for k, v in net.state_dict().items()}
    memory = torch.channels_last_3d if cfg.train.channels_last else torch.contiguous_format
    for b, frames, crop in sorted(shapes):
        x = torch.zeros(b, 3, frames, crop, crop, device=device).contiguous(memory_format=memory)
        compiled(x).float().sum().backward()
    net.load_state_dict(saved)
    net.zero_grad(set_to_none=True)
    return compiled
