"""Evaluation: single-view validation during training and multi-view test scores, per video, never
substituting one video for another; top-k / mAP summaries and the per-class table."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader

from mgvideo.data.loader import Batch, to_device
from mgvideo.engine.distributed import DistInfo
from mgvideo.engine.metrics import (
    ViewEnsemble,
    average_precision,
    mean_average_precision,
    per_class_accuracy,
    topk_correct,
)
from mgvideo.engine.step import precision
from mgvideo.errors import VideoDecodeError
from mgvideo.models.heads import output_activation


@dataclass
class Inputs:
    """How raw batches become model inputs: the device, normalisation and memory format."""

    device: torch.device
    mean: list[float]
    std: list[float]
    channels_last: bool = False

    def __call__(self, batch: Batch) -> Batch:
        return to_device(batch, self.device, self.mean, self.std, self.channels_last)


@dataclass
class VideoScores:
    """Per-video results, the same on every rank: ensembled (videos, classes) scores, labels ((videos,)
    with -1 where no view was read, or multi-hot (videos, classes)), and how many views were read."""

    scores: torch.Tensor
    labels: torch.Tensor
    views: torch.Tensor


@torch.no_grad()
def video_scores(model: nn.Module, loader: Iterable[Batch], inputs: Inputs, info: DistInfo,
                 num_videos: int, num_classes: int, ensemble: str, multi_label: bool,
                 amp_dtype: torch.dtype | None = None) -> VideoScores:
    """Run the model in eval mode, under the training precision (`amp_dtype`, see step.precision), over this
    rank's views, ensemble each video's views (sum or max of their probabilities, `view_probabilities`)
    here, then reduce the (videos, classes) tensors over ranks: their size does not grow with the number
    of views. Unreadable views (index `FAILED`) are left out. Everything stays on the device, with no host
    sync per batch; the results come to the host once, at the end."""
    device = inputs.device
    # Row `num_videos` takes the unreadable views: masking them out instead would sync on every batch.
    combined = ViewEnsemble(num_videos + 1, num_classes, "max" if ensemble == "max" else "sum", device)
    labels = (torch.zeros((num_videos + 1, num_classes), device=device) if multi_label
              else torch.full((num_videos + 1,), -1, device=device))
    was_training = model.training
    act = output_activation(model)
    model.eval()
    try:
        for batch in loader:
            batch = inputs(batch)
            videos = torch.where(batch.indices >= 0, batch.indices, num_videos)
            with precision(device, amp_dtype):
                scores = model(batch.clips)
            combined.add(view_probabilities(scores.float(), act, multi_label), videos)
            if multi_label:  # a video's target is the union of what its views saw
                labels.scatter_reduce_(0, videos.view(-1, 1).expand_as(batch.labels), batch.labels.float(),
                                       "amax")
            else:
                labels[videos] = batch.labels.to(labels.dtype)
    finally:
        model.train(was_training)
    scores, views, labels = combined.scores[:num_videos], combined.views[:num_videos], labels[:num_videos]
    if info.enabled:
        dist.all_reduce(scores, op=dist.ReduceOp.MAX if combined.mode == "max" else dist.ReduceOp.SUM)
        dist.all_reduce(labels, op=dist.ReduceOp.MAX)
        dist.all_reduce(views, op=dist.ReduceOp.SUM)
    return VideoScores(scores.cpu(), labels.cpu(), views.cpu())


def view_probabilities(outputs: torch.Tensor, act: str, multi_label: bool) -> torch.Tensor:
    """Class probabilities of views: the protocol ensembles probabilities (softmax, or sigmoid for
    multi-label data), not logits. Outputs of a model that already returns them (`act`) pass as they are."""
    if act != "none":
        return outputs
    return outputs.sigmoid() if multi_label else outputs.softmax(dim=-1)


def drop_unread(result: VideoScores, names: Sequence[str], max_failed_fraction: float,
                split: str) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """The scores and labels of the videos with at least one view read, and the names of the others.

    More than `max_failed_fraction` of the videos unread (or all of them) is a VideoDecodeError."""
    read = result.views > 0
    failed = [names[i] for i in (~read).nonzero().flatten().tolist()]
    total = len(names)
    if failed and (len(failed) == total or len(failed) > max_failed_fraction * total):
        shown = ", ".join(failed[:5]) + (f" and {len(failed) - 5} more" if len(failed) > 5 else "")
        what = (f"any of the {total} videos" if len(failed) == total else f"{len(failed)} of {total} videos, "
                f"more than test.max_failed_fraction={max_failed_fraction} of them,")
        raise VideoDecodeError(f"{split}: no view of {what} could be read: {shown}; check them with "
                               "`mgvideo data check`")
    return result.scores[read], result.labels[read], failed


def summarize(scores: torch.Tensor, labels: torch.Tensor, multi_label: bool) -> dict[str, float]:
    """top-1 / top-5 accuracy in percent, or mAP in percent for multi-label data."""
    if multi_label:
        return {"mAP": 100.0 * mean_average_precision(scores, labels), "count": len(scores)}
    hits = topk_correct(scores, labels, (1, 5))
    n = len(scores)
    return {"top1": 100.0 * hits[1] / n, "top5": 100.0 * hits[5] / n, "count": n}


def evaluate_videos(model: nn.Module, loader: DataLoader, inputs: Inputs, info: DistInfo,
                    ensemble: str, multi_label: bool, max_failed_fraction: float,
                    amp_dtype: torch.dtype | None = None,
                    ) -> tuple[dict[str, Any], torch.Tensor, torch.Tensor]:
    """Evaluate every video of `loader.dataset` (a VideoClipDataset), never substituting one for another.

    Returns the summary (metrics over the videos read; `failed_videos` counts the others, `failed` names
    them, `failed_views` counts every unreadable view), and the scores and labels of the videos read.
    """
    dataset = loader.dataset
    result = video_scores(model, loader, inputs, info, dataset.num_videos, dataset.num_classes, ensemble,
                          multi_label, amp_dtype)
    names = [record.path for record in dataset.records]
    scores, labels, failed = drop_unread(result, names, max_failed_fraction, dataset.mode)
    summary: dict[str, Any] = summarize(scores, labels, multi_label)
    summary["views"] = int(result.views.max())
    summary["failed_views"] = len(dataset) - int(result.views.sum())
    summary["failed_videos"] = len(failed)
    if failed:
        summary["failed"] = failed
    return summary, scores, labels


def validate(model: nn.Module, loader: DataLoader, inputs: Inputs, info: DistInfo,
             multi_label: bool, max_failed_fraction: float = 1.0,
             amp_dtype: torch.dtype | None = None) -> dict[str, Any]:
    """Single-view validation: one centre clip per video at the full shape (unreadable videos left out
    and named, as in `evaluate_videos`)."""
    return evaluate_videos(model, loader, inputs, info, "sum", multi_label, max_failed_fraction, amp_dtype)[0]


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


