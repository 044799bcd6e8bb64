"""Checkpoints: atomic save, weights_only load, architecture and fingerprint checks, RNG round trip."""

import random

import numpy as np
import pytest
import torch
from torch import nn

from mgvideo.engine import checkpoint
from mgvideo.errors import CheckpointError


def test_save_load_roundtrip_with_rng_and_optimizer(tmp_path):
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.randn(5, 3)).sum().backward()
    opt.step()
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    state = {"model": model.state_dict(), "optimizer": opt.state_dict(), "rng": checkpoint.rng_state(),
             "epoch": 2, "fingerprint": "abc"}
    expected = (random.random(), np.random.rand(), torch.rand(1))
    checkpoint.save(state, tmp_path / "ck" / "last.pt")
    assert [p.name for p in (tmp_path / "ck").iterdir()] == ["last.pt"]  # no temp file left
    loaded = checkpoint.load(tmp_path / "ck" / "last.pt")
    checkpoint.set_rng_state(loaded["rng"])
    assert (random.random(), np.random.rand(), torch.rand(1)) == expected
    fresh = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    checkpoint.load_model_weights(fresh, loaded["model"], "last.pt")
    assert all(torch.equal(a, b) for a, b in zip(fresh.state_dict().values(), model.state_dict().values()))
    torch.optim.SGD(fresh.parameters(), lr=0.1, momentum=0.9).load_state_dict(loaded["optimizer"])


def test_wrong_architecture_is_a_clear_error(tmp_path):
    checkpoint.save({"model": nn.Linear(3, 4).state_dict()}, tmp_path / "a.pt")
    weights = checkpoint.model_state(tmp_path / "a.pt")
    with pytest.raises(CheckpointError, match=r"a\.pt: .*architecture.*wrong shape: bias, weight"):
        checkpoint.load_model_weights(nn.Linear(3, 5), weights, "a.pt")
    with pytest.raises(CheckpointError, match="missing"):
        checkpoint.load_model_weights(nn.Sequential(nn.Linear(3, 4)), weights, "a.pt")


def test_fingerprint_mismatch_refused_unless_forced():
    with pytest.raises(CheckpointError, match="fingerprint"):
        checkpoint.check_fingerprint({"fingerprint": "aaa"}, "bbb", "last.pt", force=False)
    checkpoint.check_fingerprint({"fingerprint": "aaa"}, "bbb", "last.pt", force=True)


def test_unreadable_and_unsafe_files_are_refused(tmp_path):
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="junk.pt: cannot read"):
        checkpoint.load(tmp_path / "junk.pt")
    torch.save({"obj": nn.Linear(2, 2)}, tmp_path / "pickled.pt")  # a module needs full unpickling
    with pytest.raises(CheckpointError, match="pickled.pt"):
        checkpoint.load(tmp_path / "pickled.pt")
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        checkpoint.load(tmp_path / "missing.pt")
