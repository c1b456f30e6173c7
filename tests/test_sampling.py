"""TSN segment sampling against hand-computed index lists (SPEC section 9)."""
from __future__ import annotations

import re

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from flowprep.data.sampling import SAMPLERS, make_sampler, segment_offsets, stack_indices
from flowprep.errors import ConfigError


class Draws:
    """A generator returning given values in turn, recording each call's (low, high) as numpy would take them."""

    def __init__(self, *values):
        self.values = list(values)
        self.calls: list[tuple[int, int]] = []

    def integers(self, low, high=None, size=None):
        low, high = (0, low) if high is None else (low, high)
        self.calls.append((low, high))
        value = self.values.pop(0)
        assert np.all((low <= np.asarray(value)) & (np.asarray(value) < high))
        assert np.shape(value) == (() if size is None else (size,))  # as many values as numpy would draw
        return np.array(value) if size is not None else value


def test_train_random_offset_inside_each_span():
    # n=30, L=10, K=3: 21 start positions, avg = 7; offsets k*7 + draw.
    draws = Draws([0, 6, 3])
    indices = stack_indices(30, 10, 3, "train", draws)
    assert draws.calls == [(0, 7)]
    assert indices.tolist() == [list(range(1, 11)), list(range(14, 24)), list(range(18, 28))]


def test_train_fewer_start_positions_than_segments_draws_sorted():
    # n=11, L=10, K=3: 2 start positions, avg = 0 and n > K: K sorted draws of randint(2).
    draws = Draws([1, 0, 1])
    assert segment_offsets(11, 10, 3, "train", draws).tolist() == [0, 1, 1]
    assert draws.calls == [(0, 2)]


def test_train_video_shorter_than_stack_starts_at_first_frame_and_repeats_last():
    # n=4 < L: TSN's randint(n - L + 1) would fail on an empty range; offset 0, last frame repeats.
    assert stack_indices(4, 10, 1, "train", Draws()).tolist() == [[1, 2, 3, 4, 4, 4, 4, 4, 4, 4]]
    assert stack_indices(5, 10, 3, "train", Draws()).tolist() == [[1, 2, 3, 4, 5, 5, 5, 5, 5, 5]] * 3


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


@pytest.mark.parametrize("sampling", SAMPLERS)
@pytest.mark.parametrize("bad", [dict(mode="eval"), dict(length=0), dict(num_frames=0)])
def test_every_sampler_checks_mode_length_and_frames_alike(sampling, bad):
    args = dict(num_frames=10, length=5, mode="val", rng=np.random.default_rng(0), fps=15.0) | bad
    with pytest.raises(ConfigError, match=repr(next(iter(bad.values())))):
        make_sampler(sampling).indices(**args)


@given(n=st.integers(1, 400), length=st.integers(1, 12), segments=st.integers(1, 8),
       mode=st.sampled_from(["train", "val", "test"]), seed=st.integers(0, 2**32))
def test_stacks_are_consecutive_frames_within_the_video(n, length, segments, mode, seed):
    indices = stack_indices(n, length, segments, mode, np.random.default_rng(seed))
    assert indices.shape == (segments, length)
    assert indices.min() >= 1 and indices.max() <= n
    expected = np.minimum(indices[:, :1] + np.arange(length), n)
    assert (indices == expected).all()
    assert (np.diff(indices[:, 0]) >= 0).all()  # segments in temporal order


# --- The other samplers, against hand-computed cases of their rules (SPEC section 10) ---

from flowprep.data.sampling import (  # noqa: E402
    DenseSampler, FusionSampler, MMAction2Sampler, SequenceSampler, TSNSampler,
)


def starts(indices: np.ndarray) -> list[int]:
    return indices[:, 0].tolist()


# mmaction2 1.2.0's SampleFrames(clip_len=L, frame_interval=1, num_clips=K, test_mode=True) on a rawframe video of
# n frames (start_index 1): its frame_inds, first frame of each clip, read from its own code
# (mmaction/datasets/transforms/loading.py at tag v1.2.0, run on these inputs).
MMACTION2_TEST_STARTS = {
    # L = 1, its "2D recognizer" branch: segment centres int(k * n / K + n / (2K)) + 1.
    (30, 1, 3): [6, 16, 26],
    (119, 1, 25): [3, 8, 12, 17, 22, 27, 31, 36, 41, 46, 50, 55, 60, 65, 70, 74, 79, 84, 89, 93, 98, 103, 108, 112,
                   117],
    (10, 1, 1): [6],
    (7, 1, 2): [2, 6],
    (3, 1, 8): [1, 1, 1, 2, 2, 3, 3, 3],  # more clips than frames
    # L > 1, one clip: max(n - L, 0) // 2 + 1, rounded down where n - L is odd.
    (30, 5, 1): [13],
    (119, 10, 1): [55],
    # L > 1, several clips: round(k * (n - L) / (K - 1)) + 1, half to even (round(2.5) = 2).
    (15, 10, 3): [1, 3, 6],
    (5, 3, 2): [1, 3],
    (119, 5, 25): [1, 6, 11, 15, 20, 25, 29, 34, 39, 44, 49, 53, 58, 63, 67, 72, 77, 82, 87, 91, 96, 101, 105, 110,
                   115],
}


@pytest.mark.parametrize("n, length, clips", MMACTION2_TEST_STARTS)
@pytest.mark.parametrize("mode", ["val", "test"])
def test_mmaction2_test_mode_gives_sampleframes_frames(n, length, clips, mode):
    indices = MMAction2Sampler(clips).indices(n, length, mode)
    assert starts(indices) == MMACTION2_TEST_STARTS[n, length, clips]
    assert (indices == (np.array(starts(indices))[:, None] - 1 + np.arange(length)) % n + 1).all()


def test_mmaction2_and_tsn_centres_differ():
    # The sample clip, K=25, L=5: mmaction2's round(k * 114 / 24) against TSN's int(2.3 + 4.6 k) + 1.
    assert starts(MMAction2Sampler(25).indices(119, 5, "val"))[:4] == [1, 6, 11, 15]
    assert starts(TSNSampler(25).indices(119, 5, "test"))[:4] == [3, 7, 12, 17]


def test_mmaction2_loops_short_videos():
    # n=4 < L=10: offset 0, frames wrap around (out_of_bound_opt='loop'), where TSN repeats frame 4.
    assert MMAction2Sampler().indices(4, 10, "test").tolist() == [[1, 2, 3, 4, 1, 2, 3, 4, 1, 2]]
    assert MMAction2Sampler(2).indices(4, 10, "train", Draws()).tolist() == [[1, 2, 3, 4, 1, 2, 3, 4, 1, 2]] * 2


def test_mmaction2_train_rule_branches():
    # Each case's frames are SampleFrames 1.2.0's with np.random.randint answering the same draws.
    # avg = (30 - 10 + 1) // 3 = 7 > 0: k * 7 + randint(7).
    draws = Draws([6, 0, 3])
    assert starts(MMAction2Sampler(3).indices(30, 10, "train", draws)) == [7, 8, 18]
    assert draws.calls == [(0, 7)]
    # n=11 > max(K, L): 3 sorted draws of randint(2).
    assert starts(MMAction2Sampler(3).indices(11, 10, "train", Draws([1, 0, 1]))) == [1, 2, 2]
    # n=10: avg = 1 // 3 = 0 and n is not > L: around(k / 3) = 0, 0, 1; the last clip loops to frame 1.
    assert MMAction2Sampler(3).indices(10, 10, "train", Draws()).tolist() == [
        list(range(1, 11)), list(range(1, 11)), list(range(2, 11)) + [1]]
    # n=8 < L: avg < 0, so every clip starts at 0 and loops.
    assert MMAction2Sampler(3).indices(8, 10, "train", Draws()).tolist() == [[1, 2, 3, 4, 5, 6, 7, 8, 1, 2]] * 3
    # L = 1 has no branch of its own in train (SampleFrames' 2D branch is test only): avg = 10, k * 10 + draw.
    draws = Draws([9, 0, 4])
    assert MMAction2Sampler(3).indices(30, 1, "train", draws).tolist() == [[10], [11], [25]]
    assert draws.calls == [(0, 10)]
    # n=2, K=3: avg = 0: around(k * 2 / 3) = 0, 1, 1.
    assert MMAction2Sampler(3).indices(2, 1, "train", Draws()).tolist() == [[1], [2], [2]]


def test_fusion_test_rule_every_candidate_tau_15():
    # n=40 fields, N=41 frames, L=10: t = 6:15:36 -> 6, 21, 36; fields t-5 .. t+4.
    indices = FusionSampler().indices(40, 10, "test")
    assert indices.tolist() == [list(range(1, 11)), list(range(16, 26)), list(range(31, 41))]
    # The last candidate's stack ends at field 40, from frame 40 to 41 = N: the whole span is in the video.
    assert FusionSampler().count("test") is None and FusionSampler().count("train") == 5


def test_fusion_train_rule_random_tau_and_run_of_five():
    # n=100, N=101: tau drawn 7 from 5..15; candidates 6, 13, ..., 90 (13 of them); run drawn at 3: t = 27..55.
    draws = Draws(7, 3)
    indices = FusionSampler().indices(100, 10, "train", draws)
    assert draws.calls == [(5, 16), (0, 9)]
    assert starts(indices) == [22, 29, 36, 43, 50]
    assert (indices == np.array(starts(indices))[:, None] + np.arange(10)).all()


def test_fusion_short_videos():
    # n=20, tau 15: one candidate, t=6 (21 > N-5 = 16); the run of 5 repeats it.
    assert starts(FusionSampler().indices(20, 10, "train", Draws(15, 0))) == [1] * 5
    # n=5 < L: t = 6 all the same, fields 1..5 then the last repeated.
    assert FusionSampler().indices(5, 10, "test").tolist() == [[1, 2, 3, 4, 5, 5, 5, 5, 5, 5]]


def test_sequence_one_per_second_from_the_trees_fps():
    # 15 fps, 1 per second, 30 moments, L=1: frames 1, 16, 31, ..., 436 (from the first frame in test).
    indices = SequenceSampler().indices(600, 1, "test", fps=15.0)
    assert indices[:, 0].tolist() == list(range(1, 437, 15)) and indices.shape == (30, 1)
    # train: the offset is drawn from 0 .. n - L - 435 = 164.
    draws = Draws(10)
    assert SequenceSampler().indices(600, 1, "train", draws, fps=15.0)[:3, 0].tolist() == [11, 26, 41]
    assert draws.calls == [(0, 165)]
    # 12.5 fps: the frame nearest k seconds is floor(12.5 k + 0.5): 0, 13, 25, 38.
    assert SequenceSampler(4).indices(100, 1, "test", fps=12.5)[:, 0].tolist() == [1, 14, 26, 39]
    # 120 moments at 2 per second from 30 fps: every 15th frame.
    assert SequenceSampler(120, rate=2.0).indices(2000, 1, "val", fps=30.0)[-1, 0] == 1 + 119 * 15


def test_sequence_short_videos_loop_or_repeat():
    # 20 frames at 15 fps, 3 moments: 1, 16, 31 -> 31 loops to 11, or repeats frame 20.
    assert SequenceSampler(3).indices(20, 1, "test", fps=15.0)[:, 0].tolist() == [1, 16, 11]
    assert SequenceSampler(3, short="repeat").indices(20, 1, "test", fps=15.0)[:, 0].tolist() == [1, 16, 20]
    with pytest.raises(ConfigError, match="fps"):
        SequenceSampler().indices(20, 1, "test")


def test_dense_clips_cover_the_video():
    assert DenseSampler().indices(25, 10, "test").tolist() == [list(range(1, 11)), list(range(11, 21))]
    assert starts(DenseSampler(stride=5).indices(25, 10, "test")) == [1, 6, 11, 16]
    assert starts(DenseSampler(stride=5, max_clips=2).indices(25, 10, "test")) == [1, 6]
    assert DenseSampler().indices(4, 10, "test").tolist() == [[1, 2, 3, 4, 4, 4, 4, 4, 4, 4]]
    # train: the same 2 clips shifted by up to the slack, 25 - 10 - 10 = 5 (the count stays for batching).
    draws = Draws(5)
    assert starts(DenseSampler().indices(25, 10, "train", draws)) == [6, 16]
    assert draws.calls == [(0, 6)]
    draws = Draws(9)
    assert starts(DenseSampler(stride=5, max_clips=2).indices(25, 10, "train", draws)) == [10, 15]
    assert draws.calls == [(0, 11)]


def test_explicit_segments_are_never_overridden_by_the_mode():
    assert TSNSampler().count("test") == 25 and TSNSampler().count("train") == 1
    assert TSNSampler(segments=1).count("test") == 1  # today's silent 25 is gone
    assert TSNSampler(test_segments=3).count("test") == 3 and TSNSampler(test_segments=3).count("val") == 1
    with pytest.raises(ConfigError, match="test_segments=25 would never be"):
        TSNSampler(segments=1, test_segments=25)
    assert make_sampler("mmaction2", segments=4) == MMAction2Sampler(4)
    assert make_sampler("fusion", segments=3) == FusionSampler(moments=3)
    with pytest.raises(ConfigError, match="'tsm'"):
        make_sampler("tsm")
    with pytest.raises(ConfigError, match="test_segments"):
        make_sampler("fusion", test_segments=3)


@given(n=st.integers(1, 300), length=st.integers(1, 12), seed=st.integers(0, 2**32),
       mode=st.sampled_from(["train", "val", "test"]),
       sampler=st.sampled_from([MMAction2Sampler(3), FusionSampler(), SequenceSampler(7), DenseSampler(3)]))
def test_every_sampler_stays_inside_the_video(n, length, seed, mode, sampler):
    indices = sampler.indices(n, length, mode, np.random.default_rng(seed), fps=15.0)
    assert indices.ndim == 2 and indices.shape[1] == length and len(indices) >= 1
    assert indices.min() >= 1 and indices.max() <= n
    if sampler.count(mode) is not None:
        assert len(indices) == sampler.count(mode)


@pytest.mark.parametrize("length", [2.5, True, "3"])
def test_a_stack_length_that_is_no_integer_is_refused_quoting_it(length):
    # 2.5 used to pass and read 6 channels, where segments=2.0 was refused.
    with pytest.raises(ConfigError, match=f"stack length must be an integer >= 1, got {length!r}"):
        stack_indices(30, length, 1, "val")
    with pytest.raises(ConfigError, match="got 2.0"):
        stack_indices(30, 5, 2.0, "val")


@pytest.mark.parametrize("tau", [5, (5,), (5, 15, 20), (5.5, 15), (0, 3), (9, 5), "515"])
def test_fusion_tau_must_be_a_range_of_positive_integers_quoting_it(tau):
    with pytest.raises(ConfigError, match=rf"tau must be .* got {re.escape(repr(tau))}$"):
        FusionSampler(tau=tau)
    assert FusionSampler(tau=(5, 5)).tau == (5, 5)
    assert FusionSampler(tau=[4, 6]).indices(40, 10, "train", Draws(4, 0)).shape == (5, 10)
