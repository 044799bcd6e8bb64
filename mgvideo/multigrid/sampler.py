"""Batch samplers that decide, per iteration, which clips and at which shape: seeded, sharded, resumable.

Each batch is a list of `(dataset index, ClipShape)`; the dataset decodes exactly that shape. Every rank
draws the same seeded permutation of the epoch and takes a disjoint share of it.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from torch.utils.data import Sampler

from mgvideo.errors import ConfigError
from mgvideo.multigrid.schedule import ClipShape, MultigridSchedule, Stage

Batch = list[tuple[int, ClipShape]]


def _positive_int(name: str, value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ConfigError(f"{name}: must be a positive integer (got {value!r})")
    return value


def count_batches(num_samples: int, sizes: Sequence[int], drop_last: bool) -> int:
    """Exact number of batches when `num_samples` are cut into batches whose sizes cycle through `sizes`."""
    per_cycle = sum(sizes)
    count, rest = len(sizes) * (num_samples // per_cycle), num_samples % per_cycle
    for size in sizes:
        if rest < size:
            break
        count, rest = count + 1, rest - size
    return count + (1 if rest > 0 and not drop_last else 0)


def iterations_per_epoch(dataset_size: int, batch_size: int, world_size: int = 1,
                         batch_factors: Sequence[int] = (1,), drop_last: bool = True) -> int:
    """Iterations of one epoch on every rank, for a base per-device batch and the stage's slot multipliers.

    As `MultigridBatchSampler`: each rank gets `dataset_size // world_size` clips (the remainder is left
    out so that every rank runs the same number of iterations).
    """
    _positive_int("batch_size", batch_size)
    per_rank = dataset_size // _positive_int("world_size", world_size)
    return count_batches(per_rank, [batch_size * f for f in batch_factors], drop_last)


class _ShardedBatchSampler(Sampler[Batch]):
    """Shared machinery: the epoch's seeded permutation, sharding, batching and the resume position."""

    def __init__(self, dataset_size: int, batch_size: int, *, rank: int, world_size: int, seed: int,
                 shuffle: bool, drop_last: bool):
        self.dataset_size = _positive_int("dataset_size", dataset_size)
        self.world_size = _positive_int("world_size", world_size)
        if not isinstance(rank, int) or not 0 <= rank < world_size:
            raise ConfigError(f"rank: must be in [0, {world_size}) (got {rank!r})")
        self.rank, self.seed, self.shuffle, self.drop_last = rank, int(seed), shuffle, drop_last
        self.batch_size = _positive_int("batch_size", batch_size)  # per device; a slot may scale it
        self.epoch = 0
        self._start = 0  # batches to skip on the next pass (set by load_state_dict)
        self._position = 0  # batches yielded so far in this epoch

    def _cycle(self) -> list[tuple[int, ClipShape]]:
        """(per-device batch size, shape) of each slot of this epoch, visited in turn."""
        raise NotImplementedError

    def _rank_count(self) -> int:
        """Clips this rank sees in one epoch."""
        return self.dataset_size // self.world_size

    def _rank_indices(self) -> list[int]:
        if self.shuffle:
            generator = torch.Generator().manual_seed(self.seed + self.epoch)
            order = torch.randperm(self.dataset_size, generator=generator).tolist()
        else:
            order = list(range(self.dataset_size))
        return order[: self._usable()][self.rank :: self.world_size]

    def _usable(self) -> int:
        """How many clips of the permutation are shared out (the rest wait for another epoch)."""
        return self._rank_count() * self.world_size

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch (permutation and stage). Call before each epoch, as with DistributedSampler."""
        if epoch != self.epoch:
            self.epoch, self._start = epoch, 0

    def __len__(self) -> int:
        return count_batches(self._rank_count(), [size for size, _ in self._cycle()], self.drop_last)

    def __iter__(self) -> Iterator[Batch]:
        self._position = self._start  # a new pass is requested: the position is where it will start
        return self._pass()

    def _pass(self) -> Iterator[Batch]:
        # The resume point is used up at the first batch drawn, not at iter(): a multi-worker DataLoader
        # calls iter() twice per pass and throws the first iterator away.
        start, self._start = self._start, 0
        self._position = start
        yield from self._batches(start)

    def _batches(self, start: int) -> Iterator[Batch]:
        indices, cycle = self._rank_indices(), self._cycle()
        offset = count = 0
        while offset < len(indices):
            size, shape = cycle[count % len(cycle)]
            chunk = indices[offset : offset + size]
            if len(chunk) < size and self.drop_last:
                return
            offset, count = offset + size, count + 1
            if count > start:
                self._position = count
                yield [(index, shape) for index in chunk]

    def state_dict(self, consumed: int | None = None) -> dict:
        """The position inside the epoch. With DataLoader workers the sampler runs ahead of the training
        loop, so pass `consumed`, the number of batches the loop has actually finished."""
        position = self._position if consumed is None else consumed
        return {"epoch": self.epoch, "position": int(position), "seed": self.seed,
                "dataset_size": self.dataset_size, "world_size": self.world_size}

    def load_state_dict(self, state: dict) -> None:
        """Resume: the next pass yields exactly the batches after `position` of the saved epoch."""
        for key in ("seed", "dataset_size", "world_size"):
            if state.get(key) != getattr(self, key):
                raise ConfigError(f"sampler state: {key} was {state.get(key)!r}, this run has "
                                  f"{getattr(self, key)!r}; resume with the same setting")
        self.epoch = int(state["epoch"])
        position = int(state["position"])
        if not 0 <= position <= len(self):
            raise ConfigError(f"sampler state: position {position} outside [0, {len(self)}]")
        self._start = self._position = position


class MultigridBatchSampler(_ShardedBatchSampler):
    """One epoch of multigrid batches: the long-cycle stage from the schedule, the short-cycle slot per
    iteration (slot i mod n, restarting each epoch), batch sizes scaled from the base per-device
    `batch_size`.

    Each rank takes `dataset_size // world_size` clips of the shared permutation, so every rank runs the
    same number of iterations with the same shapes (DDP never waits on a missing rank); the left-over
    clips change with the permutation from epoch to epoch. `drop_last` drops the final partial batch
    (the reference does so for training; a partial batch would also break BN groups).
    """

    def __init__(self, schedule: MultigridSchedule, dataset_size: int, batch_size: int, *, rank: int = 0,
                 world_size: int = 1, seed: int = 0, shuffle: bool = True, drop_last: bool = True):
        super().__init__(dataset_size, batch_size, rank=rank, world_size=world_size, seed=seed,
                         shuffle=shuffle, drop_last=drop_last)
        self.schedule = schedule
        if self._rank_count() < 1:
            raise ConfigError(f"dataset_size: {dataset_size} clips cannot be shared by {world_size} devices")

    @property
    def stage(self) -> Stage:
        """The long-cycle stage of the current epoch."""
        return self.schedule.stage_at(self.epoch)

    @property
    def stage_batch(self) -> int:
        """This device's long-cycle batch in the current epoch (what BN groups follow by default)."""
        return self.stage.batch_factor * self.batch_size

    def _cycle(self) -> list[tuple[int, ClipShape]]:
        return self.schedule.shapes(self.stage, self.batch_size)


class FixedShapeBatchSampler(_ShardedBatchSampler):
    """Batches at one fixed shape, for evaluation and precise BN.

    By default every clip is seen exactly once across ranks (rank r takes clips r, r + world_size, ...),
    so ranks may differ by one batch. With `drop_last=True` each rank takes `dataset_size // world_size`
    clips in full batches only, and all ranks run the same number of iterations (use it where ranks
    communicate inside the loop, e.g. precise BN with cross-device statistics).
    """

    def __init__(self, shape: ClipShape, dataset_size: int, batch_size: int, *, rank: int = 0,
                 world_size: int = 1, seed: int = 0, shuffle: bool = False, drop_last: bool = False):
        super().__init__(dataset_size, batch_size, rank=rank, world_size=world_size, seed=seed,
                         shuffle=shuffle, drop_last=drop_last)
        self.shape = shape

    def _rank_count(self) -> int:
        if self.drop_last:
            return self.dataset_size // self.world_size
        return len(range(self.rank, self.dataset_size, self.world_size))

    def _usable(self) -> int:
        return self.dataset_size if not self.drop_last else super()._usable()

    def _cycle(self) -> list[tuple[int, ClipShape]]:
        return [(self.batch_size, self.shape)]
