"""Where outputs live: a local path (a mounted shared file system included), or an object store's URL
(``s3://bucket/prefix``, ``gs://...``, ``az://...``), reached through fsspec with the standard credentials and
endpoint settings of its package (for S3: the AWS_* variables, AWS_ENDPOINT_URL, ``~/.aws``; fsspec's config).

A URL is never taken for a relative folder named ``s3:`` (which a run silently created before). Commands that do
not read object stores yet refuse URLs by name (require_local).
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ConfigError

_URL = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*)://")
# fsspec protocol -> flowprep's extra that installs its package
EXTRAS = {"s3": "s3", "s3a": "s3", "gs": "gcs", "gcs": "gcs", "az": "azure", "abfs": "azure", "abfss": "azure"}


def is_url(location: str | os.PathLike) -> bool:
    """Whether `location` is a URL (``scheme://...``) rather than a path."""
    return isinstance(location, str) and _URL.match(location) is not None


def require_local(location: str | os.PathLike, what: str) -> Path:
    """`location` as a Path; ConfigError naming `what` and the URL when it is one."""
    if is_url(location):
        raise ConfigError(f"{what} {location!r} is a URL: this command reads and writes local paths only (a bucket "
                          "mounted as a folder, e.g. with s3fs-fuse or gcsfuse, is one); `flowprep extract` writes "
                          "to object stores")
    return Path(location)


@dataclass(frozen=True)
class ObjectStore:
    """An object-store prefix, e.g. ``s3://bucket/flow``; picklable (workers open their own client)."""

    url: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "url", self.url.rstrip("/"))
        self.filesystem()  # the package is there and the protocol known: a usage error before any work

    def __str__(self) -> str:
        return self.url

    @property
    def protocol(self) -> str:
        return _URL.match(self.url).group(1).lower()

    def filesystem(self) -> Any:
        """The fsspec file system (fsspec caches one per process and options, and a forked child opens its own)."""
        try:
            import fsspec
        except ImportError:
            raise ConfigError(f"{self.url!r}: object stores need fsspec and the store's package: "
                              f"pip install 'flowprep[{EXTRAS.get(self.protocol, 's3')}]'") from None
        try:
            return fsspec.filesystem(self.protocol)
        except ImportError as exc:
            extra = EXTRAS.get(self.protocol)
            hint = f": pip install 'flowprep[{extra}]'" if extra else ""
            raise ConfigError(f"{self.url!r}: {exc}{hint}") from None
        except ValueError as exc:  # fsspec does not know the protocol
            raise ConfigError(f"{self.url!r}: {exc}") from None

    def key(self, url: str) -> str:
        """The file system's path of `url` (``bucket/prefix/name``), for fsspec calls."""
        return url.split("://", 1)[1]

    def join(self, *parts: str) -> str:
        """The URL of `parts` ('/'-separated names) under this prefix."""
        return "/".join([self.url, *(part.strip("/") for part in parts)])


def parse_location(location: str | os.PathLike) -> Path | ObjectStore:
    """A local Path, or an ObjectStore for a URL (ConfigError naming a missing package or an unknown protocol)."""
    return ObjectStore(location) if is_url(location) else Path(location)
