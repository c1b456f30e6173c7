"""Faults of the object store that extract writes to, each from a real server on 127.0.0.1: a bucket that refuses
writes (moto's server with IAM enforced: a user whose policy only reads), throttling (S3's 503 SlowDown, answered
by a proxy in front of moto's server), a kill -9 while a pack is being uploaded, and Ray's workers stopping (on
SIGTERM, and when the store stops the run). Each gets what a full disk gets: exit 3 (143 for SIGTERM), one message
naming the URL and the store's error, nothing half-visible under the prefix, and the rerun completes the local
run's tree."""
from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlsplit

import pytest
from batchdata import (class_tree, free_port, kill_group, output_digest, start_cli, temporaries,
                       tree_and_clean_run, wait_for)
from conftest import download_prefix, run_cli

from flowprep.store import finished_meta

s3fs = pytest.importorskip("s3fs")
pytest.importorskip("moto.server")

ARGS = ("--algo", "dis", "--pack", "zip", "-q")
PACKS = ["C0/v0.zip", "C0/v1.zip", "C1/v0.zip", "C1/v1.zip"]
videos, clean = tree_and_clean_run(2, 2, *ARGS)  # 4 carphone copies in 2 class folders, and their local zip run

# What S3 answers a client over its request rate (HTTP 503).
SLOW_DOWN = (b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>SlowDown</Code>'
             b"<Message>Please reduce your request rate.</Message><RequestId>0</RequestId></Error>")
# Headers of one hop, not forwarded (the proxy sends each body whole, with its Content-Length).
HOP_HEADERS = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer", "upgrade",
               "expect", "content-length"}
# A rule: (method, key 'bucket/path', keys of the earlier requests of that method) -> "forward", "throttle" or
# "drop" (the connection closed unanswered: the client was gone before its request was whole). It may block.
Rule = Callable[[str, str, list[str]], str]


class S3Proxy(ThreadingHTTPServer):
    """An HTTP proxy on 127.0.0.1 in front of the S3 server at `upstream`; `rule` decides each request's fate and
    `requests` records (method, key, outcome) in arrival order. Requests are forwarded as they came (their
    signatures stay valid: the Host header is kept)."""

    daemon_threads = True  # a request a rule holds does not keep the test waiting at shutdown

    def __init__(self, upstream: str):
        super().__init__(("127.0.0.1", 0), _ProxyHandler)
        self.upstream = urlsplit(upstream).netloc
        self.rule: Rule = lambda method, key, earlier: "forward"
        self.requests: list[tuple[str, str, str]] = []
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def decide(self, method: str, key: str) -> str:
        with self._lock:
            earlier = [k for m, k, _ in self.requests if m == method]
            index = len(self.requests)
            self.requests.append((method, key, "?"))
        outcome = self.rule(method, key, earlier)
        with self._lock:
            self.requests[index] = (method, key, outcome)
        return outcome

    def keys(self, method: str, outcome: str) -> list[str]:
        return [k for m, k, o in self.requests if m == method and o == outcome]


class _ProxyHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as S3 clients expect

    def log_message(self, *args) -> None:
        pass

    def _serve(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        outcome = self.server.decide(self.command, unquote(urlsplit(self.path).path).lstrip("/"))
        if outcome == "drop":
            self.close_connection = True
            return
        if outcome == "throttle":
            status, headers, data = 503, [("Content-Type", "application/xml")], SLOW_DOWN
        else:
            upstream = http.client.HTTPConnection(self.server.upstream, timeout=60)
            upstream.request(self.command, self.path, body=body,
                             headers={k: v for k, v in self.headers.items() if k.lower() not in HOP_HEADERS})
            response = upstream.getresponse()
            status, headers, data = response.status, response.getheaders(), response.read()
            upstream.close()
        self.send_response(status)
        for name, value in headers:
            if name.lower() not in HOP_HEADERS:
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _serve


@contextmanager
def s3_proxy(upstream: str) -> Iterator[S3Proxy]:
    """An S3Proxy in front of `upstream`, which the CLI runs started meanwhile talk to (AWS_ENDPOINT_URL), with
    botocore's retries bounded so that the throttled tests are quick (2 attempts a call; s3fs tries a call 5 times
    on SlowDown: 10 requests in all, about 3 s)."""
    proxy = S3Proxy(upstream)
    thread = threading.Thread(target=proxy.serve_forever, daemon=True)
    thread.start()
    try:
        with pytest.MonkeyPatch.context() as patch:
            for name, value in {"AWS_ENDPOINT_URL": proxy.url, "AWS_MAX_ATTEMPTS": "2",
                                "AWS_RETRY_MODE": "standard"}.items():
                patch.setenv(name, value)
            yield proxy
    finally:
        proxy.shutdown()
        proxy.server_close()
        thread.join()


@pytest.fixture
def proxy(bucket, s3_endpoint):
    with s3_proxy(s3_endpoint) as running:
        yield running


def pack_problem(fs, key: str) -> str:
    """Why the object `key` is not a whole pack (not a zip, a member that fails its CRC, no meta.json), or ""."""
    try:
        with fs.open(key, "rb") as handle, zipfile.ZipFile(handle) as pack:
            bad = pack.testzip()
            return f"member {bad} is damaged" if bad else "" if "meta.json" in pack.namelist() else "no meta.json"
    except zipfile.BadZipFile as exc:
        return f"not a zip ({exc})"


def stop_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("flowprep: stopped")]


def test_kill_9_while_a_pack_uploads_leaves_only_whole_packs_and_the_rerun_completes(videos, clean, bucket, proxy,
                                                                                    tmp_path):
    """The kill comes while the proxy holds the second upload of a video's output (it is never answered): what the
    store shows then is exactly what was uploaded before, each object a whole pack. (A commit that uploaded a
    pack's members one by one, or grew the object by appends, shows its first piece here and fails.)"""
    fs, name = bucket
    under_way, killed = threading.Event(), threading.Event()

    def hold_the_second_video_upload(method: str, key: str, earlier: list[str]) -> str:
        below_a_class = [k for k in earlier if k.count("/") >= 3]  # bucket/flow/C0/...: not the run's records
        if method == "PUT" and key.count("/") >= 3 and len(below_a_class) == 1:
            under_way.set()
            killed.wait(60)
            return "drop"
        return "forward"

    proxy.rule = hold_the_second_video_upload
    process = start_cli("extract", str(videos), f"s3://{name}/flow", *ARGS)
    try:
        assert under_way.wait(60), process.communicate(timeout=60)[1]
    finally:
        kill_group(process.pid, signal.SIGKILL)
        process.wait()
        killed.set()
    fs.invalidate_cache()
    keys = fs.find(name)
    assert keys == proxy.keys("PUT", "forward") == [f"{name}/flow/C0/v0.zip"]
    assert {key: pack_problem(fs, key) for key in keys} == {key: "" for key in keys}

    proxy.rule = lambda method, key, earlier: "forward"
    result = run_cli("extract", str(videos), f"s3://{name}/flow", *ARGS)
    assert result.returncode == 0, result.stderr
    fs.invalidate_cache()
    assert output_digest(download_prefix(fs, f"{name}/flow", tmp_path / "got")) == clean


def test_a_few_throttled_requests_are_retried_and_the_run_completes(videos, clean, bucket, proxy, tmp_path):
    """The first PUT of every object is answered 503 SlowDown: botocore's and s3fs's retries (with backoff) send it
    again, the run exits 0 and the tree is the local run's."""
    fs, name = bucket
    proxy.rule = lambda method, key, earlier: "throttle" if method == "PUT" and key not in earlier else "forward"
    result = run_cli("extract", str(videos), f"s3://{name}/flow", *ARGS)
    assert result.returncode == 0, result.stderr
    assert {f"{name}/flow/{pack}" for pack in PACKS} <= set(proxy.keys("PUT", "throttle"))
    fs.invalidate_cache()
    assert output_digest(download_prefix(fs, f"{name}/flow", tmp_path / "got")) == clean


def test_a_store_that_keeps_throttling_stops_the_run_with_exit_3_and_the_rerun_completes(videos, clean, bucket,
                                                                                        proxy, tmp_path):
    """Every upload of a pack is answered 503 SlowDown: after the retries the first video stops the run (exit 3),
    its message says the store throttled, no further video is tried, and no pack is visible; the reports, which
    the store still takes, say what was not processed. Once the store takes uploads the rerun completes."""
    fs, name = bucket
    url = f"s3://{name}/flow"
    proxy.rule = lambda method, key, earlier: "throttle" if method == "PUT" and key.endswith(".zip") else "forward"
    result = run_cli("extract", str(videos), url, *ARGS)
    assert result.returncode == 3, result.stderr
    assert "Traceback" not in result.stderr and "FAILED" not in result.stderr
    message = stop_lines(result.stderr)
    assert len(message) == 1 and f"{url}/C0/v0.zip: cannot upload the pack (SlowDown" in message[0], result.stderr
    assert "the store throttled the requests" in message[0] and f"the output object store {url} refused" in message[0]
    assert "free space" not in message[0]  # a full disk's advice, not a bucket's
    attempts = proxy.keys("PUT", "throttle")
    assert set(attempts) == {f"{name}/flow/C0/v0.zip"} and len(attempts) > 2  # retried; no other video started
    fs.invalidate_cache()
    assert not [key for key in fs.find(name) if key.endswith(".zip")]
    report = json.loads(fs.cat_file(f"{name}/flow/report.json"))
    assert report["done"] == 0 and len(report["not_processed"]) == 4

    proxy.rule = lambda method, key, earlier: "forward"
    result = run_cli("extract", str(videos), url, *ARGS)
    assert result.returncode == 0, result.stderr
    fs.invalidate_cache()
    assert output_digest(download_prefix(fs, f"{name}/flow", tmp_path / "got")) == clean


# ---- a bucket that refuses writes: moto's server in its own process, with IAM enforced ----

# AWS's AmazonS3ReadOnlyAccess (s3:Get*, s3:List*), and s3:Head*: moto checks a HEAD request as s3:HeadObject or
# s3:HeadBucket, which AWS counts as s3:GetObject and s3:ListBucket.
READ_ONLY = ["s3:Get*", "s3:List*", "s3:Head*"]
WRITE = ["s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload"]


class IamStore:
    """A moto server process on 127.0.0.1 with one bucket and IAM enforced on every request (moto's
    INITIAL_NO_AUTH_ACTION_COUNT, set to 0 through its /moto-api/reset-auth once the users exist): an admin user,
    and the user 'flowprep' whose inline policies say what the CLI may do."""

    def __init__(self, port: int):
        self.endpoint = f"http://127.0.0.1:{port}"
        self.bucket = "refusing-bucket"
        self.process = subprocess.Popen([os.path.join(os.path.dirname(sys.executable), "moto_server"),
                                         "-H", "127.0.0.1", "-p", str(port)],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def start(self) -> None:
        wait_for(self._answers, 30, f"moto's server at {self.endpoint}")
        root = self._client("s3", "testing", "testing")
        root.create_bucket(Bucket=self.bucket)
        iam = self._client("iam", "testing", "testing")
        self.admin = self._user(iam, "admin", ["*"])
        self.flowprep = self._user(iam, "flowprep", READ_ONLY)
        urllib.request.urlopen(urllib.request.Request(f"{self.endpoint}/moto-api/reset-auth", data=b"0",
                                                      headers={"Content-Type": "text/plain"}))
        self.iam = self._client("iam", *self.admin)
        self.fs = s3fs.S3FileSystem(endpoint_url=self.endpoint, key=self.admin[0], secret=self.admin[1],
                                    skip_instance_cache=True)

    def allow_writes(self, allowed: bool) -> None:
        if allowed:
            self.iam.put_user_policy(UserName="flowprep", PolicyName="write", PolicyDocument=_policy(WRITE))
        else:
            self.iam.delete_user_policy(UserName="flowprep", PolicyName="write")

    def keys(self) -> list[str]:
        self.fs.invalidate_cache()
        return self.fs.find(self.bucket)

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)

    def _answers(self) -> bool:
        try:
            urllib.request.urlopen(f"{self.endpoint}/moto-api/", timeout=1)
            return True
        except OSError:
            return False

    def _client(self, service: str, key: str, secret: str):
        import boto3

        return boto3.client(service, endpoint_url=self.endpoint, region_name="us-east-1", aws_access_key_id=key,
                            aws_secret_access_key=secret)

    @staticmethod
    def _user(iam, name: str, actions: list[str]) -> tuple[str, str]:
        iam.create_user(UserName=name)
        iam.put_user_policy(UserName=name, PolicyName="read" if actions == READ_ONLY else "all",
                            PolicyDocument=_policy(actions))
        key = iam.create_access_key(UserName=name)["AccessKey"]
        return key["AccessKeyId"], key["SecretAccessKey"]


def _policy(actions: list[str]) -> str:
    return json.dumps({"Version": "2012-10-17",
                       "Statement": [{"Effect": "Allow", "Action": actions, "Resource": "*"}]})


@pytest.fixture
def iam_store(monkeypatch):
    """An IamStore whose 'flowprep' user the CLI runs started meanwhile are (AWS_* variables)."""
    pytest.importorskip("boto3")
    store = IamStore(free_port())
    try:
        store.start()
        for name, value in {"AWS_ACCESS_KEY_ID": store.flowprep[0], "AWS_SECRET_ACCESS_KEY": store.flowprep[1],
                            "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": store.endpoint}.items():
            monkeypatch.setenv(name, value)
        yield store
    finally:
        store.stop()


def test_a_bucket_that_refuses_writes_stops_the_run_with_exit_3_and_the_rerun_completes(videos, clean, iam_store,
                                                                                       tmp_path):
    """Read-only from the start: the store's AccessDenied at the first write (clearing stale reports) stops the
    run before any work. Write access revoked while the second pack uploads: that upload is refused, the run
    stops, only the first pack is visible. With write access back, the rerun completes the tree."""
    url = f"s3://{iam_store.bucket}/flow"
    result = run_cli("extract", str(videos), url, *ARGS)
    assert result.returncode == 3, result.stderr
    message = stop_lines(result.stderr)
    assert "Traceback" not in result.stderr and len(message) == 1, result.stderr
    assert f"{url}/" in message[0] and "(AccessDenied, HTTP 403: Access Denied)" in message[0]
    assert "4 not processed" in message[0] and iam_store.keys() == []

    iam_store.allow_writes(True)
    under_way = threading.Event()

    def revoke_during_the_second_upload(method: str, key: str, earlier: list[str]) -> str:
        if method == "PUT" and key.endswith(".zip") and len([k for k in earlier if k.endswith(".zip")]) == 1:
            iam_store.allow_writes(False)
            under_way.set()
        return "forward"

    with s3_proxy(iam_store.endpoint) as proxy:
        proxy.rule = revoke_during_the_second_upload
        result = run_cli("extract", str(videos), url, *ARGS)
    assert under_way.is_set() and result.returncode == 3, result.stderr
    message = stop_lines(result.stderr)
    assert "Traceback" not in result.stderr and "FAILED" not in result.stderr and len(message) == 1, result.stderr
    assert f"{url}/C0/v1.zip: cannot upload the pack (AccessDenied" in message[0]
    assert "1 of 4 videos are finished" in message[0]
    assert iam_store.keys() == [f"{iam_store.bucket}/flow/C0/v0.zip"]
    assert pack_problem(iam_store.fs, iam_store.keys()[0]) == ""

    iam_store.allow_writes(True)
    result = run_cli("extract", str(videos), url, *ARGS)
    assert result.returncode == 0, result.stderr
    iam_store.fs.invalidate_cache()
    assert output_digest(download_prefix(iam_store.fs, f"{iam_store.bucket}/flow", tmp_path / "got")) == clean


# ---- Ray: the workers stop ----

def session_processes(session: int) -> dict[int, str]:
    """{pid: command line} of the live processes of session `session` (Linux /proc): a run started in its own
    session (start_cli) and every process it started, Ray's workers too (each in its own process group)."""
    found = {}
    for pid in (int(entry) for entry in os.listdir("/proc") if entry.isdigit()):
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            if int(fields[3]) == session and fields[0] != "Z":
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    found[pid] = f.read().replace(b"\0", b" ").decode(errors="replace")
        except (OSError, IndexError, ValueError):
            continue
    return found


@contextmanager
def ray_run(*args: str) -> Iterator[subprocess.Popen]:
    """`flowprep extract ARGS --engine ray` started in its own session; whatever of that session is still alive
    at the end is killed (after the test has checked that nothing is)."""
    pytest.importorskip("ray")
    process = start_cli("extract", *args, "--engine", "ray")
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        for pid in session_processes(process.pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def assert_the_run_left_no_process(process: subprocess.Popen) -> None:
    try:
        wait_for(lambda: not session_processes(process.pid), 15, "the run's processes to end")
    except AssertionError:
        raise AssertionError(f"left running: {session_processes(process.pid)}") from None


@pytest.mark.slow
@pytest.mark.parametrize("to_group", [False, True], ids=["main-process", "process-group"])
def test_sigterm_stops_a_ray_run_its_workers_and_the_rerun_completes(videos, clean, tmp_path, to_group):
    """SIGTERM while Ray runs videos, to the CLI alone (kill, docker stop) or to its process group, Ray's head
    and raylet too (SLURM signals every process of the job): exit 143 within seconds with the summary and report
    of a terminated run, no process of the run left (Ray's head, raylet and workers), no temporaries; the rerun
    completes the tree. (ray.init replaces the SIGTERM handler with sys.exit(15), which ended such a run with
    exit 15 and no report; Ray's waits may turn the run's Terminated into a plain KeyboardInterrupt, which said
    'interrupted', exit 130.)"""
    out = tmp_path / "flow"
    with ray_run(str(videos), str(out), *ARGS) as process:
        wait_for(lambda: any(finished_meta(out / pack[:-4], "zip") for pack in PACKS) or process.poll() is not None,
                 90, "a first finished video")
        (os.killpg if to_group else os.kill)(process.pid, signal.SIGTERM)
        sent = time.monotonic()
        _, stderr = process.communicate(timeout=60)
        took = time.monotonic() - sent
        assert process.returncode == 143, stderr
        assert took < 30 and "flowprep: terminated by SIGTERM" in stderr and "Traceback" not in stderr, (took, stderr)
        assert_the_run_left_no_process(process)
    report = json.loads((out / "report.json").read_text())
    assert report["interrupted"] and report["signal"] == "SIGTERM" and report["engine"] == "ray"
    assert report["not_processed"] and temporaries(out) == []
    result = run_cli("extract", str(videos), str(out), *ARGS)
    assert result.returncode == 0, result.stderr
    assert output_digest(out) == clean


@pytest.mark.slow
def test_a_store_that_stops_a_ray_run_starts_no_further_video(bucket, proxy, tmp_path):
    """Every upload throttled, on Ray: the videos running when the store stops the run finish (stopped, each
    after its retries), no further one starts, the run exits 3 with one message, no process of it is left, no
    pack is visible; the rerun completes every pack."""
    fs, name = bucket
    url = f"s3://{name}/flow"
    slots = os.cpu_count() or 1  # Ray runs as many videos at a time as the machine has CPUs, at most
    many = class_tree(tmp_path / "videos", 1, slots + 2)
    proxy.rule = lambda method, key, earlier: "throttle" if method == "PUT" and key.endswith(".zip") else "forward"
    with ray_run(str(many), url, *ARGS) as process:
        _, stderr = process.communicate(timeout=120)
        assert process.returncode == 3, stderr
        assert len(stop_lines(stderr)) == 1 and "SlowDown" in stop_lines(stderr)[0], stderr
        assert_the_run_left_no_process(process)
    tried = set(proxy.keys("PUT", "throttle"))
    assert 0 < len(tried) <= slots, tried
    fs.invalidate_cache()
    assert not [key for key in fs.find(name) if key.endswith(".zip")]
    report = json.loads(fs.cat_file(f"{name}/flow/report.json"))
    assert len(report["not_processed"]) == slots + 2 and report["engine"] == "ray"

    proxy.rule = lambda method, key, earlier: "forward"
    result = run_cli("extract", str(many), url, *ARGS, "--jobs", "2")
    assert result.returncode == 0, result.stderr
    fs.invalidate_cache()
    packs = [key for key in fs.find(name) if key.endswith(".zip")]
    assert len(packs) == slots + 2 and [pack_problem(fs, key) for key in packs] == [""] * len(packs)
