"""The optimizer (engine/optim.py): SGD or AdamW, weight-decay exclusions, layer-wise LR decay, and the
multigrid LR rule's square-root option (multigrid/lr.py)."""

import pytest
import torch

from mgvideo.config import load_config, override
from mgvideo.engine.builders import build_lr_config, build_schedule
from mgvideo.engine.optim import build_optimizer
from mgvideo.errors import ConfigError
from mgvideo.models import build_model
from mgvideo.multigrid.lr import LRConfig, lr_at, set_lr
from mgvideo.multigrid.schedule import MultigridConfig, MultigridSchedule

VIT = {"model.name": "vit_tiny", "model.options": {"embed_dim": 32, "depth": 3, "num_heads": 2}}


def config(**dotted):
    return override(load_config(None), **dotted)


def groups_by_param(optimizer):
    return {id(p): g for g in optimizer.param_groups for p in g["params"]}


def test_sgd_is_the_default_with_one_decay_and_one_no_decay_group():
    model = build_model("r3d_tiny", 5)
    opt = build_optimizer(model, config(**{"solver.bn_weight_decay": False}))
    assert type(opt) is torch.optim.SGD and opt.defaults["nesterov"]
    assert [g["weight_decay"] for g in opt.param_groups] == [1e-4, 0.0]
    by_param = groups_by_param(opt)
    assert all(by_param[id(p)]["weight_decay"] == (0.0 if p.ndim <= 1 else 1e-4) for p in model.parameters())
    assert len(build_optimizer(model, config()).param_groups) == 1  # bn_weight_decay true: all decay


def test_adamw_excludes_biases_and_norms_from_weight_decay():
    cfg = config(**VIT, **{"solver.optimizer": "adamw", "solver.betas": [0.9, 0.95], "solver.nesterov": False,
                           "solver.weight_decay": 0.05, "solver.bn_weight_decay": False})
    model = build_model("vit_tiny", 5, **cfg.model.options)
    opt = build_optimizer(model, cfg)
    assert type(opt) is torch.optim.AdamW and opt.defaults["betas"] == (0.9, 0.95)
    by_param = groups_by_param(opt)
    for name, p in model.named_parameters():
        excluded = name.endswith(("bias", "_bias")) or "norm" in name
        assert by_param[id(p)]["weight_decay"] == (0.0 if excluded else 0.05), name


def test_layer_decay_scales_the_lr_by_depth_and_set_lr_applies_it():
    cfg = config(**VIT, **{"solver.optimizer": "adamw", "solver.layer_decay": 0.5, "solver.nesterov": False})
    model = build_model("vit_tiny", 5, **cfg.model.options)
    opt = build_optimizer(model, cfg)
    set_lr(opt, 0.1)
    by_param = groups_by_param(opt)
    lr = {name: by_param[id(p)]["lr"] for name, p in model.named_parameters()}
    assert lr["head.weight"] == lr["fc_norm.weight"] == pytest.approx(0.1)
    assert lr["blocks.2.attn.qkv.weight"] == pytest.approx(0.1 * 0.5)  # the last of 3 blocks
    assert lr["blocks.0.mlp.fc1.bias"] == pytest.approx(0.1 * 0.5**3)
    assert lr["patch_embed.proj.weight"] == pytest.approx(0.1 * 0.5**4)
    state = opt.state_dict()  # the scales survive a resume
    fresh = build_optimizer(model, cfg)
    fresh.load_state_dict(state)
    assert [g["lr_scale"] for g in fresh.param_groups] == [g["lr_scale"] for g in opt.param_groups]


def test_layer_decay_needs_a_vit_and_bad_values_are_refused():
    with pytest.raises(ConfigError, match="solver.layer_decay=0.75 needs a model with layers"):
        build_optimizer(build_model("r3d_tiny", 5), config(**{"solver.layer_decay": 0.75}))
    with pytest.raises(ConfigError, match="solver.layer_decay must be in"):
        config(**{"solver.layer_decay": 0.0})
    with pytest.raises(ConfigError, match="solver.betas"):
        config(**{"solver.betas": [0.9]})
    with pytest.raises(ConfigError, match="solver.optimizer"):
        config(**{"solver.optimizer": "lamb"})
    with pytest.raises(ConfigError, match="lr_batch_scaling"):
        config(**{"solver.lr_batch_scaling": "cubic"})


@pytest.mark.parametrize("rule, power", [("sqrt", 0.5), ("none", 1.0)])
def test_sqrt_and_none_lr_scaling_divide_the_linear_lr_by_a_power_of_the_batch_factor(rule, power):
    schedule = MultigridSchedule(MultigridConfig())
    linear, scaled = LRConfig(warmup_epochs=0), LRConfig(warmup_epochs=0, batch_scaling=rule)
    factors = set()
    for epoch in [e + 0.5 for e in range(schedule.max_epoch)]:
        factor = schedule.stage_at(epoch).batch_factor
        factors.add(factor)
        assert lr_at(epoch, schedule, scaled) == pytest.approx(lr_at(epoch, schedule, linear) / factor**power)
    assert factors == {1, 2, 4, 8}
    baseline = MultigridSchedule(MultigridConfig(long_cycle=False))
    for epoch in (0.0, 100.0, 230.0):  # no long cycle: nothing to scale
        assert lr_at(epoch, baseline, scaled) == lr_at(epoch, baseline, linear)


def test_the_config_key_reaches_the_lr_rule():
    cfg = config(**{"solver.lr_batch_scaling": "sqrt"})
    assert build_lr_config(cfg).batch_scaling == "sqrt"
    schedule = build_schedule(cfg)
    assert lr_at(1.0, schedule, build_lr_config(cfg)) < lr_at(1.0, schedule, build_lr_config(config()))


@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])
def test_a_fused_optimizer_takes_an_fp16_scaled_step_without_reading_the_device(optimizer, monkeypatch):
    # GradScaler.step reads found_inf on the host (a sync per step) unless the optimizer is fused; the
    # trainer asks for fused on CUDA. Here on the CPU, whose fused kernels torch has too.
    from mgvideo.engine.step import Optimization, optimizer_step

    reads = []
    for fused in (False, True):
        model = torch.nn.Linear(4, 3)
        opt = Optimization(model, build_optimizer(model, config(**{"solver.optimizer": optimizer}), fused),
                           torch.amp.GradScaler("cpu", enabled=True), torch.nn.CrossEntropyLoss(),
                           torch.float16, LRConfig(base_lr=0.1))
        opt.scaler.scale(model(torch.randn(2, 4)).sum()).backward()
        with monkeypatch.context() as patch:
            for name, method in [(n, getattr(torch.Tensor, n)) for n in ("item", "tolist", "__bool__")]:
                def read(self, *args, name=name, method=method, fused=fused):
                    reads.append((fused, name))  # a host read of a device value: a sync on CUDA
                    return method(self, *args)
                patch.setattr(torch.Tensor, name, read)
            optimizer_step(opt)
        assert opt.optimizer.defaults.get("fused") is (True if fused else None)
    assert reads and all(not fused for fused, _ in reads)  # the unfused step read; the fused one did not
