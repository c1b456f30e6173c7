"""Where a run writes: a local folder (the run's locks, temporaries, the file system's identity) or an object
store's prefix (whole objects only). run_batch does the same with either; what differs is here."""
from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

from ..errors import ConfigError, StorageError
from ..store import ObjectStore, output_name, remove_temps_of_outputs, write_file_atomic
from ..store.objects import list_objects, remove_object, write_object
from .locks import hold_run_locks
from .reports import REPORT_NAME, record_names
from .shards import Shard
from .stopping import refuse_to_start
from .video import VideoJob, root_problem


class LocalRoot:
    """A folder: created if need be, held with the run's locks, its stale records and the temporaries that
    killed runs left of this run's videos removed first; workers check it is still the file system it was."""

    def __init__(self, path: Path, jobs: Sequence[VideoJob], shard: Shard, pack: str, engine: str):
        self.path, self.shard = path, shard
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            refuse_to_start(exc, jobs, path, f"cannot create the output folder {str(path)!r}")
        self.root = VideoJob("", "", str(path), os.stat(path).st_dev)  # checked before the records are written
        if engine == "local":  # remote workers see other device numbers for the same shared file system
            jobs = [replace(job, root_device=_device(job.root)) if job.root else job for job in jobs]
        self.jobs = list(jobs)
        self._own = [output_name(job.output, pack) for job in self.jobs] + [
            str(path / name) for name in record_names(shard)]

    @contextmanager
    def session(self) -> Iterator[None]:
        with hold_run_locks(self.path, self.shard, self.jobs):
            # The report says "this run finished"; a stale one must not vouch for a run that gets killed (nor the
            # whole tree's, which no shard can vouch for: no run of the whole list runs beside shards).
            (self.path / record_names(self.shard)[1]).unlink(missing_ok=True)
            (self.path / REPORT_NAME).unlink(missing_ok=True)
            if self.shard.count == 1:  # no shard runs beside a run of the whole list: their records are stale now
                for stale in (*self.path.glob("report.shard-*.json"), *self.path.glob("failures.shard-*.jsonl")):
                    stale.unlink(missing_ok=True)
            self.clean()
            yield

    def clean(self) -> None:
        """Remove what killed or stopped workers left of this run's outputs and records (not what others hold)."""
        remove_temps_of_outputs(self._own)

    def lost(self) -> str:
        return root_problem(self.root)

    def put(self, name: str, content: bytes, durable: bool) -> None:
        write_file_atomic(self.path / name, content, durable)


class ObjectRoot:
    """An object-store prefix: no lock exists there (run one run, or the shards of one N, per prefix at a time),
    and nothing temporary is ever visible (a pack is uploaded whole), so there is nothing to clean; stale
    report objects are removed first."""

    def __init__(self, store: ObjectStore, jobs: Sequence[VideoJob], shard: Shard, pack: str):
        if pack != "zip":
            raise ConfigError(f"{store.url!r} is an object store: write it with --pack zip (one object per video, "
                              "uploaded whole once complete); a folder of objects per video cannot appear at once")
        self.path, self.shard, self.jobs = store, shard, list(jobs)

    @contextmanager
    def session(self) -> Iterator[None]:
        try:
            stale = [record_names(self.shard)[1], REPORT_NAME]
            if self.shard.count == 1:
                stale += [url.rsplit("/", 1)[1] for pattern in ("report.shard-*.json", "failures.shard-*.jsonl")
                          for url in list_objects(self.path.join(pattern))]
            for name in stale:
                remove_object(self.path.join(name))
        except StorageError as exc:
            refuse_to_start(exc, self.jobs, self.path, f"cannot clear the stale reports under {self.path.url!r}")
        yield

    def clean(self) -> None:
        pass

    def lost(self) -> str:
        return ""

    def put(self, name: str, content: bytes, durable: bool) -> None:
        write_object(self.path.join(name), content)


def _device(path: str) -> int | None:
    try:
        return os.stat(path).st_dev
    except OSError:  # checked again, and reported, by each worker
        return None
