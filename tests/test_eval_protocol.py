"""The benchmark's evaluation protocol: a training clock that evaluation pauses (and resume carries),
evaluations at `train.eval_points` evenly spaced iterations of a run's own schedule, and the synthetic
data draw (`data.synthetic_seed`) that keys a generated set."""

import functools
import json
import time
from types import SimpleNamespace

import pytest

from mgvideo.config import load_config, override
from mgvideo.data import synthetic
from mgvideo.data.prepare import ensure_synthetic_data
from mgvideo.engine import builders, trainer
from mgvideo.engine.run import TrainState
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


def fake_run(points, total, step, eval_step=-1):
    state = TrainState(step=step, eval_step=eval_step, next_eval=10**9)
    return SimpleNamespace(cfg=points_cfg(points), state=state, log=SimpleNamespace(total_iterations=total))


def test_eval_points_are_evenly_spaced_over_the_runs_own_iterations():
    def due_steps(points, total):
        steps, last = [], -1
        for step in range(1, total + 1):
            if trainer.periodic_eval_due(fake_run(points, total, step, last)):
                steps.append(step)
                last = step
        return steps

    assert due_steps(4, 100) == [25, 50, 75, 100]
    assert due_steps(3, 10) == [4, 7, 10]  # ceil(k * 10 / 3)
    assert due_steps(4, 40) == [10, 20, 30, 40]  # a cheaper run: as many points, closer together
    assert len(due_steps(20, 1234)) == 20 and due_steps(20, 1234)[-1] == 1234
    assert due_steps(0, 100) == []  # off


def test_an_evaluation_for_another_reason_does_not_shift_the_points():
    assert not trainer.periodic_eval_due(fake_run(4, 100, 30, eval_step=27))  # point 25 already covered
    assert trainer.periodic_eval_due(fake_run(4, 100, 50, eval_step=27))


def test_eval_points_replace_the_reference_cadence_at_epoch_ends():
    run = fake_run(4, 1000, 10)
    run.schedule = builders.build_schedule(run.cfg)
    assert not trainer.eval_due(run, 0)  # the reference would evaluate at a stage end; 10 < 250
    run.state.step = 250
    assert trainer.eval_due(run, 0)


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
