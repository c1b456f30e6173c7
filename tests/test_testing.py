"""flowprep.testing helpers and the documented JPEG round-trip bound, on real flow."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from flowprep import DecodeConfig, ExtractConfig, FlowConfig, create_backend, extract_video, quantization_error_bound
from flowprep.decode import open_reader, resize, sample_fps, to_gray
from flowprep.quantize import jpeg_roundtrip_bound
from flowprep.testing import assert_flow_close, assert_output_valid, assert_roundtrip, jpeg_roundtrip

from conftest import VIDEOS


@pytest.fixture(scope="module")
def real_flows() -> list[np.ndarray]:
    """DIS flow of 6 pairs of the real mr-bubz clip (fast motion, camera shake) at 340x256."""
    backend = create_backend(FlowConfig(algo="dis"))
    with open_reader(VIDEOS / "mr-bubz.webm", "decord") as reader:
        frames = (resize(to_gray(rgb), (340, 256)) for _, rgb in sample_fps(reader.frames(), 2.0))
        flows = []
        for flow in backend.compute_stream(frames):
            flows.append(flow)
            if len(flows) == 6:
                return flows
    raise AssertionError("mr-bubz gave fewer than 7 frames at 2 fps")


@pytest.mark.parametrize("bound", [20.0, 40.0])
@pytest.mark.parametrize("quality", [90, 95, 100])
@pytest.mark.parametrize("layout", ["separate", "xy0"])
def test_real_flow_roundtrips_within_bound(real_flows: list[np.ndarray], bound: float, quality: int,
                                           layout: str) -> None:
    for flow in real_flows:
        mean, worst = assert_roundtrip(flow, bound, quality, layout)
        # Never better than quantization alone allows on average, which is half a code.
        assert mean > 0.3 * quantization_error_bound(bound)


def test_noise_breaks_a_low_quality_jpeg() -> None:
    """The bound is real flow's: white noise is the worst case for JPEG and fails it at quality 50."""
    noise = np.random.default_rng(0).uniform(-20, 20, (64, 64, 2)).astype(np.float32)
    with pytest.raises(AssertionError, match="exceeds the documented bound"):
        assert_roundtrip(noise, 20.0, 50)


def test_jpeg_roundtrip_returns_flow_on_the_grid(real_flows: list[np.ndarray]) -> None:
    flow = real_flows[0]
    back = jpeg_roundtrip(flow, 20.0, 100)
    assert back.shape == flow.shape and back.dtype == np.float32
    clipped = np.clip(flow, -20, 20)
    assert np.abs(back - clipped).max() <= jpeg_roundtrip_bound(20.0, 100).max


def test_bound_grows_with_bound_and_shrinks_with_quality() -> None:
    b95 = jpeg_roundtrip_bound(20.0, 95)
    assert b95.max == pytest.approx(25 * 40 / 255) and b95.mean == pytest.approx(1.2 * 40 / 255)
    assert jpeg_roundtrip_bound(40.0, 95).max == pytest.approx(2 * b95.max)
    assert jpeg_roundtrip_bound(20.0, 95, "xy0").max == pytest.approx(2 * b95.max)
    maxima = [jpeg_roundtrip_bound(20.0, q).max for q in (100, 95, 90, 75, 50, 10)]
    assert maxima == sorted(maxima) and maxima[-1] == 40.0  # capped at 2b: no error can be larger
    assert jpeg_roundtrip_bound(20.0, 100).max > quantization_error_bound(20.0)
    with pytest.raises(ValueError, match="jpeg_quality"):
        jpeg_roundtrip_bound(20.0, 0)


def test_assert_output_valid(tmp_path: Path) -> None:
    out = tmp_path / "carphone"
    extract_video(VIDEOS / "carphone_pristine.mp4", out,
                  ExtractConfig(decode=DecodeConfig(fps=5), flow=FlowConfig(algo="dis")))
    report = assert_output_valid(tmp_path, roundtrip=2)
    assert report.videos[0].roundtrip is not None
    shutil.copy(out / "flow_x_00001.jpg", out / "flow_x_00099.jpg")
    with pytest.raises(AssertionError, match="flow_x_00099.jpg: unexpected"):
        assert_output_valid(tmp_path)


def test_assert_flow_close(rubberwhale: tuple[np.ndarray, np.ndarray, np.ndarray]) -> None:
    prev, nxt, gt = rubberwhale
    flow = create_backend(FlowConfig(algo="dis")).compute(prev, nxt)
    valid = (np.abs(gt) < 1e9).all(axis=-1)
    gt_filled = np.where(valid[..., None], gt, flow)  # unknown pixels count as exact
    error = assert_flow_close(flow, gt_filled, 0.3)
    assert 0.1 < error < 0.3
    with pytest.raises(AssertionError, match="exceeds 0.05 px"):
        assert_flow_close(flow, gt_filled, 0.05)
