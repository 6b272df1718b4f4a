"""Whether this process could write the store and the temporary directory.

Kept in memory, not in the store: when the disk is full the store is what cannot be
written. The code that meets the failure notes it (services/sync.py for the
temporary directory, services/sync_accounts.py for a cycle that could not write the
store), and the next write that works there clears it; services/conditions.py reads
it for `store.unwritable`. One per process (`WRITE_TROUBLE`): a cycle on any thread
sees what the others met.
"""

from __future__ import annotations

import errno
import threading
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

__all__ = ["WRITE_TROUBLE", "Place", "Trouble", "WriteTrouble", "is_disk_trouble"]

Place = Literal["store", "temp"]

# What a full, read-only or forbidden disk raises (a quota counts as full).
_DISK_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES})
# SQLite says the same in words (sqlite3.OperationalError is no OSError).
_SQLITE_WORDS = ("database or disk is full", "readonly database", "disk i/o error")


def is_disk_trouble(error: BaseException) -> bool:
    """True when `error` says the disk cannot be written, not that the data is wrong."""
    if isinstance(error, OSError) and error.errno in _DISK_ERRNOS:
        return True
    text = str(error).lower()
    return any(words in text for words in _SQLITE_WORDS)


@dataclass(frozen=True, slots=True)
class Trouble:
    since: datetime
    detail: str  # the error's words, no path of the user's data beyond the directory


class WriteTrouble:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._current: dict[Place, Trouble] = {}

    def failed(self, place: Place, error: BaseException, now: datetime) -> bool:
        """Note `error` met writing `place` if it is the disk's; True when it was."""
        if not is_disk_trouble(error):
            return False
        detail = f"{type(error).__name__}: {getattr(error, 'strerror', None) or error}"
        with self._lock:
            before = self._current.get(place)
            self._current[place] = Trouble(before.since if before else now, detail[:200])
        return True

    def succeeded(self, place: Place) -> None:
        if place in self._current:  # read without the lock: the common case costs nothing
            with self._lock:
                self._current.pop(place, None)

    def current(self) -> dict[Place, Trouble]:
        with self._lock:
            return dict(self._current)


WRITE_TROUBLE = WriteTrouble()
