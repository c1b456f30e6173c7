"""Shared fixtures: the real data in ../shared/data and a runner for the CLI as a real subprocess."""
from __future__ import annotations

import os
import subprocess
import sys
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
