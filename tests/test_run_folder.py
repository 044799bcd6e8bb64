"""What a run folder holds, read as a new user reads it: a text log across resumes, the bad videos named,
per-video validation results, one iteration saving, the epochs explained, plots with their keys."""

import json
from pathlib import Path

import pytest

from mgvideo.cli import main
from mgvideo.config import load_config
from mgvideo.data import prepare, synthetic
from mgvideo.engine.plots import shapes_figure
from mgvideo.engine.records import TrainRecord, read_records

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "configs" / "synthetic" / "tiny.yaml"
SMALL = REPO / "runs" / "data" / "synthetic_small"
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """The tiny recipe on the small set plus one unreadable video, trained, then the same command again."""
    root = tmp_path_factory.mktemp("data")
    prepare.ensure_synthetic_data(load_config(TINY, [f"data.root={SMALL}"]))
    (root / "bad.mp4").write_bytes(b"")
    rows = [r.split() for r in (SMALL / "train.csv").read_text().splitlines()]
    (root / "train.csv").write_text("bad.mp4 3\n" + "".join(f"{SMALL / p} {label}\n" for p, label in rows))
    val = (SMALL / "val.csv").read_text().splitlines()
    (root / "val.csv").write_text("".join(f"{SMALL / r}\n" for r in val))
    out = root / "run"
    args = ["train", str(TINY), "--out", str(out), "data.dataset=kinetics", f"data.root={root}",
            "data.cache=none"]
    assert main(args) == 0
    assert main(args) == 0  # resumes the finished run
    return out


def test_train_log_holds_what_the_console_said_across_resumes(run):
    text = (run / "train.log").read_text()
    for line in ("skipping unreadable video", "bad.mp4", "eval after step", "skipped 1 unreadable videos",
                 "resumed from"):
        assert line in text, line
    assert text.count("skipping unreadable video") == 1


def test_val_hits_name_their_videos(run):
    hits = json.loads((run / "val_hits.json").read_text())
    val = [line.split()[0] for line in (SMALL / "val.csv").read_text().splitlines()]
    assert hits["videos"] == [str(SMALL / v) for v in val]
    assert len(hits["hits"]) == len(hits["labels"]) == len(hits["predicted"]) == len(val)
    assert hits["hits"] == [int(p == y) for p, y in zip(hits["predicted"], hits["labels"])]


def test_summary_has_one_iteration_saving_and_explains_its_epochs(run):
    summary = json.loads((run / "summary.json").read_text())
    assert "schedule_iteration_saving" not in summary
    assert summary["iteration_saving"] == round(summary["baseline_iterations"] / summary["iterations"], 3)
    assert (summary["epochs"], summary["baseline_epochs"]) == (8, 5)
    assert summary["skipped_videos"] == 1 and summary["unreadable_videos"][0].endswith("bad.mp4")


def test_shapes_plot_has_a_colourbar_for_its_colours(run):
    its = [r for r in read_records(run / "metrics.jsonl") if isinstance(r, TrainRecord)]
    fig = shapes_figure(its)
    assert len(fig.axes) == 2 and fig.axes[1].get_ylabel() == "clips per batch (per device)"


def test_progress_bar_labels_the_clip_shape(tmp_path, capfd):
    from mgvideo.engine.runlog import RunLog

    log = RunLog(tmp_path, True, 0, 10, 0)
    log.progress(5, 2, "T=4 S=32", 12.0)
    log.close()
    assert "stage 2, clips T=4 S=32, 12.0 clips/s" in capfd.readouterr().err


def test_data_generation_shows_progress(tmp_path, capfd):
    synthetic.generate_with(str(tmp_path), 0, synthetic.SizeSpec(1, 1, 1, 1, 1, 1))
    err = capfd.readouterr().err
    assert "generating synthetic train videos" in err and "generating synthetic val videos" in err


def test_the_test_command_says_where_its_files_went(run, capsys):
    assert main(["test", str(run / "config.yaml"), str(run / "model_final.pt")]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out)["count"] == 20
    assert f"wrote {run / 'test' / 'test_summary.json'} and {run / 'test' / 'per_class.csv'}" in err
    assert (run / "test" / "per_class.csv").exists()


def test_demo_says_how_big_its_frame_cache_is_and_where(tmp_path):
    from mgvideo.commands.demo import RECIPE, cache_line
    from mgvideo.config import resolve_recipe

    (tmp_path / "videos").mkdir()
    (tmp_path / "videos" / "a.mp4").write_bytes(b"0" * 2_000_000)
    (tmp_path / ".frame_cache").mkdir()
    with open(tmp_path / ".frame_cache" / "a.frames", "wb") as f:
        f.truncate(1_500_000_000)  # sparse: the size a user sees in `ls`, without the disk use
    line = cache_line(load_config(resolve_recipe(RECIPE), [f"data.root={tmp_path}"]))
    assert line.startswith(f"frame cache: 1.50 GB of decoded frames in {tmp_path / '.frame_cache'}")
    assert "(the videos: 2 MB)" in line and "data.cache=none" in line
