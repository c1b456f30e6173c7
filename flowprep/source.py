"""Input videos: a local file, or an object's URL (``s3://bucket/videos/a.mp4``) that the worker downloads into a
local temporary file for the decoders (which read local files) and removes again; and the stamp meta.json records
of either (size and modification time: resume notices a changed source by it).

What goes wrong reading an object is the video's fault when it concerns that object (missing, access denied: it
fails alone, named) and the store's otherwise (unreachable, throttling past the client's retries, server errors,
no credentials; or a full TMPDIR): every later video would fail the same way, so the run stops as for a full
disk.
"""
from __future__ import annotations

import errno
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .decode import check_video_file
from .errors import DecodeError, StorageError
from .store.location import is_url, object_path
from .store.objects import object_stamp

# The beginning of a stopped run's reason when reading the input failed (not the output): messages say which.
INPUT_FAILED = "reading the input failed: "
# Errors about one object: the video fails alone. Any other error of the store stops the run.
OBJECT_ERRORS = (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError)
# A download's errors that are TMPDIR's, not the store's.
LOCAL_DISK_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS)


@dataclass(frozen=True)
class LocalVideo:
    """A video ready for the decoders: `path`, the local file they open (the source itself, or its download);
    `name`, the source as messages name it (its path as given, or its URL); `stamp`, meta.json's source_file."""

    path: Path
    name: str
    stamp: dict[str, int]

    def recorded(self) -> dict[str, Any]:
        """meta.json's source fields: the absolute path (or the URL) and the stamp."""
        return {"source": self.name if is_url(self.name) else str(self.path.resolve()), "source_file": self.stamp}


def stopped_by_input(reason: str) -> bool:
    """Whether a stopped run's `reason` is the input's failure (else the output storage's)."""
    return reason.startswith(INPUT_FAILED)


def source_stamp(source: str | os.PathLike, listed: tuple[int, int] | None = None) -> dict[str, int]:
    """meta.json's source_file for `source`: {"bytes": size, "mtime_ns": modification time}. `listed`: the
    object's (bytes, mtime_ns) from its listing, taken as they are (no request). OSError when the file or object
    is not there (or not readable); StorageError when the store fails."""
    if listed is not None:
        return {"bytes": listed[0], "mtime_ns": listed[1]}
    if not is_url(source):
        stat = os.stat(source)
        return {"bytes": stat.st_size, "mtime_ns": stat.st_mtime_ns}
    fs, key = object_path(source)
    try:
        size, mtime_ns = object_stamp(fs.info(key))
    except OBJECT_ERRORS:
        raise
    except Exception as exc:  # noqa: BLE001 - whatever the store raises: its client's own error types
        raise _store_failure(source, "ask the store about it", exc) from None
    return {"bytes": size, "mtime_ns": mtime_ns}


@contextmanager
def local_video(source: str | os.PathLike, listed: tuple[int, int] | None = None) -> Iterator[LocalVideo]:
    """`source` as a local file for the decoders, with its stamp (see source_stamp).

    A URL's object is downloaded, streamed to disk, into a folder of its own in TMPDIR, which is removed on
    leaving, whatever happens (a killed worker's stays in TMPDIR, never beside the source or the output). The
    stamp is taken before the download: an object replaced meanwhile is then noticed by the next resume.
    DecodeError naming the source when it is missing, empty, not a file or not readable; StorageError when the
    store fails.
    """
    if not is_url(source):
        check_video_file(source)
        yield LocalVideo(Path(source), str(source), source_stamp(source))
        return
    source = str(source)
    try:
        stamp = source_stamp(source, listed)
    except OBJECT_ERRORS as exc:
        raise _object_failure(source, exc) from None
    fs, key = object_path(source)
    folder = Path(tempfile.mkdtemp(prefix="flowprep-download-"))
    try:
        path = folder / (source.rsplit("/", 1)[1] or "video")  # the name's suffix helps the decoders guess
        try:
            fs.get_file(key, str(path))
        except OBJECT_ERRORS as exc:
            raise _object_failure(source, exc) from None
        except Exception as exc:  # noqa: BLE001 - the store's client's own error types, or a full TMPDIR
            local = getattr(exc, "errno", None) in LOCAL_DISK_ERRNOS
            raise _store_failure(source, f"download it into {folder.parent}" if local else "download it",
                                 exc) from None
        check_video_file(path, source)
        yield LocalVideo(path, source, stamp)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _object_failure(url: str, exc: OSError) -> DecodeError:
    """The video's own failure: its object is missing, or not readable with these credentials."""
    if isinstance(exc, FileNotFoundError):
        return DecodeError(f"{url}: no such object")
    return DecodeError(f"{url}: cannot read it ({type(exc).__name__}: {exc})")


def _store_failure(url: str, what: str, exc: Exception) -> StorageError:
    # EIO: a stopping errno (batch.video.STOPPING_ERRNOS), as the output store's failures are.
    return StorageError(f"{INPUT_FAILED}{url}: cannot {what} ({type(exc).__name__}: {exc})", errno.EIO)
