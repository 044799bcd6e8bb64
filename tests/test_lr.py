"""The LR rule: reference warmup figures (spec §3), step values, cosine, rescaled warmup, bad input."""

from pathlib import Path

import pytest

from mgvideo.errors import ConfigError
from mgvideo.multigrid import LRConfig, MultigridConfig, MultigridSchedule, lr_at, set_lr

K400 = MultigridSchedule(MultigridConfig())
LR = LRConfig(base_lr=0.1, warmup_epochs=34, warmup_start_lr=0.01)


def test_kinetics_warmup_figures():
    assert lr_at(0, K400, LR) == pytest.approx(0.01)
    assert lr_at(17, K400, LR) == pytest.approx(0.405)
    assert lr_at(33.999, K400, LR) == pytest.approx(0.8, abs=1e-4)
    assert lr_at(34, K400, LR) == pytest.approx(0.8)


def test_step_values_after_warmup():
    expected = {50: 0.8, 73: 0.4, 120: 0.2, 150: 0.1, 160: 0.08, 300: 0.004, 330: 0.001, 343: 0.0001,
                357.9: 0.0001}
    for epoch, lr in expected.items():
        assert lr_at(epoch, K400, LR) == pytest.approx(lr), epoch


def test_baseline_warmup_reaches_base_lr():
    base = MultigridSchedule(MultigridConfig(long_cycle=False, short_cycle=False))
    assert lr_at(17, base, LR) == pytest.approx(0.055)
    assert lr_at(34, base, LR) == pytest.approx(0.1)
    assert lr_at(100, base, LR) == pytest.approx(0.01)


def test_rescaled_warmup_stretches_with_the_schedule():
    cfg = LRConfig(base_lr=0.1, warmup_epochs=34, warmup_start_lr=0.01, rescale_warmup=True)
    end = 34 * K400.max_epoch / 239
    assert lr_at(end / 2, K400, cfg) == pytest.approx(0.405)
    assert lr_at(34, K400, cfg) < 0.8
    assert lr_at(end, K400, cfg) == pytest.approx(0.8)


def test_no_warmup():
    cfg = LRConfig(base_lr=0.2, warmup_epochs=0, warmup_start_lr=0)
    assert lr_at(0, K400, cfg) == pytest.approx(1.6)


def test_cosine_lr_scales_with_stage_batch():
    s = MultigridSchedule(MultigridConfig(lr_policy="cosine", steps=(), max_epoch=196))
    cfg = LRConfig(base_lr=0.1, warmup_epochs=0, warmup_start_lr=0)
    lrs = [lr_at(st.start_epoch, s, cfg) / st.batch_factor for st in s.stages if st.epochs]
    assert lrs[0] == pytest.approx(0.1) and all(b < a for a, b in zip(lrs, lrs[1:]))
    assert lr_at(s.max_epoch, s, cfg) == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize(("kwargs", "field"), [({"base_lr": 0}, "base_lr"), ({"warmup_epochs": -1}, "warmup"),
                                               ({"warmup_start_lr": -0.1}, "warmup_start_lr")])
def test_bad_lr_config(kwargs, field):
    with pytest.raises(ConfigError, match=field):
        LRConfig(**kwargs)


def test_set_lr_writes_every_group():
    class Optimizer:
        param_groups = [{"lr": 1.0}, {"lr": 2.0}]

    opt = Optimizer()
    set_lr(opt, 0.3)
    assert [g["lr"] for g in opt.param_groups] == [0.3, 0.3]


def test_a_warmup_longer_than_the_run_is_an_error():
    # LRConfig's default warmup is the Kinetics recipe's 34 epochs: on a 15-epoch run the whole run would
    # ramp from warmup_start_lr without ever reaching the schedule's LR.
    schedule = MultigridSchedule(MultigridConfig(frames=8, crop=32, steps=(0, 6, 9), max_epoch=10))
    assert schedule.max_epoch == 15
    with pytest.raises(ConfigError, match=r"warmup of 34 epochs .* longer than the 15-epoch"):
        lr_at(0.0, schedule, LRConfig(base_lr=0.01))
    assert lr_at(0.0, schedule, LRConfig(base_lr=0.01, warmup_epochs=1, warmup_start_lr=0.001)) == 0.001


def test_the_trainer_refuses_a_warmup_longer_than_the_run(tmp_path, capsys):
    from mgvideo.cli import main

    tiny = Path(__file__).resolve().parents[1] / "configs" / "synthetic" / "tiny.yaml"
    assert main(["train", str(tiny), "--out", str(tmp_path / "run"), "solver.warmup_epochs=34"]) == 2
    assert "error: solver.warmup_epochs: the warmup of 34 epochs" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()
