"""The README's library example runs as printed: multigrid added to a plain PyTorch loop."""

import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def readme_example() -> str:
    text = README.read_text()
    section = text.split("## Use it in your own training loop", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_readme_example_is_about_30_lines():
    assert len(readme_example().strip().splitlines()) <= 40


def test_readme_example_trains_through_every_stage(tmp_path):
    script = tmp_path / "example.py"
    script.write_text(readme_example())
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    lines = [line for line in done.stdout.splitlines() if line.startswith("epoch ")]
    assert len(lines) == 15  # steps (0, 6, 9), max 10 -> the multigrid run lasts 15 epochs
    iterations = [int(re.search(r": (\d+) iterations", line).group(1)) for line in lines]
    assert iterations[0] < iterations[-1]  # coarse stages take fewer, larger batches
    losses = [float(line.rsplit("loss ", 1)[1]) for line in lines]
    assert all(0 < loss < 10 for loss in losses)


def test_readme_example_runs_with_slowfast_tiny(tmp_path):
    # SlowFast needs T to be a multiple of alpha=4; the README's coarsest stage asks for T=2, which the
    # schedule rounds to 4 through shape_multiple(model).
    code = readme_example()
    start = code.index("model = convert_model(nn.Sequential(")
    end = code.index("schedule = MultigridSchedule(")
    code = code[:start] + "from mgvideo.models import build_model\nmodel = convert_model(build_model(" \
        "'slowfast_tiny', 4, width_per_group=4))\n" + code[end:]
    code = code.replace("dataset_size=96", "dataset_size=16").replace("return 96", "return 16")
    script = tmp_path / "example_slowfast.py"
    script.write_text(code)
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    shapes = re.findall(r"shape \((\d+), ", done.stdout)
    assert len(shapes) == 15 and min(int(t) for t in shapes) == 4
