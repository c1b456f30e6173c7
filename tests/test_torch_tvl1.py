"""TV-L1 in PyTorch (device torch-cpu): accuracy against OpenCV on published ground truth, batching, streaming."""
import subprocess
import sys
import threading

import cv2
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from flowprep.config import FlowConfig  # noqa: E402
from flowprep.errors import BackendUnavailableError, ConfigError  # noqa: E402
from flowprep.flow import create_backend, list_backends  # noqa: E402
from flowprep.flow import _tvl1_torch  # noqa: E402
from flowprep.flow._tvl1_torch import median_by_selection, median_filter  # noqa: E402
from flowprep.flow.opencv import OpenCVTVL1  # noqa: E402
from flowprep.flow.torch_tvl1 import TorchTVL1, tvl1_flow  # noqa: E402
from flowprep.flowio import endpoint_error, read_flo  # noqa: E402

from conftest import MIDDLEBURY, REPO, SINTEL, TVL1_EPE_RUBBERWHALE, VIDEOS, checkout_env, gray, run_cli  # noqa: E402

RUBBER = MIDDLEBURY / "other-data/RubberWhale"


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    # CI gives these tests 2 cores shared with other jobs; torch's OpenMP workers spin-wait when the cores are
    # oversubscribed, which made a 96x128 pair 14x slower with 2 threads than with 1 (8.4 s vs 0.6 s).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def opencv_flow(prev: np.ndarray, nxt: np.ndarray) -> np.ndarray:
    return OpenCVTVL1().compute(prev, nxt)


def torch_flows(prevs: list[np.ndarray], nxts: list[np.ndarray]) -> np.ndarray:
    as_tensor = lambda frames: torch.from_numpy(np.stack(frames)).float()  # noqa: E731
    return tvl1_flow(as_tensor(prevs), as_tensor(nxts)).numpy()


def test_import_does_not_import_torch():
    code = "import sys, flowprep.flow.torch_tvl1, flowprep.flow.nvof; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO, env=checkout_env())


@pytest.mark.slow
def test_rubberwhale_flow_is_opencvs_within_0_01_px(rubberwhale):
    # Compares flows, not only EPEs: dropping the median filter or warping bilinearly keeps the EPE within a few
    # percent but moves the flow by more than 0.01 px on average.
    prev, nxt, gt = rubberwhale
    ours, reference = torch_flows([prev], [nxt])[0], opencv_flow(prev, nxt)
    assert endpoint_error(reference, gt) == pytest.approx(TVL1_EPE_RUBBERWHALE, abs=0.002)
    assert endpoint_error(ours, reference) <= 0.01
    assert endpoint_error(ours, gt) <= 1.01 * endpoint_error(reference, gt)


@pytest.mark.slow
def test_sintel_alley_epe_within_1_percent_of_opencv():
    gt = read_flo(SINTEL / "flow/alley_1/frame_0002.flo")
    passes = ("clean", "final")
    prevs = [gray(SINTEL / p / "alley_1/frame_0002.png") for p in passes]
    nxts = [gray(SINTEL / p / "alley_1/frame_0003.png") for p in passes]
    ours = torch_flows(prevs, nxts)  # both passes in one batch
    for name, flow, prev, nxt in zip(passes, ours, prevs, nxts):
        mine, reference = endpoint_error(flow, gt), endpoint_error(opencv_flow(prev, nxt), gt)
        assert mine <= 1.01 * reference, (name, mine, reference)


def crop(image: np.ndarray, top: int, left: int, height: int = 96, width: int = 128) -> np.ndarray:
    return np.ascontiguousarray(image[top : top + height, left : left + width])


def four_pairs() -> list[list[np.ndarray]]:
    rubber = [gray(RUBBER / f"frame{i}.png") for i in (10, 11)]
    alley = [gray(SINTEL / f"final/alley_1/frame_000{i}.png") for i in (2, 3)]
    cave = [gray(SINTEL / f"clean/cave_2/frame_000{i}.png") for i in (2, 3)]
    return [
        [crop(rubber[0], 150, 200), crop(rubber[1], 150, 200)],
        [crop(alley[0], 200, 500), crop(alley[1], 200, 500)],
        [crop(cave[0], 100, 300), crop(cave[1], 100, 300)],
        [crop(rubber[0], 0, 0), crop(rubber[0], 0, 0)],  # no motion: converges first
    ]


@pytest.mark.slow
@pytest.mark.parametrize("check_every", [1, 10])  # 10: the GPU's schedule, masks between convergence checks
def test_pair_result_does_not_depend_on_its_batch_or_the_check_schedule(check_every):
    pairs = four_pairs()
    as_tensor = lambda frames: torch.from_numpy(np.stack(frames)).float()  # noqa: E731
    together = tvl1_flow(as_tensor([p for p, _ in pairs]), as_tensor([n for _, n in pairs]),
                         check_every=check_every).numpy()
    for index in range(len(pairs)):
        alone = torch_flows([pairs[index][0]], [pairs[index][1]])[0]  # check_every 1, a batch of one
        np.testing.assert_allclose(together[index], alone, atol=1e-4, err_msg=f"pair {index}")


@pytest.fixture(scope="module")
def real_flows(rubberwhale) -> torch.Tensor:
    """(2,2,H,W) float32: DIS flows of RubberWhale forward and backward, real flow fields to filter."""
    prev, nxt, _ = rubberwhale
    backend = create_backend(FlowConfig(algo="dis"))
    flows = [backend.compute(prev, nxt), backend.compute(nxt, prev)]
    return torch.from_numpy(np.stack(flows)).permute(0, 3, 1, 2).contiguous()


@pytest.mark.parametrize("size", [3, 5])
def test_both_medians_equal_cv2_median_blur_borders_included(real_flows, size):
    expected = np.stack([[cv2.medianBlur(np.ascontiguousarray(c), size) for c in f] for f in real_flows.numpy()])
    for method in (median_filter, median_by_selection):
        got = method(real_flows, size).numpy()
        assert np.array_equal(got, expected), method.__name__
        assert not np.array_equal(got[..., :2, :], real_flows.numpy()[..., :2, :])  # the borders were filtered


def test_selection_median_of_other_sizes_is_the_exact_median(real_flows):
    part = real_flows[:1, :, :40, :50]
    padded = np.pad(part.numpy(), ((0, 0), (0, 0), (3, 3), (3, 3)), mode="edge")
    windows = np.lib.stride_tricks.sliding_window_view(padded, (7, 7), axis=(2, 3))
    assert np.array_equal(median_by_selection(part, 7).numpy(), np.median(windows, axis=(-2, -1)))
    assert np.array_equal(median_filter(part, 1).numpy(), part.numpy())
    with pytest.raises(ValueError, match="odd"):
        median_by_selection(part, 4)


@pytest.mark.slow
def test_flow_with_the_selection_median_equals_flow_with_cv2s(monkeypatch):
    pair = four_pairs()[1]
    with_cv2 = torch_flows([pair[0]], [pair[1]])
    monkeypatch.setattr(_tvl1_torch, "median_method", lambda device, size: "selection")  # the GPU's median
    assert np.array_equal(torch_flows([pair[0]], [pair[1]]), with_cv2)


def test_direction_and_units_on_a_shifted_real_image():
    image = gray(RUBBER / "frame10.png")
    big = image[100:210, 150:300]
    prev = np.ascontiguousarray(big[5:101, 5:133])
    # Content moves 3 px right and 2 px up: nxt(x + 3, y - 2) = prev(x, y).
    nxt = np.ascontiguousarray(big[7:103, 2:130])
    backend = create_backend(FlowConfig(algo="tvl1", device="torch-cpu"))
    flow = backend.compute(prev, nxt)
    assert flow.shape == (96, 128, 2) and flow.dtype == np.float32
    interior = flow[16:-16, 16:-16].reshape(-1, 2)
    np.testing.assert_allclose(np.median(interior, axis=0), [3.0, -2.0], atol=0.05)
    assert np.mean(np.linalg.norm(interior - [3.0, -2.0], axis=1) < 0.25) > 0.95


def rubber_clip(count: int) -> list[np.ndarray]:
    return [crop(gray(RUBBER / f"frame{i:02d}.png"), 140, 220, 64, 96) for i in range(7, 7 + count)]


def test_stream_equals_pairwise_for_partial_last_batch():
    frames = rubber_clip(7)  # 6 pairs: batches of 4 and 2
    backend = TorchTVL1(device="torch-cpu", batch_size=4)
    streamed = list(backend.compute_stream(iter(frames)))
    assert len(streamed) == 6
    for k, flow in enumerate(streamed):
        np.testing.assert_allclose(flow, backend.compute(frames[k], frames[k + 1]), atol=1e-3)


def test_stream_of_one_frame_is_empty_and_errors_surface():
    backend = TorchTVL1(device="torch-cpu", batch_size=2)
    assert list(backend.compute_stream(iter(rubber_clip(1)))) == []

    def broken():
        yield from rubber_clip(2)
        raise OSError("decoder died at frame 2")

    with pytest.raises(OSError, match="decoder died"):
        list(backend.compute_stream(broken()))


def test_stopping_a_stream_early_stops_its_threads():
    before = threading.active_count()
    stream = TorchTVL1(device="torch-cpu", batch_size=1).compute_stream(iter(rubber_clip(6)))
    next(stream)
    stream.close()
    assert threading.active_count() == before


def test_parameters_are_opencvs():
    backend = TorchTVL1(params={"warps": "3"}, device="torch-cpu")
    assert TorchTVL1.defaults is OpenCVTVL1.defaults
    assert backend.params == {**OpenCVTVL1.defaults, "warps": 3}


def test_listed_as_usable_on_torch_cpu_and_explains_cuda():
    infos = {(b.algo, b.device): b for b in list_backends()}
    assert infos[("tvl1", "torch-cpu")].usable
    assert infos[("tvl1", "torch-cpu")].implementation == {
        "median": "cv2.medianBlur", "iteration": "eager, in place", "batch_size": 1,
        "torch_threads": 1}  # what a torch-cpu backend sets, whatever this process runs with
    result = run_cli("backends")
    assert "median: cv2.medianBlur, iteration: eager, in place, batch_size: 1" in result.stdout
    cuda = infos[("tvl1", "cuda")]
    if torch.cuda.is_available():
        assert cuda.usable
    else:
        assert not cuda.usable and "CUDA" in cuda.reason
        with pytest.raises(BackendUnavailableError, match="CUDA"):
            create_backend(FlowConfig(algo="tvl1", device="cuda"))


def test_missing_torch_is_explained(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)  # makes `import torch` fail as if not installed
    reason = TorchTVL1.availability("torch-cpu")
    assert reason is not None and "pip install 'flowprep[torch]'" in reason


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_matches_cpu_on_rubberwhale(rubberwhale):
    prev, nxt, gt = rubberwhale
    on_gpu = create_backend(FlowConfig(algo="tvl1", device="cuda")).compute(prev, nxt)
    on_cpu = create_backend(FlowConfig(algo="tvl1", device="torch-cpu")).compute(prev, nxt)
    assert endpoint_error(on_gpu, on_cpu) <= 0.01
    assert endpoint_error(on_gpu, gt) <= 1.01 * endpoint_error(opencv_flow(prev, nxt), gt)


def test_parallel_workers_limit_torch_and_opencv_to_one_thread():
    # Run in a subprocess: thread settings are process-wide.
    script = ("import cv2, torch; from flowprep.flow import backend_class; "
              "backend_class('tvl1', 'torch-cpu').limit_threads(); print(torch.get_num_threads(), cv2.getNumThreads())")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env={"PYTHONPATH": str(REPO)})
    assert result.stdout.split() == ["1", "1"], result.stderr


def test_tvl1_flow_checks_its_parameters_like_the_backends():
    frames = torch.zeros(1, 8, 8)
    with pytest.raises(ConfigError, match="unknown parameter 'warp'"):
        tvl1_flow(frames, frames, {"warp": 1})
    with pytest.raises(ConfigError, match="median_filtering must be odd"):
        tvl1_flow(frames, frames, {"median_filtering": 4})


@pytest.mark.slow
def test_extract_with_torch_cpu_through_the_cli_matches_opencv(tmp_path):
    from flowprep import dequantize
    from flowprep.store import Naming, open_output, read_flow_codes

    clip = str(VIDEOS / "carphone_pristine.mp4")
    common = ["--fps", "5", "--quiet"]  # 20 frames of 176x144
    for device, impl in (("torch-cpu", "torch"), ("cpu", "opencv")):
        result = run_cli("extract", clip, str(tmp_path / device), "--device", device, "--impl", impl, *common)
        assert result.returncode == 0, result.stderr
    with open_output(tmp_path / "torch-cpu" / "carphone_pristine") as ours, \
            open_output(tmp_path / "cpu" / "carphone_pristine") as reference:
        meta = ours.meta()
        assert meta["settings"]["device"] == "torch-cpu" and meta["flow_pairs"] == 19
        assert meta["flow_implementation"]["median"] == "cv2.medianBlur"
        assert meta["flow_implementation"]["batch_size"] == 1
        assert meta["flow_implementation"]["torch_threads"] == 1  # --jobs 1 too: torch's threads only spin
        naming = Naming.from_meta(meta)
        apart = [np.abs(dequantize(read_flow_codes(ours, naming, k), 20.0)
                        - dequantize(read_flow_codes(reference, naming, k), 20.0)).mean() for k in range(19)]
    # A code is 40/255 = 0.157 px: flows 0.01 px apart (at this small size) land on the same code for most
    # pixels, and one pixel in seven a code off costs 0.02 px here (measured: 0.007-0.048 per pair, 0.022 mean).
    assert max(apart) < 0.07 and np.mean(apart) < 0.035, apart


@pytest.mark.slow
def test_the_compiled_selection_median_is_the_eager_one(real_flows):
    # CUDA runs the selection median through torch.compile; here Inductor compiles it for the CPU (size 3 keeps
    # the graph small: compiling the 5x5 network takes minutes on 2 cores).
    part = real_flows[:, :, :60, :80]
    compiled = _tvl1_torch._CompiledOnce(median_by_selection)
    assert np.array_equal(compiled(part, 3).numpy(), median_by_selection(part, 3).numpy())
    assert compiled.usable and compiled.problem == ""


def test_a_failing_compiler_leaves_the_exact_eager_median(real_flows):
    def broken_backend(graph, example_inputs):
        raise RuntimeError("no working compiler here")

    part = real_flows[:1, :, :30, :40]
    compiled = _tvl1_torch._CompiledOnce(median_by_selection, backend=broken_backend)
    with pytest.warns(RuntimeWarning, match="no working compiler here"):
        first = compiled(part, 5)
    assert np.array_equal(first.numpy(), median_by_selection(part, 5).numpy())
    assert not compiled.usable and "no working compiler here" in compiled.problem
    assert np.array_equal(compiled(part, 5).numpy(), first.numpy())  # no second try, no second warning
