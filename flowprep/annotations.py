"""Annotation lists: find the videos of an output tree, count their frames, label them, write TSN lists.

A list has one line per video, ``relative_dir num_frames label`` (TSN / mmaction2 rawframe format), where
num_frames counts flow pairs (flow lists) or RGB frames (rgb lists) and labels are 0-based. Trees written by
flowprep are described by each video's meta.json; trees written by other tools (denseflow, mmaction2's
script) by a Naming given by the caller, and frames are counted by listing files. list_annotations makes a
tree's list in memory that does not grow with the tree: what a line needs is spooled to a temporary file and
sorted there.
"""
from __future__ import annotations

import heapq
import os
import pickle
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from itertools import groupby, islice
from operator import itemgetter
from pathlib import Path
from typing import IO

from . import store
from .config import VIDEO_EXTENSIONS
from .errors import ConfigError, OutputError
from .quantize import DEFAULT_BOUND
from .store import META_NAME, PACK_SUFFIX, Naming, OutputReader, as_location, open_output, template_pattern

MODALITIES = ("flow", "rgb")
# The sorted spool of list_annotations: records sorted in memory per run, pickled per batch, merged so many runs at
# a time; about 300 bytes a record, so a few MB whatever the tree's size.
_RUN, _BATCH, _FAN_IN = 10_000, 50, 256


@dataclass(frozen=True)
class VideoOutput:
    """One video's output: where it lies (directory or .zip), how its files are named and how many there are."""

    path: Path
    naming: Naming
    bound: float  # quantization bound in pixels: codes 0..255 span [-bound, bound]
    flow_pairs: int
    rgb_frames: int
    has_meta: bool  # False for trees written by other tools
    fps: float | None = None  # sampled frames per second (meta.json's sampled_fps); None when unknown
    directions: tuple[str, ...] = ("forward",)  # flow directions written: forward (k -> k+1), backward (k+1 -> k)

    def frames(self, modality: str) -> int:
        """Flow pairs for 'flow', RGB frames for 'rgb'."""
        return self.flow_pairs if modality == "flow" else self.rgb_frames


@dataclass(frozen=True)
class Annotation:
    """One line of an annotation list; `path` is relative to the tree root, '/'-separated, without '.zip'."""

    path: str
    num_frames: int
    label: int

    def line(self) -> str:
        return f"{self.path} {self.num_frames} {self.label}"


def describe_output(path: str | os.PathLike, naming: Naming = Naming(), bound: float = DEFAULT_BOUND) -> VideoOutput:
    """Describe the output at `path` (directory, .zip, or base path of either) from its meta.json when it has
    one, else from `naming` and `bound` by counting its files. OutputError naming the path when files do not
    follow the naming (e.g. a 0-based tree read with start index 1) or x and y counts differ."""
    with open_output(path) as reader:
        return _describe(reader, naming, bound)


def _describe(reader: OutputReader, naming: Naming, bound: float, names: list[str] | None = None) -> VideoOutput:
    """describe_output of an open output; `names`: its file names when the caller has listed them already."""
    # meta.json first: listing a video's files costs a stat per file, millions for a dataset's annotation list.
    if reader.has(META_NAME):
        meta = reader.meta()
        fps = meta.get("sampled_fps")
        return VideoOutput(reader.path, Naming.from_meta(meta), float(meta["settings"]["bound"]),
                           meta["flow_pairs"], int(meta.get("rgb_frames", 0)), True,
                           float(fps) if isinstance(fps, (int, float)) and fps > 0 else None,
                           tuple(store.recorded_settings(meta["settings"])["directions"]))
    names = reader.names() if names is None else names
    pairs = _count_flow(reader, names, naming)
    # Another tool's backward flow counts when the backward names cover every forward pair.
    backward = pairs > 0 and _count_flow(reader, names, naming, "backward") == pairs
    return VideoOutput(reader.path, naming, float(bound), pairs,
                       _count_frames(reader, names, naming.img_template, None, naming.start_index), False,
                       directions=("forward", "backward") if backward else ("forward",))


def find_outputs(root: str | os.PathLike, naming: Naming = Naming(), bound: float = DEFAULT_BOUND
                 ) -> dict[str, VideoOutput]:
    """Every video output under `root`, keyed by its path relative to root ('Class/video', no '.zip'), sorted
    (list_annotations lists a tree of any size without holding it).

    Videos are what store.find_outputs finds: directories or zip packs holding meta.json, or files named by
    `naming` (other tools' trees); hidden entries (flowprep's temporaries), zips that do not open and folders
    without such files are not videos. A folder and a pack of one name are one video: the folder.
    """
    found = dict(_described(root, naming, bound))  # of one name, the walk's later: the folder
    return dict(sorted(found.items()))


def _described(root: str | os.PathLike, naming: Naming, bound: float) -> Iterator[tuple[str, VideoOutput]]:
    """(path relative to root without '.zip', description) of each video output under `root` in the walk's
    order: a folder's packs before its subfolders."""
    root = as_location(root)
    if isinstance(root, Path) and not root.is_dir():
        raise OutputError(f"{root}: not a directory")
    for output in store.find_outputs(root, naming):
        if output.reader is None:  # a leftover, not a video
            continue
        relative = (output.path[len(root) + 1:] if isinstance(root, str)  # a URL's path is its URL
                    else output.path.relative_to(root).as_posix())
        if output.reader.is_pack:
            relative = relative[: -len(PACK_SUFFIX)]
        yield relative, _describe(output.reader, naming, bound, output.names)


def class_of(relative: str) -> str:
    """Class name of a video: its first folder under the root ('' for videos lying directly in the root)."""
    parts = relative.split("/")
    return parts[0] if len(parts) > 1 else ""


def read_class_index(path: str | os.PathLike) -> dict[str, int]:
    """Class name -> 0-based label from a class index file.

    Lines are ``index name`` (UCF101's classInd.txt, 1-based: label = index - 1; a file whose smallest index
    is 0 is taken as 0-based) or just ``name`` (label = line number, from 0).
    """
    lines = [line.split() for line in _read_text(path).splitlines() if line.strip()]
    if all(len(cols) == 1 for cols in lines):
        index = {cols[0]: number for number, cols in enumerate(lines)}
    elif all(len(cols) == 2 and cols[0].isdigit() for cols in lines):
        first = min(int(cols[0]) for cols in lines)
        index = {cols[1]: int(cols[0]) - (1 if first >= 1 else 0) for cols in lines}
    else:
        raise ConfigError(f"{path}: class index lines must be 'index name' or 'name'")
    if len(index) != len(lines):
        raise ConfigError(f"{path}: a class name is listed twice")
    return index


def read_split(path: str | os.PathLike) -> list[str]:
    """Video paths of a split list (UCF101 ``trainlist01.txt`` style: ``Class/video.avi [label]``), without
    their video extension, in file order."""
    videos = []
    for line in _read_text(path).splitlines():
        if line.strip():
            video = Path(line.split()[0])
            videos.append((video.with_suffix("") if video.suffix.lower() in VIDEO_EXTENSIONS else video).as_posix())
    return videos


def build_annotations(outputs: dict[str, VideoOutput], modality: str = "flow",
                      class_index: dict[str, int] | None = None) -> list[Annotation]:
    """One Annotation per video of `outputs` (as from find_outputs); labels from `class_index`, or else the
    position of the video's class among the sorted class names of all `outputs`."""
    _check_modality(modality)
    if class_index is None:
        class_index = _labels(class_of(p) for p in outputs)
    return [_annotation(relative, output.path, output.frames(modality), modality, class_index)
            for relative, output in outputs.items()]


def _check_modality(modality: str) -> None:
    if modality not in MODALITIES:
        raise ConfigError(f"modality must be one of {', '.join(MODALITIES)}; got {modality!r}")


def _labels(classes: Iterable[str]) -> dict[str, int]:
    """Class name -> its position among the sorted names."""
    return {name: label for label, name in enumerate(sorted(set(classes)))}


def _annotation(relative: str, path: str | os.PathLike, frames: int, modality: str, class_index: dict[str, int]
                ) -> Annotation:
    """The line of the video at `path` (`relative` to the root); ConfigError or OutputError naming it when its
    class is not in `class_index` or it has no frames of `modality`."""
    name = class_of(relative)
    if name not in class_index:
        raise ConfigError(f"{path}: class {name!r} is not in the class index")
    if frames == 0:
        raise OutputError(f"{path}: no {modality} frames (RGB frames are written with --rgb)")
    return Annotation(relative, frames, class_index[name])


def apply_split(entries: Iterable[Annotation], split: Sequence[str]) -> tuple[list[Annotation], list[str]]:
    """The entries named by `split`, in split order, and the split's videos that have no entry."""
    wanted = set(split)
    by_path = {entry.path: entry for entry in entries if entry.path in wanted}
    return [by_path[p] for p in split if p in by_path], [p for p in split if p not in by_path]


def list_annotations(root: str | os.PathLike, naming: Naming = Naming(), bound: float = DEFAULT_BOUND,
                     modality: str = "flow", class_index: dict[str, int] | None = None,
                     split: Sequence[str] | None = None) -> AnnotationList:
    """build_annotations(find_outputs(root, naming, bound), modality, class_index), narrowed by apply_split to
    `split` when one is given: the same entries in the same order, the same errors (raised here, before any line
    is written), for a tree of any size. Each video's line is spooled to a temporary file and sorted there, so
    memory does not grow with the tree (beyond the split's entries, when there is a split)."""
    _check_modality(modality)
    spool = _SortedSpool()
    classes = set()
    for seq, (relative, output) in enumerate(_described(root, naming, bound)):
        spool.add((relative, seq, str(output.path), output.frames(modality)))
        classes.add(class_of(relative))
    return AnnotationList(spool, modality, _labels(classes) if class_index is None else class_index, split)


class AnnotationList:
    """A list's entries in order, read back from list_annotations' spool at each iteration; `videos` and
    `classes` count its entries and their distinct labels, `missing` names the split's videos not in the tree."""

    def __init__(self, spool: _SortedSpool, modality: str, class_index: dict[str, int],
                 split: Sequence[str] | None) -> None:
        self._spool, self._modality, self._class_index = spool, modality, class_index
        self.missing: list[str] = []
        self._split_entries: list[Annotation] | None = None
        if split is not None:
            self._split_entries, self.missing = apply_split(self._sorted(), split)
        labels: set[int] = set()
        self.videos = 0
        for entry in self:  # checks every entry, as build_annotations does, before anything is written
            self.videos += 1
            labels.add(entry.label)
        self.classes = len(labels)

    def __iter__(self) -> Iterator[Annotation]:
        return iter(self._split_entries) if self._split_entries is not None else self._sorted()

    def _sorted(self) -> Iterator[Annotation]:
        """Every video's entry sorted by path; of a folder and a pack of one name, the folder (the walk's later,
        as find_outputs keeps it)."""
        for relative, records in groupby(self._spool, key=itemgetter(0)):  # (relative, walk order, path, frames)
            *_, (_, _, path, frames) = records
            yield _annotation(relative, path, frames, self._modality, self._class_index)


class _SortedSpool:
    """Tuples read back sorted, in bounded memory: each _RUN of them sorted and pickled (_BATCH a pickle) to one
    temporary file; reading merges the runs, _FAN_IN at most at a time (more are merged into longer runs first)."""

    def __init__(self) -> None:
        self._file = tempfile.TemporaryFile()
        self._runs: list[tuple[int, int]] = []  # (start, end) of each sorted run in the file
        self._pending: list[tuple] = []

    def add(self, record: tuple) -> None:
        self._pending.append(record)
        if len(self._pending) == _RUN:
            self._pending.sort()
            self._runs.append(self._write(iter(self._pending)))
            self._pending = []

    def __iter__(self) -> Iterator[tuple]:
        while len(self._runs) > _FAN_IN:
            merged = self._write(heapq.merge(*map(self._read, self._runs[:_FAN_IN])))
            self._runs = self._runs[_FAN_IN:] + [merged]
        return heapq.merge(*map(self._read, self._runs), sorted(self._pending))

    def _write(self, records: Iterator[tuple]) -> tuple[int, int]:
        start = self._file.seek(0, os.SEEK_END)
        while batch := list(islice(records, _BATCH)):
            data = pickle.dumps(batch, pickle.HIGHEST_PROTOCOL)
            self._file.write(len(data).to_bytes(8, "little") + data)
        self._file.flush()
        return start, self._file.tell()

    def _read(self, run: tuple[int, int]) -> Iterator[tuple]:
        offset, end = run
        while offset < end:  # positioned reads: the runs are read side by side from the one file
            size = int.from_bytes(os.pread(self._file.fileno(), 8, offset), "little")
            yield from pickle.loads(os.pread(self._file.fileno(), size, offset + 8))
            offset += 8 + size


def write_annotations(entries: Iterable[Annotation], out: str | os.PathLike | IO[str]) -> None:
    """Write a list, one ``relative_dir num_frames label`` line per entry, to a path or an open text stream."""
    if not hasattr(out, "write"):
        with open(out, "w") as stream:
            write_annotations(entries, stream)
        return
    for entry in entries:
        out.write(entry.line() + "\n")


def read_annotations(path: str | os.PathLike) -> list[Annotation]:
    """Parse a ``relative_dir num_frames label`` list (paths may contain spaces); ConfigError naming the line."""
    entries = []
    for number, line in enumerate(_read_text(path).splitlines(), 1):
        if not line.strip():
            continue
        cols = line.rsplit(None, 2)
        if len(cols) != 3 or not cols[1].isdigit() or not cols[2].isdigit():
            raise ConfigError(f"{path}:{number}: expected 'relative_dir num_frames label', got {line!r}")
        entries.append(Annotation(cols[0].strip().removesuffix(PACK_SUFFIX), int(cols[1]), int(cols[2])))
    return entries


def _read_text(path: str | os.PathLike) -> str:
    try:
        return Path(path).read_text()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read ({exc.strerror or exc})") from None


def _count_frames(reader: OutputReader, names: list[str], template: str, axis: str | None, start: int) -> int:
    """How many files are named like `template`; OutputError unless they are numbered start, start + 1, ..."""
    pattern = template_pattern(template)
    matches = (m for m in map(pattern.fullmatch, names) if m and (axis is None or m["axis"] == axis))
    indices = sorted(int(m["index"]) for m in matches)
    if indices and indices != list(range(start, start + len(indices))):
        kind = f"{template!r} (axis {axis})" if axis else repr(template)
        raise OutputError(
            f"{reader.path}: {len(indices)} files named like {kind} are numbered {indices[0]}..{indices[-1]}, "
            f"but start index {start} expects {start}..{start + len(indices) - 1} without gaps "
            "(give the tree's start index, e.g. 0 for denseflow)"
        )
    return len(indices)


def _count_flow(reader: OutputReader, names: list[str], naming: Naming, direction: str = "forward") -> int:
    template = naming.template(direction)
    if naming.layout == "xy0":
        return _count_frames(reader, names, template, None, naming.start_index)
    xs, ys = (_count_frames(reader, names, template, axis, naming.start_index) for axis in "xy")
    if xs != ys:
        kind = "" if direction == "forward" else f"{direction} "
        raise OutputError(f"{reader.path}: {xs} x {kind}flow files but {ys} y {kind}flow files")
    return xs
