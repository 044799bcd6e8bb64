"""Batch samplers that decide, per iteration, which clips and at which shape: seeded, sharded, resumable.

Each batch is a list of `(dataset index, ClipShape)`; the dataset decodes exactly that shape. Every rank
draws the same seeded permutation of the epoch and takes a disjoint share of it.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
from torch.utils.data import Sampler

from mgvideo.errors import ConfigError
from mgvideo.multigrid.schedule import ClipShape, MultigridSchedule, Stage

DealtBatch = list[tuple[int, ClipShape]]  # what a batch sampler deals: (dataset index, shape) per clip


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


@dataclass(frozen=True)
class _Resume:
    """Where a resumed epoch starts: `clips` of the epoch's permutation already consumed (all ranks
    together, always a prefix), the short-cycle slot of the next batch (`phase`), and the position (batches
    of this epoch) that next batch counts as."""

    clips: int = 0
    phase: int = 0
    position: int = 0


class _ShardedBatchSampler(Sampler[DealtBatch]):
    """Shared machinery: the epoch's seeded permutation, sharding, batching and the resume position.

    The position is global: ranks consume the permutation's prefix together, so a state saved with W
    ranks resumes with W' ranks by sharing out what is left of the same epoch (`load_state_dict`).
    """

    def __init__(self, dataset_size: int, batch_size: int, *, rank: int, world_size: int, seed: int,
                 shuffle: bool, drop_last: bool):
        self.dataset_size = _positive_int("dataset_size", dataset_size)
        self.world_size = _positive_int("world_size", world_size)
        if not isinstance(rank, int) or not 0 <= rank < world_size:
            raise ConfigError(f"rank: must be in [0, {world_size}) (got {rank!r})")
        self.rank, self.seed, self.shuffle, self.drop_last = rank, int(seed), shuffle, drop_last
        self.batch_size = _positive_int("batch_size", batch_size)  # per device; a slot may scale it
        self.epoch = 0
        self._resume = _Resume()  # where the current epoch starts (set by load_state_dict)
        self._pending = False  # the next pass starts at `_resume` (used up at its first batch)
        self._position = 0  # batches yielded so far in this epoch
        self.resharded: int | None = None  # the world size of a state saved with another one

    def _cycle(self) -> list[tuple[int, ClipShape]]:
        """(per-device batch size, shape) of each slot of this epoch, visited in turn."""
        raise NotImplementedError

    def _rank_count(self) -> int:
        """Clips this rank sees in one epoch."""
        return self.dataset_size // self.world_size

    def _order(self) -> list[int]:
        if self.shuffle:
            generator = torch.Generator().manual_seed(self.seed + self.epoch)
            return torch.randperm(self.dataset_size, generator=generator).tolist()
        return list(range(self.dataset_size))

    def _rank_indices(self, resume: _Resume) -> list[int]:
        """This rank's share of the permutation after the `resume.clips` already consumed."""
        return self._order()[resume.clips : self._usable(resume.clips)][self.rank :: self.world_size]

    def _usable(self, consumed: int = 0) -> int:
        """Where the shared-out part of the permutation ends, `consumed` clips in (every rank gets as many;
        the rest wait for another epoch)."""
        return consumed + (self.dataset_size - consumed) // self.world_size * self.world_size

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch (permutation and stage). Call before each epoch, as with DistributedSampler."""
        if epoch != self.epoch:
            self.epoch, self._resume, self._pending = epoch, _Resume(), False

    def _rotated_sizes(self, phase: int) -> list[int]:
        sizes = [size for size, _ in self._cycle()]
        phase %= len(sizes)
        return sizes[phase:] + sizes[:phase]

    def __len__(self) -> int:
        resume = self._resume
        rest = len(range(self.rank, self._usable(resume.clips) - resume.clips, self.world_size))
        return resume.position + count_batches(rest, self._rotated_sizes(resume.phase), self.drop_last)

    def __iter__(self) -> Iterator[DealtBatch]:
        self._position = self._resume.position if self._pending else 0
        return self._pass()

    def _pass(self) -> Iterator[DealtBatch]:
        # The resume point is used up at the first batch drawn, not at iter(): a multi-worker DataLoader
        # calls iter() twice per pass and throws the first iterator away.
        resume = self._resume if self._pending else _Resume()
        self._pending = False
        self._position = resume.position
        yield from self._batches(resume)

    def _batches(self, resume: _Resume) -> Iterator[DealtBatch]:
        indices, cycle = self._rank_indices(resume), self._cycle()
        offset = count = 0
        while offset < len(indices):
            size, shape = cycle[(resume.phase + count) % len(cycle)]
            chunk = indices[offset : offset + size]
            if len(chunk) < size and self.drop_last:
                return
            offset, count = offset + size, count + 1
            self._position = resume.position + count
            yield [(index, shape) for index in chunk]

    def _consumed(self, position: int) -> tuple[int, int]:
        """(clips of the permutation consumed by all ranks, slot of the next batch) after `position`
        batches of this epoch."""
        resume, cycle = self._resume, self._cycle()
        done = position - resume.position
        if done < 0:
            raise ConfigError(f"sampler: position {position} is before this epoch's resume point "
                              f"{resume.position}")
        per_rank = sum(cycle[(resume.phase + k) % len(cycle)][0] for k in range(done))
        clips = min(resume.clips + per_rank * self.world_size, self._usable(resume.clips))  # a partial last
        return clips, (resume.phase + done) % len(cycle)

    def state_dict(self, consumed: int | None = None) -> dict:
        """The position inside the epoch. With DataLoader workers the sampler runs ahead of the training
        loop, so pass `consumed`, the number of batches the loop has actually finished."""
        position = self._position if consumed is None else consumed
        clips, phase = self._consumed(int(position))
        return {"epoch": self.epoch, "position": int(position), "clips": clips, "phase": phase,
                "seed": self.seed, "dataset_size": self.dataset_size, "world_size": self.world_size}

    def load_state_dict(self, state: dict) -> None:
        """Resume: the next pass yields exactly the batches after `position` of the saved epoch.

        With another number of ranks, the clips the saved run had not reached are shared out among this
        run's ranks, the short cycle goes on from its slot, and the position is re-based so that the epoch
        ends at this world size's length (`resharded` then says from how many ranks).
        """
        for key in ("seed", "dataset_size"):
            if state.get(key) != getattr(self, key):
                raise ConfigError(f"sampler state: {key} was {state.get(key)!r}, this run has "
                                  f"{getattr(self, key)!r}; resume with the same setting")
        self.epoch = int(state["epoch"])
        self._resume, self._pending = _Resume(), True
        position, saved_world = int(state["position"]), state.get("world_size")
        if not 0 <= position <= len(self) and saved_world == self.world_size:
            raise ConfigError(f"sampler state: position {position} outside [0, {len(self)}]")
        self.resharded = saved_world if saved_world != self.world_size else None
        if "clips" not in state:  # saved before the position was global: same world size only
            if self.resharded:
                raise ConfigError(f"sampler state: saved with world_size {saved_world} by an older version; "
                                  f"resume with {saved_world} processes")
            clips, phase = self._consumed(position)
        else:
            clips, phase = int(state["clips"]), int(state["phase"])
        if not 0 <= clips <= self.dataset_size:
            raise ConfigError(f"sampler state: {clips} clips consumed outside [0, {self.dataset_size}]")
        self._resume = _Resume(clips, phase, position)
        if self.resharded:  # the same fraction of the epoch, counted in this world size's batches
            rest = len(self) - position
            self._resume = _Resume(clips, phase, max(0, self._full_length() - rest))
        self._position = self._resume.position

    @property
    def position(self) -> int:
        """Batches of this epoch dealt so far (where a resumed epoch starts, before its first pass)."""
        return self._position

    def epoch_batch_sizes(self) -> list[int]:
        """The per-device size of each of this epoch's `len(self)` batches: those before a resume point as
        a whole epoch at this world size would deal them, then those still to come."""
        resume, length = self._resume, len(self)
        before = [size for size, _ in self._cycle()] * (resume.position + 1)
        after = self._rotated_sizes(resume.phase) * (length - resume.position + 1)
        return before[: resume.position] + after[: length - resume.position]

    def _full_length(self) -> int:
        """Batches of a whole epoch at this world size."""
        return count_batches(self._rank_count(), [size for size, _ in self._cycle()], self.drop_last)


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

    def _usable(self, consumed: int = 0) -> int:
        return self.dataset_size if not self.drop_last else super()._usable(consumed)

    def _cycle(self) -> list[tuple[int, ClipShape]]:
        return [(self.batch_size, self.shape)]
