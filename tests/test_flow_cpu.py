"""CPU backends: the same numbers as calling OpenCV directly, parameters, presets and the registry."""
import cv2
import numpy as np
import pytest

from flowprep import ConfigError, FlowConfig, create_backend, list_backends
from flowprep.flow import backend_class, check_flow_config, device_kind
from flowprep.flowio import endpoint_error

from conftest import TVL1_EPE_RUBBERWHALE


@pytest.fixture(scope="module")
def small_pair(rubberwhale):
    prev, nxt, gt = rubberwhale
    return prev[100:228, 200:360].copy(), nxt[100:228, 200:360].copy()


def test_tvl1_impl_opencv_is_opencv_tvl1_with_defaults_and_hits_the_published_epe(rubberwhale):
    prev, nxt, gt = rubberwhale
    flow = create_backend(FlowConfig("tvl1", impl="opencv")).compute(prev, nxt)
    direct = cv2.optflow.DualTVL1OpticalFlow_create().calc(prev, nxt, None)
    assert flow.dtype == np.float32 and flow.shape == prev.shape + (2,)
    assert np.array_equal(flow, direct)
    assert endpoint_error(flow, gt) == pytest.approx(TVL1_EPE_RUBBERWHALE, abs=0.002)


def test_tvl1_parameters_reach_opencv(small_pair):
    prev, nxt = small_pair
    flow = create_backend(FlowConfig("tvl1", impl="opencv", params=(("warps", "2"), ("lambda", 0.3)))).compute(prev, nxt)
    tvl1 = cv2.optflow.DualTVL1OpticalFlow_create()
    tvl1.setWarpingsNumber(2)
    tvl1.setLambda(0.3)
    assert np.array_equal(flow, tvl1.calc(prev, nxt, None))


def test_a_tiny_video_does_not_change_the_flow_of_the_next_on_the_same_backend(small_pair):
    """A worker's backend serves video after video; OpenCV's DualTVL1 lowers its own scale count to what a small
    image allows (5 -> 2 at 24x20) and kept it, so every later video had a 2-level pyramid (11 px off here)."""
    prev, nxt = small_pair
    backend = create_backend(FlowConfig("tvl1", impl="opencv"))
    backend.compute(prev[:20, :24].copy(), nxt[:20, :24].copy())
    assert np.array_equal(backend.compute(prev, nxt), cv2.optflow.DualTVL1OpticalFlow_create().calc(prev, nxt, None))


def test_farneback_uses_mmaction2_parameters(small_pair):
    prev, nxt = small_pair
    flow = create_backend(FlowConfig("farneback")).compute(prev, nxt)
    assert np.array_equal(flow, cv2.calcOpticalFlowFarneback(prev, nxt, None, 0.5, 3, 15, 3, 5, 1.2, 0))


@pytest.mark.parametrize("preset, opencv_preset", [
    (None, cv2.DISOPTICAL_FLOW_PRESET_MEDIUM),
    ("medium", cv2.DISOPTICAL_FLOW_PRESET_MEDIUM),
    ("fast", cv2.DISOPTICAL_FLOW_PRESET_FAST),
    ("ultrafast", cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST),
])
def test_dis_presets_are_opencv_presets(rubberwhale, preset, opencv_preset):
    prev, nxt, _ = rubberwhale
    flow = create_backend(FlowConfig("dis", preset=preset)).compute(prev, nxt)
    assert np.array_equal(flow, cv2.DISOpticalFlow_create(opencv_preset).calc(prev, nxt, None))


def test_compute_stream_gives_n_minus_one_flows_in_order(small_pair):
    prev, nxt = small_pair
    backend = create_backend(FlowConfig("dis"))
    frames = [prev, nxt, prev, nxt]
    flows = list(backend.compute_stream(iter(frames)))
    assert len(flows) == 3
    assert np.array_equal(flows[0], backend.compute(prev, nxt))
    assert np.array_equal(flows[1], backend.compute(nxt, prev))


@pytest.mark.parametrize("impl", ["numba", "opencv"])
def test_flow_direction_is_opencvs(rubberwhale, impl):
    # frame1(x, y) ~ frame2(x + u, y + v): content moved 3 px right and 2 px up gives u = +3, v = -2.
    image = rubberwhale[0]
    first = image[50:250, 50:350]
    second = image[52:252, 47:347]
    backend = create_backend(FlowConfig("tvl1", impl=impl))
    flow = backend.compute(np.ascontiguousarray(first), np.ascontiguousarray(second))
    inner = flow[30:-30, 30:-30]
    assert np.median(inner[..., 0]) == pytest.approx(3, abs=0.1)
    assert np.median(inner[..., 1]) == pytest.approx(-2, abs=0.1)


@pytest.mark.parametrize("params, message", [
    ((("warps", "abc"),), "'warps' of 'tvl1' must be int, got 'abc'"),
    ((("warps", "2.5"),), "must be int"),
    ((("nope", 1),), "unknown parameter 'nope'.*valid: epsilon, gamma"),
    ((("median_filtering", 4),), "median_filtering must be odd .* got 4"),
])
def test_bad_parameters_are_named(params, message):
    for impl in ("numba", "opencv"):
        with pytest.raises(ConfigError, match=message):
            create_backend(FlowConfig("tvl1", impl=impl, params=params))
    # The dry check a batch runs before its first video, on both TV-L1 devices.
    for device in ("cpu", "torch-cpu"):
        with pytest.raises(ConfigError, match=message):
            check_flow_config(FlowConfig("tvl1", device=device, params=params), here=False)


def test_unknown_preset_lists_the_known_ones():
    with pytest.raises(ConfigError, match="unknown preset 'slow'.*fast, medium, ultrafast"):
        create_backend(FlowConfig("dis", preset="slow"))


def test_preset_then_overrides():
    backend = create_backend(FlowConfig("dis", preset="fast", params=(("gd_iterations", 3),)))
    assert backend.params["gd_iterations"] == 3 and backend.params["finest_scale"] == 2


@pytest.mark.parametrize("algo, device, impl, message", [
    ("raft", "cpu", None, "unknown algorithm 'raft'"),
    ("farneback", "cuda", None, "does not run on 'cuda'; it runs on: cpu"),
    ("tvl1", "gpu", None, "device must be cpu, torch-cpu, cuda or cuda:N; got 'gpu'"),
    ("farneback", "cpu", "numba", r"implementation 'numba' of 'farneback' on 'cpu' does not exist; there is: opencv \(default\)"),
    ("dis", "cpu", "torch", r"implementation 'torch' of 'dis' .* there is: opencv \(default\)"),
    ("tvl1", "cpu", "torch", r"implementation 'torch' of 'tvl1' on 'cpu' .* there is: numba \(default\), opencv$"),
    ("tvl1", "torch-cpu", "opencv", r"there is: torch \(default\)"),
])
def test_bad_algorithm_device_or_implementation(algo, device, impl, message):
    with pytest.raises(ConfigError, match=message):
        backend_class(algo, device, impl)


def test_implementations_by_name_and_default():
    assert backend_class("tvl1", "cpu").__name__ == "NumbaTVL1"
    assert backend_class("tvl1", "cpu", "numba").__name__ == "NumbaTVL1"
    assert backend_class("tvl1", "cpu", "opencv").__name__ == "OpenCVTVL1"
    for algo in ("farneback", "dis"):
        assert backend_class(algo, "cpu", "opencv") is backend_class(algo, "cpu")


def test_device_kinds():
    assert [device_kind(d) for d in ("cpu", "cuda", "cuda:3", "torch-cpu")] == ["cpu", "cuda", "cuda", "torch-cpu"]


def test_list_backends_reports_the_cpu_backends_usable_and_the_defaults():
    infos = list_backends()
    usable = {(b.algo, b.device, b.impl) for b in infos if b.usable}
    assert {("tvl1", "cpu", "numba"), ("tvl1", "cpu", "opencv"), ("farneback", "cpu", "opencv"),
            ("dis", "cpu", "opencv")} <= usable
    defaults = {(b.algo, b.device): b.impl for b in infos if b.default}
    assert defaults[("tvl1", "cpu")] == "numba" and defaults[("farneback", "cpu")] == "opencv"
    assert len(defaults) == len({(b.algo, b.device) for b in infos})  # one default each
    assert [b.why_default for b in infos if b.why_default] and all(
        b.default for b in infos if b.why_default)


# A value other than the default for every parameter, and OpenCV's getter that must report it: each parameter has
# to reach OpenCV, not only meta.json (a deleted setter would leave the default in place).
TVL1_CHANGES = {
    "tau": (0.2, "getTau"), "lambda": (0.3, "getLambda"), "theta": (0.5, "getTheta"),
    "nscales": (2, "getScalesNumber"), "warps": (2, "getWarpingsNumber"), "epsilon": (0.5, "getEpsilon"),
    "inner_iterations": (5, "getInnerIterations"), "outer_iterations": (2, "getOuterIterations"),
    "scale_step": (0.5, "getScaleStep"), "gamma": (0.4, "getGamma"), "median_filtering": (3, "getMedianFiltering"),
}
DIS_CHANGES = {
    "finest_scale": (2, "getFinestScale"), "coarsest_scale": (1, "getCoarsestScale"), "patch_size": (12, "getPatchSize"),
    "patch_stride": (5, "getPatchStride"), "gd_iterations": (4, "getGradientDescentIterations"),
    "vr_iterations": (1, "getVariationalRefinementIterations"), "vr_alpha": (3.0, "getVariationalRefinementAlpha"),
    "vr_delta": (1.0, "getVariationalRefinementDelta"), "vr_gamma": (1.0, "getVariationalRefinementGamma"),
    "vr_epsilon": (0.5, "getVariationalRefinementEpsilon"),
    "use_mean_normalization": (False, "getUseMeanNormalization"),
    "use_spatial_propagation": (False, "getUseSpatialPropagation"),
}


def test_every_tvl1_and_dis_parameter_reaches_opencv_and_changes_the_flow(small_pair):
    prev, nxt = small_pair
    for algo, changes, attribute in (("tvl1", TVL1_CHANGES, "_tvl1"), ("dis", DIS_CHANGES, "_dis")):
        backend_type = backend_class(algo, "cpu", "opencv")
        assert set(changes) == set(backend_type.defaults), algo
        default_flow = create_backend(FlowConfig(algo, impl="opencv")).compute(prev, nxt)
        for name, (value, getter) in changes.items():
            assert value != backend_type.defaults[name], (algo, name)
            backend = create_backend(FlowConfig(algo, impl="opencv", params=((name, value),)))
            assert getattr(getattr(backend, attribute), getter)() == pytest.approx(value), (algo, name)
            assert not np.array_equal(backend.compute(prev, nxt), default_flow), (algo, name)


def test_every_farneback_parameter_changes_the_flow(small_pair):
    prev, nxt = small_pair
    changes = {"pyr_scale": 0.7, "levels": 1, "winsize": 9, "iterations": 1, "poly_n": 7, "poly_sigma": 1.5}
    assert set(changes) == set(backend_class("farneback", "cpu").defaults)
    default_flow = create_backend(FlowConfig("farneback")).compute(prev, nxt)
    for name, value in changes.items():
        flow = create_backend(FlowConfig("farneback", params=((name, value),))).compute(prev, nxt)
        assert not np.array_equal(flow, default_flow), name
