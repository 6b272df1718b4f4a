"""The SQLite queue's group commit and the HTTP app's warm-up, on real SQLite files.

A backlog of enqueues built up behind another connection's write lock is committed in
fewer transactions than enqueues, each caller still answered only once its row is
durable; a failed commit fails every caller of its batch and keeps none of its rows.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from garmin2strava.adapters.queue_sqlite import SqliteEventQueue
from garmin2strava.domain.webhook import WebhookEvent, callback_path, derive_path_secret
from garmin2strava.entrypoints.http_app import create_app
from garmin2strava.errors import TransientError
from garmin2strava.services.mirror_intake import WebhookReceiver
from garmin2strava.services.observability import HealthReport, MirrorStats

NOW = datetime(2025, 6, 1, 8, 0, tzinfo=UTC)
SUB = 120475


def activity_event(n: int) -> WebhookEvent:
    return WebhookEvent(
        object_type="activity",
        object_id=1_000 + n,
        aspect_type="create",
        owner_id=134815,
        subscription_id=SUB,
        event_time=1748764800,
        updates={},
    )


def hold_write_lock(
    db: Path,
    seconds: float,
    held: threading.Event,
    until: Callable[[], bool] = lambda: False,
) -> None:
    """Another process's writer, as the store's connection would be: BEGIN IMMEDIATE,
    then nothing for `seconds`, or less once `until()` is true."""
    other = sqlite3.connect(db, isolation_level=None, timeout=10)
    try:
        other.execute("BEGIN IMMEDIATE")
        held.set()
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and not until():
            time.sleep(0.01)
        other.execute("COMMIT")
    finally:
        other.close()


def stored_object_ids(db: Path) -> list[int]:
    conn = sqlite3.connect(db)
    try:
        rows = conn.execute("SELECT event_json FROM webhook_queue ORDER BY id").fetchall()
    finally:
        conn.close()
    return sorted(WebhookEvent.from_json(row[0]).object_id for row in rows)


def test_backlog_behind_a_writer_is_committed_in_groups_once_each(
    db: Path, queue: SqliteEventQueue
) -> None:
    """48 events, each delivered twice, arrive while another connection writes: every
    event is stored once, exactly one of its two deliveries is reported new, and the
    96 enqueues took far fewer than 96 commits."""
    commits: list[str] = []
    # The queue's own connection: count the COMMITs it runs.
    queue._db.set_trace_callback(lambda sql: commits.append(sql) if sql == "COMMIT" else None)
    deliveries = [activity_event(n) for n in range(48)] * 2
    held = threading.Event()

    def backlog_built() -> bool:
        # All but the first caller (the one holding the connection, blocked on the
        # writer) wait for the next group commit; a slow machine gets up to 10 s.
        return len(queue._waiting) >= len(deliveries) - 8

    writer = threading.Thread(target=hold_write_lock, args=(db, 10.0, held, backlog_built))
    writer.start()
    assert held.wait(5)
    with ThreadPoolExecutor(max_workers=len(deliveries)) as pool:
        answers = list(pool.map(lambda e: (e.object_id, queue.enqueue(e, now=NOW)), deliveries))
    writer.join()

    assert stored_object_ids(db) == [1_000 + n for n in range(48)]
    new_per_event: dict[int, int] = {}
    for object_id, new in answers:
        new_per_event[object_id] = new_per_event.get(object_id, 0) + int(new)
    assert set(new_per_event.values()) == {1}
    assert 1 <= len(commits) < len(deliveries) // 2


def test_a_failed_group_commit_fails_every_caller_and_keeps_nothing(db: Path) -> None:
    """With the write lock held past the busy timeout, every enqueue of the batch raises
    TransientError (the webhook then answers 503 and Strava redelivers) and no row is
    kept; once the lock is free the same events are queued."""
    queue = SqliteEventQueue(db, busy_timeout_ms=100)
    try:
        held = threading.Event()
        writer = threading.Thread(target=hold_write_lock, args=(db, 1.0, held))
        writer.start()
        assert held.wait(5)

        def attempt(event: WebhookEvent) -> str:
            try:
                queue.enqueue(event, now=NOW)
            except TransientError as exc:
                return str(exc)
            return "queued"

        events = [activity_event(n) for n in range(8)]
        with ThreadPoolExecutor(max_workers=8) as pool:
            outcomes = list(pool.map(attempt, events))
        writer.join()
        assert all("busy" in outcome for outcome in outcomes), outcomes
        assert stored_object_ids(db) == []

        assert [queue.enqueue(e, now=NOW) for e in events] == [True] * 8
        assert stored_object_ids(db) == [1_000 + n for n in range(8)]
    finally:
        queue.close()


@pytest.mark.parametrize("subscription_id", [SUB, None])
def test_app_startup_warms_the_request_path_without_queueing(
    queue: SqliteEventQueue, subscription_id: int | None
) -> None:
    """The lifespan runs the receiver once before serving (with our subscription id or
    none known yet): startup succeeds, nothing is queued, and the first POST is then
    queued as usual (or, with no id known, refused with 503 and not queued)."""
    receiver = WebhookReceiver(
        queue,
        verify_token="t",
        subscription_id=subscription_id,
        stats=MirrorStats(),
        clock=lambda: NOW,
    )
    app = create_app(
        receiver,
        health=lambda: HealthReport(ok=True, reasons=[], detail={}),
    )
    path = callback_path(derive_path_secret("t"))
    with TestClient(app) as client:
        assert queue.depth() == 0
        answer = client.post(path, content=activity_event(1).to_json())
        if subscription_id is None:
            assert answer.status_code == 503
            assert queue.depth() == 0
            return
        assert answer.status_code == 200
        assert answer.json() == {"status": "received"}
    assert queue.depth() == 1
    assert queue.oldest_age(now=NOW + timedelta(seconds=5)) == 5.0
