"""SlowFast (Feichtenhofer et al. 2019) with PySlowFast's exact layer layout and lateral fusions.

The fast pathway sees every input frame with 1/beta_inv of the channels; the slow pathway sees every alpha-th
frame. After the stem and res2..res4 a time-strided conv (`s{i}_fuse.conv_f2s`) feeds fast into slow.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import Tensor, nn

from mgvideo.errors import ConfigError
from mgvideo.models.blocks import (
    BasicStem,
    ResStage,
    VideoStem,
    batchnorm,
    expand_temporal_kernels,
    init_weights,
    resnet_transform_factory,
)
from mgvideo.models.heads import ResNetBasicHead
from mgvideo.models.options import ResNetOptions
from mgvideo.models.resnet3d import DEFAULT_NONLOCAL_POOL, POOL1, TEMPORAL_KERNELS, stage_depths_for


def pack_pathways(clip: Tensor, alpha: int) -> list[Tensor]:
    """[slow, fast] from one clip `(B, C, T, H, W)`: slow takes T // alpha evenly spread frames."""
    frames = clip.shape[2]
    if frames < alpha:
        raise ConfigError(f"SlowFast input needs at least alpha={alpha} frames, got T={frames}")
    index = torch.linspace(0, frames - 1, frames // alpha, device=clip.device).long()
    return [clip.index_select(2, index), clip]


class FuseFastToSlow(nn.Module):
    """Lateral connection: Tx1x1 conv with temporal stride alpha on the fast features, BN, ReLU, concat."""

    def __init__(self, dim_in: int, channel_ratio: int, kernel: int, alpha: int) -> None:
        super().__init__()
        self.conv_f2s = nn.Conv3d(
            dim_in, dim_in * channel_ratio, (kernel, 1, 1), (alpha, 1, 1), (kernel // 2, 0, 0), bias=False
        )
        self.bn = batchnorm(dim_in * channel_ratio)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: list[Tensor]) -> list[Tensor]:
        slow, fast = x
        fuse = self.relu(self.bn(self.conv_f2s(fast)))
        if fuse.shape[2] != slow.shape[2]:
            raise ConfigError(
                f"SlowFast pathways disagree in time (slow T={slow.shape[2]}, fused fast "
                f"T={fuse.shape[2]}): feed T divisible by alpha, or pathways from pack_pathways"
            )
        return [torch.cat([slow, fuse], dim=1), fast]


@dataclass(kw_only=True)
class SlowFastOptions(ResNetOptions):
    """SlowFast's options: the pathways' ratios and fusion, and the non-local layout with a `(slow, fast)`
    pair per stage, besides the shared body and head. `head_pool_sizes` is the (slow, fast) test-time
    pooling window; None pools globally."""

    alpha: int = 4
    beta_inv: int = 8
    fusion_conv_channel_ratio: int = 2
    fusion_kernel: int = 7
    num_block_temp_kernel: Sequence[Sequence[int]] = ((3, 3), (4, 4), (6, 6), (3, 3))
    nonlocal_location: Sequence[Sequence[Sequence[int]]] = (((), ()),) * 4
    nonlocal_group: Sequence[Sequence[int]] = ((1, 1),) * 4
    nonlocal_pool: Sequence[Sequence[Sequence[int] | None]] | None = None
    nonlocal_instantiation: str = "dot_product"
    head_pool_sizes: Sequence[Sequence[int]] | None = None


class SlowFast(nn.Module):
    """SlowFast ResNet for any depth/width the ResNet family allows.

    `forward` takes one clip `(B, 3, T, H, W)` (the fast pathway; the slow one is index-selected from it) or
    PySlowFast's `[slow, fast]` list. Its options are `SlowFastOptions`, given as an object, as keywords, or
    both (keywords win).
    """

    Options = SlowFastOptions

    def __init__(self, options: SlowFastOptions | None = None, **overrides: Any) -> None:
        super().__init__()
        o = replace(options or SlowFastOptions(), **overrides)
        self.alpha = o.alpha
        self.shape_multiple = (o.alpha, 1)  # frames: whole slow-pathway steps (zoo.shape_multiple)
        depths = tuple(o.stage_depths) if o.stage_depths is not None else stage_depths_for(o.depth)
        pools = o.nonlocal_pool or [(p, p) for p in DEFAULT_NONLOCAL_POOL]
        kernels = TEMPORAL_KERNELS["slowfast"]
        w, inner = o.width_per_group, o.num_groups * o.width_per_group
        fused = o.beta_inv // o.fusion_conv_channel_ratio  # slow gets w_stage // fused extra channels
        ts, tf = kernels[0][0][0], kernels[0][1][0]
        self.s1 = VideoStem(
            [
                BasicStem(o.in_channels, w, (ts, 7, 7), (1, 2, 2), (ts // 2, 3, 3)),
                BasicStem(o.in_channels, w // o.beta_inv, (tf, 7, 7), (1, 2, 2), (tf // 2, 3, 3)),
            ]
        )

        def fuse(fast_channels: int) -> FuseFastToSlow:
            return FuseFastToSlow(fast_channels, o.fusion_conv_channel_ratio, o.fusion_kernel, o.alpha)

        self.s1_fuse = fuse(w // o.beta_inv)
        dims = [w, 4 * w, 8 * w, 16 * w, 32 * w]
        for stage in range(4):
            d_in, d_out, d_inner = dims[stage], dims[stage + 1], inner * 2**stage
            basis, temporal = kernels[stage + 1], o.num_block_temp_kernel[stage]
            blocks = [expand_temporal_kernels(basis[p], depths[stage], temporal[p]) for p in range(2)]
            factory = resnet_transform_factory(o.trans_func, o.stride_1x1, o.spatial_dilations[stage])
            self.add_module(
                f"s{stage + 2}",
                ResStage(
                    [d_in + d_in // fused, d_in // o.beta_inv],
                    [d_out, d_out // o.beta_inv],
                    [d_inner, d_inner // o.beta_inv],
                    blocks,
                    [o.spatial_strides[stage]] * 2,
                    [o.num_groups] * 2,
                    factory,
                    o.nonlocal_location[stage],
                    o.nonlocal_group[stage],
                    pools[stage],
                    o.nonlocal_instantiation,
                ),
            )
            if stage < 3:
                self.add_module(f"s{stage + 2}_fuse", fuse(d_out // o.beta_inv))
            if stage == 0:
                self.pathway0_pool = nn.MaxPool3d(POOL1["slowfast"][0], stride=POOL1["slowfast"][0])
                self.pathway1_pool = nn.MaxPool3d(POOL1["slowfast"][1], stride=POOL1["slowfast"][1])
        self.head = ResNetBasicHead(
            [dims[4], dims[4] // o.beta_inv], o.num_classes, o.dropout, o.head_act, o.head_pool_sizes
        )
        init_weights(self, o.fc_init_std, o.zero_init_final_bn)

    def forward(self, x: Tensor | Sequence[Tensor]) -> Tensor:
        pathways = pack_pathways(x, self.alpha) if isinstance(x, Tensor) else list(x)
        if len(pathways) == 1:
            pathways = pack_pathways(pathways[0], self.alpha)
        x = self.s2(self.s1_fuse(self.s1(pathways)))
        x = self.s2_fuse(x)
        x = self.s3([self.pathway0_pool(x[0]), self.pathway1_pool(x[1])])
        x = self.s4(self.s3_fuse(x))
        return self.head(self.s5(self.s4_fuse(x)))
