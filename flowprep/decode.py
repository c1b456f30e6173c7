"""Decode stage: video -> RGB frames with timestamps, sampled at a frame rate, resized; streamed.

Readers never trust the container's frame count: they decode until the stream ends.
"""
from __future__ import annotations

import math
import os
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import ClassVar

import cv2
import numpy as np

from .config import DecodeConfig
from .errors import DecodeError

Frame = tuple[float, np.ndarray]  # (seconds from the first frame, RGB uint8 HxWx3)


class VideoReader(ABC):
    """One decoder library behind a small interface: open in __init__, stream with frames()."""

    name: ClassVar[str]

    def __init__(self, path: str | os.PathLike, label: str | None = None):
        self.path = Path(path)
        self.label = label or str(self.path)  # what messages name: the path, or the URL the file was downloaded from
        self.fps: float | None = None  # the container's average rate; None when it does not say
        self.size: tuple[int, int] = (0, 0)  # (width, height)
        self.duration: float | None = None  # seconds of video the container announces; None when it does not say
        self.last_time: float | None = None  # timestamp of the last frame flow_frames took, seconds from the first

    @abstractmethod
    def frames(self) -> Iterator[Frame]:
        """Every frame in order; DecodeError naming the file if decoding breaks mid-way."""

    def close(self) -> None:
        pass

    def version(self) -> str:
        return ""

    def stream_end_problem(self) -> str:
        """Why the stream read by flow_frames ended before the time the container announces, or "" when it did not.

        A stream cut short (a truncated download, a damaged file) ends far from its announced duration; readers
        stop there, some with an error, some as if it were the end. A container that overstates its frame count
        (AVI drop frames: sparse timestamps) still reaches its duration and is not flagged. The last frame starts
        one frame period before the end; two periods and 2% of the duration more are allowed.
        """
        if self.duration is None or self.last_time is None:
            return ""
        period = 1 / (self.fps or 1.0)
        if self.last_time + 3 * period + 0.02 * self.duration >= self.duration:
            return ""
        return (f"{self.label}: {self.name} decoding ended at {self.last_time:.2f} s, but the container announces "
                f"{self.duration:.2f} s: the file is cut short or damaged; flow covers only what decoded")

    @staticmethod
    def _usable_fps(fps: float | None) -> float | None:
        """The container's frame rate, or None when it gives none usable (0, negative, NaN, infinite)."""
        return fps if fps and math.isfinite(fps) and fps > 0 else None

    def _fail(self, problem: str, exc: BaseException | None = None) -> DecodeError:
        detail = f" ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})" if exc else ""
        return DecodeError(f"{self.label}: {self.name} {problem}{detail}")

    def __enter__(self) -> VideoReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class DecordReader(VideoReader):
    name = "decord"

    def __init__(self, path: str | os.PathLike, label: str | None = None):
        super().__init__(path, label)
        import decord

        # decord logs failures to stderr from C++; flowprep reports them itself, once, with the file name.
        decord.logging.set_level(decord.logging.QUIET)
        self._decord = decord
        try:
            self._vr = decord.VideoReader(str(self.path), num_threads=1)
            first = self._vr.next()
        except Exception as exc:  # decord raises its own DECORDError and plain RuntimeErrors
            raise self._fail("cannot open it", exc) from None
        self._first = first.asnumpy()
        self.size = (self._first.shape[1], self._first.shape[0])
        fps = self._vr.get_avg_fps()
        self.fps = self._usable_fps(fps)
        self.duration = len(self._vr) / self.fps if self.fps and len(self._vr) else None

    def frames(self) -> Iterator[Frame]:
        claimed = len(self._vr)
        index, frame = 0, self._first
        start = last = self._timestamp(0, claimed, 0.0)
        while True:
            yield last - start, frame
            index += 1
            try:
                frame = self._vr.next().asnumpy()
            except StopIteration:
                return
            except Exception as exc:
                raise self._fail(f"failed reading frame {index}", exc) from None
            last = self._timestamp(index, claimed, last)

    def _timestamp(self, index: int, claimed: int, last: float) -> float:
        """Seconds of frame `index`: the container's while it has one, else one frame period after the last."""
        if index < claimed:
            return float(self._vr.get_frame_timestamp(index)[0])
        return last + 1 / (self.fps or 1.0)

    def close(self) -> None:
        # Drops decord's decoder thread and its queue of decoded frames now, not at garbage collection.
        del self._vr

    def version(self) -> str:
        return getattr(self._decord, "__version__", "")


class PyAVReader(VideoReader):
    name = "pyav"

    def __init__(self, path: str | os.PathLike, label: str | None = None):
        super().__init__(path, label)
        import av

        self._av = av
        try:
            self._container = av.open(str(self.path))
        except Exception as exc:
            raise self._fail("cannot open it", exc) from None
        if not self._container.streams.video:
            self._container.close()
            raise self._fail("found no video stream in it")
        self._stream = self._container.streams.video[0]
        self._stream.thread_type = "AUTO"
        rate = self._stream.average_rate
        self.fps = float(rate) if rate else None
        self.size = (self._stream.codec_context.width, self._stream.codec_context.height)
        if self._stream.duration and self._stream.time_base:
            self.duration = float(self._stream.duration * self._stream.time_base)
        elif self._container.duration and len(self._container.streams) == 1:
            # The container's duration is its longest stream's: an audio track may outlast the video.
            self.duration = self._container.duration / av.time_base

    def frames(self) -> Iterator[Frame]:
        start = None
        index = 0
        try:
            for frame in self._container.decode(self._stream):
                t = frame.time if frame.time is not None else index / (self.fps or 1.0)
                start = t if start is None else start
                yield t - start, frame.to_ndarray(format="rgb24")
                index += 1
        except self._av.FFmpegError as exc:
            raise self._fail(f"failed reading frame {index}", exc) from None

    def close(self) -> None:
        self._container.close()

    def version(self) -> str:
        return self._av.__version__


class OpenCVReader(VideoReader):
    name = "opencv"

    def __init__(self, path: str | os.PathLike, label: str | None = None):
        super().__init__(path, label)
        self._cap = cv2.VideoCapture(str(self.path))
        if not self._cap.isOpened():
            self._cap.release()
            raise self._fail("cannot open it")
        fps = self._cap.get(cv2.CAP_PROP_FPS)
        self.fps = self._usable_fps(fps)
        self.size = (int(self._cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(self._cap.get(cv2.CAP_PROP_FRAME_HEIGHT)))
        count = self._cap.get(cv2.CAP_PROP_FRAME_COUNT)
        self.duration = count / self.fps if self.fps and count > 0 else None

    def frames(self) -> Iterator[Frame]:
        index = 0
        while True:
            ok, bgr = self._cap.read()
            if not ok:
                return
            msec = self._cap.get(cv2.CAP_PROP_POS_MSEC)
            t = msec / 1000.0 if index == 0 or msec > 0 else index / (self.fps or 1.0)
            yield t, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
            index += 1

    def close(self) -> None:
        self._cap.release()

    def version(self) -> str:
        return cv2.__version__


READERS: dict[str, type[VideoReader]] = {r.name: r for r in (DecordReader, PyAVReader, OpenCVReader)}


def check_video_file(path: str | os.PathLike, label: str | None = None) -> None:
    """DecodeError naming `path` (or `label`) when it is missing, not a file or empty: no reader needs to try
    those."""
    path, label = Path(path), label or str(path)
    if not path.exists():
        raise DecodeError(f"{label}: no such file")
    if not path.is_file():
        raise DecodeError(f"{label}: not a regular file")
    if path.stat().st_size == 0:
        raise DecodeError(f"{label}: empty file (0 bytes)")


def open_reader(path: str | os.PathLike, decoder: str, label: str | None = None) -> VideoReader:
    """Open `path` with one named reader; DecodeError naming the file (or `label`: the URL a download came from)
    when it cannot."""
    try:
        return READERS[decoder](path, label)
    except ImportError as exc:
        raise DecodeError(f"{label or path}: reader {decoder!r} is not installed ({exc})") from None


def sample_fps(frames: Iterable[Frame], fps: float | None) -> Iterator[Frame]:
    """Frames nearest the times k/fps (k = 0, 1, ...) up to the last frame's time, each at most once.

    With fps None or above the source rate every source frame is kept once (no duplicates).
    """
    if fps is None:
        yield from frames
        return
    k = 0
    prev: Frame | None = None
    emitted_time = -math.inf
    for t, frame in frames:
        while k / fps <= t:
            target = k / fps
            chosen = prev if prev is not None and target - prev[0] <= t - target else (t, frame)
            if chosen[0] > emitted_time:
                emitted_time = chosen[0]
                yield chosen
            k += 1
        prev = (t, frame)


def output_size(size: tuple[int, int], config: DecodeConfig) -> tuple[int, int]:
    """(width, height) of the frames written, for a source of `size` pixels."""
    if config.size is not None:
        return config.size
    if config.short_side is not None:
        w, h = size
        scale = config.short_side / min(w, h)
        return (config.short_side, round(h * scale)) if w <= h else (round(w * scale), config.short_side)
    return size


def resize(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize to (width, height): area averaging when shrinking (no aliasing), bilinear when enlarging."""
    h, w = image.shape[:2]
    if (w, h) == size:
        return image
    shrinking = size[0] * size[1] < w * h
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)


def flow_frames(reader: VideoReader, config: DecodeConfig) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """The frames flow is computed on: (RGB HxWx3 as decoded, gray uint8 at the output size), sampled at
    config.fps. Gray comes from the decoded frame, then is resized, so --rgb never changes the flow."""
    size = output_size(reader.size, config)
    for _, rgb in sample_fps(_noting_last_time(reader), config.fps):
        yield rgb, resize(to_gray(rgb), size)


def _noting_last_time(reader: VideoReader) -> Iterator[Frame]:
    for t, frame in reader.frames():
        reader.last_time = t
        yield t, frame


def to_gray(rgb: np.ndarray) -> np.ndarray:
    """RGB -> gray with OpenCV's weights (equal to COLOR_BGR2GRAY on the BGR frame mmaction2 and TSN use)."""
    return cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
