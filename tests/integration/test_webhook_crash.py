"""`garmin2strava serve` SIGKILLed under webhook load, then restarted: no event lost."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from g2s_harness.serving import (
    ServeConfig,
    post_event,
    queue_counts,
    queue_scalar,
    seed_created_activities,
    start_serve,
    stop_serve,
)
from g2s_sandbox.scenario import SandboxPair, running_sandboxes
from garmin2strava.adapters.crypto import AesGcmCipher, parse_token_key
from garmin2strava.adapters.store.sqlite import SqliteStore

pytestmark = [pytest.mark.integration, pytest.mark.slow]

USER = "runner"
SUB = 7001
VERIFY = "crash-verify"
EVENTS = 300
RATE = 100.0  # POSTs per second
KILL_AFTER = 80  # events answered 200 before the SIGKILL
START_WAIT_S = 30.0
# The restarted worker takes the killed worker's claims at once (the dead claimant's
# lock file is free) instead of waiting out their 60 s lease, so the queue settles
# within seconds; staying under the lease, this bound fails if that wait comes back.
DRAIN_WAIT_S = 30.0


@pytest.fixture
def pair() -> Iterator[SandboxPair]:
    with running_sandboxes() as sandboxes:
        # Far above what the test spends: the read budget must never defer an event.
        sandboxes.strava.set_limits(
            short_read=100_000, daily_read=1_000_000, short_all=100_000, daily_all=1_000_000
        )
        yield sandboxes


def post(port: int, path: str, body: bytes) -> int | None:
    return post_event(port, body, path=path)[0]


class Poster(threading.Thread):
    """Posts every body once, paced at RATE; records which ids were answered 200."""

    def __init__(self, port: int, path: str, bodies: dict[int, bytes]) -> None:
        super().__init__(name="poster", daemon=True)
        self.port = port
        self.path = path
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
            status = post(self.port, self.path, body)
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
    return queue_scalar(db, "SELECT COUNT(*) FROM webhook_queue WHERE claims > 1")


def test_events_answered_200_survive_sigkill_and_are_mirrored_once(
    pair: SandboxPair, tmp_path: Path
) -> None:
    """SIGKILL of `serve` mid-load, restart, redelivery of the unanswered: every event
    answered 200 is mirrored, each queue row settled once, no event dead."""
    config = ServeConfig.fresh(tmp_path, user_id=USER, subscription_id=SUB, verify_token=VERIFY)
    db, token_key, port = config.db, config.token_key, config.port
    env = config.env(pair)
    log = tmp_path / "serve.log"
    bodies = seed_created_activities(pair, EVENTS, SUB, spacing_s=3600)

    first = start_serve(env, log, wait_s=START_WAIT_S)
    second: subprocess.Popen[bytes] | None = None
    poster = Poster(port, config.webhook_path, bodies)
    try:
        poster.start()
        deadline = time.monotonic() + START_WAIT_S
        while poster.answered() < KILL_AFTER and time.monotonic() < deadline:
            time.sleep(0.01)
        assert poster.answered() >= KILL_AFTER
        os.kill(first.pid, signal.SIGKILL)
        assert first.wait(timeout=10) == -signal.SIGKILL
        answered_before_kill = poster.answered()
        second = start_serve(env, log, wait_s=START_WAIT_S)
        poster.join(timeout=START_WAIT_S + EVENTS / RATE)
        assert not poster.is_alive()
        assert answered_before_kill < EVENTS  # the kill came in the middle of the load
        assert not poster.other, poster.other
        # Strava redelivers what got no answer; the restarted server takes it.
        for activity_id in list(poster.unanswered):
            assert post(port, config.webhook_path, bodies[activity_id]) == 200
            poster.ok.add(activity_id)
        assert poster.ok == set(bodies)
        counts = wait_settled(db)
    finally:
        for proc in (first, second):
            stop_serve(proc)

    assert counts == {"done": EVENTS}, log.read_text(errors="replace")[-2000:]
    with SqliteStore(db, AesGcmCipher(parse_token_key(token_key))) as store:
        missing = [a for a in sorted(poster.ok) if store.get_workout(USER, a) is None]
    assert missing == []
    with pair.strava.lock:
        fetches = pair.strava.requests["activity"]
    # One fetch per activity, plus one more for each event the killed worker had
    # fetched but not yet settled: the restarted worker claims and fetches it again.
    assert EVENTS <= fetches <= EVENTS + reclaimed(db)
