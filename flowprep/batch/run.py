"""run_batch: the whole run, from the jobs to the report (reader -> workers -> writer)."""
from __future__ import annotations

import os
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import closing, contextmanager
from typing import Any

from ..config import ExtractConfig
from ..errors import ConfigError
from ..flow import check_flow_config
from ..store import ObjectStore, StorageOptions, output_name, parse_location
from .engines import DASK_IN_FLIGHT, ENGINES, run_on_engine
from .reports import BatchReport, record_names, write_report
from .roots import LocalRoot, ObjectRoot
from .shards import Shard, select_shard
from .stopping import BatchInterrupted, BatchStopped, Terminated, sigterm_stops_the_run
from .video import VideoJob, VideoResult



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
    storage: StorageOptions = StorageOptions(),
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
    `storage` (--storage-option) is applied here and in every worker; apply it before `discover` too.
    """
    config = config or ExtractConfig()
    if engine not in ENGINES:
        raise ConfigError(f"engine must be one of {', '.join(ENGINES)}; got {engine!r}")
    # Bad settings fail the run once, not every video.
    check_flow_config(config.flow, here=engine == "local")
    if n_jobs < 1:
        raise ConfigError(f"jobs must be >= 1, got {n_jobs!r}")
    storage.apply()
    location = parse_location(out_root)
    jobs = select_shard(jobs, str(location), shard)
    target = (ObjectRoot(location, jobs, shard, config.store.pack) if isinstance(location, ObjectStore)
              else LocalRoot(location, jobs, shard, config.store.pack, engine))
    jobs, report_name = target.jobs, record_names(shard)[1]
    with target.session(), sigterm_stops_the_run() as terminated:
        report = BatchReport(total=len(jobs), record=report_name)
        reported: set[str] = set()  # outputs of the jobs that got a result
        started = time.perf_counter()
        stop = threading.Event()  # set when the storage fails: start no more videos, collect those running
        runnable, collisions = _split_collisions(jobs, config.store.pack)
        runnable, settled = target.settle(runnable, config, overwrite)  # an object store's listing settles some
        for result in (*collisions, *settled):
            report.add(result)
            reported.add(result.output)
            target.note(result)
        try:
            # closing(): on Ctrl-C the engine must stop its workers before the temporaries are removed.
            with _progress_bar(len(jobs), progress) as bar, \
                    closing(run_on_engine(runnable, config, engine, n_jobs, address, overwrite,
                                           dask_in_flight, stop, storage)) as results:
                bar.update(len(collisions) + len(settled))
                for result in results:
                    report.add(result)
                    target.note(result)
                    if result.status != "stopped":
                        reported.add(result.output)
                    if report.stopped:
                        stop.set()
                    report.seconds = time.perf_counter() - started
                    bar.set_postfix_str(f"{report.pairs_per_second:.2f} pairs/s, {report.failed} failed",
                                        refresh=False)
                    bar.update(1)
        except BaseException as exc:
            # Ctrl-C or a lost cluster: workers may have left temporaries behind; none of them looks finished.
            target.clean()
            if not isinstance(exc, KeyboardInterrupt):
                raise
            report.interrupted = "SIGTERM" if isinstance(exc, Terminated) or terminated.is_set() else "SIGINT"
            report.note_unprocessed(jobs, reported)
            report.seconds = time.perf_counter() - started
            target.write_index(report)
            write_report(target, report, config, engine, n_jobs, shard)
            raise BatchInterrupted(report) from None
        if engine != "local" or report.stopped:
            # Every task has ended: a temporary left now is a dead remote worker's (Dask retries a lost worker's
            # task elsewhere), or one a stopped worker could not remove. Local runs remove a dead worker's
            # temporary at once.
            target.clean()
        report.note_unprocessed(jobs, reported)
        report.seconds = time.perf_counter() - started
        target.write_index(report)
        write_report(target, report, config, engine, n_jobs, shard)
        if report.stopped or report.unwritten:
            raise BatchStopped(report, location, report.stopped or report.unwritten)
    return report


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


@contextmanager
def _progress_bar(total: int, enabled: bool) -> Iterator[Any]:
    from tqdm import tqdm

    with tqdm(total=total, unit="video", file=sys.stderr, disable=not enabled, dynamic_ncols=True) as bar:
        yield bar
