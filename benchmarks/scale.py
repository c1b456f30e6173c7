"""Batch runs at dataset scale: a tree of many tiny real-codec videos through discovery, a full run, a resume
that skips them all, verify, list and report, with the time and the driver's peak memory of each.

Builds one tiny H.264 clip (the first FRAMES frames of the real carphone clip, ../shared/data, downscaled to
WxH with PyAV) and hard-links it VIDEOS times into CLASSES class folders (not committed; under --dir, removed
afterwards unless --keep). Each step runs the real CLI (or, for discovery, the library) in a fresh process;
os.wait4 gives its CPU time and peak RSS; ms/video is
(CPU - the start-up's CPU) / videos, and the last column that per-video cost times 650,000 (Kinetics-700). One worker (--jobs 1), one OpenCV thread, DIS: the per-video cost of a
full run is then flowprep's overhead (decode, flow and JPEGs of 3 pairs of 64x48 are a few ms).

With --run-videos M < VIDEOS the full run extracts the first M videos only (through a list file), and the
outputs of the others are copies of those (hard-linked JPEGs, meta.json rewritten with their own source), so
that resume, verify and list can be measured on a large tree without waiting for its full run.

    python benchmarks/scale.py [--videos 10000] [--run-videos M] [--classes 100] [--dir /tmp] [--no-fsync]
                               [--keep]
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CLIP = REPO.parent / "shared" / "data" / "videos" / "carphone_pristine.mp4"
FRAMES, SIZE = 4, (64, 48)
TARGET = 650_000  # Kinetics-700's videos, for the extrapolation


def tiny_clip(path: Path) -> Path:
    """FRAMES frames of the carphone clip at SIZE, H.264 (a real codec, as datasets hold)."""
    import av

    with av.open(str(CLIP)) as source, av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=30)
        stream.width, stream.height, stream.pix_fmt = *SIZE, "yuv420p"
        for index, frame in enumerate(source.decode(video=0)):
            if index == FRAMES:
                break
            out.mux(stream.encode(frame.reformat(*SIZE, format="yuv420p")))
        out.mux(stream.encode(None))
    return path


def build_tree(root: Path, videos: int, classes: int) -> Path:
    clip = tiny_clip(root / "tiny.mp4")
    tree = root / "videos"
    for c in range(classes):  # a copy per class, hard-linked within it (ext4 allows 65,000 links a file)
        (tree / f"class_{c:03d}").mkdir(parents=True)
        shutil.copy2(clip, tree / f"class_{c:03d}" / ".clip")
    for v in range(videos):
        folder = tree / f"class_{v % classes:03d}"
        os.link(folder / ".clip", folder / f"v_{v:07d}.mp4")
    return tree


def copy_outputs(videos: Path, out: Path, done: int, total: int, classes: int) -> None:
    """Outputs of videos done..total-1 as hard-linked copies of the first `done` videos' real outputs."""
    import json

    for v in range(done, total):
        rel = Path(f"class_{v % classes:03d}") / f"v_{v:07d}"
        model = out / f"class_{v % done % classes:03d}" / f"v_{v % done:07d}"
        target = out / rel
        target.mkdir(parents=True)
        for name in os.listdir(model):
            if name != "meta.json":
                os.link(model / name, target / name)
        meta = json.loads((model / "meta.json").read_text())
        meta["source"] = str((videos / rel).with_suffix(".mp4").resolve())
        (target / "meta.json").write_text(json.dumps(meta, indent=1, sort_keys=True))


def measure(args: list[str], env: dict[str, str]) -> tuple[float, float, float, int, str]:
    """(wall s, CPU s, peak RSS MB, exit code, stderr tail) of one command in a fresh process."""
    started = time.perf_counter()
    process = subprocess.Popen(args, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    stderr = process.stderr.read()
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - started
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024, process.returncode, stderr[-300:]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, default=10_000)
    parser.add_argument("--run-videos", type=int, default=None, help="videos the full run extracts (default: all)")
    parser.add_argument("--classes", type=int, default=100)
    parser.add_argument("--dir", default=None, help="where to build the tree (default: the temp folder)")
    parser.add_argument("--no-fsync", action="store_true", help="pass --no-fsync to the full run")
    parser.add_argument("--keep", action="store_true", help="keep the tree")
    args = parser.parse_args()

    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "OMP_NUM_THREADS": "1", "OPENCV_FOR_THREADS_NUM": "1"}
    work = Path(tempfile.mkdtemp(prefix="flowprep-scale-", dir=args.dir))
    try:
        t0 = time.perf_counter()
        videos = build_tree(work, args.videos, args.classes)
        out = work / "flow"
        print(f"{args.videos} videos ({FRAMES} frames, {SIZE[0]}x{SIZE[1]} H.264, hard links) in {args.classes} "
              f"classes, built in {time.perf_counter() - t0:.1f} s, under {work}", flush=True)
        cli = [sys.executable, "-m", "flowprep"]
        discovery = ("import sys, time; from flowprep.batch import discover; t = time.perf_counter(); "
                     "jobs = discover(sys.argv[1], sys.argv[2]); assert len(jobs) == int(sys.argv[3]); "
                     "print(time.perf_counter() - t, file=sys.stderr)")
        run_videos = min(args.run_videos or args.videos, args.videos)
        first = videos / "first.txt"  # the videos the full run extracts
        first.write_text("".join(f"class_{v % args.classes:03d}/v_{v:07d}.mp4\n" for v in range(run_videos)))
        steps = [
            ("start-up (--version)", cli + ["--version"], args.videos),
            ("discovery", [sys.executable, "-c", discovery, str(videos), str(out), str(args.videos)], args.videos),
            ("full run (DIS)", cli + ["extract", str(first), str(out), "--algo", "dis", "-q"]
             + (["--no-fsync"] if args.no_fsync else []), run_videos),
            ("resume, all skipped", cli + ["extract", str(videos), str(out), "--algo", "dis", "-q"], args.videos),
            ("verify", cli + ["verify", str(out)], args.videos),
            ("list", cli + ["list", str(out), "--out", str(work / "list.txt")], args.videos),
            ("report", cli + ["report", str(out)], args.videos),
        ]
        print(f"{'step':22s} {'wall s':>9s} {'CPU s':>9s} {'ms/video':>9s} {'peak RSS MB':>12s} "
              f"{'at ' + format(TARGET, ',') + ' videos':>18s}")
        print(f"{'':22s} {'':>9s} {'':>9s} {'(CPU)':>9s} {'':>12s} {'(CPU, linear)':>18s}")
        startup = 0.0
        for name, command, count in steps:
            if name.startswith("resume") and run_videos < args.videos:
                t0 = time.perf_counter()
                copy_outputs(videos, out, run_videos, args.videos, args.classes)
                print(f"({args.videos - run_videos} more outputs copied from the {run_videos} extracted in "
                      f"{time.perf_counter() - t0:.0f} s)", flush=True)
            wall, cpu, rss, code, tail = measure(command, env)
            if code != 0:
                raise SystemExit(f"{name} exited {code}: {tail}")
            startup = startup or cpu  # the first step: Python and flowprep's imports, paid once per command
            per_video = (cpu - startup) / count if command is not steps[0][1] else 0.0
            label = name if count == args.videos else f"{name}, {count}"
            print(f"{label:22s} {wall:9.1f} {cpu:9.1f} {1000 * per_video:9.2f} {rss:12.0f} "
                  f"{(startup + per_video * TARGET) / 60:14.1f} min", flush=True)
        print(f"{sum(1 for _ in (out / 'class_000').iterdir())} outputs in class_000; "
              f"{sum(1 for _ in open(work / 'list.txt'))} lines in the list")
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
