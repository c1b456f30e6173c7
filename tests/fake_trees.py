"""Small output trees with known values, written through flowprep's own store writer (names and meta right).

Flow pair k (0-based) is a constant field: x code x_code(k), y code y_code(k), unless explicit codes are given;
backward pair k (frame k+1 -> k), when asked for, is the forward one negated (255 - code) unless given too.
RGB frame k is the constant colour rgb_code(k) unless explicit images are given. Constant gray JPEGs decode
exactly; colour ones (xy0, RGB) within 1.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from flowprep.config import DEFAULT_BACKWARD_TEMPLATES, DEFAULT_FLOW_TEMPLATES
from flowprep.store import META_FORMAT, Naming, encode_flow_codes, encode_jpeg, open_writer

SIZE = (12, 8)  # (width, height) pixels


def x_code(k: int) -> int:
    return 10 + 4 * k


def y_code(k: int) -> int:
    return 250 - 4 * k


def rgb_code(k: int) -> tuple[int, int, int]:
    return (20 + 4 * k, 100, 200 - 4 * k)


def constant_codes(pairs: int, size: tuple[int, int] = SIZE) -> np.ndarray:
    """(pairs, H, W, 2) uint8: pair k is x_code(k), y_code(k) everywhere."""
    width, height = size
    codes = np.empty((pairs, height, width, 2), np.uint8)
    for k in range(pairs):
        codes[k, ..., 0], codes[k, ..., 1] = x_code(k), y_code(k)
    return codes


def flow_files(naming: Naming, pairs: int, rgb_frames: int = 0, size: tuple[int, int] = SIZE,
               codes: np.ndarray | None = None, backward: np.ndarray | None = None,
               rgb: np.ndarray | None = None) -> list[tuple[str, bytes]]:
    """(name, JPEG bytes) of a video's flow pairs (`codes`, (pairs, H, W, 2) uint8, default constant_codes),
    backward pairs (`backward`, same shape, none by default) and RGB frames (`rgb`, (N, H, W, 3) uint8, default
    rgb_code colours), named by `naming`."""
    width, height = size
    codes = constant_codes(pairs, size) if codes is None else codes
    files = []
    for direction, fields in (("forward", codes), ("backward", backward)):
        for k in range(pairs if fields is not None else 0):
            files += zip(naming.pair_names(k, direction), encode_flow_codes(fields[k], naming.layout, 95))
    for k in range(rgb_frames):
        image = np.full((height, width, 3), rgb_code(k), np.uint8) if rgb is None else rgb[k]
        files.append((naming.img(k), encode_jpeg(image, 95, rgb=True)))
    return files


def write_video(base: Path, pairs: int, *, rgb_frames: int = 0, layout: str = "separate", pack: str = "dir",
                bound: float = 20.0, size: tuple[int, int] = SIZE, codes: np.ndarray | None = None,
                backward: np.ndarray | bool | None = None, rgb: np.ndarray | None = None,
                fps: float | None = None) -> Path:
    """A finished flowprep output (directory or zip) with meta.json; returns its path. `codes` (pairs, H, W, 2)
    and `rgb` (N, H, W, 3) replace the constant fields and colours (their sizes then rule); `backward` writes
    backward flow (True: the forward codes negated) and records it in meta.json; `fps` is its sampled_fps."""
    if codes is not None:
        size = (codes.shape[2], codes.shape[1])
    elif rgb is not None:
        size = (rgb.shape[2], rgb.shape[1])
    if backward is True:
        backward = 255 - (constant_codes(pairs, size) if codes is None else codes)
    naming = Naming(layout, DEFAULT_FLOW_TEMPLATES[layout], backward_template=DEFAULT_BACKWARD_TEMPLATES[layout])
    settings = {"layout": layout, "flow_template": naming.flow_template, "img_template": naming.img_template,
                "start_index": naming.start_index, "bound": bound}
    if backward is not None:
        settings |= {"directions": ["forward", "backward"], "backward_template": naming.backward_template}
    meta = {"format": META_FORMAT, "flow_pairs": pairs, "frames": pairs + 1, "rgb_frames": rgb_frames,
            "settings": settings}
    if fps is not None:
        meta["sampled_fps"] = fps
    with open_writer(base, pack) as writer:
        for name, data in flow_files(naming, pairs, rgb_frames, size, codes, backward, rgb):
            writer.write(name, data)
        return writer.commit(meta)


def write_foreign_video(directory: Path, pairs: int, naming: Naming, rgb_frames: int = 0,
                        backward: bool = False) -> Path:
    """A video directory as another tool writes it: the files of `naming`, no meta.json; with `backward`, the
    forward codes negated under naming's backward names too."""
    directory.mkdir(parents=True)
    for name, data in flow_files(naming, pairs, rgb_frames, backward=255 - constant_codes(pairs) if backward else None):
        (directory / name).write_bytes(data)
    return directory
