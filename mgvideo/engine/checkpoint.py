"""Checkpoints: atomic writes, `weights_only` loads, and the RNG state an exact resume needs.

A checkpoint is a plain dict of tensors, containers, numbers and strings, so that
`torch.load(weights_only=True)` can read it. It carries a fingerprint of the config and schedule;
resuming from a checkpoint with a different fingerprint is refused unless forced.
"""

from __future__ import annotations

import os
import random
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from mgvideo.errors import CheckpointError
from mgvideo.models.state_dict import diff_keys, shorten, unwrap


def save(state: dict[str, Any], path: str | Path,
         before_rename: Callable[[Path], None] | None = None) -> None:
    """Write `state` to `path` atomically: temp file in the same folder, fsync, then os.replace.

    `before_rename(tmp)` is a test hook, called between the temp write and the rename.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{TMP_PREFIX}{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
    except BaseException as err:
        tmp.unlink(missing_ok=True)
        if _interrupted(err):  # Ctrl-C inside torch.save surfaces as its writer's "unexpected pos" error
            raise KeyboardInterrupt from None
        raise
    if before_rename is not None:
        before_rename(tmp)
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)  # make the rename itself durable
    finally:
        os.close(dir_fd)


TMP_PREFIX = "."  # `.NAME.tmpPID`: a write in progress, or one a killed process left behind


def _interrupted(err: BaseException | None) -> bool:
    """Whether `err` is, or was raised while handling, a KeyboardInterrupt."""
    seen = set()
    while err is not None and id(err) not in seen:
        if isinstance(err, KeyboardInterrupt):
            return True
        seen.add(id(err))
        err = err.__context__ or err.__cause__
    return False


def remove_stale_temps(directory: Path) -> list[Path]:
    """Delete the temp files of writes that never finished (a process killed mid-save); call it when no
    write can be in progress, as a run starts. Returns what was removed."""
    stale = sorted(Path(directory).glob(f"{TMP_PREFIX}*.tmp[0-9]*"))
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


def load(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint with `weights_only=True`; unreadable files raise CheckpointError."""
    try:
        with warnings.catch_warnings():  # e.g. "Detected pickle protocol 4": the error below says enough
            warnings.simplefilter("ignore")
            state = torch.load(Path(path), map_location="cpu", weights_only=True)
    except FileNotFoundError as err:
        raise CheckpointError(f"{path}: no such checkpoint") from err
    except Exception as err:  # torch raises several types for corrupt or foreign files
        raise CheckpointError(f"{path}: cannot read checkpoint: {_load_failure(err)}") from err
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: not a mgvideo checkpoint (top level is {type(state).__name__})")
    return state


def peek(path: str | Path) -> dict[str, Any]:
    """As `load`, but tensors are memory-mapped, not read: cheap for looking at a checkpoint's counters
    (resume.scan reads every checkpoint of a folder). Files that cannot be mapped are read whole."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            state = torch.load(Path(path), map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # not mappable (an old format) or unreadable: `load` says which
        return load(path)
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: not a mgvideo checkpoint (top level is {type(state).__name__})")
    return state


def _load_failure(err: Exception) -> str:
    """One line for a file torch.load(weights_only=True) refused, without torch's advice to load it
    with weights_only=False: mgvideo never unpickles arbitrary objects."""
    text = str(err)
    if "WeightsUnpickler error:" in text:
        detail = next((line.strip() for line in text.split("WeightsUnpickler error:", 1)[1].splitlines()
                       if line.strip()), "")
        detail = detail.split(". Please use", 1)[0]
        return (f"not a checkpoint of tensors, numbers and containers ({detail}); mgvideo reads only "
                "those (torch.load weights_only=True)")
    first = text.strip().splitlines()[0] if text.strip() else type(err).__name__
    return f"not a PyTorch checkpoint ({type(err).__name__}: {first[:200]})"


def model_state(path: str | Path) -> dict[str, torch.Tensor]:
    """The model weights of a full checkpoint or of a plain state dict such as `model_final.pt`, without
    the DDP or torch.compile prefixes a wrapped model's keys carry."""
    state = load(path)
    weights = state.get("model", state)
    if not all(isinstance(v, torch.Tensor) for v in weights.values()):
        raise CheckpointError(f"{path}: no model weights found")
    return unwrap(weights)


def load_model_weights(model: nn.Module, weights: dict[str, torch.Tensor], source: str) -> None:
    """Load weights strictly; a different architecture gets an error listing what does not match."""
    diff = diff_keys(model.state_dict(), weights)
    labelled = (("missing", diff.missing), ("unexpected", diff.unexpected), ("wrong shape", diff.mis_shaped))
    parts = [f"{len(keys)} {label}: {shorten(sorted(keys), 3)}" for label, keys in labelled if keys]
    if parts:
        raise CheckpointError(
            f"{source}: checkpoint does not match this model's architecture ({'; '.join(parts)}); "
            "check model.name and model.options"
        )
    model.load_state_dict(weights)


def load_scaler_state(scaler: torch.amp.GradScaler, saved: dict[str, Any] | None, source: str) -> None:
    """Restore an fp16 GradScaler's scale and growth tracker. A disabled scaler saves `{}`: a run that
    switched to fp16 (`--force`) starts from a fresh scale."""
    if not saved or not scaler.is_enabled():
        return
    try:
        scaler.load_state_dict(saved)
    except (RuntimeError, KeyError) as err:
        raise CheckpointError(f"{source}: cannot restore the fp16 GradScaler state: {err}") from err


def check_fingerprint(state: dict[str, Any], expected: str, source: str, force: bool,
                      changes: list[str] | None = None) -> None:
    """Refuse to resume a run whose config or schedule changed, unless `force`; `changes` ('key: old ->
    new') name what changed."""
    found = state.get("fingerprint")
    if found != expected and not force:
        what = "changed: " + "; ".join(changes) if changes else "the config or schedule changed"
        raise CheckpointError(
            f"{source}: checkpoint fingerprint {found} differs from this run's {expected} "
            f"({what}); use a new --out, or --force to resume anyway"
        )


def rng_state() -> dict[str, Any]:
    """Python, numpy and torch RNG states as tensors and plain lists (weights_only-safe)."""
    version, internal, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "python": [version, list(internal), gauss],
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached)],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what `rng_state` captured."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
