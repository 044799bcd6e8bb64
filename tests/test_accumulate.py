"""Any number of devices: the device plan (per-device batch, passes per step, LR scale); one device takes
the recipe's step of several devices in one pass, with the same BN groups; gradient accumulation makes one
process take the same steps as two."""

import gc
import json
import re
from pathlib import Path

import pytest
import torch
from test_distributed import train

from mgvideo.cli import main
from mgvideo.config import load_config
from mgvideo.engine import builders, trainer
from mgvideo.engine.checkpoint import model_state
from mgvideo.engine.device import device_plan
from mgvideo.engine.step import bn_plan
from mgvideo.errors import ConfigError
from mgvideo.multigrid.batchnorm import SubBatchNorm3d, set_bn_groups

RECIPE = "configs/kinetics/slowfast_r50_8x8_baseline.yaml"  # batch 64 and LR 0.1 on 8 devices
MULTIGRID = "configs/kinetics/slowfast_r50_8x8_multigrid.yaml"  # the same, batches up to 16x at coarse shapes


def plan(world, *overrides, recipe=RECIPE):
    cfg = load_config(recipe, list(overrides))
    return device_plan(cfg, world, builders.build_schedule(cfg))


def test_on_the_recipes_devices_the_batch_is_split():
    p = plan(8)
    assert (p.batch, p.micro_batches, p.global_batch, p.lr_scale) == (8, 1, 64, 1.0)


def test_fewer_devices_take_the_recipes_global_batch_and_lr_in_one_pass():
    p = plan(1)
    assert (p.batch, p.micro_batches, p.global_batch, p.lr_scale) == (64, 1, 64, 1.0)
    assert p.describe(0.1) == ("devices: 1 (recipe: 8, accumulate); per-device batch 64, 1 pass per step "
                               "(the recipe's 8 devices' global batch on 1; BN in groups of 8); global batch "
                               "64; base LR 0.1")
    two = plan(2, "solver.accumulate=2")  # explicit accumulation still splits the step
    assert (two.batch, two.micro_batches) == (32, 2)
    assert "per-device batch 32, 2 passes of 16 per step (solver.accumulate=2; " in two.describe(0.1)
    # Three devices need not divide the recipe's eight: each holds 16 of the 48 clips.
    assert (plan(3, "solver.batch_size=48").batch, plan(3, "solver.batch_size=48").micro_batches) == (16, 1)


@pytest.mark.parametrize("slot_batch", [64, 128, 256])  # the long-cycle batch, and short-cycle slots 2x, 4x
def test_one_pass_of_the_recipes_clips_normalises_in_the_recipes_groups(slot_batch):
    # One device holding 8 devices' 8 clips: bn_plan gives 8 groups, and group j (clips j, j + 8, ...)
    # is normalised exactly as the pass of clips j::8 alone, i.e. as one of the recipe's devices would.
    stage_batch = 64
    one = bn_plan(slot_batch, stage_batch, 8)
    recipe_device = bn_plan(slot_batch // 8, stage_batch // 8, 8, world_size=8)
    assert (one.groups, one.sync_size) == (8, 1) and recipe_device.plain
    assert slot_batch // one.groups == slot_batch // 8  # the same group size as the recipe's devices
    torch.manual_seed(0)
    x = torch.randn(slot_batch, 3, 2, 3, 3) * 2 + 1
    bn = SubBatchNorm3d(3).train()
    set_bn_groups(bn, one)
    together = bn(x)
    for j in range(8):
        alone = SubBatchNorm3d(3).train()
        set_bn_groups(alone, recipe_device)
        torch.testing.assert_close(together[j::8], alone(x[j::8]))


def test_fewer_devices_with_linear_lr_keep_the_per_device_batch():
    cfg = load_config(RECIPE, ["solver.device_scaling=linear_lr"])
    p = device_plan(cfg, 2)
    assert (p.batch, p.micro_batches, p.global_batch, p.lr_scale) == (8, 1, 16, 0.25)
    lr = builders.build_lr_config(cfg, p.lr_scale)
    assert (lr.base_lr, lr.warmup_start_lr) == pytest.approx((0.025, 0.0025))
    assert builders.build_lr_config(cfg, device_plan(cfg, 8).lr_scale).base_lr == pytest.approx(0.1)
    assert "base LR 0.025 (0.1 x 2/8, linear scaling)" in p.describe(0.1)


def test_more_devices_split_or_scale():
    assert (plan(16).batch, plan(16).lr_scale) == (4, 1.0)
    p = plan(16, "solver.device_scaling=linear_lr")
    assert (p.batch, p.global_batch, p.lr_scale) == (8, 128, 2.0)


def test_any_devices_without_a_recipe_count():
    p = plan(2, "solver.recipe_devices=0", "solver.accumulate=4")
    assert (p.batch, p.micro_batches, p.lr_scale) == (32, 4, 1.0)
    assert p.describe(0.1).startswith("devices: 2 (any); per-device batch 32, 4 passes of 8 per step "
                                      "(solver.accumulate=4; BN in groups of 8)")


def test_a_pass_limit_splits_the_largest_batch_into_the_fewest_passes():
    p = plan(1, "solver.max_clips_per_pass=16")  # the baseline: every batch is the 64 full-size clips
    assert (p.micro_batches, p.largest_batch) == (4, 64)
    assert "per-device batch 64, 4 passes of 16 per step (solver.max_clips_per_pass=16 at the largest " \
           "batch, 64 clips; the recipe's 8 devices' global batch on 1; BN in groups of 8)" in p.describe(0.1)
    assert plan(1, "solver.max_clips_per_pass=40").micro_batches == 2  # 64 / 2 = 32 <= 40 < 64
    assert plan(1, "solver.max_clips_per_pass=100").micro_batches == 1
    # Multigrid: the largest batch is stage 0's first short-cycle slot, 16 x 64 clips at 8 x 112^2; the
    # same pass count holds for every shape, so a full-size pass holds 64 / 8 clips.
    mg = plan(1, "solver.max_clips_per_pass=128", recipe=MULTIGRID)
    assert (mg.largest_batch, mg.micro_batches) == (1024, 8)
    assert plan(1, "solver.max_clips_per_pass=1024", recipe=MULTIGRID).micro_batches == 1
    assert plan(2, "solver.max_clips_per_pass=16", "solver.accumulate=2").micro_batches == 2  # 32 / 2


def test_a_pass_limit_may_not_change_the_bn_groups():
    # 16 passes of the 64 full-size clips would hold 4 clips each, fewer than a BN group of 8.
    bn_error = r"solver.max_clips_per_pass=64: 16 passes per step would normalise .* in BN groups of (\d+) "
    with pytest.raises(ConfigError, match=bn_error + r"clips instead of (\d+) \(model.bn_base_size\)"):
        plan(1, "solver.max_clips_per_pass=64", recipe=MULTIGRID)
    # Asked for explicitly, smaller groups are the user's choice.
    assert plan(1, "solver.accumulate=16", recipe=MULTIGRID).micro_batches == 16
    with pytest.raises(ConfigError, match="solver.max_clips_per_pass=8: the largest batch, 1024 clips per "
                                          "device, cannot be split below 16 clips a pass"):
        plan(1, "solver.max_clips_per_pass=8", recipe=MULTIGRID)


def test_a_plan_without_the_schedule_cannot_apply_a_pass_limit():
    cfg = load_config(RECIPE, ["solver.max_clips_per_pass=16"])
    p = device_plan(cfg, 1)  # batch and LR are known without it
    assert (p.batch, p.global_batch, p.lr_scale) == (64, 64, 1.0)
    with pytest.raises(ValueError, match="solver.max_clips_per_pass is set: .*schedule"):
        _ = p.micro_batches


def test_impossible_layouts_name_the_field():
    with pytest.raises(ConfigError, match="solver.accumulate: the per-device batch of 8 clips"):
        plan(8, "solver.accumulate=3")
    with pytest.raises(ConfigError, match="solver.batch_size .*divisible by the 3 devices"):
        plan(3, "solver.recipe_devices=0")
    with pytest.raises(ConfigError, match="solver.accumulate must be positive"):
        plan(8, "solver.accumulate=0")


@pytest.mark.slow
@pytest.mark.multiprocess
@pytest.mark.timeout(900)
def test_one_process_accumulating_takes_the_steps_of_two(tmp_path):
    # BN groups of 2 clips: two processes hold one group each; one process accumulating over 2 strided
    # micro-batches holds the same two groups in turn, with the same dropout draws. At this LR the setting
    # discriminates: without accumulation one process ends up to 31 % off in loss and 15 off in weights
    # (measured once, short cycle off).
    common = ("solver.batch_size=4", "model.bn_base_size=2", "solver.base_lr=0.05",
              "solver.warmup_start_lr=0.01", "model.options={width_per_group: 4, dropout: 0.3}",
              "multigrid.short_cycle=false")  # the coarsest batch, 2 x 8 clips per device, fits 20 clips
    weights_2, losses_2 = train(tmp_path / "two", 2, *common)
    weights_1, losses_1 = train(tmp_path / "one", 1, *common, "solver.accumulate=2")
    assert "2 passes of 2 per step" in (tmp_path / "one" / "launch.log").read_text()
    assert len(losses_1) == len(losses_2) > 5
    assert losses_1 == pytest.approx(losses_2, rel=1e-5)
    for key, value in weights_2.items():
        if value.is_floating_point():
            assert torch.allclose(weights_1[key], value, rtol=1e-3, atol=1e-4), key


def plan_output(capsys, *argv):
    assert main(["plan", "--config", "configs/kinetics/slowfast_r50_8x8_baseline.yaml", *argv]) == 0
    return capsys.readouterr().out


def iterations(out):
    return int(re.search(r"^iteration saving: .*\((\d+) iterations against", out, re.M)[1])


def test_plan_shows_batch_and_lr_for_n_devices(capsys):
    eight = plan_output(capsys, "--devices", "8")
    assert "devices: 8 (as the recipe); per-device batch 8, 1 pass per step; global batch 64; base LR 0.1" \
        in eight
    one = plan_output(capsys, "--devices", "1")
    assert ("per-device batch 64, 1 pass per step (the recipe's 8 devices' global batch on 1; BN in groups "
            "of 8); global batch 64; base LR 0.1") in one
    limited = plan_output(capsys, "--devices", "1", "solver.max_clips_per_pass=32")
    assert "per-device batch 64, 2 passes of 32 per step (solver.max_clips_per_pass=32 at the" in limited
    assert iterations(one) == iterations(eight)  # the same optimizer steps, accumulated
    two = plan_output(capsys, "--devices", "2", "solver.device_scaling=linear_lr")
    assert "global batch 16; base LR 0.025 (0.1 x 2/8, linear scaling)" in two
    assert "warmup: 0.0025 -> 0.025" in two
    assert iterations(two) == pytest.approx(4 * iterations(eight), rel=1e-3)
    flags = main(["plan", "--devices", "4", "--batch-size", "2"]) == 0 and capsys.readouterr().out
    assert "devices: 4; per-device batch 2, 1 pass per step; global batch 8; base LR 0.1" in flags


@pytest.mark.slow
def test_trainer_scales_the_lr_linearly_on_fewer_devices(tmp_path, capsys):
    tiny = Path(__file__).resolve().parents[1] / "configs" / "synthetic" / "tiny.yaml"
    cfg = load_config(tiny, [
        "solver.batch_size=4", "solver.recipe_devices=2", "solver.device_scaling=linear_lr",
        "multigrid.long_cycle=false", "multigrid.short_cycle=false", "solver.max_epoch=1", "solver.steps=[0]",
        "solver.warmup_epochs=0"])
    summary = trainer.train(cfg, tmp_path)
    assert summary["iterations"] == 20  # 40 clips, 2 per step: the recipe's per-device batch
    assert "global batch 2; base LR 0.025 (0.05 x 1/2, linear scaling)" in capsys.readouterr().out
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    train_records = [r for r in records if r["kind"] == "train"]  # one per shape and log period
    assert sum(r["iterations"] for r in train_records) == 20
    assert [r["lr"] for r in train_records] == pytest.approx([0.025] * len(train_records))


@pytest.mark.slow
def test_one_device_trains_the_recipes_step_of_two_in_one_pass(tmp_path, capsys):
    # The recipe: 4 clips on 2 devices. One device holds all 4 in one pass, in one BN group of 4 clips,
    # so it trains exactly as a run planned for any number of devices with the same batch (with 2 passes
    # of 2 clips, as before, BN saw 2 clips at a time: different numbers).
    tiny = Path(__file__).resolve().parents[1] / "configs" / "synthetic" / "tiny.yaml"
    common = ["solver.batch_size=4", "model.bn_base_size=4", "multigrid.long_cycle=false",
              "multigrid.short_cycle=false", "solver.max_epoch=1", "solver.steps=[0]",
              "solver.warmup_epochs=0"]
    recipe = trainer.train(load_config(tiny, [*common, "solver.recipe_devices=2"]), tmp_path / "recipe")
    assert "per-device batch 4, 1 pass per step (the recipe's 2 devices' global batch on 1; BN in groups " \
           "of 4); global batch 4" in capsys.readouterr().out
    plain = trainer.train(load_config(tiny, common), tmp_path / "plain")
    assert recipe["iterations"] == plain["iterations"] == 10  # 40 clips, 4 per step
    assert train_losses(tmp_path / "recipe") == train_losses(tmp_path / "plain")
    weights, same = (model_state(tmp_path / run / "model_final.pt") for run in ("recipe", "plain"))
    for key, value in same.items():
        assert torch.equal(weights[key], value), key


def train_losses(out: Path) -> list[float]:
    lines = (out / "metrics.jsonl").read_text().splitlines()
    return [r["loss"] for r in map(json.loads, lines) if r["kind"] == "train"]


def _count_all_reduces(rank: int, port: int, compiled: bool, out_dir: str) -> None:
    """Two gloo ranks, one DDP step of k = 2 micro-batches through the trainer's gradient_sync: count the
    gradient all-reduces with a DDP communication hook."""
    import torch.distributed as dist
    from torch import nn
    from torch.distributed.algorithms.ddp_comm_hooks.default_hooks import allreduce_hook

    from mgvideo.engine.step import gradient_sync

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    torch.manual_seed(0)
    ddp = nn.parallel.DistributedDataParallel(nn.Sequential(nn.Linear(6, 4), nn.ReLU(), nn.Linear(4, 3)))
    calls = []

    def hook(state, bucket):
        calls.append(bucket.index())
        return allreduce_hook(None, bucket)

    ddp.register_comm_hook(None, hook)
    model = torch.compile(ddp, backend="eager") if compiled else ddp  # eager: Dynamo's wrapper, no codegen
    x = torch.randn(4, 6) + rank
    for i in range(2):
        with gradient_sync(model, i == 1):
            model(x[i::2]).sum().backward()
    torch.save({"calls": calls, "grad": ddp.module[0].weight.grad}, f"{out_dir}/rank{rank}.pt")
    # Teardown in order: both ranks done communicating, the DDP reducer (which holds the group) gone, then
    # the group. Exiting with the reducer alive aborted a rank now and then ("terminate called without an
    # active exception").
    dist.barrier()
    del model, ddp
    gc.collect()
    dist.destroy_process_group()


@pytest.mark.multiprocess
@pytest.mark.timeout(180)
@pytest.mark.parametrize("compiled", [False, True])
def test_accumulating_ddp_all_reduces_once_per_step_compiled_or_not(tmp_path, compiled):
    import torch.multiprocessing as mp
    from test_distributed import free_port

    mp.spawn(_count_all_reduces, args=(free_port(), compiled, str(tmp_path)), nprocs=2, join=True)
    results = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    for res in results:
        assert len(res["calls"]) == len(set(res["calls"])) >= 1  # each bucket once: no sync in backward 1
    torch.testing.assert_close(results[0]["grad"], results[1]["grad"])  # and the step's sum was reduced
