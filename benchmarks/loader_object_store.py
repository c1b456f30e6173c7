"""Loader speed from an object store: FlowStackDataset reading a bucket of moto's S3 server (its own process on
127.0.0.1, reached over HTTP by s3fs as any bucket is) against the same trees on the local disk, and the requests
each item costs there.

Extracts the sample clip (DIS) as a folder tree and a zip-pack tree (benchmarks/loader.py's extract_trees, reused
from --work), copies each to the bucket under --videos names (a pack is one object; a folder, one object per
file), checks that the bucket's items equal the local tree's, then reads the same seeded TSN train items (float32
pixels) in one process and through a DataLoader with --workers persistent workers. Items cycle through the
names, more than the 32 outputs a process keeps open, so every item opens its video as in an epoch over many
videos. Requests are counted from the server's own request log (one line per request, workers' included).

    PYTHONPATH=. python benchmarks/loader_object_store.py [--size 340x256 --items 80 --videos 40 --workers 2]
"""
from __future__ import annotations

import collections
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from loader import best_times, extract_trees, item_arguments, read_batches, read_each

from flowprep.annotations import Annotation, describe_output
from flowprep.data import FlowStackDataset
from flowprep.reader_cache import OPEN_READERS

BUCKET = "flowprep-bench"
# werkzeug's access log line, once its colours are dropped: "GET /bucket/key?query HTTP/1.1" 206 -
_REQUEST = re.compile(r'"([A-Z]+) (\S+) HTTP/[\d.]+" (\d+)')
_COLOUR = re.compile(r"\x1b\[[0-9;]*m")


@contextmanager
def moto_server(log: Path) -> Iterator[str]:
    """moto's S3 server in a child process on a free port of 127.0.0.1, its access log written to `log`; its URL."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    endpoint = f"http://127.0.0.1:{port}"
    with open(log, "w") as sink:
        server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                                  stdout=sink, stderr=sink)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=1)
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"moto's server did not start: see {log}") from None
                time.sleep(0.2)
        yield endpoint
    finally:
        server.terminate()
        server.wait(10)


class RequestLog:
    """The S3 requests the server has logged, counted by kind, since a mark."""

    def __init__(self, path: Path):
        self.path = path
        self.mark()

    def _lines(self) -> list[str]:
        time.sleep(0.2)  # the last responses' lines
        lines = (_COLOUR.sub("", line) for line in self.path.read_text().splitlines())
        return [line for line in lines if _REQUEST.search(line)]

    def mark(self) -> None:
        self._start = len(self._lines())

    def since_mark(self) -> collections.Counter[str]:
        """{kind: count} of the requests since mark(): 'range GET', 'GET', 'list', 'HEAD', ..."""
        kinds: collections.Counter[str] = collections.Counter()
        for line in self._lines()[self._start:]:
            method, target, status = _REQUEST.search(line).groups()
            if method == "GET" and "list-type=" in target:
                kinds["list"] += 1
            else:
                kinds[f"range {method}" if status == "206" else method] += 1
        return kinds


def counted(log: RequestLog, run: Callable[[], object]) -> collections.Counter[str]:
    log.mark()
    run()
    return log.since_mark()


def per(kinds: collections.Counter[str], count: int) -> str:
    return f"{sum(kinds.values()) / count:.1f} (" + ", ".join(f"{kind} {n / count:.1f}" for kind, n in
                                                             sorted(kinds.items())) + ")"


def member_fetches(fs: Any, key: str, pack: Path, dataset: FlowStackDataset, repeats: int) -> dict[str, float]:
    """Best seconds to fetch the bytes of item 0's pack members from the object `key` three ways: one request
    after another per member (what ObjectZipReader does), every member's request at once (s3fs's cat_ranges runs
    them concurrently), and one range per segment (a stack's pairs lie side by side in flowprep's packs)."""
    with zipfile.ZipFile(pack) as local:
        rows = [[local.getinfo(dataset.videos[0].naming.flow(axis, number - 1)) for number in row for axis in "xy"]
                for row in dataset.frame_indices(0).tolist()]

    def span(first: zipfile.ZipInfo, last: zipfile.ZipInfo) -> tuple[int, int]:
        # From the first member's local header to the last one's end (a local header: 30 bytes, its name; flowprep
        # writes no extra field).
        return first.header_offset, last.header_offset + 30 + len(last.filename) + last.compress_size

    members = [span(info, info) for row in rows for info in row]
    segments = [span(row[0], row[-1]) for row in rows]
    assert all(span(a, a)[1] == b.header_offset for row in rows for a, b in zip(row, row[1:])), \
        "a segment's members do not lie side by side in the pack"
    ways = {"one request per member, in turn": lambda: [fs.cat_file(key, start=a, end=b) for a, b in members],
            "one request per member, all at once": lambda: fs.cat_ranges([key] * len(members), *zip(*members)),
            "one range per segment, at once": lambda: fs.cat_ranges([key] * len(segments), *zip(*segments))}
    return {name: seconds for name, (seconds, _) in best_times(ways, repeats).items()}


def main() -> None:
    parser = item_arguments(__doc__.splitlines()[0], items=80)
    parser.set_defaults(repeats=2)
    parser.add_argument("--videos", type=int, default=OPEN_READERS + 8,
                        help="distinct video names the items cycle through (a process keeps 32 open; with more "
                             "names than that and at least as many items, every item opens its video)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch", type=int, default=8)
    args = parser.parse_args()

    import s3fs

    trees = extract_trees(args.video, args.work, args.size)
    stem = args.video.stem
    video = describe_output(trees["dir"] / "Sample" / stem)
    names = [f"Many/{stem}_{k}" for k in range(args.videos)]
    suffixes = {"dir": "", "zip": ".zip"}
    for pack, tree in trees.items():  # the local trees' names: links to the one extraction
        for name in names:
            link = tree / (name + suffixes[pack])
            if not link.exists():
                link.parent.mkdir(parents=True, exist_ok=True)
                link.symlink_to(tree / "Sample" / (stem + suffixes[pack]))
    entries = [Annotation(names[i % args.videos], video.flow_pairs, 0) for i in range(args.items)]
    torch.set_num_threads(1)  # as in a DataLoader worker

    with moto_server(args.work / "moto.log") as endpoint:
        os.environ.update(AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench", AWS_DEFAULT_REGION="us-east-1",
                          AWS_ENDPOINT_URL=endpoint)  # what the workers inherit, the standard way
        fs = s3fs.S3FileSystem()
        fs.mkdir(BUCKET)
        started = time.perf_counter()
        for pack, tree in trees.items():
            sample = f"{BUCKET}/{pack}/Sample/{stem}{suffixes[pack]}"
            fs.put(str(tree / "Sample" / (stem + suffixes[pack])), sample, recursive=pack == "dir")
            for name in names:  # server-side copies
                fs.copy(sample, f"{BUCKET}/{pack}/{name}{suffixes[pack]}", recursive=pack == "dir")
        fs.invalidate_cache()
        print(f"uploaded and copied to {args.videos} names in {time.perf_counter() - started:.1f} s")
        log = RequestLog(args.work / "moto.log")

        def dataset(root: str | Path) -> FlowStackDataset:
            built = FlowStackDataset(root, entries, length=args.length, segments=args.segments, seed=0)
            built.set_epoch(0)  # the same seeded items are read again on purpose
            return built

        datasets = {f"local {pack}": dataset(tree) for pack, tree in trees.items()}
        for pack in trees:
            # Building with a list describes each entry (meta.json): count it per entry.
            started = time.perf_counter()
            kinds = counted(log, lambda: datasets.__setitem__(f"s3 {pack}", dataset(f"s3://{BUCKET}/{pack}")))
            print(f"s3 {pack}: built in {time.perf_counter() - started:.2f} s; requests per list entry: "
                  f"{per(kinds, args.items)}")
        for i in range(0, args.items, max(1, args.items // 8)):
            expected = datasets["local dir"][i][0]
            for name, loader in datasets.items():
                assert torch.equal(loader[i][0], expected), (name, i)
        print(f"{video.flow_pairs} flow pairs of {args.size}; item = {args.segments} segment(s) x {args.length} pairs "
              f"= {2 * args.length * args.segments} JPEGs, float32 pixels; {args.items} items over {args.videos} "
              f"names; best of {args.repeats} interleaved runs; the bucket's items equal the local trees'")
        for pack in trees:
            print(f"s3 {pack}: requests per item, one process (each item opens its video): "
                  f"{per(counted(log, read_each(datasets[f's3 {pack}'])), args.items)}")

        sample = f"{BUCKET}/zip/Sample/{stem}.zip"
        for name, seconds in member_fetches(fs, sample, trees["zip"] / "Sample" / f"{stem}.zip",
                                            datasets["s3 zip"], 5 * args.repeats).items():
            print(f"item 0's {2 * args.length * args.segments} members fetched {name}: {1000 * seconds:.1f} ms")

        one = best_times({name: read_each(loader) for name, loader in datasets.items()}, args.repeats)
        runs = {name: read_batches(loader, args.workers, args.batch) for name, loader in datasets.items()}
        for run in runs.values():
            run()  # start the persistent workers
        for pack in trees:
            print(f"s3 {pack}: requests per item, {args.workers} persistent workers, second epoch (a worker's "
                  "videos stay open when it reads at most 32): "
                  f"{per(counted(log, runs[f's3 {pack}']), args.items)}")
        many = best_times(runs, args.repeats)
        print(f"\n{'loader':12s} {'items/s, 0 workers':>19s} {'ms/item':>8s} {'CPU ms/item':>12s} "
              f"{f'items/s, {args.workers} workers':>19s} {'ms/item':>8s}")
        for name in datasets:
            (wall, cpu), (wall_many, _) = one[name], many[name]
            print(f"{name:12s} {args.items / wall:19.1f} {1000 * wall / args.items:8.2f} "
                  f"{1000 * cpu / args.items:12.2f} {args.items / wall_many:19.1f} "
                  f"{1000 * wall_many / args.items:8.2f}")


if __name__ == "__main__":
    main()
