"""The flow backend interface: frames in (gray uint8, HxW), flow out (float32, HxWx2, pixels)."""
from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, ClassVar

import numpy as np

from ..errors import ConfigError


class FlowBackend(ABC):
    """One optical-flow implementation on one kind of device.

    Flow k goes from frame k to frame k+1 (OpenCV's direction): ``frame_k(x, y) ~ frame_k+1(x + u, y + v)``,
    channel 0 is u (horizontal), channel 1 is v, both in pixels.
    """

    algo: ClassVar[str]
    defaults: ClassVar[Mapping[str, Any]]  # every tunable parameter and its default; the types are enforced
    presets: ClassVar[Mapping[str, Mapping[str, Any]]] = {}  # named parameter sets, applied before overrides
    description: ClassVar[str] = ""
    # Whether compute_batch runs many pairs in one launch: streams then gather batch_size pairs per call.
    batched: ClassVar[bool] = False

    def __init__(
        self,
        params: Mapping[str, Any] | None = None,
        device: str = "cpu",
        batch_size: int | None = None,
        preset: str | None = None,
    ):
        self.preset = preset
        self.params = self.check_params(params, preset)
        self.device = device
        self.batch_size = batch_size or self.default_batch_size(device)

    @classmethod
    def default_batch_size(cls, device: str) -> int:
        """Pairs per launch when the caller does not say (batched backends choose per device)."""
        return 1

    @classmethod
    def check_params(cls, overrides: Mapping[str, Any] | None = None, preset: str | None = None) -> dict[str, Any]:
        """The full parameter set: defaults, then the preset, then overrides; ConfigError names a bad one."""
        base = dict(cls.defaults)
        if preset is not None:
            if preset not in cls.presets:
                known = ", ".join(sorted(cls.presets)) or "none"
                raise ConfigError(f"unknown preset {preset!r} for algorithm {cls.algo!r}; presets: {known}")
            base.update(cls.presets[preset])
        return resolve_params(cls.algo, cls.defaults, {**base, **(overrides or {})})

    @classmethod
    def limit_threads(cls) -> None:
        """Use one thread in this process: parallel workers, not threads, then share the cores."""
        import cv2

        cv2.setNumThreads(1)

    @classmethod
    def availability(cls, device: str) -> str | None:
        """None when the backend can run on `device` here, else the reason it cannot (with the fix)."""
        return None

    @abstractmethod
    def compute(self, prev: np.ndarray, nxt: np.ndarray) -> np.ndarray:
        """Flow from gray uint8 HxW `prev` to `nxt`, as float32 HxWx2 pixels."""

    def compute_batch(self, firsts: Sequence[np.ndarray], seconds: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Flows from each firsts[i] to seconds[i] (gray uint8 HxW), as float32 HxWx2 pixels, in order.

        Batched backends compute them all in one launch; the others one pair at a time.
        """
        return [self.compute(first, second) for first, second in zip(firsts, seconds)]

    def compute_stream(self, frames: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
        """Flows of consecutive frames: N frames give N-1 flows, yielded as soon as each is known."""
        prev = None
        for frame in frames:
            if prev is not None:
                yield self.compute(prev, frame)
            prev = frame

    def versions(self) -> dict[str, str]:
        """Versions of the libraries this backend runs on, for meta.json."""
        return {}

    @classmethod
    def describe_implementation(cls, device: str, params: Mapping[str, Any], batch_size: int) -> dict[str, Any]:
        """How the backend computes on `device` with `params` (code paths, batch size); {} when nothing to say."""
        return {}

    def implementation(self) -> dict[str, Any]:
        """describe_implementation of this backend's device, parameters and batch size, for meta.json."""
        return self.describe_implementation(self.device, self.params, self.batch_size)


def resolve_params(algo: str, defaults: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Defaults updated by overrides, each override converted to the default's type (strings are parsed)."""
    params = dict(defaults)
    for name, value in overrides.items():
        if name not in defaults:
            raise ConfigError(
                f"unknown parameter {name!r} for algorithm {algo!r}; valid: {', '.join(sorted(defaults))}"
            )
        params[name] = _coerce(algo, name, value, type(defaults[name]))
    return params


def _coerce(algo: str, name: str, value: Any, kind: type) -> Any:
    try:
        if kind is bool:
            if isinstance(value, str):
                text = value.strip().lower()
                if text not in ("true", "false", "1", "0", "yes", "no"):
                    raise ValueError(value)
                return text in ("true", "1", "yes")
            return bool(value)
        if kind is int:
            as_float = float(value)
            if not as_float.is_integer():
                raise ValueError(value)
            return int(as_float)
        return kind(value)
    except (TypeError, ValueError):
        raise ConfigError(
            f"parameter {name!r} of {algo!r} must be {kind.__name__}, got {value!r}"
        ) from None
