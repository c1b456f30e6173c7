"""Where a `flowprep extract` process with the numba TV-L1 (the default) spends its CPU: start-up, decoding, flow.

In this process, one thread, CPU seconds (`time.process_time`) and file-backed RSS (RssFile of /proc/self/status,
MB) after each start-up step: importing flowprep's command line (flowprep, OpenCV, numpy, the decoders), importing
numba, loading the compiled kernels from numba's disk cache (warmed first by a child process, so nothing is
compiled here). Then the clip is decoded and sampled as extract does (`--size`, `--fps`), and the first `--pairs`
pairs are solved by `_tvl1_numba.tvl1_flow` with OpenCV's resize, remap and medianBlur and the numba iteration
each timed where the solver calls them; the rest (data term, flow map, gradient, allocation) is "other".

    python benchmarks/tvl1_profile.py                       # mr-bubz, --preset fast, 8 pairs at 340x256, 6 fps
    python benchmarks/tvl1_profile.py --preset default --clip carphone_pristine.mp4

Data is read from ../shared/data next to the repository root.
"""
from __future__ import annotations

import time


def file_rss() -> float:
    """This process's file-backed resident memory, MB."""
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("RssFile:")) / 1024


STARTED, STARTED_RSS = time.process_time(), file_rss()  # the interpreter's own start-up

import argparse  # noqa: E402
import importlib  # noqa: E402
import os  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
from collections import defaultdict  # noqa: E402
from pathlib import Path  # noqa: E402
from types import SimpleNamespace  # noqa: E402
from typing import Any, Callable  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
VIDEOS = REPO.parent / "shared" / "data" / "videos"


def timed(spent: dict[str, float], name: str, function: Callable[..., Any]) -> Callable[..., Any]:
    def run(*args: Any, **kwargs: Any) -> Any:
        start = time.process_time()
        try:
            return function(*args, **kwargs)
        finally:
            spent[name] += time.process_time() - start

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clip", default="mr-bubz.webm", help="a file name in ../shared/data/videos")
    parser.add_argument("--size", default="340x256", help="WIDTHxHEIGHT given to the flow (default: TSN's 340x256)")
    parser.add_argument("--fps", type=float, default=6.0, help="sampling rate (default 6)")
    parser.add_argument("--preset", default="fast", help="a TV-L1 preset, or 'default' for OpenCV's defaults")
    parser.add_argument("--pairs", type=int, default=8, help="pairs solved (default 8)")
    args = parser.parse_args()
    env = {**os.environ, "PYTHONPATH": str(REPO), "OPENCV_FOR_THREADS_NUM": "1"}
    subprocess.run([sys.executable, "-c", "from flowprep.flow.tvl1_cpu import ensure_compiled; ensure_compiled()"],
                   env=env, check=True)  # warm numba's cache, so that the steps below load and never compile

    sys.path.insert(0, str(REPO))
    steps = [("the interpreter", STARTED, STARTED_RSS)]

    def step(name: str) -> None:
        steps.append((name, time.process_time() - sum(s for _, s, _ in steps), file_rss()))

    step("this script's imports and argument parsing")
    importlib.import_module("flowprep.cli")  # what `python -m flowprep` imports

    step("import flowprep.cli (flowprep, OpenCV, numpy, decoders)")
    import numba  # noqa: F401

    step("import numba (llvmlite)")
    from flowprep.flow import tvl1_cpu

    tvl1_cpu.NumbaTVL1()  # one thread, and the kernels loaded from the disk cache
    step("load the compiled kernels")

    import cv2
    import numpy as np

    from flowprep import FlowConfig
    from flowprep.config import DecodeConfig, parse_size
    from flowprep.decode import flow_frames, open_reader
    from flowprep.flow import _tvl1_numba, check_flow_config

    start = time.process_time()
    decode = DecodeConfig(fps=args.fps, size=parse_size(args.size))
    with open_reader(VIDEOS / args.clip, decode.readers[0]) as reader:  # extract's first reader
        frames = [gray for _, gray in flow_frames(reader, decode)]
    decoding = time.process_time() - start

    preset = None if args.preset == "default" else args.preset
    params = check_flow_config(FlowConfig("tvl1", preset=preset))
    spent: dict[str, float] = defaultdict(float)
    _tvl1_numba.cv2 = SimpleNamespace(**{name: getattr(cv2, name) for name in dir(cv2) if not name.startswith("_")})
    for name in ("remap", "medianBlur", "resize"):
        setattr(_tvl1_numba.cv2, name, timed(spent, f"cv2.{name}", getattr(cv2, name)))
    _tvl1_numba._iterate = timed(spent, "numba iterations (_iterate)", _tvl1_numba._iterate)
    pairs = min(args.pairs, len(frames) - 1)
    start = time.process_time()
    for k in range(pairs):
        _tvl1_numba.tvl1_flow(frames[k], frames[k + 1], params)
    flow = time.process_time() - start
    spent["other"] = flow - sum(spent.values())

    print(f"Clip: {args.clip} at {args.size}, {args.fps:g} fps ({len(frames)} frames); preset {args.preset}; "
          f"one thread; numba {numba.__version__}, OpenCV {cv2.__version__}, numpy {np.__version__}")
    print(f"Command: python {' '.join(sys.argv)}\n")
    print("| start-up step | CPU s | file-backed RSS after it, MB |\n|---|---|---|")
    for name, seconds, rss in steps:
        print(f"| {name} | {seconds:.2f} | {rss:.0f} |")
    print(f"| **start-up, all** | **{sum(s for _, s, _ in steps):.2f}** | |")
    print(f"\nDecoding and sampling the whole clip: {decoding:.2f} CPU s\n")
    print(f"Flow of the first {pairs} pairs: {flow:.2f} CPU s ({flow / pairs:.3f} per pair)\n")
    print("| step of the solver | CPU s | share of the flow |\n|---|---|---|")
    for name, seconds in sorted(spent.items(), key=lambda item: -item[1]):
        print(f"| {name} | {seconds:.3f} | {100 * seconds / flow:.0f}% |")


if __name__ == "__main__":
    main()
