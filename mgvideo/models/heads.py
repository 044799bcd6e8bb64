"""Classification heads that take any T x H x W and test fully convolutionally, as PySlowFast does.

Training: global average pooling per pathway, concat, dropout, linear -> logits (B, classes).
Evaluation: average pooling with the reference's fixed window (`pool_size`, stride 1) when one is given and
fits, otherwise global; the linear layer applied at every pooled position, the activation, then the mean over
positions -> (B, classes). The activation is "none" unless asked for: a model returns logits in both modes,
so `cross_entropy` on eval outputs is right. `act="softmax"` (or "sigmoid") gives the reference's
probabilities averaged over positions; `output_activation(model)` says which a model returns.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mgvideo.models.blocks import batchnorm

HEAD_ACTIVATIONS = ("softmax", "sigmoid", "none")


def _pool(x: Tensor, window: Sequence[int] | None, training: bool) -> Tensor:
    """Global average in training or without a window; sliding average (stride 1) with the window at test."""
    if training or window is None:
        return F.adaptive_avg_pool3d(x, 1)
    kernel = tuple(min(k, s) for k, s in zip(window, x.shape[2:]))
    return F.avg_pool3d(x, kernel, stride=1)


def _activate_and_average(x: Tensor, act: str) -> Tensor:
    """x is (B, T, H, W, classes): apply the head activation, then average over positions."""
    if act == "softmax":
        x = x.softmax(dim=4)
    elif act == "sigmoid":
        x = x.sigmoid()
    return x.mean(dim=(1, 2, 3))


def output_activation(model: nn.Module) -> str:
    """The activation a model applies to its eval-mode outputs: "none" (logits), "softmax" or "sigmoid"
    (the model was built asking for probabilities, `head_act`). Looks through DDP and torch.compile."""
    for module in model.modules():
        act = getattr(module, "head_act", None) or getattr(module, "act", None)
        if isinstance(act, str) and act in HEAD_ACTIVATIONS:
            return act
    return "none"


def _check_act(act: str) -> None:
    if act not in HEAD_ACTIVATIONS:
        raise ValueError(f"head activation must be one of {HEAD_ACTIVATIONS}, got {act!r}")


def _classify(head: nn.Module, x: Tensor) -> Tensor:
    """Dropout and the projection on (B, T, H, W, C) features; logits in training, else the activation
    averaged over positions (the reference's fully convolutional testing)."""
    if hasattr(head, "dropout"):
        x = head.dropout(x)
    x = head.projection(x)
    if head.training:
        return x.flatten(1)
    return _activate_and_average(x, head.act)


class ResNetBasicHead(nn.Module):
    """PySlowFast's ResNetBasicHead: per-pathway average pool, concat, dropout, `projection` (Linear)."""

    def __init__(
        self,
        dims_in: Sequence[int],
        num_classes: int,
        dropout: float = 0.5,
        act: str = "none",
        pool_sizes: Sequence[Sequence[int] | None] | None = None,
    ) -> None:
        super().__init__()
        _check_act(act)
        self.act = act
        self.pool_sizes = list(pool_sizes) if pool_sizes is not None else [None] * len(dims_in)
        if dropout > 0:
            self.dropout = nn.Dropout(dropout)
        self.projection = nn.Linear(sum(dims_in), num_classes, bias=True)

    def forward(self, inputs: list[Tensor]) -> Tensor:
        pooled = [_pool(x, w, self.training) for x, w in zip(inputs, self.pool_sizes)]
        x = torch.cat(pooled, dim=1).permute(0, 2, 3, 4, 1)
        return _classify(self, x)


class X3DHead(nn.Module):
    """X3D's head: 1x1x1 conv + BN + ReLU, average pool, 1x1x1 `lin_5` conv + ReLU, dropout, `projection`."""

    def __init__(
        self,
        dim_in: int,
        dim_inner: int,
        dim_out: int,
        num_classes: int,
        dropout: float = 0.5,
        act: str = "none",
        pool_size: Sequence[int] | None = None,
        bn_lin5: bool = False,
    ) -> None:
        super().__init__()
        _check_act(act)
        self.act = act
        self.pool_size = pool_size
        self.conv_5 = nn.Conv3d(dim_in, dim_inner, 1, bias=False)
        self.conv_5_bn = batchnorm(dim_inner)
        self.conv_5_relu = nn.ReLU(inplace=True)
        self.lin_5 = nn.Conv3d(dim_inner, dim_out, 1, bias=False)
        if bn_lin5:
            self.lin_5_bn = batchnorm(dim_out)
        self.lin_5_relu = nn.ReLU(inplace=True)
        if dropout > 0:
            self.dropout = nn.Dropout(dropout)
        self.projection = nn.Linear(dim_out, num_classes, bias=True)

    def forward(self, inputs: list[Tensor]) -> Tensor:
        x = self.conv_5_relu(self.conv_5_bn(self.conv_5(inputs[0])))
        x = self.lin_5(_pool(x, self.pool_size, self.training))
        if hasattr(self, "lin_5_bn"):
            x = self.lin_5_bn(x)
        x = self.lin_5_relu(x).permute(0, 2, 3, 4, 1)
        return _classify(self, x)
