"""Per-video writers (a directory or an uncompressed zip) that commit atomically, meta.json last."""
from __future__ import annotations

import errno
import json
import os
import shutil
import zipfile
from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import OutputError, StorageError
from .atomic import fsync_directory, remove_path, replace_path, storage_errors, write_bytes, temp_path
from .location import is_url
from .meta import META_NAME
from .naming import other_pack, output_path
from .outputs import finished_meta, inspect_output, not_ours_message


class OutputWriter(ABC):
    """Writes one video's files into a temporary and commits them atomically; aborts on error.

    `durable`: every file (or the zip) is fsync'ed, then the temporary directory, and after the rename the
    parent directory, so that a committed output survives a power cut, not only a killed process.
    """

    pack: str  # the form this writer writes: "dir" or "zip"
    # Called right before the rename into place: a reason not to commit ("" to go on), e.g. a lost mount.
    commit_check: Callable[[], str] | None = None

    def __init__(self, base: Path, durable: bool = True):
        self.base = base
        self.durable = durable
        self.final = output_path(base, self.pack)
        self.temp = temp_path(self.final)
        self._done = False
        with storage_errors(self.temp):
            self.final.parent.mkdir(parents=True, exist_ok=True)
            self._open()

    def write(self, name: str, data: bytes) -> None:
        """Add file `name`; StorageError naming it when the file system refuses (full, read-only, gone)."""
        with storage_errors(self.temp / name):
            self._write(name, data)

    @abstractmethod
    def _open(self) -> None:
        """Create the temporary."""

    @abstractmethod
    def _write(self, name: str, data: bytes) -> None: ...

    @abstractmethod
    def _close(self) -> None: ...

    def _sync(self) -> None:
        """On commit, after _close, when durable: make durable what is not yet (a zip fsyncs in _close)."""

    def commit(self, meta: dict[str, Any]) -> Path:
        """Write meta.json last, then move the output into place, replacing an older one.

        A finished output of the other form goes first: a video has one output (readers would prefer a stale
        directory), and a crash between the two steps leaves no finished output rather than two.
        """
        self.write(META_NAME, json.dumps(meta, indent=1, sort_keys=True).encode())
        with storage_errors(self.temp):
            self._close()
            self._sync()
        self._check_complete()
        there, broken = inspect_output(self.base, self.pack)
        if there is None and broken:  # put there while this video was computed: not flowprep's to replace
            raise OutputError(not_ours_message(self.final, broken))
        other = other_pack(self.pack)
        if finished_meta(self.base, other) is not None:
            other_final = output_path(self.base, other)
            try:
                shutil.rmtree(other_final) if other == "dir" else other_final.unlink()
            except OSError as exc:
                raise OutputError(f"{other_final}: cannot remove this video's {other!r} output before writing its "
                                  f"{self.pack!r} one ({exc.strerror or exc})") from None
        lost = self.commit_check() if self.commit_check is not None else ""
        if lost:  # e.g. the output's file system was unmounted while the video was computed
            raise StorageError(lost, errno.ENODEV)
        with storage_errors(self.final):
            replace_path(self.temp, self.final)
            if self.durable:
                fsync_directory(self.final.parent)
        self._done = True
        return self.final

    def _check_complete(self) -> None:
        """OutputError if the temporary lost files: another run's cleanup removed them while we wrote."""

    def abort(self) -> None:
        if not self._done:
            self._done = True
            try:
                self._close()
            except OSError:  # a zip's central directory on a full disk: the temporary goes anyway
                pass
            remove_path(self.temp)

    def __enter__(self) -> OutputWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.abort()


class DirectoryWriter(OutputWriter):
    pack = "dir"

    def _open(self) -> None:
        self.temp.mkdir()
        self._written: set[str] = set()

    def _write(self, name: str, data: bytes) -> None:
        write_bytes(self.temp / name, data, self.durable)
        self._written.add(name)

    def _check_complete(self) -> None:
        # A worker orphaned by a killed run can race the next run's clean-up of temporaries: never rename a
        # directory whose files were deleted under it into a place where it looks finished.
        missing = self._written - set(os.listdir(self.temp))
        if missing:
            raise OutputError(f"{self.temp}: {len(missing)} written file(s) vanished before the commit "
                              f"(e.g. {sorted(missing)[0]}); was another flowprep run cleaning this tree?")

    def _close(self) -> None:
        pass

    def _sync(self) -> None:
        if self.durable:  # the files were fsync'ed as written; their names live in the folder
            fsync_directory(self.temp)


class ZipWriter(OutputWriter):
    """Uncompressed zip: JPEGs do not compress, and stored members can be read without inflating."""

    pack = "zip"

    _zip: zipfile.ZipFile | None = None

    def _open(self) -> None:
        self._file = open(self.temp, "wb")
        try:
            self._zip = zipfile.ZipFile(self._file, "w", zipfile.ZIP_STORED)
        except BaseException:
            self._file.close()
            raise

    def _write(self, name: str, data: bytes) -> None:
        # A fixed timestamp keeps packs of identical content byte-identical across runs.
        self._zip.writestr(zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0)), data)

    def _close(self) -> None:
        if self._zip is not None:
            zip_file, self._zip = self._zip, None
            try:
                zip_file.close()  # the central directory
                if self.durable:
                    self._file.flush()
                    os.fsync(self._file.fileno())
            finally:
                self._file.close()


def open_writer(base: str | os.PathLike, pack: str = "dir", durable: bool = True) -> OutputWriter:
    """A writer for the output of form `pack` ('dir' or 'zip') at `base`; commit() puts it in place, fsync'ed
    to the disk first unless not `durable` (see OutputWriter). On an object store (`base` a URL) a zip pack,
    uploaded whole (see store.objects; `durable` is the store's there)."""
    if is_url(base):
        from .objects import ObjectZipWriter  # imports this module

        return ObjectZipWriter(str(base))
    return ZipWriter(Path(base), durable) if pack == "zip" else DirectoryWriter(Path(base), durable)
