"""One builder per concern: turn config sections into the schedule, LR rule, datasets, model and loss (the
devices are engine/device.py's, compiling engine/compile.py's)."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from pathlib import Path

from torch import nn

from mgvideo.config import Config, override
from mgvideo.data.annotations import VideoRecord, missing_videos
from mgvideo.data.datasets import VideoClipDataset
from mgvideo.data.formats import dataset_format
from mgvideo.data.prepare import build_frame_cache, build_video_store, read_split
from mgvideo.data.store import VideoStore, store_key
from mgvideo.engine.cost_table import read_cost_table
from mgvideo.engine.optim import build_optimizer  # noqa: F401  (callers import it from here)
from mgvideo.errors import ConfigError, ScheduleError
from mgvideo.models import build_model
from mgvideo.models.state_dict import shorten
from mgvideo.models.zoo import shape_multiple
from mgvideo.multigrid.batchnorm import convert_model
from mgvideo.multigrid.lr import LRConfig, check_warmup_of
from mgvideo.multigrid.progressive import ProgressiveSchedule
from mgvideo.multigrid.random_shapes import RandomShapeSchedule
from mgvideo.multigrid.schedule import ClipShape, MultigridSchedule
from mgvideo.schedule_keys import keyed, multigrid_config, progressive_config

LIST_KEYS = {"train": "train_list", "val": "val_list", "test": "test_list"}  # each split's list (data.*)


def build_schedule(cfg: Config) -> MultigridSchedule:
    """The multigrid schedule of this run (a one-stage schedule for the baseline): its inputs as the table
    in mgvideo/schedule_keys.py reads them, and an error naming the config key at fault."""
    m = cfg.multigrid
    table = read_cost_table(m.cost_table, "multigrid.cost_table") if m.batch_rule == "measured" else None
    try:
        config = multigrid_config(cfg, shape_multiple=run_shape_multiple(cfg), cost_table=table)
        if m.schedule == "random":
            return RandomShapeSchedule(config, cfg.train.seed)
        if m.schedule == "progressive":
            return ProgressiveSchedule(config, progressive_config(cfg))
        return MultigridSchedule(config)
    except ScheduleError as err:
        raise keyed(err) from None


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


def build_lr_config(cfg: Config, lr_scale: float = 1.0) -> LRConfig:
    """The LR rule's inputs: base LR and warmup, times the devices' `lr_scale` (`device_plan`'s)."""
    s, scale = cfg.solver, lr_scale
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
    data = {"schedule": schedule.to_dict(), "shapes": [dataclasses.astuple(s)[:7] for s in schedule.stages]}
    if schedule.cfg.cost_table is not None:  # measured batches: a re-measured table changes the slots too
        data["slots"] = [[dataclasses.astuple(slot) for slot in s.slots] for s in schedule.stages]
    return data


def build_loss(cfg: Config) -> nn.Module:
    """Cross-entropy (with optional label smoothing), or BCE on logits for multi-label data."""
    if cfg.multi_label:
        return nn.BCEWithLogitsLoss()
    return nn.CrossEntropyLoss(label_smoothing=cfg.solver.label_smoothing)


def build_dataset(cfg: Config, split: str, shape: ClipShape) -> VideoClipDataset:
    """The train / val / test dataset; `shape` is its default shape (the sampler usually decides).

    The listed videos are resolved first (`resolve_videos`). Training leaves the missing ones out; val and
    test keep them, flagged unreadable, so that each evaluation counts them as failed under
    `test.max_failed_fraction`. `dataset.missing` holds their paths, and `missing_line` says so.
    """
    d, t = cfg.data, cfg.test
    annotations = read_split(cfg, getattr(d, LIST_KEYS[split]))
    store = build_video_store(cfg)
    listed = annotations.records
    missing = resolve_videos(cfg, split, listed, store)
    if split == "train":
        gone = set(missing)
        annotations.records = [r for i, r in enumerate(listed) if i not in gone]
    dataset = VideoClipDataset(
        annotations, shape, mode=split, sampling=dataset_format(d.dataset).sampling,
        flip=d.flip, test_clips=t.clips, test_crops=t.crops, test_size=t.crop_size or d.crop,
        seed=cfg.train.seed, cache=build_frame_cache(cfg), store=store,
    )
    if split != "train":
        dataset.unreadable[missing] = True  # failed at each evaluation, with no warning from each worker
    dataset.missing = [listed[i].path for i in missing]
    return dataset


def resolve_videos(cfg: Config, split: str, records: list[VideoRecord],
                   store: VideoStore | None) -> list[int]:
    """Indices of the split's videos that are neither under `data.root` nor in the store (one listing per
    folder or one stat per video). None there, or for val and test more than `test.max_failed_fraction`
    of them missing, is a one-line ConfigError naming the root, the list, the count and the first paths."""
    missing = missing_videos(records, _in_store(store))
    if not missing:
        return missing
    d, key = cfg.data, LIST_KEYS[split]
    listing = f"{Path(d.root) / getattr(d, key)} (data.{key})"
    shown = shorten([_relative(records[i].path, d.root) for i in missing], 3)
    if len(missing) == len(records):
        folder = os.path.dirname(records[0].path)
        hint = "" if os.path.isdir(folder) else f" ({folder} is not a folder)"
        raise ConfigError(f"data.root: none of the {len(records)} videos listed in {listing} resolve under "
                          f"data.root={d.root}: {shown}{hint}; set data.root to the folder the listed paths "
                          "are relative to, or fix the list")
    limit = cfg.test.max_failed_fraction
    if split != "train" and len(missing) > limit * len(records):
        raise ConfigError(f"data.{key}: {len(missing)} of the {len(records)} videos listed in {listing} do "
                          f"not resolve under data.root={d.root}, more than test.max_failed_fraction={limit} "
                          f"of them: {shown}; restore them, drop them from the list, or raise "
                          "test.max_failed_fraction")
    return missing


def missing_line(cfg: Config, split: str, dataset: VideoClipDataset) -> str | None:
    """One line for the run's start: the split's videos that did not resolve (`build_dataset`), or None."""
    missing = getattr(dataset, "missing", [])
    if not missing:
        return None
    d, key = cfg.data, LIST_KEYS[split]
    total = dataset.num_videos + (len(missing) if split == "train" else 0)
    what = ("left out of training" if split == "train" else
            f"counted as failed at each evaluation (test.max_failed_fraction={cfg.test.max_failed_fraction})")
    shown = shorten([_relative(path, d.root) for path in missing], 5)
    return (f"{split} list {Path(d.root) / getattr(d, key)}: {len(missing)} of {total} videos do not resolve "
            f"under data.root={d.root}; {what}: {shown}")


def _in_store(store: VideoStore | None) -> Callable[[str], bool] | None:
    """Whether the store has an entry for a video (a dictionary lookup: its original is not checked)."""
    if store is None:
        return None
    entries = store.entries()
    return lambda path: store_key(path, store.root) in entries or os.path.abspath(path) in entries


def _relative(path: str, root: str) -> str:
    rel = os.path.relpath(path, root)
    return path if rel == os.pardir or rel.startswith(os.pardir + os.sep) else rel


def build_network(cfg: Config, num_classes: int) -> nn.Module:
    """The zoo model with multigrid's group BN swapped in (its state dict keeps plain BN keys)."""
    model = build_model(cfg.model.name, num_classes, **cfg.model.options)
    return convert_model(model, cfg.model.bn_base_size)
