"""Frozen configuration dataclasses: they pickle cleanly to joblib, Dask and Ray workers."""
from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import lru_cache
from string import Formatter
from typing import Any

from .errors import ConfigError
from .quantize import DEFAULT_BOUND, check_bound, check_jpeg_quality

READER_NAMES = ("pyav", "decord", "opencv")
# PyAV first: decord's decoder thread runs ahead of a slower consumer without limit and ends up holding most of
# the decoded video (measured: 214 MB for 486 frames of 480x480 behind a 2 ms/frame consumer, 53 MB with PyAV).
AUTO_DECODERS = ("pyav", "decord", "opencv")
LAYOUTS = ("separate", "xy0")
PACKS = ("dir", "zip")
# Suffixes taken for videos (lower case): batch discovery and split lists' "Class/video.avi" names.
VIDEO_EXTENSIONS = (".mp4", ".avi", ".mkv", ".webm", ".mov", ".m4v", ".mpg", ".mpeg", ".flv", ".wmv", ".3gp", ".ogv")
DEFAULT_FLOW_TEMPLATES = {"separate": "flow_{}_{:05d}.jpg", "xy0": "flow_{:05d}.jpg"}
# Backward flow (frame k+1 -> k) gets names that no "flow_x*" counter (TSN's build_file_list, mmaction2) matches.
DEFAULT_BACKWARD_TEMPLATES = {"separate": "backflow_{}_{:05d}.jpg", "xy0": "backflow_{:05d}.jpg"}
DIRECTIONS = ("forward", "backward")
# Fields a template must have: the separate layout names the axis ("x"/"y") then the index.
_TEMPLATE_FIELDS = {"separate": 2, "xy0": 1}


def parse_size(text: str) -> tuple[int, int]:
    """Parse 'WxH' (e.g. '340x256') into (width, height) in pixels."""
    parts = text.lower().split("x")
    if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
        raise ConfigError(f"size must look like WIDTHxHEIGHT, e.g. 340x256; got {text!r}")
    width, height = (int(p) for p in parts)
    if width < 2 or height < 2:
        raise ConfigError(f"size must be at least 2x2 pixels, got {text!r}")
    return width, height


@dataclass(frozen=True)
class DecodeConfig:
    """How frames are read: decoder, sampling rate (frames per second) and resize (pixels)."""

    decoder: str = "auto"  # "auto", one reader, or readers to try in turn: "decord,pyav"
    fps: float | None = None
    size: tuple[int, int] | None = None  # (width, height)
    short_side: int | None = None

    @property
    def readers(self) -> tuple[str, ...]:
        """The readers to try, in order."""
        if self.decoder == "auto":
            return AUTO_DECODERS
        return tuple(name.strip() for name in self.decoder.split(",") if name.strip())

    def __post_init__(self) -> None:
        unknown = [name for name in self.readers if name not in READER_NAMES]
        if unknown or not self.readers:
            raise ConfigError(
                f"decoder must be auto, or one or more of {', '.join(READER_NAMES)} separated by commas; "
                f"got {self.decoder!r}"
            )
        if self.fps is not None and not (math.isfinite(self.fps) and self.fps > 0):
            raise ConfigError(f"fps must be a positive number, got {self.fps!r}")
        if self.size is not None and self.short_side is not None:
            raise ConfigError("give either size or short_side, not both")
        if self.size is not None and (len(self.size) != 2 or min(self.size) < 2):
            raise ConfigError(f"size must be (width, height) of at least 2 pixels, got {self.size!r}")
        if self.short_side is not None and self.short_side < 2:
            raise ConfigError(f"short_side must be at least 2 pixels, got {self.short_side!r}")


@dataclass(frozen=True)
class FlowConfig:
    """Which flow algorithm runs where, with parameter overrides as sorted (name, value) pairs."""

    algo: str = "tvl1"
    device: str = "cpu"
    impl: str | None = None  # which implementation of algo on device (flowprep.flow.implementations); None: the default
    preset: str | None = None  # a named parameter set of the backend; None: its defaults
    params: tuple[tuple[str, Any], ...] = ()
    batch_size: int | None = None  # flows per launch for batched backends (both directions: half as many pairs);
    # None: the backend's default
    warp: bool = False  # TSN's warped flow: camera motion (a homography) removed first (flowprep.flow.warp)

    def __post_init__(self) -> None:
        object.__setattr__(self, "params", tuple(sorted(dict(self.params).items())))
        if self.batch_size is not None and self.batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {self.batch_size!r}")


@dataclass(frozen=True)
class StoreConfig:
    """How flow is quantized and written: bound (pixels), JPEG quality, layout, names, packing."""

    bound: float = DEFAULT_BOUND
    jpeg_quality: int = 95
    layout: str = "separate"
    flow_template: str | None = None  # None: the layout's default
    backward_template: str | None = None  # None: the layout's default backward names
    directions: tuple[str, ...] = ("forward",)  # which flows are written: forward (k -> k+1), backward (k+1 -> k)
    img_template: str = "img_{:05d}.jpg"
    start_index: int = 1
    rgb: bool = False
    pack: str = "dir"
    fsync: bool = True  # flush each output to the disk before it counts as finished (survives a power cut)

    def __post_init__(self) -> None:
        try:
            check_bound(self.bound)
            check_jpeg_quality(self.jpeg_quality)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        if self.layout not in LAYOUTS:
            raise ConfigError(f"layout must be one of {', '.join(LAYOUTS)}; got {self.layout!r}")
        if self.pack not in PACKS:
            raise ConfigError(f"pack must be one of {', '.join(PACKS)}; got {self.pack!r}")
        if self.start_index < 0:
            raise ConfigError(f"start_index must be >= 0, got {self.start_index!r}")
        asked = check_directions(self.directions)
        # One order, whatever order they were asked in: the files do not depend on it, and resume compares them.
        object.__setattr__(self, "directions", tuple(d for d in DIRECTIONS if d in asked))
        _check_template("flow_template", self.resolved_flow_template, _TEMPLATE_FIELDS[self.layout])
        _check_template("backward_template", self.resolved_backward_template, _TEMPLATE_FIELDS[self.layout])
        if self.resolved_backward_template == self.resolved_flow_template:
            raise ConfigError(f"backward_template and flow_template must differ; both are {self.resolved_flow_template!r}")
        _check_template("img_template", self.img_template, 1)
        written = {"flow_template": self.resolved_flow_template} if "forward" in self.directions else {}
        if "backward" in self.directions:
            written["backward_template"] = self.resolved_backward_template
        if self.rgb:
            written["img_template"] = self.img_template
        _check_apart(tuple(written.items()), self.start_index)

    @property
    def resolved_flow_template(self) -> str:
        return self.flow_template or DEFAULT_FLOW_TEMPLATES[self.layout]

    @property
    def resolved_backward_template(self) -> str:
        return self.backward_template or DEFAULT_BACKWARD_TEMPLATES[self.layout]


def check_directions(directions: Iterable[str]) -> tuple[str, ...]:
    """`directions` as a tuple, in the order given; ConfigError unless they are one or both of DIRECTIONS, once."""
    asked = tuple(directions)
    if not asked or any(d not in DIRECTIONS for d in asked) or len(set(asked)) != len(asked):
        raise ConfigError(f"directions must be one or both of {', '.join(DIRECTIONS)}; got {asked!r}")
    return asked


def template_pattern(template: str) -> re.Pattern[str]:
    """Regex matching the names `template` makes: the index field is captured as 'index' (digits, as written),
    and in a two-field template the first field as 'axis' (x or y)."""
    parsed = list(Formatter().parse(template))
    has_axis = sum(name is not None for _, name, _, _ in parsed) == 2
    parts, fields = [], 0
    for literal, name, _, _ in parsed:
        parts.append(re.escape(literal))
        if name is not None:
            parts.append("(?P<axis>[xy])" if has_axis and fields == 0 else r"(?P<index>\d+)")
            fields += 1
    return re.compile("".join(parts))


# Indices whose names are compared: the first thousand, then each length of number (where zero padding ends).
_SAMPLED_INDICES = (*range(1100), *(10 ** k + d for k in range(4, 10) for d in (-1, 0, 1)))


@lru_cache(maxsize=64)
def _names_of(template: str, start_index: int) -> tuple[str, ...]:
    axes = ("x", "y") if template_pattern(template).groupindex.get("axis") else (None,)
    return tuple(template.format(*(() if axis is None else (axis,)), start_index + i)
                 for i in _SAMPLED_INDICES for axis in axes)


def _makes(template: str, name: str, start_index: int) -> bool:
    """Whether `template` gives `name` for some index >= start_index (and axis x or y)."""
    found = template_pattern(template).fullmatch(name)
    if found is None or int(found["index"]) < start_index:
        return False
    axis = found.groupdict().get("axis")
    return template.format(*(() if axis is None else (axis,)), int(found["index"])) == name


@lru_cache(maxsize=64)
def _check_apart(items: tuple[tuple[str, str], ...], start_index: int) -> None:
    """ConfigError when two of these templates ((option name, template) pairs) can name the same file: the later
    one written would replace the other's (an RGB frame overwritten by flow). Checked over the first thousand
    indices and at every change of number length, which is where zero-padded templates meet. (Cached: a check
    takes about 30 ms, and a program may build the same config many times.)"""
    for i, (name_a, a) in enumerate(items):
        for name_b, b in items[i + 1:]:
            shared = next((n for n in _names_of(a, start_index) if _makes(b, n, start_index)), None) or next(
                (n for n in _names_of(b, start_index) if _makes(a, n, start_index)), None)
            if shared is not None:
                raise ConfigError(f"{name_a} {a!r} and {name_b} {b!r} can name the same file, e.g. {shared!r}: "
                                  "choose templates whose names cannot meet")


def _check_template(name: str, template: str, fields: int) -> None:
    expected = f"a .jpg file name with {fields} '{{}}' field(s)" + (" (axis, then index)" if fields == 2 else " (the index)")
    try:
        count = sum(1 for _, f, _, _ in Formatter().parse(template) if f is not None)
    except ValueError as exc:
        raise ConfigError(f"{name} {template!r} is not a valid format string ({exc}); expected {expected}") from None
    if count != fields or "/" in template or not template.endswith((".jpg", ".jpeg")):
        raise ConfigError(f"{name} {template!r} must be {expected}")
    try:
        template.format(*(["x"] * (fields - 1) + [1]))
    except (ValueError, IndexError, KeyError) as exc:
        raise ConfigError(f"{name} {template!r} cannot be filled ({exc}); expected {expected}") from None


@dataclass(frozen=True)
class ExtractConfig:
    """Everything that decides one video's output; recorded in its meta.json."""

    decode: DecodeConfig = field(default_factory=DecodeConfig)
    flow: FlowConfig = field(default_factory=FlowConfig)
    store: StoreConfig = field(default_factory=StoreConfig)
