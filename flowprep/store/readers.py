"""Read access to one video's finished output, a directory or an uncompressed zip pack alike."""
from __future__ import annotations

import json
import os
import struct
import zipfile
import zlib
from abc import ABC, abstractmethod
from pathlib import Path
from collections.abc import Iterable
from typing import Any

import numpy as np

from ..errors import OutputError
from .jpeg import decode_jpeg
from .location import is_url
from .meta import META_NAME, check_meta
from .naming import PACK_SUFFIX, Naming, output_path

# A zip local file header: signature, 22 bytes of fields the central directory repeats, name and extra lengths.
LOCAL_HEADER = struct.Struct("<4s22xHH")
ZIP_ENCRYPTED = 0x1
_pread = getattr(os, "pread", None)  # POSIX only; elsewhere zipfile reads


class OutputReader(ABC):
    """Read access to one video's finished output, directory or zip alike; `path` is a Path, or the URL (a str)
    of an output on an object store."""

    is_pack = False  # a zip pack (its path ends in .zip), not a folder

    def __init__(self, path: Path | str):
        self.path = path

    @abstractmethod
    def names(self) -> list[str]: ...

    @abstractmethod
    def read(self, name: str) -> bytes:
        """The bytes of file `name`; OutputError naming the file when it is missing or unreadable."""

    @abstractmethod
    def has(self, name: str) -> bool:
        """Whether file `name` is there (one stat or zip index lookup, without listing the output)."""

    def prefetch(self, names: Iterable[str]) -> None:
        """Fetch the files `names` together, ahead of their read(): on an object store a few requests for all of
        them instead of one each (the files of one item); nothing to do on a local disk."""

    def close(self) -> None:
        pass

    def meta(self) -> dict[str, Any]:
        """The parsed meta.json; OutputError naming it when it is missing, not JSON, or lacks a field that
        readers rely on (see check_meta)."""
        data = self.read(META_NAME)
        try:
            meta = json.loads(data)
        except ValueError as exc:
            raise OutputError(f"{os.path.join(self.path, META_NAME)}: not valid JSON ({exc})") from None
        check_meta(meta, os.path.join(self.path, META_NAME))
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

    is_pack = True

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
            if info.compress_type != zipfile.ZIP_STORED or info.flag_bits & ZIP_ENCRYPTED or _pread is None:
                return self._zip.read(info)
            data = _pread(self._zip.fp.fileno(), info.file_size, self._data_offset(info))
        except (OSError, zipfile.BadZipFile) as exc:
            raise OutputError(f"{self.path / name}: cannot read from the zip pack ({exc})") from None
        return checked_member(data, info, os.path.join(self.path, name))

    def _data_offset(self, info: zipfile.ZipInfo) -> int:
        """Where the member's bytes start: after its local header."""
        offset = self._data_offsets.get(info.filename)
        if offset is None:
            header = _pread(self._zip.fp.fileno(), LOCAL_HEADER.size, info.header_offset)
            offset = info.header_offset + member_data_start(header, 0, info)
            self._data_offsets[info.filename] = offset
        return offset

    def close(self) -> None:
        self._zip.close()


def member_data_start(block: bytes, at: int, info: zipfile.ZipInfo) -> int:
    """Where member `info`'s stored bytes start in `block`, whose byte `at` is its local header (whose name and
    extra field lengths may differ from the central directory's); BadZipFile when no such header is there."""
    header = block[at:at + LOCAL_HEADER.size]
    if len(header) < LOCAL_HEADER.size or header[:4] != b"PK\x03\x04":
        raise zipfile.BadZipFile(f"bad local file header at byte {info.header_offset}")
    name_length, extra_length = LOCAL_HEADER.unpack(header)[1:]
    return at + LOCAL_HEADER.size + name_length + extra_length


def checked_member(data: bytes, info: zipfile.ZipInfo, where: str) -> bytes:
    """`data`, member `info`'s bytes as read; OutputError naming `where` unless its size and CRC-32 are the
    central directory's."""
    if len(data) != info.file_size or zlib.crc32(data) != info.CRC:
        raise OutputError(f"{where}: truncated or corrupt in the zip pack (CRC-32 mismatch)")
    return data


def flow_pair_names(naming: Naming, index: int, direction: str = "forward") -> tuple[str, ...]:
    """The file names that hold pair `index` (0-based) in `direction`: x and y, or the one xy0 image."""
    if naming.layout == "xy0":
        return (naming.xy(index, direction),)
    return naming.flow("x", index, direction), naming.flow("y", index, direction)


def read_flow_pair(reader: OutputReader, naming: Naming, index: int, direction: str = "forward"
                   ) -> tuple[np.ndarray, np.ndarray]:
    """The stored uint8 HxW x and y codes of pair `index` (0-based) in `direction`, from either layout;
    OutputError naming the y file when its size differs from the x file's."""
    if naming.layout == "xy0":
        # Written from an (x, y, 0) array as RGB: x is the red channel, y the green one.
        xy = reader.read_image(naming.xy(index, direction), rgb=True)
        return xy[..., 0], xy[..., 1]
    x_name, y_name = flow_pair_names(naming, index, direction)
    x, y = reader.read_image(x_name), reader.read_image(y_name)
    if x.shape != y.shape:
        raise OutputError(f"{os.path.join(reader.path, y_name)}: {y.shape[1]}x{y.shape[0]} pixels but {x_name} "
                          f"is {x.shape[1]}x{x.shape[0]}")
    return x, y


def read_flow_codes(reader: OutputReader, naming: Naming, index: int, direction: str = "forward") -> np.ndarray:
    """The stored uint8 codes of pair `index` (0-based) in `direction` as HxWx2 (x, y), from either layout."""
    return np.dstack(read_flow_pair(reader, naming, index, direction))


def open_output(path: str | os.PathLike) -> OutputReader:
    """Open a video's output: a directory, a .zip pack, or a base path that has either form; on an object store
    (`path` a URL) a folder of objects or a pack, read by range requests."""
    if is_url(path):
        from .objects import open_object_output  # imports this module

        return open_object_output(str(path))
    path = Path(path)
    if path.is_dir():
        return DirectoryReader(path)
    if path.suffix == PACK_SUFFIX and path.is_file():
        return ZipReader(path)
    packed = output_path(path, "zip")
    if packed.is_file():
        return ZipReader(packed)
    raise OutputError(f"{path}: no flow output here (neither a directory nor a .zip pack)")
