"""scripts/train_variants.py: which seeds it trains, and its usage."""

import pytest
from script_modules import load_script


def test_seeds_are_a_count_or_a_list():
    seeds_of = load_script("train_variants").seeds_of
    assert seeds_of("3") == [0, 1, 2]
    assert seeds_of("0,2") == [0, 2] and seeds_of("2,") == [2]


def test_too_few_arguments_print_the_usage():
    with pytest.raises(SystemExit, match="SEEDS is a count"):
        load_script("train_variants").main(["configs/synthetic/bench.yaml", "out"])


def test_a_variant_named_again_trains_into_its_own_folder():
    assert load_script("train_variants").folder_names(["baseline", "multigrid", "baseline", "baseline"]) == [
        ("baseline", "baseline"), ("multigrid", "multigrid"), ("baseline", "baseline~2"),
        ("baseline", "baseline~3")]
