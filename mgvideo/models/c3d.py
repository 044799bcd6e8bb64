"""A plain 3D CNN for CPU runs: four 3x3x3 conv/BN/ReLU layers and the shape-agnostic ResNet head.

Not one of the paper's architectures. It exists because it learns the synthetic motion classes within
minutes of CPU, where the tiny ResNets (1x7x7 stem and max pool before the first temporal kernel) stay at
chance for many epochs (NOTES.md).

By default it subtracts each clip's per-pixel mean over time before the first layer, so it sees what
moves and not the static scene. On the synthetic set, whose static content is random and says nothing
about the class, that removes a loss plateau of about 1,700 SGD steps at chance (NOTES.md).
"""

from __future__ import annotations

from torch import Tensor, nn

from mgvideo.models.blocks import batchnorm
from mgvideo.models.heads import ResNetBasicHead


class PlainC3D(nn.Module):
    """Conv 3x3x3 layers of widths (w, 2w, 4w, 4w), spatial stride 2 in each, temporal stride 2 in the last
    two (so T=4 still works), then global pooling and a linear classifier. `remove_static` subtracts the
    clip's mean frame first."""

    def __init__(self, num_classes: int = 400, width: int = 16, dropout: float = 0.0,
                 head_act: str = "none", in_channels: int = 3, remove_static: bool = True) -> None:
        super().__init__()
        self.remove_static = remove_static
        layers, cin = [], in_channels
        for cout, stride in ((width, (1, 2, 2)), (2 * width, (1, 2, 2)), (4 * width, (2, 2, 2)),
                             (4 * width, (2, 2, 2))):
            layers += [nn.Conv3d(cin, cout, 3, stride, 1, bias=False), batchnorm(cout), nn.ReLU(inplace=True)]
            cin = cout
        self.features = nn.Sequential(*layers)
        self.head = ResNetBasicHead([cin], num_classes, dropout=dropout, act=head_act)

    def forward(self, x: Tensor | list[Tensor]) -> Tensor:
        if isinstance(x, list):
            x = x[0]
        if self.remove_static:
            x = x - x.mean(dim=2, keepdim=True)
        return self.head([self.features(x)])
