"""The VideoMAE ViT: preset sizes equal Hugging Face's, any tubelet/patch multiple runs, position tables
interpolate in 3-D, attention's cost is counted, the schedule rounds shapes, and vit_tiny trains under the
full multigrid schedule."""

import json
from pathlib import Path

import pytest
import torch
from transformers import VideoMAEConfig, VideoMAEForVideoClassification
from transformers.models.videomae.modeling_videomae import get_sinusoid_encoding_table

from mgvideo.cli import main
from mgvideo.config import load_config
from mgvideo.engine import builders, checkpoint
from mgvideo.engine.trainer import train
from mgvideo.errors import ScheduleError
from mgvideo.models import PRESETS, build_model
from mgvideo.models.flops import clip_cost_fn, count_gmacs
from mgvideo.models.vit import DropPath, sinusoid_table
from mgvideo.multigrid.schedule import MultigridConfig, MultigridSchedule

REPO = Path(__file__).resolve().parents[1]
SIZES = {"videomae_vit_s16": (384, 12, 6), "videomae_vit_b16": (768, 12, 12),
         "videomae_vit_l16": (1024, 24, 16)}


def test_models_json_params_equal_hugging_face(capsys):
    assert main(["models", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    for name, (dim, depth, heads) in SIZES.items():
        config = VideoMAEConfig(hidden_size=dim, num_hidden_layers=depth, num_attention_heads=heads,
                                intermediate_size=4 * dim, num_labels=400)
        with torch.device("meta"):
            hf = VideoMAEForVideoClassification(config)
        assert rows[name]["params"] == sum(p.numel() for p in hf.parameters()), name
        assert (rows[name]["frames"], rows[name]["crop"]) == (16, 224)
    assert rows["videomae_vit_b16"]["gflops"] == pytest.approx(180, rel=0.01)  # VideoMAE: 180 G per view


def test_every_tubelet_and_patch_multiple_runs_and_others_are_refused():
    torch.manual_seed(0)
    model = build_model("vit_tiny", 5).train()
    for frames, height, width in [(16, 48, 48), (2, 8, 8), (4, 32, 24), (8, 56, 40)]:
        model.zero_grad()
        logits = model(torch.randn(2, 3, frames, height, width))
        assert logits.shape == (2, 5)
        logits.sum().backward()
        assert model.patch_embed.proj.weight.grad.abs().sum() > 0
    logits = model.eval()(torch.randn(2, 3, 4, 16, 16))
    assert not torch.allclose(logits.sum(1), torch.ones(2), atol=1e-3)  # eval mode: logits, as the CNNs
    with pytest.raises(ValueError, match="clip 5x48x48 is not a multiple of tubelet 2"):
        model(torch.randn(1, 3, 5, 48, 48))
    with pytest.raises(ValueError, match="patch 8"):
        model(torch.randn(1, 3, 4, 48, 44))


def test_native_position_table_is_videomae_and_other_grids_interpolate_it():
    model = build_model("vit_tiny", 5)
    native = model.position_embedding((8, 6, 6))
    torch.testing.assert_close(native, get_sinusoid_encoding_table(8 * 6 * 6, 96))
    torch.testing.assert_close(sinusoid_table(10, 6), get_sinusoid_encoding_table(10, 6))
    half = model.position_embedding((4, 3, 3))  # a 2x coarser grid: each token averages a 2x2x2 block
    grid = native.reshape(8, 6, 6, 96)
    assert half.shape == (1, 36, 96)
    torch.testing.assert_close(half[0, 0], grid[:2, :2, :2].mean((0, 1, 2)))
    torch.testing.assert_close(half[0, -1], grid[6:, 4:, 4:].mean((0, 1, 2)))


def test_per_grid_position_tables_are_videomae_tables_of_each_grids_own_length():
    model = build_model("vit_tiny", 5, pos_embed="per_grid")
    native = model.position_embedding((8, 6, 6))
    torch.testing.assert_close(native, get_sinusoid_encoding_table(8 * 6 * 6, 96))
    coarse = model.position_embedding((2, 3, 3))
    torch.testing.assert_close(coarse, get_sinusoid_encoding_table(18, 96))
    assert model.position_embedding((2, 3, 3)) is coarse  # made once per grid
    interpolated = build_model("vit_tiny", 5).position_embedding((2, 3, 3))
    assert not torch.allclose(coarse, interpolated)
    clip = torch.randn(2, 3, 4, 48, 48)
    assert model(clip).shape == (2, 5)
    with pytest.raises(ValueError, match="pos_embed must be one of"):
        build_model("vit_tiny", 5, pos_embed="learned")


def test_drop_path_drops_whole_samples_in_training_only():
    torch.manual_seed(0)
    drop, x = DropPath(0.5), torch.ones(64, 3, 4)
    out = drop(x)
    kept = out[:, 0, 0]
    assert set(kept.tolist()) == {0.0, 2.0} and (out == kept[:, None, None]).all()
    assert torch.equal(drop.eval()(x), x)


def test_flop_count_includes_attention():
    model = build_model("vit_tiny", 10)
    tokens, dim, depth = 8 * 6 * 6, 96, 4
    linear = tokens * (3 * 2 * 8 * 8) * dim + depth * tokens * 12 * dim**2 + dim * 10
    attention = depth * 2 * tokens**2 * dim  # q·kᵀ and attention·v
    assert count_gmacs(model, (1, 3, 16, 48, 48)) * 1e9 == pytest.approx(linear + attention, rel=1e-6)


def test_schedule_rounds_to_tubelet_and_patch_multiples():
    cfg = MultigridConfig(frames=16, crop=48, steps=(0, 14, 18), max_epoch=20, shape_multiple=(2, 8))
    schedule = MultigridSchedule(cfg)
    slots = [(stage.batch_factor, slot) for stage in schedule.stages for slot in stage.slots]
    assert all(s.frames % 2 == 0 and s.crop % 8 == 0 for _, s in slots)
    assert {s.crop for _, s in slots} == {24, 32, 48} and {s.frames for _, s in slots} == {4, 8, 16}
    for stage in schedule.stages:  # long-cycle batches keep the token count of the full shape
        tokens = stage.batch_factor * (stage.frames // 2) * (stage.crop // 8) ** 2
        assert tokens == pytest.approx(8 * 6 * 6, rel=0.15)
    unrounded = MultigridSchedule(MultigridConfig(frames=16, crop=48, steps=(0, 14, 18), max_epoch=20))
    assert {s.crop for st in unrounded.stages for s in st.slots} == {24, 34, 48}
    # Attention makes small token grids cheaper than T·S² says.
    assert schedule.flop_ratio(clip_cost_fn("vit_tiny")) < schedule.flop_ratio()
    with pytest.raises(ScheduleError, match="shape_multiple"):
        MultigridSchedule(MultigridConfig(frames=16, crop=44, shape_multiple=(2, 8)))


def test_plan_shows_rounded_shapes_and_the_measured_flop_ratio(capsys):
    assert main(["plan", "--config", str(REPO / "configs" / "synthetic" / "bench_vit.yaml"),
                 "--dataset-size", "2400", "--devices", "1"]) == 0
    out = capsys.readouterr().out
    # Stage 0: 4 frames at crops 16 and 24 (not 23), batch 16 x 7 x 2 and 16 x 7.
    assert "(224,4,16) (112,4,24)" in out
    assert "counted on vit_tiny" in out


def test_recipe_shape_multiple_comes_from_the_model():
    cfg = load_config(REPO / "configs" / "kinetics" / "videomae_vit_b16_multigrid.yaml")
    assert builders.run_shape_multiple(cfg) == (2, 16)
    schedule = builders.build_schedule(cfg)
    assert all(s.frames % 2 == 0 and s.crop % 16 == 0 for st in schedule.stages for s in st.slots)
    assert PRESETS[cfg.model.name].family == "vit"


@pytest.mark.slow
def test_vit_tiny_trains_under_the_full_multigrid_schedule(tmp_path):
    """AdamW, layer decay and no BN: every stage and short-cycle shape runs, evaluation works."""
    cfg = load_config(REPO / "configs" / "synthetic" / "tiny.yaml", [
        f"data.root={REPO / 'runs' / 'data' / 'synthetic_small'}", "model.name=vit_tiny",
        "model.options={embed_dim: 32, depth: 2, num_heads: 2, frames: 8, crop: 32, drop_path: 0.1}",
        "solver.optimizer=adamw", "solver.base_lr=0.001", "solver.layer_decay=0.75",
        "solver.bn_weight_decay=false", "solver.lr_batch_scaling=sqrt", "solver.weight_decay=0.05",
    ])
    summary = train(cfg, tmp_path)
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in records if r["kind"] == "train"]
    assert len({r["stage"] for r in steps}) == len(builders.build_schedule(cfg).stages)
    shapes = {(r["frames"], r["crop"]) for r in steps}
    assert {f for f, _ in shapes} == {2, 4, 8} and {c for _, c in shapes} == {16, 24, 32}
    assert all(r["frames"] % 2 == 0 and r["crop"] % 8 == 0 for r in steps)
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in steps)
    assert 0 <= summary["val"]["top1"] <= 100
    weights = checkpoint.model_state(tmp_path / "model_final.pt")
    model = builders.build_network(cfg, 20)
    checkpoint.load_model_weights(model, weights, "model_final.pt")


def test_bn_plans_are_a_no_op_on_a_vit():
    """No sub-batch BN and no cross-device BN: even a sync plan needs no process group."""
    from mgvideo.multigrid.batchnorm import BNPlan, convert_model, has_batchnorm, set_bn_groups

    model = convert_model(build_model("vit_tiny", 5))
    assert not has_batchnorm(model)
    assert set_bn_groups(model, BNPlan(groups=4)) == 0
    assert set_bn_groups(model, BNPlan(sync_size=2)) == 0  # torch.distributed is not initialised here


def test_the_vit_bench_options_build_what_they_name():
    from mgvideo.bench import tta
    from mgvideo.multigrid.lr import lr_at

    spec, cfg = tta.load_bench(REPO / "mgvideo/configs/synthetic/bench_vit.yaml")
    runs = {name: tta.variant_config(cfg, spec, name, 0)
            for name in ["multigrid", "multigrid+noshort", "multigrid+tpt", "multigrid+pergrid",
                         "multigrid+sqrt", "multigrid+ef15", "multigrid+sqrt+ef15"]}
    default = builders.build_schedule(runs["multigrid"])
    assert {len(s.slots) for s in default.stages} == {3} and default.stages[0].crop == 24
    no_short = builders.build_schedule(runs["multigrid+noshort"])
    assert [s.crop for s in no_short.stages] == [s.crop for s in default.stages]
    assert {len(s.slots) for s in no_short.stages} == {1}
    tpt = builders.build_schedule(runs["multigrid+tpt"])  # temporal-first: fewer frames, the full crop
    assert {s.crop for s in tpt.stages} == {32} and {len(s.slots) for s in tpt.stages} == {1}
    assert [s.frames for s in tpt.stages[:4]] == [4, 8, 8, 16]
    for name, rule in [("multigrid+pergrid", "per_grid"), ("multigrid", "interpolate")]:
        model = runs[name].model
        assert build_model(model.name, 20, **model.options).pos_embed_rule == rule
    # The arm since issue 29: AdamW's LR ignores the batch, 2x the baseline's epochs; +sqrt+ef15 was the arm.
    arm = runs["multigrid"]
    assert arm.solver.lr_batch_scaling == "none" and arm.multigrid.epoch_factor == 2
    none = builders.build_lr_config(runs["multigrid"])
    sqrt = builders.build_lr_config(runs["multigrid+sqrt"])
    factor = default.stage_at(5.0).batch_factor
    assert factor > 1 and lr_at(5.0, default, sqrt) == pytest.approx(lr_at(5.0, default, none) * factor**0.5)
    previous = runs["multigrid+sqrt+ef15"]
    assert previous.solver.lr_batch_scaling == "sqrt" and previous.multigrid.epoch_factor == 1.5
    assert builders.build_schedule(runs["multigrid+ef15"]).max_epoch == default.max_epoch * 3 // 4
