"""The decoded-frame cache: cached clips equal decoded ones, one decode per video across loader workers,
versions keyed by file changes, the up-front fill, and how the config selects it."""

import errno
import os
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from videos import write_broken, write_gop_mp4, write_truncated, write_video

from mgvideo.config import load_config
from mgvideo.data import cache as C
from mgvideo.data.annotations import read_kinetics
from mgvideo.data.datasets import VideoClipDataset
from mgvideo.data.decode import PyAVReader, truncation
from mgvideo.data.loader import build_loader
from mgvideo.data.prepare import ensure_synthetic_data
from mgvideo.engine import builders
from mgvideo.errors import CacheError
from mgvideo.multigrid.sampler import FixedShapeBatchSampler
from mgvideo.multigrid.schedule import ClipShape

REPO = Path(__file__).resolve().parents[1]
SMALL = REPO / "runs" / "data" / "synthetic_small"
SIDE = 46  # = largest_short_side(32): what a crop-32 recipe stores


def shape(frames, crop, rate=(1, 3)):
    return ClipShape(frames=frames, crop=crop, min_rate=rate[0], max_rate=rate[1], base_crop=32,
                     stage_batch=2, stage=0, slot=0)


@pytest.fixture(scope="module")
def small():
    """The small synthetic set (real h264 videos with texture and motion)."""
    ensure_synthetic_data(load_config(REPO / "configs" / "synthetic" / "tiny.yaml",
                                               [f"data.root={SMALL}"]))
    return read_kinetics(SMALL / "train.csv", SMALL)


def dataset(annotations, mode="train", **kwargs):
    return VideoClipDataset(annotations, shape(8, 32), mode=mode, flip=True, seed=3, **kwargs)


@pytest.mark.parametrize("mode", ["train", "val", "test"])
def test_cached_clips_equal_clips_decoded_at_the_same_size(small, tmp_path, mode):
    cached = dataset(small, mode, cache=C.FrameCache(tmp_path, SIDE))
    decoded = dataset(small, mode, decode_short_side=SIDE)
    items = [(i, s) for i, s in zip(range(0, 40, 7), [shape(2, 16), shape(4, 23), shape(8, 32)] * 2)]
    for epoch in (0, 1):
        cached.set_epoch(epoch)
        decoded.set_epoch(epoch)
        for item in items:
            miss_or_hit, reference = cached[item], decoded[item]
            assert torch.equal(miss_or_hit.clip, reference.clip), item
            assert miss_or_hit.label == reference.label and miss_or_hit.index == reference.index
    assert len(list(tmp_path.glob("*.npy"))) == len({i // cached.views for i, _ in items})


def test_decoding_at_a_fixed_size_stays_close_to_resizing_in_the_decoder(small):
    direct, fixed = dataset(small, "val"), dataset(small, "val", decode_short_side=SIDE)
    for i in (0, 9, 21):
        a, b = direct[(i, shape(8, 32))].clip.float(), fixed[(i, shape(8, 32))].clip.float()
        assert a.shape == b.shape and (a - b).abs().mean() < 4.0


def test_loader_workers_share_one_decode_per_video(small, tmp_path, monkeypatch):
    cache = C.FrameCache(tmp_path / "frames", SIDE)
    data = dataset(small, cache=cache)
    sampler = FixedShapeBatchSampler(shape(4, 23), 12, 4, rank=0, world_size=1, seed=0, shuffle=False)
    with_workers = [b.clips for b in build_loader(data, sampler, workers=2, seed=0)]
    assert len(list((tmp_path / "frames").glob("*.npy"))) == 12  # filled by the worker processes

    def no_decoding(path):
        raise AssertionError(f"{path} decoded again")

    monkeypatch.setattr(cache, "store", no_decoding)  # now every read must be a hit
    in_process = [b.clips for b in build_loader(data, sampler, workers=0, seed=0)]
    assert all(torch.equal(a, b) for a, b in zip(with_workers, in_process))


def test_a_changed_video_gets_a_new_entry_and_the_old_one_goes(tmp_path):
    video = write_video(tmp_path / "v.mp4", frames=12, width=48, height=32)
    cache = C.FrameCache(tmp_path / "cache", 24)
    first = cache.open(str(video))
    assert first.read([0]).shape == (1, 24, 36, 3) and first.num_frames == 12
    write_video(video, frames=7, width=48, height=32)
    os.utime(video, ns=(1, 1))  # a different modification time, whatever the clock's resolution
    again = cache.open(str(video))
    assert again.num_frames == 7
    assert len(list((tmp_path / "cache").glob("*.npy"))) == 1


def test_frames_are_never_enlarged_for_storage(tmp_path):
    video = write_video(tmp_path / "v.mp4", frames=4, width=40, height=30)
    stored = C.FrameCache(tmp_path / "cache", 64).open(str(video))
    assert (stored.height, stored.width) == (30, 40)
    assert C.storage_side(30, 40, 64) == 30 and C.storage_side(300, 400, 64) == 64


def test_fill_decodes_what_is_missing_and_leaves_bad_videos_to_the_dataset(tmp_path):
    good = [write_video(tmp_path / f"v{i}.mp4", frames=6) for i in range(3)]
    bad = write_broken(tmp_path, good[0])
    cache = C.FrameCache(tmp_path / "cache", 16)
    paths = [str(p) for p in good] + [str(p) for p in bad.values()]
    lines = []
    assert cache.fill(paths, workers=2, log=lines.append) == 3
    assert "decoded 3 videos (5 unreadable)" in lines[0]  # the missing file is not even tried
    assert len(list((tmp_path / "cache").glob("*.npy"))) == 3
    assert cache.missing(paths) == [str(p) for k, p in bad.items() if k != "missing"]
    assert cache.fill([str(p) for p in good]) == 0


def test_config_selects_the_cache(tmp_path):
    synthetic = load_config(None, ["data.dataset=synthetic", f"data.root={tmp_path}", "data.crop=48"])
    cache = builders.build_frame_cache(synthetic)
    assert cache.directory == tmp_path / ".frame_cache" and cache.short_side == 69  # round(48 * 320 / 224)
    assert builders.build_frame_cache(load_config(None, [f"data.root={tmp_path}"])) is None  # real data
    memory = builders.build_frame_cache(load_config(None, ["data.cache=memory", f"data.root={tmp_path}"]))
    assert memory.directory.parent.parent in (C.SHM, Path(os.environ.get("TMPDIR", "/tmp")))
    assert memory.short_side == 320
    chosen = load_config(None, ["data.cache=disk", f"data.cache_dir={tmp_path / 'x'}", "test.crop_size=400"])
    picked = builders.build_frame_cache(chosen)
    assert (picked.directory, picked.short_side) == (tmp_path / "x", 400)
    off = load_config(None, ["data.dataset=synthetic", "data.cache=none"])
    assert builders.build_frame_cache(off) is None


def test_cached_video_reads_clamp_and_resize():
    frames = np.arange(3 * 4 * 6 * 3, dtype=np.uint8).reshape(3, 4, 6, 3)
    video = C.CachedVideo("x.mp4", 10.0, frames)
    assert np.array_equal(video.read([0, 2, 5]), frames[[0, 2, 2]])
    assert video.read([1], short_side=2).shape == (1, 2, 3, 3) and video.duration == pytest.approx(0.3)


def test_an_opened_entry_is_reused_and_not_pickled_into_workers(tmp_path):
    video = write_video(tmp_path / "v.mp4", frames=6, width=48, height=32)
    cache = C.FrameCache(tmp_path / "cache", 24)
    cache.open(str(video))  # a miss: decodes and stores
    first = cache.open(str(video))
    assert cache.open(str(video)) is first  # no second np.load of the same entry
    copy = pickle.loads(pickle.dumps(cache))
    assert not copy._opened and copy.open(str(video)).read([0, 5]).tolist() == first.read([0, 5]).tolist()


def videos(directory: Path, count: int) -> list[str]:
    return [str(write_video(directory / f"v{i}.mp4", frames=6, width=48, height=32)) for i in range(count)]


def entries(directory: Path) -> int:
    return sum(f.stat().st_size for f in directory.glob("*.npy"))


def test_fill_stores_a_truncated_video_from_what_decodes_and_counts_it(tmp_path):
    good = write_gop_mp4(tmp_path / "good.mp4", frames=40)
    cut = str(write_truncated(good, tmp_path / "cut.mp4", frame=15))
    cache, lines = C.FrameCache(tmp_path / "cache", 24), []
    assert cache.fill([str(good), cut], log=lines.append) == 2
    assert "decoded 2 videos (1 truncated)" in lines[0]
    stored = C.FrameCache(tmp_path / "cache", 24).open(cut)  # read back from its entry
    assert stored.num_frames == 15 and truncation(stored) == "truncated: container says 40 frames, 15 decode"


def test_an_unwritable_directory_stops_the_fill_and_the_dataset_with_the_io_error(tmp_path):
    paths = videos(tmp_path, 2)
    (tmp_path / "file").write_text("a regular file, not a directory\n")
    cache = C.FrameCache(tmp_path / "file" / "cache", 24)  # no one, not even root, can create this
    with pytest.raises(CacheError, match=r"file/cache: \[Errno 20\] Not a directory"):
        cache.fill(paths, workers=2)
    data = VideoClipDataset(read_kinetics_rows(tmp_path, paths), shape(4, 16), cache=cache)
    with pytest.raises(CacheError, match="Not a directory"):  # not taken for a bad video and replaced
        data[0]


def read_kinetics_rows(directory: Path, paths: list[str]):
    (directory / "list.txt").write_text("".join(f"{p} 0\n" for p in paths))
    return read_kinetics(directory / "list.txt", directory)


def test_a_full_disk_stops_the_fill_with_the_error_and_leaves_no_partial_entry(tmp_path, monkeypatch):
    paths = videos(tmp_path, 3)

    def disk_full(file, array, **kwargs):
        file.write(b"half an entry")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(C.np, "save", disk_full)
    with pytest.raises(CacheError, match=r"cannot write .*cache: \[Errno 28\] No space left on device"):
        C.FrameCache(tmp_path / "cache", 24).fill(paths)
    assert [f.name for f in (tmp_path / "cache").iterdir() if not f.name.endswith(".json")] == []


def test_at_the_bound_the_rest_is_decoded_on_the_fly_at_the_same_size(tmp_path, monkeypatch):
    paths = videos(tmp_path, 4)
    cache = C.FrameCache(tmp_path / "cache", 24, max_bytes=1)
    one = cache.estimate(paths[0])
    assert one == 6 * 24 * 36 * 3  # frames x stored size x RGB, from the metadata alone
    cache.max_bytes = int(2.5 * one)
    lines = []
    assert cache.fill(paths, log=lines.append) == 2
    assert "2 of 4 videos do not fit (data.cache_max_gb=" in lines[1] and "decoded on the fly" in lines[1]
    assert one * 2 <= entries(tmp_path / "cache") <= cache.max_bytes + 2 * 256  # plus the .npy headers
    assert isinstance(cache.open(paths[0]), C.CachedVideo)
    assert isinstance(cache.open(paths[3]), PyAVReader)  # past the bound: decoded, not stored
    assert len(list((tmp_path / "cache").glob("*.npy"))) == 2
    rows = read_kinetics_rows(tmp_path, paths)
    bounded = VideoClipDataset(rows, shape(4, 16), mode="val", cache=cache)
    decoded = VideoClipDataset(rows, shape(4, 16), mode="val", decode_short_side=24)
    assert all(torch.equal(bounded[i].clip, decoded[i].clip) for i in range(4))  # hits and misses alike
    monkeypatch.setattr(C.FrameCache, "estimate", lambda self, path: pytest.fail("planned again"))
    assert cache.fill(paths) == 0  # the same two left out under the same bound: nothing to do


def test_fill_checks_free_space_first_and_keeps_a_reserve(tmp_path, monkeypatch):
    paths = videos(tmp_path, 3)
    cache = C.FrameCache(tmp_path / "cache", 24)  # no bound of its own
    one = cache.estimate(paths[0])
    usage = shutil._ntuple_diskusage(total=10 * one, used=0, free=int(2.5 * one))  # 1 of 10 kept free
    monkeypatch.setattr(C.shutil, "disk_usage", lambda path: usage)
    lines = []
    assert cache.fill(paths, log=lines.append) == 1
    assert "2 of 3 videos do not fit" in lines[1] and "free in" in lines[1]
    assert cache.bounded() and isinstance(cache.open(paths[2]), PyAVReader)
