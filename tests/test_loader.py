"""The loader: uint8 collation, variable batch sizes and shapes, persistent seeded workers, to_device."""


import pytest
import torch
from videos import write_video

from mgvideo.data.annotations import read_kinetics
from mgvideo.data.datasets import Sample, VideoClipDataset
from mgvideo.data.loader import Batch, build_loader, collate, to_device
from mgvideo.multigrid.schedule import ClipShape


def shape(frames, crop):
    return ClipShape(frames=frames, crop=crop, min_rate=1, max_rate=2, base_crop=16, stage_batch=2,
                     stage=0, slot=0)


@pytest.fixture(scope="module")
def ds(tmp_path_factory):
    root = tmp_path_factory.mktemp("loader")
    for i in range(6):
        write_video(root / f"v{i}.mp4", frames=16)
    (root / "train.txt").write_text("".join(f"v{i}.mp4 {i % 3}\n" for i in range(6)))
    return VideoClipDataset(read_kinetics(root / "train.txt"), shape(4, 16), seed=5)


class ListBatchSampler:
    """A stand-in batch sampler: fixed batches of (index, ClipShape) with different sizes and shapes."""

    def __init__(self, batches):
        self.batches = batches

    def __iter__(self):
        return iter(self.batches)

    def __len__(self):
        return len(self.batches)


BATCHES = [[(0, shape(2, 8)), (1, shape(2, 8)), (2, shape(2, 8)), (3, shape(2, 8))],
           [(4, shape(4, 16)), (5, shape(4, 16))],
           [(1, shape(3, 12))]]


def test_collate_keeps_uint8_and_stacks_labels():
    clips = [torch.full((3, 2, 4, 4), i, dtype=torch.uint8) for i in range(3)]
    batch = collate([Sample(c, i, 10 + i, i % 2) for i, c in enumerate(clips)])
    assert batch.clips.dtype == torch.uint8 and batch.clips.shape == (3, 3, 2, 4, 4)
    assert batch.labels.tolist() == [0, 1, 2] and batch.indices.tolist() == [10, 11, 12]
    assert batch.skipped == 1
    hot = torch.eye(2)
    multi = collate([Sample(clips[0], hot[0], 0), Sample(clips[1], hot[1], 1)])
    assert multi.labels.shape == (2, 2) and multi.labels.dtype == torch.float32


def run_epochs(loader, dataset, epochs):
    out = []
    for epoch in epochs:
        dataset.set_epoch(epoch)
        out.append([batch for batch in loader])
    return out


@pytest.mark.slow
def test_workers_follow_the_sampler_and_the_epoch(ds):
    inline = build_loader(ds, ListBatchSampler(BATCHES), workers=0, seed=1)
    pooled = build_loader(ds, ListBatchSampler(BATCHES), workers=2, seed=1)
    assert pooled.persistent_workers and not inline.persistent_workers
    a = run_epochs(inline, ds, [0, 1])
    b = run_epochs(pooled, ds, [0, 1])
    for epoch_a, epoch_b in zip(a, b):
        shapes = [tuple(x.clips.shape) for x in epoch_b]
        assert shapes == [(4, 3, 2, 8, 8), (2, 3, 4, 16, 16), (1, 3, 3, 12, 12)]
        assert [y.shape for y in epoch_b] == [dealt[0][1] for dealt in BATCHES]  # the batch carries its shape
        for x, y in zip(epoch_a, epoch_b):
            assert isinstance(y, Batch) and y.clips.dtype == torch.uint8
            assert torch.equal(x.clips, y.clips) and torch.equal(x.labels, y.labels)
    # set_epoch reaches the persistent workers: epoch 1 differs from epoch 0 in both loaders alike
    assert any(not torch.equal(x.clips, y.clips) for x, y in zip(b[0], b[1]))
    assert b[1][1].labels.tolist() == [1, 2]


def test_to_device_normalises_on_the_device():
    clips = torch.tensor([0, 255, 51], dtype=torch.uint8).view(1, 3, 1, 1, 1).expand(2, 3, 2, 2, 2)
    batch = Batch(clips.contiguous(), torch.tensor([0, 1]), torch.tensor([4, 5]), 2)
    out = to_device(batch, "cpu", mean=(0.5, 0.5, 0.2), std=(0.5, 0.25, 0.2))
    assert out.clips.dtype == torch.float32
    assert out.clips[0, :, 0, 0, 0].tolist() == pytest.approx([-1.0, 2.0, 0.0])
    assert out.labels.tolist() == [0, 1] and out.skipped == 2
    shaped = Batch(batch.clips, batch.labels, batch.indices, 2, shape(2, 2))
    assert to_device(shaped, "cpu", (0,) * 3, (1,) * 3).shape == shape(2, 2)
    last = to_device(batch, "cpu", mean=(0.5,) * 3, std=(0.5,) * 3, channels_last=True)
    assert last.clips.is_contiguous(memory_format=torch.channels_last_3d)


def test_a_multigrid_epoch_through_the_loader(ds):
    from mgvideo.multigrid import MultigridBatchSampler, MultigridConfig, MultigridSchedule

    cfg = MultigridConfig(frames=4, crop=16, steps=(0, 4), max_epoch=6, sampling_rate=1)
    schedule = MultigridSchedule(cfg)
    sampler = MultigridBatchSampler(schedule, len(ds), 1, seed=0, drop_last=False)
    loader = build_loader(ds, sampler, workers=0, seed=0)
    for epoch in (0, 6):
        sampler.set_epoch(epoch)
        ds.set_epoch(epoch)
        wanted = [(len(b), b[0][1]) for b in sampler]
        got = [batch for batch in loader]
        assert [tuple(b.clips.shape) for b in got] == [(n, 3, s.frames, s.crop, s.crop) for n, s in wanted]
        assert sorted(i for b in got for i in b.indices.tolist()) == list(range(len(ds)))


def test_bench_helpers_cover_every_distinct_shape_and_time_a_loader(ds):
    from mgvideo.bench.data import distinct_shapes, loader_rate
    from mgvideo.multigrid import MultigridConfig, MultigridSchedule

    schedule = MultigridSchedule(MultigridConfig(frames=16, crop=64, sampling_rate=2))
    shapes = distinct_shapes(schedule, 2)
    every = {(s.frames, s.crop) for st in schedule.stages for _, s in schedule.shapes(st, 2)}
    assert {(s.frames, s.crop) for _, s in shapes} == every and len(shapes) == len(every)
    costs = [s.frames * s.crop**2 for _, s in shapes]
    assert costs == sorted(costs) and shapes[0][0] == 32 and shapes[-1][0] == 2
    small = ClipShape(frames=2, crop=8, min_rate=1, max_rate=2, base_crop=16, stage_batch=2, stage=0, slot=0)
    ann = read_kinetics(ds.records[0].path.rsplit("/", 1)[0] + "/train.txt")
    assert loader_rate(ann, small, batch=2, workers=0, resize=True, clips=4) > 0


def test_bench_data_names_bad_videos_after_the_table_not_in_it(tmp_path, capsys, caplog):
    from mgvideo.cli import main

    for i in range(3):
        write_video(tmp_path / f"v{i}.mp4", frames=24, width=40, height=32)
    (tmp_path / "bad.mp4").write_bytes(b"")
    (tmp_path / "train.csv").write_text("".join(f"v{i}.mp4 {i % 2}\n" for i in range(3)) + "bad.mp4 1\n")
    (tmp_path / "classes.txt").write_text("a\nb\n")
    argv = ["bench", "data", "--data", str(tmp_path), "--frames", "8", "--crop", "24", "--batch", "2",
            "--clips", "8"]
    assert main(argv) == 0
    out, err = capsys.readouterr()
    assert "skipping unreadable" not in caplog.text + out + err  # no warning lines between table rows
    assert err.strip().splitlines()[-1].startswith(f"skipped 1 unreadable videos (other videos read "
                                                   f"instead): {tmp_path / 'bad.mp4'}")


def test_torch_threads_and_loader_workers_fit_the_usable_cores(monkeypatch):
    from mgvideo.data import loader as L

    assert L.main_process_threads(2, cores=4) == 2 and L.main_process_threads(3, cores=4) == 1
    assert L.main_process_threads(0, cores=4) == 4 and L.main_process_threads(1, local_ranks=2, cores=8) == 3
    assert L.main_process_threads(9, cores=4) == 1  # never below one
    before = torch.get_num_threads()
    monkeypatch.setattr(L, "usable_cores", lambda: 4)
    try:
        torch.set_num_threads(4)
        assert L.limit_cpu_threads(2) == 2 and torch.get_num_threads() == 2
        torch.set_num_threads(1)  # OMP_NUM_THREADS=1 (or any lower choice) stays
        assert L.limit_cpu_threads(0) == 1 and torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_the_trainer_limits_its_threads_to_the_cores_left_by_its_workers(monkeypatch, tmp_path):
    from pathlib import Path

    from mgvideo.config import load_config
    from mgvideo.engine import run as R

    class Stop(Exception):
        pass

    def record(workers):
        seen.append(workers)
        raise Stop

    seen = []
    monkeypatch.setattr(R, "limit_cpu_threads", record)
    tiny = Path(__file__).resolve().parents[1] / "configs" / "synthetic" / "tiny.yaml"
    small = Path(__file__).resolve().parents[1] / "runs" / "data" / "synthetic_small"
    with pytest.raises(Stop):
        R.build_run(load_config(tiny, [f"data.root={small}", "data.workers=2"]), tmp_path / "run")
    assert seen == [2]
