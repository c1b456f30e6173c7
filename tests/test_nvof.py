"""NVIDIA Optical Flow backend: explains precisely what is missing; the real flow path only with the hardware."""
from importlib.metadata import PackageNotFoundError, version

import cv2
import numpy as np
import pytest

from flowprep.config import FlowConfig
from flowprep.errors import BackendUnavailableError, ConfigError
from flowprep.flow import create_backend, list_backends
from flowprep.flow.nvof import NVOF, nvof_problem

from conftest import MIDDLEBURY

REASON = nvof_problem("cuda")
try:
    SDK_INSTALLED = bool(version("torch-nvidia-of-sdk"))
except PackageNotFoundError:
    SDK_INSTALLED = False
RUBBER = MIDDLEBURY / "other-data/RubberWhale"


@pytest.mark.skipif(SDK_INSTALLED, reason="torch-nvidia-of-sdk is installed")
def test_reason_names_the_missing_package():
    assert "torch-nvidia-of-sdk package is not installed" in REASON and "pip install 'flowprep[nvof]'" in REASON


def test_create_backend_raises_with_the_reason():
    if REASON is None:
        pytest.skip("NVOF is usable here")
    with pytest.raises(BackendUnavailableError) as raised:
        create_backend(FlowConfig(algo="nvof", device="cuda"))
    assert REASON in str(raised.value)


def test_listed_as_unusable_with_the_reason():
    (info,) = [b for b in list_backends() if b.algo == "nvof"]
    assert info.device == "cuda"
    assert info.usable == (REASON is None)
    assert info.reason == (REASON or "")
    assert info.presets == ("fast", "medium", "slow")


def test_parameters_are_checked_without_the_hardware():
    assert NVOF(preset="fast", device="cuda").params == {"perf_level": "fast", "grid_size": 1}
    with pytest.raises(ConfigError, match="grid_size"):
        NVOF(params={"grid_size": 3}, device="cuda")
    with pytest.raises(ConfigError, match="perf_level"):
        NVOF(params={"perf_level": "fastest"}, device="cuda")


@pytest.mark.gpu
@pytest.mark.skipif(REASON is not None, reason=f"NVOF not usable here: {REASON}")
@pytest.mark.parametrize("grid_size", [1, 4])
def test_shifted_real_image_gives_the_shift_in_pixels(grid_size):
    image = cv2.cvtColor(cv2.imread(str(RUBBER / "frame10.png")), cv2.COLOR_BGR2GRAY)
    big = image[60:330, 80:500]
    prev = np.ascontiguousarray(big[5:261, 5:405])
    nxt = np.ascontiguousarray(big[7:263, 2:402])  # content moves 3 px right and 2 px up
    backend = create_backend(FlowConfig(algo="nvof", device="cuda", params=(("grid_size", grid_size),)))
    flows = list(backend.compute_stream(iter([prev, nxt, prev])))
    assert len(flows) == 2 and flows[0].shape == (256, 400, 2) and flows[0].dtype == np.float32
    np.testing.assert_allclose(np.median(flows[0][32:-32, 32:-32].reshape(-1, 2), axis=0), [3, -2], atol=0.25)
    np.testing.assert_allclose(np.median(flows[1][32:-32, 32:-32].reshape(-1, 2), axis=0), [-3, 2], atol=0.25)
