"""Middlebury .flo files and the end-point error, for tests, benchmarks and verification."""
from __future__ import annotations

import os

import numpy as np

from .errors import OutputError

FLO_MAGIC = 202021.25
UNKNOWN_FLOW = 1e9  # Middlebury marks unknown pixels with |u| or |v| above this


def read_flo(path: str | os.PathLike) -> np.ndarray:
    """Read a .flo file as float32 HxWx2 (u, v) pixels."""
    with open(path, "rb") as f:
        header = f.read(12)
        if len(header) < 12 or np.frombuffer(header[:4], "<f4")[0] != FLO_MAGIC:
            raise OutputError(f"{path}: not a .flo file (bad magic number)")
        width, height = (int(v) for v in np.frombuffer(header[4:], "<i4"))
        data = np.fromfile(f, "<f4")
    if width <= 0 or height <= 0 or data.size != width * height * 2:
        raise OutputError(f"{path}: .flo header says {width}x{height} but holds {data.size} values")
    return data.reshape(height, width, 2).astype(np.float32)


def write_flo(path: str | os.PathLike, flow: np.ndarray) -> None:
    """Write float HxWx2 (u, v) pixels as a .flo file."""
    flow = np.asarray(flow, dtype="<f4")
    if flow.ndim != 3 or flow.shape[2] != 2:
        raise ValueError(f"flow must be HxWx2, got shape {flow.shape}")
    with open(path, "wb") as f:
        np.array([FLO_MAGIC], "<f4").tofile(f)
        np.array([flow.shape[1], flow.shape[0]], "<i4").tofile(f)
        flow.tofile(f)


def known_mask(gt: np.ndarray) -> np.ndarray:
    """HxW bool: pixels whose ground truth is known."""
    return (np.abs(gt) < UNKNOWN_FLOW).all(axis=-1) & np.isfinite(gt).all(axis=-1)


def endpoint_error(flow: np.ndarray, gt: np.ndarray, valid: np.ndarray | None = None) -> float:
    """Mean Euclidean distance (pixels) between HxWx2 flows over `valid` pixels (default: known GT)."""
    if flow.shape != gt.shape:
        raise ValueError(f"flow shape {flow.shape} differs from ground truth shape {gt.shape}")
    valid = known_mask(gt) if valid is None else valid
    return float(np.linalg.norm(flow[valid] - gt[valid], axis=-1).mean())
