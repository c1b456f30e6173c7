"""Where a run writes: a local folder (the run's locks, temporaries, the file system's identity) or an object
store's prefix (whole objects only, found by one listing). run_batch does the same with either; what differs is
here."""
from __future__ import annotations

import fnmatch
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

from ..config import ExtractConfig
from ..errors import ConfigError, StorageError
from ..store import ObjectStore, output_name, remove_temps_of_outputs, write_file_atomic
from ..store.objects import list_tags, read_object, remove_object, write_object
from .index import INDEX_NAME, INDEX_PATTERN, decode_index, encode_index, index_name, vouched
from .locks import hold_run_locks
from .reports import BatchReport, REPORT_NAME, record_names
from .shards import Shard
from .stopping import refuse_to_start
from .video import VideoJob, VideoResult, root_problem, skipped_result, wanted_settings


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

    def settle(self, jobs: list[VideoJob], config: ExtractConfig, overwrite: bool
               ) -> tuple[list[VideoJob], list[VideoResult]]:
        """All jobs go to the workers: each looks at its output under the video's lock."""
        return jobs, []

    def note(self, result: VideoResult) -> None:
        pass

    def write_index(self, report: BatchReport) -> None:
        pass

    def lost(self) -> str:
        return root_problem(self.root)

    def put(self, name: str, content: bytes, durable: bool) -> None:
        write_file_atomic(self.path / name, content, durable)


class ObjectRoot:
    """An object-store prefix: no lock exists there (run one run, or the shards of one N, per prefix at a time),
    and nothing temporary is ever visible (a pack is uploaded whole), so there is nothing to clean.

    The session lists the prefix once (every object's tag: size and ETag) and reads the index objects
    (batch.index); stale report objects are removed first. A finished pack that an index vouches for (listed
    with the tag the index recorded) is settled here without a request; the others go to the workers with what
    the listing showed. The run's own index is written with its reports; index objects are never removed at
    the start, so a killed run loses no entry of the packs that exist.
    """

    def __init__(self, store: ObjectStore, jobs: Sequence[VideoJob], shard: Shard, pack: str):
        if pack != "zip":
            raise ConfigError(f"{store.url!r} is an object store: write it with --pack zip (one object per video, "
                              "uploaded whole once complete); a folder of objects per video cannot appear at once")
        self.path, self.shard, self.jobs = store, shard, list(jobs)
        self._listing: dict[str, str | None] = {}  # pack name relative to the prefix -> tag, at the start
        self._vouched: dict[str, dict[str, Any]] = {}  # pack name -> index entry, for packs listed with its tag
        self._records: dict[str, dict[str, Any]] = {}  # pack name -> entry, of the finished packs of this run
        self._indexes: list[str] = []  # the index objects the listing showed

    @contextmanager
    def session(self) -> Iterator[None]:
        try:
            listing = list_tags(self.path.url)
            stale = {record_names(self.shard)[1], REPORT_NAME}
            if self.shard.count == 1:  # no shard runs beside a run of the whole list: their reports are stale now
                stale |= {name for name in listing for pattern in ("report.shard-*.json", "failures.shard-*.jsonl")
                          if fnmatch.fnmatchcase(name, pattern)}
            for name in sorted(stale & listing.keys()):
                remove_object(self.path.join(name))
            self._indexes = sorted(name for name in listing if INDEX_PATTERN.fullmatch(name))
            self._vouched = vouched(listing, (decode_index(read_object(self.path.join(name)))
                                              for name in self._indexes))
        except StorageError as exc:
            refuse_to_start(exc, self.jobs, self.path, f"cannot list {self.path.url!r} or clear its stale reports")
        self._listing = {name: tag for name, tag in listing.items() if name.endswith(".zip")}
        yield

    def settle(self, jobs: list[VideoJob], config: ExtractConfig, overwrite: bool
               ) -> tuple[list[VideoJob], list[VideoResult]]:
        """(the jobs for the workers, the results of the others): a video whose pack an index vouches for is
        skipped here (its settings and source compared with the index's copy of its meta.json) unless
        `overwrite`; every other job goes with what the listing showed at its pack (VideoJob.listed, tag)."""
        wanted = wanted_settings(config)
        runnable, settled = [], []
        for job in jobs:
            name = self._name(job)
            entry = None if overwrite else self._vouched.get(name)
            if entry is not None:
                settled.append(replace(skipped_result(job, entry, wanted), record=entry))
            else:
                runnable.append(replace(job, listed=True, tag=self._listing.get(name)))
        return runnable, settled

    def note(self, result: VideoResult) -> None:
        """Keep the index entry of a finished pack's result for this run's index."""
        if result.record is not None:
            self._records[self._name(result)] = result.record

    def write_index(self, report: BatchReport) -> None:
        """Write this run's index object: the entries of the finished packs of its results, and those vouched
        for at the start that no result replaced (a run of the whole list: all of them, so that the shards'
        indexes it then removes lose nothing; a shard: its own videos'). The packs this run uploaded get their
        tags from one closing listing (one request per 1000 keys on S3, not one per video); one it does not show
        with a tag gets no entry. A store that refuses is named in report.unwritten (the next run then reads
        those packs' meta.json)."""
        own = {self._name(job) for job in self.jobs}
        entries = {name: entry for name, entry in self._vouched.items() if self.shard.count == 1 or name in own}
        entries.update(self._records)
        name = index_name(self.shard)
        try:
            if any(entry["tag"] is None for entry in entries.values()):
                closing = list_tags(self.path.url)
                entries = {pack: {**entry, "tag": closing.get(pack)} if entry["tag"] is None else entry
                           for pack, entry in entries.items()}
            write_object(self.path.join(name), encode_index({pack: entry for pack, entry in entries.items()
                                                             if entry["tag"] is not None}))
            if name == INDEX_NAME:
                for shard_index in self._indexes:
                    if shard_index != INDEX_NAME:
                        remove_object(self.path.join(shard_index))
        except StorageError as exc:
            report.unwritten = (f"{name} could not be written in {self.path} ({exc}): the next run reads the "
                                "finished packs' meta.json instead of trusting one listing")

    def clean(self) -> None:
        pass

    def lost(self) -> str:
        return ""

    def put(self, name: str, content: bytes, durable: bool) -> None:
        write_object(self.path.join(name), content)

    def _name(self, video: VideoJob | VideoResult) -> str:
        """The name of `video`'s pack relative to the prefix ('/'-separated)."""
        return output_name(video.output, "zip")[len(self.path.url) + 1:]


def _device(path: str) -> int | None:
    try:
        return os.stat(path).st_dev
    except OSError:  # checked again, and reported, by each worker
        return None
