"""The dataset-format registry: every row is complete, and a new format is one reader plus one row: the
config accepts it, the dataset builder reads it, `plan` and the frame cache consult it, `data check` reads
it, with no other file edited."""

import dataclasses
import json
from pathlib import Path

import pytest
from videos import write_video

from mgvideo.cli import main
from mgvideo.commands.plan import recipe_dataset_size
from mgvideo.config import DataConfig, load_config
from mgvideo.data import Annotations, VideoRecord, read_annotations
from mgvideo.data.formats import (
    FORMATS,
    DatasetFormat,
    annotation_formats,
    dataset_format,
    dataset_names,
    register_format,
)
from mgvideo.data.prepare import build_frame_cache
from mgvideo.engine.builders import build_dataset, build_schedule
from mgvideo.errors import AnnotationError, ConfigError


def test_every_registered_row_is_complete():
    data_fields = {f.name for f in dataclasses.fields(DataConfig)}
    assert FORMATS and DataConfig().dataset in dataset_names()
    for name, fmt in FORMATS.items():
        assert fmt.name == name and callable(fmt.reader), name
        assert fmt.sampling in ("rate", "segment") and fmt.cache_default in ("none", "memory", "disk"), name
        assert fmt.recipe or fmt.check, f"{name} is neither a data.dataset value nor a data check format"
        assert fmt.labels_option or not fmt.labels_default, f"{name}: a default labels file but no option"
        assert all(key in data_fields for _, key in fmt.config_options), name
        if fmt.known_size is not None:
            size, what = fmt.known_size
            assert size > 0 and what, name
    assert set(annotation_formats()) | set(dataset_names()) == set(FORMATS)


def test_the_shipped_formats_and_their_properties():
    assert dataset_names() == ("kinetics", "ssv2", "charades", "synthetic")
    assert annotation_formats() == ("kinetics", "ssv2", "charades", "multilabel")
    assert [n for n in dataset_names() if dataset_format(n).multi_label] == ["charades"]
    assert [n for n in dataset_names() if dataset_format(n).sampling == "segment"] == ["ssv2"]
    assert [n for n in dataset_names() if dataset_format(n).generated] == ["synthetic"]
    assert [n for n in dataset_names() if dataset_format(n).cache_default == "disk"] == ["synthetic"]
    assert [n for n in dataset_names() if dataset_format(n).plain_list] == ["kinetics", "synthetic"]


def test_an_unknown_name_is_a_config_error_naming_the_field_and_the_known_names():
    with pytest.raises(ConfigError, match=r"data\.dataset must be one of 'kinetics', 'ssv2', 'charades', "
                                          r"'synthetic', got 'toy'"):
        dataset_format("toy")
    with pytest.raises(ConfigError, match=r"^command line: data\.dataset must be one of 'kinetics'"):
        load_config(None, ["data.dataset=toy"])
    with pytest.raises(ConfigError, match="data.dataset"):
        load_config(None, ["data.dataset=multilabel"])  # an annotation format, not a recipe's dataset
    with pytest.raises(AnnotationError, match="unknown annotation format 'synthetic'"):
        read_annotations("synthetic", "list.txt")  # a recipe's dataset: its lists are Kinetics lists
    with pytest.raises(ValueError, match="registered already"):
        register_format(DatasetFormat("kinetics", read_annotations))


def read_toy(path, root=None, errors=None, vocab=None) -> Annotations:
    """A toy format: `path|label id` rows; `vocab=` an optional file of class names."""
    records = []
    for n, line in enumerate(Path(path).read_text().splitlines(), 1):
        video, label = line.split("|")
        records.append(VideoRecord(str(Path(root or Path(path).parent) / video), int(label), str(path), n))
    names = Path(vocab).read_text().split() if vocab else []
    return Annotations(records, len(names) or 1 + max(r.label for r in records), False, names)


@pytest.fixture
def toy():
    fmt = register_format(DatasetFormat("toy", read_toy, sampling="segment", labels_option="vocab",
                                        cache_default="disk", known_size=(123, "toy clips")))
    try:
        yield fmt
    finally:
        FORMATS.pop("toy")


def test_a_new_format_is_one_reader_plus_one_row(toy, tmp_path, capsys):
    for name in ("a.mp4", "b.mp4"):
        write_video(tmp_path / name, frames=8)
    (tmp_path / "train.txt").write_text("a.mp4|0\nb.mp4|1\n")
    (tmp_path / "vocab.txt").write_text("left\nright\n")
    keys = ["data.dataset=toy", f"data.root={tmp_path}", "data.train_list=train.txt", "data.num_classes=2",
            "data.labels_file=vocab.txt", "data.frames=4", "data.crop=32", "data.sampling_rate=1"]
    cfg = load_config(None, keys)  # the config accepts it
    assert cfg.data.dataset == "toy" and not cfg.multi_label

    full = build_schedule(cfg).full_shape(1)
    dataset = build_dataset(cfg, "train", full)  # read with its reader, sampled its way
    assert [Path(r.path).name for r in dataset.records] == ["a.mp4", "b.mp4"]
    assert dataset.sampling == "segment" and dataset.num_classes == 2

    cache = build_frame_cache(cfg)  # data.cache: auto takes the row's default
    assert cache is not None and str(cache.directory).startswith(str(tmp_path))
    assert build_frame_cache(load_config(None, keys + ["data.dataset=kinetics"])) is None

    assert recipe_dataset_size(cfg) == (2, f"the videos listed in {tmp_path / 'train.txt'}")
    size, source = recipe_dataset_size(load_config(None, keys + ["data.train_list=absent.txt"]))
    assert size == 123 and source.startswith("toy clips (")  # plan's published size for the format

    assert main(["data", "check", str(tmp_path / "train.txt"), "--format", "toy", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"ok": 2, "bad": []}
    assert read_annotations("toy", tmp_path / "train.txt", vocab=tmp_path / "vocab.txt").class_names == [
        "left", "right"]

