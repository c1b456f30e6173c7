"""End-to-end throughput of flowprep extract against a bare loop calling OpenCV on the same frames.

The bare loop is what a user would write without flowprep: decord reads every frame, keeps those nearest each
k/fps second, converts to gray, resizes and calls OpenCV's flow; it writes nothing. flowprep does the same and
also quantizes, encodes and writes the JPEGs and meta.json. Runs alternate (bare, flowprep, bare, ...) and the
median is reported, in CPU seconds of this process with one OpenCV thread (one `--jobs` worker's view; other
processes on a shared machine barely disturb it) and in wall seconds. The per-stage breakdown comes from the
timing flowprep records in meta.json.

    python benchmarks/throughput.py                                  # carphone, 340x256, 5 fps, TV-L1 (~2 min)
    python benchmarks/throughput.py --video ../shared/data/videos/mr-bubz.webm --fps 30 --repeat 3 --cli
"""
from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from flowprep import DecodeConfig, ExtractConfig, FlowConfig, extract_video  # noqa: E402
from flowprep.config import parse_size  # noqa: E402
from flowprep.pipeline import STAGES  # noqa: E402

VIDEO = REPO.parent / "shared" / "data" / "videos" / "carphone_pristine.mp4"
# The OpenCV calls a user would make, with the same defaults as flowprep's backends.
BARE_FLOW: dict[str, Callable[[], Callable[[np.ndarray, np.ndarray], np.ndarray]]] = {
    "tvl1": lambda: cv2.optflow.DualTVL1OpticalFlow_create().calc,
    "dis": lambda: cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM).calc,
    "farneback": lambda: lambda a, b, _: cv2.calcOpticalFlowFarneback(a, b, None, 0.5, 3, 15, 3, 5, 1.2, 0),
}


def bare_loop(video: Path, algo: str, fps: float | None, size: tuple[int, int]) -> int:
    """Flow of consecutive sampled frames, nothing stored; returns the number of pairs."""
    import decord

    calc = BARE_FLOW[algo]()
    reader = decord.VideoReader(str(video), num_threads=1)
    step = reader.get_avg_fps() / fps if fps else 1.0
    prev, pairs, wanted = None, 0, 0.0
    for index in range(len(reader)):
        frame = reader.next().asnumpy()
        if index < round(wanted):
            continue
        wanted += step
        gray = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)
        # The usual rule (and flowprep's): area averaging to shrink, bilinear to enlarge; other inputs would
        # change how fast TV-L1 converges and so the time compared.
        shrinking = size[0] * size[1] < gray.shape[0] * gray.shape[1]
        gray = cv2.resize(gray, size, interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)
        if prev is not None:
            calc(prev, gray, None)
            pairs += 1
        prev = gray
    return pairs


def timed(run: Callable[[], object]) -> tuple[object, float, float]:
    """(result, CPU seconds, wall seconds)."""
    cpu, wall = time.process_time(), time.perf_counter()
    result = run()
    return result, time.process_time() - cpu, time.perf_counter() - wall


def cli_run(video: Path, out: Path, args: argparse.Namespace) -> tuple[float, float]:
    """(CPU seconds of the child, wall seconds) of `python -m flowprep extract` in a fresh process."""
    command = [sys.executable, "-m", "flowprep", "extract", str(video), str(out), "--algo", args.algo, "--impl", "opencv",
               "--size", args.size, "--quiet", "--overwrite", "--jobs", "1"] + (["--fps", str(args.fps)] if args.fps else [])
    env = {**os.environ, "PYTHONPATH": str(REPO), "OPENCV_FOR_THREADS_NUM": str(args.threads)}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    wall = time.perf_counter()
    subprocess.run(command, check=True, env=env, capture_output=True)
    wall = time.perf_counter() - wall
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime), wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--video", type=Path, default=VIDEO)
    parser.add_argument("--algo", choices=sorted(BARE_FLOW), default="tvl1")
    parser.add_argument("--fps", type=float, default=5.0, help="sampling rate; 0 for every frame")
    parser.add_argument("--size", default="340x256", help="WIDTHxHEIGHT of the frames given to the flow")
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1, help="OpenCV threads")
    parser.add_argument("--cli", action="store_true", help="also time `python -m flowprep extract` as a subprocess")
    args = parser.parse_args()
    cv2.setNumThreads(args.threads)
    size, fps = parse_size(args.size), args.fps or None
    config = ExtractConfig(decode=DecodeConfig(decoder="decord", fps=fps, size=size), flow=FlowConfig(algo=args.algo, impl="opencv"))  # the bare loop's flow
    bare_cpu, bare_wall, lib_cpu, lib_wall, cli_cpu, cli_wall, metas = [], [], [], [], [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.repeat):
            pairs, cpu, wall = timed(lambda: bare_loop(args.video, args.algo, fps, size))
            bare_cpu.append(cpu), bare_wall.append(wall)
            meta, cpu, wall = timed(lambda: extract_video(args.video, Path(tmp) / f"lib{i}", config))
            lib_cpu.append(cpu), lib_wall.append(wall), metas.append(meta)
            if args.cli:
                cpu, wall = cli_run(args.video, Path(tmp) / "cli", args)
                cli_cpu.append(cpu), cli_wall.append(wall)
    if pairs != metas[0]["flow_pairs"]:
        raise SystemExit(f"the bare loop made {pairs} pairs but flowprep {metas[0]['flow_pairs']}: not the same frames")
    med = statistics.median
    print(f"Video: {args.video.name}, {args.algo}, {args.size}, fps {args.fps or 'source'}: {pairs} pairs; "
          f"{args.threads} OpenCV thread(s), median of {args.repeat}")
    print(f"Command: python {' '.join(sys.argv)}\n")
    print("| run | CPU s | pairs/s (CPU) | wall s | pairs/s (wall) | vs bare loop (CPU) |\n|---|---|---|---|---|---|")
    rows = [("bare OpenCV loop", bare_cpu, bare_wall), ("flowprep extract_video", lib_cpu, lib_wall)]
    if args.cli:
        rows.append(("`python -m flowprep extract` (incl. start-up)", cli_cpu, cli_wall))
    for name, cpu, wall in rows:
        print(f"| {name} | {med(cpu):.2f} | {pairs / med(cpu):.2f} | {med(wall):.2f} | {pairs / med(wall):.2f} | "
              f"{100 * (med(cpu) / med(bare_cpu) - 1):+.1f}% |")
    stages = {s: med(m["timing"][s] for m in metas) for s in STAGES}
    total = med(m["seconds"] for m in metas)
    overhead = sum(v for s, v in stages.items() if s != "flow")
    print("\nflowprep stages (wall seconds recorded in meta.json, median)\n")
    print("| " + " | ".join(STAGES) + " | other | total | overhead (all but flow) / flow |")
    print("|" + "---|" * (len(STAGES) + 3))
    print("| " + " | ".join(f"{stages[s]:.3f}" for s in STAGES) + f" | {total - sum(stages.values()):.3f} | "
          f"{total:.3f} | {100 * overhead / stages['flow']:.2f}% |")


if __name__ == "__main__":
    main()
