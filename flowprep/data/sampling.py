"""TSN segment sampling: which flow frames each stack reads. Pure index math (numpy only, no torch).

Follows tsn-pytorch (SPEC section 9) with n flow pairs, stack length L and K segments; indices are 1-based
frame numbers as in annotation lists, and a stack stops advancing at frame n (the last frame repeats).
"""
from __future__ import annotations

import numpy as np

from ..errors import ConfigError

MODES = ("train", "val", "test")


def segment_offsets(num_frames: int, length: int, segments: int, mode: str,
                    rng: np.random.Generator | None = None) -> np.ndarray:
    """0-based start offset of each of the K segments, shape (K,) int64.

    train: random offset inside each of K equal spans (TSN); val: the centre of each span, or 0 for videos
    with at most K + L - 1 frames; test: the centre of each span. Where TSN's formulas would draw from an
    empty range or go negative (videos shorter than L), the offset is 0.
    """
    check_sampling(length, segments, mode)
    if num_frames < 1:
        raise ConfigError(f"a video needs at least 1 frame to sample from, got {num_frames!r}")
    n, L, K = num_frames, length, segments
    starts = n - L + 1  # number of start positions whose stack fits in the video
    if mode == "train":
        if rng is None:
            raise ConfigError("train sampling needs a random generator (rng)")
        average = starts // K
        if average > 0:
            return np.arange(K, dtype=np.int64) * average + rng.integers(average, size=K)
        if n > K and starts > 0:
            return np.sort(rng.integers(starts, size=K)).astype(np.int64)
        return np.zeros(K, dtype=np.int64)
    if mode == "val" and n <= K + L - 1:
        return np.zeros(K, dtype=np.int64)
    tick = starts / K
    offsets = np.array([int(tick / 2.0 + tick * k) for k in range(K)], dtype=np.int64)
    return np.maximum(offsets, 0)


def stack_indices(num_frames: int, length: int, segments: int, mode: str,
                  rng: np.random.Generator | None = None) -> np.ndarray:
    """1-based frame numbers read by each stack, shape (K, L) int64: start, start + 1, ... capped at n."""
    offsets = segment_offsets(num_frames, length, segments, mode, rng)
    return np.minimum(offsets[:, None] + 1 + np.arange(length, dtype=np.int64), num_frames)


def check_sampling(length: int, segments: int, mode: str) -> None:
    """ConfigError quoting the value unless mode is known and length and segments are positive."""
    if mode not in MODES:
        raise ConfigError(f"mode must be one of {', '.join(MODES)}; got {mode!r}")
    if length < 1:
        raise ConfigError(f"stack length must be >= 1, got {length!r}")
    if segments < 1:
        raise ConfigError(f"segments must be >= 1, got {segments!r}")
