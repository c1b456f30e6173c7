"""What each stacking costs against a plain flow stack of the same size: CPU time per item, one thread.

Extracts the sample clip (DIS, with RGB frames) at --size and reads the same seeded TSN train items (3
segments x L = 10 by default, float32 pixels, full frames, no transform) with each stacking, in one process
with one torch and one OpenCV thread (what each DataLoader worker does). Times are CPU seconds
(time.process_time), best of --repeats interleaved runs: on a shared machine wall time drifts, CPU time much
less. Trajectory stacking must cost at most 2x a plain stack; the resampling rows time its reads alone on
an item's codes, with the kernel the CPU uses (OpenCV remap) and with torch's grid_sample. Bidirectional stacks
are not timed: the sample tree has no backward flow (they read as many JPEGs as a plain stack, half of them
backward). The last line is the largest difference between the two trajectory kernels over 20 items.

    PYTHONPATH=. python benchmarks/stacking.py [--size 340x256 --length 10 --segments 3 --items 100]
"""
from __future__ import annotations

import cv2
import torch
from loader import best_times, extract_trees, item_arguments, read_each

from flowprep.annotations import Annotation, describe_output
from flowprep.data import FlowStackDataset
from flowprep.data.stacking import _trajectory_grid_sample, trajectory


def main() -> None:
    args = item_arguments(__doc__.splitlines()[0], items=100).parse_args()

    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    # One pack: loader.py compares directory and zip reads; stackings read either the same way.
    tree = extract_trees(args.video, args.work, args.size, rgb=True, packs=("dir",))["dir"]
    video = describe_output(tree / "Sample" / args.video.stem)
    flow_entries = [Annotation(f"Sample/{args.video.stem}", video.flow_pairs, 0)] * args.items
    rgb_entries = [Annotation(f"Sample/{args.video.stem}", video.rgb_frames, 0)] * args.items
    common = dict(length=args.length, segments=args.segments, mode="train", seed=0)
    datasets = {
        "flow (plain stack)": FlowStackDataset(tree, flow_entries, **common),
        "trajectory": FlowStackDataset(tree, flow_entries, stacking="trajectory", **common),
        "flow, mean subtracted": FlowStackDataset(tree, flow_entries, mean_subtract=True, **common),
        "rgbdiff": FlowStackDataset(tree, rgb_entries, stacking="rgbdiff", **common),
    }
    for dataset in datasets.values():
        dataset.set_epoch(0)  # the same seeded items are read again on purpose (else the dataset warns once)
    # (K, L, 2, H, W) uint8 codes of an item: the trajectory's own input, to time the resampling alone
    codes = FlowStackDataset(tree, flow_entries, output="uint8", **common)[0][0].unflatten(1, (args.length, 2))
    runs = {name: read_each(dataset) for name, dataset in datasets.items()}

    def resample_each() -> None:
        for _ in range(args.items):  # each result dropped before the next, as read_each does with items
            trajectory(codes, video.bound)

    def resample_each_with_grid_sample() -> None:  # the kernel of other devices and OpenCV < 4.11, on CPU
        for _ in range(args.items):
            _trajectory_grid_sample(codes, video.bound)

    runs["(trajectory resampling alone)"] = resample_each
    runs["(the same with grid_sample)"] = resample_each_with_grid_sample
    seconds = best_times(runs, args.repeats)

    stacks = args.items * args.segments
    print(f"{video.flow_pairs} flow pairs of {args.size}; item = {args.segments} x {args.length} fields; "
          f"{args.items} items; CPU time, best of {args.repeats} interleaved runs; 1 torch thread, 1 OpenCV thread")
    base = seconds["flow (plain stack)"][1]
    print(f"{'stacking':32s} {'CPU ms/stack':>13s} {'x plain':>8s}")
    for name, (_, cpu) in seconds.items():
        print(f"{name:32s} {1000 * cpu / stacks:13.2f} {cpu / base:8.2f}")
    ratio = seconds["trajectory"][1] / base
    print(f"trajectory / plain: {ratio:.2f}x ({'within' if ratio <= 2 else 'OVER'} the 2x bar)")
    uint8 = FlowStackDataset(tree, flow_entries, output="uint8", **common)
    checked = min(args.items, 20)
    apart = max(float((trajectory(item, video.bound) - _trajectory_grid_sample(item, video.bound)).abs().max())
                for item in (uint8[i][0].unflatten(1, (args.length, 2)) for i in range(checked)))
    print(f"remap and grid_sample kernels: {apart:.2e} px apart at most over {checked} items")


if __name__ == "__main__":
    main()
