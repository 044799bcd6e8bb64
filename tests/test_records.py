"""The `metrics.jsonl` schema: today's lines read and write back unchanged, older lines still read, the
derived figures, and a bad line is an error naming the file and line."""

import json

import pytest
import torch

from mgvideo.engine.distributed import DistInfo
from mgvideo.engine.records import (
    EvalRecord,
    PreciseBNRecord,
    RecordError,
    TrainRecord,
    from_json,
    read_records,
    to_json,
)
from mgvideo.engine.runlog import RunLog
from mgvideo.engine.window import LogWindow

# Lines as the trainer writes them today (key order included).
TRAIN = ('{"step": 12, "epoch": 1.5, "kind": "train", "stage": 1, "frames": 4, "crop": 16, "iterations": 3, '
         '"batch": 24, "loss": 2.25, "top1": 12.5, "lr": 0.1, "clips_per_s": 80.0, "data_wait": 0.25, '
         '"time": 3.5}')
EVAL = ('{"kind": "eval", "step": 16, "epoch": 2, "samples": 64, "time": 4.0, "wall": 5.5, "top1": 40.0, '
        '"top5": 90.0, "count": 10, "views": 1, "failed_views": 1, "failed_videos": 1, '
        '"failed": ["bad.mp4"], "bn_s": 0.25, "val_s": 0.5}')
EVAL_MULTI_LABEL = ('{"kind": "eval", "step": 16, "epoch": 2, "samples": 64, "time": 4.0, "wall": 5.5, '
                    '"mAP": 31.5, "count": 10, "views": 1, "failed_views": 0, "failed_videos": 0, '
                    '"bn_s": 0.25, "val_s": 0.5}')
PRECISE_BN = '{"kind": "precise_bn", "step": 8, "epoch": 1, "stage": 0, "time": 2.0, "seconds": 0.125}'
# Older runs: a record per iteration without training top-1; evaluations without wall-clock or timings.
OLD_TRAIN = ('{"kind": "train", "step": 1, "epoch": 0.1, "stage": 0, "frames": 4, "crop": 16, "batch": 8, '
             '"loss": 2.5, "lr": 0.1, "clips_per_s": 40.0, "data_wait": 0.5, "time": 0.2}')
OLD_EVAL = ('{"kind": "eval", "step": 16, "epoch": 2, "samples": 64, "time": 4.0, "top1": 40.0, '
            '"top5": 90.0, "count": 10, "views": 1}')


@pytest.mark.parametrize("line", [TRAIN, EVAL, EVAL_MULTI_LABEL, PRECISE_BN])
def test_todays_lines_read_and_write_back_unchanged(line):
    record = from_json(line)
    assert to_json(record) == line
    assert json.loads(to_json(record))["kind"] == record.kind


def test_records_have_typed_fields_and_derived_figures():
    train, evaluation, multi, bn = (from_json(x) for x in (TRAIN, EVAL, EVAL_MULTI_LABEL, PRECISE_BN))
    assert isinstance(train, TrainRecord) and (train.frames, train.crop, train.batch) == (4, 16, 24)
    assert train.seconds == pytest.approx(0.3)  # 24 clips at 80 clips/s
    assert train.ms_per_iteration == pytest.approx(100.0) and train.clips_per_iteration == 8
    assert isinstance(evaluation, EvalRecord) and evaluation.failed == ["bad.mp4"]
    assert (evaluation.metric, evaluation.score, evaluation.seconds) == ("top1", 40.0, 0.75)
    assert (multi.metric, multi.score, multi.top1) == ("mAP", 31.5, None)
    assert isinstance(bn, PreciseBNRecord) and bn.seconds == 0.125


def test_older_lines_still_read():
    train, evaluation = from_json(OLD_TRAIN), from_json(OLD_EVAL)
    assert (train.iterations, train.top1, train.ms_per_iteration) == (1, None, pytest.approx(200.0))
    assert (evaluation.wall, evaluation.failed_videos, evaluation.seconds) == (None, None, 0.0)
    assert json.loads(to_json(evaluation)) == json.loads(OLD_EVAL)  # nothing added but what it held


def test_read_records_reads_a_file_and_leaves_out_a_line_cut_by_a_kill(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text("\n".join([TRAIN, "", EVAL, PRECISE_BN[:30]]))
    assert [r.kind for r in read_records(path)] == ["train", "eval"]
    path.write_text("\n".join([TRAIN, EVAL]))  # a whole last line without its newline still counts
    assert len(read_records(path)) == 2


@pytest.mark.parametrize("line, message", [
    ('{"kind": "checkpoint", "step": 3}', r"unknown record kind 'checkpoint' \(known: train, eval"),
    ('{"step": 3}', "unknown record kind None"),
    (TRAIN.replace('"loss": 2.25, ', ""), "train record: missing field.* loss"),
    (PRECISE_BN.replace('"seconds"', '"secs"'), "precise_bn record: unknown field.* secs"),
    (EVAL.replace('"top1": 40.0, ', ""), "eval record needs 'top1' or 'mAP'"),
    ('{"kind": "train", ', "not JSON"),  # cut, but not the last line
    ("[1, 2]", "unknown record kind"),
])
def test_a_bad_line_is_an_error_naming_the_file_and_line(tmp_path, line, message):
    path = tmp_path / "metrics.jsonl"
    path.write_text("\n".join([TRAIN, line, EVAL]) + "\n")
    with pytest.raises(RecordError, match=message) as caught:
        read_records(path)
    assert str(caught.value).startswith(f"{path}:2: ")


def test_the_run_log_writes_the_records_lines(tmp_path):
    log = RunLog(tmp_path, True, 0, 10, 0)
    for line in (TRAIN, EVAL, PRECISE_BN):
        log.write(from_json(line))
    log.close()
    assert (tmp_path / "metrics.jsonl").read_text() == "\n".join([TRAIN, EVAL, PRECISE_BN]) + "\n"
    assert log.records == 3


def test_the_window_closes_into_train_records_stamped_with_step_epoch_and_clock():
    window = LogWindow(torch.device("cpu"))
    clips = torch.zeros(2, 3, 4, 16, 16)
    for step in (1, 2):
        window.add(step, 0, clips, torch.tensor(2.0), torch.tensor(1), 0, 0.1, 0.5, 0.125)
    window.add(3, 0, torch.zeros(4, 3, 2, 8, 8), torch.tensor(1.0), torch.tensor(4), 0, 0.1, 0.5, 0.0)
    records, skipped, raised = window.close(DistInfo(), 3, 0.123456, lambda: 7.00049)
    assert (skipped, raised) == (0, False)
    first, second = records
    assert (first.step, first.epoch, first.time, first.kind) == (3, 0.12346, 7.0, "train")
    assert (first.frames, first.crop, first.iterations, first.batch) == (4, 16, 2, 4)
    assert (first.loss, first.top1, first.data_wait) == (2.0, 50.0, 0.25)
    assert (second.frames, second.crop, second.clips_per_iteration, second.top1) == (2, 8, 4, 100.0)
    assert from_json(to_json(first)) == first
