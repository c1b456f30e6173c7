"""One video end to end: decode -> flow -> quantize -> JPEG -> atomic commit with meta.json last.

One decode feeds every flow asked for: forward, backward, warped (flow.pairs.flow_stream).

Frames stream through; memory holds a couple of frames (a batch for batched backends), never the video,
except with the decord reader, whose decoder thread runs ahead of a slower consumer (config.AUTO_DECODERS).
"""
from __future__ import annotations

import math
import os
import platform
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import closing
from functools import partial
from typing import Any

import cv2
import numpy as np

from . import __version__
from .config import ExtractConfig
from .decode import VideoReader, flow_frames, open_reader, output_size, resize
from .errors import DecodeError, VideoTooShortError
from .flow import cached_backend, resolve_impl
from .flow.base import FlowBackend
from .flow.pairs import flow_stream
from .flow.warp import Warper
from .quantize import quantize
from .source import LocalVideo, local_video
from .store import META_FORMAT, Naming, OutputWriter, encode_flow_codes, encode_jpeg, open_writer

STAGES = ("decode", "flow", "quantize", "encode", "write")


def settings_of(config: ExtractConfig, params: Mapping[str, Any]) -> dict[str, Any]:
    """The requested settings that decide the output bytes, as recorded in meta.json['settings'].

    params: the algorithm's full parameter set (backend.params, or backend_class(...).check_params(...)).
    """
    d, s = config.decode, config.store
    return {
        "algorithm": config.flow.algo,
        "device": config.flow.device,
        "impl": resolve_impl(config.flow.algo, config.flow.device, config.flow.impl),
        "preset": config.flow.preset,
        "params": dict(params),
        "decoder": d.decoder,
        "fps": d.fps,
        "size": list(d.size) if d.size else None,
        "short_side": d.short_side,
        "bound": s.bound,
        "jpeg_quality": s.jpeg_quality,
        "layout": s.layout,
        "flow_template": s.resolved_flow_template,
        "directions": list(s.directions),
        "backward_template": s.resolved_backward_template,
        "warp": config.flow.warp,
        "img_template": s.img_template,
        "start_index": s.start_index,
        "rgb": s.rgb,
    }


def extract_video(
    source: str | os.PathLike,
    output: str | os.PathLike,
    config: ExtractConfig | None = None,
    *,
    backend: FlowBackend | None = None,
    commit_check: Callable[[], str] | None = None,
    listed: tuple[int, int] | None = None,
) -> dict[str, Any]:
    """Extract flow (and RGB frames if asked) of `source` into `output` (a directory, or `output.zip`).

    `source`: a video file, or an object's URL (``s3://bucket/videos/a.mp4``: downloaded into TMPDIR for the
    decoders, and removed after). `listed`: its (bytes, mtime_ns) as a listing gave them, recorded as they are
    (meta.json's source_file); else they are asked of the file or the store.

    Returns the meta.json written. Raises DecodeError (naming the file or URL) when no reader can decode at least
    two frames; nothing is left at `output` then. A reader that fails is replaced by the next one of
    config.decode.readers, starting the video again. `commit_check`, called right before the output is renamed
    into place, gives a reason not to (a lost mount): StorageError then, and nothing is left at `output`.
    StorageError too when the store of a URL fails (see flowprep.source).
    """
    config = config or ExtractConfig()
    backend = backend or cached_backend(config.flow)
    problems = []
    with local_video(source, listed) as video:
        for decoder in config.decode.readers:
            try:
                with open_reader(video.path, decoder, video.name) as reader, \
                        open_writer(output, config.store.pack, config.store.fsync) as writer:
                    writer.commit_check = commit_check
                    return _extract(reader, writer, config, backend, problems, video)
            except VideoTooShortError:
                raise
            except DecodeError as exc:
                problems.append(str(exc))
    if len(problems) == 1:
        raise DecodeError(problems[0])
    prefix = f"{video.name}: "
    raise DecodeError(prefix + "no reader could decode it: " + "; ".join(p.removeprefix(prefix) for p in problems))


class _OverlappedWriter:
    """Encodes on a small thread pool and writes on one thread, in submission order, while flow runs.

    OpenCV's JPEG encoder and numpy release the GIL, so this overlaps with flow computation; one writer thread
    keeps the order of files (and so zip packs) deterministic. At most `depth` items wait: memory stays flat.
    """

    def __init__(self, writer: OutputWriter, timing: dict[str, float], depth: int = 8):
        self._writer, self._timing, self._depth = writer, timing, depth
        self._encoders = ThreadPoolExecutor(max_workers=2, thread_name_prefix="flowprep-encode")
        self._writes = ThreadPoolExecutor(max_workers=1, thread_name_prefix="flowprep-write")
        self._pending: deque[Future] = deque()
        self._lock = threading.Lock()

    def submit(self, encode: Callable[[], list[tuple[str, bytes]]]) -> None:
        encoded = self._encoders.submit(encode)
        self._pending.append(self._writes.submit(self._write, encoded))
        while len(self._pending) > self._depth:
            self._pending.popleft().result()

    def add_time(self, stage: str, seconds: float) -> None:
        with self._lock:
            self._timing[stage] += seconds

    def _write(self, encoded: Future) -> None:
        files = encoded.result()
        t0 = time.perf_counter()
        for name, data in files:
            self._writer.write(name, data)
        self.add_time("write", time.perf_counter() - t0)

    def finish(self) -> None:
        """Wait for every file; re-raises the first error."""
        while self._pending:
            self._pending.popleft().result()

    def __enter__(self) -> _OverlappedWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        # Join the threads before the caller's writer commits or aborts: no write may land afterwards.
        for future in self._pending:
            future.cancel()
        self._encoders.shutdown(wait=True)
        self._writes.shutdown(wait=True)


def _extract(
    reader: VideoReader, writer: OutputWriter, config: ExtractConfig, backend: FlowBackend, problems: list[str],
    video: LocalVideo,
) -> dict[str, Any]:
    started = time.perf_counter()
    timing = dict.fromkeys(STAGES, 0.0)
    store = config.store
    naming = Naming.from_config(store)
    size = output_size(reader.size, config.decode)
    counts = {"frames": 0}
    consumer = threading.get_ident()
    inline_decode = [0.0]  # decode time spent inside the backend's pull from the consumer thread

    with _OverlappedWriter(writer, timing) as output:

        def encode_rgb(index: int, rgb: np.ndarray) -> list[tuple[str, bytes]]:
            t0 = time.perf_counter()
            data = encode_jpeg(resize(rgb, size), store.jpeg_quality, rgb=True)
            output.add_time("encode", time.perf_counter() - t0)
            return [(naming.img(index), data)]

        def encode_flow(index: int, flows: tuple[np.ndarray, ...]) -> list[tuple[str, bytes]]:
            files = []
            for direction, flow in zip(store.directions, flows):
                t0 = time.perf_counter()
                q = quantize(flow, store.bound)
                t1 = time.perf_counter()
                encoded = encode_flow_codes(q, store.layout, store.jpeg_quality)
                files += zip(naming.pair_names(index, direction), encoded)
                output.add_time("quantize", t1 - t0)
                output.add_time("encode", time.perf_counter() - t1)
            return files

        # RGB frames decoded ahead (a batched backend pulls frames on its own thread) wait here; the consumer
        # submits img k+1 before flow k, so the order of files (and zip members) never depends on timing.
        decoded_rgb: deque[tuple[int, np.ndarray]] = deque()

        def gray_frames() -> Iterator[np.ndarray]:
            frames = flow_frames(reader, config.decode)
            while True:
                t0 = time.perf_counter()
                item = next(frames, None)
                dt = time.perf_counter() - t0
                output.add_time("decode", dt)
                if threading.get_ident() == consumer:
                    inline_decode[0] += dt
                if item is None:
                    return
                if store.rgb:
                    decoded_rgb.append((counts["frames"], item[0]))
                counts["frames"] += 1
                yield item[1]

        def submit_rgb(up_to: float) -> None:
            while decoded_rgb and decoded_rgb[0][0] <= up_to:
                output.submit(partial(encode_rgb, *decoded_rgb.popleft()))

        pairs = 0
        warper = Warper() if config.flow.warp else None
        flows = flow_stream(backend, gray_frames(), store.directions, warper)
        with closing(flows):  # closing stops a backend's threads on error
            while True:
                t0 = time.perf_counter()
                decode_before = inline_decode[0]
                pair_flows = next(flows, None)
                # Frames are decoded when the backend pulls them: that time is the decode stage's, not flow's.
                timing["flow"] += time.perf_counter() - t0 - (inline_decode[0] - decode_before)
                if pair_flows is None:
                    break
                submit_rgb(pairs + 1)
                output.submit(partial(encode_flow, pairs, pair_flows))
                pairs += 1
        submit_rgb(math.inf)
        output.finish()

    if pairs == 0:
        raise VideoTooShortError(
            f"{reader.label}: {reader.name} decoded {counts['frames']} frame(s) after sampling; "
            "at least 2 are needed for one flow pair"
        )
    meta = {
        "format": META_FORMAT,
        **video.recorded(),  # source, source_file
        "source_fps": reader.fps,
        "source_size": list(reader.size),
        # Sampling above the source rate keeps the source frames: the rate of what was kept is the lower one.
        "sampled_fps": min(config.decode.fps, reader.fps) if config.decode.fps and reader.fps else (
            config.decode.fps or reader.fps),
        "frames": counts["frames"],
        "flow_pairs": pairs,  # in each direction
        "rgb_frames": counts["frames"] if store.rgb else 0,
        "output_size": list(size),
        "decoder": reader.name,
        "decoder_problems": problems,
        # Not an error: the flow of what decoded is right; but the video is shorter than its file says.
        "stream_problem": reader.stream_end_problem(),
        "settings": settings_of(config, backend.params),
        "flow_implementation": backend.implementation(),
        "versions": {
            "flowprep": __version__,
            "numpy": np.__version__,
            "opencv": cv2.__version__,  # it resizes and encodes every JPEG, whatever the flow backend
            "python": platform.python_version(),
            reader.name: reader.version(),
            **backend.versions(),
        },
        "seconds": round(time.perf_counter() - started, 4),
        "timing": {k: round(v, 4) for k, v in timing.items()},
    }
    if warper is not None:
        meta["warp"] = warper.meta()
    writer.commit(meta)
    return meta
