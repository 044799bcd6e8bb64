"""`train.compile`: torch.compile without dynamic shapes, warmed up on every forward the run will see, and
torch's on-disk compile cache."""

from __future__ import annotations

import torch
from torch import nn

from mgvideo.config import Config
from mgvideo.engine.step import backward, bn_plan, precision
from mgvideo.multigrid.batchnorm import BNPlan, set_bn_groups
from mgvideo.multigrid.schedule import MultigridSchedule


def compile_model(model: nn.Module, net: nn.Module, schedule: MultigridSchedule, cfg: Config, batch: int,
                  device: torch.device, amp_dtype: torch.dtype | None, world_size: int = 1,
                  micro_batches: int = 1, backend: str = "inductor") -> nn.Module:
    """`torch.compile(model)`, warmed up on every distinct forward of the run (`warmup_plans`).

    Each compiles here rather than mid-training: the warm-up sets each forward's BN plan and runs it under
    the step's `precision`, by the step context's own definitions, so that training meets only graphs
    whose guards it already passed. The cache limit is raised to hold them all. `batch` is the per-device
    step batch; with k `micro_batches` a forward takes every k-th clip of the step's batch, so the warm-up
    inputs have those strides too (Dynamo guards on them). Weights, BN statistics and gradients of `net`
    are left as they were.
    """
    import torch._dynamo

    plans = warmup_plans(schedule, cfg, batch, world_size, micro_batches)
    limit = 2 * len(plans) + 2
    torch._dynamo.config.cache_size_limit = max(torch._dynamo.config.cache_size_limit, limit)
    if hasattr(torch._dynamo.config, "accumulated_cache_size_limit"):  # 2.2+: the total over all frames
        torch._dynamo.config.accumulated_cache_size_limit = max(
            torch._dynamo.config.accumulated_cache_size_limit, limit)
    compiled = torch.compile(model, dynamic=False, backend=backend)
    saved = {k: v.clone() for k, v in net.state_dict().items()}
    memory = torch.channels_last_3d if cfg.train.channels_last else torch.contiguous_format
    k = micro_batches
    for b, frames, crop, plan in plans:
        set_bn_groups(net, plan)
        x = torch.zeros(b * k, 3, frames, crop, crop, device=device).contiguous(memory_format=memory)[::k]
        with precision(device, amp_dtype):
            out = compiled(x)
        backward(out.float().sum(), device, amp_dtype)
    net.load_state_dict(saved)
    net.zero_grad(set_to_none=True)
    return compiled


def warmup_plans(schedule: MultigridSchedule, cfg: Config, batch: int, world_size: int = 1,
                 micro_batches: int = 1) -> list[tuple[int, int, int, BNPlan]]:
    """Every distinct forward training will see, as (clips, T, S, BN plan), for a per-device step batch
    `batch`: the sampler's batches (`schedule.shapes`), the plan by `bn_plan`, as `train_step` sets it."""
    plans = []
    for stage in schedule.stages:
        for b, shape in schedule.shapes(stage, batch):
            plan = (b // micro_batches, shape.frames, shape.crop,
                    bn_plan(b, shape.stage_batch, cfg.model.bn_base_size, world_size, micro_batches))
            if plan not in plans:
                plans.append(plan)
    return plans


def use_compile_cache() -> None:
    """Turn on torch.compile's on-disk caches (Inductor's FX graph cache, and AOTAutograd's where torch has
    it), so that a resumed run on this machine loads the kernels its first segment compiled instead of
    compiling them again. They stay where torch keeps them (a per-user folder in the temp directory),
    never in the run's folder: generated code is not read back from a folder that may come from elsewhere."""
    import torch._inductor.config as inductor_config

    if hasattr(inductor_config, "fx_graph_cache"):  # 2.2+; on by default from 2.5
        inductor_config.fx_graph_cache = True
    import torch._functorch.config as functorch_config

    if hasattr(functorch_config, "enable_autograd_cache"):  # 2.5+
        functorch_config.enable_autograd_cache = True
