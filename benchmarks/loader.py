"""Loader speed: FlowStackDataset against PIL-based loaders reading the same files, side by side.

Extracts the sample clip (DIS, TSN's 340x256 by default) into --work if it is not there yet, checks that every
loader builds identical tensors, then reads the same TSN train items with each and prints items/s and ms per
stack. Two PIL baselines:

- "tsn-pytorch": the code path of tsn-pytorch's TSNDataSet with its Stack and ToTorchFormatTensor transforms
  (PIL open + convert('L') per file, np.concatenate of HxWx1 arrays, permute to CxHxW, float), then
  dequantized to pixels like flowprep's output. This is the TSN-style loader people train with.
- "lean PIL": the least work a PIL loader can do (np.stack of the decoded arrays, one vectorized float32
  dequantize), the floor for any loader that decodes with PIL.

Items cycle through --videos names (links to the one extraction), more than the 32 zip packs a dataset keeps
open, so packs are opened per item as in training over many videos.

Two settings: one process reading items one after another with one torch thread (as inside a DataLoader
worker; --torch-threads to change), and a DataLoader with --workers processes and batches of --batch items.
The DataLoader runs add the uint8 recipe: the dataset gives uint8 codes (a quarter of float32's bytes through
the workers' shared memory) and Dequantize turns each batch into the same pixels in the main process, where
training would run it on the GPU.

    PYTHONPATH=. python benchmarks/loader.py [--length 10 --segments 3 --items 200 --videos 64 --size 340x256]
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from flowprep import DecodeConfig, ExtractConfig, FlowConfig, StoreConfig, extract_video
from flowprep.annotations import Annotation, VideoOutput, describe_output
from flowprep.config import parse_size
from flowprep.data import FlowStackDataset
from flowprep.data.transforms import Dequantize
from flowprep.reader_cache import OPEN_READERS
from flowprep.store import finished_meta, output_path

REPO = Path(__file__).resolve().parents[1]
VIDEO = REPO.parent / "shared" / "data" / "videos" / "carphone_pristine.mp4"
UINT8_RECIPE = "flowprep, zip, uint8 + Dequantize"
CODES_ONLY = "(uint8 codes, zip: read + decode)"


class PILStacks(Dataset):
    """The same items as a seeded FlowStackDataset (same frame numbers), read with PIL by one of two recipes."""

    def __init__(self, flowprep: FlowStackDataset, recipe: str):
        self.indices = [flowprep.frame_indices(i) for i in range(len(flowprep))]
        self.videos = flowprep.videos
        self.read = {"tsn-pytorch": self.tsn_pytorch, "lean": self.lean}[recipe]

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        indices = self.indices[index]
        tensor = self.read(self.videos[index], indices)
        tensor = tensor.view(indices.shape[0], 2 * indices.shape[1], *tensor.shape[-2:])
        return (tensor[0] if tensor.shape[0] == 1 else tensor), 0

    @staticmethod
    def images(video: VideoOutput, indices: np.ndarray) -> list[Image.Image]:
        """tsn-pytorch's loop: from each segment's start, L pairs (x then y), the frame number capped at the last."""
        images = []
        for start in indices[:, 0].tolist():
            p = start
            for _ in range(indices.shape[1]):
                for axis in "xy":
                    images.append(Image.open(os.path.join(video.path, video.naming.flow(axis, p - 1))).convert("L"))
                if p < video.flow_pairs:
                    p += 1
        return images

    def tsn_pytorch(self, video: VideoOutput, indices: np.ndarray) -> torch.Tensor:
        # Stack(): HxWxC of all images; ToTorchFormatTensor(div=False): CxHxW, float; then to pixels.
        stacked = np.concatenate([np.expand_dims(image, 2) for image in self.images(video, indices)], axis=2)
        tensor = torch.from_numpy(stacked).permute(2, 0, 1).contiguous().float()
        return tensor.mul_(2 * video.bound / 255).sub_(video.bound)

    def lean(self, video: VideoOutput, indices: np.ndarray) -> torch.Tensor:
        codes = np.stack([np.asarray(image) for image in self.images(video, indices)])
        values = np.multiply(codes, np.float32(2 * video.bound / 255), dtype=np.float32)
        values -= np.float32(video.bound)
        return torch.from_numpy(values)


class ReadyItems(Dataset):
    """Copies of one ready tensor: what the DataLoader's transport alone costs for items of that size and dtype."""

    def __init__(self, like: torch.Tensor, items: int):
        self.tensor, self.items = like.clone(), items

    def __len__(self) -> int:
        return self.items

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.tensor.clone(), 0


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


def read_each(dataset: Dataset) -> Callable[[], None]:
    """Items one after another, each dropped before the next, as a training loop consumes them."""
    def run() -> None:
        for i in range(len(dataset)):
            dataset[i]
    return run


def read_batches(dataset: Dataset, workers: int, batch: int,
                 after: Callable[[torch.Tensor], torch.Tensor] | None = None) -> Callable[[], None]:
    """An epoch of batches from a DataLoader whose workers persist across epochs (started by the warm-up run),
    as in training; `after` runs on each batch in the main process (where a GPU would run it)."""
    loader = DataLoader(dataset, batch_size=batch, num_workers=workers, persistent_workers=True)

    def run() -> None:
        for stacks, _ in loader:
            if after is not None:
                after(stacks)
    return run


def print_table(title: str, seconds: dict[str, tuple[float, float]], items: int, stacks: int, cpu: bool) -> None:
    print(f"\n{title}")
    print(f"{'loader':40s} {'items/s':>9s} {'ms/stack':>9s}" + (f" {'CPU ms/stack':>13s}" if cpu else "")
          + "  speed-up of each flowprep loader over a PIL one")
    flowprep = {name: wall for name, (wall, _) in seconds.items() if name.startswith("flowprep")}
    for name, (wall, cpu_seconds) in seconds.items():
        line = f"{name:40s} {items / wall:9.1f} {1000 * wall / stacks:9.2f}"
        line += f" {1000 * cpu_seconds / stacks:13.2f}" if cpu else ""
        if name.startswith("PIL"):
            line += "  " + ", ".join(f"{label.removeprefix('flowprep, ')} {wall / ours:.2f}x"
                                    for label, ours in flowprep.items())
        print(line)


def extract_trees(video: Path, work: Path, size: str, rgb: bool = False, packs: tuple[str, ...] = ("dir", "zip")
                  ) -> dict[str, Path]:
    """The video extracted with DIS at `size` (WxH) as one tree per pack in `packs` (directory, zip) under `work`,
    as Sample/<stem>, once (later runs reuse them); with `rgb`, RGB frames too. Returns {pack: tree root}."""
    trees = {}
    for pack in packs:
        trees[pack] = work / f"{size}-{pack}{'-rgb' if rgb else ''}"
        base = trees[pack] / "Sample" / video.stem
        if finished_meta(base, pack) is None:
            print(f"extracting {video} ({size}, dis, {pack}) into {trees[pack]} ...")
            extract_video(video, base, ExtractConfig(decode=DecodeConfig(size=parse_size(size)),
                                                     flow=FlowConfig(algo="dis"), store=StoreConfig(pack=pack, rgb=rgb)))
    return trees


def item_arguments(description: str, items: int) -> argparse.ArgumentParser:
    """The loader benchmarks' shared options: the video and its extraction, the item shape, the item count."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--video", type=Path, default=VIDEO)
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "flowprep-bench-loader")
    parser.add_argument("--size", default="340x256", help="extraction size WxH (TSN: 340x256)")
    parser.add_argument("--length", type=int, default=10)
    parser.add_argument("--segments", type=int, default=3)
    parser.add_argument("--items", type=int, default=items)
    parser.add_argument("--repeats", type=int, default=5)
    return parser


def main() -> None:
    parser = item_arguments(__doc__.splitlines()[0], items=200)
    parser.add_argument("--videos", type=int, default=2 * OPEN_READERS,
                        help="distinct video names the items cycle through (zip packs are kept open per name)")
    parser.add_argument("--torch-threads", type=int, default=1,
                        help="torch threads in the one-process runs (DataLoader workers use 1)")
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers; 0 skips the DataLoader runs")
    parser.add_argument("--batch", type=int, default=8)
    args = parser.parse_args()

    size = parse_size(args.size)
    trees = extract_trees(args.video, args.work, args.size)
    video = describe_output(trees["dir"] / "Sample" / args.video.stem)
    # Distinct names for the one extraction, more than the datasets keep open, so that zip packs are opened per
    # item as in training over many videos (links: the page cache still holds one copy).
    for pack, tree in trees.items():
        for k in range(args.videos):
            link = output_path(tree / "Many" / f"{args.video.stem}_{k}", pack)
            if not link.exists():
                link.parent.mkdir(parents=True, exist_ok=True)
                link.symlink_to(output_path(tree / "Sample" / args.video.stem, pack))
    entries = [Annotation(f"Many/{args.video.stem}_{i % args.videos}", video.flow_pairs, 0) for i in range(args.items)]
    loaders: dict[str, Dataset] = {
        f"flowprep, {pack}": FlowStackDataset(trees[pack], entries, length=args.length,
                                                                 segments=args.segments, mode="train", seed=0)
        for pack in trees}
    for dataset in loaders.values():
        dataset.set_epoch(0)  # the same seeded items are read again on purpose (else the dataset warns once)
    ours = loaders["flowprep, dir"]
    loaders["PIL, tsn-pytorch, dir"] = PILStacks(ours, "tsn-pytorch")
    loaders["PIL, lean, dir"] = PILStacks(ours, "lean")
    codes = FlowStackDataset(trees["zip"], entries, length=args.length, segments=args.segments, mode="train", seed=0,
                             output="uint8")
    codes.set_epoch(0)
    for i in range(0, args.items, max(1, args.items // 10)):
        expected = ours[i][0]
        for name, loader in loaders.items():
            assert torch.equal(loader[i][0], expected), (name, i)
        assert torch.equal(Dequantize(video.bound)(codes[i][0]), expected), (UINT8_RECIPE, i)

    torch.set_num_threads(args.torch_threads)
    stacks = args.items * args.segments
    print(f"{video.flow_pairs} flow pairs of {size[0]}x{size[1]}; item = {args.segments} segment(s) x {args.length} "
          f"pairs = {2 * args.length * args.segments} JPEGs, float32 pixels; {args.items} items over {args.videos} "
          f"video names; best of "
          f"{args.repeats} interleaved runs; all loaders give identical tensors")
    # Where flowprep's time goes: the same items as uint8 codes are reading + decoding alone; the rest is float.
    runs = {name: read_each(loader) for name, loader in loaders.items()}
    runs[CODES_ONLY] = read_each(codes)
    seconds = best_times(runs, args.repeats)
    print_table(f"one process, items one by one, torch threads {args.torch_threads}", seconds, args.items, stacks,
                cpu=True)
    conversion = seconds["flowprep, zip"][0] - seconds[CODES_ONLY][0]
    stack_and_permute = seconds["PIL, tsn-pytorch, dir"][0] - seconds["PIL, lean, dir"][0]
    print(f"flowprep's float32 conversion: {1000 * conversion / stacks:.2f} ms a stack; tsn-pytorch's concatenate "
          f"and permute, over the lean PIL loader: {1000 * stack_and_permute / stacks:.2f} ms a stack")
    if args.workers:
        runs = {name: read_batches(loader, args.workers, args.batch) for name, loader in loaders.items()}
        # The uint8 recipe: a quarter of the bytes through the workers' shared memory, dequantized after batching.
        runs[UINT8_RECIPE] = read_batches(codes, args.workers, args.batch, Dequantize(video.bound))
        for name, like in (("float32", ours[0][0]), ("uint8", codes[0][0])):
            runs[f"transport alone, ready {name} items"] = read_batches(ReadyItems(like, args.items), args.workers,
                                                                        args.batch)
        seconds = best_times(dict(sorted(runs.items(), key=lambda run: not run[0].startswith("flowprep"))),
                             args.repeats)
        print_table(f"DataLoader, {args.workers} workers, batches of {args.batch} (transport alone: items that "
                    "are ready copies, no reading; the ceiling of any loader of that dtype)", seconds, args.items,
                    stacks, cpu=False)


if __name__ == "__main__":
    main()
