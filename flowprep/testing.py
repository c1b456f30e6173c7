"""Helpers for users' own tests: JPEG round trips against the documented bound, output trees that verify.

    from flowprep.testing import assert_roundtrip, assert_output_valid
    assert_roundtrip(my_flow, bound=20, jpeg_quality=95)   # my settings keep my flow within the bound
    assert_output_valid("flow/")                           # every video of my tree is complete

camera_motion_scene builds a pair with a known camera homography (camera_homography: zoom, roll, pan) and a
moving object, to test warped flow.

Failures raise AssertionError with the numbers and paths, so they read well under pytest or unittest.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import cv2
import numpy as np

from .config import LAYOUTS
from .flowio import endpoint_error
from .quantize import DEFAULT_BOUND, RoundTripBound, dequantize, jpeg_roundtrip_bound, quantize, roundtrip_error
from .store import codes_from_images, decode_jpeg, encode_flow_codes
from .verify import VerifyReport, verify_tree


def jpeg_roundtrip(flow: np.ndarray, bound: float = DEFAULT_BOUND, jpeg_quality: int = 95,
                   layout: str = "separate") -> np.ndarray:
    """Float HxWx2 flow (pixels) -> the float32 HxWx2 flow a reader gets back after the stored JPEG(s)."""
    return dequantize(_stored_codes(flow, bound, jpeg_quality, layout), bound)


def _stored_codes(flow: np.ndarray, bound: float, jpeg_quality: int, layout: str) -> np.ndarray:
    """The uint8 HxWx2 codes read back from the JPEGs the pipeline writes for `flow`."""
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {', '.join(LAYOUTS)}, got {layout!r}")
    images = [decode_jpeg(data, f"{layout} JPEG", rgb=layout == "xy0")
              for data in encode_flow_codes(quantize(flow, bound), layout, jpeg_quality)]
    return codes_from_images(images, layout)


def assert_roundtrip(flow: np.ndarray, bound: float = DEFAULT_BOUND, jpeg_quality: int = 95,
                     layout: str = "separate") -> tuple[float, float]:
    """Assert that `flow` (float HxWx2 pixels) survives quantize + JPEG within jpeg_roundtrip_bound.

    Returns (mean, max) error in pixels against the flow clipped to the bound.
    """
    flow = np.asarray(flow, np.float32)
    mean, worst = roundtrip_error(_stored_codes(flow, bound, jpeg_quality, layout), flow, bound)
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
    error = endpoint_error(flow, expected, valid=np.ones(flow.shape[:2], bool))
    assert error <= epe, f"mean end-point error {error:.4f} px exceeds {epe:g} px"
    return error


def homography_flow(h: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """The float32 HxWx2 displacement H x - x (pixels) of every pixel x of an image of `shape` (height, width)
    under the 3x3 homography `h`: the flow a camera motion h gives the static background."""
    height, width = shape
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float64)
    return (_project(h, xs, ys) - np.dstack([xs, ys])).astype(np.float32)


def _project(h: np.ndarray, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """float64 (..., 2): the points (xs, ys) (pixels, any shape) mapped by the 3x3 homography `h`."""
    points = np.stack([xs, ys, np.ones_like(xs)], axis=-1).astype(np.float64) @ np.asarray(h, np.float64).T
    return points[..., :2] / points[..., 2:]



def camera_homography(width: int, height: int, scale: float = 1.03, degrees: float = 0.5,
                      pan: tuple[float, float] = (3, -2)) -> np.ndarray:
    """3x3 float64 homography of a camera that zooms by `scale` and rolls by `degrees` about the centre of a
    `width` x `height` image, then pans by `pan` (x, y pixels); the defaults are a small, typical hand-held move."""
    centre = np.array([[1, 0, -width / 2], [0, 1, -height / 2], [0, 0, 1]])
    c, s = scale * np.cos(np.deg2rad(degrees)), scale * np.sin(np.deg2rad(degrees))
    return np.linalg.inv(centre) @ np.array([[c, -s, pan[0]], [s, c, pan[1]], [0, 0, 1]]) @ centre


@dataclass(frozen=True)
class CameraMotionScene:
    """Two frames of a background moved by a camera homography and an object moving across it (warp tests)."""

    first: np.ndarray  # gray uint8 HxW
    second: np.ndarray
    object_mask: np.ndarray  # bool HxW: the object's pixels in `first`
    camera_flow: np.ndarray  # float32 HxWx2: the background's flow, H x - x
    relative_flow: np.ndarray  # float32 HxWx2: the object's flow with the camera's motion removed, H^-1(x + s) - x

    def background_mask(self, clearance: int = 7, border: int = 10) -> np.ndarray:
        """Bool HxW: the pixels more than `clearance` px (chessboard distance) from the object and at least
        `border` px inside the frame, where the flow is the camera's alone."""
        size = 2 * clearance + 1
        mask = ~cv2.dilate(self.object_mask.astype(np.uint8), np.ones((size, size), np.uint8)).astype(bool)
        mask[:border], mask[mask.shape[0] - border:], mask[:, :border], mask[:, mask.shape[1] - border:] = (
            False, False, False, False)
        return mask


def camera_motion_scene(background: np.ndarray, h: np.ndarray, patch: np.ndarray | None = None,
                        position: tuple[int, int] = (0, 0), shift: tuple[int, int] = (0, 0)) -> CameraMotionScene:
    """`background` (gray uint8 HxW) as the first frame and moved by homography `h` (first-frame points to
    second-frame points; bilinear, reflected border) as the second; `patch` (gray uint8), when given, pasted at
    `position` (x, y of its top-left corner) in the first frame and at position + `shift` (whole pixels) in the
    second, over the moved background."""
    height, width = background.shape
    second = cv2.warpPerspective(background, h, (width, height), flags=cv2.INTER_LINEAR,
                                 borderMode=cv2.BORDER_REFLECT)
    first = background.copy()
    mask = np.zeros((height, width), bool)
    relative = np.zeros((height, width, 2), np.float32)
    if patch is not None:
        (x, y), (dx, dy), (ph, pw) = position, shift, patch.shape
        first[y:y + ph, x:x + pw] = patch
        second[y + dy:y + dy + ph, x + dx:x + dx + pw] = patch
        mask[y:y + ph, x:x + pw] = True
        # Where the object lands in the warped second frame W(y) = second(H y): H y = x + shift.
        ys, xs = np.nonzero(mask)
        relative[mask] = _project(np.linalg.inv(h), xs + dx, ys + dy) - np.stack([xs, ys], axis=-1)
    return CameraMotionScene(first, second, mask, homography_flow(h, (height, width)), relative)
