"""NVIDIA Optical Flow hardware (NVOFA, Turing and newer) through the torch-nvidia-of-sdk package.

The package (extra 'nvof'; wheels for Python >= 3.13 with a CUDA build of torch) installs the module `of`, whose
`TorchNVOpticalFlow(width, height, gpu_id, preset, grid_size, bidirectional)` engine takes two HxWx4 uint8 CUDA
tensors and returns HxWx2 float32 flow in pixels from the first to the second (OpenCV's direction);
`compute_flow(..., upsample=True)` brings coarse grids (2, 4) back to full resolution. Neither torch nor `of` is
imported until the backend is checked or used.
"""
from __future__ import annotations

import contextlib
import importlib
import sys
from collections.abc import Iterable, Iterator, Mapping
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from ..errors import BackendUnavailableError, ConfigError, MissingDependencyError, require
from .base import FlowBackend
from .prefetch import prefetch

if TYPE_CHECKING:
    import torch

DISTRIBUTION = "torch-nvidia-of-sdk"
MODULE = "of"
PERF_LEVELS = ("slow", "medium", "fast")  # NV_OF_PERF_LEVEL: slow is the most accurate
GRID_SIZES = (1, 2, 4)  # pixels per flow vector; the hardware may only offer coarser grids (Turing: 4)
MIN_CAPABILITY = (7, 5)  # Turing: the first generation with the optical flow accelerator


def nvof_problem(device: str) -> str | None:
    """None when NVOF can run on `device` ('cuda' or 'cuda:N') here, else what is missing and how to fix it."""
    try:
        sdk_version = version(DISTRIBUTION)
    except PackageNotFoundError:
        python = f"{sys.version_info.major}.{sys.version_info.minor}"
        return (
            f"the {DISTRIBUTION} package is not installed: pip install 'flowprep[nvof]' "
            f"(wheels exist for Python >= 3.13 only, this is Python {python}; it also needs a CUDA build of torch)"
        )
    try:
        torch = require("torch", "nvof", "NVIDIA Optical Flow")
    except MissingDependencyError as exc:
        return str(exc)
    if not torch.cuda.is_available():
        build = "a CPU-only build" if torch.version.cuda is None else f"built for CUDA {torch.version.cuda}"
        return f"no CUDA GPU: torch {torch.__version__} ({build}) sees none; NVOF runs on NVIDIA GPUs only"
    index = _gpu_index(torch, device)
    if index >= torch.cuda.device_count():
        return f"{device} does not exist: torch sees {torch.cuda.device_count()} CUDA device(s)"
    capability = torch.cuda.get_device_capability(index)
    if capability < MIN_CAPABILITY:
        return (
            f"{torch.cuda.get_device_name(index)} (compute capability {capability[0]}.{capability[1]}) has no "
            "optical flow accelerator: NVOF needs a Turing or newer GPU (compute capability >= 7.5)"
        )
    try:
        if not hasattr(importlib.import_module(MODULE), "TorchNVOpticalFlow"):
            return f"the module '{MODULE}' found is not {DISTRIBUTION}'s (no TorchNVOpticalFlow); another package shadows it"
    except Exception as exc:  # a compiled extension fails with OSError, RuntimeError... not just ImportError
        return f"{DISTRIBUTION} {sdk_version} is installed but its module '{MODULE}' does not load: {exc}"
    return None


def _gpu_index(torch: Any, device: str) -> int:
    return int(device.split(":", 1)[1]) if ":" in device else torch.cuda.current_device()


class NVOF(FlowBackend):
    """The GPU's optical flow accelerator; presets slow / medium (default) / fast, grid 1, 2 or 4 pixels."""

    algo = "nvof"
    description = "NVIDIA Optical Flow hardware (Turing and newer), via torch-nvidia-of-sdk"
    defaults: ClassVar[Mapping[str, Any]] = {"perf_level": "medium", "grid_size": 1}
    presets: ClassVar[Mapping[str, Mapping[str, Any]]] = {level: {"perf_level": level} for level in PERF_LEVELS}

    @classmethod
    def availability(cls, device: str) -> str | None:
        return nvof_problem(device)

    @classmethod
    def check_params(cls, overrides: Mapping[str, Any] | None = None, preset: str | None = None) -> dict[str, Any]:
        params = super().check_params(overrides, preset)
        if params["perf_level"] not in PERF_LEVELS:
            raise ConfigError(f"perf_level of nvof must be one of {', '.join(PERF_LEVELS)}, got {params['perf_level']!r}")
        if params["grid_size"] not in GRID_SIZES:
            raise ConfigError(f"grid_size of nvof must be one of 1, 2, 4, got {params['grid_size']!r}")
        return params

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._engines: dict[tuple[int, int], Any] = {}  # one hardware session per frame size

    def compute(self, prev: np.ndarray, nxt: np.ndarray) -> np.ndarray:
        if prev.shape != nxt.shape or prev.ndim != 2:
            raise ValueError(f"frames must be gray HxW of the same size, got {prev.shape} and {nxt.shape}")
        return self._flow(self._upload(prev), self._upload(nxt))

    def compute_stream(self, frames: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
        """Pairwise flows; each frame is uploaded once and decoding runs ahead in a thread."""
        previous = None
        with contextlib.closing(prefetch(frames, depth=4)) as ahead:
            for frame in ahead:
                current = self._upload(frame)
                if previous is not None:
                    yield self._flow(previous, current)
                previous = current

    def _upload(self, gray: np.ndarray) -> torch.Tensor:
        """Gray uint8 HxW -> HxWx4 uint8 on the GPU: the engine reads 4-channel ABGR8, gray goes in every channel."""
        import torch

        on_gpu = torch.from_numpy(np.ascontiguousarray(gray, dtype=np.uint8)).to(self.device)
        return on_gpu.unsqueeze(-1).expand(*gray.shape, 4).contiguous()

    def _flow(self, prev: torch.Tensor, nxt: torch.Tensor) -> np.ndarray:
        height, width = prev.shape[:2]
        engine = self._engines.get((height, width))
        if engine is None:
            import torch

            of = importlib.import_module(MODULE)
            try:
                engine = of.TorchNVOpticalFlow(
                    width, height, _gpu_index(torch, self.device), self.params["perf_level"],
                    self.params["grid_size"], False,
                )
            except RuntimeError as exc:  # e.g. a Turing-class GPU without the accelerator, or a refused grid size
                raise BackendUnavailableError(
                    f"NVOF could not start on {self.device} for {width}x{height} frames: {exc}"
                ) from exc
            self._engines[(height, width)] = engine
        flow = engine.compute_flow(prev, nxt, upsample=True)
        return flow[:height, :width].float().cpu().numpy()

    def versions(self) -> dict[str, str]:
        import torch

        return {
            DISTRIBUTION: version(DISTRIBUTION),
            "torch": torch.__version__,
            "gpu": torch.cuda.get_device_name(_gpu_index(torch, self.device)),
        }
