"""The built-in synthetic video dataset: writes real h264/mp4 videos of motion classes and their annotation
lists in Kinetics, Something-Something V2 and Charades formats, so that training runs with no download.

Layout under `out_dir` (paths in the lists are relative to the list file's folder):
  classes.txt, train.csv, val.csv          Kinetics-style "path label" rows; videos/{train,val}/NNNNNN.mp4
  ssv2/something-something-v2-{labels,train,validation}.json, ssv2/videos/ID.mp4
  charades/frame_lists/{train,val}.csv     PySlowFast frame lists (multi-label per frame);
  charades/frames/VID/VID-NNNNNN.jpg, charades/videos/VID.mp4, charades/classes.txt
Generation is a pure function of the seed; see synthetic_scenes.py for what the classes are.
"""

from __future__ import annotations

import json
import os
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from multiprocessing import get_context

import av
import numpy as np
from tqdm import tqdm

from mgvideo.data.synthetic_scenes import (
    CLASS_NAMES,
    CLASSES,
    CastConflict,
    add_action,
    make_clip,
    new_scene,
    render_frames,
    sample_geometry,
)
from mgvideo.errors import ConfigError

VERSION = 4  # bump when a change alters the generated data (runs regenerate older sets)


@dataclass(frozen=True)
class SizeSpec:
    """How many videos each part of the dataset gets."""

    train_per_class: int
    val_per_class: int
    ssv2_train: int
    ssv2_val: int
    charades_train: int
    charades_val: int


SIZES = {
    "small": SizeSpec(2, 1, 10, 5, 3, 2),
    "default": SizeSpec(120, 25, 40, 20, 16, 8),
    # The time-to-accuracy benchmark: 2,000 validation clips (a top-1 standard error near 0.8 points)
    "bench": SizeSpec(120, 100, 2, 2, 2, 2),
}
_SPLIT_CODES = {"train": 0, "val": 1, "ssv2_train": 2, "ssv2_val": 3, "charades_train": 4, "charades_val": 5}


def clip_seed(seed: int, split: str, index: int) -> int:
    """The seed of one video, independent of every other video (so videos can be made in any order)."""
    return int(np.random.SeedSequence([seed, _SPLIT_CODES[split], index]).generate_state(1)[0])


def to_yuv420p(rgb: np.ndarray, full_range: bool = False) -> np.ndarray:
    """BT.601 YUV 4:2:0 planes of one uint8 (H, W, 3) frame, stacked as FFmpeg's (3H/2, W) layout.

    Done here rather than by swscale, whose result can depend on the input buffer's memory alignment, which
    would make the videos differ from run to run."""
    h, w = rgb.shape[:2]
    x = rgb.astype(np.float32)
    y = x @ np.array([0.299, 0.587, 0.114], np.float32)
    cb = x @ np.array([-0.168736, -0.331264, 0.5], np.float32)
    cr = x @ np.array([0.5, -0.418688, -0.081312], np.float32)
    if not full_range:  # studio swing: Y in 16..235, chroma in 16..240
        y, cb, cr = 16 + y * (219 / 255), cb * (224 / 255), cr * (224 / 255)
    cb, cr = (c.reshape(h // 2, 2, w // 2, 2).mean(axis=(1, 3)) + 128 for c in (cb, cr))
    planes = [y.reshape(-1), cb.reshape(-1), cr.reshape(-1)]
    return np.clip(np.round(np.concatenate(planes)), 0, 255).astype(np.uint8).reshape(h * 3 // 2, w)


def _encode_all(container, stream, frames: np.ndarray, pix_fmt: str) -> None:
    for frame in frames:
        yuv = to_yuv420p(frame, full_range=pix_fmt == "yuvj420p")
        container.mux(stream.encode(av.VideoFrame.from_ndarray(yuv, format=pix_fmt)))
    container.mux(stream.encode())


def write_mp4(path: str, frames: np.ndarray, fps: int) -> None:
    """Encode uint8 (T, H, W, 3) RGB frames as h264 (yuv420p) in mp4, reproducibly: single-threaded, and
    without x264's macroblock tree, whose output was seen to depend on the previously encoded video."""
    with av.open(path, "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        stream.options = {"preset": "veryfast", "crf": "25", "threads": "1", "x264-params": "mbtree=0"}
        _encode_all(container, stream, frames, "yuv420p")


def write_jpegs(pattern: str, frames: np.ndarray, fps: int) -> None:
    """Write frames as numbered JPEG files (`pattern` holds %06d; numbering starts at 1, as Charades')."""
    with av.open(pattern, "w", format="image2") as container:
        stream = container.add_stream("mjpeg", rate=fps)
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuvj420p"
        stream.options = {"q:v": "3"}
        _encode_all(container, stream, frames, "yuvj420p")


def _single_label_job(job: tuple[str, str, int, int]) -> list[str]:
    """Render and write one single-label video; returns the objects involved (SSv2 placeholders)."""
    path, split, index, seed = job
    scene, fps, names = make_clip(clip_seed(seed, split, index), index % len(CLASSES))
    write_mp4(path, render_frames(scene, range(scene.num_frames)), fps)
    return names


def charades_clip(seed: int) -> tuple[np.ndarray, int, list[list[int]]]:
    """A longer clip with one to three actions over sub-intervals: frames, fps and each frame's label ids."""
    rng = np.random.default_rng(seed)
    width, height, fps, length = sample_geometry(rng, (72, 96))
    scene = new_scene(rng, width, height, length)
    labels: list[list[int]] = [[] for _ in range(length)]
    for _ in range(int(rng.integers(1, 3, endpoint=True))):
        label, span = int(rng.integers(len(CLASSES))), int(rng.integers(32, 56, endpoint=True))
        start = int(rng.integers(0, length - span, endpoint=True))
        try:
            add_action(rng, scene, CLASSES[label], start, start + span)
        except CastConflict:  # the objects this action needs are busy: leave it out
            continue
        for t in range(start, start + span):
            if label not in labels[t]:
                labels[t].append(label)
    return render_frames(scene, range(length)), fps, [sorted(x) for x in labels]


def _charades_job(job: tuple[str, str, int, int]) -> list[list[int]]:
    root, split, index, seed = job
    frames, fps, labels = charades_clip(clip_seed(seed, split, index))
    vid = f"{split.split('_')[1].upper()}{index:04d}"
    os.makedirs(os.path.join(root, "frames", vid), exist_ok=True)
    write_jpegs(os.path.join(root, "frames", vid, f"{vid}-%06d.jpg"), frames, fps)
    write_mp4(os.path.join(root, "videos", f"{vid}.mp4"), frames, fps)
    return labels


def _run(fn, jobs: list, workers: int, what: str = "videos") -> list:
    """Map `fn` over jobs, in worker processes when there are enough jobs to pay for starting them, with a
    progress bar (a default-size set takes a minute or more)."""
    with tqdm(total=len(jobs), desc=f"generating synthetic {what}", unit="video", mininterval=1.0,
              leave=False) as bar:
        if workers <= 1 or len(jobs) < 50:
            return [_advance(bar, fn(job)) for job in jobs]
        with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
            return [_advance(bar, result) for result in pool.map(fn, jobs, chunksize=8)]


def _advance(bar, result):
    bar.update()
    return result


def _write_text(path: str, lines: list[str]) -> None:
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        f.write("".join(line + "\n" for line in lines))


def _kinetics(out_dir: str, seed: int, spec: SizeSpec, workers: int) -> dict:
    """The main dataset: balanced single-label train and val splits."""
    paths = {}
    for split, per_class in (("train", spec.train_per_class), ("val", spec.val_per_class)):
        os.makedirs(os.path.join(out_dir, "videos", split), exist_ok=True)
        rel = [f"videos/{split}/{i:06d}.mp4" for i in range(per_class * len(CLASSES))]
        jobs = [(os.path.join(out_dir, r), split, i, seed) for i, r in enumerate(rel)]
        _run(_single_label_job, jobs, workers, f"{split} videos")
        paths[split] = os.path.join(out_dir, f"{split}.csv")
        _write_text(paths[split], [f"{r} {i % len(CLASSES)}" for i, r in enumerate(rel)])
        paths[f"num_{split}"] = len(rel)
    return paths


def _ssv2(out_dir: str, seed: int, spec: SizeSpec, workers: int) -> dict:
    """The SSv2-format variant: labels JSON (template -> id), split JSONs with templates and placeholders."""
    root = os.path.join(out_dir, "ssv2")
    os.makedirs(os.path.join(root, "videos"), exist_ok=True)
    labels = {c.template.replace("[", "").replace("]", ""): str(i) for i, c in enumerate(CLASSES)}
    out = {"labels": os.path.join(root, "something-something-v2-labels.json"),
           "videos": os.path.join(root, "videos")}
    with open(out["labels"], "w", encoding="utf-8") as f:
        json.dump(labels, f, indent=1)
    parts = (("ssv2_train", spec.ssv2_train, "train"), ("ssv2_val", spec.ssv2_val, "validation"))
    for split, count, fname in parts:
        ids = [str(100000 * (1 + _SPLIT_CODES[split]) + i) for i in range(count)]
        jobs = [(os.path.join(root, "videos", f"{vid}.mp4"), split, i, seed) for i, vid in enumerate(ids)]
        names = _run(_single_label_job, jobs, workers, f"{split} videos")
        rows = []
        for i, (vid, objs) in enumerate(zip(ids, names)):
            template = CLASSES[i % len(CLASSES)].template
            label = template
            for obj in objs:
                label = label.replace("[something]", obj, 1)
            rows.append({"id": vid, "label": label, "template": template, "placeholders": objs})
        out[fname] = os.path.join(root, f"something-something-v2-{fname}.json")
        with open(out[fname], "w", encoding="utf-8") as f:
            json.dump(rows, f, indent=1)
    return out


def _charades(out_dir: str, seed: int, spec: SizeSpec, workers: int) -> dict:
    """The Charades-format variant: multi-label frame lists as PySlowFast reads them."""
    root = os.path.join(out_dir, "charades")
    for sub in ("frame_lists", "frames", "videos"):
        os.makedirs(os.path.join(root, sub), exist_ok=True)
    out = {"frames": os.path.join(root, "frames"), "videos": os.path.join(root, "videos"),
           "classes": os.path.join(root, "classes.txt")}
    _write_text(out["classes"], list(CLASS_NAMES))
    for split, count in (("charades_train", spec.charades_train), ("charades_val", spec.charades_val)):
        all_labels = _run(_charades_job, [(root, split, i, seed) for i in range(count)], workers,
                          f"{split} videos")
        rows = ["original_vido_id video_id frame_id path labels"]
        for i, labels in enumerate(all_labels):
            vid = f"{split.split('_')[1].upper()}{i:04d}"
            for t, ids in enumerate(labels):
                rows.append(f'{vid} {i} {t} {vid}/{vid}-{t + 1:06d}.jpg "{",".join(map(str, ids))}"')
        name = split.split("_")[1]
        out[name] = os.path.join(root, "frame_lists", f"{name}.csv")
        _write_text(out[name], rows)
    return out


def generate_with(out_dir: str, seed: int, spec: SizeSpec, workers: int | None = None) -> dict:
    """Write the dataset for an explicit `SizeSpec` (tests use tiny ones); see `generate`."""
    start = time.perf_counter()
    workers = min(2, os.cpu_count() or 1) if workers is None else workers
    os.makedirs(out_dir, exist_ok=True)
    classes = os.path.join(out_dir, "classes.txt")
    _write_text(classes, list(CLASS_NAMES))
    kinetics = _kinetics(out_dir, seed, spec, workers)
    result = {
        "root": out_dir, "classes": classes, "num_classes": len(CLASSES),
        "train": kinetics["train"], "val": kinetics["val"],
        "counts": {"train": kinetics["num_train"], "val": kinetics["num_val"], "ssv2_train": spec.ssv2_train,
                   "ssv2_val": spec.ssv2_val, "charades_train": spec.charades_train,
                   "charades_val": spec.charades_val},
        "ssv2": _ssv2(out_dir, seed, spec, workers),
        "charades": _charades(out_dir, seed, spec, workers),
    }
    meta = {"version": VERSION, "seed": seed, "sizes": asdict(spec), "classes": list(CLASS_NAMES)}
    with open(os.path.join(out_dir, "meta.json"), "w", encoding="utf-8") as f:
        json.dump(meta, f, indent=1)
    result["seconds"] = time.perf_counter() - start
    return result


def matches(meta: dict, root: str, seed: int) -> bool:
    """Whether a generated set's `meta.json` is of this version and this draw (`data.synthetic_seed`).

    A set of the same version but another draw is an error, not a regeneration: it names the folder, so
    that two draws never overwrite each other (or each other's frame cache)."""
    if meta.get("version") != VERSION:
        return False
    held = meta.get("seed", 0)
    if held != seed:
        raise ConfigError(f"data.synthetic_seed: {root} holds the synthetic draw of seed {held}, not {seed}; "
                          f"give each draw its own data.root (e.g. {root}_s{seed})")
    return True


def generate(out_dir: str, seed: int = 0, size: str = "default", workers: int | None = None) -> dict:
    """Write the synthetic dataset under `out_dir` and return its paths and counts.

    `size` is 'small' (a few seconds, for tests) or 'default' (the benchmark dataset). The same seed gives
    byte-identical lists and identical decoded frames. `workers` processes render videos (default: up to 2).
    """
    if size not in SIZES:
        raise ConfigError(f"size: unknown dataset size {size!r}; choose one of {sorted(SIZES)}")
    return generate_with(out_dir, seed, SIZES[size], workers)
