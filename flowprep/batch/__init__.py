"""Batch runs: discover videos, skip finished ones, run the pipeline on an engine, report per video.

reader (discover) -> workers (process_video: paths and a frozen config in, a VideoResult out, never an
exception) -> writer (failures.jsonl, then report.json last as the run's done marker).

One module per seam: discover, shards, video (one video's work in a worker), engines (local, Dask, Ray),
reports (a run's report and the merge of a tree's), stopping (full disk, Ctrl-C, SIGTERM), locks (the run's
locks on the output root), run (run_batch, which ties them together).
"""
from .discover import LIST_EXTENSIONS, discover
from .engines import DASK_IN_FLIGHT, ENGINES, SINGLE_THREAD_ENV
from .locks import LOCK_NAME
from .reports import FAILURES_NAME, REPORT_NAME, BatchReport, MergedReport, merge_reports, record_names
from .run import run_batch
from .shards import Shard, parse_shard, select_shard
from .stopping import (EXIT_INTERRUPTED, EXIT_STOPPED, EXIT_TERMINATED, BatchInterrupted, BatchStopped,
                       Terminated)
from .video import STOPPING_ERRNOS, VideoJob, VideoResult, process_video, root_problem

__all__ = [
    "BatchInterrupted", "BatchReport", "BatchStopped", "DASK_IN_FLIGHT", "ENGINES", "EXIT_INTERRUPTED", "EXIT_STOPPED",
    "EXIT_TERMINATED", "FAILURES_NAME", "LIST_EXTENSIONS", "LOCK_NAME", "MergedReport", "REPORT_NAME",
    "SINGLE_THREAD_ENV", "STOPPING_ERRNOS", "Shard", "Terminated", "VideoJob", "VideoResult", "discover",
    "merge_reports", "parse_shard", "process_video", "record_names", "root_problem", "run_batch", "select_shard",
]
