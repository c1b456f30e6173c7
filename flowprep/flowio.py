"""Middlebury .flo files and end-point error: shared by tests, benchmarks and verification.

.flo layout: little-endian float32 magic 202021.25, int32 width, int32 height, then width*height*2 float32
(u, v) interleaved, row-major. Flow is in pixels, OpenCV's direction: frame1(x, y) ~ frame2(x + u, y + v).
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .errors import OutputError

FLO_MAGIC = 202021.25
# Middlebury and Sintel mark pixels without ground truth with huge values (1e9 and more).
UNKNOWN_FLOW_THRESHOLD = 1e9


def read_flo(path: str | os.PathLike) -> np.ndarray:
    """Read a .flo file as float32 HxWx2 (u, v) in pixels; OutputError naming the file when it is not one."""
    path = Path(path)
    data = path.read_bytes()
    if len(data) < 12:
        raise OutputError(f"{path}: not a .flo file ({len(data)} bytes, shorter than the 12-byte header)")
    magic = np.frombuffer(data, "<f4", 1)[0]
    if magic != np.float32(FLO_MAGIC):
        raise OutputError(f"{path}: not a .flo file (magic {magic!r}, expected {FLO_MAGIC})")
    width, height = (int(v) for v in np.frombuffer(data, "<i4", 2, offset=4))
    expected = 12 + width * height * 8
    if width < 1 or height < 1 or len(data) != expected:
        raise OutputError(
            f"{path}: corrupt .flo file: header says {width}x{height} ({expected} bytes), file has {len(data)} bytes"
        )
    return np.frombuffer(data, "<f4", width * height * 2, offset=12).reshape(height, width, 2).astype(np.float32)


def write_flo(path: str | os.PathLike, flow: np.ndarray) -> None:
    """Write float HxWx2 flow (pixels) as a .flo file."""
    flow = np.asarray(flow)
    if flow.ndim != 3 or flow.shape[2] != 2:
        raise ValueError(f"flow must be HxWx2, got shape {flow.shape} for {path}")
    height, width = flow.shape[:2]
    header = np.array([FLO_MAGIC], "<f4").tobytes() + np.array([width, height], "<i4").tobytes()
    Path(path).write_bytes(header + np.ascontiguousarray(flow, "<f4").tobytes())


def known_mask(gt: np.ndarray) -> np.ndarray:
    """HxW bool: pixels of HxWx2 ground truth `gt` whose flow is known (finite, both |u| and |v| below 1e9)."""
    return np.all(np.abs(gt) < UNKNOWN_FLOW_THRESHOLD, axis=2)


def endpoint_error(flow: np.ndarray, gt: np.ndarray, valid: np.ndarray | None = None) -> float:
    """Mean end-point error (pixels) of HxWx2 `flow` against `gt` over `valid` pixels.

    valid: HxW bool mask of pixels with known ground truth; default: both |u| and |v| of gt below 1e9.
    """
    flow = np.asarray(flow, np.float64)
    gt = np.asarray(gt, np.float64)
    if flow.shape != gt.shape or flow.ndim != 3 or flow.shape[2] != 2:
        raise ValueError(f"flow {flow.shape} and ground truth {gt.shape} must both be the same HxWx2")
    if valid is None:
        valid = known_mask(gt)
    if not valid.any():
        raise ValueError("no valid ground-truth pixel to measure end-point error on")
    error = np.sqrt(((flow - gt) ** 2).sum(axis=2))
    return float(error[valid].mean())
