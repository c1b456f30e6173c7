"""Extraction from an object store: the videos under a prefix (found by one listing) or named by URL in a list
file, each downloaded by its worker into TMPDIR and removed again; --storage-option reaching every worker and
never printed or recorded. Against moto's S3 server on 127.0.0.1 (tests/conftest.py), through the real CLI."""
from __future__ import annotations

import uuid
from dataclasses import replace
from pathlib import Path

import pytest
from batchdata import (CARPHONE, SOURCE_META, dask_cluster_at, output_digest, start_cli, tree_and_clean_run,
                       wait_for)
from conftest import VIDEOS, SecondS3Server, download_prefix, run_cli, upload_tree, without_credentials

pytest.importorskip("s3fs")
pytest.importorskip("moto.server")

ARGS = ("--algo", "dis", "--pack", "zip", "-q")
# 4 carphone copies in 2 class folders and their local zip run, compared without where each video was read from
videos, clean = tree_and_clean_run(2, 2, *ARGS, ignore=SOURCE_META)


def listed_stamp(fs, key: str) -> dict[str, int]:
    """meta.json's source_file of object `key` as the store reports it: its size and LastModified (ns)."""
    info = fs.info(key)
    return {"bytes": info["size"], "mtime_ns": int(info["LastModified"].timestamp()) * 10**9}


@pytest.fixture
def scratch(tmp_path, monkeypatch) -> Path:
    """The TMPDIR of the CLI and its workers: the downloads go there and must all be gone after a run."""
    folder = tmp_path / "tmpdir"
    folder.mkdir()
    monkeypatch.setenv("TMPDIR", str(folder))
    return folder


def test_a_prefix_extracts_like_its_local_tree_into_a_folder_and_into_a_bucket_and_resumes_by_its_listing(
        videos, clean, bucket, scratch, tmp_path):
    fs, name = bucket
    source = f"s3://{name}/videos"
    upload_tree(fs, videos, f"{name}/videos")
    fs.pipe_file(f"{name}/videos/C1/garbage.mp4", b"not a video\n" * 100)
    fs.pipe_file(f"{name}/videos/C0/notes.txt", b"not one of --ext's")
    fs.pipe_file(f"{name}/videos/C0/.hidden.mp4", b"hidden, as local hidden files are")

    local = tmp_path / "local"
    result = run_cli("extract", source, str(local), *ARGS)
    assert result.returncode == 1, result.stderr
    assert "5 videos: 4 done, 0 skipped, 1 failed" in result.stderr
    failed = [line for line in result.stderr.splitlines() if line.startswith("  FAILED")]
    assert len(failed) == 1 and failed[0].startswith(f"  FAILED {source}/C1/garbage.mp4: "), result.stderr
    assert output_digest(local, SOURCE_META) == clean
    assert list(scratch.iterdir()) == []  # every download removed, the failed one's too
    from flowprep.store import finished_meta

    meta = finished_meta(local / "C1" / "v0", "zip")
    assert meta["source"] == f"{source}/C1/v0.mp4"
    assert meta["source_file"] == listed_stamp(fs, f"{name}/videos/C1/v0.mp4")

    flow = f"s3://{name}/flow"
    result = run_cli("extract", source, flow, *ARGS)
    assert result.returncode == 1 and f"FAILED {source}/C1/garbage.mp4: " in result.stderr, result.stderr
    assert output_digest(download_prefix(fs, f"{name}/flow", tmp_path / "got"), SOURCE_META) == clean
    assert list(scratch.iterdir()) == []

    # Resume compares the listing's size and time with meta.json's: unchanged objects are skipped quietly, a
    # replaced one is kept and named.
    fs.put_file(str(VIDEOS / "rubber-whale.mp4"), f"{name}/videos/C0/v1.mp4")
    result = run_cli("extract", source, flow, *ARGS)
    assert result.returncode == 1 and "4 skipped, 1 failed" in result.stderr, result.stderr
    kept = [line for line in result.stderr.splitlines() if line.startswith("  KEPT")]
    assert len(kept) == 1 and kept[0].startswith(f"  KEPT {flow}/C0/v1: its source {source}/C0/v1.mp4 changed"), \
        result.stderr
    assert list(scratch.iterdir()) == []


def test_jobs_carry_the_listing_stamp_and_resume_compares_it_without_asking_the_store(videos, bucket, tmp_path):
    """The stamp a finished video is compared with is the job's (from the one listing), not a request per video."""
    from flowprep.batch import discover, process_video
    from flowprep.config import ExtractConfig, FlowConfig, StoreConfig

    fs, name = bucket
    upload_tree(fs, videos, f"{name}/videos")
    jobs = discover(f"s3://{name}/videos", tmp_path / "out")
    assert [job.source for job in jobs] == [f"s3://{name}/videos/C{c}/v{v}.mp4" for c in (0, 1) for v in (0, 1)]
    assert [job.output for job in jobs] == [str(tmp_path / "out" / f"C{c}" / f"v{v}") for c in (0, 1) for v in (0, 1)]
    for job in jobs:
        assert dict(zip(("bytes", "mtime_ns"), job.source_stamp)) == listed_stamp(fs, job.source.split("://")[1])
    config = ExtractConfig(flow=FlowConfig(algo="dis"), store=StoreConfig(pack="zip"))
    (tmp_path / "out").mkdir()  # (run_batch's root makes it)
    assert process_video(jobs[0], config).status == "done"
    seen = process_video(replace(jobs[0], source_stamp=(7, jobs[0].source_stamp[1])), config)
    assert seen.status == "skipped" and f"{CARPHONE.stat().st_size} bytes recorded, 7 bytes now" in seen.reason, seen


def test_a_list_file_of_urls_names_outputs_below_their_common_folder_and_a_missing_object_fails_alone(
        videos, clean, bucket, scratch, tmp_path):
    fs, name = bucket
    upload_tree(fs, videos, f"{name}/videos")
    entries = [f"s3://{name}/videos/C{c}/v{v}.mp4 {c}" for c in (0, 1) for v in (0, 1)]  # mmaction2's "path label"
    listing = tmp_path / "train.txt"
    listing.write_text("\n".join(["# URLs", *entries, f"s3://{name}/videos/C1/missing.mp4 1"]) + "\n")
    out = tmp_path / "out"
    result = run_cli("extract", str(listing), str(out), *ARGS)
    assert result.returncode == 1, result.stderr
    failed = [line for line in result.stderr.splitlines() if line.startswith("  FAILED")]
    assert failed == [f"  FAILED s3://{name}/videos/C1/missing.mp4: no such object"], result.stderr
    assert output_digest(out, SOURCE_META) == clean
    assert list(scratch.iterdir()) == []
    from flowprep.store import finished_meta

    assert finished_meta(out / "C0" / "v1", "zip")["source_file"] == listed_stamp(fs, f"{name}/videos/C0/v1.mp4")

    one = tmp_path / "one"  # the URL of one object is that video, as a file's path is
    result = run_cli("extract", f"s3://{name}/videos/C0/v1.mp4", str(one), *ARGS)
    assert result.returncode == 0, result.stderr
    assert output_digest(one, SOURCE_META) == {key[len("C0/"):]: value for key, value in clean.items()
                                                if key.startswith("C0/v1/")}


def storage_options(endpoint: str, secret: str | None) -> list[str]:
    items = ["key=testing", f"endpoint_url={endpoint}", 'client_kwargs={"region_name": "us-east-1"}']  # JSON: a dict
    items += [f"secret={secret}"] if secret else []
    return [arg for item in items for arg in ("--storage-option", item)]


def assert_nowhere(secret: str, result, fs, bucket_name: str) -> None:
    assert secret not in result.stdout + result.stderr
    keys = fs.find(bucket_name)
    assert any(key.endswith("report.json") for key in keys)
    for key in keys:  # the packs are stored uncompressed: meta.json's bytes are there as written
        assert secret.encode() not in fs.cat_file(key), key


def test_storage_options_are_the_only_credentials_reach_the_workers_and_are_never_printed_or_recorded(
        videos, clean, bucket, scratch, s3_endpoint, monkeypatch, tmp_path):
    fs, name = bucket
    upload_tree(fs, videos, f"{name}/videos")
    fs.pipe_file(f"{name}/videos/C1/garbage.mp4", b"not a video\n" * 100)  # a failure record, and its message
    without_credentials(monkeypatch, tmp_path)
    secret = f"secret-{uuid.uuid4().hex}"
    command = ("extract", f"s3://{name}/videos", f"s3://{name}/flow", *ARGS, "--jobs", "2")
    result = run_cli(*command, *storage_options(s3_endpoint, secret))
    assert result.returncode == 1 and "4 done, 0 skipped, 1 failed" in result.stderr, result.stderr
    assert output_digest(download_prefix(fs, f"{name}/flow", tmp_path / "got"), SOURCE_META) == clean
    assert_nowhere(secret, result, fs, name)
    assert list(scratch.iterdir()) == []

    # Without the secret nothing can be listed: the option is what signed the requests.
    result = run_cli(*command, *storage_options(s3_endpoint, None))
    assert result.returncode == 2 and "missing: aws_secret_access_key" in result.stderr, result.stderr


def test_storage_option_usage_errors_never_show_a_value(bucket, tmp_path):
    from flowprep.store import StorageOptions

    _, name = bucket
    secret = f"secret-{uuid.uuid4().hex}"
    options = StorageOptions.of({"secret": secret}, [f"s3://{name}/videos", tmp_path])
    assert repr(options) == "StorageOptions(s3: secret)"  # what Dask would log of a task's arguments
    result = run_cli("extract", f"s3://{name}/videos", str(tmp_path / "out"), *ARGS, "--storage-option", secret)
    assert result.returncode == 2 and "KEY=VALUE" in result.stderr and secret not in result.stderr, result.stderr
    result = run_cli("extract", str(CARPHONE), str(tmp_path / "out"), *ARGS, "--storage-option", f"secret={secret}")
    assert result.returncode == 2 and "--storage-option" in result.stderr and secret not in result.stderr, \
        result.stderr


def test_input_urls_that_cannot_be_read_are_usage_errors_naming_them(bucket):
    _, name = bucket
    for source, problem in ((f"nosuch://{name}/videos", "Protocol not known: nosuch"),
                            (f"s3://no-such-bucket-{uuid.uuid4().hex[:6]}/videos", "does not exist"),
                            (f"s3://{name}/nothing-here", "no videos with extensions")):
        result = run_cli("extract", source, f"s3://{name}/flow", *ARGS)
        assert result.returncode == 2 and source in result.stderr and problem in result.stderr, result.stderr
        assert "Traceback" not in result.stderr
    try:
        import gcsfs  # noqa: F401
    except ImportError:  # a protocol fsspec knows, whose package is missing: the extra to install is named
        result = run_cli("extract", "gs://bucket/videos", f"s3://{name}/flow", *ARGS)
        assert result.returncode == 2 and "pip install 'flowprep[gcs]'" in result.stderr, result.stderr


def test_an_input_store_that_goes_away_stops_the_run_with_exit_3_and_the_rerun_completes(
        videos, clean, bucket, scratch, monkeypatch, tmp_path):
    """Every later download would fail the same way: the run stops as for a full disk, with one message, instead
    of failing each remaining video after its retries; the downloads are removed; the rerun completes."""
    fs, name = bucket
    upload_tree(fs, videos, f"{name}/videos")
    server = SecondS3Server(monkeypatch)
    out = tmp_path / "out"
    process = start_cli("extract", f"s3://{name}/videos", str(out), *ARGS)
    wait_for(lambda: any(out.rglob("*.zip")) or process.poll() is not None, 60, "a first finished pack")
    server.stop()
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 3, stderr
    stops = [line for line in stderr.splitlines() if line.startswith("flowprep: stopped")]
    assert len(stops) == 1 and stops[0].startswith(f"flowprep: stopped, reading the input failed: s3://{name}"
                                                   "/videos/"), stderr
    assert "(stopped: reading the input failed)" in stderr and "FAILED" not in stderr, stderr
    assert list(scratch.iterdir()) == []
    with server.back():
        result = run_cli("extract", f"s3://{name}/videos", str(out), *ARGS)
        assert result.returncode == 0, result.stderr
        assert output_digest(out, SOURCE_META) == clean


@pytest.mark.slow
@pytest.mark.parametrize("engine", ["dask", "ray"])
def test_storage_options_reach_dask_and_ray_workers(engine, videos, clean, bucket, scratch, s3_endpoint,
                                                     monkeypatch, tmp_path_factory, tmp_path):
    """Workers in processes of their own, started without credentials or endpoint in their environment, read and
    write the bucket with the options that came with their tasks."""
    pytest.importorskip("distributed" if engine == "dask" else "ray")
    fs, name = bucket
    upload_tree(fs, videos, f"{name}/videos")
    without_credentials(monkeypatch, tmp_path)
    secret = f"secret-{uuid.uuid4().hex}"
    command = ["extract", f"s3://{name}/videos", f"s3://{name}/flow", *ARGS, "--engine", engine,
               *storage_options(s3_endpoint, secret)]
    if engine == "dask":
        with dask_cluster_at(tmp_path_factory.mktemp("dask"), workers=2) as (address, _):
            result = run_cli(*command, "--address", address)
    else:
        monkeypatch.setenv("RAY_TMPDIR", "/tmp")  # Ray's session (and its sockets' short paths) where it keeps it
        result = run_cli(*command)
    assert result.returncode == 0, result.stderr
    assert output_digest(download_prefix(fs, f"{name}/flow", tmp_path / "got"), SOURCE_META) == clean
    assert_nowhere(secret, result, fs, name)
    assert not [path for path in scratch.rglob("*") if path.name.startswith("flowprep-")]
