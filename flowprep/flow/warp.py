"""TSN's warped optical flow: the camera's motion (a homography) is removed before the flow is computed.

Per pair (first -> second) on any flow backend: the flow; matches between the frames from keypoint descriptors
(SIFT by default; TSN's dense_flow used SURF, which pip OpenCV lacks) plus up to 1000 corners of the first frame
moved by that flow; a RANSAC homography H (1 px threshold), used only with more than 50 matches and more than 25
inliers, else the identity (counted); the second frame resampled at H x, which undoes the camera's motion, with
the pixels whose source lies outside the second frame's 5 px-shrunk interior taken from the first frame; and the
flow computed again on (first, warped second). With the identity the plain flow is kept: nothing is warped.
Deterministic: matches are sorted and OpenCV's RNG is seeded before each RANSAC, so reruns give the same bytes.
"""
from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import cv2
import numpy as np

from ..errors import ConfigError
from .base import FlowBackend

DETECTORS = ("sift", "orb")


@dataclass(frozen=True)
class WarpSettings:
    """The homography estimation; defaults are dense_flow's (TSN) thresholds, with SIFT for its SURF."""

    detector: str = "sift"  # "sift" or "orb" keypoints and descriptors
    max_corners: int = 1000  # corners of the first frame moved by the flow, added to the keypoint matches
    ransac_threshold: float = 1.0  # pixels
    min_matches: int = 50  # H is used only with more matches than this ...
    min_inliers: int = 25  # ... and more RANSAC inliers than this
    margin: int = 5  # pixels at the second frame's border never read: the first frame fills in
    ratio: float = 0.75  # Lowe's ratio test on descriptor matches
    seed: int = 0  # of OpenCV's RNG, set before each RANSAC

    def __post_init__(self) -> None:
        if self.detector not in DETECTORS:
            raise ConfigError(f"warp detector must be one of {', '.join(DETECTORS)}; got {self.detector!r}")
        if self.ransac_threshold <= 0 or self.margin < 0 or self.max_corners < 0 or not 0 < self.ratio <= 1:
            raise ConfigError(f"warp settings need ransac_threshold > 0, margin >= 0, max_corners >= 0 and "
                              f"0 < ratio <= 1; got {self!r}")


@dataclass
class Spread:
    """Mean, minimum and maximum of counts added one at a time."""

    count: int = 0
    total: int = 0
    low: int = 0
    high: int = 0

    def add(self, value: int) -> None:
        self.low = value if self.count == 0 else min(self.low, value)
        self.high = max(self.high, value)
        self.count += 1
        self.total += value

    def as_meta(self) -> dict[str, float]:
        return {"mean": round(self.total / self.count, 2) if self.count else 0.0, "min": self.low, "max": self.high}


@dataclass
class WarpStats:
    """Per-video counts of the homographies: pairs warped, identity fallbacks, matches and RANSAC inliers (0
    where too few matches left RANSAC out)."""

    pairs: int = 0
    identity: int = 0
    matches: Spread = field(default_factory=Spread)
    inliers: Spread = field(default_factory=Spread)

    def add(self, matches: int, inliers: int, used: bool) -> None:
        self.pairs += 1
        self.identity += not used
        self.matches.add(matches)
        self.inliers.add(inliers)

    def as_meta(self) -> dict[str, Any]:
        return {"pairs": self.pairs, "identity_pairs": self.identity,
                "identity_fraction": round(self.identity / self.pairs, 6) if self.pairs else 0.0,
                "matches": self.matches.as_meta(), "inliers": self.inliers.as_meta()}


class Warper:
    """Warped flow for the pairs of one video: keeps the statistics (meta()) and the keypoints of recent frames
    (each frame is detected once although it takes part in up to four pairs). Not for use from two threads."""

    def __init__(self, settings: WarpSettings | None = None):
        self.settings = settings or WarpSettings()
        self.stats = WarpStats()
        if self.settings.detector == "sift":
            self._detector, norm = cv2.SIFT_create(), cv2.NORM_L2
        else:
            self._detector, norm = cv2.ORB_create(nfeatures=1000), cv2.NORM_HAMMING
        self._matcher = cv2.BFMatcher(norm)
        # Per frame: keypoint positions, their descriptors, and the frame's corners (None with max_corners 0).
        self._cache: OrderedDict[tuple, tuple[np.ndarray, np.ndarray | None, np.ndarray | None]] = OrderedDict()
        self._cache_frames = 4  # a frame's pairs: both directions with its neighbours; rewarp grows it per batch

    def homography(self, first: np.ndarray, second: np.ndarray, flow: np.ndarray
                   ) -> tuple[np.ndarray | None, int, int]:
        """(H, matches, inliers): the 3x3 float64 H mapping first-frame points to second-frame points, or None
        for the identity (too few matches or inliers); gray uint8 HxW frames, float32 HxWx2 flow first -> second."""
        s = self.settings
        src, dst = self._descriptor_matches(first, second)
        corners = self._features(first)[2]
        if corners is not None:
            cols, rows = corners[:, 0].astype(np.intp), corners[:, 1].astype(np.intp)
            src, dst = np.vstack([src, corners]), np.vstack([dst, corners + flow[rows, cols]])
        # Sorted: RANSAC's samples then depend on the matches only, not on the order detectors return them in.
        order = np.lexsort((dst[:, 1], dst[:, 0], src[:, 1], src[:, 0]))
        src, dst = np.ascontiguousarray(src[order]), np.ascontiguousarray(dst[order])
        matches, inliers = len(src), 0
        if matches > s.min_matches:
            cv2.setRNGSeed(s.seed)
            h, mask = cv2.findHomography(src, dst, cv2.RANSAC, s.ransac_threshold)
            inliers = int(mask.sum()) if mask is not None else 0
            if h is not None and inliers > s.min_inliers:
                return h, matches, inliers
        return None, matches, inliers

    def warp_frame(self, first: np.ndarray, second: np.ndarray, h: np.ndarray) -> np.ndarray:
        """`second` resampled at H x (camera motion undone), gray uint8 HxW; where H x falls outside the second
        frame shrunk by the margin, the first frame's pixel."""
        height, width = first.shape
        inverse = cv2.WARP_INVERSE_MAP  # dst(x) = src(H x)
        warped = cv2.warpPerspective(second, h, (width, height), flags=cv2.INTER_LINEAR | inverse)
        m = self.settings.margin
        interior = np.zeros((height, width), np.uint8)
        interior[m:height - m, m:width - m] = 1
        inside = cv2.warpPerspective(interior, h, (width, height), flags=cv2.INTER_NEAREST | inverse)
        return np.where(inside.astype(bool), warped, first)

    def rewarp(self, backend: FlowBackend, firsts: Sequence[np.ndarray], seconds: Sequence[np.ndarray],
               flows: Sequence[np.ndarray]) -> list[np.ndarray]:
        """The warped flows of pairs firsts[i] -> seconds[i] whose plain flows are `flows`; the pairs that need
        a second flow go to the backend in one compute_batch call."""
        self._cache_frames = max(self._cache_frames, len(firsts) + 2)
        out = list(flows)
        todo, warped = [], []
        for i, (first, second, flow) in enumerate(zip(firsts, seconds, flows)):
            h, matches, inliers = self.homography(first, second, flow)
            self.stats.add(matches, inliers, h is not None)
            if h is not None:
                todo.append(i)
                warped.append(self.warp_frame(first, second, h))
        if todo:
            for i, flow in zip(todo, backend.compute_batch([firsts[i] for i in todo], warped)):
                out[i] = flow
        return out

    def meta(self) -> dict[str, Any]:
        """What meta.json records under 'warp': the settings and this video's statistics."""
        return {**asdict(self.settings), **self.stats.as_meta()}

    def _descriptor_matches(self, first: np.ndarray, second: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Float32 Nx2 points of `first` and their matches in `second` (ratio test)."""
        (points1, desc1, _), (points2, desc2, _) = self._features(first), self._features(second)
        pairs = []
        if desc1 is not None and desc2 is not None and len(desc2) >= 2:
            for candidates in self._matcher.knnMatch(desc1, desc2, k=2):
                if len(candidates) == 2 and candidates[0].distance < self.settings.ratio * candidates[1].distance:
                    pairs.append((candidates[0].queryIdx, candidates[0].trainIdx))
        index = np.array(pairs, np.intp).reshape(-1, 2)
        return points1[index[:, 0]], points2[index[:, 1]]

    def _features(self, frame: np.ndarray) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
        """(float32 Nx2 keypoints, their descriptors, float32 Mx2 corners or None) of a frame, each computed once
        while the frame is among the recent ones (a frame is the first of two pairs with both directions)."""
        key = (frame.shape, frame.tobytes())
        found = self._cache.get(key)
        if found is None:
            keypoints, descriptors = self._detector.detectAndCompute(frame, None)
            points = np.array(cv2.KeyPoint_convert(keypoints), np.float32).reshape(-1, 2)
            corners = None
            if self.settings.max_corners:
                corners = cv2.goodFeaturesToTrack(frame, self.settings.max_corners, 0.001, 3)
                corners = None if corners is None else corners.reshape(-1, 2)
            found = self._cache[key] = (points, descriptors, corners)
            while len(self._cache) > self._cache_frames:
                self._cache.popitem(last=False)
        else:
            self._cache.move_to_end(key)
        return found


def warped_flow(backend: FlowBackend, first: np.ndarray, second: np.ndarray,
                settings: WarpSettings | None = None) -> np.ndarray:
    """TSN's warped flow from gray uint8 HxW `first` to `second` as float32 HxWx2 pixels (one pair, alone)."""
    plain = backend.compute(first, second)
    return Warper(settings).rewarp(backend, [first], [second], [plain])[0]
