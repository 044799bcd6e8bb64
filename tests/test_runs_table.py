"""scripts/runs_table.py: per-variant top-1, the paired change against the reference, and the stage costs
(with the share of time spent waiting for data) of run folders."""

import json
import sys
from pathlib import Path

from script_modules import load_script


def _run(folder: Path, top1: float, seconds: float, waits: tuple[float, float]) -> None:
    """A finished run: two stages of 10 iterations of 40 clips each, then one evaluation."""
    folder.mkdir(parents=True)
    lines = [{"step": 10 * (s + 1), "epoch": float(s + 1), "kind": "train", "stage": s, "frames": 4 * (s + 1),
              "crop": 16, "iterations": 10, "batch": 400, "loss": 1.0, "top1": 50.0, "lr": 0.1,
              "clips_per_s": 400 / (seconds / 2), "data_wait": wait, "time": seconds / 2 * (s + 1)}
             for s, wait in enumerate(waits)]
    lines.append({"kind": "eval", "step": 20, "epoch": 2, "samples": 800, "time": seconds, "top1": top1,
                  "count": 100, "views": 1})
    (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    (folder / "summary.json").write_text("{}")


def test_the_table_pairs_seeds_and_shows_each_stages_wait(tmp_path, monkeypatch, capsys):
    out = tmp_path / "bench"
    for seed, (ref, other) in enumerate([(60.0, 62.0), (70.0, 71.0), (65.0, 69.0)]):
        _run(out / f"seed{seed}" / "multigrid", ref, 100.0, (0.25, 0.05))
        _run(out / f"seed{seed}" / "multigrid+x", other, 80.0, (0.5, 0.0))
    (out / "seed0" / "unfinished").mkdir()  # no summary: left out
    monkeypatch.setattr(sys, "argv", ["runs_table.py", str(out)])
    load_script("runs_table").main()
    text = capsys.readouterr().out
    assert "unfinished" not in text
    row = next(line for line in text.splitlines() if line.startswith("| multigrid+x |"))
    assert "62.00 / 71.00 / 69.00 (67.33)" in row and "| +2.33 (" in row and "| 80.0 | 20 |" in row
    # 50 s per stage over 10 iterations: 5000 ms each; the waits as percentages
    head = "seed 0: ms per iteration by stage (waiting for data):"
    assert f"multigrid, {head} 0: 5000 (25 %), 1: 5000 (5 %)" in text
    assert f"multigrid+x, {head} 0: 4000 (50 %), 1: 4000 (0 %)" in text
