"""The run's own locks on an output root: one run of a video list at a time, shards side by side, a shard once."""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path

from ..errors import ConfigError
from .shards import Shard
from .stopping import refuse_to_start
from .video import VideoJob

LOCK_NAME = ".flowprep.lock"


@contextmanager
def hold_run_locks(out_root: Path, shard: Shard, jobs: Sequence[VideoJob]) -> Iterator[None]:
    """Hold advisory locks on `out_root` so that two runs never process the same videos at once.

    A run of the whole list holds .flowprep.lock exclusively; a shard holds it shared (shards run side by side)
    and its own .flowprep.shard-K-of-N.lock exclusively (the same shard never runs twice). flock locks die
    with their process, so a killed run never blocks the next one. Shards do not rely on these locks to keep
    off each other's work (they share no video, no temporary and no record file): on file systems whose flock
    is local to each machine, only running the same shard twice at once goes unnoticed. `jobs` are named as not
    processed when the lock file cannot be created (see refuse_to_start).
    """
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock, one run at a time is the user's job
        yield
        return
    names = [(LOCK_NAME, fcntl.LOCK_EX if shard.count == 1 else fcntl.LOCK_SH)]
    if shard.count > 1:
        names.append((f".flowprep.{shard.tag}.lock", fcntl.LOCK_EX))
    with ExitStack() as locks:
        for name, mode in names:
            try:
                lock = locks.enter_context(open(out_root / name, "a+"))
            except OSError as exc:
                refuse_to_start(exc, jobs, out_root, f"cannot create {out_root / name} (the run's lock)")
            try:
                fcntl.flock(lock, mode | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = ("a run of this shard" if mode == fcntl.LOCK_EX and shard.count > 1
                          else "a run of the whole list" if shard.count > 1 else "another flowprep run")
                raise ConfigError(f"{holder} is writing into {str(out_root)!r} (it holds {out_root / name}); "
                                  "wait for it or stop it first") from None
        yield
