"""PyTorch datasets: items composed of a sampler (which moments), a stacking (what is read at each) and
transforms, from output trees.

Trees are read through flowprep.store (directories and zip packs alike, on a disk or on an object store);
flowprep trees are described by their meta.json, other tools' trees by the naming options. JPEGs decode with
OpenCV (libjpeg-turbo), one decode per distinct frame of an item; outputs are opened lazily and cached per
process (reader_cache), so DataLoader workers never share a file handle, nor an object store's client.
"""
from __future__ import annotations

import operator
import os
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset, get_worker_info

from ..annotations import Annotation, VideoOutput, build_annotations, describe_output, find_outputs, read_annotations
from ..config import StoreConfig
from ..errors import ConfigError, OutputError
from ..reader_cache import ReaderCache
from ..store import Naming, OutputReader, StorageOptions, as_location, is_url, open_output
from .sampling import Sampler, check_length, check_mode, is_integer, make_sampler
from .stacking import OUTPUTS, RGBStacking, Stacking, make_stacking
from .transforms import apply_transform

COUNT_MISMATCH = ("error", "tree")
RGB_ANCHORS = ("centre", "start")


class FlowStackDataset(Dataset):
    """Items (tensor, label): per video, the moments a sampler picks, read by a stacking, then `transform`.

    `sampling`: a Sampler or a shortcut, "tsn" (default), "mmaction2", "fusion", "sequence", "dense"
    (flowprep.data.sampling); `segments`, when given, is its count of moments (TSN segments, mmaction2 clips,
    fusion moments, sequence length, at most that many dense clips) in every mode. TSN without `segments`
    uses 1 segment in train and val and `test_segments` (TSN's 25 by default) in test.
    `stacking`: a Stacking or "flow" (default), "trajectory", "bidirectional", "rgb", "rgbdiff"
    (flowprep.data.stacking), each reading `length` L units per moment.

    tensor: (C, H, W) when the sampler always gives one moment, else (K, C, H, W); for flow stackings C = 2L,
    channels x_s, y_s, x_s+1, y_s+1, ... `output`: 'pixels' float32 displacements (dequantized with the video's
    bound), 'unit' float32 pixels / bound in [-1, 1], 'uint8' the raw JPEG codes (RGB stackings: 'uint8' or
    float in [0, 1]). `mean_subtract` subtracts from each x and y field its spatial mean (two-stream paper;
    flow stackings, float outputs).

    With `seed` set, item i of epoch e is the same whatever the DataLoader worker count; call set_epoch(e)
    before each epoch's iterator (it reaches running workers, persistent ones too); a seeded train dataset
    whose items are read again before set_epoch was ever called warns once. With seed None, randomness comes
    from torch's RNG, which DataLoader seeds per worker.

    `root`: a folder, or an object store's URL (``s3://bucket/flow``: packs are read by range requests, the
    central directory once per video and process, then one request per file; folders of objects one request per
    file), reached with the standard settings of its fsspec package (AWS_* variables, ``~/.aws``, fsspec's
    config) and `storage_options` (fsspec options such as endpoint_url, key, secret), which become this
    process's and every DataLoader worker's defaults for the root's protocol. `annotations`: a list file
    (``relative_dir num_frames label``), a sequence of Annotation, or None to take every video under `root` (on
    an object store, from one listing) labelled by sorted class folders. Each listed count is checked against the
    tree (flow pairs; RGB frames for RGB stackings): a mismatch raises OutputError naming the video and both
    counts, unless on_count_mismatch='tree' (use the tree's count).
    `layout`, `flow_template`, `backward_template`, `img_template`, `start_index`, `bound` (pixels) and `fps`
    (sampled frames per second, for the sequence sampler) describe trees without meta.json (denseflow:
    start_index=0; mmaction2's script: flow_template='{}_{:05d}.jpg'); a video with meta.json is read as it
    records, and an explicit argument that disagrees with what it records is a ConfigError naming the video and
    both values.

    `transform` gets the tensor (flowprep Transforms also a per-item torch.Generator).
    """

    def __init__(
        self,
        root: str | os.PathLike,
        annotations: str | os.PathLike | Sequence[Annotation] | None = None,
        length: int = 10,
        segments: int | None = None,
        mode: str = "train",
        test_segments: int | None = None,
        transform: Callable[..., Any] | None = None,
        output: str = "pixels",
        mean_subtract: bool = False,
        seed: int | None = None,
        layout: str | None = None,
        flow_template: str | None = None,
        img_template: str | None = None,
        start_index: int | None = None,
        bound: float | None = None,
        on_count_mismatch: str = "error",
        sampling: str | Sampler = "tsn",
        stacking: str | Stacking = "flow",
        backward_template: str | None = None,
        fps: float | None = None,
        storage_options: Mapping[str, Any] | None = None,
    ):
        if output not in OUTPUTS:
            raise ConfigError(f"output must be one of {', '.join(OUTPUTS)}; got {output!r}")
        if on_count_mismatch not in COUNT_MISMATCH:
            raise ConfigError(f"on_count_mismatch must be one of {', '.join(COUNT_MISMATCH)}; "
                              f"got {on_count_mismatch!r}")
        check_length(length)
        check_mode(mode)
        if seed is not None and not is_integer(seed, 0):
            raise ConfigError(f"seed must be None or an integer >= 0, got {seed!r}")
        self.sampler = make_sampler(sampling, segments, test_segments)
        self.stacking = make_stacking(stacking)
        self.stacking.check_output(output, length)
        if mean_subtract and (output == "uint8" or not self.stacking.is_flow):
            raise ConfigError("mean_subtract needs float flow values: use output='pixels' or 'unit', not 'uint8', "
                              f"with a flow stacking (got {self.stacking!r})")
        if storage_options and not is_url(root):
            raise ConfigError(f"storage_options are for a root on an object store (a URL); root {str(root)!r} is a "
                              "path")
        # fsspec's defaults for the root's protocol in this process, and again in each process the dataset reaches
        # (a spawned worker starts without them); never in a message or repr.
        self._storage = StorageOptions.of(storage_options or {}, [root])
        self._storage.apply()
        # A URL stays a string; one of an unknown protocol or a missing package is a ConfigError now.
        self.root: Path | str = as_location(root)
        self.length = length
        self.mode = mode
        self.transform = transform
        self.output = output
        self.mean_subtract = mean_subtract
        self.seed = seed
        self.fps = fps
        # The arguments given (None: not given), StoreConfig's field names: they describe trees without meta.json.
        given = {name: value for name, value in (
            ("layout", layout), ("flow_template", flow_template), ("img_template", img_template),
            ("start_index", start_index), ("backward_template", backward_template), ("bound", bound))
            if value is not None}
        # Validates templates, layout, start index and bound the same way extraction does.
        store = StoreConfig(**given)
        self.videos, self.labels = _load_videos(self.root, annotations, Naming.from_config(store), store.bound,
                                                on_count_mismatch, self.stacking)
        _check_given(self.videos, given | ({} if fps is None else {"fps": fps}))
        if self.sampler.needs_fps:
            for video in self.videos:
                if video.fps is None and fps is None:
                    raise OutputError(f"{video.path}: the {self.sampler!r} sampler needs the sampled fps, which "
                                      "this video's output does not record (pass fps= for trees without meta.json)")
        self._readers: ReaderCache[Path | str] = ReaderCache(open_output)
        self._unpickled_in: int | None = None
        # In shared memory, so that set_epoch reaches DataLoader workers already running (persistent ones,
        # forked or spawned: torch hands them a shared tensor's memory): [epoch, set_epoch called, warned]; and,
        # for seeded train items, which items were read while set_epoch had never been called.
        self._epochs = torch.zeros(3, dtype=torch.int64).share_memory_()
        repeats = seed is not None and mode == "train"  # reading an item again repeats its random draws
        self._read = torch.zeros(len(self.videos), dtype=torch.bool).share_memory_() if repeats else None

    @property
    def segments(self) -> int | None:
        """Moments per item in this mode, or None where it depends on the video."""
        return self.sampler.count(self.mode)

    def __len__(self) -> int:
        return len(self.videos)

    @property
    def epoch(self) -> int:
        """The epoch whose draws items take (set_epoch)."""
        return int(self._epochs[0])

    def __getitem__(self, index: int) -> tuple[Any, int]:
        index = self._position(index)
        video = self.videos[index]
        rng = self._read_rng(index)
        stack = self._stack(video, self._indices(video, rng))
        generator = torch.Generator().manual_seed(int(rng.integers(2**62)))
        return apply_transform(self.transform, stack, generator), self.labels[index]

    def frame_indices(self, index: int) -> np.ndarray:
        """1-based unit numbers (flow fields, or RGB frames / differences) item `index` reads, (K, L), in the
        sampler's order; reproducible only with a seed."""
        index = self._position(index)
        return self._indices(self.videos[index], self._item_rng(index))

    def set_epoch(self, epoch: int) -> None:
        """Draw new train offsets and transforms for `epoch` (with a seed), in this process and in every
        DataLoader worker: call it before the epoch's iterator is created."""
        if not is_integer(epoch, 0):
            raise ConfigError(f"epoch must be an integer >= 0, got {epoch!r}")
        self._epochs[0], self._epochs[1] = epoch, 1

    def _position(self, index: int) -> int:
        """`index` as 0 .. len - 1; negative ones count from the end, as for a list."""
        try:
            position = operator.index(index)
        except TypeError:
            raise TypeError(f"{type(self).__name__} indices must be integers, got {index!r}") from None
        if not -len(self) <= position < len(self):
            raise IndexError(f"item {index!r} is out of range for {len(self)} videos")
        return position % len(self)

    def _read_rng(self, index: int) -> np.random.Generator:
        """_item_rng of an item being read; warns once when seeded train items repeat because set_epoch was
        never called."""
        if self._read is not None and not self._epochs[1]:
            if self._read[index] and not self._epochs[2]:
                self._epochs[2] = 1
                warnings.warn(f"{type(self).__name__}(seed={self.seed}): item {index} was read again before "
                              "set_epoch was ever called, so it repeats its first draw (offsets, crops, flips): "
                              "with a seed, item i of epoch e is always the same; call dataset.set_epoch(epoch) "
                              "before each epoch (warned once)", stacklevel=3)
            self._read[index] = True
        return self._item_rng(index)

    def _indices(self, video: VideoOutput, rng: np.random.Generator) -> np.ndarray:
        return self.sampler.indices(self.stacking.units(video), self.length, self.mode, rng,
                                    video.fps if video.fps is not None else self.fps)

    def _item_rng(self, index: int) -> np.random.Generator:
        if self.seed is None:
            return np.random.default_rng(int(torch.randint(2**62, (1,))))
        return np.random.default_rng((self.seed, self.epoch, index))

    def _reader(self, path: Path | str) -> OutputReader:
        if self._readers.enter_process():
            self._enter_process()
        return self._readers.get(path)

    def _enter_process(self) -> None:
        """First read in a DataLoader worker (or any process the dataset was copied to)."""
        self._storage.apply()
        if self._unpickled_in == os.getpid() and get_worker_info() is not None:
            # A spawn or forkserver worker, a fresh process: one OpenCV thread, as torch gives itself there, so
            # that N workers do not each run the trajectory's remaps on every core. Not in forked workers:
            # setNumThreads hangs there if the parent had started OpenCV's thread pool (a forked child then
            # runs OpenCV on the calling thread anyway); if it had not, the worker's OpenCV uses every core.
            cv2.setNumThreads(1)

    def _stack(self, video: VideoOutput, indices: np.ndarray) -> torch.Tensor:
        tensor = self.stacking.read(self._reader(video.path), video, indices, self.output)
        if self.mean_subtract:
            tensor -= tensor.mean(dim=(-2, -1), keepdim=True)
        return self._squeeze(tensor)

    def _squeeze(self, tensor: torch.Tensor) -> torch.Tensor:
        """(1, C, H, W) -> (C, H, W) for samplers that always give one moment: one TSN segment is a plain stack."""
        return tensor[0] if self.segments == 1 else tensor

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        # A spawned worker's tensors arrive shared with the parent's; a deep copy's are its own: share them too.
        for shared in (self._epochs, self._read):
            if shared is not None and not shared.is_shared():
                shared.share_memory_()
        # Where the copy was made: a spawned worker's own process, or (deepcopy) a parent that may fork later.
        self._unpickled_in = os.getpid()


class TwoStreamDataset(FlowStackDataset):
    """The RGB frame and the stack of the same moment, for every moment the sampler picks; items are
    (rgb, stack, label).

    rgb: (3, H, W) per moment ((K, 3, H, W) as the stack); float32 in [0, 1] (uint8 0..255 with
    output='uint8'). The frame is the centre of the stack's span (s + L // 2: frame t of a fusion moment,
    tau of a bidirectional stack, the frame a Beyond Short Snippets flow image starts from with L = 1) or its
    first frame with rgb_anchor='start' (TSN's RGB offset), capped at the last RGB frame. Videos need RGB
    frames (extract with --rgb). `rgb_transform` and `transform` get generators seeded alike, so equal
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
        index = self._position(index)
        video = self.videos[index]
        rng = self._read_rng(index)
        indices = self._indices(video, rng)
        stack = self._stack(video, indices)
        numbers = self.rgb_indices(video, indices)
        rgb = self._squeeze(RGBStacking().read(self._reader(video.path), video, numbers[:, None], self.output))
        seed = int(rng.integers(2**62))
        stack = apply_transform(self.transform, stack, torch.Generator().manual_seed(seed))
        rgb = apply_transform(self.rgb_transform, rgb, torch.Generator().manual_seed(seed))
        return rgb, stack, self.labels[index]

    def rgb_indices(self, video: VideoOutput, indices: np.ndarray) -> np.ndarray:
        """1-based RGB frame number per moment, (K,), for the unit numbers `indices` (K, L)."""
        starts = indices[:, 0]
        return np.minimum(starts + (self.length // 2 if self.rgb_anchor == "centre" else 0), video.rgb_frames)


def _check_given(videos: list[VideoOutput], given: dict[str, Any]) -> None:
    """ConfigError naming the video and both values where an argument given disagrees with its meta.json."""
    for video in videos:
        if not video.has_meta:
            continue
        naming = video.naming
        recorded = {"layout": naming.layout, "flow_template": naming.flow_template,
                    "img_template": naming.img_template, "start_index": naming.start_index,
                    "backward_template": naming.backward_template, "bound": video.bound, "fps": video.fps}
        for name, value in given.items():
            if recorded[name] is not None and recorded[name] != value:  # fps None: meta.json has no sampled_fps
                raise ConfigError(
                    f"{video.path}: its meta.json records {name}={recorded[name]!r}, but {name}={value!r} was given; "
                    f"the files are as meta.json says: drop {name} (it describes trees without meta.json) or pass "
                    "the recorded value")


def _load_videos(root: Path | str, annotations: str | os.PathLike | Sequence[Annotation] | None, naming: Naming,
                 bound: float, on_count_mismatch: str, stacking: Stacking
                 ) -> tuple[list[VideoOutput], list[int]]:
    if annotations is None:
        outputs = find_outputs(root, naming, bound)
        entries = build_annotations(outputs, stacking.modality)
        videos = [outputs[entry.path] for entry in entries]
    else:
        entries = read_annotations(annotations) if isinstance(annotations, (str, os.PathLike)) else list(annotations)
        videos = [describe_output(_join(root, entry.path), naming, bound) for entry in entries]
    if not entries:
        raise ConfigError(f"no videos found under {root}" if annotations is None else f"{annotations}: empty list")
    for entry, video in zip(entries, videos):
        stacking.check(video)
        frames = video.frames(stacking.modality)
        if entry.num_frames != frames and on_count_mismatch == "error":
            source = "meta.json" if video.has_meta else "files counted"
            unit = "flow pairs" if stacking.modality == "flow" else "RGB frames"
            raise OutputError(
                f"{video.path}: the annotation list says {entry.num_frames} frames but the tree has "
                f"{frames} {unit} ({source}); rewrite the list with `flowprep list` or pass "
                "on_count_mismatch='tree' to use the tree's count"
            )
    return videos, [entry.label for entry in entries]


def _join(root: Path | str, relative: str) -> Path | str:
    """The location of the video `relative` ('/'-separated) under `root`, a Path or an object store's URL."""
    return f"{root}/{relative}" if isinstance(root, str) else root / relative
