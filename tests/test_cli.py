"""The CLI as a user runs it: real subprocesses, exit codes and messages."""
import subprocess
import sys

import pytest

from conftest import REPO, VIDEOS, run_cli

CLIP = str(VIDEOS / "carphone_pristine.mp4")


@pytest.mark.parametrize("args, message", [
    (["extract", "no/such/videos", "out"], "'no/such/videos' does not exist"),
    (["extract", CLIP, "out", "--fps", "0"], "'--fps': 0.0 is not in the range x>0"),
    (["extract", CLIP, "out", "--fps", "-3"], "'--fps'"),
    (["extract", CLIP, "out", "--bound", "0"], "'--bound': 0.0 is not in the range x>0"),
    (["extract", CLIP, "out", "--algo", "raft"], "'raft' is not one of 'tvl1', 'farneback', 'dis', 'nvof'"),
    (["extract", CLIP, "out", "--size", "340by256"], "size must look like WIDTHxHEIGHT, e.g. 340x256; got '340by256'"),
    (["extract", CLIP, "out", "--size", "340x256", "--short-side", "128"], "either size or short_side"),
    (["extract", CLIP, "out", "--param", "warps"], "expected NAME=VALUE, got 'warps'"),
    (["extract", CLIP, "out", "--param", "warp=3"], "unknown parameter 'warp' for algorithm 'tvl1'"),
    (["extract", CLIP, "out", "--algo", "dis", "--preset", "slow"], "unknown preset 'slow'"),
    (["extract", CLIP, "out", "--device", "gpu"], "device must be cpu, torch-cpu, cuda or cuda:N; got 'gpu'"),
    (["extract", CLIP, "out", "--flow-template", "flow_{:05d}.jpg"], "must be a .jpg file name with 2"),
    (["extract", CLIP, "out", "--quality", "101"], "'--quality': 101 is not in the range 1<=x<=100"),
    (["extract", CLIP, "out", "--algo", "nvof", "--device", "cuda", "--param", "grid_size=3"],
     "grid_size of nvof must be one of 1, 2, 4, got 3"),
    (["extract", CLIP, "out", "--decoder", "ffmpeg"], "decoder must be auto, or one or more of pyav, decord, opencv"),
])
def test_usage_errors_exit_2_naming_the_problem(tmp_path, args, message):
    result = run_cli(*args, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert not (tmp_path / "out").exists()


def test_extract_a_file_then_skip_it(tmp_path):
    args = ["extract", CLIP, str(tmp_path / "flow"), "--algo", "dis", "--fps", "5", "--quiet"]
    first = run_cli(*args)
    assert first.returncode == 0, first.stderr
    assert "1 videos: 1 done, 0 skipped, 0 failed; 19 flow pairs" in first.stderr
    assert (tmp_path / "flow" / "carphone_pristine" / "flow_y_00019.jpg").is_file()
    second = run_cli(*args)
    assert second.returncode == 0 and "0 done, 1 skipped" in second.stderr


def test_backends_says_what_runs_here():
    result = run_cli("backends")
    assert result.returncode == 0
    lines = result.stdout.splitlines()
    assert "tvl1       cpu        --impl numba (default): usable [presets: fast]" in lines
    assert "tvl1       cpu        --impl opencv: usable [presets: fast]" in lines
    assert any(line.startswith("dis        cpu        --impl opencv (default): usable") for line in lines)


def test_module_and_version():
    result = run_cli("--version")
    assert result.returncode == 0 and "0.1.0" in result.stdout


def test_a_shadowing_opencv_without_contrib_is_explained(tmp_path):
    # A plain opencv-python wheel installed over opencv-contrib leaves a cv2 without optflow: simulate that state.
    script = ("import cv2; del cv2.optflow; import sys; from flowprep.cli import main; "
              "sys.argv = ['flowprep'] + sys.argv[1:]; main()")
    env = {"PYTHONPATH": str(REPO)}
    backends = subprocess.run([sys.executable, "-c", script, "backends"], capture_output=True, text=True, env=env)
    assert "tvl1       cpu        --impl opencv: NOT usable: cv2" in backends.stdout
    assert "pip install opencv-contrib-python-headless" in backends.stdout
    # flowprep's own TV-L1, the default, needs no cv2.optflow; OpenCV's, by name, is refused with the fix.
    assert "tvl1       cpu        --impl numba (default): usable" in backends.stdout
    extract = subprocess.run([sys.executable, "-c", script, "extract", CLIP, str(tmp_path / "o"), "-q", "--impl",
                              "opencv"], capture_output=True, text=True, env=env)
    assert extract.returncode == 2 and "tvl1 on cpu cannot run here: cv2" in extract.stderr
    assert "has no cv2.optflow" in extract.stderr and not (tmp_path / "o").exists()


def test_colliding_rgb_and_flow_names_are_a_usage_error_before_any_work(tmp_path):
    """x_00001.jpg would be RGB frame 1 and pair 1's x flow: refused, nothing written (it overwrote RGB frames)."""
    out = tmp_path / "flow"
    result = run_cli("extract", str(VIDEOS / "rubber-whale.mp4"), str(out), "--algo", "dis", "--rgb", "-q",
                     "--flow-template", "{}_{:05d}.jpg", "--img-template", "x_{:05d}.jpg")
    assert result.returncode == 2 and "flow_template '{}_{:05d}.jpg' and img_template 'x_{:05d}.jpg' can name the " \
        "same file, e.g. 'x_00001.jpg'" in result.stderr, result.stderr
    assert not out.exists()


@pytest.mark.parametrize("command", [
    ("extract", "nosuch://bucket/flow", "out"),
    ("list", "nosuch://bucket/flow"),
    ("verify", "nosuch://bucket/flow"),
    ("report", "nosuch://bucket/flow"),
    ("show", "nosuch://bucket/flow/v", "--out", "p.png"),
], ids=["extract-input", "list", "verify", "report", "show"])
def test_a_url_of_an_unknown_protocol_is_a_usage_error_naming_it(tmp_path, command):
    """Commands that read object stores (tests/test_object_store_read.py) take a URL only of a protocol fsspec
    knows; never a local folder named 'nosuch:'."""
    pytest.importorskip("fsspec")
    result = run_cli(*command, cwd=tmp_path)
    assert result.returncode == 2 and "'nosuch://bucket/flow" in result.stderr \
        and "Protocol not known: nosuch" in result.stderr, result.stderr
    assert list(tmp_path.iterdir()) == []


def test_the_library_refuses_a_pack_dir_store_and_an_unknown_protocol():
    from flowprep.batch import run_batch
    from flowprep.errors import ConfigError

    with pytest.raises(ConfigError, match="'s3://bucket/flow' is an object store: write it with --pack zip"):
        run_batch([], "s3://bucket/flow")  # (a run that would need s3fs; the test extra has it)
    pytest.importorskip("torch")
    from flowprep.data import FlowStackDataset

    with pytest.raises(ConfigError, match="'nosuch://bucket/flow': Protocol not known: nosuch"):
        FlowStackDataset("nosuch://bucket/flow")  # it reads object stores (test_dataset.py), of known protocols
