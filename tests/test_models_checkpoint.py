"""PySlowFast checkpoint import: .pyth round trips, wrong architectures, Caffe2 .pkl names and safety."""

import pickle
import re

import numpy as np
import pytest
import torch
import yaml

from mgvideo.errors import CheckpointError
from mgvideo.models import from_pyslowfast
from mgvideo.models.caffe2 import caffe2_to_pyslowfast_name
from mgvideo.models.pyslowfast import model_from_config

# Small configs in PySlowFast's own YAML vocabulary (only keys that differ from its defaults).
SLOWFAST_CFG = {
    "MODEL": {"ARCH": "slowfast", "MODEL_NAME": "SlowFast", "NUM_CLASSES": 5},
    "RESNET": {
        "DEPTH": 18,
        "WIDTH_PER_GROUP": 4,
        "NUM_BLOCK_TEMP_KERNEL": [[2, 2], [2, 2], [2, 2], [2, 2]],
        "SPATIAL_STRIDES": [[1, 1], [2, 2], [2, 2], [2, 2]],
        "SPATIAL_DILATIONS": [[1, 1], [1, 1], [1, 1], [1, 1]],
    },
    "SLOWFAST": {"ALPHA": 4, "BETA_INV": 4, "FUSION_CONV_CHANNEL_RATIO": 2, "FUSION_KERNEL_SZ": 7},
    "NONLOCAL": {"LOCATION": [[[], []]] * 4, "GROUP": [[1, 1]] * 4, "POOL": [[[1, 2, 2], [1, 2, 2]]] * 4},
    "DATA": {"NUM_FRAMES": 8, "TRAIN_CROP_SIZE": 64, "INPUT_CHANNEL_NUM": [3, 3]},
    "MULTIGRID": {"SHORT_CYCLE": True},
}
I3D_NL_CFG = {
    "MODEL": {"ARCH": "i3d", "MODEL_NAME": "ResNet", "NUM_CLASSES": 4, "HEAD_ACT": "sigmoid"},
    "RESNET": {"DEPTH": 18, "WIDTH_PER_GROUP": 4},
    "NONLOCAL": {
        "LOCATION": [[[]], [[1]], [[0]], [[]]],
        "GROUP": [[1], [2], [1], [1]],
        "INSTANTIATION": "softmax",
        "POOL": [[[1, 2, 2]]] * 4,
    },
    "DATA": {"NUM_FRAMES": 8, "TRAIN_CROP_SIZE": 64, "INPUT_CHANNEL_NUM": [3]},
}
X3D_CFG = {
    "MODEL": {"ARCH": "x3d", "MODEL_NAME": "X3D", "NUM_CLASSES": 3},
    "X3D": {"WIDTH_FACTOR": 1.0, "DEPTH_FACTOR": 1.0, "BOTTLENECK_FACTOR": 2.25, "DIM_C5": 64},
    "RESNET": {"TRANS_FUNC": "x3d_transform"},
    "DATA": {"NUM_FRAMES": 4, "TRAIN_CROP_SIZE": 64, "INPUT_CHANNEL_NUM": [3]},
}


def randomized(model):
    """Random weights and BN statistics, so that a wrong or partial load shows in the outputs."""
    torch.manual_seed(0)
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if tensor.is_floating_point():
                tensor.copy_(
                    torch.rand_like(tensor) + 0.5 if "running_var" in name else torch.randn_like(tensor)
                )
    return model.eval()


def save_pyth(path, model, cfg):
    checkpoint = {
        "model_state": model.state_dict(),
        "cfg": yaml.safe_dump(cfg),
        "epoch": 7,
        "optimizer_state": {"state": {}, "param_groups": [{"lr": 0.1, "params": [0, 1]}]},
    }
    torch.save(checkpoint, path)


@pytest.mark.parametrize("cfg", [SLOWFAST_CFG, I3D_NL_CFG, X3D_CFG], ids=["slowfast", "i3d_nl", "x3d"])
def test_pyth_round_trip_gives_identical_outputs(tmp_path, cfg):
    original = randomized(model_from_config(cfg))
    save_pyth(tmp_path / "ckpt.pyth", original, cfg)
    loaded = from_pyslowfast(tmp_path / "ckpt.pyth")
    assert not loaded.training
    clip = torch.randn(2, 3, cfg["DATA"]["NUM_FRAMES"], 64, 64)
    with torch.no_grad():
        expected, got = original(clip), loaded(clip)
    assert got.shape == (2, cfg["MODEL"]["NUM_CLASSES"])
    assert torch.equal(expected, got)
    for key, value in original.state_dict().items():
        assert torch.equal(value, loaded.state_dict()[key]), key


def test_config_picks_the_reference_head_pooling():
    no_short_cycle = {**SLOWFAST_CFG, "MULTIGRID": {"SHORT_CYCLE": False}}
    assert model_from_config(no_short_cycle).head.pool_sizes == [(2, 2, 2), (8, 2, 2)]
    assert model_from_config(SLOWFAST_CFG).head.pool_sizes == [None, None]
    assert model_from_config(I3D_NL_CFG).head.pool_sizes == [(4, 2, 2)]  # i3d pools time by 2 after res2
    assert model_from_config(X3D_CFG).head.pool_size == (4, 2, 2)


def test_num_classes_override_keeps_the_backbone(tmp_path):
    original = randomized(model_from_config(SLOWFAST_CFG))
    save_pyth(tmp_path / "k400.pyth", original, SLOWFAST_CFG)
    model = from_pyslowfast(tmp_path / "k400.pyth", num_classes=11)
    assert model.head.projection.out_features == 11
    assert torch.equal(model.s4.pathway1_res0.branch2.a.weight, original.s4.pathway1_res0.branch2.a.weight)


def test_wrong_architecture_lists_missing_unexpected_and_mismatched(tmp_path):
    model = randomized(model_from_config(I3D_NL_CFG))
    save_pyth(tmp_path / "i3d.pyth", model, I3D_NL_CFG)
    wider = {**I3D_NL_CFG, "RESNET": {"DEPTH": 18, "WIDTH_PER_GROUP": 8}}
    expected = (
        r"shape mismatches \d+\)[\s\S]*s1.pathway0_stem.conv.weight: checkpoint \(4, 3, 5, 7, 7\) vs model"
    )
    with pytest.raises(CheckpointError, match=expected):
        from_pyslowfast(tmp_path / "i3d.pyth", cfg=wider)
    state = model.state_dict()
    state["s9.extra.weight"] = torch.zeros(1)
    del state["s3.pathway0_nonlocal1.conv_g.weight"]
    torch.save({"model_state": state, "cfg": yaml.safe_dump(I3D_NL_CFG)}, tmp_path / "edited.pyth")
    with pytest.raises(CheckpointError) as err:
        from_pyslowfast(tmp_path / "edited.pyth")
    message = str(err.value)
    assert "edited.pyth" in message
    assert re.search(r"missing: s3.pathway0_nonlocal1.conv_g.weight", message)
    assert re.search(r"unexpected: s9.extra.weight", message)


def test_checkpoint_without_config_or_model_state_is_refused(tmp_path):
    torch.save({"model_state": {}}, tmp_path / "nocfg.pyth")
    with pytest.raises(CheckpointError, match="nocfg.pyth.*cfg"):
        from_pyslowfast(tmp_path / "nocfg.pyth")
    torch.save({"weights": {}}, tmp_path / "other.pyth")
    with pytest.raises(CheckpointError, match="model_state"):
        from_pyslowfast(tmp_path / "other.pyth")
    with pytest.raises(CheckpointError, match="MODEL.ARCH"):
        model_from_config({"MODEL": {"ARCH": "mvit", "MODEL_NAME": "MViT"}})


# Our key -> Caffe2 blob name, written independently of the loader's rules (inverse direction).
def to_caffe2(key):
    bn = {"weight": "s", "bias": "b", "running_mean": "rm", "running_var": "riv"}
    prm = {"weight": "w", "bias": "b"}
    *path, leaf = key.split(".")
    if path[:2] == ["head", "projection"]:
        return f"pred_{prm[leaf]}"
    stage = path[0][1]
    if path[0].endswith("_fuse"):
        src = "t_pool1_subsample" if stage == "1" else f"t_res{stage}_1_branch2c_bn_subsample"
        return f"{src}_bn_{bn[leaf]}" if path[1] == "bn" else f"{src}_{prm[leaf]}"
    fast = "t_" if path[1].startswith("pathway1") else ""
    if path[1].endswith("_stem"):
        return f"{fast}res_conv1_bn_{bn[leaf]}" if path[2] == "bn" else f"{fast}conv1_{prm[leaf]}"
    block = re.search(r"\d+$", path[1]).group()
    if "_nonlocal" in path[1]:
        part = "bn_" + bn[leaf] if path[2] == "bn" else f"{path[2][5:]}_{prm[leaf]}"
        return f"{fast}nonlocal_conv{stage}_{block}_{part}"
    branch = path[2].removesuffix("_bn") if path[2] != "branch2" else "branch2" + path[3][0]
    is_bn = path[-1].endswith("_bn")
    return f"{fast}res{stage}_{block}_{branch}_" + (f"bn_{bn[leaf]}" if is_bn else prm[leaf])


@pytest.mark.parametrize("cfg", [SLOWFAST_CFG, I3D_NL_CFG], ids=["slowfast", "i3d_nl"])
def test_caffe2_pkl_loads_with_converted_names(tmp_path, cfg):
    original = randomized(model_from_config(cfg))
    blobs = {to_caffe2(k): v.numpy() for k, v in original.state_dict().items() if "num_batches" not in k}
    blobs["conv1_w_momentum"] = np.zeros(3, dtype=np.float32)  # optimizer state is skipped
    blobs["lr"] = np.array(0.1)
    blobs["pred_w"] = blobs["pred_w"].copy()
    with open(tmp_path / "c2.pkl", "wb") as f:
        pickle.dump({"blobs": blobs}, f, protocol=2)
    loaded = from_pyslowfast(tmp_path / "c2.pkl", cfg=yaml.safe_dump(cfg))
    clip = torch.randn(1, 3, 8, 64, 64)
    with torch.no_grad():
        assert torch.equal(original(clip), loaded(clip))


def test_caffe2_names_follow_the_model_zoo_convention():
    assert caffe2_to_pyslowfast_name("res4_5_branch2b_bn_riv") == "s4.pathway0_res5.branch2.b_bn.running_var"
    assert caffe2_to_pyslowfast_name("t_res3_0_branch1_w") == "s3.pathway1_res0.branch1.weight"
    assert caffe2_to_pyslowfast_name("t_res4_5_branch2c_bn_subsample_bn_rm") == "s4_fuse.bn.running_mean"
    assert caffe2_to_pyslowfast_name("nonlocal_conv3_1_phi_b") == "s3.pathway0_nonlocal1.conv_phi.bias"
    assert caffe2_to_pyslowfast_name("res_conv1_bn_s") == "s1.pathway0_stem.bn.weight"
    assert caffe2_to_pyslowfast_name("res2_0_branch2b_bn_fc1_w") == "s2.pathway0_res0.branch2.se.fc1.weight"
    assert caffe2_to_pyslowfast_name("something_else") is None


class _Exploit:
    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (open, (self.target, "w"))


def test_malicious_caffe2_pickle_is_refused_without_running(tmp_path):
    target = tmp_path / "pwned"
    with open(tmp_path / "evil.pkl", "wb") as f:
        pickle.dump({"blobs": {"pred_w": _Exploit(str(target))}}, f, protocol=2)
    with pytest.raises(CheckpointError, match=r"evil.pkl.*refusing to load .*open"):
        from_pyslowfast(tmp_path / "evil.pkl", cfg=yaml.safe_dump(I3D_NL_CFG))
    assert not target.exists()
    with pytest.raises(CheckpointError, match="cfg="):
        from_pyslowfast(tmp_path / "evil.pkl")
