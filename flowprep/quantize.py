"""Flow <-> uint8 quantization, identical to denseflow and TSN's dense_flow.

``q = clip(rint(255 * (v + b) / (2 b)), 0, 255)`` with round-half-to-even (OpenCV's cvRound), so ``v = 0``
gives 128; the inverse is ``v = q * 2 b / 255 - b``. For ``|v| <= b`` the round trip errs by at most
``b / 255`` pixels (half a quantization step); values beyond the bound are clipped to it.

The arithmetic is float32 in the formula's order, exactly what denseflow's C++ computes
(``cvRound(255 * (v - L) / (H - L))`` on floats): codes are bit-identical to denseflow's. Against exact arithmetic,
only values within float32 rounding (~1e-5 px) of a rounding boundary can differ, by one code (measured: 4 in a
million on random flow); exact ties such as v = 0 (-> 128) and, for b = 20, v = +-8, +-16 are exact in float32.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

DEFAULT_BOUND = 20.0


def check_bound(bound: float) -> float:
    """`bound` as a float; ValueError quoting it unless it is a positive finite number of pixels."""
    bound = float(bound)
    if not (math.isfinite(bound) and bound > 0):
        raise ValueError(f"bound must be a positive finite number of pixels, got {bound!r}")
    return bound


def quantize(flow: np.ndarray, bound: float = DEFAULT_BOUND) -> np.ndarray:
    """Map flow in pixels (any shape, e.g. HxWx2 float32) to uint8 of the same shape."""
    bound = check_bound(bound)
    scaled = np.asarray(flow, dtype=np.float32) + np.float32(bound)
    scaled *= np.float32(255)
    scaled /= np.float32(2 * bound)
    np.rint(scaled, out=scaled)  # round half to even, like cvRound
    np.clip(scaled, 0, 255, out=scaled)
    if np.isnan(scaled.max(initial=0)):
        raise ValueError(f"flow holds {int(np.isnan(scaled).sum())} NaN values; cannot quantize")
    return scaled.astype(np.uint8)


def dequantize(q: np.ndarray, bound: float = DEFAULT_BOUND) -> np.ndarray:
    """Map uint8 codes back to float32 pixels: ``q * 2 b / 255 - b``."""
    bound = check_bound(bound)
    q = np.asarray(q)
    if q.dtype != np.uint8:
        raise ValueError(f"dequantize expects uint8 codes, got dtype {q.dtype}")
    # One float32 array, updated in place: the same float32 operations as the formula, without temporaries.
    values = np.multiply(q, np.float32(2.0 * bound / 255.0), dtype=np.float32)
    values -= np.float32(bound)
    return values


def quantization_error_bound(bound: float = DEFAULT_BOUND) -> float:
    """Largest |dequantize(quantize(v)) - v| for |v| <= bound, in pixels (before JPEG)."""
    return check_bound(bound) / 255.0


@dataclass(frozen=True)
class RoundTripBound:
    """Largest errors (pixels) of stored JPEG flow against the float flow clipped to the bound."""

    mean: float  # of |error| over all pixels and both components of a pair
    max: float  # of |error| at any one pixel and component


def check_jpeg_quality(quality: int) -> int:
    """`quality`; ValueError quoting it unless it is a JPEG quality, 1..100."""
    if not 1 <= quality <= 100:
        raise ValueError(f"jpeg_quality must be in 1..100, got {quality!r}")
    return quality


def _libjpeg_scale(quality: int) -> float:
    """libjpeg's factor on its base quantization tables: 0 at quality 100, 0.1 at 95, 1 at 50, 50/q below."""
    check_jpeg_quality(quality)
    return 50.0 / quality if quality < 50 else (200 - 2 * quality) / 100.0


def jpeg_roundtrip_bound(bound: float = DEFAULT_BOUND, jpeg_quality: int = 95, layout: str = "separate"
                         ) -> RoundTripBound:
    """Documented bound on |dequantize(jpeg(quantize(v))) - clip(v, -b, b)|, in pixels.

    JPEG errors grow with libjpeg's table scale s (0.1 at quality 95). Measured on TV-L1 and DIS flow of the
    real clips in ../shared/data (bounds 5-40, qualities 75-100; benchmarks/jpeg_roundtrip.py) the worst single
    value erred by at most 3 + 105 s codes (one code = 2b/255 px) and the worst pair's mean by at most
    0.32 + 3.5 s codes in the separate layout; the 3-channel xy0 layout (colour JPEG) errs about twice as much.
    The bound allows about twice the measured errors: separate: max 5 + 200 s codes, mean 0.6 + 6 s codes;
    xy0: twice that. Quality 95, b = 20: max 25 codes = 3.9 px, mean 1.2 codes = 0.19 px. No error can exceed 2b.
    """
    bound = check_bound(bound)
    if layout not in ("separate", "xy0"):
        raise ValueError(f"layout must be 'separate' or 'xy0', got {layout!r}")
    scale = _libjpeg_scale(jpeg_quality)
    factor = 2.0 if layout == "xy0" else 1.0
    code = 2.0 * bound / 255.0
    return RoundTripBound(mean=min(factor * (0.6 + 6.0 * scale) * code, 2.0 * bound),
                          max=min(factor * (5.0 + 200.0 * scale) * code, 2.0 * bound))


def roundtrip_error(stored: np.ndarray, flow: np.ndarray, bound: float = DEFAULT_BOUND) -> tuple[float, float]:
    """(mean, max) |dequantize(stored) - clip(flow, -b, b)| in pixels; `stored` uint8 codes, `flow` float,
    both HxWx2 (or any equal shapes)."""
    if stored.shape != flow.shape:
        raise ValueError(f"stored codes have shape {stored.shape} but the flow has shape {flow.shape}")
    bound = check_bound(bound)
    error = np.abs(dequantize(stored, bound) - np.clip(flow, -bound, bound))
    return float(error.mean()), float(error.max())
