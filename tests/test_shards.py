"""Shards: N jobs on one output tree, each its own deterministic part of the video list, never touching each
other's videos, temporaries or records; merged by `flowprep report`."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from batchdata import kill_group, output_digest, start_cli, temporaries, tree_and_clean_run, wait_for
from conftest import REPO, checkout_env, run_cli

from flowprep.batch import Shard, discover, parse_shard, select_shard
from flowprep.errors import ConfigError
from flowprep.store import finished_meta

ARGS = ("--algo", "dis", "-q")


def _fake_tree(root, classes: int, per_class: int, first: int = 0):
    for c in range(classes):
        (root / f"class_{c}").mkdir(parents=True, exist_ok=True)
        for v in range(first, first + per_class):
            (root / f"class_{c}" / f"v_{c}_{v:04d}.mp4").write_bytes(b"")
    return root


@pytest.mark.parametrize("count", [2, 3, 7, 16])
def test_shards_are_disjoint_complete_and_keep_their_videos(tmp_path, count):
    videos = _fake_tree(tmp_path / "videos", classes=5, per_class=60)
    jobs = discover(videos, tmp_path / "flow")
    parts = [select_shard(jobs, tmp_path / "flow", Shard(k, count)) for k in range(1, count + 1)]
    # Complete, and disjoint: no job twice.
    assert sorted((j for part in parts for j in part), key=str) == sorted(jobs, key=str)
    assert all(len(part) > 0.5 * len(jobs) / count for part in parts)  # roughly balanced (300 videos)
    assert [select_shard(jobs, tmp_path / "flow", Shard(k, count)) for k in range(1, count + 1)] == parts

    # Videos added later land in some shard; the others keep theirs (same output root, any spelling of it).
    _fake_tree(videos, classes=6, per_class=10, first=60)
    grown = discover(videos, tmp_path / "x" / ".." / "flow")
    for k, part in enumerate(parts, 1):
        kept = {j.source for j in select_shard(grown, tmp_path / "x" / ".." / "flow", Shard(k, count))}
        assert {j.source for j in part} <= kept


def test_shard_assignment_is_the_same_in_every_process(tmp_path):
    """A hash salted per process (Python's hash()) would give each machine of a cluster other parts."""
    names = [f"class_{i % 7}/v_{i}" for i in range(50)]
    code = ("import sys; from flowprep.batch import Shard; "
            "print([k for n in sys.argv[1:] for k in range(1, 6) if Shard(k, 5).owns(n)])")
    outputs = {subprocess.run([sys.executable, "-c", code, *names], cwd=REPO, capture_output=True, text=True,
                              env={**checkout_env(), "PYTHONHASHSEED": seed}, check=True).stdout
               for seed in ("1", "2")}
    assert outputs == {str([k for n in names for k in range(1, 6) if Shard(k, 5).owns(n)]) + "\n"}


def test_parse_shard_from_text_and_slurm():
    assert parse_shard("2/3") == Shard(2, 3) and parse_shard("1/1") == Shard()
    for bad in ("0/3", "4/3", "3", "a/b", "1/0"):
        with pytest.raises(ConfigError, match="shard must be K/N"):
            parse_shard(bad)
    # --array=0-7: task 5 of 8 is shard 6/8; --array=1-4 (MIN 1): task 1 is shard 1/4.
    assert parse_shard("slurm", {"SLURM_ARRAY_TASK_ID": "5", "SLURM_ARRAY_TASK_COUNT": "8"}) == Shard(6, 8)
    assert parse_shard("slurm", {"SLURM_ARRAY_TASK_ID": "1", "SLURM_ARRAY_TASK_MIN": "1",
                                 "SLURM_ARRAY_TASK_MAX": "4"}) == Shard(1, 4)
    assert parse_shard("slurm", {"SLURM_ARRAY_TASK_ID": "8", "SLURM_ARRAY_TASK_MIN": "0", "SLURM_ARRAY_TASK_MAX": "12",
                                 "SLURM_ARRAY_TASK_STEP": "4"}) == Shard(3, 4)  # --array=0-12:4
    with pytest.raises(ConfigError, match="SLURM_ARRAY_TASK_ID is not set"):
        parse_shard("slurm", {})


def test_a_bad_shard_is_a_usage_error(tmp_path):
    result = run_cli("extract", str(tmp_path), str(tmp_path / "flow"), "--shard", "4/3")
    assert result.returncode == 2 and "shard must be K/N with 1 <= K <= N, got 4/3" in result.stderr


videos, clean = tree_and_clean_run(3, 4, *ARGS)  # 12 copies of a real clip in 3 class folders (~0.4 s each with DIS)


@pytest.mark.slow
def test_three_shards_at_once_one_killed_then_rerun_give_the_single_run_tree(videos, clean, tmp_path):
    out = tmp_path / "flow"
    jobs = discover(videos, out)
    parts = {k: select_shard(jobs, out, Shard(k, 3)) for k in (1, 2, 3)}
    victim = max(parts, key=lambda k: len(parts[k]))
    assert len(parts[victim]) >= 5
    processes = {k: start_cli("extract", str(videos), str(out), *ARGS, "--shard", f"{k}/3") for k in parts}

    def victim_temporaries() -> list:
        mine = {Path(j.output) for j in parts[victim]}
        return [t for t in temporaries(out) if t.parent / t.name[1:t.name.index(".flowprep-tmp-")] in mine]

    wait_for(lambda: any(finished_meta(j.output) for j in parts[victim]) and victim_temporaries()
             or processes[victim].poll() is not None, 60, "the victim mid-way")
    kill_group(processes[victim].pid)
    processes[victim].wait()
    left = victim_temporaries()  # its work in progress
    finished_by_victim = {j.output for j in parts[victim] if finished_meta(j.output)}
    assert left and 0 < len(finished_by_victim) < len(parts[victim])
    for k, process in processes.items():
        if k != victim:
            assert process.wait(timeout=120) == 0, process.communicate()[1]

    # The others neither touched the victim's temporaries nor took its videos.
    assert temporaries(out) == left
    assert {j.output for j in jobs if finished_meta(j.output)} == finished_by_victim | {
        j.output for k in parts if k != victim for j in parts[k]}
    # A rerun of another shard (which cleans its own temporaries first) leaves them too.
    other = next(k for k in parts if k != victim)
    assert run_cli("extract", str(videos), str(out), *ARGS, "--shard", f"{other}/3").returncode == 0
    assert temporaries(out) == left
    merged = run_cli("report", str(out))
    assert merged.returncode == 1 and f"MISSING report.shard-{victim}-of-3.json" in merged.stdout

    result = run_cli("extract", str(videos), str(out), *ARGS, "--shard", f"{victim}/3")
    assert result.returncode == 0, result.stderr
    assert temporaries(out) == [] and output_digest(out) == clean
    report = json.loads((out / f"report.shard-{victim}-of-3.json").read_text())
    assert report["shard"] == f"{victim}/3" and report["skipped"] == len(finished_by_victim)
    merged = run_cli("report", str(out))
    assert merged.returncode == 0, merged.stdout
    assert "3 report(s)" in merged.stdout and "12 videos: " in merged.stdout and merged.stdout.strip().endswith(
        "complete")


@pytest.mark.slow
def test_shards_of_different_counts_at_once_never_work_on_the_same_video(videos, clean, tmp_path):
    """docs/batch.md's case: a smaller array resubmitted while the old one still runs. Shard 2/3 starts while
    2/2 is mid-way: neither removes the other's temporaries, no finished video is replaced (computed twice), a
    video the other run holds fails as busy, named; a run of the whole list then completes the clean tree."""
    out = tmp_path / "flow"
    jobs = discover(videos, out)
    both = {j.output for j in select_shard(jobs, out, Shard(2, 2))} & {j.output for j in
                                                                      select_shard(jobs, out, Shard(2, 3))}
    assert len(both) >= 2  # the two runs share videos
    inodes: dict[str, int] = {}  # output -> inode of the finished folder first seen there

    def watch() -> None:
        for output in both:
            if output not in inodes and finished_meta(output):
                inodes[output] = os.stat(output).st_ino

    first = start_cli("extract", str(videos), str(out), *ARGS, "--shard", "2/2")
    wait_for(lambda: (watch(), inodes)[1] and temporaries(out) or first.poll() is not None, 60, "2/2 mid-way")
    second = start_cli("extract", str(videos), str(out), *ARGS, "--shard", "2/3")
    while first.poll() is None or second.poll() is None:
        watch()
        time.sleep(0.005)
    watch()
    for process in (first, second):
        stderr = process.communicate()[1]
        assert process.returncode in (0, 1) and "vanished" not in stderr, stderr
        failed = [line for line in stderr.splitlines() if line.strip().startswith("FAILED")]
        assert all("another flowprep run is processing this video right now" in line for line in failed), stderr
    assert all(os.stat(output).st_ino == inode for output, inode in inodes.items())  # none replaced
    assert temporaries(out) == [] and not list(out.rglob("*.flowprep-lock"))
    result = run_cli("extract", str(videos), str(out), *ARGS)
    assert result.returncode == 0, result.stderr
    assert output_digest(out) == clean


@pytest.mark.slow
def test_report_merges_the_newest_shard_count_and_calls_it_incomplete_when_it_is(videos, tmp_path):
    """Shards 1-3 of 3 finished; a source is then cut short and its output removed; shards 1/2 and 2/2 run and
    one of them fails that video: `flowprep report` adds up the N=2 reports, the newest, says the N=3 ones are
    superseded, and calls the tree INCOMPLETE (it added up N=3, the largest, and called it complete)."""
    out = tmp_path / "flow"
    tree = tmp_path / "videos"
    shutil.copytree(videos, tree)
    for k in (1, 2, 3):
        assert run_cli("extract", str(tree), str(out), *ARGS, "--shard", f"{k}/3").returncode == 0
    merged = run_cli("report", str(out))
    assert merged.returncode == 0 and merged.stdout.strip().endswith("complete"), merged.stdout
    victim = tree / "C1" / "v2.mp4"
    victim.write_bytes(victim.read_bytes()[:2000])
    shutil.rmtree(out / "C1" / "v2")
    codes = [run_cli("extract", str(tree), str(out), *ARGS, "--shard", f"{k}/2").returncode for k in (1, 2)]
    assert sorted(codes) == [0, 1]
    merged = run_cli("report", str(out))
    assert merged.returncode == 1, merged.stdout
    assert "2 report(s) (report.shard-1-of-2.json, report.shard-2-of-2.json): 12 videos: 11 done" not in merged.stdout
    assert "(report.shard-1-of-2.json, report.shard-2-of-2.json): 12 videos: 0 done, 11 skipped, 1 failed" \
        in merged.stdout
    assert f"FAILED {victim}" in merged.stdout and merged.stdout.strip().endswith("INCOMPLETE")
    assert "SUPERSEDED report.shard-1-of-3.json, report.shard-2-of-3.json, report.shard-3-of-3.json (an older " \
           "run of 3 shards: not counted)" in merged.stdout


def test_report_names_the_shards_that_ended_early(tmp_path):
    """A shard interrupted (Ctrl-C, SIGTERM) or stopped (full disk) counts as ended early, whatever its counts say:
    the tree is INCOMPLETE and `flowprep report` exits 1 naming it."""
    parts = {1: {"interrupted": True, "signal": "SIGTERM"}, 2: {"stopped": "disk full"}, 3: {}}
    for k, ending in parts.items():
        (tmp_path / f"report.shard-{k}-of-3.json").write_text(json.dumps({"total": 2, "done": 2, **ending}))
        (tmp_path / f"failures.shard-{k}-of-3.jsonl").write_text("")
    merged = run_cli("report", str(tmp_path))
    assert merged.returncode == 1, merged.stdout
    assert "6 videos: 6 done, 0 skipped, 0 failed, 0 not processed" in merged.stdout
    assert "ENDED EARLY report.shard-1-of-3.json: terminated by SIGTERM" in merged.stdout
    assert "ENDED EARLY report.shard-2-of-3.json: stopped (disk full)" in merged.stdout
    assert "ENDED EARLY report.shard-3-of-3.json" not in merged.stdout
    assert merged.stdout.strip().endswith("INCOMPLETE")


def test_the_same_shard_twice_is_refused_and_a_whole_run_excludes_shards(tmp_path):
    import fcntl

    out = tmp_path / "flow"
    out.mkdir()
    video = REPO.parent / "shared" / "data" / "videos" / "rubber-whale.mp4"
    with open(out / ".flowprep.shard-2-of-3.lock", "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)  # as a running shard 2/3 holds it
        result = run_cli("extract", str(video), str(out), *ARGS, "--shard", "2/3")
        assert result.returncode == 2 and "a run of this shard is writing into" in result.stderr
        result = run_cli("extract", str(video), str(out), *ARGS, "--shard", "1/3")
        assert result.returncode == 0, result.stderr  # another shard runs beside it
        result = run_cli("extract", str(video), str(out), *ARGS)
        assert result.returncode == 0  # shards hold the tree's lock shared only while they run
    with open(out / ".flowprep.lock", "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)  # as a running whole-list run holds it
        result = run_cli("extract", str(video), str(out), *ARGS, "--shard", "1/3")
        assert result.returncode == 2 and "a run of the whole list is writing into" in result.stderr


def test_report_without_any_run_is_a_usage_error(tmp_path):
    result = run_cli("report", str(tmp_path))
    assert result.returncode == 2 and "holds no report.json nor report.shard-K-of-N.json" in result.stderr
