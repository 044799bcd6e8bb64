"""A schedule against a dataset: a stage whose per-device batch exceeds the clips per device is a named
error before training (in the trainer and in `mgvideo plan --dataset-size`)."""

from pathlib import Path

import pytest

from mgvideo.cli import main
from mgvideo.config import load_config
from mgvideo.errors import ScheduleError
from mgvideo.multigrid import MultigridConfig, MultigridSchedule
from mgvideo.multigrid.fit import check_dataset_fits
from mgvideo.multigrid.sampler import iterations_per_epoch

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "configs" / "synthetic" / "tiny.yaml"
SMALL = MultigridSchedule(MultigridConfig(frames=8, crop=32, steps=(0, 4), max_epoch=5))


def test_the_largest_batch_that_fits_passes_and_one_more_clip_fails():
    largest = max(slot.batch_factor for stage in SMALL.stages for slot in stage.slots)
    check_dataset_fits(SMALL, dataset_size=2 * largest * 4, batch_size=4, world_size=2)
    with pytest.raises(ScheduleError, match=r"^stage 0: its per-device batch of 64 clips \(short-cycle slot "
                                            r"2x16x16, base batch 4 x 16\) exceeds the 63 clips per device "
                                            r"of a 127-clip training set on 2 device"):
        check_dataset_fits(SMALL, dataset_size=2 * largest * 4 - 1, batch_size=4, world_size=2)


def test_every_stage_that_passes_has_iterations_in_each_epoch():
    for size in range(16, 200, 7):
        try:
            check_dataset_fits(SMALL, size, batch_size=4)
        except ScheduleError as err:
            assert "at most" in str(err) or "more training videos" in str(err)
            continue
        for stage in SMALL.stages:
            factors = [slot.batch_factor for slot in stage.slots]
            assert iterations_per_epoch(size, 4, 1, factors) >= 1


def test_the_message_says_what_fits():
    with pytest.raises(ScheduleError, match=r"base batch of at most 1 \(solver.batch_size 1 on 1 dev"):
        check_dataset_fits(SMALL, 16, batch_size=4)
    with pytest.raises(ScheduleError, match="use more training videos"):
        check_dataset_fits(SMALL, 8, batch_size=1)
    baseline = MultigridSchedule(MultigridConfig(frames=8, crop=32, steps=(0, 4), max_epoch=5,
                                                 long_cycle=False, short_cycle=False))
    check_dataset_fits(baseline, 4, batch_size=4)  # one full batch per epoch is enough


def test_plan_with_a_small_dataset_size_gives_the_one_line_error(capsys):
    assert main(["plan", "--config", str(TINY), "--dataset-size", "16", "--devices", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "stage 0: its per-device batch of 32 clips" in err and "16-clip" in err
    assert main(["plan", "--config", str(TINY), "--dataset-size", "40", "--devices", "1"]) == 0


@pytest.mark.slow
def test_the_reported_case_stops_before_training(tmp_path):
    """16 training videos, batch 4: the coarse stages' batches (32 and more) exceed the dataset."""
    from mgvideo.data.prepare import ensure_synthetic_data
    from mgvideo.engine.trainer import train

    root = REPO / "runs" / "data" / "synthetic_small"
    ensure_synthetic_data(load_config(TINY, [f"data.root={root}"]))  # the tiny recipe's set (40 videos)
    rows = (root / "train.csv").read_text().splitlines()[:16]
    (tmp_path / "train16.csv").write_text("\n".join(rows) + "\n")
    small = [f"data.root={root}", "data.cache=none", f"data.train_list={tmp_path / 'train16.csv'}",
             "solver.batch_size=4"]
    cfg = load_config(TINY, small)
    with pytest.raises(ScheduleError, match="stage 0: .* exceeds the 16 clips per device of a 16-clip"):
        train(cfg, tmp_path / "run")
    assert not (tmp_path / "run" / "checkpoints").exists()
    assert not (tmp_path / "run" / "metrics.jsonl").exists()
