"""Batch runs through the real CLI: discovery, broken videos, reports, collisions, skip, overwrite, settings."""
from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from batchdata import CARPHONE, broken_videos, output_digest, raw_digest, sparse_avi, temporaries
from conftest import REPO, VIDEOS, checkout_env, run_cli

from flowprep.batch import BatchReport, MergedReport, VideoJob, VideoResult, discover, process_video
from flowprep.config import ExtractConfig, FlowConfig
from flowprep.errors import ConfigError, OutputError
from flowprep.store import finished_meta, open_output


def test_discover_mirrors_class_folders_and_reads_list_files(tmp_path):
    videos = tmp_path / "videos"
    for rel in ["Archery/v_Archery_g01_c01.avi", "Archery/v_Archery_g01_c02.MP4", "Bowling/b.webm",
                "Bowling/.hidden.mp4", "Bowling/notes.txt"]:
        (videos / rel).parent.mkdir(parents=True, exist_ok=True)
        (videos / rel).write_bytes(b"")
    jobs = discover(videos, tmp_path / "flow")
    assert [(j.source, j.output) for j in jobs] == [
        (str(videos / "Archery/v_Archery_g01_c01.avi"), str(tmp_path / "flow/Archery/v_Archery_g01_c01")),
        (str(videos / "Archery/v_Archery_g01_c02.MP4"), str(tmp_path / "flow/Archery/v_Archery_g01_c02")),
        (str(videos / "Bowling/b.webm"), str(tmp_path / "flow/Bowling/b")),
    ]
    assert [j.source for j in discover(videos, tmp_path / "flow", ["webm"])] == [str(videos / "Bowling/b.webm")]

    listing = videos / "train.txt"  # mmaction2 style: path and label columns, relative to the list's folder
    listing.write_text("# train split\nBowling/b.webm 1\n\nArchery/v_Archery_g01_c01.avi 0\n")
    assert [(j.source, j.output) for j in discover(listing, tmp_path / "flow")] == [
        (str(videos / "Bowling/b.webm"), str(tmp_path / "flow/Bowling/b")),
        (str(videos / "Archery/v_Archery_g01_c01.avi"), str(tmp_path / "flow/Archery/v_Archery_g01_c01")),
    ]
    with pytest.raises(ConfigError, match="nowhere"):
        discover(tmp_path / "nowhere", tmp_path / "flow")


def test_videos_without_a_result_are_counted_and_named(tmp_path):
    """However a run ends, a job that got no result is not silently dropped: counted, named, in report.json."""
    jobs = [VideoJob(f"videos/v{i}.mp4", f"flow/v{i}") for i in range(25)]
    report = BatchReport(total=25)
    report.add(VideoResult("videos/v3.mp4", "flow/v3", "done", pairs=7, frames=8))
    report.note_unprocessed(jobs, {"flow/v3"})
    assert report.not_processed == [j.source for j in jobs if j.source != "videos/v3.mp4"]
    summary = report.summary()
    assert "25 videos: 1 done, 0 skipped, 0 failed, 24 not processed (the engine returned no result" in summary
    assert "NOT PROCESSED videos/v0.mp4" in summary and "NOT PROCESSED videos/v20.mp4" in summary
    assert "NOT PROCESSED videos/v21.mp4" not in summary
    assert "... and 4 more not processed (all are listed in report.json)" in summary
    # The shards' merged summary names as many, however many shards left videos behind.
    merged = MergedReport(tmp_path, parts=["report.shard-1-of-2.json", "report.shard-2-of-2.json"],
                          not_processed=report.not_processed).summary()
    assert "NOT PROCESSED videos/v20.mp4" in merged and "NOT PROCESSED videos/v21.mp4" not in merged
    assert ("... and 4 more not processed (all are listed in report.shard-1-of-2.json, report.shard-2-of-2.json)"
            in merged)


@pytest.fixture(scope="module")
def mixed_run(tmp_path_factory):
    """Two good real clips, five broken ones, one run of the CLI over all of them."""
    root = tmp_path_factory.mktemp("mixed")
    videos = root / "videos"
    (videos / "good").mkdir(parents=True)
    shutil.copyfile(CARPHONE, videos / "good" / "carphone.mp4")
    shutil.copyfile(VIDEOS / "rubber-whale.mp4", videos / "good" / "whale.mp4")
    bad = broken_videos(videos / "bad", root / "work")
    out = root / "flow"
    result = run_cli("extract", str(videos), str(out), "--algo", "dis", "--jobs", "2", "-q")
    return videos, out, bad, result


def test_bad_videos_fail_alone_and_are_named_with_reasons(mixed_run):
    videos, out, bad, result = mixed_run
    assert result.returncode == 1, result.stderr
    failures = {json.loads(line)["source"]: json.loads(line) for line in (out / "failures.jsonl").open()}
    expected_reasons = {
        "truncated": "cannot open it",
        "zero_bytes": "empty file (0 bytes)",
        "not_a_video": "cannot open it",
        "one_frame": "decoded 1 frame(s)",
    }
    assert set(failures) == {str(bad[kind]) for kind in expected_reasons}
    for kind, reason in expected_reasons.items():
        failure = failures[str(bad[kind])]
        assert reason in failure["reason"] and str(bad[kind]) in failure["reason"], failure
        assert not open_output_exists(failure["output"])
        assert str(bad[kind]) in result.stderr  # the summary names it too
    assert temporaries(out) == []


def open_output_exists(base: str) -> bool:
    try:
        open_output(base).close()
    except OutputError:
        return False
    return True


def test_good_videos_complete_beside_bad_ones(mixed_run):
    videos, out, bad, result = mixed_run
    with open_output(out / "good" / "carphone") as reader:
        assert reader.meta()["flow_pairs"] == 119
        assert len([n for n in reader.names() if n.startswith("flow_x_")]) == 119
    with open_output(out / "good" / "whale") as reader:
        assert reader.meta()["flow_pairs"] == 7
    # The header claims 120 frames; --decoder auto reads with PyAV first, which decodes the 33 that are there.
    with open_output(out / "bad" / "lying") as reader:
        meta = reader.meta()
    assert meta["decoder"] == "pyav" and meta["flow_pairs"] == 32 and meta["decoder_problems"] == []
    # ... and that is no clean end: meta.json, the report, the summary and verify say the stream was cut short.
    problem = f"{bad['lying_header']}: pyav decoding ended at 1.07 s, but the container announces 4.00 s"
    assert meta["stream_problem"].startswith(problem)
    assert json.loads((out / "report.json").read_text())["warnings"] == [meta["stream_problem"]]
    assert f"WARNING {problem}" in result.stderr
    verified = run_cli("verify", str(out / "bad" / "lying"))
    assert verified.returncode == 0 and f"its source ended early when extracted: {problem}" in verified.stdout
    for good in ("carphone", "whale"):
        assert open_output(out / "good" / good).meta()["stream_problem"] == ""


def test_sparse_timestamps_are_no_stream_problem(tmp_path):
    """AVI drop frames: the container announces 120 frames, 80 decode, spread over the whole 4 s."""
    videos = tmp_path / "videos"
    videos.mkdir()
    sparse_avi(videos / "sparse.avi")
    out = tmp_path / "flow"
    result = run_cli("extract", str(videos), str(out), "--algo", "dis", "--short-side", "72", "-q")
    assert result.returncode == 0, result.stderr
    meta = open_output(out / "sparse").meta()
    assert (meta["frames"], meta["stream_problem"]) == (80, "") and "WARNING" not in result.stderr


def test_report_counts_the_run(mixed_run):
    videos, out, bad, result = mixed_run
    report = json.loads((out / "report.json").read_text())
    assert (report["total"], report["done"], report["skipped"], report["failed"]) == (7, 3, 0, 4)
    assert report["pairs"] == 119 + 7 + 32 and report["interrupted"] is False
    assert report["seconds"] > 0 and report["pairs_per_second"] == pytest.approx(
        report["pairs"] / report["seconds"], rel=0.01)
    assert "7 videos: 3 done, 0 skipped, 4 failed; 158 flow pairs" in result.stderr


def test_rerun_skips_finished_and_retries_failed(mixed_run):
    videos, out, bad, _ = mixed_run
    before = output_digest(out)
    result = run_cli("extract", str(videos), str(out), "--algo", "dis", "-q")
    assert result.returncode == 1
    report = json.loads((out / "report.json").read_text())
    assert (report["done"], report["skipped"], report["failed"], report["pairs"]) == (0, 3, 4, 0)
    assert len((out / "failures.jsonl").read_text().splitlines()) == 4
    assert output_digest(out) == before


@pytest.fixture
def whale_run(tmp_path):
    """A folder with one real clip, extracted once with DIS into tmp_path/flow: (videos, out, digest of out)."""
    videos = tmp_path / "videos"
    videos.mkdir()
    shutil.copyfile(VIDEOS / "rubber-whale.mp4", videos / "whale.mp4")
    out = tmp_path / "flow"
    assert run_cli("extract", str(videos), str(out), "--algo", "dis", "-q").returncode == 0
    return videos, out, output_digest(out)


def test_changed_settings_are_reported_not_mixed_and_overwrite_recomputes(whale_run):
    videos, out, before = whale_run

    result = run_cli("extract", str(videos), str(out), "--algo", "dis", "--bound", "40", "-q")
    assert result.returncode == 0, result.stderr
    assert "settings differ" in result.stderr and "bound: 20.0 recorded, 40.0 asked" in result.stderr
    report = json.loads((out / "report.json").read_text())
    assert report["skipped"] == 1 and "bound: 20.0 recorded, 40.0 asked" in report["settings_mismatch"][0]
    assert output_digest(out) == before

    result = run_cli("extract", str(videos), str(out), "--algo", "dis", "--bound", "40", "--overwrite", "-q")
    assert result.returncode == 0 and "settings differ" not in result.stderr
    assert open_output(out / "whale").meta()["settings"]["bound"] == 40.0
    assert temporaries(out) == []


def test_a_finished_video_whose_source_changed_is_reported_not_silently_kept(whale_run):
    videos, out, before = whale_run
    source = videos / "whale.mp4"
    meta = open_output(out / "whale").meta()
    assert meta["source_file"] == {"bytes": source.stat().st_size, "mtime_ns": source.stat().st_mtime_ns}
    os.utime(source, ns=(source.stat().st_atime_ns, source.stat().st_mtime_ns + 500_000_000))  # rounded: the same
    result = run_cli("extract", str(videos), str(out), "--algo", "dis", "-q")
    assert result.returncode == 0 and "KEPT" not in result.stderr, result.stderr

    shutil.copyfile(CARPHONE, source)  # replaced by another video, 5 s later (a fast machine copies within 1 s)
    later = meta["source_file"]["mtime_ns"] + 5_000_000_000
    os.utime(source, ns=(later, later))
    result = run_cli("extract", str(videos), str(out), "--algo", "dis", "-q")
    assert result.returncode == 0, result.stderr
    change = (f"{out / 'whale'}: its source {source} changed since it was extracted (use --overwrite to recompute): "
              f"{meta['source_file']['bytes']} bytes recorded, {CARPHONE.stat().st_size} bytes now; modified ")
    assert f"KEPT {change}" in result.stderr
    report = json.loads((out / "report.json").read_text())
    assert report["skipped"] == 1 and report["settings_mismatch"][0].startswith(change)
    assert output_digest(out) == before  # reported, not recomputed behind the user's back
    result = run_cli("extract", str(videos), str(out), "--algo", "dis", "--overwrite", "-q")
    assert result.returncode == 0 and open_output(out / "whale").meta()["flow_pairs"] == 119


def test_a_finished_video_with_a_corrupt_meta_json_is_named_and_left_as_it_is(whale_run):
    """flowprep renames only complete outputs into place, so a folder there without a valid meta.json is not one
    of its own finished outputs: it fails, named, and is not touched, even with --overwrite."""
    videos, out, _ = whale_run
    (out / "whale" / "meta.json").write_text('{"format": "flowprep/1", "frames": ')  # cut short on disk
    before = raw_digest(out / "whale")
    for extra in ((), ("--overwrite",)):
        result = run_cli("extract", str(videos), str(out), "--algo", "dis", "-q", *extra)
        assert result.returncode == 1, result.stderr
        assert f"FAILED {videos / 'whale.mp4'}: {out / 'whale'} is there but is not a finished flowprep output " \
               f"({out / 'whale' / 'meta.json'}: not valid JSON" in result.stderr
        assert "move it away or remove it, then rerun" in result.stderr
        assert raw_digest(out / "whale") == before


@pytest.mark.parametrize("pack", ["dir", "zip"])
def test_files_of_another_tool_at_an_output_path_are_never_deleted(tmp_path, pack):
    """A folder (or .zip) at a video's output path that flowprep did not finish is someone else's: that video fails,
    naming it and what to do, its files stay byte for byte, and the other videos are extracted."""
    videos = tmp_path / "videos"
    videos.mkdir()
    for name in ("clip", "other"):
        shutil.copyfile(VIDEOS / "rubber-whale.mp4", videos / f"{name}.mp4")
    out = tmp_path / "flow"
    if pack == "dir":
        (out / "clip").mkdir(parents=True)
        (out / "clip" / "notes.txt").write_text("my notes")
        (out / "clip" / "x_00001.jpg").write_bytes(b"\xff\xd8 another tool's flow")
        theirs = out / "clip"
    else:
        out.mkdir()
        theirs = out / "clip.zip"
        theirs.write_bytes(b"my archive, not a zip")
    before = raw_digest(out)
    for extra in ((), ("--overwrite",)):
        result = run_cli("extract", str(videos), str(out), "--algo", "dis", "--pack", pack, "-q", *extra)
        assert result.returncode == 1, result.stderr
        assert f"FAILED {videos / 'clip.mp4'}: {theirs} is there but is not a finished flowprep output" \
            in result.stderr
        assert "flowprep does not delete what it did not write: move it away or remove it, then rerun" \
            in result.stderr
        assert {k: v for k, v in raw_digest(out).items() if k.startswith("clip")} == before
        assert finished_meta(out / "other", pack) is not None
        assert temporaries(out) == []


def test_a_video_finished_in_the_other_pack_form_is_reported_and_overwrite_leaves_one_form(whale_run):
    videos, out, before = whale_run

    result = run_cli("extract", str(videos), str(out), "--algo", "dis", "--pack", "zip", "-q")
    assert result.returncode == 0, result.stderr
    assert "finished as whale (pack: 'dir' recorded, 'zip' asked" in result.stderr
    assert json.loads((out / "report.json").read_text())["skipped"] == 1
    assert not (out / "whale.zip").exists() and output_digest(out) == before

    result = run_cli("extract", str(videos), str(out), "--algo", "dis", "--pack", "zip", "--overwrite", "-q")
    assert result.returncode == 0, result.stderr
    assert (out / "whale.zip").is_file() and not (out / "whale").exists()
    assert output_digest(out) == before  # the same files, now in the pack that readers open
    assert open_output(out / "whale").path == out / "whale.zip"


@pytest.mark.parametrize("pack", ["dir", "zip"])
def test_a_video_named_like_anothers_pack_is_its_own_video(tmp_path, pack):
    """a.mp4 packs to a.zip, and a.zip.mp4's directory is a.zip: neither is the other's 'other form'."""
    videos = tmp_path / "videos"
    videos.mkdir()
    for name in ("a.mp4", "a.zip.mp4"):
        shutil.copyfile(VIDEOS / "rubber-whale.mp4", videos / name)
    out = tmp_path / "flow"
    for extra in ((), ("--overwrite",)):
        result = run_cli("extract", str(videos), str(out), "--algo", "dis", "--pack", pack, "--jobs", "2", "-q", *extra)
        assert result.returncode == 0, result.stderr
        report = json.loads((out / "report.json").read_text())
        assert (report["done"], report["skipped"]) == (2, 0), result.stderr
        for base in ("a", "a.zip"):
            assert finished_meta(out / base, pack)["frames"] > 0, base


def test_outputs_that_would_collide_fail_instead_of_overwriting(tmp_path):
    videos = tmp_path / "videos"
    videos.mkdir()
    shutil.copyfile(VIDEOS / "rubber-whale.mp4", videos / "whale.mp4")
    shutil.copyfile(VIDEOS / "rubber-whale.mp4", videos / "whale.mkv")
    out = tmp_path / "flow"
    result = run_cli("extract", str(videos), str(out), "--algo", "dis", "-q")
    assert result.returncode == 1
    reasons = [json.loads(line)["reason"] for line in (out / "failures.jsonl").open()]
    assert len(reasons) == 2 and all("maps to the same output" in r for r in reasons)
    assert not (out / "whale").exists()


def test_usage_errors_exit_2_naming_the_problem(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    result = run_cli("extract", str(empty), str(tmp_path / "flow"))
    assert result.returncode == 2 and "no videos" in result.stderr
    result = run_cli("extract", str(tmp_path / "missing"), str(tmp_path / "flow"))
    assert result.returncode == 2 and "missing" in result.stderr
    result = run_cli("extract", str(CARPHONE), str(tmp_path / "flow"), "--engine", "spark")
    assert result.returncode == 2 and "spark" in result.stderr


def test_a_second_run_on_the_same_output_is_refused(tmp_path):
    out = tmp_path / "flow"
    out.mkdir()
    with open(out / ".flowprep.lock", "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)  # as a running batch holds it
        result = run_cli("extract", str(VIDEOS / "rubber-whale.mp4"), str(out), "--algo", "dis", "-q")
    assert result.returncode == 2 and "another flowprep run is writing into" in result.stderr
    assert not (out / "rubber-whale").exists()


IO_HOOKS = Path(__file__).parent / "io_hooks"  # a sitecustomize that logs fsyncs and renames, or fails writes


def _traced_extract(tmp_path, *args: str) -> list[str]:
    """Run `flowprep extract ARGS` with every os.fsync and rename logged: the events, 'fsync PATH' and
    'rename OLD -> NEW', in the order they happened."""
    log = tmp_path / "durability.log"
    log.unlink(missing_ok=True)
    env = {**checkout_env(), "FLOWPREP_TRACE": str(log)}
    env["PYTHONPATH"] = os.pathsep.join([str(IO_HOOKS), env["PYTHONPATH"]])
    result = subprocess.run([sys.executable, "-m", "flowprep", "extract", *args], cwd=REPO, env=env,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return log.read_text().splitlines() if log.exists() else []


def _renamed_to(events: list[str], final: Path) -> int:
    return next(i for i, e in enumerate(events) if e.startswith("rename ") and e.endswith(f" -> {final}"))


@pytest.mark.parametrize("pack", ["dir", "zip"])
def test_a_committed_video_and_the_records_are_fsynced_before_and_after_their_renames(tmp_path, pack):
    """Every file (or the zip), then the temporary folder, is fsync'ed before the rename into place, meta.json
    among them, the parent folder after it; failures.jsonl and report.json likewise, report.json last of all;
    --no-fsync skips all of it."""
    out = tmp_path / "flow"
    final = out / ("rubber-whale.zip" if pack == "zip" else "rubber-whale")
    args = (str(VIDEOS / "rubber-whale.mp4"), str(out), "--algo", "dis", "--pack", pack, "--overwrite", "-q")
    events = _traced_extract(tmp_path, *args)
    commit = _renamed_to(events, final)
    temp = events[commit].split()[1]
    before = [e.split(" ", 1)[1] for e in events[:commit] if e.startswith("fsync ")]
    if pack == "dir":
        files = {f"{temp}/{name}" for name in os.listdir(final)}
        assert len(files) == 15 and files <= set(before) and f"{temp}/meta.json" in files  # 7 x/y pairs
    assert before[-1] == temp  # the folder's entries after its files; the whole pack, central directory included
    assert events[commit + 1] == f"fsync {out}"  # the parent folder, right after the rename
    for record in ("failures.jsonl", "report.json"):
        renamed = _renamed_to(events, out / record)
        record_temp = events[renamed].split()[1]
        assert events[renamed - 1] == f"fsync {record_temp}" and events[renamed + 1] == f"fsync {out}"
        assert renamed > commit
    assert _renamed_to(events, out / "report.json") == max(i for i, e in enumerate(events) if e.startswith("rename"))
    unsynced = _traced_extract(tmp_path, *args, "--no-fsync")
    assert _renamed_to(unsynced, final) >= 0 and not any(e.startswith("fsync ") for e in unsynced)


def test_every_recorded_setting_that_differs_is_reported_not_skipped_silently(whale_run, tmp_path):
    """Each setting meta.json records decides the output bytes: a finished video whose recorded value differs from
    this run's, in any one of them, is kept and named with that setting (not only bound and directions)."""
    videos, out, _ = whale_run
    config = ExtractConfig(flow=FlowConfig(algo="dis"))
    settings = open_output(out / "whale").meta()["settings"]
    assert len(settings) >= 18
    job = VideoJob(str(videos / "whale.mp4"), str(out / "whale"), str(out))
    assert process_video(job, config) == VideoResult(job.source, job.output, "skipped", 7, 8, 0.0, "")
    meta_path = out / "whale" / "meta.json"
    original = meta_path.read_text()
    valid_only = {"layout": "xy0", "flow_template": "f_{:05d}.jpg", "backward_template": "b_{:05d}.jpg"}  # checked
    for key, value in settings.items():
        changed = valid_only[key] if key in valid_only else (not value if isinstance(value, bool) else value + 1 if isinstance(value, (int, float))
                   else f"{value}, changed" if isinstance(value, str) else [*value, "changed"] if isinstance(value, list)
                   else {**value, "changed": 1} if isinstance(value, dict) else "changed")
        meta = json.loads(original)
        meta["settings"][key] = changed
        meta_path.write_text(json.dumps(meta))
        result = process_video(job, config)
        assert result.status == "skipped" and f"{key}: {changed!r} recorded" in result.reason, (key, result)
    meta_path.write_text(original)


def test_a_finished_video_whose_source_is_gone_is_kept_and_named(whale_run):
    """A list file still names a video deleted since: its finished output is kept, and the summary says why."""
    videos, out, before = whale_run
    listing = videos / "list.txt"
    listing.write_text("whale.mp4\n")
    (videos / "whale.mp4").unlink()
    result = run_cli("extract", str(listing), str(out), "--algo", "dis", "-q")
    assert result.returncode == 0, result.stderr
    assert f"KEPT {out / 'whale'}: its source {videos / 'whale.mp4'} is gone; the finished output is kept" \
        in result.stderr
    assert output_digest(out) == before
