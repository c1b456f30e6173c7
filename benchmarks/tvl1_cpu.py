"""CPU cost of flowprep's TV-L1 on the CPU (numba, the default) against OpenCV's (`--impl opencv`), whole processes.

Each run is a fresh `python -m flowprep extract` process on the same real clips at 340x256 with one thread
(OPENCV_FOR_THREADS_NUM=1, OMP_NUM_THREADS=1; the numba solver uses one thread anyway), so start-up (imports,
loading the compiled kernels from numba's disk cache, the decoder) is included, as a user pays it. The kernel
cache is warmed first (one small extract), then runs alternate between the implementations; the median CPU
seconds (user + sys of the child, from wait4) count. Peak RSS is the child's ru_maxrss; its anonymous and
file-backed parts are the largest values of /proc/PID/status sampled every 20 ms (file-backed pages, the
libraries' code, are shared between workers). The outputs are compared: mean |dequantized numba flow -
dequantized OpenCV flow| over every pixel of every pair (after quantization and JPEG).

The cold-cache rows run the same extract with NUMBA_CACHE_DIR in a fresh folder: once with one process, once with
--jobs 2 on two copies of the first clip (both workers start on the cold cache); the extra CPU seconds over the
same command on the warm cache are what compiling costs, once per machine.

    python benchmarks/tvl1_cpu.py                      # defaults and --preset fast, carphone + mr-bubz at 6 fps
    python benchmarks/tvl1_cpu.py --presets default --repeat 3
    python benchmarks/tvl1_cpu.py --impls numba,opencv,torch-cpu    # also flowprep's PyTorch TV-L1 on the CPU
    python benchmarks/tvl1_cpu.py --batch-sizes 1,2,4,8   # also: in-process CPU s per pair of the torch solver

Data is read from ../shared/data next to the repository root.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from flowprep import dequantize  # noqa: E402
from flowprep.store import Naming, find_outputs, open_output, read_flow_codes  # noqa: E402

VIDEOS = REPO.parent / "shared" / "data" / "videos"
CLIPS = ("carphone_pristine.mp4", "mr-bubz.webm")
ONE_THREAD = {"OPENCV_FOR_THREADS_NUM": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
# What each implementation adds to the command line.
IMPLS = {"numba": [], "opencv": ["--impl", "opencv"], "torch-cpu": ["--device", "torch-cpu"]}


@dataclass(frozen=True)
class Run:
    cpu: float  # user + sys seconds of the process
    wall: float
    rss: float  # peak RSS, MB (ru_maxrss)
    anon: float  # largest anonymous RSS seen, MB
    file: float  # largest file-backed RSS seen, MB


def measured(command: list[str], env: dict[str, str]) -> Run:
    """Run `command` to its end; its CPU, wall time and memory (Run). SystemExit with stderr if it fails."""
    started = time.perf_counter()
    process = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               text=True)
    peaks = {"RssAnon": 0, "RssFile": 0}

    def sample() -> None:
        while process.returncode is None:
            try:
                with open(f"/proc/{process.pid}/status") as status:
                    for line in status:
                        key, _, value = line.partition(":")
                        if key in peaks:
                            peaks[key] = max(peaks[key], int(value.split()[0]))
            except (OSError, ValueError):
                return
            time.sleep(0.02)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    stderr = process.stderr.read()  # before waiting: a chatty child must not block on a full pipe
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    sampler.join()
    if process.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed: {stderr[-500:]}")
    return Run(usage.ru_utime + usage.ru_stime, time.perf_counter() - started, usage.ru_maxrss / 1024,
               peaks["RssAnon"] / 1024, peaks["RssFile"] / 1024)


def extract(source: Path, out: Path, impl: str, preset: str | None, args: argparse.Namespace,
            env: dict[str, str] | None = None, jobs: int = 1) -> Run:
    command = [sys.executable, "-m", "flowprep", "extract", str(source), str(out), "--algo", "tvl1",
               "--size", args.size, "--fps", str(args.fps), "--quiet", "--overwrite", "--jobs", str(jobs),
               *IMPLS[impl], *(["--preset", preset] if preset else [])]
    return measured(command, {**os.environ, "PYTHONPATH": str(REPO), **ONE_THREAD, **(env or {})})


def flow_distance(ours: Path, reference: Path) -> tuple[float, int]:
    """(mean |flow difference| in pixels over all pixels of all pairs, pairs) between two output trees."""
    total, count, pairs = 0.0, 0, 0
    finished = [found.path for found in find_outputs(ours) if found.kind == "finished"]
    for path in finished:
        with open_output(path) as a, open_output(reference / path.relative_to(ours)) as b:
            meta = a.meta()
            naming, bound = Naming.from_meta(meta), float(meta["settings"]["bound"])
            for k in range(meta["flow_pairs"]):
                diff = dequantize(read_flow_codes(a, naming, k), bound) - dequantize(read_flow_codes(b, naming, k), bound)
                total += float(np.abs(diff).sum())
                count += diff.size
            pairs += meta["flow_pairs"]
    return total / count, pairs


def process_rows(args: argparse.Namespace, source: Path, tmp: Path) -> list[str]:
    rows = []
    extract(source, tmp / "warm-up", "numba", None, argparse.Namespace(size=args.size, fps=1.0))
    for preset in args.presets:
        name = None if preset == "default" else preset
        runs: dict[str, list[Run]] = {impl: [] for impl in args.impls}
        for _ in range(args.repeat):
            for impl in runs:
                runs[impl].append(extract(source, tmp / f"{preset}-{impl}", impl, name, args))
                print(f"  {preset} {impl}: {runs[impl][-1].cpu:.2f} CPU s", file=sys.stderr, flush=True)
        reference = runs["opencv"]
        ref_cpu = statistics.median(r.cpu for r in reference)
        for impl, done in runs.items():
            apart, pairs = flow_distance(tmp / f"{preset}-{impl}", tmp / f"{preset}-opencv")
            cpu = statistics.median(r.cpu for r in done)
            rows.append(
                f"| {preset} | `{' '.join(IMPLS[impl]) or '(default)'}` | {pairs} | {cpu:.1f} ({cpu / pairs:.3f}) | "
                f"**{ref_cpu / cpu:.2f}x** | {statistics.median(r.wall for r in done):.1f} | "
                f"{max(r.rss for r in done):.0f} ({max(r.anon for r in done):.0f} + {max(r.file for r in done):.0f}) | "
                f"{apart:.4f} |")
    return rows


def cold_rows(args: argparse.Namespace, source: Path, tmp: Path) -> list[str]:
    """CPU seconds of one process and of --jobs 2 on a cold and on a warm kernel cache, on the first clip."""
    first = source / args.clips.split(",")[0]
    pair = tmp / "two"
    pair.mkdir()
    for name in ("a", "b"):
        (pair / f"{name}{first.suffix}").symlink_to(first.resolve())
    rows = []
    for label, src, jobs in (("1 process", first, 1), ("--jobs 2, both workers cold", pair, 2)):
        cache = tmp / f"cold-cache-{jobs}"
        cold = extract(src, tmp / f"cold-{jobs}", "numba", None, args, {"NUMBA_CACHE_DIR": str(cache)}, jobs)
        warm = extract(src, tmp / f"cold-{jobs}", "numba", None, args, {"NUMBA_CACHE_DIR": str(cache)}, jobs)
        rows.append(f"| {label} | {cold.cpu:.1f} | {warm.cpu:.1f} | **{cold.cpu - warm.cpu:.1f}** | "
                    f"{cold.wall:.1f} / {warm.wall:.1f} |")
    return rows


def batch_rows(args: argparse.Namespace) -> list[str]:
    """In-process CPU seconds per pair of the torch solver's tvl1_flow by batch size, one torch thread."""
    import cv2
    import torch

    from flowprep.config import DecodeConfig, parse_size
    from flowprep.decode import flow_frames, open_reader
    from flowprep.flow.torch_tvl1 import tvl1_flow

    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    with open_reader(VIDEOS / CLIPS[0], "pyav") as reader:  # the frames flowprep extract gives the flow
        frames = [gray for _, (_, gray) in zip(range(17), flow_frames(reader, DecodeConfig(size=parse_size(args.size))))]
    stack = torch.from_numpy(np.stack(frames)).float()
    rows = []
    for batch in args.batch_sizes:
        start = time.process_time()
        for first in range(0, 16, batch):
            tvl1_flow(stack[first : first + batch], stack[first + 1 : first + batch + 1])
        rows.append(f"| {batch} | {(time.process_time() - start) / 16:.3f} |")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", default=",".join(CLIPS), help="comma-separated file names in ../shared/data/videos")
    parser.add_argument("--size", default="340x256", help="WIDTHxHEIGHT given to the flow (default: TSN's 340x256)")
    parser.add_argument("--fps", type=float, default=6.0, help="sampling rate (default 6)")
    parser.add_argument("--presets", default="default,fast", help="comma-separated: default and/or preset names")
    parser.add_argument("--impls", default="numba,opencv", help=f"comma-separated, from {', '.join(IMPLS)}; "
                                                                 "opencv is the reference and always runs")
    parser.add_argument("--repeat", type=int, default=2, help="runs per implementation and preset; the median counts")
    parser.add_argument("--no-cold", action="store_true", help="skip the cold-cache rows")
    parser.add_argument("--batch-sizes", default="", help="also time the torch solver in-process at these batch sizes")
    args = parser.parse_args()
    args.presets = [p for p in args.presets.split(",") if p]
    args.impls = list(dict.fromkeys([i for i in args.impls.split(",") if i] + ["opencv"]))
    args.batch_sizes = [int(b) for b in args.batch_sizes.split(",") if b]
    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp) / "videos"
        source.mkdir()
        for clip in args.clips.split(","):
            (source / clip).symlink_to(VIDEOS / clip)
        rows = process_rows(args, source, Path(tmp))
        cold = [] if args.no_cold else cold_rows(args, source, Path(tmp))
    print(f"Clips: {args.clips} at {args.size}, {args.fps:g} fps; one thread per process; median of {args.repeat} "
          f"fresh processes (start-up included), warm kernel cache")
    print(f"Command: python {' '.join(sys.argv)}\n")
    print("| parameters | implementation | pairs | CPU s (per pair) | CPU vs `--impl opencv` | wall s | "
          "peak RSS MB (anonymous + file-backed) | mean abs flow difference from `--impl opencv`, px |")
    print("|---|---|---|---|---|---|---|---|")
    print("\n".join(rows))
    if cold:
        print(f"\nCold kernel cache (a fresh NUMBA_CACHE_DIR), defaults, {args.clips.split(',')[0]}: CPU s of the "
              "whole command\n")
        print("| run | cold cache | warm cache | extra, once per machine | wall s cold / warm |\n|---|---|---|---|---|")
        print("\n".join(cold))
    if args.batch_sizes:
        print("\nIn-process torch `tvl1_flow`, one torch thread, 16 carphone pairs: CPU s per pair by batch size\n")
        print("| batch size | CPU s per pair |\n|---|---|")
        print("\n".join(batch_rows(args)))


if __name__ == "__main__":
    main()
