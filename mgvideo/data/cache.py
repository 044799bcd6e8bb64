"""A cache of decoded frames: each video is decoded once, at a fixed short side, into a `.npy` file that
every process of a run maps read-only (loader workers, the precise-BN and validation loaders, the ranks of
one machine). Later reads cost a memory copy and a resize instead of a video decode.

A dataset with a cache decodes at the cache's short side and resizes in torch, hit or miss, so a clip is
the same whether it came from the cache or from the video (`VideoClipDataset(decode_short_side=...)`).
Entries are keyed by the video's path, size, modification time and the short side; files are written to
a temporary name and renamed, so processes filling the cache at the same time never see half an entry.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from tqdm import tqdm

from mgvideo.data.decode import VideoReader, open_video
from mgvideo.data.sampling import resize_short_side
from mgvideo.errors import ConfigError

MODES = ("none", "memory", "disk")
OPEN_ENTRIES = 4096  # memory maps a process keeps open: re-opening one costs more than reading a clip
SHM = Path("/dev/shm")


def storage_side(height: int, width: int, short_side: int) -> int:
    """The short side a video is stored (and decoded) at: `short_side`, or its own if that is smaller
    (frames are never enlarged before the final resize)."""
    return min(short_side, height, width)


class CachedVideo:
    """A `VideoReader` over stored frames; `read` resizes (torch, bilinear) when asked for another size."""

    def __init__(self, path: str, fps: float, frames: np.ndarray) -> None:
        self.path, self.fps, self.frames = path, fps, frames
        self.num_frames, self.height, self.width = frames.shape[0], frames.shape[1], frames.shape[2]
        self.duration = self.num_frames / fps

    def read(self, indices: Sequence[int], short_side: int | None = None) -> np.ndarray:
        picked = np.asarray(self.frames[np.clip(np.asarray(indices, dtype=np.int64), 0, self.num_frames - 1)])
        return picked if short_side is None else resize_short_side(picked, short_side)

    def close(self) -> None:
        pass


class FrameCache:
    """Decoded videos under `directory`, at short side `short_side` (or the video's own, if smaller)."""

    def __init__(self, directory: str | Path, short_side: int, backend: str = "pyav") -> None:
        if short_side < 1:
            raise ConfigError(f"frame cache: short side must be positive, got {short_side}")
        self.directory, self.short_side, self.backend = Path(directory), short_side, backend
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
        """The video's frames, from the cache, or decoded now and stored."""
        _, name = self._names(path)  # changes with the video's size and mtime
        video = self._opened.get(name)
        if video is not None:
            self._opened.move_to_end(name)
            return video
        try:
            meta = json.loads((self.directory / f"{name}.json").read_text())
            frames = np.load(self.directory / f"{name}.npy", mmap_mode="r")
        except (FileNotFoundError, ValueError):  # absent, or a sidecar caught mid-write by another process
            return self.store(path)
        video = self._opened[name] = CachedVideo(path, meta["fps"], frames)
        if len(self._opened) > OPEN_ENTRIES:
            self._opened.popitem(last=False)
        return video

    def store(self, path: str) -> CachedVideo:
        """Decode the whole video at the cache's size and write its entry (replacing older versions)."""
        reader = open_video(path, self.backend)
        try:
            side = storage_side(reader.height, reader.width, self.short_side)
            frames = reader.read(np.arange(reader.num_frames), side)[: reader.num_frames]
            fps = reader.fps
        finally:
            reader.close()
        prefix, name = self._names(path)
        self.directory.mkdir(parents=True, exist_ok=True)
        for old in self.directory.glob(f"{prefix}-*"):  # an earlier version of this file
            if not old.name.startswith(name):
                old.unlink(missing_ok=True)
        _write_atomic(self.directory / f"{name}.json", json.dumps({"path": path, "fps": fps}).encode())
        with tempfile.NamedTemporaryFile(dir=self.directory, prefix=f".{name}.", delete=False) as tmp:
            np.save(tmp, frames)
        os.replace(tmp.name, self.directory / f"{name}.npy")  # the .npy last: it marks a whole entry
        return CachedVideo(path, fps, frames)

    def missing(self, paths: Sequence[str]) -> list[str]:
        """The paths (existing files only) that have no entry yet."""
        out = []
        for path in dict.fromkeys(paths):
            if os.path.isfile(path) and not (self.directory / f"{self._names(path)[1]}.npy").exists():
                out.append(path)
        return out

    def fill(self, paths: Sequence[str], workers: int = 1, log: Callable[[str], None] = print) -> int:
        """Decode every video of `paths` not cached yet, with `workers` processes and a progress bar;
        unreadable videos are left to the dataset (which reports and skips them). Returns how many videos
        were stored."""
        todo = self.missing(paths)
        if not todo:
            return 0
        started = time.perf_counter()
        bar = tqdm(total=len(todo), unit="video", desc="decoding into the frame cache", mininterval=1.0)
        stored = 0
        with ProcessPoolExecutor(workers) if workers > 1 else _InProcess() as pool:
            for ok in pool.map(_store_quietly, [self] * len(todo), todo, chunksize=8):
                stored += ok
                bar.update(1)
        bar.close()
        bad = f" ({len(todo) - stored} unreadable)" if stored < len(todo) else ""
        log(f"frame cache: decoded {stored} videos{bad} at short side {self.short_side} into "
            f"{self.directory} in {time.perf_counter() - started:.1f} s")
        return stored


class _InProcess:
    """The `map` of a process pool, run here (one worker)."""

    def __enter__(self) -> _InProcess:
        return self

    def __exit__(self, *exc) -> None:
        pass

    def map(self, fn, *iterables, chunksize: int = 1):
        return map(fn, *iterables)


def _store_quietly(cache: FrameCache, path: str) -> bool:
    try:
        cache.store(path)
    except Exception:  # noqa: BLE001 - a bad video is the dataset's to report and skip, with its line
        return False
    return True


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
