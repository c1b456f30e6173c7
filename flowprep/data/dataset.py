"""PyTorch datasets: TSN-sampled flow stacks, and RGB frames aligned with them, from output trees.

Trees are read through flowprep.store (directories and zip packs alike); flowprep trees are described by their
meta.json, other tools' trees by the naming options. JPEGs decode with OpenCV (libjpeg-turbo), one decode per
distinct frame of an item; zip packs are opened lazily and cached per process, so DataLoader workers never
share a file handle.
"""
from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from ..annotations import Annotation, VideoOutput, build_annotations, describe_output, find_outputs, read_annotations
from ..config import StoreConfig
from ..errors import ConfigError, OutputError
from ..quantize import DEFAULT_BOUND
from ..store import Naming, OutputReader, open_output, read_flow_pair
from .sampling import check_sampling, stack_indices
from .transforms import Dequantize, apply_transform

OUTPUTS = ("pixels", "unit", "uint8")
COUNT_MISMATCH = ("error", "tree")
RGB_ANCHORS = ("centre", "start")
OPEN_READERS = 32  # outputs (zip packs) kept open per process
TSN_TEST_SEGMENTS = 25


class FlowStackDataset(Dataset):
    """Stacks of `length` consecutive flow frames per video, TSN-sampled; items are (tensor, label).

    tensor: (2L, H, W) for one segment, (segments, 2L, H, W) for more; channels x_s, y_s, x_s+1, y_s+1, ...
    `output`: 'pixels' float32 displacements (dequantized with the video's bound), 'unit' float32
    q * 2 / 255 - 1 in [-1, 1] (dequantized with bound 1: pixels / bound), 'uint8' the raw JPEG codes. `mean_subtract`
    subtracts from each x and y field its spatial mean (two-stream paper; float outputs only).

    Sampling (sampling.stack_indices): random offset per segment in 'train', centres in 'val' and 'test'
    ('test' uses `test_segments` segments, TSN's 25 by default); videos shorter than L repeat their last pair.
    With `seed` set, item i of epoch e is the same whatever the DataLoader worker count (call set_epoch each
    epoch); with seed None, randomness comes from torch's RNG, which DataLoader seeds per worker.

    `annotations`: a list file (``relative_dir num_frames label``), a sequence of Annotation, or None to take
    every video under `root` labelled by sorted class folders. Each listed count is checked against the tree:
    a mismatch raises OutputError naming the video and both counts, unless on_count_mismatch='tree' (use the
    tree's count). `layout`, `flow_template`, `img_template`, `start_index` and `bound` (pixels) describe
    trees without meta.json (denseflow: start_index=0; mmaction2's script: flow_template='{}_{:05d}.jpg');
    a video's meta.json takes precedence.

    `transform` gets the tensor (flowprep Transforms also a per-item torch.Generator).
    """

    def __init__(
        self,
        root: str | os.PathLike,
        annotations: str | os.PathLike | Sequence[Annotation] | None = None,
        length: int = 10,
        segments: int = 1,
        mode: str = "train",
        test_segments: int = TSN_TEST_SEGMENTS,
        transform: Callable[..., Any] | None = None,
        output: str = "pixels",
        mean_subtract: bool = False,
        seed: int | None = None,
        layout: str = "separate",
        flow_template: str | None = None,
        img_template: str = StoreConfig.img_template,
        start_index: int = StoreConfig.start_index,
        bound: float = DEFAULT_BOUND,
        on_count_mismatch: str = "error",
    ):
        if output not in OUTPUTS:
            raise ConfigError(f"output must be one of {', '.join(OUTPUTS)}; got {output!r}")
        if on_count_mismatch not in COUNT_MISMATCH:
            raise ConfigError(f"on_count_mismatch must be one of {', '.join(COUNT_MISMATCH)}; "
                              f"got {on_count_mismatch!r}")
        if mean_subtract and output == "uint8":
            raise ConfigError("mean_subtract needs float values: use output='pixels' or 'unit', not 'uint8'")
        check_sampling(length, segments, mode)
        check_sampling(length, test_segments, mode)
        self.root = Path(root)
        self.length = length
        self.segments = test_segments if mode == "test" else segments
        self.mode = mode
        self.transform = transform
        self.output = output
        self.mean_subtract = mean_subtract
        self.seed = seed
        self.epoch = 0
        # Validates templates, layout, start index and bound the same way extraction does.
        store = StoreConfig(bound=bound, layout=layout, flow_template=flow_template, img_template=img_template,
                            start_index=start_index)
        self.videos, self.labels = _load_videos(self.root, annotations, Naming.from_config(store), store.bound,
                                                on_count_mismatch)
        self._readers: OrderedDict[Path, OutputReader] = OrderedDict()
        self._pid = os.getpid()

    def __len__(self) -> int:
        return len(self.videos)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        video = self.videos[index]
        rng = self._item_rng(index)
        codes = self._read_flow(video, self._indices(video, rng))
        generator = torch.Generator().manual_seed(int(rng.integers(2**62)))
        return apply_transform(self.transform, self._flow_tensor(codes, video.bound), generator), self.labels[index]

    def frame_indices(self, index: int) -> np.ndarray:
        """1-based flow frame numbers item `index` reads, (segments, L); reproducible only with a seed."""
        return self._indices(self.videos[index], self._item_rng(index))

    def set_epoch(self, epoch: int) -> None:
        """Draw new train offsets and transforms for `epoch` (with a seed; set before workers start)."""
        self.epoch = epoch

    def _indices(self, video: VideoOutput, rng: np.random.Generator) -> np.ndarray:
        return stack_indices(video.flow_pairs, self.length, self.segments, self.mode, rng)

    def _item_rng(self, index: int) -> np.random.Generator:
        if self.seed is None:
            return np.random.default_rng(int(torch.randint(2**62, (1,))))
        return np.random.default_rng((self.seed, self.epoch, index))

    def _reader(self, path: Path) -> OutputReader:
        if self._pid != os.getpid():
            # Forked worker: the parent's open zip files share file offsets with it; open our own.
            self._readers, self._pid = OrderedDict(), os.getpid()
        reader = self._readers.pop(path, None)
        if reader is None:
            reader = open_output(path)
            if len(self._readers) >= OPEN_READERS:
                self._readers.popitem(last=False)[1].close()
        self._readers[path] = reader
        return reader

    def _read_flow(self, video: VideoOutput, indices: np.ndarray) -> np.ndarray:
        """uint8 codes (segments, 2L, H, W) of the 1-based flow frames `indices` (segments, L), x/y interleaved."""
        reader = self._reader(video.path)
        codes = np.empty(0, np.uint8)
        first = 0
        placed: dict[int, tuple[int, int]] = {}  # frame number -> (segment, channel) where it was first put
        for segment, numbers in enumerate(indices.tolist()):
            for channel, number in zip(range(0, 2 * len(numbers), 2), numbers):
                if number in placed:  # repeat-last and overlapping segments: decode each frame once
                    earlier_segment, earlier_channel = placed[number]
                    codes[segment, channel:channel + 2] = codes[earlier_segment, earlier_channel:earlier_channel + 2]
                    continue
                x, y = read_flow_pair(reader, video.naming, number - 1)
                if not placed:
                    codes, first = np.empty((indices.shape[0], 2 * indices.shape[1], *x.shape), np.uint8), number
                else:
                    _check_size(video, "flow", number, x.shape, first, codes.shape[2:])
                codes[segment, channel] = x
                codes[segment, channel + 1] = y
                placed[number] = segment, channel
        return codes

    def _flow_tensor(self, codes: np.ndarray, bound: float) -> torch.Tensor:
        tensor = torch.from_numpy(codes)
        if self.output != "uint8":
            # In torch rather than numpy: 1.6x faster, and threaded as torch is told (once in DataLoader workers).
            tensor = Dequantize(bound if self.output == "pixels" else 1.0)(tensor)
        if self.mean_subtract:
            tensor -= tensor.mean(dim=(-2, -1), keepdim=True)
        return _squeeze(tensor)

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_readers"], state["_pid"] = OrderedDict(), None
        return state


class TwoStreamDataset(FlowStackDataset):
    """RGB frame and flow stack of the same moment per segment, same sampling; items are (rgb, flow, label).

    rgb: (3, H, W) per segment, (segments, 3, H, W) for more; float32 in [0, 1] (uint8 0..255 with
    output='uint8'). The frame is the centre of the stack's span (start + L // 2, Feichtenhofer-style fusion)
    or its first frame with rgb_anchor='start' (TSN's RGB offset), capped at the last RGB frame. Videos need
    RGB frames (extract with --rgb). `rgb_transform` and `transform` get generators seeded alike, so equal
    pipelines (HorizontalFlip for RGB, FlowHorizontalFlip for flow) crop and flip both streams alike.
    Other arguments as FlowStackDataset.
    """

    def __init__(self, root: str | os.PathLike, annotations: str | os.PathLike | Sequence[Annotation] | None = None,
                 *args: Any, rgb_transform: Callable[..., Any] | None = None, rgb_anchor: str = "centre",
                 **kwargs: Any):
        super().__init__(root, annotations, *args, **kwargs)
        if rgb_anchor not in RGB_ANCHORS:
            raise ConfigError(f"rgb_anchor must be one of {', '.join(RGB_ANCHORS)}; got {rgb_anchor!r}")
        self.rgb_transform = rgb_transform
        self.rgb_anchor = rgb_anchor
        for video in self.videos:
            if video.rgb_frames == 0:
                raise OutputError(f"{video.path}: no RGB frames (extract with --rgb for the two-stream dataset)")

    def __getitem__(self, index: int) -> tuple[Any, Any, int]:
        video = self.videos[index]
        rng = self._item_rng(index)
        indices = self._indices(video, rng)
        flow = self._flow_tensor(self._read_flow(video, indices), video.bound)
        rgb = self._rgb_tensor(self._read_rgb(video, self.rgb_indices(video, indices)))
        seed = int(rng.integers(2**62))
        flow = apply_transform(self.transform, flow, torch.Generator().manual_seed(seed))
        rgb = apply_transform(self.rgb_transform, rgb, torch.Generator().manual_seed(seed))
        return rgb, flow, self.labels[index]

    def rgb_indices(self, video: VideoOutput, indices: np.ndarray) -> np.ndarray:
        """1-based RGB frame number per segment, (segments,), for flow frame numbers `indices` (segments, L)."""
        starts = indices[:, 0]
        return np.minimum(starts + (self.length // 2 if self.rgb_anchor == "centre" else 0), video.rgb_frames)

    def _read_rgb(self, video: VideoOutput, numbers: np.ndarray) -> np.ndarray:
        """uint8 (segments, 3, H, W) RGB frames of the 1-based frame `numbers` (segments,)."""
        reader = self._reader(video.path)
        frames = None
        first = 0
        for number in np.unique(numbers).tolist():
            frame = reader.read_image(video.naming.img(number - 1), rgb=True).transpose(2, 0, 1)
            if frames is None:
                frames, first = np.empty((len(numbers), *frame.shape), np.uint8), number
            else:
                _check_size(video, "RGB", number, frame.shape[1:], first, frames.shape[2:])
            frames[numbers == number] = frame
        return frames

    def _rgb_tensor(self, frames: np.ndarray) -> torch.Tensor:
        tensor = torch.from_numpy(frames)
        return _squeeze(tensor if self.output == "uint8" else tensor.float().div_(255.0))


def _load_videos(root: Path, annotations: str | os.PathLike | Sequence[Annotation] | None, naming: Naming,
                 bound: float, on_count_mismatch: str) -> tuple[list[VideoOutput], list[int]]:
    if annotations is None:
        outputs = find_outputs(root, naming, bound)
        entries = build_annotations(outputs, "flow")
        videos = [outputs[entry.path] for entry in entries]
    else:
        entries = read_annotations(annotations) if isinstance(annotations, (str, os.PathLike)) else list(annotations)
        videos = [describe_output(root / entry.path, naming, bound) for entry in entries]
    if not entries:
        raise ConfigError(f"no videos found under {root}" if annotations is None else f"{annotations}: empty list")
    for entry, video in zip(entries, videos):
        if video.flow_pairs == 0:
            raise OutputError(f"{video.path}: no flow frames named like {video.naming.flow_template!r}")
        if entry.num_frames != video.flow_pairs and on_count_mismatch == "error":
            source = "meta.json" if video.has_meta else "files counted"
            raise OutputError(
                f"{video.path}: the annotation list says {entry.num_frames} frames but the tree has "
                f"{video.flow_pairs} flow pairs ({source}); rewrite the list with `flowprep list` or pass "
                "on_count_mismatch='tree' to use the tree's count"
            )
    return videos, [entry.label for entry in entries]


def _check_size(video: VideoOutput, kind: str, number: int, shape: tuple[int, ...], first: int,
                expected: tuple[int, ...]) -> None:
    """OutputError unless frame `number` has the (H, W) of the video's first frame read, `first`."""
    if tuple(shape) != tuple(expected):
        raise OutputError(f"{video.path}: {kind} frame {number} is {shape[1]}x{shape[0]} pixels but frame {first} "
                          f"is {expected[1]}x{expected[0]}")


def _squeeze(tensor: torch.Tensor) -> torch.Tensor:
    """(1, C, H, W) -> (C, H, W): one segment gives the plain stack."""
    return tensor[0] if tensor.shape[0] == 1 else tensor
