"""Killed and interrupted runs: kill -9 at a random moment (seeded) or Ctrl-C, rerun, compare with a clean run."""
from __future__ import annotations

import json
import random
import os
import signal
import threading
import time
import zipfile

import pytest
from batchdata import (
    class_tree, group_alive, group_commands, kill_group, kill_holders_while_running, output_digest, start_cli, temporaries,
    wait_for,
)
from conftest import run_cli

from flowprep.batch import discover
from flowprep.batch.engines import run_on_local_processes
from flowprep.config import ExtractConfig, FlowConfig
from flowprep.store import finished_meta

pytestmark = pytest.mark.slow
ARGS = ("--algo", "dis", "-q")


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    """8 copies of a real clip in 2 class folders: ~0.5 s each, so a run lasts long enough to be killed."""
    return class_tree(tmp_path_factory.mktemp("videos"), classes=2, per_class=4)


@pytest.fixture(scope="module")
def clean(videos, tmp_path_factory):
    """Digests of uninterrupted runs, per pack form."""
    digests = {}
    for pack in ("dir", "zip"):
        out = tmp_path_factory.mktemp(f"clean_{pack}")
        result = run_cli("extract", str(videos), str(out), "--pack", pack, *ARGS)
        assert result.returncode == 0, result.stderr
        digests[pack] = output_digest(out)
    assert len(digests["dir"]) == 8 * (2 * 119 + 1)
    return digests


def _finished(out, pack):
    suffix = ".zip" if pack == "zip" else ""
    return [p for p in out.glob(f"C*/v*{suffix}") if finished_meta(p.with_suffix("") if suffix else p, pack)]


def _kill_mid_run(videos, out, seed, *extra, whole_group=True):
    """Start a run, SIGKILL it at a seeded random moment after its first video finished; returns its pgid."""
    pack = "zip" if "zip" in extra else "dir"
    process = start_cli("extract", str(videos), str(out), *ARGS, *extra)
    wait_for(lambda: _finished(out, pack) or process.poll() is not None, 60, "a first finished video")
    assert process.poll() is None, "the run ended before it could be killed: give it more videos"
    time.sleep(random.Random(seed).uniform(0.0, 1.5))
    if whole_group:
        kill_group(process.pid)
    else:
        process.kill()  # the parent only, as the OOM killer would: its workers are orphaned
    process.wait()
    return process.pid


@pytest.mark.parametrize("seed", [1, 2])
def test_kill_9_then_rerun_gives_the_clean_tree(videos, clean, tmp_path, seed):
    out = tmp_path / "flow"
    _kill_mid_run(videos, out, seed)
    done_before = len(_finished(out, "dir"))
    assert 0 < done_before < 8
    result = run_cli("extract", str(videos), str(out), *ARGS)
    assert result.returncode == 0, result.stderr
    report = json.loads((out / "report.json").read_text())
    assert report["skipped"] >= done_before and report["done"] + report["skipped"] == 8
    assert output_digest(out) == clean["dir"]
    assert temporaries(out) == []


def test_workers_of_a_killed_parent_exit_and_the_rerun_is_clean(videos, clean, tmp_path):
    out = tmp_path / "flow"
    pgid = _kill_mid_run(videos, out, 3, "--jobs", "2", whole_group=False)
    try:
        # Loky's own workers would finish their video and idle for minutes; flowprep's watchdog ends them.
        wait_for(lambda: not group_alive(pgid), 10, "the orphaned workers to exit")
    finally:
        kill_group(pgid)
    result = run_cli("extract", str(videos), str(out), "--jobs", "2", *ARGS)
    assert result.returncode == 0, result.stderr
    assert output_digest(out) == clean["dir"]
    assert temporaries(out) == []


def test_killed_zip_run_leaves_no_pack_that_looks_finished(videos, clean, tmp_path):
    out = tmp_path / "flow"
    _kill_mid_run(videos, out, 4, "--pack", "zip")
    for pack in out.glob("C*/*.zip"):  # every visible pack is complete: meta.json and all its pairs
        with zipfile.ZipFile(pack) as z:
            assert z.testzip() is None
            meta = json.loads(z.read("meta.json"))
            assert len([n for n in z.namelist() if n.startswith("flow_")]) == 2 * meta["flow_pairs"]
    result = run_cli("extract", str(videos), str(out), "--pack", "zip", *ARGS)
    assert result.returncode == 0, result.stderr
    assert output_digest(out) == clean["zip"] == clean["dir"]
    assert temporaries(out) == []


def test_ctrl_c_stops_cleanly_and_the_rerun_resumes(videos, clean, tmp_path):
    out = tmp_path / "flow"
    process = start_cli("extract", str(videos), str(out), "--jobs", "2", *ARGS)
    wait_for(lambda: _finished(out, "dir") or process.poll() is not None, 60, "a first finished video")
    kill_group(process.pid, signal.SIGINT)  # a terminal's Ctrl-C reaches the whole foreground group
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    assert "interrupted" in stderr and "not processed (interrupted)" in stderr
    assert temporaries(out) == []
    report = json.loads((out / "report.json").read_text())
    # A worker may commit a video whose result the parent never received: finished on disk, not counted.
    assert report["interrupted"] is True and report["done"] <= len(_finished(out, "dir")) < 8
    result = run_cli("extract", str(videos), str(out), *ARGS)
    assert result.returncode == 0, result.stderr
    assert json.loads((out / "report.json").read_text())["interrupted"] is False
    assert output_digest(out) == clean["dir"]


@pytest.mark.parametrize("jobs, to_group", [("2", True), ("1", False)], ids=["jobs2-group", "jobs1-main-alone"])
def test_sigterm_stops_like_ctrl_c_with_its_own_exit_code(videos, clean, tmp_path, jobs, to_group):
    """SLURM's time limit and scancel send SIGTERM (to every process of the job, then SIGKILL after KillWait):
    the run stops, cleans up, writes its report naming the videos not processed, says so, exits 143."""
    out = tmp_path / "flow"
    process = start_cli("extract", str(videos), str(out), "--jobs", jobs, *ARGS)
    wait_for(lambda: _finished(out, "dir") or process.poll() is not None, 60, "a first finished video")
    if to_group:
        kill_group(process.pid, signal.SIGTERM)
    else:
        process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 143, stderr
    assert "Traceback" not in stderr and "leaked" not in stderr, stderr
    assert "not processed (terminated by SIGTERM)" in stderr and "NOT PROCESSED " in stderr
    assert "flowprep: terminated by SIGTERM: finished videos are kept; rerun the same command to resume" in stderr
    assert [command for command in group_commands(process.pid) if "popen_loky" in command] == []
    assert temporaries(out) == [] and not list(out.rglob("*.flowprep-lock"))
    report = json.loads((out / "report.json").read_text())
    assert report["interrupted"] is True and report["signal"] == "SIGTERM" and report["not_processed"]
    assert report["done"] <= len(_finished(out, "dir")) < 8
    result = run_cli("extract", str(videos), str(out), *ARGS)
    assert result.returncode == 0, result.stderr
    assert output_digest(out) == clean["dir"]


def _run_killing_holders(videos, out, target, times):
    """A --jobs 2 run whose worker holding `target` open is SIGKILLed up to `times` times: (process, stderr,
    pids killed)."""
    process = start_cli("extract", str(videos), str(out), "--jobs", "2", *ARGS)
    stderr, killed = kill_holders_while_running(process, process.pid, target,
                                                out / target.relative_to(videos).with_suffix(""), times)
    return process, stderr, killed


def test_a_video_whose_worker_died_once_is_tried_again(videos, clean, tmp_path):
    out = tmp_path / "flow"
    process, stderr, killed = _run_killing_holders(videos, out, videos / "C0" / "v1.mp4", times=1)
    assert len(killed) == 1 and process.returncode == 0, stderr
    report = json.loads((out / "report.json").read_text())
    assert report["done"] + report["skipped"] == 8 and report["failed"] == 0
    assert output_digest(out) == clean["dir"]
    assert temporaries(out) == []


def test_a_video_that_kills_its_worker_twice_fails_alone_and_the_run_goes_on(videos, clean, tmp_path):
    out = tmp_path / "flow"
    target = videos / "C1" / "v2.mp4"
    process, stderr, killed = _run_killing_holders(videos, out, target, times=3)
    assert len(killed) == 2 and process.returncode == 1, stderr
    failures = [json.loads(line) for line in (out / "failures.jsonl").read_text().splitlines()]
    assert [failure["source"] for failure in failures] == [str(target)]
    assert "the worker process died while processing this video (exit SIGKILL(-9), in both of its tries)" \
        in failures[0]["reason"]
    report = json.loads((out / "report.json").read_text())
    assert (report["done"], report["failed"]) == (7, 1)
    assert temporaries(out) == []
    assert output_digest(out) == {k: v for k, v in clean["dir"].items() if not k.startswith("C1/v2/")}
    result = run_cli("extract", str(videos), str(out), *ARGS)
    assert result.returncode == 0, result.stderr
    assert output_digest(out) == clean["dir"]


def test_closing_the_local_engine_returns_once_its_workers_are_dead(videos, tmp_path):
    """What Ctrl-C relies on: run_batch removes this run's temporaries as soon as the engine is closed, so no
    worker may still be running then to write one again. (A loky shutdown(wait=True) after shutdown(wait=False)
    waits for nothing: the workers were still alive here, and one left a temporary in a CI run.)"""
    # Loky processes of this test's engine only: idle workers of other pools in this process (joblib's reusable
    # executor, left by verify_tree(n_jobs=2) in an earlier test) are there before and stay after.
    others = set()

    def workers() -> set[str]:
        return {command for command in group_commands(os.getpgid(0)) if "popen_loky" in command} - others

    others = workers()
    (tmp_path / "flow").mkdir()  # run_batch's work
    config = ExtractConfig(flow=FlowConfig(algo="dis"))
    results = run_on_local_processes(discover(videos, tmp_path / "flow"), config, False, 2, threading.Event())
    first = next(results)
    assert first.status == "done", first
    # A third video begun (being written, or done): the one submitted after the first result was taken up by its
    # worker (closing at the instant of a submission makes loky's manager thread raise a KeyError of its own).
    wait_for(lambda: len(_finished(tmp_path / "flow", "dir")) + len(temporaries(tmp_path / "flow")) >= 3, 30,
             "a third video begun")
    assert len(workers()) == 2
    results.close()
    assert workers() == set()


def test_ctrl_c_to_the_main_process_alone_stops_its_workers_before_cleaning_up(videos, clean, tmp_path):
    """`kill -INT PID` reaches the main process only: it must stop its workers itself, and wait for them,
    before removing this run's temporaries."""
    out = tmp_path / "flow"
    process = start_cli("extract", str(videos), str(out), "--jobs", "2", *ARGS)
    wait_for(lambda: _finished(out, "dir") or process.poll() is not None, 60, "a first finished video")
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    # loky's worker processes, not its resource tracker (which exits once it sees the parent gone).
    assert [command for command in group_commands(process.pid) if "popen_loky" in command] == []
    assert temporaries(out) == []
    finished = len(_finished(out, "dir"))
    assert json.loads((out / "report.json").read_text())["done"] <= finished < 8
    time.sleep(1.0)  # a worker still running would commit a video after the report
    assert len(_finished(out, "dir")) == finished and temporaries(out) == []


def test_a_killed_run_leaves_no_earlier_report_vouching_for_the_tree(videos, tmp_path):
    """A report says a run finished: a run removes the stale one as it starts (a shard: the whole list's report;
    a run of the whole list: every shard's records too), so after kill -9 no report is left to call the tree
    complete."""
    out = tmp_path / "flow"

    def killed_mid_way(*extra: str) -> None:
        process = start_cli("extract", str(videos), str(out), *ARGS, "--overwrite", *extra)
        wait_for(lambda: any(f"-{process.pid}-" in t.name for t in temporaries(out)) or process.poll() is not None,
                 60, "a video being written by this run")  # (not a temporary the run killed before left)
        kill_group(process.pid)
        process.wait()

    assert run_cli("extract", str(videos), str(out), *ARGS).returncode == 0
    killed_mid_way("--shard", "1/2")
    assert not (out / "report.json").exists() and not list(out.glob("report*"))
    for k in (1, 2):
        assert run_cli("extract", str(videos), str(out), *ARGS, "--shard", f"{k}/2").returncode == 0
    assert run_cli("report", str(out)).returncode == 0
    killed_mid_way("--shard", "1/2")
    merged = run_cli("report", str(out))
    assert merged.returncode == 1 and "MISSING report.shard-1-of-2.json" in merged.stdout, merged.stdout
    killed_mid_way()
    assert not list(out.glob("report*")) and not list(out.glob("failures.shard-*"))
    assert run_cli("report", str(out)).returncode == 2  # no report at all: nothing vouches for the tree
