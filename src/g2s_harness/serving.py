"""`garmin2strava serve` as a real process against the sandboxes, and Strava's side of
the webhook: what the load and crash benches and the SIGKILL test share.

The server is started with `python -m garmin2strava.entrypoints.cli serve`, its
settings in the environment only (nothing of the caller's G2S_/STRAVA_/GARMIN_
settings leaks in), and is ready once its port accepts a connection: uvicorn listens
only after the app's warm-up.
"""

from __future__ import annotations

import http.client
import json
import os
import secrets
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from garmin2strava.adapters.crypto import generate_token_key

if TYPE_CHECKING:
    from g2s_sandbox.scenario import SandboxPair

__all__ = [
    "ServeConfig",
    "ServeFailedError",
    "event_body",
    "free_port",
    "post_event",
    "queue_counts",
    "queue_scalar",
    "seed_created_activities",
    "start_serve",
    "stop_serve",
]

WEBHOOK_PATH_PREFIX = "/webhooks/strava/"


class ServeFailedError(RuntimeError):
    """`serve` exited or never listened; the message ends with its log's tail."""


@dataclass(frozen=True, slots=True)
class ServeConfig:
    """Where one `serve` process keeps its data and listens."""

    db: Path
    token_key: str
    port: int
    user_id: str
    subscription_id: int
    verify_token: str
    webhook_secret: str  # G2S_WEBHOOK_SECRET: the callback path's secret

    @property
    def webhook_path(self) -> str:
        return WEBHOOK_PATH_PREFIX + self.webhook_secret

    @classmethod
    def fresh(
        cls, directory: Path, *, user_id: str, subscription_id: int, verify_token: str
    ) -> ServeConfig:
        """A new database in `directory`, a new token key and a free port."""
        return cls(
            db=directory / "g2s.sqlite3",
            token_key=generate_token_key(),
            port=free_port(),
            user_id=user_id,
            subscription_id=subscription_id,
            verify_token=verify_token,
            webhook_secret=secrets.token_urlsafe(24),
        )

    def env(self, pair: SandboxPair) -> dict[str, str]:
        """The caller's environment minus our settings, plus the server's."""
        env = {
            name: value
            for name, value in os.environ.items()
            if not name.startswith(("G2S_", "STRAVA_", "GARMIN_"))
        }
        env |= pair.environment(
            user_id=self.user_id,
            db_path=self.db,
            G2S_TOKEN_KEY=self.token_key,  # the caller reads the store with this key
            STRAVA_VERIFY_TOKEN=self.verify_token,
            STRAVA_SUBSCRIPTION_ID=str(self.subscription_id),
            G2S_WEBHOOK_SECRET=self.webhook_secret,
            G2S_HTTP_HOST="127.0.0.1",
            G2S_HTTP_PORT=str(self.port),
            G2S_ADMIN_PORT=str(free_port()),
        )
        return env


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def image_healthcheck(
    port: int, *, timeout_s: float = 5.0
) -> tuple[subprocess.CompletedProcess[str], float]:
    """The Dockerfile's HEALTHCHECK command, run as Docker runs it (this interpreter for
    its `python`) with G2S_ADMIN_PORT=`port`: its result, and the seconds it took."""
    repo = Path(__file__).resolve().parents[2]
    dockerfile = (repo / "Dockerfile").read_text(encoding="utf-8").replace("\\\n", " ")
    healthcheck = next(line for line in dockerfile.splitlines() if line.startswith("HEALTHCHECK"))
    argv = json.loads(healthcheck.split(" CMD ", 1)[1])
    if argv[0] != "python":
        msg = f"the HEALTHCHECK runs {argv[0]!r}, not python"
        raise AssertionError(msg)
    started = time.monotonic()
    done = subprocess.run(  # noqa: S603 (the Dockerfile's own command, our interpreter)
        [sys.executable, *argv[1:]],
        env={**os.environ, "G2S_ADMIN_PORT": str(port)},
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )
    return done, time.monotonic() - started


def start_serve(
    env: Mapping[str, str], log: Path, *, wait_s: float = 30.0, command: str = "serve"
) -> subprocess.Popen[bytes]:
    """Start `serve` (or `run`: the same plus the sync scheduler), its output appended
    to `log`; return once its port accepts."""
    with log.open("ab") as sink:
        proc = subprocess.Popen(  # noqa: S603 (our interpreter and module; command is serve or run)
            [sys.executable, "-m", "garmin2strava.entrypoints.cli", command],
            env=dict(env),
            stdout=sink,
            stderr=sink,
        )
    port = int(env["G2S_HTTP_PORT"])
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise ServeFailedError(f"serve exited with {proc.returncode}: {_tail(log)}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
        except OSError:
            time.sleep(0.05)
            continue
        return proc
    proc.kill()
    proc.wait(timeout=10)
    raise ServeFailedError(f"serve did not listen on {port} within {wait_s:.0f} s: {_tail(log)}")


def stop_serve(proc: subprocess.Popen[bytes] | None, *, wait_s: float = 30.0) -> None:
    """SIGTERM (the graceful stop) when still running; SIGKILL after `wait_s`."""
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=wait_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


_local = threading.local()


def post_event(
    port: int, body: bytes, *, path: str, timeout: float = 5.0
) -> tuple[int | None, float]:
    """POST one event to `path` (ServeConfig.webhook_path) as Strava does: (status, or
    None when no answer came; ms).

    One keep-alive connection per calling thread; a failed one is dropped, so the
    next call (after a restart, say) connects afresh."""
    started = time.perf_counter()
    conn: http.client.HTTPConnection | None = getattr(_local, "conn", None)
    if conn is None or conn.port != port:
        conn = _local.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("POST", path, body, {"Content-Type": "application/json"})
        answer = conn.getresponse()
        answer.read()
    except (OSError, http.client.HTTPException):
        conn.close()
        _local.conn = None
        return None, (time.perf_counter() - started) * 1000
    return answer.status, (time.perf_counter() - started) * 1000


def event_body(
    activity_id: int,
    owner_id: int,
    subscription_id: int,
    *,
    event_time: int,
    aspect_type: str = "create",
    updates: Mapping[str, Any] | None = None,
) -> bytes:
    """An activity event with Strava's field layout."""
    return json.dumps(
        {
            "aspect_type": aspect_type,
            "event_time": event_time,
            "object_id": activity_id,
            "object_type": "activity",
            "owner_id": owner_id,
            "subscription_id": subscription_id,
            "updates": dict(updates or {}),
        }
    ).encode()


def seed_created_activities(
    pair: SandboxPair, n: int, subscription_id: int, *, spacing_s: int = 600
) -> dict[int, bytes]:
    """`n` activities on the Strava sandbox, with distinct starts before today, and a
    create event for each (by activity id); the sandboxes' request counts reset."""
    now = int(time.time())
    bodies: dict[int, bytes] = {}
    for i in range(n):
        start = datetime.fromtimestamp(now - 86_400 - i * spacing_s, UTC)
        activity_id = pair.strava.add_activity(
            pair.athlete_id, start_utc=start, elapsed_s=1800, name=f"Run {i}"
        )
        bodies[activity_id] = event_body(
            activity_id, pair.athlete_id, subscription_id, event_time=now
        )
    pair.reset_counts()
    return bodies


def queue_counts(db: Path) -> dict[str, int]:
    """The webhook queue's rows by state, read-only."""
    rows = _read(db, "SELECT state, COUNT(*) FROM webhook_queue GROUP BY state")
    return {str(state): int(str(n)) for state, n in rows}


def queue_scalar(db: Path, sql: str) -> int:
    """One integer from the queue's file, read-only (e.g. rows claimed more than once)."""
    return int(str(_read(db, sql)[0][0]))


def _read(db: Path, sql: str) -> list[tuple[object, ...]]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    try:
        return list(conn.execute(sql).fetchall())
    finally:
        conn.close()


def _tail(log: Path, size: int = 2000) -> str:
    text = log.read_text(errors="replace") if log.exists() else ""
    return text[-size:]
