"""Helpers for users' own tests: JPEG round trips against the documented bound, output trees that verify.

    from flowprep.testing import assert_roundtrip, assert_output_valid
    assert_roundtrip(my_flow, bound=20, jpeg_quality=95)   # my settings keep my flow within the bound
    assert_output_valid("flow/")                           # every video of my tree is complete

Failures raise AssertionError with the numbers and paths, so they read well under pytest or unittest.
"""
from __future__ import annotations

import os

import numpy as np

from .quantize import DEFAULT_BOUND, RoundTripBound, dequantize, jpeg_roundtrip_bound, quantize
from .store import decode_jpeg, encode_jpeg
from .verify import VerifyReport, verify_tree


def jpeg_roundtrip(flow: np.ndarray, bound: float = DEFAULT_BOUND, jpeg_quality: int = 95,
                   layout: str = "separate") -> np.ndarray:
    """Float HxWx2 flow (pixels) -> the float32 HxWx2 flow a reader gets back after the stored JPEG(s)."""
    codes = quantize(flow, bound)
    if layout == "xy0":
        xy0 = np.dstack([codes, np.zeros(codes.shape[:2], np.uint8)])
        stored = decode_jpeg(encode_jpeg(xy0, jpeg_quality, rgb=True), "xy0 image", rgb=True)[..., :2]
    elif layout == "separate":
        stored = np.dstack([decode_jpeg(encode_jpeg(np.ascontiguousarray(codes[..., c]), jpeg_quality), axis)
                            for c, axis in enumerate(("x image", "y image"))])
    else:
        raise ValueError(f"layout must be 'separate' or 'xy0', got {layout!r}")
    return dequantize(stored, bound)


def assert_roundtrip(flow: np.ndarray, bound: float = DEFAULT_BOUND, jpeg_quality: int = 95,
                     layout: str = "separate") -> tuple[float, float]:
    """Assert that `flow` (float HxWx2 pixels) survives quantize + JPEG within jpeg_roundtrip_bound.

    Returns (mean, max) error in pixels against the flow clipped to the bound.
    """
    restored = jpeg_roundtrip(flow, bound, jpeg_quality, layout)
    error = np.abs(restored - np.clip(np.asarray(flow, np.float32), -bound, bound))
    mean, worst = float(error.mean()), float(error.max())
    limit = jpeg_roundtrip_bound(bound, jpeg_quality, layout)
    assert_within(mean, worst, limit, f"{layout} JPEG at quality {jpeg_quality}, bound {bound:g}")
    return mean, worst


def assert_within(mean: float, worst: float, limit: RoundTripBound, what: str = "round trip") -> None:
    """Assert mean and max errors (pixels) are within `limit`."""
    assert mean <= limit.mean and worst <= limit.max, (
        f"{what}: error mean {mean:.4f} px, max {worst:.4f} px exceeds the documented bound "
        f"(mean {limit.mean:.4f} px, max {limit.max:.4f} px)")


def assert_output_valid(path: str | os.PathLike, roundtrip: int = 0, *, seed: int = 0) -> VerifyReport:
    """Assert that the output tree (or one video's output) at `path` verifies; returns the report."""
    report = verify_tree(path, roundtrip, seed=seed)
    assert report.ok, f"{path} does not verify:\n" + "\n".join(report.all_problems())
    return report


def assert_flow_close(flow: np.ndarray, expected: np.ndarray, epe: float) -> float:
    """Assert the mean end-point error between two HxWx2 flows is at most `epe` pixels; returns it."""
    if flow.shape != expected.shape:
        raise AssertionError(f"flow shape {flow.shape} differs from expected {expected.shape}")
    error = float(np.linalg.norm(np.asarray(flow, np.float64) - expected, axis=-1).mean())
    assert error <= epe, f"mean end-point error {error:.4f} px exceeds {epe:g} px"
    return error
