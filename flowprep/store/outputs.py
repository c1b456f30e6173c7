"""What is at an output path (finished, someone else's, a temporary), and the walk that finds every output of
a tree."""
from __future__ import annotations

import operator
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config import DIRECTIONS
from ..errors import OutputError
from .atomic import is_temporary
from .location import is_url
from .meta import META_NAME
from .naming import PACK_SUFFIX, Naming, output_path
from .readers import DirectoryReader, OutputReader, ZipReader, open_output

def finished_meta(base: str | os.PathLike, pack: str = "dir") -> dict[str, Any] | None:
    """meta.json of the finished output of form `pack` at `base`, or None if there is none. The form is checked:
    for video `a.zip.mp4` the directory `a.zip` is its output, and the file `a.zip` is video `a.mp4`'s pack."""
    return inspect_output(base, pack)[0]


def inspect_output(base: str | os.PathLike, pack: str = "dir") -> tuple[dict[str, Any] | None, str]:
    """(meta.json of the finished output of form `pack` at `base`, or None; why what is there is not finished).

    The reason is "" when nothing of that form is there; otherwise it names the file and the fault (a corrupt or
    missing meta.json, a zip that does not open), so that a run recomputing it can say what it replaces. On an
    object store (`base` a URL) only the zip form exists.
    """
    if is_url(base):
        from .objects import inspect_object  # imports this module (through the writers)

        return inspect_object(str(base)) if pack == "zip" else (None, "")
    final = output_path(base, pack)
    if not (final.is_dir() if pack == "dir" else final.is_file()):
        return None, ""
    try:
        with open_output(final) as reader:
            return reader.meta(), ""
    except OutputError as exc:
        return None, str(exc)


def not_ours_message(final: str | os.PathLike, problem: str) -> str:
    """Why the output at `final`, which is there but not finished (`problem`, from inspect_output), is left alone.

    flowprep renames only complete outputs into place, so such a folder or file is another tool's (or damaged):
    never deleted, not even by --overwrite."""
    return (f"{final} is there but is not a finished flowprep output ({problem}); flowprep does not delete what it "
            "did not write: move it away or remove it, then rerun")


FINISHED, UNFINISHED, TEMPORARY, UNREADABLE = "finished", "unfinished", "temporary", "unreadable"


@dataclass
class FoundOutput:
    """One thing find_outputs found: a video output, or a leftover that is none.

    kind: FINISHED (holds meta.json), UNFINISHED (holds files of the naming but no meta.json: an unfinished
    output, or one written by another tool), TEMPORARY (a killed run's temporary) or UNREADABLE (a .zip that
    does not open; `problem` says why).
    """

    path: Path | str  # a URL (str) on an object store
    kind: str
    names: list[str]  # file names in it (directory listing or zip members); [] for leftovers
    reader: OutputReader | None = None  # open until the walk moves on; None for leftovers
    problem: str = ""


def find_outputs(root: str | os.PathLike, naming: Naming = Naming()) -> Iterator[FoundOutput]:
    """Walk `root` (a directory, or itself one output; or an object store's prefix, a URL) and yield its video
    outputs and leftovers, parents before their subfolders, names sorted.

    The one rule: a directory or .zip holding meta.json is a finished output; one holding flow (either
    direction) or RGB frame files named by `naming` but no meta.json is unfinished (or another tool's); an output
    holds no further outputs. Hidden names are skipped, except flowprep's temporaries (``.name.flowprep-tmp-…``),
    yielded as TEMPORARY. A .zip is opened once, here: its reader comes with it and closes when the walk moves
    on. On an object store, paths are URLs (str): the prefix is listed once, folders are its '/'-separated
    names, and a pack is read by range requests.
    """
    patterns = (*(naming.flow_pattern(d) for d in DIRECTIONS), naming.img_pattern())

    def kind_of(names: list[str]) -> str | None:
        if META_NAME in names:
            return FINISHED
        return UNFINISHED if any(p.fullmatch(n) for n in names for p in patterns) else None

    def packs(paths: list[Any]) -> Iterator[FoundOutput]:
        for path in paths:
            try:
                reader = open_pack(path)
            except OutputError as exc:
                yield FoundOutput(path, UNREADABLE, [], problem=str(exc))
                continue
            with reader:
                names = reader.names()
                kind = kind_of(names)
                if kind is not None:
                    yield FoundOutput(path, kind, names, reader)

    if is_url(root):
        from .objects import ObjectDirectoryReader, ObjectZipReader, walk_objects  # imports this module

        root = str(root).rstrip("/")
        walk, join, open_pack, open_folder = walk_objects(root), "{}/{}".format, ObjectZipReader, ObjectDirectoryReader
        if root.endswith(PACK_SUFFIX):
            walk = iter([(root.rsplit("/", 1)[0], [], [root.rsplit("/", 1)[1]])])  # one pack: its folder's walk
    else:
        root = Path(root)
        if root.is_file():
            yield from packs([root] if root.suffix == PACK_SUFFIX else [])
            return
        walk, join, open_pack = ((Path(d), n, f) for d, n, f in os.walk(root)), operator.truediv, ZipReader
        open_folder = _local_folder
    for here, dirnames, filenames in walk:
        for name in sorted(dirnames + filenames):
            if is_temporary(name):
                yield FoundOutput(join(here, name), TEMPORARY, [])
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        kind = kind_of(filenames)
        if kind is not None:
            dirnames.clear()  # an output holds no further outputs
            yield FoundOutput(here, kind, sorted(filenames), open_folder(here, filenames))
            continue
        yield from packs([join(here, n) for n in sorted(filenames) if n.endswith(PACK_SUFFIX) and not n.startswith(".")])


def _local_folder(here: Path, names: list[str]) -> DirectoryReader:
    return DirectoryReader(here)  # it lists the folder itself when asked
