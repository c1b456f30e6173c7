"""Discovery: the videos of a file, a directory tree or a list file, and where each one's output goes."""
from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from ..config import VIDEO_EXTENSIONS
from ..errors import ConfigError
from ..store import ObjectStore, parse_location, require_local
from .video import VideoJob

LIST_EXTENSIONS = (".txt", ".lst", ".list")


def discover(
    source: str | os.PathLike, out_root: str | os.PathLike, extensions: Sequence[str] = VIDEO_EXTENSIONS
) -> list[VideoJob]:
    """Jobs for a video file, a directory tree (searched recursively) or a list file of video paths.

    Outputs mirror the input tree: ``videos/Archery/v_1.avi`` -> ``out_root/Archery/v_1``. List entries are
    relative to the list file's folder (or absolute); outputs mirror them relative to that folder. `out_root`
    may be an object store's URL (``s3://bucket/flow``): outputs are then URLs under it, and their jobs have no
    root to check (see VideoJob).
    """
    source, store = require_local(source, "input"), parse_location(out_root)
    exts = tuple(e.lower() if e.startswith(".") else f".{e.lower()}" for e in extensions)
    if source.is_dir():
        # Strings, not Path objects, sorted by their parts as paths sort ("\0" below every other character keeps
        # a/b before a-b/c), with one string per key rather than a list of parts.
        videos: list[str | Path] = sorted(
            (os.path.join(dirpath, name)
             for dirpath, dirnames, filenames in os.walk(source)
             for name in filenames
             if name.lower().endswith(exts) and not name.startswith(".")),
            key=lambda path: path.replace(os.sep, "\0"))
        root = source
    elif source.is_file() and source.suffix.lower() in LIST_EXTENSIONS:
        videos, root = _read_list(source), source.parent
    elif source.is_file():
        videos, root = [source], source.parent
    else:
        raise ConfigError(f"input {str(source)!r} does not exist")
    jobs = []
    for video in map(Path, videos):
        try:
            relative = video.relative_to(root)
        except ValueError:
            relative = Path(video.name)
        if isinstance(store, ObjectStore):
            jobs.append(VideoJob(str(video), store.join(relative.with_suffix("").as_posix())))
        else:
            jobs.append(VideoJob(str(video), str(store / relative.with_suffix("")), str(store)))
    return jobs


def _read_list(path: Path) -> list[Path]:
    videos = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        entry = path.parent / line
        # mmaction2-style lists carry "path label" columns after the path.
        if not entry.exists() and len(line.split()) > 1:
            entry = path.parent / line.split()[0]
        videos.append(entry)
    return videos
