"""A cache of decoded frames: each video is decoded once, at a fixed short side, into a `.npy` file that
every process of a run maps read-only (loader workers, the precise-BN and validation loaders, the ranks of
one machine). Later reads cost a memory copy and a resize instead of a video decode.

A dataset with a cache decodes at the cache's short side and resizes in torch, hit or miss, so a clip is
the same whether it came from the cache or from the video (`VideoClipDataset(decode_short_side=...)`).
Entries are keyed by the video's path, size, modification time and the short side; files are written to
a temporary name and renamed, so processes filling the cache at the same time never see half an entry.

Size: `fill` first estimates each video's entry from its metadata and stores, in order, only what fits in
`max_bytes` (`data.cache_max_gb`) and in the free space of the cache's file system less a reserve. What
does not fit is decoded on the fly, at the cache's size, every time it is read: nothing is evicted,
because a training epoch reads every video once, in an order that an LRU cache would always miss. A
bounded cache, or one a fill has found full, is written only by `fill`. An I/O error (a full disk, a
directory that cannot be written) stops the caller with a CacheError; only a video that fails to decode
counts as unreadable.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from tqdm import tqdm

from mgvideo.data.decode import VideoReader, open_video, scaled_size, truncation
from mgvideo.data.sampling import resize_short_side
from mgvideo.errors import CacheError, ConfigError, VideoDecodeError

MODES = ("none", "memory", "disk")
OPEN_ENTRIES = 4096  # memory maps a process keeps open: re-opening one costs more than reading a clip
SHM = Path("/dev/shm")
FREE_RESERVE = 0.1  # a fill leaves this fraction of the file system free (/dev/shm is the machine's RAM)
FULL = "FULL.json"  # written by a fill that left videos out; records how many and under which bound


def storage_side(height: int, width: int, short_side: int) -> int:
    """The short side a video is stored (and decoded) at: `short_side`, or its own if that is smaller
    (frames are never enlarged before the final resize)."""
    return min(short_side, height, width)


class CachedVideo:
    """A `VideoReader` over stored frames; `read` resizes (torch, bilinear) when asked for another size."""

    def __init__(self, path: str, fps: float, frames: np.ndarray, stated_frames: int | None = None) -> None:
        self.path, self.fps, self.frames = path, fps, frames
        self.num_frames, self.height, self.width = frames.shape[0], frames.shape[1], frames.shape[2]
        self.stated_frames = stated_frames or self.num_frames  # what the video's container said
        self.duration = self.num_frames / fps

    def read(self, indices: Sequence[int], short_side: int | None = None) -> np.ndarray:
        picked = np.asarray(self.frames[np.clip(np.asarray(indices, dtype=np.int64), 0, self.num_frames - 1)])
        return picked if short_side is None else resize_short_side(picked, short_side)

    def close(self) -> None:
        pass


class FrameCache:
    """Decoded videos under `directory`, at short side `short_side` (or the video's own, if smaller), in at
    most `max_bytes` (0: bounded by free space only)."""

    def __init__(self, directory: str | Path, short_side: int, backend: str = "pyav",
                 max_bytes: int = 0) -> None:
        if short_side < 1:
            raise ConfigError(f"frame cache: short side must be positive, got {short_side}")
        if max_bytes < 0:
            raise ConfigError(f"data.cache_max_gb: must be >= 0, got {max_bytes / 1e9:g}")
        self.directory, self.short_side, self.backend = Path(directory), short_side, backend
        self.max_bytes = max_bytes
        self._opened: OrderedDict[str, CachedVideo] = OrderedDict()  # entry name -> mapped frames

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_opened": OrderedDict()}  # a pickled memmap would copy its frames

    def _names(self, path: str) -> tuple[str, str]:
        """(prefix of every entry of this video, this version's entry name)."""
        full = os.path.abspath(path)
        stat = os.stat(full)
        prefix = hashlib.sha1(full.encode()).hexdigest()[:16]
        version = hashlib.sha1(f"{stat.st_size}|{stat.st_mtime_ns}|{self.short_side}".encode()).hexdigest()
        return prefix, f"{prefix}-{version[:12]}"

    def open(self, path: str) -> VideoReader:
        """The video's frames, from the cache, or decoded now (and stored, unless the cache is bounded)."""
        _, name = self._names(path)  # changes with the video's size and mtime
        video = self._opened.get(name)
        if video is not None:
            self._opened.move_to_end(name)
            return video
        try:
            meta = json.loads((self.directory / f"{name}.json").read_text())
            frames = np.load(self.directory / f"{name}.npy", mmap_mode="r")
        except (FileNotFoundError, NotADirectoryError, ValueError):  # absent, or a sidecar caught mid-write
            return open_video(path, self.backend) if self.bounded() else self.store(path)
        except OSError as err:
            raise CacheError(f"frame cache: cannot read {self.directory / name}.npy: {err}") from err
        video = self._opened[name] = CachedVideo(path, meta["fps"], frames, meta.get("stated_frames"))
        if len(self._opened) > OPEN_ENTRIES:
            self._opened.popitem(last=False)
        return video

    def bounded(self) -> bool:
        """Whether misses decode on the fly rather than store: the cache has a size bound (only `fill`
        writes it then, within the bound) or a fill found it full."""
        return self.max_bytes > 0 or (self.directory / FULL).exists()

    def store(self, path: str) -> CachedVideo:
        """Decode the whole video at the cache's size and write its entry (replacing older versions)."""
        reader = open_video(path, self.backend)
        try:
            side = storage_side(reader.height, reader.width, self.short_side)
            frames = reader.read(np.arange(reader.num_frames), side)[: reader.num_frames]
            fps, stated = reader.fps, reader.stated_frames
        finally:
            reader.close()
        self._write(path, frames, {"path": path, "fps": fps, "stated_frames": stated})
        return CachedVideo(path, fps, frames, stated)

    def _write(self, path: str, frames: np.ndarray, meta: dict) -> None:
        prefix, name = self._names(path)
        tmp = None
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            for old in self.directory.glob(f"{prefix}-*"):  # an earlier version of this file
                if not old.name.startswith(name):
                    old.unlink(missing_ok=True)
            _write_atomic(self.directory / f"{name}.json", json.dumps(meta).encode())
            with tempfile.NamedTemporaryFile(dir=self.directory, prefix=f".{name}.", delete=False) as tmp:
                np.save(tmp, frames)
            os.replace(tmp.name, self.directory / f"{name}.npy")  # the .npy last: it marks a whole entry
        except OSError as err:
            if tmp is not None:
                with contextlib.suppress(OSError):
                    os.unlink(tmp.name)
            raise CacheError(f"frame cache: cannot write {self.directory}: {err}") from err

    def estimate(self, path: str) -> int:
        """The bytes `path`'s entry would take, from the container's metadata (0 if it does not open)."""
        try:
            reader = open_video(path, self.backend)
        except VideoDecodeError:
            return 0
        with contextlib.closing(reader):
            h, w = scaled_size(reader.height, reader.width,
                               storage_side(reader.height, reader.width, self.short_side))
            return reader.stated_frames * h * w * 3

    def missing(self, paths: Sequence[str]) -> list[str]:
        """The paths (existing files only) that have no entry yet."""
        out = []
        for path in dict.fromkeys(paths):
            if os.path.isfile(path) and not (self.directory / f"{self._names(path)[1]}.npy").exists():
                out.append(path)
        return out

    def fill(self, paths: Sequence[str], workers: int = 1, log: Callable[[str], None] = print) -> int:
        """Decode every video of `paths` not cached yet that fits (see the module docstring), with
        `workers` processes and a progress bar; unreadable videos are left to the dataset (which reports and
        skips them). Returns how many videos were stored; raises CacheError on an I/O error."""
        todo = self.missing(paths)
        if not todo or self._found_full(len(todo)):
            return 0
        started = time.perf_counter()
        with ProcessPoolExecutor(workers) if workers > 1 else _InProcess() as pool:
            sizes = list(pool.map(_estimate, [self] * len(todo), todo, chunksize=8))
            fits, why = self._fitting(sizes)
            bar = tqdm(total=fits, unit="video", desc="decoding into the frame cache", mininterval=1.0)
            outcomes = []
            for outcome in pool.map(_store_quietly, [self] * fits, todo[:fits], chunksize=8):
                outcomes.append(outcome)
                bar.update(1)
            bar.close()
        self._mark_full(len(todo) - fits)
        stored = outcomes.count("stored") + outcomes.count("truncated")
        notes = ", ".join(f"{outcomes.count(k)} {k}" for k in ("truncated", "unreadable") if k in outcomes)
        log(f"frame cache: decoded {stored} videos{f' ({notes})' if notes else ''} at short side "
            f"{self.short_side} into {self.directory} in {time.perf_counter() - started:.1f} s")
        if fits < len(todo):
            log(f"frame cache: {len(todo) - fits} of {len(todo)} videos do not fit ({why}); they are "
                f"decoded on the fly, at the same size, each time they are read")
        return stored

    def _fitting(self, sizes: list[int]) -> tuple[int, str]:
        """How many of the videos, in order, fit in the bound and in the free space; and which limits."""
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            used = sum(f.stat().st_size for f in self.directory.glob("*.npy"))
            disk = shutil.disk_usage(self.directory)
        except OSError as err:
            raise CacheError(f"frame cache: cannot use {self.directory}: {err}") from err
        room = disk.free - FREE_RESERVE * disk.total
        why = f"{disk.free / 1e9:.1f} GB free in {self.directory}, {FREE_RESERVE:.0%} of the disk kept free"
        if self.max_bytes and self.max_bytes - used < room:
            room, why = self.max_bytes - used, f"data.cache_max_gb={self.max_bytes / 1e9:g}"
        return int(np.searchsorted(np.cumsum(sizes), room, side="right")), why

    def _found_full(self, missing: int) -> bool:
        """A fill under the same bound has already left out exactly these videos: nothing more fits."""
        try:
            full = json.loads((self.directory / FULL).read_text())
        except (OSError, ValueError):
            return False
        return full == {"left_out": missing, "max_bytes": self.max_bytes}

    def _mark_full(self, left_out: int) -> None:
        marker = self.directory / FULL
        try:
            if left_out:
                full = {"left_out": left_out, "max_bytes": self.max_bytes}
                _write_atomic(marker, json.dumps(full).encode())
            else:
                marker.unlink(missing_ok=True)
        except OSError as err:
            raise CacheError(f"frame cache: cannot write {marker}: {err}") from err


class _InProcess:
    """The `map` of a process pool, run here (one worker)."""

    def __enter__(self) -> _InProcess:
        return self

    def __exit__(self, *exc) -> None:
        pass

    def map(self, fn, *iterables, chunksize: int = 1):
        return map(fn, *iterables)


def _estimate(cache: FrameCache, path: str) -> int:
    return cache.estimate(path)


def _store_quietly(cache: FrameCache, path: str) -> str:
    """'stored', 'truncated' (stored, from what decodes) or 'unreadable'; an I/O error is raised."""
    try:
        video = cache.store(path)
    except VideoDecodeError:  # a bad video is the dataset's to report and skip, with its line
        return "unreadable"
    return "truncated" if truncation(video) else "stored"


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def cache_directory(mode: str, data_root: str | Path, directory: str = "") -> Path:
    """Where a run's cache lives: `directory` if given; else for 'memory' a folder in /dev/shm (RAM,
    shared by every process on the machine, gone at reboot), for 'disk' `<data_root>/.frame_cache`."""
    if mode not in MODES[1:]:
        raise ConfigError(f"data.cache: {mode!r} has no directory; choose one of {MODES[1:]}")
    if directory:
        return Path(directory)
    if mode == "disk":
        return Path(data_root) / ".frame_cache"
    root = SHM if SHM.is_dir() else Path(tempfile.gettempdir())
    key = hashlib.sha1(os.path.abspath(data_root).encode()).hexdigest()[:12]
    return root / f"mgvideo-frames-{os.getuid()}" / key
