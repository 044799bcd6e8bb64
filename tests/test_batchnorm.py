"""Sub-batch BN: per-group equivalence, running-stat folding, plans, checkpoints."""

import pytest
import torch
from torch import nn

from mgvideo.errors import ConfigError
from mgvideo.multigrid.batchnorm import (
    BNPlan,
    SubBatchNorm3d,
    bn_groups_for,
    convert_model,
    set_bn_groups,
)


def _random_bn(channels: int, seed: int = 0) -> SubBatchNorm3d:
    gen = torch.Generator().manual_seed(seed)
    bn = SubBatchNorm3d(channels, momentum=0.3)
    with torch.no_grad():
        bn.weight.copy_(torch.rand(channels, generator=gen) + 0.5)
        bn.bias.copy_(torch.randn(channels, generator=gen))
        bn.running_mean.copy_(torch.randn(channels, generator=gen))
        bn.running_var.copy_(torch.rand(channels, generator=gen) + 0.5)
    return bn


@pytest.mark.parametrize(
    "groups, shape",
    [(1, (4, 3, 2, 3, 3)), (2, (4, 3, 3, 5, 7)), (3, (6, 2, 1, 3, 5)), (4, (8, 5, 5, 1, 1)),
     (4, (16, 2, 3, 3, 3))],
)
def test_groups_match_batchnorm_on_each_group(groups, shape):
    torch.manual_seed(1)
    sub = _random_bn(shape[1])
    sub.groups = groups
    x = (torch.randn(shape) * 3 + 1).requires_grad_()
    grad_out = torch.randn(shape)
    (sub(x) * grad_out).sum().backward()
    out = sub(x.detach())

    x_ref = x.detach().clone().requires_grad_()
    out_ref = torch.empty(shape)
    weight_grad = torch.zeros(shape[1])
    bias_grad = torch.zeros(shape[1])
    for j in range(groups):  # group j holds clips j, j + groups, ...
        bn = nn.BatchNorm3d(shape[1])
        bn.load_state_dict(_random_bn(shape[1]).state_dict())
        y = bn(x_ref[j::groups])
        (y * grad_out[j::groups]).sum().backward()
        out_ref[j::groups] = y.detach()
        weight_grad += bn.weight.grad
        bias_grad += bn.bias.grad
    torch.testing.assert_close(out, out_ref, atol=1e-5, rtol=0)
    torch.testing.assert_close(x.grad, x_ref.grad, atol=1e-5, rtol=0)
    torch.testing.assert_close(sub.weight.grad, weight_grad, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(sub.bias.grad, bias_grad, atol=1e-5, rtol=1e-5)


def test_channels_last_input_gives_channels_last_output_with_the_same_values():
    torch.manual_seed(2)
    sub = _random_bn(5)
    sub.groups = 4
    x = torch.randn(8, 5, 3, 4, 6)
    y = sub(x.contiguous(memory_format=torch.channels_last_3d))
    assert y.is_contiguous(memory_format=torch.channels_last_3d)  # the next conv stays on its fast path
    same = _random_bn(5)
    same.groups = 4
    torch.testing.assert_close(y, same(x))


@pytest.mark.parametrize("momentum", [0.3, None])
def test_running_stats_follow_total_variance_formula(momentum):
    torch.manual_seed(2)
    groups, shape = 4, (8, 3, 3, 5, 5)
    sub = _random_bn(3)
    sub.momentum, sub.groups = momentum, groups
    old_mean, old_var = sub.running_mean.clone(), sub.running_var.clone()
    sub.num_batches_tracked.fill_(3)
    x = torch.randn(shape) * torch.tensor([1.0, 4.0, 0.5]).view(1, 3, 1, 1, 1) + torch.randn(8, 3, 1, 1, 1)
    sub(x)

    per_group = x.double().view(-1, groups, *shape[1:]).transpose(0, 1).transpose(1, 2).reshape(groups, 3, -1)
    means = per_group.mean(2)  # (groups, C)
    variances = per_group.var(2, correction=0)
    n = per_group.shape[2] * groups
    mean = means.mean(0)
    var = (variances.mean(0) + means.var(0, correction=0)) * n / (n - 1)
    factor = 1 / 4 if momentum is None else momentum
    assert int(sub.num_batches_tracked) == 4
    expected_mean = (1 - factor) * old_mean.double() + factor * mean
    expected_var = (1 - factor) * old_var.double() + factor * var
    torch.testing.assert_close(sub.running_mean.double(), expected_mean, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(sub.running_var.double(), expected_var, atol=1e-6, rtol=1e-6)

    plain = nn.BatchNorm3d(3, momentum=momentum)  # equal groups: the fold is the whole batch's statistics
    plain.load_state_dict({**sub.state_dict(), "running_mean": old_mean, "running_var": old_var,
                           "num_batches_tracked": torch.tensor(3)})
    plain(x)
    torch.testing.assert_close(sub.running_mean, plain.running_mean)
    torch.testing.assert_close(sub.running_var, plain.running_var)


def test_state_dict_round_trips_with_batchnorm3d():
    sub = _random_bn(6)
    sub.num_batches_tracked.fill_(7)
    plain = nn.BatchNorm3d(6)
    plain.load_state_dict(sub.state_dict())  # strict: same keys and shapes
    for key, value in sub.state_dict().items():
        assert torch.equal(plain.state_dict()[key], value), key
    back = SubBatchNorm3d(6)
    back.load_state_dict(plain.state_dict())
    assert list(back.state_dict()) == list(plain.state_dict())
    for key, value in plain.state_dict().items():
        assert torch.equal(back.state_dict()[key], value), key


def _net() -> nn.Sequential:
    return nn.Sequential(nn.Conv3d(3, 4, 3, padding=1), nn.BatchNorm3d(4), nn.ReLU(),
                         nn.Sequential(nn.Conv3d(4, 5, (1, 3, 3)), nn.BatchNorm3d(5)))


def test_convert_model_keeps_weights_stats_and_eval_outputs():
    torch.manual_seed(3)
    net = _net()
    for _ in range(3):  # give the BN layers non-trivial running statistics
        net(torch.randn(4, 3, 3, 7, 7))
    net.eval()
    x = torch.randn(2, 3, 3, 7, 7)
    before, keys, params = net(x), list(net.state_dict()), list(net.parameters())
    converted = convert_model(net, bn_base_size=4)
    assert converted is net
    assert [type(m) for m in net.modules() if isinstance(m, nn.BatchNorm3d)] == [SubBatchNorm3d] * 2
    assert not net[1].training
    assert list(net.state_dict()) == keys
    assert all(a is b for a, b in zip(net.parameters(), params))  # an optimiser built earlier still works
    assert set_bn_groups(net, BNPlan(groups=2)) == 2
    torch.testing.assert_close(net(x), before, atol=0, rtol=0)
    assert isinstance(convert_model(nn.BatchNorm3d(2)), SubBatchNorm3d)


def test_eval_mode_is_plain_batchnorm():
    sub = _random_bn(3)
    sub.groups = 4
    plain = nn.BatchNorm3d(3).eval()
    plain.load_state_dict(sub.state_dict())
    sub.eval()
    x = torch.randn(8, 3, 3, 5, 5)
    torch.testing.assert_close(sub(x), plain(x), atol=0, rtol=0)
    torch.testing.assert_close(sub.running_mean, plain.running_mean)


def test_indivisible_batch_raises_and_planner_falls_back():
    sub = _random_bn(2)
    sub.groups = 4
    with pytest.raises(ConfigError, match="6 clips cannot be split into 4"):
        sub(torch.randn(6, 2, 1, 2, 2))
    assert bn_groups_for(30, 32, 8) == BNPlan(groups=3)  # last partial batch: 3 groups of 10
    assert bn_groups_for(13, 16, 8) == BNPlan(groups=1)


@pytest.mark.parametrize(
    "batch, stage_batch, world, fixed, expected",
    [
        (64, 64, 8, False, BNPlan(groups=8)),  # K400 stage 0: sub-BN x8
        (256, 64, 8, False, BNPlan(groups=8)),  # short-cycle x4 batch: still 8 groups, of 32 clips
        (256, 64, 8, True, BNPlan(groups=32)),  # fixed group size: groups of 8
        (8, 8, 8, False, BNPlan()),  # stage 3: plain BN
        (32, 8, 8, False, BNPlan()),  # short cycle at stage 3: plain BN over 32 clips
        (32, 8, 8, True, BNPlan(groups=4)),
        (4, 4, 8, False, BNPlan(sync_size=2)),  # Charades per-GPU 4: syncBN over 2 devices
        (16, 4, 8, False, BNPlan(sync_size=2)),  # short-cycle batch keeps the reference's sync
        (16, 4, 8, True, BNPlan(groups=2)),
        (2, 2, 8, False, BNPlan(sync_size=4)),
        (3, 3, 8, False, BNPlan(sync_size=2)),  # 8 // 3 devices
        (2, 2, 6, False, BNPlan(sync_size=3)),  # 4 does not divide 6: largest divisor below it
        (2, 2, 1, False, BNPlan()),  # one device cannot sync: plain BN
        (12, 12, 8, False, BNPlan()),  # int(12 / 8) = 1 split, as the reference
    ],
)
def test_bn_groups_for(batch, stage_batch, world, fixed, expected):
    assert bn_groups_for(batch, stage_batch, 8, world, fixed) == expected


def test_bad_plans_name_the_field():
    with pytest.raises(ConfigError, match="bn_base_size"):
        bn_groups_for(8, 8, 0)
    with pytest.raises(ConfigError, match="stage_batch"):
        bn_groups_for(8, 2.5)
    with pytest.raises(ConfigError, match="cannot both"):
        BNPlan(groups=2, sync_size=2)
    with pytest.raises(ConfigError, match="convert_model"):
        set_bn_groups(nn.Sequential(nn.BatchNorm3d(2)), BNPlan(groups=2))
    with pytest.raises(ConfigError, match="torch.distributed"):
        set_bn_groups(convert_model(_net()), BNPlan(sync_size=2))


def _full_size_copies(fn, numel: int) -> list[str]:
    """The copying aten ops (copy_, clone, _to_copy, contiguous) that `fn` runs on full-size tensors."""
    from torch.utils._python_dispatch import TorchDispatchMode

    copying = {"copy_", "clone", "_to_copy", "contiguous", "_reshape_copy"}
    seen = []

    class Watch(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            full = isinstance(out, torch.Tensor) and out.numel() >= numel
            if full and func.overloadpacket.__name__ in copying:
                seen.append(str(func))
            return out

    with Watch():
        fn()
    return seen


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_channels_last_groups_make_no_full_size_copy_and_match_per_group_bn(dtype):
    torch.manual_seed(3)
    shape, groups = (8, 6, 3, 4, 5), 4
    x = (torch.randn(shape) * 2 + 3).to(dtype).contiguous(memory_format=torch.channels_last_3d)
    grad_out = torch.randn(shape).to(dtype).contiguous(memory_format=torch.channels_last_3d)
    sub = _random_bn(6)
    sub.groups = groups
    x.requires_grad_()

    def step():
        y = sub(x)
        y.backward(grad_out)
        return y

    assert _full_size_copies(step, x.numel()) == []  # plain BatchNorm3d makes none either
    y = sub(x.detach().requires_grad_())  # values: against BatchNorm3d on each group, in fp32
    assert y.is_contiguous(memory_format=torch.channels_last_3d) and y.dtype == dtype
    ref_x = x.detach().float().requires_grad_()
    ref_out = torch.empty(shape)
    for j in range(groups):
        bn = nn.BatchNorm3d(6)
        bn.load_state_dict(_random_bn(6).state_dict())
        part = bn(ref_x[j::groups])
        (part * grad_out[j::groups].float()).sum().backward()
        ref_out[j::groups] = part.detach()
    tol = {"atol": 1e-5, "rtol": 0} if dtype == torch.float32 else {"atol": 0.05, "rtol": 0.02}
    torch.testing.assert_close(y.float(), ref_out, **tol)
    torch.testing.assert_close(x.grad.float(), ref_x.grad, **tol)


def test_groups_of_a_strided_micro_batch_match():
    # A micro-batch holds every k-th clip of the step's batch: a non-contiguous view of its clips.
    torch.manual_seed(4)
    whole = torch.randn(8, 3, 2, 3, 3).contiguous(memory_format=torch.channels_last_3d)
    sub, same = _random_bn(3), _random_bn(3)
    sub.groups = same.groups = 2
    y = sub(whole[1::2])
    assert y.is_contiguous(memory_format=torch.channels_last_3d)
    torch.testing.assert_close(y, same(whole[1::2].contiguous()))
