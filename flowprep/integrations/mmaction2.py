"""mmaction2 reads flowprep trees and zip packs: an mmengine file backend named ``flowprep``.

Importing this module (what a config's ``custom_imports = dict(imports=['flowprep.integrations.mmaction2'])``
does) registers the backend with mmengine's ``fileio`` functions (``backend_args=dict(backend='flowprep')``) and
with its ``FileClient`` (``RawFrameDecode(io_backend='flowprep')``, mmaction2 1.x). A file
``data_prefix/<video>/<name>`` is read from the folder ``<video>`` when there is one, else as the member ``<name>``
of the zip pack ``<video>.zip`` (``flowprep extract --pack zip``); ``<video>.zip/<name>`` names the pack itself.
So one annotation list (``flowprep list``, which names packs without ``.zip``) and one config serve both tree
forms, on a disk or on an object store (``data_prefix='s3://bucket/flow'``: folders of objects, or packs read
by range requests). Needs mmengine (``pip install mmengine``); neither torch nor OpenCV's contrib modules.
"""
from __future__ import annotations

import errno
import os

from ..errors import ConfigError, MissingDependencyError, OutputError, StorageError
from ..reader_cache import OPEN_READERS, ReaderCache
from ..store import PACK_SUFFIX, OutputReader, is_url, object_path, open_output

try:
    from mmengine import fileio
except ImportError as exc:
    raise MissingDependencyError(
        f"flowprep.integrations.mmaction2 needs mmengine, which is not installed: pip install mmengine ({exc})"
    ) from exc

BACKEND_NAME = "flowprep"


def open_video(location: str) -> OutputReader:
    """The reader of the video output at `location` (``data_prefix/<video>``, a path or an object store's URL):
    the folder, else ``<video>.zip``; FileNotFoundError when neither is there, OutputError naming the pack when
    it is there but does not open (StorageError when the store fails).

    Every location the backend reads goes through here, and only here. On an object store the folder is found
    by one listing and a pack is read by range requests (flowprep.store.objects), with this process's client."""
    try:
        return open_output(location)
    except StorageError:
        raise
    except OutputError:
        if _is_there(location) or _is_there(location + PACK_SUFFIX):
            raise
        raise FileNotFoundError(errno.ENOENT, f"neither a folder nor a {PACK_SUFFIX} pack", location) from None


def _is_there(location: str) -> bool:
    """Whether a file or a folder (on an object store: an object or a prefix of some) is at `location`."""
    if not is_url(location):
        return os.path.exists(location)
    fs, key = object_path(location)
    return fs.exists(key)


class FlowprepBackend(fileio.BaseStorageBackend):
    """Reads the files of flowprep outputs, folders and zip packs alike (see the module's docstring).

    The last `max_open` videos read stay open, per process (reader_cache.ReaderCache, as in the datasets).
    mmengine keeps one backend object per set of arguments for the life of a process, so a forked DataLoader
    worker starts with its parent's object: it drops the readers it inherited and opens its own (they share the
    parent's open files, and on object stores would share its connections).
    """

    def __init__(self, max_open: int = OPEN_READERS):
        if isinstance(max_open, bool) or not isinstance(max_open, int) or max_open < 1:
            raise ConfigError(f"{BACKEND_NAME} backend: max_open must be a positive integer, got {max_open!r}")
        self._readers: ReaderCache[str] = ReaderCache(open_video, max_open)

    def get(self, filepath: str | os.PathLike) -> bytes:
        """The bytes of ``.../<video>/<name>``; FileNotFoundError naming `filepath` when it is not there,
        OutputError naming it when it is there but unreadable (a zip member failing its CRC-32)."""
        location, name = os.path.split(os.fspath(filepath))
        reader = self._reader(location, filepath)
        try:
            return reader.read(name)
        except OutputError:
            if reader.has(name):
                raise
            raise FileNotFoundError(errno.ENOENT, f"no such file in {reader.path}", os.fspath(filepath)) from None

    def get_text(self, filepath: str | os.PathLike, encoding: str = "utf-8") -> str:
        return self.get(filepath).decode(encoding)

    def isfile(self, filepath: str | os.PathLike) -> bool:
        """Whether ``.../<video>/<name>`` is a file of the folder or a member of the pack."""
        location, name = os.path.split(os.fspath(filepath))
        try:
            return self._reader(location, filepath).has(name)
        except FileNotFoundError:
            return False

    def exists(self, filepath: str | os.PathLike) -> bool:
        """Whether `filepath` is a file (see isfile) or a video: a folder or, without ``.zip``, a pack."""
        if self.isfile(filepath):
            return True
        try:
            self._reader(os.fspath(filepath), filepath)
        except FileNotFoundError:
            return False
        return True

    def _reader(self, location: str, filepath: str | os.PathLike) -> OutputReader:
        try:
            return self._readers.get(location)
        except FileNotFoundError as exc:
            raise FileNotFoundError(errno.ENOENT, f"no video output at {location} ({exc.strerror})",
                                    os.fspath(filepath)) from None


# force: a reload of this module replaces its own earlier class instead of failing as a duplicate name.
fileio.register_backend(BACKEND_NAME, FlowprepBackend, force=True)
fileio.FileClient.register_backend(BACKEND_NAME, FlowprepBackend, force=True)
