"""Extraction to an object store against a local folder, and resume of many finished videos there, against a
real S3 API server (moto's, started here on 127.0.0.1 in this process) reached by the real CLI over HTTP.

(a) Throughput: VIDEOS hard links of one short real clip (the first FRAMES frames of the carphone clip,
../shared/data, H.264 at its own 176x144) extracted with --algo dis --pack zip --jobs 1 to a fresh local folder
and to a fresh bucket prefix, alternately, REPEAT times each; medians of the CLI's wall and CPU seconds (os.wait4:
the command and the workers it waited for), and the fastest runs' (the least disturbed on a shared machine),
with their ratios (goal: object store <= 1.1x the local folder). The server's CPU (this process's, which does
nothing else meanwhile) is printed apart: it is the store's work.

(b) Resume: RESUME_VIDEOS finished videos on the server. Sources: a tiny clip (4 frames, 64x48, H.264) per class
folder, hard-linked into RESUME_VIDEOS videos (scale.py's tree). Packs: one real extraction of the first
CLASSES videos (one per class) to a local folder; every other video's pack is the pack of its class's video
(the same source file: hard links), with meta.json's source made its own; all are uploaded under the prefix.
A first rerun finds no index there (as a tree written before the index existed, or by a killed run) and reads
every pack's meta.json by range requests; it writes the index. The second rerun is the one timed against the
goal (under 15 s); the requests the server received during it are counted by kind.

    python benchmarks/object_store.py [--videos 400] [--frames 16] [--repeat 5] [--resume-videos 20000]
                                      [--classes 200] [--steps throughput,resume] [--dir /tmp]
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
import uuid
import zipfile
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from scale import build_tree, measure  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
CLIP_SIZE = (176, 144)  # the carphone clip's own size
STEPS = ("throughput", "resume")


class RequestCounter:
    """WSGI middleware in front of moto's application: counts the requests to one bucket by (method, kind)."""

    def __init__(self, app, bucket: str):
        self.app, self.bucket, self.counts = app, bucket, Counter()
        self._lock = threading.Lock()

    def __call__(self, environ, start_response):
        path = environ.get("PATH_INFO", "")
        if path == f"/{self.bucket}" or path.startswith(f"/{self.bucket}/"):
            kind = ("listing" if "list-type" in environ.get("QUERY_STRING", "") else
                    "pack" if path.endswith(".zip") else path.rsplit("/", 1)[1])
            with self._lock:
                self.counts[environ["REQUEST_METHOD"], kind] += 1
        return self.app(environ, start_response)


def start_server(bucket: str) -> tuple[str, RequestCounter, object]:
    """moto's S3 server on 127.0.0.1 (a thread of this process) with a RequestCounter: (URL, counter, server)."""
    from moto.server import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
    from werkzeug.serving import make_server

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no log line per request (server CPU, and noise)

    counter = RequestCounter(DomainDispatcherApplication(create_backend_app), bucket)
    server = make_server("127.0.0.1", 0, counter, threaded=True, request_handler=MotoRequestHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{server.server_address[1]}", counter, server


def run(name: str, command: list[str], env: dict[str, str]) -> tuple[float, float, float]:
    """(wall s, CLI CPU s, server CPU s) of one command. (Not its peak RSS: os.wait4's counts this process's,
    the server's, from before the exec.)"""
    server_cpu = time.process_time()
    wall, cpu, _ = measure(name, command, env, REPO)
    return wall, cpu, time.process_time() - server_cpu


def throughput(work: Path, args: argparse.Namespace, env: dict[str, str], bucket: str) -> None:
    (work / "tp").mkdir()
    videos = build_tree(work / "tp", args.videos, 10, args.frames, CLIP_SIZE)
    base = [sys.executable, "-m", "flowprep", "extract", str(videos)]
    flags = ["--algo", "dis", "--pack", "zip", "--jobs", "1", "-q"]
    times: dict[str, list[tuple[float, float, float]]] = {"local folder": [], "S3 (moto)": []}
    for i in range(args.repeat):
        times["local folder"].append(run("local", base + [str(work / f"local-{i}")] + flags, env))
        times["S3 (moto)"].append(run("s3", base + [f"s3://{bucket}/tp-{i}"] + flags, env))
        shutil.rmtree(work / f"local-{i}")
    print(f"(a) {args.videos} videos of {args.frames} frames ({CLIP_SIZE[0]}x{CLIP_SIZE[1]} H.264, hard links), "
          f"--algo dis --pack zip --jobs 1; {args.repeat} runs each, alternating: median and fastest")
    print(f"{'output':14s} {'wall s':>14s} {'CPU s':>14s} {'CPU ms/video':>13s} {'server CPU s':>13s}")
    stats = {}
    for target, runs in times.items():
        wall, cpu, server = ([r[k] for r in runs] for k in range(3))
        stats[target] = (statistics.median(wall), min(wall)), (statistics.median(cpu), min(cpu))
        print(f"{target:14s} {statistics.median(wall):7.2f} {min(wall):6.2f} {statistics.median(cpu):7.2f} "
              f"{min(cpu):6.2f} {1000 * statistics.median(cpu) / args.videos:13.1f} {statistics.median(server):13.2f}")
    (lw, lc), (sw, sc) = stats["local folder"], stats["S3 (moto)"]
    print(f"S3 / local (goal <= 1.1x): wall {sw[0] / lw[0]:.3f}x median, {sw[1] / lw[1]:.3f}x fastest; "
          f"CPU {sc[0] / lc[0]:.3f}x median, {sc[1] / lc[1]:.3f}x fastest", flush=True)


def spread_packs(videos: Path, extracted: Path, packs: Path, count: int, classes: int) -> None:
    """packs/class_C/v_V.zip for every video V: the extracted pack of its class's first video, whose source is
    the same file (hard links), with meta.json's source made V's own (meta.json last, as flowprep writes it)."""
    for c in range(classes):
        with zipfile.ZipFile(extracted / f"class_{c:03d}" / f"v_{c:07d}.zip") as model:
            members = [(info, model.read(info)) for info in model.infolist()]
        meta = json.loads(members[-1][1])
        (packs / f"class_{c:03d}").mkdir(parents=True)
        for v in range(c, count, classes):
            rel = f"class_{c:03d}/v_{v:07d}"
            meta["source"] = str((videos / rel).with_suffix(".mp4").resolve())
            with zipfile.ZipFile(packs / f"{rel}.zip", "w", zipfile.ZIP_STORED) as pack:
                for info, data in members[:-1]:
                    pack.writestr(info, data)
                pack.writestr(members[-1][0], json.dumps(meta, indent=1, sort_keys=True).encode())


def resume(work: Path, args: argparse.Namespace, env: dict[str, str], bucket: str, fs, counter: RequestCounter
           ) -> None:
    t0 = time.perf_counter()
    (work / "resume").mkdir()
    videos = build_tree(work / "resume", args.resume_videos, args.classes)
    first = videos / "first.txt"
    first.write_text("".join(f"class_{c:03d}/v_{c:07d}.mp4\n" for c in range(args.classes)))
    cli = [sys.executable, "-m", "flowprep", "extract"]
    flags = ["--algo", "dis", "--pack", "zip", "--jobs", "2", "-q"]
    measure("first extraction", cli + [str(first), str(work / "extracted")] + flags, env, REPO)
    spread_packs(videos, work / "extracted", work / "packs", args.resume_videos, args.classes)
    local = sorted((work / "packs").rglob("*.zip"))
    fs.put([str(p) for p in local], [f"{bucket}/flow/{p.relative_to(work / 'packs').as_posix()}" for p in local])
    print(f"(b) {args.resume_videos} finished videos (packs of {len(local) // args.classes} per class copied from "
          f"{args.classes} extracted) uploaded to s3://{bucket}/flow; set up in {time.perf_counter() - t0:.0f} s",
          flush=True)
    url = f"s3://{bucket}/flow"
    print(f"{'rerun':36s} {'wall s':>8s} {'CLI CPU s':>10s} {'server CPU s':>13s}")
    for name in ("without an index (reads every pack)", "with the index (one listing)"):
        counter.counts.clear()
        wall, cpu, server = run(name, cli + [str(videos), url] + flags, env)
        requests = dict(counter.counts)  # before this process's own requests below
        report = json.loads(fs.cat_file(f"{bucket}/flow/report.json"))
        if report["skipped"] != args.resume_videos:
            raise SystemExit(f"{name}: {report['skipped']} skipped, not {args.resume_videos}")
        print(f"{name:36s} {wall:8.2f} {cpu:10.2f} {server:13.2f}", flush=True)
    print(f"index.json: {fs.info(f'{bucket}/flow/index.json')['size'] / 1e6:.1f} MB; requests of the rerun with "
          "the index: " + ", ".join(
        f"{count} {method} {kind}" for (method, kind), count in sorted(requests.items())))
    print(f"goal: under 15 s for {args.resume_videos} videos ({'met' if wall < 15 else 'NOT met'})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, default=400, help="videos of the throughput runs")
    parser.add_argument("--frames", type=int, default=16, help="frames of the throughput runs' clip")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--resume-videos", type=int, default=20_000)
    parser.add_argument("--classes", type=int, default=200, help="class folders of the resume tree")
    parser.add_argument("--steps", default=",".join(STEPS), help=f"of {','.join(STEPS)}")
    parser.add_argument("--dir", default=None, help="where to build the trees (default: the temp folder)")
    args = parser.parse_args()
    steps = args.steps.split(",")
    if set(steps) - set(STEPS):
        parser.error(f"--steps {args.steps}: unknown {', '.join(sorted(set(steps) - set(STEPS)))}")
    import s3fs

    bucket = f"bench-{uuid.uuid4().hex[:8]}"
    endpoint, counter, server = start_server(bucket)
    credentials = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench", "AWS_DEFAULT_REGION": "us-east-1"}
    env = {**os.environ, **credentials, "AWS_ENDPOINT_URL": endpoint, "OMP_NUM_THREADS": "1",
           "OPENCV_FOR_THREADS_NUM": "1", "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    fs = s3fs.S3FileSystem(endpoint_url=endpoint, key="bench", secret="bench", skip_instance_cache=True)
    fs.mkdir(bucket)
    work = Path(tempfile.mkdtemp(prefix="flowprep-object-store-", dir=args.dir))
    try:
        if "throughput" in steps:
            throughput(work, args, env, bucket)
        if "resume" in steps:
            resume(work, args, env, bucket, fs, counter)
    finally:
        shutil.rmtree(work, ignore_errors=True)
        server.shutdown()


if __name__ == "__main__":
    main()
