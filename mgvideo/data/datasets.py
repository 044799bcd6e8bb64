"""`VideoClipDataset`: receives `(index, ClipShape)` and returns exactly the clip that shape asks for.

Bad videos never stop training: a video that cannot be decoded is logged once, counted, and replaced by
another (seeded) index; only after `max_retries` bad videos in a row does it raise VideoDecodeError. A
truncated video gives clips from the frames that decode; it is logged once and flagged in `truncated`.
Validation and test never substitute: a view that cannot be read comes back as a blank clip whose index is
`FAILED`, and the evaluation leaves it out (engine/evaluate.py drops, counts and names such videos).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import av
import numpy as np
import torch
from torch.utils.data import Dataset

import mgvideo.data.sampling as S
from mgvideo.data.annotations import Annotations, VideoRecord
from mgvideo.data.cache import FrameCache, storage_side
from mgvideo.data.decode import (
    FrameListReader,
    VideoReader,
    open_video,
    scaled_size,
    select_backend,
    truncation,
)
from mgvideo.data.store import NO_ENTRY, STALE, StoreVideo, VideoStore
from mgvideo.errors import ConfigError, VideoDecodeError

if TYPE_CHECKING:
    from mgvideo.multigrid.schedule import ClipShape

log = logging.getLogger(__name__)
MODES = ("train", "val", "test")
REFERENCE_JITTER = (256 / 224, 320 / 224)  # the reference's short-side range at crop 224, as crop ratios
FAILED = -1  # `Sample.index` of a val/test view that could not be read
DECODE_ERRORS = (VideoDecodeError, av.error.FFmpegError, OSError, EOFError)


def largest_short_side(crop: int, test_size: int = 0) -> int:
    """The largest short side any clip of a recipe with full crop `crop` asks for: the training jitter's
    upper bound, or the test size (what a frame cache must hold)."""
    return max(round(crop * REFERENCE_JITTER[1]), crop, test_size)


def resize_frames(frames: np.ndarray, short_side: int) -> np.ndarray:
    """Resize uint8 (T, H, W, C) frames to short side `short_side` (bilinear, antialiased) on torch's uint8
    path: about 15x faster than through float, and within one level of it."""
    t, h, w, c = frames.shape
    size = scaled_size(h, w, short_side)
    if size == (h, w):
        return frames
    x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2)  # NCHW view, channels-last
    x = torch.nn.functional.interpolate(x, size=size, mode="bilinear", antialias=True, align_corners=False)
    return x.permute(0, 2, 3, 1).numpy()


@dataclass
class Sample:
    """One clip: uint8 (C, T, H, W), an int label (or float multi-hot), the video index actually used
    (`FAILED` for an unreadable val/test view), and how many bad videos were skipped to produce it."""

    clip: torch.Tensor
    label: int | torch.Tensor
    index: int
    skipped: int = 0
    shape: ClipShape | None = None  # the shape asked for: collation hands it to the batch


class VideoClipDataset(Dataset):
    """Clips from annotated videos, at whatever shape the batch sampler asks for.

    mode 'train': random rate in [shape.min_rate, shape.max_rate], random start, short-side jitter whose
    lower bound scales with shape.crop / shape.base_crop, random crop, optional flip.
    mode 'val': one deterministic centre clip (rate shape.min_rate, short side at the jitter's lower bound).
    mode 'test': `test_clips` x `test_crops` views per video at `test_size`; item i is view i % views of
    video i // views, and `Sample.index` is the video index, for aggregation.
    `sampling='segment'` takes T segments over the whole video instead (Something-Something).
    Call `set_epoch` before each epoch: randomness derives from (seed, epoch, item), also in workers.

    Resizing: by default in the decoder, straight to the clip's short side (cheapest for coarse shapes).
    `decode_short_side` decodes at that fixed size instead (or the video's own, if smaller) and resizes in
    torch; a `cache` (data/cache.py) implies its own size, so cached and decoded clips are equal. A `store`
    (data/store.py, `data.store`) serves each clip from the smallest transcoded copy that covers its short
    side; a video it lacks, or whose entry is stale, is read from its original, and that clip is counted in
    `store_misses` (a cache, if given, takes precedence).
    """

    def __init__(self, annotations: Annotations, shape: ClipShape, *, mode: str = "train",
                 sampling: str = "rate", flip: bool = True, jitter: tuple[int, int] | None = None,
                 test_clips: int = 10, test_crops: int = 3, test_size: int | None = None,
                 decoder_resize: bool = True, seed: int = 0, max_retries: int = 10,
                 backend: str = "pyav", decode_short_side: int | None = None,
                 cache: FrameCache | None = None, store: VideoStore | None = None) -> None:
        if mode not in MODES:
            raise ConfigError(f"data.mode: {mode!r} is not one of {MODES}")
        if sampling not in ("rate", "segment"):
            raise ConfigError(f"data.sampling: {sampling!r} is not 'rate' or 'segment'")
        if test_crops not in (1, 3) or test_clips < 1:
            raise ConfigError(f"test views: need test_clips >= 1 and test_crops 1 or 3, got "
                              f"{test_clips} x {test_crops}")
        if not annotations.records:
            raise ConfigError("dataset: the annotation file lists no videos")
        self.records: list[VideoRecord] = annotations.records
        self.num_classes, self.multi_label = annotations.num_classes, annotations.multi_label
        self.shape, self.mode, self.sampling, self.flip = shape, mode, sampling, flip
        base = shape.base_crop
        self.jitter = jitter or (round(base * REFERENCE_JITTER[0]), round(base * REFERENCE_JITTER[1]))
        self.test_clips, self.test_crops = test_clips, test_crops
        self.test_size = test_size or base
        self.decoder_resize, self.seed, self.max_retries = decoder_resize, seed, max_retries
        self.backend = select_backend(backend)
        self.cache, self.store = cache, store
        self.decode_short_side = cache.short_side if cache is not None else decode_short_side
        self._epoch = torch.zeros((), dtype=torch.int64).share_memory_()  # seen by persistent workers
        self._logged: set[str] = set()
        # Videos found truncated, by any worker (shared flags, so that the trainer can count them).
        self.truncated = torch.zeros(len(self.records), dtype=torch.bool).share_memory_()
        # Videos found unreadable, by any worker: each is warned about once (not once per worker) and named
        # in the run's summary. `warn = False` leaves the naming to the caller (`bench data`'s table).
        self.unreadable = torch.zeros(len(self.records), dtype=torch.bool).share_memory_()
        self.warn = True
        self.missing: list[str] = []  # listed videos found neither on disk nor in the store at start
        # With a store: clips of each video read from its original instead (by any worker; the trainer
        # diffs the total per epoch, `store_misses.zero_()` resets it), and whether its entry was stale
        # (else it had none). The first miss is warned about once, the rest are counted.
        self.store_misses = torch.zeros(len(self.records), dtype=torch.int32).share_memory_()
        self.store_stale = torch.zeros(len(self.records), dtype=torch.bool).share_memory_()
        self._miss_warned = torch.zeros((), dtype=torch.bool).share_memory_()

    @property
    def num_videos(self) -> int:
        return len(self.records)

    @property
    def views(self) -> int:
        return self.test_clips * self.test_crops if self.mode == "test" else 1

    def __len__(self) -> int:
        return self.num_videos * self.views

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose random draws the next items use (shared with the worker processes)."""
        self._epoch.fill_(epoch)

    def __getitem__(self, item: int | tuple[int, Any]) -> Sample:
        index, shape = item if isinstance(item, tuple) else (item, self.shape)
        sample = self._sample(index, shape)
        sample.shape = shape
        return sample

    def _sample(self, index: int, shape: ClipShape) -> Sample:
        if not 0 <= index < len(self):
            raise IndexError(f"item {index} outside a dataset of {len(self)}")
        video, view = divmod(int(index), self.views)
        rng = np.random.default_rng([self.seed, int(self._epoch), int(index)])
        if self.mode != "train":
            return self._eval_item(video, view, shape, rng)
        bad: list[str] = []
        tried = {video}
        while len(bad) <= self.max_retries:
            record = self.records[video]
            try:
                clip, label = self._load(record, shape, rng, view, video)
                return Sample(clip, label, video, len(bad))
            except DECODE_ERRORS as err:
                self._report(record, err, video)
                bad.append(record.path)
            video = int(rng.integers(self.num_videos))
            while video in tried and len(tried) < self.num_videos:  # prefer a video not yet tried
                video = int(rng.integers(self.num_videos))
            tried.add(video)
        raise VideoDecodeError(f"{len(bad)} unreadable videos in a row (max_retries={self.max_retries}): "
                               + ", ".join(bad))

    def _eval_item(self, video: int, view: int, shape: ClipShape, rng: np.random.Generator) -> Sample:
        """A val/test view of `video` itself, never of another video: an unreadable one is a blank clip of
        the expected size (so the batch still stacks) with index `FAILED`."""
        record = self.records[video]
        try:
            clip, label = self._load(record, shape, rng, view, video)
            return Sample(clip, label, video)
        except DECODE_ERRORS as err:
            self._report(record, err, video)
        side = shape.crop if self.mode == "val" else self.test_size
        blank = torch.zeros((3, shape.frames, side, side), dtype=torch.uint8)
        label = torch.zeros(self.num_classes) if self.multi_label else FAILED
        return Sample(blank, label, FAILED, skipped=1)

    def _report(self, record: VideoRecord, err: Exception, video: int) -> None:
        """Flag a bad file and warn once about it, whichever process reads it first."""
        if record.path not in self._logged and not self.unreadable[video]:
            self.unreadable[video] = True
            if self.warn:
                log.warning("skipping unreadable video %s (%s:%d): %s", record.path, record.source,
                            record.line, err)
        self._logged.add(record.path)

    def unreadable_paths(self) -> list[str]:
        """The videos found unreadable so far, by this process or any of its loader workers."""
        return [self.records[i].path for i in self.unreadable.nonzero().flatten().tolist()]

    def store_miss_paths(self, limit: int | None = None, since: torch.Tensor | None = None) -> list[str]:
        """The videos (in list order, at most `limit`) with clips read from their originals although a store
        is set, by this process or its workers; with `since` (an earlier `store_misses.clone()`), only those
        with misses after it."""
        counts = self.store_misses if since is None else self.store_misses - since
        return [self.records[i].path for i in (counts > 0).nonzero().flatten()[:limit].tolist()]

    def _count_store_miss(self, record: VideoRecord, reader: VideoReader, video: int) -> None:
        """Count (and warn about the first, in any process) a clip the store should have served."""
        served = isinstance(reader, StoreVideo) or self.cache is not None or record.frame_paths is not None
        if self.store is None or served:
            return
        status = self.store.find(record.path)[1]
        self.store_misses[video] += 1
        self.store_stale[video] = status == STALE
        if self.warn and not self._miss_warned:
            self._miss_warned.fill_(True)
            why = ("its entry is stale: the original changed since `data prepare`" if status == STALE else
                   f"the store has no entry for it under data.root={self.store.root}")
            log.warning("store %s: reading %s (%s:%d) from its original (%s); further such clips are "
                        "counted, not warned about", self.store.directory, record.path, record.source,
                        record.line, why)

    def _note_truncation(self, record: VideoRecord, reader: VideoReader, video: int) -> None:
        """Flag (and warn once about) a video whose reads found fewer frames than its container states."""
        problem = truncation(reader)
        if problem is not None and not self.truncated[video]:
            self.truncated[video] = True
            log.warning("video %s (%s:%d) is %s; its clips come from those", record.path, record.source,
                        record.line, problem)

    def _open(self, record: VideoRecord) -> VideoReader:
        if record.frame_paths is not None:
            return FrameListReader(record.frame_paths)
        if self.cache is not None:
            return self.cache.open(record.path)
        if self.store is None:
            return open_video(record.path, self.backend)
        stored, status = self.store.find(record.path)
        if stored is not None:
            return stored
        try:
            return open_video(record.path, self.backend)
        except VideoDecodeError as err:
            if status == NO_ENTRY and not os.path.exists(record.path):
                raise VideoDecodeError(f"{record.path}: the store {self.store.directory} has no entry for it "
                                       "and the original is missing") from err
            raise

    def _decode_side(self, reader: VideoReader, short: int) -> int | None:
        """The short side to decode at: fixed (with a cache), the clip's own, or the video's."""
        if self.decode_short_side is not None:
            return storage_side(reader.height, reader.width, self.decode_short_side)
        return short if self.decoder_resize else None

    def _load(self, record: VideoRecord, shape: ClipShape, rng: np.random.Generator,
              view: int, video: int) -> tuple[torch.Tensor, int | torch.Tensor]:
        reader = self._open(record)
        try:
            indices = self._indices(reader.num_frames, shape, rng, view // self.test_crops)
            short = self._short_side(shape, rng)
            frames = reader.read(indices, self._decode_side(reader, short))
            if truncation(reader) and max(indices) >= reader.num_frames:  # the read found the real end
                indices = self._indices(reader.num_frames, shape, rng, view // self.test_crops)
                frames = reader.read(indices, self._decode_side(reader, short))
        finally:
            reader.close()
        self._note_truncation(record, reader, video)
        self._count_store_miss(record, reader, video)
        frames = resize_frames(frames, short)  # a no-op where the decoder already did it
        frames = self._crop(frames, shape, rng, view % self.test_crops)
        return S.to_tensor(frames), self._label(record, indices)

    def _indices(self, num_frames: int, shape: ClipShape, rng: np.random.Generator, clip: int) -> np.ndarray:
        train = self.mode == "train"
        if self.sampling == "segment":
            return S.segment_indices(num_frames, shape.frames, rng if train else None)
        if train:
            return S.random_clip_indices(rng, num_frames, shape.frames, shape.min_rate, shape.max_rate)
        if self.mode == "val":
            return S.uniform_clip_indices(num_frames, shape.frames, shape.min_rate, 0, 1)
        return S.uniform_clip_indices(num_frames, shape.frames, shape.min_rate, clip, self.test_clips)

    def _short_side(self, shape: ClipShape, rng: np.random.Generator) -> int:
        if self.mode == "train":
            return S.random_short_side(rng, shape.crop, shape.base_crop, self.jitter, shape.same_view)
        if self.mode == "val":
            return S.scale_range(shape.crop, shape.base_crop, self.jitter)[0]
        return self.test_size

    def _crop(self, frames: np.ndarray, shape: ClipShape, rng: np.random.Generator, pos: int) -> np.ndarray:
        if self.mode == "train":
            return S.maybe_flip(rng, S.random_crop(rng, frames, shape.crop), self.flip)
        if self.mode == "val":
            return S.spatial_crop(frames, shape.crop, 1)
        return S.spatial_crop(frames, self.test_size, pos if self.test_crops == 3 else 1)

    def _label(self, record: VideoRecord, indices: Sequence[int]) -> int | torch.Tensor:
        if not self.multi_label:
            return int(record.label)
        classes = record.label
        if record.frame_labels:  # Charades: the union over the sampled span only
            last = len(record.frame_labels) - 1
            lo, hi = min(int(min(indices)), last), min(int(max(indices)), last)
            classes = {c for labels in record.frame_labels[lo:hi + 1] for c in labels}
        target = torch.zeros(self.num_classes, dtype=torch.float32)
        target[list(classes)] = 1.0
        return target
