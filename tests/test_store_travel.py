"""A store travels: its entries are keyed by paths relative to the dataset root, so it serves clips when
moved, copied to a node without the originals, reached through a symlink or a relative root; an original
copied without its mtime is still a hit, an edited one is a counted miss; the index is read once per
process; an older store is indexed again without transcoding."""

import builtins
import json
import os
import pickle
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from videos import write_video

from mgvideo.data import store as S
from mgvideo.data.annotations import read_kinetics
from mgvideo.data.datasets import FAILED, VideoClipDataset
from mgvideo.data.loader import build_loader
from mgvideo.data.prepare import prepare_store
from mgvideo.errors import ConfigError
from mgvideo.multigrid.schedule import ClipShape

SIDES = [24, 32]
SHAPE = ClipShape(frames=4, crop=24, min_rate=1, max_rate=3, base_crop=24, stage_batch=2, stage=0, slot=0)
CLIPS = 12  # items read per dataset: each of the 3 videos 4 times


def make_data(folder: Path, videos: int = 3) -> tuple[Path, list[Path]]:
    """`videos` small videos under folder/clips (lengths differ, so a wrong video shows) and folder/train.csv
    listing them relative to `folder`."""
    (folder / "clips").mkdir(parents=True)
    paths = [write_video(folder / "clips" / f"v{i}.mp4", frames=20 + 4 * i) for i in range(videos)]
    (folder / "train.csv").write_text("".join(f"clips/v{i}.mp4 {i % 2}\n" for i in range(videos)))
    return folder, paths


def prepared(tmp_path: Path, videos: int = 3, stored: int | None = None) -> tuple[Path, Path]:
    """A dataset root and a store (beside it) of its first `stored` videos (default: all)."""
    root, paths = make_data(tmp_path / "A", videos)
    store = tmp_path / "store"
    summary = prepare_store([str(p) for p in paths[:stored]], str(store), SIDES, root=str(root))
    assert summary["done"] == len(paths[:stored])
    return root, store


def dataset(root: Path | str, store: Path | str, **kwargs) -> VideoClipDataset:
    annotations = read_kinetics(Path(root) / "train.csv", root)
    return VideoClipDataset(annotations, SHAPE, seed=5, store=S.VideoStore(str(store), str(root)), **kwargs)


def read_all(data: VideoClipDataset) -> list[np.ndarray]:
    """Every item of the first CLIPS (video i % 3); each must be its own video, not a substitute."""
    out = []
    for item in range(CLIPS):
        sample = data[(item % data.num_videos, SHAPE)]
        assert sample.index == item % data.num_videos and sample.skipped == 0
        out.append(sample.clip.numpy())
    return out


def test_a_moved_store_serves_every_clip_on_a_node_without_the_originals(tmp_path):
    root, store = prepared(tmp_path)
    before = read_all(dataset(root, store))
    node = tmp_path / "node" / "local"
    shutil.copytree(store, node / "store")  # the store alone, at another path
    (node / "data").mkdir()
    shutil.copy(root / "train.csv", node / "data" / "train.csv")  # the list, not the videos
    shutil.rmtree(root)
    shutil.rmtree(store)
    moved = dataset(node / "data", node / "store")
    after = read_all(moved)
    assert int(moved.store_misses.sum()) == 0 and moved.store_miss_paths() == []
    assert not moved.unreadable.any()
    assert all(np.array_equal(a, b) for a, b in zip(before, after))


def test_a_symlinked_root_a_relative_root_and_absolute_listed_paths_are_hits(tmp_path, monkeypatch):
    root, store = prepared(tmp_path)
    before = read_all(dataset(root, store))
    (tmp_path / "link").symlink_to(root, target_is_directory=True)
    through_link = dataset(tmp_path / "link", store)
    assert all(np.array_equal(a, b) for a, b in zip(before, read_all(through_link)))
    # a list of absolute paths under the real folder, read with the symlink as the root
    (root / "absolute.csv").write_text("".join(f"{root}/clips/v{i}.mp4 {i % 2}\n" for i in range(3)))
    listed = VideoClipDataset(read_kinetics(root / "absolute.csv"), SHAPE, seed=5,
                              store=S.VideoStore(str(store), str(tmp_path / "link")))
    read_all(listed)
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")  # another working directory, relative root and store
    relative = dataset("../A", "../store")
    assert all(np.array_equal(a, b) for a, b in zip(before, read_all(relative)))
    for data in (through_link, listed, relative):
        assert int(data.store_misses.sum()) == 0


def test_originals_copied_without_mtimes_are_hits_and_an_edited_one_is_a_counted_miss(tmp_path):
    root, store = prepared(tmp_path)
    copy = tmp_path / "copy"
    (copy / "clips").mkdir(parents=True)
    shutil.copy(root / "train.csv", copy)
    later = os.stat(root / "clips" / "v0.mp4").st_mtime_ns + 10**12
    for video in (root / "clips").iterdir():
        shutil.copyfile(video, copy / "clips" / video.name)  # as `cp` without -p
        os.utime(copy / "clips" / video.name, ns=(later, later))  # surely newer than recorded
    copied = dataset(copy, store)
    read_all(copied)
    assert int(copied.store_misses.sum()) == 0
    write_video(copy / "clips" / "v1.mp4", frames=30, width=40)  # v1 edited in place
    edited = dataset(copy, store)
    read_all(edited)
    assert edited.store_misses.tolist() == [0, CLIPS // 3, 0]
    plain = VideoClipDataset(read_kinetics(copy / "train.csv", copy), SHAPE, seed=5)
    assert np.array_equal(edited[(1, SHAPE)].clip.numpy(), plain[(1, SHAPE)].clip.numpy())  # the new file
    assert edited.store_stale.tolist() == [False, True, False]
    assert edited.store_miss_paths() == [str(copy / "clips" / "v1.mp4")]


def test_same_size_different_content_and_newer_is_stale(tmp_path):
    root, store = prepared(tmp_path, videos=1)
    video = root / "clips" / "v0.mp4"
    data = bytearray(video.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size, other content
    stat = os.stat(video)
    video.write_bytes(bytes(data))
    os.utime(video, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    assert S.VideoStore(str(store), str(root)).find(str(video)) == (None, S.STALE)
    os.utime(video, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # not newer: taken as unchanged
    assert S.VideoStore(str(store), str(root)).find(str(video))[1] == S.HIT


def test_a_video_without_an_entry_is_a_counted_miss_across_loader_workers(tmp_path, caplog):
    root, store = prepared(tmp_path, videos=3, stored=2)
    data = dataset(root, store)
    plain = VideoClipDataset(read_kinetics(root / "train.csv", root), SHAPE, seed=5)
    assert np.array_equal(data[(2, SHAPE)].clip.numpy(), plain[(2, SHAPE)].clip.numpy())
    assert data.store_misses.tolist() == [0, 0, 1] and not data.store_stale.any()
    assert "reading" in caplog.text and "v2.mp4" in caplog.text and "no entry" in caplog.text
    since = data.store_misses.clone()
    assert data.store_miss_paths(since=since) == []
    batches = [[(v, SHAPE) for v in range(3)] for _ in range(4)]
    loader = build_loader(data, batches, workers=2)
    assert sum(len(b.clips) for b in loader) == 12
    del loader
    assert data.store_misses.tolist() == [0, 0, 5]  # counted in the workers, seen here
    assert data.store_miss_paths(limit=1, since=since) == [str(root / "clips" / "v2.mp4")]


def test_no_entry_and_no_original_is_an_unreadable_video_that_says_so(tmp_path, caplog):
    root, store = prepared(tmp_path, videos=2, stored=1)
    (root / "clips" / "v1.mp4").unlink()
    data = dataset(root, store, mode="val")
    assert data[(1, SHAPE)].index == FAILED
    assert data.unreadable.tolist() == [False, True] and int(data.store_misses.sum()) == 0
    assert "has no entry for it and the original is missing" in caplog.text


def test_the_index_and_each_original_are_read_once_per_process(tmp_path, monkeypatch):
    root, store = prepared(tmp_path)
    for video in (root / "clips").iterdir():  # newer than recorded: each original is fingerprinted too
        os.utime(video, ns=(os.stat(video).st_atime_ns, os.stat(video).st_mtime_ns + 10**9))
    originals = {str(root / "clips" / f"v{i}.mp4") for i in range(3)}
    calls = {"json": 0, "stat": 0, "open": 0}
    real_load, real_stat, real_open = json.load, os.stat, builtins.open

    def load(*args, **kwargs):
        calls["json"] += 1
        return real_load(*args, **kwargs)

    def stat(path, *args, **kwargs):
        calls["stat"] += str(path) in originals
        return real_stat(path, *args, **kwargs)

    def opened(path, *args, **kwargs):
        calls["open"] += str(path) in originals or str(path).endswith(".json")
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(json, "load", load)
    monkeypatch.setattr(os, "stat", stat)
    monkeypatch.setattr(builtins, "open", opened)
    data = dataset(root, store)
    for _ in range(3):
        read_all(data)  # 36 clips of 3 videos
    assert int(data.store_misses.sum()) == 0
    # one index read; per video, one stat and one fingerprint read of its original
    assert calls == {"json": 1, "stat": 3, "open": 4}
    worker = pickle.loads(pickle.dumps(data.store))  # a spawned worker reads the index itself, once
    assert worker._entries is None and worker.open(str(root / "clips" / "v0.mp4")) is not None


def test_an_older_store_is_refused_then_indexed_without_transcoding(tmp_path, monkeypatch):
    root, paths = make_data(tmp_path / "A")
    store = tmp_path / "store"
    for path in paths:  # the older layout: folders named by the absolute path's hash, no key, no index
        status, meta = S.make_entry(str(store), os.path.abspath(path), str(path), SIDES)
        old = {k: v for k, v in meta.items() if k not in ("key", "entry", "fingerprint")}
        (store / meta["entry"] / S.META).write_text(json.dumps(old))
    command = re.escape(f"--root {root} --out {store}")
    with pytest.raises(ConfigError, match=f"no {S.INDEX} .* mgvideo data prepare LIST .*{command}"):
        dataset(root, store)[(0, SHAPE)]

    def no_transcoding(*args):
        raise AssertionError("transcoded again")

    monkeypatch.setattr(S, "transcode", no_transcoding)
    summary = prepare_store([str(p) for p in paths], str(store), SIDES, root=str(root))
    assert (summary["kept"], summary["done"], summary["failed"]) == (3, 0, [])
    assert sorted(S.read_index(str(store))) == [f"clips/v{i}.mp4" for i in range(3)]
    assert {p.name for p in store.iterdir() if p.is_dir()} == {
        S.entry_folder(f"clips/v{i}.mp4") for i in range(3)}
    shutil.rmtree(root / "clips")  # and it now travels
    data = dataset(root, store)
    read_all(data)
    assert int(data.store_misses.sum()) == 0


def test_resuming_and_extending_a_preparation_keeps_the_index_whole(tmp_path):
    root, paths = make_data(tmp_path / "A", videos=3)
    store = str(tmp_path / "store")
    prepare_store([str(p) for p in paths[:2]], store, SIDES, root=str(root))
    (root / "clips" / "v1.mp4").unlink()  # gone before the next run: its entry stays in use
    summary = prepare_store([str(p) for p in paths[1:]], store, SIDES, root=str(root))
    assert (summary["kept"], summary["done"]) == (1, 1)
    assert sorted(S.read_index(store)) == [f"clips/v{i}.mp4" for i in range(3)]
