"""Engines: the local processes (loky), Dask and Ray; each yields VideoResults in completion order."""
from __future__ import annotations

import os
import re
import signal
import threading
from collections import Counter, deque
from collections.abc import Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, wait
from typing import Any

from ..config import ExtractConfig
from ..errors import ConfigError, require
from ..flow import device_kind
from ..store import StorageOptions, output_name, remove_temps_of_outputs
from .video import VideoJob, VideoResult, process_video

ENGINES = ("local", "dask", "ray")
DASK_IN_FLIGHT = 64  # videos submitted to a Dask cluster at a time, at least
# Local worker processes: one thread for the native libraries too (the processes give the parallelism).
SINGLE_THREAD_ENV = {name: "1" for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}


def run_on_engine(jobs: Sequence[VideoJob], config: ExtractConfig, engine: str, n_jobs: int,
                   address: str | None, overwrite: bool, dask_in_flight: int,
                   stop: threading.Event, storage: StorageOptions = StorageOptions()) -> Iterator[VideoResult]:
    """Results in completion order, so the progress bar moves as each video finishes, on every engine.

    Once `stop` is set no further video starts; those running finish.
    `storage` goes with every task: workers in other processes apply it themselves.
    """
    if not jobs:
        return
    # Workers that run side by side get one OpenCV thread each (single_thread=True): processes, not threads, give
    # the parallelism. (Flow is bit-identical for any OpenCV thread count; this is about speed, not results.)
    if engine == "local" and n_jobs == 1:
        yield from (process_video(job, config, overwrite, storage=storage) for job in jobs if not stop.is_set())
        return
    if engine == "local":
        yield from run_on_local_processes(jobs, config, overwrite, n_jobs, stop, storage)
        return
    if engine == "ray":
        yield from _run_on_ray(jobs, config, overwrite, address, stop, storage)
        return
    yield from _run_on_dask(jobs, config, overwrite, address, dask_in_flight, stop, storage)


def run_on_local_processes(jobs: Sequence[VideoJob], config: ExtractConfig, overwrite: bool,
                            n_jobs: int, stop: threading.Event,
                            storage: StorageOptions = StorageOptions()) -> Iterator[VideoResult]:
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
        args = (process_video, job, config, overwrite, True, os.getpid(), slot % gpus if gpus > 1 else None, storage)
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
                    remove_temps_of_outputs([output_name(job.output, pack)])
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


def _run_on_dask(jobs: Sequence[VideoJob], config: ExtractConfig, overwrite: bool, address: str | None,
                 window: int, stop: threading.Event, storage: StorageOptions) -> Iterator[VideoResult]:
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
            future = client.submit(process_video, job, config, overwrite, True, storage=storage, resources=resources,
                                   pure=False)
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


def _run_on_ray(jobs: Sequence[VideoJob], config: ExtractConfig, overwrite: bool, address: str | None,
                stop: threading.Event, storage: StorageOptions) -> Iterator[VideoResult]:
    """One Ray task per video, as many at a time as the cluster has CPUs (GPUs for a GPU job), each finished one
    replaced by the next video; results in completion order. Leaving (the end, Ctrl-C, SIGTERM) shuts Ray down,
    which ends this run's tasks: a local Ray's processes go with it, a cluster kills the tasks of a driver gone.

    A video whose task kills its worker every time (after Ray's retries) fails alone, named, as on Dask.
    Not Ray's pool (ray.util.multiprocessing): it hands an actor a chunk of len/(4 x actors) videos at a time
    (the progress bar moved by chunks), and its result thread outlives the pool: after a SIGTERM to the run's
    process group a second local Ray started (Ray's auto-init, from a thread) and the run waited 60 s for the
    killed head before it ended (exit 1).
    """
    ray = require("ray", "ray", "--engine ray")
    sigterm = signal.getsignal(signal.SIGTERM)
    try:
        ray.init(address=address, ignore_reinit_error=True, log_to_driver=False)
    except ConnectionError as exc:
        raise ConfigError(f"cannot reach the Ray cluster at {address!r}: {exc}") from None
    finally:
        # ray.init sets its own SIGTERM handler, sys.exit(15): the run's handler stops it cleanly instead (143).
        if sigterm is not None and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, sigterm)
    try:
        gpu = _uses_cuda(config)
        # A GPU job takes a whole GPU: Ray then gives each task its own (it sets CUDA_VISIBLE_DEVICES).
        task = ray.remote(process_video).options(num_gpus=1 if gpu else 0)
        slots = max(1, int(ray.cluster_resources().get("GPU" if gpu else "CPU", 1)))
        shared = ray.put(config)
        waiting = deque(jobs)
        running: list[Any] = []  # the tasks' object refs
        job_of: dict[Any, VideoJob] = {}
        while True:
            while waiting and len(running) < slots and not stop.is_set():
                job = waiting.popleft()
                running.append(task.remote(job, shared, overwrite, True, storage=storage))
                job_of[running[-1]] = job
            if not running:
                return
            (ready,), running = ray.wait(running, num_returns=1)
            job = job_of.pop(ready)
            try:
                result = ray.get(ready)
            except (ray.exceptions.WorkerCrashedError, ray.exceptions.OutOfMemoryError) as exc:
                # Ray retried the task on fresh workers first (a task's max_retries, 3 by default).
                result = _worker_died(job, f"{type(exc).__name__}, after Ray's retries")
            yield result
    finally:
        ray.shutdown()
