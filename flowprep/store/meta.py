"""meta.json: the fields every flowprep output records, their checks, and the settings as recorded."""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..config import DEFAULT_BACKWARD_TEMPLATES, LAYOUTS
from ..errors import OutputError
from ..flow import legacy_impl

META_NAME = "meta.json"
META_FORMAT = "flowprep/1"
# Fields every flowprep meta.json has, with their types: readers rely on these (bool is no int here).
_META_FIELDS = {"frames": int, "flow_pairs": int, "settings": dict}
_SETTINGS_FIELDS = {"layout": str, "flow_template": str, "img_template": str, "start_index": int,
                    "bound": (int, float)}


def check_meta(meta: Any, where: Path | str) -> None:
    """OutputError naming `where` unless `meta` is a flowprep meta.json with the fields every reader relies on:
    format, frames, flow_pairs, and settings with layout, flow_template, img_template, start_index, bound."""
    if not isinstance(meta, dict) or meta.get("format") != META_FORMAT:
        raise OutputError(f"{where}: not a flowprep meta.json (format {META_FORMAT!r} expected)")
    for key, kind in _META_FIELDS.items():
        meta_field(meta, key, kind, where)
    for key, kind in _SETTINGS_FIELDS.items():
        meta_field(meta["settings"], key, kind, where, "settings.")
    if meta["settings"]["layout"] not in LAYOUTS:
        raise OutputError(f"{where}: settings.layout is {meta['settings']['layout']!r}, expected one of "
                          f"{', '.join(LAYOUTS)}")


def meta_field(fields: dict[str, Any], key: str, kind: type | tuple[type, ...], where: Path, prefix: str = ""
               ) -> Any:
    """fields[key] if it is there and of `kind` (bool does not pass for a number); OutputError naming `where`
    and the field otherwise. `prefix` names the enclosing object, e.g. 'settings.'."""
    if key not in fields:
        raise OutputError(f"{where}: missing or invalid field {prefix}{key}: it is missing")
    value = fields[key]
    if not isinstance(value, kind) or isinstance(value, bool):
        names = "/".join(k.__name__ for k in (kind if isinstance(kind, tuple) else (kind,)))
        raise OutputError(f"{where}: missing or invalid field {prefix}{key}: {value!r} is not a {names}")
    return value


def recorded_settings(settings: Mapping[str, Any]) -> dict[str, Any]:
    """meta.json['settings'] as pipeline.settings_of gives them today: trees written before backward and warped
    flow existed lack those fields, and hold unwarped forward flow only; trees from before `impl` were computed
    by the one implementation there was (OpenCV's on the CPU)."""
    filled = {"directions": ["forward"], "warp": False, **settings}
    if "impl" not in filled:  # written before an algorithm could have more than one implementation on a device
        filled["impl"] = legacy_impl(str(filled.get("algorithm")), str(filled.get("device", "cpu")))
    if not filled.get("backward_template") and filled.get("layout") in DEFAULT_BACKWARD_TEMPLATES:
        filled["backward_template"] = DEFAULT_BACKWARD_TEMPLATES[filled["layout"]]
    return filled
