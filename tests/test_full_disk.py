"""Out of space and unwritable outputs, on real small tmpfs mounts: the run stops with one message and exit 3,
keeps what was finished, and the rerun after freeing space completes the clean run's tree."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from batchdata import output_digest, start_cli, temporaries, tree_and_clean_run, wait_for
from conftest import REPO, VIDEOS, checkout_env, run_cli

from flowprep.store import finished_meta
from flowprep.verify import verify_tree

pytestmark = pytest.mark.slow
ARGS = ("--algo", "dis", "-q")
# One carphone clip's 238 flow JPEGs (DIS) take 0.96 MB on tmpfs as files (a page each), about 0.35 MB as a zip:
# room for two or three of the eight outputs.
DISK_SIZE = {"dir": "3m", "zip": "1m"}


def _mount(point, *options: str) -> None:
    point.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", ",".join(options), "tmpfs", str(point)],
                            capture_output=True, text=True)
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root or CAP_SYS_ADMIN): {result.stderr.strip()}")


@pytest.fixture
def small_disk(tmp_path, request):
    """A real small tmpfs, DISK_SIZE of the pack form the test asks for (default dir); unmounted afterwards."""
    point = tmp_path / "disk"
    _mount(point, "size=" + DISK_SIZE[getattr(request, "param", "dir")])
    yield point
    subprocess.run(["umount", "-l", str(point)], check=False)


videos, clean = tree_and_clean_run(2, 4, *ARGS)  # 8 carphone copies in 2 class folders, and their clean run


@pytest.mark.parametrize("small_disk, extra", [("dir", ()), ("zip", ("--jobs", "2", "--pack", "zip"))],
                         ids=["serial", "jobs2-zip"], indirect=["small_disk"])
def test_a_full_disk_stops_the_run_and_the_rerun_completes_it(videos, clean, small_disk, extra):
    out = small_disk / "flow"
    result = run_cli("extract", str(videos), str(out), *ARGS, *extra)
    assert result.returncode == 3, result.stderr
    assert "Traceback" not in result.stderr
    message = [line for line in result.stderr.splitlines() if line.startswith("flowprep: stopped")]
    assert len(message) == 1, result.stderr
    assert "No space left on device" in message[0] and f"File system: {small_disk} (" in message[0]
    assert "rerun the same command to resume" in message[0]
    assert temporaries(out) == []
    finished = [job for job in (out / f"C{c}" / f"v{v}" for c in range(2) for v in range(4))
                if finished_meta(job, "zip" if extra else "dir")]
    assert 0 < len(finished) < 8 and f"{len(finished)} of 8 videos are finished" in message[0]
    assert verify_tree(out).ok  # what is there is complete
    if (out / "report.json").exists():  # written when the stop freed enough room, else said on stderr
        report = json.loads((out / "report.json").read_text())
        assert report["done"] == len(finished) and len(report["not_processed"]) == 8 - len(finished)
    else:
        assert "report.json could not be written" in result.stderr

    subprocess.run(["mount", "-o", "remount,size=20m", str(small_disk)], check=True)
    result = run_cli("extract", str(videos), str(out), *ARGS, *extra)
    assert result.returncode == 0, result.stderr
    assert output_digest(out) == clean and temporaries(out) == []


def test_a_read_only_output_is_a_usage_error_before_any_work(videos, tmp_path):
    read_only = tmp_path / "ro"
    _mount(read_only, "size=1m", "ro")
    try:
        for out in (read_only, read_only / "flow"):  # existing and unwritable; missing and not creatable
            result = run_cli("extract", str(videos), str(out), *ARGS)
            assert result.returncode == 2 and "Read-only file system" in result.stderr, result.stderr
            assert "Traceback" not in result.stderr and str(out) in result.stderr
    finally:
        subprocess.run(["umount", "-l", str(read_only)], check=False)


@pytest.mark.parametrize("extra", [(), ("--jobs", "2", "--pack", "zip")], ids=["serial", "jobs2-zip"])
def test_a_vanished_mount_at_the_output_root_itself_stops_the_run(videos, clean, small_disk, extra):
    """The output root is the mount point: after a lazy unmount the bare folder is still there, so only the file
    system's identity (st_dev) tells; the run stops with exit 3 and writes nothing, reports included, beneath it."""
    subprocess.run(["mount", "-o", "remount,size=20m", str(small_disk)], check=True)
    process = start_cli("extract", str(videos), str(small_disk), *ARGS, *extra)
    pack = "zip" if extra else "dir"
    wait_for(lambda: finished_meta(small_disk / "C0" / "v0", pack) or process.poll() is not None, 60,
             "a first finished video")
    subprocess.run(["umount", "-l", str(small_disk)], check=True)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 3, stderr
    assert "Traceback" not in stderr and "flowprep: stopped" in stderr and "rerun the same command" in stderr
    assert "is no longer the file system it was when the run began" in stderr
    time.sleep(0.2)
    # No file beneath the bare mount point: no pack, no report. (An empty class folder can appear when the unmount
    # falls between a worker's last check and its mkdir: harmless, and no check short of writing through a
    # descriptor of the root opened before could close that window.)
    assert [path for path in small_disk.rglob("*") if not path.is_dir()] == []


def test_a_vanished_mount_stops_the_run(videos, clean, small_disk):
    """The output's file system is unmounted mid-run (lazily, as a lost NFS server looks): the run stops at
    once, and writes nothing beneath the bare mount point."""
    subprocess.run(["mount", "-o", "remount,size=20m", str(small_disk)], check=True)
    out = small_disk / "flow"
    process = start_cli("extract", str(videos), str(out), *ARGS)
    wait_for(lambda: finished_meta(out / "C0" / "v0") or process.poll() is not None, 60, "a first finished video")
    subprocess.run(["umount", "-l", str(small_disk)], check=True)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 3, stderr
    assert "Traceback" not in stderr and "flowprep: stopped" in stderr and "rerun the same command" in stderr
    time.sleep(0.2)
    assert [path for path in small_disk.rglob("*") if not path.is_dir()] == []  # no file beneath the bare point


def _use_every_inode(folder) -> None:
    for count in range(100_000):
        try:
            (folder / f"filler{count}").touch()
        except OSError:
            return
    raise AssertionError(f"{folder}: still creating files after 100000")


@pytest.mark.parametrize("where", ["output folder", "lock file"])
def test_no_inodes_left_at_the_start_stops_with_exit_3_naming_the_inodes(tmp_path, where):
    """Inode quotas are the common full disk on clusters: with none left, creating the output folder or the run's
    lock file is the file system's fault, not a usage error; the message says the files (inodes) ran out."""
    disk = tmp_path / "disk"
    _mount(disk, "size=20m", "nr_inodes=32")
    try:
        out = disk / "flow"
        if where == "lock file":
            out.mkdir()
        _use_every_inode(disk)
        result = run_cli("extract", str(VIDEOS / "rubber-whale.mp4"), str(out), *ARGS)
        assert result.returncode == 3, result.stderr
        assert "Traceback" not in result.stderr and "Usage:" not in result.stderr
        assert "No space left on device" in result.stderr and "0 of 32 inodes (files) free: no file can be created, " \
            "whatever the free space" in result.stderr, result.stderr
        assert "1 not processed" in result.stderr and "rerun the same command" in result.stderr
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


def test_records_that_could_not_be_written_are_the_ones_named(tmp_path):
    """One inode left at the end of a run: failures.jsonl takes it and report.json finds none; the message names
    report.json alone (it said both), and the run counts as stopped."""
    disk = tmp_path / "disk"
    _mount(disk, "size=20m", "nr_inodes=64")
    try:
        out = disk / "flow"
        video = (VIDEOS / "rubber-whale.mp4", str(out), *ARGS)
        assert run_cli("extract", *map(str, video)).returncode == 0
        for record in ("report.json", "failures.jsonl"):
            (out / record).unlink()
        _use_every_inode(disk)
        (disk / "filler0").unlink()
        result = run_cli("extract", *map(str, video))
        assert result.returncode == 3, result.stderr
        assert f"NOT WRITTEN report.json could not be written in {out} (No space left on device)" in result.stderr
        assert "failures.jsonl and" not in result.stderr and (out / "failures.jsonl").read_text() == ""
        assert not (out / "report.json").exists() and temporaries(out) == []
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


IO_HOOKS = Path(__file__).parent / "io_hooks"


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_an_exceeded_quota_stops_the_run_like_a_full_disk(videos, clean, tmp_path, jobs):
    """EDQUOT (a user's block or file quota: what clusters enforce) is the file system's, not the video's: the
    run stops at once with exit 3 and one message, keeps the finished videos, and the rerun completes the tree.
    tmpfs quotas cannot be set here, so the subprocess's file creations under the output fail with EDQUOT
    after the 600th (io_hooks), as the quota would."""
    out = tmp_path / "flow"
    env = {**checkout_env(), "FLOWPREP_FAIL_ERRNO": "EDQUOT", "FLOWPREP_FAIL_AFTER": "600",
           "FLOWPREP_FAIL_UNDER": str(out)}
    env["PYTHONPATH"] = os.pathsep.join([str(IO_HOOKS), env["PYTHONPATH"]])
    result = subprocess.run([sys.executable, "-m", "flowprep", "extract", str(videos), str(out), *ARGS,
                             "--jobs", jobs], cwd=REPO, env=env, capture_output=True, text=True)
    assert result.returncode == 3, result.stderr
    message = [line for line in result.stderr.splitlines() if line.startswith("flowprep: stopped")]
    assert len(message) == 1 and "Disk quota exceeded" in message[0], result.stderr
    assert "FAILED" not in result.stderr  # no video is blamed for the quota
    finished = [job for job in (out / f"C{c}" / f"v{v}" for c in range(2) for v in range(4)) if finished_meta(job)]
    assert 0 < len(finished) < 8 and temporaries(out) == []
    result = run_cli("extract", str(videos), str(out), *ARGS)
    assert result.returncode == 0, result.stderr
    assert output_digest(out) == clean


@pytest.mark.parametrize("small_disk", ["dir"], indirect=True)
def test_a_ray_run_on_a_full_disk_stops_and_the_rerun_completes(videos, clean, small_disk):
    """The stop reaches Ray too: no further video starts, those running finish (stopped by the full disk), the run
    exits 3 with one message and nothing half-written or locked, and the rerun completes the tree."""
    pytest.importorskip("ray")
    out = small_disk / "flow"
    result = run_cli("extract", str(videos), str(out), *ARGS, "--engine", "ray")
    assert result.returncode == 3, result.stderr
    assert len([line for line in result.stderr.splitlines() if line.startswith("flowprep: stopped")]) == 1
    report = json.loads((out / "report.json").read_text()) if (out / "report.json").exists() else None
    assert report is None or report["engine"] == "ray" and report["not_processed"]
    assert temporaries(out) == [] and not list(out.rglob("*.flowprep-lock")) and verify_tree(out).ok
    subprocess.run(["mount", "-o", "remount,size=20m", str(small_disk)], check=True)
    result = run_cli("extract", str(videos), str(out), *ARGS, "--engine", "ray")
    assert result.returncode == 0, result.stderr
    assert output_digest(out) == clean
