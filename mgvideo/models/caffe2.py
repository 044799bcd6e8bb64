"""Caffe2 `.pkl` checkpoints from the PySlowFast model zoo: a restricted unpickler and blob-name conversion.

A pickle can run arbitrary code, so `load_caffe2_blobs` only lets numpy arrays and plain containers through;
anything else raises CheckpointError. `caffe2_to_pyslowfast_name` maps Caffe2 blob names (`res3_1_branch2a_w`)
to the PySlowFast module names our models use (`s3.pathway0_res1.branch2.a.weight`).
"""

from __future__ import annotations

import _codecs
import collections
import pickle
import re
from pathlib import Path

import numpy as np
import torch

from mgvideo.errors import CheckpointError

# Blobs that are optimizer or bookkeeping state, not weights.
_SKIPPED = re.compile(r"(_momentum$|^lr$|^model_iter$|^nesterov|_lr$)")
_BN = {"s": "weight", "b": "bias", "rm": "running_mean", "riv": "running_var"}
_PARAM = {"w": "weight", "b": "bias"}
_BN_SUFFIX = r"(s|b|rm|riv)"


def _pathway(fast_prefix: str | None) -> str:
    return "pathway1" if fast_prefix else "pathway0"


def _res(m: re.Match) -> str:
    stage, block, branch = m["stage"], m["block"], m["branch"]
    prefix = f"s{stage}.{_pathway(m['t'])}_res{block}"
    return prefix + (".branch1" if branch == "1" else f".branch2.{branch[1]}")


# (pattern, builder) pairs, tried in order; the first full match wins.
_RULES: list[tuple[re.Pattern, object]] = [
    # Lateral fusions: the fast pathway's stem pool or a res block's output, subsampled in time into slow.
    (rf"t_pool1_subsample_bn_{_BN_SUFFIX}", lambda m: f"s1_fuse.bn.{_BN[m[1]]}"),
    (r"t_pool1_subsample_(w|b)", lambda m: f"s1_fuse.conv_f2s.{_PARAM[m[1]]}"),
    (rf"t_res(\d)_\d+_branch2c_bn_subsample_bn_{_BN_SUFFIX}", lambda m: f"s{m[1]}_fuse.bn.{_BN[m[2]]}"),
    (r"t_res(\d)_\d+_branch2c_bn_subsample_(w|b)", lambda m: f"s{m[1]}_fuse.conv_f2s.{_PARAM[m[2]]}"),
    # Residual blocks, their BNs and X3D's squeeze-excitation (stored under the 3x3 conv's BN).
    (
        r"(?P<t>t_)?res(?P<stage>\d)_(?P<block>\d+)_branch2b_bn_fc(?P<fc>\d)_(?P<p>w|b)",
        lambda m: f"s{m['stage']}.{_pathway(m['t'])}_res{m['block']}.branch2.se.fc{m['fc']}.{_PARAM[m['p']]}",
    ),
    (
        rf"(?P<t>t_)?res(?P<stage>\d)_(?P<block>\d+)_branch(?P<branch>1|2[abc])_bn_(?P<p>{_BN_SUFFIX})",
        lambda m: f"{_res(m)}_bn.{_BN[m['p']]}",
    ),
    (
        r"(?P<t>t_)?res(?P<stage>\d)_(?P<block>\d+)_branch(?P<branch>1|2[abc])_(?P<p>w|b)",
        lambda m: f"{_res(m)}.{_PARAM[m['p']]}",
    ),
    # Non-local blocks.
    (
        r"(t_)?nonlocal_conv(\d)_(\d+)_(theta|phi|g|out)_(w|b)",
        lambda m: f"s{m[2]}.{_pathway(m[1])}_nonlocal{m[3]}.conv_{m[4]}.{_PARAM[m[5]]}",
    ),
    (
        rf"(t_)?nonlocal_conv(\d)_(\d+)_bn_{_BN_SUFFIX}",
        lambda m: f"s{m[2]}.{_pathway(m[1])}_nonlocal{m[3]}.bn.{_BN[m[4]]}",
    ),
    # Stems.
    (rf"(t_)?res_conv1_bn_{_BN_SUFFIX}", lambda m: f"s1.{_pathway(m[1])}_stem.bn.{_BN[m[2]]}"),
    (r"conv1_xy_(w|b)", lambda m: f"s1.pathway0_stem.conv_xy.{_PARAM[m[1]]}"),
    (r"(t_)?conv1_(w|b)", lambda m: f"s1.{_pathway(m[1])}_stem.conv.{_PARAM[m[2]]}"),
    # Heads.
    (r"pred_(w|b)", lambda m: f"head.projection.{_PARAM[m[1]]}"),
    (rf"(conv_5|lin_5)_bn_{_BN_SUFFIX}", lambda m: f"head.{m[1]}_bn.{_BN[m[2]]}"),
    (r"(conv_5|lin_5)_(w|b)", lambda m: f"head.{m[1]}.{_PARAM[m[2]]}"),
]
_RULES = [(re.compile(pattern), build) for pattern, build in _RULES]


def caffe2_to_pyslowfast_name(name: str) -> str | None:
    """The PySlowFast state-dict key for a Caffe2 blob name, or None when the name is not a known weight."""
    for pattern, build in _RULES:
        match = pattern.fullmatch(name)
        if match:
            return build(match)
    return None


class _RestrictedUnpickler(pickle.Unpickler):
    """Reconstructs numpy arrays, numpy scalars and plain containers only."""

    def find_class(self, module: str, name: str):
        allowed = _allowed_globals()
        if (module, name) in allowed:
            return allowed[(module, name)]
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} (only numpy arrays are allowed)")


def _allowed_globals() -> dict[tuple[str, str], object]:
    """The only callables a checkpoint pickle may name: numpy array and scalar reconstruction, containers."""
    multiarray = getattr(np, "_core", None)
    multiarray = multiarray.multiarray if multiarray is not None else np.core.multiarray
    table = {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("_codecs", "encode"): _codecs.encode,
        ("collections", "OrderedDict"): collections.OrderedDict,
    }
    for mod in ("numpy.core.multiarray", "numpy._core.multiarray"):
        table[(mod, "_reconstruct")] = multiarray._reconstruct
        table[(mod, "scalar")] = multiarray.scalar
    return table


def load_caffe2_blobs(path: str | Path) -> dict[str, np.ndarray]:
    """The `blobs` dict of a Caffe2 pickle, read without executing anything but numpy reconstruction."""
    try:
        with open(path, "rb") as f:
            data = _RestrictedUnpickler(f, encoding="latin1").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as err:
        raise CheckpointError(f"{path}: not a loadable Caffe2 checkpoint: {err}") from err
    except OSError as err:
        raise CheckpointError(f"{path}: cannot read: {err}") from err
    blobs = data.get("blobs", data) if isinstance(data, dict) else None
    if not isinstance(blobs, dict):
        raise CheckpointError(f"{path}: expected a dict of blobs, got {type(data).__name__}")
    return blobs


def caffe2_state_dict(path: str | Path, model_state: dict[str, torch.Tensor]) -> tuple[dict, list[str]]:
    """Convert a Caffe2 checkpoint to our keys; returns (state, blob names that map to nothing)."""
    state, unknown = {}, []
    for blob_name, blob in load_caffe2_blobs(path).items():
        if _SKIPPED.search(blob_name):
            continue
        key = caffe2_to_pyslowfast_name(blob_name)
        if key is None or not isinstance(blob, np.ndarray) or blob.dtype.hasobject:
            unknown.append(blob_name)
            continue
        tensor = torch.from_numpy(np.ascontiguousarray(blob)).clone()
        target = model_state.get(key)
        if target is not None and tensor.dim() < target.dim() and tensor.numel() == target.numel():
            tensor = tensor.reshape(target.shape)  # e.g. an FC blob feeding a 1x1x1 conv
        state[key] = tensor
    return state, unknown
