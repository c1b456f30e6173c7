"""A tree that holds every kind of thing verify and list meet, with names whose sorted order is not the walk's,
and the outputs of `flowprep verify` and `flowprep list` on it (and on a real extracted tree) as main printed them
before they streamed (commit 1b415c9, when both held a record per video and sorted at the end; their code there
is cb201c3's): tests/golden/.

Names that order differently: a folder's packs and its subfolders interleave (P/a.zip, P/b/v, P/c.zip), a class
folder is a prefix of others (drinking, drinking beer, drinking shots: list sorts 'drinking beer/v' before
'drinking/v', verify sorts by path components), a pack and a folder share a name (Talk/a, Talk/a.zip: list keeps
the folder), and a video lies in the root (class '').
"""
from __future__ import annotations

import json
import os
import shutil
import zipfile
from contextlib import nullcontext
from pathlib import Path

import numpy as np
from conftest import VIDEOS, run_cli
from fake_trees import SIZE, flow_files, write_foreign_video, write_video

from flowprep.store import Naming, encode_jpeg

GOLDEN = Path(__file__).parent / "golden"
WORK_MARK = "{work}"  # where the folder holding the trees stood in the printed output
CLIP = VIDEOS / "carphone_pristine.mp4"


def mixed_tree(root: Path) -> Path:
    """Finished outputs (folders and packs, separate and xy0, backward flow) beside every leftover verify names
    (unfinished folders and packs, a temporary, a zip that does not open) and broken videos (a file missing, a
    truncated JPEG, one of the wrong size, more than 10 files missing, clipped flow, a source that ended early)."""
    finished = [
        write_video(root / "Talk" / "a", 2, pack="zip"),
        # The writer of Talk/a.zip takes Talk/a for its own: the folder is written aside, then moved there.
        write_video(root / "Talk" / "a-folder", 3, rgb_frames=4).rename(root / "Talk" / "a"),
        write_video(root / "Talk" / "a-b", 4, layout="xy0", pack="zip"),
        write_video(root / "Talk" / "a b" / "v1", 2),
        *(write_video(root / name / "v1", 2) for name in ("drinking", "drinking beer", "drinking shots")),
        *(write_video(root / "P" / name, 2, pack="zip") for name in ("a", "c")),
        *(write_video(root / "P" / name / "v", 3) for name in ("b", "d")),
        write_video(root / "zzz", 2, backward=True),
    ]
    (root / "Talk" / "b.zip").write_bytes(b"not a zip")
    write_foreign_video(root / "Talk" / "c", 2, Naming())
    write_foreign_video(root / "Talk" / ".d.flowprep-tmp-0123456789ab", 2, Naming())
    with zipfile.ZipFile(root / "Talk" / "unfinished.zip", "w") as pack:
        for name, data in flow_files(Naming(), 2):
            pack.writestr(name, data)
    (root / "Q").mkdir()
    (root / "Q" / "b.zip").write_bytes(b"not a zip either")
    write_foreign_video(root / "Q" / "a", 3, Naming())
    (root / "empty").mkdir()
    (root / "report.json").write_text("{}")

    bad = root / "Bad"
    finished += [write_video(bad / name, 3) for name in ("missing_y", "truncated", "wrong_size")]
    (bad / "missing_y" / "flow_y_00002.jpg").unlink()
    truncated = bad / "truncated" / "flow_x_00003.jpg"
    truncated.write_bytes(truncated.read_bytes()[:100])
    (bad / "wrong_size" / "flow_x_00001.jpg").write_bytes(encode_jpeg(np.full((10, 10), 128, np.uint8), 95))
    finished += [write_video(bad / "clipped", 2, codes=np.zeros((2, SIZE[1], SIZE[0], 2), np.uint8)),
                 write_video(bad / "packed", 2, pack="zip", backward=True, rgb_frames=3)]
    for path in finished:
        _patch_meta(path, output_size=list(SIZE), settings_jpeg_quality=95)
    _patch_meta(write_video(bad / "many_missing", 2), output_size=list(SIZE), settings_jpeg_quality=95,
                flow_pairs=15, frames=16)
    _patch_meta(write_video(bad / "ended", 2), output_size=list(SIZE), settings_jpeg_quality=95,
                stream_problem="videos/ended.mp4: pyav decoding ended at 1.07 s, but the container announces 4.00 s")
    return root


def _patch_meta(output: Path, **fields: object) -> None:
    """Set meta.json fields of a folder or .zip output (settings_NAME: settings.NAME); fake_trees' meta.json
    holds what readers need, verify wants the size and quality too."""
    with zipfile.ZipFile(output) if output.suffix == ".zip" else nullcontext() as pack:
        meta = json.loads(pack.read("meta.json") if pack else (output / "meta.json").read_text())
        members = [(info, pack.read(info)) for info in pack.infolist() if info.filename != "meta.json"] if pack else []
    for key, value in fields.items():
        if key.startswith("settings_"):
            meta["settings"][key.removeprefix("settings_")] = value
        else:
            meta[key] = value
    text = json.dumps(meta, indent=1, sort_keys=True)
    if output.suffix != ".zip":
        (output / "meta.json").write_text(text)
        return
    with zipfile.ZipFile(output, "w") as pack:
        for info, data in members:
            pack.writestr(info, data)
        pack.writestr("meta.json", text)


def real_tree(root: Path) -> Path:
    """The real carphone clip extracted by `python -m flowprep extract --algo dis` into a folder (Talk) and an xy0
    pack with RGB frames at 10 fps (Packed), and a copy of the folder with a flow file deleted and a JPEG cut
    short (Broken)."""
    for folder, options in (("Talk", []), ("Packed", ["--pack", "zip", "--layout", "xy0", "--rgb", "--fps", "10"])):
        result = run_cli("extract", str(CLIP), str(root / folder), "--algo", "dis", "-q", *options)
        assert result.returncode == 0, result.stderr
    broken = Path(shutil.copytree(root / "Talk" / CLIP.stem, root / "Broken" / CLIP.stem))
    (broken / "flow_y_00007.jpg").unlink()
    cut = broken / "flow_x_00003.jpg"
    cut.write_bytes(cut.read_bytes()[:400])
    return root


def linked_copies(model: Path, tree: Path, count: int) -> Path:
    """`tree` holding `count` copies of the video output folder `model` in 10 class folders (class_0/v00000,
    class_1/v00001, ...), their files hard-linked: a large tree for the memory tests in little space."""
    for v in range(count):
        target = tree / f"class_{v % 10}" / f"v{v:05d}"
        target.mkdir(parents=True)
        for name in os.listdir(model):
            os.link(model / name, target / name)
    return tree


def golden(name: str, work: Path) -> str:
    """tests/golden/NAME with the folder that held the trees (and the class and split files) put back."""
    return (GOLDEN / name).read_text().replace(WORK_MARK, str(work))
