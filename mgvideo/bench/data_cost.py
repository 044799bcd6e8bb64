"""Where a clip's loading time goes (for `mgvideo bench data`): a dataset whose readers time their own
stages. Times are CPU seconds of the reading thread (decoding runs single-threaded), so clips/s is what one
worker process gives on a core of its own, whatever else the machine runs."""

from __future__ import annotations

import time

import numpy as np

from mgvideo.data.datasets import VideoClipDataset
from mgvideo.data.loader import collate
from mgvideo.multigrid.schedule import ClipShape

# open + demux + seek, decode, colour conversion + resize (in the decoder), crop/flip/tensor and the rest of
# the item, stacking a batch, and the worker's copy of the batch into shared memory for the main process
STAGES = ("demux_seek", "decode", "convert_resize", "augment", "collate", "transfer")


class TimedDataset(VideoClipDataset):
    """A VideoClipDataset whose readers add their stage times to `timer`."""

    def __init__(self, source: VideoClipDataset) -> None:
        self.__dict__.update(source.__dict__)
        self.timer: dict[str, float] = {}
        self.copies: dict[int, int] = {}  # store copy side -> clips read from it

    def _open(self, record):
        began = time.thread_time()
        reader = super()._open(record)
        self.timer["demux"] = self.timer.get("demux", 0.0) + time.thread_time() - began
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
    """CPU milliseconds per clip in each stage (after one warm-up clip), and the store copies read."""
    timed = TimedDataset(dataset)
    timed[(0, shape)]
    timed.timer.clear()
    timed.copies.clear()
    batch = min(batch, clips)
    total = collating = sharing = 0.0
    n = 0
    for items in _batches(timed, shape, batch, clips):
        began = time.thread_time()
        samples = [timed[item] for item in items]
        middle = time.thread_time()
        stacked = collate(samples)
        done = time.thread_time()
        stacked.clips.share_memory_()  # what sending it from a worker costs: a copy into shared memory
        sharing += time.thread_time() - done
        collating += done - middle
        total += middle - began
        n += len(samples)
    t = timed.timer
    reader = t.get("demux", 0.0) + t.get("decode", 0.0) + t.get("convert", 0.0)
    ms = {"demux_seek": t.get("demux", 0.0), "decode": t.get("decode", 0.0),
          "convert_resize": t.get("convert", 0.0), "augment": total - reader, "collate": collating,
          "transfer": sharing}
    out = {k: 1e3 * v / n for k, v in ms.items()}
    out["copies"] = dict(sorted(timed.copies.items()))
    return out
