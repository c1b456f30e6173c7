"""list, verify, show and report read an object store as they read a local tree: the same lines, with URLs for
paths. A real S3 API server (moto's, on 127.0.0.1, tests/conftest.py) reached through s3fs by the real CLI."""
from __future__ import annotations

import json
import zipfile

import pytest
from batchdata import tree_and_clean_run
from conftest import run_cli, upload_tree, without_credentials

pytest.importorskip("s3fs")

ARGS = ("--algo", "dis", "--pack", "zip", "--fps", "5", "-q")
videos, _ = tree_and_clean_run(2, 2, *ARGS)


@pytest.fixture(scope="module")
def local_tree(videos, tmp_path_factory):
    """A local run of ARGS: packs, report.json and failures.jsonl."""
    out = tmp_path_factory.mktemp("local") / "flow"
    result = run_cli("extract", str(videos), str(out), *ARGS)
    assert result.returncode == 0, result.stderr
    return out


@pytest.fixture
def uploaded(local_tree, bucket):
    """The local tree's files as objects under s3://BUCKET/flow (what a run to the bucket writes), and a
    folder-form copy of one video under s3://BUCKET/dirs (a local --pack dir tree synced to a bucket)."""
    fs, name = bucket
    fs.put(str(local_tree), f"{name}/flow", recursive=True)
    return fs, name


def _lines(text: str, root: str) -> list[str]:
    return [line.replace(root, "ROOT") for line in text.splitlines()]


def test_list_verify_and_report_of_a_prefix_say_what_they_say_of_the_local_tree(local_tree, uploaded, tmp_path):
    fs, name = uploaded
    url = f"s3://{name}/flow"
    for command in (("list",), ("verify",), ("report",)):
        here, there = run_cli(*command, str(local_tree)), run_cli(*command, url, cwd=tmp_path)
        assert there.returncode == here.returncode == 0, there.stderr
        assert _lines(there.stdout, url) == _lines(here.stdout, str(local_tree)), command
        assert here.stdout.strip()  # each printed its lines (the list, a line a video, the summary)
    assert list(tmp_path.iterdir()) == []  # no local folder named 's3:'


def test_verify_names_a_truncated_pack_object_and_a_corrupt_member(local_tree, uploaded):
    fs, name = uploaded
    url = f"s3://{name}/flow"
    whole = fs.cat_file(f"{name}/flow/C0/v0.zip")
    fs.pipe_file(f"{name}/flow/C0/v0.zip", whole[: len(whole) // 2])  # an upload cut short, by another tool
    pack = zipfile.ZipFile(local_tree / "C1" / "v1.zip")
    info = pack.getinfo("flow_x_00002.jpg")
    data = bytearray(fs.cat_file(f"{name}/flow/C1/v1.zip"))
    start = info.header_offset + 30 + len(info.filename) + len(info.extra)
    data[start + 100] ^= 0xFF  # one flipped byte inside a JPEG: its CRC-32 fails
    fs.pipe_file(f"{name}/flow/C1/v1.zip", bytes(data))
    result = run_cli("verify", url)
    assert result.returncode == 1
    assert f"{url}/C0/v0.zip: not a readable zip pack" in result.stdout, result.stdout
    assert (f"{url}/C1/v1.zip/flow_x_00002.jpg: truncated or corrupt in the zip pack (CRC-32 mismatch)"
            in result.stdout), result.stdout
    assert f"ok      {url}/C0/v1.zip" in result.stdout and f"ok      {url}/C1/v0.zip" in result.stdout


def test_show_renders_a_pack_and_a_folder_on_the_store_as_the_local_one(local_tree, uploaded, tmp_path):
    fs, name = uploaded
    here = run_cli("show", str(local_tree / "C0" / "v1"), "--out", str(tmp_path / "local.png"))
    there = run_cli("show", f"s3://{name}/flow/C0/v1", "--out", str(tmp_path / "store.png"))
    assert here.returncode == there.returncode == 0, there.stderr
    assert (tmp_path / "store.png").read_bytes() == (tmp_path / "local.png").read_bytes()
    folder = tmp_path / "folder"
    with zipfile.ZipFile(local_tree / "C0" / "v1.zip") as pack:
        pack.extractall(folder)
    fs.put(str(folder), f"{name}/dirs/C0/v1", recursive=True)
    there = run_cli("show", f"s3://{name}/dirs/C0/v1", "--out", str(tmp_path / "folder.png"))
    assert there.returncode == 0, there.stderr
    assert (tmp_path / "folder.png").read_bytes() == (tmp_path / "local.png").read_bytes()
    missing = run_cli("show", f"s3://{name}/flow/C0/nothing", "--out", str(tmp_path / "x.png"))
    assert missing.returncode == 2 and f"s3://{name}/flow/C0/nothing: no flow output here" in missing.stderr


def test_report_of_a_prefix_without_records_and_of_a_missing_bucket(uploaded):
    fs, name = uploaded
    result = run_cli("report", f"s3://{name}/nothing")
    assert result.returncode == 2 and "holds no report.json" in result.stderr, result.stderr
    fs.rm_file(f"{name}/flow/failures.jsonl")
    result = run_cli("report", f"s3://{name}/flow")
    assert result.returncode == 1 and "MISSING report.json (unreadable:" in result.stdout, result.stdout
    result = run_cli("verify", "s3://no-such-bucket-for-flowprep/flow")
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    assert "s3://no-such-bucket-for-flowprep/flow" in result.stderr + result.stdout


def test_the_library_reads_a_prefix_as_the_local_tree(local_tree, uploaded):
    """annotations.list_annotations and store.open_output on URLs: the same entries, meta.json and member bytes."""
    fs, name = uploaded
    from flowprep.annotations import list_annotations
    from flowprep.store import open_output

    entries = [(e.path, e.num_frames, e.label) for e in list_annotations(f"s3://{name}/flow")]
    assert entries == [(e.path, e.num_frames, e.label) for e in list_annotations(local_tree)] and len(entries) == 4
    with open_output(f"s3://{name}/flow/C0/v0") as reader, zipfile.ZipFile(local_tree / "C0" / "v0.zip") as pack:
        assert reader.is_pack and reader.path == f"s3://{name}/flow/C0/v0.zip"
        assert reader.names() == sorted(pack.namelist())
        assert reader.meta() == json.loads(pack.read("meta.json"))
        assert all(reader.read(member) == pack.read(member) for member in pack.namelist())


def test_reading_commands_take_the_store_s_credentials_from_storage_options_alone(local_tree, uploaded, s3_endpoint,
                                                                                  monkeypatch, tmp_path):
    """list, verify (with worker processes, which loky starts without the parent's fsspec config), show and
    report with the credentials and endpoint given only as --storage-option: what they print of the local tree,
    and never the secret."""
    fs, name = uploaded
    url = f"s3://{name}/flow"
    without_credentials(monkeypatch, tmp_path)
    options = [arg for item in ("key=testing", "secret=testing-secret-5d1e", f"endpoint_url={s3_endpoint}",
                                'client_kwargs={"region_name": "us-east-1"}') for arg in ("--storage-option", item)]
    for command in (("list",), ("verify", "--jobs", "2"), ("report",)):
        here, there = run_cli(*command, str(local_tree)), run_cli(*command, url, *options)
        assert there.returncode == here.returncode == 0, there.stderr
        assert _lines(there.stdout, url) == _lines(here.stdout, str(local_tree)), command
        assert "testing-secret-5d1e" not in there.stdout + there.stderr
    result = run_cli("show", f"{url}/C1/v0", "--out", str(tmp_path / "p.png"), *options)
    assert result.returncode == 0 and (tmp_path / "p.png").stat().st_size > 0, result.stderr
    result = run_cli("verify", url)  # no credentials at all: one message naming the URL, no traceback
    assert result.returncode == 1 and url in result.stderr and "Traceback" not in result.stderr, result.stderr


def test_verify_roundtrip_recomputes_pairs_from_sources_on_the_store(videos, bucket, tmp_path, monkeypatch):
    """A tree extracted from s3:// videos records their URLs as sources: the round trip downloads each into
    TMPDIR for the decoders, as extraction did, and leaves nothing there."""
    fs, name = bucket
    upload_tree(fs, videos, f"{name}/videos")
    url = f"s3://{name}/flow"
    result = run_cli("extract", f"s3://{name}/videos", url, *ARGS)
    assert result.returncode == 0, result.stderr
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setenv("TMPDIR", str(scratch))
    result = run_cli("verify", url, "--roundtrip", "2")
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("round trip of 2 pairs") == 4, result.stdout
    assert list(scratch.iterdir()) == []
