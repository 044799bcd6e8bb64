"""`mgvideo bench data`: one row per shape and source with the per-worker rate, the stage breakdown and the
workers needed for a model rate."""

import json

import pytest
from videos import write_video

from mgvideo.bench.data import distinct_shapes
from mgvideo.bench.data_cost import STAGES
from mgvideo.cli import main
from mgvideo.data.store import store_entry
from mgvideo.multigrid import MultigridConfig, MultigridSchedule


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    root = tmp_path_factory.mktemp("bench_data")
    for i in range(3):
        write_video(root / f"v{i}.mp4", frames=30, width=40, height=32)
        store_entry(str(root / "store"), str(root / f"v{i}.mp4"), [12, 24, 34])
    (root / "train.csv").write_text("".join(f"v{i}.mp4 {i % 2}\n" for i in range(3)))
    return root


FLAGS = ["--frames", "8", "--crop", "24", "--batch", "2", "--clips", "2"]


@pytest.mark.multiprocess
def test_rows_per_shape_and_source_with_workers_needed(videos, tmp_path, capsys):
    out = tmp_path / "rows.json"
    argv = ["bench", "data", "--list", str(videos / "train.csv"), "--store", str(videos / "store"),
            "--model-clips-per-s", "100", "--json", str(out), *FLAGS]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    rows = json.loads(out.read_text())
    shapes = distinct_shapes(MultigridSchedule(MultigridConfig(frames=8, crop=24, sampling_rate=2)), 2)
    assert [(r["frames"], r["crop"], r["source"]) for r in rows] == [
        (s.frames, s.crop, src) for _, s in shapes for src in ("original", "store")]
    full = shapes[-1][1].frames * shapes[-1][1].crop ** 2
    for row, (_, shape) in zip(rows, [s for s in shapes for _ in range(2)]):
        assert row["stage_batch"] == shape.stage_batch and row["clips_per_s"] > 0
        assert set(row["ms"]) == set(STAGES) and row["ms"]["decode"] > 0
        # the full shape's model rate, scaled by T*S^2 (an iteration costs the same at every shape)
        scaled = 100 * full / (shape.frames * shape.crop ** 2)
        assert row["model_clips_per_s"] == pytest.approx(scaled, rel=0.01)
        assert row["workers_needed"] == pytest.approx(row["model_clips_per_s"] / row["clips_per_s"], abs=0.02)
    assert sum(rows[1]["copies"].values()) > 0  # the store rows did read copies
    assert "coarsest shape from the" in printed


@pytest.mark.multiprocess
def test_a_profile_gives_the_model_rates_and_bare_json_prints(videos, tmp_path, capsys):
    shapes = distinct_shapes(MultigridSchedule(MultigridConfig(frames=8, crop=24, sampling_rate=2)), 2)
    profile = tmp_path / "profile.jsonl"
    rows = [{"frames": s.frames, "crop": s.crop, "clips_per_sec": 10.0 + k}
            for k, (_, s) in enumerate(shapes)]
    profile.write_text("".join(json.dumps(r) + "\n" for r in rows))
    argv = ["bench", "data", "--list", str(videos / "train.csv"), "--profile", str(profile), "--json", *FLAGS]
    assert main(argv) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["source"] for r in rows] == ["original"] * len(shapes)  # no store given
    assert [r["model_clips_per_s"] for r in rows] == [10.0 + k for k in range(len(shapes))]
