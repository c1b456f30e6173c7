"""CPU backends on OpenCV: TV-L1 (opencv-contrib), Farneback and DIS."""
from __future__ import annotations

from typing import Any, ClassVar, Mapping

import cv2
import numpy as np

from ..errors import ConfigError
from .base import FlowBackend


def opencv_contrib_problem() -> str | None:
    """None when cv2.optflow is there; else why not and how to fix it."""
    if hasattr(cv2, "optflow"):
        return None
    return (
        f"cv2 {cv2.__version__} at {cv2.__file__} has no cv2.optflow (TV-L1 lives in opencv-contrib). "
        "Another OpenCV wheel (opencv-python or opencv-python-headless) shadows opencv-contrib-python-headless: "
        "pip uninstall -y opencv-python opencv-python-headless opencv-contrib-python-headless && "
        "pip install opencv-contrib-python-headless"
    )


class _OpenCVBackend(FlowBackend):
    def versions(self) -> dict[str, str]:
        return {"opencv": cv2.__version__}


class OpenCVTVL1(_OpenCVBackend):
    """cv2.optflow.DualTVL1OpticalFlow; defaults are OpenCV's (and so mmaction2's and TSN's)."""

    algo = "tvl1"
    description = "Dual TV-L1 (Zach, Pock, Bischof), OpenCV contrib, CPU"
    defaults: ClassVar[Mapping[str, Any]] = {
        "tau": 0.25,
        "lambda": 0.15,
        "theta": 0.3,
        "nscales": 5,
        "warps": 5,
        "epsilon": 0.01,
        "inner_iterations": 30,
        "outer_iterations": 10,
        "scale_step": 0.8,
        "gamma": 0.0,
        "median_filtering": 5,
    }
    # "fast": chosen with benchmarks/tvl1_preset_search.py (docs/benchmarks.md): 3.7x faster than the defaults
    # with EPE 1.11x theirs on RubberWhale and 0.4-0.6x on Sintel alley_1, as the coarser pyramid (halving
    # per level) costs less and catches larger motion; a looser epsilon stops iterating sooner.
    presets: ClassVar[Mapping[str, Mapping[str, Any]]] = {"fast": {"scale_step": 0.5, "epsilon": 0.025}}

    @classmethod
    def check_params(cls, overrides: Mapping[str, Any] | None = None, preset: str | None = None) -> dict[str, Any]:
        params = super().check_params(overrides, preset)
        # Checked here, with the others, so that a run fails before its first video rather than on a worker.
        median = params["median_filtering"]
        if median > 1 and median % 2 == 0:
            raise ConfigError(f"median_filtering must be odd (or <= 1 for none) for algorithm {cls.algo!r}, "
                              f"got {median!r}")
        return params

    @classmethod
    def availability(cls, device: str) -> str | None:
        return opencv_contrib_problem()

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        p = self.params
        tvl1 = cv2.optflow.DualTVL1OpticalFlow_create()
        tvl1.setTau(p["tau"])
        tvl1.setLambda(p["lambda"])
        tvl1.setTheta(p["theta"])
        tvl1.setScalesNumber(p["nscales"])
        tvl1.setWarpingsNumber(p["warps"])
        tvl1.setEpsilon(p["epsilon"])
        tvl1.setInnerIterations(p["inner_iterations"])
        tvl1.setOuterIterations(p["outer_iterations"])
        tvl1.setScaleStep(p["scale_step"])
        tvl1.setGamma(p["gamma"])
        tvl1.setMedianFiltering(p["median_filtering"])
        self._tvl1 = tvl1

    def compute(self, prev: np.ndarray, nxt: np.ndarray) -> np.ndarray:
        # calc lowers the object's scale count to what a small image allows and keeps it: without this, a
        # worker's videos after a tiny one would all get a shallower pyramid than a fresh DualTVL1 (mmaction2's).
        self._tvl1.setScalesNumber(self.params["nscales"])
        return self._tvl1.calc(prev, nxt, None)


class OpenCVFarneback(_OpenCVBackend):
    """cv2.calcOpticalFlowFarneback with mmaction2's parameters (0.5, 3, 15, 3, 5, 1.2)."""

    algo = "farneback"
    description = "Farneback polynomial expansion, OpenCV, CPU"
    defaults: ClassVar[Mapping[str, Any]] = {
        "pyr_scale": 0.5,
        "levels": 3,
        "winsize": 15,
        "iterations": 3,
        "poly_n": 5,
        "poly_sigma": 1.2,
    }

    def compute(self, prev: np.ndarray, nxt: np.ndarray) -> np.ndarray:
        p = self.params
        return cv2.calcOpticalFlowFarneback(
            prev, nxt, None, p["pyr_scale"], p["levels"], p["winsize"], p["iterations"], p["poly_n"],
            p["poly_sigma"], 0,
        )


# OpenCV's DIS presets, as its getters report them (opencv-contrib 5.0); "medium" is the default.
_DIS_COMMON = {"coarsest_scale": -1, "patch_size": 8, "vr_alpha": 20.0, "vr_delta": 5.0, "vr_gamma": 10.0,
               "vr_epsilon": 0.01, "use_mean_normalization": True, "use_spatial_propagation": True}
_DIS_PRESETS = {
    "ultrafast": {**_DIS_COMMON, "finest_scale": 2, "patch_stride": 4, "gd_iterations": 12, "vr_iterations": 0},
    "fast": {**_DIS_COMMON, "finest_scale": 2, "patch_stride": 4, "gd_iterations": 16, "vr_iterations": 5},
    "medium": {**_DIS_COMMON, "finest_scale": 1, "patch_stride": 3, "gd_iterations": 25, "vr_iterations": 5},
}


class OpenCVDIS(_OpenCVBackend):
    """cv2.DISOpticalFlow (Kroeger et al.); presets ultrafast, fast, medium (default)."""

    algo = "dis"
    description = "Dense Inverse Search, OpenCV, CPU (fast)"
    defaults: ClassVar[Mapping[str, Any]] = _DIS_PRESETS["medium"]
    presets: ClassVar[Mapping[str, Mapping[str, Any]]] = _DIS_PRESETS

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        p = self.params
        dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
        dis.setFinestScale(p["finest_scale"])
        dis.setCoarsestScale(p["coarsest_scale"])
        dis.setPatchSize(p["patch_size"])
        dis.setPatchStride(p["patch_stride"])
        dis.setGradientDescentIterations(p["gd_iterations"])
        dis.setVariationalRefinementIterations(p["vr_iterations"])
        dis.setVariationalRefinementAlpha(p["vr_alpha"])
        dis.setVariationalRefinementDelta(p["vr_delta"])
        dis.setVariationalRefinementGamma(p["vr_gamma"])
        dis.setVariationalRefinementEpsilon(p["vr_epsilon"])
        dis.setUseMeanNormalization(p["use_mean_normalization"])
        dis.setUseSpatialPropagation(p["use_spatial_propagation"])
        self._dis = dis

    def compute(self, prev: np.ndarray, nxt: np.ndarray) -> np.ndarray:
        return self._dis.calc(prev, nxt, None)
