"""Building blocks shared by the ResNet, SlowFast and X3D models.

Module and attribute names follow PySlowFast (`s2.pathway0_res0.branch2.a`, ...) so that its checkpoints load
without any key mapping. Every layer works on a list of pathway tensors, as in the reference.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

BN_EPS = 1e-5
BN_MOMENTUM = 0.1


def batchnorm(channels: int, zero_init: bool = False) -> nn.BatchNorm3d:
    """A BatchNorm3d with the reference's eps/momentum; `zero_init` marks the last BN of a residual branch."""
    bn = nn.BatchNorm3d(channels, eps=BN_EPS, momentum=BN_MOMENTUM)
    bn.zero_init = zero_init  # read by init_weights
    return bn


def to_pathways(x: Tensor | Sequence[Tensor]) -> list[Tensor]:
    """Accept one clip tensor or PySlowFast's list of pathway tensors; always return a list."""
    if isinstance(x, Tensor):
        return [x]
    return list(x)


def expand_temporal_kernels(basis: Sequence[int], num_blocks: int, num_temporal: int) -> list[int]:
    """Per-block temporal kernel sizes: the basis repeated over the first `num_temporal` blocks, then 1s.

    PySlowFast's RESNET.NUM_BLOCK_TEMP_KERNEL rule: basis [3, 1] over 4 blocks gives [3, 1, 3, 1].
    """
    num_temporal = min(num_temporal, num_blocks)  # the reference asserts this; shallow nets clamp instead
    kernels = (list(basis) * num_blocks)[:num_temporal]
    return kernels + [1] * (num_blocks - num_temporal)


class BasicStem(nn.Module):
    """Conv (T x 7 x 7 by default), BN, ReLU, then a 1x3x3 max pool with spatial stride 2."""

    def __init__(
        self, dim_in: int, dim_out: int, kernel: Sequence[int], stride: Sequence[int], padding: Sequence[int]
    ) -> None:
        super().__init__()
        self.conv = nn.Conv3d(dim_in, dim_out, tuple(kernel), tuple(stride), tuple(padding), bias=False)
        self.bn = batchnorm(dim_out)
        self.relu = nn.ReLU(inplace=True)
        self.pool_layer = nn.MaxPool3d(kernel_size=(1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        return self.pool_layer(self.relu(self.bn(self.conv(x))))


class VideoStem(nn.Module):
    """One stem per pathway, named `pathway{i}_stem` as in the reference."""

    def __init__(self, stems: Sequence[nn.Module]) -> None:
        super().__init__()
        self.num_pathways = len(stems)
        for i, stem in enumerate(stems):
            self.add_module(f"pathway{i}_stem", stem)

    def forward(self, x: list[Tensor]) -> list[Tensor]:
        if len(x) != self.num_pathways:
            raise ValueError(f"expected {self.num_pathways} pathway tensors, got {len(x)}")
        return [getattr(self, f"pathway{i}_stem")(x[i]) for i in range(self.num_pathways)]


@dataclass(frozen=True)
class BlockDims:
    """The sizes of one residual block's transform (`branch2`), as ResStage works them out."""

    dim_in: int
    dim_out: int
    dim_inner: int
    temp_kernel: int
    stride: int  # spatial
    num_groups: int


class BottleneckTransform(nn.Module):
    """Tx1x1 conv, 1x3x3 conv (grouped, strided), 1x1x1 conv; each followed by BN (ReLU on the first two)."""

    def __init__(self, d: BlockDims, stride_1x1: bool = False, dilation: int = 1) -> None:
        super().__init__()
        str1x1, str3x3 = (d.stride, 1) if stride_1x1 else (1, d.stride)
        t = d.temp_kernel
        self.a = nn.Conv3d(d.dim_in, d.dim_inner, (t, 1, 1), (1, str1x1, str1x1), (t // 2, 0, 0), bias=False)
        self.a_bn = batchnorm(d.dim_inner)
        self.a_relu = nn.ReLU(inplace=True)
        self.b = nn.Conv3d(
            d.dim_inner,
            d.dim_inner,
            (1, 3, 3),
            (1, str3x3, str3x3),
            (0, dilation, dilation),
            groups=d.num_groups,
            bias=False,
            dilation=(1, dilation, dilation),
        )
        self.b_bn = batchnorm(d.dim_inner)
        self.b_relu = nn.ReLU(inplace=True)
        self.c = nn.Conv3d(d.dim_inner, d.dim_out, 1, bias=False)
        self.c_bn = batchnorm(d.dim_out, zero_init=True)

    def forward(self, x: Tensor) -> Tensor:
        x = self.a_relu(self.a_bn(self.a(x)))
        x = self.b_relu(self.b_bn(self.b(x)))
        return self.c_bn(self.c(x))


class BasicTransform(nn.Module):
    """PySlowFast's `basic_transform`: Tx3x3 conv then 1x3x3 conv (dim_inner and groups are unused)."""

    def __init__(self, d: BlockDims, stride_1x1: bool = False, dilation: int = 1) -> None:
        super().__init__()
        t, dim = d.temp_kernel, d.dim_out
        self.a = nn.Conv3d(d.dim_in, dim, (t, 3, 3), (1, d.stride, d.stride), (t // 2, 1, 1), bias=False)
        self.a_bn = batchnorm(dim)
        self.a_relu = nn.ReLU(inplace=True)
        self.b = nn.Conv3d(dim, dim, (1, 3, 3), 1, (0, dilation, dilation), dilation=(1, dilation, dilation),
                           bias=False)
        self.b_bn = batchnorm(dim, zero_init=True)

    def forward(self, x: Tensor) -> Tensor:
        return self.b_bn(self.b(self.a_relu(self.a_bn(self.a(x)))))


class ResBlock(nn.Module):
    """Residual block: `branch2` is the transform; `branch1` a strided 1x1x1 projection when shapes change."""

    def __init__(self, dim_in: int, dim_out: int, stride: int, transform: nn.Module) -> None:
        super().__init__()
        if dim_in != dim_out or stride != 1:
            self.branch1 = nn.Conv3d(dim_in, dim_out, 1, (1, stride, stride), bias=False)
            self.branch1_bn = batchnorm(dim_out)
        self.branch2 = transform
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        f_x = self.branch2(x)
        shortcut = self.branch1_bn(self.branch1(x)) if hasattr(self, "branch1") else x
        return self.relu(shortcut + f_x)


class Nonlocal(nn.Module):
    """Non-local block (Wang et al. 2018): 'softmax' or 'dot_product' affinity, optional max-pooled keys."""

    def __init__(
        self, dim: int, dim_inner: int, pool_size: Sequence[int] | None = None, instantiation: str = "softmax"
    ) -> None:
        super().__init__()
        if instantiation not in ("softmax", "dot_product"):
            raise ValueError(
                f"non-local instantiation must be 'softmax' or 'dot_product', got {instantiation!r}"
            )
        self.dim_inner = dim_inner
        self.instantiation = instantiation
        self.conv_theta = nn.Conv3d(dim, dim_inner, 1)
        self.conv_phi = nn.Conv3d(dim, dim_inner, 1)
        self.conv_g = nn.Conv3d(dim, dim_inner, 1)
        self.conv_out = nn.Conv3d(dim_inner, dim, 1)
        self.bn = batchnorm(dim, zero_init=True)
        if pool_size is not None and any(p > 1 for p in pool_size):
            self.pool = nn.MaxPool3d(tuple(pool_size), stride=tuple(pool_size))

    def forward(self, x: Tensor) -> Tensor:
        n, _, t, h, w = x.shape
        theta = self.conv_theta(x).flatten(2)
        keys = self.pool(x) if hasattr(self, "pool") else x
        phi = self.conv_phi(keys).flatten(2)
        g = self.conv_g(keys).flatten(2)
        affinity = torch.einsum("nct,ncp->ntp", theta, phi)
        if self.instantiation == "softmax":
            affinity = (affinity * self.dim_inner**-0.5).softmax(dim=2)
        else:
            affinity = affinity / affinity.shape[2]
        out = torch.einsum("ntp,ncp->nct", affinity, g).reshape(n, self.dim_inner, t, h, w)
        return x + self.bn(self.conv_out(out))


TRANSFORMS = {"bottleneck": BottleneckTransform, "basic": BasicTransform}


class ResStage(nn.Module):
    """One ResNet stage for every pathway: blocks `pathway{p}_res{i}`, non-local `pathway{p}_nonlocal{i}`.

    `temporal_kernels[p]` holds the temporal kernel of each block of pathway p (one entry per block).
    `transform_factory(dims, block_idx)` builds branch2 from the block's BlockDims.
    """

    def __init__(
        self,
        dims_in: Sequence[int],
        dims_out: Sequence[int],
        dims_inner: Sequence[int],
        temporal_kernels: Sequence[Sequence[int]],
        strides: Sequence[int],
        num_groups: Sequence[int],
        transform_factory,
        nonlocal_at: Sequence[Sequence[int]] = (),
        nonlocal_group: Sequence[int] = (),
        nonlocal_pool: Sequence[Sequence[int] | None] = (),
        nonlocal_instantiation: str = "softmax",
    ) -> None:
        super().__init__()
        self.num_pathways = len(dims_in)
        self.num_blocks = [len(k) for k in temporal_kernels]
        self.nonlocal_group = list(nonlocal_group) or [1] * self.num_pathways
        for p in range(self.num_pathways):
            for i, temp_kernel in enumerate(temporal_kernels[p]):
                dim_in = dims_in[p] if i == 0 else dims_out[p]
                stride = strides[p] if i == 0 else 1
                dims = BlockDims(dim_in, dims_out[p], dims_inner[p], temp_kernel, stride, num_groups[p])
                transform = transform_factory(dims, i)
                self.add_module(f"pathway{p}_res{i}", ResBlock(dim_in, dims_out[p], stride, transform))
                if nonlocal_at and i in nonlocal_at[p]:
                    pool = nonlocal_pool[p] if nonlocal_pool else None
                    block = Nonlocal(dims_out[p], dims_out[p] // 2, pool, nonlocal_instantiation)
                    self.add_module(f"pathway{p}_nonlocal{i}", block)

    def forward(self, inputs: list[Tensor]) -> list[Tensor]:
        outputs = []
        for p in range(self.num_pathways):
            x = inputs[p]
            for i in range(self.num_blocks[p]):
                x = getattr(self, f"pathway{p}_res{i}")(x)
                if hasattr(self, f"pathway{p}_nonlocal{i}"):
                    x = self._nonlocal(getattr(self, f"pathway{p}_nonlocal{i}"), x, self.nonlocal_group[p])
            outputs.append(x)
        return outputs

    @staticmethod
    def _nonlocal(block: Nonlocal, x: Tensor, group: int) -> Tensor:
        if group == 1:
            return block(x)
        # Attention within `group` consecutive temporal chunks: fold the chunks into the batch.
        b, c, t, h, w = x.shape
        x = x.permute(0, 2, 1, 3, 4).reshape(b * group, t // group, c, h, w).permute(0, 2, 1, 3, 4)
        x = block(x)
        return x.permute(0, 2, 1, 3, 4).reshape(b, t, c, h, w).permute(0, 2, 1, 3, 4)


def resnet_transform_factory(name: str, stride_1x1: bool, dilation: int):
    """A `transform_factory` for ResStage building PySlowFast's bottleneck or basic transform."""
    if name not in TRANSFORMS:
        raise ValueError(f"unknown transform {name!r}; valid: {sorted(TRANSFORMS)}")
    cls = TRANSFORMS[name]

    def build(dims: BlockDims, block_idx: int) -> nn.Module:
        return cls(dims, stride_1x1, dilation)

    return build


def init_weights(model: nn.Module, fc_init_std: float = 0.01, zero_init_final_bn: bool = True) -> None:
    """The reference's init: MSRA-fill convs, unit BNs (zero for marked final BNs), N(0, std) FCs."""
    if any(p.is_meta for p in model.parameters()):
        return  # meta tensors hold no values (and meta normal_ costs a slow one-off import)
    for m in model.modules():
        if isinstance(m, nn.Conv3d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm3d):
            if m.weight is not None:
                nn.init.constant_(
                    m.weight, 0.0 if (getattr(m, "zero_init", False) and zero_init_final_bn) else 1.0
                )
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, std=fc_init_std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
