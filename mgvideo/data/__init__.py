"""Video data: decoding, clip sampling, annotation readers, the dataset formats (`formats.FORMATS`), the
shape-driven dataset and its loader."""

from mgvideo.data.annotations import (
    Annotations,
    VideoRecord,
    read_charades,
    read_kinetics,
    read_multilabel,
    read_ssv2,
)
from mgvideo.data.datasets import Sample, VideoClipDataset
from mgvideo.data.decode import PyAVReader, VideoReader, open_video, select_backend
from mgvideo.data.formats import DatasetFormat, dataset_format, read_annotations, register_format
from mgvideo.data.loader import Batch, build_loader, collate, to_device

__all__ = [
    "Annotations",
    "Batch",
    "DatasetFormat",
    "PyAVReader",
    "Sample",
    "VideoClipDataset",
    "VideoReader",
    "VideoRecord",
    "build_loader",
    "collate",
    "dataset_format",
    "open_video",
    "read_annotations",
    "read_charades",
    "read_kinetics",
    "read_multilabel",
    "read_ssv2",
    "register_format",
    "select_backend",
    "to_device",
]
