"""Training figures between two log points: summed on the device per clip shape, reduced over the ranks
with one collective, and turned into `metrics.jsonl` records every `train.log_period` iterations.

Only host-side facts (shapes, batch sizes, wall-clock) are kept in Python; the loss and the hits stay
device tensors until `close`, which is the window's one sync.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from mgvideo.engine import distributed as D
from mgvideo.engine.records import TrainRecord
from mgvideo.errors import MgvideoError


class NonFiniteLossError(MgvideoError, FloatingPointError):
    """The loss became NaN or infinite; the message names the steps and the clip shapes."""


@dataclass
class _Shape:
    """One (stage, T, S) of the window: device sums [loss x clips, hits, clips] and host-side counts."""

    sums: torch.Tensor
    iterations: int = 0
    seconds: float = 0.0  # host time of its iterations (waiting for data included)
    waited: float = 0.0


@dataclass
class LogWindow:
    """The iterations since the last log point."""

    device: torch.device
    shapes: dict[tuple[int, int, int], _Shape] = field(default_factory=dict)
    skipped: int = 0  # this rank's unreadable videos
    first_step: int = 0
    lr: float = 0.0

    def add(self, step: int, stage: int, clips: torch.Tensor, loss: torch.Tensor, correct: torch.Tensor,
            skipped: int, lr: float, seconds: float, waited: float) -> None:
        """Account one finished iteration (`step` counts from 1) without waiting for the device."""
        if not self.shapes:
            self.first_step = step
        n, _, frames, crop, _ = clips.shape
        key = (stage, frames, crop)
        if key not in self.shapes:
            self.shapes[key] = _Shape(torch.zeros(3, device=self.device))
        entry = self.shapes[key]
        # ones_like * n is a device fill; a tensor made from the host number would copy and sync
        count = torch.ones_like(loss, dtype=torch.float) * n
        entry.sums += torch.stack([loss.float() * n, correct.float(), count])
        entry.iterations += 1
        entry.seconds += seconds
        entry.waited += waited
        self.skipped += skipped
        self.lr = lr

    def __len__(self) -> int:
        return sum(s.iterations for s in self.shapes.values())

    def close(self, info: D.DistInfo, last_step: int, epoch: float, clock: Callable[[], float],
              flag: bool = False) -> tuple[list[TrainRecord], int, bool]:
        """Reduce the window over the ranks (one collective) and start a new one.

        Returns one record per shape (at `last_step`, `epoch` and the `clock` after the reduce), the skipped
        videos of all ranks, and whether any rank raised `flag` (rank 0's 'checkpoint now' rides along).
        Raises NonFiniteLossError for a NaN or infinite loss.
        """
        keys = list(self.shapes)  # the same order on every rank: the sampler is identical everywhere
        packed = torch.cat([self.shapes[k].sums for k in keys]
                           + [torch.tensor([float(self.skipped), float(flag)], device=self.device)])
        started = time.perf_counter()
        values = D.all_reduce_tensor(packed.double(), info).tolist()
        # The host ran ahead of the device by what this sync waited for: spread it over the shapes.
        busy = sum(s.seconds for s in self.shapes.values())
        stretch = (busy + time.perf_counter() - started) / max(busy, 1e-9)
        stamp = {"step": last_step, "epoch": round(epoch, 5), "time": round(clock(), 3)}
        records = []
        for i, key in enumerate(keys):
            loss_sum, hits, clips = values[3 * i: 3 * i + 3]
            if not math.isfinite(loss_sum):
                self._fail(keys, last_step, loss_sum)
            records.append(self._record(key, self.shapes[key], loss_sum, hits, clips, stretch, stamp))
        skipped, raised = int(values[-2]), values[-1] > 0
        self.shapes, self.skipped, self.first_step = {}, 0, 0
        return records, skipped, raised

    def _record(self, key: tuple[int, int, int], entry: _Shape, loss_sum: float, hits: float, clips: float,
                stretch: float, stamp: dict[str, float]) -> TrainRecord:
        stage, frames, crop = key
        seconds = max(entry.seconds * stretch, 1e-9)  # host times, scaled to the synced wall-clock
        return TrainRecord(stage=stage, frames=frames, crop=crop, iterations=entry.iterations,
                           batch=int(clips), loss=loss_sum / clips, top1=round(100.0 * hits / clips, 3),
                           lr=self.lr, clips_per_s=round(clips / seconds, 2),
                           data_wait=round(entry.waited / max(entry.seconds, 1e-9), 4), **stamp)

    def _fail(self, keys: list[tuple[int, int, int]], last_step: int, value: float) -> None:
        shapes = ", ".join(f"{f}x{c}x{c} (stage {s})" for s, f, c in keys)
        raise NonFiniteLossError(
            f"non-finite loss ({value}) in steps {self.first_step}-{last_step}, clip shapes {shapes}; "
            "stopping before any checkpoint of these steps is written")
