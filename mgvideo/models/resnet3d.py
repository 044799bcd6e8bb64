"""The single-pathway video ResNets of PySlowFast: C2D, I3D and Slow, with optional non-local blocks.

Layer layout, temporal kernels (`TEMPORAL_KERNELS`, the reference's `_TEMPORAL_KERNEL_BASIS`) and the temporal
pool after res2 (`POOL1`) are those of slowfast/models/video_model_builder.py, so checkpoints load unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from torch import Tensor, nn

from mgvideo.models.blocks import (
    BasicStem,
    ResStage,
    VideoStem,
    expand_temporal_kernels,
    init_weights,
    resnet_transform_factory,
    to_pathways,
)
from mgvideo.models.heads import ResNetBasicHead
from mgvideo.models.options import ResNetOptions

# Blocks per stage (res2..res5). Depth 18 is not in current PySlowFast; older versions used (2, 2, 2, 2)
# with whatever RESNET.TRANS_FUNC says (bottleneck by default), which is what we build too.
STAGE_DEPTHS = {18: (2, 2, 2, 2), 50: (3, 4, 6, 3), 101: (3, 4, 23, 3)}

# Temporal kernel basis per arch: [stem, res2, res3, res4, res5]; one list per pathway inside.
TEMPORAL_KERNELS = {
    "c2d": [[[1]], [[1]], [[1]], [[1]], [[1]]],
    "c2d_nopool": [[[1]], [[1]], [[1]], [[1]], [[1]]],
    "i3d": [[[5]], [[3]], [[3, 1]], [[3, 1]], [[1, 3]]],
    "i3d_nopool": [[[5]], [[3]], [[3, 1]], [[3, 1]], [[1, 3]]],
    "slow": [[[1]], [[1]], [[1]], [[3]], [[3]]],
    "slowfast": [[[1], [5]], [[1], [3]], [[1], [3]], [[3], [3]], [[3], [3]]],
}
# Max-pool (kernel = stride) applied between res2 and res3, per pathway.
POOL1 = {
    "c2d": [(2, 1, 1)],
    "c2d_nopool": [(1, 1, 1)],
    "i3d": [(2, 1, 1)],
    "i3d_nopool": [(1, 1, 1)],
    "slow": [(1, 1, 1)],
    "slowfast": [(1, 1, 1), (1, 1, 1)],
}
RESNET_ARCHS = ("c2d", "c2d_nopool", "i3d", "i3d_nopool", "slow")
NO_NONLOCAL = ((), (), (), ())
DEFAULT_NONLOCAL_POOL = ((1, 2, 2),) * 4


def stage_depths_for(depth: int) -> tuple[int, int, int, int]:
    """Blocks per stage for a ResNet depth."""
    if depth not in STAGE_DEPTHS:
        raise ValueError(f"ResNet depth must be one of {sorted(STAGE_DEPTHS)}, got {depth}")
    return STAGE_DEPTHS[depth]


@dataclass(kw_only=True)
class ResNet3DOptions(ResNetOptions):
    """ResNet3D's options: `arch`, the temporal kernels and the non-local layout, besides the shared body and
    head. `temporal_kernels` (bases for stem, res2..res5) overrides the arch's, for tiny models."""

    arch: str = "i3d"
    temporal_kernels: Sequence[Sequence[int]] | None = None
    num_block_temp_kernel: Sequence[int] = (3, 4, 6, 3)
    nonlocal_location: Sequence[Sequence[int]] = NO_NONLOCAL
    nonlocal_group: Sequence[int] = (1, 1, 1, 1)
    nonlocal_pool: Sequence[Sequence[int] | None] = DEFAULT_NONLOCAL_POOL
    nonlocal_instantiation: str = "softmax"
    head_pool_size: Sequence[int] | None = None


class ResNet3D(nn.Module):
    """C2D / I3D / Slow ResNet (`arch`), any depth, width, groups, strides, dilations and non-local layout.

    `forward` takes a clip `(B, 3, T, H, W)` or a one-element list; it returns logits in train mode and
    the head activation averaged over positions in eval mode. Its options are `ResNet3DOptions`, given as
    an object, as keywords, or both (keywords win).
    """

    Options = ResNet3DOptions

    def __init__(self, options: ResNet3DOptions | None = None, **overrides: Any) -> None:
        super().__init__()
        o = replace(options or ResNet3DOptions(), **overrides)
        if o.arch not in RESNET_ARCHS:
            raise ValueError(f"arch must be one of {RESNET_ARCHS}, got {o.arch!r}")
        depths = tuple(o.stage_depths) if o.stage_depths is not None else stage_depths_for(o.depth)
        kernels = [[list(k)] for k in o.temporal_kernels] if o.temporal_kernels else TEMPORAL_KERNELS[o.arch]
        w, inner = o.width_per_group, o.num_groups * o.width_per_group
        t0 = kernels[0][0][0]
        self.s1 = VideoStem([BasicStem(o.in_channels, w, (t0, 7, 7), (1, 2, 2), (t0 // 2, 3, 3))])
        dims = [w, 4 * w, 8 * w, 16 * w, 32 * w]
        for stage in range(4):
            blocks = expand_temporal_kernels(
                kernels[stage + 1][0], depths[stage], o.num_block_temp_kernel[stage]
            )
            factory = resnet_transform_factory(o.trans_func, o.stride_1x1, o.spatial_dilations[stage])
            self.add_module(
                f"s{stage + 2}",
                ResStage(
                    [dims[stage]],
                    [dims[stage + 1]],
                    [inner * 2**stage],
                    [blocks],
                    [o.spatial_strides[stage]],
                    [o.num_groups],
                    factory,
                    [o.nonlocal_location[stage]],
                    [o.nonlocal_group[stage]],
                    [o.nonlocal_pool[stage]],
                    o.nonlocal_instantiation,
                ),
            )
            if stage == 0:
                self.pathway0_pool = nn.MaxPool3d(POOL1[o.arch][0], stride=POOL1[o.arch][0])
        pool = [o.head_pool_size] if o.head_pool_size else None
        self.head = ResNetBasicHead([dims[4]], o.num_classes, o.dropout, o.head_act, pool)
        init_weights(self, o.fc_init_std, o.zero_init_final_bn)

    def forward(self, x: Tensor | list[Tensor]) -> Tensor:
        x = self.s2(self.s1(to_pathways(x)))
        x = self.s3([self.pathway0_pool(x[0])])
        return self.head(self.s5(self.s4(x)))
