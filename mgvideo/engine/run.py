"""A training run's parts, built once, and its resumable state: the plumbing behind engine/trainer.py."""

from __future__ import annotations

import dataclasses
import inspect
import itertools
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader

from mgvideo.config import Config, config_changes, fingerprint, save_config, to_dict
from mgvideo.data.datasets import VideoClipDataset
from mgvideo.data.loader import PoolView, SharedPool, build_loader, limit_cpu_threads, resolve_workers
from mgvideo.data.prepare import prepare_data
from mgvideo.engine import builders, checkpoint, init_from, resume
from mgvideo.engine import distributed as D
from mgvideo.engine.compile import compile_model, use_compile_cache
from mgvideo.engine.device import DevicePlan, autocast_dtype, configure_device, device_plan, select_device
from mgvideo.engine.eval_schedule import eval_steps
from mgvideo.engine.evaluate import Inputs
from mgvideo.engine.runlog import RunLog, Stopwatch
from mgvideo.engine.step import Optimization
from mgvideo.engine.window import LogWindow
from mgvideo.errors import CheckpointError
from mgvideo.models.zoo import get_preset
from mgvideo.multigrid.fit import check_dataset_fits, short_epoch_warning
from mgvideo.multigrid.iterations import RunLength, run_length
from mgvideo.multigrid.sampler import FixedShapeBatchSampler, MultigridBatchSampler
from mgvideo.multigrid.schedule import ClipShape, MultigridSchedule


@dataclass
class TrainState:
    """Where the run is; saved in every checkpoint and restored on resume."""

    epoch: int = 0  # the epoch in progress
    iteration: int = 0  # batches finished in that epoch
    step: int = 0  # batches finished in the whole run
    samples: int = 0  # clips trained on, all devices
    skipped: int = 0  # clips replaced because their video was unreadable, all devices (at log points)
    unreadable: list[int] = field(default_factory=list)  # training videos found unreadable, all devices
    records: int = 0  # lines of metrics.jsonl written
    elapsed: float = 0.0  # training seconds of the run (the clock without evaluation), across resumes
    wall: float = 0.0  # wall-clock seconds of the run, evaluation included, across resumes
    eval_step: int = -1  # the step of the last evaluation
    store_misses: int = 0  # clips read from their originals though `data.store` is set, all devices
    last_eval: dict[str, float] = field(default_factory=dict)


@dataclass
class RunData:
    """The data side: the training set, its sampler and loader, and one more worker pool that precise BN
    (`precise`, batches planned per refresh) and validation (`val`) take turns on."""

    train_set: VideoClipDataset
    sampler: MultigridBatchSampler
    loader: DataLoader
    precise: PoolView
    val: PoolView


@dataclass
class TestHooks:
    """Test-only fault injection, passed to `train` by tests (never set by the CLI): `after_step(run)` runs
    after every iteration, `before_rename(path)` between a checkpoint's temp write and its rename."""

    after_step: Callable[[Run], None] | None = None
    before_rename: Callable[[Path], None] | None = None


@dataclass
class Run:
    """Everything the loop needs, built once: nothing is rebuilt when the shape changes."""

    cfg: Config
    out_dir: Path
    info: D.DistInfo
    schedule: MultigridSchedule
    base_batch: int  # the long-cycle base batch per device (a stage's batch: this times its factor)
    model: nn.Module  # the model itself (BN groups, evaluation, precise BN, checkpoints); opt.wrapped trains
    inputs: Inputs  # device, normalisation and memory format of model inputs
    opt: Optimization  # what a training step uses: wrapped model, optimizer, scaler, loss, LR rule
    data: RunData
    state: TrainState
    length: RunLength  # the iterations of each epoch and the baseline's (multigrid/iterations.py)
    eval_steps: frozenset[int]  # the steps after which to evaluate (engine/eval_schedule.py)
    log: RunLog
    window: LogWindow  # figures since the last log point, still on the device
    clock: Stopwatch
    hooks: TestHooks
    saves: bool  # writes checkpoints, logs and final weights: rank 0, and each node's own --out
    last_save: float = 0.0


def build_run(cfg: Config, out_dir: Path, force: bool = False, schedule: MultigridSchedule | None = None,
              hooks: TestHooks | None = None) -> Run:
    """Check the config against the folder, prepare the data, join the process group, then build the data,
    the model and its optimization, and resume from the newest checkpoint any rank holds (engine/resume.py)
    or start from `model.init_from`; `schedule` (if given) replaces the config's."""
    requested = select_device(cfg.train.device)
    schedule = builders.build_schedule(cfg) if schedule is None else schedule
    fp = _check_before_work(cfg, out_dir, schedule, force)
    prepare_data(cfg)  # before the process group: other ranks wait on a file lock, never a collective timeout
    info = D.init(requested, cfg.train.dist_timeout_minutes)
    device = D.local_device(requested, info)
    configure_device(device)
    limit_cpu_threads(resolve_workers(cfg.data.workers))  # torch's threads + loader workers <= cores
    torch.manual_seed(cfg.train.seed)
    devices = device_plan(cfg, info.world_size, schedule)
    full = schedule.full_shape(devices.batch)  # what validation reads
    train_set, val_set = build_datasets(cfg, schedule, full, devices.batch, info.world_size)
    facts = {"training videos": len(train_set), "validation videos": len(val_set)}
    agreed = resume.agree(cfg, out_dir, fp, force, info, facts, device)  # every rank: the same state
    model, optimizer, scaler = build_model_and_optimizer(cfg, device)
    sampler = MultigridBatchSampler(schedule, len(train_set), devices.batch, rank=info.rank,
                                    world_size=info.world_size, seed=cfg.train.seed)
    state = TrainState()
    resumed = _resume(agreed, model, optimizer, scaler, sampler, state)
    train_set.unreadable[state.unreadable] = True  # named in the summary, not warned about again
    pretrained = None if resumed or not cfg.model.init_from else init_from.load_pretrained(
        model, cfg.model.init_from, cfg.data.num_classes)
    opt = build_optimization(cfg, model, optimizer, scaler, schedule, devices, info, device)
    micro = devices.batch // devices.micro_batches  # what one forward pass holds
    data = _data(cfg, info, device, train_set, val_set, sampler, full, cfg.train.eval_batch_size or micro)
    length = run_length(schedule, len(train_set), devices.batch, info.world_size)
    if sampler.resharded:
        length = _rebase(state, sampler, length)
    # Only now that every part is built: a refused command leaves the folder as it was.
    saves = resume.claim_folder(out_dir, info, agreed.token)
    log = _open_log(cfg, out_dir, saves, agreed, state, length, info)
    if resumed:
        log.message(f"resumed from {resumed} at epoch {state.epoch}, iteration {state.iteration}")
    if sampler.resharded:
        log.message(_reshard_line(cfg, sampler.resharded, info.world_size))
    if pretrained:
        log.message(pretrained.message())
    _say_data(log, cfg, devices, train_set, val_set, schedule, info.world_size)
    inputs = Inputs(device, cfg.data.mean, cfg.data.std, cfg.train.channels_last)
    return Run(cfg, out_dir, info, schedule, devices.batch, model, inputs, opt, data, state, length,
               frozenset(eval_steps(cfg.train, schedule, length.epoch_clips)), log, LogWindow(device),
               Stopwatch(state.elapsed, state.wall), hooks or TestHooks(), saves, last_save=state.elapsed)


def _check_before_work(cfg: Config, out_dir: Path, schedule: MultigridSchedule, force: bool) -> str:
    """What can be refused before any work: an unknown model, a warmup longer than the run, a `last.pt` in
    `out_dir` of another config. Returns the run's fingerprint."""
    get_preset(cfg.model.name)  # a misspelt name fails here, before any data is prepared
    builders.check_warmup(cfg, schedule)
    fp = fingerprint(cfg, builders.schedule_fingerprint_data(schedule))
    _refuse_changed_config(out_dir, fp, force, cfg)  # before anything changes
    return fp


def build_datasets(cfg: Config, schedule: MultigridSchedule, full: ClipShape, batch: int,
                   world_size: int) -> tuple[VideoClipDataset, VideoClipDataset]:
    """The training and validation sets; refuses a schedule with a stage whose batch exceeds the data."""
    train_set = builders.build_dataset(cfg, "train", full)
    check_dataset_fits(schedule, len(train_set), batch, world_size)  # no stage may train on nothing
    return train_set, builders.build_dataset(cfg, "val", full)


def build_model_and_optimizer(cfg: Config, device: torch.device
                              ) -> tuple[nn.Module, torch.optim.Optimizer, torch.amp.GradScaler]:
    """The model on `device` (channels-last if asked), its optimizer and the fp16 gradient scaler."""
    model = builders.build_network(cfg, cfg.data.num_classes).to(device)
    if cfg.train.channels_last:
        model = model.to(memory_format=torch.channels_last_3d)
    optimizer = builders.build_optimizer(model, cfg, fused=device.type == "cuda")  # fp16: no sync per step
    scaler = torch.amp.GradScaler(device.type, enabled=autocast_dtype(cfg, device) == torch.float16)
    return model, optimizer, scaler


def build_optimization(cfg: Config, model: nn.Module, optimizer: torch.optim.Optimizer,
                       scaler: torch.amp.GradScaler, schedule: MultigridSchedule, devices: DevicePlan,
                       info: D.DistInfo, device: torch.device) -> Optimization:
    """What a step uses: the model wrapped for DDP (and compiled, one graph per shape, when asked), the
    optimizer, the loss, the precision and the LR rule (after any resume: compiling warms up the model)."""
    amp_dtype = autocast_dtype(cfg, device)
    wrapped = _wrap(model, info, device)
    if cfg.train.compile:
        use_compile_cache()
        wrapped = compile_model(wrapped, model, schedule, cfg, devices.batch, device, amp_dtype,
                                info.world_size, micro_batches=devices.micro_batches)
    return Optimization(wrapped, optimizer, scaler, builders.build_loss(cfg), amp_dtype,
                        builders.build_lr_config(cfg, devices.lr_scale), cfg.solver.clip_grad_norm,
                        devices.micro_batches)


def _open_log(cfg: Config, out_dir: Path, saves: bool, agreed: resume.Agreed, state: TrainState,
              length: RunLength, info: D.DistInfo) -> RunLog:
    """The run's log, after the folder is claimed: the config and the metrics so far written where this
    rank saves, unreadable checkpoints set aside and unfinished writes removed."""
    if saves:
        save_config(cfg, out_dir / "config.yaml")
        resume.restore_metrics(out_dir, agreed.metrics, state.records)
    done = length.steps_before(state.epoch) + state.iteration
    log = RunLog(out_dir, saves, state.records, length.total, done, console=info.is_main)
    if saves:
        resume.set_aside(out_dir, agreed.unreadable, log.message)
        stale = checkpoint.remove_stale_temps(out_dir / "checkpoints")
        if stale:
            names = ", ".join(p.name for p in stale)
            log.message(f"removed {len(stale)} unfinished checkpoint writes: {names}")
    return log


def _say_data(log: RunLog, cfg: Config, devices: DevicePlan, train_set: VideoClipDataset,
              val_set: VideoClipDataset, schedule: MultigridSchedule, world_size: int) -> None:
    """The start-up lines on the devices and the data: where clips come from, missing videos, short epochs."""
    log.message(f"{devices.describe(cfg.solver.base_lr)}; data: {_data_source(cfg, train_set)}")
    for split, dataset in (("train", train_set), ("val", val_set)):
        if line := builders.missing_line(cfg, split, dataset):
            log.message(line)
    if short := short_epoch_warning(schedule, len(train_set), devices.batch, world_size):
        log.message(f"warning: {short}")


def _data_source(cfg: Config, dataset: VideoClipDataset) -> str:
    """Where training clips come from, for the start-up line."""
    if dataset.cache is not None:
        return f"frame cache {dataset.cache.directory}"
    if dataset.store is not None:
        return f"store {cfg.data.store} (the originals under {cfg.data.root} where it has no entry)"
    return f"the videos under {cfg.data.root}"


def _refuse_changed_config(out_dir: Path, expected: str, force: bool, cfg: Config) -> None:
    """Refuse at once a `last.pt` in this folder written under another config (the ranks' agreement
    checks the checkpoint actually resumed from again, once the process group exists)."""
    last = out_dir / "checkpoints" / "last.pt"
    try:
        saved = checkpoint.peek(last) if last.exists() else None
    except CheckpointError:
        return  # set aside later, once the ranks agree on what to resume from
    if saved is not None:
        changes = config_changes(saved.get("config"), cfg)
        checkpoint.check_fingerprint(saved, expected, str(last), force, changes)


def _rebase(state: TrainState, sampler: MultigridBatchSampler, length: RunLength) -> RunLength:
    """After a restart with another number of processes: count the run's steps in this world size's
    iterations, so that evaluation points and the run's end fall where this world size puts them."""
    if sampler.epoch == state.epoch and state.iteration:  # resumed inside an epoch: its re-based length
        sizes = sampler.epoch_batch_sizes()
        length = length.with_epoch(state.epoch, [size * sampler.world_size for size in sizes])
        state.iteration = sampler.position
    state.step = length.steps_before(state.epoch) + state.iteration
    return length


def _reshard_line(cfg: Config, saved_world: int, world: int) -> str:
    """What changes when a run saved with `saved_world` processes goes on with `world` (the recipe's rules
    for the global batch and the LR, `device_plan`)."""
    before, now = device_plan(cfg, saved_world), device_plan(cfg, world)
    lr_before, lr_now = cfg.solver.base_lr * before.lr_scale, cfg.solver.base_lr * now.lr_scale
    batch = (f"global batch {now.global_batch} (unchanged)" if now.global_batch == before.global_batch
             else f"global batch {before.global_batch} -> {now.global_batch}")
    lr = f"base LR {lr_now:g} (unchanged)" if lr_now == lr_before else f"base LR {lr_before:g} -> {lr_now:g}"
    return (f"saved with {saved_world} processes, going on with {world}: the rest of the epoch is shared out "
            f"anew; per-device batch {before.batch} -> {now.batch}, {batch}, {lr} "
            f"(solver.device_scaling: {cfg.solver.device_scaling})")


def _data(cfg: Config, info: D.DistInfo, device: torch.device, train_set: VideoClipDataset,
          val_set: VideoClipDataset, sampler: MultigridBatchSampler, full: ClipShape,
          eval_batch: int) -> RunData:
    workers = cfg.data.workers  # -1: build_loader sizes it from the cores
    pin = cfg.train.pin_memory and device.type == "cuda"
    val_sampler = FixedShapeBatchSampler(full, len(val_set), eval_batch, rank=info.rank,
                                         world_size=info.world_size)
    pool = SharedPool({"train": train_set, "val": val_set}, workers, pin, cfg.train.seed + 1)
    return RunData(train_set, sampler, build_loader(train_set, sampler, workers, pin, cfg.train.seed),
                   pool.view("train"), pool.view("val", val_sampler))


def fill_precise_bn(run: Run, shape: ClipShape, batch: int, num_batches: int, epoch: int) -> int:
    """Fill the precise-BN loader with up to `num_batches` training batches at `shape`; returns how many."""
    sampler = FixedShapeBatchSampler(shape, len(run.data.train_set), batch, rank=run.info.rank,
                                     world_size=run.info.world_size, seed=run.cfg.train.seed + 7919,
                                     shuffle=True, drop_last=True)
    sampler.set_epoch(epoch)
    run.data.precise.batches = list(itertools.islice(sampler, num_batches))
    return len(run.data.precise.batches)


def save_state(run: Run, name: str = "last.pt") -> Path:
    """Write the full resumable state to `checkpoints/<name>` (by the ranks that save, `Run.saves`; the
    others wait).

    The log window must be closed first (the trainer does), so the state's counters are complete.
    """
    path = run.out_dir / "checkpoints" / name
    run.state.elapsed, run.state.wall = run.clock(), run.clock.wall()
    run.state.unreadable = unreadable_videos(run)
    run.state.records = run.log.records
    run.log.flush()
    if run.state.iteration == 0:  # between epochs: the sampler's position is the start of the next one
        run.data.sampler.set_epoch(run.state.epoch)
    if run.saves:  # rank 0, and each node whose --out rank 0 does not share
        checkpoint.save(
            {
                "model": run.model.state_dict(), "optimizer": run.opt.optimizer.state_dict(),
                "scaler": run.opt.scaler.state_dict(),
                "sampler": run.data.sampler.state_dict(consumed=run.state.iteration),
                "rng": checkpoint.rng_state(), "state": dataclasses.asdict(run.state),
                "fingerprint": fingerprint(run.cfg, builders.schedule_fingerprint_data(run.schedule)),
                "config": to_dict(run.cfg), "model_name": run.cfg.model.name,
            },
            path, before_rename=run.hooks.before_rename,
        )
    D.barrier(run.info)
    run.last_save = run.clock()
    return path


def unreadable_videos(run: Run) -> list[int]:
    """Indices of the training videos any rank has found unreadable (a collective: every rank calls it)."""
    flags = run.data.train_set.unreadable.to(run.inputs.device, torch.float32)
    return (D.all_reduce_tensor(flags, run.info) > 0).nonzero().flatten().tolist()


def take_store_misses(run: Run) -> tuple[int, list[str]]:
    """Clips read from their originals since the last call although a store is set, all ranks together,
    and the videos they came from (a collective: every rank calls it). The counters start again at 0."""
    if run.data.train_set.store is None:
        return 0, []
    sets = [run.data.train_set, run.data.val.dataset]
    counts = torch.cat([s.store_misses.clone() for s in sets])
    for dataset in sets:
        dataset.store_misses.zero_()
    counts = D.all_reduce_tensor(counts.to(run.inputs.device, torch.float32), run.info).cpu()
    records = [r for dataset in sets for r in dataset.records]
    return int(counts.sum()), [records[i].path for i in counts.nonzero().flatten().tolist()]


def _resume(agreed: resume.Agreed, model: nn.Module, optimizer: torch.optim.Optimizer,
            scaler: torch.amp.GradScaler, sampler: MultigridBatchSampler, state: TrainState) -> str | None:
    saved = agreed.saved
    if saved is None:
        return None
    init_from.check_class_count(model, saved["model"], agreed.source)  # a class count names data.num_classes
    checkpoint.load_model_weights(model, saved["model"], agreed.source)
    optimizer.load_state_dict(saved["optimizer"])
    checkpoint.load_scaler_state(scaler, saved.get("scaler"), agreed.source)
    sampler.load_state_dict(saved["sampler"])
    checkpoint.set_rng_state(saved["rng"])
    for key, value in saved["state"].items():
        setattr(state, key, value)
    return agreed.source


def _wrap(net: nn.Module, info: D.DistInfo, device: torch.device) -> nn.Module:
    if not info.enabled:
        return net
    ids = [device.index] if device.type == "cuda" else None
    # channels_last 1x1x1 kernels have ambiguous strides; DDP then copies their grads (harmless, noisy).
    warnings.filterwarnings("ignore", message="Grad strides do not match bucket view strides")
    # BN buffers stay per rank during training; precise BN merges them before they are used.
    # torch 2.13 renamed broadcast_buffers (now deprecated) to forward_sync_buffers.
    ddp = nn.parallel.DistributedDataParallel
    new_name = "forward_sync_buffers" in inspect.signature(ddp.__init__).parameters
    no_sync = {"forward_sync_buffers" if new_name else "broadcast_buffers": False}
    return ddp(net, device_ids=ids, **no_sync)
