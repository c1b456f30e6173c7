"""One video end to end on real clips: correct flow, names, counts, layouts, and equal to OpenCV called directly."""
import json
import threading
import zipfile

import cv2
import decord
import numpy as np
import pytest
from PIL import Image, JpegImagePlugin

from flowprep import DecodeConfig, DecodeError, ExtractConfig, FlowConfig, StoreConfig, dequantize, extract_video
from flowprep.errors import StorageError
from flowprep.flowio import endpoint_error, read_flo
from flowprep.store import open_output

from conftest import MIDDLEBURY, VIDEOS, run_cli
from test_decode import make_lying_clip


@pytest.fixture(scope="module")
def rubber_whale_out(tmp_path_factory):
    """`flowprep extract rubber-whale.mp4` with every default (TV-L1, bound 20, quality 95), through the CLI."""
    out = tmp_path_factory.mktemp("rw")
    result = run_cli("extract", str(VIDEOS / "rubber-whale.mp4"), str(out), "--quiet")
    assert result.returncode == 0, result.stderr
    return out / "rubber-whale"


@pytest.mark.slow
def test_extracted_jpegs_match_middlebury_ground_truth(rubber_whale_out):
    # Decoded frames 3 -> 4 (0-based) are Middlebury frame10 -> frame11: flow pair 4 in 1-based names.
    # Float TV-L1 on these decoded frames: EPE 0.195. Quantizing at bound 20 (steps of 0.157 px) alone brings it
    # to 0.2137 and JPEG 95 to 0.2144, so 0.215 is the bar with defaults (the 0.21 holds for bound <= 10).
    gt = read_flo(MIDDLEBURY / "other-gt-flow" / "RubberWhale" / "flow10.flo")
    with open_output(rubber_whale_out) as out:
        bound = out.meta()["settings"]["bound"]
        flow = np.dstack([dequantize(out.read_image(f"flow_{a}_00004.jpg"), bound) for a in "xy"])
    assert endpoint_error(flow, gt) <= 0.215


@pytest.mark.slow
def test_output_is_byte_identical_to_opencv_called_directly(rubber_whale_out):
    """The loop denseflow and mmaction2 users write: BGR frames, BGR2GRAY, OpenCV TV-L1, denseflow's float32
    quantization (clip, then cvRound(255 * (v - L) / (H - L))), imencode at quality 95."""
    reader = decord.VideoReader(str(VIDEOS / "rubber-whale.mp4"))
    bgr = [cv2.cvtColor(reader[i].asnumpy(), cv2.COLOR_RGB2BGR) for i in (0, 1, 3, 4)]
    gray = [cv2.cvtColor(f, cv2.COLOR_BGR2GRAY) for f in bgr]
    tvl1 = cv2.optflow.DualTVL1OpticalFlow_create()
    for pair, (a, b) in ((1, (0, 1)), (4, (2, 3))):
        low, high = np.float32(-20), np.float32(20)
        flow = np.clip(tvl1.calc(gray[a], gray[b], None), low, high)
        q = np.rint(np.float32(255) * (flow - low) / (high - low)).astype(np.uint8)
        for axis, name in enumerate("xy"):
            ok, expected = cv2.imencode(".jpg", q[..., axis], [cv2.IMWRITE_JPEG_QUALITY, 95])
            written = (rubber_whale_out / f"flow_{name}_{pair:05d}.jpg").read_bytes()
            assert written == expected.tobytes(), f"pair {pair} {name}"


@pytest.mark.slow
def test_meta_json_records_the_run(rubber_whale_out):
    meta = json.loads((rubber_whale_out / "meta.json").read_text())
    assert meta["frames"] == 8 and meta["flow_pairs"] == 7 and meta["rgb_frames"] == 0
    assert meta["source_size"] == meta["output_size"] == [584, 388]
    assert meta["source_fps"] == meta["sampled_fps"] == 1.0
    s = meta["settings"]
    assert (s["algorithm"], s["device"], s["bound"], s["jpeg_quality"], s["layout"]) == ("tvl1", "cpu", 20.0, 95,
                                                                                         "separate")
    assert s["params"]["tau"] == 0.25 and s["params"]["warps"] == 5 and s["params"]["median_filtering"] == 5
    assert meta["decoder"] == "pyav" and {"flowprep", "opencv", "pyav"} <= set(meta["versions"])
    assert meta["seconds"] > 0 and set(meta["timing"]) == {"decode", "flow", "quantize", "encode", "write"}


def names_in(path):
    with open_output(path) as out:
        return set(out.names())


def test_counts_and_names_with_rgb_and_a_custom_start(tmp_path):
    config = ExtractConfig(flow=FlowConfig("dis"), store=StoreConfig(rgb=True, start_index=0,
                                                                     flow_template="{}_{:04d}.jpg"))
    meta = extract_video(VIDEOS / "carphone_pristine.mp4", tmp_path / "v", config)
    assert (meta["frames"], meta["flow_pairs"], meta["rgb_frames"]) == (120, 119, 120)
    expected = ({f"x_{i:04d}.jpg" for i in range(119)} | {f"y_{i:04d}.jpg" for i in range(119)}
                | {f"img_{i:05d}.jpg" for i in range(120)} | {"meta.json"})
    assert names_in(tmp_path / "v") == expected


def test_fps_and_size_are_applied(tmp_path):
    config = ExtractConfig(decode=DecodeConfig(fps=15, size=(340, 256)), flow=FlowConfig("dis"))
    meta = extract_video(VIDEOS / "carphone_pristine.mp4", tmp_path / "v", config)
    assert (meta["frames"], meta["flow_pairs"], meta["sampled_fps"]) == (60, 59, 15)
    assert meta["output_size"] == [340, 256]
    assert cv2.imread(str(tmp_path / "v" / "flow_x_00059.jpg"), cv2.IMREAD_UNCHANGED).shape == (256, 340)
    assert not (tmp_path / "v" / "flow_x_00060.jpg").exists()


def test_xy0_layout_is_one_444_colour_jpeg_per_pair(tmp_path):
    config = ExtractConfig(decode=DecodeConfig(fps=5), flow=FlowConfig("dis"), store=StoreConfig(layout="xy0"))
    separate = ExtractConfig(decode=DecodeConfig(fps=5), flow=FlowConfig("dis"))
    meta = extract_video(VIDEOS / "carphone_pristine.mp4", tmp_path / "xy0", config)
    extract_video(VIDEOS / "carphone_pristine.mp4", tmp_path / "sep", separate)
    assert names_in(tmp_path / "xy0") == {f"flow_{i:05d}.jpg" for i in range(1, meta["flow_pairs"] + 1)} | {"meta.json"}
    with Image.open(tmp_path / "xy0" / "flow_00003.jpg") as image:
        assert image.mode == "RGB" and JpegImagePlugin.get_sampling(image) == 0  # 0 is 4:4:4
        r, g, b = (np.asarray(c, dtype=int) for c in image.split())
    x = cv2.imread(str(tmp_path / "sep" / "flow_x_00003.jpg"), cv2.IMREAD_GRAYSCALE).astype(int)
    y = cv2.imread(str(tmp_path / "sep" / "flow_y_00003.jpg"), cv2.IMREAD_GRAYSCALE).astype(int)
    assert np.abs(r - x).mean() < 1 and np.abs(g - y).mean() < 1 and b.max() <= 8


def test_zip_pack_holds_the_same_files_as_the_directory(tmp_path):
    for pack in ("dir", "zip"):
        config = ExtractConfig(decode=DecodeConfig(fps=5), flow=FlowConfig("dis"), store=StoreConfig(pack=pack))
        extract_video(VIDEOS / "carphone_pristine.mp4", tmp_path / pack / "v", config)
    assert (tmp_path / "zip" / "v.zip").is_file() and not (tmp_path / "zip" / "v").exists()
    with open_output(tmp_path / "dir" / "v") as d, open_output(tmp_path / "zip" / "v") as z:
        assert d.names() == z.names()
        assert all(d.read(n) == z.read(n) for n in d.names() if n != "meta.json")


def test_a_lying_header_falls_back_to_the_next_reader(tmp_path):
    clip = tmp_path / "lying.mp4"
    make_lying_clip(clip)
    config = ExtractConfig(decode=DecodeConfig(decoder="decord,pyav"), flow=FlowConfig("dis"))
    meta = extract_video(clip, tmp_path / "out", config)
    assert meta["decoder"] == "pyav" and "decord failed reading frame" in meta["decoder_problems"][0]
    assert 0 < meta["flow_pairs"] == meta["frames"] - 1 < 119


def test_one_frame_is_not_enough_and_leaves_nothing(tmp_path):
    config = ExtractConfig(decode=DecodeConfig(fps=0.1), flow=FlowConfig("dis"))  # 4 s of video -> 1 frame
    with pytest.raises(DecodeError, match="carphone_pristine.mp4: .*1 frame.*at least 2"):
        extract_video(VIDEOS / "carphone_pristine.mp4", tmp_path / "v", config, )
    assert list(tmp_path.iterdir()) == []


# TV-L1 in PyTorch on tiny frames with few iterations: fast enough to exercise the batched, threaded path.
QUICK_TORCH = FlowConfig("tvl1", device="torch-cpu", batch_size=4,
                         params=(("nscales", 1), ("warps", 1), ("outer_iterations", 1), ("inner_iterations", 2)))


def test_a_failing_video_leaves_no_backend_thread_running(tmp_path):
    # Writing fails (a name longer than the file system allows) while the backend's threads are decoding ahead.
    pytest.importorskip("torch")
    config = ExtractConfig(decode=DecodeConfig(size=(44, 36)), flow=QUICK_TORCH,
                           store=StoreConfig(flow_template="x" * 300 + "_{}_{:05d}.jpg"))
    with pytest.raises(StorageError, match="x_00001.jpg: cannot write \\(File name too long\\)"):
        extract_video(VIDEOS / "carphone_pristine.mp4", tmp_path / "out", config)
    for thread in threading.enumerate():
        if thread.name.startswith("flowprep"):
            thread.join(timeout=2)
            assert not thread.is_alive(), f"{thread.name} outlived the failed video"
    assert not (tmp_path / "out").exists()


def test_zip_packs_are_byte_identical_with_a_batched_backend_and_rgb(tmp_path):
    pytest.importorskip("torch")
    config = ExtractConfig(decode=DecodeConfig(fps=10, size=(44, 36)), flow=QUICK_TORCH,
                           store=StoreConfig(rgb=True, pack="zip"))
    for run in ("a", "b"):
        extract_video(VIDEOS / "carphone_pristine.mp4", tmp_path / run / "v", config)
    with open_output(tmp_path / "a" / "v") as a, open_output(tmp_path / "b" / "v") as b:
        assert a.names() == b.names() and all(a.read(n) == b.read(n) for n in a.names() if n != "meta.json")
    members = [info.filename for info in zipfile.ZipFile(tmp_path / "a" / "v.zip").infolist()]
    assert members[:4] == ["img_00001.jpg", "img_00002.jpg", "flow_x_00001.jpg", "flow_y_00001.jpg"]
    assert members[-1] == "meta.json"


def test_sampling_above_the_source_rate_records_the_source_rate(tmp_path):
    config = ExtractConfig(decode=DecodeConfig(fps=60), flow=FlowConfig("dis"))
    meta = extract_video(VIDEOS / "rubber-whale.mp4", tmp_path / "v", config)
    assert (meta["frames"], meta["sampled_fps"]) == (8, 1.0)
