"""Quantization: the SPEC formula exactly, its inverse and its error bound (before and after JPEG)."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from flowprep import dequantize, quantization_error_bound, quantize
from flowprep.quantize import jpeg_roundtrip_bound
from flowprep.config import FlowConfig
from flowprep.flow import create_backend
from flowprep.store import decode_jpeg, encode_jpeg


@pytest.mark.parametrize("bound", [20.0, 40.0, 0.5, 7.3])
def test_zero_maps_to_128_and_the_bounds_to_the_ends(bound):
    assert quantize(np.array([0.0, bound, -bound]), bound).tolist() == [128, 255, 0]


def test_out_of_range_is_clipped():
    assert quantize(np.array([-1e6, -20.001, 20.001, 1e6, np.inf, -np.inf]), 20).tolist() == [0, 0, 255, 255, 255, 0]


def test_ties_round_half_to_even():
    # With b = 127.5 the formula is q = v + 127.5, so v = k + 0.5 lands exactly on a tie between k+127 and k+128.
    v = np.array([0.0, 1.0, 2.0, -1.0, -2.0])
    q = quantize(v, 127.5)
    assert q.tolist() == [128, 128, 130, 126, 126]  # 128.0, 128.5->128, 129.5->130, 126.5->126, 125.5->126


def test_output_is_uint8_of_the_same_shape():
    flow = np.zeros((5, 7, 2), np.float32)
    q = quantize(flow, 20)
    assert q.dtype == np.uint8 and q.shape == flow.shape


@pytest.mark.parametrize("bad", [0, -1, float("nan"), float("inf")])
def test_bad_bound_is_rejected_with_its_value(bad):
    with pytest.raises(ValueError, match="bound"):
        quantize(np.zeros(3), bad)
    with pytest.raises(ValueError, match="bound"):
        dequantize(np.zeros(3, np.uint8), bad)


def test_nan_flow_is_rejected():
    with pytest.raises(ValueError, match="NaN"):
        quantize(np.array([0.0, np.nan]), 20)


def test_dequantize_needs_uint8():
    with pytest.raises(ValueError, match="uint8"):
        dequantize(np.zeros(3, np.float32), 20)


def test_dequantize_is_the_inverse_formula():
    q = np.arange(256, dtype=np.uint8)
    np.testing.assert_allclose(dequantize(q, 20), q.astype(np.float64) * 40 / 255 - 20, atol=1e-5)
    assert dequantize(q, 20).dtype == np.float32


@settings(max_examples=200, deadline=None)
@given(
    bound=st.floats(min_value=0.01, max_value=1000, allow_nan=False),
    unit=arrays(np.float64, (6, 5, 2), elements=st.floats(-1, 1, allow_nan=False)),
)
def test_roundtrip_error_is_at_most_half_a_step(bound, unit):
    flow = (unit * bound).astype(np.float32)
    error = np.abs(dequantize(quantize(flow, bound), bound) - flow)
    # float32 arithmetic in dequantize adds a few ulps of the bound on top of the exact half step
    assert error.max() <= quantization_error_bound(bound) + 4 * np.finfo(np.float32).eps * bound


@pytest.mark.parametrize("bound", [20.0, 40.0])
def test_jpeg_roundtrip_error_on_real_flow_is_within_the_documented_bound(rubberwhale, bound):
    prev, nxt, _ = rubberwhale
    flow = create_backend(FlowConfig("dis")).compute(prev, nxt)
    limit = jpeg_roundtrip_bound(bound, 95)
    for axis in range(2):
        back = decode_jpeg(encode_jpeg(quantize(flow[..., axis], bound), 95), "test")
        error = np.abs(dequantize(back, bound) - np.clip(flow[..., axis], -bound, bound))
        assert error.max() <= limit.max and error.mean() <= limit.mean
