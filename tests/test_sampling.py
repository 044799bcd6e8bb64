"""Temporal index selection and spatial scale / crop / flip."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mgvideo.data import sampling as S
from mgvideo.errors import ConfigError


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 400), st.integers(1, 32), st.integers(1, 4), st.integers(0, 6), st.integers(0, 2**31))
def test_random_clip_indices_stay_in_the_video_with_one_rate(num_frames, frames, min_rate, extra, seed):
    idx = S.random_clip_indices(np.random.default_rng(seed), num_frames, frames, min_rate, min_rate + extra)
    assert len(idx) == frames and idx.min() >= 0 and idx.max() <= num_frames - 1
    # one rate from the range and one start, clamped at the end (a short video repeats its last frame)
    assert any(np.array_equal(idx, S.clip_indices(num_frames, frames, r, int(idx[0])))
               for r in range(min_rate, min_rate + extra + 1))


def test_rate_is_drawn_uniformly_from_the_whole_range():
    rng = np.random.default_rng(0)
    rates = [int(np.diff(S.random_clip_indices(rng, 1000, 8, 2, 8))[0]) for _ in range(700)]
    counts = np.bincount(rates, minlength=9)[2:]
    assert counts.min() > 60  # 7 rates, ~100 each
    assert sorted(set(rates)) == [2, 3, 4, 5, 6, 7, 8]


def test_same_seed_same_clip_and_bad_rate_range_is_rejected():
    a = S.random_clip_indices(np.random.default_rng(7), 300, 8, 2, 8)
    b = S.random_clip_indices(np.random.default_rng(7), 300, 8, 2, 8)
    assert np.array_equal(a, b)
    with pytest.raises(ConfigError):
        S.random_clip_indices(np.random.default_rng(0), 300, 8, 4, 2)


def test_short_video_is_padded_by_repeating_its_last_frame():
    assert S.clip_indices(5, 8, 2, 0).tolist() == [0, 2, 4, 4, 4, 4, 4, 4]
    assert S.random_clip_indices(np.random.default_rng(0), 1, 4, 2, 2).tolist() == [0, 0, 0, 0]


def test_uniform_test_clips_are_evenly_spaced_and_centred():
    assert S.uniform_clip_indices(100, 8, 2, 0, 1).tolist() == list(range(42, 58, 2))  # (100-15)/2 = 42.5
    starts = [S.uniform_clip_indices(1000, 8, 2, k, 10)[0] for k in range(10)]
    gaps = np.diff(starts)
    assert starts[0] > 0 and starts[-1] + 14 < 999 and gaps.max() - gaps.min() <= 1


def test_segment_sampling_takes_one_frame_per_segment():
    mid = S.segment_indices(81, 8)
    assert mid.tolist() == [5, 15, 25, 35, 45, 55, 65, 75]
    rng = np.random.default_rng(0)
    for _ in range(50):
        idx = S.segment_indices(81, 8, rng)
        assert all(10 * i <= v <= 10 * (i + 1) for i, v in enumerate(idx))
    assert S.segment_indices(3, 8).max() <= 2  # fewer frames than segments: repeats, stays inside


def test_scale_range_matches_the_reference():
    jitter = (256, 320)
    assert S.scale_range(112, 224, jitter) == (128, 320)
    assert S.scale_range(158, 224, jitter) == (181, 320)
    assert S.scale_range(224, 224, jitter) == (256, 320)
    rng = np.random.default_rng(0)
    draws = {S.random_short_side(rng, 112, 224, jitter) for _ in range(2000)}
    assert min(draws) == 128 and max(draws) == 320


def test_same_view_scale_range_keeps_the_field_of_view():
    jitter = (256, 320)
    assert S.scale_range(112, 224, jitter, same_view=True) == (128, 160)
    assert S.scale_range(224, 224, jitter, same_view=True) == (256, 320)
    rng = np.random.default_rng(0)
    draws = {S.random_short_side(rng, 112, 224, jitter, same_view=True) for _ in range(2000)}
    assert min(draws) == 128 and max(draws) == 160


def coded(t=2, h=6, w=10):
    """A clip whose pixel (y, x) holds 10*y + x, to read crop positions back."""
    y, x = np.mgrid[:h, :w]
    return np.broadcast_to((10 * y + x)[None, :, :, None], (t, h, w, 3)).astype(np.uint8).copy()


def test_three_crops_run_along_the_long_side():
    landscape, portrait = coded(h=6, w=10), coded(h=10, w=6)
    assert [int(S.spatial_crop(landscape, 6, p)[0, 0, 0, 0]) for p in (0, 1, 2)] == [0, 2, 4]
    assert [int(S.spatial_crop(portrait, 6, p)[0, 0, 0, 0]) for p in (0, 1, 2)] == [0, 20, 40]
    with pytest.raises(ConfigError):
        S.spatial_crop(landscape, 6, 3)


def test_random_crop_and_padding():
    rng = np.random.default_rng(0)
    corners = {int(S.random_crop(rng, coded(), 4)[0, 0, 0, 0]) for _ in range(300)}
    assert corners == {10 * y + x for y in range(3) for x in range(7)}
    assert S.random_crop(rng, coded(h=3, w=3), 5).shape == (2, 5, 5, 3)  # smaller frame: edge-padded


def test_flip_is_random_and_can_be_turned_off():
    rng, clip = np.random.default_rng(0), coded()
    flips = [S.maybe_flip(rng, clip)[0, 0, 0, 0] == 9 for _ in range(400)]
    assert 150 < sum(flips) < 250
    assert not any(S.maybe_flip(rng, clip, enabled=False)[0, 0, 0, 0] == 9 for _ in range(50))


def test_resize_short_side_and_tensor_layout():
    clip = np.full((3, 20, 40, 3), 77, np.uint8)
    out = S.resize_short_side(clip, 10)
    assert out.shape == (3, 10, 20, 3) and out.dtype == np.uint8 and np.all(out == 77)
    assert S.resize_short_side(clip.transpose(0, 2, 1, 3), 10).shape == (3, 20, 10, 3)
    assert tuple(S.to_tensor(out).shape) == (3, 3, 10, 20)
