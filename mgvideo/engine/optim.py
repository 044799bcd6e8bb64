"""The optimizer: SGD (the paper's CNN recipes) or AdamW (VideoMAE's fine-tuning), with weight-decay
exclusions and layer-wise LR decay expressed as parameter groups that carry an `lr_scale`."""

from __future__ import annotations

import inspect

import torch
from torch import nn

from mgvideo.config import Config
from mgvideo.errors import ConfigError


def no_weight_decay(name: str, param: torch.Tensor, model: nn.Module) -> bool:
    """Whether a parameter is excluded from weight decay: biases, norm weights (1-d tensors) and what the
    model names in `no_weight_decay()` (timm's convention, e.g. learnt position embeddings)."""
    named = model.no_weight_decay() if hasattr(model, "no_weight_decay") else set()
    return param.ndim <= 1 or name in named


def param_groups(model: nn.Module, weight_decay: float, exclude_1d: bool, layer_decay: float) -> list[dict]:
    """Parameter groups by (weight decay, LR scale), in first-seen order.

    `exclude_1d`: no weight decay on biases and norm weights. `layer_decay` < 1 scales the LR of layer i of a
    model with `num_layers` and `layer_id(name)` (the ViT) by layer_decay ** (num_layers + 1 - i), as BEiT
    and VideoMAE do: the head trains at the full LR, the patch embedding at the smallest.
    """
    if layer_decay < 1 and not hasattr(model, "layer_id"):
        raise ConfigError(f"solver.layer_decay={layer_decay} needs a model with layers (a ViT); "
                          f"{type(model).__name__} has none: set solver.layer_decay=1.0")
    groups: dict[tuple[float, float], dict] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        decay = 0.0 if exclude_1d and no_weight_decay(name, param, model) else weight_decay
        scale = 1.0
        if layer_decay < 1:
            scale = layer_decay ** (model.num_layers + 1 - model.layer_id(name))
        group = groups.setdefault((decay, scale), {"params": [], "weight_decay": decay, "lr_scale": scale})
        group["params"].append(param)
    return list(groups.values())


def build_optimizer(model: nn.Module, cfg: Config, fused: bool = False) -> torch.optim.Optimizer:
    """`solver.optimizer`: SGD with momentum (optionally nesterov) or AdamW, over `param_groups`.

    `solver.bn_weight_decay: false` excludes biases and norm weights from weight decay (the reference's
    ZERO_WD_1D_PARAM; VideoMAE's fine-tuning excludes the same). The LR is set every step by `set_lr`.
    `fused` (the trainer asks for it on CUDA) takes torch's fused kernel where this torch has one: one
    launch per step, and fp16's GradScaler hands it the inf check on the device instead of reading it on
    the host, so an fp16 step does not sync.
    """
    s = cfg.solver
    groups = param_groups(model, s.weight_decay, not s.bn_weight_decay, s.layer_decay)
    cls = torch.optim.AdamW if s.optimizer == "adamw" else torch.optim.SGD
    options = {"fused": True} if fused and "fused" in inspect.signature(cls.__init__).parameters else {}
    if cls is torch.optim.AdamW:
        return cls(groups, lr=s.base_lr, betas=(s.betas[0], s.betas[1]), **options)
    return cls(groups, lr=s.base_lr, momentum=s.momentum, nesterov=s.nesterov, **options)
