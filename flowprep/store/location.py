"""Where outputs live: local paths (a mounted shared file system included).

Object-store URLs (``s3://``, ``gs://``, ``az://`` ...) are recognised so that they are refused before any work,
not taken for a relative folder named ``s3:`` (which a run silently created before, writing nothing to the
bucket).
"""
from __future__ import annotations

import os
import re
from pathlib import Path

from ..errors import ConfigError

_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")


def is_url(location: str | os.PathLike) -> bool:
    """Whether `location` is a URL (``scheme://...``) rather than a path."""
    return isinstance(location, str) and _URL.match(location) is not None


def require_local(location: str | os.PathLike, what: str) -> Path:
    """`location` as a Path; ConfigError naming `what` and the URL when it is one."""
    if is_url(location):
        raise ConfigError(f"{what} {location!r} is a URL: flowprep reads and writes local paths only (a bucket "
                          "mounted as a folder, e.g. with s3fs-fuse or gcsfuse, is one); object stores are not "
                          "supported yet")
    return Path(location)
