"""A multi-resolution video store: each video transcoded once into the short sides a recipe's scale jitter
asks for, with a short GOP and no B-frames, so that a coarse clip decodes a small copy and only the frames
it shows (each needed frame costs the frames from its keyframe up to it, not the whole span).

Layout: `STORE/<key>/<side>.mp4` for each side and `STORE/<key>/meta.json`, written last, into a temporary
folder renamed into place (an entry is whole or absent), `key` being a hash of the original's absolute
path. A copy holds the very frames the original's reader gives for nominal indices 0..N-1 (upright, at a
constant rate), so a clip read from the store shows the same frames and region as from the original, within
the coding loss. An entry whose original has since changed (size or modification time) is not used.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from multiprocessing import get_context

import av
import numpy as np
import torch

from mgvideo.data.decode import PyAVReader, scaled_size
from mgvideo.data.sampling import scale_range
from mgvideo.errors import VideoDecodeError

META = "meta.json"
GOP = 1  # keyframe interval of the copies: every frame (a clip decodes only what it shows); README
CRF = 23  # x264 quality, as the originals; PSNR against them in tests/test_store.py
CHUNK = 120  # frames decoded at a time while transcoding


def store_sides(crops: Sequence[int], base_crop: int, jitter: tuple[int, int], same_view: bool = False,
                extra: Sequence[int] = ()) -> list[int]:
    """The short sides a store keeps: for each crop of the schedule, both ends of its short-side jitter
    (`sampling.scale_range`), plus `extra` (the test size). A clip at side s reads the smallest copy >= s."""
    sides = set(extra)
    for crop in crops:
        sides.update(scale_range(crop, base_crop, jitter, same_view))
    return sorted(sides)


def entry_key(path: str) -> str:
    return hashlib.sha1(os.path.abspath(path).encode()).hexdigest()[:20]


def _stamp(path: str) -> dict:
    stat = os.stat(path)
    return {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


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


def transcode(path: str, entry_dir: str, sides: Sequence[int], gop: int = GOP) -> dict:
    """Write the copies of one video and its meta.json into `entry_dir` (which must not exist yet: the
    caller renames it into place). Raises VideoDecodeError if the original cannot be read."""
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
        meta = {"source": os.path.abspath(path), **_stamp(path), "fps": reader.fps, "frames": n,
                "height": int(height), "width": int(width), "gop": gop, "sides": kept,
                "bytes": sum(os.path.getsize(os.path.join(entry_dir, f"{s}.mp4")) for s in kept)}
    with open(os.path.join(entry_dir, META), "w") as f:
        json.dump(meta, f)
    return meta


def store_entry(store: str, path: str, sides: Sequence[int], gop: int = GOP) -> tuple[str, dict | str]:
    """Transcode `path` into `store` unless a fresh entry is there; returns ('done' | 'kept', meta) or
    ('failed', reason). Safe to run from several processes: work happens in a private temporary folder."""
    final = os.path.join(store, entry_key(path))
    meta = read_meta(final, path)
    wanted = {min(s, min(meta["height"], meta["width"])) for s in sides} if meta else set()
    if meta is not None and meta.get("gop") == gop and set(meta["sides"]) >= wanted:
        return "kept", meta
    tmp = f"{final}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        meta = transcode(path, tmp, sides, gop)
    except (VideoDecodeError, av.error.FFmpegError, OSError, ValueError) as err:
        shutil.rmtree(tmp, ignore_errors=True)
        return "failed", str(err)
    shutil.rmtree(final, ignore_errors=True)  # a stale entry, or one with fewer sides
    os.rename(tmp, final)
    return "done", meta


def read_meta(entry_dir: str, path: str) -> dict | None:
    """The entry's meta if it is complete and its original unchanged since, else None."""
    try:
        with open(os.path.join(entry_dir, META)) as f:
            meta = json.load(f)
        stamp = _stamp(path)
    except (OSError, ValueError):
        return None
    if meta.get("size") != stamp["size"] or meta.get("mtime_ns") != stamp["mtime_ns"]:
        return None
    return meta


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
    """The store at `directory`, as training reads it (`data.store`): `open(path)` gives the video's
    `StoreVideo`, or None where the store has no fresh entry (the caller reads the original)."""

    def __init__(self, directory: str) -> None:
        self.directory = str(directory)

    def open(self, path: str) -> StoreVideo | None:
        entry = os.path.join(self.directory, entry_key(path))
        meta = read_meta(entry, path)
        return None if meta is None else StoreVideo(path, entry, meta)


def _store_job(job: tuple[str, str, tuple[int, ...], int]) -> tuple[str, str, dict | str]:
    store, path, sides, gop = job
    status, info = store_entry(store, path, sides, gop)
    return path, status, info


def prepare_store(paths: Sequence[str], store: str, sides: Sequence[int], workers: int = 1,
                  max_bytes: int = 0, gop: int = GOP, log: Callable[[str], None] = print) -> dict:
    """Transcode `paths` into `store` with `workers` processes, skipping videos already there (resumable),
    and starting no video once the store's size plus one more video's (the mean so far) would pass
    `max_bytes` (0: no bound). Writes STORE/failed.json; returns counts, bytes and the failed videos."""
    os.makedirs(store, exist_ok=True)
    summary = {"videos": len(paths), "done": 0, "kept": 0, "failed": [], "left_out": 0, "bytes": 0,
               "seconds": 0.0, "sides": sorted(sides), "gop": gop}
    jobs = [(store, p, tuple(sides), gop) for p in paths]
    pending: set = set()

    def take(future) -> None:
        path, status, info = future.result()
        if status == "failed":
            summary["failed"].append({"path": path, "reason": info})
            log(f"store: cannot transcode {path}: {info} (training reads its original)")
            return
        summary[status] += 1
        summary["bytes"] += info["bytes"]
        summary["seconds"] += info["frames"] / info["fps"]

    def fits() -> bool:
        stored = summary["done"] + summary["kept"]
        mean = summary["bytes"] / stored if stored else 0
        return not max_bytes or summary["bytes"] + mean * (len(pending) + 1) <= max_bytes

    if workers <= 1:  # in this process
        for k, job in enumerate(jobs):
            if not fits():
                summary["left_out"] = len(jobs) - k
                break
            take(_Done(_store_job(job)))
        return _finish(store, summary)
    with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
        for k, job in enumerate(jobs):
            # with a bound, nothing more starts before one video's size is known
            unknown = max_bytes and not summary["done"] + summary["kept"]
            while pending and (len(pending) >= 2 * max(1, workers) or unknown):
                finished, pending = wait(pending, return_when=FIRST_COMPLETED)
                for future in finished:
                    take(future)
                unknown = max_bytes and not summary["done"] + summary["kept"]
            if not fits():
                summary["left_out"] = len(jobs) - k
                break
            pending.add(pool.submit(_store_job, job))
        for future in pending:
            take(future)
    return _finish(store, summary)


class _Done:
    """A finished job's result, as a future gives it."""

    def __init__(self, value) -> None:
        self.value = value

    def result(self):
        return self.value


def _finish(store: str, summary: dict) -> dict:
    _write_json(os.path.join(store, "failed.json"), summary["failed"])
    hours = summary["seconds"] / 3600
    summary["gb_per_hour"] = summary["bytes"] / 1e9 / hours if hours else 0.0
    return summary


def _write_json(path: str, data) -> None:
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(data, f, indent=1)
    os.replace(tmp, path)
