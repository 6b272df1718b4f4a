"""`garmin2strava serve` SIGKILLed under webhook load, then restarted: no event lost."""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from garmin2strava.adapters.crypto import AesGcmCipher, generate_token_key, parse_token_key
from garmin2strava.adapters.store.sqlite import SqliteStore
from garmin2strava.sandbox.scenario import SandboxPair, running_sandboxes

pytestmark = pytest.mark.integration

USER = "runner"
SUB = 7001
VERIFY = "crash-verify"
EVENTS = 300
RATE = 100.0  # POSTs per second
KILL_AFTER = 80  # events answered 200 before the SIGKILL
START_WAIT_S = 30.0
# A worker killed while holding a claim leaves its events leased for the worker's
# visibility timeout (60 s) before the restarted worker may take them again.
DRAIN_WAIT_S = 100.0


@pytest.fixture
def pair() -> Iterator[SandboxPair]:
    with running_sandboxes() as sandboxes:
        # Far above what the test spends: the read budget must never defer an event.
        sandboxes.strava.set_limits(
            short_read=100_000, daily_read=1_000_000, short_all=100_000, daily_all=1_000_000
        )
        yield sandboxes


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def serve_env(pair: SandboxPair, db: Path, token_key: str, port: int) -> dict[str, str]:
    """The parent's environment without any garmin2strava setting, plus ours."""
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("G2S_", "STRAVA_", "GARMIN_"))
    }
    env.update(
        {
            "STRAVA_CLIENT_ID": str(pair.strava.client_id),
            "STRAVA_CLIENT_SECRET": pair.strava.client_secret,
            "STRAVA_REFRESH_TOKEN": pair.strava_refresh_token,
            "STRAVA_VERIFY_TOKEN": VERIFY,
            "STRAVA_SUBSCRIPTION_ID": str(SUB),
            "GARMIN_TOKENS": pair.garmin_tokens,
            "G2S_USER_ID": USER,
            "G2S_DB_PATH": str(db),
            "G2S_TOKEN_KEY": token_key,
            "G2S_STRAVA_BASE_URL": pair.strava.base_url,
            "G2S_GARMIN_BASE_URL": pair.garmin.base_url,
            "G2S_HTTP_HOST": "127.0.0.1",
            "G2S_HTTP_PORT": str(port),
            "G2S_LOG_LEVEL": "WARNING",
        }
    )
    return env


def start_server(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """`serve` as a real process; returns once its HTTP port answers."""
    with log.open("ab") as sink:
        proc = subprocess.Popen(
            [sys.executable, "-m", "garmin2strava.entrypoints.cli", "serve"],
            env=env,
            stdout=sink,
            stderr=sink,
        )
    deadline = time.monotonic() + START_WAIT_S
    while time.monotonic() < deadline:
        assert proc.poll() is None, log.read_text(errors="replace")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", int(env["G2S_HTTP_PORT"]), timeout=2)
            conn.request("GET", "/healthz")
            conn.getresponse().read()
            conn.close()
        except OSError:
            time.sleep(0.05)
            continue
        return proc
    proc.kill()
    pytest.fail("serve did not answer on its port in time")


def post(port: int, body: bytes) -> int | None:
    """The status of one POST, or None when no answer came (refused, reset)."""
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        try:
            conn.request("POST", "/webhooks/strava", body, {"Content-Type": "application/json"})
            answer = conn.getresponse()
            answer.read()
            return answer.status
        finally:
            conn.close()
    except (OSError, http.client.HTTPException):
        return None


def pair_start(now: int, i: int) -> datetime:
    """A distinct start, an hour apart, before today."""
    return datetime.fromtimestamp(now - 86_400 - i * 3600, UTC)


def event(activity_id: int, athlete_id: int, at: int) -> bytes:
    return json.dumps(
        {
            "aspect_type": "create",
            "event_time": at,
            "object_id": activity_id,
            "object_type": "activity",
            "owner_id": athlete_id,
            "subscription_id": SUB,
            "updates": {},
        }
    ).encode()


class Poster(threading.Thread):
    """Posts every body once, paced at RATE; records which ids were answered 200."""

    def __init__(self, port: int, bodies: dict[int, bytes]) -> None:
        super().__init__(name="poster", daemon=True)
        self.port = port
        self.bodies = bodies
        self.ok: set[int] = set()
        self.unanswered: list[int] = []
        self.other: list[int] = []
        self.lock = threading.Lock()

    def run(self) -> None:
        started = time.perf_counter()
        for i, (activity_id, body) in enumerate(self.bodies.items()):
            delay = started + i / RATE - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            status = post(self.port, body)
            with self.lock:
                if status == 200:
                    self.ok.add(activity_id)
                elif status is None:
                    self.unanswered.append(activity_id)
                else:
                    self.other.append(activity_id)

    def answered(self) -> int:
        with self.lock:
            return len(self.ok)


def queue_counts(db: Path) -> dict[str, int]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    try:
        rows = conn.execute("SELECT state, COUNT(*) FROM webhook_queue GROUP BY state").fetchall()
    finally:
        conn.close()
    return {str(state): int(n) for state, n in rows}


def seed_events(pair: SandboxPair) -> dict[int, bytes]:
    """EVENTS activities on the Strava sandbox and one create event body for each."""
    now = int(time.time())
    bodies: dict[int, bytes] = {}
    for i in range(EVENTS):
        activity_id = pair.strava.add_activity(
            pair.athlete_id, start_utc=pair_start(now, i), elapsed_s=1800, name=f"Run {i}"
        )
        bodies[activity_id] = event(activity_id, pair.athlete_id, now)
    pair.reset_counts()
    return bodies


def wait_settled(db: Path) -> dict[str, int]:
    """The queue's row counts by state once every row is done or dead (bounded)."""
    deadline = time.monotonic() + DRAIN_WAIT_S
    counts = queue_counts(db)
    while counts.get("done", 0) + counts.get("dead", 0) < EVENTS:
        assert time.monotonic() < deadline, counts
        time.sleep(0.2)
        counts = queue_counts(db)
    return counts


def reclaimed(db: Path) -> int:
    """Rows handed to a worker more than once (the batch in hand at the SIGKILL)."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        row = conn.execute("SELECT COUNT(*) FROM webhook_queue WHERE claims > 1").fetchone()
    finally:
        conn.close()
    return int(row[0])


def test_events_answered_200_survive_sigkill_and_are_mirrored_once(
    pair: SandboxPair, tmp_path: Path
) -> None:
    """SIGKILL of `serve` mid-load, restart, redelivery of the unanswered: every event
    answered 200 is mirrored, each queue row settled once, no event dead."""
    db = tmp_path / "g2s.sqlite3"
    token_key = generate_token_key()
    port = free_port()
    env = serve_env(pair, db, token_key, port)
    log = tmp_path / "serve.log"
    bodies = seed_events(pair)

    first = start_server(env, log)
    second: subprocess.Popen[bytes] | None = None
    poster = Poster(port, bodies)
    try:
        poster.start()
        deadline = time.monotonic() + START_WAIT_S
        while poster.answered() < KILL_AFTER and time.monotonic() < deadline:
            time.sleep(0.01)
        assert poster.answered() >= KILL_AFTER
        os.kill(first.pid, signal.SIGKILL)
        assert first.wait(timeout=10) == -signal.SIGKILL
        answered_before_kill = poster.answered()
        second = start_server(env, log)
        poster.join(timeout=START_WAIT_S + EVENTS / RATE)
        assert not poster.is_alive()
        assert answered_before_kill < EVENTS  # the kill came in the middle of the load
        assert not poster.other, poster.other
        # Strava redelivers what got no answer; the restarted server takes it.
        for activity_id in list(poster.unanswered):
            assert post(port, bodies[activity_id]) == 200
            poster.ok.add(activity_id)
        assert poster.ok == set(bodies)
        counts = wait_settled(db)
    finally:
        for proc in (first, second):
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                proc.wait(timeout=30)

    assert counts == {"done": EVENTS}, log.read_text(errors="replace")[-2000:]
    with SqliteStore(db, AesGcmCipher(parse_token_key(token_key))) as store:
        missing = [a for a in sorted(poster.ok) if store.get_workout(USER, a) is None]
    assert missing == []
    with pair.strava.lock:
        fetches = pair.strava.requests["activity"]
    # One fetch per activity, plus one more for each event the killed worker had
    # fetched but not yet settled: the restarted worker claims and fetches it again.
    assert EVENTS <= fetches <= EVENTS + reclaimed(db)
