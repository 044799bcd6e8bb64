"""The trainer's end-of-epoch decisions on a stand-in run (no data, no model): when to evaluate, when
the stage-end precise BN is skipped, the final evaluation, and how many precise-BN batches are used."""

from types import SimpleNamespace

import pytest

from mgvideo.config import load_config, override
from mgvideo.engine import builders, trainer
from mgvideo.engine.eval_schedule import eval_steps
from mgvideo.engine.run import TrainState

CFG = load_config(None, ["data.frames=8", "data.crop=32", "solver.batch_size=2", "solver.steps=[0, 4]",
                         "solver.max_epoch=5", "multigrid.eval_freq=1"])


def fake_run(cfg=CFG, clips=2, iterations=10, **state):
    """A run whose every epoch has `iterations` iterations of `clips` clips, with the evaluation steps
    build_run would compute for it."""
    schedule = builders.build_schedule(cfg)
    steps = frozenset(eval_steps(cfg.train, schedule, [[clips] * iterations] * schedule.max_epoch))
    log = SimpleNamespace(records=[])
    log.write = log.records.append
    data = SimpleNamespace(train_set=SimpleNamespace(store=None))  # no store: no misses to count
    return SimpleNamespace(cfg=cfg, schedule=schedule, state=TrainState(**state), eval_steps=steps,
                           base_batch=2, info=SimpleNamespace(world_size=1), log=log, clock=lambda: 12.5,
                           data=data, window=[])  # an empty log window: saving closes it first


@pytest.fixture
def calls(monkeypatch):
    seen = []
    monkeypatch.setattr(trainer, "evaluate", lambda run, epoch: seen.append(("eval", epoch)))
    monkeypatch.setattr(trainer, "refresh_bn",
                        lambda run, batch, shape, epoch: seen.append(("bn", shape.stage, batch)))
    monkeypatch.setattr(trainer, "save_state", lambda run, name="last.pt": seen.append(("save", name)))
    return seen


def test_stage_end_with_an_evaluation_skips_the_stage_precise_bn(calls):
    run = fake_run()
    epoch = run.schedule.stages[0].end_epoch - 1
    run.state.step = 10 * (epoch + 1)  # the epoch's last step
    assert run.schedule.is_eval_epoch(epoch)
    trainer.end_epoch(run, epoch)
    assert calls == [("eval", epoch), ("save", "stage_00.pt")]


def test_stage_end_without_an_evaluation_refreshes_bn_at_the_stage_shape(calls):
    run = fake_run(override(CFG, **{"multigrid.eval_freq": 1, "train.eval_period_samples": 10_000}))
    stage = run.schedule.stages[1]
    run.state.step = 10 * stage.end_epoch
    trainer.end_epoch(run, stage.end_epoch - 1)
    batch, shape = run.schedule.shapes(stage, 2)[-1]
    assert calls == [("bn", stage.index, batch), ("save", f"stage_{stage.index:02d}.pt")]
    assert shape.stage == stage.index
    (record,) = run.log.records  # its cost is on the record, as overhead outside the iterations
    assert record.kind == "precise_bn" and record.stage == stage.index and record.seconds >= 0


def test_mid_stage_epoch_without_evaluation_does_nothing(calls):
    run = fake_run(override(CFG, **{"train.eval_period_samples": 100}), clips=15, iterations=4, step=4)
    first = run.schedule.stages[0]
    assert first.end_epoch > 1
    trainer.end_epoch(run, 0)
    assert calls == []


def test_periodic_point_reached_by_the_last_batch_evaluates_at_the_epoch_end(calls):
    run = fake_run(override(CFG, **{"train.eval_period_samples": 100}), clips=25, iterations=4)
    epoch = run.schedule.stages[0].end_epoch - 1
    run.state.step = 4 * (epoch + 1)  # 100 clips an epoch: the last batch reaches the point
    trainer.end_epoch(run, epoch)
    assert calls == [("eval", epoch), ("save", "stage_00.pt")]


@pytest.mark.parametrize("period", [0, 10_000])
def test_the_final_model_is_always_evaluated_once(calls, period):
    cfg = override(CFG, **{"train.eval_period_samples": period})
    last = builders.build_schedule(cfg).max_epoch - 1
    run = fake_run(cfg, step=80, eval_step=43)
    trainer.end_epoch(run, last)
    assert calls == [("eval", last), ("save", f"stage_{len(run.schedule.stages) - 1:02d}.pt")]
    calls.clear()
    done = fake_run(cfg, step=80, eval_step=80)
    trainer.end_epoch(done, last)  # already evaluated at this very step: only the stage's own work
    assert [c[0] for c in calls] == ["bn", "save"]


def test_evaluation_points_advance_past_the_samples_seen():
    cfg = override(CFG, **{"train.eval_period_samples": 100})
    # 250 clips in the first step pass 100 and 200: one evaluation, the next at 300 (step 3), then the end
    steps = eval_steps(cfg.train, builders.build_schedule(cfg), [[250, 25, 25, 49, 10]])
    assert steps == [1, 3, 5]


@pytest.mark.parametrize("batches, clips, batch, world, expected", [
    (200, 0, 64, 1, 200),  # the reference: batches only, however large the stage batch
    (20, 160, 64, 1, 3),  # a coarse stage's big batch: the clip cap decides (ceil 160 / 64)
    (20, 160, 8, 1, 20),  # the full shape's batch: the batch count decides
    (20, 160, 4, 4, 10),  # clips are counted over all devices
    (0, 160, 8, 1, 0),  # precise BN off
])
def test_precise_bn_is_capped_by_batches_and_clips(batches, clips, batch, world, expected):
    cfg = override(CFG, **{"train.precise_bn_batches": batches, "train.precise_bn_clips": clips})
    assert trainer.precise_bn_batches(cfg.train, batch, world) == expected
