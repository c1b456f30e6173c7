"""flowprep's own TV-L1 on the CPU: OpenCV's DualTVL1 scheme and defaults, the inner iteration fused into one numba
sweep per iteration (flowprep.flow._tvl1_numba), one thread. The default for `--algo tvl1` on the CPU.

Compilation is paid once per machine: the kernels are cached on disk by numba (cache=True: beside the module, or
in NUMBA_CACHE_DIR when set, or in the user's cache folder when the package folder is read-only). Workers that
start together on a cold cache take a file lock in the cache folder in turn, so that one compiles and the others
load what it wrote.
"""
from __future__ import annotations

import functools
import os
from contextlib import contextmanager
from typing import Any, ClassVar, Iterator, Mapping

import cv2
import numpy as np

from .base import FlowBackend
from .opencv import OpenCVTVL1

def _kernels() -> Any:
    """flowprep.flow._tvl1_numba, imported on first use (numba's import costs a fraction of a second)."""
    from . import _tvl1_numba

    return _tvl1_numba


def _entry_points() -> list[Any]:
    """The dispatchers Python calls; the kernels they call are compiled into them."""
    module = _kernels()
    return [module._iterate, module._flow_map, module._data_term, module._to_warp]


def cache_state() -> dict[str, Any]:
    """Where numba caches the kernels and whether every one of them is there for this source and machine
    ({"path": folder, "warm": bool}); read from numba's cache index without compiling or loading anything."""
    dispatchers = _entry_points()
    path = dispatchers[0]._cache.cache_path
    try:
        warm = all(_cached_signatures(d) for d in dispatchers)
    except (AttributeError, TypeError):  # numba's cache internals moved: say so rather than guess
        return {"path": path, "warm": "unknown (numba's cache index is not readable)"}
    return {"path": path, "warm": warm}


def _cached_signatures(dispatcher: Any) -> list[Any]:
    """Signatures of `dispatcher` in numba's on-disk index that fit this machine (numba's private cache API)."""
    cache = dispatcher._cache
    magic = dispatcher.targetctx.codegen().magic_tuple()
    code = cache._index_key((), dispatcher.targetctx.codegen())[2]
    return [key[0] for key in cache._cache_file._load_index() if key[1] == magic and key[2] == code]


@contextmanager
def _cache_lock(folder: str) -> Iterator[None]:
    """An exclusive lock on a file in the cache folder (none where fcntl is missing or the folder is not ours)."""
    try:
        import fcntl

        os.makedirs(folder, exist_ok=True)
        handle = open(os.path.join(folder, "flowprep-tvl1.lock"), "a")
    except (ImportError, OSError):
        yield
        return
    with handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


@functools.cache
def ensure_compiled() -> None:
    """Compile (or load from the disk cache) every kernel, once per process, one process at a time per cache.
    (Threads whose first calls meet both run it: the second waits on the lock, then finds the kernels loaded.)"""
    module = _kernels()
    with _cache_lock(module._iterate._cache.cache_path):
        tiny = np.zeros((16, 16), np.uint8)
        module.tvl1_flow(tiny, tiny, {**OpenCVTVL1.defaults, "nscales": 1, "warps": 1, "inner_iterations": 1,
                                      "outer_iterations": 1})


class NumbaTVL1(FlowBackend):
    """Dual TV-L1, OpenCV's scheme, parameters and defaults, fused numba kernels; within 0.01 px of OpenCV's."""

    algo = "tvl1"
    description = "Dual TV-L1, flowprep's own (OpenCV's scheme and defaults), fused numba kernels, CPU, one thread"
    defaults: ClassVar[Mapping[str, Any]] = OpenCVTVL1.defaults
    presets: ClassVar[Mapping[str, Mapping[str, Any]]] = OpenCVTVL1.presets  # the same names and values
    check_params = OpenCVTVL1.check_params  # and the same checks

    @classmethod
    def availability(cls, device: str) -> str | None:
        try:
            _kernels()
        except ImportError as exc:
            return f"numba, a dependency of flowprep, cannot be imported ({exc}): pip install --force-reinstall numba"
        return None

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        # One thread per process, whatever --jobs says (the kernels run on the calling thread; OpenCV's resize,
        # remap and median are too small per call for its thread pool to pay): --jobs N workers use N cores.
        self.limit_threads()
        ensure_compiled()
        self._solve = _kernels().tvl1_flow

    def compute(self, prev: np.ndarray, nxt: np.ndarray) -> np.ndarray:
        if prev.shape != nxt.shape or prev.ndim != 2 or prev.dtype != np.uint8 or nxt.dtype != np.uint8:
            raise ValueError(f"frames must be gray uint8 HxW of the same size, got {prev.shape} {prev.dtype} and "
                             f"{nxt.shape} {nxt.dtype}")
        if min(prev.shape) < 3:
            raise ValueError(f"frames must be at least 3x3 pixels, got {prev.shape[1]}x{prev.shape[0]}")
        return self._solve(prev, nxt, self.params)

    @classmethod
    def describe_implementation(cls, device: str, params: Mapping[str, Any], batch_size: int) -> dict[str, Any]:
        cache = cache_state()
        return {**_scheme(params), "threads": 1, "kernel_cache": cache["path"], "cache_warm": cache["warm"]}

    def implementation(self) -> dict[str, Any]:
        """For meta.json: the threads this process really runs, OpenCV's and numba's (0: numba started none)."""
        import numba
        from numba.np.ufunc import parallel

        numba_threads = numba.get_num_threads() if parallel._is_initialized else 0
        return {**_scheme(self.params), "opencv_threads": cv2.getNumThreads(), "numba_threads": numba_threads}

    def versions(self) -> dict[str, str]:
        import numba

        return {"numba": numba.__version__, "opencv": cv2.__version__}


def _scheme(params: Mapping[str, Any]) -> dict[str, str]:
    return {"iteration": "numba, one fused sweep",
            "median": "cv2.medianBlur" if params["median_filtering"] > 1 else "none"}
