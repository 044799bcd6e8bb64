"""Validation and multi-view test: views ensembled per rank then one reduce, equal to one process;
unreadable videos are dropped, counted and named, and too many of them stop the evaluation."""

import os
from dataclasses import dataclass

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from test_distributed import free_port
from torch import nn

from mgvideo.data.datasets import FAILED, Sample
from mgvideo.data.loader import build_loader
from mgvideo.engine.distributed import DistInfo
from mgvideo.engine.evaluate import Inputs, evaluate_videos, validate
from mgvideo.errors import VideoDecodeError
from mgvideo.multigrid.sampler import FixedShapeBatchSampler
from mgvideo.multigrid.schedule import ClipShape

VIDEOS, VIEWS, CLASSES = 7, 4, 3
SHAPE = ClipShape(frames=2, crop=4, min_rate=1, max_rate=1, base_crop=4, stage_batch=3, stage=0, slot=0)
UNREAD = {(2, v) for v in range(VIEWS)} | {(4, 1)}  # video 2 entirely, one view of video 4


@dataclass
class Record:
    path: str


class Views:
    """A stand-in VideoClipDataset: item i is view i % VIEWS of video i // VIEWS; `unread` views fail."""

    def __init__(self, multi_label: bool, unread: set = frozenset(UNREAD), mode: str = "test") -> None:
        self.multi_label, self.unread, self.mode = multi_label, unread, mode
        self.num_videos, self.num_classes = VIDEOS, CLASSES
        self.records = [Record(f"v{i}.mp4") for i in range(VIDEOS)]

    def __len__(self) -> int:
        return VIDEOS * VIEWS

    def __getitem__(self, item) -> Sample:
        index = item[0]
        video, view = divmod(index, VIEWS)
        gen = torch.Generator().manual_seed(index)
        clip = torch.randint(0, 256, (3, 2, 4, 4), generator=gen, dtype=torch.uint8)
        label = (torch.rand(CLASSES, generator=gen) > 0.5).float() if self.multi_label else video % CLASSES
        if (video, view) in self.unread:
            blank_label = torch.zeros(CLASSES) if self.multi_label else FAILED
            return Sample(torch.zeros_like(clip), blank_label, FAILED, 1)
        return Sample(clip, label, video)


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * 2 * 4 * 4, CLASSES))


def _evaluate(ds: Views, ensemble: str, rank: int = 0, world: int = 1, max_failed: float = 0.5):
    sampler = FixedShapeBatchSampler(SHAPE, len(ds), 3, rank=rank, world_size=world)
    inputs = Inputs(torch.device("cpu"), [0.5] * 3, [0.25] * 3)
    return evaluate_videos(_model(), build_loader(ds, sampler), inputs, DistInfo(rank, world), ensemble,
                           ds.multi_label, max_failed)


def _worker(rank: int, port: int, out_dir: str, ensemble: str, multi_label: bool) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    result = _evaluate(Views(multi_label), ensemble, rank, 2)
    torch.save(result, os.path.join(out_dir, f"rank{rank}.pt"))
    dist.destroy_process_group()


@pytest.mark.multiprocess
@pytest.mark.timeout(120)
@pytest.mark.parametrize("ensemble, multi_label", [("sum", False), ("max", True)])
def test_two_ranks_give_the_one_process_result(tmp_path, ensemble, multi_label):
    mp.spawn(_worker, args=(free_port(), str(tmp_path), ensemble, multi_label), nprocs=2, join=True)
    summary, scores, labels = _evaluate(Views(multi_label), ensemble)
    for rank in range(2):
        got_summary, got_scores, got_labels = torch.load(tmp_path / f"rank{rank}.pt", weights_only=False)
        assert got_summary == summary  # every rank holds the whole result
        torch.testing.assert_close(got_scores, scores, rtol=1e-6, atol=1e-6)
        assert torch.equal(got_labels, labels)


def test_views_are_ensembled_per_video_and_unread_videos_dropped_and_named():
    summary, scores, labels = _evaluate(Views(False), "sum")
    assert summary["count"] == VIDEOS - 1 and summary["failed_videos"] == 1
    assert summary["failed"] == ["v2.mp4"]
    assert summary["failed_views"] == len(UNREAD) and summary["views"] == VIEWS
    assert labels.tolist() == [v % CLASSES for v in range(VIDEOS) if v != 2]
    # video 4's score is the sum of its three readable views only, not a substitute's
    ds, model = Views(False), _model().eval()
    inputs = Inputs(torch.device("cpu"), [0.5] * 3, [0.25] * 3)
    with torch.no_grad():
        views = [model(inputs(next(iter(build_loader(ds, [[(4 * VIEWS + v, SHAPE)]])))).clips)
                 for v in (0, 2, 3)]
    # the model gives logits; the ensemble sums the views' probabilities
    torch.testing.assert_close(scores[3], torch.cat(views).softmax(-1).sum(0), rtol=1e-5, atol=1e-5)


def test_too_many_unread_videos_stop_with_an_error_naming_them():
    unread = {(v, view) for v in (1, 5) for view in range(VIEWS)}
    with pytest.raises(VideoDecodeError, match=r"test: no view of 2 of 7 videos, more than "
                                               r"test.max_failed_fraction=0.2 of them, could be read: "
                                               r"v1\.mp4, v5\.mp4"):
        _evaluate(Views(False, unread), "sum", max_failed=0.2)
    assert _evaluate(Views(False, unread), "sum", max_failed=0.3)[0]["failed_videos"] == 2


def test_validation_with_no_readable_video_is_an_error_not_a_division_by_zero():
    ds = Views(False, {(v, view) for v in range(VIDEOS) for view in range(VIEWS)}, mode="val")
    loader = build_loader(ds, FixedShapeBatchSampler(SHAPE, len(ds), 5))
    inputs = Inputs(torch.device("cpu"), [0.5] * 3, [0.25] * 3)
    with pytest.raises(VideoDecodeError, match="val: no view of any of the 7 videos could be read: v0.mp4"):
        validate(_model(), loader, inputs, DistInfo(), False)


@pytest.mark.slow
@pytest.mark.multiprocess
@pytest.mark.timeout(600)
def test_the_test_command_under_torchrun_matches_one_process(tmp_path):
    """`mgvideo test` end to end, 2 gloo processes against 1, on 10 synthetic videos and one missing file."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    from mgvideo.commands.test import evaluate_checkpoint
    from mgvideo.config import load_config
    from mgvideo.data.prepare import ensure_synthetic_data
    from mgvideo.engine import builders, checkpoint

    repo = Path(__file__).resolve().parents[1]
    tiny, root = repo / "configs" / "synthetic" / "tiny.yaml", repo / "runs" / "data" / "synthetic_small"
    ensure_synthetic_data(load_config(tiny, [f"data.root={root}"]))
    rows = (root / "val.csv").read_text().splitlines()[:10] + ["videos/val/missing.mp4 3"]
    (tmp_path / "test.csv").write_text("\n".join(rows) + "\n")
    overrides = [f"data.root={root}", "data.cache=none", f"data.test_list={tmp_path / 'test.csv'}",
                 "test.max_failed_fraction=0.1", "test.batch_size=4"]
    cfg = load_config(tiny, overrides)
    torch.manual_seed(0)
    checkpoint.save(builders.build_network(cfg, cfg.data.num_classes).state_dict(), tmp_path / "model.pt")
    one = evaluate_checkpoint(cfg, tmp_path / "model.pt", tmp_path / "one")
    launcher = ["-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-addr", "127.0.0.1",
                "--master-port", str(free_port())]
    cmd = [sys.executable, *launcher, "-m", "mgvideo", "test", str(tiny), str(tmp_path / "model.pt"),
           "--out", str(tmp_path / "two"), *overrides]
    done = subprocess.run(cmd, cwd=repo, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True,
                          text=True, timeout=500)
    assert done.returncode == 0, done.stderr[-3000:]
    two = json.loads((tmp_path / "two" / "test_summary.json").read_text())
    assert one["failed"] == two["failed"] == [str(root / "videos/val/missing.mp4")]
    assert one["count"] == two["count"] == 10 and one["failed_views"] == two["failed_views"] == 6
    for key in ("top1", "top5", "views"):
        assert two[key] == pytest.approx(one[key]), key
    per_class = [(tmp_path / run / "per_class.csv").read_text() for run in ("one", "two")]
    assert per_class[0] == per_class[1]
