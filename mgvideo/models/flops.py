"""Parameter and multiply-add counts, measured by torch's FlopCounterMode on meta tensors (no compute)."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from mgvideo.models.zoo import PRESETS, build_model


def count_params(model: nn.Module) -> int:
    """Number of parameters (BN running statistics excluded, as the model-zoo tables count)."""
    return sum(p.numel() for p in model.parameters())


def count_gmacs(model: nn.Module, clip_shape: tuple[int, ...]) -> float:
    """Giga multiply-adds of one eval-mode forward pass on a clip of `clip_shape` (B, C, T, H, W).

    This is what PySlowFast and the model-zoo tables call "GFLOPs" (fvcore counts one multiply-add as one).
    The model may live on the meta device, which makes counting the big presets instant.
    """
    device = next(model.parameters()).device
    clip = torch.empty(clip_shape, device=device)
    was_training = model.training
    counter = FlopCounterMode(display=False)
    try:
        model.eval()
        with counter, torch.no_grad():
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
