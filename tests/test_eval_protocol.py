"""The benchmark's evaluation protocol: a training clock that evaluation pauses (and resume carries),
evaluations at `train.eval_points` evenly spaced iterations of a run's own schedule, and the synthetic
data draw (`data.synthetic_seed`) that keys a generated set."""

import functools
import json
import time

import pytest

from mgvideo.config import load_config, override
from mgvideo.data import synthetic
from mgvideo.data.prepare import ensure_synthetic_data
from mgvideo.engine import builders
from mgvideo.engine.eval_schedule import eval_steps
from mgvideo.engine.runlog import Stopwatch
from mgvideo.errors import ConfigError

CFG = load_config(None, ["data.frames=8", "data.crop=32", "solver.batch_size=2", "solver.steps=[0, 4]",
                         "solver.max_epoch=5"])


def test_paused_time_is_off_the_training_clock_but_on_the_wall():
    clock = Stopwatch(elapsed=10.0, wall_elapsed=25.0)  # a resumed run: 15 s of earlier evaluation
    with clock.paused():
        time.sleep(0.05)
        frozen = clock()
        with clock.paused():  # nested: counted once
            time.sleep(0.02)
        assert clock() == frozen  # the clock stands still while paused
    assert 10.0 <= clock() < 10.04
    assert clock.wall() - clock() >= 15.0 + 0.07 - 1e-3
    assert Stopwatch(elapsed=10.0).wall() >= 10.0  # a checkpoint without wall time: at least the clock


@functools.cache
def points_cfg(points):
    return override(CFG, **{"train.eval_points": points})


def due_steps(points, total, first=None):
    """The evaluation steps of a run of `total` iterations over its schedule's epochs (`first` iterations
    in the first epoch, else as even as they go), with `train.eval_points` = `points`."""
    cfg = points_cfg(points)
    schedule = builders.build_schedule(cfg)
    epochs = schedule.max_epoch
    first = total // epochs + (total % epochs > 0) if first is None else first
    rest = [(total - first) // (epochs - 1) + (e < (total - first) % (epochs - 1)) for e in range(epochs - 1)]
    return eval_steps(cfg.train, schedule, [[2] * n for n in [first, *rest]])


def test_eval_points_are_evenly_spaced_over_the_runs_own_iterations():
    assert due_steps(4, 100) == [25, 50, 75, 100]
    assert due_steps(3, 10) == [4, 7, 10]  # ceil(k * 10 / 3)
    assert due_steps(4, 40) == [10, 20, 30, 40]  # a cheaper run: as many points, closer together
    assert len(due_steps(20, 1234)) == 20 and due_steps(20, 1234)[-1] == 1234
    assert not set(due_steps(0, 100)) & {25, 50, 75}  # off: the reference cadence instead


def test_an_evaluation_for_another_reason_does_not_shift_the_points():
    steps = due_steps(4, 100)  # fixed when the run is built, whatever else evaluates
    assert 30 not in steps  # point 25 already covered
    assert 50 in steps


def test_eval_points_replace_the_reference_cadence_at_epoch_ends():
    steps = due_steps(4, 1000, first=10)
    assert 10 in due_steps(0, 1000, first=10)  # the reference evaluates at the first stage's end...
    assert 10 not in steps  # ...points do not; 10 < 250
    assert 250 in steps


def test_synthetic_sets_are_keyed_by_their_draw(tmp_path):
    meta = {"version": synthetic.VERSION, "seed": 0}
    assert synthetic.matches(meta, str(tmp_path), 0)
    assert not synthetic.matches({"version": synthetic.VERSION - 1, "seed": 0}, str(tmp_path), 0)  # stale
    with pytest.raises(ConfigError, match=r"^data\.synthetic_seed: .* holds the synthetic draw of seed 0, "
                                          r"not 1; give each draw its own data\.root"):
        synthetic.matches(meta, str(tmp_path), 1)
    with pytest.raises(ConfigError, match="data.synthetic_seed must be >= 0"):
        override(CFG, **{"data.synthetic_seed": -1})


def test_a_run_generates_its_draw_and_another_draw_differs(tmp_path):
    spec = synthetic.SizeSpec(1, 1, 0, 0, 0, 0)
    draws = {}
    for seed in (0, 1):
        root = tmp_path / f"s{seed}"
        synthetic.generate_with(str(root), seed, spec, workers=1)
        draws[seed] = (root / "videos" / "train" / "000000.mp4").read_bytes()
        assert json.loads((root / "meta.json").read_text())["seed"] == seed
        cfg = override(CFG, **{"data.dataset": "synthetic", "data.root": str(root),
                               "data.synthetic_seed": seed, "data.synthetic_size": "1x1"})
        ensure_synthetic_data(cfg)  # present and of this draw: nothing to do
    assert draws[0] != draws[1]
