"""Where a clip's loading time goes (for `mgvideo bench data`): a dataset whose readers time their own
stages, read in-process, and a one-worker loader for the rate a worker really gives."""

from __future__ import annotations

import time

import numpy as np

from mgvideo.data.datasets import VideoClipDataset
from mgvideo.data.loader import build_loader, collate
from mgvideo.multigrid.schedule import ClipShape

# open + demux + seek, decode, colour conversion + resize (in the decoder), crop/flip/tensor and the rest of
# the item, stacking a batch, and what a worker process adds (sending the batch, waiting on it)
STAGES = ("demux_seek", "decode", "convert_resize", "augment", "collate", "transfer")


class TimedDataset(VideoClipDataset):
    """A VideoClipDataset whose readers add their stage times to `timer`."""

    def __init__(self, source: VideoClipDataset) -> None:
        self.__dict__.update(source.__dict__)
        self.timer: dict[str, float] = {}
        self.copies: dict[int, int] = {}  # store copy side -> clips read from it

    def _open(self, record):
        began = time.perf_counter()
        reader = super()._open(record)
        self.timer["demux"] = self.timer.get("demux", 0.0) + time.perf_counter() - began
        reader.timer = self.timer
        self._last = reader
        return reader

    def __getitem__(self, item):
        sample = super().__getitem__(item)
        side = getattr(self._last, "last_side", 0)
        if side:
            self.copies[side] = self.copies.get(side, 0) + 1
        return sample


def _batches(dataset: VideoClipDataset, shape: ClipShape, batch: int, clips: int, seed: int = 1) -> list:
    rng = np.random.default_rng(seed)
    count = max(1, -(-clips // batch))
    return [[(int(i), shape) for i in rng.integers(0, len(dataset), batch)] for _ in range(count)]


def breakdown(dataset: VideoClipDataset, shape: ClipShape, batch: int, clips: int) -> dict:
    """Milliseconds per clip in each stage but `transfer`, read in this process (after one warm-up clip)."""
    timed = TimedDataset(dataset)
    timed[(0, shape)]
    timed.timer.clear()
    timed.copies.clear()
    batch = min(batch, clips)
    total = collating = 0.0
    n = 0
    for items in _batches(timed, shape, batch, clips):
        began = time.perf_counter()
        samples = [timed[item] for item in items]
        middle = time.perf_counter()
        collate(samples)
        collating += time.perf_counter() - middle
        total += middle - began
        n += len(samples)
    t = timed.timer
    reader = t.get("demux", 0.0) + t.get("decode", 0.0) + t.get("convert", 0.0)
    ms = {"demux_seek": t.get("demux", 0.0), "decode": t.get("decode", 0.0),
          "convert_resize": t.get("convert", 0.0), "augment": total - reader, "collate": collating}
    out = {k: 1e3 * v / n for k, v in ms.items()}
    out["copies"] = dict(sorted(timed.copies.items()))
    return out


def per_worker_rate(dataset: VideoClipDataset, shape: ClipShape, batch: int, clips: int) -> float:
    """Clips/s that one loader worker process delivers at this shape (after a warm-up batch)."""
    batch = min(batch, clips)
    batches = _batches(dataset, shape, batch, clips + batch, seed=2)
    iterator = iter(build_loader(dataset, batches, workers=1, seed=0))
    next(iterator)
    began = time.perf_counter()
    n = sum(len(b) for b in iterator)
    rate = n / (time.perf_counter() - began)
    del iterator
    return rate
