"""Accuracy and speed of every CPU flow algorithm and preset on the ground-truth pairs in ../shared/data.

For each pair (Middlebury RubberWhale 10->11; Sintel alley_1, cave_2, market_5 frame 2->3, clean and final
passes) and each method it prints the end-point error (EPE, pixels, mean over valid pixels), Fl-all (percent of
valid pixels whose error exceeds both 3 px and 5% of the true motion, the KITTI outlier rate) and CPU seconds
per pair (one OpenCV thread by default: the time on one dedicated core, robust to other processes sharing the
machine). Methods run interleaved, `--repeat` times per pair, and the median is reported. A method is
`algo[/impl][:preset]`: `tvl1` is flowprep's CPU TV-L1 (numba, the default), `tvl1/opencv` OpenCV's. For every
method whose OpenCV twin (`algo/opencv` with the same preset) runs too, a last table gives the mean |flow - the
twin's flow| in pixels over all pixels, and the EPE as a multiple of the twin's.

    python benchmarks/accuracy.py                    # the full table (several minutes: TV-L1 on Sintel is slow)
    python benchmarks/accuracy.py --pairs rubberwhale,clean/alley_1 --methods tvl1,tvl1/opencv --repeat 3
"""
from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from flowprep import FlowConfig, create_backend  # noqa: E402
from flowprep.flow.base import FlowBackend  # noqa: E402
from flowprep.flowio import known_mask, read_flo  # noqa: E402

DATA = REPO.parent / "shared" / "data"
MIDDLEBURY = DATA / "flow_gt" / "middlebury"
SINTEL = DATA / "flow_gt" / "sintel" / "training"
SINTEL_SEQUENCES = ("alley_1", "cave_2", "market_5")
# "algo[/impl][:preset]"; "tvl1" alone is flowprep's CPU TV-L1 (numba) with OpenCV's defaults.
METHODS = ("tvl1", "tvl1/opencv", "tvl1:fast", "tvl1/opencv:fast", "farneback", "dis:ultrafast", "dis:fast",
           "dis:medium")


@dataclass(frozen=True)
class GroundTruthPair:
    """Two frames and the published flow from the first to the second; `invalid`: mask of pixels to ignore."""

    name: str
    frame1: Path
    frame2: Path
    flow: Path
    invalid: Path | None = None

    def load(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Gray uint8 HxW frames (BGR -> gray as mmaction2 and TSN do), GT flow HxWx2 pixels, HxW valid mask."""
        frames = [cv2.imread(str(p)) for p in (self.frame1, self.frame2)]
        for path, frame in zip((self.frame1, self.frame2), frames):
            if frame is None:
                raise SystemExit(f"cannot read {path}")
        gt = read_flo(self.flow)
        valid = known_mask(gt)
        if self.invalid is not None:
            valid &= cv2.imread(str(self.invalid), cv2.IMREAD_GRAYSCALE) == 0
        gray = [cv2.cvtColor(f, cv2.COLOR_BGR2GRAY) for f in frames]
        return gray[0], gray[1], gt, valid


def ground_truth_pairs() -> list[GroundTruthPair]:
    """The 7 pairs of ../shared/data: RubberWhale, then clean and final of each Sintel sequence."""
    rubberwhale = MIDDLEBURY / "other-data" / "RubberWhale"
    pairs = [GroundTruthPair("rubberwhale", rubberwhale / "frame10.png", rubberwhale / "frame11.png",
                             MIDDLEBURY / "other-gt-flow" / "RubberWhale" / "flow10.flo")]
    for seq in SINTEL_SEQUENCES:
        for rendering in ("clean", "final"):
            frames = SINTEL / rendering / seq
            pairs.append(GroundTruthPair(f"{rendering}/{seq}", frames / "frame_0002.png", frames / "frame_0003.png",
                                         SINTEL / "flow" / seq / "frame_0002.flo",
                                         SINTEL / "invalid" / seq / "frame_0002.png"))
    return pairs


def endpoint_errors(flow: np.ndarray, gt: np.ndarray, valid: np.ndarray) -> tuple[float, float]:
    """(EPE in pixels, Fl-all in percent) over the `valid` pixels."""
    error = np.linalg.norm(flow[valid] - gt[valid], axis=-1)
    magnitude = np.linalg.norm(gt[valid], axis=-1)
    outliers = (error > 3.0) & (error > 0.05 * magnitude)
    return float(error.mean()), float(100.0 * outliers.mean())


def make_backend(method: str, params: dict | None = None) -> FlowBackend:
    name, _, preset = method.partition(":")
    algo, _, impl = name.partition("/")
    return create_backend(FlowConfig(algo=algo, impl=impl or None, preset=preset or None,
                                     params=tuple((params or {}).items())))


def opencv_twin(method: str) -> str:
    """The same algorithm and preset as OpenCV's implementation: 'tvl1:fast' -> 'tvl1/opencv:fast'."""
    name, colon, preset = method.partition(":")
    return f"{name.partition('/')[0]}/opencv{colon}{preset}"


def timed(backend: FlowBackend, prev: np.ndarray, nxt: np.ndarray) -> tuple[np.ndarray, float]:
    """The flow and the CPU seconds it took. With one OpenCV thread that is the time on one dedicated core;
    unlike wall time it does not grow when other processes share the machine."""
    t0 = time.process_time()
    flow = backend.compute(prev, nxt)
    return flow, time.process_time() - t0


@dataclass
class Result:
    epe: float
    fl_all: float
    seconds: list[float]
    flow: np.ndarray | None = None  # kept until the pair is done, for the distance to the OpenCV twin
    apart: float = float("nan")  # mean |flow - the OpenCV twin's flow|, pixels
    epe_ratio: float = float("nan")  # EPE / the OpenCV twin's EPE

    @property
    def median_seconds(self) -> float:
        return statistics.median(self.seconds)


def run(pairs: list[GroundTruthPair], backends: dict[str, FlowBackend], repeat: int, verbose: bool = True
        ) -> dict[tuple[str, str], Result]:
    """Every backend on every pair, `repeat` interleaved rounds per pair; keys (method, pair name)."""
    results: dict[tuple[str, str], Result] = {}
    for pair in pairs:
        prev, nxt, gt, valid = pair.load()
        for _ in range(repeat):
            for method, backend in backends.items():
                flow, seconds = timed(backend, prev, nxt)
                key = (method, pair.name)
                if key not in results:
                    results[key] = Result(*endpoint_errors(flow, gt, valid), [], flow)
                results[key].seconds.append(seconds)
        for method in backends:
            twin = results.get((opencv_twin(method), pair.name))
            mine = results[(method, pair.name)]
            if twin is not None and twin is not mine:
                mine.apart, mine.epe_ratio = float(np.abs(mine.flow - twin.flow).mean()), mine.epe / twin.epe
        for method in backends:
            results[(method, pair.name)].flow = None
        if verbose:
            done = ", ".join(f"{m} {results[(m, pair.name)].epe:.3f}" for m in backends)
            print(f"# {pair.name}: EPE {done}", file=sys.stderr, flush=True)
    return results


def table(results: dict[tuple[str, str], Result], methods: list[str], pairs: list[str], value: str) -> str:
    header = f"| method | {' | '.join(pairs)} |\n|---|{'---|' * len(pairs)}\n"
    fmt = {"epe": "{:.3f}", "fl_all": "{:.1f}", "median_seconds": "{:.3f}", "apart": "{:.4f}",
           "epe_ratio": "{:.4f}"}[value]
    rows = [f"| {m} | " + " | ".join(fmt.format(getattr(results[(m, p)], value)) for p in pairs) + " |"
            for m in methods]
    return header + "\n".join(rows)


def machine() -> str:
    return (f"{platform.processor() or platform.machine()}, {cv2.getNumberOfCPUs()} CPUs, OpenCV threads "
            f"{cv2.getNumThreads()}; Python {platform.python_version()}, OpenCV {cv2.__version__}, "
            f"numpy {np.__version__}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--methods", default=",".join(METHODS), help="comma-separated algo or algo:preset")
    parser.add_argument("--pairs", default=None, help="comma-separated pair names (default: all 7)")
    parser.add_argument("--repeat", type=int, default=1, help="timed runs per method and pair (median reported)")
    parser.add_argument("--threads", type=int, default=1,
                        help="OpenCV threads (default 1: one thread per worker, as flowprep extract --jobs N runs)")
    args = parser.parse_args()
    cv2.setNumThreads(args.threads)
    pairs = ground_truth_pairs()
    if args.pairs:
        wanted = args.pairs.split(",")
        unknown = set(wanted) - {p.name for p in pairs}
        if unknown:
            raise SystemExit(f"unknown pair(s) {sorted(unknown)}; known: {[p.name for p in pairs]}")
        pairs = [p for p in pairs if p.name in wanted]
    methods = args.methods.split(",")
    results = run(pairs, {m: make_backend(m) for m in methods}, args.repeat)
    names = [p.name for p in pairs]
    print(f"Machine: {machine()}\nCommand: python {' '.join(sys.argv)}\n")
    print("EPE (pixels, lower is better)\n\n" + table(results, methods, names, "epe") + "\n")
    print("Fl-all (% of pixels with error > 3 px and > 5% of |gt|)\n\n" + table(results, methods, names, "fl_all") + "\n")
    print(f"CPU seconds per pair (median of {args.repeat}, {args.threads} OpenCV thread(s))\n\n" + table(results, methods, names, "median_seconds"))
    twinned = [m for m in methods if opencv_twin(m) in methods and opencv_twin(m) != m]
    if twinned:
        print("\nMean |flow - OpenCV's flow| (pixels, all pixels; OpenCV's: the same algorithm and preset, "
              "`/opencv`)\n\n" + table(results, twinned, names, "apart"))
        print("\nEPE / OpenCV's EPE\n\n" + table(results, twinned, names, "epe_ratio"))


if __name__ == "__main__":
    main()
