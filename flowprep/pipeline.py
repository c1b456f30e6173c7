"""One video end to end: decode -> flow -> quantize -> JPEG -> atomic commit with meta.json last.

Frames stream through; memory holds a couple of frames (a batch for batched backends), never the video.
"""
from __future__ import annotations

import os
import platform
import time
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from . import __version__
from .config import ExtractConfig
from .decode import VideoReader, check_video_file, decoder_order, open_reader, output_size, resize, sample_fps, to_gray
from .errors import DecodeError
from .flow import cached_backend
from .flow.base import FlowBackend
from .quantize import quantize
from .store import META_FORMAT, Naming, OutputWriter, encode_jpeg, open_writer

STAGES = ("decode", "flow", "quantize", "encode", "write")


def settings_of(config: ExtractConfig, backend: FlowBackend) -> dict[str, Any]:
    """The requested settings that decide the output bytes, as recorded in meta.json['settings']."""
    d, s = config.decode, config.store
    return {
        "algorithm": config.flow.algo,
        "device": config.flow.device,
        "preset": config.flow.preset,
        "params": backend.params,
        "decoder": d.decoder,
        "fps": d.fps,
        "size": list(d.size) if d.size else None,
        "short_side": d.short_side,
        "bound": s.bound,
        "jpeg_quality": s.jpeg_quality,
        "layout": s.layout,
        "flow_template": s.resolved_flow_template,
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
) -> dict[str, Any]:
    """Extract flow (and RGB frames if asked) of `source` into `output` (a directory, or `output.zip`).

    Returns the meta.json written. Raises DecodeError (naming the file) when no reader can decode at least
    two frames; nothing is left at `output` then. With decoder 'auto' a reader that fails is replaced by the
    next one, starting the video again.
    """
    config = config or ExtractConfig()
    backend = backend or cached_backend(config.flow)
    source = Path(source)
    check_video_file(source)
    problems = []
    for decoder in decoder_order(config.decode.decoder):
        try:
            with open_reader(source, decoder) as reader, open_writer(output, config.store.pack) as writer:
                return _extract(reader, writer, config, backend, problems)
        except DecodeError as exc:
            problems.append(str(exc))
    if len(problems) == 1:
        raise DecodeError(problems[0])
    prefix = f"{source}: "
    raise DecodeError(prefix + "no reader could decode it: " + "; ".join(p.removeprefix(prefix) for p in problems))


def _extract(
    reader: VideoReader, writer: OutputWriter, config: ExtractConfig, backend: FlowBackend, problems: list[str]
) -> dict[str, Any]:
    started = time.perf_counter()
    timing = dict.fromkeys(STAGES, 0.0)
    store = config.store
    naming = Naming.from_config(store)
    size = output_size(reader.size, config.decode)
    counts = {"frames": 0}

    def gray_frames() -> Iterator[np.ndarray]:
        frames = iter(sample_fps(reader.frames(), config.decode.fps))
        while True:
            t0 = time.perf_counter()
            item = next(frames, None)
            if item is None:
                timing["decode"] += time.perf_counter() - t0
                return
            rgb = item[1]
            gray = resize(to_gray(rgb), size)
            t1 = time.perf_counter()
            timing["decode"] += t1 - t0
            if store.rgb:
                data = encode_jpeg(resize(rgb, size), store.jpeg_quality, rgb=True)
                t2 = time.perf_counter()
                writer.write(naming.img(counts["frames"]), data)
                timing["encode"] += t2 - t1
                timing["write"] += time.perf_counter() - t2
            counts["frames"] += 1
            yield gray

    pairs = 0
    flows = backend.compute_stream(gray_frames())
    while True:
        t0 = time.perf_counter()
        decode_before = timing["decode"] + timing["encode"] + timing["write"]
        flow = next(flows, None)
        t1 = time.perf_counter()
        # Decoding happens inside the backend's pull on the frame iterator: take it out of the flow time.
        timing["flow"] += (t1 - t0) - (timing["decode"] + timing["encode"] + timing["write"] - decode_before)
        if flow is None:
            break
        q = quantize(flow, store.bound)
        t2 = time.perf_counter()
        if store.layout == "separate":
            files = [(naming.flow("x", pairs), encode_jpeg(q[..., 0], store.jpeg_quality)),
                     (naming.flow("y", pairs), encode_jpeg(q[..., 1], store.jpeg_quality))]
        else:
            xy0 = np.dstack([q, np.zeros(q.shape[:2], np.uint8)])
            files = [(naming.xy(pairs), encode_jpeg(xy0, store.jpeg_quality, rgb=True))]
        t3 = time.perf_counter()
        for name, data in files:
            writer.write(name, data)
        timing["quantize"] += t2 - t1
        timing["encode"] += t3 - t2
        timing["write"] += time.perf_counter() - t3
        pairs += 1

    if pairs == 0:
        raise DecodeError(
            f"{reader.path}: {reader.name} decoded {counts['frames']} frame(s) after sampling; "
            "at least 2 are needed for one flow pair"
        )
    meta = {
        "format": META_FORMAT,
        "source": str(reader.path.resolve()),
        "source_fps": reader.fps,
        "source_size": list(reader.size),
        "sampled_fps": config.decode.fps or reader.fps,
        "frames": counts["frames"],
        "flow_pairs": pairs,
        "rgb_frames": counts["frames"] if store.rgb else 0,
        "output_size": list(size),
        "decoder": reader.name,
        "decoder_problems": problems,
        "settings": settings_of(config, backend),
        "versions": {
            "flowprep": __version__,
            "numpy": np.__version__,
            "python": platform.python_version(),
            reader.name: reader.version(),
            **backend.versions(),
        },
        "seconds": round(time.perf_counter() - started, 4),
        "timing": {k: round(v, 4) for k, v in timing.items()},
        "config": asdict(config),
    }
    writer.commit(meta)
    return meta
