"""Evaluate a finished run's stage checkpoints on its validation set, at the full shape and (optionally)
at coarser shapes, each after precise BN at that shape, with several precise-BN draws: how top-1 moves
stage by stage, how much of that is BN noise, and whether later stages forget coarse shapes.

  python scripts/stage_eval.py RUN_DIR [--shapes 16x48,8x48,4x34] [--draws 2] [--clips 160] [--json F]

Each row also gives, per shape, the change from the previous checkpoint on the same clips (first draw):
its mean and standard error, in points.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import replace
from pathlib import Path

import torch

from mgvideo.config import load_config
from mgvideo.data.loader import build_loader
from mgvideo.engine import builders, checkpoint
from mgvideo.engine.distributed import DistInfo
from mgvideo.engine.evaluate import Inputs, evaluate_videos
from mgvideo.engine.step import bn_plan
from mgvideo.multigrid.batchnorm import set_bn_groups
from mgvideo.multigrid.precise_bn import update_bn_stats
from mgvideo.multigrid.sampler import FixedShapeBatchSampler


def evaluate_at(net, cfg, frames: int, crop: int, draws: int, clips: int) -> tuple[list[float], torch.Tensor]:
    """Top-1 on the validation set at (frames, crop), once per precise-BN draw of `clips` training clips,
    and the first draw's per-clip hits (in video order)."""
    info = DistInfo()
    rate = cfg.data.sampling_rate * max(cfg.data.frames // frames, 1)  # the same time span as a full clip
    full = builders.build_schedule(cfg).full_shape(8)
    shape = replace(full, frames=frames, crop=crop, min_rate=rate, max_rate=rate,
                    same_view=cfg.multigrid.scale_jitter == "same_view")
    inputs = Inputs(torch.device("cpu"), cfg.data.mean, cfg.data.std, cfg.train.channels_last)
    train_set = builders.build_dataset(cfg, "train", shape)
    val_set = builders.build_dataset(cfg, "val", shape)
    val = build_loader(val_set, FixedShapeBatchSampler(shape, len(val_set), 32), 1, False, 0)
    set_bn_groups(net, bn_plan(8, 8, cfg.model.bn_base_size))  # batches of 8: plain BN
    top1, first = [], torch.empty(0)
    for draw in range(draws):
        sampler = FixedShapeBatchSampler(shape, len(train_set), 8, seed=1000 + draw, shuffle=True,
                                         drop_last=True)
        sampler.set_epoch(draw)
        batches = (inputs(b).clips for b in build_loader(train_set, sampler, 1, False, draw))
        update_bn_stats(net, batches, math.ceil(clips / 8))
        _, scores, labels = evaluate_videos(net, val, inputs, info, "sum", False, 1.0)  # in video order
        hits = (scores.argmax(1) == labels).float()
        top1.append(round(100 * hits.mean().item(), 2))
        first = hits if draw == 0 else first
    return top1, first


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--shapes", default="16x48")
    parser.add_argument("--draws", type=int, default=2)
    parser.add_argument("--clips", type=int, default=160)
    parser.add_argument("--only", default="", help="comma-separated checkpoint names (default: all stages)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    cfg = load_config(args.run / "config.yaml")
    net = builders.build_network(cfg, cfg.data.num_classes)
    if cfg.train.channels_last:
        net = net.to(memory_format=torch.channels_last_3d)
    names = sorted(p.name for p in (args.run / "checkpoints").glob("stage_*.pt"))
    if args.only:
        names = [n for n in names if n in args.only.split(",")]
    rows, previous = [], {}
    for name in names:
        net.load_state_dict(checkpoint.load(args.run / "checkpoints" / name)["model"])
        row = {"checkpoint": name}
        for text in args.shapes.split(","):
            frames, crop = (int(v) for v in text.split("x"))
            row[text], hits = evaluate_at(net, cfg, frames, crop, args.draws, args.clips)
            if text in previous:  # paired change on the same clips: mean and standard error, in points
                diff = hits - previous[text]
                row[f"{text}_change"] = [round(100 * diff.mean().item(), 2),
                                         round(100 * diff.std().item() / len(diff) ** 0.5, 2)]
            previous[text] = hits
        print(json.dumps(row), flush=True)
        rows.append(row)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
