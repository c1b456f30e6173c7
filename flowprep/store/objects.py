"""Outputs on an object store: a video is one object, its zip pack, uploaded whole once complete.

Nothing temporary is ever visible under the prefix: the pack is built in a local temporary file and uploaded in
one piece (a single PUT, or a multipart upload that s3fs aborts when a part fails; one a killed process leaves
open is invisible, and a bucket lifecycle rule, AbortIncompleteMultipartUpload, removes its parts). An object
that exists is complete; it holds meta.json like a local pack. No lock exists there: one run (or one shard of
one N) per prefix at a time.
"""
from __future__ import annotations

import errno
import json
import shutil
import tempfile
import zipfile
from pathlib import Path
from typing import Any

from ..errors import OutputError, StorageError
from .location import ObjectStore
from .meta import META_NAME, check_meta
from .naming import PACK_SUFFIX
from .writers import ZipWriter


def _store(url: str) -> tuple[Any, str]:
    store = ObjectStore(url)
    return store.filesystem(), store.key(url)


def _storage_error(url: str, what: str, exc: Exception) -> StorageError:
    # The store's fault (refused, gone, throttled past botocore's retries), not the video's: every later video
    # would fail the same way, so it stops the run as a full disk does (EIO is one of its errnos).
    return StorageError(f"{url}: cannot {what} ({type(exc).__name__}: {exc})", errno.EIO)


class ObjectZipWriter(ZipWriter):
    """The zip pack of the video whose output base is `base` (a URL), built in a local temporary file and
    uploaded whole as ``base.zip`` by commit()."""

    def __init__(self, base: str, durable: bool = True):
        # Not OutputWriter.__init__: that one makes the temporary a sibling of the final path, on the store here.
        self.base = base
        self.durable = durable
        self.final = base + PACK_SUFFIX
        self._folder = Path(tempfile.mkdtemp(prefix="flowprep-upload-"))
        self.temp = self._folder / Path(self.final).name
        self._done = False
        self._open()

    def commit(self, meta: dict[str, Any]) -> str:  # type: ignore[override]
        """Write meta.json last, close the pack and upload it whole, replacing an older object; its URL."""
        self.write(META_NAME, json.dumps(meta, indent=1, sort_keys=True).encode())
        self._close()
        fs, key = _store(self.final)
        try:
            fs.put_file(str(self.temp), key)
        except Exception as exc:  # noqa: BLE001 - any failure of the store; s3fs aborted a multipart upload
            raise _storage_error(self.final, "upload the pack", exc) from None
        finally:
            shutil.rmtree(self._folder, ignore_errors=True)
        self._done = True
        return self.final

    def abort(self) -> None:
        super().abort()
        shutil.rmtree(self._folder, ignore_errors=True)


def inspect_object(base: str) -> tuple[dict[str, Any] | None, str]:
    """(meta.json of the pack object ``base.zip``, or None; why an object there is not a finished pack, or "").
    Reads the zip's central directory and meta.json with range requests, not the whole object."""
    url = base + PACK_SUFFIX
    fs, key = _store(url)
    try:
        handle = fs.open(key, "rb", block_size=2**16)
    except FileNotFoundError:
        return None, ""
    except Exception as exc:  # noqa: BLE001
        raise _storage_error(url, "read", exc) from None
    try:
        with handle, zipfile.ZipFile(handle) as pack:
            meta = json.loads(pack.read(META_NAME))
        check_meta(meta, url)
        return meta, ""
    except (zipfile.BadZipFile, KeyError, ValueError, OutputError) as exc:
        return None, f"{url}: not a readable flowprep pack ({exc})"


def write_object(url: str, data: bytes) -> None:
    """Put `data` as the object `url`, whole (an object store has no partial object to protect against)."""
    fs, key = _store(url)
    try:
        fs.pipe_file(key, data)
    except Exception as exc:  # noqa: BLE001
        raise _storage_error(url, "write", exc) from None


def list_objects(pattern: str) -> list[str]:
    """The URLs of the objects that match `pattern` (a URL with * wildcards)."""
    fs, key = _store(pattern)
    protocol = pattern.split("://", 1)[0]
    try:
        return [f"{protocol}://{found}" for found in fs.glob(key)]
    except Exception as exc:  # noqa: BLE001
        raise _storage_error(pattern, "list", exc) from None


def list_tags(prefix: str) -> dict[str, str | None]:
    """{name relative to the prefix URL `prefix` ('/'-separated): its object_tag} of every object under it, from
    one recursive listing (on S3 one request per 1000 keys); {} when there is none. The listing is not kept in
    the client's cache (a million keys' details would stay in memory)."""
    fs, key = _store(prefix)
    key = key.rstrip("/")
    try:
        found = fs.find(key, detail=True)
    except FileNotFoundError:
        return {}
    except Exception as exc:  # noqa: BLE001
        raise _storage_error(prefix, "list", exc) from None
    finally:
        fs.invalidate_cache(key)
    start = len(key) + 1
    return {path[start:]: object_tag(info) for path, info in found.items() if path.startswith(key + "/")}


def head_tag(url: str) -> str | None:
    """The object_tag of the object `url` as it is now (one HEAD request); StorageError when the store fails."""
    fs, key = _store(url)
    try:
        return object_tag(fs.info(key))
    except Exception as exc:  # noqa: BLE001
        raise _storage_error(url, "read", exc) from None


def object_tag(info: dict[str, Any]) -> str | None:
    """What names one version of an object's content, from a listing's or a HEAD's details alike: its size and
    ETag (S3, Azure; on S3 the content's MD5 for a single PUT, one per content for a multipart upload too) or
    generation (GCS); None when the store gives neither (such an object is never vouched for by a tag)."""
    for field in ("ETag", "etag", "generation"):
        value = str(info.get(field) or "").strip('"')
        if value:
            return f"{info.get('size')}:{value}"
    return None


def remove_object(url: str) -> None:
    """Remove the object `url` if it is there."""
    fs, key = _store(url)
    try:
        fs.rm_file(key)
    except FileNotFoundError:
        pass
    except Exception as exc:  # noqa: BLE001
        raise _storage_error(url, "remove", exc) from None
