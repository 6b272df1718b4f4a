"""Whether this process could write the store and the temporary directory, and
whether their disks have room left.

Kept in memory, not in the store: when the disk is full the store is what cannot be
written. Three places, each noted and cleared by its own code, so that one's success
does not hide another's trouble:
- "store": a cycle that could not write the store (services/sync_accounts.py); the
  next recorded cycle clears it.
- "temp": the temporary directory a run's file is extracted into (services/sync.py);
  the next directory made there clears it.
- "space": the free-space look (`look_at_space`, run by services/conditions.py each
  time the conditions are observed after a cycle): a disk this process writes with
  less than `SPACE_FLOOR` free, or one it cannot look at; the next look that finds
  room on every disk clears it. A write rarely fails first: SQLite goes on writing
  into its reused pages on a full disk, and the temporary directory is used only
  when a run is downloaded, so without this look a full disk is told when a run is
  lost to it, or never (found by bench/soak.py's full disk).
services/conditions.py reads all three for `store.unwritable`. One per process
(`WRITE_TROUBLE`): a cycle on any thread sees what the others met.
"""

from __future__ import annotations

import errno
import shutil
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Literal

__all__ = [
    "SPACE_FLOOR",
    "WRITE_TROUBLE",
    "Disk",
    "Place",
    "Trouble",
    "WriteTrouble",
    "free_bytes",
    "is_disk_trouble",
    "look_at_space",
    "short_of_space",
]

Place = Literal["store", "temp", "space"]

MiB = 1024 * 1024
# What one run may need on the disk at once: its ORIGINAL is refused above 64 MiB,
# extracted or not (adapters/garmin.py MAX_ORIGINAL_BYTES, adapters/fitfile.py
# extract_original's max_total_bytes; tests/unit/test_write_trouble.py keeps them in
# step). A run's file is usually under 1 MiB and the store grew to 16 MB in the soak's
# 30 simulated days (docs/benchmarks.md), so below this floor the disk is nearly full
# for any use, while one large run could already be lost to it.
SPACE_FLOOR = 64 * MiB
_NEEDED = "a run's file and the store's growth need"

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
        self.short(place, detail[:200], now)
        return True

    def short(self, place: Place, detail: str, now: datetime) -> None:
        """Note a trouble at `place` (`detail` as is), keeping when it began."""
        with self._lock:
            before = self._current.get(place)
            self._current[place] = Trouble(before.since if before else now, detail)

    def succeeded(self, place: Place) -> None:
        if place in self._current:  # read without the lock: the common case costs nothing
            with self._lock:
                self._current.pop(place, None)

    def current(self) -> dict[Place, Trouble]:
        with self._lock:
            return dict(self._current)


WRITE_TROUBLE = WriteTrouble()


@dataclass(frozen=True, slots=True)
class Disk:
    """A directory this process writes, and what it is to the owner."""

    role: str  # "the store", "the temporary directory"
    directory: Path


def free_bytes(directory: Path) -> int:
    """The bytes an unprivileged process may still write there (a statvfs, no I/O)."""
    return shutil.disk_usage(directory).free


def short_of_space(
    disks: Sequence[Disk],
    *,
    free: Callable[[Path], int] = free_bytes,
    floor: int = SPACE_FLOOR,
) -> str | None:
    """What is short, in words, or None when every disk has `floor` bytes or more.

    A directory that cannot be looked at (gone, or not searchable: an OSError) is a
    trouble too: what cannot be looked at cannot be written either."""
    low: list[str] = []
    unseen: list[str] = []
    for disk in disks:
        where = f"the disk of {disk.role} ({disk.directory})"
        try:
            left = free(disk.directory)
        except OSError as exc:
            unseen.append(f"{where} cannot be looked at ({exc.strerror or type(exc).__name__})")
            continue
        if left < floor:
            low.append(f"{where} has {left // MiB} MiB free")
    said = [f"{' and '.join(low)}, under the {floor // MiB} MiB {_NEEDED}"] if low else []
    return "; ".join(said + unseen) or None


def look_at_space(
    trouble: WriteTrouble,
    disks: Sequence[Disk],
    now: datetime,
    *,
    free: Callable[[Path], int] = free_bytes,
    floor: int = SPACE_FLOOR,
) -> None:
    """Note "space" when a disk of `disks` is short (`short_of_space`), clear it when
    none is. Only this look sets or clears "space"."""
    detail = short_of_space(disks, free=free, floor=floor)
    if detail is None:
        trouble.succeeded("space")
    else:
        trouble.short("space", detail, now)
