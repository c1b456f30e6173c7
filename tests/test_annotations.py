"""Annotation lists: `flowprep list` (real subprocess) and the library behind it, on small trees."""
from __future__ import annotations

import io
import json
import os
import tracemalloc
from pathlib import Path

import pytest
from conftest import run_cli
from fake_trees import write_foreign_video, write_video
from golden_trees import golden, linked_copies, mixed_tree, real_tree

from flowprep import annotations
from flowprep.annotations import (
    Annotation, apply_split, build_annotations, find_outputs, list_annotations, read_annotations, read_class_index,
    read_split, write_annotations,
)
from flowprep.errors import ConfigError, OutputError
from flowprep.store import Naming


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """Archery/v1 (dir, 5 pairs), Archery/v2 (zip, 7 pairs), Bowling/v3 (dir, 3 pairs, 4 RGB frames), plus
    files and a temporary that are not videos."""
    root = tmp_path / "flow"
    write_video(root / "Archery" / "v1", 5, rgb_frames=6)
    write_video(root / "Archery" / "v2", 7, rgb_frames=8, pack="zip")
    write_video(root / "Bowling" / "v3", 3, rgb_frames=4)
    (root / "report.json").write_text("{}")
    (root / "Bowling" / "notes.zip").write_bytes(b"not a zip")
    write_foreign_video(root / "Bowling" / ".v9.flowprep-tmp-0123", 2, Naming())
    return root


def test_list_writes_tsn_lines_with_labels_from_sorted_class_folders(tree: Path, tmp_path: Path):
    out = tmp_path / "train.txt"
    result = run_cli("list", str(tree), "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert out.read_text() == "Archery/v1 5 0\nArchery/v2 7 0\nBowling/v3 3 1\n"
    assert "3 videos, 2 classes" in result.stderr


def test_list_rgb_counts_rgb_frames_and_prints_to_stdout(tree: Path):
    result = run_cli("list", str(tree), "--modality", "rgb")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "Archery/v1 6 0\nArchery/v2 8 0\nBowling/v3 4 1\n"


def test_list_rgb_fails_naming_a_video_without_rgb_frames(tmp_path: Path):
    write_video(tmp_path / "A" / "no_rgb", 4)
    result = run_cli("list", str(tmp_path), "--modality", "rgb")
    assert result.returncode == 1
    assert "no_rgb" in result.stderr and "--rgb" in result.stderr


def test_list_labels_from_a_one_based_class_index(tree: Path, tmp_path: Path):
    class_file = tmp_path / "classInd.txt"
    class_file.write_text("1 Bowling\n2 Archery\n3 Curling\n")
    result = run_cli("list", str(tree), "--classes", str(class_file))
    assert result.returncode == 0, result.stderr
    assert result.stdout == "Archery/v1 5 1\nArchery/v2 7 1\nBowling/v3 3 0\n"


def test_list_class_missing_from_the_index_is_a_usage_error(tree: Path, tmp_path: Path):
    class_file = tmp_path / "classInd.txt"
    class_file.write_text("1 Archery\n")
    result = run_cli("list", str(tree), "--classes", str(class_file))
    assert result.returncode == 2
    assert "'Bowling'" in result.stderr and "v3" in result.stderr


def test_list_split_keeps_split_order_and_reports_missing_videos(tree: Path, tmp_path: Path):
    split = tmp_path / "trainlist01.txt"
    split.write_text("Bowling/v3.avi 2\nArchery/v1.avi 1\n")
    result = run_cli("list", str(tree), "--split", str(split))
    assert result.returncode == 0, result.stderr
    assert result.stdout == "Bowling/v3 3 1\nArchery/v1 5 0\n"

    split.write_text("Bowling/v3.avi\nArchery/v404.avi\n")
    result = run_cli("list", str(tree), "--split", str(split))
    assert result.returncode == 1
    assert "Archery/v404" in result.stderr and "1 of 2" in result.stderr
    result = run_cli("list", str(tree), "--split", str(split), "--skip-missing")
    assert result.returncode == 0
    assert result.stdout == "Bowling/v3 3 1\n"
    assert "warning" in result.stderr and "Archery/v404" in result.stderr


def test_list_reads_denseflow_and_mmaction2_trees(tmp_path: Path):
    write_foreign_video(tmp_path / "dense" / "A" / "v1", 4, Naming(start_index=0))
    result = run_cli("list", str(tmp_path / "dense"), "--start-index", "0")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "A/v1 4 0\n"
    # The same tree read as 1-based: the numbering does not fit, and the error says how to fix it.
    result = run_cli("list", str(tmp_path / "dense"))
    assert result.returncode == 1
    assert "numbered 0..3" in result.stderr and "start index" in result.stderr

    write_foreign_video(tmp_path / "mm" / "B" / "v2", 6, Naming(flow_template="{}_{:05d}.jpg"), rgb_frames=7)
    assert (tmp_path / "mm" / "B" / "v2" / "x_00001.jpg").is_file()
    for modality, count in (("flow", 6), ("rgb", 7)):
        result = run_cli("list", str(tmp_path / "mm"), "--flow-template", "{}_{:05d}.jpg", "--modality", modality)
        assert result.returncode == 0, result.stderr
        assert result.stdout == f"B/v2 {count} 0\n"


def test_list_bad_template_is_a_usage_error(tree: Path):
    result = run_cli("list", str(tree), "--flow-template", "flow.png")
    assert result.returncode == 2
    assert "'flow.png'" in result.stderr


def test_find_outputs_describes_meta_and_foreign_videos(tree: Path, tmp_path: Path):
    outputs = find_outputs(tree)
    assert list(outputs) == ["Archery/v1", "Archery/v2", "Bowling/v3"]
    assert outputs["Archery/v2"].path == tree / "Archery" / "v2.zip"
    assert outputs["Archery/v2"].has_meta and outputs["Archery/v2"].flow_pairs == 7

    foreign = write_foreign_video(tmp_path / "other" / "v", 3, Naming(layout="xy0", flow_template="flow_{:05d}.jpg"))
    described = find_outputs(tmp_path / "other", Naming(layout="xy0", flow_template="flow_{:05d}.jpg"))
    assert described["v"].path == foreign and described["v"].flow_pairs == 3 and not described["v"].has_meta


def test_uneven_x_and_y_counts_are_reported(tmp_path: Path):
    video = write_foreign_video(tmp_path / "A" / "v", 4, Naming())
    (video / "flow_y_00004.jpg").unlink()
    with pytest.raises(OutputError, match=r"4 x flow files but 3 y flow files"):
        find_outputs(tmp_path)


def test_annotation_file_round_trip_and_errors(tmp_path: Path):
    entries = [Annotation("A/v 1", 10, 0), Annotation("B/v2", 3, 4)]
    path = tmp_path / "list.txt"
    write_annotations(entries, path)
    assert read_annotations(path) == entries  # paths with spaces survive
    path.write_text("A/v1 10 0\nB/v2 three 1\n")
    with pytest.raises(ConfigError, match=r"list.txt:2: .*'B/v2 three 1'"):
        read_annotations(path)


def test_class_index_forms(tmp_path: Path):
    path = tmp_path / "classes.txt"
    path.write_text("1 ApplyEyeMakeup\n2 ApplyLipstick\n")
    assert read_class_index(path) == {"ApplyEyeMakeup": 0, "ApplyLipstick": 1}
    path.write_text("0 a\n1 b\n")
    assert read_class_index(path) == {"a": 0, "b": 1}
    path.write_text("walk\nrun\n")
    assert read_class_index(path) == {"walk": 0, "run": 1}
    path.write_text("1 a b\n")
    with pytest.raises(ConfigError, match="classes.txt"):
        read_class_index(path)


def test_split_and_labels_in_python(tree: Path, tmp_path: Path):
    split = tmp_path / "testlist01.txt"
    split.write_text("Archery/v2.avi\nBowling/v3\nZ/missing.mp4\n")
    assert read_split(split) == ["Archery/v2", "Bowling/v3", "Z/missing"]
    selected, missing = apply_split(build_annotations(find_outputs(tree)), read_split(split))
    assert [e.line() for e in selected] == ["Archery/v2 7 0", "Bowling/v3 3 1"]
    assert missing == ["Z/missing"]


def test_list_and_show_name_a_meta_json_without_settings(tmp_path: Path):
    video = write_video(tmp_path / "flow" / "Archery" / "v1", 3)
    meta = json.loads((video / "meta.json").read_text())
    del meta["settings"]
    (video / "meta.json").write_text(json.dumps(meta))
    for args in (["list", str(tmp_path / "flow")], ["show", str(video), "--out", str(tmp_path / "p.png")]):
        result = run_cli(*args)
        assert result.returncode != 0, args
        assert f"{video / 'meta.json'}: missing or invalid field settings" in result.stderr, args
        assert "Traceback" not in result.stderr, args


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """golden_trees' mixed tree under WORK/mixed with the class index and split the golden outputs were made with."""
    work = tmp_path_factory.mktemp("work")
    mixed_tree(work / "mixed")
    (work / "classes.txt").write_text("1 Talk\n2 Bad\n3 P\n")
    (work / "split.txt").write_text("zzz.mp4\nTalk/a\ndrinking/v1.avi\nNope/v.avi\nBad/ended\n")
    return work


@pytest.mark.parametrize("name, options, code", [
    ("list_mixed", [], 0),
    ("list_mixed_rgb", ["--modality", "rgb"], 1),  # the first video in list order without RGB frames
    ("list_mixed_classes", ["--classes", "{work}/classes.txt"], 2),  # the first whose class is not indexed
    ("list_mixed_split", ["--split", "{work}/split.txt", "--skip-missing"], 0),
])
def test_list_prints_what_main_printed_before_it_streamed(work: Path, name: str, options: list[str], code: int):
    """Lines sorted as main sorted them (drinking beer/v1 before drinking/v1, the folder Talk/a over the pack
    Talk/a.zip, class '' for a video in the root), the same labels, errors and counts."""
    options = [option.replace("{work}", str(work)) for option in options]
    result = run_cli("list", str(work / "mixed"), *options)
    assert (result.returncode, result.stdout, result.stderr) == (
        code, golden(f"{name}.out", work), golden(f"{name}.err", work))


def test_list_that_fails_writes_nothing(work: Path, tmp_path: Path):
    out = tmp_path / "list.txt"
    result = run_cli("list", str(work / "mixed"), "--modality", "rgb", "--out", str(out))
    assert result.returncode == 1 and not out.exists()


def test_list_sorted_across_spooled_runs(work: Path, monkeypatch: pytest.MonkeyPatch):
    """Runs of 3 records, pickled 2 a batch, merged 2 runs at a time: 21 videos go through every path of the
    spool (runs merged into longer runs first, the folder and pack of one name in different runs)."""
    for constant, value in (("_RUN", 3), ("_BATCH", 2), ("_FAN_IN", 2)):
        monkeypatch.setattr(annotations, constant, value)
    entries = list_annotations(work / "mixed")
    text = io.StringIO()
    write_annotations(entries, text)
    assert text.getvalue() == golden("list_mixed.out", work)
    assert (entries.videos, entries.classes, entries.missing) == (21, 8, [])
    assert list(entries) == build_annotations(find_outputs(work / "mixed"))  # and again, read back once more


@pytest.mark.slow
def test_list_of_a_real_tree_prints_what_main_printed(tmp_path: Path):
    real = real_tree(tmp_path / "real")
    result = run_cli("list", str(real))
    assert (result.returncode, result.stdout, result.stderr) == (
        0, golden("list_real.out", tmp_path), golden("list_real.err", tmp_path))


@pytest.mark.slow
def test_list_memory_does_not_grow_with_the_tree(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Python's peak allocations while a list is made and written: the same for 3000 videos as for 300, once
    the spool's runs are shorter than the tree (main held every video's description, about 1.3 KB)."""
    for constant, value in (("_RUN", 100), ("_BATCH", 10), ("_FAN_IN", 8)):
        monkeypatch.setattr(annotations, constant, value)
    model = write_video(tmp_path / "model", 2)
    peaks = []
    for count in (300, 3000):
        tree = linked_copies(model, tmp_path / str(count), count)
        with open(os.devnull, "w") as null:
            tracemalloc.start()
            entries = list_annotations(tree)
            write_annotations(entries, null)
            peaks.append(tracemalloc.get_traced_memory()[1])
            tracemalloc.stop()
        assert entries.videos == count
    assert peaks[1] < peaks[0] + 100_000, peaks
