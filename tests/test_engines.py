"""The same command on every engine gives the same output tree: local (1 and 2 processes), Dask, Ray.

Dask runs as a user would run it: `dask scheduler` and `dask worker` started from the shell (here as
subprocesses on 127.0.0.1), the CLI pointed at the scheduler with --address.
"""
from __future__ import annotations

import json
import shutil

import pytest
from batchdata import (
    CARPHONE, broken_videos, class_tree, dask_cluster_at, free_port, kill_holders_while_running, output_digest,
    start_cli, temporaries,
)
from conftest import VIDEOS, run_cli

from flowprep import DecodeConfig, ExtractConfig, FlowConfig
from flowprep.batch import discover, run_batch
from flowprep.store import finished_meta

pytestmark = pytest.mark.slow
ARGS = ("--algo", "dis", "-q")


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    """Real clips in class folders plus two broken files (one fails, one needs the PyAV fallback)."""
    root = tmp_path_factory.mktemp("videos")
    (root / "A").mkdir()
    (root / "B").mkdir()
    shutil.copyfile(CARPHONE, root / "A" / "carphone.mp4")
    shutil.copyfile(VIDEOS / "rubber-whale.mp4", root / "B" / "whale.mp4")
    bad = broken_videos(tmp_path_factory.mktemp("bad"), tmp_path_factory.mktemp("work"))
    shutil.copyfile(bad["lying_header"], root / "B" / "lying.mp4")
    shutil.copyfile(bad["not_a_video"], root / "B" / "notes.avi")
    return root


@pytest.fixture(scope="module")
def local(videos, tmp_path_factory):
    out = tmp_path_factory.mktemp("local")
    result = run_cli("extract", str(videos), str(out), *ARGS)
    assert result.returncode == 1, result.stderr  # notes.avi fails
    return _outcome(out)


def _outcome(out):
    """What must not depend on the engine: every output file, and which videos failed."""
    assert temporaries(out) == []
    failures = sorted(json.loads(line)["source"] for line in (out / "failures.jsonl").open())
    return output_digest(out), failures


def _assert_same(outcome, expected):
    (digest, failures), (expected_digest, expected_failures) = outcome, expected
    assert failures == expected_failures
    assert sorted(digest) == sorted(expected_digest)
    assert [name for name in digest if digest[name] != expected_digest[name]] == []


def test_local_processes_match_a_single_process(videos, local, tmp_path):
    # Workers run OpenCV single-threaded; flow must not depend on the thread count.
    result = run_cli("extract", str(videos), str(tmp_path), "--jobs", "2", *ARGS)
    assert result.returncode == 1
    _assert_same(_outcome(tmp_path), local)


@pytest.fixture
def dask_cluster(tmp_path_factory):
    with dask_cluster_at(tmp_path_factory.mktemp("dask")) as (address, _):
        yield address


def test_dask_cluster_gives_the_local_tree(videos, local, dask_cluster, tmp_path):
    result = run_cli("extract", str(videos), str(tmp_path), "--engine", "dask", "--address", dask_cluster,
                     "--algo", "dis")
    assert result.returncode == 1, result.stderr
    _assert_same(_outcome(tmp_path), local)
    assert "4/4" in result.stderr  # the progress bar reached the end with remote workers
    assert json.loads((tmp_path / "report.json").read_text())["engine"] == "dask"


def test_dask_runs_every_video_beyond_its_in_flight_window(tmp_path_factory, tmp_path):
    """8 videos, 3 in flight: the five others run only if each finished task is replaced by the next video."""
    videos = class_tree(tmp_path_factory.mktemp("videos"), classes=2, per_class=4, clip=VIDEOS / "rubber-whale.mp4")
    config = ExtractConfig(decode=DecodeConfig(short_side=96), flow=FlowConfig(algo="dis"))
    with dask_cluster_at(tmp_path_factory.mktemp("dask")) as (address, _):
        report = run_batch(discover(videos, tmp_path), tmp_path, config, engine="dask", address=address,
                           dask_in_flight=3)
    assert (report.total, report.done, report.not_processed) == (8, 8, [])
    assert all(finished_meta(tmp_path / f"C{c}" / f"v{v}") for c in range(2) for v in range(4))


@pytest.mark.parametrize("target_class", ["C0", "C1"], ids=["first-submitted", "last-submitted"])
def test_dask_video_that_kills_its_workers_fails_alone(tmp_path_factory, tmp_path, target_class):
    """Whenever a worker opens one video it is SIGKILLed (a decoder crash, the OOM killer); the scheduler gives
    up on that task (allowed-failures 0 here, 3 by default) and the video fails, named; the others finish."""
    videos = class_tree(tmp_path_factory.mktemp("videos"), classes=2, per_class=1)
    # Two one-thread workers, a video each, whichever is submitted first: a task on the dying worker dies with
    # it (and, with allowed-failures 0, fails too), which is Dask's rule. With one worker the other video was
    # queued behind the target (it failed every time when the target was submitted first), or had finished
    # but not yet told the scheduler when the kill came (it failed once in four runs). The video is long enough
    # (0.4 s) to be caught open.
    target = videos / target_class / "v0.mp4"
    other = tmp_path / ("C1" if target_class == "C0" else "C0") / "v0"
    config = {"DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES": "0"}
    with dask_cluster_at(tmp_path_factory.mktemp("dask"), config, workers=2) as (address, worker_group):
        process = start_cli("extract", str(videos), str(tmp_path), "--engine", "dask", "--address", address, *ARGS)
        stderr, killed = kill_holders_while_running(process, worker_group, target, tmp_path / target_class / "v0")
    assert len(killed) == 1 and process.returncode == 1, stderr
    failures = [json.loads(line) for line in (tmp_path / "failures.jsonl").open()]
    assert [failure["source"] for failure in failures] == [str(target)]
    assert "the worker process died while processing this video (KilledWorker" in failures[0]["reason"]
    assert finished_meta(other) is not None and not (tmp_path / target_class / "v0").exists()
    assert temporaries(tmp_path) == []


def test_unreachable_dask_scheduler_is_a_usage_error(videos, tmp_path, monkeypatch):
    monkeypatch.setenv("DASK_DISTRIBUTED__COMM__TIMEOUTS__CONNECT", "2s")  # Dask's default waits 30 s
    address = f"tcp://127.0.0.1:{free_port()}"
    result = run_cli("extract", str(videos), str(tmp_path), "--engine", "dask", "--address", address, *ARGS)
    assert result.returncode == 2 and f"cannot reach the Dask scheduler at {address!r}" in result.stderr


@pytest.mark.slow
def test_ray_video_that_kills_its_workers_fails_alone(tmp_path_factory, tmp_path):
    """Whenever a Ray worker opens one video it is SIGKILLed (a decoder crash, the OOM killer): Ray retries the
    task (3 times by default), then the video fails, named, as on Dask, and the others finish (before: Ray's
    WorkerCrashedError ended the run)."""
    pytest.importorskip("ray")
    videos = class_tree(tmp_path_factory.mktemp("videos"), classes=2, per_class=1)
    target, other = videos / "C0" / "v0.mp4", tmp_path / "C1" / "v0"
    process = start_cli("extract", str(videos), str(tmp_path), "--engine", "ray", *ARGS)
    stderr, killed = kill_holders_while_running(process, process.pid, target, tmp_path / "C0" / "v0")
    assert killed and process.returncode == 1, stderr
    failures = [json.loads(line) for line in (tmp_path / "failures.jsonl").open()]
    assert [failure["source"] for failure in failures] == [str(target)], stderr
    assert "the worker process died while processing this video (WorkerCrashedError" in failures[0]["reason"]
    assert finished_meta(other) is not None and not (tmp_path / "C0" / "v0").exists()
    assert temporaries(tmp_path) == []


def test_ray_local_instance_gives_the_local_tree(videos, local, tmp_path):
    pytest.importorskip("ray")
    result = run_cli("extract", str(videos), str(tmp_path), "--engine", "ray", *ARGS)
    assert result.returncode == 1, result.stderr
    _assert_same(_outcome(tmp_path), local)
    assert json.loads((tmp_path / "report.json").read_text())["engine"] == "ray"
