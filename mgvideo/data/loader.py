"""The loaders: built once, persistent workers, batch sizes and shapes from the batch sampler, uint8 all the
way to the device, where `to_device` converts and normalises. Besides the training loader, a run keeps
one more worker pool (`SharedPool`), which precise BN and validation take turns on."""

from __future__ import annotations

import functools
import math
import os
import random
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from mgvideo.data.datasets import Sample
from mgvideo.multigrid.schedule import ClipShape

PREFETCH_FACTOR = 2  # batches in flight per worker (torch's default): build_loader's, and shm_need_bytes's
SHM_PAGE = 4096  # a shared-memory segment takes whole pages


@dataclass
class Batch:
    """A collated batch: uint8 clips (B, C, T, H, W), labels (B,) int64 or (B, K) float, the video indices
    used, how many bad videos were skipped to fill it, and the `ClipShape` its sampler dealt (its stage and
    the stage's long-cycle batch: what a step's LR and BN plan need, engine/step.py `step_settings`)."""

    clips: torch.Tensor
    labels: torch.Tensor
    indices: torch.Tensor
    skipped: int = 0
    shape: ClipShape | None = None

    def pin_memory(self) -> Batch:
        """Called by the DataLoader's pinning thread when pin_memory is on."""
        pinned = (t.pin_memory() for t in (self.clips, self.labels, self.indices))
        return Batch(*pinned, self.skipped, self.shape)

    def __len__(self) -> int:
        return self.clips.shape[0]


def collate(samples: Sequence[Sample]) -> Batch:
    """Stack samples of one shape (the sampler deals one shape a batch); keeps the clips uint8."""
    labels = [s.label for s in samples]
    stacked = torch.stack(labels) if isinstance(labels[0], torch.Tensor) else torch.tensor(labels)
    return Batch(torch.stack([s.clip for s in samples]), stacked,
                 torch.tensor([s.index for s in samples], dtype=torch.int64), sum(s.skipped for s in samples),
                 samples[0].shape)


def _seed_worker(worker_id: int) -> None:
    """Seed each worker's global generators from torch's per-worker seed (itself from the loader seed);
    the dataset's own draws come from explicit generators and do not depend on this."""
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


def build_loader(dataset: Dataset, batch_sampler: Iterable, workers: int = 0, pin_memory: bool = False,
                 seed: int = 0, prefetch_factor: int = PREFETCH_FACTOR,
                 multiprocessing_context: str | None = None) -> DataLoader:
    """The one loader of a run: `batch_sampler` yields lists of `(index, ClipShape)` (or indices) and
    decides every batch's size and shape; workers stay alive across epochs (call `set_epoch` on the
    sampler and the dataset before each epoch). `workers` -1 sizes the pool from the cores."""
    workers = resolve_workers(workers)
    extra = {}
    if workers > 0:
        extra = {"persistent_workers": True, "prefetch_factor": prefetch_factor,
                 "worker_init_fn": _seed_worker, "multiprocessing_context": multiprocessing_context}
    return DataLoader(dataset, batch_sampler=batch_sampler, num_workers=workers, collate_fn=collate,
                      pin_memory=pin_memory, generator=torch.Generator().manual_seed(seed), **extra)


def resolve_workers(workers: int) -> int:
    """`data.workers` as a process count: -1 becomes `default_workers` for this node's local ranks
    (torchrun's LOCAL_WORLD_SIZE)."""
    return workers if workers >= 0 else default_workers(int(os.environ.get("LOCAL_WORLD_SIZE", "1")))


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity, e.g. a container's or `taskset`'s share)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def default_workers(local_ranks: int = 1, cores: int | None = None) -> int:
    """Loader workers per process for `data.workers: -1`: this node's cores shared by its processes, less
    one core each for the training process itself (at least 1, at most 16)."""
    cores = usable_cores() if cores is None else cores
    return max(1, min(16, cores // max(local_ranks, 1) - 1))


def main_process_threads(workers: int, local_ranks: int = 1, cores: int | None = None) -> int:
    """torch threads for a training process whose loader has `workers` processes (one thread each, as
    torch sets them): its share of the cores less the workers, at least 1. torch's default (every core)
    plus the workers oversubscribes the CPU, which is several times slower on a shared machine."""
    cores = usable_cores() if cores is None else cores
    return max(1, cores // max(local_ranks, 1) - workers)


def limit_cpu_threads(workers: int) -> int:
    """Lower torch's thread count (never raise it: OMP_NUM_THREADS still wins) so that its threads and
    `workers` loader processes fit the cores this process may use; returns the thread count."""
    local_ranks = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    threads = min(torch.get_num_threads(), main_process_threads(workers, local_ranks))
    torch.set_num_threads(threads)
    return threads


def largest_batch_bytes(batches: Iterable[tuple[int, int, int]], channels: int = 3) -> int:
    """The bytes of the largest uint8 clip batch among `(batch, frames, crop)` shapes: a loader's unit of
    shared memory (multigrid's batch x T x S^2 stays about constant, so this is about any stage's)."""
    return max(b * channels * t * s * s for b, t, s in batches)


def shm_need_bytes(local_ranks: int, workers: int, prefetch_factor: int, batch_clip_bytes: int,
                   pools: int = 2, videos: int = 0) -> int:
    """An upper bound on the /dev/shm that one node's training processes hold at once, in bytes.

    A worker hands each batch to its process through shared memory: pickling a tensor for the result queue
    moves its storage into a new /dev/shm segment (torch's file_descriptor strategy), which lives until the
    training process drops the batch (or, with pin_memory, copies it to pinned memory). A DataLoader keeps
    `workers x prefetch_factor` batches in flight, and the loop holds up to two more at a step boundary (the
    batch in hand and the next). A run has `pools` such loaders, the training one and the SharedPool of
    precise BN and validation, and both are full when validation runs mid-epoch. Each rank also shares two
    flags a video (`truncated`, `unreadable`) and an epoch counter for its train and val datasets: 2 x
    `videos` (train + val) bytes and six segments, each at most a page more than its contents. Labels and
    indices (a few KB a batch) are left out. Per rank: pools x (workers x prefetch + 2) x batch + flags.

    `batch_clip_bytes` is the largest batch either loader makes (`largest_batch_bytes`): a device's whole
    step when it accumulates gradients over several passes, and validation's batch if that is larger.
    """
    in_flight = workers * prefetch_factor + 2 if workers > 0 else 0  # no workers: nothing is sent
    flags = 2 * videos + 6 * SHM_PAGE
    return local_ranks * (pools * in_flight * batch_clip_bytes + flags)


def shm_need_lines(batch_clip_bytes: int | Callable[[int], int], data_workers: int = -1,
                   cores: int | None = None, ranks: Sequence[int] = (1, 2, 4, 8),
                   prefetch_factor: int = PREFETCH_FACTOR, videos: int = 0) -> list[str]:
    """The /dev/shm a node needs, one line per count of local ranks (GPUs): `data_workers` as the config
    says it (-1: sized per process from `cores`, as `resolve_workers` does for that many ranks). Give
    `batch_clip_bytes` as a function of the rank count where the per-device batch follows it (a recipe's
    global batch kept on fewer devices, `device_scaling: accumulate`: 8x the clips a device on 1 GPU as
    on 8). A `data.cache: memory` frame cache lives in /dev/shm too, on top of this."""
    lines = []
    for n in ranks:
        workers = data_workers if data_workers >= 0 else default_workers(n, cores)
        batch = batch_clip_bytes(n) if callable(batch_clip_bytes) else batch_clip_bytes
        need = shm_need_bytes(n, workers, prefetch_factor, batch, videos=videos)
        lines.append(f"{n} rank{'s' if n > 1 else ''} a node, {workers} loader workers each: "
                     f"{need / 2**30:.1f} GiB of /dev/shm (docker: --shm-size={math.ceil(need / 2**30)}g)")
    return lines


class PlannedBatches(Sampler):
    """A batch sampler whose batches are set before each pass."""

    def __init__(self) -> None:
        self.batches: list[list] = []

    def __iter__(self) -> Iterator[list]:
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


class _Named(Dataset):
    """Several datasets behind one: item `(name, item)` is `datasets[name][item]`."""

    def __init__(self, datasets: dict[str, Dataset]) -> None:
        self.datasets = datasets

    def __getitem__(self, item: tuple[str, object]):
        name, inner = item
        return self.datasets[name][inner]

    def __len__(self) -> int:
        return sum(len(d) for d in self.datasets.values())


class SharedPool:
    """One persistent worker pool for several datasets used in turn (precise BN, validation), so that a run
    holds two pools (training and this), not one per use."""

    def __init__(self, datasets: dict[str, Dataset], workers: int = 0, pin_memory: bool = False,
                 seed: int = 0) -> None:
        self.datasets = datasets
        self._plan = PlannedBatches()
        self._loader = build_loader(_Named(datasets), self._plan, workers, pin_memory, seed)

    def view(self, name: str, batches: Iterable[list] = ()) -> PoolView:
        """An iterable over `datasets[name]` whose batches are `batches` (or set later on the view)."""
        return PoolView(self, name, batches)

    def run(self, name: str, batches: Iterable[list]) -> Iterator[Batch]:
        """Load `batches` (lists of items of `datasets[name]`) with the pool's workers."""
        self._plan.batches = [[(name, item) for item in batch] for batch in batches]
        return iter(self._loader)


class PoolView:
    """What a loop iterates: one dataset's batches, loaded by a shared pool."""

    def __init__(self, pool: SharedPool, name: str, batches: Iterable[list]) -> None:
        self.pool, self.name, self.batches = pool, name, batches

    @property
    def dataset(self) -> Dataset:
        """The dataset this view loads from (as `DataLoader.dataset`)."""
        return self.pool.datasets[self.name]

    def __iter__(self) -> Iterator[Batch]:
        return self.pool.run(self.name, self.batches)


@functools.lru_cache(maxsize=8)
def _normalisation(mean: tuple[float, ...], std: tuple[float, ...],
                   device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and std x 255 as (1, C, 1, 1, 1) tensors on `device`, made once: copying them from the host at
    every step would make the host wait for the device."""
    shape = (1, -1, 1, 1, 1)
    m = torch.as_tensor(mean, dtype=torch.float32).view(shape).to(device) * 255
    s = torch.as_tensor(std, dtype=torch.float32).view(shape).to(device) * 255
    return m, s


def to_device(batch: Batch, device: torch.device | str, mean: Sequence[float], std: Sequence[float],
              channels_last: bool = False) -> Batch:
    """Move a batch to `device`, then convert the clips to float and normalise there: (x/255 - mean) / std
    per channel. Non-blocking copies when the batch is pinned and the device is CUDA."""
    device = torch.device(device)
    non_blocking = device.type == "cuda" and batch.clips.is_pinned()
    clips = batch.clips.to(device, non_blocking=non_blocking)
    m, s = _normalisation(tuple(mean), tuple(std), device)
    clips = (clips.float() - m) / s
    if channels_last:
        clips = clips.contiguous(memory_format=torch.channels_last_3d)
    return Batch(clips, batch.labels.to(device, non_blocking=non_blocking),
                 batch.indices.to(device, non_blocking=non_blocking), batch.skipped, batch.shape)
