"""Look at stored flow: Middlebury colour coding, preview sheets (PNG) and sequences (GIF, MP4).

The colour coding is the Middlebury one (Baker et al., "A Database and Evaluation Methodology for Optical
Flow", IJCV 2011; their color.cpp): hue gives the direction, saturation the magnitude relative to a maximum.
Pure right (+u) is red, pure down (+v, image rows grow downwards) is the wheel's colour a quarter turn on
(orange-yellow), left is cyan, up is blue-violet.
"""
from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from .errors import ConfigError, OutputError
from .quantize import dequantize
from .store import Naming, OutputReader, open_output, read_flow_codes, recorded_settings

# Hue segments of the wheel, in colours per segment: red-yellow, yellow-green, green-cyan, cyan-blue,
# blue-magenta, magenta-red (Middlebury color.cpp).
WHEEL_SEGMENTS = (15, 6, 4, 11, 13, 6)
SEQUENCE_SUFFIXES = (".gif", ".mp4")
_GAP = 4  # pixels between panels
_CAPTION = 18  # pixels of the caption strip above the panels


def color_wheel() -> np.ndarray:
    """The 55 colours of the Middlebury wheel as float64 (55, 3) RGB in 0..255; entry 0 is pure red."""
    ry, yg, gc, cb, bm, mr = WHEEL_SEGMENTS

    def up(n: int) -> np.ndarray:  # color.cpp's integer ramps: 255 * i / n, truncated
        return 255 * np.arange(n) // n

    def down(n: int) -> np.ndarray:
        return 255 - up(n)

    def full(n: int) -> np.ndarray:
        return np.full(n, 255)

    def zero(n: int) -> np.ndarray:
        return np.zeros(n, np.int64)

    segments = [(full(ry), up(ry), zero(ry)), (down(yg), full(yg), zero(yg)), (zero(gc), full(gc), up(gc)),
                (zero(cb), down(cb), full(cb)), (up(bm), zero(bm), full(bm)), (full(mr), zero(mr), down(mr))]
    return np.concatenate([np.stack(channels, axis=1) for channels in segments]).astype(np.float64)


def magnitude(flow: np.ndarray) -> np.ndarray:
    """Float64 HxW |flow| in pixels of an HxWx2 flow (float64 so that a maximum taken here is exactly 1 later)."""
    return np.hypot(flow[..., 0].astype(np.float64), flow[..., 1].astype(np.float64))


def flow_to_color(flow: np.ndarray, max_flow: float | None = None) -> np.ndarray:
    """Float HxWx2 flow (pixels) -> RGB uint8 HxWx3 by the Middlebury wheel.

    Magnitudes are divided by `max_flow` (default: the largest magnitude in `flow`); at 1 a pixel has the
    wheel's full colour, at 0 it is white, beyond 1 it is darkened (as in color.cpp).
    """
    if flow.ndim != 3 or flow.shape[2] != 2:
        raise ValueError(f"flow must be HxWx2, got shape {flow.shape}")
    u, v = flow[..., 0].astype(np.float64), flow[..., 1].astype(np.float64)
    radius = magnitude(flow)
    if max_flow is None:
        max_flow = float(radius.max())
    radius = radius / max_flow if max_flow > 0 else np.zeros_like(radius)
    wheel = color_wheel()
    n = len(wheel)
    angle = np.arctan2(-v, -u) / np.pi  # -1..1, -1 (and 1) pointing right
    position = (angle + 1) / 2 * (n - 1)
    k0 = np.floor(position).astype(np.int64)
    k1 = (k0 + 1) % n
    f = (position - k0)[..., None]
    color = ((1 - f) * wheel[k0] + f * wheel[k1]) / 255.0
    inside = (radius <= 1)[..., None]
    color = np.where(inside, 1 - radius[..., None] * (1 - color), color * 0.75)
    return np.floor(255 * color).astype(np.uint8)


def color_wheel_legend(size: int = 128) -> np.ndarray:
    """RGB uint8 size x size image of the colour code: a disc whose rim has magnitude 1, white outside."""
    half = (size - 1) / 2
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32)
    flow = np.dstack([xs - half, ys - half])
    legend = flow_to_color(flow, max_flow=half)
    legend[np.hypot(xs - half, ys - half) > half] = 255
    return legend


def _codes_to_image(codes: np.ndarray) -> np.ndarray:
    return np.dstack([codes] * 3)


def _caption(image: np.ndarray, text: str) -> np.ndarray:
    strip = np.full((_CAPTION, image.shape[1], 3), 255, np.uint8)
    cv2.putText(strip, text, (2, _CAPTION - 5), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
    return np.vstack([strip, image])


def _hstack(panels: Sequence[np.ndarray]) -> np.ndarray:
    height = max(p.shape[0] for p in panels)
    padded = [np.pad(p, ((0, height - p.shape[0]), (0, _GAP), (0, 0)), constant_values=255) for p in panels]
    return np.hstack(padded)[:, :-_GAP]


def preview_sheet(reader: OutputReader, index: int, max_flow: float | None = None,
                  meta: dict[str, Any] | None = None, direction: str = "forward") -> np.ndarray:
    """RGB uint8 sheet for pair `index` (0-based) in `direction`: RGB frame (if stored), x and y images, colour
    code, legend. `meta`: the output's meta.json when the caller has read it already."""
    meta = reader.meta() if meta is None else meta
    _check_direction(reader, meta, direction)
    if not 0 <= index < meta["flow_pairs"]:
        raise ConfigError(f"{reader.path}: pair {index + 1} out of range: it has pairs 1..{meta['flow_pairs']}")
    codes = read_flow_codes(reader, Naming.from_meta(meta), index, direction)
    return _sheet(reader, meta, index, codes, max_flow, direction)


def _check_direction(reader: OutputReader, meta: dict[str, Any], direction: str) -> None:
    stored = recorded_settings(meta["settings"])["directions"]
    if direction not in stored:
        raise ConfigError(f"{reader.path}: no {direction} flow stored (it has {', '.join(stored)})")


def _sheet(reader: OutputReader, meta: dict[str, Any], index: int, codes: np.ndarray, max_flow: float | None,
           direction: str = "forward") -> np.ndarray:
    """preview_sheet of pair `index` whose uint8 HxWx2 `codes` are read already."""
    flow = dequantize(codes, float(meta["settings"]["bound"]))
    scale = max_flow if max_flow is not None else float(magnitude(flow).max())
    panels = []
    if meta.get("rgb_frames"):
        panels.append(_caption(reader.read_image(Naming.from_meta(meta).img(index), rgb=True), "rgb"))
    name = "flow" if direction == "forward" else f"{direction} flow"
    panels += [_caption(_codes_to_image(codes[..., 0]), f"{name} x"),
               _caption(_codes_to_image(codes[..., 1]), f"{name} y"),
               _caption(flow_to_color(flow, scale), f"{name}, rim {scale:.1f} px")]
    legend = color_wheel_legend(min(codes.shape[0], 128))
    panels.append(_caption(legend, "legend"))
    return _hstack(panels)


def preview_frames(reader: OutputReader, indices: Sequence[int], meta: dict[str, Any] | None = None,
                   direction: str = "forward") -> Iterator[np.ndarray]:
    """Sheets for `indices`, one at a time, all colour-coded against the largest magnitude among them.

    Each pair is decoded once: the uint8 codes of all `indices` (H x W x 2 bytes each) are held until their
    sheets are made, so callers bound `indices` (write_preview's max_pairs). `meta` as in preview_sheet.
    """
    meta = reader.meta() if meta is None else meta
    _check_direction(reader, meta, direction)
    naming, bound = Naming.from_meta(meta), float(meta["settings"]["bound"])
    codes = [read_flow_codes(reader, naming, i, direction) for i in indices]
    scale = max(float(magnitude(dequantize(c, bound)).max()) for c in codes)
    for i, c in zip(indices, codes):
        yield _sheet(reader, meta, i, c, scale, direction)


def write_preview(output: str | os.PathLike, target: str | os.PathLike, *, index: int | None = None,
                  max_pairs: int = 100, direction: str = "forward") -> Path:
    """Render a video's flow output in `direction` to `target`: a PNG of pair `index` (0-based; default the
    middle pair), or for .gif / .mp4 an animation of up to `max_pairs` pairs from `index` (default the first)."""
    target = Path(target)
    suffix = target.suffix.lower()
    if suffix not in (".png", ".jpg", *SEQUENCE_SUFFIXES):
        raise ConfigError(f"{target}: preview must be .png, .jpg, .gif or .mp4, got {suffix or 'no suffix'!r}")
    with open_output(output) as reader:
        meta = reader.meta()
        pairs = meta["flow_pairs"]
        if suffix in SEQUENCE_SUFFIXES:
            start = index or 0
            indices = range(start, min(start + max_pairs, pairs))
            if not indices:
                raise ConfigError(f"{reader.path}: pair {start + 1} out of range: it has pairs 1..{pairs}")
            fps = float(meta.get("sampled_fps") or 10.0)
            frames = preview_frames(reader, indices, meta, direction)
            (_write_gif if suffix == ".gif" else _write_mp4)(target, frames, fps)
        else:
            sheet = preview_sheet(reader, pairs // 2 if index is None else index, meta=meta, direction=direction)
            if not cv2.imwrite(str(target), cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR)):
                raise OutputError(f"{target}: OpenCV could not write the preview")
    return target


def _write_gif(target: Path, frames: Iterator[np.ndarray], fps: float) -> None:
    from PIL import Image

    # PIL writes a GIF in one call: the (small) sheets are held, which max_pairs bounds.
    images = [Image.fromarray(frame) for frame in frames]
    images[0].save(target, save_all=True, append_images=images[1:], duration=round(1000 / fps), loop=0)


def _write_mp4(target: Path, frames: Iterator[np.ndarray], fps: float) -> None:
    import av
    from fractions import Fraction

    with av.open(str(target), "w") as container:
        stream = None
        for frame in frames:
            # yuv420p needs even sizes.
            frame = np.pad(frame, ((0, frame.shape[0] % 2), (0, frame.shape[1] % 2), (0, 0)), constant_values=255)
            if stream is None:
                stream = container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
                stream.width, stream.height, stream.pix_fmt = frame.shape[1], frame.shape[0], "yuv420p"
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
