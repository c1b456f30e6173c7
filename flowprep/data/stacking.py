"""Stackings: what an item reads at each moment a sampler chose, as one (K, C, H, W) tensor.

A sampler gives rows of L 1-based unit numbers (sampling.py); a stacking reads them from a video's output.
Flow field j goes from sampled frame j to j + 1 (forward) and backward field j from frame j + 1 to frame j,
so a row s .. s + L - 1 spans frames s .. s + L whatever the stacking:

| stacking | units | channels | values |
|---|---|---|---|
| FlowStacking | flow fields | 2L: x_s, y_s, ..., x_s+L-1, y_s+L-1 (two-stream eq. 1) | codes, pixels or unit |
| TrajectoryStacking | flow fields | 2L: field s+k read along the trajectory from each pixel (eq. 2) | pixels or unit |
| BidirectionalStacking | flow fields | 2L: L/2 backward fields s .. tau-1, then L/2 forward tau .. tau+L/2-1 | codes, pixels or unit |
| RGBStacking | RGB frames | 3L: R, G, B of frames s .. s+L-1 | uint8 or float [0, 1] |
| RGBDiffStacking | RGB differences | 3L: D_j = F_j+1 - F_j for j = s .. s+L-1, R, G, B each | float [-1, 1] |

JPEGs decode with OpenCV, each distinct file of an item once, straight into one uint8 buffer.
"""
from __future__ import annotations

import functools
import os
from abc import ABC, abstractmethod
from dataclasses import dataclass

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from ..annotations import VideoOutput
from ..errors import ConfigError, OutputError
from ..quantize import dequantize
from ..store import OutputReader, flow_pair_names, read_flow_pair
from .transforms import UINT8_ZERO, Dequantize

OUTPUTS = ("pixels", "unit", "uint8")


class Stacking(ABC):
    """What is read at each moment: `read` turns (K, L) unit numbers into a (K, C, H, W) tensor,
    C = 2L for flow stackings, 3L for RGB ones."""

    modality = "flow"  # the annotation-list count it is checked against: flow pairs or RGB frames
    outputs: tuple[str, ...] = OUTPUTS  # the dataset `output` values it can give

    @property
    def is_flow(self) -> bool:
        """Whether values are displacements (x at even channels): mean subtraction and flow flips apply."""
        return self.modality == "flow"

    def units(self, video: VideoOutput) -> int:
        """How many units the video has to sample from: flow fields, or RGB frames for RGB stackings."""
        return video.frames(self.modality)

    def check(self, video: VideoOutput) -> None:
        """OutputError naming the video when it lacks what this stacking reads."""
        if self.units(video) < 1:
            raise OutputError(f"{video.path}: no flow frames named like {video.naming.flow_template!r}")

    def check_output(self, output: str, length: int) -> None:
        """ConfigError unless this stacking can give `output` values for stacks of `length`."""
        if output not in self.outputs:
            raise ConfigError(f"the {self!r} stacking gives output {', '.join(map(repr, self.outputs))}; "
                              f"got {output!r}")

    @abstractmethod
    def read(self, reader: OutputReader, video: VideoOutput, indices: np.ndarray, output: str) -> torch.Tensor:
        """(K, C, H, W) tensor of the 1-based unit numbers `indices` (K, L), as `output` values."""


@dataclass(frozen=True)
class FlowStacking(Stacking):
    """Plain flow stacking (two-stream eq. 1): the fields of each row, x and y interleaved."""

    def read(self, reader: OutputReader, video: VideoOutput, indices: np.ndarray, output: str) -> torch.Tensor:
        return flow_values(torch.from_numpy(read_flow_codes(reader, video, indices)), video.bound, output)


@dataclass(frozen=True)
class TrajectoryStacking(Stacking):
    """Trajectory stacking (two-stream eq. 2): channel pair k holds field s + k read at p_k, p_1 = the pixel,
    p_k+1 = p_k + (field s + k - 1 at p_k).

    Fields are dequantized to pixels first and read with bilinear interpolation (pixel centres at integer
    coordinates). Border rule: each p_k is clamped to the frame, [0, W - 1] x [0, H - 1]; a trajectory that
    leaves the frame is held at the border pixel where it left and reads the fields there. Vectorised: one
    remap (or grid_sample) per field and plane, no Python per pixel (see `trajectory`). Float outputs only
    (interpolated values are no longer codes).
    """

    outputs = ("pixels", "unit")

    def read(self, reader: OutputReader, video: VideoOutput, indices: np.ndarray, output: str) -> torch.Tensor:
        codes = torch.from_numpy(read_flow_codes(reader, video, indices)).unflatten(1, (indices.shape[1], 2))
        values = trajectory(codes, video.bound).flatten(1, 2)
        return values.div_(video.bound) if output == "unit" else values


@dataclass(frozen=True)
class BidirectionalStacking(Stacking):
    """Bi-directional stacking (two-stream paper): around tau = s + L/2, the L/2 backward fields s .. tau - 1
    (backward field j: frame j + 1 -> j) then the L/2 forward fields tau .. tau + L/2 - 1, 2L channels:
    xb_s, yb_s, ..., xb_tau-1, yb_tau-1, x_tau, y_tau, ..., x_tau+L/2-1, y_tau+L/2-1. Channel pair k always
    covers frames s + k and s + k + 1; backward values are as stored (not negated: a rightward motion has
    x > 0 forward and x < 0 backward). L must be even; the tree must hold backward flow."""

    def check(self, video: VideoOutput) -> None:
        super().check(video)
        if "backward" not in video.directions:
            raise OutputError(f"{video.path}: no backward flow for the bidirectional stacking (its directions are "
                              f"{', '.join(video.directions)}; extract with backward flow, or name the files with "
                              "backward_template for trees without meta.json)")

    def check_output(self, output: str, length: int) -> None:
        super().check_output(output, length)
        if length % 2:
            raise ConfigError(f"the bidirectional stacking needs an even stack length, got {length!r}")

    def read(self, reader: OutputReader, video: VideoOutput, indices: np.ndarray, output: str) -> torch.Tensor:
        half = indices.shape[1] // 2
        codes = np.concatenate([read_flow_codes(reader, video, indices[:, :half], "backward"),
                                read_flow_codes(reader, video, indices[:, half:], "forward")], axis=1)
        return flow_values(torch.from_numpy(codes), video.bound, output)


class _RGBBase(Stacking):
    modality = "rgb"

    def check(self, video: VideoOutput) -> None:
        if self.units(video) < 1:
            raise OutputError(f"{video.path}: {'too few' if video.rgb_frames else 'no'} RGB frames for the "
                              f"{self!r} stacking (extract with --rgb)")


@dataclass(frozen=True)
class RGBStacking(_RGBBase):
    """RGB frames s .. s + L - 1, 3L channels (R, G, B per frame): uint8, or float32 in [0, 1] for 'pixels'
    and 'unit' alike. L = 1 is the spatial stream's single frame."""

    def read(self, reader: OutputReader, video: VideoOutput, indices: np.ndarray, output: str) -> torch.Tensor:
        return rgb_values(torch.from_numpy(read_rgb_frames(reader, video, indices)).flatten(1, 2), output)


@dataclass(frozen=True)
class RGBDiffStacking(_RGBBase):
    """TSN's RGB difference: L + 1 consecutive RGB frames give D_j = F_j+1 - F_j, channels [D_s RGB, D_s+1 RGB,
    ...], float32 in [-1, 1] (frames scaled to [0, 1], not normalised). Units are the N - 1 differences of N
    frames. A flip mirrors only: use HorizontalFlip, not FlowHorizontalFlip."""

    outputs = ("pixels", "unit")

    def units(self, video: VideoOutput) -> int:
        return max(video.rgb_frames - 1, 0)

    def read(self, reader: OutputReader, video: VideoOutput, indices: np.ndarray, output: str) -> torch.Tensor:
        length = indices.shape[1]
        frames = torch.from_numpy(read_rgb_frames(reader, video, np.concatenate([indices, indices + 1], axis=1)))
        later, earlier = frames[:, length:].float(), frames[:, :length].float()
        return later.sub_(earlier).div_(255.0).flatten(1, 2)


STACKINGS = {"flow": FlowStacking, "trajectory": TrajectoryStacking, "bidirectional": BidirectionalStacking,
             "rgb": RGBStacking, "rgbdiff": RGBDiffStacking}


def make_stacking(name: str | Stacking) -> Stacking:
    """The stacking of a string shortcut (flow, trajectory, bidirectional, rgb, rgbdiff); a Stacking passes."""
    if isinstance(name, Stacking):
        return name
    if name not in STACKINGS:
        raise ConfigError(f"stacking must be a Stacking or one of {', '.join(STACKINGS)}; got {name!r}")
    return STACKINGS[name]()


def trajectory(codes: torch.Tensor, bound: float) -> torch.Tensor:
    """Two-stream eq. 2 on uint8 flow codes (K, L, 2, H, W) quantized with `bound` (pixels): float32 pixels
    of the same shape, field k read at p_k, p_0 = each pixel, p_k = clamp(p_k-1 + read k-1) to
    [0, W-1] x [0, H-1], bilinear on the dequantized fields (field 0 is dequantize's values exactly).

    On CPU tensors OpenCV's remap reads each plane (1.4x cheaper than grid_sample, measured in
    benchmarks/stacking.py), where the installed OpenCV interpolates in float (4.11 and later; older ones
    round positions to 1/32 px, and grid_sample is used); on other devices (a GPU batch of plain uint8
    stacks) torch's grid_sample. The two agree to float rounding (3.9e-4 px at most over 20 real 340x256 items,
    benchmarks/stacking.py)."""
    if codes.device.type == "cpu" and _remap_interpolates_in_float():
        return torch.from_numpy(_trajectory_remap(np.ascontiguousarray(codes.numpy()), bound))
    return _trajectory_grid_sample(codes, bound)


def _trajectory_remap(codes: np.ndarray, bound: float) -> np.ndarray:
    _, length, _, height, width = codes.shape
    table = dequantize(np.arange(256, dtype=np.uint8), bound)  # LUT: codes -> pixels in one pass, same bits
    out = np.empty(codes.shape, np.float32)
    field = np.empty((2, height, width), np.float32)
    x, y = np.empty((height, width), np.float32), np.empty((height, width), np.float32)
    for stack, stack_codes in zip(out, codes):
        # (2, H, W) -> (2H, W): one LUT call converts a field's x and y planes
        cv2.LUT(stack_codes[0].reshape(-1, width), table, dst=stack[0].reshape(-1, width))
        x[:] = np.arange(width, dtype=np.float32)
        y[:] = np.arange(height, dtype=np.float32)[:, None]
        for k in range(1, length):
            x += stack[k - 1, 0]
            y += stack[k - 1, 1]
            np.clip(x, 0, width - 1, out=x)
            np.clip(y, 0, height - 1, out=y)
            cv2.LUT(stack_codes[k].reshape(-1, width), table, dst=field.reshape(-1, width))
            for plane, read in zip(field, stack[k]):  # 1-channel remaps: the 2-channel one took 2x (one-off)
                cv2.remap(plane, x, y, cv2.INTER_LINEAR, dst=read, borderMode=cv2.BORDER_REPLICATE)
    return out


@functools.cache
def _remap_interpolates_in_float() -> bool:
    """Whether cv2.remap reads a ramp at x = 0.3, 0.3 + 1/64, ... as those values (float weights) rather than
    at the nearest 1/32 px (OpenCV < 4.11); 64 points, so that vectorised and scalar code paths both answer."""
    ramp = np.tile(np.arange(66, dtype=np.float32), (2, 1))
    at = (np.arange(64, dtype=np.float32) * np.float32(1 + 1 / 64) + np.float32(0.3))[None]
    read = cv2.remap(ramp, at, np.zeros_like(at), cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    return bool(np.abs(read - at).max() < 1e-4)


def _trajectory_grid_sample(codes: torch.Tensor, bound: float) -> torch.Tensor:
    # Field by field from the codes, so that each is converted to float just before it is read (the whole
    # float stack does not fit in the cache) and each step is one pass per array.
    count, length, _, height, width = codes.shape
    step = 2.0 * bound / 255.0
    out = torch.empty(codes.shape, dtype=torch.float32, device=codes.device)
    out[:, 0] = codes[:, 0]
    out[:, 0].mul_(step).sub_(bound)
    # Points live in grid_sample's normalized coordinates (align_corners=True: -1 and 1 are the first and last
    # pixel centres): a step is an add per axis and one clamp of the grid.
    sx, sy = (2.0 / (size - 1) if size > 1 else 0.0 for size in (width, height))
    grid = torch.empty(count, height, width, 2, dtype=torch.float32, device=codes.device)
    grid[..., 0] = torch.arange(width, dtype=torch.float32, device=codes.device).mul_(sx).sub_(1.0)
    grid[..., 1] = torch.arange(height, dtype=torch.float32, device=codes.device).mul_(sy).sub_(1.0)[:, None]
    centred = torch.empty(count, 2, height, width, dtype=torch.float32, device=codes.device)
    moved = out[:, 0]  # the last read, in pixels
    for k in range(1, length):
        grid[..., 0].add_(moved[:, 0], alpha=sx)
        grid[..., 1].add_(moved[:, 1], alpha=sy)
        grid.clamp_(-1.0, 1.0)
        centred.copy_(codes[:, k]).sub_(UINT8_ZERO)  # in place: torch.sub(out=) converts through a temporary
        moved = F.grid_sample(centred, grid, mode="bilinear", padding_mode="border", align_corners=True)
        out[:, k] = moved.mul_(step)
    return out


def flow_values(codes: torch.Tensor, bound: float, output: str) -> torch.Tensor:
    """uint8 codes as `output` values: themselves, pixels (bound b) or unit (bound 1)."""
    if output == "uint8":
        return codes
    # In torch rather than numpy: 1.6x faster, and threaded as torch is told (once in DataLoader workers).
    return Dequantize(bound if output == "pixels" else 1.0)(codes)


def rgb_values(frames: torch.Tensor, output: str) -> torch.Tensor:
    """uint8 RGB values as themselves ('uint8') or float32 in [0, 1]."""
    return frames if output == "uint8" else frames.float().div_(255.0)


def read_flow_codes(reader: OutputReader, video: VideoOutput, indices: np.ndarray, direction: str = "forward"
                    ) -> np.ndarray:
    """uint8 codes (K, 2L, H, W) of the 1-based fields `indices` (K, L) of `direction`, x/y interleaved."""
    reader.prefetch(name for number in np.unique(indices).tolist()
                    for name in flow_pair_names(video.naming, number - 1, direction))
    codes = np.empty(0, np.uint8)
    first = 0
    placed: dict[int, tuple[int, int]] = {}  # field number -> (row, channel) where it was first put
    for row, numbers in enumerate(indices.tolist()):
        for channel, number in zip(range(0, 2 * len(numbers), 2), numbers):
            if number in placed:  # repeat-last and overlapping rows: decode each field once
                earlier_row, earlier_channel = placed[number]
                codes[row, channel:channel + 2] = codes[earlier_row, earlier_channel:earlier_channel + 2]
                continue
            x, y = read_flow_pair(reader, video.naming, number - 1, direction)
            if not placed:
                codes, first = np.empty((indices.shape[0], 2 * indices.shape[1], *x.shape), np.uint8), number
            else:
                check_size(video, "flow", number, x.shape, first, codes.shape[2:])
            codes[row, channel] = x
            codes[row, channel + 1] = y
            placed[number] = row, channel
    return codes


def read_rgb_frames(reader: OutputReader, video: VideoOutput, numbers: np.ndarray) -> np.ndarray:
    """uint8 (K, M, 3, H, W) RGB frames of the 1-based frame `numbers` (K, M), each distinct one decoded once."""
    frames = None
    first = 0
    reader.prefetch(video.naming.img(number - 1) for number in np.unique(numbers).tolist())
    for number in np.unique(numbers).tolist():
        frame = reader.read_image(video.naming.img(number - 1), rgb=True).transpose(2, 0, 1)
        if frames is None:
            frames, first = np.empty((*numbers.shape, *frame.shape), np.uint8), number
        else:
            check_size(video, "RGB", number, frame.shape[1:], first, frames.shape[-2:])
        frames[numbers == number] = frame
    return frames


def check_size(video: VideoOutput, kind: str, number: int, shape: tuple[int, ...], first: int,
               expected: tuple[int, ...]) -> None:
    """OutputError unless frame `number` has the (H, W) of the video's first frame read, `first`."""
    if tuple(shape) != tuple(expected):
        raise OutputError(f"{os.fspath(video.path)}: {kind} frame {number} is {shape[1]}x{shape[0]} pixels but "
                          f"frame {first} is {expected[1]}x{expected[0]}")
