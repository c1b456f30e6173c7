"""Exception types. Every message names the file or value at fault."""
from __future__ import annotations

import importlib
from types import ModuleType


class FlowprepError(Exception):
    """Base class of flowprep's own errors."""


class ConfigError(FlowprepError, ValueError):
    """A setting has a bad value (the message quotes it)."""


class DecodeError(FlowprepError):
    """A video could not be opened or read."""


class VideoTooShortError(DecodeError):
    """A video decoded fine but gave fewer than two frames: no reader would do better."""


class OutputError(FlowprepError):
    """An output tree, directory, zip pack or meta.json is missing, incomplete or corrupt."""


class StorageError(OutputError):
    """Writing an output failed in the file system (full, over quota, read-only, gone); `errno` says which."""

    def __init__(self, message: str, errno: int | None):
        super().__init__(message)
        self.errno = errno


class BackendUnavailableError(FlowprepError):
    """A flow backend cannot run here (missing package, device or hardware)."""


class MissingDependencyError(FlowprepError, ImportError):
    """An optional package is not installed; the message names the extra that provides it."""


def require(module: str, extra: str, purpose: str) -> ModuleType:
    """Import an optional dependency or raise MissingDependencyError with the install hint."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingDependencyError(
            f"{purpose} needs the '{module}' package, which is not installed: "
            f"pip install 'flowprep[{extra}]' ({exc})"
        ) from exc
