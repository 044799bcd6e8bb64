"""Video models: PySlowFast's C2D / I3D / Slow / SlowFast / X3D with shape-agnostic heads, VideoMAE's ViT,
and the zoo."""

from mgvideo.models.hf import from_hf_videomae, read_hf_videomae
from mgvideo.models.pyslowfast import from_pyslowfast
from mgvideo.models.resnet3d import ResNet3D, ResNet3DOptions
from mgvideo.models.slowfast import SlowFast, SlowFastOptions, pack_pathways
from mgvideo.models.vit import VideoViT
from mgvideo.models.x3d import X3D, X3DOptions
from mgvideo.models.zoo import PRESETS, Preset, build_model, shape_multiple

__all__ = [
    "PRESETS",
    "Preset",
    "ResNet3D",
    "ResNet3DOptions",
    "SlowFast",
    "SlowFastOptions",
    "VideoViT",
    "X3D",
    "X3DOptions",
    "build_model",
    "from_hf_videomae",
    "from_pyslowfast",
    "pack_pathways",
    "read_hf_videomae",
    "shape_multiple",
]
