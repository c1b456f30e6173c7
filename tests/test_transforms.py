"""Flow-aware transforms: what each does to x and y, on float pixels and raw uint8 codes."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from flowprep.data.transforms import (
    CenterCrop, Compose, Dequantize, FlowHorizontalFlip, HorizontalFlip, MultiScaleCrop, Normalize, RandomCrop,
    Resize,
)
from flowprep.errors import ConfigError
from flowprep.quantize import dequantize, quantize


def stack(length: int = 3, height: int = 6, width: int = 8, seed: int = 0) -> torch.Tensor:
    """A (2L, H, W) float stack of random displacements in pixels."""
    return torch.randn(2 * length, height, width, generator=torch.Generator().manual_seed(seed)) * 5


def test_flow_flip_twice_is_identity():
    flow = stack()
    flip = FlowHorizontalFlip(p=1.0)
    assert torch.equal(flip(flip(flow)), flow)
    codes = torch.randint(0, 256, (2, 6, 5, 7), dtype=torch.uint8)
    assert torch.equal(flip(flip(codes)), codes)


def test_flow_flip_of_constant_u_gives_minus_u_and_leaves_y():
    flow = torch.empty(4, 5, 6)
    flow[0::2], flow[1::2] = 2.5, -1.25
    flipped = FlowHorizontalFlip(p=1.0)(flow)
    assert torch.equal(flipped[0::2], torch.full((2, 5, 6), -2.5))
    assert torch.equal(flipped[1::2], flow[1::2])


def test_flow_flip_on_uint8_codes_is_255_minus_x_and_negates_after_dequantize():
    codes = torch.from_numpy(quantize(torch.full((2, 3, 4), 3.0).numpy()))
    codes[1] = 77
    flipped = FlowHorizontalFlip(p=1.0)(codes)
    assert flipped.dtype == torch.uint8
    assert torch.equal(flipped[0], 255 - codes[0])
    assert torch.equal(flipped[1], codes[1])
    assert np.allclose(dequantize(flipped[0].numpy()), -dequantize(codes[0].numpy()), atol=1e-5)


def test_flow_flip_mirrors_every_channel_and_segment():
    flow = stack().expand(3, -1, -1, -1).clone()  # (segments, 2L, H, W)
    flipped = FlowHorizontalFlip(p=1.0)(flow)
    assert torch.equal(flipped[..., 1::2, :, :], flow[..., 1::2, :, :].flip(-1))
    assert torch.equal(flipped[..., 0::2, :, :], -flow[..., 0::2, :, :].flip(-1))


def test_flip_probability_and_plain_flip_for_rgb():
    flow = stack()
    assert torch.equal(FlowHorizontalFlip(p=0.0)(flow), flow)
    rgb = torch.rand(3, 4, 5)
    assert torch.equal(HorizontalFlip(p=1.0)(rgb), rgb.flip(-1))
    with pytest.raises(ConfigError, match="flow tensor"):
        FlowHorizontalFlip(p=1.0)(rgb)
    flips = sum(not torch.equal(FlowHorizontalFlip(0.5)(flow, torch.Generator().manual_seed(s)), flow)
                for s in range(200))
    assert 70 < flips < 130


def test_center_crop_positions_like_tsn():
    flow = torch.arange(2 * 10 * 12, dtype=torch.float32).view(2, 10, 12)
    crop = CenterCrop((4, 6))(flow)
    # top = round((10 - 4) / 2) = 3, left = round((12 - 6) / 2) = 3; values untouched.
    assert torch.equal(crop, flow[:, 3:7, 3:9])
    assert torch.equal(CenterCrop(5)(flow), flow[:, 2:7, 4:9])  # round(2.5) = 2 (half to even), round(3.5) = 4


def test_random_crop_takes_a_window_of_the_input_and_fails_on_small_images():
    flow = torch.arange(2 * 10 * 12, dtype=torch.float32).view(2, 10, 12)
    crop = RandomCrop((4, 5))(flow, torch.Generator().manual_seed(3))
    top, left = divmod(int(crop[0, 0, 0]), 12)
    assert torch.equal(crop, flow[:, top:top + 4, left:left + 5])
    with pytest.raises(ConfigError, match="smaller than"):
        RandomCrop(11)(flow)


def test_resize_rescales_flow_values_with_the_image():
    flow = torch.empty(2, 8, 10)
    flow[0], flow[1] = 3.0, -2.0
    resized = Resize((4, 20))(flow)  # height halves, width doubles
    assert resized.shape == (2, 4, 20)
    assert torch.allclose(resized[0], torch.full((4, 20), 6.0))
    assert torch.allclose(resized[1], torch.full((4, 20), -1.0))
    assert torch.allclose(Resize((4, 20), flow=False)(flow)[0], torch.full((4, 20), 3.0))
    assert Resize(4)(flow).shape == (2, 4, 5)  # short side


def test_resize_on_uint8_codes_scales_about_zero_motion():
    codes = torch.empty(2, 8, 10, dtype=torch.uint8)
    codes[0], codes[1] = 140, 128
    resized = Resize((8, 20))(codes)
    assert resized.dtype == torch.uint8
    # x: (140 - 127.5) * 2 + 127.5 = 152.5 -> 152 (half to even); y is not rescaled (height kept).
    assert int(resized[0].unique()) == 152 and int(resized[1].unique()) == 128


def test_multiscale_crop_candidates_and_offsets_follow_tsn():
    crop = MultiScaleCrop(224)
    # 256x340 image: sides int(256 * s) = 256, 224, 192, 168 (224 snaps): pairs with |i - j| <= 1.
    assert crop.crop_candidates(256, 340) == [(256, 256), (224, 256), (256, 224), (224, 224), (192, 224),
                                              (224, 192), (192, 192), (168, 192), (192, 168), (168, 168)]
    offsets = crop.fixed_offsets(256, 340, 224, 224)
    assert len(offsets) == 13 and offsets[:5] == [(0, 0), (116, 0), (0, 32), (116, 32), (58, 16)]
    assert len(MultiScaleCrop(224, more_fix_crop=False).fixed_offsets(256, 340, 224, 224)) == 5


def test_multiscale_crop_output_size_and_flow_scaling():
    flow = torch.empty(2, 2, 64, 80)  # (segments, 2L, H, W)
    flow[:, 0], flow[:, 1] = 1.0, 1.0
    out = MultiScaleCrop(32)(flow, torch.Generator().manual_seed(0))
    assert out.shape == (2, 2, 32, 32)
    # every candidate crop side is >= 0.66 * 64 = 42 px, so a 32 px output shrinks values by 32 / side.
    assert out.max() <= 32 / 42 + 1e-5 and out.min() >= 32 / 64 - 1e-5
    same = MultiScaleCrop(32, flow=False)(flow, torch.Generator().manual_seed(0))
    assert torch.allclose(same, torch.ones_like(same))


@pytest.mark.parametrize("bound", [20.0, 10.0, 40.0, 7.3, 0.001])
def test_dequantize_gives_the_bits_of_numpy_dequantize_for_every_code(bound):
    codes = torch.arange(256, dtype=torch.uint8).view(2, 8, 16)
    pixels = Dequantize(bound)(codes)
    assert pixels.dtype == torch.float32 and pixels.shape == codes.shape
    assert np.array_equal(pixels.numpy(), dequantize(codes.numpy(), bound))


def test_dequantize_after_uint8_crop_and_flip_equals_the_float_pipeline():
    codes = torch.randint(0, 256, (3, 6, 12, 16), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    crop_flip = Compose([RandomCrop((8, 10)), FlowHorizontalFlip(p=1.0)])
    on_codes = Compose([crop_flip, Dequantize()])(codes, torch.Generator().manual_seed(5))
    on_pixels = crop_flip(Dequantize()(codes), torch.Generator().manual_seed(5))
    assert on_codes.shape == (3, 6, 8, 10)
    assert torch.allclose(on_codes, on_pixels, atol=1e-5)  # 255 - q then dequantize is -pixels up to rounding
    with pytest.raises(ConfigError, match=r"Dequantize\(bound=20.0\) needs uint8 codes, got a torch.float32"):
        Dequantize()(on_codes)
    with pytest.raises(ConfigError, match="bound must be a positive finite number of pixels, got -1.0"):
        Dequantize(-1)


def test_normalize_per_channel_and_repeated_xy_pattern():
    flow = torch.ones(4, 2, 2)
    flow[1::2] = 3.0
    out = Normalize(mean=(1.0, 3.0), std=(2.0, 4.0))(flow)
    assert torch.equal(out, torch.zeros(4, 2, 2))
    assert torch.equal(Normalize(1.0, 0.5)(flow)[1], torch.full((2, 2), 4.0))
    with pytest.raises(ConfigError, match="uint8"):
        Normalize(0, 1)(torch.zeros(2, 2, 2, dtype=torch.uint8))
    with pytest.raises(ConfigError, match="3 values"):
        Normalize((0, 0, 0), (1, 1, 1))(flow)


def test_compose_is_deterministic_for_a_generator_and_takes_plain_callables():
    pipeline = Compose([MultiScaleCrop(16), FlowHorizontalFlip(0.5), lambda t: t * 2])
    flow = stack(height=24, width=30)
    a = pipeline(flow, torch.Generator().manual_seed(7))
    b = pipeline(flow, torch.Generator().manual_seed(7))
    assert a.shape == (6, 16, 16) and torch.equal(a, b)
    outcomes = {pipeline(flow, torch.Generator().manual_seed(s)).sum().item() for s in range(10)}
    assert len(outcomes) > 1


def test_rgb_and_flow_pipelines_of_the_same_structure_draw_the_same_crops():
    # The two-stream dataset seeds both pipelines alike: equal structure gives the same crop and flip.
    positions = torch.arange(24 * 30, dtype=torch.float32).view(1, 24, 30)
    flow = positions.expand(2, -1, -1).clone()
    rgb = positions.expand(3, -1, -1).clone()
    for seed in range(5):
        f = Compose([RandomCrop(10), FlowHorizontalFlip(0.5)])(flow, torch.Generator().manual_seed(seed))
        r = Compose([RandomCrop(10), HorizontalFlip(0.5)])(rgb, torch.Generator().manual_seed(seed))
        assert torch.equal(f[1], r[0])  # y is only mirrored: it shows the same pixels as the RGB crop


def test_flow_transforms_reject_a_tensor_that_is_no_flow_stack_on_every_draw():
    odd = torch.zeros(3, 8, 8)  # 3 channels: not x, y interleaved
    for seed in range(8):
        with pytest.raises(ConfigError, match="expects a"):
            FlowHorizontalFlip(0.5)(odd, torch.Generator().manual_seed(seed))
    with pytest.raises(ConfigError, match="expects a"):
        Resize((8, 8))(odd)  # already that size: nothing to resize, still checked


# --- MultiScaleCrop and Resize: where the crop is cut, its sides, and the codes' zero (issue 19) ---

def test_multiscale_crop_never_leaves_the_image_when_the_short_side_is_just_below_the_output():
    # Short side 1-2 px below the output size: the 3 px snap must not make the crop larger than the image.
    crop = MultiScaleCrop(228)
    for height, width in ((226, 300), (227, 227), (300, 226)):
        for crop_w, crop_h in crop.crop_candidates(height, width):
            assert crop_h <= height and crop_w <= width, (height, width, crop_w, crop_h)
            for left, top in crop.fixed_offsets(height, width, crop_h, crop_w):
                assert 0 <= left <= width - crop_w and 0 <= top <= height - crop_h
    with pytest.raises(ConfigError, match=r"228x228 crop .* 300x226"):
        crop.fixed_offsets(226, 300, 228, 228)
    # y = 1 px everywhere: a crop of h rows resized to 224 gives 224 / h, so at most 224 / int(0.66 * 222).
    flow = torch.ones(2, 222, 296)
    largest = max(float(MultiScaleCrop(224)(flow, torch.Generator().manual_seed(s))[1].max()) for s in range(60))
    assert largest <= 224 / 146 + 1e-5


def test_multiscale_crop_cuts_its_window_at_a_fixed_position_with_height_and_width_as_asked():
    # Scale 0.5 of the 40 px short side is 20 px; a 20x22 (h x w) output snaps the crop to 20 rows, 22 columns:
    # no resize, so the output is the window itself (values are positions, row * 60 + column).
    positions = torch.arange(40 * 60, dtype=torch.float32).view(1, 40, 60).expand(2, -1, -1).clone()
    crop = MultiScaleCrop((20, 22), scales=(0.5,), max_distort=0, flow=False)
    assert crop.crop_candidates(40, 60) == [(22, 20)]
    fixed = set(crop.fixed_offsets(40, 60, 20, 22))  # steps (60 - 22) // 4 = 9 and (40 - 20) // 4 = 5
    seen = set()
    for seed in range(40):
        out = crop(positions, torch.Generator().manual_seed(seed))
        assert out.shape == (2, 20, 22)
        top, left = divmod(int(out[0, 0, 0]), 60)
        assert torch.equal(out, positions[:, top:top + 20, left:left + 22])
        assert (left, top) in fixed
        seen.add((left, top))
    assert len(seen) > 5  # drawn among the 13 positions, not one of them always
    anywhere = MultiScaleCrop((20, 22), scales=(0.5,), max_distort=0, fix_crop=False, flow=False)
    placed = {divmod(int(anywhere(positions, torch.Generator().manual_seed(s))[0, 0, 0]), 60) for s in range(40)}
    assert not {(left, top) for top, left in placed} <= fixed


def test_multiscale_crop_scales_x_by_the_width_ratio_and_y_by_the_height_ratio():
    flow = torch.ones(2, 40, 60)  # x = y = 1 px
    out = MultiScaleCrop((20, 30), scales=(0.5,), max_distort=0)(flow, torch.Generator().manual_seed(0))
    # A 20x20 crop (no side within 3 px of 30) resized to 20 rows, 30 columns: x * 1.5, y * 1.
    assert out.shape == (2, 20, 30)
    assert torch.allclose(out[0], torch.full((20, 30), 1.5)) and torch.allclose(out[1], torch.ones(20, 30))


def test_resize_of_uint8_codes_scales_about_127_5_not_128():
    codes = torch.empty(2, 8, 10, dtype=torch.uint8)
    codes[0], codes[1] = 141, 100
    resized = Resize((8, 30))(codes)  # width x 3: x codes (q - 127.5) * 3 + 127.5
    assert int(resized[0].unique()) == 168  # about 128 it would be 167
    assert int(resized[1].unique()) == 100
    # The codes' values follow the float pipeline within half a code step.
    pixels = Resize((8, 30))(Dequantize()(codes))
    assert torch.allclose(Dequantize()(resized), pixels, atol=20 / 255 + 1e-5)


BAD_ARGUMENTS = {  # the call -> the value its error must quote
    "Resize(0)": (lambda: Resize(0), "0"), "Resize((0, 5))": (lambda: Resize((0, 5)), r"\(0, 5\)"),
    "Resize(2.5)": (lambda: Resize(2.5), "2.5"),
    "MultiScaleCrop(4, max_distort=-1)": (lambda: MultiScaleCrop(4, max_distort=-1), "-1"),
    "MultiScaleCrop(4, max_distort=0.5)": (lambda: MultiScaleCrop(4, max_distort=0.5), "0.5"),
    "RandomCrop(2.5)": (lambda: RandomCrop(2.5), "2.5"),
    "CenterCrop((3, 0))": (lambda: CenterCrop((3, 0)), r"\(3, 0\)"),
}


@pytest.mark.parametrize("call", BAD_ARGUMENTS)
def test_transform_arguments_are_checked_when_built_quoting_the_value(call):
    make, bad = BAD_ARGUMENTS[call]
    with pytest.raises(ConfigError, match=f"got {bad}$"):
        make()
