"""Every list is resolved against `data.root` before training or testing: none there is one line naming the
root, the list, the count and the first paths; some missing are left out of training, or counted as failed
in evaluation under `test.max_failed_fraction`, and named at the start. A store stands in for originals."""

import logging
import os
import shutil
from pathlib import Path

import pytest
from videos import write_video

from mgvideo.cli import main
from mgvideo.config import load_config
from mgvideo.data.annotations import VideoRecord, existing_files, missing_videos
from mgvideo.data.prepare import prepare_store
from mgvideo.engine import builders, checkpoint
from mgvideo.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "configs" / "synthetic" / "tiny.yaml"
VIDEOS = 6
# One epoch at one shape, on a 2-class list of tiny videos: a run of a few iterations.
SHORT = ["data.dataset=kinetics", "data.num_classes=2", "data.cache=none", "multigrid.long_cycle=false",
         "multigrid.short_cycle=false", "solver.max_epoch=1", "solver.steps=[0]", "solver.warmup_epochs=0",
         "train.precise_bn_batches=0"]


def make_root(root: Path, listed: str = "videos", absent: tuple[int, ...] = ()) -> Path:
    """VIDEOS tiny videos under root/videos (less `absent`), listed in train.csv and val.csv (the first 4)
    as `listed/v{i}.mp4`."""
    (root / "videos").mkdir(parents=True)
    for i in range(VIDEOS):
        if i not in absent:
            write_video(root / "videos" / f"v{i}.mp4", frames=20, width=40, height=32)
    rows = [f"{listed}/v{i}.mp4 {i % 2}\n" for i in range(VIDEOS)]
    (root / "train.csv").write_text("".join(rows))
    (root / "val.csv").write_text("".join(rows[:4]))
    return root


def config(root: Path, *extra: str):
    return load_config(TINY, [f"data.root={root}", *SHORT, *extra])


def train_args(root: Path, *extra: str) -> list[str]:
    return ["train", str(TINY), "--out", str(root / "run"), f"data.root={root}", *SHORT, *extra]


def one_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Traceback" not in err[0], err
    return err[0]


def test_a_list_whose_paths_all_miss_is_one_line_before_any_work(tmp_path, capsys):
    root = make_root(tmp_path / "data", listed="clips")  # the list says clips/, the videos are in videos/
    assert main(train_args(root, "data.workers=1")) == 2
    line = one_line(capsys)
    assert f"none of the {VIDEOS} videos listed in {root / 'train.csv'} (data.train_list)" in line
    assert f"data.root={root}" in line and "clips/v0.mp4, clips/v1.mp4, clips/v2.mp4, +3 more" in line
    assert f"({root / 'clips'} is not a folder)" in line
    assert not (root / "run").exists()


def test_missing_training_videos_are_left_out_and_named_and_the_run_trains(tmp_path, caplog):
    root = make_root(tmp_path / "data", absent=(1, 4))
    cfg = config(root)
    train_set = builders.build_dataset(cfg, "train", builders.build_schedule(cfg).full_shape(2))
    assert [os.path.basename(r.path) for r in train_set.records] == ["v0.mp4", "v2.mp4", "v3.mp4", "v5.mp4"]
    assert train_set.missing == [str(root / "videos" / "v1.mp4"), str(root / "videos" / "v4.mp4")]
    line = builders.missing_line(cfg, "train", train_set)
    assert line == (f"train list {root / 'train.csv'}: 2 of 6 videos do not resolve under data.root={root}; "
                    "left out of training: videos/v1.mp4, videos/v4.mp4")
    (root / "val.csv").write_text("videos/v0.mp4 0\nvideos/v3.mp4 1\n")
    with caplog.at_level(logging.WARNING):
        assert main(train_args(root)) == 0
    assert "skipping unreadable video" not in caplog.text  # never tried: nothing to skip mid-run


def test_missing_validation_videos_are_refused_at_the_start_beyond_the_failure_fraction(tmp_path, capsys):
    root = make_root(tmp_path / "data", absent=(2,))  # 1 of the 4 validation videos: over 0.05
    assert main(train_args(root)) == 2
    line = one_line(capsys)
    assert f"data.val_list: 1 of the 4 videos listed in {root / 'val.csv'} (data.val_list) do not " in line
    assert "more than test.max_failed_fraction=0.05 of them: videos/v2.mp4" in line
    assert not (root / "run").exists()  # refused before training, not at the first evaluation


def test_missing_validation_videos_within_the_fraction_count_as_failed_from_the_start(tmp_path):
    root = make_root(tmp_path / "data", absent=(2,))
    cfg = config(root, "test.max_failed_fraction=0.5")
    val_set = builders.build_dataset(cfg, "val", builders.build_schedule(cfg).full_shape(2))
    assert val_set.num_videos == 4 and val_set.unreadable.tolist() == [False, False, True, False]
    assert val_set.missing == [str(root / "videos" / "v2.mp4")]
    line = builders.missing_line(cfg, "val", val_set)
    assert "val list" in line and "1 of 4 videos" in line and "counted as failed at each evaluation" in line


def test_the_test_command_resolves_its_list_before_decoding(tmp_path, capsys):
    root = make_root(tmp_path / "data", absent=(0, 3))
    cfg = config(root)
    checkpoint.save(builders.build_network(cfg, 2).state_dict(), tmp_path / "model.pt")
    args = ["test", str(TINY), str(tmp_path / "model.pt"), "--out", str(tmp_path / "test"),
            f"data.root={root}", *SHORT, "data.test_list=val.csv"]
    assert main(args) == 2
    line = one_line(capsys)
    assert "data.test_list: 2 of the 4 videos" in line and "videos/v0.mp4, videos/v3.mp4" in line
    assert not (tmp_path / "test").exists()


def test_a_node_with_only_the_store_is_not_refused(tmp_path):
    root = make_root(tmp_path / "data")
    store = tmp_path / "store"
    videos = [str(root / "videos" / f"v{i}.mp4") for i in range(VIDEOS)]
    assert prepare_store(videos[:4], str(store), [24, 32], root=str(root))["done"] == 4
    shutil.rmtree(root / "videos")  # the store travels without the originals
    cfg = config(root, f"data.store={store}")
    train_set = builders.build_dataset(cfg, "train", builders.build_schedule(cfg).full_shape(2))
    assert train_set.num_videos == 4 and train_set.missing == videos[4:]  # neither stored nor there
    assert train_set[(0, builders.build_schedule(cfg).full_shape(2))].skipped == 0  # served by the store


def test_frame_lists_are_checked_by_their_first_frame(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "1.jpg").write_bytes(b"")
    frames = {v: tuple(str(tmp_path / v / f"{i}.jpg") for i in (1, 2)) for v in "ab"}
    records = [VideoRecord(frames[v][0], (0,), frame_paths=frames[v]) for v in "ab"]
    assert missing_videos(records) == [1]
    assert missing_videos(records, stored=lambda path: True) == [1]  # a store holds no frame lists


@pytest.mark.parametrize("files", [3, 40])  # looked up one by one, or by one listing of the folder
def test_existing_files_agrees_with_os_path_exists(tmp_path, files):
    (tmp_path / "f").mkdir()
    for i in range(0, files, 2):
        (tmp_path / "f" / f"{i}.mp4").write_bytes(b"")
    paths = [str(tmp_path / "f" / f"{i}.mp4") for i in range(files)] + [str(tmp_path / "nowhere" / "x.mp4")]
    assert existing_files(paths) == {p for p in paths if os.path.exists(p)}


def test_build_dataset_refuses_an_unresolved_list_with_config_error(tmp_path):
    root = make_root(tmp_path / "data", listed="clips")
    cfg = config(root)
    with pytest.raises(ConfigError, match=r"^data.root: none of the 4 videos listed in .*val.csv"):
        builders.build_dataset(cfg, "val", builders.build_schedule(cfg).full_shape(2))
