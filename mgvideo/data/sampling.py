"""Where a clip comes from: temporal frame indices and spatial scale/crop/flip.

Every random choice takes an explicit `numpy.random.Generator`, so a clip is a pure function of its seed.
Frames are numpy uint8 arrays laid out (T, H, W, C) until the dataset turns them into a tensor.
"""

from __future__ import annotations

import numpy as np
import torch

from mgvideo.data.decode import scaled_size
from mgvideo.errors import ConfigError


def clip_indices(num_frames: int, frames: int, rate: int, start: int) -> np.ndarray:
    """`frames` indices `rate` apart from `start`; a video shorter than that repeats its last frame."""
    return np.clip(start + rate * np.arange(frames), 0, max(num_frames - 1, 0))


def random_clip_indices(rng: np.random.Generator, num_frames: int, frames: int,
                        min_rate: int, max_rate: int) -> np.ndarray:
    """A training clip: a rate drawn uniformly from [min_rate, max_rate] (multigrid's non-uniform stride)
    and a uniformly random start."""
    if not 1 <= min_rate <= max_rate:
        raise ConfigError(f"sampling rate range [{min_rate}, {max_rate}] must satisfy 1 <= min <= max")
    rate = int(rng.integers(min_rate, max_rate + 1))
    span = (frames - 1) * rate + 1
    start = int(rng.integers(0, max(num_frames - span, 0) + 1))
    return clip_indices(num_frames, frames, rate, start)


def uniform_clip_indices(num_frames: int, frames: int, rate: int, view: int, num_views: int) -> np.ndarray:
    """Test clip `view` of `num_views`, evenly spaced over the video (view centres at (k + 0.5) / K)."""
    span = (frames - 1) * rate + 1
    start = round(max(num_frames - span, 0) * (view + 0.5) / num_views)
    return clip_indices(num_frames, frames, rate, start)


def segment_indices(num_frames: int, frames: int, rng: np.random.Generator | None = None) -> np.ndarray:
    """Something-Something style: split the whole video into `frames` segments and take one frame from
    each, at random in training (`rng` given), else from the middle."""
    size = (num_frames - 1) / frames
    lo = np.round(size * np.arange(frames)).astype(np.int64)
    hi = np.round(size * np.arange(1, frames + 1)).astype(np.int64)
    if rng is None:
        return (lo + hi) // 2
    return lo + np.floor(rng.random(frames) * (hi - lo + 1)).astype(np.int64).clip(0, hi - lo)


def scale_range(crop: int, base_crop: int, jitter: tuple[int, int], same_view: bool = False
                ) -> tuple[int, int]:
    """Short-side jitter range at crop `crop`: the lower bound shrinks with crop/base_crop, the upper bound
    stays (PySlowFast: 256/320 at 224 gives [128, 320] at crop 112), so small crops are often zoomed-in
    views. `same_view` shrinks both bounds: a small crop then sees what a full crop sees, coarser."""
    low = round(jitter[0] * crop / base_crop)
    high = round(jitter[1] * crop / base_crop) if same_view else jitter[1]
    return max(low, crop), max(high, crop)


def random_short_side(rng: np.random.Generator, crop: int, base_crop: int, jitter: tuple[int, int],
                      same_view: bool = False) -> int:
    """A short side drawn uniformly from `scale_range`."""
    low, high = scale_range(crop, base_crop, jitter, same_view)
    return int(rng.integers(low, high + 1))


def resize_short_side(clip: np.ndarray, short_side: int) -> np.ndarray:
    """Resize (T, H, W, C) frames so the shorter side is `short_side` (bilinear, antialiased); used only
    when the decoder did not already do it."""
    t, h, w, c = clip.shape
    size = scaled_size(h, w, short_side)
    if size == (h, w):
        return clip
    x = torch.from_numpy(clip).permute(0, 3, 1, 2).float()
    x = torch.nn.functional.interpolate(x, size=size, mode="bilinear", antialias=True, align_corners=False)
    return x.round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()


def random_crop(rng: np.random.Generator, clip: np.ndarray, crop: int) -> np.ndarray:
    """A `crop` x `crop` window at a uniformly random position."""
    _, h, w, _ = clip.shape
    y = int(rng.integers(0, max(h - crop, 0) + 1))
    x = int(rng.integers(0, max(w - crop, 0) + 1))
    return _pad_to(clip[:, y:y + crop, x:x + crop], crop)


def spatial_crop(clip: np.ndarray, crop: int, position: int) -> np.ndarray:
    """Crop `position` 0, 1 or 2 along the long side (left/centre/right, or top/centre/bottom); the short
    side is centred."""
    if position not in (0, 1, 2):
        raise ConfigError(f"spatial crop position must be 0, 1 or 2, got {position}")
    _, h, w, _ = clip.shape
    y, x = max(h - crop, 0) // 2, max(w - crop, 0) // 2
    if h > w:
        y = max(h - crop, 0) * position // 2
    else:
        x = max(w - crop, 0) * position // 2
    return _pad_to(clip[:, y:y + crop, x:x + crop], crop)


def _pad_to(clip: np.ndarray, crop: int) -> np.ndarray:
    """Edge-pad a crop that came out smaller than asked (a frame smaller than the crop)."""
    _, h, w, _ = clip.shape
    if h == crop and w == crop:
        return clip
    return np.pad(clip, ((0, 0), (0, crop - h), (0, crop - w), (0, 0)), mode="edge")


def maybe_flip(rng: np.random.Generator, clip: np.ndarray, enabled: bool = True) -> np.ndarray:
    """Mirror left-right with probability 0.5 (off for direction-sensitive data such as SSv2)."""
    if enabled and rng.random() < 0.5:
        return clip[:, :, ::-1]
    return clip


def to_tensor(clip: np.ndarray) -> torch.Tensor:
    """(T, H, W, C) uint8 numpy -> (C, T, H, W) uint8 tensor."""
    return torch.from_numpy(np.ascontiguousarray(clip.transpose(3, 0, 1, 2)))
