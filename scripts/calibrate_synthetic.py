"""Calibrate the synthetic dataset's difficulty: train a small 3D CNN on it for a few minutes of CPU and print
val top-1 (overall and per class). The target is 60-90%: hard enough that methods can be told apart.

    OMP_NUM_THREADS=2 .venv/bin/python scripts/calibrate_synthetic.py --data /tmp/synth --minutes 4
    OMP_NUM_THREADS=2 .venv/bin/python scripts/calibrate_synthetic.py --render --epochs 3   # no files

Independent of the project's loader and models on purpose (it was written alongside them): it decodes every
video once with PyAV into memory (short side 64, centre 64x64, every second frame) and trains on that; with
--render it draws the same clips straight from the scenes instead (no codec), which is much faster.
"""

from __future__ import annotations

import argparse
import os
import time

import av
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from mgvideo.data.synthetic import SIZES, clip_seed, generate
from mgvideo.data.synthetic_scenes import CLASS_NAMES, make_clip, render_frames

SIDE, STRIDE, KEEP = 64, 2, 36  # stored frames: short side, temporal stride, at most this many


def load_clip(path: str) -> torch.Tensor:
    """Decode one video to uint8 (T, 3, SIDE, SIDE): every STRIDE-th frame of the middle, short side SIDE."""
    with av.open(path) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    return shrink(np.stack(frames[::STRIDE]))


def render_split(seed: int, split: str, count: int) -> tuple[list[torch.Tensor], torch.Tensor]:
    """The clips `generate` would write for a split, drawn straight from the scenes (no codec, no files)."""
    clips = []
    for i in range(count):
        scene, _, _ = make_clip(clip_seed(seed, split, i), i % len(CLASS_NAMES))
        clips.append(shrink(render_frames(scene, range(0, scene.num_frames, STRIDE))))
    return clips, torch.arange(count) % len(CLASS_NAMES)


def shrink(frames: np.ndarray) -> torch.Tensor:
    """uint8 (T, H, W, 3) -> uint8 (T', 3, SIDE, SIDE): the middle KEEP frames, short side SIDE, centre."""
    x = torch.from_numpy(frames).permute(0, 3, 1, 2).float()
    start = max(0, (len(x) - KEEP) // 2)
    x = x[start:start + KEEP]
    h, w = x.shape[-2:]
    size = (SIDE, round(w * SIDE / h)) if h <= w else (round(h * SIDE / w), SIDE)
    x = F.interpolate(x, size=size, mode="bilinear", antialias=True, align_corners=False)
    top, left = (x.shape[-2] - SIDE) // 2, (x.shape[-1] - SIDE) // 2
    return x[..., top:top + SIDE, left:left + SIDE].round().clamp(0, 255).to(torch.uint8)


def load_split(root: str, split: str) -> tuple[list[torch.Tensor], torch.Tensor]:
    with open(os.path.join(root, f"{split}.csv"), encoding="utf-8") as f:
        rows = [line.split() for line in f if line.strip()]
    return [load_clip(os.path.join(root, p)) for p, _ in rows], torch.tensor([int(y) for _, y in rows])


def batch(clips: list[torch.Tensor], idx: list[int], frames: int, crop: int, train: bool,
          gen: torch.Generator) -> torch.Tensor:
    """(B, 3, T, crop, crop) float clips, mean-normalised per clip; random window and crop when training."""
    out = []
    for i in idx:
        x = clips[i]
        if train:
            t0 = int(torch.randint(0, len(x) - frames + 1, (1,), generator=gen))
            s0 = torch.randint(0, SIDE - crop + 1, (2,), generator=gen).tolist()
        else:
            t0, s0 = (len(x) - frames) // 2, [(SIDE - crop) // 2] * 2
        out.append(x[t0:t0 + frames, :, s0[0]:s0[0] + crop, s0[1]:s0[1] + crop])
    x = torch.stack(out).permute(0, 2, 1, 3, 4).float() / 255
    return (x - x.mean(dim=(2, 3, 4), keepdim=True)) / 0.25


def small_3dcnn(num_classes: int, width: int = 24, pool: str = "avg") -> nn.Module:
    """Four conv3d layers (widths w, 2w, 4w, 4w), BN and ReLU, global average (or max) pool, linear."""
    layers, cin = [], 3
    plan = ((width, (1, 2, 2)), (2 * width, (1, 2, 2)), (4 * width, (2, 2, 2)), (4 * width, (2, 2, 2)))
    for cout, stride in plan:
        conv = nn.Conv3d(cin, cout, 3, stride, 1, bias=False)
        layers += [conv, nn.BatchNorm3d(cout), nn.ReLU(inplace=True)]
        cin = cout
    pooling = nn.AdaptiveAvgPool3d(1) if pool == "avg" else nn.AdaptiveMaxPool3d(1)
    return nn.Sequential(*layers, pooling, nn.Flatten(), nn.Linear(cin, num_classes))


def evaluate(model: nn.Module, clips, labels, frames: int, crop: int) -> tuple[float, torch.Tensor]:
    model.eval()
    preds = []
    with torch.no_grad():
        for k in range(0, len(clips), 32):
            idx = list(range(k, min(k + 32, len(clips))))
            preds.append(model(batch(clips, idx, frames, crop, False, torch.Generator())).argmax(1))
    model.train()
    pred = torch.cat(preds)
    per_class = torch.stack([(pred[labels == c] == c).float().mean() for c in range(len(CLASS_NAMES))])
    return float((pred == labels).float().mean()), per_class


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="/tmp/mgvideo_synth")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--minutes", type=float, default=4.0)
    p.add_argument("--epochs", type=float, default=0, help="budget in epochs, not minutes")
    p.add_argument("--render", action="store_true", help="draw the clips in memory instead of decoding files")
    p.add_argument("--frames", type=int, default=16)
    p.add_argument("--crop", type=int, default=56)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--width", type=int, default=24)
    p.add_argument("--pool", choices=("avg", "max"), default="avg")
    args = p.parse_args()
    if not args.render and not os.path.exists(os.path.join(args.data, "val.csv")):
        info = generate(args.data, seed=args.seed)
        print(f"generated {info['counts']} in {info['seconds']:.1f}s")
    t = time.perf_counter()
    cache = os.path.join(args.data, f"calibration_cache_{SIDE}.pt")  # decoding takes minutes on 2 cores
    if args.render:
        size = SIZES["default"]
        train_clips, train_y = render_split(args.seed, "train", size.train_per_class * len(CLASS_NAMES))
        val_clips, val_y = render_split(args.seed, "val", size.val_per_class * len(CLASS_NAMES))
    elif os.path.exists(cache):
        train_clips, train_y, val_clips, val_y = torch.load(cache)
    else:
        train_clips, train_y = load_split(args.data, "train")
        val_clips, val_y = load_split(args.data, "val")
        torch.save((train_clips, train_y, val_clips, val_y), cache)
    print(f"decoded {len(train_clips)}+{len(val_clips)} videos in {time.perf_counter() - t:.1f}s")
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    model = small_3dcnn(len(CLASS_NAMES), args.width, args.pool)
    opt = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9, weight_decay=1e-4, nesterov=True)
    budget, start, epoch, step = args.minutes * 60, time.perf_counter(), 0, 0
    steps_per_epoch = -(-len(train_clips) // args.batch)

    def progress() -> float:
        if args.epochs:
            return min(1.0, step / (args.epochs * steps_per_epoch))
        return min(1.0, (time.perf_counter() - start) / budget)

    while progress() < 1.0:
        for idx in torch.randperm(len(train_clips), generator=gen).split(args.batch):
            frac = progress()
            step += 1
            for g in opt.param_groups:  # cosine over the time budget
                g["lr"] = args.lr * 0.5 * (1 + np.cos(np.pi * frac))
            x = batch(train_clips, idx.tolist(), args.frames, args.crop, True, gen)
            loss = F.cross_entropy(model(x), train_y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            if step % 50 == 0:
                print(f"step {step} {time.perf_counter() - start:.0f}s loss {loss.item():.3f}", flush=True)
            if frac >= 1.0:
                break
        epoch += 1
        acc, _ = evaluate(model, val_clips, val_y, args.frames, args.crop)
        print(f"epoch {epoch} {time.perf_counter() - start:.0f}s loss {loss.item():.3f} val top-1 {acc:.3f}",
              flush=True)
    acc, per_class = evaluate(model, val_clips, val_y, args.frames, args.crop)
    print(f"final val top-1 {acc:.3f} after {step / steps_per_epoch:.2f} epochs, "
          f"{time.perf_counter() - start:.0f}s")
    for name, a in zip(CLASS_NAMES, per_class.tolist()):
        print(f"  {name:24s} {a:.2f}")


if __name__ == "__main__":
    main()
