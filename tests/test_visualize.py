"""Middlebury colour coding against its definition (Baker et al., color.cpp), previews of real and known flow."""
from __future__ import annotations

import json
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
from PIL import Image

from flowprep import DecodeConfig, ExtractConfig, FlowConfig, StoreConfig, extract_video, quantize
from flowprep.store import META_FORMAT, encode_jpeg, open_output, open_writer
from flowprep.visualize import color_wheel, flow_to_color, preview_sheet

from conftest import VIDEOS, run_cli

# color.cpp: RY=15, YG=6, GC=4, CB=11, BM=13, MR=6 colours; ramps are 255*i/n in integer arithmetic.
# Entry k of the wheel sits at angle k/54 of a full turn from +x towards +y (image down), so that
# atan2(-v, -u)/pi maps pure right to entry 0 and pure down (90 degrees) to entry 13.5.
RED = (255, 0, 0)                                   # entry 0: RY i=0
DOWN = (255, (255 * 13 // 15 + 255 * 14 // 15) // 2, 0)  # halfway between RY i=13 (221) and i=14 (238)
LEFT = (0, 255 - 255 * 2 // 11, 255)                 # entry 27: CB i=2
UP = ((255 * 4 // 13 + 255 * 5 // 13) // 2, 0, 255)  # halfway between entries 40 and 41: BM i=4, 5


def test_wheel_is_the_middlebury_one() -> None:
    wheel = color_wheel()
    assert wheel.shape == (55, 3)
    assert tuple(wheel[0]) == RED
    assert tuple(wheel[15]) == (255, 255, 0)  # yellow starts YG
    assert tuple(wheel[16]) == (255 - 255 // 6, 255, 0)
    assert tuple(wheel[21]) == (0, 255, 0)  # green starts GC
    assert tuple(wheel[25]) == (0, 255, 255)  # cyan starts CB
    assert tuple(wheel[36]) == (0, 0, 255)  # blue starts BM
    assert tuple(wheel[49]) == (255, 0, 255)  # magenta starts MR
    assert tuple(wheel[54]) == (255, 0, 255 - 255 * 5 // 6)


@pytest.mark.parametrize("flow, colour", [((3.0, 0.0), RED), ((0.0, 3.0), DOWN), ((-3.0, 0.0), LEFT),
                                          ((0.0, -3.0), UP)])
def test_known_directions_get_wheel_colours(flow: tuple[float, float], colour: tuple[int, int, int]) -> None:
    image = flow_to_color(np.broadcast_to(np.float32(flow), (4, 5, 2)).copy())
    assert image.shape == (4, 5, 3) and image.dtype == np.uint8
    assert (image == np.array(colour, np.uint8)).all()


def test_magnitude_sets_saturation() -> None:
    flow = np.array([[[0.0, 0.0], [1.0, 0.0], [2.0, 0.0], [4.0, 0.0]]], np.float32)
    image = flow_to_color(flow, max_flow=2.0)
    # color.cpp: col = 1 - rad * (1 - col) inside the unit disc, col * 0.75 outside; then (int)(255 * col).
    assert image[0].tolist() == [[255, 255, 255], [255, 127, 127], list(RED), [191, 0, 0]]


def _known_flow_output(root: Path, flow: np.ndarray, pairs: int = 2, bound: float = 20.0) -> Path:
    """A video output written through the store stage holding `pairs` copies of `flow` (no video needed)."""
    codes = quantize(flow, bound)
    height, width = flow.shape[:2]
    with open_writer(root / "known") as writer:
        for i in range(pairs):
            writer.write(f"flow_x_{i + 1:05d}.jpg", encode_jpeg(codes[..., 0], 95))
            writer.write(f"flow_y_{i + 1:05d}.jpg", encode_jpeg(codes[..., 1], 95))
        settings = {"bound": bound, "jpeg_quality": 95, "layout": "separate", "flow_template": "flow_{}_{:05d}.jpg",
                    "img_template": "img_{:05d}.jpg", "start_index": 1}
        return writer.commit({"format": META_FORMAT, "flow_pairs": pairs, "frames": pairs + 1, "rgb_frames": 0,
                              "output_size": [width, height], "sampled_fps": 5.0, "settings": settings})


@pytest.mark.parametrize("flow, colour", [((6.0, 0.0), RED), ((0.0, 6.0), DOWN)])
def test_preview_of_stored_known_flow(tmp_path: Path, flow: tuple[float, float], colour: tuple[int, int, int]
                                      ) -> None:
    out = _known_flow_output(tmp_path, np.broadcast_to(np.float32(flow), (48, 64, 2)).copy())
    with open_output(out) as reader:
        sheet = preview_sheet(reader, 0)
    # The colour panel is the only 64x48 block of the wheel colour (dequantization leaves 0.08 px on the
    # other component, JPEG a little more: allow a few levels).
    close = (np.abs(sheet.astype(int) - colour) <= 6).all(axis=-1)
    assert close.sum() >= 64 * 48
    rows, cols = np.nonzero(close)
    assert rows.max() - rows.min() >= 47 and cols.max() - cols.min() >= 63


@pytest.fixture(scope="module")
def carphone(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("show") / "carphone"
    config = ExtractConfig(decode=DecodeConfig(fps=5), flow=FlowConfig(algo="dis"), store=StoreConfig(rgb=True))
    extract_video(VIDEOS / "carphone_pristine.mp4", out, config)
    return out


def test_show_png_of_real_clip(carphone: Path, tmp_path: Path) -> None:
    target = tmp_path / "preview.png"
    result = run_cli("show", str(carphone), "--out", str(target), "--pair", "4")
    assert result.returncode == 0, result.stderr
    sheet = cv2.imread(str(target))
    # RGB frame, x, y, colour code (176 px each) and a legend (128 px), above them a caption strip.
    assert sheet.shape[0] == 144 + 18 and sheet.shape[1] == 4 * 176 + 128 + 4 * 4
    rgb = cv2.imread(str(carphone / "img_00004.jpg"))
    assert np.abs(sheet[18:, :176].astype(int) - rgb).mean() < 1


@pytest.mark.parametrize("suffix", [".gif", ".mp4"])
def test_show_sequence(carphone: Path, tmp_path: Path, suffix: str) -> None:
    pairs = json.loads((carphone / "meta.json").read_text())["flow_pairs"]
    target = tmp_path / f"preview{suffix}"
    result = run_cli("show", str(carphone), "--out", str(target))
    assert result.returncode == 0, result.stderr
    if suffix == ".gif":
        assert Image.open(target).n_frames == pairs
    else:
        with av.open(str(target)) as container:
            assert sum(1 for _ in container.decode(video=0)) == pairs


def test_show_usage_errors(carphone: Path, tmp_path: Path) -> None:
    result = run_cli("show", str(carphone), "--out", str(tmp_path / "x.bmp"))
    assert result.returncode == 2 and "'.bmp'" in result.stderr
    result = run_cli("show", str(carphone), "--out", str(tmp_path / "x.png"), "--pair", "999")
    assert result.returncode == 2 and "pair 999 out of range: it has pairs 1..19" in result.stderr


def test_show_takes_a_zip_pack_by_its_base_path_as_listed(tmp_path: Path) -> None:
    config = ExtractConfig(decode=DecodeConfig(fps=5), flow=FlowConfig(algo="dis"), store=StoreConfig(pack="zip"))
    extract_video(VIDEOS / "carphone_pristine.mp4", tmp_path / "carphone", config)
    result = run_cli("show", str(tmp_path / "carphone"), "--out", str(tmp_path / "p.png"))
    assert result.returncode == 0, result.stderr
    assert cv2.imread(str(tmp_path / "p.png")) is not None
    missing = run_cli("show", str(tmp_path / "nothing"), "--out", str(tmp_path / "q.png"))
    assert missing.returncode == 2 and "nothing: no flow output here" in missing.stderr
