"""Read a Hugging Face VideoMAE folder (`save_pretrained`'s config.json plus model.safetensors or
pytorch_model.bin) into our ViT's naming, without importing `transformers` and without executing anything
from the files: safetensors, or `torch.load(weights_only=True)`."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mgvideo.errors import CheckpointError
from mgvideo.models.state_dict import diff_keys, shorten
from mgvideo.models.vit import VideoViT

# Hugging Face name (after the "videomae." prefix) -> ours; {i} is the block index.
_LAYER_KEYS = {
    "layernorm_before": "norm1",
    "layernorm_after": "norm2",
    "attention.output.dense": "attn.proj",
    "intermediate.dense": "mlp.fc1",
    "output.dense": "mlp.fc2",
}
_TOP_KEYS = {
    "embeddings.patch_embeddings.projection": "patch_embed.proj",
    "layernorm": "norm",
    "fc_norm": "fc_norm",
    "classifier": "head",
}
# Pre-training checkpoints also hold the MAE decoder, which fine-tuning does not use.
_PRETRAINING_ONLY = ("decoder.", "encoder_to_decoder.", "mask_token")
_LAYER = re.compile(r"encoder\.layer\.(\d+)\.(.+)\.(weight|bias)$")
_QKV = re.compile(r"attention\.attention\.(query|key|value)$")


def read_hf_config(folder: Path) -> dict[str, Any]:
    """config.json of a VideoMAE folder, checked to be one."""
    path = folder / "config.json"
    try:
        config = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise CheckpointError(f"{path}: cannot read a Hugging Face config: {err}") from err
    if config.get("model_type") != "videomae":
        raise CheckpointError(f"{path}: model_type is {config.get('model_type')!r}, expected 'videomae'")
    return config


def read_hf_weights(folder: Path) -> dict[str, torch.Tensor]:
    """The raw tensors of model.safetensors (preferred) or pytorch_model.bin (weights only)."""
    safetensors_path, bin_path = folder / "model.safetensors", folder / "pytorch_model.bin"
    try:
        if safetensors_path.exists():
            from safetensors.torch import load_file

            return load_file(str(safetensors_path))
        if bin_path.exists():
            return torch.load(bin_path, map_location="cpu", weights_only=True)
    except Exception as err:  # corrupt files raise many types; all mean the same to the user
        raise CheckpointError(f"{folder}: cannot read the weights: {err}") from err
    raise CheckpointError(f"{folder}: no model.safetensors or pytorch_model.bin (sharded checkpoints are "
                          "not supported)")


def convert_state_dict(hf: dict[str, torch.Tensor], where: str) -> dict[str, torch.Tensor]:
    """Rename Hugging Face VideoMAE tensors to ours; q, k, v weights become one qkv weight."""
    ours: dict[str, torch.Tensor] = {}
    qkv: dict[int, dict[str, torch.Tensor]] = {}
    unknown = []
    for key, tensor in hf.items():
        name = key.removeprefix("videomae.")
        if name.startswith(_PRETRAINING_ONLY):
            continue
        layer = _LAYER.match(name)
        module, _, kind = name.rpartition(".")
        if layer:
            i, module, kind = int(layer[1]), layer[2], layer[3]
            qkv_part = _QKV.match(module)
            if qkv_part:
                qkv.setdefault(i, {})[f"{qkv_part[1]}.{kind}"] = tensor
            elif module in _LAYER_KEYS:
                ours[f"blocks.{i}.{_LAYER_KEYS[module]}.{kind}"] = tensor
            else:
                unknown.append(key)
        elif re.fullmatch(r"encoder\.layer\.\d+\.attention\.attention\.[qv]_bias", name):
            i = int(name.split(".")[2])
            qkv.setdefault(i, {})[f"{name[-6]}.bias"] = tensor  # 'q' or 'v': save_pretrained's names
        elif module in _TOP_KEYS and kind in ("weight", "bias"):
            ours[f"{_TOP_KEYS[module]}.{kind}"] = tensor
        else:
            unknown.append(key)
    if unknown:
        raise CheckpointError(f"{where}: unexpected VideoMAE keys: {', '.join(sorted(unknown)[:5])}")
    for i, parts in sorted(qkv.items()):
        missing = [k for k in ("query.weight", "key.weight", "value.weight") if k not in parts]
        if missing:
            raise CheckpointError(f"{where}: layer {i} lacks attention.attention.{', '.join(missing)}")
        ours[f"blocks.{i}.attn.qkv.weight"] = torch.cat(
            [parts["query.weight"], parts["key.weight"], parts["value.weight"]])
        for short, long in (("q", "query"), ("v", "value")):
            bias = parts.get(f"{short}.bias", parts.get(f"{long}.bias"))
            if bias is not None:
                ours[f"blocks.{i}.attn.{short}_bias"] = bias
    return ours


def model_kwargs(config: dict[str, Any], where: str) -> dict[str, Any]:
    """VideoViT arguments equivalent to a Hugging Face VideoMAEConfig dict."""
    if config.get("hidden_act", "gelu") != "gelu":
        raise CheckpointError(f"{where}: hidden_act {config['hidden_act']!r} is not supported (only gelu)")
    size = config.get("image_size", 224)
    size = size if isinstance(size, int) else size[0]
    labels = config.get("id2label") or {}
    return {
        "num_classes": len(labels) or 2, "frames": config.get("num_frames", 16), "crop": size,
        "tubelet_size": config.get("tubelet_size", 2), "patch_size": config.get("patch_size", 16),
        "in_channels": config.get("num_channels", 3), "embed_dim": config.get("hidden_size", 768),
        "depth": config.get("num_hidden_layers", 12), "num_heads": config.get("num_attention_heads", 12),
        "mlp_ratio": config.get("intermediate_size", 3072) / config.get("hidden_size", 768),
        "qkv_bias": config.get("qv_bias", config.get("qkv_bias", True)),
        "mean_pooling": config.get("use_mean_pooling", True),
        "norm_eps": config.get("layer_norm_eps", 1e-12), "head_norm_eps": 1e-5,  # HF's fc_norm: torch default
    }


def read_hf_videomae(path: str | Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """(config.json as a dict, state dict in our ViT's naming) of a Hugging Face VideoMAE folder.

    Accepts `VideoMAEForVideoClassification`, `VideoMAEModel` and `VideoMAEForPreTraining` folders (the
    decoder of the last is dropped). Unknown keys raise CheckpointError naming them.
    """
    folder = Path(path)
    if not folder.is_dir():
        raise CheckpointError(f"{folder}: not a directory written by save_pretrained")
    config = read_hf_config(folder)
    return config, convert_state_dict(read_hf_weights(folder), str(folder))


def from_hf_videomae(path: str | Path) -> nn.Module:
    """Our VideoViT with a Hugging Face VideoMAE folder's weights, in eval mode; it takes clips
    (B, C, T, H, W) and returns logits as Hugging Face's does (`head_act` none).

    Every tensor must match: a missing or mis-shaped key raises CheckpointError naming it.
    """
    config, state = read_hf_videomae(path)
    model = VideoViT(**model_kwargs(config, str(path)), head_act="none")
    diff = diff_keys(model.state_dict(), state)
    labelled = (("missing", diff.missing), ("unexpected", diff.unexpected), ("mis-shaped", diff.mis_shaped))
    for problem, keys in labelled:
        if keys:
            raise CheckpointError(
                f"{path}: {problem} keys for a VideoMAE classifier: {shorten(sorted(keys), 5)}")
    model.load_state_dict(state)
    return model.eval()
