"""Backend registry: (algorithm, device kind) -> implementation, imported only when used."""
from __future__ import annotations

import importlib
import threading
from dataclasses import dataclass

from typing import Any

from ..config import FlowConfig
from ..errors import BackendUnavailableError, ConfigError
from .base import FlowBackend

# Device kinds: "cpu" (OpenCV), "cuda" (cuda or cuda:N, PyTorch / NVIDIA hardware), "torch-cpu" (the PyTorch
# implementation on the CPU: same code as on the GPU, for machines without one and for tests).
_REGISTRY: dict[tuple[str, str], str] = {
    ("tvl1", "cpu"): "flowprep.flow.opencv:OpenCVTVL1",
    ("farneback", "cpu"): "flowprep.flow.opencv:OpenCVFarneback",
    ("dis", "cpu"): "flowprep.flow.opencv:OpenCVDIS",
    ("tvl1", "cuda"): "flowprep.flow.torch_tvl1:TorchTVL1",
    ("tvl1", "torch-cpu"): "flowprep.flow.torch_tvl1:TorchTVL1",
    ("nvof", "cuda"): "flowprep.flow.nvof:NVOF",
}

ALGORITHMS = tuple(dict.fromkeys(algo for algo, _ in _REGISTRY))


def device_kind(device: str) -> str:
    """'cuda:1' -> 'cuda'; 'cpu' and 'torch-cpu' unchanged; anything else is a ConfigError."""
    kind = device.split(":", 1)[0]
    if kind == "cuda" and (device == "cuda" or device[5:].isdigit()):
        return kind
    if device in ("cpu", "torch-cpu"):
        return device
    raise ConfigError(f"device must be cpu, torch-cpu, cuda or cuda:N; got {device!r}")


def backend_class(algo: str, device: str) -> type[FlowBackend]:
    """The class implementing `algo` on `device`; ConfigError when no such combination exists."""
    if algo not in ALGORITHMS:
        raise ConfigError(f"unknown algorithm {algo!r}; choose from {', '.join(ALGORITHMS)}")
    kind = device_kind(device)
    target = _REGISTRY.get((algo, kind))
    if target is None:
        devices = sorted(k for a, k in _REGISTRY if a == algo)
        raise ConfigError(f"algorithm {algo!r} does not run on {device!r}; it runs on: {', '.join(devices)}")
    module_name, class_name = target.split(":")
    return getattr(importlib.import_module(module_name), class_name)


def create_backend(config: FlowConfig) -> FlowBackend:
    """A ready backend for `config`; BackendUnavailableError says why it cannot run here."""
    cls = backend_class(config.algo, config.device)
    reason = cls.availability(config.device)
    if reason is not None:
        raise BackendUnavailableError(f"{config.algo} on {config.device} cannot run here: {reason}")
    return cls(dict(config.params), device=config.device, batch_size=config.batch_size, preset=config.preset)


def check_flow_config(config: FlowConfig, *, here: bool = True) -> dict[str, Any]:
    """The full parameter set of `config`, checked without building the backend: ConfigError names a bad
    algorithm, device, preset or parameter. With `here`, also ConfigError when it cannot run on this machine
    (leave it off for clusters: workers may have what this machine lacks, a GPU say)."""
    cls = backend_class(config.algo, config.device)
    params = cls.check_params(dict(config.params), config.preset)
    reason = cls.availability(config.device) if here else None
    if reason:
        raise ConfigError(f"{config.algo} on {config.device} cannot run here: {reason}")
    return params


_per_thread = threading.local()


def cached_backend(config: FlowConfig) -> FlowBackend:
    """One backend per thread and config, reused across the videos a worker processes. Per thread, because an
    OpenCV flow object must not run calc() from two threads at once (Dask workers may run several threads)."""
    cache = _per_thread.__dict__.setdefault("backends", {})
    if config not in cache:
        cache[config] = create_backend(config)
    return cache[config]


@dataclass(frozen=True)
class BackendInfo:
    algo: str
    device: str
    usable: bool
    reason: str  # why it cannot run here; "" when usable
    description: str
    presets: tuple[str, ...]
    implementation: dict[str, Any]  # how it computes here with its defaults; {} when unusable or nothing to say


def list_backends() -> list[BackendInfo]:
    """Every registered backend, whether it can run here, and why not."""
    infos = []
    for (algo, kind), _ in sorted(_REGISTRY.items()):
        try:
            cls = backend_class(algo, kind)
            reason = cls.availability(kind) or ""
            description, presets = cls.description, tuple(sorted(cls.presets))
            implementation = {} if reason else cls.describe_implementation(kind, cls.check_params(),
                                                                           cls.default_batch_size(kind))
        except ImportError as exc:
            reason, description, presets, implementation = str(exc), "", (), {}
        infos.append(BackendInfo(algo, kind, not reason, reason, description, presets, implementation))
    return infos
