"""TSN's warped flow: a known camera homography removed, an object's own motion kept, identity fallback, every
backend, determinism, resume."""
from __future__ import annotations

import json
import random
import time

import cv2
import numpy as np
import pytest
from batchdata import CARPHONE, class_tree, kill_group, output_digest, start_cli, wait_for

from conftest import MIDDLEBURY, SINTEL, gray, run_cli
from test_directions import LaunchCounting
from flowprep import ExtractConfig, FlowConfig, extract_video
from flowprep.config import DecodeConfig
from flowprep.flow import create_backend
from flowprep.flow.pairs import flow_stream
from flowprep.flow.warp import DETECTORS, Warper, WarpSettings, warped_flow
from flowprep.store import finished_meta
from flowprep.testing import camera_homography as camera, camera_motion_scene
from flowprep.visualize import magnitude
from flowprep.verify import check_video

INTERIOR = (slice(10, -10), slice(10, -10))


@pytest.fixture(scope="module")
def background() -> np.ndarray:
    return cv2.resize(gray(MIDDLEBURY / "other-data" / "RubberWhale" / "frame10.png"), (292, 194),
                      interpolation=cv2.INTER_AREA)


@pytest.fixture(scope="module")
def patch() -> np.ndarray:
    """A real object: a 48x48 piece of another real frame (Sintel alley_1)."""
    frame = gray(SINTEL / "final" / "alley_1" / "frame_0002.png")
    return cv2.resize(frame[100:300, 400:600], (48, 48), interpolation=cv2.INTER_AREA)


@pytest.mark.parametrize("detector", DETECTORS)
def test_warp_removes_a_known_homography(background, detector):
    scene = camera_motion_scene(background, camera(292, 194))
    backend = create_backend(FlowConfig("dis"))
    plain = backend.compute(scene.first, scene.second)
    # The plain flow is the homography's displacement field (about 3.3 px on average) ...
    assert magnitude(plain - scene.camera_flow)[INTERIOR].mean() < 0.3
    assert magnitude(scene.camera_flow)[INTERIOR].mean() > 3
    # ... and the warped flow is near zero everywhere.
    settings = WarpSettings(detector=detector)
    warper = Warper(settings)
    warped = warper.rewarp(backend, [scene.first], [scene.second], [plain])[0]
    assert magnitude(warped)[INTERIOR].mean() < 0.1 and np.percentile(magnitude(warped)[INTERIOR], 99) < 0.5
    assert warper.stats.identity == 0 and warper.stats.inliers.low > 500
    assert np.array_equal(warped, warped_flow(backend, scene.first, scene.second, settings))


def test_camera_motion_is_removed_and_the_objects_own_motion_kept(background, patch):
    scene = camera_motion_scene(background, camera(292, 194), patch, position=(120, 70), shift=(6, 3))
    backend = create_backend(FlowConfig("dis"))
    plain = backend.compute(scene.first, scene.second)
    warped = warped_flow(backend, scene.first, scene.second)
    obj = scene.object_mask
    back = scene.background_mask()
    assert magnitude(warped)[back].mean() <= 0.2 * magnitude(plain)[back].mean()  # the bar: 80% less
    # The object keeps its motion relative to the background (H^-1 (x + shift) - x), at least 80% of it.
    kept = magnitude(warped)[obj].mean() / magnitude(scene.relative_flow)[obj].mean()
    assert 0.8 <= kept <= 1.2
    assert magnitude(warped - scene.relative_flow)[obj].mean() < 1.0


def test_without_camera_motion_warped_and_plain_flow_agree(background, patch):
    scene = camera_motion_scene(background, np.eye(3), patch, position=(120, 70), shift=(6, 3))
    backend = create_backend(FlowConfig("dis"))
    plain = backend.compute(scene.first, scene.second)
    warper = Warper()
    warped = warper.rewarp(backend, [scene.first], [scene.second], [plain])[0]
    assert warper.stats.identity == 0  # a homography was found (near the identity) and used
    assert magnitude(warped - plain)[INTERIOR].mean() < 0.1


def test_what_the_warped_second_frame_does_not_cover_comes_from_the_first(background):
    first, second = background, np.roll(background, 8, axis=1)
    height, width = first.shape
    pan = np.array([[1.0, 0, 8], [0, 1, 0], [0, 0, 1]])  # first-frame x -> x + 8 in the second
    warped = Warper().warp_frame(first, second, pan)
    # Read from the second frame where x + 8 lies in its interior shrunk by the 5 px margin, else the first's.
    inside = np.zeros_like(first, bool)
    inside[5:height - 5, :width - 13] = True
    assert np.array_equal(warped[inside], second[5:height - 5, 8:width - 5].ravel())
    assert np.array_equal(warped[~inside], first[~inside])


def test_identity_fallback_keeps_the_plain_flow():
    backend = create_backend(FlowConfig("dis"))
    flat = np.full((96, 128), 117, np.uint8)  # no texture: no keypoints, no corners
    # A real 32x32 crop: texture, but fewer matches than the 51 a homography needs.
    tiny = np.ascontiguousarray(gray(MIDDLEBURY / "other-data" / "RubberWhale" / "frame10.png")[150:182, 200:232])
    warper = Warper()
    for first in (flat, tiny):
        plain = backend.compute(first, first)
        assert np.array_equal(warper.rewarp(backend, [first], [first], [plain])[0], plain)
    assert warper.stats.identity == 2 and warper.stats.pairs == 2
    assert warper.meta()["identity_fraction"] == 1.0 and warper.meta()["matches"]["max"] <= 50


def test_warped_backward_flow_is_the_reversed_pairs_warped_flow(background):
    scene = camera_motion_scene(background, camera(292, 194))
    backend = create_backend(FlowConfig("dis"))
    warper = Warper()
    (forward, backward), = flow_stream(backend, [scene.first, scene.second], ("forward", "backward"), warper)
    assert np.array_equal(backward, warped_flow(backend, scene.second, scene.first))
    assert magnitude(backward)[INTERIOR].mean() < 0.1 and magnitude(forward)[INTERIOR].mean() < 0.1
    assert warper.stats.pairs == 2 and warper.stats.identity == 0


def test_warp_wraps_a_batched_backend(background):
    small = cv2.resize(background, (146, 97), interpolation=cv2.INTER_AREA)
    scene = camera_motion_scene(small, camera(146, 97, pan=(1.5, -1)))
    backend = LaunchCounting({"nscales": 3}, device="torch-cpu", batch_size=4)
    flows = list(flow_stream(backend, [scene.first, scene.second], ("forward", "backward"), Warper()))
    assert backend.launches == [2, 2]  # both directions plain, then both warped: one launch each
    assert magnitude(flows[0][0])[INTERIOR].mean() < 0.15 < magnitude(scene.camera_flow)[INTERIOR].mean()


def test_meta_json_records_the_warp(tmp_path):
    meta = extract_video(CARPHONE, tmp_path / "c", ExtractConfig(DecodeConfig(fps=5), FlowConfig("dis", warp=True)))
    assert meta["settings"]["warp"] is True
    warp = meta["warp"]
    # carphone's moving camera and textured car interior: a homography for every pair (375-467 matches here).
    assert warp["pairs"] == meta["flow_pairs"] and warp["identity_pairs"] == 0 and warp["identity_fraction"] == 0
    assert warp["matches"]["min"] > 50 and warp["inliers"]["min"] > 25
    assert (warp["detector"], warp["ransac_threshold"], warp["min_matches"], warp["min_inliers"]) == ("sift", 1.0,
                                                                                                    50, 25)
    assert warp["matches"]["min"] <= warp["matches"]["mean"] <= warp["matches"]["max"]
    assert json.loads((tmp_path / "c" / "meta.json").read_text())["warp"] == warp
    # verify's round trip recomputes warped flow: plain flow would be about 1 px off, far above the bound.
    check = check_video(tmp_path / "c", roundtrip=2)
    assert check.ok and check.warp and check.roundtrip.ok, check.problems


ARGS = ("--algo", "dis", "--fps", "10", "--warp", "--direction", "both", "-q")


@pytest.mark.slow
def test_warp_runs_are_byte_identical_and_resume_equals_a_clean_run(tmp_path):
    videos = class_tree(tmp_path / "videos", classes=2, per_class=2)
    clean = []
    for run in range(2):
        result = run_cli("extract", str(videos), str(tmp_path / f"clean{run}"), *ARGS)
        assert result.returncode == 0, result.stderr
        clean.append(output_digest(tmp_path / f"clean{run}"))
    assert clean[0] == clean[1] and len(clean[0]) == 4 * (4 * 39 + 1)
    out = tmp_path / "killed"
    process = start_cli("extract", str(videos), str(out), *ARGS)
    wait_for(lambda: finished_meta(out / "C0" / "v0") is not None or process.poll() is not None, 120,
             "a first finished video")
    assert process.poll() is None, "the run ended before it could be killed"
    time.sleep(random.Random(11).uniform(0.0, 1.0))
    kill_group(process.pid)
    process.wait()
    assert run_cli("extract", str(videos), str(out), *ARGS).returncode == 0
    assert output_digest(out) == clean[0]
