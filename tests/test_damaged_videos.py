"""A truncated video in training: clips come from the frames that decode, and the video is flagged (also
when a loader worker found it) and counted in the run's summary."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from videos import frame_of, write_gop_mp4, write_truncated

from mgvideo.cli import main
from mgvideo.config import load_config
from mgvideo.data import prepare
from mgvideo.data.annotations import read_kinetics
from mgvideo.data.cache import FrameCache
from mgvideo.data.datasets import VideoClipDataset
from mgvideo.data.loader import build_loader
from mgvideo.multigrid.sampler import FixedShapeBatchSampler
from mgvideo.multigrid.schedule import ClipShape

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "configs" / "synthetic" / "tiny.yaml"
SHAPE = ClipShape(frames=8, crop=32, min_rate=4, max_rate=4, base_crop=32, stage_batch=2, stage=0, slot=0)


def frames_of(clip) -> list[int]:
    return [frame_of(clip[:, t].permute(1, 2, 0).numpy()) for t in range(clip.shape[1])]


def dataset(tmp_path, mode="val", **kwargs) -> VideoClipDataset:
    good = write_gop_mp4(tmp_path / "good.mp4", frames=40)
    write_truncated(good, tmp_path / "cut.mp4", frame=15)
    (tmp_path / "list.txt").write_text("good.mp4 0\ncut.mp4 1\n")
    return VideoClipDataset(read_kinetics(tmp_path / "list.txt", tmp_path), SHAPE, mode=mode, flip=False,
                            **kwargs)


def test_a_truncated_video_gives_its_clip_from_what_decodes(tmp_path, caplog):
    data = dataset(tmp_path)
    good, cut = data[0], data[1]
    start = frames_of(good.clip)[0]
    assert start > 4 and frames_of(good.clip) == [(start + i) % 23 for i in range(0, 32, 4)]  # 8 at rate 4
    shown = frames_of(cut.clip)
    assert cut.index == 1 and cut.skipped == 0  # not replaced by another video
    assert max(shown) <= 14 and len(set(shown)) >= 4  # within the 15 that decode, not the last one repeated
    assert data.truncated.tolist() == [False, True]
    assert "container says 40 frames, 15 decode" in caplog.text


def test_loader_workers_flag_truncated_videos_for_the_main_process(tmp_path):
    data = dataset(tmp_path, mode="train")
    sampler = FixedShapeBatchSampler(SHAPE, 2, 2, rank=0, world_size=1, seed=0, shuffle=False)
    for _ in range(2):
        batches = list(build_loader(data, sampler, workers=2, seed=0))
    assert len(batches) == 1 and data.truncated.tolist() == [False, True]
    assert np.all(batches[0].indices.numpy() == [0, 1])


def test_a_cached_truncated_video_is_flagged_on_first_use(tmp_path):
    data = dataset(tmp_path, cache=FrameCache(tmp_path / "cache", 46))
    assert data.cache.fill([r.path for r in data.records]) == 2
    assert max(frames_of(data[1].clip)) <= 14 and data.truncated.tolist() == [False, True]


def test_a_training_run_counts_its_truncated_videos(tmp_path, capsys):
    small = REPO / "runs" / "data" / "synthetic_small"
    prepare.ensure_synthetic_data(load_config(TINY, [f"data.root={small}"]))
    cut = write_truncated(write_gop_mp4(tmp_path / "good.mp4", frames=40), tmp_path / "cut.mp4", frame=15)
    rows = (small / "train.csv").read_text().splitlines()
    train = [f"{cut} 0"] + [f"{small / path} {label}" for path, label in (r.split() for r in rows[1:])]
    (tmp_path / "train.csv").write_text("\n".join(train) + "\n")
    (tmp_path / "val.csv").write_text("".join(f"{small / r.split()[0]} {r.split()[1]}\n"
                                              for r in (small / "val.csv").read_text().splitlines()[:4]))
    args = ["train", str(TINY), "--out", str(tmp_path / "run"), "data.dataset=kinetics",
            f"data.root={tmp_path}", "data.cache=disk", "multigrid.long_cycle=false",
            "multigrid.short_cycle=false", "solver.max_epoch=1", "solver.steps=[0]", "solver.warmup_epochs=0"]
    assert main(args) == 0  # one epoch reads every training video once
    out = capsys.readouterr().out
    assert "decoded 44 videos (1 truncated)" in out
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["truncated_videos"] == 1


@pytest.mark.slow
def test_unreadable_training_videos_are_counted_per_video_named_and_warned_about_once(tmp_path):
    small = REPO / "runs" / "data" / "synthetic_small"
    prepare.ensure_synthetic_data(load_config(TINY, [f"data.root={small}"]))
    (tmp_path / "empty.mp4").write_bytes(b"")
    noise = np.random.default_rng(0).integers(0, 256, 4096, np.uint8).tobytes()
    (tmp_path / "garbage.mkv").write_bytes(noise)
    rows = [r.split() for r in (small / "train.csv").read_text().splitlines()]
    train = ["empty.mp4 0", "garbage.mkv 1"] + [f"{small / path} {label}" for path, label in rows]
    (tmp_path / "train.csv").write_text("\n".join(train) + "\n")
    (tmp_path / "val.csv").write_text("".join(f"{small / r.split()[0]} {r.split()[1]}\n"
                                              for r in (small / "val.csv").read_text().splitlines()[:4]))
    args = ["train", str(TINY), "--out", str(tmp_path / "run"), "data.dataset=kinetics",
            f"data.root={tmp_path}", "data.cache=none", "data.workers=2", "multigrid.long_cycle=false",
            "multigrid.short_cycle=false", "solver.max_epoch=3", "solver.steps=[0]", "solver.warmup_epochs=0",
            "train.precise_bn_batches=1"]
    # A subprocess, as a user runs it: the loader workers' warnings reach its stderr.
    done = subprocess.run([sys.executable, "-m", "mgvideo", *args], capture_output=True, text=True,
                          timeout=300, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert done.returncode == 0, done.stderr[-2000:]
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["skipped_videos"] == 2 and summary["replaced_clips"] >= 6  # 3 epochs, 2 videos
    assert summary["unreadable_videos"] == [str(tmp_path / "empty.mp4"), str(tmp_path / "garbage.mkv")]
    for name in ("empty.mp4", "garbage.mkv"):  # once each, though both workers read both videos
        assert done.stderr.count(f"skipping unreadable video {tmp_path / name}") == 1, done.stderr
    assert "skipped 2 unreadable videos" in done.stdout + done.stderr
