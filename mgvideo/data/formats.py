"""Dataset formats: one row per format, holding everything mgvideo decides by a format's name (`data.dataset`,
`mgvideo data check --format`): its annotation reader, clip sampling, label kind, labels file, frame-cache
default and published training size. A new format is one reader and one `register_format` row; no other
code compares format names.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from mgvideo.data.annotations import (
    Annotations,
    read_charades,
    read_kinetics,
    read_multilabel,
    read_ssv2_list,
)
from mgvideo.errors import AnnotationError, ConfigError

# Kinetics-400 training clips as used by PySlowFast runs: 240436 / 64 gives the 3756 iterations per
# epoch logged in SlowFast issue #277 (the full K400 list has 246535; downloads miss some).
K400_TRAIN_SIZE = 240436


@dataclass(frozen=True)
class DatasetFormat:
    """One dataset format. `reader(path, root=None, errors=None, **options) -> Annotations` reads one split's
    annotation file; `labels_option` names its option for a labels file (`data.labels_file` under
    `data.root`, or `labels_default` when that is empty; a format with a default cannot be read without
    one), and `config_options` pairs further reader options with the `data.*` fields that give them."""

    name: str
    reader: Callable[..., Annotations]
    sampling: Literal["rate", "segment"] = "rate"  # VideoClipDataset: fixed frame rate, or TSN segments
    multi_label: bool = False  # sigmoid, BCE, mAP and max ensembling
    labels_option: str = ""
    labels_default: str = ""
    config_options: tuple[tuple[str, str], ...] = ()
    cache_default: Literal["none", "memory", "disk"] = "none"  # what `data.cache: auto` means
    known_size: tuple[int, str] | None = None  # training clips and what they are, for `plan` without the list
    generated: bool = False  # mgvideo generates the set (data.prepare.ensure_synthetic_data)
    plain_list: bool = False  # its lists are `path label` rows needing no other file (`data prepare`)
    recipe: bool = True  # a value of `data.dataset`
    check: bool = True  # a choice of `mgvideo data check --format` (and `read_annotations`)


FORMATS: dict[str, DatasetFormat] = {}


def register_format(fmt: DatasetFormat) -> DatasetFormat:
    """Add a row to FORMATS (a name registered twice is an error); returns it."""
    if fmt.name in FORMATS:
        raise ValueError(f"dataset format {fmt.name!r} is registered already")
    FORMATS[fmt.name] = fmt
    return fmt


def dataset_names() -> tuple[str, ...]:
    """The values `data.dataset` accepts, in registration order."""
    return tuple(name for name, fmt in FORMATS.items() if fmt.recipe)


def annotation_formats() -> tuple[str, ...]:
    """The formats `read_annotations` (and `mgvideo data check --format`) reads."""
    return tuple(name for name, fmt in FORMATS.items() if fmt.check)


def dataset_format(name: str, where: str = "") -> DatasetFormat:
    """The row of the `data.dataset` value `name`; an unknown one raises ConfigError naming the field, the
    known names and, when given, `where`."""
    fmt = FORMATS.get(name)
    if fmt is None or not fmt.recipe:
        known = ", ".join(repr(n) for n in dataset_names())
        raise ConfigError(f"{where + ': ' if where else ''}data.dataset must be one of {known}, got {name!r}")
    return fmt


def read_annotations(fmt: str, path, root=None, errors: list | None = None, **options) -> Annotations:
    """Read an annotation file in format `fmt` (one of `annotation_formats()`); `options` go to its reader
    (ssv2 needs `labels=`)."""
    row = FORMATS.get(fmt)
    if row is None or not row.check:
        known = annotation_formats()
        raise AnnotationError(f"{path}: unknown annotation format {fmt!r}; choose one of {known}")
    return row.reader(path, root, errors=errors, **options)


register_format(DatasetFormat("kinetics", read_kinetics, labels_option="classes", plain_list=True,
                              known_size=(K400_TRAIN_SIZE, "Kinetics-400's training clips")))
register_format(DatasetFormat("ssv2", read_ssv2_list, sampling="segment", labels_option="labels",
                              labels_default="labels.json", config_options=(("ext", "ssv2_ext"),),
                              known_size=(168913, "Something-Something V2's training videos")))
register_format(DatasetFormat("charades", read_charades, multi_label=True,
                              known_size=(7985, "Charades' training videos")))
register_format(DatasetFormat("synthetic", read_kinetics, labels_option="classes", plain_list=True,
                              cache_default="disk", generated=True, check=False))
register_format(DatasetFormat("multilabel", read_multilabel, multi_label=True, recipe=False))
