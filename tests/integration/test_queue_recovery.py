"""A claim whose claimant process is provably dead is taken over at once.

Each claimant holds an flock on its own file beside the queue; the kernel drops it when
the process dies, however it died. A real child process claims and is SIGKILLed; the
next claim takes its events without waiting out the lease and counts the lapse. Live
claimants (another process, or another instance in this one) and claimants that left no
lock file here keep their claims until the lease ends, as before.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from garmin2strava.adapters import queue_sqlite
from garmin2strava.adapters.queue_sqlite import SqliteEventQueue
from garmin2strava.domain.webhook import QueuedEvent, WebhookEvent

pytestmark = pytest.mark.integration

NOW = datetime(2025, 6, 1, 8, 0, tzinfo=UTC)
LEASE = 60.0
BEFORE_LEASE_END = NOW + timedelta(seconds=LEASE - 1)
AFTER_LEASE_END = NOW + timedelta(seconds=LEASE + 1)


def activity_event(n: int) -> WebhookEvent:
    return WebhookEvent(
        object_type="activity",
        object_id=1_000 + n,
        aspect_type="create",
        owner_id=134815,
        subscription_id=120475,
        event_time=1748764800 + n,
        updates={},
    )


def claim(queue: SqliteEventQueue, now: datetime) -> list[list[int]]:
    groups: list[list[QueuedEvent]] = queue.claim(now=now, visibility_seconds=LEASE)
    return [[q.event.object_id for q in group] for group in groups]


def row(db: Path, n: int) -> tuple[int, int]:
    """(claims, lapsed_claims) of event `n`, read from the file."""
    conn = sqlite3.connect(db)
    try:
        key = activity_event(n).dedupe_key
        found = conn.execute(
            "SELECT claims, lapsed_claims FROM webhook_queue WHERE dedupe_key = ?", (key,)
        ).fetchone()
    finally:
        conn.close()
    return int(found[0]), int(found[1])


def lock_files(db: Path) -> list[str]:
    return sorted(p.name for p in db.with_name(db.name + ".claimants").iterdir())


@contextmanager
def claiming_child(db: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A child process that claims at NOW (60 s lease), says how many groups it got
    and then holds them; killed on the way out if the test has not done it."""
    script = textwrap.dedent(
        f"""
        import time
        from datetime import datetime
        from garmin2strava.adapters.queue_sqlite import SqliteEventQueue
        q = SqliteEventQueue({str(db)!r})
        now = datetime.fromisoformat({NOW.isoformat()!r})
        groups = q.claim(now=now, visibility_seconds={LEASE})
        print(len(groups), flush=True)
        time.sleep(120)
        """
    )
    proc = subprocess.Popen(  # noqa: S603 (our own interpreter and script)
        [sys.executable, "-c", script], stdout=subprocess.PIPE, env=os.environ.copy()
    )
    try:
        assert proc.stdout is not None
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)
        assert proc.stdout is not None
        proc.stdout.close()


def groups_claimed_by(proc: subprocess.Popen[bytes]) -> int:
    assert proc.stdout is not None
    return int(proc.stdout.readline())


def sigkill(proc: subprocess.Popen[bytes]) -> None:
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait(timeout=10) == -signal.SIGKILL


def test_claims_of_a_sigkilled_process_are_taken_at_once(db: Path, queue: SqliteEventQueue) -> None:
    """Events claimed by a process SIGKILLed holding them are claimed again before the
    lease ends, counted once in `lapsed_claims`, and the dead claimant's file goes."""
    queue.enqueue(activity_event(1), now=NOW)
    with claiming_child(db) as child:
        assert groups_claimed_by(child) == 1
        sigkill(child)
    assert claim(queue, NOW) == [[1001]]
    assert row(db, 1) == (2, 1)
    assert len(lock_files(db)) == 1  # ours only


def test_claims_taken_from_dead_processes_count_towards_the_cap(db: Path) -> None:
    """A poison event that kills each process claiming it is made dead by the cap, with
    no lease waited out: a takeover is a lapse like an expired lease."""
    queue = SqliteEventQueue(db, max_unsettled_claims=2)
    try:
        queue.enqueue(activity_event(1), now=NOW)
        for _ in range(2):
            with claiming_child(db) as child:
                assert groups_claimed_by(child) == 1
                sigkill(child)
        assert claim(queue, NOW) == []
        (dead,) = queue.list_dead()
        assert dead.event == activity_event(1)
        assert "claimed 2 times without being settled" in dead.error
    finally:
        queue.close()


def test_a_live_process_keeps_its_claim_until_the_lease_ends(
    db: Path, queue: SqliteEventQueue
) -> None:
    """A claim held by a live other process is not taken before its lease ends, and is
    taken (as a lapsed claim) after it."""
    queue.enqueue(activity_event(1), now=NOW)
    with claiming_child(db) as child:
        assert groups_claimed_by(child) == 1
        assert claim(queue, BEFORE_LEASE_END) == []
        assert child.poll() is None
        assert claim(queue, AFTER_LEASE_END) == [[1001]]
    assert row(db, 1) == (2, 1)


def test_another_open_instance_in_this_process_keeps_its_claim(
    db: Path, queue: SqliteEventQueue
) -> None:
    """Two instances in one process tell each other apart (the lock is per open file,
    not per process): the other's claim waits out its lease."""
    queue.enqueue(activity_event(1), now=NOW)
    other = SqliteEventQueue(db)
    try:
        assert claim(other, NOW) == [[1001]]
        assert claim(queue, BEFORE_LEASE_END) == []
    finally:
        other.close()


def test_claims_of_a_closed_instance_are_taken_at_once(db: Path, queue: SqliteEventQueue) -> None:
    """An instance closed with claims in hand gives them up: nobody can settle them."""
    queue.enqueue(activity_event(1), now=NOW)
    other = SqliteEventQueue(db)
    assert claim(other, NOW) == [[1001]]
    other.close()
    assert claim(queue, NOW) == [[1001]]
    assert row(db, 1) == (2, 1)


def test_a_claim_recorded_for_a_claimant_unknown_here_is_left_alone(
    db: Path, queue: SqliteEventQueue
) -> None:
    """A claim whose claimant left no lock file here (one on another host) proves
    nothing: it waits out its lease as before."""
    queue.enqueue(activity_event(1), now=NOW)
    conn = sqlite3.connect(db)
    try:
        conn.execute(
            "UPDATE webhook_queue SET claim_token = 'elsewhere', claimed_by = ?,"
            " claims = 1, available_at = ?",
            ("0123456789abcdef0123456789abcdef", NOW.timestamp() + LEASE),
        )
        conn.commit()
    finally:
        conn.close()
    assert claim(queue, BEFORE_LEASE_END) == []
    assert claim(queue, AFTER_LEASE_END) == [[1001]]
    assert row(db, 1) == (2, 1)


def test_a_dead_claimants_lock_file_without_claims_is_swept(
    db: Path, queue: SqliteEventQueue
) -> None:
    """The lock file of a process that died holding nothing is removed by the next
    instance's first claim."""
    with claiming_child(db) as child:
        assert groups_claimed_by(child) == 0
        assert len(lock_files(db)) == 1
        sigkill(child)
    assert claim(queue, NOW) == []
    assert len(lock_files(db)) == 1  # ours only


def test_a_file_from_before_claimants_gains_the_column(db: Path) -> None:
    """A queue file without `claimed_by` is given it when opened (twice is harmless); a
    claim recorded before it, by nobody known, waits out its lease."""
    old_schema = "\n".join(
        line for line in queue_sqlite._SCHEMA.splitlines() if "claimed_by" not in line
    )
    event = activity_event(1)
    conn = sqlite3.connect(db)
    try:
        conn.executescript(old_schema)
        conn.execute(
            "INSERT INTO webhook_queue (dedupe_key, object_key, event_json, available_at,"
            " enqueued_at, claim_token, claims) VALUES (?, ?, ?, ?, ?, 'old', 1)",
            (event.dedupe_key, event.object_key, event.to_json(), NOW.timestamp() + LEASE, 0),
        )
        conn.commit()
    finally:
        conn.close()
    for _ in range(2):
        SqliteEventQueue(db).close()
    queue = SqliteEventQueue(db)
    try:
        assert claim(queue, BEFORE_LEASE_END) == []
        assert claim(queue, AFTER_LEASE_END) == [[1001]]
        assert row(db, 1) == (2, 1)
    finally:
        queue.close()
