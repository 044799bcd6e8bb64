"""Precise BN: exact population statistics over training batches, whatever the BN grouping."""

import pytest
import torch
from torch import nn

from mgvideo.errors import ConfigError
from mgvideo.multigrid.batchnorm import BNPlan, convert_model, set_bn_groups
from mgvideo.multigrid.precise_bn import update_bn_stats


def _net() -> nn.Sequential:
    return nn.Sequential(nn.Conv3d(3, 4, 3, padding=1), nn.BatchNorm3d(4), nn.ReLU(),
                         nn.Sequential(nn.Conv3d(4, 5, (1, 3, 3)), nn.BatchNorm3d(5)))




def _bn_inputs(model: nn.Module, batches) -> dict:
    """Every BN layer's inputs over ``batches``, concatenated per channel (float64)."""
    seen: dict = {}
    hooks = [m.register_forward_pre_hook(lambda m, i: seen.setdefault(m, []).append(i[0].detach()))
             for m in model.modules() if isinstance(m, nn.BatchNorm3d)]
    with torch.no_grad():
        for x in batches:
            model(x)
    for h in hooks:
        h.remove()
    return {m: torch.cat([x.transpose(0, 1).reshape(x.shape[1], -1) for x in xs], 1).double()
            for m, xs in seen.items()}


def _mean_of_batch_variances(layer: nn.Module, net: nn.Module, batches) -> torch.Tensor:
    return torch.stack([_bn_inputs(net, [x])[layer].var(1) for x in batches]).mean(0)


def test_precise_bn_gives_exact_population_statistics():
    torch.manual_seed(4)
    net = convert_model(_net(), bn_base_size=2)
    set_bn_groups(net, BNPlan(groups=2))
    batches = [torch.randn(b, 3, 3, 7, 7) * s + s for b, s in [(4, 1.0), (6, 3.0), (2, 0.5), (4, 9.0)]]
    net.eval()
    tracked = net[1].num_batches_tracked.clone()
    drawn = []
    used = update_bn_stats(net, (drawn.append(x) or x for x in batches), num_batches=3)
    assert used == 3 and len(drawn) == 3  # no fourth batch pulled from the iterator
    assert not net.training and torch.equal(net[1].num_batches_tracked, tracked)

    stats = {m: (m.running_mean.double(), m.running_var.double()) for m in (net[1], net[3][1])}
    expected = _bn_inputs(net.train(), batches[:3])  # train-mode outputs ignore the running stats
    assert set(expected) == set(stats)
    for layer, values in expected.items():
        torch.testing.assert_close(stats[layer][0], values.mean(1), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(stats[layer][1], values.var(1), atol=1e-5, rtol=1e-5)
        # fvcore's average of per-batch variances leaves out the spread of the batch means
        fvcore_var = _mean_of_batch_variances(layer, net, batches[:3])
        assert not torch.allclose(stats[layer][1], fvcore_var, rtol=1e-3)


def test_precise_bn_rejects_empty_input():
    with pytest.raises(ConfigError, match="no batch"):
        update_bn_stats(_net(), [], 10)
    with pytest.raises(ConfigError, match="num_batches"):
        update_bn_stats(_net(), [torch.randn(2, 3, 3, 5, 5)], 0)
