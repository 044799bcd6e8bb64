"""`mgvideo models` and `mgvideo profile` through the real command line."""

import json

import pytest

from mgvideo.cli import main
from mgvideo.models import PRESETS
from mgvideo.models.flops import preset_costs


def test_models_json_lists_every_preset_with_its_costs(capsys):
    assert main(["models", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["name"] for r in rows] == list(PRESETS)
    by_name = {r["name"]: r for r in rows}
    assert set(by_name["slowfast_r50_8x8"]) == {"name", "params", "gflops", "frames", "crop"}
    assert by_name["slowfast_r50_8x8"]["params"] == 34_566_488  # PyTorchVideo zoo: 34.57 M
    assert by_name["x3d_m"]["frames"] == 16 and by_name["x3d_m"]["crop"] == 224
    assert by_name["slowfast_tiny"] == preset_costs("slowfast_tiny")
    # Cost grows with the clip: SlowFast 16x8 sees twice the frames of 8x8 with the same network.
    assert by_name["slowfast_r50_16x8"]["gflops"] == pytest.approx(
        2 * by_name["slowfast_r50_8x8"]["gflops"], 0.01
    )


def test_profile_covers_every_multigrid_shape(capsys):
    args = ["profile", "r3d_tiny", "--iters", "1", "--batch-size", "1", "--bn-base-size", "1", "--json"]
    assert main(args) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]  # one object per line
    shapes = [(r["batch"], r["frames"], r["crop"]) for r in rows]
    assert len(set(shapes)) == 8  # K400 default factors: 3 short-cycle shapes x 4 stages, distinct
    with_bn = [(*shape, r["bn_groups"]) for shape, r in zip(shapes, rows)]
    assert len(with_bn) == len(set(with_bn))  # a shape recurs only with other BN groups (another stage)
    assert shapes[0] == (1, 16, 64) and rows[0]["time_ratio"] == 1.0  # the full shape first
    # Stage 0, first short-cycle slot: 8x long cycle x 2x short cycle; BN groups follow the stage batch
    # (8 clips, groups of 1), as in training.
    assert rows[shapes.index((16, 4, 32))]["bn_groups"] == 8
    for r in rows:
        assert r["sec_per_iter"] > 0 and r["clips_per_sec"] == pytest.approx(r["batch"] / r["sec_per_iter"])
        assert r["peak_mb"] > 0


def test_profile_channels_last_prints_a_table(capsys, tmp_path):
    config = tmp_path / "tiny.yaml"
    config.write_text(
        "data: {frames: 4, crop: 32, sampling_rate: 2}\nmultigrid: {long_cycle: false}\n"
        "model: {name: slowfast_tiny}\n"
    )
    assert (
        main(
            [
                "profile",
                "slowfast_tiny",
                "--config",
                str(config),
                "--iters",
                "1",
                "--batch-size",
                "2",
                "--channels-last",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "channels_last_3d" in out and "clips/s" in out
    assert len([line for line in out.splitlines() if line.strip().startswith(("2 ", "4 ", "8 "))]) == 3


def test_profile_rejects_unknown_model(capsys):
    assert main(["profile", "resnet9000"]) == 2
    assert "resnet9000" in capsys.readouterr().err


def test_profile_reports_a_shape_the_model_cannot_train_on(capsys, tmp_path):
    config = tmp_path / "tiny.yaml"
    config.write_text("data: {frames: 4, crop: 32}\nmultigrid: {long_cycle: false}\n")
    # Batch 1 at crop 32: res5 is 1x1x1, and training-mode BN cannot normalise a single value.
    assert main(["profile", "slowfast_tiny", "--config", str(config), "--iters", "1"]) == 2
    assert "fails at batch 1, T=4, S=32" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_profile_json_stopped_by_sigint_has_written_the_rows_it_finished(tmp_path):
    import os
    import signal
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    # Enough iterations per shape that the SIGINT always lands before the last shape, even when loaded.
    cmd = [sys.executable, "-m", "mgvideo", "profile", "r3d_tiny", "--iters", "60", "--batch-size", "1",
           "--bn-base-size", "1", "--json"]
    # Started with SIGINT ignored, as a background job of a plain shell is (a time limit's nohup ... &):
    # the command must still stop on it.
    proc = subprocess.Popen(cmd, cwd=repo, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"},
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    # Plain blocking reads (the test's timeout guards them): a selector on a buffered pipe misses lines
    # already read into the buffer and waited here until the command had finished.
    lines = []
    while len(lines) < 2:  # the first two of its 10 shapes
        lines.append(proc.stdout.readline())
        assert lines[-1], proc.stderr.read()[-2000:]  # it ended before printing its rows one by one
    proc.send_signal(signal.SIGINT)
    rest, _ = proc.communicate(timeout=60)
    rows = [json.loads(line) for line in lines + rest.splitlines()]
    assert proc.returncode == 130 and 2 <= len(rows) < 8  # stopped early, every finished row written whole
    assert rows[0]["time_ratio"] == 1.0 and all(r["sec_per_iter"] > 0 for r in rows)
