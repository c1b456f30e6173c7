"""TSN segment sampling against hand-computed index lists (SPEC section 9)."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from flowprep.data.sampling import segment_offsets, stack_indices
from flowprep.errors import ConfigError


class FixedDraws:
    """A generator whose draws are given in advance, checking each draw's range as randint(high) would."""

    def __init__(self, values: list[int]):
        self.values = values
        self.highs: list[int] = []

    def integers(self, high: int, size: int) -> np.ndarray:
        assert size == len(self.values)
        assert all(0 <= v < high for v in self.values)
        self.highs.append(high)
        return np.array(self.values)


def test_train_random_offset_inside_each_span():
    # n=30, L=10, K=3: 21 start positions, avg = 7; offsets k*7 + draw.
    draws = FixedDraws([0, 6, 3])
    indices = stack_indices(30, 10, 3, "train", draws)
    assert draws.highs == [7]
    assert indices.tolist() == [list(range(1, 11)), list(range(14, 24)), list(range(18, 28))]


def test_train_fewer_start_positions_than_segments_draws_sorted():
    # n=11, L=10, K=3: 2 start positions, avg = 0 and n > K: K sorted draws of randint(2).
    draws = FixedDraws([1, 0, 1])
    assert segment_offsets(11, 10, 3, "train", draws).tolist() == [0, 1, 1]
    assert draws.highs == [2]


def test_train_video_shorter_than_stack_starts_at_first_frame_and_repeats_last():
    # n=4 < L: TSN's randint(n - L + 1) would fail on an empty range; offset 0, last frame repeats.
    assert stack_indices(4, 10, 1, "train", FixedDraws([0])).tolist() == [[1, 2, 3, 4, 4, 4, 4, 4, 4, 4]]
    assert stack_indices(5, 10, 3, "train", FixedDraws([0, 0, 0])).tolist() == [[1, 2, 3, 4, 5, 5, 5, 5, 5, 5]] * 3


def test_train_needs_a_generator():
    with pytest.raises(ConfigError, match="rng"):
        stack_indices(30, 10, 3, "train")


def test_val_centres():
    # n=30, L=10, K=3: tick = 21 / 3 = 7; offsets int(3.5 + 7k) = 3, 10, 17.
    assert stack_indices(30, 10, 3, "val").tolist() == [list(range(4, 14)), list(range(11, 21)),
                                                         list(range(18, 28))]
    # n=119 (the sample clip), L=5, K=1: tick = 115; offset int(57.5) = 57.
    assert stack_indices(119, 5, 1, "val").tolist() == [[58, 59, 60, 61, 62]]


def test_val_short_videos_start_at_first_frame():
    # n <= K + L - 1 = 12: every segment starts at frame 1.
    assert stack_indices(12, 10, 3, "val").tolist() == [list(range(1, 11))] * 3
    assert stack_indices(3, 5, 2, "val").tolist() == [[1, 2, 3, 3, 3]] * 2


def test_test_mode_uses_centres_even_for_short_videos():
    # n=12, L=10, K=3: tick = 3 / 3 = 1; offsets int(0.5 + k) = 0, 1, 2 (val would give 0, 0, 0).
    assert stack_indices(12, 10, 3, "test").tolist() == [list(range(1, 11)), list(range(2, 12)),
                                                          list(range(3, 13))]
    # n=25, L=1, K=25 (TSN test): one segment per frame.
    assert stack_indices(25, 1, 25, "test")[:, 0].tolist() == list(range(1, 26))
    # n=5 < L=10: TSN's tick is negative; offsets are clamped to 0.
    assert stack_indices(5, 10, 2, "test").tolist() == [[1, 2, 3, 4, 5, 5, 5, 5, 5, 5]] * 2


@pytest.mark.parametrize("bad", [dict(mode="eval"), dict(length=0), dict(segments=0), dict(num_frames=0)])
def test_bad_arguments_are_quoted(bad):
    args = dict(num_frames=10, length=5, segments=1, mode="val") | bad
    with pytest.raises(ConfigError, match=repr(next(iter(bad.values())))):
        stack_indices(**args)


@given(n=st.integers(1, 400), length=st.integers(1, 12), segments=st.integers(1, 8),
       mode=st.sampled_from(["train", "val", "test"]), seed=st.integers(0, 2**32))
def test_stacks_are_consecutive_frames_within_the_video(n, length, segments, mode, seed):
    indices = stack_indices(n, length, segments, mode, np.random.default_rng(seed))
    assert indices.shape == (segments, length)
    assert indices.min() >= 1 and indices.max() <= n
    expected = np.minimum(indices[:, :1] + np.arange(length), n)
    assert (indices == expected).all()
    assert (np.diff(indices[:, 0]) >= 0).all()  # segments in temporal order
