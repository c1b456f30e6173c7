"""Flow-aware transforms on (..., C, H, W) tensors, composable with Compose (no torchvision needed).

Flow tensors hold interleaved fields: channels x_t, y_t, x_t+1, y_t+1, ... (x = horizontal displacement at
even channel indices, y at odd). A transform applies the same spatial operation to every leading index
(segments) and channel, as TSN's group transforms do. Values may be float pixels, float unit ([-1, 1]) or raw
uint8 codes (zero motion = 127.5, so ``255 - q`` negates a code exactly).

Random transforms draw from the ``generator`` passed to ``__call__`` (torch's global RNG when None); the
datasets pass one seeded per item, so that pipelines of the same structure on RGB and flow draw the same
crops and flips.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F

from ..errors import ConfigError
from ..quantize import DEFAULT_BOUND, check_bound
from .sampling import is_integer

Size = int | tuple[int, int]  # int: square side; tuple: (height, width), pixels
TSN_SCALES = (1.0, 0.875, 0.75, 0.66)
UINT8_ZERO = 127.5  # the code of zero motion on the continuous scale: dequantize(q) = (q - 127.5) * 2b / 255


class Transform(ABC):
    """A transform of a (..., C, H, W) tensor; random ones draw from `generator`."""

    @abstractmethod
    def __call__(self, tensor: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor: ...

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({args})"


def apply_transform(transform: Callable[..., Any] | None, tensor: torch.Tensor,
                    generator: torch.Generator | None = None) -> Any:
    """Call `transform` on `tensor`, passing `generator` to flowprep Transforms; plain callables get the tensor."""
    if transform is None:
        return tensor
    if isinstance(transform, Transform):
        return transform(tensor, generator)
    return transform(tensor)


class Compose(Transform):
    """Apply transforms in order (flowprep Transforms or any callable on a tensor)."""

    def __init__(self, transforms: Sequence[Callable[..., Any]]):
        self.transforms = list(transforms)

    def __call__(self, tensor: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        for transform in self.transforms:
            tensor = apply_transform(transform, tensor, generator)
        return tensor


class HorizontalFlip(Transform):
    """With probability p, mirror left-right. Values untouched: for RGB frames (use FlowHorizontalFlip on flow)."""

    def __init__(self, p: float = 0.5):
        if not 0.0 <= p <= 1.0:
            raise ConfigError(f"flip probability must be in [0, 1], got {p!r}")
        self.p = p

    def __call__(self, tensor: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        self._check(tensor)  # every call, flipped or not: a wrong input must not pass on a lucky draw
        if _uniform(generator) >= self.p:
            return tensor
        return self._mirror(tensor)

    def _check(self, tensor: torch.Tensor) -> None:
        pass

    def _mirror(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensor.flip(-1)


class FlowHorizontalFlip(HorizontalFlip):
    """With probability p, mirror left-right AND negate x: x -> -x for float values, x -> 255 - x for uint8
    codes (the TSN rule; exact negation after dequantize). y is only mirrored. Flip before Normalize and
    before anything that shifts x away from zero-centred values."""

    def _check(self, tensor: torch.Tensor) -> None:
        _check_flow(tensor, self)

    def _mirror(self, tensor: torch.Tensor) -> torch.Tensor:
        out = super()._mirror(tensor)
        x = out[..., 0::2, :, :]
        out[..., 0::2, :, :] = 255 - x if out.dtype == torch.uint8 else -x
        return out


class RandomCrop(Transform):
    """Crop a `size` window ((h, w) or square side, pixels) at a uniformly random position; values untouched."""

    def __init__(self, size: Size):
        self.size = _pair(size)

    def __call__(self, tensor: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        height, width = _fit(tensor, self.size, self)
        top = _randint(tensor.shape[-2] - height + 1, generator)
        left = _randint(tensor.shape[-1] - width + 1, generator)
        return tensor[..., top:top + height, left:left + width]


class CenterCrop(Transform):
    """Crop the central `size` window ((h, w) or square side, pixels), offsets rounded as TSN; values untouched."""

    def __init__(self, size: Size):
        self.size = _pair(size)

    def __call__(self, tensor: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        height, width = _fit(tensor, self.size, self)
        top = int(round((tensor.shape[-2] - height) / 2.0))
        left = int(round((tensor.shape[-1] - width) / 2.0))
        return tensor[..., top:top + height, left:left + width]


class Resize(Transform):
    """Resize to `size` ((h, w), or an int for the short side keeping aspect) with bilinear interpolation.

    With flow=True the displacements are rescaled with the image: x *= new_w / w and y *= new_h / h (uint8
    codes are scaled about 127.5, rounded and clipped). Assumes zero-centred values (pixels, unit, mean-
    subtracted): resize before Normalize. flow=False resizes values untouched (RGB frames).
    """

    def __init__(self, size: Size, flow: bool = True, antialias: bool = True):
        _pair(size)  # checked here, not by torch at the first call
        self.size = size
        self.flow = flow
        self.antialias = antialias

    def __call__(self, tensor: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        height, width = tensor.shape[-2:]
        if isinstance(self.size, int):
            scale = self.size / min(height, width)
            size = (self.size, round(width * scale)) if height <= width else (round(height * scale), self.size)
        else:
            size = self.size
        return _resize(tensor, size, self.flow, self.antialias, self)


class MultiScaleCrop(Transform):
    """TSN's GroupMultiScaleCrop: crop a random (w, h) pair of side lengths drawn from short_side * scales
    (sides within 3 px of the output size snap to it, but never past the image's own side, where TSN's crop
    would leave the image; w and h at most `max_distort` scale steps apart), at one
    of 5 fixed positions (corners, centre) or 13 with more_fix_crop (plus edge centres and quarter points), or
    anywhere with fix_crop=False; then resize to `size` ((h, w) or square side). With flow=True the resize
    rescales x and y with the image as Resize does (TSN does not: pass flow=False to reproduce it).
    """

    def __init__(self, size: Size, scales: Sequence[float] = TSN_SCALES, max_distort: int = 1,
                 fix_crop: bool = True, more_fix_crop: bool = True, flow: bool = True):
        if not scales or min(scales) <= 0 or max(scales) > 1:
            raise ConfigError(f"scales must be in (0, 1], got {scales!r}")
        if not is_integer(max_distort, 0):
            raise ConfigError(f"max_distort must be an integer >= 0 (scale steps), got {max_distort!r}")
        self.size = _pair(size)
        self.scales = tuple(scales)
        self.max_distort = max_distort
        self.fix_crop = fix_crop
        self.more_fix_crop = more_fix_crop
        self.flow = flow

    def crop_candidates(self, height: int, width: int) -> list[tuple[int, int]]:
        """The (crop_w, crop_h) pairs the crop is drawn from, for an image of height x width pixels."""
        base = min(height, width)
        sides = [int(base * scale) for scale in self.scales]
        crop_h = [min(self.size[0], height) if abs(s - self.size[0]) < 3 else s for s in sides]
        crop_w = [min(self.size[1], width) if abs(s - self.size[1]) < 3 else s for s in sides]
        return [(w, h) for i, h in enumerate(crop_h) for j, w in enumerate(crop_w) if abs(i - j) <= self.max_distort]

    def fixed_offsets(self, height: int, width: int, crop_h: int, crop_w: int) -> list[tuple[int, int]]:
        """TSN's fixed (left, top) crop positions, in pixels, of a crop_h x crop_w crop inside the image."""
        if crop_h > height or crop_w > width:
            raise ConfigError(f"{self!r}: a {crop_w}x{crop_h} crop (WxH) does not fit in a {width}x{height} image")
        w_step, h_step = (width - crop_w) // 4, (height - crop_h) // 4
        steps = [(0, 0), (4, 0), (0, 4), (4, 4), (2, 2)]
        if self.more_fix_crop:
            steps += [(0, 2), (4, 2), (2, 4), (2, 0), (1, 1), (3, 1), (1, 3), (3, 3)]
        return [(i * w_step, j * h_step) for i, j in steps]

    def __call__(self, tensor: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        height, width = tensor.shape[-2:]
        candidates = self.crop_candidates(height, width)
        crop_w, crop_h = candidates[_randint(len(candidates), generator)]
        if self.fix_crop:
            offsets = self.fixed_offsets(height, width, crop_h, crop_w)
            left, top = offsets[_randint(len(offsets), generator)]
        else:
            left = _randint(width - crop_w + 1, generator)
            top = _randint(height - crop_h + 1, generator)
        crop = tensor[..., top:top + crop_h, left:left + crop_w]
        return _resize(crop, self.size, self.flow, True, self)


class Dequantize(Transform):
    """uint8 codes -> float32 pixels, ``q * 2 b / 255 - b`` with b = `bound` (pixels): bit for bit
    flowprep.dequantize (tested on the CPU), on the tensor's device; x and y alike.

    For the fast recipe: output='uint8' from the dataset, crops and flips on the codes in the DataLoader
    workers, and the batch moved to the GPU as uint8 (a quarter of float32's bytes) and dequantized there with
    the bound the tree was written with (meta.json's settings.bound)."""

    def __init__(self, bound: float = DEFAULT_BOUND):
        try:
            self.bound = check_bound(bound)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None

    def __call__(self, tensor: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        if tensor.dtype != torch.uint8:
            raise ConfigError(f"{self!r} needs uint8 codes, got a {tensor.dtype} tensor (use output='uint8')")
        # The numpy formula's float32 operations in its order, so the same bits; float() copies, in place after.
        return tensor.float().mul_(2.0 * self.bound / 255.0).sub_(self.bound)


class Normalize(Transform):
    """(value - mean) / std per channel, on float tensors. mean and std are scalars, one value per channel, or
    a shorter pattern repeated over the channels: (m_x, m_y) normalizes every x and y field of a stack."""

    def __init__(self, mean: float | Sequence[float], std: float | Sequence[float]):
        self.mean = _values(mean)
        self.std = _values(std)
        if any(s == 0 for s in self.std):
            raise ConfigError(f"std must not be 0, got {std!r}")

    def __call__(self, tensor: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        if not tensor.is_floating_point():
            raise ConfigError(f"Normalize needs a float tensor, got {tensor.dtype} (use output='pixels' or 'unit')")
        channels = tensor.shape[-3]
        mean, std = (self._per_channel(v, channels, tensor) for v in (self.mean, self.std))
        return (tensor - mean) / std

    def _per_channel(self, values: tuple[float, ...], channels: int, tensor: torch.Tensor) -> torch.Tensor:
        if channels % len(values):
            raise ConfigError(f"{self!r}: {len(values)} values do not repeat evenly over {channels} channels")
        pattern = torch.tensor(values, dtype=tensor.dtype, device=tensor.device)
        return pattern.repeat(channels // len(values)).view(channels, 1, 1)


def _values(value: float | Sequence[float]) -> tuple[float, ...]:
    return (float(value),) if isinstance(value, (int, float)) else tuple(float(v) for v in value)


def _pair(size: Size) -> tuple[int, int]:
    pair = (size, size) if is_integer(size, 1) else tuple(size) if isinstance(size, (tuple, list)) else ()
    if len(pair) != 2 or not all(is_integer(side, 1) for side in pair):
        raise ConfigError(f"size must be a positive int or (height, width) of positive ints, got {size!r}")
    return int(pair[0]), int(pair[1])


def _fit(tensor: torch.Tensor, size: tuple[int, int], transform: Transform) -> tuple[int, int]:
    if tensor.shape[-2] < size[0] or tensor.shape[-1] < size[1]:
        raise ConfigError(f"{transform!r}: a {tensor.shape[-1]}x{tensor.shape[-2]} (WxH) image is smaller than "
                          f"the {size[1]}x{size[0]} crop")
    return size


def _check_flow(tensor: torch.Tensor, transform: Transform) -> None:
    if tensor.dim() < 3 or tensor.shape[-3] % 2:
        raise ConfigError(f"{transform!r} expects a (..., 2L, H, W) flow tensor with x, y interleaved; "
                          f"got shape {tuple(tensor.shape)}")


def _uniform(generator: torch.Generator | None) -> float:
    return float(torch.rand(1, generator=generator))


def _randint(high: int, generator: torch.Generator | None) -> int:
    """Uniform integer in [0, high)."""
    return int(torch.randint(high, (1,), generator=generator))


def _resize(tensor: torch.Tensor, size: tuple[int, int], flow: bool, antialias: bool,
            transform: Transform) -> torch.Tensor:
    if flow:  # before the early return: whether a resize happens must not decide whether bad input passes
        _check_flow(tensor, transform)
    height, width = tensor.shape[-2:]
    if (height, width) == tuple(size):
        return tensor
    lead, channels = tensor.shape[:-3], tensor.shape[-3]
    values = tensor.reshape(-1, channels, height, width)
    is_codes = values.dtype == torch.uint8
    values = values.float() if is_codes else values
    values = F.interpolate(values, size=tuple(size), mode="bilinear", align_corners=False, antialias=antialias)
    if flow:
        zero = UINT8_ZERO if is_codes else 0.0
        for axis, scale in ((0, size[1] / width), (1, size[0] / height)):
            field = values[:, axis::2]
            field.sub_(zero).mul_(scale).add_(zero)
    if is_codes:
        values = values.round_().clamp_(0, 255).to(torch.uint8)
    return values.reshape(*lead, channels, *size)
