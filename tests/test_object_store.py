"""Extraction to an object store: a real S3 API server (moto's, on 127.0.0.1, started and stopped here) reached
over HTTP by the real CLI through s3fs, configured the standard way (AWS_* variables, AWS_ENDPOINT_URL)."""
from __future__ import annotations

import json
import re
import uuid

import pytest
from batchdata import dask_cluster_at, output_digest, start_cli, tree_and_clean_run, wait_for
from conftest import SecondS3Server, download_prefix, run_cli

pytest.importorskip("s3fs")
pytest.importorskip("moto.server")

ARGS = ("--algo", "dis", "--pack", "zip", "-q")
videos, clean = tree_and_clean_run(2, 2, *ARGS)  # 4 carphone copies in 2 class folders, and their local zip run


def test_extract_to_s3_writes_the_local_packs_as_objects_and_resumes_by_skipping(videos, clean, bucket, tmp_path):
    fs, name = bucket
    url = f"s3://{name}/flow"
    work = tmp_path / "cwd"
    work.mkdir()
    result = run_cli("extract", str(videos), url, *ARGS, cwd=work)
    assert result.returncode == 0, result.stderr
    assert list(work.iterdir()) == []  # nothing local, no lock folder named 's3:' in the working directory
    keys = sorted(key[len(name) + 1:] for key in fs.find(name))
    assert keys == ["flow/C0/v0.zip", "flow/C0/v1.zip", "flow/C1/v0.zip", "flow/C1/v1.zip", "flow/failures.jsonl",
                    "flow/index.json", "flow/report.json"]  # an object per video, the records at the root, no more
    assert output_digest(download_prefix(fs, f"{name}/flow", tmp_path / "got")) == clean
    report = json.loads(fs.cat_file(f"{name}/flow/report.json"))
    assert (report["done"], report["failed"]) == (4, 0)

    result = run_cli("extract", str(videos), url, *ARGS)
    assert result.returncode == 0, result.stderr
    fs.invalidate_cache()
    assert json.loads(fs.cat_file(f"{name}/flow/report.json"))["skipped"] == 4
    result = run_cli("extract", str(videos), url, *ARGS[:-3], "--pack", "zip", "--bound", "40", "-q")
    assert result.returncode == 0 and f"KEPT {url}/C0/v0: settings differ from this run" in result.stderr


def test_shards_on_s3_cover_the_list_and_report_as_objects(videos, clean, bucket, tmp_path):
    fs, name = bucket
    url = f"s3://{name}/flow"
    for k in (1, 2):
        result = run_cli("extract", str(videos), url, *ARGS, "--shard", f"{k}/2")
        assert result.returncode == 0, result.stderr
    keys = {key.rsplit("/", 1)[1] for key in fs.find(f"{name}/flow")}
    assert {"report.shard-1-of-2.json", "report.shard-2-of-2.json"} <= keys and "report.json" not in keys
    got = download_prefix(fs, f"{name}/flow", tmp_path / "got")
    assert output_digest(got) == clean
    result = run_cli("extract", str(videos), url, *ARGS)  # the whole list removes the shards' records
    fs.invalidate_cache()
    assert result.returncode == 0 and not fs.glob(f"{name}/flow/report.shard-*")


def test_a_missing_bucket_stops_the_run_before_any_work_with_exit_3(videos, bucket):
    """The store refuses at the first request (listing the prefix's stale reports): exit 3, every video named as
    not processed, no traceback."""
    result = run_cli("extract", str(videos), f"s3://no-such-bucket-{uuid.uuid4().hex[:6]}/flow", *ARGS)
    assert result.returncode == 3, result.stderr
    assert "Traceback" not in result.stderr and "The specified bucket does not exist" in result.stderr
    assert "4 not processed (stopped: the output storage failed)" in result.stderr


def test_object_store_usage_errors_name_the_url_and_what_to_do(videos, bucket):
    _, name = bucket
    result = run_cli("extract", str(videos), f"s3://{name}/flow", "--algo", "dis", "-q")
    assert result.returncode == 2 and "is an object store: write it with --pack zip" in result.stderr
    result = run_cli("extract", str(videos), "nosuch://bucket/flow", *ARGS)
    assert result.returncode == 2 and "'nosuch://bucket/flow': Protocol not known: nosuch" in result.stderr
    pytest.importorskip("fsspec")
    try:
        import gcsfs  # noqa: F401
    except ImportError:
        result = run_cli("extract", str(videos), "gs://bucket/flow", *ARGS)
        assert result.returncode == 2 and "pip install 'flowprep[gcs]'" in result.stderr, result.stderr


def test_a_server_that_goes_away_stops_the_run_and_the_rerun_completes(videos, clean, bucket, monkeypatch,
                                                                        tmp_path):
    """The S3 server stops mid-run: exit 3 with one message (no video blamed), nothing partial visible; a server
    back on the same address (moto keeps its buckets in this process) lets the rerun complete the tree."""
    fs, name = bucket
    url = f"s3://{name}/flow"
    server = SecondS3Server(monkeypatch)
    process = start_cli("extract", str(videos), url, *ARGS)
    wait_for(lambda: fs.invalidate_cache() or any(k.endswith(".zip") for k in fs.find(name))
             or process.poll() is not None, 60, "a first uploaded pack")
    server.stop()
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 3, stderr
    # No traceback through flowprep's code. (aiohttp's background tasks may log "Task exception was never
    # retrieved" for the connection the server dropped: asyncio's logger, not an error of the run.)
    assert not re.search(r'File "[^"]*flowprep/', stderr) and "FAILED" not in stderr, stderr
    assert len([line for line in stderr.splitlines() if line.startswith("flowprep: stopped")]) == 1, stderr
    assert f"could not be written in {url} (" in stderr or "NOT WRITTEN" not in stderr
    with server.back():
        result = run_cli("extract", str(videos), url, *ARGS)
        assert result.returncode == 0, result.stderr
        fs.invalidate_cache()
        assert output_digest(download_prefix(fs, f"{name}/flow", tmp_path / "got")) == clean


@pytest.mark.slow
def test_dask_workers_write_straight_to_the_bucket(videos, clean, bucket, tmp_path_factory, tmp_path):
    """Workers of a real Dask cluster (their own processes, started with the credentials and endpoint in their
    environment, as cluster nodes would be) upload the packs themselves: no shared file system is involved."""
    pytest.importorskip("distributed")
    fs, name = bucket
    url = f"s3://{name}/flow"
    with dask_cluster_at(tmp_path_factory.mktemp("dask"), workers=2) as (address, _):
        result = run_cli("extract", str(videos), url, *ARGS, "--engine", "dask", "--address", address)
    assert result.returncode == 0, result.stderr
    fs.invalidate_cache()
    assert json.loads(fs.cat_file(f"{name}/flow/report.json"))["engine"] == "dask"
    assert output_digest(download_prefix(fs, f"{name}/flow", tmp_path / "got")) == clean
