"""Parameter and multiply-add counts, measured by torch's FlopCounterMode on meta tensors (no compute)."""

from __future__ import annotations

from collections.abc import Callable
from functools import cache

import torch
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from mgvideo.models.zoo import PRESETS, build_model


def count_params(model: nn.Module) -> int:
    """Number of parameters (BN running statistics excluded, as the model-zoo tables count)."""
    return sum(p.numel() for p in model.parameters())


def count_gmacs(model: nn.Module, clip_shape: tuple[int, ...]) -> float:
    """Giga multiply-adds of one eval-mode forward pass on a clip of `clip_shape` (B, C, T, H, W).

    This is what PySlowFast and the model-zoo tables call "GFLOPs" (fvcore counts one multiply-add as one).
    The model may live on the meta device, which makes counting the big presets instant. Attention runs
    through the math kernel, whose matmuls the counter sees on every device (the fused CPU kernel is not
    counted), so a ViT's cost includes attention's quadratic term.
    """
    device = next(model.parameters()).device
    clip = torch.empty(clip_shape, device=device)
    was_training = model.training
    counter = FlopCounterMode(display=False)
    try:
        model.eval()
        with counter, torch.no_grad(), sdpa_kernel([SDPBackend.MATH]):
            model(clip)
    finally:
        model.train(was_training)
    return counter.get_total_flops() / 2 / 1e9


def preset_costs(name: str, num_classes: int = 400) -> dict:
    """`{"name", "params", "gflops", "frames", "crop"}` for one clip at the preset's default shape."""
    preset = PRESETS[name]
    with torch.device("meta"):
        model = build_model(name, num_classes)
    gmacs = count_gmacs(model, (1, 3, preset.frames, preset.crop, preset.crop))
    return {
        "name": name,
        "params": count_params(model),
        "gflops": round(gmacs, 3),
        "frames": preset.frames,
        "crop": preset.crop,
    }


def clip_cost_fn(name: str, num_classes: int = 400, **overrides) -> Callable[[int, int], float]:
    """`(frames, crop) -> GMACs of one clip` for a preset, counted on the meta device and cached; feeds
    `MultigridSchedule.flop_ratio` so that the ratio counts what the model really costs per shape."""
    with torch.device("meta"):
        model = build_model(name, num_classes, **overrides)

    @cache
    def clip_cost(frames: int, crop: int) -> float:
        return count_gmacs(model, (1, 3, frames, crop, crop))

    return clip_cost
