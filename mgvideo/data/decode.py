"""Video decoding: a small `VideoReader` protocol, a PyAV reader, and an optional torchcodec one.

A reader maps frame indices on a nominal timeline (index i is at time i / fps) to RGB frames. It decodes only
the window the indices need (seek to the keyframe before it, stop after it) and can resize in the decoder,
which is what makes coarse multigrid shapes cheap. Containers that lie about or lack their frame count,
duration or rate are handled by estimating, and by clamping to the frames that really exist. A damaged
stream gives what decodes: a packet that fails to decode is skipped and noted in `errors`, and a stream
that ends early (a truncated file) shortens `num_frames`, which `truncation` then reports.
"""

from __future__ import annotations

import importlib
import os
import time
from collections.abc import Callable, Sequence
from typing import Protocol

import av
import numpy as np

from mgvideo.errors import ConfigError, VideoDecodeError

BACKENDS = ("auto", "pyav", "torchcodec")
_FALLBACK_FPS = 30.0


class VideoReader(Protocol):
    """What the dataset needs from a decoder."""

    path: str
    fps: float
    num_frames: int  # frames on the nominal timeline; shrinks when a read finds the stream ends early
    stated_frames: int  # what the container said (or implied) before anything was decoded
    duration: float
    height: int
    width: int

    def read(self, indices: Sequence[int], short_side: int | None = None) -> np.ndarray:
        """Frames at `indices` (clamped to the video) as uint8 (T, H, W, 3), displayed upright; with
        `short_side`, resized in the decoder so that the shorter side has that length."""
        ...

    def close(self) -> None: ...


def scaled_size(height: int, width: int, short_side: int) -> tuple[int, int]:
    """The (h, w) that gives the short side `short_side` and keeps the aspect ratio."""
    if height <= width:
        return short_side, max(1, round(width * short_side / height))
    return max(1, round(height * short_side / width)), short_side


TRUNCATION_SLACK = 0.02  # a frame count may be estimated: fewer than 2 % (and 2 frames) missing is not damage


def truncation(reader: VideoReader) -> str | None:
    """'container says 75 frames, 23 decode' when `reader` has found its stream to end well short of what
    the container stated, else None. Only what reads so far have reached is known."""
    stated, found = reader.stated_frames, reader.num_frames
    if stated - found <= max(2, TRUNCATION_SLACK * stated):
        return None
    return f"truncated: container says {stated} frames, {found} decode"


def _check_file(path: str) -> None:
    if not os.path.exists(path):
        raise VideoDecodeError(f"{path}: file not found")
    if os.path.getsize(path) == 0:
        raise VideoDecodeError(f"{path}: file is empty (0 bytes)")


class PyAVReader:
    """A `VideoReader` over PyAV: single-threaded decoding and RGB conversion by default, and non-reference
    frames that no index shows are not decoded.

    One thread: a loader runs one worker per core, and even alone on 2 cores FFmpeg's frame or slice
    threading decoded a 340x256 H.264 video slower (300 frames: 185 ms with 1 thread, 214 AUTO, 237 SLICE,
    302 FRAME); swscale's threading costs ~3x at 128x128. Skipping non-reference frames (x264's B-frames
    without b-pyramid references) saved 32 % of a full decode (126 ms instead of 185); it is done frame by
    frame, only for frames that are not picked, and only where the stream's timestamps are regular, so a
    picked frame is never skipped (see README, "Decoder options").
    """

    def __init__(self, path: str, threads: int = 1) -> None:
        self.path = str(path)
        self.threads = threads  # decoder threads; 0: FFmpeg's choice (frame + slice threading)
        self.display_hw: tuple[int, int] | None = None  # scale as if frames were this (h, w); see store.py
        self.sparse_gop = 0  # > 0: keyframes every this many frames, no B-frames: skip unneeded packets
        self._needed: set[int] | None = None
        # set by `bench data`: CPU seconds of this thread per stage (a loaded machine does not inflate them)
        self.timer: dict[str, float] | None = None
        self._open()
        self.height, self.width = self._stream.height, self._stream.width
        self.fps = self._guess_fps()
        self.duration, self.num_frames = self._guess_length()
        self.stated_frames = self.num_frames
        self.errors: list[str] = []  # decode errors met so far (their packets were skipped)
        self._start = float(self._stream.start_time * self._stream.time_base) if (
            self._stream.start_time is not None) else 0.0
        # Frame skipping needs a regular timeline (stated frame count = duration x rate: no gaps, so a
        # frame's index is its timestamp x fps) and no frame threading (the setting must apply per packet).
        self.skip_nonref = self.threads == 1 and self._stream.frames > 0 and abs(
            self._stream.frames - self.duration * self.fps) <= 1
        self._picked: set[int] | None = None

    def _open(self) -> None:
        try:
            self._container = av.open(self.path)
        except (av.error.FFmpegError, OSError, UnicodeDecodeError, ValueError) as err:
            _check_file(self.path)  # a missing or empty file, said plainly (looked at only on failure)
            raise VideoDecodeError(f"{self.path}: cannot open as a video ({err})") from err
        if not self._container.streams.video:
            self._container.close()
            raise VideoDecodeError(f"{self.path}: no video stream")
        self._stream = self._container.streams.video[0]
        if self.threads == 1:  # no frame-threading delay: what sparse decoding and 1-core workers want
            self._stream.thread_type, self._stream.codec_context.thread_count = "NONE", 1
        else:
            self._stream.thread_type = "AUTO"
            self._stream.codec_context.thread_count = self.threads
        self._fresh = True  # nothing read yet: decoding can start without a seek

    def _rewind(self) -> None:
        """Back to the start; reopening is the one way that works for every demuxer (image2 cannot
        seek to 0), and costs about as much as a seek."""
        if not self._fresh:
            self._container.close()
            self._open()

    def _guess_fps(self) -> float:
        for rate in (self._stream.average_rate, self._stream.guessed_rate, self._stream.base_rate):
            if rate is not None and 0 < float(rate) < 1000:
                return float(rate)
        return _FALLBACK_FPS

    def _guess_length(self) -> tuple[float, int]:
        """Duration and frame count from the stream, else the container, else the frame count; may be
        wrong for a damaged file, which `read` tolerates."""
        stream, duration = self._stream, 0.0
        if stream.duration is not None and stream.duration > 0:
            duration = float(stream.duration * stream.time_base)
        elif self._container.duration is not None and self._container.duration > 0:
            duration = self._container.duration / 1_000_000
        frames = int(stream.frames or 0)
        if frames <= 0:
            frames = max(1, round(duration * self.fps)) if duration > 0 else self._count_packets()
        if duration <= 0:
            duration = frames / self.fps
        return duration, frames

    def _count_packets(self) -> int:
        """The frame count by demuxing (no decoding); only for files that state neither count nor length."""
        self._fresh = False
        count = sum(1 for p in self._container.demux(self._stream) if p.size > 0)
        self._rewind()
        return max(1, count)

    def read(self, indices: Sequence[int], short_side: int | None = None) -> np.ndarray:
        """Decode the frames at `indices` (any order, repeats allowed), clamped to the video. Index i shows
        the last frame that starts at or before time (i + 0.5) / fps, so variable frame rates work."""
        idx = np.clip(np.asarray(indices, dtype=np.int64), 0, self.num_frames - 1)
        if idx.size == 0:
            raise VideoDecodeError(f"{self.path}: no frame indices requested")
        targets, where = np.unique((idx + 0.5) / self.fps, return_inverse=True)
        self._picked = set(np.unique(idx).tolist()) if self.skip_nonref else None
        if self.sparse_gop > 0:  # each target needs its GOP's frames from the keyframe up to it
            g = self.sparse_gop
            self._needed = {n for i in np.unique(idx).tolist() for n in range(i - i % g, i + 1)}
        try:
            picked, last, ended = self._decode_targets(targets, short_side, seek=True)
            if picked is None:  # nothing from the seek point on: the window is past the real end
                picked, last, ended = self._decode_targets(targets, short_side, seek=False)
        except av.error.FFmpegError as err:
            raise VideoDecodeError(f"{self.path}: decoding failed ({err})") from err
        if picked is None:
            raise VideoDecodeError(f"{self.path}: no decodable frames")
        if ended and last * self.fps < idx.max() - 0.5:  # the stream ended early: learn its real length
            self.num_frames = int(round(last * self.fps)) + 1
        return np.stack([picked[k] for k in where.reshape(-1)])

    def _decode_targets(self, targets: np.ndarray, short_side: int | None, seek: bool):
        """Seek to the keyframe before the first target and decode until past the last; only the frames
        picked are converted to RGB. Returns (one array per target, last frame time, reached the end)."""
        stream, tb = self._stream, self._stream.time_base
        start = targets[0] - 1.0 / self.fps
        if seek and start > 0 and tb:
            began = time.thread_time()
            self._container.seek(int((start + self._start) / tb), stream=stream, backward=True)
            self._add("demux", began)
        else:
            self._rewind()
            stream, tb = self._stream, self._stream.time_base
        self._fresh = False
        picked: list[np.ndarray] = [None] * len(targets)
        prev, prev_rgb, last, j = None, None, 0.0, 0
        for n, frame in enumerate(self._frames(stream)):
            t = (float(frame.pts * tb) - self._start) if frame.pts is not None else n / self.fps
            while j < len(targets) and targets[j] < t:  # this frame starts after target j: prev is its pick
                if prev_rgb is None:
                    prev_rgb = self._to_rgb(prev if prev is not None else frame, short_side)
                picked[j], j = prev_rgb, j + 1
            if j == len(targets):
                return picked, t, False
            prev, prev_rgb, last = frame, None, t
        if prev is None:
            return None, 0.0, True
        rgb = self._to_rgb(prev, short_side)
        picked[j:] = [rgb] * (len(targets) - j)
        return picked, last, True

    def _frames(self, stream):
        """The stream's frames from the current position; a packet that fails to decode is skipped and
        noted (the decoder resynchronises at the next good one), a demuxer error ends the stream."""
        packets = self._container.demux(stream)
        needed, last = self._needed, max(self._needed) if self._needed else 0
        picked, context, skipping = self._picked, stream.codec_context, False
        context.skip_frame = "DEFAULT"  # a previous read may have left it skipping
        while True:
            began = time.thread_time()
            try:
                packet = next(packets)
            except StopIteration:
                return
            except av.error.FFmpegError as err:
                self._note(err)
                return
            finally:
                self._add("demux", began)
            if needed is not None and packet.pts is not None:
                n = round(float(packet.pts * stream.time_base) * self.fps)
                if n > last:  # past every needed frame (no decoder delay: thread_count 1)
                    return
                if n not in needed:
                    continue
            if picked is not None and packet.pts is not None:  # decode a non-reference frame only if picked
                skip = round((float(packet.pts * stream.time_base) - self._start) * self.fps) not in picked
                if skip != skipping:
                    context.skip_frame, skipping = ("NONREF" if skip else "DEFAULT"), skip
            began = time.thread_time()
            try:
                frames = packet.decode()
            except av.error.FFmpegError as err:
                self._note(err)
                continue
            finally:
                self._add("decode", began)
            yield from frames

    def _add(self, stage: str, began: float) -> None:
        if self.timer is not None:
            self.timer[stage] = self.timer.get(stage, 0.0) + time.thread_time() - began

    def _note(self, err: Exception) -> None:
        if len(self.errors) < 100:  # a badly broken file can fail on every packet
            self.errors.append(str(err))

    def scan(self) -> int:
        """Decode every frame from the start, converting none (what `data check --full` does); sets
        `num_frames` to the length that decodes and returns it. Errors are left in `errors`."""
        self._rewind()
        self._fresh, self._needed, self._picked = False, None, None
        tb, last, count = self._stream.time_base, 0.0, 0
        for frame in self._frames(self._stream):
            count += 1
            if frame.pts is not None and tb:
                last = max(last, float(frame.pts * tb) - self._start)
        if count == 0:
            raise VideoDecodeError(f"{self.path}: no decodable frames")
        # On the nominal timeline, as `read` counts (a variable frame rate may hold fewer frames).
        self.num_frames = int(round(last * self.fps)) + 1 if last > 0 else count
        return self.num_frames

    def _to_rgb(self, frame, short_side: int | None) -> np.ndarray:
        began = time.thread_time()
        rgb = self._convert(frame, short_side)
        self._add("convert", began)
        return rgb

    def _convert(self, frame, short_side: int | None) -> np.ndarray:
        rotation = int(getattr(frame, "rotation", 0) or 0) % 360
        fh, fw = self.display_hw or (frame.height, frame.width)
        h, w = (fh, fw) if short_side is None else scaled_size(fh, fw, short_side)
        rgb = frame.reformat(width=w, height=h, format="rgb24", threads=1).to_ndarray()
        if rotation:
            rgb = np.ascontiguousarray(np.rot90(rgb, k=rotation // 90))
        return rgb

    def close(self) -> None:
        self._container.close()

    def __enter__(self) -> PyAVReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class TorchCodecReader:
    """A `VideoReader` over torchcodec (optional; used by `backend='auto'` where it imports)."""

    def __init__(self, path: str) -> None:
        from torchcodec.decoders import VideoDecoder

        self.path = str(path)
        _check_file(self.path)
        try:
            self._decoder = VideoDecoder(self.path, seek_mode="approximate")
        except Exception as err:  # torchcodec raises plain RuntimeError/ValueError on bad input
            raise VideoDecodeError(f"{self.path}: cannot open as a video ({err})") from err
        meta = self._decoder.metadata
        self.height, self.width = int(meta.height), int(meta.width)
        self.fps = float(meta.average_fps or _FALLBACK_FPS)
        self.num_frames = self.stated_frames = max(1, len(self._decoder))
        self.duration = float(meta.duration_seconds or self.num_frames / self.fps)

    def read(self, indices: Sequence[int], short_side: int | None = None) -> np.ndarray:
        import torch

        idx = np.clip(np.asarray(indices, dtype=np.int64), 0, self.num_frames - 1).tolist()
        try:
            clip = self._decoder.get_frames_at(indices=idx).data  # (T, C, H, W) uint8
        except Exception as err:
            raise VideoDecodeError(f"{self.path}: decoding failed ({err})") from err
        size = None if short_side is None else scaled_size(clip.shape[-2], clip.shape[-1], short_side)
        if size is not None and tuple(clip.shape[-2:]) != size:
            clip = torch.nn.functional.interpolate(clip.float(), size=size, mode="bilinear", antialias=True)
            clip = clip.round().clamp(0, 255).to(torch.uint8)
        return clip.permute(0, 2, 3, 1).contiguous().numpy()

    def close(self) -> None:
        self._decoder = None


class FrameListReader:
    """A `VideoReader` over a video stored as one image file per frame (Charades frame lists)."""

    def __init__(self, paths: Sequence[str], fps: float = _FALLBACK_FPS) -> None:
        if not paths:
            raise VideoDecodeError("empty frame list")
        self.paths = [str(p) for p in paths]
        self.path = self.paths[0]
        self.fps, self.num_frames = fps, len(self.paths)
        self.stated_frames = self.num_frames
        self.duration = self.num_frames / fps
        self.height, self.width = self.read([0]).shape[1:3]

    def read(self, indices: Sequence[int], short_side: int | None = None) -> np.ndarray:
        idx = np.clip(np.asarray(indices, dtype=np.int64), 0, self.num_frames - 1)
        cache: dict[int, np.ndarray] = {}
        for i in set(idx.tolist()):
            with PyAVReader(self.paths[i]) as image:
                cache[i] = image.read([0], short_side)[0]
        return np.stack([cache[i] for i in idx.tolist()])

    def close(self) -> None:
        pass


def _importable(module: str) -> bool:
    try:
        importlib.import_module(module)
    except Exception:  # a broken install (missing FFmpeg libraries) counts as absent
        return False
    return True


def select_backend(name: str = "auto", importable: Callable[[str], bool] = _importable) -> str:
    """Resolve a backend name: 'auto' picks torchcodec where it imports, else PyAV."""
    if name not in BACKENDS:
        raise ConfigError(f"data.backend: unknown decoder backend {name!r}; choose one of {BACKENDS}")
    if name == "auto":
        return "torchcodec" if importable("torchcodec.decoders") else "pyav"
    if name == "torchcodec" and not importable("torchcodec.decoders"):
        raise ConfigError("data.backend: 'torchcodec' was asked for but does not import; "
                          "use 'pyav' or 'auto'")
    return name


def open_video(path: str, backend: str = "pyav") -> VideoReader:
    """Open `path` with the resolved backend; raises VideoDecodeError for anything unreadable."""
    backend = select_backend(backend)
    return TorchCodecReader(path) if backend == "torchcodec" else PyAVReader(path)
