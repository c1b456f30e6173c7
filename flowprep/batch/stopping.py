"""How a run ends early: the output storage (or an object-store input) fails (BatchStopped, exit 3), or Ctrl-C or
SIGTERM stops it (BatchInterrupted, exit 130 or 143)."""
from __future__ import annotations

import errno
import os
import signal
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NoReturn

from ..errors import ConfigError, StorageError
from ..source import stopped_by_input
from ..store import ObjectStore
from .reports import BatchReport, interruption
from .video import STOPPING_ERRNOS, VideoJob

EXIT_STOPPED = 3  # the CLI's exit code when the run stopped because the output storage (or the input's store) failed
EXIT_INTERRUPTED = 130  # ... when Ctrl-C (SIGINT) stopped it, as shells report a process that SIGINT ended
EXIT_TERMINATED = 143  # ... when SIGTERM stopped it (128 + 15, likewise)


class BatchStopped(StorageError):
    """The output storage failed (full, over quota, read-only, gone), or the object store of the input did (gone,
    refusing): run_batch stopped, after cleanup.

    `report` holds what was finished until then; the message says where, how many videos are finished and that
    a rerun resumes.
    """

    def __init__(self, report: BatchReport, out_root: Path | ObjectStore, problem: str):
        finished = report.done + report.skipped
        counts = (f"{finished} of {report.total} videos are finished ({report.done} by this run), "
                  f"{len(report.not_processed)} not processed, {report.failed} failed. Finished videos are kept; ")
        if stopped_by_input(problem):  # the problem says so, and names the URL
            message = (f"stopped, {problem}. {counts}fix that (the store, the network, the credentials, TMPDIR's "
                       "space) and rerun the same command to resume.")
        elif isinstance(out_root, ObjectStore):
            message = (f"stopped, the output object store {out_root.url} refused a request: {problem}. {counts}"
                       "fix what it refused (permissions, request rate, the endpoint) and rerun the same command to "
                       "resume.")
        else:
            message = (f"stopped, the output file system refused a write: {problem}. "
                       f"File system: {_file_system(out_root)}. {counts}"
                       "free space (or fix the mount) and rerun the same command to resume.")
        super().__init__(message, None)
        self.report = report


def _file_system(path: Path) -> str:
    """The mount point holding `path` (its nearest existing ancestor) and its free space, for messages."""
    path = path.absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    try:
        device = path.stat().st_dev
        while path != path.parent and path.parent.stat().st_dev == device:
            path = path.parent
        fs = os.statvfs(path)
    except OSError as exc:
        return f"{path} (unreadable: {exc.strerror or exc})"
    space = f"{fs.f_bavail * fs.f_frsize / 1e6:.1f} MB free of {fs.f_blocks * fs.f_frsize / 1e6:.1f} MB"
    if fs.f_files:  # file systems without an inode table (btrfs, some network ones) report 0
        space += f", {fs.f_favail} of {fs.f_files} inodes (files) free" + (
            ": no file can be created, whatever the free space" if fs.f_favail == 0 else "")
    return f"{path} ({space})"


class BatchInterrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM during run_batch, after cleanup; `report` holds what was finished until then, and
    report.interrupted the signal's name."""

    def __init__(self, report: BatchReport):
        super().__init__(f"batch {interruption(report.interrupted)}")
        self.report = report


class Terminated(KeyboardInterrupt):
    """Raised in the main thread by SIGTERM while run_batch runs (SLURM's time limit and scancel, docker stop,
    systemd, kill): the run stops as on Ctrl-C."""


@contextmanager
def sigterm_stops_the_run() -> Iterator[threading.Event]:
    """While the block runs in the main thread, SIGTERM raises Terminated (once: a second SIGTERM during the
    cleanup is ignored, so that the cleanup finishes before SIGKILL comes); the former handler is restored after.
    Elsewhere (a thread, where Python cannot install handlers) SIGTERM keeps its action.

    The Event yielded is set once SIGTERM came: a wait inside a library may turn the Terminated into a plain
    KeyboardInterrupt (Ray's ray.wait does), and the run must still say SIGTERM (exit 143), not Ctrl-C."""
    received = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield received
        return

    def handler(signum: int, frame: Any) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        received.set()
        raise Terminated("SIGTERM")

    former = signal.signal(signal.SIGTERM, handler)
    try:
        yield received
    finally:
        signal.signal(signal.SIGTERM, former)


def refuse_to_start(exc: OSError | StorageError, jobs: Sequence[VideoJob], out_root: Path | ObjectStore,
                    what: str) -> NoReturn:
    """Raise for a run that cannot begin: BatchStopped when the storage is at fault (full, out of inodes, over
    quota, gone, an object store that refuses: a rerun once it is fixed does the job), ConfigError otherwise (a
    bad path, or a read-only one: an output that was never writable is the command's mistake)."""
    if exc.errno in STOPPING_ERRNOS and exc.errno != errno.EROFS:
        problem = f"{what}: {getattr(exc, 'strerror', None) or exc}"
        report = BatchReport(total=len(jobs), stopped=problem)
        report.note_unprocessed(jobs, set())
        raise BatchStopped(report, out_root, problem) from None
    raise ConfigError(f"{what}: {getattr(exc, 'strerror', None) or exc}") from None
