"""A two-stream network trained end to end on CPU for a few steps: extract, list, load, train.

Toy task on the sample clip: class 'normal' is its flow at the source frame rate, class 'fast' its flow at
7.5 fps (four times the motion per pair). A tiny spatial (RGB) and temporal (flow stack) network, TSN-style
(segment consensus by averaging, late fusion of the two streams), trains on a DataLoader with workers.
Both classes show frames of the same clip; what differs is the motion between them.

    python examples/train_two_stream.py [--video examples/carphone_pristine.mp4] [--work DIR] [--steps 20]
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader

from flowprep import DecodeConfig, ExtractConfig, FlowConfig, StoreConfig, extract_video
from flowprep.annotations import build_annotations, find_outputs, write_annotations
from flowprep.data import TwoStreamDataset
from flowprep.data.transforms import Compose, FlowHorizontalFlip, HorizontalFlip, MultiScaleCrop
from flowprep.store import finished_meta

HERE = Path(__file__).resolve().parent
CLASS_FPS = {"fast": 7.5, "normal": None}  # None: the source frame rate


class TinyStream(nn.Module):
    """Conv net on (batch, segments, C, H, W); logits averaged over segments (TSN consensus)."""

    def __init__(self, in_channels: int, classes: int):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 16, 3, stride=2, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
            nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        )
        self.classifier = nn.Linear(32, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, segments = x.shape[:2]
        logits = self.classifier(self.features(x.flatten(0, 1)))
        return logits.view(batch, segments, -1).mean(1)


def extract(video: Path, flow_root: Path) -> None:
    """Flow (DIS, fast on CPU) and RGB frames of `video` once per class; finished outputs are kept."""
    for name, fps in CLASS_FPS.items():
        base = flow_root / name / video.stem
        if finished_meta(base) is None:
            config = ExtractConfig(decode=DecodeConfig(fps=fps), flow=FlowConfig(algo="dis"),
                                   store=StoreConfig(rgb=True))
            meta = extract_video(video, base, config)
            print(f"extracted {name}: {meta['flow_pairs']} flow pairs at {meta['sampled_fps']:.2f} fps -> {base}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--video", type=Path, default=HERE / "carphone_pristine.mp4")
    parser.add_argument("--work", type=Path, default=None, help="folder for flow and list (default: a temp dir)")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if not args.video.is_file():
        parser.error(f"video {str(args.video)!r} not found (give one with --video)")
    with tempfile.TemporaryDirectory() as temp:
        run(args, args.work or Path(temp))


def run(args: argparse.Namespace, work: Path) -> None:
    started = time.perf_counter()
    flow_root = work / "flow"
    extract(args.video, flow_root)
    annotations = build_annotations(find_outputs(flow_root), "flow")
    write_annotations(annotations, work / "train.txt")
    print(f"{work / 'train.txt'}:\n" + "".join(f"  {a.line()}\n" for a in annotations))

    length, segments = 5, 3
    # Each video listed 8 times: every entry is its own item index, so it draws its own TSN offsets, crops and flips.
    dataset = TwoStreamDataset(
        flow_root, annotations * 8, length=length, segments=segments, mode="train", seed=args.seed,
        transform=Compose([MultiScaleCrop(112), FlowHorizontalFlip(0.5)]),
        rgb_transform=Compose([MultiScaleCrop(112, flow=False), HorizontalFlip(0.5)]),
    )
    loader = DataLoader(dataset, batch_size=4, shuffle=True, num_workers=args.workers,
                        generator=torch.Generator().manual_seed(args.seed))
    torch.manual_seed(args.seed)
    classes = len({a.label for a in annotations})
    spatial, temporal = TinyStream(3, classes), TinyStream(2 * length, classes)
    optimizer = torch.optim.Adam([*spatial.parameters(), *temporal.parameters()], lr=3e-3)
    loss_of = nn.CrossEntropyLoss()

    step, epoch = 0, 0
    while step < args.steps:
        dataset.set_epoch(epoch)  # workers start afresh each epoch and see it
        for rgb, flow, labels in loader:
            rgb_logits, flow_logits = spatial(rgb), temporal(flow)
            rgb_loss, flow_loss = loss_of(rgb_logits, labels), loss_of(flow_logits, labels)
            loss = rgb_loss + flow_loss
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            fused = (rgb_logits.softmax(1) + 1.5 * flow_logits.softmax(1)).argmax(1)  # TSN weights flow 1.5
            step += 1
            print(f"step {step:3d}  epoch {epoch}  rgb {tuple(rgb.shape)}  flow {tuple(flow.shape)}  loss rgb "
                  f"{rgb_loss.item():.3f} flow {flow_loss.item():.3f}  fused accuracy "
                  f"{(fused == labels).float().mean().item():.2f}")
            if step == args.steps:
                break
        epoch += 1
    print(f"done in {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main()
