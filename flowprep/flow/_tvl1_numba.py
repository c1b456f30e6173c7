"""Dual TV-L1 on the CPU in numba, step for step as OpenCV's DualTVL1 (opencv_contrib optflow/src/tvl1flow.cpp).

This module imports numba at import time; flowprep.flow.tvl1_cpu imports it only when a flow is computed.
What OpenCV calls, this calls too: cv2.resize (INTER_LINEAR) for the pyramid and the flow's upsampling,
cv2.remap (INTER_CUBIC, BORDER_CONSTANT 0) for the warp of I1 and its gradient, cv2.medianBlur (borders
replicated) for the median. The rest is numba, in OpenCV's floating-point order:
- the centred gradient of I1, halved one-sided differences at the borders;
- the data term per warp: rho_c = I1w - I1wx u1 - I1wy u2 - I0 and |grad I1w|^2;
- the inner iteration (estimateV, divergence, estimateU, forwardGradient, estimateDualVariables) fused into ONE
  sweep over the rows: for row r, the thresholding step TH and the update of u on row r (divergence of the old p
  by backward differences, p = 0 outside), then the dual step of row r - 1, whose forward differences need the
  new u of rows r - 1 and r. Row r's u update reads p of rows r and r - 1 before the dual step of row r - 1
  overwrites it, so the sweep gives the same numbers as OpenCV's five passes, in one pass over memory.
- the stopping test: a warp ends once sum over pixels of |u_new - u|^2 <= epsilon^2 * pixels after an inner
  iteration (OpenCV's float scaledEpsilon), checked after every one; the median runs before every outer
  iteration that is still going.

Where this may differ from OpenCV's bits: OpenCV sums the error in one float32 accumulator, pixel after pixel;
here each row is summed in float32 lanes and the rows in float64 (the sequential sum made an iteration 11%
dearer: 3.9 against 3.5 ns per pixel at 340x256), so a warp could stop one iteration earlier or later where the
error lies within a float rounding of the threshold (not seen on the test pairs, whose flows are OpenCV's bit for
bit, nor on the 120 pairs of benchmarks/tvl1_cpu.py). The rest follows OpenCV's operations and their order,
because the flow is sensitive to the last bit: |grad u| as sqrt(ux^2 + uy^2) in float32 instead of OpenCV's
hypot moved the flow of `--preset fast` on RubberWhale by 0.009 px on average, and a hypot that missed OpenCV's
rounding once in 2.5e7 calls moved a pair of mr-bubz by 0.28 px.

Speed (why the loops look as they do): numba's default error_model='python' adds a zero-division check that
keeps LLVM from vectorising the divisions; 'numpy' lets it. Each row function loops over a few planes only, so
that LLVM's runtime alias checks between them pass, and indexes the whole arrays instead of taking row views
(views cost reference counting per row: 3.9 against 3.4 ns per pixel and iteration at 340x256, 6.0 against 4.0 at
85x64, one thread). No allocation per iteration; one thread (no parallel=True: workers, not threads, share the
cores).
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import cv2
import numpy as np
from numba import njit

_FLT_EPSILON = float(np.finfo(np.float32).eps)  # OpenCV's std::numeric_limits<float>::epsilon()
_MIN_LEVEL_SIZE = 16
_JIT = {"cache": True, "nogil": True, "error_model": "numpy", "boundscheck": False}


@njit(**_JIT)
def _step_row(r, rho_c, data_grad, u, grad, l_t, step):  # pragma: no cover - compiled
    """The thresholding TH on row r: v = u + step * d(rho)/du, step one of l_t, -l_t, -rho / |grad I1w|^2 (0
    where |grad I1w|^2 <= FLT_EPSILON), in OpenCV's order of tests. grad: |grad I1w|^2 (H,W); l_t * grad is
    OpenCV's product, taken here rather than stored (one plane fewer to read: 2.5% per pair at the defaults)."""
    if u.shape[0] == 3:
        for x in range(step.shape[0]):
            rho = (rho_c[r, x] + (data_grad[0, r, x] * u[0, r, x] + data_grad[1, r, x] * u[1, r, x])
                   + data_grad[2, r, x] * u[2, r, x])
            g = grad[r, x]
            step[x] = _threshold(rho, g, l_t)
    else:
        for x in range(step.shape[0]):
            rho = rho_c[r, x] + (data_grad[0, r, x] * u[0, r, x] + data_grad[1, r, x] * u[1, r, x])
            step[x] = _threshold(rho, grad[r, x], l_t)


@njit(**_JIT)
def _threshold(rho, grad, l_t):  # pragma: no cover - compiled
    if rho < -(l_t * grad):
        return l_t
    if rho > l_t * grad:
        return -l_t
    return -rho / grad if grad > _FLT_EPSILON else np.float32(0.0)


@njit(**_JIT)
def _u_row(c, r, u, step, data_grad, p, theta, change):  # pragma: no cover - compiled
    """Channel c of estimateU on row r: u = (u + step * data_grad) + theta * div p, div p by backward differences
    with OpenCV's border rule (p = 0 above row 0 and left of column 0); change += (u_new - u)^2."""
    above = r - 1 if r > 0 else 0
    keep = np.float32(1.0) if r > 0 else np.float32(0.0)  # p above row 0 counts as 0: pb - 0 * pb = pb exactly
    # Column 0: OpenCV's (pa + pb) - pb above; the rule of the other columns would round (pa - 0) + (pb - above).
    old = u[c, r, 0]
    new = (old + step[0] * data_grad[c, r, 0]) + theta * ((p[c, 0, r, 0] + p[c, 1, r, 0]) - keep * p[c, 1, above, 0])
    u[c, r, 0] = new
    change[0] += (new - old) * (new - old)
    for x in range(1, u.shape[2]):
        old = u[c, r, x]
        div = (p[c, 0, r, x] - p[c, 0, r, x - 1]) + (p[c, 1, r, x] - keep * p[c, 1, above, x])
        new = (old + step[x] * data_grad[c, r, x]) + theta * div
        u[c, r, x] = new
        change[x] += (new - old) * (new - old)


@njit(cache=True, nogil=True, error_model="numpy", boundscheck=False, fastmath={"reassoc"})
def _take_sum(values):  # pragma: no cover - compiled
    """Sum of a float32 row in vector lanes (reassociation allowed here only), leaving the row zeroed."""
    total = np.float32(0.0)
    for x in range(values.shape[0]):
        total += values[x]
        values[x] = 0.0
    return total


@njit(**_JIT)
def _hypot(x, y):  # pragma: no cover - compiled
    """float32(sqrt(x^2 + y^2)) of float32 x, y, the root taken in float64 and rounded to float32: what OpenCV's
    hypot gives, twice rounded as there (equal to numpy's float64 root on 3e8 random pairs). The float64 root
    itself vectorises half as wide (1.18 against 0.93 ns per pixel and channel of the dual step), so: the
    float32 root r of the rounded sum s, then r + c with c = (s - r^2) / (2 r) taken to second order, the
    reciprocal from float32 refined once, in float64 (a first-order c misses OpenCV's rounding where the root
    lies within 2^-49 of a float32 midpoint: 4 pairs in 1e8, which real flows met)."""
    xd, yd = np.float64(x), np.float64(y)
    square = xd * xd + yd * yd
    root = np.sqrt(np.float32(square))
    rd = np.float64(root)
    half_inverse = np.float64(np.float32(0.5) / root)
    half_inverse = half_inverse * (2.0 - (rd + rd) * half_inverse)
    step = half_inverse * (square - rd * rd)
    return np.float32(rd + (step - step * step * half_inverse)) if root > 0 else root


@njit(**_JIT)
def _dual_row(c, r, ahead, u, p, taut):  # pragma: no cover - compiled
    """estimateDualVariables of channel c on row r: p = (p + taut grad u) / (1 + taut |grad u|), grad u by forward
    differences with row `ahead` (r + 1; r itself on the last row, which gives OpenCV's 0 there)."""
    last = u.shape[2] - 1
    for x in range(last):
        gx = u[c, r, x + 1] - u[c, r, x]
        gy = u[c, ahead, x] - u[c, r, x]
        ng = np.float32(1.0) + taut * _hypot(gx, gy)
        p[c, 0, r, x] = (p[c, 0, r, x] + taut * gx) / ng
        p[c, 1, r, x] = (p[c, 1, r, x] + taut * gy) / ng
    gy = u[c, ahead, last] - u[c, r, last]  # the last column: no x difference
    ng = np.float32(1.0) + taut * np.abs(gy)
    p[c, 0, r, last] = p[c, 0, r, last] / ng
    p[c, 1, r, last] = (p[c, 1, r, last] + taut * gy) / ng


@njit(**_JIT)
def _iterate(u, p, data_grad, rho_c, grad, step, change, l_t, theta, taut, iterations,
             scaled_epsilon):  # pragma: no cover - compiled
    """Up to `iterations` inner iterations, in place; stops after the first whose change is <= scaled_epsilon.

    u (C,H,W) float32 flow (+ u3 when C = 3); p (C,2,H,W) OpenCV's dual variables; data_grad (C,H,W) d rho/du
    (I1wx, I1wy, gamma); rho_c, grad = |grad I1w|^2 (H,W); step, change (W,) scratch. The row
    functions index the whole arrays: row views would cost reference counting per row (timed in the module docstring).
    Returns (iterations done, the last iteration's sum of |u_new - u|^2).
    """
    channels, height = u.shape[0], u.shape[1]
    error = np.inf
    done = 0
    change[:] = 0.0
    for _ in range(iterations):
        error = 0.0
        for r in range(height):
            _step_row(r, rho_c, data_grad, u, grad, l_t, step)
            for c in range(channels):
                _u_row(c, r, u, step, data_grad, p, theta, change)
            error += _take_sum(change)
            if r > 0:
                for c in range(channels):
                    _dual_row(c, r - 1, r, u, p, taut)
        for c in range(channels):
            _dual_row(c, height - 1, height - 1, u, p, taut)
        done += 1
        if error <= scaled_epsilon:
            break
    return done, error


@njit(**_JIT)
def _flow_map(u, map_x, map_y):  # pragma: no cover - compiled
    """OpenCV's buildFlowMap: map_x = x + u1, map_y = y + u2 (float32)."""
    for y in range(u.shape[1]):
        for x in range(u.shape[2]):
            map_x[y, x] = np.float32(x) + u[0, y, x]
            map_y[y, x] = np.float32(y) + u[1, y, x]


@njit(**_JIT)
def _data_term(i0, warped, u, data_grad, rho_c, grad):  # pragma: no cover - compiled
    """OpenCV's calcGradRho from the warped (I1, I1x, I1y) (H,W,3): data_grad[:2] = (I1wx, I1wy),
    rho_c = I1w - I1wx u1 - I1wy u2 - I0, grad = |grad I1w|^2."""
    for y in range(i0.shape[0]):
        for x in range(i0.shape[1]):
            ix = warped[y, x, 1]
            iy = warped[y, x, 2]
            data_grad[0, y, x] = ix
            data_grad[1, y, x] = iy
            grad[y, x] = ix * ix + iy * iy
            rho_c[y, x] = warped[y, x, 0] - ix * u[0, y, x] - iy * u[1, y, x] - i0[y, x]


@njit(**_JIT)
def _to_warp(image, out):  # pragma: no cover - compiled
    """out (H,W,3) = (I1, I1x, I1y): OpenCV's centeredGradient, 0.5 (next - previous), halved one-sided
    differences at the borders (what replicating the border gives), beside the image, for one remap of all three."""
    height, width = image.shape
    half = np.float32(0.5)
    for y in range(height):
        above, below = max(y - 1, 0), min(y + 1, height - 1)
        for x in range(width):
            out[y, x, 0] = image[y, x]
            out[y, x, 1] = half * (image[y, min(x + 1, width - 1)] - image[y, max(x - 1, 0)])
            out[y, x, 2] = half * (image[below, x] - image[above, x])


def pyramid(image: np.ndarray, nscales: int, scale_step: float) -> list[np.ndarray]:
    """float32 levels, finest first: cv2.resize by scale_step (INTER_LINEAR) from the previous level, stopping
    before a level narrower or shorter than 16 pixels (OpenCV's rule)."""
    levels = [image]
    for _ in range(1, nscales):
        smaller = cv2.resize(levels[-1], None, fx=scale_step, fy=scale_step, interpolation=cv2.INTER_LINEAR)
        if smaller.shape[0] < _MIN_LEVEL_SIZE or smaller.shape[1] < _MIN_LEVEL_SIZE:
            break
        levels.append(smaller)
    return levels


def tvl1_flow(frame0: np.ndarray, frame1: np.ndarray, params: Mapping[str, Any]) -> np.ndarray:
    """TV-L1 flow from gray uint8 HxW frame0 to frame1 with OpenCV's (checked, complete) parameters: HxWx2
    float32 pixels, OpenCV's direction."""
    scale_step = float(params["scale_step"])
    levels0 = pyramid(frame0.astype(np.float32), int(params["nscales"]), scale_step)
    levels1 = pyramid(frame1.astype(np.float32), int(params["nscales"]), scale_step)
    channels = 3 if float(params["gamma"]) != 0 else 2  # gamma adds OpenCV's illumination field u3
    u = np.zeros((channels,) + levels0[-1].shape, np.float32)
    for level in range(len(levels0) - 1, -1, -1):
        if level < len(levels0) - 1:
            height, width = levels0[level].shape
            u = np.stack([cv2.resize(plane, (width, height), interpolation=cv2.INTER_LINEAR) for plane in u])
            u[:2] *= np.float32(1 / scale_step)  # cv::multiply by Scalar(1 / scaleStep); u3 is not a length
        _solve_level(levels0[level], levels1[level], u, params)
    return np.ascontiguousarray(np.moveaxis(u[:2], 0, -1))


def _solve_level(i0: np.ndarray, i1: np.ndarray, u: np.ndarray, params: Mapping[str, Any]) -> None:
    """OpenCV's procOneScale, in place on u (C,H,W): the warps, each with its outer and inner iterations."""
    channels, height, width = u.shape
    theta = np.float32(params["theta"])
    l_t = np.float32(float(params["lambda"]) * float(params["theta"]))
    taut = np.float32(float(params["tau"]) / float(params["theta"]))
    median = int(params["median_filtering"])
    inner, outer = int(params["inner_iterations"]), int(params["outer_iterations"])
    scaled_epsilon = float(np.float32(float(params["epsilon"]) ** 2 * height * width))

    to_warp = np.empty((height, width, 3), np.float32)
    _to_warp(i1, to_warp)  # one remap warps I1 and both gradients alike
    map_x, map_y = np.empty((height, width), np.float32), np.empty((height, width), np.float32)
    warped = np.empty((height, width, 3), np.float32)
    data_grad = np.empty((channels, height, width), np.float32)
    if channels == 3:
        data_grad[2] = np.float32(params["gamma"])
    rho_c, grad = np.empty((height, width), np.float32), np.empty((height, width), np.float32)
    p = np.zeros((channels, 2, height, width), np.float32)  # OpenCV zeroes the dual variables once per level
    step, change = np.empty(width, np.float32), np.empty(width, np.float32)

    for _ in range(int(params["warps"])):
        _flow_map(u, map_x, map_y)
        cv2.remap(to_warp, map_x, map_y, cv2.INTER_CUBIC, dst=warped)
        _data_term(i0, warped, u, data_grad, rho_c, grad)
        for _ in range(outer):
            if median > 1:
                for plane in u[:2]:
                    cv2.medianBlur(plane, median, dst=plane)
            _, error = _iterate(u, p, data_grad, rho_c, grad, step, change, l_t, theta, taut, inner, scaled_epsilon)
            if error <= scaled_epsilon:
                break
