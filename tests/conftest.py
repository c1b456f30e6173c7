"""Shared fixtures: the real data in ../shared/data and a runner for the CLI as a real subprocess."""
from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import cv2
import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
VIDEOS = DATA / "videos"
MIDDLEBURY = DATA / "flow_gt" / "middlebury"
SINTEL = DATA / "flow_gt" / "sintel" / "training"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not DATA.is_dir():
        pytest.exit(f"test data not found at {DATA}: clone the project next to shared/", returncode=4)


# OpenCV TV-L1 with its defaults on RubberWhale: 0.1568 measured here (MANIFEST.md: "about 0.156").
TVL1_EPE_RUBBERWHALE = 0.1568


def gray(path: Path) -> np.ndarray:
    """An image file as gray uint8, the way mmaction2 and TSN convert (imread BGR, COLOR_BGR2GRAY)."""
    image = cv2.imread(str(path))
    assert image is not None, f"cannot read {path}"
    return cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)


@pytest.fixture(scope="session")
def rubberwhale() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Middlebury RubberWhale frame10, frame11 (gray) and the GT flow10 (HxWx2, unknown > 1e9)."""
    from flowprep.flowio import read_flo

    frames = MIDDLEBURY / "other-data" / "RubberWhale"
    gt = read_flo(MIDDLEBURY / "other-gt-flow" / "RubberWhale" / "flow10.flo")
    return gray(frames / "frame10.png"), gray(frames / "frame11.png"), gt


def checkout_env() -> dict[str, str]:
    """This process's environment with this checkout importable, for subprocesses."""
    return {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}


def run_cli(*args: str, cwd: Path | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run `python -m flowprep ARGS` as a real subprocess with this checkout importable."""
    return subprocess.run([sys.executable, "-m", "flowprep", *args], cwd=cwd or REPO, env=checkout_env(),
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="session")
def s3_endpoint():
    """A real S3 API server (moto's standalone server, in a thread of this process) on 127.0.0.1: its URL."""
    moto_server = pytest.importorskip("moto.server")
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def bucket(s3_endpoint, monkeypatch):
    """(s3fs file system, name) of a fresh bucket on the server; the environment (inherited by CLI subprocesses)
    points S3 clients at it the standard way (AWS_* variables, AWS_ENDPOINT_URL)."""
    s3fs = pytest.importorskip("s3fs")
    import uuid

    for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                        "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": s3_endpoint}.items():
        monkeypatch.setenv(name, value)
    fs = s3fs.S3FileSystem(endpoint_url=s3_endpoint, key="testing", secret="testing", skip_instance_cache=True)
    name = f"flow-{uuid.uuid4().hex[:8]}"
    fs.mkdir(name)
    return fs, name


def without_credentials(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No credentials or endpoint in the environment, nor in ~/.aws, nor from an instance's metadata (after the
    `bucket` fixture set them): what --storage-option or storage_options must then supply."""
    for variable in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(variable)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


def download_prefix(fs, prefix: str, local: Path) -> Path:
    """The objects under `prefix` (bucket/key) as files under `local` (keys -> paths), to compare with a local run."""
    for key in fs.find(prefix):
        target = local / key[len(prefix) + 1:]
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(fs.cat_file(key))
    return local


def upload_tree(fs, local: Path, prefix: str) -> str:
    """The files under `local` as objects under `prefix` (bucket/key; paths -> keys), as a tree copied to a bucket
    is: a folder tree becomes folders of objects, a zip-pack tree one object per pack. The prefix's s3:// URL."""
    fs.put(f"{local}/", prefix, recursive=True)
    fs.invalidate_cache()
    return f"s3://{prefix}"


class SecondS3Server:
    """A second moto server on 127.0.0.1 serving the same buckets (moto keeps them per process), for a test to
    take away mid-run (stop) and bring back on the same address (back); AWS_ENDPOINT_URL points the CLI at it,
    botocore's retries bounded (2 attempts) so that a run notices quickly."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch):
        from moto.server import ThreadedMotoServer

        self._make = lambda port: ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
        self._server = self._make(0)
        self._server.start()
        host, self.port = self._server.get_host_and_port()
        monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://{host}:{self.port}")
        monkeypatch.setenv("AWS_MAX_ATTEMPTS", "2")
        monkeypatch.setenv("AWS_RETRY_MODE", "standard")

    def stop(self) -> None:
        self._server.stop()

    @contextmanager
    def back(self) -> Iterator[None]:
        self._server = self._make(self.port)
        self._server.start()
        try:
            yield
        finally:
            self._server.stop()
