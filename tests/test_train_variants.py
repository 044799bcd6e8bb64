"""scripts/train_variants.py: which seeds it trains, and its usage."""

import importlib.util
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _load():
    spec = importlib.util.spec_from_file_location("train_variants", REPO / "scripts" / "train_variants.py")
    module = sys.modules["train_variants"] = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_seeds_are_a_count_or_a_list():
    seeds_of = _load().seeds_of
    assert seeds_of("3") == [0, 1, 2]
    assert seeds_of("0,2") == [0, 2] and seeds_of("2,") == [2]


def test_too_few_arguments_print_the_usage():
    with pytest.raises(SystemExit, match="SEEDS is a count"):
        _load().main(["configs/synthetic/bench.yaml", "out"])


def test_a_variant_named_again_trains_into_its_own_folder():
    assert _load().folder_names(["baseline", "multigrid", "baseline", "baseline"]) == [
        ("baseline", "baseline"), ("multigrid", "multigrid"), ("baseline", "baseline~2"),
        ("baseline", "baseline~3")]
