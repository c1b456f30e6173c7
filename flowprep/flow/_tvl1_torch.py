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
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F

_FLT_EPSILON = float(torch.finfo(torch.float32).eps)  # OpenCV's std::numeric_limits<float>::epsilon()
_MIN_LEVEL_SIZE = 16


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
            u = _solve_level(*pyramid[level], u, params, check_every)
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


def _median_filter(u: torch.Tensor, size: int, max_elements: int = 1 << 27) -> torch.Tensor:
    """size x size median of each channel, borders replicated (cv::medianBlur).

    The unfolded windows take size^2 times the memory of u, so large batches are filtered in bands of rows.
    """
    r = size // 2
    padded = F.pad(u, (r, r, r, r), mode="replicate")
    n, c, h, w = u.shape
    rows = max(1, max_elements // (n * c * w * size * size))
    out = torch.empty_like(u)
    for top in range(0, h, rows):
        bottom = min(top + rows, h)
        windows = padded[:, :, top : bottom + 2 * r].unfold(2, size, 1).unfold(3, size, 1)
        out[:, :, top:bottom] = windows.reshape(n, c, bottom - top, w, size * size).median(dim=-1).values
    return out


def _solve_level(
    i0: torch.Tensor, i1: torch.Tensor, u: torch.Tensor, params: Mapping[str, Any], check_every: int
) -> torch.Tensor:
    """OpenCV's procOneScale for a batch: i0, i1 (B,1,H,W); u (B,C,H,W) initial flow (+ u3); returns the new u."""
    batch, _, height, width = u.shape
    theta = float(params["theta"])
    l_t = float(params["lambda"]) * theta
    taut = float(params["tau"]) / theta
    gamma = float(params["gamma"])
    median = int(params["median_filtering"])
    inner, outer = int(params["inner_iterations"]), int(params["outer_iterations"])
    scaled_epsilon = float(params["epsilon"]) ** 2 * height * width

    i1x, i1y = _centred_gradient(i1)
    to_warp = torch.cat([i1, i1x, i1y], 1)
    ys, xs = torch.meshgrid(
        torch.arange(height, device=u.device, dtype=torch.float32),
        torch.arange(width, device=u.device, dtype=torch.float32),
        indexing="ij",
    )
    norm = torch.tensor([2 / (width - 1), 2 / (height - 1)], device=u.device)
    p = u.new_zeros(batch, u.shape[1], 2, height, width)  # dual variables (p_c1, p_c2) per flow channel

    for _ in range(int(params["warps"])):
        grid = (torch.stack([xs + u[:, 0], ys + u[:, 1]], -1) * norm - 1).contiguous()
        i1w, i1wx, i1wy = F.grid_sample(
            to_warp, grid, mode="bicubic", padding_mode="zeros", align_corners=True
        ).split(1, 1)
        grad = i1wx * i1wx + i1wy * i1wy
        rho_c = i1w - i1wx * u[:, :1] - i1wy * u[:, 1:2] - i0
        parts = [i1wx, i1wy] + ([torch.full_like(i1wx, gamma)] if u.shape[1] == 3 else [])
        data_grad = torch.cat(parts, 1)  # d rho / d u per channel
        # OpenCV leaves v = u where |grad I1w|^2 <= FLT_EPSILON and rho is within the thresholds.
        inv_grad = torch.where(grad > _FLT_EPSILON, 1 / grad.clamp_min(_FLT_EPSILON), 0.0)
        l_t_grad = l_t * grad

        # Per-pair stopping without waiting for the slowest pair: a converged pair keeps being computed with the
        # others but its update is discarded, exactly as if OpenCV had left the loops for it alone.
        active = torch.ones(batch, 1, 1, 1, dtype=torch.bool, device=u.device)
        all_active = True  # known only where the flags were just read; masking is skipped then
        for it in range(outer * inner):
            if it and it % check_every == 0:
                count = int(active.sum())
                if count == 0:
                    break
                all_active = count == batch
            elif it:
                all_active = False
            if it % inner == 0 and median > 1:
                filtered = _median_filter(u[:, :2], median)
                u[:, :2] = filtered if all_active else torch.where(active, filtered, u[:, :2])
            u_new, p_new, change = _iterate(u, p, data_grad, rho_c, l_t_grad, inv_grad, l_t, theta, taut)
            if all_active:
                u, p = u_new, p_new
            else:
                u = torch.where(active, u_new, u)
                p = torch.where(active.unsqueeze(1), p_new, p)
            active &= (change > scaled_epsilon).view(batch, 1, 1, 1)
    return u


def _iterate(
    u: torch.Tensor,
    p: torch.Tensor,
    data_grad: torch.Tensor,
    rho_c: torch.Tensor,
    l_t_grad: torch.Tensor,
    inv_grad: torch.Tensor,
    l_t: float,
    theta: float,
    taut: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One inner iteration (estimateV, divergence, estimateU, forwardGradient, estimateDualVariables).

    Returns the new u (B,C,H,W), the new p (B,C,2,H,W) and sum |u_new - u|^2 per pair (B,).
    """
    # Thresholding step TH of the data term, point by point.
    rho = rho_c + (data_grad * u).sum(1, keepdim=True)
    step = torch.where(rho < -l_t_grad, l_t, torch.where(rho > l_t_grad, -l_t, -rho * inv_grad))
    v = u + step * data_grad

    px, py = p.unbind(2)
    div = px + py
    div[..., 1:] -= px[..., :-1]
    div[..., 1:, :] -= py[..., :-1, :]
    u_new = v + theta * div
    change = (u_new - u).square().sum((1, 2, 3))

    du = torch.zeros_like(p)
    du[:, :, 0, :, :-1] = u_new[..., 1:] - u_new[..., :-1]
    du[:, :, 1, :-1, :] = u_new[..., 1:, :] - u_new[..., :-1, :]
    magnitude = du.square().sum(2, keepdim=True).sqrt_().mul_(taut).add_(1)
    p_new = du.mul_(taut).add_(p).div_(magnitude)
    return u_new, p_new, change
