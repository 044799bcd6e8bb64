"""Import PySlowFast checkpoints: read the config stored in the checkpoint, build the same network, load it.

`.pyth` files are `torch.save`d dicts `{"model_state", "cfg", "epoch", "optimizer_state"}` whose `cfg` is the
run's YAML config; they are read with `torch.load(weights_only=True)`. Caffe2 `.pkl` files hold only weights,
so their config must be passed in (a YAML file or string, a dict, or a preset name).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn

from mgvideo.errors import CheckpointError
from mgvideo.models.caffe2 import caffe2_state_dict
from mgvideo.models.resnet3d import POOL1, RESNET_ARCHS, ResNet3D
from mgvideo.models.slowfast import SlowFast
from mgvideo.models.state_dict import diff_keys, shorten, unwrap
from mgvideo.models.x3d import X3D

# PySlowFast defaults (slowfast/config/defaults.py) for every key we read.
_DEFAULTS = {
    "MODEL": {
        "ARCH": "slowfast",
        "NUM_CLASSES": 400,
        "DROPOUT_RATE": 0.5,
        "HEAD_ACT": "softmax",
        "FC_INIT_STD": 0.01,
    },
    "RESNET": {
        "TRANS_FUNC": "bottleneck_transform",
        "NUM_GROUPS": 1,
        "WIDTH_PER_GROUP": 64,
        "STRIDE_1X1": False,
        "ZERO_INIT_FINAL_BN": False,
        "DEPTH": 50,
        "NUM_BLOCK_TEMP_KERNEL": [[3], [4], [6], [3]],
        "SPATIAL_STRIDES": [[1], [2], [2], [2]],
        "SPATIAL_DILATIONS": [[1], [1], [1], [1]],
    },
    "NONLOCAL": {
        "LOCATION": [[[]]] * 4,
        "GROUP": [[1]] * 4,
        "INSTANTIATION": "dot_product",
        "POOL": [[[1, 2, 2], [1, 2, 2]]] * 4,
    },
    "SLOWFAST": {"BETA_INV": 8, "ALPHA": 8, "FUSION_CONV_CHANNEL_RATIO": 2, "FUSION_KERNEL_SZ": 5},
    "X3D": {
        "WIDTH_FACTOR": 1.0,
        "DEPTH_FACTOR": 1.0,
        "BOTTLENECK_FACTOR": 1.0,
        "DIM_C5": 2048,
        "DIM_C1": 12,
        "SCALE_RES2": False,
        "BN_LIN5": False,
        "CHANNELWISE_3x3x3": True,
    },
    "DATA": {"NUM_FRAMES": 8, "TRAIN_CROP_SIZE": 224, "INPUT_CHANNEL_NUM": [3, 3]},
    "MULTIGRID": {"SHORT_CYCLE": False},
    "DETECTION": {"ENABLE": False},
}
_TRANSFORMS = {"bottleneck_transform": "bottleneck", "basic_transform": "basic", "x3d_transform": "x3d"}


def read_config(cfg: str | Path | dict, where: str = "config") -> dict[str, dict[str, Any]]:
    """A PySlowFast config (YAML text, YAML file or dict) merged over the reference defaults."""
    if isinstance(cfg, Path) or (
        isinstance(cfg, str) and "\n" not in cfg and cfg.endswith((".yaml", ".yml"))
    ):
        where = str(cfg)
        try:
            cfg = Path(cfg).read_text()
        except OSError as err:
            raise CheckpointError(f"{where}: cannot read config: {err}") from err
    if isinstance(cfg, str):
        try:
            cfg = yaml.safe_load(cfg)
        except yaml.YAMLError as err:
            raise CheckpointError(f"{where}: config is not valid YAML: {err}") from err
    if not isinstance(cfg, dict):
        raise CheckpointError(f"{where}: config must be a mapping, got {type(cfg).__name__}")
    merged = {section: dict(values) for section, values in _DEFAULTS.items()}
    for section, values in cfg.items():
        if isinstance(values, dict):
            merged.setdefault(section, {}).update(values)
    return merged


def _model_name(cfg: dict) -> str:
    name = cfg["MODEL"].get("MODEL_NAME")
    if name:
        return name
    return {"slowfast": "SlowFast", "x3d": "X3D"}.get(cfg["MODEL"]["ARCH"], "ResNet")


def _head_kwargs(cfg: dict) -> dict:
    m = cfg["MODEL"]
    return {
        "num_classes": m["NUM_CLASSES"],
        "dropout": m["DROPOUT_RATE"],
        "head_act": m["HEAD_ACT"],
        "in_channels": cfg["DATA"]["INPUT_CHANNEL_NUM"][0],
        "fc_init_std": m["FC_INIT_STD"],
        "zero_init_final_bn": cfg["RESNET"]["ZERO_INIT_FINAL_BN"],
    }


def _resnet_kwargs(cfg: dict, pathway: int | None) -> dict:
    """Arguments of ResNet3D (pathway=0: one value per stage) and SlowFast (None: per-pathway pairs)."""
    r, nl = cfg["RESNET"], cfg["NONLOCAL"]

    def per_stage(rows):
        if pathway is not None:
            return [row[pathway] for row in rows]
        return [row if len(row) == 2 else [row[0], row[0]] for row in rows]  # one entry: both pathways

    trans = _TRANSFORMS.get(r["TRANS_FUNC"])
    if trans not in ("bottleneck", "basic"):
        raise CheckpointError(f"RESNET.TRANS_FUNC={r['TRANS_FUNC']!r} is not supported for ResNet/SlowFast")
    return {
        "depth": r["DEPTH"],
        "width_per_group": r["WIDTH_PER_GROUP"],
        "num_groups": r["NUM_GROUPS"],
        "stride_1x1": r["STRIDE_1X1"],
        "trans_func": trans,
        "num_block_temp_kernel": per_stage(r["NUM_BLOCK_TEMP_KERNEL"]),
        "spatial_strides": [row[0] for row in r["SPATIAL_STRIDES"]],
        "spatial_dilations": [row[0] for row in r["SPATIAL_DILATIONS"]],
        "nonlocal_location": per_stage(nl["LOCATION"]),
        "nonlocal_group": per_stage(nl["GROUP"]),
        "nonlocal_pool": per_stage(nl["POOL"]),
        "nonlocal_instantiation": nl["INSTANTIATION"],
    }


def model_from_config(cfg: str | Path | dict, where: str = "config") -> nn.Module:
    """Build the network a PySlowFast config describes (ResNet / SlowFast / X3D), with its head pooling."""
    cfg = read_config(cfg, where)
    if cfg["DETECTION"]["ENABLE"]:
        raise CheckpointError(f"{where}: DETECTION.ENABLE models (AVA) are not supported")
    name, arch = _model_name(cfg), cfg["MODEL"]["ARCH"]
    frames, crop = cfg["DATA"]["NUM_FRAMES"], cfg["DATA"]["TRAIN_CROP_SIZE"]
    short_cycle = cfg["MULTIGRID"]["SHORT_CYCLE"]
    try:
        if name == "X3D":
            x = cfg["X3D"]
            side = math.ceil(crop / 32)
            return X3D(
                width_factor=x["WIDTH_FACTOR"],
                depth_factor=x["DEPTH_FACTOR"],
                bottleneck_factor=x["BOTTLENECK_FACTOR"],
                dim_c1=x["DIM_C1"],
                dim_c5=x["DIM_C5"],
                scale_res2=x["SCALE_RES2"],
                channelwise=x["CHANNELWISE_3x3x3"],
                bn_lin5=x["BN_LIN5"],
                num_groups=cfg["RESNET"]["NUM_GROUPS"],
                head_pool_size=(frames, side, side),
                **_head_kwargs(cfg),
            )
        if name == "SlowFast" and arch == "slowfast":
            sf = cfg["SLOWFAST"]
            pools = (
                None
                if short_cycle
                else [(frames // sf["ALPHA"], crop // 32, crop // 32), (frames, crop // 32, crop // 32)]
            )
            return SlowFast(
                alpha=sf["ALPHA"],
                beta_inv=sf["BETA_INV"],
                fusion_conv_channel_ratio=sf["FUSION_CONV_CHANNEL_RATIO"],
                fusion_kernel=sf["FUSION_KERNEL_SZ"],
                head_pool_sizes=pools,
                **_resnet_kwargs(cfg, None),
                **_head_kwargs(cfg),
            )
        if name == "ResNet" and arch in RESNET_ARCHS:
            pt, ph, pw = POOL1[arch][0]
            pool = None if short_cycle else (frames // pt, crop // 32 // ph, crop // 32 // pw)
            return ResNet3D(arch=arch, head_pool_size=pool, **_resnet_kwargs(cfg, 0), **_head_kwargs(cfg))
    except (ValueError, KeyError, IndexError, TypeError) as err:
        raise CheckpointError(f"{where}: cannot build MODEL_NAME={name} ARCH={arch}: {err}") from err
    raise CheckpointError(
        f"{where}: unsupported MODEL.MODEL_NAME={name!r} with MODEL.ARCH={arch!r}; "
        f"supported: ResNet ({', '.join(RESNET_ARCHS)}), SlowFast (slowfast), X3D (x3d)"
    )


def load_weights(
    model: nn.Module,
    state: dict[str, torch.Tensor],
    where: str,
    ignore: tuple[str, ...] = (),
    unknown: list[str] | None = None,
) -> None:
    """Copy `state` into `model`, or raise CheckpointError listing missing, unexpected and mis-shaped keys."""
    own = model.state_dict()
    state = {k: v for k, v in unwrap(state).items() if not k.startswith(ignore)}
    diff = diff_keys(own, state)
    missing = [k for k in diff.missing_weights() if not k.startswith(ignore)]
    unexpected = sorted(diff.unexpected) + sorted(unknown or [])
    mismatched = [f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
                  for k in diff.mis_shaped]
    if missing or unexpected or mismatched:
        labelled = (("missing", missing), ("unexpected", unexpected), ("shape mismatches", mismatched))
        listed = "".join(f"\n  {label}: {shorten(keys, 12) or 'none'}" for label, keys in labelled)
        raise CheckpointError(
            f"{where}: checkpoint does not match the architecture (missing {len(missing)}, "
            f"unexpected {len(unexpected)}, shape mismatches {len(mismatched)}){listed}"
        )
    model.load_state_dict(state, strict=False)


def from_pyslowfast(
    path: str | Path, cfg: str | Path | dict | None = None, num_classes: int | None = None
) -> nn.Module:
    """A model equal to the PySlowFast one saved at `path` (`.pyth`, or Caffe2 `.pkl` with `cfg` given).

    `cfg` overrides the checkpoint's stored config. With `num_classes` different from the checkpoint's, the
    classifier (`head.projection`) is left freshly initialised, for fine-tuning. Returned in eval mode.
    """
    path = Path(path)
    if path.suffix == ".pkl":
        if cfg is None:
            raise CheckpointError(
                f"{path}: Caffe2 checkpoints carry no config; pass cfg= (the PySlowFast YAML)"
            )
        config = read_config(cfg)
        raw = None
    else:
        raw = _load_pyth(path)
        if cfg is None and not raw.get("cfg"):
            raise CheckpointError(
                f"{path}: no 'cfg' entry in the checkpoint; pass cfg= (the PySlowFast YAML)"
            )
        config = read_config(cfg if cfg is not None else raw["cfg"], str(path))
    ignore: tuple[str, ...] = ()
    if num_classes is not None and num_classes != config["MODEL"]["NUM_CLASSES"]:
        config["MODEL"]["NUM_CLASSES"] = num_classes
        ignore = ("head.projection.",)
    model = model_from_config(config, str(path))
    unknown: list[str] = []
    if raw is None:
        state, unknown = caffe2_state_dict(path, model.state_dict())
    else:
        state = raw["model_state"]
    load_weights(model, state, str(path), ignore, unknown)
    return model.eval()


def _load_pyth(path: Path) -> dict:
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError as err:
        raise CheckpointError(f"{path}: no such checkpoint") from err
    except Exception as err:  # torch raises many types for corrupt or unsafe files
        raise CheckpointError(f"{path}: cannot load with weights_only=True: {err}") from err
    if not isinstance(raw, dict) or not isinstance(raw.get("model_state"), dict):
        raise CheckpointError(f"{path}: not a PySlowFast checkpoint (no 'model_state' dict)")
    return raw
