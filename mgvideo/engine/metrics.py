"""Evaluation metrics: top-k accuracy, mean average precision, and multi-view score ensembling."""

from __future__ import annotations

from typing import Literal

import torch


def topk_correct(scores: torch.Tensor, labels: torch.Tensor, ks: tuple[int, ...] = (1, 5)) -> dict[int, int]:
    """How many rows of `scores` (N, C) have their integer label among the top k, for each k."""
    if scores.ndim != 2 or labels.shape != scores.shape[:1]:
        raise ValueError(f"scores {tuple(scores.shape)} and labels {tuple(labels.shape)} do not match")
    top = scores.topk(min(max(ks), scores.shape[1]), dim=1).indices
    hits = top == labels.view(-1, 1)
    return {k: int(hits[:, :k].any(dim=1).sum()) for k in ks}


def average_precision(scores: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Per-class average precision (C,) for multi-hot `targets` (N, C); NaN where a class has no positive.

    AP is the mean of the precision at the rank of each positive, ranking by descending score.
    """
    order = scores.argsort(dim=0, descending=True)
    ranked = targets.gather(0, order).float()
    hits = ranked.cumsum(0)
    precision = hits / torch.arange(1, len(scores) + 1, dtype=torch.float32).view(-1, 1)
    positives = ranked.sum(0)
    ap = (precision * ranked).sum(0) / positives.clamp(min=1)
    return torch.where(positives > 0, ap, torch.full_like(ap, float("nan")))


def mean_average_precision(scores: torch.Tensor, targets: torch.Tensor) -> float:
    """mAP over the classes that have at least one positive (the Charades protocol)."""
    ap = average_precision(scores, targets)
    valid = ~ap.isnan()
    return float(ap[valid].mean()) if valid.any() else float("nan")


def per_class_accuracy(scores: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Top-1 accuracy of each class (NaN for classes absent from `labels`)."""
    pred = scores.argmax(dim=1)
    total = torch.bincount(labels, minlength=num_classes).float()
    correct = torch.bincount(labels[pred == labels], minlength=num_classes).float()
    return torch.where(total > 0, correct / total.clamp(min=1), torch.full_like(total, float("nan")))


class ViewEnsemble:
    """Combines the scores of several views (clips × crops) of each video, by sum or by max."""

    def __init__(self, num_videos: int, num_classes: int, mode: Literal["sum", "max"],
                 device: torch.device | str = "cpu") -> None:
        if mode not in ("sum", "max"):
            raise ValueError(f"ensemble mode must be 'sum' or 'max', got {mode!r}")
        self.mode = mode
        fill = 0.0 if mode == "sum" else float("-inf")
        self.scores = torch.full((num_videos, num_classes), fill, device=device)
        self.views = torch.zeros(num_videos, dtype=torch.long, device=device)

    def add(self, scores: torch.Tensor, video_indices: torch.Tensor) -> None:
        """Fold in a batch of view scores (B, C) for the videos `video_indices` (B,), on this ensemble's
        device (no host sync when the batch is there already)."""
        scores = scores.detach().float().to(self.scores.device)
        video_indices = video_indices.to(self.scores.device).long()
        if self.mode == "sum":
            self.scores.index_add_(0, video_indices, scores)
        else:
            expanded = video_indices.view(-1, 1).expand_as(scores)
            self.scores.scatter_reduce_(0, expanded, scores, reduce="amax")
        self.views.index_add_(0, video_indices, torch.ones_like(video_indices))

    def result(self) -> torch.Tensor:
        """The ensembled (num_videos, C) scores; a video with no view at all is an error."""
        if (self.views == 0).any():
            missing = int((self.views == 0).sum())
            raise ValueError(f"{missing} videos received no view")
        return self.scores.clone()
