"""The last few video outputs read, kept open per process: what the datasets and the mmaction2 backend read
through, so that a zip pack is opened once for the many frames read from it and never shared across a fork.

Needs neither torch nor mmengine (the mmaction2 backend imports it without torch).
"""
from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any, Generic, TypeVar

from .store import OutputReader

OPEN_READERS = 32  # default count of outputs (zip packs) kept open per process

Key = TypeVar("Key", bound=Hashable)


class ReaderCache(Generic[Key]):
    """`opener(key)`'s readers of the last `max_open` keys read in this process, least recently read closed first.

    A process other than the one that opened them (a forked DataLoader worker) drops the readers it inherited
    without closing them and opens its own: an inherited zip file shares its file offset with the parent's. A
    pickled cache (a spawned worker's copy) carries no readers. `max_open` >= 1 (its callers check what users
    give).
    """

    def __init__(self, opener: Callable[[Key], OutputReader], max_open: int = OPEN_READERS):
        self.opener = opener
        self.max_open = max_open
        self._readers: OrderedDict[Key, OutputReader] = OrderedDict()
        self._pid: int | None = os.getpid()

    def enter_process(self) -> bool:
        """Drop the readers another process opened; True on the first call in a process the cache was not
        filled in (forked or unpickled), False after that and in the process that made it."""
        if self._pid == os.getpid():
            return False
        self._readers, self._pid = OrderedDict(), os.getpid()
        return True

    def get(self, key: Key) -> OutputReader:
        """The reader of `key`, opened by `opener` unless it is among the last `max_open` read here; what
        `opener` raises passes through."""
        self.enter_process()
        reader = self._readers.pop(key, None)
        if reader is None:
            reader = self.opener(key)
            if len(self._readers) >= self.max_open:
                self._readers.popitem(last=False)[1].close()
        self._readers[key] = reader
        return reader

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_readers": OrderedDict(), "_pid": None}
