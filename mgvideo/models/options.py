"""What the CNN families share in their constructor options, defined once.

Each family (`ResNet3D`, `SlowFast`, `X3D`) takes a keyword-only options dataclass, `Family.Options`, built
from these bases; its fields are the names a recipe's `model.options` and a preset may set
(`zoo.model_fields`). Keywords passed to a constructor replace fields of the options it is given.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(kw_only=True)
class HeadOptions:
    """The classifier head, the input and the weight initialization."""

    num_classes: int = 400
    dropout: float = 0.5
    head_act: str = "none"
    in_channels: int = 3
    zero_init_final_bn: bool = True
    fc_init_std: float = 0.01


@dataclass(kw_only=True)
class ResNetOptions(HeadOptions):
    """The ResNet body shared by the single-pathway ResNets and SlowFast; per-stage fields have one entry per
    stage res2..res5. `stage_depths` overrides `depth` (tiny models)."""

    depth: int = 50
    width_per_group: int = 64
    num_groups: int = 1
    stride_1x1: bool = False
    trans_func: str = "bottleneck"
    stage_depths: Sequence[int] | None = None
    spatial_strides: Sequence[int] = (1, 2, 2, 2)
    spatial_dilations: Sequence[int] = (1, 1, 1, 1)
