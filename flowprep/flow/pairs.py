"""Flows of a frame stream in one or both directions, optionally warped, from one pass over the frames.

Pair k covers sampled frames k and k+1: its forward flow goes from frame k to k+1 (OpenCV's direction), its
backward flow from frame k+1 to k. A batched backend computes every direction of a window of pairs in one launch.
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from contextlib import closing
from typing import TYPE_CHECKING

import numpy as np

from ..config import check_directions
from .base import FlowBackend
from .prefetch import prefetch

if TYPE_CHECKING:
    from .warp import Warper


def frame_windows(frames: Iterable[np.ndarray], batch_size: int) -> Iterator[np.ndarray]:
    """Stacks (n+1)xHxW of consecutive frames holding n <= batch_size pairs; each starts with the last one's end."""
    window: list[np.ndarray] = []
    for frame in frames:
        window.append(frame)
        if len(window) == batch_size + 1:
            yield np.stack(window)
            window = [frame]
    if len(window) > 1:
        yield np.stack(window)


def flow_stream(
    backend: FlowBackend,
    frames: Iterable[np.ndarray],
    directions: Sequence[str] = ("forward",),
    warp: Warper | None = None,
) -> Iterator[tuple[np.ndarray, ...]]:
    """Per pair of consecutive gray uint8 HxW frames, its float32 HxWx2 flows (pixels) in `directions` order.

    N frames give N-1 tuples. With `warp`, each flow is TSN's warped flow (camera motion removed, see warp.py);
    warp and backward combine: the warped backward flow is the same operation on the reversed pair. A batched
    backend gets batch_size flows per launch (batch_size // len(directions) pairs, every direction together);
    the others compute pair by pair, frames pulled one at a time.
    """
    directions = check_directions(directions)
    if directions == ("forward",) and warp is None and not backend.batched:
        # The backend's own stream: NVOF, say, uploads each frame once.
        with closing(backend.compute_stream(frames)) as flows:
            for flow in flows:
                yield (flow,)
        return
    per_window = max(1, backend.batch_size // len(directions)) if backend.batched else 1
    windows = frame_windows(frames, per_window)
    # A batched backend: one thread gathers (decodes) the next windows while another computes, so the caller's
    # work on the flows it receives (quantize, encode, write) overlaps both.
    if backend.batched:
        windows = prefetch(windows, depth=2)
    computed = (window_flows(backend, window, directions, warp) for window in windows)
    if backend.batched:
        computed = prefetch(computed, depth=1)
    with closing(windows), closing(computed):
        for batch in computed:
            yield from batch


def window_flows(
    backend: FlowBackend, window: np.ndarray, directions: Sequence[str], warp: Warper | None = None
) -> list[tuple[np.ndarray, ...]]:
    """(n+1)xHxW uint8 consecutive frames -> n tuples of float32 HxWx2 flows, one per direction, in one
    compute_batch call (and one more for the warped pairs)."""
    earlier, later = list(window[:-1]), list(window[1:])
    firsts: list[np.ndarray] = []
    seconds: list[np.ndarray] = []
    for direction in directions:
        firsts += earlier if direction == "forward" else later
        seconds += later if direction == "forward" else earlier
    flows = backend.compute_batch(firsts, seconds)
    if warp is not None:
        flows = warp.rewarp(backend, firsts, seconds, flows)
    n = len(window) - 1
    return [tuple(flows[d * n + k] for d in range(len(directions))) for k in range(n)]
