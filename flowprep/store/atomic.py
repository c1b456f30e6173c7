"""Temporaries, per-output locks and atomic replacement: nothing half-written is ever visible under a final name.

A video's output is written under a hidden sibling temporary name (temp_path) while its writer holds the
output's lock (output_lock), and moved into place only once complete.
"""
from __future__ import annotations

import os
import re
import shutil
import socket
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from ..errors import StorageError
from .location import is_url

TEMP_MARKER = ".flowprep-tmp-"
LOCK_SUFFIX = ".flowprep-lock"  # ".NAME.flowprep-lock": the lock of output NAME while a run writes it


def temp_path(final: Path) -> Path:
    """A fresh hidden sibling name for `final`'s temporary, naming its owner (host and process id), so that
    a look at a shared tree says who is writing what: ``.NAME.flowprep-tmp-HOST-PID-XXXXXXXX``."""
    return final.with_name(f".{final.name}{TEMP_MARKER}{_OWNER}-{os.getpid()}-{uuid.uuid4().hex[:8]}")


_OWNER = re.sub(r"[^A-Za-z0-9.]+", "_", socket.gethostname()) or "host"


def is_temporary(name: str) -> bool:
    """Whether a file or folder name is one of temp_path's."""
    return name.startswith(".") and TEMP_MARKER in name


def remove_temps_of_outputs(finals: Iterable[str | os.PathLike]) -> list[Path]:
    """Delete the temporaries and lock files that killed processes left of these outputs (directory or .zip
    paths), and nothing else: not those of an output whose lock another run holds (it is writing them: see
    output_lock); returns the temporaries removed. Each parent folder is listed once, whatever the number of
    outputs in it, and outputs are not entered: the cost grows with the folders' entries, not with the files
    inside the outputs."""
    by_folder: dict[str, set[str]] = {}
    for final in finals:
        folder, name = os.path.split(os.fspath(final))
        by_folder.setdefault(folder, set()).add(name)
    removed = []
    for folder, names in by_folder.items():
        try:
            entries = [entry.name for entry in os.scandir(folder or ".")]
        except OSError:  # not created yet, or gone: nothing of ours in it
            continue
        temps: dict[str, list[str]] = {}
        for entry in entries:
            if is_temporary(entry) and (name := entry[1:entry.index(TEMP_MARKER)]) in names:
                temps.setdefault(name, []).append(entry)
            elif entry.startswith(".") and entry.endswith(LOCK_SUFFIX) and entry[1:-len(LOCK_SUFFIX)] in names:
                temps.setdefault(entry[1:-len(LOCK_SUFFIX)], [])  # taking the lock removes its file
        for name, entries_of_name in temps.items():
            with output_lock(Path(folder) / name) as held:
                if held:
                    removed += [remove_path(Path(folder) / entry) for entry in entries_of_name]
    return removed


def lock_path(final: str | os.PathLike) -> Path:
    """The lock file of output `final` (a directory or .zip path): ``.NAME.flowprep-lock`` beside it."""
    final = Path(final)
    return final.with_name(f".{final.name}{LOCK_SUFFIX}")


@contextmanager
def output_lock(final: str | os.PathLike) -> Iterator[bool]:
    """Hold the exclusive lock of output `final` while the block runs; yields False, holding nothing, when another
    process holds it (it is writing that output). Every run writing an output holds its lock, whatever its shard
    or output root, so two never work on one video at once.

    The lock is an flock on lock_path(final), created here and unlinked before it is released, so finished trees
    keep no lock files (a killed holder leaves one; its lock died with it). A lock taken on a file unlinked
    meanwhile is no lock: the file is opened again until the one locked is the one at the path. StorageError
    (with the errno) when the lock file cannot be created. Where flock does not exist (not POSIX), and on object
    stores (`final` a URL: see store.objects), it yields True.
    """
    try:
        import fcntl
    except ImportError:
        fcntl = None
    if fcntl is None or is_url(final):
        yield True
        return
    path = lock_path(final)
    while True:
        with storage_errors(path):
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            yield False
            return
        try:
            if os.stat(path).st_ino == os.fstat(fd).st_ino:
                break
        except FileNotFoundError:
            pass
        os.close(fd)
    try:
        yield True
    finally:
        try:
            os.unlink(path)
        except OSError:  # a vanished file system: the lock dies with the descriptor all the same
            pass
        os.close(fd)


def remove_path(path: Path) -> Path:
    shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)
    return path


@contextmanager
def storage_errors(path: Path) -> Iterator[None]:
    """OSError -> StorageError naming `path` (the write's target) and keeping the errno."""
    try:
        yield
    except OSError as exc:
        raise StorageError(f"{path}: cannot write ({exc.strerror or exc})", exc.errno) from None


def write_file_atomic(path: Path, data: bytes, durable: bool = True) -> None:
    """Replace file `path` by `data` through a temporary sibling, never leaving a partial file under its name nor
    the temporary (OSError as raised). `durable`: fsync the file, and the folder after the rename."""
    temp = temp_path(path)
    try:
        write_bytes(temp, data, durable)
        os.replace(temp, path)
    except OSError:
        temp.unlink(missing_ok=True)
        raise
    if durable:
        fsync_directory(path.parent)


def write_bytes(path: Path, data: bytes, durable: bool) -> None:
    """Write file `path`; `durable`: fsync it before returning."""
    with open(path, "wb") as f:
        f.write(data)
        if durable:
            f.flush()
            os.fsync(f.fileno())


def fsync_directory(path: Path) -> None:
    """Make a directory's entries (files created or renamed in it) durable; a no-op where directories cannot be
    opened (Windows)."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except (PermissionError, IsADirectoryError):
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def replace_path(temp: Path, final: Path) -> None:
    if final.is_dir():
        # A directory cannot be renamed over a non-empty one: move the old one aside first.
        trash = temp_path(final)
        os.rename(final, trash)
        os.rename(temp, final)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        os.replace(temp, final)
