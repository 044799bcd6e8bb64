"""`mgvideo plan` flags without --config plan PySlowFast's schedule for the same inputs, to the epoch: every
stage, shape, batch factor, LR step and epoch equal to `MultigridSchedule` built from those inputs alone (no
model's shape multiple), and to the spec's reference tables where the spec gives them."""

import json

import pytest

from mgvideo.cli import main
from mgvideo.multigrid import MultigridConfig, MultigridSchedule

BATCH = 8  # the flags' default base per-device batch

# (flags, the MultigridConfig fields they describe)
CASES = {
    "kinetics": ([], {}),
    "kinetics_8_frames": (["--frames", "8", "--crop", "224", "--steps", "0,44,88,118", "--max-epoch", "196"],
                          {"frames": 8, "crop": 224, "steps": (0, 44, 88, 118), "max_epoch": 196}),
    "ssv2_steps": (["--steps", "0,14,18", "--max-epoch", "22"], {"steps": (0, 14, 18), "max_epoch": 22}),
    "ssv2_16x8": (["--frames", "64", "--steps", "0,14,18", "--max-epoch", "22"],
                  {"frames": 64, "steps": (0, 14, 18), "max_epoch": 22}),
    "charades_16x8": (["--frames", "64", "--steps", "0,41,49", "--max-epoch", "57"],
                      {"frames": 64, "steps": (0, 41, 49), "max_epoch": 57}),
    "long_only": (["--no-short-cycle"], {"short_cycle": False}),
    "long_only_8_frames": (["--no-short-cycle", "--frames", "8"], {"short_cycle": False, "frames": 8}),
    "short_only": (["--no-long-cycle"], {"long_cycle": False}),
    "short_only_ssv2": (["--no-long-cycle", "--steps", "0,14,18", "--max-epoch", "22"],
                        {"long_cycle": False, "steps": (0, 14, 18), "max_epoch": 22}),
    "custom_factors": (["--frames", "8", "--long-cycle-factors", "0.25,0.5;0.5,0.7071;1,1",
                        "--short-cycle-factors", "0.5"],
                       {"frames": 8, "long_cycle_factors": ((0.25, 0.5), (0.5, 0.7071), (1.0, 1.0)),
                        "short_cycle_factors": (0.5,)}),
    "relative_short_cycle": (["--short-cycle-relative"], {"short_cycle_relative": True}),
    "baseline": (["--no-long-cycle", "--no-short-cycle"], {"long_cycle": False, "short_cycle": False}),
    "cosine": (["--lr-policy", "cosine", "--max-epoch", "196"],
               {"lr_policy": "cosine", "steps": (), "max_epoch": 196}),
}


def plan_json(capsys, argv: list[str]) -> dict:
    try:
        code = main(["plan", "--json", *argv])
    except SystemExit as exc:
        code = exc.code
    out = capsys.readouterr()
    assert code == 0, out.err
    return json.loads(out.out)


def stage_table(schedule: MultigridSchedule) -> list[tuple]:
    return [(s.index, s.lr_step, s.start_epoch, s.end_epoch, s.batch_factor, s.frames, s.crop, s.finetune,
             [[BATCH * sl.batch_factor, sl.frames, sl.crop] for sl in s.slots]) for s in schedule.stages]


def row_table(data: dict) -> list[tuple]:
    return [(r["stage"], r["lr_step"], r["start_epoch"], r["end_epoch"], r["batch_factor"], r["frames"],
             r["crop"], r["finetune"], r["slots"]) for r in data["stages"]]


@pytest.mark.parametrize("case", sorted(CASES))
def test_flags_plan_the_reference_schedule_of_their_inputs(capsys, case):
    argv, fields = CASES[case]
    data = plan_json(capsys, argv)
    expected = MultigridSchedule(MultigridConfig(**fields))
    assert row_table(data) == stage_table(expected)
    assert data["steps"] == list(expected.steps) and data["max_epoch"] == expected.max_epoch
    assert data["lrs"] == pytest.approx(list(expected.lrs), rel=1e-5)
    assert data["reference_epoch_compression"] == pytest.approx(expected.iteration_saving, rel=1e-5)


def test_flags_plan_without_a_models_shape_multiple(capsys):
    data = plan_json(capsys, CASES["kinetics_8_frames"][0])
    assert (data["shape_multiple"]["frames"], data["shape_multiple"]["crop"]) == (1, 1)
    assert "--model" in data["shape_multiple"]["source"]


# The spec's reference tables (§1.5, §1.6): end epochs of every stage and the rewritten LR steps.
SPEC = {
    "kinetics": ([73, 110, 142, 158, 205, 228, 248, 259, 291, 308, 322, 329, 358],
                 [0, 73, 110, 142, 158, 205, 228, 248, 259, 291, 308, 322, 329, 343]),
    "charades_16x8": ([31, 47, 60, 67, 73, 76, 79, 80, 86], [0, 31, 47, 60, 67, 73, 76, 79, 80, 83]),
    "ssv2_16x8": ([11, 16, 21, 24, 27, 28, 30, 30, 33], [0, 11, 16, 21, 24, 27, 28, 30, 30, 31]),
    "ssv2_steps": ([11, 16, 21, 24, 27, 28, 30, 30, 33], [0, 11, 16, 21, 24, 27, 28, 30, 30, 31]),
    "short_only": ([358], [0, 141, 231, 294]),
}


@pytest.mark.parametrize("case", sorted(SPEC))
def test_flags_give_the_spec_tables(capsys, case):
    ends, steps = SPEC[case]
    data = plan_json(capsys, CASES[case][0])
    assert [r["end_epoch"] for r in data["stages"]] == ends
    assert data["steps"] == steps


def test_kinetics_8_frames_trains_the_references_shapes(capsys):
    """The issue's input: PySlowFast trains T = round(8 x 0.25) = 2 with batch factor 8 in stage 0, not
    SlowFast's frame multiple of 4."""
    data = plan_json(capsys, CASES["kinetics_8_frames"][0])
    first = data["stages"][0]
    assert (first["batch_factor"], first["frames"], first["crop"]) == (8, 2, 158)
    assert [r["batch_factor"] for r in data["stages"][:4]] == [8, 4, 2, 1]


def test_long_only_fine_tunes_for_the_whole_stretched_run(capsys):
    data = plan_json(capsys, CASES["long_only"][0])
    last = data["stages"][-1]
    assert last["finetune"] and last["end_epoch"] == data["max_epoch"] == round(239 * 1.5)
    assert all(len(r["slots"]) == 1 for r in data["stages"])
