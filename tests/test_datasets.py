"""Annotation readers and VideoClipDataset: shapes, seeding, modes, labels and bad-video recovery."""

import json
import logging

import av
import numpy as np
import pytest
import torch
from videos import frame_of, level, write_broken, write_image, write_video

from mgvideo.data import sampling as S
from mgvideo.data.annotations import read_charades, read_kinetics, read_multilabel, read_ssv2
from mgvideo.data.datasets import FAILED, VideoClipDataset, resize_frames
from mgvideo.data.decode import PyAVReader
from mgvideo.errors import AnnotationError, VideoDecodeError
from mgvideo.multigrid.schedule import ClipShape

SHAPE = ClipShape(frames=4, crop=16, min_rate=1, max_rate=3, base_crop=16, stage_batch=2, stage=0, slot=0)


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    """Four 22-frame videos and a Kinetics-style list of them."""
    root = tmp_path_factory.mktemp("videos")
    for i in range(4):
        write_video(root / f"v{i}.mp4", frames=22, width=48, height=32)
    (root / "train.txt").write_text("".join(f"v{i}.mp4 {i % 2}\n" for i in range(4)))
    return root


def test_kinetics_ids_names_class_list_and_separator(tmp_path):
    (tmp_path / "a.txt").write_text("x/a.mp4 3\nb c.mp4 0\n\n")
    ann = read_kinetics(tmp_path / "a.txt")
    assert [(r.label, r.line) for r in ann.records] == [(3, 1), (0, 2)] and ann.num_classes == 4
    assert ann.records[0].path == str(tmp_path / "x/a.mp4")  # relative to the list's folder by default
    assert ann.records[1].path == str(tmp_path / "b c.mp4")  # the path may hold the separator
    (tmp_path / "b.csv").write_text("a.mp4,running\nb.mp4,jumping\n")
    ann = read_kinetics(tmp_path / "b.csv", root="/data")
    assert [r.label for r in ann.records] == [1, 0] and ann.class_names == ["jumping", "running"]
    assert ann.records[0].path == "/data/a.mp4"
    (tmp_path / "classes.txt").write_text("running\njumping\nswimming\n")
    ann = read_kinetics(tmp_path / "b.csv", classes=tmp_path / "classes.txt")
    assert [r.label for r in ann.records] == [0, 1] and ann.num_classes == 3


def test_malformed_row_and_unknown_label_name_the_file_and_line(tmp_path):
    (tmp_path / "bad.txt").write_text("a.mp4 0\njustapath\nc.mp4 1\n")
    with pytest.raises(AnnotationError, match=r"bad\.txt:2: expected"):
        read_kinetics(tmp_path / "bad.txt")
    (tmp_path / "classes.txt").write_text("run\njump\n")
    (tmp_path / "names.txt").write_text("a.mp4 run\nb.mp4 fly\n")
    with pytest.raises(AnnotationError, match=r"names\.txt:2: unknown label 'fly'"):
        read_kinetics(tmp_path / "names.txt", classes=tmp_path / "classes.txt")
    errors = []
    ann = read_kinetics(tmp_path / "bad.txt", errors=errors)
    assert len(ann.records) == 2 and [e.line for e in errors] == [2]


def test_ssv2_strips_template_brackets(tmp_path):
    labels = {"Pushing something left": "0", "Holding something": "1"}
    (tmp_path / "labels.json").write_text(json.dumps(labels))
    split = [{"id": "7", "template": "Holding [something]"},
             {"id": "9", "template": "Pushing [something] left"}]
    (tmp_path / "train.json").write_text(json.dumps(split))
    ann = read_ssv2(tmp_path / "train.json", tmp_path / "labels.json", root="/v")
    assert [(r.path, r.label) for r in ann.records] == [("/v/7.webm", 1), ("/v/9.webm", 0)]
    assert ann.num_classes == 2
    (tmp_path / "bad.json").write_text(json.dumps(split + [{"id": "3", "template": "Dropping [something]"}]))
    with pytest.raises(AnnotationError, match=r"bad\.json: entry 3: unknown label 'Dropping something'"):
        read_ssv2(tmp_path / "bad.json", tmp_path / "labels.json")


def test_charades_frame_lists_and_generic_multilabel(tmp_path):
    rows = ["original_vido_id video_id frame_id path labels", 'A 0 1 A/f2.jpg "1"', 'A 0 0 A/f1.jpg "0,2"',
            'B 1 0 B.mp4 ""', 'B 1 1 B.mp4 "3"']
    (tmp_path / "c.csv").write_text("\n".join(rows) + "\n")
    ann = read_charades(tmp_path / "c.csv", root="/f", num_classes=5)
    a, b = ann.records
    assert a.label == (0, 1, 2) and a.frame_labels == ((0, 2), (1,)) and a.frame_paths == ("/f/A/f1.jpg",
                                                                                            "/f/A/f2.jpg")
    assert b.frame_paths is None and b.path == "/f/B.mp4" and b.frame_labels == ((), (3,))
    assert ann.multi_label and ann.num_classes == 5
    (tmp_path / "bad.csv").write_text("\n".join(rows[:2] + ["A 0 x A/f3.jpg 1"]) + "\n")
    with pytest.raises(AnnotationError, match=r"bad\.csv:3"):
        read_charades(tmp_path / "bad.csv")
    (tmp_path / "m.txt").write_text("a.mp4 0,3\nb.mp4\n")
    ann = read_multilabel(tmp_path / "m.txt")
    assert [r.label for r in ann.records] == [(0, 3), ()] and ann.num_classes == 4


def dataset(root, **kwargs):
    return VideoClipDataset(read_kinetics(root / "train.txt"), SHAPE, **kwargs)


def test_train_clips_follow_the_shape_and_the_seed(videos):
    ds = dataset(videos, seed=3)
    sample = ds[(1, SHAPE)]
    assert sample.clip.shape == (3, 4, 16, 16) and sample.clip.dtype == torch.uint8
    assert (sample.label, sample.index, sample.skipped) == (1, 1, 0)
    assert torch.equal(ds[1].clip, sample.clip)  # plain index = default shape, same seed
    small = ClipShape(frames=2, crop=8, min_rate=1, max_rate=1, base_crop=16, stage_batch=8, stage=0, slot=0)
    assert ds[(2, small)].clip.shape == (3, 2, 8, 8)
    shown = []
    for epoch in range(12):
        ds.set_epoch(epoch)
        ids = [frame_of(f) for f in ds[0].clip.permute(1, 2, 3, 0).numpy()]
        assert len(set(np.diff(ids))) == 1 and 1 <= ids[1] - ids[0] <= 3  # one rate from [1, 3]
        shown.append(tuple(ids))
    assert len(set(shown)) > 3  # the epoch changes the draw
    ds.set_epoch(5)
    assert [frame_of(f) for f in ds[0].clip.permute(1, 2, 3, 0).numpy()] == list(shown[5])


def test_decoder_resize_matches_resizing_after_decoding(videos):
    a, b = dataset(videos, seed=1), dataset(videos, seed=1, decoder_resize=False)
    for i in range(4):
        x, y = a[i].clip.int(), b[i].clip.int()
        assert x.shape == y.shape and (x - y).abs().max() <= 3


def test_val_and_test_modes_are_deterministic_views(videos):
    val = dataset(videos, mode="val")
    first = val[2].clip
    val.set_epoch(9)
    assert torch.equal(val[2].clip, first)
    expected = S.uniform_clip_indices(22, 4, 1, 0, 1)
    assert [frame_of(f) for f in first.permute(1, 2, 3, 0).numpy()] == expected.tolist()
    test = dataset(videos, mode="test", test_clips=2, test_crops=3, test_size=20)
    assert len(test) == 4 * 6
    sample = test[6 * 3 + 4]  # video 3, temporal clip 1, right crop
    assert sample.index == 3 and sample.clip.shape == (3, 4, 20, 20)
    ids = [frame_of(f) for f in sample.clip.permute(1, 2, 3, 0).numpy()]
    assert ids == S.uniform_clip_indices(22, 4, 1, 1, 2).tolist()


def test_bad_videos_are_skipped_logged_once_and_counted(tmp_path, caplog):
    good = write_video(tmp_path / "good.mp4", frames=22)
    broken = write_broken(tmp_path, good)
    names = [good.name] + [p.name for p in broken.values()]
    (tmp_path / "train.txt").write_text("".join(f"{n} 0\n" for n in names))
    ds = dataset(tmp_path, seed=0, max_retries=30)
    with caplog.at_level(logging.WARNING, logger="mgvideo.data.datasets"):
        for _ in range(2):
            samples = [ds[i] for i in range(len(ds))]
    assert all(s.index == 0 for s in samples)  # every clip comes from the one good video
    assert samples[0].skipped == 0 and all(s.skipped >= 1 for s in samples[1:])
    warned = [r.getMessage() for r in caplog.records]
    assert len(warned) == len(broken)  # each bad file once, though each was hit twice
    for path in broken.values():
        assert sum(path.name in w for w in warned) == 1


def test_retry_bound_raises_naming_the_files(tmp_path):
    broken = write_broken(tmp_path, write_video(tmp_path / "good.mp4"))
    (tmp_path / "train.txt").write_text("".join(f"{p.name} 0\n" for p in broken.values()))
    ds = dataset(tmp_path, max_retries=4)
    with pytest.raises(VideoDecodeError, match="5 unreadable videos") as err:
        ds[0]
    assert broken["missing"].name in str(err.value)


@pytest.mark.parametrize("mode, side", [("val", 16), ("test", 20)])
def test_val_and_test_never_substitute_a_bad_video(tmp_path, mode, side):
    good = write_video(tmp_path / "good.mp4", frames=22)
    broken = write_broken(tmp_path, good)
    (tmp_path / "train.txt").write_text(f"{good.name} 0\n{broken['truncated'].name} 1\n")
    ds = dataset(tmp_path, mode=mode, test_clips=2, test_crops=3, test_size=20)
    samples = [ds[i] for i in range(len(ds))]
    views = len(samples) // 2
    assert [s.index for s in samples] == [0] * views + [FAILED] * views  # no view borrowed from video 0
    assert all(s.clip.shape == (3, 4, side, side) for s in samples)  # blanks still stack with the rest
    assert all(s.skipped == 1 and not s.clip.any() for s in samples[views:])


def test_an_error_in_the_middle_of_decoding_is_skipped(videos, monkeypatch):
    original = PyAVReader.read

    def failing(self, indices, short_side=None):
        if self.path.endswith("v1.mp4"):
            raise av.error.InvalidDataError(1094995529, "Invalid data found when processing input")
        return original(self, indices, short_side)

    monkeypatch.setattr(PyAVReader, "read", failing)
    sample = dataset(videos)[1]
    assert sample.index != 1 and sample.skipped == 1


def test_charades_label_is_the_union_over_the_sampled_span(tmp_path):
    video = write_video(tmp_path / "c.mp4", frames=22)
    frames = [write_image(tmp_path / f"F-{i + 1:06d}.jpg", level(i)) for i in range(22)]  # FFmpeg's image2
    labels = [0 if i < 10 else 1 for i in range(22)]
    rows = ["original_vido_id video_id frame_id path labels"]
    rows += [f'V 0 {i} {video.name} "{labels[i]}"' for i in range(22)]
    rows += [f'F 1 {i} {frames[i].name} "{labels[i] + 2}"' for i in range(22)]
    (tmp_path / "c.csv").write_text("\n".join(rows) + "\n")
    ann = read_charades(tmp_path / "c.csv")
    for frames_, want in ((2, {1}), (4, {0, 1})):  # centre clips: frames 10-11, and 9-12
        shape = ClipShape(frames_, 16, 1, 1, 16, 1, 0, 0)
        span = S.uniform_clip_indices(22, frames_, 1, 0, 1)
        ds = VideoClipDataset(ann, shape, mode="val")
        for video_index, offset in ((0, 0), (1, 2)):
            sample = ds[video_index]
            assert sample.label.dtype == torch.float32 and sample.label.shape == (4,)
            assert set(torch.nonzero(sample.label).flatten().tolist()) == {c + offset for c in want}
            ids = [frame_of(f) for f in sample.clip.permute(1, 2, 3, 0).numpy()]
            assert ids == span.tolist()


def test_uint8_resize_is_within_one_level_of_the_float_one():
    frames = np.random.default_rng(0).integers(0, 256, (3, 30, 41, 3), dtype=np.uint8)
    for side in (12, 29, 30, 45):
        fast, slow = resize_frames(frames, side), S.resize_short_side(frames, side)
        assert fast.shape == slow.shape and fast.dtype == np.uint8
        assert np.abs(fast.astype(int) - slow).max() <= 1
    assert resize_frames(frames, 30) is frames  # already the size: untouched


def test_a_same_view_clip_shape_draws_short_sides_in_the_same_view_range(videos):
    ann = read_kinetics(videos / "train.txt")
    small = dict(frames=4, crop=8, min_rate=1, max_rate=1, base_crop=16, stage_batch=2, stage=0, slot=0)
    ds = VideoClipDataset(ann, SHAPE, mode="train", jitter=(18, 23))
    rng = np.random.default_rng(0)
    zoom = {ds._short_side(ClipShape(**small), rng) for _ in range(500)}
    same = {ds._short_side(ClipShape(**small, same_view=True), rng) for _ in range(500)}
    assert (min(zoom), max(zoom)) == (9, 23)  # the reference: only the lower bound follows the crop
    assert (min(same), max(same)) == (9, 12)  # both bounds follow it: 18/2, 23/2
