"""Video models: PySlowFast's C2D / I3D / Slow / SlowFast / X3D with shape-agnostic heads, and the zoo."""

from mgvideo.models.pyslowfast import from_pyslowfast
from mgvideo.models.resnet3d import ResNet3D
from mgvideo.models.slowfast import SlowFast, pack_pathways
from mgvideo.models.x3d import X3D
from mgvideo.models.zoo import PRESETS, Preset, build_model

__all__ = [
    "PRESETS",
    "Preset",
    "ResNet3D",
    "SlowFast",
    "X3D",
    "build_model",
    "from_pyslowfast",
    "pack_pathways",
]
