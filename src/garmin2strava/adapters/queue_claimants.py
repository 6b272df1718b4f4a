"""Who holds a claim in the SQLite webhook queue: a lock file per queue instance.

`SqliteEventQueue` records the claimant's name with every claim; another instance
that can lock that file knows the claimant died and takes its claims at once,
instead of waiting out the lease (docs/architecture.md, "The webhook queue on SQLite").
"""

from __future__ import annotations

import logging
import os
import socket
import uuid
from pathlib import Path

try:
    import fcntl
except ImportError:  # pragma: no cover (not POSIX: claims are left to their lease)
    _CAN_LOCK = False
else:
    _CAN_LOCK = True

__all__ = ["Claimant"]

log = logging.getLogger("garmin2strava.adapters.queue_sqlite")  # the queue's log lines


class Claimant:
    """This instance's claimant identity: a lock file it holds while it may claim.

    The kernel drops an flock when its holder dies, whatever killed it, so a lock file
    that can be locked belongs to a dead claimant; a PID could have been reused, or sit
    in another container's PID namespace, and proves nothing. The lock is per open file,
    so two instances in one process tell each other apart. `""` when no lock can be
    held (no fcntl, the directory not writable): the claims are left to their lease.
    """

    def __init__(self, directory: Path) -> None:
        self._directory = directory
        self._name = ""
        self._fd: int | None = None

    def acquire(self) -> str:
        """The claimant name to record with a claim, locking its file the first time."""
        if self._fd is None and _CAN_LOCK:
            name = uuid.uuid4().hex
            staged = self._directory / f".{name}"
            fd = -1
            try:
                self._directory.mkdir(exist_ok=True)
                fd = os.open(staged, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                os.write(fd, f"{socket.gethostname()} pid {os.getpid()}\n".encode())
                # Named only once locked: a sweep never sees it unlocked.
                staged.replace(self._directory / name)
            except OSError as exc:
                log.warning("queue.claimant_lock_unavailable", extra={"error": str(exc)})
                if fd >= 0:
                    os.close(fd)
                    staged.unlink(missing_ok=True)
                self._name, self._fd = "", -1  # tried once: claims fall back to the lease
            else:
                self._name, self._fd = name, fd
        return self._name

    def release(self) -> None:
        """Drop the lock (the file stays for whoever takes over our claims)."""
        if self._fd is not None and self._fd >= 0:
            os.close(self._fd)
        self._fd = -1
        self._name = ""

    def take_if_dead(self, name: str) -> bool:
        """Whether `name`'s holder is dead; if so its lock file is removed. A missing
        file (another host's claimant, or already taken over) proves nothing."""
        if not _CAN_LOCK or not name or name.startswith(".") or "/" in name:
            return False
        try:
            fd = os.open(self._directory / name, os.O_RDWR)
        except OSError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return False  # held: the claimant lives
        else:
            (self._directory / name).unlink(missing_ok=True)
            return True
        finally:
            os.close(fd)

    def sweep(self, *, keep: set[str]) -> None:
        """Remove the lock files of dead claimants whose claims no row holds."""
        try:
            names = [p.name for p in self._directory.iterdir()]
        except OSError:
            return
        for name in names:
            if name != self._name and name not in keep:
                self.take_if_dead(name)
