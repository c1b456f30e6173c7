"""Throughput and accuracy of flowprep's PyTorch TV-L1, with OpenCV's CPU TV-L1 as the reference.

    python benchmarks/gpu.py                        # on a GPU: batch sizes 1..256, 340x256 and 1024x436, all EPE pairs
    python benchmarks/gpu.py --device torch-cpu --quick --threads 1   # smoke test without a GPU

Prints one table: pairs/s per frame size and batch size (upload, flow and download of a batch of real frame pairs,
after a warm-up; CUDA is synchronized before the clock stops), then end-point error on Middlebury RubberWhale and
Sintel alley_1 / cave_2 / market_5 (clean and final) with OpenCV's default parameters on both sides.
Data is read from ../shared/data next to the repository root.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from flowprep.flow.opencv import OpenCVTVL1  # noqa: E402
from flowprep.flow.torch_tvl1 import TorchTVL1, torch_device, tvl1_flow  # noqa: E402
from flowprep.flowio import endpoint_error, read_flo  # noqa: E402

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "flow_gt"
SINTEL = DATA / "sintel/training"
SEQUENCES = ("alley_1", "cave_2", "market_5")


def gray(path: Path) -> np.ndarray:
    image = cv2.imread(str(path))
    if image is None:
        raise SystemExit(f"cannot read {path}")
    return cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)


def rubberwhale() -> tuple[str, np.ndarray, np.ndarray, np.ndarray]:
    frames = DATA / "middlebury/other-data/RubberWhale"
    gt = read_flo(DATA / "middlebury/other-gt-flow/RubberWhale/flow10.flo")
    return "RubberWhale 10->11", gray(frames / "frame10.png"), gray(frames / "frame11.png"), gt


def sintel(sequence: str, render: str) -> tuple[str, np.ndarray, np.ndarray, np.ndarray]:
    folder = SINTEL / render / sequence
    gt = read_flo(SINTEL / "flow" / sequence / "frame_0002.flo")
    return f"Sintel {render} {sequence}", gray(folder / "frame_0002.png"), gray(folder / "frame_0003.png"), gt


def synchronize(torch, device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize(device)


def time_batch(torch, device: str, prevs: np.ndarray, nxts: np.ndarray) -> float:
    """Seconds to upload a batch of pairs, compute their flows and bring them back to the host."""
    synchronize(torch, device)
    start = time.perf_counter()
    flows = tvl1_flow(torch.from_numpy(prevs).to(device), torch.from_numpy(nxts).to(device)).cpu()
    synchronize(torch, device)
    assert flows.shape[0] == len(prevs)
    return time.perf_counter() - start


def throughput_rows(args: argparse.Namespace, torch, device: str) -> list[tuple[str, str, str]]:
    pairs = [sintel(s, r) for s in SEQUENCES for r in ("clean", "final")] + [rubberwhale()]
    rows = []
    for width, height in args.sizes:
        resized = [(cv2.resize(a, (width, height), interpolation=cv2.INTER_AREA),
                    cv2.resize(b, (width, height), interpolation=cv2.INTER_AREA)) for _, a, b, _ in pairs]
        opencv = OpenCVTVL1()
        start = time.perf_counter()
        for a, b in resized:
            opencv.compute(a, b)
        opencv_rate = len(resized) / (time.perf_counter() - start)
        time_batch(torch, device, np.stack([resized[0][0]]), np.stack([resized[0][1]]))  # warm-up
        out_of_memory = None
        for batch in args.batch_sizes:
            label = f"pairs/s {width}x{height} batch {batch}"
            reference = f"{opencv_rate:.2f}" if batch == args.batch_sizes[0] else ""
            if out_of_memory is not None:
                rows.append((label, f"skipped (batch {out_of_memory} ran out of memory)", reference))
                continue
            chosen = [resized[k % len(resized)] for k in range(batch)]  # real pairs, repeated to fill the batch
            prevs, nxts = np.stack([a for a, _ in chosen]), np.stack([b for _, b in chosen])
            try:
                best = min(time_batch(torch, device, prevs, nxts) for _ in range(args.repeats))
            except torch.cuda.OutOfMemoryError:
                torch.cuda.empty_cache()
                out_of_memory = batch
                rows.append((label, "out of memory", reference))
                continue
            rows.append((label, f"{batch / best:.2f}", reference))
            print(f"  {label}: {batch / best:.2f}", file=sys.stderr, flush=True)
    return rows


def epe_rows(args: argparse.Namespace, torch, device: str) -> list[tuple[str, str, str]]:
    cases = [rubberwhale()]
    if args.epe == "all":
        cases += [sintel(s, r) for s in SEQUENCES for r in ("clean", "final")]
    else:
        cases += [sintel("alley_1", r) for r in ("clean", "final")]
    rows = []
    opencv = OpenCVTVL1()
    for name, a, b, gt in cases:
        synchronize(torch, device)
        start = time.perf_counter()
        ours = tvl1_flow(torch.from_numpy(a)[None].to(device), torch.from_numpy(b)[None].to(device))[0].cpu().numpy()
        ours_s = time.perf_counter() - start
        start = time.perf_counter()
        reference = opencv.compute(a, b)
        reference_s = time.perf_counter() - start
        ours_epe, reference_epe = endpoint_error(ours, gt), endpoint_error(reference, gt)
        apart = endpoint_error(ours, reference)  # mean end-point distance between the two flows, pixels
        rows.append((
            f"EPE {name}",
            f"{ours_epe:.4f} ({ours_epe / reference_epe:.3f}x OpenCV; {apart:.4f} px from it; {ours_s:.1f} s)",
            f"{reference_epe:.4f} ({reference_s:.1f} s)",
        ))
        print(f"  EPE {name}: {ours_epe:.4f} vs {reference_epe:.4f}", file=sys.stderr, flush=True)
    return rows


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda", help="cuda, cuda:N or torch-cpu (default cuda)")
    parser.add_argument("--batch-sizes", default=",".join(str(2**k) for k in range(9)),
                        help="comma-separated pairs per launch (default 1,2,4,...,256)")
    parser.add_argument("--sizes", default="340x256,1024x436", help="comma-separated WxH frame sizes for throughput")
    parser.add_argument("--epe", choices=("all", "small", "none"), default="all",
                        help="all: RubberWhale + 3 Sintel sequences x clean/final; small: RubberWhale + alley_1")
    parser.add_argument("--repeats", type=int, default=2, help="timed runs per batch size; the fastest counts")
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads for torch and OpenCV (default: theirs); 1 avoids OpenMP spin on busy cores")
    parser.add_argument("--quick", action="store_true", help="batch sizes 1,2 at 340x256, --epe small, 1 repeat")
    args = parser.parse_args()
    if args.quick:
        args.batch_sizes, args.sizes, args.epe, args.repeats = "1,2", "340x256", "small", 1
    args.batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    args.sizes = [tuple(int(v) for v in size.lower().split("x")) for size in args.sizes.split(",") if size]
    return args


def main() -> None:
    args = parse_args()
    reason = TorchTVL1.availability(args.device)
    if reason is not None:
        raise SystemExit(f"torch TV-L1 cannot run on {args.device}: {reason}")
    import torch

    if args.threads is not None:
        torch.set_num_threads(args.threads)
        cv2.setNumThreads(args.threads)
    device = torch_device(args.device)
    where = torch.cuda.get_device_name(device) if device.startswith("cuda") else f"CPU, {torch.get_num_threads()} threads"
    rows = throughput_rows(args, torch, device) if args.sizes else []
    if args.epe != "none":
        rows += epe_rows(args, torch, device)
    header = (f"torch TV-L1 on {args.device} ({where}, torch {torch.__version__})",
              f"OpenCV {cv2.__version__} TV-L1, CPU ({cv2.getNumThreads()} threads)")
    widths = [max(len(r[i]) for r in rows + [("measure", *header)]) for i in range(3)]
    for i, row in enumerate([("measure", *header)] + rows):
        print("| " + " | ".join(cell.ljust(w) for cell, w in zip(row, widths)) + " |")
        if i == 0:
            print("|" + "|".join("-" * (w + 2) for w in widths) + "|")


if __name__ == "__main__":
    main()
