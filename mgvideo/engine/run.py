"""A training run's parts, built once, and its resumable state: the plumbing behind engine/trainer.py."""

from __future__ import annotations

import dataclasses
import itertools
import os
import signal
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader, Sampler

from mgvideo.config import Config, fingerprint, save_config, to_dict
from mgvideo.data.datasets import VideoClipDataset
from mgvideo.data.loader import build_loader
from mgvideo.engine import builders, checkpoint
from mgvideo.engine import distributed as D
from mgvideo.engine.evaluate import Inputs
from mgvideo.engine.runlog import RunLog, Stopwatch
from mgvideo.multigrid.lr import LRConfig
from mgvideo.multigrid.sampler import FixedShapeBatchSampler, MultigridBatchSampler, iterations_per_epoch
from mgvideo.multigrid.schedule import ClipShape, MultigridSchedule

# Test hooks: SIGKILL this process once it has finished this many iterations; under torchrun only on
# the rank named by CRASH_RANK_ENV (if set) and only in the first attempt, so that a restart can finish.
CRASH_AT_STEP_ENV = "MGVIDEO_TEST_CRASH_AT_ITER"
CRASH_RANK_ENV = "MGVIDEO_TEST_CRASH_RANK"


@dataclass
class TrainState:
    """Where the run is; saved in every checkpoint and restored on resume."""

    epoch: int = 0  # the epoch in progress
    iteration: int = 0  # batches finished in that epoch
    step: int = 0  # batches finished in the whole run
    samples: int = 0  # clips trained on, all devices
    next_eval: int = 0  # sample count of the next periodic evaluation (train.eval_period_samples)
    skipped: int = 0  # unreadable videos skipped, all devices
    records: int = 0  # lines of metrics.jsonl written
    elapsed: float = 0.0  # training seconds of the run (the clock without evaluation), across resumes
    wall: float = 0.0  # wall-clock seconds of the run, evaluation included, across resumes
    eval_step: int = -1  # the step of the last evaluation
    last_eval: dict[str, float] = field(default_factory=dict)


class PlannedBatches(Sampler):
    """A batch sampler whose batches are set before each pass (precise BN at changing shapes)."""

    def __init__(self) -> None:
        self.batches: list[list[tuple[int, ClipShape]]] = []

    def __iter__(self) -> Iterator[list[tuple[int, ClipShape]]]:
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


@dataclass
class Run:
    """Everything the loop needs, built once: no part is rebuilt when the shape changes."""

    cfg: Config
    out_dir: Path
    info: D.DistInfo
    device: torch.device
    schedule: MultigridSchedule
    lr_cfg: LRConfig
    fingerprint: str
    batch: int  # long-cycle base batch per device
    net: nn.Module  # the model itself (evaluation, precise BN, checkpoints)
    model: nn.Module  # what training calls: DDP- and/or compile-wrapped `net`
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    loss_fn: nn.Module
    amp_dtype: torch.dtype | None
    inputs: Inputs
    train_set: VideoClipDataset
    sampler: MultigridBatchSampler
    loader: DataLoader
    planned: PlannedBatches
    precise_loader: DataLoader
    val_loader: DataLoader
    state: TrainState
    clock: Stopwatch
    log: RunLog
    last_save: float = 0.0
    crash_at: int = -1


def build_run(cfg: Config, out_dir: Path, force: bool = False,
              schedule: MultigridSchedule | None = None) -> Run:
    """Set up the device, data, model, optimizer and logs of a run, resuming from `last.pt` if present;
    `schedule` (if given) replaces the config's."""
    device = builders.select_device(cfg.train.device)
    info = D.init(device)
    device = D.local_device(device, info)
    torch.manual_seed(cfg.train.seed)
    schedule = builders.build_schedule(cfg) if schedule is None else schedule
    fp = fingerprint(cfg, builders.schedule_fingerprint_data(schedule))
    if info.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
        builders.ensure_synthetic_data(cfg)
        save_config(cfg, out_dir / "config.yaml")
    D.barrier(info)
    batch = builders.per_device_batch(cfg, info.world_size)
    full = builders.eval_shape(cfg, batch)
    train_set = builders.build_dataset(cfg, "train", full)
    val_set = builders.build_dataset(cfg, "val", full)
    if info.is_main:  # before the run's clock starts: decoding the data once is not training time
        builders.fill_frame_cache(cfg, [train_set, val_set])
    D.barrier(info)
    net = builders.build_network(cfg, cfg.data.num_classes).to(device)
    if cfg.train.channels_last:
        net = net.to(memory_format=torch.channels_last_3d)
    optimizer = builders.build_optimizer(net, cfg)
    amp_dtype = builders.autocast_dtype(cfg, device)
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
    state = TrainState()
    sampler = MultigridBatchSampler(schedule, len(train_set), batch, rank=info.rank,
                                    world_size=info.world_size, seed=cfg.train.seed)
    resumed = _resume(out_dir / "checkpoints" / "last.pt", fp, force, net, optimizer, scaler, sampler, state)
    model = _wrap(net, info, device)
    if cfg.train.compile:
        model = builders.compile_model(model, net, schedule, cfg, batch, device)
    workers, pin = cfg.data.workers, cfg.train.pin_memory and device.type == "cuda"
    planned = PlannedBatches()
    eval_batch = cfg.train.eval_batch_size or batch
    val_sampler = FixedShapeBatchSampler(full, len(val_set), eval_batch, rank=info.rank,
                                         world_size=info.world_size)
    lengths = [iterations_per_epoch(len(train_set), batch, info.world_size,
                                    [slot.batch_factor for slot in schedule.stage_at(e).slots])
               for e in range(schedule.max_epoch)]
    total, done = sum(lengths), sum(lengths[: state.epoch]) + state.iteration
    log = RunLog(out_dir, info.is_main, state.records, total, done)
    if resumed:
        log.message(f"resumed from {resumed} at epoch {state.epoch}, iteration {state.iteration}")
    return Run(
        cfg, out_dir, info, device, schedule, builders.build_lr_config(cfg), fp, batch, net, model, optimizer,
        scaler, builders.build_loss(cfg), amp_dtype, Inputs(device, cfg.data.mean, cfg.data.std,
                                                             cfg.train.channels_last),
        train_set, sampler, build_loader(train_set, sampler, workers, pin, cfg.train.seed),
        planned, build_loader(train_set, planned, workers, pin, cfg.train.seed + 1),
        build_loader(val_set, val_sampler, workers, pin, cfg.train.seed + 2),
        state, Stopwatch(state.elapsed, state.wall), log,
        crash_at=int(os.environ.get(CRASH_AT_STEP_ENV, "-1")),
    )


def plan_batches(run: Run, shape: ClipShape, batch: int, num_batches: int, epoch: int) -> int:
    """Fill the precise-BN loader with up to `num_batches` training batches at `shape`; returns how many."""
    sampler = FixedShapeBatchSampler(shape, len(run.train_set), batch, rank=run.info.rank,
                                     world_size=run.info.world_size, seed=run.cfg.train.seed + 7919,
                                     shuffle=True, drop_last=True)
    sampler.set_epoch(epoch)
    run.planned.batches = list(itertools.islice(sampler, num_batches))
    return len(run.planned.batches)


def save_state(run: Run, name: str = "last.pt") -> Path:
    """Write the full resumable state to `checkpoints/<name>` (rank 0 only; others wait)."""
    path = run.out_dir / "checkpoints" / name
    run.state.elapsed, run.state.wall = run.clock(), run.clock.wall()
    run.state.records = run.log.records
    run.log.flush()
    if run.info.is_main:
        checkpoint.save(
            {
                "model": run.net.state_dict(), "optimizer": run.optimizer.state_dict(),
                "scaler": run.scaler.state_dict(),
                "sampler": run.sampler.state_dict(consumed=run.state.iteration),
                "rng": checkpoint.rng_state(), "state": dataclasses.asdict(run.state),
                "fingerprint": run.fingerprint, "config": to_dict(run.cfg), "model_name": run.cfg.model.name,
            },
            path,
        )
    D.barrier(run.info)
    run.last_save = run.clock()
    return path


def crash_hook(run: Run) -> None:
    """For resume tests: die abruptly (SIGKILL) at the configured step."""
    if run.state.step != run.crash_at or os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") != "0":
        return
    if os.environ.get(CRASH_RANK_ENV, str(run.info.rank)) == str(run.info.rank):
        os.kill(os.getpid(), signal.SIGKILL)


def _resume(path: Path, fp: str, force: bool, net: nn.Module, optimizer: torch.optim.Optimizer,
            scaler: torch.amp.GradScaler, sampler: MultigridBatchSampler, state: TrainState) -> Path | None:
    if not path.exists():
        return None
    saved = checkpoint.load(path)
    checkpoint.check_fingerprint(saved, fp, str(path), force)
    checkpoint.load_model_weights(net, saved["model"], str(path))
    optimizer.load_state_dict(saved["optimizer"])
    scaler.load_state_dict(saved["scaler"])
    sampler.load_state_dict(saved["sampler"])
    checkpoint.set_rng_state(saved["rng"])
    for key, value in saved["state"].items():
        setattr(state, key, value)
    return path


def _wrap(net: nn.Module, info: D.DistInfo, device: torch.device) -> nn.Module:
    if not info.enabled:
        return net
    ids = [device.index] if device.type == "cuda" else None
    # channels_last 1x1x1 kernels have ambiguous strides; DDP then copies their grads (harmless, noisy).
    warnings.filterwarnings("ignore", message="Grad strides do not match bucket view strides")
    # BN buffers stay per rank during training; precise BN merges them before they are used.
    return nn.parallel.DistributedDataParallel(net, device_ids=ids, forward_sync_buffers=False)
