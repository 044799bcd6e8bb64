"""`model.init_from`: start a fresh run from pretrained weights (this is not a resume).

Each reader turns one checkpoint format into a plain state dict in our key names; `match_pretrained` then
checks it against the model in one place, whatever the format. Every file is read without executing
anything from it: `torch.load(weights_only=True)`, or the restricted unpickler for Caffe2 pickles.
`check_class_count` names `data.num_classes` where weights loaded as they are (a resume, `mgvideo test`)
have another class count.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from mgvideo.engine import checkpoint
from mgvideo.errors import CheckpointError
from mgvideo.models.caffe2 import caffe2_state_dict
from mgvideo.models.state_dict import diff_keys, shorten, unwrap


@dataclass(frozen=True)
class Pretrained:
    """What `load_pretrained` did: the source, and the keys loaded, skipped and re-initialised."""

    source: str
    kind: str
    loaded: list[str]
    skipped: list[str]  # checkpoint tensors this model has no place for
    reinitialised: list[str]  # the classifier, when the class counts differ

    def message(self) -> str:
        """One line for the run's log."""
        def names(keys: list[str]) -> str:
            return f" ({shorten(keys, 4)})" if keys else ""

        return (f"init_from {self.source} ({self.kind}): loaded {len(self.loaded)} tensors, skipped "
                f"{len(self.skipped)}{names(self.skipped)}, re-initialised {len(self.reinitialised)}"
                f"{names(self.reinitialised)}; the optimizer and LR schedule start fresh")


def read_pretrained(path: str | Path, model_state: dict[str, torch.Tensor]) -> tuple[dict, str, list[str]]:
    """The weights at `path` in our key names: (state dict, format name, source names left unconverted).

    Formats: a Hugging Face folder (config.json), a Caffe2 `.pkl`, a PySlowFast `.pyth` (`model_state`), an
    mgvideo `checkpoints/last.pt` (`model`) or a plain state dict such as `model_final.pt`.
    `model_state` gives the target shapes that Caffe2 blobs are reshaped to.
    """
    path = Path(path)
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise CheckpointError(f"{path}: a folder to init from must be a Hugging Face model (config.json)")
        from mgvideo.models import hf  # lazily: only Hugging Face folders need it

        _, state = hf.read_hf_videomae(path)
        return dict(state), "Hugging Face", []
    if not path.is_file():
        raise CheckpointError(f"model.init_from: {path}: no such file or folder (download the weights the "
                              "recipe names, or set model.init_from='' to train from scratch)")
    if path.suffix == ".pkl":
        state, unknown = caffe2_state_dict(path, model_state)
        return state, "Caffe2", unknown
    raw = checkpoint.load(path)
    kind = "mgvideo weights"
    if isinstance(raw.get("model_state"), dict):
        raw, kind = raw["model_state"], "PySlowFast"
    elif isinstance(raw.get("model"), dict):
        raw, kind = raw["model"], "mgvideo checkpoint"
    if not raw or not all(isinstance(v, torch.Tensor) for v in raw.values()):
        raise CheckpointError(f"{path}: no model weights found (expected a state dict, a PySlowFast "
                              "'model_state' or an mgvideo checkpoint's 'model')")
    return unwrap(raw), kind, []


def classifier_keys(model: nn.Module, num_classes: int) -> list[str]:
    """State-dict keys of the layer that produces the logits: the last Linear with `num_classes` outputs."""
    last = None
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear) and module.out_features == num_classes:
            last = name
    if last is None:
        return []
    return [f"{last}.{p}" for p, _ in model.get_submodule(last).named_parameters(recurse=False)]


def check_class_count(model: nn.Module, weights: dict[str, torch.Tensor], source: str) -> None:
    """CheckpointError naming `data.num_classes` when the weights differ from `model` only in the class
    count of its classifier: a checkpoint of another dataset, or a config whose class count was changed.
    Any other difference is left to `checkpoint.load_model_weights` to name."""
    counts = class_counts(model, weights)
    if counts is None:
        return
    theirs, ours, keys = counts
    raise CheckpointError(
        f"{source}: the checkpoint's classifier ({', '.join(keys)}) has {theirs} classes and this config's "
        f"model {ours} (data.num_classes={ours}); set data.num_classes={theirs} to use it as it is, or start "
        f"a new run from it with model.init_from={source} to train a {ours}-class head")


def class_counts(model: nn.Module, weights: dict[str, torch.Tensor]) -> tuple[int, int, list[str]] | None:
    """(the checkpoint's classes, the model's, the classifier's keys) when the classifier (the last Linear
    layer) is all that differs and only in its first dimension, the class count; else None."""
    linears = [name for name, module in model.named_modules() if isinstance(module, nn.Linear)]
    if not linears:
        return None
    ours = model.get_submodule(linears[-1]).out_features
    own, head = model.state_dict(), set(classifier_keys(model, ours))
    diff = diff_keys(own, weights)
    wrong = sorted(diff.mis_shaped)
    if not wrong or diff.missing_weights() or diff.unexpected or not set(wrong) <= head:
        return None
    theirs = {weights[k].shape[0] for k in wrong}
    if len(theirs) != 1 or any(weights[k].shape[1:] != own[k].shape[1:] for k in wrong):
        return None
    return theirs.pop(), ours, wrong


def match_pretrained(model: nn.Module, state: dict[str, torch.Tensor], num_classes: int,
                     source: str) -> tuple[dict[str, torch.Tensor], list[str], list[str]]:
    """Check pretrained `state` against `model`: (tensors to load, keys skipped, keys re-initialised).

    The classifier is re-initialised when its class count differs; any other missing key or shape
    mismatch raises CheckpointError naming the keys.
    """
    own = model.state_dict()
    diff = diff_keys(own, state)
    head = [k for k in classifier_keys(model, num_classes) if k in diff.mis_shaped
            and state[k].shape[1:] == own[k].shape[1:]]
    missing = diff.missing_weights()
    wrong = [f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in diff.mis_shaped
             if k not in head]
    if missing or wrong:
        parts = [f"{len(keys)} {label}: {shorten(keys, 4)}" for label, keys in
                 (("missing", missing), ("of another shape (checkpoint vs model)", wrong)) if keys]
        raise CheckpointError(f"{source}: weights do not fit model {type(model).__name__} "
                              f"({'; '.join(parts)}); check model.name and model.options")
    loaded = {k: v for k, v in state.items() if k in own and k not in head}
    return loaded, sorted(diff.unexpected), head


def load_pretrained(model: nn.Module, path: str | Path, num_classes: int) -> Pretrained:
    """Load the weights at `path` into `model` (a fresh run's network) and say what was done."""
    state, kind, unknown = read_pretrained(path, model.state_dict())
    loaded, skipped, head = match_pretrained(model, state, num_classes, str(path))
    model.load_state_dict(loaded, strict=False)
    return Pretrained(str(path), kind, sorted(loaded), skipped + sorted(unknown), sorted(head))
