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


class _Recorder(torch.nn.Module):
    """Logits from a linear layer, recording whether each forward ran under autocast and in which dtype."""

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(3, num_classes)
        self.seen = []

    def forward(self, x):
        out = self.linear(x.mean((2, 3, 4)))
        self.seen.append(out.dtype)
        return out


def _batches():
    from mgvideo.data.loader import Batch

    gen = torch.Generator().manual_seed(0)
    clips = [torch.randint(0, 255, (3, 3, 2, 4, 4), generator=gen, dtype=torch.uint8) for _ in range(2)]
    # video 2's second view was unreadable (index -1, label -1)
    return [Batch(clips[0], torch.tensor([0, 1, 2]), torch.tensor([0, 1, 2]), 0),
            Batch(clips[1], torch.tensor([0, -1, 1]), torch.tensor([0, -1, 1]), 1)]


def test_evaluation_runs_under_the_training_autocast_without_a_host_sync_per_batch():
    from torch.utils._python_dispatch import TorchDispatchMode

    from mgvideo.engine.distributed import DistInfo
    from mgvideo.engine.evaluate import Inputs, video_scores

    needs_host = {"nonzero", "_local_scalar_dense", "masked_select", "item"}
    host = []

    class Watch(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            name = func.overloadpacket.__name__
            bool_index = name == "index" and any(
                isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in args[1] if i is not None)
            if name in needs_host or bool_index:
                host.append(name)
            return func(*args, **(kwargs or {}))

    model = _Recorder(4)
    inputs = Inputs(torch.device("cpu"), [0.5] * 3, [0.25] * 3)
    with Watch():  # a CUDA run would wait for the device at each of these
        result = video_scores(model, _batches(), inputs, DistInfo(), 3, 4, "sum", False, torch.bfloat16)
    assert host == []
    assert model.seen == [torch.bfloat16] * 2  # the forward ran under the bf16 autocast
    assert result.views.tolist() == [2, 2, 1] and result.labels.tolist() == [0, 1, 2]
    expected = torch.zeros(3, 4)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        for batch in _batches():
            b = inputs(batch)
            for view, video in zip(model(b.clips).float(), b.indices.tolist()):
                if video >= 0:
                    expected[video] += view.softmax(-1)  # views are ensembled as probabilities
    torch.testing.assert_close(result.scores, expected)
