"""Outputs on an object store: a video is one object, its zip pack, uploaded whole once complete; read back by
range requests (a pack's central directory once, then only the members asked for).

Nothing temporary is ever visible under the prefix: the pack is built in a local temporary file and uploaded in
one piece (a single PUT, or a multipart upload that s3fs aborts when a part fails; one a killed process leaves
open is invisible, and a bucket lifecycle rule, AbortIncompleteMultipartUpload, removes its parts). An object
that exists is complete; it holds meta.json like a local pack. No lock exists there: one run (or one shard of
one N) per prefix at a time.
"""
from __future__ import annotations

import errno
import json
import shutil
import tempfile
import zipfile
import zlib
from collections.abc import Iterable, Iterator, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

from ..errors import OutputError, StorageError
from .location import object_path
from .meta import META_NAME
from .naming import PACK_SUFFIX
from .readers import LOCAL_HEADER, ZIP_ENCRYPTED, OutputReader, checked_member, member_data_start
from .writers import ZipWriter

# Keys of an fsspec info dict that hold the object's modification time: S3's, Azure's, GCS's.
MODIFIED_KEYS = ("LastModified", "last_modified", "mtime", "updated")
_TAIL = 2**16  # a pack's last bytes read when it is opened: its central directory, meta.json, the last members
_GAP = 2**16  # members closer than this are fetched in one range: reading the bytes between costs less than a request


def _storage_error(url: str, what: str, exc: Exception) -> StorageError:
    # The store's fault (refused, gone, throttled past botocore's retries), not the video's: every later video
    # would fail the same way, so it stops the run as a full disk does (EIO is one of its errnos).
    return StorageError(f"{url}: cannot {what} ({_store_answer(exc)})", errno.EIO)


def _store_answer(exc: Exception) -> str:
    """The store's answer for messages: its error code and HTTP status where the client kept them (s3fs keeps
    botocore's error as the cause; its own exception says 'Access Denied' or '[Errno 16] Please reduce your
    request rate.'), else the exception's type and text."""
    response = getattr(exc.__cause__, "response", None)
    if not isinstance(response, dict) or "Error" not in response:
        return f"{type(exc).__name__}: {exc}"
    status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    answer = f"{response['Error'].get('Code')}, HTTP {status}: {response['Error'].get('Message') or exc}"
    if status in (429, 503):  # S3's SlowDown (and 503 Service Unavailable), other stores' Too Many Requests
        answer += ("; the store throttled the requests, still after the client's retries with backoff "
                   "(AWS_MAX_ATTEMPTS sets how many): rerun later, or with fewer workers")
    return answer


class ObjectZipWriter(ZipWriter):
    """The zip pack of the video whose output base is `base` (a URL), built in a local temporary file and
    uploaded whole as ``base.zip`` by commit()."""

    def __init__(self, base: str):
        # Not OutputWriter.__init__: that one makes the temporary a sibling of the final path, on the store here.
        self.base = base
        # Durability is the store's to keep: the local temporary is only read back by the upload (a crash loses
        # it either way), so it is never fsync'ed (one fsync per video cost a 16-frame video a quarter of its
        # wall time), whatever --no-fsync says.
        self.durable = False
        self.final = base + PACK_SUFFIX
        self._folder = Path(tempfile.mkdtemp(prefix="flowprep-upload-"))
        self.temp = self._folder / Path(self.final).name
        self._done = False
        self._open()

    def commit(self, meta: dict[str, Any]) -> str:  # type: ignore[override]
        """Write meta.json last, close the pack and upload it whole, replacing an older object; its URL."""
        self.write(META_NAME, json.dumps(meta, indent=1, sort_keys=True).encode())
        self._close()
        fs, key = object_path(self.final)
        try:
            fs.put_file(str(self.temp), key)
        except Exception as exc:  # noqa: BLE001 - any failure of the store; s3fs aborted a multipart upload
            raise _storage_error(self.final, "upload the pack", exc) from None
        finally:
            shutil.rmtree(self._folder, ignore_errors=True)
        self._done = True
        return self.final

    def abort(self) -> None:
        super().abort()
        shutil.rmtree(self._folder, ignore_errors=True)


def inspect_object(base: str) -> tuple[dict[str, Any] | None, str]:
    """(meta.json of the pack object ``base.zip``, or None; why an object there is not a finished pack, or "").
    Reads the zip's central directory and meta.json with range requests, not the whole object; StorageError
    when the store fails."""
    url = base + PACK_SUFFIX
    try:
        with ObjectZipReader(url) as reader:
            return reader.meta(), ""
    except FileNotFoundError:
        return None, ""
    except StorageError:
        raise
    except OutputError as exc:
        return None, f"{url}: not a readable flowprep pack ({exc})"


def write_object(url: str, data: bytes) -> None:
    """Put `data` as the object `url`, whole (an object store has no partial object to protect against)."""
    fs, key = object_path(url)
    try:
        fs.pipe_file(key, data)
    except Exception as exc:  # noqa: BLE001
        raise _storage_error(url, "write", exc) from None


def read_object(url: str) -> bytes:
    """The whole object `url`; StorageError naming it when it is not there (errno ENOENT) or cannot be read."""
    fs, key = object_path(url)
    try:
        return fs.cat_file(key)
    except FileNotFoundError:
        raise StorageError(f"{url}: no such object", errno.ENOENT) from None
    except Exception as exc:  # noqa: BLE001
        raise _storage_error(url, "read", exc) from None


def object_times(prefix: str, pattern: str = "*") -> dict[str, int]:
    """{name: last modification time in ns} of the objects matching `pattern` directly under the prefix URL."""
    fs, key = object_path(prefix)
    try:
        found = fs.glob(f"{key.rstrip('/')}/{pattern}", detail=True)
    except Exception as exc:  # noqa: BLE001
        raise _storage_error(prefix, "list", exc) from None
    return {path.rsplit("/", 1)[1]: object_stamp(info)[1] for path, info in found.items() if info.get("type") == "file"}


def object_stamp(info: Mapping[str, Any]) -> tuple[int, int]:
    """(bytes, modification time in ns since the epoch) of an object from its fsspec info (a listing's entry, or
    fs.info). The time is 0 when the store gives none that is known here: only the size then tells a change."""
    for key in MODIFIED_KEYS:
        when = info.get(key)
        if isinstance(when, str):
            when = datetime.fromisoformat(when.replace("Z", "+00:00"))
        if isinstance(when, datetime):
            when = when.timestamp()
        if isinstance(when, (int, float)):  # seconds; rounded to microseconds, the finest a store gives
            return int(info["size"]), round(when * 10**6) * 1000
    return int(info["size"]), 0


def list_tags(prefix: str) -> dict[str, str | None]:
    """{name relative to the prefix URL `prefix` ('/'-separated): its object_tag} of every object under it, from
    one recursive listing (on S3 one request per 1000 keys); {} when there is none. The listing is not kept in
    the client's cache (a million keys' details would stay in memory). StorageError when the store fails (a missing
    bucket too)."""
    fs, key = object_path(prefix)
    key = key.rstrip("/")
    try:
        found = fs.find(key, detail=True)
    except Exception as exc:  # noqa: BLE001 - a missing bucket too (s3fs: FileNotFoundError); an empty prefix is none
        raise _storage_error(prefix, "list", exc) from None
    finally:
        fs.invalidate_cache(key)
    start = len(key) + 1
    return {path[start:]: object_tag(info) for path, info in found.items() if path.startswith(key + "/")}


def object_tag(info: dict[str, Any]) -> str | None:
    """What names one version of an object's content, from a listing's or a HEAD's details alike: its size and
    ETag (S3, Azure; on S3 the content's MD5 for a single PUT, one per content for a multipart upload too) or
    generation (GCS); None when the store gives neither (such an object is never vouched for by a tag)."""
    for field in ("ETag", "etag", "generation"):
        value = str(info.get(field) or "").strip('"')
        if value:
            return f"{info.get('size')}:{value}"
    return None


def remove_object(url: str) -> None:
    """Remove the object `url` if it is there."""
    fs, key = object_path(url)
    try:
        fs.rm_file(key)
    except FileNotFoundError:
        pass
    except Exception as exc:  # noqa: BLE001
        raise _storage_error(url, "remove", exc) from None


class ObjectZipReader(OutputReader):
    """A zip pack on an object store, read by range requests: its last 64 KiB once (the central directory, and
    the members written last, meta.json among them, which are then read from there), then each other member
    with one request (or prefetch's few), checked against its CRC-32. Holds no connection of its own (the
    process's fsspec client serves every request; a forked child gets its own client)."""

    is_pack = True

    def __init__(self, url: str):
        super().__init__(url)
        self._fs, self._key = object_path(url)
        try:
            size = self._fs.size(self._key)
            self._tail_start = max(0, size - _TAIL)
            self._tail = self._range(self._tail_start, size - self._tail_start)
            with zipfile.ZipFile(_PackFile(self, size)) as pack:
                self._members = {info.filename: info for info in pack.infolist()}
        except FileNotFoundError:
            raise
        except (zipfile.BadZipFile, ValueError, EOFError) as exc:
            raise OutputError(f"{url}: not a readable zip pack ({exc})") from None
        except Exception as exc:  # noqa: BLE001 - the store's errors (refused, gone)
            raise _storage_error(url, "read", exc) from None
        self._data_offsets: dict[str, int] = {}
        self._fetched: dict[str, bytes] = {}  # prefetched members' stored bytes, each taken by its read()

    def _bytes(self, start: int, end: int) -> bytes:
        """Bytes `start` to `end` of the pack: from its tail when they lie there, else one range request."""
        if start >= self._tail_start:
            return self._tail[start - self._tail_start:end - self._tail_start]
        return self._range(start, end - start)

    def names(self) -> list[str]:
        return sorted(self._members)

    def has(self, name: str) -> bool:
        return name in self._members

    def read(self, name: str) -> bytes:
        info = self._members.get(name)
        where = f"{self.path}/{name}"
        if info is None:
            raise OutputError(f"{where}: no such file in the zip pack")
        if info.flag_bits & ZIP_ENCRYPTED or info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            raise OutputError(f"{where}: encrypted or compressed with method {info.compress_type}: object stores "
                              "read stored and deflated members only")
        try:
            raw = self._fetched.pop(name, None)
            if raw is None:
                raw = self._member_bytes(info)
            data = raw if info.compress_type == zipfile.ZIP_STORED else zlib.decompress(raw, -zlib.MAX_WBITS)
        except (zipfile.BadZipFile, zlib.error) as exc:
            raise OutputError(f"{where}: cannot read from the zip pack ({exc})") from None
        except Exception as exc:  # noqa: BLE001
            raise _storage_error(where, "read", exc) from None
        return checked_member(data, info, where)

    def prefetch(self, names: Iterable[str]) -> None:
        """Fetch the stored bytes of the members `names` with one range request per run of members that lie
        within _GAP bytes of each other in the pack (a stack's fields are written side by side), the runs
        concurrently; read() takes each member's bytes from there once. A run that fails is left to read()."""
        infos = sorted({self._members[name].header_offset: self._members[name] for name in names
                        if name in self._members}.values(), key=lambda info: info.header_offset)
        runs: list[list[zipfile.ZipInfo]] = []
        for info in infos:
            if runs and info.header_offset - _span_end(runs[-1][-1]) <= _GAP:
                runs[-1].append(info)
            else:
                runs.append([info])
        self._fetched = {}  # what an earlier item fetched and did not read is dropped: bounded by one item
        if not runs:
            return
        starts, ends = [run[0].header_offset for run in runs], [_span_end(run[-1]) for run in runs]
        far = [k for k, start in enumerate(starts) if start < self._tail_start]  # not in the tail: to fetch
        blocks: list[Any] = [None if k in far else self._bytes(start, end)
                             for k, (start, end) in enumerate(zip(starts, ends))]
        if far:
            fetched = self._fs.cat_ranges([self._key] * len(far), [starts[k] for k in far], [ends[k] for k in far],
                                          on_error="return")
            for k, block in zip(far, fetched):
                blocks[k] = block
        for run, start, block in zip(runs, starts, blocks):
            if not isinstance(block, bytes):
                continue
            for info in run:
                try:
                    data = member_data_start(block, info.header_offset - start, info)
                except zipfile.BadZipFile:
                    continue  # read() says so
                raw = block[data:data + info.compress_size]
                if len(raw) == info.compress_size:  # else the header was longer than the central directory's
                    self._fetched[info.filename] = raw

    def _member_bytes(self, info: zipfile.ZipInfo) -> bytes:
        """The member's stored bytes, in one request when its local header is as long as the central
        directory says (flowprep's packs; otherwise a second request once the header is read)."""
        offset = self._data_offsets.get(info.filename)
        if offset is not None:
            return self._range(offset, info.compress_size)
        block = self._bytes(info.header_offset, _span_end(info))
        start = member_data_start(block, 0, info)
        self._data_offsets[info.filename] = info.header_offset + start
        if start + info.compress_size <= len(block):
            return block[start:start + info.compress_size]
        return self._range(info.header_offset + start, info.compress_size)

    def _range(self, start: int, size: int) -> bytes:
        return self._fs.cat_file(self._key, start=start, end=start + size) if size else b""


class _PackFile:
    """The pack as the seekable file zipfile reads its central directory from: bytes from the reader's tail,
    or, before it (a directory larger than the tail), range requests."""

    def __init__(self, reader: ObjectZipReader, size: int):
        self._reader, self._size, self._position = reader, size, 0

    def seek(self, offset: int, whence: int = 0) -> int:
        self._position = max(0, offset + (0, self._position, self._size)[whence])
        return self._position

    def tell(self) -> int:
        return self._position

    def read(self, count: int = -1) -> bytes:
        end = self._size if count is None or count < 0 else min(self._size, self._position + count)
        data = self._reader._bytes(self._position, end) if end > self._position else b""
        self._position += len(data)
        return data


def _span_end(info: zipfile.ZipInfo) -> int:
    """Where member `info` ends in the pack if its local header is as long as the central directory's entry."""
    return info.header_offset + LOCAL_HEADER.size + len(info.filename.encode()) + len(info.extra) + info.compress_size


class ObjectDirectoryReader(OutputReader):
    """A folder of objects (a local tree copied to a bucket): its file names from one listing, each file one
    request."""

    def __init__(self, url: str, names: list[str]):
        super().__init__(url)
        self._fs, self._key = object_path(url)
        self._names = sorted(names)
        self._known = set(names)
        self._fetched: dict[str, bytes] = {}

    def names(self) -> list[str]:
        return list(self._names)

    def has(self, name: str) -> bool:
        return name in self._known

    def prefetch(self, names: Iterable[str]) -> None:
        """Fetch the files `names` concurrently (one request each, all in flight together); read() takes each
        from there once. A file that fails is left to read()."""
        wanted = sorted({name for name in names if name in self._known})
        self._fetched = {}
        if wanted:
            found = self._fs.cat([f"{self._key}/{name}" for name in wanted], on_error="return")
            self._fetched = {name: found[f"{self._key}/{name}"] for name in wanted
                             if isinstance(found.get(f"{self._key}/{name}"), bytes)}

    def read(self, name: str) -> bytes:
        where = f"{self.path}/{name}"
        fetched = self._fetched.pop(name, None)
        if fetched is not None:
            return fetched
        try:
            return self._fs.cat_file(f"{self._key}/{name}")
        except FileNotFoundError:
            raise OutputError(f"{where}: cannot read (no such object)") from None
        except Exception as exc:  # noqa: BLE001
            raise _storage_error(where, "read", exc) from None


def open_object_output(url: str) -> OutputReader:
    """The output at `url`: a folder of objects, a ``.zip`` pack, or a base URL that has either (the folder
    first, as on disk); OutputError when there is neither, FileNotFoundError not raised."""
    fs, key = object_path(url)
    if not url.endswith(PACK_SUFFIX):
        names = _folder_names(fs, key, url)
        if names:
            return ObjectDirectoryReader(url, names)
        url += PACK_SUFFIX
    try:
        return ObjectZipReader(url)
    except FileNotFoundError:
        raise OutputError(f"{url.removesuffix(PACK_SUFFIX)}: no flow output here (neither a folder of objects "
                          "nor a .zip pack)") from None


def _folder_names(fs: Any, key: str, url: str) -> list[str]:
    try:
        entries = fs.ls(key, detail=True)
    except FileNotFoundError:
        return []
    except Exception as exc:  # noqa: BLE001
        raise _storage_error(url, "list", exc) from None
    return [entry["name"].rsplit("/", 1)[1] for entry in entries
            if entry.get("type") == "file" and entry["name"].startswith(key + "/")]


def walk_objects(url: str) -> Iterator[tuple[str, list[str], list[str]]]:
    """os.walk's (folder URL, subfolder names, object names) top-down under the prefix `url`, from one recursive
    listing (held whole: its keys, about 100 bytes each); the caller may prune the subfolder list in place."""
    fs, key = object_path(url)
    try:
        keys = fs.find(key)
    except FileNotFoundError:
        keys = []
    except Exception as exc:  # noqa: BLE001
        raise _storage_error(url, "list", exc) from None
    tree: dict[str, Any] = {}
    for found in keys:
        if not found.startswith(key + "/"):
            continue
        *folders, name = found[len(key) + 1:].split("/")
        node = tree
        for folder in folders:
            node = node.setdefault(folder, {})
        if name:  # not a folder marker
            node.setdefault(_FILES, []).append(name)

    def visit(here: str, node: dict[str, Any]) -> Iterator[tuple[str, list[str], list[str]]]:
        subfolders = sorted(name for name in node if name is not _FILES)
        yield here, subfolders, sorted(node.get(_FILES, []))
        for name in subfolders:
            yield from visit(f"{here}/{name}", node[name])

    yield from visit(url, tree)


_FILES = object()  # the key of a folder's object names in walk_objects' tree (no name can equal it)
