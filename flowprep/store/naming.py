"""File names of one video's output, and the paths of its two forms (a folder, or a .zip pack)."""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config import DEFAULT_BACKWARD_TEMPLATES, DEFAULT_FLOW_TEMPLATES, StoreConfig, template_pattern
from .meta import recorded_settings

PACK_SUFFIX = ".zip"


@dataclass(frozen=True)
class Naming:
    """File names of one video's output; indices passed in are 0-based, names start at `start_index`.

    `direction` is "forward" (flow k -> k+1, flow_template) or "backward" (k+1 -> k, backward_template).
    """

    layout: str = "separate"
    flow_template: str = DEFAULT_FLOW_TEMPLATES["separate"]
    img_template: str = StoreConfig.img_template
    start_index: int = StoreConfig.start_index
    backward_template: str = DEFAULT_BACKWARD_TEMPLATES["separate"]

    @classmethod
    def from_config(cls, store: StoreConfig) -> Naming:
        return cls(store.layout, store.resolved_flow_template, store.img_template, store.start_index,
                   store.resolved_backward_template)

    @classmethod
    def from_meta(cls, meta: dict[str, Any]) -> Naming:
        # Trees written before backward flow existed have no backward_template: they hold forward flow only.
        s = recorded_settings(meta["settings"])
        return cls(s["layout"], s["flow_template"], s["img_template"], s["start_index"], s["backward_template"])

    def template(self, direction: str = "forward") -> str:
        """The flow file template of `direction`."""
        if direction == "forward":
            return self.flow_template
        if direction == "backward":
            return self.backward_template
        raise ValueError(f"direction must be 'forward' or 'backward', got {direction!r}")

    def flow(self, axis: str, index: int, direction: str = "forward") -> str:
        """Name of the `axis` ('x' or 'y') image of pair `index` in the separate layout."""
        return self.template(direction).format(axis, index + self.start_index)

    def xy(self, index: int, direction: str = "forward") -> str:
        """Name of the 3-channel (x, y, 0) image of pair `index` in the xy0 layout."""
        return self.template(direction).format(index + self.start_index)

    def img(self, index: int) -> str:
        """Name of RGB frame `index`."""
        return self.img_template.format(index + self.start_index)

    def pair_names(self, index: int, direction: str = "forward") -> list[str]:
        """The files of pair `index`: [x, y] in the separate layout, [xy] in xy0 (encode_flow_codes' order)."""
        if self.layout == "xy0":
            return [self.xy(index, direction)]
        return [self.flow("x", index, direction), self.flow("y", index, direction)]

    def flow_pattern(self, direction: str = "forward") -> re.Pattern[str]:
        """Regex matching this naming's flow file names (groups: 'axis' in the separate layout, 'index')."""
        return template_pattern(self.template(direction))

    def img_pattern(self) -> re.Pattern[str]:
        """Regex matching this naming's RGB frame file names (group 'index')."""
        return template_pattern(self.img_template)


def output_path(base: str | os.PathLike, pack: str) -> Path:
    """Where a video's output lives: the directory `base`, or `base.zip` for zip packs."""
    base = Path(base)
    return base.with_name(base.name + PACK_SUFFIX) if pack == "zip" else base


def output_name(base: str, pack: str) -> str:
    """output_path(base, pack) as a string, for `base` as discover writes it: no Path built (a million jobs)."""
    return base + PACK_SUFFIX if pack == "zip" else base


def other_pack(pack: str) -> str:
    """The other output form: 'zip' for 'dir' and 'dir' for 'zip'."""
    return "dir" if pack == "zip" else "zip"
