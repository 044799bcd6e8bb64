"""X3D (Feichtenhofer 2020) as in PySlowFast: channel-wise 3x3x3 convs, squeeze-excitation every other block,
swish, and the width/depth/bottleneck expansion factors of X3D-XS/S/M/L.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from torch import Tensor, nn

from mgvideo.models.blocks import BlockDims, ResStage, VideoStem, batchnorm, init_weights, to_pathways
from mgvideo.models.heads import X3DHead
from mgvideo.models.options import HeadOptions

# X3D sizes: (width factor, depth factor); all use bottleneck factor 2.25, C1 = 12, C5 = 2048.
X3D_SIZES = {"xs": (2.0, 2.2), "s": (2.0, 2.2), "m": (2.0, 2.2), "l": (2.0, 5.0)}
_BASE_BLOCKS = (1, 2, 5, 3)


def round_width(width: float, multiplier: float, min_width: int = 8, divisor: int = 8) -> int:
    """Scale a channel count and round it to a multiple of `divisor` (never more than 10% below)."""
    if not multiplier:
        return int(width)
    width *= multiplier
    rounded = max(min_width, int(width + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * width:
        rounded += divisor
    return int(rounded)


class Swish(nn.Module):
    """x * sigmoid(x)."""

    def forward(self, x: Tensor) -> Tensor:
        return x * x.sigmoid()


class SE(nn.Module):
    """Squeeze-excitation: global pool, 1x1x1 conv, ReLU, 1x1x1 conv, sigmoid, channel-wise scale."""

    def __init__(self, dim: int, ratio: float) -> None:
        super().__init__()
        dim_fc = round_width(dim, ratio)
        self.avg_pool = nn.AdaptiveAvgPool3d(1)
        self.fc1 = nn.Conv3d(dim, dim_fc, 1, bias=True)
        self.fc1_act = nn.ReLU()
        self.fc2 = nn.Conv3d(dim_fc, dim, 1, bias=True)
        self.fc2_sig = nn.Sigmoid()

    def forward(self, x: Tensor) -> Tensor:
        scale = self.fc2_sig(self.fc2(self.fc1_act(self.fc1(self.avg_pool(x)))))
        return x * scale


class X3DStem(nn.Module):
    """1x3x3 spatial conv (stride 2), then a depthwise Tx1x1 temporal conv, BN, ReLU; no max pool."""

    def __init__(self, dim_in: int, dim_out: int, temp_kernel: int = 5) -> None:
        super().__init__()
        self.conv_xy = nn.Conv3d(dim_in, dim_out, (1, 3, 3), (1, 2, 2), (0, 1, 1), bias=False)
        self.conv = nn.Conv3d(
            dim_out, dim_out, (temp_kernel, 1, 1), 1, (temp_kernel // 2, 0, 0), bias=False, groups=dim_out
        )
        self.bn = batchnorm(dim_out)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        return self.relu(self.bn(self.conv(self.conv_xy(x))))


class X3DTransform(nn.Module):
    """1x1x1 conv, channel-wise Tx3x3 conv (strided), SE on even-indexed blocks, swish, 1x1x1 conv."""

    def __init__(self, d: BlockDims, block_idx: int, se_ratio: float = 0.0625) -> None:
        super().__init__()
        self.a = nn.Conv3d(d.dim_in, d.dim_inner, 1, bias=False)
        self.a_bn = batchnorm(d.dim_inner)
        self.a_relu = nn.ReLU(inplace=True)
        t = d.temp_kernel
        self.b = nn.Conv3d(d.dim_inner, d.dim_inner, (t, 3, 3), (1, d.stride, d.stride), (t // 2, 1, 1),
                           groups=d.num_groups, bias=False)
        self.b_bn = batchnorm(d.dim_inner)
        if se_ratio > 0 and block_idx % 2 == 0:
            self.se = SE(d.dim_inner, se_ratio)
        self.b_relu = Swish()
        self.c = nn.Conv3d(d.dim_inner, d.dim_out, 1, bias=False)
        self.c_bn = batchnorm(d.dim_out, zero_init=True)

    def forward(self, x: Tensor) -> Tensor:
        x = self.a_relu(self.a_bn(self.a(x)))
        x = self.b_bn(self.b(x))
        if hasattr(self, "se"):
            x = self.se(x)
        return self.c_bn(self.c(self.b_relu(x)))


@dataclass(kw_only=True)
class X3DOptions(HeadOptions):
    """X3D's options: the expansion factors (`X3D_SIZES`) and the stem and head widths, besides the head's."""

    width_factor: float = 2.0
    depth_factor: float = 2.2
    bottleneck_factor: float = 2.25
    dim_c1: int = 12
    dim_c5: int = 2048
    scale_res2: bool = False
    channelwise: bool = True
    num_groups: int = 1
    bn_lin5: bool = False
    head_pool_size: Sequence[int] | None = None


class X3D(nn.Module):
    """X3D network. `forward` takes `(B, 3, T, H, W)` or a one-element list; see mgvideo.models.heads."""

    Options = X3DOptions

    def __init__(self, options: X3DOptions | None = None, **overrides: Any) -> None:
        super().__init__()
        o = replace(options or X3DOptions(), **overrides)
        dim_res2 = round_width(o.dim_c1, 2.0) if o.scale_res2 else o.dim_c1
        stage_dims = [dim_res2]
        for _ in range(3):
            stage_dims.append(round_width(stage_dims[-1], 2.0))
        dim_in = round_width(o.dim_c1, o.width_factor)
        self.s1 = VideoStem([X3DStem(o.in_channels, dim_in)])
        for stage, (blocks, dim) in enumerate(zip(_BASE_BLOCKS, stage_dims)):
            dim_out = round_width(dim, o.width_factor)
            dim_inner = int(o.bottleneck_factor * dim_out)
            repeats = int(math.ceil(o.depth_factor * blocks)) if o.depth_factor else blocks
            groups = dim_inner if o.channelwise else o.num_groups
            self.add_module(
                f"s{stage + 2}",
                ResStage([dim_in], [dim_out], [dim_inner], [[3] * repeats], [2], [groups], X3DTransform),
            )
            dim_in = dim_out
        self.head = X3DHead(
            dim_out, dim_inner, o.dim_c5, o.num_classes, o.dropout, o.head_act, o.head_pool_size, o.bn_lin5
        )
        init_weights(self, o.fc_init_std, o.zero_init_final_bn)

    def forward(self, x: Tensor | list[Tensor]) -> Tensor:
        x = to_pathways(x)
        return self.head(self.s5(self.s4(self.s3(self.s2(self.s1(x))))))
