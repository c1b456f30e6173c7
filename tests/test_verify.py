"""flowprep verify on real extracted clips, broken in the ways users break trees."""
from __future__ import annotations

import json
import random
import shutil
import tracemalloc
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pytest

from flowprep import DecodeConfig, ExtractConfig, FlowConfig, StoreConfig, extract_video, verify
from flowprep.quantize import RoundTripBound
from flowprep.verify import RoundTrip, _roundtrip_text, check_video, verify_tree, write_report

from conftest import VIDEOS, run_cli
from fake_trees import write_video
from golden_trees import golden, linked_copies, mixed_tree, real_tree

CARPHONE = VIDEOS / "carphone_pristine.mp4"
MR_BUBZ = VIDEOS / "mr-bubz.webm"


def _config(**store: object) -> ExtractConfig:
    return ExtractConfig(decode=DecodeConfig(fps=10), flow=FlowConfig(algo="dis"), store=StoreConfig(**store))


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tree with a directory output (with RGB) and a zip output (xy0 layout) of the real carphone clip."""
    root = tmp_path_factory.mktemp("pristine")
    extract_video(CARPHONE, root / "Talk" / "carphone", _config(rgb=True))
    extract_video(CARPHONE, root / "Packed" / "carphone", _config(pack="zip", layout="xy0"))
    return root


@pytest.fixture
def tree(pristine: Path, tmp_path: Path) -> Path:
    """A fresh copy of the pristine tree to break."""
    return Path(shutil.copytree(pristine, tmp_path / "out"))


def video_dir(tree: Path) -> Path:
    return tree / "Talk" / "carphone"


def test_clean_tree_passes_with_statistics(tree: Path) -> None:
    result = run_cli("verify", str(tree))
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip().endswith("OK")
    report = verify_tree(tree)
    assert report.ok and len(report.videos) == 2
    directory, packed = sorted(report.videos, key=lambda v: v.path.suffix)
    assert packed.path.suffix == ".zip"
    meta = json.loads((video_dir(tree) / "meta.json").read_text())
    assert directory.pairs == packed.pairs == meta["flow_pairs"] == 39
    assert directory.rgb_frames == 40 and packed.rgb_frames == 0
    # Real motion of a talking head in a car: about a pixel per frame at 10 fps, nothing near the bound of 20.
    assert 0.3 < report.mean_magnitude < 5
    assert report.clipped_fraction < 1e-3
    # Both forms of the same flow give the same statistics (xy0 JPEG differs from gray JPEG only slightly).
    assert directory.mean_magnitude == pytest.approx(packed.mean_magnitude, rel=0.05)


def test_deleted_flow_y_is_named(tree: Path) -> None:
    (video_dir(tree) / "flow_y_00007.jpg").unlink()
    result = run_cli("verify", str(tree))
    assert result.returncode == 1
    assert f"{video_dir(tree) / 'flow_y_00007.jpg'}: missing" in result.stdout
    assert "38 flow_y files, meta.json says 39 pairs" in result.stdout
    assert result.stdout.strip().endswith("FAILED")


def test_truncated_jpeg_is_named(tree: Path) -> None:
    path = video_dir(tree) / "flow_x_00003.jpg"
    path.write_bytes(path.read_bytes()[:400])
    result = run_cli("verify", str(tree))
    assert result.returncode == 1
    assert f"{path}: not a readable JPEG (400 bytes)" in result.stdout


def test_wrong_size_jpeg_is_named(tree: Path) -> None:
    path = video_dir(tree) / "flow_x_00011.jpg"
    ok, data = cv2.imencode(".jpg", np.full((80, 100), 128, np.uint8))
    path.write_bytes(data.tobytes())
    result = run_cli("verify", str(tree))
    assert result.returncode == 1
    assert f"{path}: 100x80 pixels, meta.json says 176x144" in result.stdout


def test_wrong_size_rgb_frame_is_named(tree: Path) -> None:
    path = video_dir(tree) / "img_00040.jpg"
    cv2.imwrite(str(path), np.zeros((144, 170, 3), np.uint8))
    report = verify_tree(tree)
    assert report.all_problems() == [f"{path}: 170x144 pixels, meta.json says 176x144"]


def test_meta_with_wrong_count_is_named(tree: Path) -> None:
    meta_path = video_dir(tree) / "meta.json"
    meta = json.loads(meta_path.read_text())
    meta["flow_pairs"] = 41
    meta_path.write_text(json.dumps(meta))
    result = run_cli("verify", str(tree))
    assert result.returncode == 1
    assert f"{meta_path}: 40 frames should give 39 flow pairs, but flow_pairs is 41" in result.stdout
    assert f"{video_dir(tree) / 'flow_x_00041.jpg'}: missing" in result.stdout


def test_missing_meta_is_unfinished(tree: Path) -> None:
    (video_dir(tree) / "meta.json").unlink()
    result = run_cli("verify", str(tree))
    assert result.returncode == 1
    assert f"{video_dir(tree)}: 118 JPEG files but no meta.json: unfinished output" in result.stdout


def test_extra_flow_file_beyond_the_count(tree: Path) -> None:
    shutil.copy(video_dir(tree) / "flow_x_00039.jpg", video_dir(tree) / "flow_x_00040.jpg")
    problems = verify_tree(tree).all_problems()
    assert f"{video_dir(tree) / 'flow_x_00040.jpg'}: unexpected (beyond the count in meta.json)" in problems
    assert f"{video_dir(tree)}: 40 flow_x files, meta.json says 39 pairs" in problems


def test_zip_pack_problems_are_named(tree: Path) -> None:
    pack = tree / "Packed" / "carphone.zip"
    with zipfile.ZipFile(pack) as old, zipfile.ZipFile(tree / "new.zip", "w") as new:
        for info in old.infolist():
            if info.filename != "flow_00005.jpg":
                new.writestr(info, old.read(info))
    (tree / "new.zip").replace(pack)
    problems = verify_tree(tree).all_problems()
    assert problems[-2:] == [f"{pack}: 38 flow files, meta.json says 39 pairs", f"{pack / 'flow_00005.jpg'}: missing"]


def test_not_a_zip_and_leftover_temporary(tree: Path) -> None:
    (tree / "Packed" / "broken.zip").write_bytes(b"not a zip")
    shutil.copytree(video_dir(tree), tree / "Talk" / ".carphone.flowprep-tmp-0123456789ab")
    problems = verify_tree(tree).all_problems()
    assert any(p.startswith(f"{tree / 'Packed' / 'broken.zip'}: not a readable zip pack") for p in problems)
    assert f"{tree / 'Talk' / '.carphone.flowprep-tmp-0123456789ab'}: temporary left by a killed run " \
           "(rerun extract to finish)" in problems


def test_batch_records_at_root_are_ignored_and_empty_tree_fails(tmp_path: Path) -> None:
    (tmp_path / "report.json").write_text("{}")
    (tmp_path / "failures.jsonl").write_text("")
    report = verify_tree(tmp_path)
    assert not report.ok and not report.videos
    assert report.problems == [f"{tmp_path}: no flow outputs (directories with meta.json or .zip packs) found"]


def test_clipping_warns_but_passes(tmp_path: Path) -> None:
    out = tmp_path / "carphone"
    extract_video(CARPHONE, out, _config(bound=0.5))
    result = run_cli("verify", str(out))
    assert result.returncode == 0, result.stdout
    assert "clipped at the bound 0.5 px: the bound is too small" in result.stdout
    assert check_video(out).clipped_fraction > 0.05


def test_single_video_output_and_jobs(tree: Path) -> None:
    assert verify_tree(video_dir(tree)).ok
    (video_dir(tree) / "flow_y_00002.jpg").unlink()
    serial, parallel = verify_tree(tree), verify_tree(tree, n_jobs=2)
    assert serial.all_problems() == parallel.all_problems() and not parallel.ok


def test_usage_error_for_missing_path(tmp_path: Path) -> None:
    result = run_cli("verify", str(tmp_path / "nothing"))
    assert result.returncode == 2 and "does not exist" in result.stderr


@pytest.mark.slow
@pytest.mark.parametrize("video, algo, fps, size", [
    (CARPHONE, "tvl1", 2, None),
    (MR_BUBZ, "dis", 2, (340, 256)),
    (MR_BUBZ, "farneback", 2, (340, 256)),
])
def test_roundtrip_on_real_clips_within_bound(tmp_path: Path, video: Path, algo: str, fps: float,
                                               size: tuple[int, int] | None) -> None:
    out = tmp_path / video.stem
    config = ExtractConfig(decode=DecodeConfig(fps=fps, size=size), flow=FlowConfig(algo=algo))
    extract_video(video, out, config)
    result = run_cli("verify", str(out), "--roundtrip", "3", "--seed", "7")
    assert result.returncode == 0, result.stdout
    check = check_video(out, roundtrip=3, seed=7)
    rt = check.roundtrip
    assert rt is not None and len(rt.pairs) == 3 and rt.ok
    # Above quantization alone (the JPEG adds error) yet well inside the bound.
    assert 0.2 * 20 / 255 < rt.mean < rt.bound.mean


def test_roundtrip_catches_stored_flow_that_is_not_the_sources(tree: Path) -> None:
    """A well-formed JPEG of the right size with the wrong content passes the file checks but not the round trip."""
    out = video_dir(tree)
    shutil.copy(out / "flow_x_00010.jpg", out / "flow_x_00020.jpg")
    assert check_video(out).ok
    check = check_video(out, roundtrip=39)
    assert not check.ok and not check.roundtrip.ok
    assert check.problems[0].startswith(f"{out}: round-trip error above the documented bound")


def test_roundtrip_names_a_missing_source(tree: Path) -> None:
    meta_path = video_dir(tree) / "meta.json"
    meta = json.loads(meta_path.read_text())
    meta["source"] = str(tree / "gone.mp4")
    meta_path.write_text(json.dumps(meta))
    problems = check_video(video_dir(tree), roundtrip=1).problems
    assert len(problems) == 1 and "cannot recompute flow for the round trip" in problems[0]
    assert str(tree / "gone.mp4") in problems[0]


def test_roundtrip_holds_each_pair_to_the_bound_not_their_average(tree: Path) -> None:
    """One JPEG copied over its neighbour: that pair errs 0.6 px against a 0.19 px bound, but averaged with three
    good pairs (seed 3 samples pairs 12, 21, 31 and 38) the mean stays under the bound."""
    out = video_dir(tree)
    shutil.copy(out / "flow_x_00013.jpg", out / "flow_x_00012.jpg")
    check = check_video(out, roundtrip=4, seed=3)
    rt = check.roundtrip
    assert rt.pairs == [11, 20, 30, 37] and rt.mean < rt.bound.mean  # the average alone would pass
    assert [(direction, pair) for direction, pair, *_ in rt.failing()] == [("forward", 11)] and not check.ok
    assert check.problems == [f"{out}: round-trip error above the documented bound in pair 12 (flow_x_00012.jpg, "
                              f"flow_y_00012.jpg): mean {rt.errors['forward'][0][0]:.4f} px (bound {rt.bound.mean:.4f}), "
                              f"max {rt.errors['forward'][0][1]:.4f} px (bound {rt.bound.max:.4f})"]
    result = run_cli("verify", str(tree), "--roundtrip", "4", "--seed", "3")
    assert result.returncode == 1 and "in pair 12 (flow_x_00012.jpg" in result.stdout


def test_round_trip_worst_errors_per_direction_and_over_all():
    # Hand-built errors: the worst mean and the worst max come from different pairs and directions.
    rt = RoundTrip(pairs=[0, 5], errors={"forward": [(0.01, 0.2), (0.03, 0.1)], "backward": [(0.05, 0.4), (0.02, 0.6)]},
                   bound=RoundTripBound(mean=0.04, max=0.5))
    assert rt.worst("forward") == (0.03, 0.2) and rt.worst("backward") == (0.05, 0.6)
    assert rt.worst() == (rt.worst_mean, rt.max) == (0.05, 0.6)
    assert rt.failing() == [("backward", 0, 0.05, 0.4), ("backward", 5, 0.02, 0.6)]
    assert _roundtrip_text(rt) == ("; round trip of 2 pairs: worst pair mean 0.0500 px (bound 0.0400), max 0.6000 px "
                                   "(bound 0.5000), forward worst pair mean 0.0300 max 0.2000, backward worst pair "
                                   "mean 0.0500 max 0.6000")


@pytest.fixture(scope="module")
def mixed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """golden_trees' mixed tree under WORK/mixed (WORK: the folder the golden outputs name)."""
    return mixed_tree(tmp_path_factory.mktemp("work") / "mixed")


@pytest.mark.parametrize("jobs", [[], ["--jobs", "2"]])
def test_verify_prints_what_main_printed_before_it_streamed(mixed: Path, jobs: list[str]) -> None:
    """Every kind of problem and warning, in the order main printed them when it held a record per video and
    sorted at the end: videos by path (a folder's packs among its subfolders), then the tree's problems in the
    walk's order, the videos' problems, the warnings and the counts; in worker processes too."""
    result = run_cli("verify", str(mixed), *jobs)
    assert (result.returncode, result.stdout, result.stderr) == (1, golden("verify_mixed.out", mixed.parent), "")


def test_spooled_problems_survive_the_temporary_file(mixed: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Problems past the spool's memory go to disk and come back as written, a newline in a name included."""
    monkeypatch.setattr(verify, "_SPOOL_MEMORY", 64)
    lines: list[str] = []
    assert not write_report(mixed, lines.append)
    assert "\n".join(lines) + "\n" == golden("verify_mixed.out", mixed.parent)

    odd = write_video(mixed.parent / "odd" / "two\nlines", 2)  # fake_trees' meta.json has no output_size
    lines.clear()
    write_report(odd.parent, lines.append)
    assert f"PROBLEM {odd / 'meta.json'}: missing or invalid field output_size: it is missing" in lines


@pytest.fixture(scope="module")
def real(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return real_tree(tmp_path_factory.mktemp("work") / "real")


@pytest.mark.slow
@pytest.mark.parametrize("name, options", [("verify_real", []),
                                           ("verify_real_roundtrip", ["--roundtrip", "2", "--seed", "3"])])
def test_verify_of_a_real_tree_prints_what_main_printed(real: Path, name: str, options: list[str]) -> None:
    result = run_cli("verify", str(real), *options)
    assert (result.returncode, result.stdout, result.stderr) == (1, golden(f"{name}.out", real.parent), "")


def _random_tree(root: Path, rng: random.Random, depth: int = 0) -> list[Path]:
    """Folders of video folders and packs (meta.json alone: enough to be found) and subfolders, with names that
    sort apart from the walk's order ('a', 'a b', 'a-b', 'a.zip' ...); the finished outputs' paths."""
    found = []
    root.mkdir(parents=True, exist_ok=True)
    for name in rng.sample(["a", "a b", "a-b", "a.b", "a.zip", "b", "B", "c"], rng.randint(1, 5)):
        kinds = ["pack", "video"] + (["folder"] * 2 if depth < 3 else [])
        for kind in rng.sample(kinds, rng.randint(1, 2)):  # a folder and a pack may share a name
            path = root / (f"{name}.zip" if kind == "pack" else name)
            if path.exists():  # the folder a.zip and the pack of a
                continue
            if kind == "pack":
                with zipfile.ZipFile(path, "w") as pack:
                    pack.writestr("meta.json", "{}")
                found.append(path)
            elif kind == "video":
                path.mkdir()
                (path / "meta.json").write_text("{}")
                found.append(path)
            else:
                found += _random_tree(path, rng, depth + 1)
    return found


def test_videos_come_in_sorted_path_order_as_the_walk_finds_them(tmp_path: Path) -> None:
    for seed in range(20):
        root = tmp_path / str(seed)
        paths = _random_tree(root, random.Random(seed))
        assert [check.path for check in verify_tree(root).videos] == sorted(paths), seed


def _copies(root: Path, count: int) -> Path:
    """`count` videos in 10 class folders: one fake video and copies of it (hard-linked files)."""
    model = write_video(root / "model", 2, rgb_frames=3)
    meta = json.loads((model / "meta.json").read_text())
    meta["settings"]["jpeg_quality"], meta["output_size"] = 95, [12, 8]
    (model / "meta.json").write_text(json.dumps(meta))
    return linked_copies(model, root / "tree", count)


@pytest.mark.slow
@pytest.mark.parametrize("jobs", [1, 2])
def test_report_memory_does_not_grow_with_the_tree(tmp_path: Path, jobs: int) -> None:
    """Python's peak allocations while the report is written: the same for 3000 videos as for 300 (main held
    about 1 KB a video, 2.7 MB more here)."""
    peaks = []
    for count in (300, 3000):
        tree = _copies(tmp_path / str(count), count)
        lines = 0

        def echo(line: str) -> None:
            nonlocal lines
            lines += 1

        tracemalloc.start()
        assert write_report(tree, echo, n_jobs=jobs)
        peaks.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
        assert lines == count + 1
    assert peaks[1] < peaks[0] + 200_000, peaks


def test_workers_take_a_bounded_window_of_videos(tmp_path: Path) -> None:
    """With --jobs 2, the first check comes back while at most 2 x 2 tasks of videos have been taken from the
    walk; the rest follow in order."""
    paths = sorted(_copies(tmp_path, 300).glob("*/*"))
    taken = 0

    def walk():
        nonlocal taken
        for path in paths:
            taken += 1
            yield path

    checks = verify._check_all(walk(), 0, 0, 2, verify.CLIP_WARNING)
    assert next(checks).ok and taken <= 2 * 2 * verify._CHUNK
    assert [check.path for check in checks] == paths[1:]
