"""State-dict keys: strip training wrappers' prefixes, compare with a model's keys, and shorten key lists
for error messages. Every checkpoint reader (ours, Hugging Face, PySlowFast, `init_from`) uses these."""

from __future__ import annotations

from dataclasses import dataclass

import torch

# Prefixes that wrappers add in front of the network's own names: DDP's and torch.compile's.
_WRAPPERS = ("module.", "_orig_mod.")


def unwrap(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """`state` with the DDP (`module.`) and torch.compile (`_orig_mod.`) prefixes removed, in any nesting."""
    return {_unwrap_key(k): v for k, v in state.items()}


def _unwrap_key(key: str) -> str:
    while key.startswith(_WRAPPERS):
        key = key.split(".", 1)[1]
    return key


@dataclass(frozen=True)
class KeyDiff:
    """How a state dict's keys differ from a model's: `missing` and `mis_shaped` in the model's order,
    `unexpected` in the state dict's."""

    missing: list[str]
    unexpected: list[str]
    mis_shaped: list[str]

    def missing_weights(self) -> list[str]:
        """`missing` less BatchNorm's `num_batches_tracked` counters, which many checkpoints do not save."""
        return [k for k in self.missing if not k.endswith("num_batches_tracked")]


def diff_keys(own: dict[str, torch.Tensor], state: dict[str, torch.Tensor]) -> KeyDiff:
    """Compare `state` with a model's own state dict `own`."""
    return KeyDiff(
        missing=[k for k in own if k not in state],
        unexpected=[k for k in state if k not in own],
        mis_shaped=[k for k in own if k in state and state[k].shape != own[k].shape],
    )


def shorten(keys: list[str], limit: int) -> str:
    """The first `limit` keys, then how many more there are: 'a, b, +3 more'."""
    return ", ".join(keys[:limit]) + (f", +{len(keys) - limit} more" if len(keys) > limit else "")
