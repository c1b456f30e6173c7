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
that resume, verify and list can be measured on a large tree without waiting for its full run. --steps picks
the steps (start-up is always run: the other steps' ms/video leave its CPU out). --at N1,N2,... measures the
steps that read only the output tree (verify, list, report) at those sizes too, as the copies grow the tree
to VIDEOS, and prints how each one's peak RSS at VIDEOS compares with the smallest size's. --checkout DIR runs
the commands with another checkout's flowprep (the code before a change, for the same tree).

    python benchmarks/scale.py [--videos 10000] [--run-videos M] [--classes 100] [--dir /tmp] [--no-fsync]
                               [--steps verify,list] [--at 10000,100000] [--checkout DIR] [--keep]
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
STEPS = ("discovery", "full run", "resume", "verify", "list", "report")
TREE_STEPS = ("verify", "list", "report")  # those that read only the output tree: measured at every --at size


def tiny_clip(path: Path, frames: int = FRAMES, size: tuple[int, int] = SIZE) -> Path:
    """`frames` frames of the carphone clip at `size`, H.264 (a real codec, as datasets hold)."""
    import av

    with av.open(str(CLIP)) as source, av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=30)
        stream.width, stream.height, stream.pix_fmt = *size, "yuv420p"
        for index, frame in enumerate(source.decode(video=0)):
            if index == frames:
                break
            out.mux(stream.encode(frame.reformat(*size, format="yuv420p")))
        out.mux(stream.encode(None))
    return path


def build_tree(root: Path, videos: int, classes: int, frames: int = FRAMES, size: tuple[int, int] = SIZE) -> Path:
    clip = tiny_clip(root / "tiny.mp4", frames, size)
    tree = root / "videos"
    for c in range(classes):  # a copy per class, hard-linked within it (ext4 allows 65,000 links a file)
        (tree / f"class_{c:03d}").mkdir(parents=True)
        shutil.copy2(clip, tree / f"class_{c:03d}" / ".clip")
    for v in range(videos):
        folder = tree / f"class_{v % classes:03d}"
        os.link(folder / ".clip", folder / f"v_{v:07d}.mp4")
    return tree


def copy_outputs(videos: Path, out: Path, models: int, start: int, end: int, classes: int) -> None:
    """Outputs of videos start..end-1 as hard-linked copies of the first `models` videos' real outputs."""
    import json

    for v in range(start, end):
        rel = Path(f"class_{v % classes:03d}") / f"v_{v:07d}"
        model = out / f"class_{v % models % classes:03d}" / f"v_{v % models:07d}"
        target = out / rel
        target.mkdir(parents=True)
        for name in os.listdir(model):
            if name != "meta.json":
                os.link(model / name, target / name)
        meta = json.loads((model / "meta.json").read_text())
        meta["source"] = str((videos / rel).with_suffix(".mp4").resolve())
        (target / "meta.json").write_text(json.dumps(meta, indent=1, sort_keys=True))


def measure(name: str, args: list[str], env: dict[str, str], cwd: Path) -> tuple[float, float, float]:
    """(wall s, CPU s, peak RSS MB) of one command in a fresh process; exits naming step `name` if it fails."""
    started = time.perf_counter()
    process = subprocess.Popen(args, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    stderr = process.stderr.read()
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - started
    if process.returncode != 0:
        raise SystemExit(f"{name} exited {process.returncode}: {stderr[-300:]}")
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024


def sizes(text: str) -> list[int]:
    return sorted(int(n) for n in text.split(","))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, default=10_000)
    parser.add_argument("--run-videos", type=int, default=None, help="videos the full run extracts (default: all)")
    parser.add_argument("--classes", type=int, default=100)
    parser.add_argument("--dir", default=None, help="where to build the tree (default: the temp folder)")
    parser.add_argument("--no-fsync", action="store_true", help="pass --no-fsync to the full run")
    parser.add_argument("--steps", default=",".join(STEPS), help=f"steps to run, of {','.join(STEPS)}")
    parser.add_argument("--at", type=sizes, default=[], help="smaller tree sizes to measure verify, list and "
                        "report at too, as the tree grows (with --run-videos at most the smallest)")
    parser.add_argument("--checkout", type=Path, default=REPO, help="the checkout whose flowprep runs (the "
                        "commands' working directory, first on their path)")
    parser.add_argument("--keep", action="store_true", help="keep the tree")
    args = parser.parse_args()
    steps = args.steps.split(",")
    if set(steps) - set(STEPS):
        parser.error(f"--steps {args.steps}: unknown {', '.join(sorted(set(steps) - set(STEPS)))}")
    run_videos = min(args.run_videos or args.videos, args.videos)
    if args.at and not (run_videos <= args.at[0] and args.at[-1] < args.videos):
        parser.error(f"--at {args.at}: sizes from --run-videos ({run_videos}) up to below --videos ({args.videos})")
    if args.at and not set(steps) & set(TREE_STEPS):
        parser.error(f"--at needs one of {', '.join(TREE_STEPS)} in --steps")

    env = {**os.environ, "PYTHONPATH": str(args.checkout) + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "OMP_NUM_THREADS": "1", "OPENCV_FOR_THREADS_NUM": "1"}
    work = Path(tempfile.mkdtemp(prefix="flowprep-scale-", dir=args.dir))
    try:
        t0 = time.perf_counter()
        videos = build_tree(work, args.videos, args.classes)
        out = work / "flow"
        print(f"{args.videos} videos ({FRAMES} frames, {SIZE[0]}x{SIZE[1]} H.264, hard links) in {args.classes} "
              f"classes, built in {time.perf_counter() - t0:.1f} s, under {work}; flowprep of {args.checkout}",
              flush=True)
        cli = [sys.executable, "-m", "flowprep"]
        discovery = ("import sys, time; from flowprep.batch import discover; t = time.perf_counter(); "
                     "jobs = discover(sys.argv[1], sys.argv[2]); assert len(jobs) == int(sys.argv[3]); "
                     "print(time.perf_counter() - t, file=sys.stderr)")
        first = videos / "first.txt"  # the videos the full run extracts
        first.write_text("".join(f"class_{v % args.classes:03d}/v_{v:07d}.mp4\n" for v in range(run_videos)))
        commands = {
            "discovery": [sys.executable, "-c", discovery, str(videos), str(out), str(args.videos)],
            "full run": cli + ["extract", str(first), str(out), "--algo", "dis", "-q"]
            + (["--no-fsync"] if args.no_fsync else []),
            "resume": cli + ["extract", str(videos), str(out), "--algo", "dis", "-q"],
            "verify": cli + ["verify", str(out)],
            "list": cli + ["list", str(out), "--out", str(work / "list.txt")],
            "report": cli + ["report", str(out)],
        }
        names = {"full run": "full run (DIS)", "resume": "resume, all skipped"}
        print(f"{'step':22s} {'videos':>9s} {'wall s':>9s} {'CPU s':>9s} {'ms/video':>9s} {'peak RSS MB':>12s} "
              f"{'at ' + format(TARGET, ',') + ' videos':>18s}")
        print(f"{'':22s} {'':>9s} {'':>9s} {'':>9s} {'(CPU)':>9s} {'':>12s} {'(CPU, linear)':>18s}")
        wall, startup, rss = measure("start-up", cli + ["--version"], env, args.checkout)
        print(f"{'start-up (--version)':22s} {'':>9s} {wall:9.1f} {startup:9.1f} {0:9.2f} {rss:12.0f} "
              f"{startup / 60:14.1f} min", flush=True)
        peaks: dict[str, dict[int, float]] = {}

        def step(name: str, count: int) -> None:
            wall, cpu, rss = measure(name, commands[name], env, args.checkout)
            per_video = (cpu - startup) / count  # start-up: Python and flowprep's imports, paid once per command
            peaks.setdefault(name, {})[count] = rss
            print(f"{names.get(name, name):22s} {count:9d} {wall:9.1f} {cpu:9.1f} {1000 * per_video:9.2f} "
                  f"{rss:12.0f} {(startup + per_video * TARGET) / 60:14.1f} min", flush=True)

        def grow(start: int, end: int) -> None:
            if end == start:
                return
            t0 = time.perf_counter()
            copy_outputs(videos, out, run_videos, start, end, args.classes)
            print(f"({end - start} more outputs copied from the {run_videos} extracted in "
                  f"{time.perf_counter() - t0:.0f} s)", flush=True)

        for name in ("discovery", "full run"):
            if name in steps:
                step(name, args.videos if name == "discovery" else run_videos)
        if "full run" not in steps:  # the tree still needs its extracted outputs
            measure("full run", commands["full run"], env, args.checkout)
        size = run_videos
        for at in args.at:
            grow(size, at)
            size = at
            for name in (n for n in TREE_STEPS if n in steps):
                step(name, at)
        grow(size, args.videos)
        for name in ("resume", *TREE_STEPS):
            if name in steps:
                step(name, args.videos)
        for name, at in peaks.items():
            if len(at) > 1:
                print(f"{name}: peak RSS at {max(at)} videos {at[max(at)] / at[min(at)]:.2f}x that at {min(at)}")
        print(f"{sum(1 for _ in (out / 'class_000').iterdir())} outputs in class_000"
              + (f"; {sum(1 for _ in open(work / 'list.txt'))} lines in the list" if "list" in steps else ""))
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
