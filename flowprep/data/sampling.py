"""Samplers: which moments of a video an item reads. Pure index math (numpy only, no torch).

A sampler turns a video's length n (in the units its stacking reads: flow fields for flow stackings, RGB
frames for `rgb`, RGB differences for `rgbdiff`), the stack length L, the mode and a random generator into a
(K, L) int64 array of 1-based unit numbers: row k is what moment k reads, in order. Flow field j goes from
sampled frame j to j + 1, so a row starting at s spans frames s .. s + L. Samplers are small frozen objects
behind one interface (`Sampler.indices`), as pytorchvideo's ClipSampler and torchvideo's FrameSampler:

- TSNSampler: tsn-pytorch's segments (SPEC section 9); `segment_offsets` / `stack_indices` are its math.
- MMAction2Sampler: mmaction2's SampleFrames (train and test rules, 'loop' for short videos).
- FusionSampler: Feichtenhofer et al.'s T moments tau frames apart (train and test rules of their code).
- SequenceSampler: a fixed rate in moments per second, from the fps the tree was extracted at (Beyond Short
  Snippets: 1 per second, 30 or 120 of them).
- DenseSampler: consecutive clips `stride` apart covering the whole video (dense test clips).

`make_sampler(name, ...)` builds one from a string shortcut.
"""
from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np

from ..errors import ConfigError

MODES = ("train", "val", "test")
TSN_TEST_SEGMENTS = 25
SHORT_RULES = ("repeat", "loop")


def segment_offsets(num_frames: int, length: int, segments: int, mode: str,
                    rng: np.random.Generator | None = None) -> np.ndarray:
    """0-based start offset of each of the K segments, shape (K,) int64.

    train: random offset inside each of K equal spans (TSN); val: the centre of each span, or 0 for videos
    with at most K + L - 1 frames; test: the centre of each span. Where TSN's formulas would draw from an
    empty range or go negative (videos shorter than L), the offset is 0.
    """
    check_sampling(length, segments, mode)
    _check_frames(num_frames)
    n, L, K = num_frames, length, segments
    starts = n - L + 1  # number of start positions whose stack fits in the video
    if mode == "train":
        rng = _need_rng(rng)
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
    return rows(offsets + 1, length, num_frames, "repeat")


def rows(starts: np.ndarray, length: int, num_frames: int, short: str) -> np.ndarray:
    """(K, L) rows start, start + 1, ... from 1-based `starts` (K,); past frame n they 'repeat' the last frame
    (TSN) or 'loop' back to frame 1 (mmaction2's out_of_bound_opt='loop')."""
    wanted = np.asarray(starts, dtype=np.int64)[:, None] + np.arange(length, dtype=np.int64)
    if short == "loop":
        return (wanted - 1) % num_frames + 1
    return np.minimum(wanted, num_frames)


def check_sampling(length: int, segments: int, mode: str) -> None:
    """ConfigError quoting the value unless mode is known and length and segments are positive."""
    check_mode(mode)
    check_length(length)
    _positive("segments", segments)


def check_length(length: int) -> None:
    """ConfigError quoting the value unless the stack length L is an integer >= 1."""
    _positive("stack length", length)


def check_mode(mode: str) -> None:
    if mode not in MODES:
        raise ConfigError(f"mode must be one of {', '.join(MODES)}; got {mode!r}")


class Sampler(ABC):
    """Which moments of a video an item reads: `indices` gives (K, L) 1-based unit numbers, row k moment k."""

    needs_fps = False  # whether `indices` needs the tree's sampled fps (meta.json's sampled_fps)

    def indices(self, num_frames: int, length: int, mode: str, rng: np.random.Generator | None = None,
                fps: float | None = None) -> np.ndarray:
        """(K, L) int64 1-based unit numbers for a video of `num_frames` units (n >= 1) and stacks of
        `length`; `rng` is needed in train mode; `fps` (sampled frames per second) when needs_fps."""
        check_mode(mode)
        check_length(length)
        _check_frames(num_frames)
        return self._indices(num_frames, length, mode, rng, fps)

    @abstractmethod
    def _indices(self, num_frames: int, length: int, mode: str, rng: np.random.Generator | None,
                 fps: float | None) -> np.ndarray:
        """indices, with mode, length and num_frames checked."""

    @abstractmethod
    def count(self, mode: str) -> int | None:
        """K, the moments per item in `mode`, or None where it depends on the video's length."""


@dataclass(frozen=True)
class TSNSampler(Sampler):
    """tsn-pytorch's segment sampling (SPEC section 9; `segment_offsets`). `segments` K, when given, is used in
    every mode; when None, train and val use 1 segment and test uses `test_segments` (None: TSN's 25). A mode
    never overrides a given count: segments and test_segments both given and different is an error."""

    segments: int | None = None
    test_segments: int | None = None

    def __post_init__(self) -> None:
        _positive("segments", self.segments, none_ok=True)
        _positive("test_segments", self.test_segments, none_ok=True)
        if None not in (self.segments, self.test_segments) and self.segments != self.test_segments:
            raise ConfigError(f"segments={self.segments!r} is used in every mode, so test_segments="
                              f"{self.test_segments!r} would never be: give one of them")

    def count(self, mode: str) -> int:
        check_mode(mode)
        if self.segments is not None:
            return self.segments
        if mode == "test":
            return TSN_TEST_SEGMENTS if self.test_segments is None else self.test_segments
        return 1

    def _indices(self, num_frames: int, length: int, mode: str, rng: np.random.Generator | None,
                 fps: float | None) -> np.ndarray:
        return stack_indices(num_frames, length, self.count(mode), mode, rng)


@dataclass(frozen=True)
class MMAction2Sampler(Sampler):
    """mmaction2's SampleFrames(clip_len=L, frame_interval=1, num_clips=K), out_of_bound_opt='loop'.

    train (_get_train_clips): avg = (n - L + 1) // K; avg > 0: k * avg + randint(avg); elif n > max(K, L): K
    sorted draws of randint(n - L + 1); elif avg == 0: round(k * (n - L + 1) / K); else 0. val and test
    (test_mode=True, _get_test_clips): L = 1 (its "2D recognizer" branch): the segment centres
    int(k * n / K + n / (2K)); L > 1: K = 1: max(n - L, 0) // 2; K > 1: round(k * max(n - L, 0) / (K - 1)),
    numpy's round half to even. Rows offset + 1 .. offset + L, wrapping past frame n back to frame 1. Checked
    against mmaction2 1.2.0's own code (tests/test_sampling.py). Not offered: frame_interval > 1,
    twice_sample, temporal_jitter, keep_tail_frames, target_fps, out_of_bound_opt='repeat_last'.
    """

    clips: int = 1

    def __post_init__(self) -> None:
        _positive("clips", self.clips)

    def count(self, mode: str) -> int:
        check_mode(mode)
        return self.clips

    def _indices(self, num_frames: int, length: int, mode: str, rng: np.random.Generator | None,
                 fps: float | None) -> np.ndarray:
        n, L, K = num_frames, length, self.clips
        if mode == "train":
            rng = _need_rng(rng)
            average = (n - L + 1) // K
            if average > 0:
                offsets = np.arange(K) * average + rng.integers(average, size=K)
            elif n > max(K, L):
                offsets = np.sort(rng.integers(n - L + 1, size=K))
            elif average == 0:
                offsets = np.around(np.arange(K) * ((n - L + 1.0) / K))
            else:
                offsets = np.zeros(K)
        elif L == 1:
            # SampleFrames' float expression, truncated as its astype(np.int32) does
            average = n / K
            offsets = np.floor(np.arange(K) * average + average / 2.0)
        else:
            most = max(n - L, 0)
            offsets = np.array([most // 2]) if K == 1 else np.round(np.arange(K) * (most / (K - 1)))
        return rows(offsets.astype(np.int64) + 1, L, n, "loop")


@dataclass(frozen=True)
class FusionSampler(Sampler):
    """Feichtenhofer et al. 2016 (authors' code): moment t is RGB frame t with flow fields t - L/2 .. t + L/2 - 1
    (the stack spans frames t - L/2 .. t + L/2, centred on t); t runs over the candidates L/2 + 1, L/2 + 1 + tau,
    ... <= N - L/2, N = n + 1 frames.

    train: tau drawn uniformly from `tau` (inclusive range, default 5..15) per item (the authors draw it per
    batch), then a random run of `moments` consecutive candidates; a video with fewer candidates gives all of
    them, the last repeated. val and test: tau = `test_tau`, every candidate (K varies with the video). A video
    shorter than L has the one candidate t = L/2 + 1, its stack repeating the last field.
    """

    moments: int = 5
    tau: tuple[int, int] = (5, 15)
    test_tau: int = 15

    def __post_init__(self) -> None:
        _positive("moments", self.moments)
        _positive("test_tau", self.test_tau)
        tau = tuple(self.tau) if isinstance(self.tau, (tuple, list)) else ()
        if len(tau) != 2 or not all(is_integer(t, 1) for t in tau) or tau[0] > tau[1]:
            raise ConfigError("tau must be a range (lowest, highest) of integer frame gaps >= 1, e.g. (5, 15), or "
                              f"(5, 5) for one gap; got {self.tau!r}")
        object.__setattr__(self, "tau", tau)

    def count(self, mode: str) -> int | None:
        check_mode(mode)
        return self.moments if mode == "train" else None

    def centres(self, num_frames: int, length: int, tau: int) -> np.ndarray:
        """The candidate RGB frames t (1-based), (M,), for n = `num_frames` fields, at least one."""
        half = length // 2
        return np.arange(half + 1, max(num_frames + 1 - half, half + 1) + 1, tau, dtype=np.int64)

    def _indices(self, num_frames: int, length: int, mode: str, rng: np.random.Generator | None,
                 fps: float | None) -> np.ndarray:
        if mode == "train":
            rng = _need_rng(rng)
            candidates = self.centres(num_frames, length, int(rng.integers(self.tau[0], self.tau[1] + 1)))
            first = int(rng.integers(max(len(candidates) - self.moments, 0) + 1))
            chosen = candidates[np.minimum(first + np.arange(self.moments), len(candidates) - 1)]
        else:
            chosen = self.centres(num_frames, length, self.test_tau)
        return rows(chosen - length // 2, length, num_frames, "repeat")


@dataclass(frozen=True)
class SequenceSampler(Sampler):
    """`moments` moments at `rate` per second (Beyond Short Snippets: rate 1, count 30 or 120), whatever fps the
    tree was extracted at (meta.json's sampled_fps, or the dataset's `fps` for trees without meta.json).

    Moment k reads the stack starting at unit offset + floor(k * fps / rate + 0.5) + 1 (the frame nearest
    k / rate seconds after the first); with L = 1 on a flow tree that is the flow from that frame to the next
    (t -> t + 1/fps s). train: offset uniform in 0 .. n - L - that span (0 when the video is shorter); val and
    test: offset 0, from the video's first frame. Past the end `short`='loop' wraps to the start (a video
    shorter than moments / rate seconds is played again) or 'repeat' holds the last unit.
    """

    moments: int = 30
    rate: float = 1.0
    short: str = "loop"

    needs_fps = True

    def __post_init__(self) -> None:
        _positive("moments", self.moments)
        if not (math.isfinite(self.rate) and self.rate > 0):
            raise ConfigError(f"rate must be a positive number of moments per second, got {self.rate!r}")
        if self.short not in SHORT_RULES:
            raise ConfigError(f"short must be one of {', '.join(SHORT_RULES)}; got {self.short!r}")

    def count(self, mode: str) -> int:
        check_mode(mode)
        return self.moments

    def _indices(self, num_frames: int, length: int, mode: str, rng: np.random.Generator | None,
                 fps: float | None) -> np.ndarray:
        if fps is None or not (math.isfinite(fps) and fps > 0):
            raise ConfigError(f"the sequence sampler needs the tree's sampled fps (a positive number), got {fps!r}")
        steps = np.floor(np.arange(self.moments) * (fps / self.rate) + 0.5).astype(np.int64)
        offset = 0
        if mode == "train":
            offset = int(_need_rng(rng).integers(max(num_frames - length - int(steps[-1]), 0) + 1))
        return rows(offset + steps + 1, length, num_frames, self.short)


@dataclass(frozen=True)
class DenseSampler(Sampler):
    """Consecutive clips `stride` units apart (default L: non-overlapping) from the first frame while a whole
    clip fits (at least one clip; a video shorter than L repeats its last unit), at most `max_clips` of them:
    K = min((n - L) // stride + 1, max_clips). train: the same K clips shifted by a random offset in 0 .. the
    slack left after them (n - L - (K - 1) * stride)."""

    stride: int | None = None
    max_clips: int | None = None

    def __post_init__(self) -> None:
        _positive("stride", self.stride, none_ok=True)
        _positive("max_clips", self.max_clips, none_ok=True)

    def count(self, mode: str) -> None:
        check_mode(mode)
        return None

    def _indices(self, num_frames: int, length: int, mode: str, rng: np.random.Generator | None,
                 fps: float | None) -> np.ndarray:
        stride = self.stride or length
        last = max(num_frames - length, 0)  # the last 0-based start whose clip fits
        clips = min(last // stride + 1, self.max_clips or num_frames)
        first = int(_need_rng(rng).integers(last - (clips - 1) * stride + 1)) if mode == "train" else 0
        return rows(first + np.arange(clips, dtype=np.int64) * stride + 1, length, num_frames, "repeat")


# Shortcut -> (class, the field `segments` sets)
SAMPLER_CLASSES: dict[str, tuple[type[Sampler], str]] = {
    "tsn": (TSNSampler, "segments"), "mmaction2": (MMAction2Sampler, "clips"), "fusion": (FusionSampler, "moments"),
    "sequence": (SequenceSampler, "moments"), "dense": (DenseSampler, "max_clips")}
SAMPLERS = tuple(SAMPLER_CLASSES)


def make_sampler(name: str | Sampler, segments: int | None = None, test_segments: int | None = None) -> Sampler:
    """The sampler of a string shortcut, with `segments` (K) as its count of moments where given (TSN segments,
    mmaction2 clips, fusion moments, sequence length; dense clips take no count) and `test_segments` as TSN's
    test default; a Sampler passes through (then neither may be given)."""
    if isinstance(name, Sampler):
        if segments is not None or test_segments is not None:
            raise ConfigError(f"segments and test_segments belong to the sampler: got a {name!r} and segments="
                              f"{segments!r}, test_segments={test_segments!r}")
        return name
    if name not in SAMPLER_CLASSES:
        raise ConfigError(f"sampling must be a Sampler or one of {', '.join(SAMPLERS)}; got {name!r}")
    cls, field = SAMPLER_CLASSES[name]
    count = {} if segments is None else {field: segments}
    if name == "tsn":
        return TSNSampler(**count, test_segments=test_segments)
    if test_segments is not None:
        raise ConfigError(f"test_segments is TSN's test default; the {name!r} sampler does not take it")
    return cls(**count)


def _positive(name: str, value: int | None, none_ok: bool = False) -> None:
    if value is None and none_ok:
        return
    if not is_integer(value, 1):
        raise ConfigError(f"{name} must be an integer >= 1, got {value!r}")


def is_integer(value: object, least: int) -> bool:
    """Whether `value` is an integer >= `least` (numpy's too; not a bool, a float or a string)."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool) and value >= least


def _check_frames(num_frames: int) -> None:
    if num_frames < 1:
        raise ConfigError(f"a video needs at least 1 frame to sample from, got {num_frames!r}")


def _need_rng(rng: np.random.Generator | None) -> np.random.Generator:
    if rng is None:
        raise ConfigError("train sampling needs a random generator (rng)")
    return rng
