"""Inputs and comparisons for batch tests: class trees of real clips, broken videos made from them, and
content digests of output trees (directory or zip form alike)."""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import zipfile
from contextlib import contextmanager
from fractions import Fraction
from pathlib import Path

import pytest
from conftest import REPO, VIDEOS, checkout_env, run_cli

from flowprep.store import finished_meta

CARPHONE = VIDEOS / "carphone_pristine.mp4"  # 176x144, 120 frames: 119 pairs, ~0.4 s with --algo dis
# meta.json fields that describe the run rather than the output: time taken (SPEC: "seconds taken"), and the
# errors of readers that were tried and abandoned (decord stops at a varying frame and stamps its clock time).
RUN_SPECIFIC_META = ("seconds", "timing", "decoder_problems")
# meta.json fields that name where the video was read: its path and mtime, or its URL and the object's time.
SOURCE_META = ("source", "source_file")
RUN_RECORD = re.compile(r"(report|failures|index)(\.shard-\d+-of-\d+)?\.jsonl?|\.flowprep(\.shard-\d+-of-\d+)?\.lock")


def class_tree(root: Path, classes: int, per_class: int, clip: Path = CARPHONE) -> Path:
    """root/C0/v0.mp4 ... : copies of a real clip in class folders (copies, so each has its own source path)."""
    for c in range(classes):
        (root / f"C{c}").mkdir(parents=True, exist_ok=True)
        for v in range(per_class):
            shutil.copyfile(clip, root / f"C{c}" / f"v{v}{clip.suffix}")
    return root


def remux(src: Path, dst: Path, *, options: dict[str, str] | None = None, max_packets: int | None = None) -> Path:
    """Copy the video packets of `src` into a new container at `dst` (no re-encode), optionally only the first."""
    import av

    with av.open(str(src)) as inp, av.open(str(dst), "w", options=options or {}) as out:
        stream_in = inp.streams.video[0]
        stream_out = out.add_stream_from_template(stream_in)
        for count, packet in enumerate(inp.demux(stream_in), 1):
            if packet.dts is None:  # the demuxer's flush packet
                continue
            packet.stream = stream_out
            out.mux(packet)
            if max_packets and count >= max_packets:
                break
    return dst


def sparse_avi(dst: Path, src: Path = CARPHONE) -> Path:
    """`src` re-encoded (MPEG-4 in AVI) with every third frame dropped: the AVI muxer keeps their time slots as
    empty chunks, so the container announces 120 frames and 4 s while 80 frames decode, the last at 3.97 s."""
    import av

    with av.open(str(src)) as inp, av.open(str(dst), "w") as out:
        stream = out.add_stream("mpeg4", rate=30)
        stream.width, stream.height, stream.pix_fmt = inp.streams.video[0].width, inp.streams.video[0].height, "yuv420p"
        stream.codec_context.time_base = Fraction(1, 30)
        for index, frame in enumerate(inp.decode(video=0)):
            if index % 3 == 1:
                continue
            frame = frame.reformat(format="yuv420p")
            frame.pts, frame.time_base = index, Fraction(1, 30)
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return dst


def broken_videos(folder: Path, work: Path) -> dict[str, Path]:
    """Bad inputs made from the real carphone clip; keys say what is wrong with each."""
    folder.mkdir(parents=True, exist_ok=True)
    work.mkdir(parents=True, exist_ok=True)
    data = CARPHONE.read_bytes()
    bad = {
        "truncated": folder / "truncated.mp4",  # moov atom is at the end: nothing left to open
        "zero_bytes": folder / "empty.mp4",
        "not_a_video": folder / "notes.avi",
        "one_frame": folder / "one_frame.mp4",
        "lying_header": folder / "lying.mp4",  # claims 120 frames, holds 33: decord fails at 33, PyAV reads all
    }
    bad["truncated"].write_bytes(data[: len(data) // 2])
    bad["zero_bytes"].write_bytes(b"")
    bad["not_a_video"].write_text("this is a text file with a video extension\n" * 20)
    remux(CARPHONE, bad["one_frame"], max_packets=1)
    faststart = remux(CARPHONE, work / "faststart.mp4", options={"movflags": "faststart"})
    moov_first = faststart.read_bytes()
    bad["lying_header"].write_bytes(moov_first[: len(moov_first) // 3])
    return bad


def output_digest(root: Path, ignore: tuple[str, ...] = ()) -> dict[str, str]:
    """{video file path relative to root: sha256} over every video output under `root`.

    Zip packs are expanded (`A/v.zip` member `flow_x_00001.jpg` -> key `A/v/flow_x_00001.jpg`) so both forms
    compare equal. meta.json is hashed without RUN_SPECIFIC_META and the fields `ignore` (e.g. SOURCE_META, to
    compare the outputs of the same videos read from two places); the reports, failures and lock files at the
    root (a shard's too) describe the run, not the outputs, and are left out.
    """
    digest = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root)
        if path.is_dir() or len(rel.parts) == 1 and RUN_RECORD.fullmatch(rel.name):
            continue
        if path.suffix == ".zip":
            with zipfile.ZipFile(path) as pack:
                for name in pack.namelist():
                    digest[str(rel.with_suffix("") / name)] = _file_hash(name, pack.read(name), ignore)
        else:
            digest[str(rel)] = _file_hash(path.name, path.read_bytes(), ignore)
    return digest


def raw_digest(root: Path) -> dict[str, str]:
    """{file path relative to root: sha256 of its bytes} over every file under `root`, as they are on disk."""
    return {str(path.relative_to(root)): hashlib.sha256(path.read_bytes()).hexdigest()
            for path in sorted(root.rglob("*")) if path.is_file()}


def _file_hash(name: str, data: bytes, ignore: tuple[str, ...]) -> str:
    if name == "meta.json":
        meta = json.loads(data)
        for key in RUN_SPECIFIC_META + ignore:
            meta.pop(key)
        data = json.dumps(meta, sort_keys=True).encode()
    return hashlib.sha256(data).hexdigest()


def clean_digest(videos: Path, out: Path, *args: str, ignore: tuple[str, ...] = ()) -> dict[str, str]:
    """output_digest (without the meta.json fields `ignore`) of an uninterrupted `flowprep extract VIDEOS OUT
    ARGS` (which must exit 0)."""
    result = run_cli("extract", str(videos), str(out), *args)
    assert result.returncode == 0, result.stderr
    return output_digest(out, ignore)


def tree_and_clean_run(classes: int, per_class: int, *args: str, ignore: tuple[str, ...] = ()):
    """Module fixtures `videos` (class_tree of `classes` x `per_class` carphone copies) and `clean` (its
    clean_digest with ARGS, without the meta.json fields `ignore`): `videos, clean = tree_and_clean_run(...)` in
    the test module."""

    @pytest.fixture(scope="module")
    def videos(tmp_path_factory):
        return class_tree(tmp_path_factory.mktemp("videos"), classes=classes, per_class=per_class)

    @pytest.fixture(scope="module")
    def clean(videos, tmp_path_factory):
        return clean_digest(videos, tmp_path_factory.mktemp("clean"), *args, ignore=ignore)

    return videos, clean


def temporaries(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if ".flowprep-tmp-" in p.name]


def start_cli(*args: str) -> subprocess.Popen:
    """`python -m flowprep ARGS` in its own process group (so the test can signal it and its workers), with
    Ctrl-C's default action: a shell that starts pytest in the background makes it ignore SIGINT, and an ignored
    signal stays ignored in children, so Python would never see the Ctrl-C the tests send."""
    return subprocess.Popen([sys.executable, "-m", "flowprep", *args], cwd=REPO, env=checkout_env(),
                            start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def wait_for(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def group_commands(pgid: int) -> list[str]:
    """Command lines of the live processes of group `pgid` (Linux /proc)."""
    commands = []
    for pid in (int(entry) for entry in os.listdir("/proc") if entry.isdigit()):
        try:
            if os.getpgid(pid) == pgid:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    commands.append(f.read().replace(b"\0", b" ").decode(errors="replace"))
        except OSError:
            continue
    return commands


def kill_holders(pgid: int, path: Path) -> set[int]:
    """SIGKILL every process of the session that `pgid` leads (start_cli's and dask_cluster_at's processes lead
    their own; a local Ray's workers are in that session but in groups of their own), but the leader, that has
    `path` open (Linux /proc); returns their pids (a process being killed can still show the file open on the
    next call)."""
    killed = set()
    for pid in (int(entry) for entry in os.listdir("/proc") if entry.isdigit()):
        try:
            if pid == pgid or os.getsid(pid) != pgid:
                continue
            fds = f"/proc/{pid}/fd"
            if any(os.readlink(os.path.join(fds, fd)) == str(path) for fd in os.listdir(fds)):
                os.kill(pid, signal.SIGKILL)
                killed.add(pid)
        except OSError:  # the process or the descriptor went away meanwhile
            continue
    return killed


def kill_holders_while_running(process: subprocess.Popen, pgid: int, target: Path, output: Path,
                                times: int = 1_000_000) -> tuple[str, set[int]]:
    """Until `process` ends, SIGKILL the processes of session `pgid` that hold video `target` open, as a decoder
    crash or the out-of-memory killer would end them, up to `times` of them; returns (stderr, pids killed). Not
    once `output` (the target's output base) is committed: its worker holds the video a moment longer."""
    killed: set[int] = set()
    while process.poll() is None:
        if len(killed) < times and finished_meta(output) is None:
            killed |= kill_holders(pgid, target)
        time.sleep(0.005)
    return process.communicate()[1], killed


def kill_group(pgid: int, sig: int = signal.SIGKILL) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def dask_cluster_at(scratch, scheduler_config: dict[str, str] | None = None, workers: int = 1):
    """A Dask scheduler and `workers` workers (1 thread each, each under a nanny) started with Dask's own CLI;
    yields the scheduler's address and the workers' process group (their own session, so tests can find their
    processes)."""
    bin_dir = os.path.dirname(sys.executable)
    env = checkout_env()
    address = f"tcp://127.0.0.1:{free_port()}"
    processes = []
    try:
        processes.append(subprocess.Popen(
            [os.path.join(bin_dir, "dask"), "scheduler", "--host", "127.0.0.1", "--port", address.rsplit(":", 1)[1],
             "--no-dashboard"], env={**env, **(scheduler_config or {})}, cwd=scratch, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL))
        processes.append(subprocess.Popen(
            [os.path.join(bin_dir, "dask"), "worker", address, "--nworkers", str(workers), "--nthreads", "1",
             "--no-dashboard", "--local-directory", str(scratch)],
            env=env, cwd=scratch, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True))
        wait_for_workers(address, workers)
        yield address, processes[-1].pid
    finally:
        for process in reversed(processes):
            process.terminate()
        for process in processes:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        kill_group(processes[-1].pid)


def wait_for_workers(address: str, count: int, timeout: float = 90) -> None:
    from distributed import Client

    with Client(address, timeout=timeout) as client:
        client.wait_for_workers(count, timeout=timeout)
