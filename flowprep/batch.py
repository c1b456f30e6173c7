"""Batch runs: discover videos, skip finished ones, run the pipeline on an engine, report per video.

reader (discover) -> workers (process_video: paths and a frozen config in, a VideoResult out, never an
exception) -> writer (failures.jsonl, then report.json last as the run's done marker).
"""
from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import signal
import sys
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, wait
from contextlib import ExitStack, closing, contextmanager
from dataclasses import asdict, dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any, NoReturn

from .config import VIDEO_EXTENSIONS, ExtractConfig
from .errors import ConfigError, FlowprepError, StorageError, require
from .flow import backend_class, cached_backend, check_flow_config, device_kind
from .pipeline import extract_video, settings_of, source_stamp
from .store import (inspect_output, lock_path, not_ours_message, other_pack, output_lock, output_name, output_path,
                    recorded_settings, remove_temps_of_outputs, write_file_atomic)

LIST_EXTENSIONS = (".txt", ".lst", ".list")
ENGINES = ("local", "dask", "ray")
FAILURES_NAME = "failures.jsonl"
REPORT_NAME = "report.json"
LOCK_NAME = ".flowprep.lock"
DASK_IN_FLIGHT = 64  # videos submitted to a Dask cluster at a time, at least
# Write errors that are the file system's, not the video's: every later video would fail the same way.
STOPPING_ERRNOS = frozenset(getattr(errno, name) for name in ("ENOSPC", "EDQUOT", "EROFS", "EIO", "ESTALE", "ENOTCONN",
                                                              "ENODEV", "ENXIO") if hasattr(errno, name))
EXIT_STOPPED = 3  # the CLI's exit code when the run stopped because the output storage failed
EXIT_INTERRUPTED = 130  # ... when Ctrl-C (SIGINT) stopped it, as shells report a process that SIGINT ended
EXIT_TERMINATED = 143  # ... when SIGTERM stopped it (128 + 15, likewise)
SUMMARY_LISTED = 20  # videos not processed named one by one in the summary on stderr
# Local worker processes: one thread for the native libraries too (the processes give the parallelism).
SINGLE_THREAD_ENV = {name: "1" for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}


@dataclass(frozen=True)
class VideoJob:
    """One video to process: its path, its output base path (a directory, or base + '.zip') and the output root.

    A worker checks that `root` still exists before each video, and, when `root_device` is set (run_batch sets
    it for local workers), that it is still on that file system (st_dev): a vanished mount then stops the run
    instead of having the video written beneath the bare mount point, even when the root is the mount point
    itself. "" skips the check.
    """

    source: str
    output: str
    root: str = ""
    root_device: int | None = None


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


def discover(
    source: str | os.PathLike, out_root: str | os.PathLike, extensions: Sequence[str] = VIDEO_EXTENSIONS
) -> list[VideoJob]:
    """Jobs for a video file, a directory tree (searched recursively) or a list file of video paths.

    Outputs mirror the input tree: ``videos/Archery/v_1.avi`` -> ``out_root/Archery/v_1``. List entries are
    relative to the list file's folder (or absolute); outputs mirror them relative to that folder.
    """
    source, out_root = Path(source), Path(out_root)
    exts = tuple(e.lower() if e.startswith(".") else f".{e.lower()}" for e in extensions)
    if source.is_dir():
        # Strings, not Path objects, sorted by their parts as paths sort ("\0" below every other character keeps
        # a/b before a-b/c), with one string per key rather than a list of parts.
        videos: list[str | Path] = sorted(
            (os.path.join(dirpath, name)
             for dirpath, dirnames, filenames in os.walk(source)
             for name in filenames
             if name.lower().endswith(exts) and not name.startswith(".")),
            key=lambda path: path.replace(os.sep, "\0"))
        root = source
    elif source.is_file() and source.suffix.lower() in LIST_EXTENSIONS:
        videos, root = _read_list(source), source.parent
    elif source.is_file():
        videos, root = [source], source.parent
    else:
        raise ConfigError(f"input {str(source)!r} does not exist")
    jobs = []
    for video in map(Path, videos):
        try:
            relative = video.relative_to(root)
        except ValueError:
            relative = Path(video.name)
        jobs.append(VideoJob(str(video), str(out_root / relative.with_suffix("")), str(out_root)))
    return jobs


@dataclass(frozen=True)
class Shard:
    """Part `index` (1-based) of `count` disjoint parts of a video list, for N jobs sharing one output tree."""

    index: int = 1
    count: int = 1

    def __post_init__(self) -> None:
        if not (isinstance(self.count, int) and isinstance(self.index, int) and 1 <= self.index <= self.count):
            raise ConfigError(f"shard must be K/N with 1 <= K <= N, got {self.index!r}/{self.count!r}")

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"

    @property
    def tag(self) -> str:
        """'' for the whole list, else 'shard-K-of-N': in the names of this shard's report, failures and lock."""
        return "" if self.count == 1 else f"shard-{self.index}-of-{self.count}"

    def owns(self, relative_output: str) -> bool:
        """Whether the video whose output is `relative_output` (relative to the output root, '/'-separated) is in
        this part: by a hash of that path alone, so a video keeps its part when others are added or removed
        (for the same N), and every machine agrees without sharing anything."""
        digest = hashlib.blake2b(relative_output.encode(), digest_size=8).digest()
        return int.from_bytes(digest, "big") % self.count == self.index - 1


def parse_shard(text: str, environ: Mapping[str, str] = os.environ) -> Shard:
    """'K/N' (1-based K), or 'slurm': this SLURM array task's part, from SLURM_ARRAY_TASK_ID and
    SLURM_ARRAY_TASK_COUNT (or _MIN/_MAX; _MIN, default 0, is part 1; a _STEP is honoured). ConfigError quoting
    the text or naming the variables that are missing."""
    if text.strip().lower() == "slurm":
        return _slurm_shard(environ)
    index, sep, count = text.partition("/")
    try:
        numbers = int(index), int(count)
    except ValueError:
        numbers = None
    if not sep or numbers is None:
        raise ConfigError(f"shard must be K/N (e.g. 2/8, K from 1) or 'slurm', got {text!r}")
    return Shard(*numbers)


def _slurm_shard(environ: Mapping[str, str]) -> Shard:
    def number(name: str, default: int | None = None) -> int:
        value = environ.get(name)
        if value is None or value == "":
            if default is None:
                raise ConfigError(f"--shard slurm: {name} is not set; is this a SLURM array job (sbatch --array)?")
            return default
        try:
            return int(value)
        except ValueError:
            raise ConfigError(f"--shard slurm: {name} is {value!r}, not a whole number") from None

    task, first, step = number("SLURM_ARRAY_TASK_ID"), number("SLURM_ARRAY_TASK_MIN", 0), \
        number("SLURM_ARRAY_TASK_STEP", 1)
    if "SLURM_ARRAY_TASK_COUNT" in environ:
        count = number("SLURM_ARRAY_TASK_COUNT")
    else:
        count = (number("SLURM_ARRAY_TASK_MAX") - first) // step + 1
    return Shard((task - first) // step + 1, count)


def select_shard(jobs: Sequence[VideoJob], out_root: str | os.PathLike, shard: Shard) -> list[VideoJob]:
    """The jobs of `shard`, in their order; the parts of all K for one N are disjoint and cover `jobs`."""
    if shard.count == 1:
        return list(jobs)
    out_root = Path(out_root)
    return [job for job in jobs if shard.owns(_relative(job.output, out_root))]


def _relative(output: str, out_root: Path) -> str:
    try:
        return Path(output).relative_to(out_root).as_posix()
    except ValueError:  # an output outside the root (a hand-made job): its own path decides
        return Path(output).as_posix()


def _read_list(path: Path) -> list[Path]:
    videos = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        entry = path.parent / line
        # mmaction2-style lists carry "path label" columns after the path.
        if not entry.exists() and len(line.split()) > 1:
            entry = path.parent / line.split()[0]
        videos.append(entry)
    return videos


def process_video(job: VideoJob, config: ExtractConfig, overwrite: bool = False, single_thread: bool = False,
                  parent_pid: int | None = None, gpu: int | None = None) -> VideoResult:
    """Run one job in a worker; every failure becomes a 'failed' result with the reason.

    `single_thread` limits the backend's libraries to one thread (workers run side by side). `parent_pid`: exit
    this process when that parent dies, so that local workers do not outlive a killed run (see _exit_with_parent).
    `gpu`: run a `cuda` job on cuda:`gpu` (meta.json still records the device asked for, `cuda`).
    """
    started = time.perf_counter()
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
        final = output_path(job.output, config.store.pack)
        with output_lock(final) as held:
            if not held:
                return VideoResult(job.source, job.output, "failed", reason=(
                    f"{job.source}: another flowprep run is processing this video right now (it holds "
                    f"{lock_path(final)}); left to that run: rerun once it has ended to check the video"))
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
    in either pack form; failed when what is there is not a finished output (never deleted). None: compute it."""
    pack = config.store.pack
    existing, broken = inspect_output(job.output, pack)
    if broken:
        return VideoResult(job.source, job.output, "failed",
                           reason=f"{job.source}: {not_ours_message(output_path(job.output, pack), broken)}")
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
    params = check_flow_config(config.flow, here=False)  # a skipped video needs no backend (nor GPU)
    differences = [_settings_difference(recorded_settings(existing.get("settings", {})), settings_of(config, params)),
                   _source_change(existing.get("source_file"), job.source)]
    return VideoResult(job.source, job.output, "skipped", existing.get("flow_pairs", 0), existing.get("frames", 0),
                       0.0, "; ".join(d for d in differences if d))


def _extract(job: VideoJob, config: ExtractConfig, gpu: int | None, started: float) -> VideoResult:
    flow = replace(config.flow, device=f"cuda:{gpu}") if gpu is not None else config.flow
    meta = extract_video(job.source, job.output, config, backend=cached_backend(flow))
    return VideoResult(job.source, job.output, "done", meta["flow_pairs"], meta["frames"],
                       time.perf_counter() - started, warning=meta["stream_problem"] or "")


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
    wanted = json.loads(json.dumps(wanted))  # the JSON form, as recorded
    diffs = [f"{k}: {recorded.get(k)!r} recorded, {wanted[k]!r} asked" for k in wanted if recorded.get(k) != wanted[k]]
    return "settings differ from this run (use --overwrite to recompute): " + "; ".join(diffs) if diffs else ""


def _source_change(recorded: Any, source: str) -> str:
    """How the source differs from the size and modification time meta.json recorded (or that it is gone), or ""
    (also when nothing was recorded: trees from before flowprep recorded it). Times within a second count as equal: copies made
    with `cp -p` or rsync, and file systems that keep whole seconds (or two, FAT), round them."""
    if not isinstance(recorded, dict):
        return ""
    try:
        now = source_stamp(source)
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


@dataclass
class BatchReport:
    """What one run did; `seconds` is wall time, `pairs` counts the flow pairs this run computed."""

    total: int = 0
    done: int = 0
    skipped: int = 0
    failed: int = 0
    pairs: int = 0
    seconds: float = 0.0
    interrupted: str = ""  # the signal that stopped the run early ("SIGINT": Ctrl-C, "SIGTERM"), "" if none
    stopped: str = ""  # why the run stopped early: the output storage failed (see BatchStopped)
    unwritten: str = ""  # why failures.jsonl or report.json could not be written; "" when they were
    mismatched: list[str] = field(default_factory=list)  # skipped outputs whose settings or source differ
    failures: list[VideoResult] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)  # of done videos: source cut short, broken output replaced
    not_processed: list[str] = field(default_factory=list)  # sources of the jobs that got no result
    record: str = REPORT_NAME  # the name of this run's report file

    @property
    def pairs_per_second(self) -> float:
        return self.pairs / self.seconds if self.seconds > 0 else 0.0

    def add(self, result: VideoResult) -> None:
        if result.status == "stopped":  # not the video's fault: it counts as not processed
            self.stopped = self.stopped or result.reason
            return
        setattr(self, result.status, getattr(self, result.status) + 1)
        if result.status == "done":
            self.pairs += result.pairs
            if result.warning:
                self.warnings.append(result.warning)
        elif result.status == "failed":
            self.failures.append(result)
        elif result.reason:
            self.mismatched.append(f"{result.output}: {result.reason}")

    def summary(self) -> str:
        """Counts, then every settings difference, failure and warning, and the videos not processed (the first
        SUMMARY_LISTED of them: report.json lists them all)."""
        left = len(self.not_processed)
        why = (_interruption(self.interrupted) if self.interrupted else
               "stopped: the output storage failed" if self.stopped
               else "the engine returned no result for them: rerun to process them")
        lines = [f"{self.total} videos: {self.done} done, {self.skipped} skipped, {self.failed} failed"
                 + (f", {left} not processed ({why})" if left else "")
                 + f"; {self.pairs} flow pairs in {self.seconds:.1f} s ({self.pairs_per_second:.2f} pairs/s)"]
        lines += _listing(self.mismatched, [f.reason for f in self.failures], self.warnings, self.not_processed,
                          self.record)
        if self.unwritten:
            lines.append(f"  NOT WRITTEN {self.unwritten}")
        return "\n".join(lines)

    def note_unprocessed(self, jobs: Sequence[VideoJob], reported: set[str]) -> None:
        """Record the jobs whose output is not in `reported` (the outputs that got a result) as not processed."""
        self.not_processed = [job.source for job in jobs if job.output not in reported]


def _listing(mismatched: Sequence[str], failures: Sequence[str], warnings: Sequence[str],
             not_processed: Sequence[str], record: str) -> list[str]:
    """A summary's KEPT, FAILED and WARNING lines, then the first SUMMARY_LISTED videos not processed (all are
    in `record`)."""
    lines = [f"  KEPT {m}" for m in mismatched]
    lines += [f"  FAILED {reason}" for reason in failures]
    lines += [f"  WARNING {w}" for w in warnings]
    lines += [f"  NOT PROCESSED {source}" for source in not_processed[:SUMMARY_LISTED]]
    if len(not_processed) > SUMMARY_LISTED:
        lines.append(f"  ... and {len(not_processed) - SUMMARY_LISTED} more not processed (all are listed in "
                     f"{record})")
    return lines


class BatchStopped(StorageError):
    """The output storage failed (full, over quota, read-only, gone): run_batch stopped, after cleanup.

    `report` holds what was finished until then; the message says where, how many videos are finished and that
    a rerun resumes.
    """

    def __init__(self, report: BatchReport, out_root: Path, problem: str):
        finished = report.done + report.skipped
        message = (f"stopped, the output file system refused a write: {problem}. "
                   f"File system: {_file_system(out_root)}. "
                   f"{finished} of {report.total} videos are finished ({report.done} by this run), "
                   f"{len(report.not_processed)} not processed, {report.failed} failed. Finished videos are kept; "
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
        super().__init__(f"batch {_interruption(report.interrupted)}")
        self.report = report


class Terminated(KeyboardInterrupt):
    """Raised in the main thread by SIGTERM while run_batch runs (SLURM's time limit and scancel, docker stop,
    systemd, kill): the run stops as on Ctrl-C."""


def _interruption(signal_name: str) -> str:
    return "interrupted" if signal_name == "SIGINT" else f"terminated by {signal_name}"


@contextmanager
def _sigterm_stops_the_run() -> Iterator[None]:
    """While the block runs in the main thread, SIGTERM raises Terminated (once: a second SIGTERM during the
    cleanup is ignored, so that the cleanup finishes before SIGKILL comes); the former handler is restored after.
    Elsewhere (a thread, where Python cannot install handlers) SIGTERM keeps its action."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        raise Terminated("SIGTERM")

    former = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, former)


def run_batch(
    jobs: Sequence[VideoJob],
    out_root: str | os.PathLike,
    config: ExtractConfig | None = None,
    *,
    engine: str = "local",
    n_jobs: int = 1,
    address: str | None = None,
    overwrite: bool = False,
    progress: bool = False,
    dask_in_flight: int = DASK_IN_FLIGHT,
    shard: Shard = Shard(),
) -> BatchReport:
    """Process `jobs` (those of `shard`) and write failures.jsonl and report.json (last) under `out_root`; a
    shard K/N writes failures.shard-K-of-N.jsonl and report.shard-K-of-N.json (see merge_reports).

    Finished videos are skipped unless `overwrite`. Temporaries that killed runs left of these videos (and of
    no others: other shards may be writing theirs) are removed first. Dask gets at
    least `dask_in_flight` videos at a time (more as they finish). On Ctrl-C
    the temporaries of this run are removed, the report is written with interrupted=true and BatchInterrupted
    is raised. When the output storage fails (full, over quota, read-only, gone) the run stops the same way and
    raises BatchStopped (the report is written if there is room). Raises ConfigError for a bad engine, jobs
    count or address, an output root that cannot be created or written (BatchStopped instead when the file
    system is at fault: full, out of inodes, over quota, read-only), or when another run holds `out_root`.
    SIGTERM stops the run as Ctrl-C does (BatchInterrupted, report.interrupted == "SIGTERM").
    """
    config = config or ExtractConfig()
    if engine not in ENGINES:
        raise ConfigError(f"engine must be one of {', '.join(ENGINES)}; got {engine!r}")
    # Bad settings fail the run once, not every video.
    check_flow_config(config.flow, here=engine == "local")
    if n_jobs < 1:
        raise ConfigError(f"jobs must be >= 1, got {n_jobs!r}")
    out_root = Path(out_root)
    jobs = select_shard(jobs, out_root, shard)
    try:
        out_root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        _refuse(exc, jobs, out_root, f"cannot create the output folder {str(out_root)!r}")
    root = VideoJob("", "", str(out_root), os.stat(out_root).st_dev)  # run_batch's own check before its records
    if engine == "local":  # remote workers see other device numbers for the same shared file system
        jobs = [replace(job, root_device=_device(job.root)) if job.root else job for job in jobs]
    failures_name, report_name = record_names(shard)

    def own() -> Iterator[str]:
        """The outputs whose temporaries this run may remove: its videos' (in its pack form) and its records."""
        yield from (output_name(job.output, config.store.pack) for job in jobs)
        yield from (str(out_root / failures_name), str(out_root / report_name))
    with _exclusive(out_root, shard, jobs), _sigterm_stops_the_run():
        # The report says "this run finished"; a stale one must not vouch for a run that gets killed (nor the whole
        # tree's, which no shard can vouch for: no run of the whole list runs beside shards, see _exclusive).
        (out_root / report_name).unlink(missing_ok=True)
        (out_root / REPORT_NAME).unlink(missing_ok=True)
        if shard.count == 1:  # no shard runs beside a run of the whole list: their records are stale now
            for stale in (*out_root.glob("report.shard-*.json"), *out_root.glob("failures.shard-*.jsonl")):
                stale.unlink(missing_ok=True)
        remove_temps_of_outputs(own())
        report = BatchReport(total=len(jobs), record=report_name)
        reported: set[str] = set()  # outputs of the jobs that got a result
        started = time.perf_counter()
        stop = threading.Event()  # set when the storage fails: start no more videos, collect those running
        runnable, collisions = _split_collisions(jobs, config.store.pack)
        for result in collisions:
            report.add(result)
            reported.add(result.output)
        try:
            # closing(): on Ctrl-C the engine must stop its workers before the temporaries are removed.
            with _progress_bar(len(jobs), progress) as bar, \
                    closing(_run_on_engine(runnable, config, engine, n_jobs, address, overwrite,
                                           dask_in_flight, stop)) as results:
                bar.update(len(collisions))
                for result in results:
                    report.add(result)
                    if result.status != "stopped":
                        reported.add(result.output)
                    if report.stopped:
                        stop.set()
                        if engine == "ray":
                            break
                    report.seconds = time.perf_counter() - started
                    bar.set_postfix_str(f"{report.pairs_per_second:.2f} pairs/s, {report.failed} failed",
                                        refresh=False)
                    bar.update(1)
        except BaseException as exc:
            # Ctrl-C or a lost cluster: workers may have left temporaries behind; none of them looks finished.
            remove_temps_of_outputs(own())
            if not isinstance(exc, KeyboardInterrupt):
                raise
            report.interrupted = "SIGTERM" if isinstance(exc, Terminated) else "SIGINT"
            report.note_unprocessed(jobs, reported)
            report.seconds = time.perf_counter() - started
            _write_report(out_root, report, config, engine, n_jobs, shard, root)
            raise BatchInterrupted(report) from None
        if engine != "local" or report.stopped:
            # Every task has ended: a temporary left now is a dead remote worker's (Dask retries a lost worker's
            # task elsewhere), or one a stopped worker could not remove. Local runs remove a dead worker's
            # temporary at once.
            remove_temps_of_outputs(own())
        report.note_unprocessed(jobs, reported)
        report.seconds = time.perf_counter() - started
        _write_report(out_root, report, config, engine, n_jobs, shard, root)
        if report.stopped or report.unwritten:
            raise BatchStopped(report, out_root, report.stopped or report.unwritten)
    return report


def _device(path: str) -> int | None:
    try:
        return os.stat(path).st_dev
    except OSError:  # checked again, and reported, by each worker
        return None


def record_names(shard: Shard) -> tuple[str, str]:
    """(failures file, report file) names of a run of `shard`: failures.jsonl and report.json for the whole
    list, failures.shard-K-of-N.jsonl and report.shard-K-of-N.json for a shard."""
    if shard.count == 1:
        return FAILURES_NAME, REPORT_NAME
    return f"failures.{shard.tag}.jsonl", f"report.{shard.tag}.json"


def _refuse(exc: OSError, jobs: Sequence[VideoJob], out_root: Path, what: str) -> NoReturn:
    """Raise for a run that cannot begin: BatchStopped when the file system is at fault (full, out of inodes,
    over quota, gone: a rerun once it is fixed does the job), ConfigError otherwise (a bad path, or a read-only
    one: an output that was never writable is the command's mistake)."""
    if exc.errno in STOPPING_ERRNOS and exc.errno != errno.EROFS:
        report = BatchReport(total=len(jobs))
        report.note_unprocessed(jobs, set())
        raise BatchStopped(report, out_root, f"{what}: {exc.strerror or exc}") from None
    raise ConfigError(f"{what}: {exc.strerror or exc}") from None


@contextmanager
def _exclusive(out_root: Path, shard: Shard, jobs: Sequence[VideoJob]) -> Iterator[None]:
    """Hold advisory locks on `out_root` so that two runs never process the same videos at once.

    A run of the whole list holds .flowprep.lock exclusively; a shard holds it shared (shards run side by side)
    and its own .flowprep.shard-K-of-N.lock exclusively (the same shard never runs twice). flock locks die
    with their process, so a killed run never blocks the next one. Shards do not rely on these locks to keep
    off each other's work (they share no video, no temporary and no record file): on file systems whose flock
    is local to each machine, only running the same shard twice at once goes unnoticed. `jobs` are named as not
    processed when the lock file cannot be created (see _refuse).
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
                _refuse(exc, jobs, out_root, f"cannot create {out_root / name} (the run's lock)")
            try:
                fcntl.flock(lock, mode | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = ("a run of this shard" if mode == fcntl.LOCK_EX and shard.count > 1
                          else "a run of the whole list" if shard.count > 1 else "another flowprep run")
                raise ConfigError(f"{holder} is writing into {str(out_root)!r} (it holds {out_root / name}); "
                                  "wait for it or stop it first") from None
        yield


def _split_collisions(jobs: Sequence[VideoJob], pack: str) -> tuple[list[VideoJob], list[VideoResult]]:
    """Videos whose outputs would land on the same path (a.mp4 and a.avi) fail instead of overwriting."""
    counts = Counter(output_name(job.output, pack) for job in jobs)
    runnable, failed = [], []
    for job in jobs:
        if counts[output_name(job.output, pack)] > 1:
            failed.append(VideoResult(job.source, job.output, "failed",
                                      reason=f"{job.source}: another input video maps to the same output {job.output}"))
        else:
            runnable.append(job)
    return runnable, failed


def _run_on_engine(jobs: Sequence[VideoJob], config: ExtractConfig, engine: str, n_jobs: int,
                   address: str | None, overwrite: bool, dask_in_flight: int,
                   stop: threading.Event) -> Iterator[VideoResult]:
    """Results in completion order, so the progress bar moves as each video finishes, on every engine.

    Once `stop` is set no further video starts (Ray's pool excepted: it has them all); those running finish.
    """
    if not jobs:
        return
    # Workers that run side by side get one OpenCV thread each (single_thread=True): processes, not threads, give
    # the parallelism. (Flow is bit-identical for any OpenCV thread count; this is about speed, not results.)
    if engine == "local" and n_jobs == 1:
        yield from (process_video(job, config, overwrite) for job in jobs if not stop.is_set())
        return
    if engine == "local":
        yield from _run_on_local_processes(jobs, config, overwrite, n_jobs, stop)
        return
    if engine == "ray":
        yield from _run_on_ray(jobs, partial(process_video, config=config, overwrite=overwrite, single_thread=True),
                               address, _uses_cuda(config))
        return
    yield from _run_on_dask(jobs, config, overwrite, address, dask_in_flight, stop)


def _run_on_local_processes(jobs: Sequence[VideoJob], config: ExtractConfig, overwrite: bool,
                            n_jobs: int, stop: threading.Event) -> Iterator[VideoResult]:
    """Jobs on `n_jobs` worker processes, each its own one-worker loky pool running one video at a time.

    A worker that dies (a decoder's segfault, the out-of-memory killer) therefore takes exactly one video with
    it: its temporary is removed, a fresh worker takes the slot and the run goes on. The video runs once more
    in a fresh worker (the OOM killer may have picked the wrong process); if that worker dies too, the video
    fails, named. In one shared pool a death breaks every video in flight and the run with them. With several
    GPUs, slot i runs its videos on cuda:(i mod GPUs).
    """
    from joblib.externals.loky import ProcessPoolExecutor
    from joblib.externals.loky.process_executor import BrokenProcessPool

    gpus = _local_gpu_count(config)
    pack = config.store.pack
    waiting = deque(jobs)
    pools: list[ProcessPoolExecutor | None] = [None] * min(n_jobs, len(jobs))
    running: dict[Future, tuple[int, VideoJob]] = {}
    deaths: Counter[VideoJob] = Counter()

    def discard(slot: int) -> None:
        pools[slot].shutdown(wait=False, kill_workers=True)
        pools[slot] = None

    def start(slot: int) -> None:
        job = waiting.popleft()
        args = (process_video, job, config, overwrite, True, os.getpid(), slot % gpus if gpus > 1 else None)
        for retry in (False, True):
            if pools[slot] is None:
                pools[slot] = ProcessPoolExecutor(max_workers=1, env=SINGLE_THREAD_ENV)
            try:
                running[pools[slot].submit(*args)] = slot, job
                return
            except BrokenProcessPool:  # its worker died while idle: a fresh pool, once
                discard(slot)
                if retry:
                    raise

    try:
        for slot in range(len(pools)):
            start(slot)
        while running:
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in finished:
                slot, job = running.pop(future)
                try:
                    result = future.result()
                except BrokenProcessPool as exc:
                    discard(slot)
                    remove_temps_of_outputs([output_path(job.output, pack)])
                    deaths[job] += 1
                    if deaths[job] < 2:
                        waiting.appendleft(job)
                        result = None
                    else:
                        found = re.search(r"exit codes of the workers are \{([^}]*)\}", str(exc))
                        result = _worker_died(job, f"exit {found.group(1) if found else 'unknown'}, in both of "
                                                   "its tries")
                if waiting and not stop.is_set():
                    start(slot)
                if result is not None:
                    yield result
    finally:
        # Kill every worker and wait until it is dead: the caller removes this run's temporaries next (Ctrl-C).
        # One call per pool: a shutdown(wait=True) after a shutdown(wait=False) waits for nothing (loky forgets
        # its manager thread in the first), and a worker still running could write a temporary again.
        for pool in pools:
            if pool is not None:
                pool.shutdown(wait=True, kill_workers=True)


def _run_on_dask(jobs: Sequence[VideoJob], config: ExtractConfig, overwrite: bool,
                 address: str | None, window: int, stop: threading.Event) -> Iterator[VideoResult]:
    """One task per video on a Dask cluster (a local one without `address`), results in completion order.

    At most `window` tasks (or two per worker thread, if more) are submitted at a time, each finished one
    replaced by the next video, so a million videos are not a million futures. Dask reruns the task of a worker
    that died; a video whose task killed
    workers until the scheduler gave up on it (KilledWorker, after distributed.scheduler.allowed-failures
    deaths) fails alone, named, like a dead local worker's.
    """
    distributed = require("distributed", "dask", "--engine dask")
    try:
        client = distributed.Client(address) if address else distributed.Client(processes=True, threads_per_worker=1)
    except OSError as exc:
        raise ConfigError(f"cannot reach the Dask scheduler at {address!r}: {exc}") from None
    # GPU jobs run only on workers started with `--resources GPU=1` (one worker per GPU), one job per GPU at a time.
    resources = {"GPU": 1} if _uses_cuda(config) else None
    waiting = deque(jobs)
    with client:
        in_flight = max(window, 2 * sum(client.nthreads().values()))
        completed = distributed.as_completed()
        job_of: dict[str, VideoJob] = {}

        def submit() -> None:
            job = waiting.popleft()
            future = client.submit(process_video, job, config, overwrite, True, resources=resources, pure=False)
            job_of[future.key] = job
            completed.add(future)

        for _ in range(min(in_flight, len(waiting))):
            submit()
        for future in completed:
            job = job_of.pop(future.key)
            try:
                result = future.result()
            except distributed.KilledWorker as exc:
                # Dask says on how many workers the task ran before it gave up, in its first sentence.
                result = _worker_died(job, f"{type(exc).__name__}: {str(exc).split('. ')[0]}")
            future.release()
            if waiting and not stop.is_set():
                submit()
            yield result


def _worker_died(job: VideoJob, how: str) -> VideoResult:
    """The failed result of a video whose worker process died under it; `how`: exit code or signal, tries."""
    return VideoResult(job.source, job.output, "failed",
                       reason=f"{job.source}: the worker process died while processing this video ({how}): "
                              "a crash in a decoder or flow library, or the out-of-memory killer; "
                              "the other videos went on")


def _uses_cuda(config: ExtractConfig) -> bool:
    return device_kind(config.flow.device) == "cuda"


def _local_gpu_count(config: ExtractConfig) -> int:
    """GPUs to spread `--device cuda` jobs over (one per worker slot); 0 when the device names one or is not CUDA."""
    if config.flow.device != "cuda":
        return 0
    import torch

    return torch.cuda.device_count()


def _run_on_ray(jobs: Sequence[VideoJob], work: Callable[[VideoJob], VideoResult],
                address: str | None, gpu: bool) -> Iterator[VideoResult]:
    """Ray's actor pool directly: its joblib backend cannot stream results (no return_as generators)."""
    ray = require("ray", "ray", "--engine ray")
    from ray.util.multiprocessing import Pool

    try:
        ray.init(address=address, ignore_reinit_error=True, log_to_driver=False)
    except ConnectionError as exc:
        raise ConfigError(f"cannot reach the Ray cluster at {address!r}: {exc}") from None
    try:
        # A GPU job takes a whole GPU: Ray then gives each pool actor its own (it sets CUDA_VISIBLE_DEVICES).
        with Pool(ray_remote_args={"num_gpus": 1} if gpu else None) as pool:
            yield from pool.imap_unordered(work, jobs)
    finally:
        ray.shutdown()


@contextmanager
def _progress_bar(total: int, enabled: bool) -> Iterator[Any]:
    from tqdm import tqdm

    with tqdm(total=total, unit="video", file=sys.stderr, disable=not enabled, dynamic_ncols=True) as bar:
        yield bar


@dataclass
class MergedReport:
    """The report files of one output tree added up: a run of the whole list, or the shards of one N.

    `parts` names the report files read; `missing` the shards of an N that have none (running, killed, or never
    started); `counts` sums total, done, skipped, failed and pairs; the lists are the parts' lists, joined.
    """

    root: Path
    parts: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    counts: Counter[str] = field(default_factory=Counter)
    failures: list[dict[str, str]] = field(default_factory=list)
    not_processed: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    mismatched: list[str] = field(default_factory=list)
    ended_early: list[str] = field(default_factory=list)  # parts that were interrupted or stopped
    superseded: dict[int, list[str]] = field(default_factory=dict)  # N -> report files of older runs of N shards

    @property
    def complete(self) -> bool:
        """Every part reported, every video done or skipped."""
        return bool(self.parts) and not (self.missing or self.failures or self.not_processed or self.ended_early)

    def summary(self) -> str:
        c = self.counts
        lines = [f"{self.root}: {len(self.parts)} report(s) ({', '.join(self.parts) or 'none'}): {c['total']} "
                 f"videos: {c['done']} done, {c['skipped']} skipped, {c['failed']} failed, "
                 f"{len(self.not_processed)} not processed; {c['pairs']} flow pairs"]
        lines += [f"  MISSING {name}: no report (still running, killed, or never started; rerun that shard)"
                  for name in self.missing]
        lines += [f"  ENDED EARLY {name}" for name in self.ended_early]
        lines += [f"  SUPERSEDED {', '.join(names)} (an older run of {count} shards: not counted)"
                  for count, names in sorted(self.superseded.items())]
        lines += _listing(self.mismatched, [f["reason"] for f in self.failures], self.warnings, self.not_processed,
                          ", ".join(self.parts))
        lines.append("complete" if self.complete else "INCOMPLETE")
        return "\n".join(lines)


def merge_reports(out_root: str | os.PathLike) -> MergedReport:
    """Add up the reports under `out_root`: report.json, or the report.shard-K-of-N.json of the N whose newest
    report is the newest (a run of the shards of another N, later, supersedes those of the former N; each run of
    the whole list removes the shards' records, each shard run removes report.json). ConfigError when there is no
    report at all."""
    out_root = Path(out_root)
    merged = MergedReport(out_root)
    shards: dict[int, dict[int, Path]] = {}
    for path in out_root.glob("report.shard-*-of-*.json"):
        found = re.fullmatch(r"report\.shard-(\d+)-of-(\d+)\.json", path.name)
        if found:
            shards.setdefault(int(found.group(2)), {})[int(found.group(1))] = path
    if shards:
        count = max(shards, key=lambda n: max(path.stat().st_mtime_ns for path in shards[n].values()))
        parts = [(Shard(k, count), shards[count].get(k)) for k in range(1, count + 1)]
        merged.superseded = {n: [shards[n][k].name for k in sorted(shards[n])] for n in shards if n != count}
    elif (out_root / REPORT_NAME).is_file():
        parts = [(Shard(), out_root / REPORT_NAME)]
    else:
        raise ConfigError(f"{str(out_root)!r} holds no {REPORT_NAME} nor report.shard-K-of-N.json: no run finished "
                          "there yet")
    for shard, path in parts:
        if path is None:
            merged.missing.append(record_names(shard)[1])
            continue
        try:
            data = json.loads(path.read_text())
            failures = [json.loads(line) for line in (out_root / record_names(shard)[0]).read_text().splitlines()
                        if line.strip()]
        except (OSError, ValueError) as exc:
            merged.missing.append(f"{path.name} (unreadable: {exc})")
            continue
        merged.parts.append(path.name)
        merged.counts.update({key: data.get(key, 0) for key in ("total", "done", "skipped", "failed", "pairs")})
        merged.failures += failures
        merged.not_processed += data.get("not_processed", [])
        merged.warnings += data.get("warnings", [])
        merged.mismatched += data.get("settings_mismatch", [])
        if data.get("interrupted") or data.get("stopped"):
            merged.ended_early.append(f"{path.name}: " + (_interruption(data.get("signal") or "SIGINT")
                                                          if data.get("interrupted") else
                                                          f"stopped ({data['stopped']})"))
    return merged


def _write_report(out_root: Path, report: BatchReport, config: ExtractConfig, engine: str, n_jobs: int,
                  shard: Shard, root: VideoJob) -> None:
    """failures.jsonl (one JSON object per failed video), then report.json (record_names(shard)), each replaced
    atomically; when the file system refuses, or `root` (the output root as the run began) is gone or another file
    system now (a lost mount: nothing is written beneath the bare mount point), report.unwritten names what was
    not written and why, and no temporary is left."""
    lines = [json.dumps({"source": f.source, "output": f.output, "reason": f.reason}) + "\n"
             for f in report.failures]
    data = {
        "total": report.total, "done": report.done, "skipped": report.skipped, "failed": report.failed,
        "interrupted": bool(report.interrupted), "signal": report.interrupted or None, "stopped": report.stopped,
        "pairs": report.pairs,
        "seconds": round(report.seconds, 3),
        "pairs_per_second": round(report.pairs_per_second, 3), "settings_mismatch": report.mismatched,
        "warnings": report.warnings, "not_processed": report.not_processed,
        "engine": engine, "jobs": n_jobs, "shard": str(shard) if shard.count > 1 else None, "config": asdict(config),
    }
    records = dict(zip(record_names(shard), ("".join(lines).encode(), json.dumps(data, indent=1).encode())))
    lost = root_problem(root)
    if lost:
        report.stopped = report.stopped or lost
        problem = lost
    else:
        problem = ""
        for name, content in list(records.items()):
            try:
                write_file_atomic(out_root / name, content, config.store.fsync)
            except OSError as exc:
                problem = str(exc.strerror or exc)
                break
            del records[name]
    if records:
        report.unwritten = (f"{' and '.join(records)} could not be written in {out_root} ({problem}): the "
                            "summary above is this run's only record")
