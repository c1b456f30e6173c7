"""One video's work in a worker: skip it, refuse it, or extract it under its lock; a VideoResult, never an
exception."""
from __future__ import annotations

import errno
import json
import os
import threading
import time
from dataclasses import dataclass, replace
from typing import Any

from ..config import ExtractConfig
from ..errors import FlowprepError, StorageError
from ..flow import backend_class, cached_backend, check_flow_config
from ..pipeline import extract_video, settings_of
from ..source import source_stamp
from ..store import (StorageOptions, inspect_output, lock_path, not_ours_message, other_pack, output_lock, output_name,
                     output_path, recorded_settings)
from .index import index_entry

# Write errors that are the file system's, not the video's: every later video would fail the same way.
STOPPING_ERRNOS = frozenset(getattr(errno, name) for name in ("ENOSPC", "EDQUOT", "EROFS", "EIO", "ESTALE", "ENOTCONN",
                                                              "ENODEV", "ENXIO") if hasattr(errno, name))


@dataclass(frozen=True)
class VideoJob:
    """One video to process: its path or URL, its output base path (a directory, or base + '.zip') and the output
    root; for an object found by a listing, `source_stamp`: its (bytes, mtime_ns) there, which meta.json records
    and resume compares with it (no request per video).

    A worker checks that `root` still exists before each video, and, when `root_device` is set (run_batch sets
    it for local workers), that it is still on that file system (st_dev): a vanished mount then stops the run
    instead of having the video written beneath the bare mount point, even when the root is the mount point
    itself. "" skips the check.

    On an object store the run lists the prefix once (`listed`): `tag` is what that listing showed at the video's
    pack (its size and ETag), None when there is none; the worker then extracts the video without looking
    (nothing else writes the prefix meanwhile: one run, or the shards of one N, at a time).
    """

    source: str
    output: str
    root: str = ""
    root_device: int | None = None
    source_stamp: tuple[int, int] | None = None
    listed: bool = False
    tag: str | None = None


@dataclass(frozen=True)
class VideoResult:
    source: str
    output: str
    status: str  # "done", "skipped", "failed", or "stopped": the output storage failed (full, read-only, gone)
    pairs: int = 0
    frames: int = 0
    seconds: float = 0.0
    reason: str = ""  # why it failed or stopped, or how a skipped video's settings or source differ
    warning: str = ""  # a done video's source stream ended early, or what the recomputed output replaced
    record: dict[str, Any] | None = None  # a listed job's finished pack: its entry for the run's index (batch.index)


def process_video(job: VideoJob, config: ExtractConfig, overwrite: bool = False, single_thread: bool = False,
                  parent_pid: int | None = None, gpu: int | None = None,
                  storage: StorageOptions = StorageOptions()) -> VideoResult:
    """Run one job in a worker; every failure becomes a 'failed' result with the reason.

    `storage`: the run's --storage-option, applied in this process first (a worker is a process of its own).
    `single_thread` limits the backend's libraries to one thread (workers run side by side). `parent_pid`: exit
    this process when that parent dies, so that local workers do not outlive a killed run (see _exit_with_parent).
    `gpu`: run a `cuda` job on cuda:`gpu` (meta.json still records the device asked for, `cuda`).
    """
    started = time.perf_counter()
    storage.apply()
    try:
        lost = root_problem(job)
        if lost:
            return VideoResult(job.source, job.output, "stopped", reason=lost)
        if parent_pid is not None:
            _exit_with_parent(parent_pid)
        if single_thread:
            backend_class(config.flow.algo, config.flow.device).limit_threads()
        found = _found_result(job, config, overwrite)  # finished videos are skipped without taking their lock
        if found is not None:
            return found
        final = output_name(job.output, config.store.pack)  # a string: a URL stays one (Path would mangle it)
        with output_lock(final) as held:
            if not held:
                return VideoResult(job.source, job.output, "failed", reason=(
                    f"{job.source}: another flowprep run is processing this video right now (it holds "
                    f"{lock_path(final)}); left to that run: rerun once it has ended to check the video"))
            lost = root_problem(job)  # unmounted while the lock was taken: write nothing beneath the mount point
            if lost:
                return VideoResult(job.source, job.output, "stopped", reason=lost)
            found = _found_result(job, config, overwrite)  # that run may have finished it just before
            if found is not None:
                return found
            return _extract(job, config, gpu, started)
    except StorageError as exc:
        if exc.errno in STOPPING_ERRNOS or root_problem(job):
            return VideoResult(job.source, job.output, "stopped", seconds=time.perf_counter() - started,
                               reason=str(exc))
        reason = str(exc)
    except FlowprepError as exc:
        reason = str(exc)
    except Exception as exc:  # noqa: BLE001 - one video's unexpected error must not stop the batch
        reason = f"{job.source}: unexpected {type(exc).__name__}: {exc}"
    return VideoResult(job.source, job.output, "failed", seconds=time.perf_counter() - started, reason=reason)


def root_problem(job: VideoJob) -> str:
    """Why `job`'s output root can no longer be written (gone, or no longer the file system it was on when the
    run began: unmounted), or ""."""
    if not job.root:
        return ""
    try:
        device = os.stat(job.root).st_dev
    except OSError:
        return f"{job.root}: the output folder is gone (an unmounted or lost file system?)"
    if job.root_device is not None and device != job.root_device:
        return (f"{job.root} is no longer the file system it was when the run began (unmounted? what is there now "
                "is the folder beneath the mount point): nothing more is written there")
    return ""


def _found_result(job: VideoJob, config: ExtractConfig, overwrite: bool) -> VideoResult | None:
    """The result of a video whose output path is taken already: skipped when finished (unless `overwrite`),
    in either pack form; failed when what is there is not a finished output (never deleted). None: compute it.
    A listed job is looked at only when the listing showed a pack (then read by range requests)."""
    if job.listed and job.tag is None:
        return None
    pack = config.store.pack
    existing, broken = inspect_output(job.output, pack)
    if broken:
        return VideoResult(job.source, job.output, "failed",
                           reason=f"{job.source}: {not_ours_message(output_name(job.output, pack), broken)}")
    if overwrite:
        return None
    other = None if existing is not None else inspect_output(job.output, other_pack(pack))[0]
    if other is not None:
        return VideoResult(job.source, job.output, "skipped", other.get("flow_pairs", 0), other.get("frames", 0),
                           0.0, f"finished as {output_path(job.output, other_pack(pack)).name} (pack: "
                                f"{other_pack(pack)!r} recorded, {pack!r} asked; use --overwrite to recompute "
                                f"it as {pack!r}, which removes the other form)")
    if existing is None:
        return None
    # The listing's tag: the pack read here is the one listed, as nothing else writes the prefix meanwhile.
    return replace(skipped_result(job, existing, wanted_settings(config)),
                   record=index_entry(existing, job.tag) if job.listed else None)


def wanted_settings(config: ExtractConfig) -> dict[str, Any]:
    """The settings a run of `config` records in meta.json, in their JSON form: what a finished output's are
    compared with. Needs no backend (nor GPU): a skipped video computes nothing."""
    return json.loads(json.dumps(settings_of(config, check_flow_config(config.flow, here=False))))


def skipped_result(job: VideoJob, meta: dict[str, Any], wanted: dict[str, Any]) -> VideoResult:
    """The skipped result of a video whose finished output holds `meta` (meta.json, or an index entry's fields
    of it), with how its settings differ from `wanted` (wanted_settings) and how its source changed, if they
    did."""
    differences = [_settings_difference(recorded_settings(meta.get("settings") or {}), wanted),
                   _source_change(meta.get("source_file"), job)]
    return VideoResult(job.source, job.output, "skipped", meta.get("flow_pairs", 0), meta.get("frames", 0),
                       0.0, "; ".join(d for d in differences if d))


def _extract(job: VideoJob, config: ExtractConfig, gpu: int | None, started: float) -> VideoResult:
    flow = replace(config.flow, device=f"cuda:{gpu}") if gpu is not None else config.flow
    meta = extract_video(job.source, job.output, config, backend=cached_backend(flow),
                         commit_check=lambda: root_problem(job), listed=job.source_stamp)
    # The uploaded pack's tag comes from the run's closing listing (ObjectRoot.write_index), not a HEAD per video.
    return VideoResult(job.source, job.output, "done", meta["flow_pairs"], meta["frames"],
                       time.perf_counter() - started, warning=meta["stream_problem"] or "",
                       record=index_entry(meta, None) if job.listed else None)


_watchdog_lock = threading.Lock()
_watched_parent: int | None = None


def _exit_with_parent(parent_pid: int) -> None:
    """Start (once per process) a thread that ends this worker soon after `parent_pid` is gone.

    Loky workers whose parent was killed (kill -9, OOM killer) finish their current video and then idle for
    minutes; a rerun would race them. A worker that exits mid-video leaves only a temporary, which the next
    run removes.
    """
    global _watched_parent
    with _watchdog_lock:
        if _watched_parent == parent_pid or os.getppid() != parent_pid:
            return
        _watched_parent = parent_pid

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(0.2)
        os._exit(1)

    threading.Thread(target=watch, name="flowprep-exit-with-parent", daemon=True).start()


def _settings_difference(recorded: dict[str, Any], wanted: dict[str, Any]) -> str:
    diffs = [f"{k}: {recorded.get(k)!r} recorded, {wanted[k]!r} asked" for k in wanted if recorded.get(k) != wanted[k]]
    return "settings differ from this run (use --overwrite to recompute): " + "; ".join(diffs) if diffs else ""


def _source_change(recorded: Any, job: VideoJob) -> str:
    """How the source differs from the size and modification time meta.json recorded (or that it is gone), or ""
    (also when nothing was recorded: trees from before flowprep recorded it). Times within a second count as equal: copies made
    with `cp -p` or rsync, and file systems that keep whole seconds (or two, FAT), round them."""
    if not isinstance(recorded, dict):
        return ""
    source = job.source
    try:
        now = source_stamp(source, job.source_stamp)
    except OSError:  # the finished output is all there is of that video now
        return f"its source {source} is gone; the finished output is kept"
    changes = []
    if recorded.get("bytes") != now["bytes"]:
        changes.append(f"{recorded.get('bytes')} bytes recorded, {now['bytes']} bytes now")
    mtime = recorded.get("mtime_ns")
    if not isinstance(mtime, int) or abs(mtime - now["mtime_ns"]) > 1_000_000_000:
        changes.append(f"modified {_when(mtime)} recorded, {_when(now['mtime_ns'])} now")
    if not changes:
        return ""
    return f"its source {source} changed since it was extracted (use --overwrite to recompute): " + "; ".join(changes)


def _when(mtime_ns: Any) -> str:
    if not isinstance(mtime_ns, int):
        return repr(mtime_ns)
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(mtime_ns / 1e9)) + " UTC"
