"""Loader speed: FlowStackDataset against a straightforward PIL loader (tsn-pytorch style) on the same files.

Extracts the sample clip (DIS, TSN's 340x256 by default) into --work if it is not there yet, then reads the
same TSN train stacks with both loaders in one process and prints items/s and ms per stack side by side,
after checking that both build identical tensors.

    PYTHONPATH=. python benchmarks/loader.py [--length 10 --segments 3 --items 100 --size 340x256]
"""
from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from flowprep import DecodeConfig, ExtractConfig, FlowConfig, StoreConfig, extract_video
from flowprep.annotations import Annotation, describe_output
from flowprep.config import parse_size
from flowprep.data import FlowStackDataset
from flowprep.store import finished_meta

REPO = Path(__file__).resolve().parents[1]
VIDEO = REPO.parent / "shared" / "data" / "videos" / "carphone_pristine.mp4"


def pil_stack(video_dir: Path, num_frames: int, indices: np.ndarray, bound: float) -> torch.Tensor:
    """What tsn-pytorch's loader does per item: PIL open + convert('L') per file from each segment's start
    (repeating frame num_frames at the end), stack, dequantize."""
    images = []
    for start in indices[:, 0].tolist():
        p = start
        for _ in range(indices.shape[1]):
            for axis in "xy":
                images.append(np.asarray(Image.open(video_dir / f"flow_{axis}_{p:05d}.jpg").convert("L")))
            if p < num_frames:
                p += 1
    codes = np.stack(images).reshape(indices.shape[0], 2 * indices.shape[1], *images[0].shape)
    values = codes.astype(np.float32) * np.float32(2 * bound / 255) - np.float32(bound)
    tensor = torch.from_numpy(values)
    return tensor[0] if tensor.shape[0] == 1 else tensor


def best_times(runs: dict[str, Callable[[], object]], repeats: int) -> dict[str, tuple[float, float]]:
    """Best wall-clock and CPU seconds of each run; runs are interleaved so that load on a shared machine
    falls on all of them alike."""
    for run in runs.values():
        run()  # warm the page cache and the decoders
    best = {name: (float("inf"), float("inf")) for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            wall, cpu = time.perf_counter(), time.process_time()
            run()
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            best[name] = (min(best[name][0], wall), min(best[name][1], cpu))
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--video", type=Path, default=VIDEO)
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "flowprep-bench-loader")
    parser.add_argument("--size", default="340x256", help="extraction size WxH (TSN: 340x256)")
    parser.add_argument("--length", type=int, default=10)
    parser.add_argument("--segments", type=int, default=3)
    parser.add_argument("--items", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    size = parse_size(args.size)
    trees = {}
    for pack in ("dir", "zip"):
        trees[pack] = args.work / f"{args.size}-{pack}"
        base = trees[pack] / "Sample" / args.video.stem
        if finished_meta(base, pack) is None:
            print(f"extracting {args.video} ({args.size}, dis, {pack}) into {trees[pack]} ...")
            extract_video(args.video, base, ExtractConfig(decode=DecodeConfig(size=size), flow=FlowConfig(algo="dis"),
                                                          store=StoreConfig(pack=pack)))
    video = describe_output(trees["dir"] / "Sample" / args.video.stem)
    entries = [Annotation(f"Sample/{args.video.stem}", video.flow_pairs, 0)] * args.items
    datasets = {pack: FlowStackDataset(trees[pack], entries, length=args.length, segments=args.segments,
                                       mode="train", seed=0) for pack in trees}
    indices = [datasets["dir"].frame_indices(i) for i in range(args.items)]
    for i in range(0, args.items, max(1, args.items // 10)):
        assert torch.equal(datasets["zip"][i][0], pil_stack(video.path, video.flow_pairs, indices[i], video.bound)), i

    def read_all(dataset: FlowStackDataset):
        return lambda: [dataset[i] for i in range(args.items)]

    runs = {
        "flowprep FlowStackDataset (dir)": read_all(datasets["dir"]),
        "flowprep FlowStackDataset (zip)": read_all(datasets["zip"]),
        "PIL loader, tsn-pytorch style (dir)": lambda: [pil_stack(video.path, video.flow_pairs, idx, video.bound)
                                                        for idx in indices],
    }
    seconds = best_times(runs, args.repeats)
    print(f"{video.flow_pairs} flow pairs of {size[0]}x{size[1]}; item = {args.segments} segment(s) x "
          f"{args.length} pairs = {2 * args.length * args.segments} JPEGs; {args.items} items, best of "
          f"{args.repeats} interleaved runs; torch threads {torch.get_num_threads()}")
    print(f"{'loader':40s} {'items/s':>9s} {'ms/item':>9s} {'ms/stack':>9s} {'CPU ms/stack':>13s}")
    for name, (wall, cpu) in seconds.items():
        print(f"{name:40s} {args.items / wall:9.1f} {1000 * wall / args.items:9.2f} "
              f"{1000 * wall / (args.items * args.segments):9.2f} {1000 * cpu / (args.items * args.segments):13.2f}")
    baseline = seconds["PIL loader, tsn-pytorch style (dir)"]
    for pack in trees:
        wall, cpu = seconds[f"flowprep FlowStackDataset ({pack})"]
        print(f"speed-up over PIL ({pack}): {baseline[0] / wall:.2f}x wall clock, {baseline[1] / cpu:.2f}x CPU time")


if __name__ == "__main__":
    main()
