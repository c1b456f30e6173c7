"""Backward flow (frame k+1 -> k) beside forward flow, from one decode: values, names, counts, verify, list, show,
resume."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
from batchdata import CARPHONE

from conftest import MIDDLEBURY, gray, run_cli
from flowprep import ExtractConfig, FlowConfig, StoreConfig, dequantize, extract_video, quantize
from flowprep.decode import flow_frames, open_reader
from flowprep.config import DecodeConfig
from flowprep.flow import create_backend
from flowprep.flow.pairs import flow_stream
from flowprep.flow.torch_tvl1 import TorchTVL1
from flowprep.store import open_output
from flowprep.visualize import preview_sheet

SHIFT = (1.4, -0.6)  # pixels per frame, (x, y): sub-pixel, so nothing lands on the pixel grid


def lossless_clip(path: Path, frames: list[np.ndarray], fps: int = 10) -> Path:
    """A video of gray uint8 frames that decodes back to exactly them (FFV1, bgr0)."""
    height, width = frames[0].shape
    with av.open(str(path), "w") as container:
        stream = container.add_stream("ffv1", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "bgr0"
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.dstack([frame] * 3), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def translated_frames(count: int, shift: tuple[float, float] = SHIFT, size: tuple[int, int] = (196, 130)
                      ) -> list[np.ndarray]:
    """RubberWhale (downscaled to `size`) moved by k * shift pixels in frame k, bilinear."""
    image = cv2.resize(gray(MIDDLEBURY / "other-data" / "RubberWhale" / "frame10.png"), size,
                       interpolation=cv2.INTER_AREA)
    return [cv2.warpAffine(image, np.float32([[1, 0, k * shift[0]], [0, 1, k * shift[1]]]), size,
                           flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT) for k in range(count)]


def stored_flow(out: Path, name_template: str, index: int, bound: float = 20.0) -> np.ndarray:
    """Dequantized HxWx2 flow of 1-based pair `index` stored under `name_template` ('flow_{}_{:05d}.jpg')."""
    with open_output(out) as reader:
        return np.dstack([dequantize(reader.read_image(name_template.format(a, index)), bound) for a in "xy"])


@pytest.fixture(scope="module")
def translated_out(tmp_path_factory) -> Path:
    """`flowprep extract --direction both` (OpenCV TV-L1) of a lossless clip of a translated real image."""
    root = tmp_path_factory.mktemp("translated")
    (root / "videos" / "Shift").mkdir(parents=True)
    lossless_clip(root / "videos" / "Shift" / "moved.mkv", translated_frames(3))
    result = run_cli("extract", str(root / "videos"), str(root / "flow"), "--direction", "both", "-q")
    assert result.returncode == 0, result.stderr
    return root / "flow"


def test_backward_flow_of_a_translation_is_minus_the_forward_one(translated_out):
    out = translated_out / "Shift" / "moved"
    interior = (slice(12, -12), slice(12, -12))  # TV-L1 at the reflected border is not the shift
    for index in (1, 2):
        forward = stored_flow(out, "flow_{}_{:05d}.jpg", index)[interior]
        backward = stored_flow(out, "backflow_{}_{:05d}.jpg", index)[interior]
        # Within TV-L1's error plus one quantization step (0.157 px at bound 20); medians, as TV-L1 smears edges.
        assert np.abs(np.median(forward, axis=(0, 1)) - SHIFT).max() <= 0.16
        assert np.abs(np.median(backward, axis=(0, 1)) + SHIFT).max() <= 0.16
        # Pixel by pixel too: backward pair k covers the same two frames as forward pair k.
        sums = np.linalg.norm(forward + backward, axis=-1)
        assert np.median(sums) <= 0.2 and sums.mean() <= 0.25


def test_backward_files_are_named_counted_and_verified(translated_out):
    out = translated_out / "Shift" / "moved"
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted(["meta.json"] + [f"{kind}_{a}_{i:05d}.jpg" for kind in ("flow", "backflow")
                                           for a in "xy" for i in (1, 2)])
    assert len(list(out.glob("flow_x*"))) == 2  # what TSN's build_file_list counts: backward files are not in it
    meta = json.loads((out / "meta.json").read_text())
    assert meta["flow_pairs"] == 2 and meta["frames"] == 3
    assert meta["settings"]["directions"] == ["forward", "backward"]
    assert meta["settings"]["backward_template"] == "backflow_{}_{:05d}.jpg"
    listed = run_cli("list", str(translated_out))
    assert listed.returncode == 0 and listed.stdout == "Shift/moved 2 0\n", listed.stderr
    verified = run_cli("verify", str(translated_out), "--roundtrip", "2")
    assert verified.returncode == 0, verified.stdout
    assert "2 pairs (forward and backward)" in verified.stdout and "backward worst pair mean" in verified.stdout


def test_verify_counts_each_direction(translated_out, tmp_path):
    tree = tmp_path / "flow"
    shutil.copytree(translated_out, tree)
    out = tree / "Shift" / "moved"
    (out / "backflow_y_00002.jpg").unlink()
    result = run_cli("verify", str(tree))
    assert result.returncode == 1
    assert f"{out}: 1 backward flow_y files, meta.json says 2 backward pairs" in result.stdout
    assert f"{out / 'backflow_y_00002.jpg'}: missing" in result.stdout
    # Backward files in an output whose meta.json records forward flow only are unexpected.
    (out / "backflow_y_00002.jpg").write_bytes((out / "backflow_x_00002.jpg").read_bytes())
    meta = json.loads((out / "meta.json").read_text())
    meta["settings"]["directions"] = ["forward"]
    (out / "meta.json").write_text(json.dumps(meta))
    result = run_cli("verify", str(tree))
    assert result.returncode == 1
    assert "4 backward flow_x files" not in result.stdout  # the separate layout counts x and y apart
    assert f"{out}: 2 backward flow_x files, meta.json says 0 backward pairs" in result.stdout
    assert f"{out / 'backflow_x_00001.jpg'}: unexpected" in result.stdout


def test_flow_stream_backward_is_the_reversed_pairs_flow():
    backend = create_backend(FlowConfig("dis"))
    frames = translated_frames(4)
    pulled = []

    def decoded():  # one decode feeds both directions: each frame is pulled once
        for frame in frames:
            pulled.append(frame)
            yield frame

    flows = list(flow_stream(backend, decoded(), ("forward", "backward")))
    assert len(flows) == 3 and len(pulled) == 4
    for k, (forward, backward) in enumerate(flows):
        assert np.array_equal(forward, backend.compute(frames[k], frames[k + 1]))
        assert np.array_equal(backward, backend.compute(frames[k + 1], frames[k]))
    only_backward = [f for (f,) in flow_stream(backend, iter(frames), ("backward",))]
    assert all(np.array_equal(a, b) for a, (_, b) in zip(only_backward, flows))


class LaunchCounting(TorchTVL1):
    """TorchTVL1 that records how many pairs each launch (compute_batch call) holds."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.launches: list[int] = []

    def compute_batch(self, firsts, seconds):
        self.launches.append(len(firsts))
        return super().compute_batch(firsts, seconds)


def test_batched_backend_computes_both_directions_in_one_launch():
    frames = [cv2.resize(f, (48, 32), interpolation=cv2.INTER_AREA) for f in translated_frames(6)]
    backend = LaunchCounting({"nscales": 2, "warps": 2}, device="torch-cpu", batch_size=4)
    flows = list(flow_stream(backend, iter(frames), ("forward", "backward")))
    # 5 pairs, 2 a window (4 flows a launch): forward and backward of each window together.
    assert backend.launches == [4, 4, 2] and len(flows) == 5
    for k in (0, 4):
        assert np.allclose(flows[k][0], backend.compute(frames[k], frames[k + 1]), atol=1e-4)
        assert np.allclose(flows[k][1], backend.compute(frames[k + 1], frames[k]), atol=1e-4)


@pytest.fixture(scope="module")
def carphone_both(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("carphone") / "c"
    config = ExtractConfig(DecodeConfig(fps=5), FlowConfig("dis"), StoreConfig(directions=("forward", "backward"),
                                                                            layout="xy0", rgb=True))
    extract_video(CARPHONE, out, config)
    return out


def test_xy0_layout_and_rgb_frames_with_both_directions(carphone_both):
    meta = json.loads((carphone_both / "meta.json").read_text())
    pairs = meta["flow_pairs"]
    names = {p.name for p in carphone_both.iterdir()}
    assert {f"backflow_{i:05d}.jpg" for i in range(1, pairs + 1)} <= names
    assert len([n for n in names if n.startswith("flow_")]) == pairs
    assert len([n for n in names if n.startswith("img_")]) == pairs + 1
    with open_reader(CARPHONE, "pyav") as video:
        frames = [g for _, g in flow_frames(video, DecodeConfig(fps=5))][:2]
    backend = create_backend(FlowConfig("dis"))
    with open_output(carphone_both) as reader:
        stored = reader.read_image("backflow_00001.jpg", rgb=True)[..., :2]
    expected = dequantize(quantize(backend.compute(frames[1], frames[0]), 20), 20)
    assert np.abs(dequantize(stored, 20) - expected).mean() < 0.1  # the JPEG's error: frame 2 -> 1 it is


def test_show_renders_the_backward_flow(carphone_both, tmp_path):
    result = run_cli("show", str(carphone_both), "--out", str(tmp_path / "back.png"), "--direction", "backward")
    assert result.returncode == 0, result.stderr
    shown = cv2.cvtColor(cv2.imread(str(tmp_path / "back.png")), cv2.COLOR_BGR2RGB)
    with open_output(carphone_both) as reader:
        middle = reader.meta()["flow_pairs"] // 2
        backward, forward = (preview_sheet(reader, middle, direction=d) for d in ("backward", "forward"))
    assert np.array_equal(shown, backward) and shown.shape == forward.shape and not np.array_equal(shown, forward)


def test_show_names_a_direction_that_is_not_stored(translated_out, tmp_path):
    tree = tmp_path / "flow"
    shutil.copytree(translated_out, tree)
    out = tree / "Shift" / "moved"
    meta = json.loads((out / "meta.json").read_text())
    meta["settings"]["directions"] = ["forward"]
    (out / "meta.json").write_text(json.dumps(meta))
    result = run_cli("show", str(out), "--out", str(tmp_path / "back.png"), "--direction", "backward")
    assert result.returncode == 2 and f"{out}: no backward flow stored (it has forward)" in result.stderr


def test_resume_treats_other_directions_as_a_settings_difference(translated_out, tmp_path):
    videos = translated_out.parent / "videos"
    out = tmp_path / "flow"
    assert run_cli("extract", str(videos), str(out), "--algo", "dis", "-q").returncode == 0
    result = run_cli("extract", str(videos), str(out), "--algo", "dis", "--direction", "both", "-q")
    assert result.returncode == 0, result.stderr
    report = json.loads((out / "report.json").read_text())
    assert report["skipped"] == 1 and "directions: ['forward'] recorded, ['forward', 'backward'] asked" in (
        report["settings_mismatch"][0])
    # A tree written before directions existed holds forward flow: resuming it as forward is no difference.
    meta_path = out / "Shift" / "moved" / "meta.json"
    meta = json.loads(meta_path.read_text())
    for key in ("directions", "backward_template", "warp"):
        del meta["settings"][key]
    meta_path.write_text(json.dumps(meta))
    assert run_cli("extract", str(videos), str(out), "--algo", "dis", "-q").returncode == 0
    report = json.loads((out / "report.json").read_text())
    assert report["skipped"] == 1 and report["settings_mismatch"] == []


def test_directions_are_kept_in_one_order_and_checked():
    assert StoreConfig(directions=("backward", "forward")).directions == ("forward", "backward")
    from flowprep.errors import ConfigError

    with pytest.raises(ConfigError, match="directions must be one or both of forward, backward"):
        StoreConfig(directions=("sideways",))
    result = run_cli("extract", str(CARPHONE), "/nonexistent-out", "--direction", "sideways")
    assert result.returncode == 2 and "'sideways' is not one of 'forward', 'backward', 'both'" in result.stderr
