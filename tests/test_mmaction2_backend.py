"""The mmengine file backend 'flowprep' (flowprep.integrations.mmaction2), driven through mmengine's own FileClient
(what mmaction2's RawFrameDecode calls) and fileio functions, on real `flowprep extract` outputs of both forms."""
from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from conftest import REPO, VIDEOS, checkout_env, run_cli, upload_tree

pytest.importorskip("mmengine", reason="the mmaction2 backend needs mmengine (see docs/dataset.md for the install)")

from mmengine import fileio  # noqa: E402
from mmengine.fileio import FileClient  # noqa: E402

import flowprep.integrations.mmaction2  # noqa: E402,F401  (registers the backend)
from flowprep.errors import ConfigError, OutputError  # noqa: E402

BACKEND = {"backend": "flowprep"}
FLOW_TMPL = "flow_{}_{:05d}.jpg"  # mmaction2's RawframeDataset filename_tmpl for flowprep's default names
RGB_TMPL = "img_{:05d}.jpg"
VIDEO = "rubber-whale"  # 8 frames: 7 flow pairs


def extract(video: Path, out: Path, *options: str) -> None:
    result = run_cli("extract", str(video), str(out), "--algo", "dis", "--rgb", "-q", *options)
    assert result.returncode == 0, result.stderr


@pytest.fixture(scope="module")
def trees(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(a folder tree, a --pack zip tree) of rubber-whale.mp4, DIS, RGB frames too."""
    root = tmp_path_factory.mktemp("mmaction2")
    extract(VIDEOS / "rubber-whale.mp4", root / "dir")
    extract(VIDEOS / "rubber-whale.mp4", root / "zip", "--pack", "zip")
    assert (root / "zip" / f"{VIDEO}.zip").is_file() and not (root / "zip" / VIDEO).exists()
    return root / "dir", root / "zip"


@pytest.fixture(scope="module")
def other_pack(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Another video's zip pack (carphone, 2 fps: 8 frames), whose frames differ from rubber-whale's."""
    out = tmp_path_factory.mktemp("other")
    extract(VIDEOS / "carphone_pristine.mp4", out, "--pack", "zip", "--fps", "2")
    return out / "carphone_pristine.zip"


def frame_names() -> list[str]:
    """The file names of rubber-whale's flow pairs and RGB frames, as RawFrameDecode formats them."""
    return ([FLOW_TMPL.format(axis, i) for i in range(1, 8) for axis in "xy"]
            + [RGB_TMPL.format(i) for i in range(1, 9)])


def in_forked_child(read: Callable[[], Any]) -> Any:
    """What `read` returns in a child forked from this process, as a DataLoader worker is."""
    receive, send = multiprocessing.Pipe(duplex=False)

    def child() -> None:
        try:
            send.send(("ok", read()))
        except BaseException as exc:  # noqa: BLE001  (reported to the parent, which fails the test)
            send.send(("error", repr(exc)))

    process = multiprocessing.get_context("fork").Process(target=child)
    process.start()
    assert receive.poll(60), "the forked child sent nothing"
    status, value = receive.recv()
    process.join(10)
    assert status == "ok", value
    return value


def open_files_under(folder: Path) -> int:
    """How many of this process's file descriptors are open on files under `folder`."""
    names = (os.path.join("/proc/self/fd", fd) for fd in os.listdir("/proc/self/fd"))
    return sum(1 for name in names if os.path.realpath(name).startswith(str(folder.resolve()) + os.sep))


def test_pack_reads_as_the_folder_through_file_client_and_fileio(trees: tuple[Path, Path]) -> None:
    folder_tree, pack_tree = trees
    listed = run_cli("list", str(pack_tree))
    assert listed.returncode == 0, listed.stderr
    relative = listed.stdout.split()[0]  # the list names the pack without .zip, as mmaction2's frame_dir
    assert relative == VIDEO
    client = FileClient("flowprep")
    for name in frame_names():
        expected = (folder_tree / VIDEO / name).read_bytes()
        assert client.get(os.path.join(pack_tree, relative, name)) == expected, name
        assert fileio.get(os.path.join(pack_tree, relative, name), backend_args=BACKEND) == expected, name
        assert client.get(os.path.join(pack_tree, f"{VIDEO}.zip", name)) == expected, name
        assert client.get(os.path.join(folder_tree, relative, name)) == expected, name
    meta = json.loads(fileio.get_text(pack_tree / VIDEO / "meta.json", backend_args=BACKEND))
    assert meta["flow_pairs"] == 7 and meta["frames"] == 8


def test_missing_files_and_videos_are_file_not_found_naming_the_path(trees: tuple[Path, Path]) -> None:
    client = FileClient("flowprep")
    for tree in trees:
        missing = os.path.join(tree, VIDEO, FLOW_TMPL.format("x", 8))  # one past the last pair
        with pytest.raises(FileNotFoundError) as caught:
            client.get(missing)
        assert caught.value.filename == missing and missing in str(caught.value)
        assert not fileio.isfile(missing, backend_args=BACKEND) and not fileio.exists(missing, backend_args=BACKEND)
        present = os.path.join(tree, VIDEO, RGB_TMPL.format(8))
        assert fileio.isfile(present, backend_args=BACKEND) and fileio.exists(present, backend_args=BACKEND)
        assert fileio.exists(os.path.join(tree, VIDEO), backend_args=BACKEND)
    gone = os.path.join(trees[1], "no-such-video", RGB_TMPL.format(1))
    with pytest.raises(FileNotFoundError, match="no-such-video") as caught:
        fileio.get(gone, backend_args=BACKEND)
    assert caught.value.filename == gone
    assert not fileio.exists(os.path.dirname(gone), backend_args=BACKEND)


def test_a_corrupt_member_is_an_output_error_naming_it(trees: tuple[Path, Path], tmp_path: Path) -> None:
    name = FLOW_TMPL.format("y", 3)
    pack = trees[1] / f"{VIDEO}.zip"
    blob = bytearray(pack.read_bytes())
    start = blob.find((trees[0] / VIDEO / name).read_bytes())
    blob[start + 100] ^= 0xFF
    (tmp_path / f"{VIDEO}.zip").write_bytes(blob)
    with pytest.raises(OutputError, match=name) as caught:
        fileio.get(tmp_path / VIDEO / name, backend_args=BACKEND)
    assert "CRC" in str(caught.value)
    (tmp_path / "not-a-zip.zip").write_bytes(b"no zip here")
    with pytest.raises(OutputError, match="not-a-zip.zip"):
        fileio.get(tmp_path / "not-a-zip" / name, backend_args=BACKEND)


def test_a_forked_worker_reads_after_its_parent(trees: tuple[Path, Path]) -> None:
    folder_tree, pack_tree = trees
    client = FileClient("flowprep")
    first = os.path.join(pack_tree, VIDEO, RGB_TMPL.format(1))
    assert client.get(first) == (folder_tree / VIDEO / RGB_TMPL.format(1)).read_bytes()  # opened in the parent

    def read_all() -> list[bytes]:
        return [FileClient("flowprep").get(os.path.join(pack_tree, VIDEO, name)) for name in frame_names()]

    assert in_forked_child(read_all) == [(folder_tree / VIDEO / name).read_bytes() for name in frame_names()]
    assert client.get(first) == (folder_tree / VIDEO / RGB_TMPL.format(1)).read_bytes()  # the parent's reader works


def test_a_forked_worker_opens_its_own_pack(trees: tuple[Path, Path], other_pack: Path, tmp_path: Path) -> None:
    """The parent's reader is never used in the child: a pack replaced after the parent opened it (a rerun with
    --overwrite) reads as the new pack in a worker forked afterwards."""
    folder_tree, pack_tree = trees
    shutil.copy(pack_tree / f"{VIDEO}.zip", tmp_path / f"{VIDEO}.zip")
    names = [RGB_TMPL.format(1), FLOW_TMPL.format("x", 1)]
    paths = [os.path.join(tmp_path, VIDEO, name) for name in names]
    before = [(folder_tree / VIDEO / name).read_bytes() for name in names]
    assert [FileClient("flowprep").get(path) for path in paths] == before  # opened in the parent, both ways
    assert [fileio.get(path, backend_args=BACKEND) for path in paths] == before
    os.replace(shutil.copy(other_pack, tmp_path / "new.zip"), tmp_path / f"{VIDEO}.zip")
    with zipfile.ZipFile(other_pack) as new:
        expected = [new.read(name) for name in names]
    assert expected != before
    assert in_forked_child(lambda: [FileClient("flowprep").get(path) for path in paths]) == expected
    assert in_forked_child(lambda: [fileio.get(path, backend_args=BACKEND) for path in paths]) == expected


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="counts open files in /proc/self/fd")
def test_open_packs_are_bounded_per_process(trees: tuple[Path, Path], tmp_path: Path) -> None:
    folder_tree, pack_tree = trees
    for k in range(5):
        shutil.copy(pack_tree / f"{VIDEO}.zip", tmp_path / f"v{k}.zip")
    client = FileClient("flowprep", max_open=2)
    expected = (folder_tree / VIDEO / RGB_TMPL.format(2)).read_bytes()
    for k in range(5):
        assert client.get(os.path.join(tmp_path, f"v{k}", RGB_TMPL.format(2))) == expected
        assert open_files_under(tmp_path) == min(k + 1, 2)
    assert client.get(os.path.join(tmp_path, "v0", RGB_TMPL.format(2))) == expected  # closed, then reopened
    assert open_files_under(tmp_path) == 2


@pytest.mark.parametrize("max_open", [0, -1, 2.5, True, "8"])
def test_max_open_must_be_a_positive_integer(trees: tuple[Path, Path], max_open: object) -> None:
    path = os.path.join(trees[1], VIDEO, RGB_TMPL.format(1))
    with pytest.raises(ConfigError, match=f"max_open.*{max_open!r}"):
        fileio.get(path, backend_args={**BACKEND, "max_open": max_open})


def run_python(code: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code, *args], cwd=REPO, env=checkout_env(), capture_output=True,
                          text=True, timeout=120)


def test_a_config_custom_imports_registers_the_backend(trees: tuple[Path, Path], tmp_path: Path) -> None:
    """The config lines of docs/dataset.md, in a fresh interpreter: custom_imports, then RawFrameDecode's call."""
    config = tmp_path / "flow_config.py"
    config.write_text("custom_imports = dict(imports=['flowprep.integrations.mmaction2'], allow_failed_imports=False)\n"
                      f"data_root = {str(trees[1])!r}\n"
                      "train_pipeline = [dict(type='RawFrameDecode', io_backend='flowprep')]\n")
    code = ("import os, sys\n"
            "from mmengine import Config\n"
            "from mmengine.fileio import FileClient\n"
            "cfg = Config.fromfile(sys.argv[1])\n"
            "decode = cfg.train_pipeline[0]\n"
            "client = FileClient(decode['io_backend'])\n"
            "data = client.get(os.path.join(cfg.data_root, sys.argv[2], sys.argv[3]))\n"
            "open(sys.argv[4], 'wb').write(data)\n")  # not to stdout, where mmengine logs
    read = tmp_path / "read.jpg"
    result = run_python(code, str(config), VIDEO, FLOW_TMPL.format("y", 7), str(read))
    assert result.returncode == 0, result.stderr
    assert read.read_bytes() == (trees[0] / VIDEO / FLOW_TMPL.format("y", 7)).read_bytes()


@pytest.mark.parametrize("where", ["local", "s3"])
def test_needs_neither_torch_nor_opencv_contrib(trees: tuple[Path, Path], where: str,
                                                request: pytest.FixtureRequest) -> None:
    """mmaction2 users have plain opencv-python (no cv2.optflow); reading must not import torch either, from a
    local pack or one on an object store."""
    code = ("import sys, cv2\n"
            "del cv2.optflow\n"
            "import flowprep.integrations.mmaction2\n"
            "from mmengine import fileio\n"
            "data = fileio.get(sys.argv[1], backend_args=dict(backend='flowprep'))\n"
            "assert 'torch' not in sys.modules, 'torch was imported'\n"
            "print(len(data))\n")
    root = str(trees[1])
    if where == "s3":  # the bucket fixture's AWS_* variables reach the subprocess
        fs, name = request.getfixturevalue("bucket")
        root = upload_tree(fs, trees[1], f"{name}/flow")
    result = run_python(code, f"{root}/{VIDEO}/{FLOW_TMPL.format('x', 1)}")
    assert result.returncode == 0, result.stderr
    assert int(result.stdout) == (trees[0] / VIDEO / FLOW_TMPL.format("x", 1)).stat().st_size


def test_without_mmengine_the_import_names_the_install() -> None:
    code = ("import sys\n"
            "sys.modules['mmengine'] = None\n"  # what an environment without mmengine gives the import
            "try:\n"
            "    import flowprep.integrations.mmaction2\n"
            "except ImportError as exc:\n"
            "    print(type(exc).__name__, exc)\n")
    result = run_python(code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("MissingDependencyError") and "pip install mmengine" in result.stdout


# --- Trees on an object store: the real S3 API server of conftest's `bucket` (moto, on 127.0.0.1) ---


def test_a_bucket_reads_as_the_local_tree_folders_and_packs_alike(trees: tuple[Path, Path], bucket) -> None:
    fs, name = bucket
    folders, packs = upload_tree(fs, trees[0], f"{name}/dir"), upload_tree(fs, trees[1], f"{name}/zip")
    assert fs.isdir(f"{name}/dir/{VIDEO}") and fs.isfile(f"{name}/zip/{VIDEO}.zip")
    client = FileClient("flowprep")
    for file in frame_names():
        expected = (trees[0] / VIDEO / file).read_bytes()
        for url in (f"{folders}/{VIDEO}/{file}", f"{packs}/{VIDEO}/{file}", f"{packs}/{VIDEO}.zip/{file}"):
            assert client.get(url) == expected, url
            assert fileio.get(url, backend_args=BACKEND) == expected, url
    for root in (folders, packs):
        meta = json.loads(fileio.get_text(f"{root}/{VIDEO}/meta.json", backend_args=BACKEND))
        assert meta["flow_pairs"] == 7
        assert fileio.isfile(f"{root}/{VIDEO}/{RGB_TMPL.format(8)}", backend_args=BACKEND)
        assert fileio.exists(f"{root}/{VIDEO}", backend_args=BACKEND)
        missing = f"{root}/{VIDEO}/{FLOW_TMPL.format('x', 8)}"  # one past the last pair
        with pytest.raises(FileNotFoundError) as caught:
            client.get(missing)
        assert caught.value.filename == missing
        assert not fileio.isfile(missing, backend_args=BACKEND) and not fileio.exists(missing, backend_args=BACKEND)
        gone = f"{root}/no-such-video/{RGB_TMPL.format(1)}"
        with pytest.raises(FileNotFoundError, match="no-such-video") as caught:
            client.get(gone)
        assert caught.value.filename == gone
        assert not fileio.exists(f"{root}/no-such-video", backend_args=BACKEND)
    # A worker forked after its parent read (the parent's readers, and its S3 client, in the inherited backend).
    urls = [f"{packs}/{VIDEO}/{file}" for file in frame_names()] + [f"{folders}/{VIDEO}/{RGB_TMPL.format(1)}"]
    expected = [client.get(url) for url in urls]
    assert in_forked_child(lambda: [client.get(url) for url in urls]) == expected
    assert in_forked_child(lambda: [fileio.get(url, backend_args=BACKEND) for url in urls]) == expected


def test_a_corrupt_or_truncated_pack_on_a_bucket_is_an_output_error_naming_it(trees: tuple[Path, Path],
                                                                               bucket) -> None:
    fs, name = bucket
    member = FLOW_TMPL.format("y", 3)
    blob = bytearray((trees[1] / f"{VIDEO}.zip").read_bytes())
    blob[blob.find((trees[0] / VIDEO / member).read_bytes()) + 100] ^= 0xFF
    fs.pipe_file(f"{name}/flow/{VIDEO}.zip", bytes(blob))
    fs.pipe_file(f"{name}/flow/cut.zip", bytes(blob[: len(blob) // 2]))
    fs.invalidate_cache()
    with pytest.raises(OutputError, match=f"s3://{name}/flow/{VIDEO}.zip/{member}.*CRC"):
        FileClient("flowprep").get(f"s3://{name}/flow/{VIDEO}/{member}")
    with pytest.raises(OutputError, match=f"s3://{name}/flow/cut.zip: not a readable"):
        FileClient("flowprep").get(f"s3://{name}/flow/cut/{member}")
