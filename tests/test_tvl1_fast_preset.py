"""The fast TV-L1 preset: it exists, it is applied, overrides still win, and it keeps RubberWhale accuracy.

Its speed (>= 2.5x OpenCV's defaults) is measured by benchmarks/tvl1_preset_search.py, not here.
"""
from __future__ import annotations

import numpy as np
import pytest

from flowprep import FlowConfig, create_backend
from flowprep.flow.opencv import OpenCVTVL1
from flowprep.flowio import endpoint_error

from conftest import TVL1_EPE_RUBBERWHALE, run_cli



def test_fast_preset_is_applied_and_overridable() -> None:
    fast = create_backend(FlowConfig(algo="tvl1", impl="opencv", preset="fast"))
    defaults = create_backend(FlowConfig(algo="tvl1", impl="opencv"))
    changed = {k for k in defaults.params if fast.params[k] != defaults.params[k]}
    assert changed == set(OpenCVTVL1.presets["fast"]) and changed
    assert fast._tvl1.getScaleStep() == pytest.approx(fast.params["scale_step"])
    assert fast._tvl1.getEpsilon() == pytest.approx(fast.params["epsilon"])
    overridden = create_backend(FlowConfig(algo="tvl1", impl="opencv", preset="fast", params=(("epsilon", "0.01"),)))
    assert overridden.params["epsilon"] == 0.01
    assert overridden.params["scale_step"] == fast.params["scale_step"]


def test_backends_lists_the_preset() -> None:
    result = run_cli("backends")
    lines = [line for line in result.stdout.splitlines() if line.startswith("tvl1")]
    assert len(lines) == 4 and all("[presets: fast]" in line for line in lines if "NOT usable" not in line)
    assert sum(line.split()[1] == "cpu" and line.endswith(": usable [presets: fast]") for line in lines) == 2


@pytest.mark.slow
def test_fast_preset_keeps_rubberwhale_accuracy(rubberwhale: tuple[np.ndarray, np.ndarray, np.ndarray]) -> None:
    prev, nxt, gt = rubberwhale
    reference = create_backend(FlowConfig(algo="tvl1", impl="opencv", preset="fast")).compute(prev, nxt)
    assert endpoint_error(reference, gt) <= 1.15 * TVL1_EPE_RUBBERWHALE
    # The default CPU solver with the same preset gives OpenCV's fast flow (the preset multiplies on it).
    flow = create_backend(FlowConfig(algo="tvl1", preset="fast")).compute(prev, nxt)
    assert np.abs(flow - reference).mean() <= 0.002
