"""Batch sizes from measured cost: each shape gets the batch that makes a step cost what a full-shape step
costs, from a table of measured time (and memory) per clip, instead of the FLOP rule's batch ∝ 1 / (T·S²).

Pure Python (no torch). The table is plain numbers; reading a file into one happens outside multigrid/
(mgvideo/engine/cost_table.py reads `mgvideo profile --json` output).
"""

from __future__ import annotations

from dataclasses import dataclass

from mgvideo.errors import ScheduleError

# A measured batch never exceeds the FLOP rule's by more than this: a table taken on a loaded machine, or
# a shape the device runs pathologically fast, must not turn one stage into a few giant steps.
MAX_OVER_FLOPS = 4.0

Shape = tuple[int, int]  # (frames, crop)


@dataclass(frozen=True)
class CostTable:
    """Measured cost per clip at each (frames, crop): ms of a forward+backward, and optionally peak MB.

    Tuples of (frames, crop, value) rows, so that the table is hashable inside a frozen MultigridConfig;
    `from_dicts` builds one from plain dicts.
    """

    ms_per_clip: tuple[tuple[int, int, float], ...]
    mb_per_clip: tuple[tuple[int, int, float], ...] = ()
    source: str = "the cost table"  # named in errors: the file it came from

    @classmethod
    def from_dicts(cls, ms: dict[Shape, float], mb: dict[Shape, float] | None = None,
                   source: str = "the cost table") -> CostTable:
        """A table from {(T, S): ms per clip} and, optionally, {(T, S): peak MB per clip}."""
        for name, values in (("ms per clip", ms), ("MB per clip", mb or {})):
            bad = [shape for shape, v in values.items() if not v > 0]
            if bad:
                (t, s), value = bad[0], values[bad[0]]
                raise ScheduleError(f"cost_table: {source}: {name} must be > 0 (T={t}, S={s}: {value!r})")
        return cls(_rows(ms), _rows(mb or {}), source)

    def ms(self, frames: int, crop: int) -> float:
        """Measured ms per clip at (frames, crop); ScheduleError naming the shape when the table lacks it."""
        return self._lookup(self.ms_per_clip, frames, crop)

    def _lookup(self, rows: tuple[tuple[int, int, float], ...], frames: int, crop: int) -> float:
        for t, s, value in rows:
            if (t, s) == (frames, crop):
                return value
        raise ScheduleError(f"cost_table: {self.source} has no row for T={frames}, S={crop} (measure the "
                            "same recipe: mgvideo profile MODEL --config RECIPE --json)")

    def memory_cap(self, frames: int, crop: int, full: Shape) -> float:
        """The largest batch factor whose memory (linear in the batch) stays within the FLOP rule's hungriest
        shape in the table; infinite without memory figures. Per-clip MB from a peak that includes fixed
        overhead overstates a clip's share, so the cap errs on the safe side."""
        if not self.mb_per_clip:
            return float("inf")
        budget = max(mb * flop_factor((t, s), full) for t, s, mb in self.mb_per_clip)
        return budget / self._lookup(self.mb_per_clip, frames, crop)

    def batch_factor(self, frames: int, crop: int, full: Shape) -> int:
        """Batch multiplier of (frames, crop) relative to the full shape's batch: ms(full) / ms(shape),
        rounded to a whole multiple of the base batch (so whole clips and whole BN groups, as the FLOP
        rule's), at most `MAX_OVER_FLOPS` x the FLOP rule's and what the memory cap allows, at least 1."""
        ratio = self.ms(*full) / self.ms(frames, crop)
        cap = min(MAX_OVER_FLOPS * flop_factor((frames, crop), full), self.memory_cap(frames, crop, full))
        return max(1, min(int(round(ratio)), int(cap)))


def _rows(values: dict[Shape, float]) -> tuple[tuple[int, int, float], ...]:
    return tuple(sorted((int(t), int(s), float(v)) for (t, s), v in values.items()))


def flop_factor(shape: Shape, full: Shape) -> float:
    """The FLOP rule's unrounded batch multiplier: T0·S0² / (T·S²)."""
    return full[0] * full[1] ** 2 / (shape[0] * shape[1] ** 2)


def step_ms(table: CostTable, batch: int, frames: int, crop: int) -> float:
    """Predicted ms of one step of `batch` clips at (frames, crop)."""
    return batch * table.ms(frames, crop)
