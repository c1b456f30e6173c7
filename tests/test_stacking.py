"""Stackings: trajectory (two-stream eq. 2) against an independent reference on real and known fields, the
border rule, bidirectional channel order and signs on real flow, RGB and RGB difference values."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
from conftest import MIDDLEBURY, gray
from fake_trees import constant_codes, write_foreign_video, write_video, x_code, y_code

from flowprep.annotations import Annotation
from flowprep.config import FlowConfig
from flowprep.data import FlowStackDataset, stacking
from flowprep.errors import ConfigError, OutputError
from flowprep.flow import create_backend
from flowprep.quantize import dequantize, quantize
from flowprep.store import Naming

RUBBERWHALE = MIDDLEBURY / "other-data" / "RubberWhale"


def reference_trajectory(fields: np.ndarray) -> np.ndarray:
    """Eq. 2 written directly in float64 numpy: (L, 2, H, W) fields in pixels -> the same channels read along
    each pixel's trajectory; bilinear from the four neighbours, positions clamped to the frame."""
    length, _, height, width = fields.shape
    out = np.zeros_like(fields, dtype=np.float64)
    py, px = np.mgrid[0:height, 0:width].astype(np.float64)
    for k in range(length):
        if k:
            px = np.clip(px + out[k - 1, 0], 0, width - 1)
            py = np.clip(py + out[k - 1, 1], 0, height - 1)
        x0, y0 = np.floor(px).astype(int), np.floor(py).astype(int)
        x1, y1 = np.minimum(x0 + 1, width - 1), np.minimum(y0 + 1, height - 1)
        ax, ay = px - x0, py - y0
        for c in range(2):
            f = fields[k, c].astype(np.float64)
            top = (1 - ax) * f[y0, x0] + ax * f[y0, x1]
            bottom = (1 - ax) * f[y1, x0] + ax * f[y1, x1]
            out[k, c] = (1 - ay) * top + ay * bottom
    return out


def real_image(size: tuple[int, int] = (160, 120)) -> np.ndarray:
    """Middlebury RubberWhale frame10, gray, resized to `size` (w, h): real texture for DIS to track."""
    return cv2.resize(gray(RUBBERWHALE / "frame10.png"), size, interpolation=cv2.INTER_AREA)


def dis_codes(frames: list[np.ndarray], bound: float, backward: bool = False) -> np.ndarray:
    """Quantized DIS flow (pairs, H, W, 2) between consecutive frames, forward (k -> k+1) or backward."""
    backend = create_backend(FlowConfig(algo="dis"))
    pairs = [(b, a) if backward else (a, b) for a, b in zip(frames, frames[1:])]
    return np.stack([quantize(backend.compute(a, b), bound) for a, b in pairs])


def translating_frames(count: int) -> list[np.ndarray]:
    """A real image moving 2 px right and 1 px down per frame."""
    big = real_image((200, 150))
    return [np.ascontiguousarray(big[20 - k:20 - k + 110, 30 - 2 * k:30 - 2 * k + 150]) for k in range(count)]


@pytest.fixture(params=["remap", "grid_sample"])
def kernel(request, monkeypatch) -> str:
    """Runs a trajectory test with each kernel: OpenCV's remap (CPU, OpenCV >= 4.11) and torch's grid_sample
    (other devices, older OpenCV), both checked against the float64 reference."""
    if request.param == "remap" and not stacking._remap_interpolates_in_float():
        pytest.skip(f"OpenCV {cv2.__version__} remaps with 1/32 px positions: the grid_sample kernel is used")
    if request.param == "grid_sample":
        monkeypatch.setattr(stacking, "_remap_interpolates_in_float", lambda: False)
    return request.param


def stacks(root, length: int, **kwargs) -> tuple[torch.Tensor, torch.Tensor]:
    """(plain, trajectory) float pixel stacks (L, 2, H, W) of item 0, TSN val sampling."""
    plain, _ = FlowStackDataset(root, length=length, mode="val", **kwargs)[0]
    trajectory, _ = FlowStackDataset(root, length=length, mode="val", stacking="trajectory", **kwargs)[0]
    return plain.unflatten(0, (length, 2)), trajectory.unflatten(0, (length, 2))


def test_trajectory_on_a_known_zoom_grows_by_1_03_per_field(tmp_path, kernel):
    # Zoom by 3% per frame about the centre c: every field is d(p) = 0.03 (p - c). Along a trajectory
    # p_k - c = 1.03^k (p - c), so the trajectory's k-th field is 1.03^k times the plain one.
    width, height, length = 64, 48, 10
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float64)
    field = np.dstack([0.03 * (xs - (width - 1) / 2), 0.03 * (ys - (height - 1) / 2)])
    write_video(tmp_path / "A" / "zoom", length, codes=np.stack([quantize(field, 5.0)] * length), bound=5.0)
    plain, trajectory = stacks(tmp_path, length)
    assert np.allclose(trajectory.numpy(), reference_trajectory(plain.numpy()), atol=1e-4)
    inside = (np.abs(xs - 31.5) <= 24) & (np.abs(ys - 23.5) <= 18)  # trajectories that stay in the frame
    for k in range(length):
        expected = field.transpose(2, 0, 1) * 1.03**k
        assert np.abs(trajectory[k].numpy() - expected)[:, inside].max() < 0.03
        assert np.abs(plain[k].numpy() - field.transpose(2, 0, 1))[:, inside].max() < 0.03  # plain repeats it
    assert np.abs(trajectory[9].numpy() - plain[9].numpy())[:, inside].max() > 0.15


def test_trajectory_on_real_zoom_flow_matches_the_reference(tmp_path, kernel):
    base = real_image()
    centre = ((base.shape[1] - 1) / 2, (base.shape[0] - 1) / 2)
    frames = [cv2.warpAffine(base, cv2.getRotationMatrix2D(centre, 0, 1.03**k), base.shape[::-1],
                             flags=cv2.INTER_LINEAR) for k in range(7)]
    write_video(tmp_path / "A" / "zoom", 6, codes=dis_codes(frames, 5.0), bound=5.0)
    plain, trajectory = stacks(tmp_path, 6)
    assert np.allclose(trajectory.numpy(), reference_trajectory(plain.numpy()), atol=1e-4)
    # The radial component of the flow: constant along a plain stack's fields, growing along trajectories.
    ys, xs = np.mgrid[0:base.shape[0], 0:base.shape[1]].astype(np.float64)
    rx, ry = xs - centre[0], ys - centre[1]
    ring = (np.hypot(rx, ry) > 15) & (np.abs(rx) < 50) & (np.abs(ry) < 35)

    def radial(stack: torch.Tensor, k: int) -> float:
        values = stack[k].numpy()
        return float(np.median(((values[0] * rx + values[1] * ry) / (rx**2 + ry**2))[ring]))

    assert radial(plain, 0) == pytest.approx(0.03, abs=0.005)
    assert radial(plain, 5) / radial(plain, 0) == pytest.approx(1.0, abs=0.05)
    assert radial(trajectory, 5) / radial(trajectory, 0) == pytest.approx(1.03**5, abs=0.05)


def test_trajectory_of_a_translation_equals_the_plain_stack(tmp_path, kernel):
    write_video(tmp_path / "known" / "A" / "v", 12)  # constant fields: every point reads the same values
    plain, trajectory = stacks(tmp_path / "known", 5)
    assert torch.allclose(plain, trajectory, atol=1e-5)
    # A real image moving 2 px right and 1 px down per frame, its flow from DIS.
    write_video(tmp_path / "real" / "A" / "v", 5, codes=dis_codes(translating_frames(6), 20.0))
    plain, trajectory = stacks(tmp_path / "real", 5)
    assert np.allclose(trajectory.numpy(), reference_trajectory(plain.numpy()), atol=1e-4)
    interior = (slice(None), slice(None), slice(15, -15), slice(15, -15))
    assert float(plain[:, 0][interior[1:]].median()) == pytest.approx(2.0, abs=0.1)
    assert float((plain - trajectory)[interior].abs().median()) < 0.05


@pytest.mark.parametrize("push", [255, 0])  # +20 px (out on the right) or -20 px (out on the left)
def test_trajectory_border_rule_clamps_the_point(tmp_path, kernel, push):
    # Field 1 pushes every point out of the 12 px wide frame; field 2 moves it 10 px back (left for a point
    # held at the right border, 10 px right for one held on the left); field 3's x varies by column. Points
    # held at the border (not left running outside) all end at the same column: one value for the whole frame.
    codes = constant_codes(3)
    codes[0, ..., 0], codes[:, ..., 1] = push, 128
    codes[1, ..., 0] = 64 if push == 255 else 191  # -9.96 or +9.96 px
    codes[2, ..., 0] = 20 + 10 * np.arange(12)[None, :]
    write_video(tmp_path / "A" / "v", 3, codes=codes)
    plain, trajectory = stacks(tmp_path, 3)
    assert np.allclose(trajectory.numpy(), reference_trajectory(plain.numpy()), atol=1e-4)
    x = 11 - 9.96 if push == 255 else 9.96
    expected = np.interp(x, np.arange(12), plain[2, 0, 0].numpy())
    assert np.allclose(trajectory[2, 0].numpy(), expected, atol=0.01)
    assert np.allclose(trajectory[1, 0].numpy(), plain[1, 0, 0, 11 if push == 255 else 0].item(), atol=1e-4)


def test_trajectory_unit_values_mean_subtraction_and_no_codes(tmp_path):
    codes = constant_codes(4)
    codes[..., 0] = (40 + 5 * np.arange(12))[None, None, :]
    write_video(tmp_path / "A" / "v", 4, codes=codes, bound=10.0)
    pixels, _ = FlowStackDataset(tmp_path, length=4, mode="val", stacking="trajectory")[0]
    unit, _ = FlowStackDataset(tmp_path, length=4, mode="val", stacking="trajectory", output="unit")[0]
    assert torch.allclose(unit, pixels / 10.0, atol=1e-6)
    centred, _ = FlowStackDataset(tmp_path, length=4, mode="val", stacking="trajectory", mean_subtract=True)[0]
    assert torch.allclose(centred, pixels - pixels.mean(dim=(-2, -1), keepdim=True), atol=1e-5)
    assert centred.mean(dim=(-2, -1)).abs().max() < 1e-5
    with pytest.raises(ConfigError, match="'uint8'"):
        FlowStackDataset(tmp_path, length=4, stacking="trajectory", output="uint8")


def test_bidirectional_channel_order_and_signs_on_real_flow(tmp_path):
    frames = translating_frames(7)
    video = write_video(tmp_path / "A" / "v", 6, codes=dis_codes(frames, 20.0),
                        backward=dis_codes(frames, 20.0, backward=True))
    dataset = FlowStackDataset(tmp_path, length=4, mode="val", stacking="bidirectional", output="uint8")
    codes, _ = dataset[0]
    # TSN val, n=6, L=4: offset int(3 / 2) = 1, span s=2 .. 6, tau = 4: backward fields 2, 3; forward 4, 5.
    assert dataset.frame_indices(0).tolist() == [[2, 3, 4, 5]]
    files = ["backflow_{}_00002.jpg", "backflow_{}_00003.jpg", "flow_{}_00004.jpg", "flow_{}_00005.jpg"]
    for k, name in enumerate(files):
        for c, axis in enumerate("xy"):
            written = cv2.imread(str(video / name.format(axis)), cv2.IMREAD_GRAYSCALE)
            assert np.array_equal(codes[2 * k + c].numpy(), written), (name, axis)
    pixels = dequantize(codes.numpy(), 20.0)[:, 15:-15, 15:-15]
    medians = np.median(pixels.reshape(8, -1), axis=1)
    # Backward fields (frame j+1 -> j) point the other way: x -2, y -1; forward ones x +2, y +1.
    assert np.allclose(medians, [-2, -1, -2, -1, 2, 1, 2, 1], atol=0.15)
    centred, _ = FlowStackDataset(tmp_path, length=4, mode="val", stacking="bidirectional", mean_subtract=True)[0]
    assert centred.mean(dim=(-2, -1)).abs().max() < 1e-4


def test_bidirectional_needs_backward_flow_and_an_even_length(tmp_path):
    write_video(tmp_path / "A" / "forward_only", 6)
    with pytest.raises(OutputError, match=r"forward_only: no backward flow for the bidirectional stacking"):
        FlowStackDataset(tmp_path, length=4, stacking="bidirectional")
    with pytest.raises(ConfigError, match="even stack length, got 5"):
        FlowStackDataset(tmp_path, length=5, stacking="bidirectional")


def test_bidirectional_reads_another_tools_backward_names(tmp_path):
    # denseflow writes its backward run (-s=-1) as flow_x_m1_00000.jpg, 0-based, beside flow_x_00000.jpg.
    naming = Naming(start_index=0, backward_template="flow_{}_m1_{:05d}.jpg")
    write_foreign_video(tmp_path / "both" / "A" / "v", 8, naming, backward=True)
    codes, _ = FlowStackDataset(tmp_path / "both", length=2, mode="val", stacking="bidirectional", output="uint8",
                                start_index=0, backward_template="flow_{}_m1_{:05d}.jpg")[0]
    # TSN val, n=8, L=2: tick = 7, offset int(3.5) = 3: span 4 .. 6, backward field 4 then forward field 5.
    assert [int(codes[c, 0, 0]) for c in range(4)] == [255 - x_code(3), 255 - y_code(3), x_code(4), y_code(4)]
    write_foreign_video(tmp_path / "forward" / "A" / "v", 8, naming)
    with pytest.raises(OutputError, match="no backward flow"):
        FlowStackDataset(tmp_path / "forward", length=2, stacking="bidirectional", start_index=0,
                         backward_template="flow_{}_m1_{:05d}.jpg")


def test_bidirectional_on_known_codes_takes_backward_then_forward(tmp_path):
    write_video(tmp_path / "A" / "v", 12, backward=True)  # backward pair k = 255 - forward pair k
    codes, _ = FlowStackDataset(tmp_path, length=6, mode="test", segments=1, stacking="bidirectional",
                                output="uint8")[0]
    # TSN test, n=12, L=6, K=1: tick = 7, offset int(3.5) = 3: span 4 .. 10, tau = 7.
    expected = [255 - x_code(j - 1) for j in (4, 5, 6)] + [x_code(j - 1) for j in (7, 8, 9)]
    assert [int(codes[2 * k, 0, 0]) for k in range(6)] == expected
    assert [int(codes[2 * k + 1, 0, 0]) for k in range(6)] == [255 - y_code(3), 255 - y_code(4), 255 - y_code(5),
                                                               y_code(6), y_code(7), y_code(8)]


def real_rgb(count: int, size: tuple[int, int] = (64, 48)) -> np.ndarray:
    """RubberWhale frames 07.. as (count, H, W, 3) RGB uint8, resized."""
    images = [cv2.cvtColor(cv2.imread(str(RUBBERWHALE / f"frame{7 + k:02d}.png")), cv2.COLOR_BGR2RGB)
              for k in range(count)]
    return np.stack([cv2.resize(image, size, interpolation=cv2.INTER_AREA) for image in images])


def decoded_rgb(video, number: int) -> np.ndarray:
    """RGB frame `number` (1-based) as written: (3, H, W) float32."""
    bgr = cv2.imread(str(video / f"img_{number:05d}.jpg"))
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB).transpose(2, 0, 1).astype(np.float32)


def test_rgb_difference_and_rgb_stack_values(tmp_path):
    video = write_video(tmp_path / "A" / "v", 7, rgb_frames=8, rgb=real_rgb(8))
    diff, _ = FlowStackDataset(tmp_path, length=3, mode="val", stacking="rgbdiff")[0]
    # Units are the 7 differences; TSN val, n=7, L=3: tick = 5, offset int(2.5) = 2: D_3, D_4, D_5.
    expected = np.concatenate([(decoded_rgb(video, j + 1) - decoded_rgb(video, j)) / 255 for j in (3, 4, 5)])
    assert diff.shape == (9, 48, 64) and np.array_equal(diff.numpy(), expected)
    assert diff.min() < -0.05 and diff.max() > 0.05  # real frames differ, in both signs
    rgb, _ = FlowStackDataset(tmp_path, length=2, mode="val", stacking="rgb", output="uint8")[0]
    # Units are the 8 frames; n=8, L=2: tick = 7, offset int(3.5) = 3: frames 4, 5.
    assert np.array_equal(rgb.numpy(), np.concatenate([decoded_rgb(video, j) for j in (4, 5)]).astype(np.uint8))
    with pytest.raises(ConfigError, match="mean_subtract"):
        FlowStackDataset(tmp_path, stacking="rgb", mean_subtract=True)
    with pytest.raises(ConfigError, match="'uint8'"):
        FlowStackDataset(tmp_path, stacking="rgbdiff", output="uint8")
    write_video(tmp_path / "B" / "no_rgb", 7)
    with pytest.raises(OutputError, match="no_rgb: no rgb frames"):  # found by the walk, listed as rgb
        FlowStackDataset(tmp_path, stacking="rgbdiff")
    with pytest.raises(OutputError, match="no_rgb: no RGB frames for the RGBDiffStacking"):  # listed by hand
        FlowStackDataset(tmp_path, [Annotation("B/no_rgb", 0, 0)], stacking="rgbdiff")


def test_trajectory_of_plain_uint8_batches_equals_the_trajectory_stacking(tmp_path):
    # The GPU recipe: plain uint8 stacks through the DataLoader, trajectory() on the batch, same values.
    from flowprep.data.stacking import trajectory

    frames = translating_frames(7)
    write_video(tmp_path / "A" / "v", 6, codes=dis_codes(frames, 20.0))
    codes, _ = FlowStackDataset(tmp_path, length=4, segments=2, mode="val", output="uint8")[0]
    stacked, _ = FlowStackDataset(tmp_path, length=4, segments=2, mode="val", stacking="trajectory")[0]
    assert torch.equal(trajectory(codes.unflatten(1, (4, 2)), 20.0).flatten(1, 2), stacked)


def test_an_opencv_that_remaps_at_1_32_px_is_detected_and_grid_sample_reads(monkeypatch):
    # OpenCV < 4.11 turns float maps into 1/32 px fixed-point positions before interpolating, which would put
    # the remap kernel up to |gradient| / 64 px off: such versions must get the grid_sample kernel.
    float_remap = cv2.remap

    def fixed_point_remap(src, map1, map2, interpolation, **kwargs):
        return float_remap(src, *cv2.convertMaps(map1, map2, cv2.CV_16SC2), interpolation, **kwargs)

    if not stacking._remap_interpolates_in_float():
        pytest.skip(f"OpenCV {cv2.__version__} remaps at 1/32 px itself: nothing to simulate")
    codes = torch.from_numpy(dis_codes(translating_frames(5), 20.0)).permute(0, 3, 1, 2)[None].contiguous()
    monkeypatch.setattr(cv2, "remap", fixed_point_remap)
    stacking._remap_interpolates_in_float.cache_clear()
    try:
        assert not stacking._remap_interpolates_in_float()
        assert torch.equal(stacking.trajectory(codes, 20.0), stacking._trajectory_grid_sample(codes, 20.0))
    finally:
        stacking._remap_interpolates_in_float.cache_clear()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_trajectory_of_a_cuda_batch_matches_the_cpu_stacking():
    # The uint8 recipe's GPU step: grid_sample on the device against the CPU kernel, on real DIS flow.
    codes = torch.from_numpy(dis_codes(translating_frames(6), 20.0)).permute(0, 3, 1, 2)[None].contiguous()
    on_gpu = stacking.trajectory(codes.cuda(), 20.0)
    assert on_gpu.device.type == "cuda"
    assert torch.allclose(on_gpu.cpu(), stacking.trajectory(codes, 20.0), atol=2e-4)
