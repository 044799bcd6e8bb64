"""Every shipped recipe loads, builds its schedule and its model; the multigrid recipes reproduce the
reference's rewritten solver steps (spec §1.5, §1.6)."""

from pathlib import Path

import pytest
import torch

from mgvideo.config import load_config, resolve_recipe
from mgvideo.engine import builders
from mgvideo.engine.device import per_device_batch
from mgvideo.models import PRESETS

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
RECIPES = sorted(CONFIGS.rglob("*.yaml"))


def test_recipes_exist():
    names = {str(p.relative_to(CONFIGS)) for p in RECIPES}
    for model in ("i3d_r50", "i3d_nl_r50", "slowfast_r50_8x8"):
        assert {f"kinetics/{model}_baseline.yaml", f"kinetics/{model}_multigrid.yaml"} <= names
    for data in ("ssv2", "charades"):
        for schedule in ("baseline", "multigrid"):
            assert f"{data}/slowfast_r50_16x8_{schedule}.yaml" in names
    assert {"synthetic/tiny.yaml", "synthetic/demo.yaml", "synthetic/bench.yaml"} <= names


def load(path: Path):
    """A trainer recipe; bench*.yaml also have a `bench:` section, read by the bench's own loader."""
    if path.name.startswith("bench"):
        from mgvideo.bench.tta import load_bench

        return load_bench(path)[1]
    return load_config(path)


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: str(p.relative_to(CONFIGS)))
def test_recipe_builds_schedule_and_model(path):
    cfg = load(path)
    schedule = builders.build_schedule(cfg)
    assert schedule.max_epoch > 0 and schedule.stages
    preset = PRESETS[cfg.model.name]
    synthetic = path.parent.name in ("synthetic", "gpu")  # sized for the synthetic set, not the preset
    assert (cfg.data.frames, cfg.data.crop) == (preset.frames, preset.crop) or synthetic
    with torch.device("meta"):  # full-size models without allocating their weights
        model = builders.build_network(cfg, cfg.data.num_classes)
    assert sum(p.numel() for p in model.parameters()) > 0
    assert per_device_batch(cfg, 1) == cfg.solver.batch_size


@pytest.mark.parametrize(
    "name, steps, max_epoch",
    [
        ("kinetics/slowfast_r50_8x8_multigrid",
         [0, 73, 110, 142, 158, 205, 228, 248, 259, 291, 308, 322, 329, 343], 358),
        ("charades/slowfast_r50_16x8_multigrid", [0, 31, 47, 60, 67, 73, 76, 79, 80, 83], 86),
        ("ssv2/slowfast_r50_16x8_multigrid", [0, 11, 16, 21, 24, 27, 28, 30, 30, 31], 33),
        ("kinetics/slowfast_r50_8x8_baseline", [0, 94, 154, 196], 239),
    ],
)
def test_reference_schedules(name, steps, max_epoch):
    schedule = builders.build_schedule(load_config(resolve_recipe(name)))
    assert list(schedule.steps) == steps and schedule.max_epoch == max_epoch


def test_bench_recipe_keeps_t4_in_the_coarsest_stage():
    schedule = builders.build_schedule(load(CONFIGS / "synthetic" / "bench.yaml"))
    assert min(stage.frames for stage in schedule.stages) == 4
