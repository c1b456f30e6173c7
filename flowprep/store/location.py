"""Where videos and outputs live: a local path (a mounted shared file system included), or an object store's URL
(``s3://bucket/prefix``, ``gs://...``, ``az://...``), reached through fsspec with the standard credentials and
endpoint settings of its package (for S3: the AWS_* variables, AWS_ENDPOINT_URL, ``~/.aws``; fsspec's config),
plus the options a command is given (``--storage-option KEY=VALUE``: StorageOptions), which no message, log or
record ever shows.

A URL is never taken for a relative folder named ``s3:`` (which a run silently created before). Commands that do
not read object stores yet refuse URLs by name (require_local).
"""
from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Mapping
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
        except TypeError as exc:  # an option the file system does not take; its message could quote a value
            raise ConfigError(f"{self.url!r}: the {self.protocol} file system refuses the options it was given "
                              f"(--storage-option, fsspec's config): {type(exc).__name__}") from None

    def key(self, url: str) -> str:
        """The file system's path of `url` (``bucket/prefix/name``), for fsspec calls."""
        return url.split("://", 1)[1]

    def join(self, *parts: str) -> str:
        """The URL of `parts` ('/'-separated names) under this prefix."""
        return "/".join([self.url, *(part.strip("/") for part in parts)])


def parse_location(location: str | os.PathLike) -> Path | ObjectStore:
    """A local Path, or an ObjectStore for a URL (ConfigError naming a missing package or an unknown protocol)."""
    return ObjectStore(location) if is_url(location) else Path(location)


def object_path(url: str) -> tuple[Any, str]:
    """(the fsspec file system of `url`'s store, its path of `url`: ``bucket/prefix/name``), for fsspec calls."""
    store = ObjectStore(url)
    return store.filesystem(), store.key(url)


def as_location(location: str | os.PathLike) -> Path | str:
    """A local Path, or an object store's URL as a str (its ObjectStore's, without a trailing '/'): Path would
    make 's3://b/flow' 's3:/b/flow'. ConfigError naming a missing package or an unknown protocol."""
    return str(ObjectStore(location)) if is_url(location) else Path(location)


def parse_storage_options(items: Iterable[str]) -> dict[str, Any]:
    """{key: value} of ``KEY=VALUE`` items; a value that parses as JSON is that (``true``, ``3``, ``{"a": 1}``),
    any other is the string. ConfigError for an item without a key, naming its position, never its text (a
    mistyped item may be a secret)."""
    options = {}
    for number, item in enumerate(items, 1):
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--storage-option number {number} is not KEY=VALUE (not shown: it may hold a secret)")
        try:
            options[key.strip()] = json.loads(value)
        except ValueError:
            options[key.strip()] = value
    return options


@dataclass(frozen=True, repr=False)
class StorageOptions:
    """fsspec options (credentials, endpoint, ...) for the object stores of one command, by their protocols.

    apply() puts them into fsspec's process-wide config (``fsspec.config.conf[protocol]``), which
    ``fsspec.filesystem(protocol)`` merges, so every ObjectStore of the process uses them. Picklable and small,
    they travel to every worker with its task (local processes, Dask, Ray), which applies them again: workers are
    other processes, often on other machines. repr() shows the keys, never a value.
    """

    protocols: tuple[str, ...] = ()
    items: tuple[tuple[str, str], ...] = ()  # (key, the value as JSON): hashable, frozen

    @classmethod
    def of(cls, options: Mapping[str, Any], locations: Iterable[str | os.PathLike]) -> StorageOptions:
        """`options` for the protocols of the URLs among `locations` (a command's input and output); ConfigError
        when there are options but no URL."""
        protocols = tuple(sorted({_URL.match(str(loc)).group(1).lower() for loc in locations if is_url(loc)}))
        if options and not protocols:
            raise ConfigError("--storage-option applies to object stores' URLs, and this command has none")
        return cls(protocols, tuple((key, json.dumps(value)) for key, value in options.items()))

    def __bool__(self) -> bool:
        return bool(self.items)

    def __repr__(self) -> str:
        return f"StorageOptions({', '.join(self.protocols)}: {', '.join(key for key, _ in self.items)})"

    def apply(self) -> None:
        """Make these options this process's defaults for their protocols (explicit arguments still win)."""
        if not self:
            return
        import fsspec.config

        for protocol in self.protocols:
            fsspec.config.conf.setdefault(protocol, {}).update((key, json.loads(value)) for key, value in self.items)
