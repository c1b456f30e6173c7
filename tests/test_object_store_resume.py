"""Resume on an object store by one listing: the real CLI against moto's S3 server on 127.0.0.1, with every
request the CLI sends logged by a second server in front of moto's own application (moto keeps one set of
buckets per process, so both serve the same buckets; nothing of S3 is mocked)."""
from __future__ import annotations

import json
import signal
import threading
import uuid
from urllib.parse import unquote

import pytest
from batchdata import kill_group, output_digest, start_cli, tree_and_clean_run, wait_for
from conftest import download_prefix, run_cli

pytest.importorskip("s3fs")
moto_server = pytest.importorskip("moto.server")

ARGS = ("--algo", "dis", "--pack", "zip", "-q")
PACKS = ["C0/v0.zip", "C0/v1.zip", "C1/v0.zip", "C1/v1.zip"]
videos, clean = tree_and_clean_run(2, 2, *ARGS)  # 4 carphone copies in 2 class folders, and their local zip run


class Requests:
    """The requests to `bucket` that the logging server received since the last clear(): (method, key, query)."""

    def __init__(self, log: list[tuple[str, str, str]], bucket: str):
        self._log, self._bucket, self._start = log, bucket, len(log)

    def clear(self) -> None:
        self._start = len(self._log)

    @property
    def log(self) -> list[tuple[str, str, str]]:
        return [(method, path[len(self._bucket) + 2:], query) for method, path, query in self._log[self._start:]
                if path == f"/{self._bucket}" or path.startswith(f"/{self._bucket}/")]

    def listings(self) -> list[str]:
        """The listing requests (ListObjectsV2: one per 1000 keys)."""
        return [query for method, key, query in self.log if method == "GET" and key == "" and "list-type" in query]

    def keys(self, suffix: str = ".zip") -> list[str]:
        """The keys of the objects that requests read or wrote, ending with `suffix` (packs by default)."""
        return [key for _, key, _ in self.log if key.endswith(suffix)]


@pytest.fixture(scope="module")
def logging_server(s3_endpoint):
    """(URL, log) of a server on 127.0.0.1 that hands each request to moto's application after logging it."""
    from werkzeug.serving import make_server

    app = moto_server.DomainDispatcherApplication(moto_server.create_backend_app)
    log: list[tuple[str, str, str]] = []

    def logged(environ, start_response):
        log.append((environ["REQUEST_METHOD"], unquote(environ.get("PATH_INFO", "")), environ.get("QUERY_STRING", "")))
        return app(environ, start_response)

    server = make_server("127.0.0.1", 0, logged, threaded=True, request_handler=moto_server.MotoRequestHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", log
    server.shutdown()
    thread.join()


@pytest.fixture
def counted(bucket, logging_server, monkeypatch):
    """Requests of the CLI runs started from now on (AWS_ENDPOINT_URL points them at the logging server)."""
    url, log = logging_server
    monkeypatch.setenv("AWS_ENDPOINT_URL", url)
    return Requests(log, bucket[1])


@pytest.fixture(scope="module")
def finished(videos, s3_endpoint, tmp_path_factory):
    """(bucket, prefix) of a finished run of `videos` on the server, made once for the module; tests copy it."""
    s3fs = pytest.importorskip("s3fs")
    fs = s3fs.S3FileSystem(endpoint_url=s3_endpoint, key="testing", secret="testing", skip_instance_cache=True)
    name = f"done-{uuid.uuid4().hex[:8]}"
    fs.mkdir(name)
    with pytest.MonkeyPatch.context() as patch:
        for key, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                           "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": s3_endpoint}.items():
            patch.setenv(key, value)
        result = run_cli("extract", str(videos), f"s3://{name}/flow", *ARGS)
    assert result.returncode == 0, result.stderr
    return name, "flow"


def copy_of(finished, bucket) -> str:
    """A copy of the finished prefix in the test's bucket (server-side copies: the same bytes and ETags); its URL."""
    fs, name = bucket
    source, prefix = finished
    for key in fs.find(f"{source}/{prefix}"):
        fs.copy(key, f"{name}/{key[len(source) + 1:]}")
    fs.invalidate_cache()
    return f"s3://{name}/{prefix}"


def report_of(fs, url: str, name: str = "report.json") -> dict:
    fs.invalidate_cache()
    return json.loads(fs.cat_file(url.removeprefix("s3://") + "/" + name))


def test_a_rerun_of_a_finished_prefix_lists_it_once_and_reads_no_pack(videos, finished, bucket, counted):
    fs, _ = bucket
    url = copy_of(finished, bucket)
    assert "index.json" in {key.rsplit("/", 1)[1] for key in fs.find(url)}
    result = run_cli("extract", str(videos), url, *ARGS)
    assert result.returncode == 0, result.stderr
    assert len(counted.listings()) == 1 and counted.keys() == [], counted.log  # one listing, no pack touched
    assert report_of(fs, url)["skipped"] == 4

    # Settings compared from the index: a changed --bound is KEPT for every video, still without reading a pack.
    counted.clear()
    result = run_cli("extract", str(videos), url, *ARGS[:-1], "--bound", "40", "-q")
    assert result.returncode == 0, result.stderr
    for pack in PACKS:
        assert f"KEPT {url}/{pack[:-4]}: settings differ from this run (use --overwrite to recompute): bound: " \
               "20.0 recorded, 40.0 asked" in result.stderr, result.stderr
    assert len(counted.listings()) == 1 and counted.keys() == [], counted.log


def test_a_replaced_pack_is_read_not_trusted(videos, finished, bucket, counted, tmp_path):
    """Another pack uploaded under a video's key (its ETag no longer the one the index recorded) is read by range
    requests like a pack no index knows: its own meta.json (other settings) decides, not the index's entry."""
    fs, _ = bucket
    url = copy_of(finished, bucket)
    other = tmp_path / "other"
    result = run_cli("extract", str(videos / "C0" / "v0.mp4"), str(other), *ARGS[:-1], "--bound", "40", "-q")
    assert result.returncode == 0, result.stderr
    fs.put_file(str(other / "v0.zip"), f"{url.removeprefix('s3://')}/C0/v0.zip")
    counted.clear()
    result = run_cli("extract", str(videos), url, *ARGS)
    assert result.returncode == 0, result.stderr
    assert f"KEPT {url}/C0/v0: settings differ from this run (use --overwrite to recompute): bound: 40.0 " \
           "recorded, 20.0 asked" in result.stderr, result.stderr
    assert result.stderr.count("KEPT") == 1, result.stderr
    assert set(counted.keys()) == {"flow/C0/v0.zip"}, counted.log  # the others vouched for, not read
    # The rerun's index records the pack that is there now: the next rerun reads no pack and still keeps it.
    counted.clear()
    result = run_cli("extract", str(videos), url, *ARGS)
    assert result.returncode == 0 and result.stderr.count("KEPT") == 1, result.stderr
    assert counted.keys() == []


def test_a_killed_overwrite_keeps_the_index_of_the_packs_left_and_the_rerun_completes(videos, clean, finished,
                                                                                     bucket, counted, tmp_path):
    """An --overwrite run killed (SIGKILL) after its first upload: the index of the finished run is still there,
    so the rerun reads only the packs that run replaced (ETags that changed) and ends with the local run's tree."""
    fs, _ = bucket
    url = copy_of(finished, bucket)
    key = url.removeprefix("s3://")
    before = {k: info["ETag"] for k, info in fs.find(key, detail=True).items() if k.endswith(".zip")}
    process = start_cli("extract", str(videos), url, *ARGS, "--overwrite")
    wait_for(lambda: fs.invalidate_cache() or any(info["ETag"] != before[k] for k, info in
                                                  fs.find(key, detail=True).items() if k in before)
             or process.poll() is not None, 60, "a first pack uploaded again")
    kill_group(process.pid, signal.SIGKILL)
    process.wait()
    fs.invalidate_cache()
    replaced = {k.split("/", 1)[1] for k, info in fs.find(key, detail=True).items()
                if k in before and info["ETag"] != before[k]}
    assert 1 <= len(replaced) < 4 and "report.json" not in {k.rsplit("/", 1)[1] for k in fs.find(key)}
    counted.clear()
    result = run_cli("extract", str(videos), url, *ARGS)
    assert result.returncode == 0, result.stderr
    assert set(counted.keys()) == replaced, counted.log
    assert report_of(fs, url)["skipped"] == 4
    assert output_digest(download_prefix(fs, key, tmp_path / "got")) == clean


def test_shards_write_their_indexes_and_a_run_of_the_whole_list_replaces_them(videos, finished, bucket, counted):
    fs, _ = bucket
    url = copy_of(finished, bucket)
    key = url.removeprefix("s3://")
    fs.rm_file(f"{key}/index.json")  # as if the packs were written by the shards
    for k in (1, 2):
        result = run_cli("extract", str(videos), url, *ARGS, "--shard", f"{k}/2")
        assert result.returncode == 0, result.stderr
    fs.invalidate_cache()
    names = {k.rsplit("/", 1)[1] for k in fs.find(key)}
    assert {"index.shard-1-of-2.json", "index.shard-2-of-2.json"} <= names and "index.json" not in names
    counted.clear()
    result = run_cli("extract", str(videos), url, *ARGS)  # vouched for by the shards' indexes
    assert result.returncode == 0, result.stderr
    assert counted.keys() == [] and report_of(fs, url)["skipped"] == 4
    fs.invalidate_cache()
    names = {k.rsplit("/", 1)[1] for k in fs.find(key)}
    assert "index.json" in names and not {n for n in names if n.startswith("index.shard-")}
    counted.clear()
    result = run_cli("extract", str(videos), url, *ARGS)
    assert result.returncode == 0 and counted.keys() == [] and len(counted.listings()) == 1


def test_overwrite_recomputes_every_pack_and_the_next_rerun_trusts_the_new_ones(videos, clean, finished, bucket,
                                                                               counted, tmp_path):
    fs, _ = bucket
    url = copy_of(finished, bucket)
    before = {k: info["ETag"] for k, info in fs.find(url.removeprefix("s3://"), detail=True).items()}
    result = run_cli("extract", str(videos), url, *ARGS, "--overwrite")
    assert result.returncode == 0 and report_of(fs, url)["done"] == 4, result.stderr
    fs.invalidate_cache()
    after = {k: info["ETag"] for k, info in fs.find(url.removeprefix("s3://"), detail=True).items()}
    assert all(after[k] != before[k] for k in before if k.endswith(".zip"))  # new packs (their meta.json's times)
    counted.clear()
    result = run_cli("extract", str(videos), url, *ARGS)
    assert result.returncode == 0 and counted.keys() == [] and report_of(fs, url)["skipped"] == 4, counted.log
    assert output_digest(download_prefix(fs, url.removeprefix("s3://"), tmp_path / "got")) == clean
