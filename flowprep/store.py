"""Store stage: file names, JPEG encoding, atomic per-video writers (directory or zip) and their readers.

A video's output is written under a hidden sibling temporary name and moved into place only once complete,
with meta.json as the last file written: a directory or zip without a valid meta.json is never finished.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import socket
import struct
import uuid
import zipfile
import zlib
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from .config import DEFAULT_BACKWARD_TEMPLATES, DEFAULT_FLOW_TEMPLATES, DIRECTIONS, LAYOUTS, StoreConfig, template_pattern
from .errors import OutputError, StorageError
from .flow import legacy_impl

META_NAME = "meta.json"
META_FORMAT = "flowprep/1"
TEMP_MARKER = ".flowprep-tmp-"
LOCK_SUFFIX = ".flowprep-lock"  # ".NAME.flowprep-lock": the lock of output NAME while a run writes it
PACK_SUFFIX = ".zip"
# Fields every flowprep meta.json has, with their types: readers rely on these (bool is no int here).
_META_FIELDS = {"frames": int, "flow_pairs": int, "settings": dict}
_SETTINGS_FIELDS = {"layout": str, "flow_template": str, "img_template": str, "start_index": int,
                    "bound": (int, float)}
# A zip local file header: signature, 22 bytes of fields the central directory repeats, name and extra lengths.
_LOCAL_HEADER = struct.Struct("<4s22xHH")
_ZIP_ENCRYPTED = 0x1
_pread = getattr(os, "pread", None)  # POSIX only; elsewhere zipfile reads


@dataclass(frozen=True)
class Naming:
    """File names of one video's output; indices passed in are 0-based, names start at `start_index`.

    `direction` is "forward" (flow k -> k+1, flow_template) or "backward" (k+1 -> k, backward_template).
    """

    layout: str = "separate"
    flow_template: str = DEFAULT_FLOW_TEMPLATES["separate"]
    img_template: str = StoreConfig.img_template
    start_index: int = StoreConfig.start_index
    backward_template: str = DEFAULT_BACKWARD_TEMPLATES["separate"]

    @classmethod
    def from_config(cls, store: StoreConfig) -> Naming:
        return cls(store.layout, store.resolved_flow_template, store.img_template, store.start_index,
                   store.resolved_backward_template)

    @classmethod
    def from_meta(cls, meta: dict[str, Any]) -> Naming:
        # Trees written before backward flow existed have no backward_template: they hold forward flow only.
        s = recorded_settings(meta["settings"])
        return cls(s["layout"], s["flow_template"], s["img_template"], s["start_index"], s["backward_template"])

    def template(self, direction: str = "forward") -> str:
        """The flow file template of `direction`."""
        if direction == "forward":
            return self.flow_template
        if direction == "backward":
            return self.backward_template
        raise ValueError(f"direction must be 'forward' or 'backward', got {direction!r}")

    def flow(self, axis: str, index: int, direction: str = "forward") -> str:
        """Name of the `axis` ('x' or 'y') image of pair `index` in the separate layout."""
        return self.template(direction).format(axis, index + self.start_index)

    def xy(self, index: int, direction: str = "forward") -> str:
        """Name of the 3-channel (x, y, 0) image of pair `index` in the xy0 layout."""
        return self.template(direction).format(index + self.start_index)

    def img(self, index: int) -> str:
        """Name of RGB frame `index`."""
        return self.img_template.format(index + self.start_index)

    def pair_names(self, index: int, direction: str = "forward") -> list[str]:
        """The files of pair `index`: [x, y] in the separate layout, [xy] in xy0 (encode_flow_codes' order)."""
        if self.layout == "xy0":
            return [self.xy(index, direction)]
        return [self.flow("x", index, direction), self.flow("y", index, direction)]

    def flow_pattern(self, direction: str = "forward") -> re.Pattern[str]:
        """Regex matching this naming's flow file names (groups: 'axis' in the separate layout, 'index')."""
        return template_pattern(self.template(direction))

    def img_pattern(self) -> re.Pattern[str]:
        """Regex matching this naming's RGB frame file names (group 'index')."""
        return template_pattern(self.img_template)


def encode_jpeg(image: np.ndarray, quality: int, *, rgb: bool = False) -> bytes:
    """Gray HxW or RGB HxWx3 uint8 -> JPEG bytes; colour is written 4:4:4 so channels do not bleed."""
    params = [cv2.IMWRITE_JPEG_QUALITY, int(quality)]
    if rgb:
        image = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
        params += [cv2.IMWRITE_JPEG_SAMPLING_FACTOR, cv2.IMWRITE_JPEG_SAMPLING_FACTOR_444]
    ok, buf = cv2.imencode(".jpg", image, params)
    if not ok:
        raise OutputError(f"OpenCV could not encode a {image.shape} {image.dtype} image as JPEG")
    return buf.tobytes()


def encode_flow_codes(codes: np.ndarray, layout: str, quality: int) -> list[bytes]:
    """uint8 HxWx2 (x, y) codes of one pair -> its JPEGs in Naming.pair_names order: gray x and y images
    (separate), or one colour image with x in red, y in green and 0 in blue (xy0)."""
    if layout == "xy0":
        return [encode_jpeg(np.dstack([codes, np.zeros(codes.shape[:2], np.uint8)]), quality, rgb=True)]
    return [encode_jpeg(np.ascontiguousarray(codes[..., axis]), quality) for axis in (0, 1)]


def codes_from_images(images: list[np.ndarray], layout: str) -> np.ndarray:
    """A pair's decoded JPEGs in encode_flow_codes' order (gray x and y, or one RGB (x, y, 0)) -> uint8 HxWx2."""
    return images[0][..., :2] if layout == "xy0" else np.dstack(images)


def decode_jpeg(data: bytes, name: str, *, rgb: bool = False) -> np.ndarray:
    """JPEG bytes -> gray HxW (or RGB HxWx3) uint8; OutputError naming `name` if it does not decode."""
    flag = cv2.IMREAD_COLOR if rgb else cv2.IMREAD_GRAYSCALE
    image = cv2.imdecode(np.frombuffer(data, np.uint8), flag) if data else None
    if image is None:
        raise OutputError(f"{name}: not a readable JPEG ({len(data)} bytes)")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB) if rgb else image


def output_path(base: str | os.PathLike, pack: str) -> Path:
    """Where a video's output lives: the directory `base`, or `base.zip` for zip packs."""
    base = Path(base)
    return base.with_name(base.name + PACK_SUFFIX) if pack == "zip" else base


def output_name(base: str, pack: str) -> str:
    """output_path(base, pack) as a string, for `base` as discover writes it: no Path built (a million jobs)."""
    return base + PACK_SUFFIX if pack == "zip" else base


def other_pack(pack: str) -> str:
    """The other output form: 'zip' for 'dir' and 'dir' for 'zip'."""
    return "dir" if pack == "zip" else "zip"


def temp_path(final: Path) -> Path:
    """A fresh hidden sibling name for `final`'s temporary, naming its owner (host and process id), so that
    a look at a shared tree says who is writing what: ``.NAME.flowprep-tmp-HOST-PID-XXXXXXXX``."""
    return final.with_name(f".{final.name}{TEMP_MARKER}{_OWNER}-{os.getpid()}-{uuid.uuid4().hex[:8]}")


_OWNER = re.sub(r"[^A-Za-z0-9.]+", "_", socket.gethostname()) or "host"


def is_temporary(name: str) -> bool:
    """Whether a file or folder name is one of temp_path's."""
    return name.startswith(".") and TEMP_MARKER in name


def remove_temps_of_outputs(finals: Iterable[str | os.PathLike]) -> list[Path]:
    """Delete the temporaries and lock files that killed processes left of these outputs (directory or .zip
    paths), and nothing else: not those of an output whose lock another run holds (it is writing them: see
    output_lock); returns the temporaries removed. Each parent folder is listed once, whatever the number of
    outputs in it, and outputs are not entered: the cost grows with the folders' entries, not with the files
    inside the outputs."""
    by_folder: dict[str, set[str]] = {}
    for final in finals:
        folder, name = os.path.split(os.fspath(final))
        by_folder.setdefault(folder, set()).add(name)
    removed = []
    for folder, names in by_folder.items():
        try:
            entries = [entry.name for entry in os.scandir(folder or ".")]
        except OSError:  # not created yet, or gone: nothing of ours in it
            continue
        temps: dict[str, list[str]] = {}
        for entry in entries:
            if is_temporary(entry) and (name := entry[1:entry.index(TEMP_MARKER)]) in names:
                temps.setdefault(name, []).append(entry)
            elif entry.startswith(".") and entry.endswith(LOCK_SUFFIX) and entry[1:-len(LOCK_SUFFIX)] in names:
                temps.setdefault(entry[1:-len(LOCK_SUFFIX)], [])  # taking the lock removes its file
        for name, entries_of_name in temps.items():
            with output_lock(Path(folder) / name) as held:
                if held:
                    removed += [_remove(Path(folder) / entry) for entry in entries_of_name]
    return removed


def lock_path(final: Path) -> Path:
    """The lock file of output `final` (a directory or .zip path): ``.NAME.flowprep-lock`` beside it."""
    return final.with_name(f".{final.name}{LOCK_SUFFIX}")


@contextmanager
def output_lock(final: str | os.PathLike) -> Iterator[bool]:
    """Hold the exclusive lock of output `final` while the block runs; yields False, holding nothing, when another
    process holds it (it is writing that output). Every run writing an output holds its lock, whatever its shard
    or output root, so two never work on one video at once.

    The lock is an flock on lock_path(final), created here and unlinked before it is released, so finished trees
    keep no lock files (a killed holder leaves one; its lock died with it). A lock taken on a file unlinked
    meanwhile is no lock: the file is opened again until the one locked is the one at the path. StorageError
    (with the errno) when the lock file cannot be created. Where flock does not exist (not POSIX) it yields True.
    """
    try:
        import fcntl
    except ImportError:
        yield True
        return
    path = lock_path(Path(final))
    while True:
        with _storage(path):
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            yield False
            return
        try:
            if os.stat(path).st_ino == os.fstat(fd).st_ino:
                break
        except FileNotFoundError:
            pass
        os.close(fd)
    try:
        yield True
    finally:
        try:
            os.unlink(path)
        except OSError:  # a vanished file system: the lock dies with the descriptor all the same
            pass
        os.close(fd)


def _remove(path: Path) -> Path:
    shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)
    return path


class OutputWriter(ABC):
    """Writes one video's files into a temporary and commits them atomically; aborts on error.

    `durable`: every file (or the zip) is fsync'ed, then the temporary directory, and after the rename the
    parent directory, so that a committed output survives a power cut, not only a killed process.
    """

    pack: str  # the form this writer writes: "dir" or "zip"

    def __init__(self, base: Path, durable: bool = True):
        self.base = base
        self.durable = durable
        self.final = output_path(base, self.pack)
        self.temp = temp_path(self.final)
        self._done = False
        with _storage(self.temp):
            self.final.parent.mkdir(parents=True, exist_ok=True)
            self._open()

    def write(self, name: str, data: bytes) -> None:
        """Add file `name`; StorageError naming it when the file system refuses (full, read-only, gone)."""
        with _storage(self.temp / name):
            self._write(name, data)

    @abstractmethod
    def _open(self) -> None:
        """Create the temporary."""

    @abstractmethod
    def _write(self, name: str, data: bytes) -> None: ...

    @abstractmethod
    def _close(self) -> None: ...

    def _sync(self) -> None:
        """On commit, after _close, when durable: make durable what is not yet (a zip fsyncs in _close)."""

    def commit(self, meta: dict[str, Any]) -> Path:
        """Write meta.json last, then move the output into place, replacing an older one.

        A finished output of the other form goes first: a video has one output (readers would prefer a stale
        directory), and a crash between the two steps leaves no finished output rather than two.
        """
        self.write(META_NAME, json.dumps(meta, indent=1, sort_keys=True).encode())
        with _storage(self.temp):
            self._close()
            self._sync()
        self._check_complete()
        there, broken = inspect_output(self.base, self.pack)
        if there is None and broken:  # put there while this video was computed: not flowprep's to replace
            raise OutputError(not_ours_message(self.final, broken))
        other = other_pack(self.pack)
        if finished_meta(self.base, other) is not None:
            other_final = output_path(self.base, other)
            try:
                shutil.rmtree(other_final) if other == "dir" else other_final.unlink()
            except OSError as exc:
                raise OutputError(f"{other_final}: cannot remove this video's {other!r} output before writing its "
                                  f"{self.pack!r} one ({exc.strerror or exc})") from None
        with _storage(self.final):
            _replace(self.temp, self.final)
            if self.durable:
                _fsync_directory(self.final.parent)
        self._done = True
        return self.final

    def _check_complete(self) -> None:
        """OutputError if the temporary lost files: another run's cleanup removed them while we wrote."""

    def abort(self) -> None:
        if not self._done:
            self._done = True
            try:
                self._close()
            except OSError:  # a zip's central directory on a full disk: the temporary goes anyway
                pass
            _remove(self.temp)

    def __enter__(self) -> OutputWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.abort()


class DirectoryWriter(OutputWriter):
    pack = "dir"

    def _open(self) -> None:
        self.temp.mkdir()
        self._written: set[str] = set()

    def _write(self, name: str, data: bytes) -> None:
        _write_bytes(self.temp / name, data, self.durable)
        self._written.add(name)

    def _check_complete(self) -> None:
        # A worker orphaned by a killed run can race the next run's clean-up of temporaries: never rename a
        # directory whose files were deleted under it into a place where it looks finished.
        missing = self._written - set(os.listdir(self.temp))
        if missing:
            raise OutputError(f"{self.temp}: {len(missing)} written file(s) vanished before the commit "
                              f"(e.g. {sorted(missing)[0]}); was another flowprep run cleaning this tree?")

    def _close(self) -> None:
        pass

    def _sync(self) -> None:
        if self.durable:  # the files were fsync'ed as written; their names live in the folder
            _fsync_directory(self.temp)


class ZipWriter(OutputWriter):
    """Uncompressed zip: JPEGs do not compress, and stored members can be read without inflating."""

    pack = "zip"

    _zip: zipfile.ZipFile | None = None

    def _open(self) -> None:
        self._file = open(self.temp, "wb")
        try:
            self._zip = zipfile.ZipFile(self._file, "w", zipfile.ZIP_STORED)
        except BaseException:
            self._file.close()
            raise

    def _write(self, name: str, data: bytes) -> None:
        # A fixed timestamp keeps packs of identical content byte-identical across runs.
        self._zip.writestr(zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0)), data)

    def _close(self) -> None:
        if self._zip is not None:
            zip_file, self._zip = self._zip, None
            try:
                zip_file.close()  # the central directory
                if self.durable:
                    self._file.flush()
                    os.fsync(self._file.fileno())
            finally:
                self._file.close()


def open_writer(base: str | os.PathLike, pack: str = "dir", durable: bool = True) -> OutputWriter:
    """A writer for the output of form `pack` ('dir' or 'zip') at `base`; commit() puts it in place, fsync'ed
    to the disk first unless not `durable` (see OutputWriter)."""
    return ZipWriter(Path(base), durable) if pack == "zip" else DirectoryWriter(Path(base), durable)


@contextmanager
def _storage(path: Path) -> Iterator[None]:
    """OSError -> StorageError naming `path` (the write's target) and keeping the errno."""
    try:
        yield
    except OSError as exc:
        raise StorageError(f"{path}: cannot write ({exc.strerror or exc})", exc.errno) from None


def write_file_atomic(path: Path, data: bytes, durable: bool = True) -> None:
    """Replace file `path` by `data` through a temporary sibling, never leaving a partial file under its name nor
    the temporary (OSError as raised). `durable`: fsync the file, and the folder after the rename."""
    temp = temp_path(path)
    try:
        _write_bytes(temp, data, durable)
        os.replace(temp, path)
    except OSError:
        temp.unlink(missing_ok=True)
        raise
    if durable:
        _fsync_directory(path.parent)


def _write_bytes(path: Path, data: bytes, durable: bool) -> None:
    """Write file `path`; `durable`: fsync it before returning."""
    with open(path, "wb") as f:
        f.write(data)
        if durable:
            f.flush()
            os.fsync(f.fileno())


def _fsync_directory(path: Path) -> None:
    """Make a directory's entries (files created or renamed in it) durable; a no-op where directories cannot be
    opened (Windows)."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except (PermissionError, IsADirectoryError):
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _replace(temp: Path, final: Path) -> None:
    if final.is_dir():
        # A directory cannot be renamed over a non-empty one: move the old one aside first.
        trash = temp_path(final)
        os.rename(final, trash)
        os.rename(temp, final)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        os.replace(temp, final)


class OutputReader(ABC):
    """Read access to one video's finished output, directory or zip alike."""

    def __init__(self, path: Path):
        self.path = path

    @abstractmethod
    def names(self) -> list[str]: ...

    @abstractmethod
    def read(self, name: str) -> bytes:
        """The bytes of file `name`; OutputError naming the file when it is missing or unreadable."""

    @abstractmethod
    def has(self, name: str) -> bool:
        """Whether file `name` is there (one stat or zip index lookup, without listing the output)."""

    def close(self) -> None:
        pass

    def meta(self) -> dict[str, Any]:
        """The parsed meta.json; OutputError naming it when it is missing, not JSON, or lacks a field that
        readers rely on (see check_meta)."""
        data = self.read(META_NAME)
        try:
            meta = json.loads(data)
        except ValueError as exc:
            raise OutputError(f"{self.path / META_NAME}: not valid JSON ({exc})") from None
        check_meta(meta, self.path / META_NAME)
        return meta

    def read_image(self, name: str, *, rgb: bool = False) -> np.ndarray:
        # os.path.join, not Path '/': this runs once per frame when training, and a pathlib join costs about a
        # third of reading a small JPEG.
        return decode_jpeg(self.read(name), os.path.join(self.path, name), rgb=rgb)

    def __enter__(self) -> OutputReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class DirectoryReader(OutputReader):
    def names(self) -> list[str]:
        return sorted(p.name for p in self.path.iterdir() if p.is_file())

    def has(self, name: str) -> bool:
        return os.path.isfile(os.path.join(self.path, name))

    def read(self, name: str) -> bytes:
        try:
            # Unbuffered: one read of the whole file, without a buffer object (about a fifth less time a file).
            with open(os.path.join(self.path, name), "rb", buffering=0) as f:
                return f.read()
        except OSError as exc:
            raise OutputError(f"{self.path / name}: cannot read ({exc.strerror or exc})") from None


class ZipReader(OutputReader):
    """Stored members are read with one pread each and checked against their CRC-32, several times faster than
    zipfile's read (2-5 us against 12-22 us for a 5-7 KB JPEG, measured twice); others go through zipfile."""

    def __init__(self, path: Path):
        super().__init__(path)
        try:
            self._zip = zipfile.ZipFile(path)
        except (OSError, zipfile.BadZipFile) as exc:
            raise OutputError(f"{path}: not a readable zip pack ({exc})") from None
        self._data_offsets: dict[str, int] = {}

    def names(self) -> list[str]:
        return sorted(self._zip.namelist())

    def has(self, name: str) -> bool:
        return name in self._zip.NameToInfo

    def read(self, name: str) -> bytes:
        info = self._zip.NameToInfo.get(name)
        if info is None:
            raise OutputError(f"{self.path / name}: no such file in the zip pack")
        try:
            if info.compress_type != zipfile.ZIP_STORED or info.flag_bits & _ZIP_ENCRYPTED or _pread is None:
                return self._zip.read(info)
            data = _pread(self._zip.fp.fileno(), info.file_size, self._data_offset(info))
        except (OSError, zipfile.BadZipFile) as exc:
            raise OutputError(f"{self.path / name}: cannot read from the zip pack ({exc})") from None
        if len(data) != info.file_size or zlib.crc32(data) != info.CRC:
            raise OutputError(f"{self.path / name}: truncated or corrupt in the zip pack (CRC-32 mismatch)")
        return data

    def _data_offset(self, info: zipfile.ZipInfo) -> int:
        """Where the member's bytes start: after its local header, whose name and extra field lengths may
        differ from the central directory's."""
        offset = self._data_offsets.get(info.filename)
        if offset is None:
            header = _pread(self._zip.fp.fileno(), _LOCAL_HEADER.size, info.header_offset)
            if len(header) != _LOCAL_HEADER.size or header[:4] != b"PK\x03\x04":
                raise zipfile.BadZipFile(f"bad local file header at byte {info.header_offset}")
            name_length, extra_length = _LOCAL_HEADER.unpack(header)[1:]
            offset = info.header_offset + _LOCAL_HEADER.size + name_length + extra_length
            self._data_offsets[info.filename] = offset
        return offset

    def close(self) -> None:
        self._zip.close()


def check_meta(meta: Any, where: Path) -> None:
    """OutputError naming `where` unless `meta` is a flowprep meta.json with the fields every reader relies on:
    format, frames, flow_pairs, and settings with layout, flow_template, img_template, start_index, bound."""
    if not isinstance(meta, dict) or meta.get("format") != META_FORMAT:
        raise OutputError(f"{where}: not a flowprep meta.json (format {META_FORMAT!r} expected)")
    for key, kind in _META_FIELDS.items():
        meta_field(meta, key, kind, where)
    for key, kind in _SETTINGS_FIELDS.items():
        meta_field(meta["settings"], key, kind, where, "settings.")
    if meta["settings"]["layout"] not in LAYOUTS:
        raise OutputError(f"{where}: settings.layout is {meta['settings']['layout']!r}, expected one of "
                          f"{', '.join(LAYOUTS)}")


def meta_field(fields: dict[str, Any], key: str, kind: type | tuple[type, ...], where: Path, prefix: str = ""
               ) -> Any:
    """fields[key] if it is there and of `kind` (bool does not pass for a number); OutputError naming `where`
    and the field otherwise. `prefix` names the enclosing object, e.g. 'settings.'."""
    if key not in fields:
        raise OutputError(f"{where}: missing or invalid field {prefix}{key}: it is missing")
    value = fields[key]
    if not isinstance(value, kind) or isinstance(value, bool):
        names = "/".join(k.__name__ for k in (kind if isinstance(kind, tuple) else (kind,)))
        raise OutputError(f"{where}: missing or invalid field {prefix}{key}: {value!r} is not a {names}")
    return value


def recorded_settings(settings: Mapping[str, Any]) -> dict[str, Any]:
    """meta.json['settings'] as pipeline.settings_of gives them today: trees written before backward and warped
    flow existed lack those fields, and hold unwarped forward flow only; trees from before `impl` were computed
    by the one implementation there was (OpenCV's on the CPU)."""
    filled = {"directions": ["forward"], "warp": False, **settings}
    if "impl" not in filled:  # written before an algorithm could have more than one implementation on a device
        filled["impl"] = legacy_impl(str(filled.get("algorithm")), str(filled.get("device", "cpu")))
    if not filled.get("backward_template") and filled.get("layout") in DEFAULT_BACKWARD_TEMPLATES:
        filled["backward_template"] = DEFAULT_BACKWARD_TEMPLATES[filled["layout"]]
    return filled


def read_flow_pair(reader: OutputReader, naming: Naming, index: int, direction: str = "forward"
                   ) -> tuple[np.ndarray, np.ndarray]:
    """The stored uint8 HxW x and y codes of pair `index` (0-based) in `direction`, from either layout;
    OutputError naming the y file when its size differs from the x file's."""
    if naming.layout == "xy0":
        # Written from an (x, y, 0) array as RGB: x is the red channel, y the green one.
        xy = reader.read_image(naming.xy(index, direction), rgb=True)
        return xy[..., 0], xy[..., 1]
    x_name, y_name = naming.flow("x", index, direction), naming.flow("y", index, direction)
    x, y = reader.read_image(x_name), reader.read_image(y_name)
    if x.shape != y.shape:
        raise OutputError(f"{os.path.join(reader.path, y_name)}: {y.shape[1]}x{y.shape[0]} pixels but {x_name} "
                          f"is {x.shape[1]}x{x.shape[0]}")
    return x, y


def read_flow_codes(reader: OutputReader, naming: Naming, index: int, direction: str = "forward") -> np.ndarray:
    """The stored uint8 codes of pair `index` (0-based) in `direction` as HxWx2 (x, y), from either layout."""
    return np.dstack(read_flow_pair(reader, naming, index, direction))


def open_output(path: str | os.PathLike) -> OutputReader:
    """Open a video's output: a directory, a .zip pack, or a base path that has either form."""
    path = Path(path)
    if path.is_dir():
        return DirectoryReader(path)
    if path.suffix == PACK_SUFFIX and path.is_file():
        return ZipReader(path)
    packed = output_path(path, "zip")
    if packed.is_file():
        return ZipReader(packed)
    raise OutputError(f"{path}: no flow output here (neither a directory nor a .zip pack)")


def finished_meta(base: str | os.PathLike, pack: str = "dir") -> dict[str, Any] | None:
    """meta.json of the finished output of form `pack` at `base`, or None if there is none. The form is checked:
    for video `a.zip.mp4` the directory `a.zip` is its output, and the file `a.zip` is video `a.mp4`'s pack."""
    return inspect_output(base, pack)[0]


def inspect_output(base: str | os.PathLike, pack: str = "dir") -> tuple[dict[str, Any] | None, str]:
    """(meta.json of the finished output of form `pack` at `base`, or None; why what is there is not finished).

    The reason is "" when nothing of that form is there; otherwise it names the file and the fault (a corrupt or
    missing meta.json, a zip that does not open), so that a run recomputing it can say what it replaces.
    """
    final = output_path(base, pack)
    if not (final.is_dir() if pack == "dir" else final.is_file()):
        return None, ""
    try:
        with open_output(final) as reader:
            return reader.meta(), ""
    except OutputError as exc:
        return None, str(exc)


def not_ours_message(final: Path, problem: str) -> str:
    """Why the output at `final`, which is there but not finished (`problem`, from inspect_output), is left alone.

    flowprep renames only complete outputs into place, so such a folder or file is another tool's (or damaged):
    never deleted, not even by --overwrite."""
    return (f"{final} is there but is not a finished flowprep output ({problem}); flowprep does not delete what it "
            "did not write: move it away or remove it, then rerun")


FINISHED, UNFINISHED, TEMPORARY, UNREADABLE = "finished", "unfinished", "temporary", "unreadable"


@dataclass
class FoundOutput:
    """One thing find_outputs found: a video output, or a leftover that is none.

    kind: FINISHED (holds meta.json), UNFINISHED (holds files of the naming but no meta.json: an unfinished
    output, or one written by another tool), TEMPORARY (a killed run's temporary) or UNREADABLE (a .zip that
    does not open; `problem` says why).
    """

    path: Path
    kind: str
    names: list[str]  # file names in it (directory listing or zip members); [] for leftovers
    reader: OutputReader | None = None  # open until the walk moves on; None for leftovers
    problem: str = ""


def find_outputs(root: str | os.PathLike, naming: Naming = Naming()) -> Iterator[FoundOutput]:
    """Walk `root` (a directory, or itself one output) and yield its video outputs and leftovers, parents before
    their subfolders, names sorted.

    The one rule: a directory or .zip holding meta.json is a finished output; one holding flow (either
    direction) or RGB frame files named by `naming` but no meta.json is unfinished (or another tool's); an output holds no further
    outputs. Hidden names are skipped, except flowprep's temporaries (``.name.flowprep-tmp-…``), yielded as
    TEMPORARY. A .zip is opened once, here: its reader comes with it and closes when the walk moves on.
    """
    patterns = (*(naming.flow_pattern(d) for d in DIRECTIONS), naming.img_pattern())

    def kind_of(names: list[str]) -> str | None:
        if META_NAME in names:
            return FINISHED
        return UNFINISHED if any(p.fullmatch(n) for n in names for p in patterns) else None

    def packs(paths: list[Path]) -> Iterator[FoundOutput]:
        for path in paths:
            try:
                reader = ZipReader(path)
            except OutputError as exc:
                yield FoundOutput(path, UNREADABLE, [], problem=str(exc))
                continue
            with reader:
                names = reader.names()
                kind = kind_of(names)
                if kind is not None:
                    yield FoundOutput(path, kind, names, reader)

    root = Path(root)
    if root.is_file():
        yield from packs([root] if root.suffix == PACK_SUFFIX else [])
        return
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        for name in sorted(dirnames + filenames):
            if is_temporary(name):
                yield FoundOutput(here / name, TEMPORARY, [])
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        kind = kind_of(filenames)
        if kind is not None:
            dirnames.clear()  # an output holds no further outputs
            yield FoundOutput(here, kind, sorted(filenames), DirectoryReader(here))
            continue
        yield from packs([here / n for n in sorted(filenames) if n.endswith(PACK_SUFFIX) and not n.startswith(".")])
