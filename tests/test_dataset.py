"""FlowStackDataset and TwoStreamDataset: values, channel order, sampling, trees of other tools, errors,
DataLoader workers, and equality with a TSN-style PIL loader on a real extraction."""
from __future__ import annotations

import copy
import os
import re
import subprocess
import sys
import warnings
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from conftest import REPO, VIDEOS, run_cli, upload_tree, without_credentials
from fake_trees import rgb_code, write_foreign_video, write_video, x_code, y_code
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader

from flowprep.annotations import Annotation, read_annotations
from flowprep.data import FlowStackDataset, TwoStreamDataset
from flowprep.data.transforms import Compose, FlowHorizontalFlip, HorizontalFlip, RandomCrop, Transform
from flowprep.errors import ConfigError, OutputError
from flowprep.quantize import dequantize
from flowprep.reader_cache import OPEN_READERS
from flowprep.store import Naming

CLIP = "carphone_pristine"


@pytest.fixture(scope="session")
def carphone(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The sample clip extracted for real (DIS, with RGB) as Talking/carphone_pristine, as a directory tree and
    as a zip-pack tree, and its flow annotation list written by `flowprep list`."""
    base = tmp_path_factory.mktemp("carphone")
    videos = base / "videos" / "Talking"
    videos.mkdir(parents=True)
    (videos / f"{CLIP}.mp4").symlink_to(VIDEOS / f"{CLIP}.mp4")
    trees = {}
    for pack in ("dir", "zip"):
        trees[pack] = base / f"flow_{pack}"
        result = run_cli("extract", str(base / "videos"), str(trees[pack]), "--algo", "dis", "--rgb",
                         "--pack", pack, "--quiet")
        assert result.returncode == 0, result.stderr
    trees["videos"] = base / "videos"
    trees["list"] = base / "train.txt"
    result = run_cli("list", str(trees["dir"]), "--out", str(trees["list"]))
    assert result.returncode == 0, result.stderr
    return trees


class TSNReference:
    """What tsn-pytorch's TSNDataSet (Flow modality) reads, written plainly: PIL reads from each start, the
    frame number capped at the video's last."""

    def __init__(self, root: Path, list_file: Path, length: int):
        self.root, self.length = root, length
        self.records = [line.split() for line in list_file.read_text().splitlines()]

    def codes(self, index: int, starts: list[int]) -> np.ndarray:
        path, num_frames, _ = self.records[index]
        images = []
        for start in starts:
            p = start
            for _ in range(self.length):
                for axis in "xy":
                    images.append(np.asarray(Image.open(self.root / path / f"flow_{axis}_{p:05d}.jpg").convert("L")))
                if p < int(num_frames):
                    p += 1
        return np.stack(images).reshape(len(starts), 2 * self.length, *images[0].shape)


@pytest.mark.parametrize("pack", ["dir", "zip"])
@pytest.mark.parametrize("mode", ["train", "val", "test"])
def test_same_tensors_as_a_tsn_style_pil_loader(carphone, pack, mode):
    reference = TSNReference(carphone["dir"], carphone["list"], length=5)
    dataset = FlowStackDataset(carphone[pack], carphone["list"], length=5, segments=3, mode=mode,
                               test_segments=3, seed=11)
    flow, label = dataset[0]
    starts = dataset.frame_indices(0)[:, 0].tolist()
    if mode == "train":
        average = (119 - 5 + 1) // 3  # one random start in each of 3 spans of 38 start positions
        assert all(k * average < s <= (k + 1) * average for k, s in enumerate(starts))
    else:  # TSN's centres, by hand: tick = (119 - 5 + 1) / 3, start_k = int(tick / 2 + tick * k) + 1
        assert starts == [20, 58, 96]
    assert label == 0 and flow.shape == (3, 10, 144, 176) and flow.dtype == torch.float32
    assert torch.equal(flow, torch.from_numpy(dequantize(reference.codes(0, starts), 20.0)))


def test_uint8_stack_equals_the_jpegs_written_and_pixels_match_dequantize(carphone):
    video = carphone["dir"] / "Talking" / CLIP
    codes, _ = FlowStackDataset(carphone["dir"], length=10, mode="val", output="uint8")[0]
    assert codes.dtype == torch.uint8 and codes.shape == (20, 144, 176)
    start = int(119 / 2 - 10 / 2 + 0.5)  # val centre: int(tick / 2), tick = 110, 1-based start 56
    assert start == 55
    for j in range(10):
        for c, axis in enumerate("xy"):
            written = cv2.imread(str(video / f"flow_{axis}_{start + 1 + j:05d}.jpg"), cv2.IMREAD_GRAYSCALE)
            assert np.array_equal(codes[2 * j + c].numpy(), written)
    pixels, _ = FlowStackDataset(carphone["dir"], length=10, mode="val")[0]
    assert np.array_equal(pixels.numpy(), dequantize(codes.numpy(), 20.0))
    unit, _ = FlowStackDataset(carphone["dir"], length=10, mode="val", output="unit")[0]
    assert torch.allclose(unit, pixels / 20.0, atol=1e-6) and unit.abs().max() <= 1.0


def test_channel_order_and_sampling_on_known_values(tmp_path):
    write_video(tmp_path / "A" / "v", 30)
    flow, _ = FlowStackDataset(tmp_path, length=10, segments=3, mode="val", output="uint8")[0]
    # val with n=30, L=10, K=3 starts at 4, 11, 18 (hand-computed in test_sampling).
    for k, start in enumerate([4, 11, 18]):
        for j in range(10):
            assert set(flow[k, 2 * j].unique().tolist()) == {x_code(start + j - 1)}
            assert set(flow[k, 2 * j + 1].unique().tolist()) == {y_code(start + j - 1)}


def test_short_video_repeats_its_last_pair(tmp_path):
    write_video(tmp_path / "A" / "v", 4)
    for mode in ("train", "val", "test"):
        dataset = FlowStackDataset(tmp_path, length=10, mode=mode, test_segments=1, output="uint8", seed=0)
        flow, _ = dataset[0]
        assert dataset.frame_indices(0).tolist() == [[1, 2, 3, 4, 4, 4, 4, 4, 4, 4]]
        assert [int(flow[2 * j, 0, 0]) for j in range(10)] == [x_code(k) for k in [0, 1, 2, 3, 3, 3, 3, 3, 3, 3]]
        assert [int(flow[2 * j + 1, 0, 0]) for j in range(10)] == [y_code(k) for k in [0, 1, 2, 3] + [3] * 6]


@pytest.mark.parametrize("layout", ["separate", "xy0"])
def test_zip_packs_and_layouts_read_alike(tmp_path, layout):
    write_video(tmp_path / "dir" / "A" / "v", 12, layout=layout)
    write_video(tmp_path / "zip" / "A" / "v", 12, layout=layout, pack="zip")
    # val with n=12, L=5, K=2: tick = 8 / 2 = 4, offsets int(2 + 4k) = 2, 6: starts 3 and 7.
    a, _ = FlowStackDataset(tmp_path / "dir", length=5, segments=2, mode="val", output="uint8")[0]
    b, _ = FlowStackDataset(tmp_path / "zip", length=5, segments=2, mode="val", output="uint8")[0]
    assert torch.equal(a, b)
    expected = torch.tensor([[x_code(s + j - 1), y_code(s + j - 1)] for s in (3, 7) for j in range(5)]).view(2, 10)
    tolerance = 1 if layout == "xy0" else 0  # colour JPEG round trip
    assert (a[..., 0, 0].int() - expected).abs().max() <= tolerance


def test_trees_of_other_tools_through_naming_options(tmp_path):
    write_video(tmp_path / "ours" / "A" / "v", 8)
    write_foreign_video(tmp_path / "denseflow" / "A" / "v", 8, Naming(start_index=0))
    write_foreign_video(tmp_path / "mmaction2" / "A" / "v", 8, Naming(flow_template="{}_{:05d}.jpg"))
    ours, _ = FlowStackDataset(tmp_path / "ours", length=3, mode="val")[0]
    dense, _ = FlowStackDataset(tmp_path / "denseflow", length=3, mode="val", start_index=0)[0]
    mm, _ = FlowStackDataset(tmp_path / "mmaction2", length=3, mode="val", flow_template="{}_{:05d}.jpg")[0]
    assert torch.equal(ours, dense) and torch.equal(ours, mm)
    # A foreign tree quantized with bound 40 (Beyond Short Snippets): values follow the bound option.
    wide, _ = FlowStackDataset(tmp_path / "denseflow", length=3, mode="val", start_index=0, bound=40)[0]
    assert torch.allclose(wide, ours * 2, atol=1e-4)


def test_bound_recorded_in_meta_and_mean_subtraction(tmp_path):
    write_video(tmp_path / "A" / "v", 6, bound=40.0)
    codes, _ = FlowStackDataset(tmp_path, length=2, mode="val", output="uint8")[0]
    pixels, _ = FlowStackDataset(tmp_path, length=2, mode="val")[0]  # meta.json's bound, 40
    assert np.array_equal(pixels.numpy(), dequantize(codes.numpy(), 40.0))
    centred, _ = FlowStackDataset(tmp_path, length=2, mode="val", mean_subtract=True)[0]
    assert torch.allclose(centred, torch.zeros_like(centred), atol=1e-5)  # constant fields minus their mean
    with pytest.raises(ConfigError, match="mean_subtract"):
        FlowStackDataset(tmp_path, output="uint8", mean_subtract=True)
    with pytest.raises(ConfigError, match="'float'"):
        FlowStackDataset(tmp_path, output="float")
    with pytest.raises(ConfigError, match="stack length must be an integer >= 1, got 0"):  # before the tree is read
        FlowStackDataset(tmp_path, length=0)


def test_missing_frame_raises_naming_the_file(tmp_path):
    video = write_video(tmp_path / "A" / "v", 6)
    (video / "flow_y_00004.jpg").unlink()
    dataset = FlowStackDataset(tmp_path, length=6, mode="val")
    with pytest.raises(OutputError, match=r"v/flow_y_00004\.jpg"):
        dataset[0]


def test_corrupt_jpeg_raises_naming_the_file(tmp_path):
    video = write_video(tmp_path / "A" / "v", 6, pack="zip")
    dir_video = write_video(tmp_path / "B" / "w", 6)
    (dir_video / "flow_x_00002.jpg").write_bytes((dir_video / "flow_x_00002.jpg").read_bytes()[:200])
    dataset = FlowStackDataset(tmp_path, length=6, mode="val")
    assert dataset.videos[0].path == video
    with pytest.raises(OutputError, match=r"B/w/flow_x_00002\.jpg: not a readable JPEG"):
        dataset[1]


def test_count_mismatch_between_list_and_tree_is_reported(tmp_path):
    write_video(tmp_path / "A" / "v", 6)
    entries = [Annotation("A/v", 9, 0)]
    with pytest.raises(OutputError, match=r"A/v: the annotation list says 9 frames but the tree has 6 flow pairs"):
        FlowStackDataset(tmp_path, entries)
    dataset = FlowStackDataset(tmp_path, entries, length=10, mode="val", on_count_mismatch="tree")
    assert dataset.frame_indices(0).max() == 6
    with pytest.raises(OutputError, match="no flow output"):
        FlowStackDataset(tmp_path, [Annotation("A/gone", 6, 0)])


def test_seeded_items_and_epochs(tmp_path):
    write_video(tmp_path / "A" / "v", 40)
    dataset = FlowStackDataset(tmp_path, length=5, segments=3, seed=5)
    first = dataset.frame_indices(0)
    assert np.array_equal(first, dataset.frame_indices(0))
    epochs = set()
    for epoch in range(6):
        dataset.set_epoch(epoch)
        epochs.add(tuple(dataset.frame_indices(0)[:, 0]))
    assert len(epochs) > 1


def test_dataloader_with_two_workers_gives_the_same_items_as_none(carphone):
    # The list written for the directory tree serves the zip-pack tree too (same relative paths).
    # Six entries of the one clip: six item indices, so six different draws that the workers must not mix up.
    dataset = FlowStackDataset(carphone["zip"], read_annotations(carphone["list"]) * 6, length=5, segments=2,
                               seed=3, transform=Compose([RandomCrop(96), FlowHorizontalFlip(0.5)]))
    dataset.set_epoch(0)  # epoch 0 read twice on purpose (without it, the second read warns)
    batches = [list(DataLoader(dataset, batch_size=3, num_workers=workers)) for workers in (0, 2)]
    for (flow0, label0), (flow2, label2) in zip(*batches):
        assert flow0.shape == (3, 2, 10, 96, 96)
        assert torch.equal(flow0, flow2) and torch.equal(label0, label2)
    assert not torch.equal(batches[0][0][0][0], batches[0][0][0][1])


def test_two_stream_items_align_rgb_with_the_flow_stack(tmp_path):
    write_video(tmp_path / "A" / "v", 20, rgb_frames=21)
    dataset = TwoStreamDataset(tmp_path, length=5, segments=2, mode="val")
    rgb, flow, label = dataset[0]
    starts = dataset.frame_indices(0)[:, 0].tolist()
    assert starts == [5, 13]  # tick = 16 / 2 = 8: int(4 + 8k) + 1
    assert rgb.shape == (2, 3, 8, 12) and rgb.dtype == torch.float32 and flow.shape == (2, 10, 8, 12)
    for k, start in enumerate(starts):
        centre = start + 5 // 2  # flow frames start..start+4 span RGB frames start..start+5
        expected = torch.tensor(rgb_code(centre - 1), dtype=torch.float32) / 255
        assert (rgb[k, :, 0, 0] - expected).abs().max() <= 1 / 255 + 1e-6
        assert int(flow[k, 0, 0, 0].round()) == int(dequantize(np.uint8(x_code(start - 1))).round())
    start_rgb, _, _ = TwoStreamDataset(tmp_path, length=5, segments=2, mode="val", rgb_anchor="start",
                                       output="uint8")[0]
    assert start_rgb.dtype == torch.uint8
    assert [int(start_rgb[k, 0, 0, 0]) for k in range(2)] == pytest.approx([rgb_code(4)[0], rgb_code(12)[0]], abs=1)


def test_two_stream_transforms_are_seeded_alike_and_rgb_is_required(tmp_path):
    class Draws(Transform):
        def __init__(self):
            self.draws = []

        def __call__(self, tensor, generator=None):
            self.draws.append(int(torch.randint(10**9, (1,), generator=generator)))
            return tensor

    write_video(tmp_path / "A" / "v", 20, rgb_frames=21)
    flow_draws, rgb_draws = Draws(), Draws()
    dataset = TwoStreamDataset(tmp_path, transform=flow_draws, rgb_transform=rgb_draws, seed=1)
    dataset.set_epoch(0)  # reading epoch 0's item 0 again is meant: no warning
    for _ in range(3):
        dataset[0]
    assert flow_draws.draws == rgb_draws.draws and len(set(flow_draws.draws)) == 1
    write_video(tmp_path / "B" / "no_rgb", 5)
    with pytest.raises(OutputError, match="no_rgb: no RGB frames"):
        TwoStreamDataset(tmp_path)


def test_two_stream_real_clip_crops_and_flips_both_streams_alike(carphone):
    plain = TwoStreamDataset(carphone["zip"], length=4, segments=2, mode="val", seed=2)
    augmented = TwoStreamDataset(carphone["zip"], length=4, segments=2, mode="val", seed=2,
                                 transform=Compose([RandomCrop(64), FlowHorizontalFlip(1.0)]),
                                 rgb_transform=Compose([RandomCrop(64), HorizontalFlip(1.0)]))
    rgb, flow, _ = plain[0]
    rgb_aug, flow_aug, _ = augmented[0]
    # Locate the RGB crop in the full frame, then check the flow was cut from the same window.
    windows = rgb.unfold(-2, 64, 1).unfold(-2, 64, 1)  # (2, 3, H-63, W-63, 64, 64)
    match = (windows == rgb_aug.flip(-1)[:, :, None, None]).flatten(-2).all(-1).all(1).all(0).nonzero()
    assert len(match) >= 1
    top, left = match[0].tolist()
    expected = flow[..., top:top + 64, left:left + 64].flip(-1)
    expected[:, 0::2] *= -1
    assert torch.equal(flow_aug, expected)


def test_importing_flowprep_data_without_torch_names_the_extra():
    code = "import sys; sys.modules['torch'] = None\nimport flowprep.data"
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 1
    assert "MissingDependencyError" in result.stderr and "pip install 'flowprep[torch]'" in result.stderr


@pytest.mark.slow
def test_two_stream_example_trains_end_to_end(tmp_path):
    result = subprocess.run(
        [sys.executable, str(REPO / "examples" / "train_two_stream.py"), "--video", str(VIDEOS / f"{CLIP}.mp4"),
         "--work", str(tmp_path), "--steps", "3"],
        cwd=REPO, capture_output=True, text=True, timeout=300,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "train.txt").read_text() == "fast/carphone_pristine 29 0\nnormal/carphone_pristine 119 1\n"
    steps = [line for line in result.stdout.splitlines() if line.startswith("step")]
    assert len(steps) == 3 and "flow (4, 3, 10, 112, 112)" in steps[0]


# --- Samplers and stackings through the datasets ---

SAMPLINGS = [("tsn", 3), ("mmaction2", 2), ("fusion", None), ("sequence", 3), ("dense", 5)]


@pytest.mark.parametrize("sampling, segments", SAMPLINGS)
def test_two_stream_rgb_frames_are_those_of_the_same_moments_for_every_sampler(tmp_path, sampling, segments):
    write_video(tmp_path / "A" / "v", 40, rgb_frames=41, fps=15.0)
    dataset = TwoStreamDataset(tmp_path, length=4, segments=segments, sampling=sampling, seed=4, output="uint8")
    rgb, flow, _ = dataset[0]
    indices = dataset.frame_indices(0)
    assert rgb.shape == (len(indices), 3, 8, 12) and flow.shape == (len(indices), 8, 8, 12)
    for k, row in enumerate(indices.tolist()):
        # The RGB frame at the centre of the stack's span: frame s + L // 2 (t itself for fusion moments).
        assert [int(v) for v in rgb[k, :, 0, 0]] == pytest.approx(rgb_code(row[0] + 2 - 1), abs=1)
        assert [int(flow[k, 2 * j, 0, 0]) for j in range(4)] == [x_code(number - 1) for number in row]


@pytest.mark.parametrize("sampling, segments", SAMPLINGS)
def test_every_sampler_gives_the_same_items_with_0_and_2_workers(tmp_path, sampling, segments):
    for name in "abcd":
        write_video(tmp_path / "A" / name, 40, fps=15.0)
    dataset = FlowStackDataset(tmp_path, length=4, segments=segments, sampling=sampling, seed=8,
                               transform=Compose([RandomCrop(6), FlowHorizontalFlip(0.5)]))
    dataset.set_epoch(0)  # epoch 0 read twice on purpose
    batches = [list(DataLoader(dataset, batch_size=2, num_workers=workers)) for workers in (0, 2)]
    assert len(batches[0]) == len(batches[1]) == 2  # zip below must compare every batch
    for (flow0, label0), (flow2, label2) in zip(*batches):
        assert torch.equal(flow0, flow2) and torch.equal(label0, label2)
    draws = {tuple(dataset.frame_indices(i).ravel()) for i in range(4)}
    assert len(draws) > 1  # the items are random draws, not one item four times


def opencv_threads(stack: torch.Tensor) -> torch.Tensor:
    return torch.tensor([cv2.getNumThreads(), torch.get_num_threads()])


@pytest.mark.parametrize("start", ["fork", "spawn", "forkserver", "fork a deep copy"])
def test_dataloader_workers_read_with_one_opencv_thread_as_with_one_torch_thread(tmp_path, start):
    # The trajectory's remaps run on OpenCV's threads: N workers each using every core would oversubscribe.
    # Spawn and forkserver workers are told to use one; forked ones must not be, even of a dataset copied in the
    # parent (pickled): setNumThreads hangs on the pool the parent started, here by the remaps of dataset[0].
    write_video(tmp_path / "A" / "v", 12)
    dataset = FlowStackDataset(tmp_path, length=4, stacking="trajectory", transform=opencv_threads)
    main = cv2.getNumThreads()
    cv2.setNumThreads(2)  # what the workers inherit, whatever this machine's core count
    try:
        assert dataset[0][0].tolist() == [2, torch.get_num_threads()]
        if start == "fork a deep copy":
            dataset = copy.deepcopy(dataset)
        context = "fork" if start.startswith("fork ") else start
        (threads, _), = DataLoader(dataset, num_workers=1, multiprocessing_context=context, timeout=60)
        assert threads.tolist() == [[2 if context == "fork" else 1, 1]]
        assert dataset[0][0].tolist() == [2, torch.get_num_threads()]  # the main process keeps its setting
    finally:
        cv2.setNumThreads(main)


def test_explicit_segments_are_read_in_test_mode_and_25_is_the_default(tmp_path):
    write_video(tmp_path / "A" / "v", 30)
    one, _ = FlowStackDataset(tmp_path, length=5, segments=1, mode="test")[0]
    assert one.shape == (10, 8, 12)  # today's `segments=1, mode="test"` read 25 segments
    default = FlowStackDataset(tmp_path, length=5, mode="test")
    assert default.segments == 25 and default[0][0].shape == (25, 10, 8, 12)
    assert FlowStackDataset(tmp_path, length=5, mode="train").segments == 1
    with pytest.raises(ConfigError, match="test_segments=25 would never be"):
        FlowStackDataset(tmp_path, segments=3, test_segments=25)


def test_sequence_sampler_reads_the_fps_recorded_in_meta_json(tmp_path):
    write_video(tmp_path / "at15" / "A" / "v", 40, fps=15.0)
    write_video(tmp_path / "at10" / "A" / "v", 40, fps=10.0)
    for root, step in (("at15", 15), ("at10", 10)):
        dataset = FlowStackDataset(tmp_path / root, length=1, segments=3, sampling="sequence", mode="test")
        assert dataset.frame_indices(0)[:, 0].tolist() == [1, 1 + step, 1 + 2 * step]
    write_video(tmp_path / "nofps" / "A" / "v", 40)
    with pytest.raises(OutputError, match=r"nofps/A/v: the SequenceSampler.* needs the sampled fps"):
        FlowStackDataset(tmp_path / "nofps", length=1, sampling="sequence")
    # Trees without meta.json say their fps through the dataset (the denseflow tree here has no meta).
    write_foreign_video(tmp_path / "foreign" / "A" / "v", 40, Naming(start_index=0))
    dataset = FlowStackDataset(tmp_path / "foreign", length=1, segments=2, sampling="sequence", mode="test",
                               start_index=0, fps=5.0)
    assert dataset.frame_indices(0)[:, 0].tolist() == [1, 6]


@pytest.mark.slow
def test_every_paper_configuration_of_the_docs_loads_from_a_real_tree(carphone, tmp_path):
    """docs/dataset.md's table, as a new user would run it, on the sample clip extracted for real."""
    from flowprep.data import FusionSampler
    from flowprep.data.transforms import MultiScaleCrop
    from flowprep.nn import adapt_first_conv

    tree = tmp_path / "flow"  # backward flow too, for the bidirectional stacking
    result = run_cli("extract", str(carphone["videos"]), str(tree), "--algo", "dis", "--rgb", "--direction", "both",
                     "--quiet")
    assert result.returncode == 0, result.stderr
    crop = Compose([MultiScaleCrop(112), FlowHorizontalFlip(0.5)])
    configurations = {  # name -> (dataset, expected stack shape of item 0)
        "two-stream L=1": (FlowStackDataset(tree, length=1, mean_subtract=True, seed=0), (2, 144, 176)),
        "two-stream L=10": (FlowStackDataset(tree, length=10, mean_subtract=True, transform=crop, seed=0),
                            (20, 112, 112)),
        "two-stream trajectory": (FlowStackDataset(tree, length=10, stacking="trajectory", mean_subtract=True,
                                                   seed=0), (20, 144, 176)),
        "two-stream bidirectional": (FlowStackDataset(tree, length=10, stacking="bidirectional",
                                                      mean_subtract=True, seed=0), (20, 144, 176)),
        "TSN flow": (FlowStackDataset(tree, length=5, segments=3, seed=0, transform=crop), (3, 10, 112, 112)),
        "TSN flow test": (FlowStackDataset(tree, length=5, mode="test"), (25, 10, 144, 176)),
        "TSN RGB": (FlowStackDataset(tree, length=1, segments=3, stacking="rgb", seed=0), (3, 3, 144, 176)),
        "TSN RGB difference": (FlowStackDataset(tree, length=5, segments=3, stacking="rgbdiff", seed=0),
                               (3, 15, 144, 176)),
        "mmaction2 TSN flow test": (FlowStackDataset(tree, length=5, segments=25, sampling="mmaction2",
                                                     mode="test"), (25, 10, 144, 176)),
        "fusion": (TwoStreamDataset(tree, length=10, sampling=FusionSampler(tau=(5, 15)), seed=0),
                   (5, 20, 144, 176)),
    }
    # Beyond Short Snippets' own extraction: 15 fps, bound 40, x/y/0 colour images; 1 fps sampling from it.
    snippets = tmp_path / "flow15"
    result = run_cli("extract", str(carphone["videos"]), str(snippets), "--algo", "dis", "--fps", "15", "--bound",
                     "40", "--layout", "xy0", "--rgb", "--quiet")
    assert result.returncode == 0, result.stderr
    sequence = TwoStreamDataset(snippets, length=1, segments=30, sampling="sequence", mode="test")
    assert sequence.videos[0].fps == 15.0 and sequence.videos[0].naming.layout == "xy0"
    assert sequence.frame_indices(0)[:4, 0].tolist() == [1, 16, 31, 46]  # one a second from 15 fps
    configurations["Beyond Short Snippets"] = (sequence, (30, 2, 144, 176))
    stacks = {}
    for name, (dataset, shape) in configurations.items():
        stacks[name] = dataset[0][-2]
        assert tuple(stacks[name].shape) == shape, name
        assert torch.isfinite(stacks[name].float()).all(), name
    # Cross-modality init feeds the stacks to an RGB network's first conv.
    net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.AdaptiveAvgPool2d(1))
    adapt_first_conv(net, 10)
    assert net(stacks["TSN flow"]).shape == (3, 8, 1, 1)


# --- Mean subtraction, short two-stream videos, explicit arguments, epochs and index errors (issue 19) ---

def varying_codes(pairs: int, seed: int = 0) -> np.ndarray:
    """(pairs, 8, 12, 2) codes that vary by row and by column, with a mean of their own for every field."""
    rng = np.random.default_rng(seed)
    rows, columns = np.mgrid[0:8, 0:12]
    fields = [40 + 8 * k + 5 * rows + 3 * columns + rng.integers(0, 20, (8, 12)) for k in range(2 * pairs)]
    return np.stack(fields).reshape(pairs, 2, 8, 12).transpose(0, 2, 3, 1).astype(np.uint8)


def test_mean_subtraction_is_per_field_over_the_whole_frame_and_per_segment(tmp_path):
    write_video(tmp_path / "A" / "v", 20, codes=varying_codes(20))
    pixels, _ = FlowStackDataset(tmp_path, length=3, segments=3, mode="val")[0]
    centred, _ = FlowStackDataset(tmp_path, length=3, segments=3, mode="val", mean_subtract=True)[0]
    assert pixels.shape == (3, 6, 8, 12)
    means = pixels.numpy().astype(np.float64).mean(axis=(-2, -1), keepdims=True)  # (segment, channel)
    assert len(np.unique(means.round(3))) == 18  # every field of every segment has its own mean
    assert np.allclose(centred.numpy(), pixels.numpy() - means, atol=1e-4)


def test_two_stream_rgb_frame_of_a_short_video_is_its_last(tmp_path):
    write_video(tmp_path / "A" / "v", 4, rgb_frames=5)  # shorter than L = 10: the centre 1 + 5 is past frame 5
    for mode in ("train", "val", "test"):
        dataset = TwoStreamDataset(tmp_path, length=10, segments=1, mode=mode, output="uint8", seed=0)
        rgb, flow, _ = dataset[0]
        assert dataset.rgb_indices(dataset.videos[0], dataset.frame_indices(0)).tolist() == [5]
        assert [int(v) for v in rgb[:, 0, 0]] == pytest.approx(rgb_code(4), abs=1)


@pytest.mark.parametrize("name, value, recorded", [
    ("bound", 5.0, 40.0), ("fps", 10.0, 15.0), ("flow_template", "{}_{:05d}.jpg", "flow_{}_{:05d}.jpg"),
    ("start_index", 0, 1), ("img_template", "frame_{:05d}.jpg", "img_{:05d}.jpg"), ("layout", "xy0", "separate"),
    ("backward_template", "back_{}_{:05d}.jpg", "backflow_{}_{:05d}.jpg"),
])
@pytest.mark.parametrize("listed", [False, True])
def test_an_explicit_argument_that_disagrees_with_meta_json_is_an_error_naming_both(tmp_path, name, value, recorded,
                                                                                     listed):
    video = write_video(tmp_path / "A" / "v", 40, bound=40.0, fps=15.0)
    annotations = [Annotation("A/v", 40, 0)] if listed else None
    with pytest.raises(ConfigError, match=re.escape(f"{video}: its meta.json records {name}={recorded!r}, but "
                                                    f"{name}={value!r} was given")):
        FlowStackDataset(tmp_path, annotations, length=1, segments=3, sampling="sequence", mode="test",
                         **{name: value})
    # The recorded value itself may be passed.
    dataset = FlowStackDataset(tmp_path, annotations, length=1, segments=3, sampling="sequence", mode="test",
                               **{name: recorded})
    assert dataset.frame_indices(0)[:, 0].tolist() == [1, 16, 31]


def test_explicit_bound_and_fps_describe_trees_without_meta_json(tmp_path):
    write_foreign_video(tmp_path / "A" / "v", 40, Naming())
    wide, _ = FlowStackDataset(tmp_path, length=1, mode="val", bound=40)[0]
    narrow, _ = FlowStackDataset(tmp_path, length=1, mode="val")[0]
    assert torch.allclose(wide, narrow * 2, atol=1e-4)
    sequence = FlowStackDataset(tmp_path, length=1, segments=3, sampling="sequence", mode="test", fps=10.0)
    assert sequence.frame_indices(0)[:, 0].tolist() == [1, 11, 21]


def first_fields(loader: DataLoader) -> list[int]:
    """The x code of each item's first field, in loader order: which field each item's draw started at."""
    return [int(code) for flow, _ in loader for code in flow[:, 0, 0, 0]]


@pytest.mark.parametrize("start", ["fork", "spawn", "fork a deep copy"])
def test_set_epoch_reaches_persistent_workers(tmp_path, start):
    write_video(tmp_path / "A" / "v", 40)
    dataset = FlowStackDataset(tmp_path, [Annotation("A/v", 40, 0)] * 8, length=1, seed=3, output="uint8")
    if start == "fork a deep copy":
        dataset = copy.deepcopy(dataset)
    expected = []
    for epoch in range(3):
        dataset.set_epoch(epoch)
        expected.append([int(dataset[i][0][0, 0, 0]) for i in range(8)])
    assert len({tuple(e) for e in expected}) == 3
    loader = DataLoader(dataset, batch_size=4, num_workers=2, persistent_workers=True,
                        multiprocessing_context=start.split()[0], timeout=60)
    for epoch in range(3):
        dataset.set_epoch(epoch)
        assert first_fields(loader) == expected[epoch], epoch


def test_reading_seeded_train_items_again_without_set_epoch_warns_once(tmp_path):
    write_video(tmp_path / "A" / "v", 40)
    dataset = FlowStackDataset(tmp_path, [Annotation("A/v", 40, 0)] * 4, length=1, seed=3)
    loader = DataLoader(dataset, batch_size=2, num_workers=0)
    first_fields(loader)
    with pytest.warns(UserWarning, match=r"item \d was read again before set_epoch was ever called.*"
                                         r"call dataset.set_epoch\(epoch\) before each epoch"):
        first_fields(loader)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        first_fields(loader)  # once
        said = FlowStackDataset(tmp_path, length=1, seed=3)
        said.set_epoch(0)  # an epoch said: reading it again is meant
        said[0], said[0]
        for mode in ("val", "test"):  # no random draws to repeat
            evaluation = FlowStackDataset(tmp_path, length=1, seed=3, mode=mode)
            evaluation[0], evaluation[0]
        unseeded = FlowStackDataset(tmp_path, length=1)
        unseeded[0], unseeded[0]


def test_index_seed_and_epoch_errors_quote_the_value(tmp_path):
    write_video(tmp_path / "A" / "v", 40)
    write_video(tmp_path / "A" / "w", 40)
    dataset = FlowStackDataset(tmp_path, length=1, seed=3, output="uint8")
    dataset.set_epoch(0)  # items are read twice on purpose
    assert torch.equal(dataset[-1][0], dataset[1][0])  # counted from the end, as for a list
    assert np.array_equal(dataset.frame_indices(-2), dataset.frame_indices(0))
    with pytest.raises(IndexError, match="item 2 is out of range for 2 videos"):
        dataset[2]
    with pytest.raises(IndexError, match="item -3 is out of range for 2 videos"):
        dataset.frame_indices(-3)
    with pytest.raises(TypeError, match="indices must be integers, got 1.5"):
        dataset[1.5]
    for seed in (-3, 2.5, "7"):
        with pytest.raises(ConfigError, match=f"seed must be None or an integer >= 0, got {seed!r}"):
            FlowStackDataset(tmp_path, seed=seed)
    with pytest.raises(ConfigError, match="epoch must be an integer >= 0, got -1"):
        dataset.set_epoch(-1)
    with pytest.raises(ConfigError, match="stack length must be an integer >= 1, got 2.5"):
        FlowStackDataset(tmp_path, length=2.5)


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="counts open files in /proc/self/fd")
def test_open_packs_are_bounded_per_process_and_reopened(tmp_path):
    """reader_cache.ReaderCache as the dataset uses it: the last OPEN_READERS packs read stay open, and a pack
    closed to make room reads again."""
    for v in range(OPEN_READERS + 2):
        write_video(tmp_path / "A" / f"v{v:02d}", 3, pack="zip")
    dataset = FlowStackDataset(tmp_path, length=1, mode="val", output="uint8")
    first = dataset[0][0]

    def open_packs() -> int:
        names = (os.path.join("/proc/self/fd", fd) for fd in os.listdir("/proc/self/fd"))
        return sum(1 for name in names if os.path.realpath(name).startswith(str(tmp_path / "A") + os.sep))

    for v in range(len(dataset)):
        assert torch.equal(dataset[v][0], first), v  # fake_trees' videos hold the same constant fields
        assert open_packs() == min(v + 1, OPEN_READERS), v
    assert torch.equal(dataset[0][0], first)  # closed, then reopened
    assert open_packs() == OPEN_READERS


# --- Reading from an object store: the real S3 API server of conftest's `bucket` (moto, on 127.0.0.1) ---


def object_store_datasets(root: str | Path, list_file: Path) -> list[FlowStackDataset]:
    """Datasets of several samplers, stackings and modes over one tree, with and without an annotation list."""
    entries = read_annotations(list_file) * 4  # four items of the one clip, so that two workers share them
    crop = Compose([RandomCrop(96), FlowHorizontalFlip(0.5)])
    return [FlowStackDataset(root, entries, length=5, segments=3, seed=3, transform=crop),
            FlowStackDataset(root, length=5, segments=2, mode="test"),
            FlowStackDataset(root, entries, length=3, segments=2, sampling="mmaction2", seed=5, output="uint8",
                             on_count_mismatch="tree", stacking="rgb"),
            TwoStreamDataset(root, entries, length=4, segments=2, seed=2, transform=crop,
                             rgb_transform=Compose([RandomCrop(96), HorizontalFlip(0.5)]))]


def items(dataset: FlowStackDataset) -> list[tuple]:
    dataset.set_epoch(0)  # epoch 0 is read more than once on purpose
    return [dataset[i] for i in range(len(dataset))]


def same_items(got: list[tuple], expected: list[tuple]) -> bool:
    return len(got) == len(expected) and all(
        len(a) == len(b) and all(torch.equal(torch.as_tensor(x), torch.as_tensor(y)) for x, y in zip(a, b))
        for a, b in zip(got, expected))


@pytest.mark.parametrize("pack", ["dir", "zip"])
def test_a_bucket_reads_item_for_item_as_the_local_tree_in_the_parent_and_forked_workers(carphone, bucket, pack):
    fs, name = bucket
    url = upload_tree(fs, carphone[pack], f"{name}/flow")
    for local, remote in zip(object_store_datasets(carphone[pack], carphone["list"]),
                             object_store_datasets(url, carphone["list"])):
        assert remote.root == url and all(str(v.path).startswith(url + "/Talking/") for v in remote.videos)
        expected = items(local)
        assert same_items(items(remote), expected), remote  # the parent has the packs open: workers inherit them
        loader = DataLoader(remote, batch_size=None, num_workers=2, multiprocessing_context="fork", timeout=60)
        assert same_items(list(loader), expected), remote


def test_spawned_workers_read_the_bucket_with_their_own_clients(carphone, bucket):
    fs, name = bucket
    url = upload_tree(fs, carphone["zip"], f"{name}/flow")
    dataset = FlowStackDataset(url, read_annotations(carphone["list"]) * 4, length=5, segments=2, seed=4)
    expected = items(FlowStackDataset(carphone["zip"], read_annotations(carphone["list"]) * 4, length=5,
                                      segments=2, seed=4))
    assert same_items(items(dataset), expected)
    loader = DataLoader(dataset, batch_size=None, num_workers=2, multiprocessing_context="spawn", timeout=60)
    assert same_items(list(loader), expected)


def test_storage_options_are_the_only_credentials_and_reach_spawned_workers(carphone, bucket, s3_endpoint,
                                                                            monkeypatch, tmp_path):
    fsspec = pytest.importorskip("fsspec")
    fs, name = bucket
    url = upload_tree(fs, carphone["zip"], f"{name}/flow")
    without_credentials(monkeypatch, tmp_path)
    monkeypatch.setitem(fsspec.config.conf, "s3", {})  # where the dataset puts them in this process, undone after
    options = {"key": "testing", "secret": "testing", "endpoint_url": s3_endpoint,
               "client_kwargs": {"region_name": "us-east-1"}}
    entries = read_annotations(carphone["list"]) * 2
    expected = items(FlowStackDataset(carphone["zip"], entries, length=2, segments=2, seed=1))
    dataset = FlowStackDataset(url, entries, length=2, segments=2, seed=1, storage_options=options)
    assert same_items(items(dataset), expected)
    # A spawned worker starts with fsspec's config of a fresh process (no options): the dataset carries them.
    loader = DataLoader(dataset, batch_size=None, num_workers=2, multiprocessing_context="spawn", timeout=60)
    assert same_items(list(loader), expected)
    with pytest.raises(ConfigError, match="storage_options are for a root on an object store"):
        FlowStackDataset(carphone["zip"], storage_options=options)


def test_a_truncated_or_corrupt_pack_on_the_bucket_is_an_output_error_naming_its_url(carphone, bucket):
    fs, name = bucket
    entries = read_annotations(carphone["list"])
    field = int(FlowStackDataset(carphone["zip"], entries, length=1, mode="val").frame_indices(0)[0, 0])
    member = f"flow_x_{field:05d}.jpg"
    pack = (carphone["zip"] / "Talking" / f"{CLIP}.zip").read_bytes()
    with zipfile.ZipFile(carphone["zip"] / "Talking" / f"{CLIP}.zip") as local:
        info = local.getinfo(member)
    corrupt = bytearray(pack)
    corrupt[info.header_offset + 30 + len(member) + 100] ^= 0xFF  # inside the member's JPEG data
    fs.pipe_file(f"{name}/flow/Talking/{CLIP}.zip", bytes(corrupt))
    fs.pipe_file(f"{name}/cut/Talking/{CLIP}.zip", pack[: len(pack) // 2])
    fs.invalidate_cache()
    dataset = FlowStackDataset(f"s3://{name}/flow", entries, length=1, mode="val")
    with pytest.raises(OutputError, match=re.escape(f"s3://{name}/flow/Talking/{CLIP}.zip/{member}") + ".*CRC"):
        dataset[0]
    with pytest.raises(OutputError, match=re.escape(f"s3://{name}/cut/Talking/{CLIP}.zip") + ": not a readable"):
        FlowStackDataset(f"s3://{name}/cut", entries)
    with pytest.raises(OutputError, match=re.escape(f"s3://{name}/none/Talking/{CLIP}") + ": no flow output"):
        FlowStackDataset(f"s3://{name}/none", entries)
