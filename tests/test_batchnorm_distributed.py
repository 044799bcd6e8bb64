"""Cross-device BN on 2 gloo processes equals one BN over the concatenated batch; precise BN across ranks."""

import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from test_distributed import free_port
from torch import nn

from mgvideo.engine import distributed as D
from mgvideo.multigrid.batchnorm import (
    BNPlan,
    SubBatchNorm3d,
    bn_groups_for,
    convert_model,
    set_bn_groups,
)
from mgvideo.multigrid.precise_bn import update_bn_stats

WORLD = 2
SHAPE = (6, 3, 3, 5, 7)  # the whole batch; rank r holds clips 3r .. 3r + 2
CHANNELS = SHAPE[1]


def _data() -> dict:
    gen = torch.Generator().manual_seed(0)
    return {
        "x": torch.randn(SHAPE, generator=gen) * 2 + 1,
        "grad_out": torch.randn(SHAPE, generator=gen),
        "weight": torch.rand(CHANNELS, generator=gen) + 0.5,
        "bias": torch.randn(CHANNELS, generator=gen),
        "precise": [torch.randn(2 + r, CHANNELS, 2, 3, 3, generator=gen) * (r + 1) + r for r in range(WORLD)],
    }


def _bn(cls: type, data: dict) -> nn.BatchNorm3d:
    bn = cls(CHANNELS, momentum=0.5)
    with torch.no_grad():
        bn.weight.copy_(data["weight"])
        bn.bias.copy_(data["bias"])
    return bn


def _worker(rank: int, port: int, out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD)
    data = _data()
    per_rank = SHAPE[0] // WORLD
    local = slice(rank * per_rank, (rank + 1) * per_rank)

    model = convert_model(nn.Sequential(_bn(nn.BatchNorm3d, data)), bn_base_size=6)
    plan = bn_groups_for(per_rank, per_rank, bn_base_size=6, world_size=WORLD)
    set_bn_groups(model, plan)
    x = data["x"][local].clone().requires_grad_()
    out = model(x)
    (out * data["grad_out"][local]).sum().backward()
    bn = model[0]
    param_grads = torch.stack([bn.weight.grad, bn.bias.grad])
    dist.all_reduce(param_grads)  # what DDP would do (up to its 1/world scaling)

    set_bn_groups(model, BNPlan())  # switching back to local BN needs no collective
    model(x.detach())

    precise = _bn(nn.BatchNorm3d, data)
    update_bn_stats(precise, [data["precise"][rank]], average_across_ranks=True)
    torch.save({"plan": plan, "out": out.detach(), "x_grad": x.grad, "param_grads": param_grads,
                "running": (bn.running_mean, bn.running_var), "tracked": bn.num_batches_tracked,
                "precise": (precise.running_mean, precise.running_var)},
               os.path.join(out_dir, f"rank{rank}.pt"))
    D.leave()  # the teardown that leaves nothing holding the group (an abort at exit otherwise)


@pytest.mark.multiprocess
@pytest.mark.timeout(120)
def test_cross_device_bn_matches_single_process_bn(tmp_path):
    mp.spawn(_worker, args=(free_port(), str(tmp_path)), nprocs=WORLD, join=True)
    results = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(WORLD)]
    data = _data()
    ref = _bn(nn.BatchNorm3d, data)
    x = data["x"].clone().requires_grad_()
    out = ref(x)
    (out * data["grad_out"]).sum().backward()

    per_rank = SHAPE[0] // WORLD
    for rank, res in enumerate(results):
        local = slice(rank * per_rank, (rank + 1) * per_rank)
        assert res["plan"] == BNPlan(sync_size=2)
        torch.testing.assert_close(res["out"], out.detach()[local], atol=1e-5, rtol=0)
        torch.testing.assert_close(res["x_grad"], x.grad[local], atol=1e-5, rtol=0)
        torch.testing.assert_close(res["param_grads"], torch.stack([ref.weight.grad, ref.bias.grad]),
                                   atol=1e-5, rtol=1e-5)
        assert int(res["tracked"]) == 2

    # The synced step recorded the whole batch's statistics on every rank; the local step each rank's own.
    for rank, res in enumerate(results):
        local = _bn(SubBatchNorm3d, data)
        local.load_state_dict(ref.state_dict())
        local(data["x"][rank * per_rank:(rank + 1) * per_rank])
        torch.testing.assert_close(res["running"][0], local.running_mean, atol=1e-6, rtol=1e-6)
        torch.testing.assert_close(res["running"][1], local.running_var, atol=1e-6, rtol=1e-6)

    values = torch.cat([b.transpose(0, 1).reshape(CHANNELS, -1) for b in data["precise"]], 1).double()
    for res in results:
        torch.testing.assert_close(res["precise"][0].double(), values.mean(1), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(res["precise"][1].double(), values.var(1), atol=1e-5, rtol=1e-5)


PAIRS = 4  # ranks; BN statistics pooled over ranks {0, 1} and {2, 3}: groups from dist.new_group


def _pairs_worker(rank: int, port: int, out_dir: str) -> None:
    import gc
    import weakref

    from mgvideo.multigrid.batchnorm import sync_group

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=PAIRS)
    x = torch.randn(2 * PAIRS, CHANNELS, 2, 3, 3, generator=torch.Generator().manual_seed(5)) * 2 + 1
    model = convert_model(nn.Sequential(nn.BatchNorm3d(CHANNELS)), bn_base_size=4)
    plan = bn_groups_for(2, 2, bn_base_size=4, world_size=PAIRS)  # 2 clips a rank, groups of 4 clips
    set_bn_groups(model, plan)
    mine = x[2 * rank:2 * rank + 2].clone().requires_grad_()
    out = model(mine)
    out.sum().backward()  # `out` and its graph stay alive below, as a caller's would
    group = weakref.ref(sync_group(2))
    D.leave()  # the teardown: no cached group, no graph, may keep the process group alive
    gc.collect()
    torch.save({"plan": plan, "out": out.detach(), "group_alive": group() is not None},
               os.path.join(out_dir, f"rank{rank}.pt"))


@pytest.mark.multiprocess
@pytest.mark.timeout(180)
def test_bn_pooled_over_pairs_of_four_ranks_and_torn_down_cleanly(tmp_path):
    mp.spawn(_pairs_worker, args=(free_port(), str(tmp_path)), nprocs=PAIRS, join=True)
    x = torch.randn(2 * PAIRS, CHANNELS, 2, 3, 3, generator=torch.Generator().manual_seed(5)) * 2 + 1
    for rank in range(PAIRS):
        res = torch.load(tmp_path / f"rank{rank}.pt", weights_only=False)
        assert res["plan"] == BNPlan(sync_size=2)
        pair = rank // 2
        expected = nn.BatchNorm3d(CHANNELS)(x[4 * pair:4 * pair + 4])[2 * (rank % 2):2 * (rank % 2) + 2]
        torch.testing.assert_close(res["out"], expected.detach(), atol=1e-5, rtol=0)  # the pair, not WORLD
        assert not res["group_alive"]  # nothing outlives destroy_process_group (the abort at exit)
