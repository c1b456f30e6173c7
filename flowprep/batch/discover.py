"""Discovery: the videos of a file, a directory tree, an object store's prefix or a list file (of paths or URLs),
and where each one's output goes."""
from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path, PurePath, PurePosixPath

from ..config import VIDEO_EXTENSIONS
from ..errors import ConfigError
from ..store import ObjectStore, is_url, parse_location
from ..store.objects import object_stamp
from .video import VideoJob

LIST_EXTENSIONS = (".txt", ".lst", ".list")
# mmaction2-style list lines carry "label" (or "num_frames label") columns after the video.
_LABEL_COLUMNS = re.compile(r"(\s+-?\d+)+$")

# (the video's path or URL, its path relative to the input's root, its listing's (bytes, mtime_ns) or None)
Found = tuple[str, PurePath, tuple[int, int] | None]


def discover(
    source: str | os.PathLike, out_root: str | os.PathLike, extensions: Sequence[str] = VIDEO_EXTENSIONS
) -> list[VideoJob]:
    """Jobs for a video file, a directory tree (searched recursively), an object store's prefix (one recursive
    listing) or object, or a list file of video paths or URLs.

    Outputs mirror the input tree: ``videos/Archery/v_1.avi`` -> ``out_root/Archery/v_1``, and
    ``s3://bucket/videos/Archery/v_1.avi`` -> ``out_root/Archery/v_1`` for the prefix ``s3://bucket/videos``
    (the same names, so shards and class folders are the same). List entries that are paths are relative to the
    list file's folder (or absolute); outputs mirror them relative to that folder. Entries that are URLs are
    mirrored below the deepest folder that holds them all (a list of one prefix's videos: as that prefix).
    A listed object's job carries its size and time (VideoJob.source_stamp). `out_root` may be an object store's
    URL (``s3://bucket/flow``): outputs are then URLs under it, and their jobs have no root to check (see
    VideoJob). ConfigError when the input is not there or cannot be listed (nothing has run).
    """
    store = parse_location(out_root)
    exts = tuple(e.lower() if e.startswith(".") else f".{e.lower()}" for e in extensions)
    found = _listed(ObjectStore(str(source)), exts) if is_url(source) else _local(Path(source), exts)
    jobs = []
    for video, relative, stamp in found:
        base = relative.with_suffix("").as_posix()
        if isinstance(store, ObjectStore):
            jobs.append(VideoJob(video, store.join(base), source_stamp=stamp))
        else:
            jobs.append(VideoJob(video, str(store / base), str(store), source_stamp=stamp))
    return jobs


def _local(source: Path, exts: tuple[str, ...]) -> list[Found]:
    if source.is_dir():
        # Strings, not Path objects, sorted by their parts as paths sort ("\0" below every other character keeps
        # a/b before a-b/c), with one string per key rather than a list of parts.
        videos = sorted(
            (os.path.join(dirpath, name)
             for dirpath, dirnames, filenames in os.walk(source)
             for name in filenames
             if name.lower().endswith(exts) and not name.startswith(".")),
            key=lambda path: path.replace(os.sep, "\0"))
        return [(video, _relative_path(Path(video), source), None) for video in videos]
    if source.is_file() and source.suffix.lower() in LIST_EXTENSIONS:
        entries = _read_list(source)
        urls = [entry for entry in entries if is_url(entry)]
        folder = _common_folder(urls)
        return [(entry, _relative_url(entry, folder), None) if is_url(entry) else
                (str(entry), _relative_path(Path(entry), source.parent), None) for entry in entries]
    if source.is_file():
        return [(str(source), PurePath(source.name), None)]
    raise ConfigError(f"input {str(source)!r} does not exist")


def _listed(prefix: ObjectStore, exts: tuple[str, ...]) -> list[Found]:
    """The videos under `prefix` (or the object it names), from one recursive listing, in the local walk's order
    and with its rules (hidden files left out), each with its size and time from that listing."""
    fs, key = prefix.filesystem(), prefix.key(prefix.url)
    try:
        listing = fs.find(key, detail=True)
    except FileNotFoundError as exc:  # a missing bucket
        raise ConfigError(f"input {prefix.url!r} does not exist ({exc})") from None
    except Exception as exc:  # noqa: BLE001 - the store's client's own error types
        raise ConfigError(f"input {prefix.url!r} cannot be listed ({type(exc).__name__}: {exc})") from None
    finally:
        fs.invalidate_cache(key)  # s3fs keeps what it listed; a run of a million videos has no use for it
    if list(listing) == [key]:  # the URL names one object: a video, as a local file would be
        return [(prefix.url, PurePosixPath(key.rsplit("/", 1)[-1]), object_stamp(listing[key]))]
    found = []
    for name, info in listing.items():
        relative = name[len(key) + 1:]
        base = relative.rsplit("/", 1)[-1]
        if info.get("type") == "file" and base.lower().endswith(exts) and not base.startswith("."):
            found.append((f"{prefix.protocol}://{name}", PurePosixPath(relative), object_stamp(info)))
    return sorted(found, key=lambda video: video[1].as_posix().replace("/", "\0"))


def _relative_path(video: Path, root: Path) -> PurePath:
    try:
        return video.relative_to(root)
    except ValueError:
        return PurePath(video.name)


def _common_folder(urls: Sequence[str]) -> str:
    """The deepest folder (bucket/key, without the protocol) holding every one of `urls`; "" for none."""
    folders = [url.split("://", 1)[1].split("/")[:-1] for url in urls]
    return "/".join(os.path.commonprefix(folders)) if folders else ""


def _relative_url(url: str, folder: str) -> PurePosixPath:
    path = url.split("://", 1)[1]
    return PurePosixPath(path[len(folder) + 1:] if folder else path)


def _read_list(path: Path) -> list[str | Path]:
    """The videos of a list file: URLs as they are (their protocols' packages checked: a usage error before any
    work), paths relative to the list's folder."""
    videos: list[str | Path] = []
    protocols = set()
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if is_url(line):
            url = _LABEL_COLUMNS.sub("", line)  # not a URL request per entry: the columns are told by their form
            protocol = url.split("://", 1)[0].lower()
            if protocol not in protocols:
                ObjectStore(url)
                protocols.add(protocol)
            videos.append(url)
            continue
        entry = path.parent / line
        # mmaction2-style lists carry "path label" columns after the path.
        if not entry.exists() and len(line.split()) > 1:
            entry = path.parent / line.split()[0]
        videos.append(entry)
    return videos
