"""State-dict keys: wrapper prefixes, the diff against a model, and shortened key lists."""

import torch
from torch import nn

from mgvideo.engine import checkpoint
from mgvideo.models.state_dict import diff_keys, shorten, unwrap


def test_unwrap_strips_ddp_and_compile_prefixes_in_any_nesting():
    keys = ["module.a", "_orig_mod.b", "_orig_mod.module.c", "module._orig_mod.d", "e.module.f"]
    assert list(unwrap(dict.fromkeys(keys, torch.zeros(1)))) == ["a", "b", "c", "d", "e.module.f"]


def test_diff_keys_in_model_order_and_missing_weights_tolerates_bn_counters():
    own = nn.Sequential(nn.Linear(2, 3), nn.BatchNorm1d(3)).state_dict()
    state = {"9.extra": torch.zeros(1), "0.bias": torch.zeros(4), "0.weight": torch.zeros(3, 2)}
    diff = diff_keys(own, state)
    assert diff.missing == ["1.weight", "1.bias", "1.running_mean", "1.running_var", "1.num_batches_tracked"]
    assert diff.missing_weights() == diff.missing[:-1]
    assert diff.unexpected == ["9.extra"]
    assert diff.mis_shaped == ["0.bias"]


def test_shorten_counts_what_it_leaves_out():
    assert shorten([], 3) == ""
    assert shorten(["a", "b"], 2) == "a, b"
    assert shorten(["a", "b", "c", "d"], 2) == "a, b, +2 more"


def test_model_state_unwraps_a_ddp_state_dict(tmp_path):
    model = nn.Linear(3, 4)
    checkpoint.save({f"module.{k}": v for k, v in model.state_dict().items()}, tmp_path / "ddp.pt")
    fresh = nn.Linear(3, 4)
    checkpoint.load_model_weights(fresh, checkpoint.model_state(tmp_path / "ddp.pt"), "ddp.pt")
    assert torch.equal(fresh.weight, model.weight)
