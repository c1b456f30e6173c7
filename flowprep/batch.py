"""Batch runs: discover videos, skip finished ones, run the pipeline on an engine, report per video.

reader (discover) -> workers (process_video: paths and a frozen config in, a VideoResult out, never an
exception) -> writer (failures.jsonl, then report.json last as the run's done marker).
"""
from __future__ import annotations

import json
import os
import sys
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .config import ExtractConfig
from .errors import ConfigError, FlowprepError
from .flow import cached_backend
from .pipeline import extract_video, settings_of
from .store import finished_meta, output_path, remove_stale_temps

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mkv", ".webm", ".mov", ".m4v", ".mpg", ".mpeg", ".flv", ".wmv", ".3gp", ".ogv")
LIST_EXTENSIONS = (".txt", ".lst", ".list", ".csv")
ENGINES = ("local", "dask", "ray")
FAILURES_NAME = "failures.jsonl"
REPORT_NAME = "report.json"


@dataclass(frozen=True)
class VideoJob:
    """One video to process: its path and its output base path (a directory, or base + '.zip')."""

    source: str
    output: str


@dataclass(frozen=True)
class VideoResult:
    source: str
    output: str
    status: str  # "done", "skipped" or "failed"
    pairs: int = 0
    frames: int = 0
    seconds: float = 0.0
    reason: str = ""  # why it failed, or how a skipped video's settings differ from this run's


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
        videos = sorted(
            Path(dirpath) / name
            for dirpath, dirnames, filenames in os.walk(source)
            for name in filenames
            if name.lower().endswith(exts) and not name.startswith(".")
        )
        root = source
    elif source.is_file() and source.suffix.lower() in LIST_EXTENSIONS:
        videos, root = _read_list(source), source.parent
    elif source.is_file():
        videos, root = [source], source.parent
    else:
        raise ConfigError(f"input {str(source)!r} does not exist")
    jobs = []
    for video in videos:
        try:
            relative = video.relative_to(root)
        except ValueError:
            relative = Path(video.name)
        jobs.append(VideoJob(str(video), str(out_root / relative.with_suffix(""))))
    return jobs


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


def process_video(job: VideoJob, config: ExtractConfig, overwrite: bool = False, single_thread: bool = False
                  ) -> VideoResult:
    """Run one job in a worker; every failure becomes a 'failed' result with the reason."""
    started = time.perf_counter()
    try:
        if single_thread:
            import cv2

            cv2.setNumThreads(1)
        backend = cached_backend(config.flow)
        existing = None if overwrite else finished_meta(job.output, config.store.pack)
        if existing is not None:
            return VideoResult(job.source, job.output, "skipped", existing.get("flow_pairs", 0),
                               existing.get("frames", 0), 0.0,
                               _settings_difference(existing.get("settings", {}), settings_of(config, backend)))
        meta = extract_video(job.source, job.output, config, backend=backend)
        return VideoResult(job.source, job.output, "done", meta["flow_pairs"], meta["frames"],
                           time.perf_counter() - started)
    except FlowprepError as exc:
        reason = str(exc)
    except Exception as exc:  # noqa: BLE001 - one video's unexpected error must not stop the batch
        reason = f"{job.source}: unexpected {type(exc).__name__}: {exc}"
    return VideoResult(job.source, job.output, "failed", seconds=time.perf_counter() - started, reason=reason)


def _settings_difference(recorded: dict[str, Any], wanted: dict[str, Any]) -> str:
    wanted = json.loads(json.dumps(wanted))  # the JSON form, as recorded
    diffs = [f"{k}: {recorded.get(k)!r} recorded, {wanted[k]!r} asked" for k in wanted if recorded.get(k) != wanted[k]]
    return "settings differ from this run (use --overwrite to recompute): " + "; ".join(diffs) if diffs else ""


@dataclass
class BatchReport:
    total: int = 0
    done: int = 0
    skipped: int = 0
    failed: int = 0
    pairs: int = 0  # flow pairs computed by this run
    seconds: float = 0.0
    mismatched: list[str] = field(default_factory=list)  # skipped outputs whose settings differ
    failures: list[VideoResult] = field(default_factory=list)

    @property
    def pairs_per_second(self) -> float:
        return self.pairs / self.seconds if self.seconds > 0 else 0.0

    def add(self, result: VideoResult) -> None:
        setattr(self, result.status, getattr(self, result.status) + 1)
        if result.status == "done":
            self.pairs += result.pairs
        elif result.status == "failed":
            self.failures.append(result)
        elif result.reason:
            self.mismatched.append(f"{result.output}: {result.reason}")

    def summary(self) -> str:
        lines = [f"{self.total} videos: {self.done} done, {self.skipped} skipped, {self.failed} failed; "
                 f"{self.pairs} flow pairs in {self.seconds:.1f} s ({self.pairs_per_second:.2f} pairs/s)"]
        lines += [f"  settings differ: {m}" for m in self.mismatched]
        lines += [f"  FAILED {f.reason}" for f in self.failures]
        return "\n".join(lines)


def run_batch(
    jobs: Sequence[VideoJob],
    out_root: str | os.PathLike,
    config: ExtractConfig | None = None,
    *,
    engine: str = "local",
    n_jobs: int = 1,
    address: str | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> BatchReport:
    """Process `jobs` and write failures.jsonl and report.json (last) under `out_root`."""
    config = config or ExtractConfig()
    if engine not in ENGINES:
        raise ConfigError(f"engine must be one of {', '.join(ENGINES)}; got {engine!r}")
    if n_jobs < 1:
        raise ConfigError(f"jobs must be >= 1, got {n_jobs!r}")
    out_root = Path(out_root)
    out_root.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(out_root)
    report = BatchReport(total=len(jobs))
    started = time.perf_counter()
    runnable, collisions = _split_collisions(jobs, config.store.pack)
    try:
        for result in collisions:
            report.add(result)
        with _progress_bar(len(jobs), progress) as bar:
            bar.update(len(collisions))
            for result in _run_on_engine(runnable, config, engine, n_jobs, address, overwrite):
                report.add(result)
                report.seconds = time.perf_counter() - started
                bar.set_postfix_str(f"{report.pairs_per_second:.2f} pairs/s, {report.failed} failed", refresh=False)
                bar.update(1)
    except BaseException:
        # Ctrl-C or a lost cluster: workers may have left temporaries behind; none of them looks finished.
        remove_stale_temps(out_root)
        raise
    report.seconds = time.perf_counter() - started
    _write_report(out_root, report, config, engine, n_jobs)
    return report


def _split_collisions(jobs: Sequence[VideoJob], pack: str) -> tuple[list[VideoJob], list[VideoResult]]:
    """Videos whose outputs would land on the same path (a.mp4 and a.avi) fail instead of overwriting."""
    counts = Counter(output_path(j.output, pack) for j in jobs)
    runnable, failed = [], []
    for job in jobs:
        if counts[output_path(job.output, pack)] > 1:
            failed.append(VideoResult(job.source, job.output, "failed",
                                      reason=f"{job.source}: another input video maps to the same output {job.output}"))
        else:
            runnable.append(job)
    return runnable, failed


def _run_on_engine(jobs: Sequence[VideoJob], config: ExtractConfig, engine: str, n_jobs: int,
                   address: str | None, overwrite: bool) -> Iterator[VideoResult]:
    from joblib import Parallel, delayed, parallel_config

    # One OpenCV thread per worker when workers run side by side: processes, not threads, give the parallelism.
    single_thread = engine != "local" or n_jobs > 1
    tasks = (delayed(process_video)(job, config, overwrite, single_thread) for job in jobs)
    with ExitStack() as stack:
        if engine == "local":
            backend, workers = ("loky" if n_jobs > 1 else "sequential"), n_jobs
        else:
            stack.enter_context(_cluster(engine, address))
            backend, workers = engine, -1
        stack.enter_context(parallel_config(backend=backend, n_jobs=workers))
        yield from Parallel(return_as="generator_unordered")(tasks)


@contextmanager
def _cluster(engine: str, address: str | None) -> Iterator[None]:
    from .errors import require

    if engine == "dask":
        distributed = require("distributed", "dask", "--engine dask")
        try:
            client = distributed.Client(address) if address else distributed.Client(processes=True)
        except OSError as exc:
            raise ConfigError(f"cannot reach the Dask scheduler at {address!r}: {exc}") from None
        with client:
            yield
    else:
        ray = require("ray", "ray", "--engine ray")
        from ray.util.joblib import register_ray

        try:
            ray.init(address=address, ignore_reinit_error=True, log_to_driver=False)
        except ConnectionError as exc:
            raise ConfigError(f"cannot reach the Ray cluster at {address!r}: {exc}") from None
        register_ray()
        try:
            yield
        finally:
            ray.shutdown()


@contextmanager
def _progress_bar(total: int, enabled: bool) -> Iterator[Any]:
    from tqdm import tqdm

    with tqdm(total=total, unit="video", file=sys.stderr, disable=not enabled, dynamic_ncols=True) as bar:
        yield bar


def _write_report(out_root: Path, report: BatchReport, config: ExtractConfig, engine: str, n_jobs: int) -> None:
    with open(out_root / FAILURES_NAME, "w") as f:
        for failure in report.failures:
            f.write(json.dumps({"source": failure.source, "output": failure.output, "reason": failure.reason}) + "\n")
    data = {
        "total": report.total, "done": report.done, "skipped": report.skipped, "failed": report.failed,
        "pairs": report.pairs, "seconds": round(report.seconds, 3),
        "pairs_per_second": round(report.pairs_per_second, 3), "settings_mismatch": report.mismatched,
        "engine": engine, "jobs": n_jobs, "config": asdict(config),
    }
    temp = out_root / f".{REPORT_NAME}.tmp"
    temp.write_text(json.dumps(data, indent=1))
    os.replace(temp, out_root / REPORT_NAME)
