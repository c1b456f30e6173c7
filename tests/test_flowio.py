"""flowprep.flowio: .flo round trip, errors that name the file, end-point error on published ground truth."""

import numpy as np
import pytest

from flowprep.errors import OutputError
from flowprep.flowio import endpoint_error, read_flo, write_flo

from conftest import MIDDLEBURY

RUBBER_GT = MIDDLEBURY / "other-gt-flow/RubberWhale/flow10.flo"


def test_round_trip_of_published_ground_truth(tmp_path):
    gt = read_flo(RUBBER_GT)
    assert gt.shape == (388, 584, 2) and gt.dtype == np.float32
    out = tmp_path / "copy.flo"
    write_flo(out, gt)
    assert out.read_bytes() == RUBBER_GT.read_bytes()
    np.testing.assert_array_equal(read_flo(out), gt)


def test_bad_magic_names_the_file(tmp_path):
    bad = tmp_path / "frame.flo"
    bad.write_bytes(b"PNG\x00" + RUBBER_GT.read_bytes()[4:])
    with pytest.raises(OutputError, match="frame.flo"):
        read_flo(bad)


def test_truncated_file_names_the_file(tmp_path):
    short = tmp_path / "short.flo"
    short.write_bytes(RUBBER_GT.read_bytes()[:-8])
    with pytest.raises(OutputError, match="short.flo.*bytes"):
        read_flo(short)


def test_endpoint_error_skips_unknown_pixels():
    gt = read_flo(RUBBER_GT)
    known = np.all(np.abs(gt) < 1e9, axis=2)
    assert 0.98 < known.mean() < 0.99  # MANIFEST: 98.4% known
    zero = np.zeros_like(gt)
    expected = np.linalg.norm(gt[known].astype(np.float64), axis=1).mean()
    assert endpoint_error(zero, gt) == pytest.approx(expected)
    assert endpoint_error(gt, gt) == 0.0
    shifted = gt + np.float32([3, 4])
    assert endpoint_error(np.where(known[..., None], shifted, 0), gt, valid=known) == pytest.approx(5.0, abs=1e-5)
