"""Metrics: top-k, mAP against a brute-force reference, and view ensembling by sum and max."""

import math

import pytest
import torch

from mgvideo.engine.metrics import (
    ViewEnsemble,
    average_precision,
    mean_average_precision,
    per_class_accuracy,
    topk_correct,
)


def test_topk_counts():
    scores = torch.tensor([[0.1, 0.7, 0.2], [0.5, 0.2, 0.3], [0.2, 0.3, 0.5]])
    labels = torch.tensor([1, 2, 0])
    assert topk_correct(scores, labels, (1, 2)) == {1: 1, 2: 2}


def brute_ap(scores, targets):
    order = sorted(range(len(scores)), key=lambda i: -scores[i])
    hits, total = 0, 0.0
    for rank, i in enumerate(order, 1):
        if targets[i]:
            hits += 1
            total += hits / rank
    return total / hits if hits else float("nan")


def test_average_precision_matches_brute_force():
    g = torch.Generator().manual_seed(0)
    scores = torch.rand(20, 4, generator=g)
    targets = (torch.rand(20, 4, generator=g) > 0.6).float()
    targets[:, 3] = 0
    ap = average_precision(scores, targets)
    for c in range(3):
        assert ap[c].item() == pytest.approx(brute_ap(scores[:, c].tolist(), targets[:, c].tolist()))
    assert math.isnan(ap[3].item())
    assert mean_average_precision(scores, targets) == pytest.approx(ap[:3].mean().item())


def test_perfect_ranking_has_ap_one():
    targets = torch.tensor([[1.0], [0.0], [1.0]])
    assert mean_average_precision(torch.tensor([[0.9], [0.1], [0.8]]), targets) == pytest.approx(1.0)


def test_view_ensemble_sum_and_max():
    views = torch.tensor([[0.2, 0.8], [0.6, 0.4], [0.9, 0.1]])
    videos = torch.tensor([0, 0, 1])
    s = ViewEnsemble(2, 2, "sum")
    s.add(views, videos)
    assert torch.allclose(s.result(), torch.tensor([[0.8, 1.2], [0.9, 0.1]]))
    m = ViewEnsemble(2, 2, "max")
    m.add(views[:1], videos[:1])
    m.add(views[1:], videos[1:])
    assert torch.allclose(m.result(), torch.tensor([[0.6, 0.8], [0.9, 0.1]]))
    with pytest.raises(ValueError, match="no view"):
        ViewEnsemble(3, 2, "sum").result()


def test_per_class_accuracy():
    scores = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
    acc = per_class_accuracy(scores, torch.tensor([0, 0, 0]), 2)
    assert acc[0].item() == pytest.approx(2 / 3) and math.isnan(acc[1].item())
