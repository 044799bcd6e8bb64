"""A multi-resolution store: each video transcoded once into the short sides a recipe's scale jitter
asks for, with a short GOP and no B-frames, so that a coarse clip decodes a small copy and only the frames
it shows (each needed frame costs the frames from its keyframe up to it, not the whole span).

Layout: `STORE/index.json` maps each video's key to its entry's metadata (folder, frames, fps, size,
short sides, GOP, and what identified the original: size, mtime, a fingerprint of its first and last
64 KiB); `STORE/<folder>/<side>.mp4` are the copies and `STORE/<folder>/meta.json` the same metadata,
written last into a temporary folder renamed into place (an entry is whole or absent). A key is the
video's path relative to the dataset root (`data.root`), normalised, so a store travels: mounted at
another path, reached through a symlink or a relative root, or copied to a node's local disk without
the originals. A video outside the root (or stored by `store_entry` without one) is keyed by its
absolute path, and found only where it has that path. `folder` is a hash of the key. `prepare_store`
(data/prepare.py) writes the index last (temp file, os.replace), merged with the one on disk, so resumed
and extended preparations keep every entry; it indexes a store of the older layout (folders named by a
hash of the absolute path, no index) without transcoding, which training refuses with that command.

A reader loads the index once per process and checks an original at most once: the entry is stale if the
original's size differs, or if it is newer than recorded and its fingerprint differs (a copy made without
keeping mtimes is still a hit; an edit is a miss). An absent original leaves the entry in use. A copy holds
the very frames the original's reader gives for nominal indices 0..N-1 (upright, at a constant rate), so a
clip read from the store shows the same frames and region as from the original, within the coding loss.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections.abc import Iterable, Sequence

import av
import numpy as np
import torch

from mgvideo.data.decode import PyAVReader, scaled_size
from mgvideo.data.sampling import scale_range
from mgvideo.errors import ConfigError, VideoDecodeError

META = "meta.json"
INDEX = "index.json"
INDEX_VERSION = 1
GOP = 1  # keyframe interval of the copies: every frame (a clip decodes only what it shows); README
CRF = 23  # x264 quality, as the originals; PSNR against them in tests/test_store.py
CHUNK = 120  # frames decoded at a time while transcoding
FINGERPRINT_BYTES = 64 * 1024  # read from each end of an original to tell an edit from a copy
HIT, NO_ENTRY, STALE = "hit", "no entry", "stale"  # what `VideoStore.find` says of a video
# what the index keeps of an entry's meta.json (its folder, the copies, and the original's identity)
INDEX_FIELDS = ("entry", "frames", "fps", "height", "width", "sides", "gop", "bytes", "size", "mtime_ns",
                "fingerprint")


def store_sides(crops: Sequence[int], base_crop: int, jitter: tuple[int, int], same_view: bool = False,
                extra: Sequence[int] = ()) -> list[int]:
    """The short sides a store keeps: for each crop of the schedule, both ends of its short-side jitter
    (`sampling.scale_range`), plus `extra` (the test size). A clip at side s reads the smallest copy >= s."""
    sides = set(extra)
    for crop in crops:
        sides.update(scale_range(crop, base_crop, jitter, same_view))
    return sorted(sides)


def store_key(path: str, root: str | None) -> str:
    """The key of `path`'s entry: its path relative to `root`, normalised ('a/b.mp4'; a symlinked root is
    also followed), or its absolute path where it lies outside the root or no root is given."""
    full = os.path.abspath(path)
    if root is None:
        return full
    rel = _inside(full, os.path.abspath(root))
    if rel is None:  # e.g. a listed absolute path under the root's real folder
        rel = _inside(os.path.realpath(full), os.path.realpath(root))
    return full if rel is None else rel


def _inside(path: str, root: str) -> str | None:
    rel = os.path.relpath(path, root)
    return None if rel == os.pardir or rel.startswith(os.pardir + os.sep) else rel


def entry_folder(key: str) -> str:
    """The folder of the entry keyed `key` (for an absolute key, the folder older stores used)."""
    return hashlib.sha1(key.encode()).hexdigest()[:20]


def fingerprint(path: str) -> str:
    """A cheap check of a file's content: a hash of its size and its first and last 64 KiB."""
    digest = hashlib.sha1()
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        digest.update(f"{size}:".encode() + f.read(FINGERPRINT_BYTES))
        if size > FINGERPRINT_BYTES:
            f.seek(max(FINGERPRINT_BYTES, size - FINGERPRINT_BYTES))
            digest.update(f.read(FINGERPRINT_BYTES))
    return digest.hexdigest()[:20]


def _identity(path: str) -> dict:
    stat = os.stat(path)
    return {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "fingerprint": fingerprint(path)}


def freshness(meta: dict, path: str) -> str:
    """HIT if an entry may stand for the original at `path`, else STALE: see the module docstring."""
    try:
        stat = os.stat(path)
    except OSError:
        return HIT  # absent (a node with only the store) or out of reach: the copy is what there is
    if stat.st_size != meta.get("size"):
        return STALE
    if stat.st_mtime_ns <= meta.get("mtime_ns", 0):
        return HIT
    try:  # newer: copied without keeping mtimes (same content), or edited in place?
        same = meta.get("fingerprint") == fingerprint(path)
    except OSError:
        return HIT
    return HIT if same else STALE


def _encoder(container, width: int, height: int, fps: float, gop: int):
    from fractions import Fraction

    rate = Fraction(fps).limit_denominator(1001)
    stream = container.add_stream("libx264", rate=rate)
    stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
    stream.codec_context.time_base = 1 / rate
    stream.options = {"preset": "veryfast", "crf": str(CRF), "threads": "1",
                      "x264-params": f"keyint={gop}:min-keyint={gop}:scenecut=0:bframes=0:mbtree=0"}
    return stream


def _even(h: int, w: int) -> tuple[int, int]:
    return max(2, h - h % 2), max(2, w - w % 2)  # yuv420p needs even sizes


def _resize_to(frames: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """uint8 (T, H, W, C) frames resized to `size` (bilinear, antialiased, torch's uint8 path)."""
    if tuple(frames.shape[1:3]) == size:
        return frames
    x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2)
    x = torch.nn.functional.interpolate(x, size=size, mode="bilinear", antialias=True, align_corners=False)
    return np.ascontiguousarray(x.permute(0, 2, 3, 1).numpy())


def transcode(path: str, entry_dir: str, sides: Sequence[int], gop: int = GOP, key: str = "") -> dict:
    """Write the copies of one video and its meta.json into `entry_dir` (which must not exist yet: the
    caller renames it into place) for the entry keyed `key`. Raises VideoDecodeError if the original
    cannot be read."""
    os.makedirs(entry_dir)
    with PyAVReader(path) as reader:
        first = reader.read([0])
        height, width = first.shape[1:3]  # upright, as the reader gives them
        own = min(height, width)
        kept = sorted({min(s, own) for s in sides})
        outs, streams, sizes = {}, {}, {}
        try:
            for side in kept:
                sizes[side] = _even(*scaled_size(height, width, side))
                outs[side] = av.open(os.path.join(entry_dir, f"{side}.mp4"), "w", format="mp4")
                streams[side] = _encoder(outs[side], sizes[side][1], sizes[side][0], reader.fps, gop)
            n = 0
            while n < reader.num_frames:  # num_frames shrinks if the stream ends early
                frames = reader.read(range(n, min(n + CHUNK, reader.num_frames)))
                for side in kept:
                    for k, rgb in enumerate(_resize_to(frames, sizes[side])):
                        frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
                        frame.pts = n + k
                        outs[side].mux(streams[side].encode(frame))
                n += len(frames)
            for side in kept:
                outs[side].mux(streams[side].encode())
        finally:
            for out in outs.values():
                out.close()
        key = key or store_key(path, None)
        meta = {"key": key, "entry": entry_folder(key), "source": os.path.abspath(path), **_identity(path),
                "fps": reader.fps, "frames": n, "height": int(height), "width": int(width), "gop": gop,
                "sides": kept,
                "bytes": sum(os.path.getsize(os.path.join(entry_dir, f"{s}.mp4")) for s in kept)}
    with open(os.path.join(entry_dir, META), "w") as f:
        json.dump(meta, f)
    return meta


def make_entry(store: str, key: str, path: str, sides: Sequence[int],
               gop: int = GOP) -> tuple[str, dict | str]:
    """Transcode `path` into `store` under `key` unless a fresh entry is there; returns ('done' | 'kept',
    meta) or ('failed', reason). Safe to run from several processes: work happens in a private temporary
    folder. The index is the caller's to update."""
    final = os.path.join(store, entry_folder(key))
    meta = read_entry(final, key)
    if meta is not None and freshness(meta, path) == STALE:
        meta = None
    wanted = {min(s, min(meta["height"], meta["width"])) for s in sides} if meta else set()
    if meta is not None and meta.get("gop") == gop and set(meta["sides"]) >= wanted:
        return "kept", meta
    tmp = f"{final}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        meta = transcode(path, tmp, sides, gop, key)
    except (VideoDecodeError, av.error.FFmpegError, OSError, ValueError) as err:
        shutil.rmtree(tmp, ignore_errors=True)
        return "failed", str(err)
    shutil.rmtree(final, ignore_errors=True)  # a stale entry, or one with fewer sides
    os.rename(tmp, final)
    return "done", meta


def store_entry(store: str, path: str, sides: Sequence[int], gop: int = GOP,
                root: str | None = None) -> tuple[str, dict | str]:
    """`make_entry` for one video, keyed relative to `root` (absolute without one), and its line in the
    index: for a few videos from one process; `prepare_store` does a dataset."""
    key = store_key(path, root)
    status, info = make_entry(store, key, path, sides, gop)
    if status != "failed":
        update_index(store, {key: info}, root=root)
    return status, info


def read_entry(entry_dir: str, key: str | None = None) -> dict | None:
    """The meta.json of a complete entry (of `key`, if given), else None."""
    try:
        with open(os.path.join(entry_dir, META)) as f:
            meta = json.load(f)
    except (OSError, ValueError):
        return None
    return meta if isinstance(meta, dict) and (key is None or meta.get("key") == key) else None


def read_index(store: str) -> dict[str, dict] | None:
    """The entries of `STORE/index.json` by key, or None where there is no index."""
    path = os.path.join(store, INDEX)
    try:
        with open(path) as f:
            data = json.load(f)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as err:
        raise ConfigError(f"data.store: cannot read {path} ({err}); rebuild it with `mgvideo data prepare` "
                          f"(kept entries are not transcoded again)") from err
    if not isinstance(data, dict) or data.get("version") != INDEX_VERSION or "entries" not in data:
        raise ConfigError(f"data.store: {path} is not a version-{INDEX_VERSION} store index; rebuild it "
                          "with `mgvideo data prepare`")
    return data["entries"]


def update_index(store: str, added: dict[str, dict], removed: Iterable[str] = (),
                 root: str | None = None) -> None:
    """Merge `added` (key -> meta) into the index on disk, less `removed`, and write it atomically. The
    index is read again just before, so that preparations sharing a store keep each other's entries."""
    entries = read_index(store) or {}
    for key in removed:
        entries.pop(key, None)
    entries.update({key: {k: meta.get(k) for k in INDEX_FIELDS} for key, meta in added.items()})
    root = os.path.abspath(root) if root else None  # where it was prepared from: for the reader's messages
    write_json(os.path.join(store, INDEX), {"version": INDEX_VERSION, "root": root, "entries": entries},
               indent=None)


def migrate_entries(store: str, root: str | None) -> dict[str, dict]:
    """Give each entry of an older store (no index; folders named by a hash of the original's absolute
    path) its key relative to `root`: the folder is renamed and meta.json gains the key (and the original's
    fingerprint, where it is unchanged); nothing is transcoded again. Returns the entries by key."""
    moved: dict[str, dict] = {}
    for item in sorted(os.scandir(store), key=lambda e: e.name):
        meta = read_entry(item.path) if item.is_dir() and ".tmp-" not in item.name else None
        if meta is None or "key" in meta or "source" not in meta:
            continue
        key = store_key(meta["source"], root)
        meta.update(key=key, entry=entry_folder(key))
        target = os.path.join(store, meta["entry"])
        if target != item.path:
            if os.path.exists(target):  # already stored under its new key
                shutil.rmtree(item.path, ignore_errors=True)
                continue
            os.rename(item.path, target)  # first: a meta.json without a key is migrated again
        try:
            stat = os.stat(meta["source"])
            unchanged = (stat.st_size, stat.st_mtime_ns) == (meta.get("size"), meta.get("mtime_ns"))
            meta["fingerprint"] = fingerprint(meta["source"]) if unchanged else None
        except OSError:
            meta["fingerprint"] = None  # absent: fine while it stays so; if it returns newer, a miss
        write_json(os.path.join(target, META), meta)
        moved[key] = meta
    return moved


class StoreVideo:
    """A `VideoReader` over one store entry: `read(indices, s)` decodes the smallest copy whose short side
    is >= s (else the largest) and scales it to the size the original gives at s."""

    def __init__(self, path: str, entry_dir: str, meta: dict) -> None:
        self.path, self.entry_dir, self.meta = path, entry_dir, meta
        self.fps = float(meta["fps"])
        self.num_frames = self.stated_frames = int(meta["frames"])
        self.duration = self.num_frames / self.fps
        self.height, self.width = int(meta["height"]), int(meta["width"])
        self.sides = sorted(meta["sides"])
        self.last_side = 0  # the copy the last read decoded (what `bench data` reports)
        self.timer: dict[str, float] | None = None  # as PyAVReader.timer

    def copy_for(self, short_side: int | None) -> int:
        if short_side is None:
            return self.sides[-1]
        return next((s for s in self.sides if s >= short_side), self.sides[-1])

    def read(self, indices: Sequence[int], short_side: int | None = None) -> np.ndarray:
        side = self.copy_for(short_side)
        began = time.thread_time()
        reader = PyAVReader(os.path.join(self.entry_dir, f"{side}.mp4"), threads=1)
        reader.timer = self.timer
        reader._add("demux", began)  # opening the copy counts with demuxing
        try:
            reader.display_hw, reader.sparse_gop = (self.height, self.width), int(self.meta["gop"])
            reader.num_frames = self.num_frames  # the copy holds exactly the original's nominal frames
            self.last_side = side
            return reader.read(indices, short_side)
        finally:
            reader.close()

    def close(self) -> None:
        pass


class VideoStore:
    """The store at `directory` of the videos under `root` (`data.store`, `data.root`), as training reads
    it. `find(path)` gives (the video's `StoreVideo`, HIT), or (None, NO_ENTRY | STALE) where the caller
    reads the original. The index is read on first use, once per process (each loader worker reads its
    own), and each video is looked up and its original checked once per process."""

    def __init__(self, directory: str, root: str) -> None:
        self.directory, self.root = str(directory), str(root)
        self._entries: dict[str, dict] | None = None
        self._found: dict[str, tuple[dict | None, str]] = {}  # path -> (meta if usable, HIT | ...)

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_entries": None, "_found": {}}  # a worker reads the index itself

    def entries(self) -> dict[str, dict]:
        """The index (key -> entry metadata); raises ConfigError for a store that has entries but no index
        (made by an older mgvideo, or a preparation that did not finish) or a damaged index."""
        if self._entries is None:
            entries = read_index(self.directory)
            if entries is None and _has_entries(self.directory):
                raise ConfigError(
                    f"data.store: {self.directory} has entries but no {INDEX} (made by an older mgvideo, "
                    "or a preparation that did not finish); index it, without transcoding again: "
                    f"mgvideo data prepare LIST --config RECIPE --root {self.root} --out {self.directory}")
            self._entries = entries or {}
        return self._entries

    def find(self, path: str) -> tuple[StoreVideo | None, str]:
        """(the entry's reader, HIT), or (None, NO_ENTRY | STALE): looked up by key, then absolute path."""
        found = self._found.get(path)
        if found is None:
            entries = self.entries()
            meta = entries.get(store_key(path, self.root)) or entries.get(os.path.abspath(path))
            status = NO_ENTRY if meta is None else freshness(meta, path)
            found = self._found[path] = (meta if status == HIT else None, status)
        meta, status = found
        video = None if meta is None else StoreVideo(path, os.path.join(self.directory, meta["entry"]), meta)
        return video, status

    def open(self, path: str) -> StoreVideo | None:
        """The video's `StoreVideo`, or None where the store has no fresh entry."""
        return self.find(path)[0]


def _has_entries(directory: str) -> bool:
    try:
        return any(e.is_dir() and os.path.isfile(os.path.join(e.path, META)) for e in os.scandir(directory))
    except OSError:
        return False


def write_json(path: str, data, indent: int | None = 1) -> None:
    """Write `data` to `path` atomically (a temporary file renamed over it)."""
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(data, f, indent=indent)
    os.replace(tmp, path)
