"""Peak memory of one batch worker as videos get longer: it must stay flat (streaming decode -> flow -> write).

Encodes the real carphone clip (../shared/data) looped to increasing lengths at 352x288, then extracts each in a
fresh subprocess through the batch worker function (flowprep.batch.process_video) and prints its peak RSS
(resource.getrusage, ru_maxrss). Holding a video in memory would cost 0.3 MB per frame here.

    python benchmarks/memory.py [--lengths 120,480,1920] [--decoders decord,pyav,opencv] [--algo dis]
    python benchmarks/memory.py --algo tvl1 --device torch-cpu --preset fast --lengths 60,240 --decoders pyav
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CLIP = REPO.parent / "shared" / "data" / "videos" / "carphone_pristine.mp4"
SIZE = (352, 288)

WORKER = """
import json, resource, sys
from flowprep.batch import VideoJob, process_video
from flowprep.config import DecodeConfig, ExtractConfig, FlowConfig
source, output, decoder, algo, device, preset = sys.argv[1:7]
config = ExtractConfig(decode=DecodeConfig(decoder=decoder),
                       flow=FlowConfig(algo=algo, device=device, preset=preset or None))
result = process_video(VideoJob(source, output), config, single_thread=True)
assert result.status == "done", result.reason
print(json.dumps({"pairs": result.pairs, "seconds": result.seconds,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def looped_clip(frames: int, path: Path) -> Path:
    """The carphone clip played forwards and backwards until `frames` frames, H.264 at 352x288, 30 fps."""
    import av

    with av.open(str(CLIP)) as source:
        clip = [f.to_ndarray(format="rgb24") for f in source.decode(video=0)]
    clip += clip[-2:0:-1]  # ping-pong: no jump at the loop point
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=30)
        stream.width, stream.height, stream.pix_fmt = *SIZE, "yuv420p"
        for index in range(frames):
            frame = av.VideoFrame.from_ndarray(clip[index % len(clip)], format="rgb24").reformat(*SIZE)
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lengths", default="120,480,1920", help="video lengths in frames")
    parser.add_argument("--decoders", default="decord,pyav,opencv")
    parser.add_argument("--algo", default="dis")
    parser.add_argument("--device", default="cpu", help="cpu, torch-cpu, cuda")
    parser.add_argument("--preset", default="", help="a preset of the algorithm (default: none)")
    args = parser.parse_args()
    env_path = str(REPO)
    print(f"{args.algo} on {args.device}{' preset ' + args.preset if args.preset else ''}, one thread")
    print(f"{'decoder':8s} {'frames':>7s} {'pairs':>6s} {'seconds':>8s} {'peak RSS MB':>12s}")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for frames in (int(n) for n in args.lengths.split(",")):
            video = looped_clip(frames, tmp / f"loop_{frames}.mp4")
            for decoder in args.decoders.split(","):
                out = tmp / f"out_{frames}_{decoder}"
                run = subprocess.run([sys.executable, "-c", WORKER, str(video), str(out), decoder, args.algo,
                                      args.device, args.preset],
                                     capture_output=True, text=True, env={"PYTHONPATH": env_path, "PATH": ""})
                if run.returncode != 0:
                    sys.exit(f"worker failed for {frames} frames with {decoder}:\n{run.stderr}")
                r = json.loads(run.stdout.splitlines()[-1])
                print(f"{decoder:8s} {frames:7d} {r['pairs']:6d} {r['seconds']:8.1f} {r['peak_rss_mb']:12.0f}")


if __name__ == "__main__":
    main()
