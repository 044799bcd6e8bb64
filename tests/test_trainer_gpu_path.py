"""The GPU training path, exercised on the CPU: a step that never waits for the device, bf16 autocast with
fp32 BN statistics, one compiled graph per shape, and the shared worker pool."""

import json
from pathlib import Path

import pytest
import torch

from mgvideo.config import load_config
from mgvideo.data.loader import default_workers, resolve_workers
from mgvideo.engine import builders, checkpoint
from mgvideo.engine import run as engine_run
from mgvideo.engine.compile import compile_model, warmup_plans
from mgvideo.engine.run import build_run
from mgvideo.engine.step import step_settings
from mgvideo.engine.trainer import close_window, dropout_seeds, train, train_step
from mgvideo.multigrid.batchnorm import SubBatchNorm3d, bn_groups_for, set_bn_groups

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "configs" / "synthetic" / "tiny.yaml"
pytestmark = pytest.mark.slow


def tiny(*overrides):
    return load_config(TINY, [f"data.root={REPO / 'runs' / 'data' / 'synthetic_small'}", *overrides])


def test_steps_between_log_points_never_read_a_device_value(tmp_path, monkeypatch):
    run = build_run(tiny("train.amp=bf16", "data.workers=1"), tmp_path)
    assert run.data.precise.pool is run.data.val.pool  # one worker pool besides training's
    run.data.sampler.set_epoch(run.schedule.max_epoch - 1)  # a stage with several iterations
    reads = []

    def refuse(name):
        def read(self, *args):
            reads.append(name)
            raise AssertionError(f"Tensor.{name} syncs with the device")
        return read

    loaded = iter(run.data.loader)
    batches = [next(loaded) for _ in range(3)]  # the loader reads CPU tensors; the step must not
    with monkeypatch.context() as patch:
        for name in ("item", "tolist", "__bool__", "__float__", "__int__"):
            patch.setattr(torch.Tensor, name, refuse(name))
        for step, batch in enumerate(batches, 1):
            settings = step_settings(run.schedule, run.schedule.max_epoch - 1, batch.shape, len(batch),
                                     run.opt.lr_rule, run.cfg.model.bn_base_size)
            x = run.inputs(batch)
            loss, correct = train_step(run.opt, run.model, x.clips, x.labels, settings,
                                       dropout_seeds(0, step, run.info, run.opt.micro_batches))
            run.window.add(step, 0, x.clips, loss, correct, batch.skipped, 0.01, 0.1, 0.01)
    assert reads == []
    run.state.step = 3
    close_window(run)  # the one sync: the three iterations, in one record per shape
    run.log.close()
    records = [json.loads(r) for r in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    shapes = {tuple(b.clips.shape[2:4]) for b in batches}  # the short cycle: a shape per iteration
    assert len(records) == len(shapes) and sum(r["iterations"] for r in records) == 3
    assert {r["step"] for r in records} == {3} and all(r["batch"] > 0 for r in records)


def test_cpu_bf16_run_trains_and_evaluates(tmp_path):
    summary = train(tiny("train.amp=bf16"), tmp_path)
    assert summary["iterations"] == 28 and 0 <= summary["val"]["top1"] <= 100
    weights = torch.load(tmp_path / "model_final.pt", weights_only=True)
    assert all(v.dtype != torch.bfloat16 for v in weights.values())  # weights and BN stats stay fp32


@pytest.mark.parametrize("groups", [1, 4])
def test_bn_statistics_stay_fp32_under_bf16_autocast(groups):
    torch.manual_seed(0)
    x = (torch.randn(8, 6, 2, 4, 4) * 3 + 1).to(torch.bfloat16)
    amp, ref = SubBatchNorm3d(6), SubBatchNorm3d(6)
    set_bn_groups(amp, bn_groups_for(8, 8 * groups, bn_base_size=8))
    set_bn_groups(ref, bn_groups_for(8, 8 * groups, bn_base_size=8))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        amp(x)
    ref(x.float())  # the same bf16 values, normalised in fp32
    assert amp.running_mean.dtype == amp.running_var.dtype == torch.float32
    torch.testing.assert_close(amp.running_mean, ref.running_mean, rtol=0, atol=1e-6)
    torch.testing.assert_close(amp.running_var, ref.running_var, rtol=1e-6, atol=1e-6)


def test_compiled_model_compiles_once_per_shape_and_bn_plan_and_never_during_training():
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    # The long cycle alone keeps the test short: 4 shapes, each with its own BN groups (with the short
    # cycle too, a shape can recur in a later stage with other groups: a different graph, warmed up too).
    cfg = tiny("train.channels_last=false", "multigrid.short_cycle=false")
    schedule = builders.build_schedule(cfg)
    net = builders.build_network(cfg, 20)
    plans = warmup_plans(schedule, cfg, batch=2)
    assert len({p[:3] for p in plans}) == len({p[3] for p in plans}) == len(plans) == 4
    counters.clear()
    compiled = compile_model(net, net, schedule, cfg, 2, torch.device("cpu"), torch.bfloat16,
                             backend="eager")
    per_shape = counters["frames"]["ok"] / len(plans)
    assert per_shape == int(per_shape) >= 1  # the same frames compiled for every shape
    compiled_during_warmup = counters["frames"]["ok"]
    for b, frames, crop, plan in reversed(plans):  # training order does not matter
        set_bn_groups(net, plan)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            compiled(torch.randn(b, 3, frames, crop, crop)).float().sum().backward()
    assert counters["frames"]["ok"] == compiled_during_warmup  # no recompile in training
    b, frames, crop, plan = plans[0]
    compiled(torch.randn(b, 3, frames, crop, crop))  # without autocast: a new graph, and the count sees it
    assert counters["frames"]["ok"] > compiled_during_warmup
    torch._dynamo.reset()


def test_default_workers_share_the_cores_between_local_ranks(monkeypatch):
    assert default_workers(1, cores=16) == 15
    assert default_workers(8, cores=96) == 11
    assert default_workers(8, cores=8) == 1  # never 0: the main process would decode
    assert default_workers(1, cores=64) == 16  # capped
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")  # under torchrun: data.workers -1 follows the local ranks
    assert resolve_workers(-1) == default_workers(2) and resolve_workers(3) == 3


def test_fp16_scaler_state_round_trips_through_a_checkpoint(tmp_path):
    saved = torch.amp.GradScaler("cpu", init_scale=512.0, growth_interval=7)
    checkpoint.save({"scaler": saved.state_dict()}, tmp_path / "last.pt")
    state = checkpoint.load(tmp_path / "last.pt")["scaler"]  # weights_only load
    resumed = torch.amp.GradScaler("cpu")
    checkpoint.load_scaler_state(resumed, state, "last.pt")
    assert resumed.get_scale() == 512.0 and resumed.get_growth_interval() == 7
    off = torch.amp.GradScaler("cpu", enabled=False)  # bf16 and fp32 runs save an empty state
    assert off.state_dict() == {}
    checkpoint.load_scaler_state(resumed, off.state_dict(), "last.pt")  # nothing to restore: kept
    assert resumed.get_scale() == 512.0


def test_compiled_runs_use_torchs_compile_cache_outside_the_run_folder(tmp_path, monkeypatch):
    import os

    import torch._inductor.config as inductor_config

    seen = []
    monkeypatch.setattr(engine_run, "compile_model", lambda model, *args, **kw: seen.append(args) or model)
    monkeypatch.setattr(inductor_config, "fx_graph_cache", False)
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    run = build_run(tiny("train.compile=true"), tmp_path)
    run.log.close()
    # A resumed run on this machine finds the FX-graph cache of its first segment; generated code is never
    # read back from the run folder, which may come from elsewhere.
    assert inductor_config.fx_graph_cache is True
    assert "TORCHINDUCTOR_CACHE_DIR" not in os.environ and not (tmp_path / "compile_cache").exists()
    assert len(seen) == 1 and seen[0][-2] is None  # compiled under the run's precision (fp32 on the CPU)


def test_compiled_micro_batches_are_warmed_up_with_their_strides():
    """With gradient accumulation a forward takes every k-th clip of the step's batch; Dynamo guards on
    strides, so the warm-up must use the same strided inputs or training would compile again."""
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    cfg = tiny("train.channels_last=false", "multigrid.short_cycle=false")
    schedule = builders.build_schedule(cfg)
    net = builders.build_network(cfg, 20)
    counters.clear()
    compiled = compile_model(net, net, schedule, cfg, 2, torch.device("cpu"), None, backend="eager",
                             micro_batches=2)
    compiled_during_warmup = counters["frames"]["ok"]
    for b, frames, crop, plan in warmup_plans(schedule, cfg, batch=2, micro_batches=2):
        set_bn_groups(net, plan)
        step_batch = torch.randn(2 * b, 3, frames, crop, crop)
        for i in range(2):
            compiled(step_batch[i::2]).float().sum().backward()
    assert counters["frames"]["ok"] == compiled_during_warmup  # no recompile in training
    torch._dynamo.reset()
