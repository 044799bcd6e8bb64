"""The model zoo: reference parameter counts, every multigrid shape, outputs, input forms, errors."""

import pytest
import torch

from mgvideo.errors import ConfigError
from mgvideo.models import PRESETS, SlowFast, build_model, pack_pathways
from mgvideo.models.blocks import expand_temporal_kernels
from mgvideo.models.flops import count_gmacs, count_params
from mgvideo.models.heads import output_activation
from mgvideo.multigrid import MultigridConfig, MultigridSchedule

# Parameter counts for 400 classes. Sources:
#  [pv] PyTorchVideo docs/source/model_zoo.md, Kinetics-400 table, "Params (M)" column (2 decimals).
#  [zoo] PySlowFast MODEL_ZOO.md, X3D table, "parameters (M)" column (1 decimal).
#  [nl] i3d + non-local blocks counted from PySlowFast's Nonlocal builder (see test below).
REFERENCE_PARAMS_M = {
    "c2d_r50_8x8": (24.33, 2),  # [pv] C2D R50 8x8
    "i3d_r50_8x8": (28.04, 2),  # [pv] I3D R50 8x8
    "slow_r50_8x8": (32.45, 2),  # [pv] Slow R50 8x8
    "slowfast_r50_4x16": (34.48, 2),  # [pv] SlowFast R50 4x16
    "slowfast_r50_8x8": (34.57, 2),  # [pv] SlowFast R50 8x8
    "slowfast_r50_16x8": (34.57, 2),  # same network as 8x8 (only T differs): [pv] SlowFast R50 8x8
    "x3d_xs": (3.79, 2),  # [pv] X3D XS
    "x3d_s": (3.79, 2),  # [pv] X3D S
    "x3d_m": (3.79, 2),  # [pv] X3D M
    "x3d_l": (6.2, 1),  # [zoo] X3D L
    "i3d_nl_r50_8x8": (35.40, 2),  # [nl]
}
# PySlowFast MODEL_ZOO.md X3D table, "FLOPs (G)" column (multiply-adds at the train crop).
REFERENCE_GFLOPS = {"x3d_xs": 0.60, "x3d_s": 1.96, "x3d_m": 4.73, "x3d_l": 18.37}
CNNS = [n for n in PRESETS if PRESETS[n].family != "vit"]  # ViTs: tests/test_vit.py
BIG = [n for n in CNNS if not n.endswith("_tiny")]
TINY = [n for n in CNNS if n.endswith("_tiny")]


def meta_model(name, **overrides):
    with torch.device("meta"):
        return build_model(name, 400, **overrides)


def schedule_shapes(name):
    p = PRESETS[name]
    sched = MultigridSchedule(MultigridConfig(frames=p.frames, crop=p.crop, sampling_rate=p.sampling_rate))
    return sorted({(slot.frames, slot.crop) for stage in sched.stages for slot in stage.slots})


@pytest.mark.parametrize("name", sorted(REFERENCE_PARAMS_M))
def test_parameter_count_matches_reference(name):
    millions, digits = REFERENCE_PARAMS_M[name]
    assert round(count_params(meta_model(name)) / 1e6, digits) == millions


def test_nonlocal_parameter_count_follows_the_reference_builder():
    # Nonlocal(dim, dim // 2): theta/phi/g 1x1x1 convs with bias, conv_out back to dim with bias, BN(dim).
    def nonlocal_params(d):
        return 3 * (d * d // 2 + d // 2) + (d // 2 * d + d) + 2 * d

    extra = 2 * nonlocal_params(512) + 3 * nonlocal_params(1024)  # res3 blocks 1,3; res4 blocks 1,3,5
    assert count_params(meta_model("i3d_nl_r50_8x8")) == count_params(meta_model("i3d_r50_8x8")) + extra


@pytest.mark.parametrize("name", sorted(REFERENCE_GFLOPS))
def test_x3d_flops_match_model_zoo(name):
    p = PRESETS[name]
    gmacs = count_gmacs(meta_model(name), (1, 3, p.frames, p.crop, p.crop))
    assert abs(gmacs - REFERENCE_GFLOPS[name]) < 0.01  # the table shows 2 decimals (XS: 0.605 here)


@pytest.mark.parametrize("name", BIG)
def test_big_presets_run_every_multigrid_shape_on_meta(name):
    # Shapes are what can break (pooling, fusion strides); meta tensors check them without compute.
    model = meta_model(name).train()
    shapes = schedule_shapes(name)
    with torch.no_grad():
        for frames, crop in shapes:
            logits = model(torch.empty(1, 3, frames, crop, crop, device="meta"))
            assert logits.shape == (1, 400), (frames, crop)
    frames, crop = shapes[0]  # backward once, at the smallest clip
    model(torch.empty(1, 3, frames, crop, crop, device="meta")).sum().backward()
    assert model.head.projection.weight.grad.shape == (400, model.head.projection.in_features)


@pytest.mark.parametrize("name", TINY)
def test_tiny_presets_train_at_every_multigrid_shape(name):
    torch.manual_seed(0)
    model = build_model(name, 5)
    shapes = schedule_shapes(name)
    assert (4, 32) in shapes and (16, 64) in shapes  # T=4 survives: no temporal downsampling kills it
    for frames, crop in shapes:
        model.zero_grad()
        logits = model(torch.randn(2, 3, frames, crop, crop))
        assert logits.shape == (2, 5)
        logits.logsumexp(1).sum().backward()
        assert model.head.projection.weight.grad.abs().sum() > 0


def test_tiny_models_see_motion():
    # Temporal kernels > 1 early on: reversing the frames of a clip must change the features.
    model = build_model("r3d_tiny", 3, dropout=0.0).eval()
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm3d):
            m.weight.data.fill_(1.0)  # undo zero-init of the final BNs so the residual branches matter
    model.head.projection.weight.data.normal_()
    clip = torch.randn(1, 3, 4, 32, 32)
    assert not torch.allclose(model(clip), model(clip.flip(2)), atol=1e-6)


def test_c3d_tiny_ignores_the_static_scene_unless_asked_not_to():
    torch.manual_seed(0)
    clip, still = torch.randn(2, 3, 8, 32, 32), torch.randn(2, 3, 1, 32, 32)  # `still`: the same every frame
    model = build_model("c3d_tiny", 5).eval()
    assert torch.allclose(model(clip), model(clip + still), atol=1e-6)
    plain = build_model("c3d_tiny", 5, remove_static=False).eval()
    assert not torch.allclose(plain(clip), plain(clip + still), atol=1e-3)


@pytest.mark.parametrize("name", ["slowfast_tiny", "r3d_tiny", "c3d_tiny", "vit_tiny"])  # one test position
def test_models_give_logits_in_both_modes_unless_asked_for_probabilities(name):
    torch.manual_seed(0)
    model = build_model(name, 7, dropout=0.0)
    assert output_activation(model) == "none"
    clip = torch.randn(2, 3, 8, 48, 48)
    labels = torch.tensor([1, 2])
    linear = model.head.projection if hasattr(model.head, "projection") else model.head
    linear.weight.data.normal_()  # logits far from a probability vector
    logits = model.eval()(clip)
    assert not torch.allclose(logits.softmax(1), logits)  # cross_entropy on eval outputs is right
    probs = build_model(name, 7, dropout=0.0, head_act="softmax")
    probs.load_state_dict(model.state_dict())
    assert output_activation(probs) == "softmax"
    torch.testing.assert_close(probs.eval()(clip), logits.softmax(1), atol=1e-5, rtol=1e-4)
    assert torch.nn.functional.cross_entropy(logits, labels) > 0


def test_sigmoid_on_request():
    clip = torch.randn(2, 3, 8, 48, 48)
    multi = build_model("r3d_tiny", 7, head_act="sigmoid").eval()(clip)
    assert ((multi > 0) & (multi < 1)).all() and not torch.allclose(multi.sum(1), torch.ones(2))


def test_eval_is_fully_convolutional_with_a_pooling_window():
    # With the reference's fixed window, a larger test clip is scored at several positions and averaged.
    torch.manual_seed(0)
    model = build_model("r3d_tiny", 4, head_pool_size=(4, 2, 2), head_act="softmax").eval()
    model.head.projection.weight.data.normal_(std=1.0)
    clip = torch.randn(1, 3, 8, 96, 96)  # res5 output is 8 x 3 x 3: 5 x 2 x 2 window positions
    feats = model.s5(model.s4(model.s3([model.pathway0_pool(model.s2(model.s1([clip]))[0])])))[0]
    windows = torch.nn.functional.avg_pool3d(feats, (4, 2, 2), stride=1).permute(0, 2, 3, 4, 1)
    expected = model.head.projection(windows).softmax(-1).mean((1, 2, 3))
    assert torch.allclose(model(clip), expected, atol=1e-6)
    global_model = build_model("r3d_tiny", 4, head_act="softmax").eval()
    global_model.load_state_dict(model.state_dict())
    assert not torch.allclose(global_model(clip), expected, atol=1e-4)


def test_slowfast_accepts_one_clip_or_pathway_list():
    torch.manual_seed(0)
    model = build_model("slowfast_tiny", 3).eval()
    clip = torch.randn(1, 3, 16, 32, 32)
    slow_index = torch.linspace(0, 15, 4).long()  # PackPathway's selection for alpha = 4
    pathways = [clip[:, :, slow_index], clip]
    assert torch.equal(pack_pathways(clip, 4)[0], pathways[0])
    assert torch.allclose(model(clip), model(pathways))
    assert torch.allclose(model([clip]), model(pathways))


def test_single_pathway_models_accept_a_list():
    model = build_model("r3d_tiny", 3).eval()
    clip = torch.randn(1, 3, 4, 32, 32)
    assert torch.allclose(model(clip), model([clip]))


def test_slowfast_rejects_frames_not_divisible_by_alpha():
    model = build_model("slowfast_tiny", 3)
    with pytest.raises(ConfigError, match="alpha"):
        model(torch.randn(1, 3, 6, 32, 32))


def test_module_names_follow_pyslowfast():
    keys = set(meta_model("slowfast_r50_8x8").state_dict())
    for key in [
        "s1.pathway0_stem.conv.weight",
        "s1.pathway1_stem.bn.running_var",
        "s1_fuse.conv_f2s.weight",
        "s2.pathway0_res0.branch1.weight",
        "s2.pathway0_res0.branch2.a.weight",
        "s4.pathway1_res5.branch2.c_bn.weight",
        "head.projection.bias",
    ]:
        assert key in keys, key
    assert "s3.pathway0_nonlocal3.conv_theta.weight" in meta_model("i3d_nl_r50_8x8").state_dict()
    x3d = set(meta_model("x3d_m").state_dict())
    assert {
        "s1.pathway0_stem.conv_xy.weight",
        "s2.pathway0_res0.branch2.se.fc1.weight",
        "head.conv_5.weight",
        "head.lin_5.weight",
    } <= x3d
    assert "s2.pathway0_res1.branch2.se.fc1.weight" not in x3d  # SE on every other block


def test_temporal_kernel_layout_is_the_references():
    assert expand_temporal_kernels([3, 1], 4, 4) == [3, 1, 3, 1]
    assert expand_temporal_kernels([1, 3], 3, 3) == [1, 3, 1]
    assert expand_temporal_kernels([3], 23, 6) == [3] * 6 + [1] * 17  # R101 res4
    i3d = meta_model("i3d_r50_8x8")
    kernels = [i3d.s4.get_submodule(f"pathway0_res{i}").branch2.a.kernel_size[0] for i in range(6)]
    assert kernels == [3, 1, 3, 1, 3, 1]
    assert i3d.s1.pathway0_stem.conv.kernel_size == (5, 7, 7)
    assert meta_model("slow_r50_8x8").s3.pathway0_res0.branch2.a.kernel_size[0] == 1


def test_every_norm_is_batchnorm3d_and_converts_to_sub_batch_bn():
    from mgvideo.multigrid.batchnorm import convert_model

    for name in CNNS:  # ViTs have LayerNorm only
        norms = [m for m in meta_model(name).modules() if "Norm" in type(m).__name__]
        assert norms and all(type(m) is torch.nn.BatchNorm3d for m in norms), name
    model = build_model("slowfast_tiny", 3)
    before = model.state_dict()
    converted = convert_model(model, bn_base_size=8)
    assert not any(type(m) is torch.nn.BatchNorm3d for m in converted.modules())
    assert converted(torch.randn(2, 3, 8, 32, 32)).shape == (2, 3)
    assert set(converted.state_dict()) == set(before)


def test_unknown_preset_and_override_raise_config_error():
    with pytest.raises(ConfigError, match="slowfast_r50_8x8"):
        build_model("slowfast_r50", 400)
    with pytest.raises(ConfigError, match="'widht'.*width_per_group"):
        build_model("r3d_tiny", 10, widht=3)
    with pytest.raises(ConfigError, match="num_classes"):
        build_model("r3d_tiny", 0)
    with pytest.raises(ConfigError, match="arch"):
        build_model("r3d_tiny", 10, arch="r2plus1d")


def test_cnn_options_are_one_object_given_whole_or_as_keywords():
    from dataclasses import fields

    from mgvideo.models import X3D, ResNet3D, ResNet3DOptions
    from mgvideo.models.options import HeadOptions, ResNetOptions
    from mgvideo.models.zoo import model_fields

    head = {f.name for f in fields(HeadOptions)}
    body = {f.name for f in fields(ResNetOptions)} - head
    for family in ("resnet", "slowfast", "x3d"):
        assert head <= set(model_fields(family)), family  # one definition of the head's options
    assert body <= set(model_fields("resnet")) and body <= set(model_fields("slowfast"))
    assert not body & (set(model_fields("x3d")) - {"num_groups"})  # X3D has no ResNet body
    tiny = ResNet3DOptions(arch="i3d_nopool", width_per_group=8, stage_depths=(1, 1, 1, 1), num_classes=5)
    torch.manual_seed(0)
    whole = ResNet3D(tiny, dropout=0.1)
    torch.manual_seed(0)
    keywords = ResNet3D(arch="i3d_nopool", width_per_group=8, stage_depths=(1, 1, 1, 1), num_classes=5,
                        dropout=0.1)
    assert whole.head.dropout.p == 0.1 and tiny.dropout == 0.5  # keywords win; the object is not changed
    for (name, a), b in zip(whole.state_dict().items(), keywords.state_dict().values()):
        assert torch.equal(a, b), name
    with pytest.raises(TypeError, match="widht"):
        X3D(widht=2.0)


def test_slowfast_supports_other_depths_and_widths():
    with torch.device("meta"):
        model = SlowFast(depth=101, width_per_group=32, num_groups=2, alpha=8, beta_inv=4, num_classes=10)
    out = model(torch.empty(1, 3, 16, 64, 64, device="meta"))
    assert out.shape == (1, 10)


def test_every_model_says_its_shape_multiple_and_slowfast_trains_at_the_readme_schedule():
    from mgvideo.models import shape_multiple

    assert shape_multiple("slowfast_tiny") == (4, 1) and shape_multiple("slowfast_r50_4x16") == (8, 1)
    assert shape_multiple("vit_tiny") == (2, 8) and shape_multiple("r3d_tiny") == (1, 1)
    sf, vit = build_model("slowfast_tiny", 4), build_model("vit_tiny", 4)
    assert shape_multiple(sf) == (4, 1) and shape_multiple(vit) == (2, 8)
    assert shape_multiple(torch.nn.Conv3d(3, 3, 1)) == (1, 1)
    # The README's schedule (8 frames: 2 in the coarsest stage) rounds to whole slow-pathway steps.
    schedule = MultigridSchedule(MultigridConfig(frames=8, crop=32, steps=(0, 6, 9), max_epoch=10,
                                                 shape_multiple=shape_multiple(sf)))
    shapes = {(s.frames, s.crop) for st in schedule.stages for s in st.slots}
    assert min(t for t, _ in shapes) == 4 and all(t % 4 == 0 for t, _ in shapes)
    sf.train()
    for frames, crop in sorted(shapes):
        assert sf(torch.randn(2, 3, frames, crop, crop)).shape == (2, 4)
