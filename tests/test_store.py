"""Store stage: atomic writers (directory and zip), readers for both forms, stale temporaries."""
from __future__ import annotations

import json
import os
import re
import zipfile

import numpy as np
import pytest

from flowprep.config import StoreConfig
from flowprep.errors import ConfigError, OutputError
from flowprep.store import (
    META_FORMAT,
    META_NAME,
    TEMP_MARKER,
    DirectoryWriter,
    Naming,
    FINISHED,
    TEMPORARY,
    UNFINISHED,
    UNREADABLE,
    encode_jpeg,
    find_outputs,
    finished_meta,
    open_output,
    open_writer,
    output_path,
    remove_temps_of_outputs,
    temp_path,
)

META = {"format": META_FORMAT, "frames": 3, "flow_pairs": 2,
        "settings": {"layout": "separate", "flow_template": "flow_{}_{:05d}.jpg", "img_template": "img_{:05d}.jpg",
                     "start_index": 1, "bound": 20.0}}


def _files() -> dict[str, bytes]:
    rng = np.random.default_rng(0)
    naming = Naming()
    files = {}
    for index in range(2):
        for axis in "xy":
            files[naming.flow(axis, index)] = encode_jpeg(rng.integers(0, 256, (24, 32), np.uint8), 95)
    return files


def _temps(root):
    return [p for p in root.rglob("*") if TEMP_MARKER in p.name]


def test_naming_is_one_based_by_default_and_follows_templates():
    assert Naming().flow("x", 0) == "flow_x_00001.jpg"
    assert Naming().img(9) == "img_00010.jpg"
    assert Naming("xy0", "flow_{:05d}.jpg").xy(0) == "flow_00001.jpg"
    assert Naming(flow_template="{}_{:04d}.jpg", start_index=0).flow("y", 3) == "y_0003.jpg"


@pytest.mark.parametrize("pack", ["dir", "zip"])
def test_writer_is_invisible_until_commit_and_readers_agree(tmp_path, pack):
    base = tmp_path / "Class" / "video"
    files = _files()
    writer = open_writer(base, pack)
    for name, data in files.items():
        writer.write(name, data)
    assert not output_path(base, pack).exists()
    assert finished_meta(base, pack) is None
    assert len(_temps(tmp_path)) == 1
    writer.commit(META)
    assert _temps(tmp_path) == []
    with open_output(base) as reader:  # the base path finds either form
        assert reader.names() == sorted([*files, META_NAME])
        assert all(reader.read(name) == data for name, data in files.items())
        assert reader.meta() == META
        image = reader.read_image("flow_x_00001.jpg")
        assert image.shape == (24, 32) and image.dtype == np.uint8
        with pytest.raises(OutputError, match="flow_x_00099.jpg"):
            reader.read("flow_x_00099.jpg")
    assert finished_meta(base, pack) == META


def test_zip_pack_is_stored_with_meta_last_and_byte_identical_across_runs(tmp_path):
    packs = []
    for run in ("a", "b"):
        with open_writer(tmp_path / run / "video", "zip") as writer:
            for name, data in _files().items():
                writer.write(name, data)
            packs.append(writer.commit(META))
    with zipfile.ZipFile(packs[0]) as pack:
        infos = pack.infolist()
        assert all(info.compress_type == zipfile.ZIP_STORED for info in infos)
        assert infos[-1].filename == META_NAME
    assert packs[0].read_bytes() == packs[1].read_bytes()


@pytest.mark.parametrize("pack", ["dir", "zip"])
def test_error_inside_the_writer_leaves_nothing(tmp_path, pack):
    with pytest.raises(RuntimeError):
        with open_writer(tmp_path / "video", pack) as writer:
            writer.write("flow_x_00001.jpg", b"partial")
            raise RuntimeError("decoder died")
    assert list(tmp_path.iterdir()) == []


def test_commit_replaces_an_older_directory_whole(tmp_path):
    base = tmp_path / "video"
    with open_writer(base) as writer:
        writer.write("flow_x_00001.jpg", b"old")
        writer.write("flow_x_00002.jpg", b"old")
        writer.commit({**META, "flow_pairs": 2})
    with open_writer(base) as writer:
        writer.write("flow_x_00001.jpg", b"new")
        writer.commit({**META, "flow_pairs": 1})
    assert sorted(p.name for p in base.iterdir()) == ["flow_x_00001.jpg", META_NAME]
    assert (base / "flow_x_00001.jpg").read_bytes() == b"new"
    assert _temps(tmp_path) == []


def test_directory_whose_files_vanished_is_never_committed(tmp_path):
    # What an orphaned worker sees when the next run's cleanup empties its temporary under it.
    writer = DirectoryWriter(tmp_path / "video")
    writer.write("flow_x_00001.jpg", b"x")
    writer.write("flow_y_00001.jpg", b"y")
    (writer.temp / "flow_x_00001.jpg").unlink()
    with pytest.raises(OutputError, match="vanished"):
        with writer:
            writer.commit(META)
    assert not (tmp_path / "video").exists()
    assert _temps(tmp_path) == []


def test_unfinished_outputs_are_not_finished(tmp_path):
    no_meta = tmp_path / "no_meta"
    no_meta.mkdir()
    (no_meta / "flow_x_00001.jpg").write_bytes(b"x")
    bad_json = tmp_path / "bad_json"
    bad_json.mkdir()
    (bad_json / META_NAME).write_text("{not json")
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / META_NAME).write_text(json.dumps({"format": "other"}))
    (tmp_path / "cut.zip").write_bytes(b"PK\x03\x04 truncated")
    for base, pack in [(no_meta, "dir"), (bad_json, "dir"), (foreign, "dir"), (tmp_path / "cut", "zip"),
                       (tmp_path / "absent", "dir")]:
        assert finished_meta(base, pack) is None, base
    with pytest.raises(OutputError, match="bad_json"):
        open_output(bad_json).meta()
    with pytest.raises(OutputError, match="no flow output"):
        open_output(tmp_path / "absent")


@pytest.mark.parametrize("pack", ["dir", "zip"])
def test_meta_without_settings_is_an_error_naming_the_file(tmp_path, pack):
    with open_writer(tmp_path / "video", pack) as writer:
        final = writer.commit({key: value for key, value in META.items() if key != "settings"})
    expected = re.escape(f"{final / META_NAME}: missing or invalid field settings")
    with open_output(final) as reader, pytest.raises(OutputError, match=expected):
        reader.meta()
    assert finished_meta(tmp_path / "video", pack) is None


def test_meta_field_of_the_wrong_type_is_an_error_naming_it(tmp_path):
    with open_writer(tmp_path / "video") as writer:
        final = writer.commit({**META, "settings": {**META["settings"], "start_index": "1"}})
    with pytest.raises(OutputError, match=r"meta\.json: missing or invalid field settings\.start_index"):
        open_output(final).meta()


def test_find_outputs_follows_one_rule_for_directories_and_zips(tmp_path):
    for base, pack in [(tmp_path / "A" / "done", "dir"), (tmp_path / "A" / "packed", "zip")]:
        with open_writer(base, pack) as writer:
            writer.write("flow_x_00001.jpg", b"x")
            writer.commit(META)
    (tmp_path / "A" / "done" / "inner").mkdir()  # an output holds no further outputs
    (tmp_path / "A" / "done" / "inner" / META_NAME).write_text("{}")
    (tmp_path / "B" / "half").mkdir(parents=True)
    (tmp_path / "B" / "half" / "img_00001.jpg").write_bytes(b"x")
    with zipfile.ZipFile(tmp_path / "B" / "foreign.zip", "w") as pack:
        pack.writestr("flow_x_00001.jpg", b"x")
    with zipfile.ZipFile(tmp_path / "B" / "other.zip", "w") as pack:
        pack.writestr("notes.txt", b"x")
    (tmp_path / "B" / "cut.zip").write_bytes(b"PK\x03\x04 truncated")
    (tmp_path / "B" / "cover.jpg").write_bytes(b"x")
    (tmp_path / ".hidden" / "v").mkdir(parents=True)
    (tmp_path / ".hidden" / "v" / META_NAME).write_text("{}")
    (tmp_path / f".v{TEMP_MARKER}0123456789ab").mkdir()
    found = {f.path.relative_to(tmp_path).as_posix(): f for f in find_outputs(tmp_path)}
    assert {path: f.kind for path, f in found.items()} == {
        "A/done": FINISHED, "A/packed.zip": FINISHED, "B/half": UNFINISHED, "B/foreign.zip": UNFINISHED,
        "B/cut.zip": UNREADABLE, f".v{TEMP_MARKER}0123456789ab": TEMPORARY}
    assert found["A/done"].names == ["flow_x_00001.jpg", META_NAME]
    assert "not a readable zip pack" in found["B/cut.zip"].problem


def test_zip_reader_checks_stored_members_and_reads_other_zips(tmp_path):
    files = _files()
    writer = open_writer(tmp_path / "v", "zip")
    for name, data in files.items():
        writer.write(name, data)
    pack = writer.commit(META)
    # Other tools' packs: deflated members, and local headers whose extra field the central directory lacks.
    with zipfile.ZipFile(tmp_path / "deflated.zip", "w", zipfile.ZIP_DEFLATED) as other:
        for name, data in files.items():
            other.writestr(name, data)
    with zipfile.ZipFile(tmp_path / "extra.zip", "w") as other:
        for name, data in files.items():
            info = zipfile.ZipInfo(name)
            info.extra = b"\xca\xfe\x04\x00abcd"
            other.writestr(info, data)
    for path in (pack, tmp_path / "deflated.zip", tmp_path / "extra.zip"):
        with open_output(path) as reader:
            assert all(reader.read(name) == data for name, data in files.items()), path
    # A flipped byte inside a stored JPEG still decodes as some image: the CRC-32 catches it.
    name = "flow_y_00002.jpg"
    raw = bytearray(pack.read_bytes())
    position = raw.index(files[name]) + len(files[name]) // 2
    raw[position] ^= 0x40
    pack.write_bytes(bytes(raw))
    with open_output(pack) as reader:
        assert reader.read("flow_x_00001.jpg") == files["flow_x_00001.jpg"]
        with pytest.raises(OutputError, match=rf"v\.zip/{name}: truncated or corrupt in the zip pack"):
            reader.read(name)


def test_remove_temps_of_outputs_tells_names_and_forms_apart(tmp_path):
    mine = [tmp_path / f".v1{TEMP_MARKER}0123456789ab", tmp_path / f".v1.zip{TEMP_MARKER}0123456789ab"]
    others = [tmp_path / f".v10{TEMP_MARKER}0123456789ab", tmp_path / "v1",
              tmp_path / "not.v1.flowprep-tmp-but-visible"]  # not hidden: a user's file, kept
    for path in mine[:1] + others:
        path.mkdir()
    mine[1].write_bytes(b"PK")
    assert remove_temps_of_outputs([tmp_path / "v1"]) == [mine[0]]
    assert remove_temps_of_outputs([tmp_path / "v1.zip"]) == [mine[1]]
    assert not any(path.exists() for path in mine) and all(path.exists() for path in others)


def test_remove_temps_of_outputs_removes_only_those_outputs_temporaries(tmp_path):
    """Other shards' work in progress sits beside ours: only the temporaries of the outputs named go."""
    for folder in ("A", "B"):
        (tmp_path / folder).mkdir()
    temp = temp_path(tmp_path / "A" / "v1")
    assert temp.name.startswith(f".v1{TEMP_MARKER}") and f"-{os.getpid()}-" in temp.name  # names its owner
    mine = [temp, tmp_path / "B" / f".v2.zip{TEMP_MARKER}host-1-0123abcd"]
    others = [tmp_path / "A" / f".v10{TEMP_MARKER}host-2-0123abcd", tmp_path / "A" / f".v2.zip{TEMP_MARKER}h-3-01",
              tmp_path / "B" / f".v1{TEMP_MARKER}host-4-0123abcd", tmp_path / "A" / "v1"]
    for path in mine + others:
        path.mkdir()
    removed = remove_temps_of_outputs([tmp_path / "A" / "v1", tmp_path / "B" / "v2.zip", tmp_path / "C" / "v3"])
    assert sorted(removed) == sorted(mine)
    assert not any(path.exists() for path in mine) and all(path.exists() for path in others)


@pytest.mark.parametrize("pack", ["dir", "zip"])
def test_commit_removes_a_finished_output_of_the_other_form_only(tmp_path, pack):
    other = "dir" if pack == "zip" else "zip"
    with open_writer(tmp_path / "finished", other) as writer:
        writer.write("flow_x_00001.jpg", b"x")
        writer.commit(META)
    foreign = output_path(tmp_path / "foreign", other)  # no meta.json: not flowprep's, e.g. the user's own files
    if other == "dir":
        foreign.mkdir()
        (foreign / "notes.txt").write_text("mine")
    else:
        with zipfile.ZipFile(foreign, "w") as z:
            z.writestr("notes.txt", "mine")
    for base in (tmp_path / "finished", tmp_path / "foreign"):
        with open_writer(base, pack) as writer:
            writer.write("flow_x_00001.jpg", b"y")
            writer.commit(META)
    assert not output_path(tmp_path / "finished", other).exists() and foreign.exists()
    assert open_output(tmp_path / "finished").read("flow_x_00001.jpg") == b"y"


@pytest.mark.parametrize("store, names", [
    (dict(flow_template="{}_{:05d}.jpg", img_template="x_{:05d}.jpg", rgb=True), "'x_00001.jpg'"),
    (dict(backward_template="img_{:05d}.jpg", img_template="img_{:05d}.jpg", rgb=True,
          directions=("forward", "backward"), layout="xy0"), "'img_00001.jpg'"),
    (dict(flow_template="f{}{:d}.jpg", backward_template="f{}1{:d}.jpg", directions=("forward", "backward")),
     "'fx11.jpg'"),  # forward 11 and backward 1: only two-digit indices meet
    (dict(flow_template="{}_{:03d}.jpg", img_template="x_{:05d}.jpg", rgb=True), "'x_10000.jpg'"),
], ids=["flow-vs-rgb", "xy0-backward-vs-rgb", "forward-vs-backward-past-9", "widths-meet-at-10000"])
def test_templates_whose_names_can_meet_are_refused_naming_a_shared_name(store, names):
    with pytest.raises(ConfigError, match=f"can name the same file.*{re.escape(names)}"):
        StoreConfig(**store)


def test_templates_that_cannot_meet_or_are_not_written_are_accepted():
    StoreConfig(flow_template="{}_{:05d}.jpg", img_template="img_{:05d}.jpg", rgb=True)  # mmaction2's x_/y_ names
    StoreConfig(flow_template="{}_{:05d}.jpg", img_template="x_{:05d}.jpg")  # RGB frames are not written
    StoreConfig(flow_template="flow_{}_{:05d}.jpg", backward_template="flow_{}_m1_{:05d}.jpg",
                directions=("forward", "backward"), start_index=0)  # denseflow's names
