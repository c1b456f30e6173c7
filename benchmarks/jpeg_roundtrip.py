"""Measure the JPEG round-trip error of real flow against quantize.jpeg_roundtrip_bound.

Flow of the real clips (TV-L1 and DIS) goes through quantize -> JPEG -> decode -> dequantize for each bound,
quality and layout; the worst pair mean and the worst single value are printed in codes (one code = 2b/255
pixels) next to the documented bound, which should sit about 2x above them.

    python benchmarks/jpeg_roundtrip.py            # ~2-3 minutes on 2 cores (TV-L1 dominates)
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from flowprep import DecodeConfig, FlowConfig, create_backend  # noqa: E402
from flowprep.decode import flow_frames, open_reader  # noqa: E402
from flowprep.quantize import jpeg_roundtrip_bound  # noqa: E402
from flowprep.testing import jpeg_roundtrip  # noqa: E402

VIDEOS = REPO.parent / "shared" / "data" / "videos"
# (clip, sampling fps, flow size or None for the source size): a talking head in a car, a dog with fast motion.
CLIPS = (("carphone_pristine.mp4", 3.0, None), ("mr-bubz.webm", 1.0, (340, 256)))


def real_flows(algo: str) -> list[np.ndarray]:
    backend = create_backend(FlowConfig(algo=algo))
    flows = []
    for name, fps, size in CLIPS:
        with open_reader(VIDEOS / name, "pyav") as reader:
            frames = (gray for _, gray in flow_frames(reader, DecodeConfig(fps=fps, size=size)))
            flows += list(backend.compute_stream(frames))
    return flows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--algos", default="tvl1,dis")
    parser.add_argument("--bounds", default="5,20,40")
    parser.add_argument("--qualities", default="75,90,95,100")
    args = parser.parse_args()
    cv2.setNumThreads(1)
    flows = [f for algo in args.algos.split(",") for f in real_flows(algo)]
    print(f"{len(flows)} real flow pairs ({args.algos}) of {', '.join(c[0] for c in CLIPS)}")
    print(f"Command: python {' '.join(sys.argv)}\n")
    print("| layout | quality | bound b (px) | worst pair mean (codes) | bound mean (codes) | worst value "
          "(codes) | bound max (codes) | bound max (px) |\n|---|---|---|---|---|---|---|---|")
    for layout in ("separate", "xy0"):
        for quality in (int(q) for q in args.qualities.split(",")):
            for bound in (float(b) for b in args.bounds.split(",")):
                code = 2 * bound / 255
                errors = [np.abs(jpeg_roundtrip(f, bound, quality, layout) - np.clip(f, -bound, bound))
                          for f in flows]
                worst_mean = max(e.mean() for e in errors) / code
                worst = max(e.max() for e in errors) / code
                limit = jpeg_roundtrip_bound(bound, quality, layout)
                print(f"| {layout} | {quality} | {bound:g} | {worst_mean:.2f} | {limit.mean / code:.2f} | "
                      f"{worst:.1f} | {limit.max / code:.1f} | {limit.max:.2f} |")


if __name__ == "__main__":
    main()
