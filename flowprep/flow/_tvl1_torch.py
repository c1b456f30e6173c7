"""Batched Dual TV-L1 in PyTorch, step for step as OpenCV's DualTVL1 (opencv_contrib optflow/src/tvl1flow.cpp).

This module imports torch at import time; flowprep.flow.torch_tvl1 imports it only once torch is known to be there.
Scheme: Zach, Pock, Bischof (2007) as detailed by Sanchez, Meinhardt-Llopis, Facciolo (IPOL 2013), with OpenCV's
choices where they differ from the paper:
- pyramid by plain bilinear resize (cv::resize INTER_LINEAR, factor scale_step, sizes rounded), no Gaussian blur;
  coarsening stops before a level narrower or shorter than 16 pixels;
- image gradients by centred differences of the unwarped I1, one-sided (halved) at the borders, then warped with
  I1 by bicubic interpolation (remap INTER_CUBIC, BORDER_CONSTANT 0);
- forward differences for the flow gradient (0 on the last row/column), backward differences for the divergence
  (dual variable taken as 0 outside the image);
- median filter (BORDER_REPLICATE) of u1, u2 at the start of every outer iteration;
- stop a warp once the sum over pixels of |u_new - u|^2 is at most epsilon^2 * pixels (per pyramid level).

Speed: the inner iteration updates preallocated buffers in place (18 operations, no allocation),
in eager PyTorch: torch.compile of it was measured slower on CPU (docs/gpu.md). The median is cv2.medianBlur
on CPU tensors (sizes 3 and 5, the filter OpenCV's TV-L1 calls) and an exact min/max selection over shifted views
elsewhere (compiled into one kernel on CUDA). Pairs that have converged leave the batch at the next convergence check.
"""
from __future__ import annotations

import math
import threading
import warnings
from collections.abc import Callable, Mapping
from typing import Any

import cv2
import torch
import torch.nn.functional as F

_FLT_EPSILON = float(torch.finfo(torch.float32).eps)  # OpenCV's std::numeric_limits<float>::epsilon()
_MIN_LEVEL_SIZE = 16
# Stands in for 1/|grad I1w|^2 where OpenCV leaves v = u (|grad I1w|^2 <= FLT_EPSILON): -rho * _FLAT then
# saturates the clamp to +-lambda*theta, OpenCV's value there, except where 0 < |rho| <= lambda*theta*FLT_EPSILON
# (OpenCV: 0), whose step is at most 0.045 * sqrt(FLT_EPSILON) = 1.6e-5 px.
_FLAT = 1e30


def tvl1_flow(
    frames0: torch.Tensor, frames1: torch.Tensor, params: Mapping[str, Any], check_every: int | None = None
) -> torch.Tensor:
    """See flowprep.flow.torch_tvl1.tvl1_flow."""
    if frames0.shape != frames1.shape or frames0.dim() != 3:
        raise ValueError(f"frames0 and frames1 must both be BxHxW, got {tuple(frames0.shape)} and {tuple(frames1.shape)}")
    batch, height, width = frames0.shape
    if height < 3 or width < 3:
        raise ValueError(f"frames must be at least 3x3 pixels, got {width}x{height}")
    if check_every is None:
        # Reading the convergence flags waits for the device; on a GPU that stall costs more than a few wasted
        # iterations (converged pairs are frozen by masks, so results do not depend on this).
        check_every = 1 if frames0.device.type == "cpu" else 10

    with torch.inference_mode():
        i0 = frames0.to(torch.float32).unsqueeze(1)
        i1 = frames1.to(torch.float32).unsqueeze(1)
        sizes = _pyramid_sizes(height, width, int(params["nscales"]), float(params["scale_step"]))
        pyramid = [(i0, i1)]
        for size in sizes[1:]:
            prev0, prev1 = pyramid[-1]
            pyramid.append(_resize_by_factor(torch.cat([prev0, prev1], 1), size, float(params["scale_step"])).split(1, 1))

        channels = 3 if float(params["gamma"]) != 0 else 2  # gamma adds OpenCV's illumination field u3
        u = i0.new_zeros(batch, channels, *sizes[-1])
        for level in range(len(sizes) - 1, -1, -1):
            if level < len(sizes) - 1:
                u = F.interpolate(u, size=sizes[level], mode="bilinear", align_corners=False)
                u[:, :2] /= float(params["scale_step"])  # flow is in pixels of the level; u3 is not a length
            _solve_level(*pyramid[level], u, params, check_every)
        return u[:, :2].permute(0, 2, 3, 1).contiguous()


def _pyramid_sizes(height: int, width: int, nscales: int, scale_step: float) -> list[tuple[int, int]]:
    sizes = [(height, width)]
    for _ in range(1, nscales):
        # cv::resize with fx = fy = scale_step rounds the output size (cvRound: half to even, as round()).
        h, w = round(sizes[-1][0] * scale_step), round(sizes[-1][1] * scale_step)
        if h < _MIN_LEVEL_SIZE or w < _MIN_LEVEL_SIZE:
            break
        sizes.append((h, w))
    return sizes


def _resize_by_factor(images: torch.Tensor, size: tuple[int, int], factor: float) -> torch.Tensor:
    """Bilinear resize where source = (dest + 0.5) / factor - 0.5, clamped to the image, as cv::resize with fx=fy.

    F.interpolate(scale_factor=) would floor the output size where OpenCV rounds it, hence the explicit grid.
    """
    in_h, in_w = images.shape[-2:]
    ys = ((torch.arange(size[0], device=images.device, dtype=torch.float32) + 0.5) / factor - 0.5).clamp(0, in_h - 1)
    xs = ((torch.arange(size[1], device=images.device, dtype=torch.float32) + 0.5) / factor - 0.5).clamp(0, in_w - 1)
    grid = torch.stack(torch.meshgrid(xs * (2 / (in_w - 1)) - 1, ys * (2 / (in_h - 1)) - 1, indexing="xy"), -1)
    grid = grid.expand(images.shape[0], *grid.shape)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=True)


def _centred_gradient(image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    # Replicate padding turns the centred difference into OpenCV's halved one-sided difference at the borders.
    padded = F.pad(image, (1, 1, 1, 1), mode="replicate")
    dx = 0.5 * (padded[..., 1:-1, 2:] - padded[..., 1:-1, :-2])
    dy = 0.5 * (padded[..., 2:, 1:-1] - padded[..., :-2, 1:-1])
    return dx, dy


def median_method(device: torch.device, size: int) -> str:
    """How median_filter filters on `device`: 'cv2.medianBlur', 'selection, compiled' or 'selection'."""
    if device.type == "cpu" and size in (3, 5):
        return "cv2.medianBlur"
    return "selection, compiled" if device.type == "cuda" and _compiled_selection.usable else "selection"


def median_filter(u: torch.Tensor, size: int) -> torch.Tensor:
    """size x size median of each channel of u (N,C,H,W) float32, borders replicated: equal to cv2.medianBlur.

    CPU tensors with size 3 or 5 go through cv2.medianBlur itself (what OpenCV's TV-L1 calls); anything else
    through median_by_selection, compiled into one kernel on CUDA (eagerly it is some 330 small launches).
    """
    method = median_method(u.device, size)
    if method == "cv2.medianBlur":
        planes = u.contiguous().numpy().reshape(-1, *u.shape[-2:])
        out = torch.empty_like(u, memory_format=torch.contiguous_format)
        for plane, result in zip(planes, out.numpy().reshape(planes.shape)):
            cv2.medianBlur(plane, size, dst=result)
        return out
    if method == "selection, compiled":
        return _compiled_selection(u, size)
    return median_by_selection(u, size)


class _CompiledOnce:
    """torch.compile of a function, tried on first use; if compiling fails (no Triton, say), the eager function
    from then on, with a warning: the numbers are the same, only slower."""

    def __init__(self, function: Callable[..., torch.Tensor], backend: str | Callable[..., Any] = "inductor"):
        self._function, self._backend, self._compiled = function, backend, None
        self.usable, self.problem = True, ""
        self._lock = threading.Lock()

    def __call__(self, *args: Any) -> torch.Tensor:
        if self.usable:
            try:
                with self._lock:
                    if self._compiled is None:
                        self._compiled = torch.compile(self._function, dynamic=True, backend=self._backend)
                return self._compiled(*args)
            except Exception as exc:  # noqa: BLE001 - any compiler failure leaves the eager path, which is exact
                self.usable, self.problem = False, f"{type(exc).__name__}: {exc}"
                warnings.warn(f"torch.compile of {self._function.__name__} failed, running it eagerly: "
                              f"{self.problem}", RuntimeWarning, stacklevel=2)
        return self._function(*args)


def median_by_selection(u: torch.Tensor, size: int) -> torch.Tensor:
    """Exact size x size median (size odd), borders replicated, by forgetful selection over shifted views.

    Of n = size^2 window values, any m + 2 (m = n // 2) hold a minimum and a maximum that cannot be the median;
    dropping both and taking the next value keeps the median unchanged. So only m + 2 copies of u are live, never
    n, and every step is a min or max: exact, and fusable by a compiler into one kernel.
    """
    if size < 1 or size % 2 == 0:
        raise ValueError(f"median size must be odd and positive, got {size}")
    if size == 1:
        return u.clone()
    r = size // 2
    height, width = u.shape[-2:]
    padded = F.pad(u, (r, r, r, r), mode="replicate")
    views = [padded[..., dy : dy + height, dx : dx + width] for dy in range(size) for dx in range(size)]
    m = len(views) // 2
    work, rest = list(views[: m + 2]), views[m + 2 :]
    while True:
        for i in range(1, len(work)):  # the minimum to work[0]
            work[0], work[i] = torch.minimum(work[0], work[i]), torch.maximum(work[0], work[i])
        for i in range(1, len(work) - 1):  # the maximum to work[-1]
            work[i], work[-1] = torch.minimum(work[i], work[-1]), torch.maximum(work[i], work[-1])
        work = work[1:-1]
        if not rest:
            break
        work.append(rest.pop(0))
    (median,) = work
    return median.contiguous()


_compiled_selection = _CompiledOnce(median_by_selection)


def _solve_level(
    i0: torch.Tensor, i1: torch.Tensor, u: torch.Tensor, params: Mapping[str, Any], check_every: int
) -> None:
    """OpenCV's procOneScale for a batch, in place: i0, i1 (B,1,H,W); u (B,C,H,W) initial flow (+ u3)."""
    batch, channels, height, width = u.shape
    theta = float(params["theta"])
    l_t = float(params["lambda"]) * theta
    tau = float(params["tau"])
    taut = tau / theta
    gamma = float(params["gamma"])
    median = int(params["median_filtering"])
    inner, outer = int(params["inner_iterations"]), int(params["outer_iterations"])
    # OpenCV stops when sum |u_new - u|^2 <= epsilon^2 * pixels; compared here as the root of both sides.
    stop_norm = float(params["epsilon"]) * math.sqrt(height * width)

    i1x, i1y = _centred_gradient(i1)
    to_warp = torch.cat([i1, i1x, i1y], 1)
    ys, xs = torch.meshgrid(
        torch.arange(height, device=u.device, dtype=torch.float32),
        torch.arange(width, device=u.device, dtype=torch.float32),
        indexing="ij",
    )
    norm = torch.tensor([2 / (width - 1), 2 / (height - 1)], device=u.device)
    p = u.new_zeros(batch, 2, channels, height, width)  # theta * the dual variables: (p_c1, p_c2) of each channel

    for _ in range(int(params["warps"])):
        grid = (torch.stack([xs + u[:, 0], ys + u[:, 1]], -1) * norm - 1).contiguous()
        i1w, i1wx, i1wy = F.grid_sample(
            to_warp, grid, mode="bicubic", padding_mode="zeros", align_corners=True
        ).split(1, 1)
        grad = i1wx * i1wx + i1wy * i1wy
        rho_c = i1w - i1wx * u[:, :1] - i1wy * u[:, 1:2] - i0
        parts = [i1wx, i1wy] + ([torch.full_like(i1wx, gamma)] if channels == 3 else [])
        data_grad = torch.cat(parts, 1)  # d rho / d u per channel
        neg_inv_grad = torch.where(grad > _FLT_EPSILON, -1 / grad.clamp_min(_FLT_EPSILON), -_FLAT)
        # -rho / |grad I1w|^2 = step_c + step_grad . u: scaled once per warp, not once per iteration.
        step_c, step_grad = rho_c.mul_(neg_inv_grad), data_grad * neg_inv_grad

        # Per-pair stopping: a pair leaves the working set at the first convergence check after its sum of
        # |u_new - u|^2 fell to epsilon; between checks (GPU) its updates are discarded by a mask, so its result
        # is what OpenCV would give it alone, whichever pairs share its batch.
        state = _WarpState(u, p, data_grad, step_c, step_grad)
        flags = None  # (B,) on the device: still iterating, known since the last check; None: every pair
        for it in range(outer * inner):
            if it and it % check_every == 0:
                if not state.keep(flags.tolist()):
                    break
                flags = None
            mask = None if flags is None else flags.view(-1, 1, 1, 1)
            if it % inner == 0 and median > 1:
                flow = state.work.u[:, :2]
                filtered = median_filter(flow, median)
                flow.copy_(filtered if mask is None else torch.where(mask, filtered, flow))
            change = _iterate(state.work, None if mask is None else mask.to(u.dtype), l_t, tau, taut)
            now = change > stop_norm
            flags = now if flags is None else flags & now
        state.finish()


class _WarpState:
    """The pairs of a batch still iterating in one warp; writes finished pairs back into u and p."""

    def __init__(self, u: torch.Tensor, p: torch.Tensor, data_grad: torch.Tensor, step_c: torch.Tensor,
                 step_grad: torch.Tensor):
        self._u_all, self._p_all = u, p
        self.index = torch.arange(u.shape[0], device=u.device)
        self.work = _WorkingSet(u, p, data_grad, step_c, step_grad)  # in u and p themselves until a pair leaves
        self._gathered = False

    def keep(self, still: list[bool]) -> bool:
        """Write back the pairs whose flag is off and drop them from the working set; False when none is left."""
        if all(still):
            return True
        flags = torch.tensor(still, device=self.index.device)
        done, w = ~flags, self.work
        if self._gathered:
            self._u_all[self.index[done]] = w.u[done]
            self._p_all[self.index[done]] = w.q[done]
        self.index, self._gathered = self.index[flags], True
        self.work = _WorkingSet(w.u[flags], w.q[flags], w.data_grad[flags], w.step_c[flags], w.step_grad[flags])
        return any(still)

    def finish(self) -> None:
        if self._gathered:
            self._u_all[self.index] = self.work.u
            self._p_all[self.index] = self.work.q


class _WorkingSet:
    """The tensors one inner iteration reads and updates, its scratch buffers, and the views it takes of them,
    made once per working set (slicing a tensor costs microseconds, which add up at the coarse levels).

    u (B,C,H,W) flow (+ u3); q = theta * OpenCV's dual variables (B,2,C,H,W: x then y component); data_grad
    (B,C,H,W) d rho / d u; step_c (B,1,H,W) and step_grad (B,C,H,W): -rho / |grad I1w|^2 = step_c + step_grad . u.
    """

    def __init__(self, u: torch.Tensor, q: torch.Tensor, data_grad: torch.Tensor, step_c: torch.Tensor,
                 step_grad: torch.Tensor):
        self.u, self.q, self.data_grad, self.step_c, self.step_grad = u, q, data_grad, step_c, step_grad
        channels = u.shape[1]
        self.step = torch.empty_like(step_c)
        self.delta = torch.empty_like(u)
        self.du = torch.zeros_like(q)  # the flow gradient; its last column (x) and last row (y) stay 0
        self.magnitude = torch.empty_like(u)
        self.products = [(step_grad[:, c : c + 1], u[:, c : c + 1]) for c in range(channels)]
        self.qx, self.qy = q.unbind(1)
        self.delta_flat = self.delta.flatten(1)
        self.gx, self.gy = self.du.unbind(1)
        # (out, minuend, subtrahend) of the differences: backward ones for div q, forward ones for grad u.
        self.divergence = ((self.delta[..., 1:], self.qx[..., :-1]), (self.delta[..., 1:, :], self.qy[..., :-1, :]))
        self.gradient = ((self.gx[..., :-1], u[..., 1:], u[..., :-1]), (self.gy[..., :-1, :], u[..., 1:, :], u[..., :-1, :]))
        self.magnitude_b = self.magnitude.unsqueeze(1)


def _iterate(w: _WorkingSet, active: torch.Tensor | None, l_t: float, tau: float, taut: float) -> torch.Tensor:
    """One inner iteration (estimateV, divergence, estimateU, forwardGradient, estimateDualVariables), in place.

    Updates w.u and w.q; returns the root of sum |u_new - u|^2 per pair (B,). active: None, or (B,1,1,1) ones
    and zeros; a pair with 0 keeps its u and q exactly (its steps are multiplied by 0).
    """
    # Thresholding step TH of the data term: OpenCV's three cases are the clamp of -rho / |grad I1w|^2.
    (sg0, u0), *others = w.products
    step = torch.addcmul(w.step_c, sg0, u0, out=w.step)
    for sg, uc in others:
        step.addcmul_(sg, uc)
    step.clamp_(-l_t, l_t)

    # u_new - u = step * d(rho)/du + theta * div p, with div p by backward differences (p = 0 outside).
    delta = torch.add(w.qx, w.qy, out=w.delta)
    for out, neighbour in w.divergence:
        out.sub_(neighbour)
    delta.addcmul_(w.data_grad, step)
    if active is not None:
        delta.mul_(active)
    change = torch.linalg.vector_norm(w.delta_flat, dim=1)
    w.u.add_(delta)

    # Dual step: p = (p + taut grad u) / (1 + taut |grad u|), forward differences, 0 on the last column/row;
    # times theta: q = (q + tau grad u) / (1 + taut |grad u|).
    for out, ahead, here in w.gradient:
        torch.sub(ahead, here, out=out)
    if active is not None:
        w.du.mul_(active.unsqueeze(1))
    torch.mul(w.gx, w.gx, out=w.magnitude).addcmul_(w.gy, w.gy).sqrt_().mul_(taut).add_(1)
    w.q.add_(w.du, alpha=tau).div_(w.magnitude_b)
    return change
