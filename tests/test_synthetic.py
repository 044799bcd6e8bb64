"""The synthetic dataset: deterministic, decodable, in the three annotation formats, varied in geometry, and
unreadable from a single frame (while frame differences are readable, so that check can fail)."""

from __future__ import annotations

import json
import os

import av
import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from mgvideo.data import synthetic_scenes as scenes
from mgvideo.data.synthetic import SIZES, SizeSpec, generate, generate_with
from mgvideo.errors import ConfigError

NUM_CLASSES = len(scenes.CLASSES)
LISTS = ["classes.txt", "train.csv", "val.csv", "meta.json", "ssv2/something-something-v2-labels.json",
         "ssv2/something-something-v2-train.json", "ssv2/something-something-v2-validation.json",
         "charades/classes.txt", "charades/frame_lists/train.csv", "charades/frame_lists/val.csv"]


def decode(path: str) -> tuple[np.ndarray, float]:
    with av.open(path) as container:
        fps = float(container.streams.video[0].average_rate)
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)]), fps


def read_rows(path: str) -> list[list[str]]:
    with open(path, encoding="utf-8") as f:
        return [line.split() for line in f if line.strip()]


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> dict:
    return generate(str(tmp_path_factory.mktemp("synth_a")), seed=0, size="small")


def test_same_seed_gives_identical_lists_and_frames(small, tmp_path):
    again = generate(str(tmp_path / "b"), seed=0, size="small")
    for name in LISTS:
        with open(os.path.join(small["root"], name), "rb") as a:
            with open(os.path.join(again["root"], name), "rb") as b:
                assert a.read() == b.read(), name
    for rel in ("videos/train/000000.mp4", "videos/val/000007.mp4", "charades/videos/TRAIN0001.mp4"):
        first, _ = decode(os.path.join(small["root"], rel))
        second, _ = decode(os.path.join(again["root"], rel))
        assert np.array_equal(first, second), rel


def test_different_seed_gives_different_videos(small, tmp_path):
    other = generate_with(str(tmp_path / "c"), seed=1, spec=SizeSpec(1, 0, 0, 0, 0, 0))
    a, _ = decode(os.path.join(small["root"], "videos/train/000003.mp4"))
    b, _ = decode(os.path.join(other["root"], "videos/train/000003.mp4"))
    assert a.shape != b.shape or np.abs(a.astype(int) - b).mean() > 5


def test_kinetics_lists_point_to_decodable_varied_videos(small):
    with open(small["classes"], encoding="utf-8") as f:
        assert f.read().splitlines() == list(scenes.CLASS_NAMES)
    geometry = []
    for split in ("train", "val"):
        rows = read_rows(small[split])
        per_class = getattr(SIZES["small"], f"{split}_per_class")
        assert len(rows) == small["counts"][split] == NUM_CLASSES * per_class
        assert sorted({int(y) for _, y in rows}) == list(range(NUM_CLASSES))
        for rel, _ in rows:
            frames, fps = decode(os.path.join(os.path.dirname(small[split]), rel))
            length, height, width = frames.shape[:3]
            assert 48 <= length <= 72 and 80 <= min(height, width) <= 112 and height % 2 == width % 2 == 0
            assert fps in scenes.FPS_CHOICES
            geometry.append((length, fps, height, width, height > width))
    lengths, fpss, heights, widths, portrait = (set(g) for g in zip(*geometry))
    assert len(lengths) >= 10 and len(fpss) >= 4 and len(heights) >= 5 and len(widths) >= 5
    assert portrait == {True, False}


def test_ssv2_variant_has_templates_placeholders_and_videos(small):
    ssv2 = small["ssv2"]
    with open(ssv2["labels"], encoding="utf-8") as f:
        labels = json.load(f)
    assert sorted(labels.values(), key=int) == [str(i) for i in range(NUM_CLASSES)]
    for part in ("train", "validation"):
        with open(ssv2[part], encoding="utf-8") as f:
            rows = json.load(f)
        assert len(rows) == small["counts"]["ssv2_train" if part == "train" else "ssv2_val"]
        for row in rows:
            assert row["template"].replace("[", "").replace("]", "") in labels
            assert row["template"].count("[something]") == len(row["placeholders"])
            assert all(p in row["label"] for p in row["placeholders"])
            assert os.path.exists(os.path.join(ssv2["videos"], f"{row['id']}.mp4"))


def test_charades_variant_is_a_multilabel_frame_list(small):
    charades = small["charades"]
    seen_labels, per_video = set(), {}
    for part in ("train", "val"):
        with open(charades[part], encoding="utf-8") as f:
            assert f.readline().split() == ["original_vido_id", "video_id", "frame_id", "path", "labels"]
            rows = [line.split() for line in f]
        for vid, _, frame_id, path, labels in rows:
            assert os.path.exists(os.path.join(charades["frames"], path))
            ids = [int(x) for x in labels.strip('"').split(",") if x]
            assert all(0 <= i < NUM_CLASSES for i in ids)
            seen_labels.update(ids)
            per_video.setdefault(vid, []).append(int(frame_id))
    assert len(per_video) == small["counts"]["charades_train"] + small["counts"]["charades_val"]
    assert len(seen_labels) >= 2
    for vid, frame_ids in per_video.items():
        assert frame_ids == list(range(len(frame_ids)))
        frames, _ = decode(os.path.join(charades["videos"], f"{vid}.mp4"))
        assert len(frames) == len(frame_ids)


def test_unknown_size_names_the_field(tmp_path):
    with pytest.raises(ConfigError, match="size"):
        generate(str(tmp_path), size="huge")


def test_any_frame_can_be_drawn_on_its_own():
    scene, _, _ = scenes.make_clip(seed=5, label=3)
    every = scenes.render_frames(scene, range(scene.num_frames))
    assert np.array_equal(scenes.render_frames(scene, [40, 7]), every[[40, 7]])
    assert not np.array_equal(every[0], every[20])


# ------------------------------------------------------------------ single frames carry no class information
GAP, RES = 12, 32  # frames between the views; side of the downscaled views


def _views(per_class: int, base_seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Three frames (t - GAP, t, t + GAP) around a random t of each clip, downscaled: (N, 3, 3, RES, RES)."""
    views, labels = [], []
    for i in range(per_class * NUM_CLASSES):
        scene, _, _ = scenes.make_clip(base_seed + i, i % NUM_CLASSES)
        t = int(np.random.default_rng(base_seed + i).integers(GAP, scene.num_frames - GAP))
        frames = torch.from_numpy(scenes.render_frames(scene, [t - GAP, t, t + GAP]))
        views.append(F.interpolate(frames.permute(0, 3, 1, 2).float() / 255, size=(RES, RES), mode="area"))
        labels.append(i % NUM_CLASSES)
    return torch.stack(views), torch.tensor(labels)


def _val_accuracy(train_x, train_y, val_x, val_y, epochs: int = 12) -> float:
    """Train a tiny 2D CNN on the given per-clip images and return its val top-1."""
    torch.manual_seed(0)
    mean, std = train_x.mean((0, 2, 3), keepdim=True), train_x.std((0, 2, 3), keepdim=True)
    train_x, val_x = (train_x - mean) / std, (val_x - mean) / std
    blocks, cin = [], train_x.shape[1]
    for cout in (32, 32, 64):
        blocks += [nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(), nn.MaxPool2d(2)]
        cin = cout
    model = nn.Sequential(*blocks[:-1], nn.AdaptiveMaxPool2d(1), nn.Flatten(), nn.Linear(cin, NUM_CLASSES))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=1e-3)
    for _ in range(epochs):
        for idx in torch.randperm(len(train_x)).split(32):
            loss = F.cross_entropy(model(train_x[idx]), train_y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()
    with torch.no_grad():
        return float((model(val_x).argmax(1) == val_y).float().mean())


@pytest.mark.slow
def test_single_frame_is_near_chance_but_frame_differences_are_not():
    train_x, train_y = _views(40, 10**6)
    val_x, val_y = _views(15, 2 * 10**6)
    chance = 1 / NUM_CLASSES

    def single(x):
        return x[:, 1]

    def differences(x):
        return torch.cat([x[:, 1] - x[:, 0], x[:, 2] - x[:, 1], x[:, 1]], dim=1)

    single_acc = _val_accuracy(single(train_x), train_y, single(val_x), val_y)
    diff_acc = _val_accuracy(differences(train_x), train_y, differences(val_x), val_y)
    assert single_acc < chance + 0.06, f"one frame gives {single_acc:.3f} (chance {chance:.3f})"
    message = f"frame differences {diff_acc:.3f}, one frame {single_acc:.3f}"
    assert diff_acc > max(2 * chance, single_acc + 0.05), message


@pytest.mark.parametrize("name", ["rotate_clockwise", "rotate_anticlockwise"])
def test_rotation_sense_survives_the_long_cycles_coarsest_sampling_rate(name):
    """At rate 8 (T/4 frames over the full clip's span) a turn must not alias into the other sense: the
    square repeats every quarter turn, so each sampled step must stay below an eighth of a turn."""
    label = scenes.CLASS_NAMES.index(name)
    sense = 1 if name == "rotate_clockwise" else -1
    for seed in range(20):
        scene, _, _ = scenes.make_clip(seed, label)
        square = next(t for t in scene.tracks if t.shape == "square")
        step = np.diff(square.angle[::8])
        apparent = (step + np.pi / 4) % (np.pi / 2) - np.pi / 4  # what a quarter-turn-symmetric shape shows
        assert np.all(sense * apparent > 0), (seed, step)
