"""The index objects of an object-store prefix: what a run knows of the finished packs it wrote or skipped, so
that the next run finds finished videos by one listing of the prefix instead of reading every pack's meta.json.

A listing gives each object's key, size and ETag but no metadata, so each run writes, with its reports, an
index at the prefix's root (index.json for a run of the whole list, index.shard-K-of-N.json for a shard's):
per pack, its name relative to the prefix, its tag (size and ETag, store.objects.object_tag: from the listing
the pack's meta.json was read after, or, for the packs the run uploaded, from one closing listing of the prefix
instead of a HEAD per video) and the meta.json fields a rerun compares (settings, source_file, flow_pairs,
frames). Like every run on an object store, this takes one writer per prefix at a time: a pack replaced by
another writer between this run's upload and its closing listing would be recorded with this run's fields.

An index is never trusted alone: an entry counts only for a pack that the run's own listing shows with the
entry's tag. A pack that is gone, or was replaced (another ETag), is therefore never taken for finished by a
stale or lying index; it is looked at as if there were no index. An unreadable index is ignored the same way.
"""
from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # shards imports video, which imports this module
    from .shards import Shard

INDEX_NAME = "index.json"
INDEX_FORMAT = "flowprep-index/1"
INDEX_PATTERN = re.compile(r"index(\.shard-\d+-of-\d+)?\.json")  # every run's index, of any shard
# The meta.json fields an entry keeps: those batch.video's comparison of a finished pack reads.
ENTRY_FIELDS = ("settings", "source_file", "flow_pairs", "frames")


def index_name(shard: Shard) -> str:
    """index.json for a run of the whole list, index.shard-K-of-N.json for shard K/N."""
    return INDEX_NAME if shard.count == 1 else f"index.{shard.tag}.json"


def index_entry(meta: Mapping[str, Any], tag: str | None) -> dict[str, Any]:
    """The entry of a finished pack whose meta.json is `meta` and whose tag is `tag` (None: to be taken from the
    run's closing listing)."""
    return {"tag": tag, **{name: meta.get(name) for name in ENTRY_FIELDS}}


def encode_index(entries: Mapping[str, Mapping[str, Any]]) -> bytes:
    """The index object of `entries` ({pack name: entry with a tag}), names sorted; the settings, alike for most packs of a
    run, are kept once in a table that entries point into (20,000 entries take about 4 MB, not 40)."""
    table: dict[str, int] = {}
    packs = {}
    for name in sorted(entries):
        entry = dict(entries[name])
        settings = json.dumps(entry["settings"], sort_keys=True)
        entry["settings"] = table.setdefault(settings, len(table))
        packs[name] = entry
    return json.dumps({"format": INDEX_FORMAT, "settings": [json.loads(s) for s in table], "packs": packs},
                      separators=(",", ":")).encode()


def decode_index(data: bytes) -> dict[str, dict[str, Any]]:
    """{pack name: entry} of an index object; {} when it is not one (damaged, another format): its packs are then
    read as if it were not there."""
    try:
        index = json.loads(data)
        if index.get("format") != INDEX_FORMAT:
            return {}
        table = index["settings"]
        return {name: {**entry, "settings": table[entry["settings"]]} for name, entry in index["packs"].items()
                if isinstance(entry.get("tag"), str)}
    except (ValueError, TypeError, KeyError, IndexError, AttributeError):
        return {}


def vouched(listing: Mapping[str, str | None], indexes: Iterable[Mapping[str, Mapping[str, Any]]]
            ) -> dict[str, dict[str, Any]]:
    """{pack name: entry} of the packs the listing shows with the tag an index recorded for them; every other
    pack (missing, replaced, or in no index) is left out."""
    found: dict[str, dict[str, Any]] = {}
    for entries in indexes:
        for name, entry in entries.items():
            if listing.get(name) is not None and listing[name] == entry["tag"]:
                found[name] = entry
    return found
