"""Kinetics-like benchmark videos: 340x256 H.264 at 30 fps, GOP 32, 10 s, with textured moving content, so
that loader benchmarks decode what a real Kinetics-400 copy costs (`mgvideo data synth --kinetics-like N`).

The content comes from the synthetic scenes (noisy textured background, moving textured objects) rendered at
Kinetics' usual resolution; x264 codes it with its default B-frames, as Kinetics' own files mostly are.
"""

from __future__ import annotations

import os
from concurrent.futures import ProcessPoolExecutor

import av
import numpy as np

from mgvideo.data.synthetic import clip_seed, to_yuv420p
from mgvideo.data.synthetic_scenes import CLASSES, add_action, new_scene, render_frames

WIDTH, HEIGHT, FPS, SECONDS, GOP = 340, 256, 30, 10, 32
CHUNK = 60  # frames rendered at a time (keeps memory small)


def write_kinetics_like(path: str, seed: int, label: int, seconds: int = SECONDS) -> None:
    """Render and encode one video (a pure function of `seed` and `label`)."""
    rng = np.random.default_rng(seed)
    frames = FPS * seconds
    scene = new_scene(rng, WIDTH, HEIGHT, frames)
    add_action(rng, scene, CLASSES[label % len(CLASSES)], 0, frames)
    with av.open(path, "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        stream.options = {"preset": "fast", "crf": "23", "threads": "1", "g": str(GOP),
                          "x264-params": f"keyint={GOP}:min-keyint={GOP}:scenecut=0:mbtree=0"}
        for lo in range(0, frames, CHUNK):
            for rgb in render_frames(scene, range(lo, min(lo + CHUNK, frames))):
                frame = av.VideoFrame.from_ndarray(to_yuv420p(rgb), format="yuv420p")
                container.mux(stream.encode(frame))
        container.mux(stream.encode())


def _job(job: tuple[str, int, int, int]) -> None:
    path, seed, label, seconds = job
    write_kinetics_like(path, seed, label, seconds)


def generate_kinetics_like(out_dir: str, count: int, seed: int = 0, workers: int = 1,
                           seconds: int = SECONDS) -> dict:
    """Write `count` videos under `out_dir/videos/` and a Kinetics-style `train.csv` list (`path label`)
    with `classes.txt`; videos already there are kept (the generation is deterministic)."""
    os.makedirs(os.path.join(out_dir, "videos"), exist_ok=True)
    rel = [f"videos/{i:06d}.mp4" for i in range(count)]
    jobs = [(os.path.join(out_dir, r), clip_seed(seed, "train", i), i, seconds)
            for i, r in enumerate(rel) if not os.path.exists(os.path.join(out_dir, r))]
    if workers > 1 and len(jobs) > 1:
        with ProcessPoolExecutor(workers) as pool:
            list(pool.map(_job, jobs))
    else:
        for job in jobs:
            _job(job)
    labels = min(count, len(CLASSES))
    with open(os.path.join(out_dir, "train.csv"), "w") as f:
        f.write("".join(f"{r} {i % labels}\n" for i, r in enumerate(rel)))
    with open(os.path.join(out_dir, "classes.txt"), "w") as f:
        f.write("".join(f"{c.name}\n" for c in CLASSES[:labels]))
    return {"root": out_dir, "videos": count, "list": os.path.join(out_dir, "train.csv"),
            "size": f"{WIDTH}x{HEIGHT}", "fps": FPS, "seconds": seconds, "gop": GOP}
