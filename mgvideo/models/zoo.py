"""Named model presets (the PySlowFast model-zoo architectures, VideoMAE ViTs, tiny CPU models) and
`build_model`."""

from __future__ import annotations

import difflib
import inspect
from dataclasses import dataclass, field, fields
from typing import Any

import torch
from torch import nn

from mgvideo.errors import ConfigError
from mgvideo.models.c3d import PlainC3D
from mgvideo.models.resnet3d import ResNet3D
from mgvideo.models.slowfast import SlowFast
from mgvideo.models.vit import VideoViT
from mgvideo.models.x3d import X3D, X3D_SIZES

FAMILIES: dict[str, type[nn.Module]] = {
    "resnet": ResNet3D, "slowfast": SlowFast, "x3d": X3D, "plain": PlainC3D, "vit": VideoViT,
}


@dataclass(frozen=True)
class Preset:
    """A model and its clip: `frames` (for SlowFast the fast pathway's T), `crop`, `sampling_rate`."""

    family: str
    frames: int
    crop: int
    sampling_rate: int
    kwargs: dict[str, Any] = field(default_factory=dict)
    source: str = ""


def _x3d(size: str, frames: int, crop: int, rate: int) -> Preset:
    width, depth = X3D_SIZES[size]
    spatial = -(-crop // 32)  # the reference's test-time pooling window: ceil(crop / 32)
    return Preset(
        "x3d",
        frames,
        crop,
        rate,
        {"width_factor": width, "depth_factor": depth, "head_pool_size": (frames, spatial, spatial)},
        f"configs/Kinetics/X3D_{size.upper()}.yaml",
    )


def _videomae(dim: int, depth: int, heads: int) -> Preset:
    """A VideoMAE ViT on 16 frames of 224 px (tubelet 2, patch 16), 16x4 sampling as VideoMAE's K400."""
    size = {"frames": 16, "crop": 224, "tubelet_size": 2, "patch_size": 16}
    arch = {"embed_dim": dim, "depth": depth, "num_heads": heads}
    return Preset("vit", 16, 224, 4, {**size, **arch}, "VideoMAE (Tong et al. 2022), Hugging Face VideoMAE")


_NLN = {"nonlocal_location": ((), (1, 3), (1, 3, 5), ()), "nonlocal_instantiation": "softmax"}
_TINY = {"width_per_group": 8, "stage_depths": (1, 1, 1, 1), "dropout": 0.2}

PRESETS: dict[str, Preset] = {
    "c2d_r50_8x8": Preset(
        "resnet", 8, 224, 8, {"arch": "c2d", "depth": 50}, "configs/Kinetics/C2D_8x8_R50.yaml"
    ),
    "i3d_r50_8x8": Preset(
        "resnet", 8, 224, 8, {"arch": "i3d", "depth": 50}, "configs/Kinetics/c2/I3D_8x8_R50.yaml"
    ),
    "i3d_nl_r50_8x8": Preset(
        "resnet", 8, 224, 8, {"arch": "i3d", "depth": 50, **_NLN}, "configs/Kinetics/c2/I3D_NLN_8x8_R50.yaml"
    ),
    "slow_r50_8x8": Preset(
        "resnet", 8, 224, 8, {"arch": "slow", "depth": 50}, "configs/Kinetics/c2/SLOW_8x8_R50.yaml"
    ),
    "slowfast_r50_4x16": Preset(
        "slowfast",
        32,
        224,
        2,
        {"depth": 50, "alpha": 8, "fusion_kernel": 5},
        "configs/Kinetics/c2/SLOWFAST_4x16_R50.yaml",
    ),
    "slowfast_r50_8x8": Preset(
        "slowfast",
        32,
        224,
        2,
        {"depth": 50, "alpha": 4, "fusion_kernel": 7},
        "configs/Kinetics/SLOWFAST_8x8_R50_stepwise_multigrid.yaml",
    ),
    "slowfast_r50_16x8": Preset(
        "slowfast",
        64,
        224,
        2,
        {"depth": 50, "alpha": 4, "fusion_kernel": 7},
        "configs/Charades/SLOWFAST_16x8_R50_multigrid.yaml",
    ),
    "x3d_xs": _x3d("xs", 4, 160, 12),
    "x3d_s": _x3d("s", 13, 160, 6),
    "x3d_m": _x3d("m", 16, 224, 5),
    "x3d_l": _x3d("l", 16, 312, 5),
    # CPU models. r3d_tiny: temporal kernels 3 in every stage (a 1x7x7 stem, the cost of a 5x7x7 one would
    # dominate), no temporal pooling, so T=4 works.
    "r3d_tiny": Preset(
        "resnet",
        16,
        64,
        2,
        {"arch": "i3d_nopool", "temporal_kernels": ((1,), (3,), (3,), (3,), (3,)), **_TINY},
        "ours",
    ),
    # c3d_tiny: a plain 4-layer 3D CNN, not a paper architecture; it learns the synthetic classes in minutes.
    "c3d_tiny": Preset("plain", 16, 64, 2, {"width": 16}, "ours"),
    "slowfast_tiny": Preset(
        "slowfast", 16, 64, 2, {"alpha": 4, "beta_inv": 4, "fusion_kernel": 5, **_TINY}, "ours"
    ),
    "videomae_vit_s16": _videomae(384, 12, 6),
    "videomae_vit_b16": _videomae(768, 12, 12),
    "videomae_vit_l16": _videomae(1024, 24, 16),
    # vit_tiny: 8 x 6 x 6 tokens at 16x48; patch 8 so that coarse multigrid crops (32, 24) keep tokens.
    # It removes the static scene, as c3d_tiny: on the synthetic set a ViT otherwise stays at chance.
    "vit_tiny": Preset(
        "vit", 16, 48, 2,
        {"frames": 16, "crop": 48, "tubelet_size": 2, "patch_size": 8, "embed_dim": 96, "depth": 4,
         "num_heads": 3, "remove_static": True},
        "ours",
    ),
}


def model_fields(family: str) -> list[str]:
    """The override names a model family accepts: the fields of its `Options` dataclass where it has one
    (the CNNs), else its constructor's keywords."""
    cls = FAMILIES[family]
    if hasattr(cls, "Options"):
        return [f.name for f in fields(cls.Options)]
    return [name for name in inspect.signature(cls.__init__).parameters if name != "self"]


def shape_multiple(model: str | nn.Module, overrides: dict[str, Any] | None = None) -> tuple[int, int]:
    """(frames, crop) multiples a model needs, for `MultigridConfig(shape_multiple=...)`: a SlowFast's alpha
    (its slow pathway takes every alpha-th frame, and the fusions stride by alpha), a ViT's tubelet and
    patch sizes; (1, 1) for other CNNs. `model` is a built model or a preset name with its `overrides`,
    built on the meta device (no memory, no compute): the model's own `shape_multiple` attribute is the one
    definition, (1, 1) where it has none."""
    if not isinstance(model, nn.Module):
        if model not in PRESETS:  # not a preset: building it reports that (get_preset)
            return (1, 1)
        with torch.device("meta"):
            model = build_model(model, 1, **(overrides or {}))
    model = getattr(model, "module", model)  # DDP
    return tuple(getattr(model, "shape_multiple", (1, 1)))


def get_preset(name: str) -> Preset:
    """The preset called `name`; an unknown name is a ConfigError with the closest names suggested."""
    if name not in PRESETS:
        close = difflib.get_close_matches(str(name), sorted(PRESETS), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ConfigError(f"model.name: unknown preset {name!r}{hint}; valid choices: "
                          f"{', '.join(sorted(PRESETS))}")
    return PRESETS[name]


def build_model(name: str, num_classes: int, **overrides: Any) -> nn.Module:
    """Build preset `name` for `num_classes`; `overrides` replace constructor arguments (e.g. dropout=0.0)."""
    get_preset(name)
    if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 1:
        raise ConfigError(f"model.num_classes must be a positive integer, got {num_classes!r}")
    preset = PRESETS[name]
    valid = model_fields(preset.family)
    unknown = sorted(set(overrides) - set(valid))
    if unknown or "num_classes" in overrides:
        bad = unknown[0] if unknown else "num_classes"
        raise ConfigError(
            f"model override {bad!r} is not valid for {name}; valid choices: "
            f"{', '.join(v for v in valid if v != 'num_classes')}"
        )
    kwargs = {**preset.kwargs, **overrides}
    try:
        return FAMILIES[preset.family](num_classes=num_classes, **kwargs)
    except (ValueError, KeyError, IndexError, TypeError) as err:
        raise ConfigError(f"model {name} with overrides {overrides}: {err}") from err
