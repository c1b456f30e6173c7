"""TV-L1 on the GPU (or CPU) in PyTorch: OpenCV's DualTVL1 scheme and defaults, many pairs per launch.

torch is an optional extra, so it is imported only when a flow is computed or the backend is checked.
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import closing
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from ..errors import MissingDependencyError, require
from .base import FlowBackend
from .opencv import OpenCVTVL1
from .pairs import flow_stream

if TYPE_CHECKING:
    import torch

_PURPOSE = "TV-L1 in PyTorch (--device cuda or torch-cpu)"


def tvl1_flow(
    frames0: torch.Tensor,
    frames1: torch.Tensor,
    params: Mapping[str, Any] | None = None,
    check_every: int | None = None,
) -> torch.Tensor:
    """TV-L1 flow from each frames0[b] to frames1[b], all pairs at once, on the tensors' device.

    frames0, frames1: BxHxW float (or uint8) tensors, intensities 0..255 (lambda is tuned for that range).
    params: OpenCV DualTVL1 parameters by OpenCV's names (see OpenCVTVL1.defaults); missing ones take the defaults;
        ConfigError names an unknown or bad one.
    check_every: read the per-pair convergence flags every this many inner iterations (a host sync); default 1 on
        the CPU and 10 on a GPU. Results do not depend on it, nor on which other pairs share the batch.
    Returns BxHxWx2 float32 flow in pixels, OpenCV's direction: frames0[b](x, y) ~ frames1[b](x + u, y + v).
    """
    require("torch", "torch", _PURPOSE)
    from ._tvl1_torch import tvl1_flow as solve

    return solve(frames0, frames1, OpenCVTVL1.check_params(params), check_every)


def torch_device(device: str) -> str:
    """flowprep's device name -> torch's: 'torch-cpu' runs on 'cpu'; 'cuda' and 'cuda:N' are unchanged."""
    return "cpu" if device == "torch-cpu" else device


class TorchTVL1(FlowBackend):
    """Dual TV-L1 in PyTorch, same parameters and defaults as OpenCV's; batch_size pairs per launch."""

    algo = "tvl1"
    description = "Dual TV-L1 in PyTorch (OpenCV's scheme and defaults), batched; cuda or torch-cpu"
    defaults: ClassVar[Mapping[str, Any]] = OpenCVTVL1.defaults
    presets: ClassVar[Mapping[str, Mapping[str, Any]]] = OpenCVTVL1.presets  # same names and values on CPU and GPU
    check_params = OpenCVTVL1.check_params  # and the same checks
    batched = True

    @classmethod
    def availability(cls, device: str) -> str | None:
        try:
            torch = require("torch", "torch", _PURPOSE)
        except MissingDependencyError as exc:
            return str(exc)
        if not device.startswith("cuda"):
            return None
        if not torch.cuda.is_available():
            if torch.version.cuda is None:
                return (
                    f"torch {torch.__version__} is a CPU-only build; install a CUDA build of torch "
                    "(https://pytorch.org/get-started/locally/) or use --device torch-cpu"
                )
            return f"torch {torch.__version__} (CUDA {torch.version.cuda}) sees no CUDA GPU (driver, CUDA_VISIBLE_DEVICES?)"
        index = int(device.split(":", 1)[1]) if ":" in device else 0
        if index >= torch.cuda.device_count():
            return f"{device} does not exist: torch sees {torch.cuda.device_count()} CUDA device(s)"
        return None

    @classmethod
    def default_batch_size(cls, device: str) -> int:
        # On the CPU one pair at a time is cheapest (benchmarks/tvl1_cpu.py: batches keep more than the caches
        # hold); a GPU needs many pairs per launch to fill it.
        return 1 if device == "torch-cpu" else 16

    @classmethod
    def describe_implementation(cls, device: str, params: Mapping[str, Any], batch_size: int) -> dict[str, Any]:
        import torch

        from ._tvl1_torch import median_method

        median = params["median_filtering"]
        return {
            "median": median_method(torch.device(torch_device(device)), median) if median > 1 else "none",
            "iteration": "eager, in place",
            "batch_size": batch_size,
            # What a backend made now would run with: torch-cpu limits the process to one thread (__init__).
            "torch_threads": 1 if device == "torch-cpu" else torch.get_num_threads(),
        }

    def implementation(self) -> dict[str, Any]:
        """For meta.json: as describe_implementation, with the torch threads this process really runs."""
        import torch

        return {**super().implementation(), "torch_threads": torch.get_num_threads()}

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        if self.device == "torch-cpu":
            # One thread per process, whatever --jobs says: --jobs N workers use N cores instead.
            self.limit_threads()

    @classmethod
    def limit_threads(cls) -> None:
        # A pair's tensors are too small for torch's intra-op threads to pay, and on shared cores they spin-wait.
        super().limit_threads()
        require("torch", "torch", _PURPOSE).set_num_threads(1)

    def compute(self, prev: np.ndarray, nxt: np.ndarray) -> np.ndarray:
        if prev.shape != nxt.shape or prev.ndim != 2:
            raise ValueError(f"frames must be gray HxW of the same size, got {prev.shape} and {nxt.shape}")
        return self.compute_batch([prev], [nxt])[0]

    def compute_batch(self, firsts: Sequence[np.ndarray], seconds: Sequence[np.ndarray]) -> list[np.ndarray]:
        """All the pairs (firsts[i] -> seconds[i]) in one launch: the caller bounds how many."""
        return list(tvl1_flow(self._tensor(firsts), self._tensor(seconds), self.params).cpu().numpy())

    def compute_stream(self, frames: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
        """Flows of consecutive frames, batch_size pairs per launch, decoding and computing on threads of their
        own (pairs.flow_stream)."""
        with closing(flow_stream(self, frames)) as flows:
            for (flow,) in flows:
                yield flow

    def _tensor(self, frames: Sequence[np.ndarray] | np.ndarray) -> torch.Tensor:
        """Gray uint8 HxW frames -> float BxHxW on this backend's device."""
        import torch

        return torch.from_numpy(np.ascontiguousarray(np.stack(frames))).to(torch_device(self.device)).float()

    def versions(self) -> dict[str, str]:
        import torch

        found = {"torch": torch.__version__}
        if self.device.startswith("cuda"):
            found["cuda"] = str(torch.version.cuda)
            found["gpu"] = torch.cuda.get_device_name(torch_device(self.device))
        return found

