"""The soak's machinery (bench/soak.py, tests/integration/test_soak.py through it):
the simulated clock, `garmin2strava` run as a user runs it (the daemon under a
supervisor, and one-shot commands), and what is read from its process and its store.

The clock: simulated time = start + (real time - real start) x speed + step. The
bench process (and the emulators inside it) read it through `time.time`, patched
here before the emulators are imported; every garmin2strava process gets the same
time through libfaketime (`FAKETIME="@<simulated now> x<speed>"`, so a restarted
daemon starts where the world is) and bench/soak_site/sitecustomize.py (its sleeps
and thread waits at the same speed; see that module for why both).
"""

from __future__ import annotations

import importlib.resources
import json
import os
import select
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

__all__ = [
    "Daemon",
    "ProcessSample",
    "SimClock",
    "StoreSample",
    "read_workouts",
    "run_command",
    "sample_store",
    "start_command",
]

_REAL_TIME = time.time
# bench/soak_site/sitecustomize.py: loaded by every garmin2strava process of the soak.
_SITE = Path(__file__).resolve().parents[2] / "bench" / "soak_site"
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def _libfaketime() -> Path:
    lib = importlib.resources.files("libfaketime") / "vendor/libfaketime/src/libfaketime.so.1"
    return Path(str(lib))


@dataclass
class SimClock:
    """One clock for the bench, the emulators and every garmin2strava process."""

    start: datetime
    speed: float
    step_s: float = 0.0
    _real_start: float = field(default_factory=_REAL_TIME)

    def now_ts(self) -> float:
        return self.start.timestamp() + (_REAL_TIME() - self._real_start) * self.speed + self.step_s

    def now(self) -> datetime:
        return datetime.fromtimestamp(self.now_ts(), UTC)

    def install(self) -> None:
        """The bench's `time.time` (what the emulators read) becomes simulated."""
        time.time = self.now_ts
        time.time_ns = lambda: int(self.now_ts() * 1e9)

    def real_sleep(self, simulated_s: float) -> None:
        if simulated_s > 0:
            select.select([], [], [], simulated_s / self.speed)

    def environment(self) -> dict[str, str]:
        """What puts a garmin2strava process on this clock from the moment it starts
        (libfaketime takes whole seconds: a restart lands within one simulated second)."""
        return {
            "LD_PRELOAD": str(_libfaketime()),
            "FAKETIME": f"@{self.now():%Y-%m-%d %H:%M:%S} x{self.speed:g}",
            "FAKETIME_DONT_FAKE_MONOTONIC": "1",
            "TZ": "UTC",
            "G2S_SOAK_SPEED": f"{self.speed:g}",
            "PYTHONPATH": str(_SITE),
        }


@dataclass(frozen=True, slots=True)
class ProcessSample:
    rss_kib: int
    descriptors: int
    threads: int
    uptime_sim_h: float


@dataclass(frozen=True, slots=True)
class StoreSample:
    file_bytes: int
    items: dict[str, int]
    queue: dict[str, int]


def _command(name: str) -> list[str]:
    """The console script a user runs (`garmin2strava`), beside this interpreter."""
    return [str(Path(sys.executable).with_name(name))]


class Daemon:
    """`garmin2strava run` under a supervisor: started, SIGKILLed, restarted."""

    def __init__(self, clock: SimClock, env: Mapping[str, str], log: Path, port: int) -> None:
        self._clock = clock
        self._env = dict(env)
        self._log = log
        self._port = port
        self.process: subprocess.Popen[bytes] | None = None
        self.started_at = 0.0
        self.cpu_s = 0.0  # the CPU seconds of processes that ended
        self.starts = 0
        self.start_seconds: list[float] = []  # real seconds from exec to listening
        self.unexpected_exits: list[int] = []

    def start(self) -> None:
        with self._log.open("ab") as sink:
            self.process = subprocess.Popen(  # noqa: S603 - our console script
                [*_command("garmin2strava"), "run"],
                env={**self._env, **self._clock.environment()},
                stdout=sink,
                stderr=sink,
                stdin=subprocess.DEVNULL,
            )
        self.started_at = self._clock.now_ts()
        self.starts += 1
        began = _REAL_TIME()
        self._wait_listening()
        self.start_seconds.append(_REAL_TIME() - began)

    def _wait_listening(self) -> None:
        deadline = _REAL_TIME() + 60
        while _REAL_TIME() < deadline:
            if self.process is None or self.process.poll() is not None:
                return  # the supervisor sees it and restarts it
            try:
                socket.create_connection(("127.0.0.1", self._port), timeout=1).close()
            except OSError:
                select.select([], [], [], 0.02)
                continue
            return

    def _note_cpu(self) -> None:
        if self.process is not None:
            self.cpu_s += self.cpu_seconds_now()

    def cpu_seconds_now(self) -> float:
        if self.process is None:
            return 0.0
        try:
            fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return 0.0
        return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS

    def kill(self) -> None:
        """SIGKILL, as a power cut or the OOM killer would; the supervisor restarts it."""
        if self.process is None:
            return
        self._note_cpu()
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=30)
        self.start()

    def supervise(self) -> None:
        """Restart a daemon that ended by itself (counted: it should not)."""
        if self.process is not None and self.process.poll() is not None:
            self.unexpected_exits.append(self.process.returncode)
            self.start()

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self._note_cpu()
        self.process.terminate()
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=30)

    def sample(self) -> ProcessSample | None:
        if self.process is None:
            return None
        proc = Path(f"/proc/{self.process.pid}")
        try:
            status = dict(line.split(":", 1) for line in (proc / "status").read_text().splitlines())
            descriptors = sum(1 for _ in (proc / "fd").iterdir())
        except OSError:
            return None
        return ProcessSample(
            rss_kib=int(status["VmRSS"].split()[0]),
            descriptors=descriptors,
            threads=int(status["Threads"]),
            uptime_sim_h=(self._clock.now_ts() - self.started_at) / 3600,
        )


def run_command(
    clock: SimClock, env: Mapping[str, str], *args: str, stdin: str = "", timeout_s: float = 120
) -> subprocess.CompletedProcess[str]:
    """One garmin2strava command, on the simulated clock."""
    return subprocess.run(  # noqa: S603 - our console script
        [*_command("garmin2strava"), *args],
        env={**env, **clock.environment()},
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )


def start_command(clock: SimClock, env: Mapping[str, str], *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(  # noqa: S603 - our console script
        [*_command("garmin2strava"), *args],
        env={**env, **clock.environment()},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def sample_store(db: Path) -> StoreSample:
    """Sizes and row counts, read-only: items by kind (the sort key's first part)."""
    size = sum(
        path.stat().st_size for path in (db, db.with_name(db.name + "-wal")) if path.exists()
    )
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
    try:
        items = {
            str(kind): int(n)
            for kind, n in conn.execute(
                "SELECT substr(sk, 1, instr(sk || '#', '#') - 1), COUNT(*) FROM items GROUP BY 1"
            )
        }
        queue = {
            str(state): int(n)
            for state, n in conn.execute("SELECT state, COUNT(*) FROM webhook_queue GROUP BY 1")
        }
    finally:
        conn.close()
    return StoreSample(size, items, queue)


def read_workouts(db: Path) -> dict[tuple[str, int], dict[str, object]]:
    """Every mirrored workout by (user id, Strava activity id)."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
    try:
        rows = conn.execute(
            "SELECT pk, body FROM items WHERE sk LIKE 'WORKOUT#STRAVA#%'"
        ).fetchall()
    finally:
        conn.close()
    workouts: dict[tuple[str, int], dict[str, object]] = {}
    for pk, body in rows:
        data = json.loads(body)
        workouts[str(pk).removeprefix("USER#"), int(data["activityId"])] = data
    return workouts
