"""Property tests: every config either runs `mgvideo plan` or fails with one line naming a field; every
schedule either builds (with consistent stages) or raises ScheduleError. Never a traceback."""

import re
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mgvideo.cli import main
from mgvideo.errors import ScheduleError
from mgvideo.multigrid import MultigridConfig, MultigridSchedule

TINY = Path(__file__).resolve().parents[1] / "configs" / "synthetic" / "tiny.yaml"
FIELD = re.compile(r"\b(data|model|multigrid|solver|train|test)\.[a-z_]+|--[a-z-]+")
PROPERTY = settings(max_examples=100, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])

# Mostly plausible values, some wrong ones (zero, negative, wrong type) for every schedule-relevant key.
small_int = st.integers(-2, 40)
factor = st.one_of(st.floats(-0.5, 2.5, allow_nan=False), st.integers(-1, 3))
wrong = st.sampled_from(["abc", "[1, 2]", "{a: 1}", "null", "true", "1.5"])
VALUES = {
    "data.frames": st.one_of(small_int, wrong),
    "data.crop": st.one_of(st.integers(-2, 300), wrong),
    "data.sampling_rate": st.one_of(small_int, wrong),
    "solver.batch_size": st.one_of(st.integers(-1, 70), wrong),
    "solver.max_epoch": st.one_of(st.integers(-1, 60), wrong),
    "solver.steps": st.one_of(st.lists(st.integers(-2, 60), max_size=5).map(str), wrong),
    "solver.gamma": st.one_of(st.floats(-0.5, 2.0, allow_nan=False), wrong),
    "solver.lr_policy": st.sampled_from(["steps", "cosine", "linear"]),
    "solver.warmup_epochs": st.one_of(st.floats(-1.0, 60.0, allow_nan=False), wrong),
    "solver.base_lr": st.one_of(st.floats(-0.1, 1.0, allow_nan=False), wrong),
    "multigrid.long_cycle": st.sampled_from(["true", "false", "1"]),
    "multigrid.short_cycle": st.sampled_from(["true", "false", "yes"]),
    "multigrid.short_cycle_relative": st.sampled_from(["true", "false"]),
    "multigrid.epoch_factor": st.one_of(st.floats(-0.5, 4.0, allow_nan=False), wrong),
    "multigrid.eval_freq": st.one_of(small_int, wrong),
    "multigrid.long_cycle_factors": st.one_of(
        st.lists(st.lists(factor, min_size=1, max_size=3), max_size=4).map(str), wrong),
    "multigrid.short_cycle_factors": st.one_of(st.lists(factor, max_size=3).map(str), wrong),
    "multigrid.scale_jitter": st.sampled_from(["reference", "same_view", "proportional"]),
    "model.bn_base_size": st.one_of(small_int, wrong),
}
overrides = st.dictionaries(st.sampled_from(sorted(VALUES)), st.just(None), max_size=6).flatmap(
    lambda keys: st.fixed_dictionaries({k: VALUES[k] for k in keys}))


@PROPERTY
@given(overrides=overrides, dataset_size=st.integers(1, 400), devices=st.integers(1, 4))
def test_every_config_plans_or_names_a_field_in_one_line(capsys, overrides, dataset_size, devices):
    args = ["plan", "--config", str(TINY), "--dataset-size", str(dataset_size), "--devices", str(devices)]
    code = main(args + [f"{k}={v}" for k, v in overrides.items()])
    out, err = capsys.readouterr()
    if code == 0:
        assert "iteration saving" in out and not err
    else:
        assert code == 2 and err.count("\n") == 1, err
        assert FIELD.search(err), err


@settings(max_examples=300, deadline=None)
@given(frames=st.integers(1, 64), crop=st.integers(1, 320), steps=st.lists(st.integers(0, 50), max_size=5),
       max_epoch=st.integers(1, 80), policy=st.sampled_from(["steps", "cosine"]), long_cycle=st.booleans(),
       short_cycle=st.booleans(), epoch_factor=st.floats(0.1, 4.0),
       long_factors=st.lists(st.tuples(st.floats(0.05, 2.0), st.floats(0.05, 2.0)), min_size=1, max_size=4),
       short_factors=st.lists(st.floats(0.05, 2.0), min_size=1, max_size=3), relative=st.booleans())
def test_every_schedule_builds_consistently_or_raises_a_schedule_error(
        frames, crop, steps, max_epoch, policy, long_cycle, short_cycle, epoch_factor, long_factors,
        short_factors, relative):
    cfg = MultigridConfig(frames=frames, crop=crop, steps=tuple(steps), max_epoch=max_epoch, lr_policy=policy,
                          long_cycle=long_cycle, short_cycle=short_cycle, epoch_factor=epoch_factor,
                          long_cycle_factors=tuple(long_factors), short_cycle_factors=tuple(short_factors),
                          short_cycle_relative=relative)
    try:
        schedule = MultigridSchedule(cfg)
    except ScheduleError as err:
        assert "\n" not in str(err) and str(err).split(":")[0] in {f for f in MultigridConfig.__annotations__}
        return
    stages = schedule.stages
    assert stages[0].start_epoch == 0 and stages[-1].end_epoch == schedule.max_epoch
    assert all(a.end_epoch == b.start_epoch for a, b in zip(stages, stages[1:]))
    slots = [slot for stage in stages for slot in stage.slots]
    assert all(slot.batch_factor >= 1 and slot.frames >= 1 and slot.crop >= 1 for slot in slots)
    assert schedule.iteration_saving > 0 and list(schedule.steps) == sorted(schedule.steps)
    for epoch in range(schedule.max_epoch):
        assert schedule.relative_lr(epoch + 0.5) >= 0


def test_steps_zero_with_the_long_cycle_is_one_line_before_any_work(capsys, tmp_path):
    assert main(["train", str(TINY), "--out", str(tmp_path / "run"), "solver.steps=[0]"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "train: error: solver.steps: the long cycle needs two steps" in err
    assert not (tmp_path / "run").exists()
    assert main(["plan", "--steps", "0", "--max-epoch", "10"]) == 2
    assert "plan: error: --steps: the long cycle needs two steps" in capsys.readouterr().err
    one_stage = ["plan", "--steps", "0", "--max-epoch", "10", "--no-long-cycle"]
    assert main([*one_stage, "--warmup-epochs", "20"]) == 2
    assert "plan: error: --warmup-epochs: the warmup of 20 epochs" in capsys.readouterr().err
    assert main(["plan", "--steps", "0", "--max-epoch", "10", "--no-long-cycle", "--warmup-epochs", "1"]) == 0


def test_a_schedule_with_no_epoch_names_the_epoch_factor(capsys):
    assert main(["plan", "--config", str(TINY), "--devices", "1", "multigrid.epoch_factor=0.0625"]) == 2
    assert "error: multigrid.epoch_factor: the run has no epoch" in capsys.readouterr().err
