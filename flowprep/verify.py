"""Verify an output tree: every video complete, every JPEG readable at its size, optional round-trip check.

Outputs are found by store.find_outputs: a directory or ``.zip`` pack holding meta.json is one video's
output; one holding flow or RGB frame files (default names) but no meta.json is an unfinished one. Videos are
checked one at a time (optionally in worker processes, a bounded number in flight) in the order of their sorted
paths, as the walk finds them; write_report keeps only counts and spools problems to a temporary file, so its
memory does not grow with the tree.
"""
from __future__ import annotations

import json
import os
import random
import re
import tempfile
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack, closing
from dataclasses import dataclass, field
from itertools import chain, islice
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from .config import DIRECTIONS, DecodeConfig, FlowConfig
from .decode import flow_frames, open_reader
from .errors import FlowprepError, OutputError
from .flow import create_backend
from .flow.base import FlowBackend
from .flow.pairs import flow_stream
from .flow.warp import Warper
from .quantize import RoundTripBound, dequantize, jpeg_roundtrip_bound, roundtrip_error
from .source import local_video
from .store import (FINISHED, META_NAME, PACK_SUFFIX, TEMPORARY, UNFINISHED, FoundOutput, Naming, OutputReader,
                    StorageOptions, as_location, codes_from_images, meta_field, open_output, read_flow_codes, recorded_settings)
from .store import find_outputs as walk_outputs

CLIP_WARNING = 0.01  # warn when more than this fraction of flow values sits at the bound
_LISTED = 10  # missing or unexpected files listed one by one per video; the rest are counted
_CHUNK = 16  # videos per task sent to a worker (--jobs): tiny videos take well under a ms each
_SPOOL_MEMORY = 2**20  # bytes of spooled problems kept in memory before they go to a temporary file


@dataclass
class RoundTrip:
    """Stored JPEGs against recomputed float flow for `pairs` (0-based indices) in every stored direction, errors
    in pixels.

    `errors[direction][i]` is the (mean, max) error of pair `pairs[i]` in that direction; each pair of each
    direction is held to the bound on its own, so one wrong pair cannot hide behind good ones in an average.
    """

    pairs: list[int]
    errors: dict[str, list[tuple[float, float]]]
    bound: RoundTripBound

    def _all(self) -> list[tuple[float, float]]:
        return [e for found in self.errors.values() for e in found]

    @property
    def mean(self) -> float:
        """Mean over the pairs (and directions) of each pair's mean error."""
        return float(np.mean([e[0] for e in self._all()]))

    def worst(self, direction: str | None = None) -> tuple[float, float]:
        """(worst pair mean, max) error in pixels over one direction's pairs, or over every direction's."""
        found = self._all() if direction is None else self.errors[direction]
        return max(e[0] for e in found), max(e[1] for e in found)

    @property
    def worst_mean(self) -> float:
        return self.worst()[0]

    @property
    def max(self) -> float:
        return self.worst()[1]

    def failing(self) -> list[tuple[str, int, float, float]]:
        """(direction, pair (0-based), mean, max) of each pair whose mean or max error is above the bound."""
        return [(direction, pair, mean, worst) for direction, found in self.errors.items()
                for pair, (mean, worst) in zip(self.pairs, found)
                if mean > self.bound.mean or worst > self.bound.max]

    @property
    def ok(self) -> bool:
        return not self.failing()


@dataclass(kw_only=True)
class _FlowStatistics:
    """Flow values counted (one video's, or a tree's), their clipped fraction and mean magnitude."""

    values: int = 0  # flow values (pixels x 2 components) read
    clipped: int = 0  # of those, at code 0 or 255: at or beyond the bound
    magnitude_sum: float = 0.0  # sum over pixels of |dequantized flow|, pixels

    @property
    def clipped_fraction(self) -> float:
        return self.clipped / self.values if self.values else 0.0

    @property
    def mean_magnitude(self) -> float:
        """Mean flow magnitude in pixels over the pixels read."""
        return 2.0 * self.magnitude_sum / self.values if self.values else 0.0


@dataclass
class VideoCheck(_FlowStatistics):
    """What verify found in one video's output (a directory or a .zip pack)."""

    path: Path | str  # a URL (str) on object stores
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    pairs: int = 0  # per direction
    directions: tuple[str, ...] = ("forward",)
    warp: bool = False  # TSN's warped flow (settings.warp)
    rgb_frames: int = 0
    bound: float = 0.0
    roundtrip: RoundTrip | None = None

    @property
    def ok(self) -> bool:
        return not self.problems


@dataclass
class Totals(_FlowStatistics):
    """Counts over checked videos: all that verify's last line needs, the same size for any number of videos."""

    videos: int = 0
    bad: int = 0  # videos with problems
    problems: int = 0  # the videos' problems
    pairs: int = 0

    def add(self, check: VideoCheck) -> None:
        self.videos += 1
        self.bad += not check.ok
        self.problems += len(check.problems)
        self.pairs += check.pairs
        self.values += check.values
        self.clipped += check.clipped
        self.magnitude_sum += check.magnitude_sum

    def line(self, tree_problems: int) -> str:
        """verify's last line, with the tree's own problems (unfinished outputs, leftovers) counted in."""
        problems = tree_problems + self.problems
        return (f"{self.videos} video outputs, {self.bad} with problems, {problems} problems; {self.pairs} flow "
                f"pairs, mean |flow| {self.mean_magnitude:.3f} px, clipped {100 * self.clipped_fraction:.3f}%: "
                + ("FAILED" if problems else "OK"))


@dataclass
class VerifyReport:
    """Per-video checks of a tree plus the problems of the tree itself (unfinished outputs, leftovers), held in
    memory (write_report streams the same report for a tree of any size)."""

    root: Path | str
    videos: list[VideoCheck] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems and all(v.ok for v in self.videos)

    def all_problems(self) -> list[str]:
        return self.problems + [p for v in self.videos for p in v.problems]

    def all_warnings(self) -> list[str]:
        return self.warnings + [w for v in self.videos for w in v.warnings]

    def totals(self) -> Totals:
        totals = Totals()
        for check in self.videos:
            totals.add(check)
        return totals

    @property
    def clipped_fraction(self) -> float:
        return self.totals().clipped_fraction

    @property
    def mean_magnitude(self) -> float:
        return self.totals().mean_magnitude


def _video_line(check: VideoCheck) -> str:
    """A video's line of the report: status, path, counts and statistics."""
    return (f"{'PROBLEM' if check.problems else 'ok':7s} {check.path}: {check.pairs} pairs{_kind_text(check)}, "
            f"{check.rgb_frames} rgb, mean |flow| {check.mean_magnitude:.3f} px, clipped "
            f"{100 * check.clipped_fraction:.3f}% at bound {check.bound:g}" + _roundtrip_text(check.roundtrip))


def _kind_text(check: VideoCheck) -> str:
    """' (forward and backward, warped)' and the like; '' for plain forward flow."""
    kinds = [" and ".join(check.directions)] if check.directions != ("forward",) else []
    kinds += ["warped"] if check.warp else []
    return f" ({', '.join(kinds)})" if kinds else ""


def _roundtrip_text(rt: RoundTrip | None) -> str:
    if rt is None:
        return ""
    text = (f"; round trip of {len(rt.pairs)} pairs: worst pair mean {rt.worst_mean:.4f} px (bound "
            f"{rt.bound.mean:.4f}), max {rt.max:.4f} px (bound {rt.bound.max:.4f})")
    if len(rt.errors) > 1:
        text += "".join(f", {d} worst pair mean {rt.worst(d)[0]:.4f} max {rt.worst(d)[1]:.4f}" for d in rt.errors)
    return text


def _outputs(root: Path | str, problem: Callable[[str], None]) -> Iterator[Path | str]:
    """The finished video outputs under `root` in sorted(paths) order, as the walk finds them (see
    store.find_outputs); `problem` gets, in the walk's order, each thing that is no finished output but should be
    one: unfinished outputs, temporaries of killed runs and .zip files that do not open. `root` may itself be one
    video's output; on an object store it is a URL (str), and so are the outputs."""
    if isinstance(root, Path) and not root.exists():
        problem(f"{root}: no such file or directory")
        return
    if isinstance(root, Path) and root.is_file() and root.suffix != PACK_SUFFIX:
        problem(f"{root}: not a directory or .zip pack")
        return
    # The walk yields a folder's packs before it enters the folder's subfolders, and sorted(paths) puts each pack
    # among those by name: a folder's packs wait here (no more than the walk's own listing of the folder) until
    # the walk reaches a subfolder named after them, or leaves the folder.
    held: list[tuple[tuple[str, ...], deque[Path | str]]] = []  # folders on the walk's path, their packs not yet due
    for found in walk_outputs(root):
        if found.kind != FINISHED:
            problem(_leftover_problem(found))
            continue
        parts = PurePosixPath(found.path).parts  # a URL's too: its scheme is one more part, common to all
        while held and parts[:len(held[-1][0])] != held[-1][0]:
            yield from held.pop()[1]
        packed = found.reader.is_pack
        for folder, packs in held:
            if packed and len(folder) == len(parts) - 1:
                break  # the pack's own folder: its packs come in name order
            while packs and PurePosixPath(packs[0]).name < parts[len(folder)]:
                yield packs.popleft()
        if not packed:
            yield found.path
        elif held and held[-1][0] == parts[:-1]:
            held[-1][1].append(found.path)
        else:
            held.append((parts[:-1], deque([found.path])))
    while held:
        yield from held.pop()[1]


def _leftover_problem(found: FoundOutput) -> str:
    if found.kind == UNFINISHED:
        return f"{found.path}: {len(found.names)} JPEG files but no {META_NAME}: unfinished output"
    if found.kind == TEMPORARY:
        return f"{found.path}: temporary left by a killed run (rerun extract to finish)"
    return found.problem


def _no_outputs_problem(root: str | os.PathLike) -> str:
    return f"{root}: no flow outputs (directories with {META_NAME} or .zip packs) found"


def _tree_warnings(root: str | os.PathLike, totals: Totals, clip_warning: float) -> list[str]:
    if totals.videos and totals.clipped_fraction > clip_warning:
        return [f"{root}: {100 * totals.clipped_fraction:.2f}% of all flow values are clipped at the bound: the "
                "bound is too small for this data (extract again with a larger --bound)"]
    return []


def verify_tree(
    root: str | os.PathLike,
    roundtrip: int = 0,
    *,
    seed: int = 0,
    n_jobs: int = 1,
    clip_warning: float = CLIP_WARNING,
) -> VerifyReport:
    """Check every video output under `root` (see check_video) into a report that holds every video's check
    (write_report streams it instead); `n_jobs` > 1 checks videos in processes."""
    report = VerifyReport(as_location(root))
    outputs = _outputs(report.root, report.problems.append)
    report.videos = list(_check_all(outputs, roundtrip, seed, n_jobs, clip_warning))
    if not report.videos and not report.problems:
        report.problems.append(_no_outputs_problem(root))
    report.warnings += _tree_warnings(root, report.totals(), clip_warning)
    return report


def write_report(
    root: str | os.PathLike,
    echo: Callable[[str], None],
    roundtrip: int = 0,
    *,
    seed: int = 0,
    n_jobs: int = 1,
    clip_warning: float = CLIP_WARNING,
    storage: StorageOptions = StorageOptions(),
) -> bool:
    """Check every video output under `root` as verify_tree does and write the report a line at a time through
    `echo`, in memory that does not grow with the tree: each video's line (sorted by path) once it is checked,
    then the tree's problems, the videos' problems, the warnings (all spooled to temporary files until then)
    and the counts. Returns True when nothing is wrong. `storage`: options of an object store's `root`, applied
    here and in each worker."""
    storage.apply()
    totals = Totals()
    with ExitStack() as stack:
        tree_problems, problems, warnings = (stack.enter_context(_Spool()) for _ in range(3))
        for check in _check_all(_outputs(as_location(root), tree_problems.add), roundtrip, seed, n_jobs, clip_warning,
                                storage):
            totals.add(check)
            echo(_video_line(check))
            problems.extend(check.problems)
            warnings.extend(check.warnings)
        if not totals.videos and not tree_problems.count:
            tree_problems.add(_no_outputs_problem(root))
        for text in chain(tree_problems, problems):
            echo(f"PROBLEM {text}")
        for text in chain(_tree_warnings(root, totals, clip_warning), warnings):
            echo(f"warning {text}")
        echo(totals.line(tree_problems.count))
        return tree_problems.count + totals.problems == 0


class _Spool:
    """Texts kept in order in a temporary file (in memory up to _SPOOL_MEMORY bytes), one JSON string a line so
    that any text (a path with a newline) reads back as written."""

    def __init__(self) -> None:
        self._file = tempfile.SpooledTemporaryFile(_SPOOL_MEMORY, "w+", encoding="ascii")
        self.count = 0

    def add(self, text: str) -> None:
        self._file.write(json.dumps(text) + "\n")
        self.count += 1

    def extend(self, texts: Iterable[str]) -> None:
        for text in texts:
            self.add(text)

    def __iter__(self) -> Iterator[str]:
        self._file.seek(0)
        return (json.loads(line) for line in self._file)

    def __enter__(self) -> _Spool:
        return self

    def __exit__(self, *exc: object) -> None:
        self._file.close()


def _check_all(outputs: Iterator[Path | str], roundtrip: int, seed: int, n_jobs: int, clip_warning: float,
               storage: StorageOptions = StorageOptions()) -> Iterator[VideoCheck]:
    """check_video of each output, in order; with `n_jobs` > 1 in loky worker processes, _CHUNK videos a task and
    at most 2 * n_jobs tasks in flight (their results wait for the earlier ones, so memory stays bounded)."""
    if n_jobs == 1:
        for path in outputs:
            yield check_video(path, roundtrip, seed=seed, clip_warning=clip_warning)
        return
    from joblib.externals.loky import get_reusable_executor

    executor = get_reusable_executor(max_workers=n_jobs)
    window: deque = deque()  # futures of the tasks in flight, oldest first
    while chunk := list(islice(outputs, _CHUNK)):
        window.append(executor.submit(_check_chunk, chunk, roundtrip, seed, clip_warning, storage))
        if len(window) == 2 * n_jobs:
            yield from window.popleft().result()
    while window:
        yield from window.popleft().result()


def _check_chunk(paths: list[Path | str], roundtrip: int, seed: int, clip_warning: float,
                 storage: StorageOptions) -> list[VideoCheck]:
    storage.apply()  # a worker process: loky spawned it without the parent's fsspec config
    return [check_video(path, roundtrip, seed=seed, clip_warning=clip_warning) for path in paths]


def check_video(path: str | os.PathLike, roundtrip: int = 0, *, seed: int = 0,
                clip_warning: float = CLIP_WARNING) -> VideoCheck:
    """Check one video's output: meta.json, names and counts, every JPEG decodes at the recorded size.

    Gathers the clipped fraction and mean magnitude of the flow. With `roundtrip` > 0, recomputes that many
    random pairs (chosen with `seed`) from the source video with the recorded settings and compares them with
    the stored JPEGs against quantize.jpeg_roundtrip_bound.
    """
    check = VideoCheck(as_location(path))
    try:
        reader = open_output(path)
    except OutputError as exc:
        check.problems.append(str(exc))
        return check
    with reader:
        try:
            meta = reader.meta()
            layout = _Layout.from_meta(meta, os.path.join(reader.path, META_NAME))
        except OutputError as exc:
            check.problems.append(str(exc))
            return check
        check.pairs, check.rgb_frames, check.bound = layout.pairs, layout.rgb_frames, layout.bound
        check.directions, check.warp = layout.directions, layout.warp
        if meta.get("stream_problem"):
            check.warnings.append(f"{reader.path}: its source ended early when extracted: {meta['stream_problem']}")
        names = set(reader.names())
        _check_names(reader, names, layout, check)
        _check_images(reader, names, layout, check)
        if check.clipped_fraction > clip_warning:
            check.warnings.append(
                f"{reader.path}: {100 * check.clipped_fraction:.2f}% of flow values are clipped at the bound "
                f"{layout.bound:g} px: the bound is too small for this video's motion")
        if roundtrip > 0 and check.ok and layout.pairs > 0:
            try:
                check.roundtrip = _roundtrip(reader, meta, layout, roundtrip, seed)
            except FlowprepError as exc:
                check.problems.append(f"{reader.path}: cannot recompute flow for the round trip: {exc}")
            except KeyError as exc:
                check.problems.append(f"{os.path.join(reader.path, META_NAME)}: field {exc} needed for the round trip is missing")
            else:
                for direction, pair, mean, worst in check.roundtrip.failing():
                    check.problems.append(
                        f"{reader.path}: round-trip error above the documented bound in pair {pair + 1} "
                        f"({', '.join(layout.naming.pair_names(pair, direction))}): mean {mean:.4f} px (bound "
                        f"{check.roundtrip.bound.mean:.4f}), max {worst:.4f} px "
                        f"(bound {check.roundtrip.bound.max:.4f})")
    return check


@dataclass(frozen=True)
class _Layout:
    """What meta.json promises about a video's files."""

    naming: Naming
    directions: tuple[str, ...]  # the flows stored, each with `pairs` pairs
    warp: bool  # TSN's warped flow (settings.warp)
    pairs: int
    frames: int
    rgb_frames: int
    size: tuple[int, int]  # (width, height)
    bound: float
    jpeg_quality: int

    @classmethod
    def from_meta(cls, meta: dict[str, Any], where: Path | str) -> _Layout:
        """From a meta.json that OutputReader.meta validated; OutputError naming `where` for the fields that only
        verify needs."""
        size = meta_field(meta, "output_size", list, where)
        if len(size) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) for v in size):
            raise OutputError(f"{where}: missing or invalid field output_size: {size!r} is not [width, height]")
        settings = recorded_settings(meta["settings"])
        directions = settings["directions"]
        if not isinstance(directions, list) or not directions or not set(directions) <= set(DIRECTIONS):
            raise OutputError(f"{where}: invalid field settings.directions: {directions!r} is not a list of "
                              f"{', '.join(DIRECTIONS)}")
        return cls(Naming.from_meta(meta), tuple(directions), settings["warp"] is True, meta["flow_pairs"],
                   meta["frames"], meta_field(meta, "rgb_frames", int, where), (size[0], size[1]),
                   float(settings["bound"]), meta_field(meta["settings"], "jpeg_quality", int, where, "settings."))

    def flow_names(self, direction: str = "forward") -> list[list[str]]:
        """Per pair, the names of its files in `direction`: [x, y] or [xy0]; none for a direction not stored."""
        return [self.naming.pair_names(i, direction) for i in range(self.pairs if direction in self.directions else 0)]


def _check_names(reader: OutputReader, names: set[str], layout: _Layout, check: VideoCheck) -> None:
    where = reader.path
    if layout.frames != layout.pairs + 1:
        check.problems.append(f"{os.path.join(where, META_NAME)}: {layout.frames} frames should give {layout.frames - 1} flow "
                              f"pairs, but flow_pairs is {layout.pairs}")
    if layout.rgb_frames not in (0, layout.frames):
        check.problems.append(f"{os.path.join(where, META_NAME)}: rgb_frames is {layout.rgb_frames}, expected 0 or the "
                              f"{layout.frames} frames")
    n = layout.naming
    rgb_pattern = n.img_pattern()
    rgb_present = {name for name in names if rgb_pattern.fullmatch(name)}
    found_sets = [(rgb_present, {n.img(i) for i in range(layout.rgb_frames)})]
    # Every direction, stored or not: backward files in a forward-only output are unexpected ones.
    for direction in DIRECTIONS:
        flow_pattern = n.flow_pattern(direction)
        flow_present = {name: m for name in names if (m := flow_pattern.fullmatch(name))}
        pairs = layout.pairs if direction in layout.directions else 0
        kind = "" if direction == "forward" else f"{direction} "
        if n.layout == "separate":
            for axis in ("x", "y"):
                found = sum(1 for m in flow_present.values() if m.group("axis") == axis)
                if found != pairs:
                    check.problems.append(f"{where}: {found} {kind}flow_{axis} files, meta.json says {pairs} "
                                          f"{kind}pairs")
        elif len(flow_present) != pairs:
            check.problems.append(f"{where}: {len(flow_present)} {kind}flow files, meta.json says {pairs} {kind}pairs")
        found_sets.append((set(flow_present), {name for pair in layout.flow_names(direction) for name in pair}))
    if len(rgb_present) != layout.rgb_frames:
        check.problems.append(f"{where}: {len(rgb_present)} RGB frames, meta.json says {layout.rgb_frames}")
    for present, expected in found_sets:
        _list(check, where, sorted(expected - names, key=_natural), "missing")
        _list(check, where, sorted(present - expected, key=_natural), "unexpected (beyond the count in meta.json)")


def _natural(name: str) -> tuple[int, str]:
    digits = re.findall(r"\d+", name)
    return (int(digits[-1]) if digits else -1, name)


def _list(check: VideoCheck, where: Path | str, names: list[str], what: str) -> None:
    check.problems += [f"{os.path.join(where, name)}: {what}" for name in names[:_LISTED]]
    if len(names) > _LISTED:
        check.problems.append(f"{where}: {len(names) - _LISTED} more files {what}")


def _check_images(reader: OutputReader, names: set[str], layout: _Layout, check: VideoCheck) -> None:
    """Decode every flow and RGB JPEG; count clipped values and sum magnitudes of complete pairs."""
    for pair in (pair for direction in layout.directions for pair in layout.flow_names(direction)):
        images = [_decode(reader, name, layout, check, rgb=layout.naming.layout == "xy0")
                  for name in pair if name in names]
        if len(images) != len(pair) or any(image is None for image in images):
            continue
        codes = codes_from_images(images, layout.naming.layout)
        check.values += codes.size
        check.clipped += int(np.count_nonzero((codes == 0) | (codes == 255)))
        check.magnitude_sum += float(np.linalg.norm(dequantize(codes, layout.bound), axis=-1).sum())
    for i in range(layout.rgb_frames):
        name = layout.naming.img(i)
        if name in names:
            _decode(reader, name, layout, check, rgb=True)


def _decode(reader: OutputReader, name: str, layout: _Layout, check: VideoCheck, *, rgb: bool
            ) -> np.ndarray | None:
    try:
        image = reader.read_image(name, rgb=rgb)
    except OutputError as exc:
        check.problems.append(str(exc))
        return None
    height, width = image.shape[:2]
    if (width, height) != layout.size:
        check.problems.append(f"{os.path.join(reader.path, name)}: {width}x{height} pixels, meta.json says "
                              f"{layout.size[0]}x{layout.size[1]}")
        return None
    return image


def _roundtrip(reader: OutputReader, meta: dict[str, Any], layout: _Layout, count: int, seed: int) -> RoundTrip:
    """Recompute `count` random pairs from the source with the recorded settings; compare with the JPEGs."""
    settings = meta["settings"]
    wanted = sorted(random.Random(f"{seed}:{PurePosixPath(reader.path).name}").sample(range(layout.pairs),
                                                                       min(count, layout.pairs)))
    backend = create_backend(FlowConfig(algo=settings["algorithm"], device=settings["device"],
                                        impl=recorded_settings(settings)["impl"],
                                        params=tuple(settings["params"].items())))
    errors: dict[str, list[tuple[float, float]]] = {d: [] for d in layout.directions}
    recomputed = 0
    for index, flows in _recompute(meta, wanted, backend, layout.directions):
        recomputed += 1
        for direction, flow in zip(layout.directions, flows):
            codes = read_flow_codes(reader, layout.naming, index, direction)
            errors[direction].append(roundtrip_error(codes, flow, layout.bound))
    if recomputed != len(wanted):
        raise OutputError(f"{meta['source']} now gives fewer sampled frames than the {layout.frames} recorded")
    bound = jpeg_roundtrip_bound(layout.bound, layout.jpeg_quality, layout.naming.layout)
    return RoundTrip(wanted, errors, bound)


def _recompute(meta: dict[str, Any], wanted: list[int], backend: FlowBackend, directions: tuple[str, ...]
               ) -> Iterator[tuple[int, tuple[np.ndarray, ...]]]:
    """(index, float32 HxWx2 flows in `directions` order) for each wanted pair, decoding the source and
    computing the flows (warped when recorded so) the way the pipeline did."""
    settings = recorded_settings(meta["settings"])
    warper = Warper() if settings["warp"] else None
    decode = DecodeConfig(decoder=meta["decoder"], fps=settings["fps"],
                          size=tuple(settings["size"]) if settings["size"] else None,
                          short_side=settings["short_side"])
    todo = set(wanted)
    # A URL's object is downloaded to TMPDIR for the decoders, as extraction did.
    with local_video(meta["source"]) as source, open_reader(source.path, meta["decoder"], source.name) as video:
        prev = None
        for index, (_, gray) in enumerate(flow_frames(video, decode)):
            if index - 1 in todo:
                with closing(flow_stream(backend, [prev, gray], directions, warper)) as flows:
                    yield index - 1, next(flows)
                todo.discard(index - 1)
                if not todo:
                    return
            prev = gray
