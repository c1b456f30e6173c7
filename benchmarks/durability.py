"""What fsync costs: the same batch of real clips extracted with and without --no-fsync, alternating.

Copies the real carphone clip (../shared/data, 176x144, 120 frames: 119 pairs, 239 files a video) N times and
runs flowprep.batch.run_batch in this process (one worker, one OpenCV thread) into a folder on the disk under
test, fsync on and off in turn, REPEATS times each. fsync waits for the disk, not the CPU, so this prints wall
time (median of the repeats) beside CPU time; on a shared machine the wall times drift, hence the alternation
and medians. DIS is the fastest flow and so the worst case for the share of fsync (try --algo tvl1).

    python benchmarks/durability.py [--dir /path/on/the/disk] [--videos 8] [--repeats 3] [--algo dis] [--pack dir]
"""
from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CLIP = REPO.parent / "shared" / "data" / "videos" / "carphone_pristine.mp4"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", default=None, help="a folder on the disk to measure (default: the temp folder)")
    parser.add_argument("--videos", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--algo", default="dis")
    parser.add_argument("--pack", default="dir", choices=("dir", "zip"))
    args = parser.parse_args()

    import cv2

    from flowprep.batch import discover, run_batch
    from flowprep.config import ExtractConfig, FlowConfig, StoreConfig

    cv2.setNumThreads(1)
    work = Path(tempfile.mkdtemp(prefix="flowprep-durability-", dir=args.dir))
    try:
        videos = work / "videos"
        videos.mkdir()
        for i in range(args.videos):
            shutil.copyfile(CLIP, videos / f"v{i}.mp4")
        times: dict[bool, list[tuple[float, float]]] = {True: [], False: []}
        for repeat in range(args.repeats):
            for fsync in (True, False) if repeat % 2 == 0 else (False, True):
                out = work / f"flow-{fsync}-{repeat}"
                config = ExtractConfig(flow=FlowConfig(algo=args.algo), store=StoreConfig(pack=args.pack, fsync=fsync))
                wall, cpu = time.perf_counter(), time.process_time()
                report = run_batch(discover(videos, out), out, config)
                times[fsync].append((time.perf_counter() - wall, time.process_time() - cpu))
                assert report.done == args.videos, report.summary()
                shutil.rmtree(out)
        files = 2 * report.pairs // args.videos + 1  # x and y per pair, and meta.json
        print(f"{args.videos} carphone copies ({files} files each, --pack {args.pack}), --algo {args.algo}, one "
              f"worker, {args.repeats} runs each, folder {work.parent}:")
        for fsync in (True, False):
            wall = statistics.median(t[0] for t in times[fsync]) / args.videos
            cpu = statistics.median(t[1] for t in times[fsync]) / args.videos
            print(f"  fsync {'on ' if fsync else 'off'}: {1000 * wall:7.1f} ms wall, {1000 * cpu:7.1f} ms CPU "
                  "per video")
        on, off = (statistics.median(t[0] for t in times[f]) for f in (True, False))
        print(f"  fsync costs {100 * (on - off) / off:+.1f}% wall time "
              f"({1000 * (on - off) / args.videos:.1f} ms a video)")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
