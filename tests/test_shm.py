"""The /dev/shm a node's loaders need (data/loader.py): the formula, against a hand computation from the
loader's real settings, and its direction in each input."""

import pytest

from mgvideo.data.loader import (
    PREFETCH_FACTOR,
    SHM_PAGE,
    default_workers,
    largest_batch_bytes,
    shm_need_bytes,
    shm_need_lines,
)

# The Kinetics SlowFast-R50 8x8 multigrid recipe: batch 8 of 3 x 32 x 224 x 224 uint8 at the full shape;
# its coarse shapes keep batch x T x S^2 (128 x 8 x 112^2 is the same), 158 rounds it down a little.
SLOWFAST_SHAPES = [(128, 8, 112), (64, 8, 158), (64, 16, 112), (32, 16, 158), (16, 16, 224), (8, 32, 224)]
SLOWFAST_BATCH = 8 * 3 * 32 * 224 * 224


def test_the_largest_batch_is_the_largest_uint8_clip_batch():
    assert largest_batch_bytes(SLOWFAST_SHAPES) == SLOWFAST_BATCH == 38_535_168
    assert largest_batch_bytes([(2, 4, 10)], channels=1) == 800


def test_eight_slowfast_ranks_on_a_96_core_node_equal_the_hand_computation():
    workers = default_workers(8, cores=96)  # data.workers: -1 as build_loader resolves it: 96 / 8 - 1
    assert workers == 11 and PREFETCH_FACTOR == 2
    in_flight = 11 * 2 + 2  # prefetched by the workers, plus the batch in hand and the next
    per_rank = 2 * in_flight * 38_535_168 + 2 * 250_000 + 6 * 4096  # two pools; flags of 250k videos
    assert shm_need_bytes(8, workers, PREFETCH_FACTOR, SLOWFAST_BATCH, videos=250_000) == 8 * per_rank
    assert 8 * per_rank == 14_801_701_120  # 13.8 GiB: docker's --shm-size=8g is too small


def test_the_need_grows_with_ranks_workers_prefetch_batches_and_pools():
    base = {"local_ranks": 2, "workers": 4, "prefetch_factor": 2, "batch_clip_bytes": 10**6, "pools": 2}
    need = shm_need_bytes(**base)
    for key in base:
        assert shm_need_bytes(**{**base, key: base[key] + 1}) > need, key
    assert shm_need_bytes(**base, videos=10**6) > need
    needs = [shm_need_bytes(n, default_workers(n, 64), 2, 10**6) for n in (1, 2, 4, 8)]
    assert needs == sorted(needs)  # more ranks, each with fewer workers: still more in all


def test_without_workers_only_the_flags_are_shared():
    assert shm_need_bytes(4, 0, 2, 10**9) == 4 * 6 * SHM_PAGE


@pytest.mark.parametrize("data_workers", [-1, 3])
def test_one_line_per_rank_count(data_workers):
    lines = shm_need_lines(SLOWFAST_BATCH, data_workers, cores=96)
    assert [line.split(" rank")[0] for line in lines] == ["1", "2", "4", "8"]
    workers = [default_workers(n, 96) if data_workers < 0 else 3 for n in (1, 2, 4, 8)]
    for line, n, w in zip(lines, (1, 2, 4, 8), workers):
        need = shm_need_bytes(n, w, 2, SLOWFAST_BATCH)
        assert f"{w} loader workers each: {need / 2**30:.1f} GiB" in line
        assert f"--shm-size={-(-need // 2**30)}g" in line


def test_lines_follow_a_per_device_batch_that_depends_on_the_rank_count():
    # The Kinetics recipe keeps its global batch of 64 on fewer GPUs: 64 clips a device on 1 GPU, 8 on 8.
    per_device = {1: 64, 2: 32, 4: 16, 8: 8}
    lines = shm_need_lines(lambda n: per_device[n] * SLOWFAST_BATCH // 8, data_workers=4)
    needs = [shm_need_bytes(n, 4, 2, per_device[n] * SLOWFAST_BATCH // 8) for n in (1, 2, 4, 8)]
    assert needs[0] == needs[-1] - 7 * 6 * SHM_PAGE  # the same clips in flight a node, less 7 ranks' flags
    assert all(f"{need / 2**30:.1f} GiB" in line for need, line in zip(needs, lines))
