"""Small output trees with known values, written through flowprep's own store writer (names and meta right).

Flow pair k (0-based) is a constant field: x code x_code(k), y code y_code(k); RGB frame k is the constant
colour rgb_code(k). Constant gray JPEGs decode exactly; colour ones (xy0, RGB) within 1.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from flowprep.config import DEFAULT_FLOW_TEMPLATES
from flowprep.store import META_FORMAT, Naming, encode_flow_codes, encode_jpeg, open_writer

SIZE = (12, 8)  # (width, height) pixels


def x_code(k: int) -> int:
    return 10 + 4 * k


def y_code(k: int) -> int:
    return 250 - 4 * k


def rgb_code(k: int) -> tuple[int, int, int]:
    return (20 + 4 * k, 100, 200 - 4 * k)


def flow_files(naming: Naming, pairs: int, rgb_frames: int = 0, size: tuple[int, int] = SIZE
               ) -> list[tuple[str, bytes]]:
    """(name, JPEG bytes) of a video's flow pairs and RGB frames, named by `naming`."""
    width, height = size
    files = []
    for k in range(pairs):
        codes = np.empty((height, width, 2), np.uint8)
        codes[..., 0], codes[..., 1] = x_code(k), y_code(k)
        files += zip(naming.pair_names(k), encode_flow_codes(codes, naming.layout, 95))
    for k in range(rgb_frames):
        files.append((naming.img(k), encode_jpeg(np.full((height, width, 3), rgb_code(k), np.uint8), 95, rgb=True)))
    return files


def write_video(base: Path, pairs: int, *, rgb_frames: int = 0, layout: str = "separate", pack: str = "dir",
                bound: float = 20.0, size: tuple[int, int] = SIZE) -> Path:
    """A finished flowprep output (directory or zip) with meta.json; returns its path."""
    naming = Naming(layout, DEFAULT_FLOW_TEMPLATES[layout])
    with open_writer(base, pack) as writer:
        for name, data in flow_files(naming, pairs, rgb_frames, size):
            writer.write(name, data)
        return writer.commit({
            "format": META_FORMAT, "flow_pairs": pairs, "frames": pairs + 1, "rgb_frames": rgb_frames,
            "settings": {"layout": layout, "flow_template": naming.flow_template, "img_template": naming.img_template,
                         "start_index": naming.start_index, "bound": bound},
        })


def write_foreign_video(directory: Path, pairs: int, naming: Naming, rgb_frames: int = 0) -> Path:
    """A video directory as another tool writes it: the files of `naming`, no meta.json."""
    directory.mkdir(parents=True)
    for name, data in flow_files(naming, pairs, rgb_frames):
        (directory / name).write_bytes(data)
    return directory
