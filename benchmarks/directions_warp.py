"""Backward and warped flow: what they cost, and whether warping removes camera motion and keeps object motion.

Prints, with CPU seconds (time.process_time, one OpenCV thread) so that other processes on the machine do not
skew the ratios:
1. Cost of `extract --direction both` and of `--warp` against plain forward flow, end to end (decode, flow,
   quantize, JPEG, write) on a real clip (default: carphone_pristine.mp4 at 5 fps, resized to 340x256, TV-L1).
2. Camera motion removed: a real image (Middlebury RubberWhale frame10, 292x194) zoomed 3%, rotated 0.5 degrees
   and panned (3, -2) px by a known homography, with a real object (a 48x48 piece of Sintel alley_1) moving
   (6, 3) px across it: mean |flow| of the background with and without warp, and the object's warped |flow|
   against its motion relative to the background, H^-1 (x + s) - x. The same scene without camera motion
   (identity homography) gives how far warped and plain flow are apart when there is nothing to remove.
3. Camera shake: median |flow| over the frame, with and without warp, on pairs of consecutive frames spread over
   mr-bubz.webm.

    python benchmarks/directions_warp.py                        # everything (a few CPU minutes)
    python benchmarks/directions_warp.py --skip-cost            # 2 and 3 only (a minute)
    python benchmarks/directions_warp.py --skip-cost --shake-step 1   # 3 on the first 40 pairs of mr-bubz
    python benchmarks/directions_warp.py --fps 7.5 --size 340x256 --algo tvl1
"""
from __future__ import annotations

import argparse
import itertools
import platform
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from flowprep import DecodeConfig, ExtractConfig, FlowConfig, StoreConfig, create_backend, extract_video  # noqa: E402
from flowprep.config import parse_size  # noqa: E402
from flowprep.decode import flow_frames, open_reader  # noqa: E402
from flowprep.flow.warp import Warper  # noqa: E402
from flowprep.testing import camera_homography, camera_motion_scene  # noqa: E402
from flowprep.visualize import magnitude  # noqa: E402

DATA = REPO.parent / "shared" / "data"
VIDEOS = DATA / "videos"
MIDDLEBURY = DATA / "flow_gt" / "middlebury"
SINTEL = DATA / "flow_gt" / "sintel" / "training"


def gray(path: Path) -> np.ndarray:
    return cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2GRAY)


def cost(video: Path, algo: str, fps: float, size: tuple[int, int], repeat: int) -> None:
    decode = DecodeConfig(fps=fps, size=size)
    runs = {
        "forward": ExtractConfig(decode, FlowConfig(algo)),
        "both directions": ExtractConfig(decode, FlowConfig(algo), StoreConfig(directions=("forward", "backward"))),
        "warp (forward)": ExtractConfig(decode, FlowConfig(algo, warp=True)),
    }
    seconds: dict[str, list[float]] = {name: [] for name in runs}
    pairs = 0
    with tempfile.TemporaryDirectory() as tmp:
        for round_, (name, config) in itertools.product(range(repeat), runs.items()):  # interleaved
            backend = create_backend(config.flow)
            t0 = time.process_time()
            meta = extract_video(video, Path(tmp) / f"{round_}-{name}", config, backend=backend)
            seconds[name].append(time.process_time() - t0)
            pairs = meta["flow_pairs"]
            if "warp" in name:
                identity = meta["warp"]["identity_fraction"]
    base = min(seconds["forward"])
    print(f"1. cost, {video.name}: {pairs} pairs at {fps:g} fps, {size[0]}x{size[1]}, {algo}, CPU s (best of "
          f"{repeat}), whole pipeline")
    for name, values in seconds.items():
        print(f"   {name:16s} {min(values):8.2f} s  {min(values) / pairs:.3f} s/pair  {min(values) / base:.3f}x forward")
    print(f"   warp fell back to the identity on {100 * identity:.1f}% of the pairs")


def scene_numbers(algo: str) -> None:
    background = cv2.resize(gray(MIDDLEBURY / "other-data" / "RubberWhale" / "frame10.png"), (292, 194),
                            interpolation=cv2.INTER_AREA)
    patch = cv2.resize(gray(SINTEL / "final" / "alley_1" / "frame_0002.png")[100:300, 400:600], (48, 48),
                       interpolation=cv2.INTER_AREA)
    height, width = background.shape
    camera = camera_homography(width, height, scale=1.03, degrees=0.5, pan=(3, -2))
    backend = create_backend(FlowConfig(algo))
    for name, h in (("camera moves", camera), ("camera still", np.eye(3))):
        scene = camera_motion_scene(background, h, patch, position=(120, 70), shift=(6, 3))
        warper = Warper()
        plain = backend.compute(scene.first, scene.second)
        warped = warper.rewarp(backend, [scene.first], [scene.second], [plain])[0]
        obj = scene.object_mask
        back = scene.background_mask()
        plain_bg, warped_bg = magnitude(plain)[back].mean(), magnitude(warped)[back].mean()
        relative, kept = magnitude(scene.relative_flow)[obj].mean(), magnitude(warped)[obj].mean()
        print(f"2. scene, {algo}, {name}: background mean |flow| plain {plain_bg:.3f} px, warped {warped_bg:.3f} px "
              f"({100 * (1 - warped_bg / plain_bg):.1f}% less); object warped {kept:.3f} px against "
              f"{relative:.3f} px relative motion ({100 * kept / relative:.1f}% kept), plain "
              f"{magnitude(plain)[obj].mean():.3f} px ({100 * kept / magnitude(plain)[obj].mean():.1f}%); "
              f"mean |warped - plain| "
              f"{magnitude(warped - plain)[10:-10, 10:-10].mean():.3f} px; identity fallbacks {warper.stats.identity}")


def shake_numbers(algo: str, pairs: int, size: tuple[int, int], step: int | None) -> None:
    """Median |flow| of `pairs` pairs of consecutive frames, one every `step` frames (default: spread evenly over
    the whole of mr-bubz.webm)."""
    video = VIDEOS / "mr-bubz.webm"
    with open_reader(video, "pyav") as reader:
        grays = [g for _, g in flow_frames(reader, DecodeConfig(size=size))]
    step = step or (len(grays) - 1) // pairs
    chosen = [(grays[k], grays[k + 1]) for k in range(0, step * pairs, step)]
    backend = create_backend(FlowConfig(algo))
    warper = Warper()
    medians: dict[str, list[float]] = {"plain": [], "warped": []}
    for first, second in chosen:
        plain = backend.compute(first, second)
        warped = warper.rewarp(backend, [first], [second], [plain])[0]  # what flow_stream(warp=) gives, plain reused
        for name, flow in (("plain", plain), ("warped", warped)):
            medians[name].append(float(np.median(magnitude(flow))))
    lower = sum(w < p for p, w in zip(medians["plain"], medians["warped"]))
    print(f"3. camera shake, {video.name}, {len(chosen)} pairs of consecutive frames every {step} frames, "
          f"{size[0]}x{size[1]}, {algo}: median |flow| over the frame, median over the pairs: plain "
          f"{np.median(medians['plain']):.3f} px, warped {np.median(medians['warped']):.3f} px (means over pairs "
          f"{np.mean(medians['plain']):.3f} and {np.mean(medians['warped']):.3f}); lower with warp in {lower} of "
          f"{len(chosen)} pairs; identity on {100 * warper.stats.identity / warper.stats.pairs:.1f}% of pairs")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--video", type=Path, default=VIDEOS / "carphone_pristine.mp4")
    parser.add_argument("--algo", default="tvl1", help="flow algorithm of the cost runs")
    parser.add_argument("--fps", type=float, default=5.0)
    parser.add_argument("--size", type=parse_size, default=(340, 256))
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--skip-cost", action="store_true")
    parser.add_argument("--shake-pairs", type=int, default=40)
    parser.add_argument("--shake-size", type=parse_size, default=(240, 240))
    parser.add_argument("--shake-step", type=int, default=None,
                        help="one pair every this many frames (1: the first --shake-pairs pairs); default: spread")
    args = parser.parse_args()
    cv2.setNumThreads(1)
    print(f"flowprep benchmarks/directions_warp.py, OpenCV {cv2.__version__}, {platform.processor() or platform.machine()}")
    if not args.skip_cost:
        cost(args.video, args.algo, args.fps, args.size, args.repeat)
    for algo in ("dis", "tvl1"):
        scene_numbers(algo)
    for algo in ("dis", "tvl1"):
        shake_numbers(algo, args.shake_pairs, args.shake_size, args.shake_step)


if __name__ == "__main__":
    main()
