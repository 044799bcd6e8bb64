"""A schedule against a dataset: a stage whose per-device batch exceeds the clips per device is a named
error before training (in the trainer and in `mgvideo plan --dataset-size`); an epoch shorter than the
short cycle, whose last shapes would never train, is a warning naming the stage."""

from pathlib import Path

import pytest

from mgvideo.cli import main
from mgvideo.config import load_config
from mgvideo.errors import ScheduleError
from mgvideo.multigrid import MultigridConfig, MultigridSchedule
from mgvideo.multigrid.fit import check_dataset_fits, short_epoch_warning
from mgvideo.multigrid.sampler import MultigridBatchSampler, iterations_per_epoch

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


def slots_trained(schedule: MultigridSchedule, epoch: int, dataset_size: int, batch_size: int) -> set[int]:
    """The short-cycle slots an epoch of the sampler actually visits."""
    sampler = MultigridBatchSampler(schedule, dataset_size, batch_size, seed=0)
    sampler.set_epoch(epoch)
    return {shape.slot for batch in sampler for _, shape in batch[:1]}


def test_an_epoch_shorter_than_the_short_cycle_is_warned_about_by_name():
    assert slots_trained(SMALL, 0, 48, 2) == {0, 1}  # the stage's own shape (slot 2) never trains
    warning = short_epoch_warning(SMALL, 48, batch_size=2)
    assert warning.startswith("stage 0: an epoch has 2 iterations (a 48-clip training set at base batch 2 "
                              "per device) but its short cycle has 3 slots and restarts each epoch, so "
                              "slot 3 (2x23x23, the stage's own shape) never trains; for every shape to "
                              "train use a per-device base batch of at most 1")
    assert warning.endswith("or multigrid.short_cycle=false") and "\n" not in warning
    assert "slots 2-3 (2x23x23, 2x23x23; the last is" in short_epoch_warning(SMALL, 32, batch_size=2)


def test_the_warning_is_given_exactly_when_a_slot_never_trains():
    for size in range(32, 140, 5):
        for batch in (1, 2):
            try:
                check_dataset_fits(SMALL, size, batch)
            except ScheduleError:
                continue
            short = [stage.index for stage in SMALL.stages
                     if len(slots_trained(SMALL, stage.start_epoch, size, batch)) < len(stage.slots)]
            warning = short_epoch_warning(SMALL, size, batch)
            assert (warning is None) == (not short), (size, batch)
            if short:
                assert warning.startswith(f"stage {short[0]}: ")
                assert all(f"{index} (" in warning for index in short[1:]), warning


def test_several_devices_and_schedules_without_a_short_cycle():
    warning = short_epoch_warning(SMALL, 100, batch_size=2, world_size=2)
    assert "(a 100-clip training set at base batch 2 per device on 2 devices)" in warning
    assert "(solver.batch_size 2 on 2 device(s))" in warning
    long_only = MultigridSchedule(MultigridConfig(frames=8, crop=32, steps=(0, 4), max_epoch=5,
                                                  short_cycle=False))
    check_dataset_fits(long_only, 16, batch_size=2)
    assert short_epoch_warning(long_only, 16, batch_size=2) is None
