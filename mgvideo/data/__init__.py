"""Video data: decoding, clip sampling, annotation readers, the shape-driven dataset and its loader."""

from mgvideo.data.annotations import (
    Annotations,
    VideoRecord,
    read_annotations,
    read_charades,
    read_kinetics,
    read_multilabel,
    read_ssv2,
)
from mgvideo.data.datasets import Sample, VideoClipDataset
from mgvideo.data.decode import PyAVReader, VideoReader, open_video, select_backend
from mgvideo.data.loader import Batch, build_loader, collate, to_device

__all__ = [
    "Annotations",
    "Batch",
    "PyAVReader",
    "Sample",
    "VideoClipDataset",
    "VideoReader",
    "VideoRecord",
    "build_loader",
    "collate",
    "open_video",
    "read_annotations",
    "read_charades",
    "read_kinetics",
    "read_multilabel",
    "read_ssv2",
    "select_backend",
    "to_device",
]
