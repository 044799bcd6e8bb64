"""Evaluation loops: single-view validation during training, and multi-view test scores."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from mgvideo.config import Config, override
from mgvideo.data.loader import Batch, build_loader, to_device
from mgvideo.engine import distributed as D
from mgvideo.engine.distributed import DistInfo
from mgvideo.engine.metrics import (
    ViewEnsemble,
    average_precision,
    mean_average_precision,
    per_class_accuracy,
    topk_correct,
)
from mgvideo.multigrid.sampler import FixedShapeBatchSampler


@dataclass
class Inputs:
    """How raw batches become model inputs: the device, normalisation and memory format."""

    device: torch.device
    mean: list[float]
    std: list[float]
    channels_last: bool = False

    def __call__(self, batch: Batch) -> Batch:
        return to_device(batch, self.device, self.mean, self.std, self.channels_last)


@torch.no_grad()
def collect_scores(model: nn.Module, loader: Iterable[Batch], inputs: Inputs,
                   info: DistInfo) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Run the model in eval mode; return (scores, labels, video indices) of every rank, on CPU."""
    was_training = model.training
    model.eval()
    scores, labels, indices = [], [], []
    try:
        for batch in loader:
            batch = inputs(batch)
            scores.append(model(batch.clips).float().cpu())
            labels.append(batch.labels.cpu())
            indices.append(batch.indices.cpu())
    finally:
        model.train(was_training)
    local = (torch.cat(scores), torch.cat(labels), torch.cat(indices))
    if not info.enabled:
        return local
    gathered: list = [None] * info.world_size
    dist.all_gather_object(gathered, local)  # ranks may hold one batch more or less; objects allow that
    return tuple(torch.cat([g[i] for g in gathered]) for i in range(3))  # type: ignore[return-value]


def summarize(scores: torch.Tensor, labels: torch.Tensor, multi_label: bool) -> dict[str, float]:
    """top-1 / top-5 accuracy in percent, or mAP in percent for multi-label data."""
    if multi_label:
        return {"mAP": 100.0 * mean_average_precision(scores, labels), "count": len(scores)}
    hits = topk_correct(scores, labels, (1, 5))
    n = len(scores)
    return {"top1": 100.0 * hits[1] / n, "top5": 100.0 * hits[5] / n, "count": n}


def validate(model: nn.Module, loader: Iterable[Batch], inputs: Inputs, info: DistInfo,
             multi_label: bool) -> dict[str, float]:
    """Single-view validation: one centre clip per video at the full shape."""
    scores, labels, _ = collect_scores(model, loader, inputs, info)
    return summarize(scores, labels, multi_label)


def multiview_scores(model: nn.Module, loader: Iterable[Batch], inputs: Inputs, info: DistInfo,
                     num_videos: int, num_classes: int, ensemble: str,
                     multi_label: bool) -> tuple[dict[str, float], torch.Tensor, torch.Tensor]:
    """Multi-view testing: ensemble every view of a video (sum or max of scores), then score the videos.

    Returns the summary, the per-video scores and the per-video labels.
    """
    scores, labels, videos = collect_scores(model, loader, inputs, info)
    combined = ViewEnsemble(num_videos, num_classes, "max" if ensemble == "max" else "sum")
    combined.add(scores, videos)
    if multi_label:  # a video's target is the union of what its views saw
        video_labels = torch.zeros((num_videos, num_classes))
        video_labels.index_reduce_(0, videos, labels.float(), "amax")
    else:
        video_labels = torch.zeros(num_videos, dtype=torch.long)
        video_labels[videos] = labels
    video_scores = combined.result()
    summary = summarize(video_scores, video_labels, multi_label)
    summary["views"] = int(combined.views.max())
    return summary, video_scores, video_labels


def per_class_rows(scores: torch.Tensor, labels: torch.Tensor, multi_label: bool,
                   class_names: list[str]) -> list[dict]:
    """One row per class for the test CSV: top-1 accuracy (or AP) and support."""
    num_classes = scores.shape[1]
    if multi_label:
        values = average_precision(scores, labels)
        support = labels.sum(0)
        metric = "AP"
    else:
        values = per_class_accuracy(scores, labels, num_classes)
        support = torch.bincount(labels, minlength=num_classes)
        metric = "top1"
    return [
        {"class": c, "name": class_names[c] if c < len(class_names) else str(c),
         metric: round(100.0 * float(values[c]), 3), "support": int(support[c])}
        for c in range(num_classes)
    ]


def evaluate_checkpoint(cfg: Config, weights_path: str | Path, out_dir: str | Path,
                    views: int | None = None) -> dict[str, Any]:
    """Multi-view test of saved weights (`model_final.pt` or a full checkpoint): `views` clips × crops
    per video; writes `test_summary.json` and `per_class.csv` into `out_dir` and returns the summary."""
    from mgvideo.engine import builders, checkpoint  # builders pulls in the data and model stacks

    if views is not None:
        cfg = override(cfg, **{"test.clips": views})
    device = builders.select_device(cfg.train.device)
    info = D.init(device)
    device = D.local_device(device, info)
    weights = checkpoint.model_state(weights_path)  # read first: a bad file fails before any decoding
    net = builders.build_network(cfg, cfg.data.num_classes)
    checkpoint.load_model_weights(net, weights, str(weights_path))
    net.to(device)
    shape = builders.eval_shape(cfg, cfg.test.batch_size)
    dataset = builders.build_dataset(cfg, "test", shape)
    sampler = FixedShapeBatchSampler(shape, len(dataset), cfg.test.batch_size, rank=info.rank,
                                     world_size=info.world_size)
    loader = build_loader(dataset, sampler, cfg.data.workers, device.type == "cuda", cfg.train.seed)
    ensemble = cfg.test.ensemble if cfg.test.ensemble != "auto" else ("max" if cfg.multi_label else "sum")
    inputs = Inputs(device, cfg.data.mean, cfg.data.std)
    summary, scores, labels = multiview_scores(net, loader, inputs, info, dataset.num_videos,
                                               cfg.data.num_classes, ensemble, cfg.multi_label)
    summary.update({"clips": cfg.test.clips, "crops": cfg.test.crops, "ensemble": ensemble,
                    "test_size": cfg.test.crop_size or cfg.data.crop, "weights": str(weights_path)})
    if info.is_main:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / "test_summary.json").write_text(json.dumps(summary, indent=2))
        names = _class_names(cfg)
        rows = per_class_rows(scores, labels, cfg.multi_label, names)
        with open(out / "per_class.csv", "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    D.shutdown(info)
    return summary


def _class_names(cfg: Config) -> list[str]:
    """Class names from `classes.txt` in the data root when present (the synthetic set writes one)."""
    path = Path(cfg.data.root) / "classes.txt"
    return path.read_text().split("\n") if path.exists() else []
