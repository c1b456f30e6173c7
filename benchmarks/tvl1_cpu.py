"""CPU cost of flowprep's PyTorch TV-L1 (--device torch-cpu) against OpenCV's TV-L1 (--device cpu), whole processes.

Each run is a fresh `python -m flowprep extract` process on the same real clips at 340x256, with one thread on
each side (OPENCV_FOR_THREADS_NUM=1, OMP_NUM_THREADS=1; torch-cpu uses one thread anyway), so start-up (imports,
decoder, the first pair) is included, as a user pays it. Runs alternate between the devices; the median CPU
seconds (user + sys of the child, from wait4) count, and the child's peak RSS is reported. The outputs are then
compared: mean |dequantized torch flow - dequantized OpenCV flow| over every pixel of every pair.

    python benchmarks/tvl1_cpu.py                      # defaults and --preset fast, carphone + mr-bubz at 6 fps
    python benchmarks/tvl1_cpu.py --presets default --repeat 3
    python benchmarks/tvl1_cpu.py --batch-sizes 1,2,4,8   # also: in-process CPU s per pair by batch size

Data is read from ../shared/data next to the repository root.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from flowprep import dequantize  # noqa: E402
from scale import measure  # noqa: E402  (benchmarks/, beside this script)
from flowprep.store import Naming, find_outputs, open_output, read_flow_codes  # noqa: E402

VIDEOS = REPO.parent / "shared" / "data" / "videos"
CLIPS = ("carphone_pristine.mp4", "mr-bubz.webm")
ONE_THREAD = {"OPENCV_FOR_THREADS_NUM": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def extract(source: Path, out: Path, device: str, preset: str | None, args: argparse.Namespace) -> tuple[float, float, int]:
    """(CPU seconds, wall seconds, peak RSS in MB) of one `flowprep extract` process."""
    command = [sys.executable, "-m", "flowprep", "extract", str(source), str(out), "--algo", "tvl1",
               "--device", device, "--size", args.size, "--fps", str(args.fps), "--quiet", "--overwrite"]
    command += ["--preset", preset] if preset else []
    wall, cpu, rss, code, stderr = measure(command, {**os.environ, "PYTHONPATH": str(REPO), **ONE_THREAD})
    if code != 0:
        raise SystemExit(f"{' '.join(command)} failed: {stderr}")
    return cpu, wall, int(rss)


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
    for preset in args.presets:
        name = None if preset == "default" else preset
        runs: dict[str, list[tuple[float, float, int]]] = {"cpu": [], "torch-cpu": []}
        for _ in range(args.repeat):
            for device in runs:
                runs[device].append(extract(source, tmp / f"{preset}-{device}", device, name, args))
                print(f"  {preset} {device}: {runs[device][-1][0]:.2f} CPU s", file=sys.stderr, flush=True)
        apart, pairs = flow_distance(tmp / f"{preset}-torch-cpu", tmp / f"{preset}-cpu")
        cpu = {d: statistics.median(r[0] for r in runs[d]) for d in runs}
        wall = {d: statistics.median(r[1] for r in runs[d]) for d in runs}
        rss = {d: max(r[2] for r in runs[d]) for d in runs}
        rows.append(
            f"| {preset} | {pairs} | {cpu['cpu']:.1f} ({cpu['cpu'] / pairs:.3f}) | "
            f"{cpu['torch-cpu']:.1f} ({cpu['torch-cpu'] / pairs:.3f}) | **{cpu['cpu'] / cpu['torch-cpu']:.2f}x** | "
            f"{wall['cpu']:.1f} / {wall['torch-cpu']:.1f} | {rss['cpu']} / {rss['torch-cpu']} | {apart:.4f} |"
        )
    return rows


def batch_rows(args: argparse.Namespace) -> list[str]:
    """In-process CPU seconds per pair of tvl1_flow by batch size, one torch thread, the clips' frames."""
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
    parser.add_argument("--repeat", type=int, default=2, help="runs per device and preset; the median counts")
    parser.add_argument("--batch-sizes", default="", help="also time tvl1_flow in-process at these batch sizes")
    args = parser.parse_args()
    args.presets = [p for p in args.presets.split(",") if p]
    args.batch_sizes = [int(b) for b in args.batch_sizes.split(",") if b]
    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp) / "videos"
        source.mkdir()
        for clip in args.clips.split(","):
            (source / clip).symlink_to(VIDEOS / clip)
        rows = process_rows(args, source, Path(tmp))
    print(f"Clips: {args.clips} at {args.size}, {args.fps:g} fps; one thread each side; median of {args.repeat} "
          f"fresh processes (start-up included)")
    print(f"Command: python {' '.join(sys.argv)}\n")
    print("| parameters | pairs | OpenCV `--device cpu`: CPU s (per pair) | flowprep `--device torch-cpu`: CPU s "
          "(per pair) | CPU ratio | wall s cpu / torch-cpu | peak RSS MB cpu / torch-cpu | mean abs flow difference, px |")
    print("|---|---|---|---|---|---|---|---|")
    print("\n".join(rows))
    if args.batch_sizes:
        print("\nIn-process `tvl1_flow`, one torch thread, 16 carphone pairs: CPU s per pair by batch size\n")
        print("| batch size | CPU s per pair |\n|---|---|")
        print("\n".join(batch_rows(args)))


if __name__ == "__main__":
    main()
