"""Backend registry: (algorithm, device kind, implementation) -> backend class, imported only when used."""
from __future__ import annotations

import importlib
import threading
from dataclasses import dataclass

from typing import Any

from ..config import FlowConfig
from ..errors import BackendUnavailableError, ConfigError
from .base import FlowBackend

# Device kinds: "cpu", "cuda" (cuda or cuda:N, PyTorch / NVIDIA hardware), "torch-cpu" (the PyTorch
# implementation on the CPU: same code as on the GPU, for machines without one and for tests).
# (algorithm, device kind) -> implementations by name, the default first.
_REGISTRY: dict[tuple[str, str], dict[str, str]] = {
    ("tvl1", "cpu"): {"numba": "flowprep.flow.tvl1_cpu:NumbaTVL1", "opencv": "flowprep.flow.opencv:OpenCVTVL1"},
    ("farneback", "cpu"): {"opencv": "flowprep.flow.opencv:OpenCVFarneback"},
    ("dis", "cpu"): {"opencv": "flowprep.flow.opencv:OpenCVDIS"},
    ("tvl1", "cuda"): {"torch": "flowprep.flow.torch_tvl1:TorchTVL1"},
    ("tvl1", "torch-cpu"): {"torch": "flowprep.flow.torch_tvl1:TorchTVL1"},
    ("nvof", "cuda"): {"nvidia": "flowprep.flow.nvof:NVOF"},
}
# Why the default is the default where there is a choice (`flowprep backends` says it).
_WHY_DEFAULT = {
    ("tvl1", "cpu"): "OpenCV's scheme and defaults, the same flow within 0.01 px, for several times less CPU "
                     "(docs/benchmarks.md); --impl opencv gives OpenCV's own bits (mmaction2's, TSN's)",
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


def implementations(algo: str, device: str) -> tuple[str, ...]:
    """The implementations of `algo` on `device`, the default first; ConfigError when there is none."""
    if algo not in ALGORITHMS:
        raise ConfigError(f"unknown algorithm {algo!r}; choose from {', '.join(ALGORITHMS)}")
    found = _REGISTRY.get((algo, device_kind(device)))
    if found is None:
        devices = sorted(k for a, k in _REGISTRY if a == algo)
        raise ConfigError(f"algorithm {algo!r} does not run on {device!r}; it runs on: {', '.join(devices)}")
    return tuple(found)


def resolve_impl(algo: str, device: str, impl: str | None = None) -> str:
    """`impl`, checked, or the default implementation of `algo` on `device` when None."""
    known = implementations(algo, device)
    if impl is None:
        return known[0]
    if impl not in known:
        listed = ", ".join(f"{name} (default)" if i == 0 else name for i, name in enumerate(known))
        raise ConfigError(f"implementation {impl!r} of {algo!r} on {device!r} does not exist; there is: {listed}")
    return impl


def legacy_impl(algo: str, device: str) -> str | None:
    """The implementation that wrote outputs whose meta.json names none (before there was a choice): OpenCV's
    on the CPU, the only one elsewhere; None for a combination that does not exist."""
    kind = device.split(":", 1)[0]
    if kind == "cpu":
        return "opencv"
    return next(iter(_REGISTRY.get((algo, kind), ())), None)


def backend_class(algo: str, device: str, impl: str | None = None) -> type[FlowBackend]:
    """The class implementing `algo` on `device` (`impl`, or the default); ConfigError when none does."""
    name = resolve_impl(algo, device, impl)
    module_name, class_name = _REGISTRY[(algo, device_kind(device))][name].split(":")
    return getattr(importlib.import_module(module_name), class_name)


def create_backend(config: FlowConfig) -> FlowBackend:
    """A ready backend for `config`; BackendUnavailableError says why it cannot run here."""
    cls = backend_class(config.algo, config.device, config.impl)
    reason = cls.availability(config.device)
    if reason is not None:
        raise BackendUnavailableError(f"{config.algo} on {config.device} cannot run here: {reason}")
    return cls(dict(config.params), device=config.device, batch_size=config.batch_size, preset=config.preset)


def check_flow_config(config: FlowConfig, *, here: bool = True) -> dict[str, Any]:
    """The full parameter set of `config`, checked without building the backend: ConfigError names a bad
    algorithm, device, preset or parameter. With `here`, also ConfigError when it cannot run on this machine
    (leave it off for clusters: workers may have what this machine lacks, a GPU say)."""
    cls = backend_class(config.algo, config.device, config.impl)
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
    impl: str
    default: bool  # the implementation `algo` gets on `device` without --impl
    why_default: str  # "" when it is the only one, or not the default
    usable: bool
    reason: str  # why it cannot run here; "" when usable
    description: str
    presets: tuple[str, ...]
    implementation: dict[str, Any]  # how it computes here with its defaults; {} when unusable or nothing to say


def list_backends() -> list[BackendInfo]:
    """Every registered implementation, whether it can run here, and why not."""
    infos = []
    for (algo, kind), impls in sorted(_REGISTRY.items()):
        for rank, impl in enumerate(impls):
            try:
                cls = backend_class(algo, kind, impl)
                reason = cls.availability(kind) or ""
                description, presets = cls.description, tuple(sorted(cls.presets))
                implementation = {} if reason else cls.describe_implementation(kind, cls.check_params(),
                                                                               cls.default_batch_size(kind))
            except ImportError as exc:
                reason, description, presets, implementation = str(exc), "", (), {}
            why = _WHY_DEFAULT.get((algo, kind), "") if rank == 0 else ""
            infos.append(BackendInfo(algo, kind, impl, rank == 0, why, not reason, reason, description, presets,
                                     implementation))
    return infos
