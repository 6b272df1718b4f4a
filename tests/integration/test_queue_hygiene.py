"""The SQLite queue looks after itself, on real SQLite files.

Finished rows older than the retention are pruned by `claim` (at most once an hour per
instance, by a monotonic clock the tests drive), recent finished rows, dead letters and
pending rows are kept. An event claimed again and again without ever being settled (a
poison event that kills the worker process) is made dead after `max_unsettled_claims`
claims, listed with the dead letters, and `retry_dead` gives it a fresh allowance;
settled claims (a deferral, a failure) never count towards the cap.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from garmin2strava.adapters import queue_sqlite
from garmin2strava.adapters.queue_sqlite import SqliteEventQueue
from garmin2strava.domain.webhook import QueuedEvent, WebhookEvent

NOW = datetime(2025, 6, 1, 8, 0, tzinfo=UTC)
SUB = 120475
LEASE = 60.0  # the visibility timeout every claim here uses
AFTER_LEASE = timedelta(seconds=LEASE + 1)
UNSETTLED = "claimed 5 times without being settled (the worker died holding it)"


class Monotonic:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def activity_event(n: int, aspect: str = "create") -> WebhookEvent:
    return WebhookEvent(
        object_type="activity",
        object_id=1_000 + n,
        aspect_type=aspect,
        owner_id=134815,
        subscription_id=SUB,
        event_time=1748764800 + n,
        updates={},
    )


@pytest.fixture
def clock() -> Monotonic:
    return Monotonic()


@pytest.fixture
def queue(db: Path, clock: Monotonic) -> Iterator[SqliteEventQueue]:
    q = SqliteEventQueue(db, monotonic=clock)
    yield q
    q.close()


def rows(db: Path) -> dict[int, tuple[str, int, int, int]]:
    """object id -> (state, claims, lapsed_claims, attempts), read from the file."""
    conn = sqlite3.connect(db)
    try:
        found = conn.execute(
            "SELECT event_json, state, claims, lapsed_claims, attempts FROM webhook_queue"
        ).fetchall()
    finally:
        conn.close()
    return {WebhookEvent.from_json(r[0]).object_id: (r[1], r[2], r[3], r[4]) for r in found}


def states(db: Path) -> dict[int, str]:
    return {object_id: row[0] for object_id, row in rows(db).items()}


def claim(queue: SqliteEventQueue, now: datetime, limit: int = 50) -> list[list[QueuedEvent]]:
    return queue.claim(now=now, limit=limit, visibility_seconds=LEASE)


def object_ids(groups: list[list[QueuedEvent]]) -> list[list[int]]:
    return [[q.event.object_id for q in group] for group in groups]


def finish(queue: SqliteEventQueue, db: Path, n: int, *, at: datetime) -> None:
    """Enqueue event `n`, claim it alone and complete it at `at`."""
    queue.enqueue(activity_event(n), now=at)
    (group,) = claim(queue, at)
    assert object_ids([group]) == [[1_000 + n]]
    queue.complete(group, now=at)
    assert states(db)[1_000 + n] == "done"


# -- pruning ---------------------------------------------------------------------------
def test_claim_prunes_old_done_rows_and_keeps_the_rest_without_prune_done(
    db: Path, queue: SqliteEventQueue, clock: Monotonic, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two days on, the next due claim deletes the done row finished two days ago and
    keeps the one finished an hour ago, an old dead letter and an old pending event;
    nobody calls prune_done."""

    def no_sweep(**_: object) -> int:
        raise AssertionError("prune_done is not what prunes")

    monkeypatch.setattr(queue, "prune_done", no_sweep)
    for n in (1, 2, 3):
        queue.enqueue(activity_event(n), now=NOW)
    done, dead, pending = claim(queue, NOW)  # the first claim prunes (nothing yet)
    queue.complete(done, now=NOW)
    queue.dead_letter(dead, now=NOW, error="unknown athlete 134815")
    queue.fail(pending, retry_at=NOW + timedelta(days=10), error="Strava said 500")
    finish(queue, db, 4, at=NOW + timedelta(hours=47))
    assert states(db) == {1001: "done", 1002: "dead", 1003: "pending", 1004: "done"}

    clock.t += 3600
    assert claim(queue, NOW + timedelta(days=2)) == []

    assert states(db) == {1002: "dead", 1003: "pending", 1004: "done"}
    assert queue.count_done() == 1
    assert [d.event.object_id for d in queue.list_dead()] == [1002]
    assert queue.depth() == 1


def test_prunes_at_most_once_an_hour_per_instance(
    db: Path, queue: SqliteEventQueue, clock: Monotonic
) -> None:
    """Old done rows wait for the hour to pass on the monotonic clock, whatever `now`
    says; a new instance (a restarted process) prunes at its first claim."""
    assert claim(queue, NOW) == []  # pruned at monotonic 0: the next one is due at 3600
    finish(queue, db, 1, at=NOW)
    finish(queue, db, 2, at=NOW)

    clock.t = 3599.0
    claim(queue, NOW + timedelta(days=30))
    assert queue.count_done() == 2

    clock.t = 3600.0
    claim(queue, NOW + timedelta(days=30))
    assert queue.count_done() == 0

    finish(queue, db, 3, at=NOW)
    claim(queue, NOW + timedelta(days=30))
    assert queue.count_done() == 1  # pruned within the hour already

    restarted = SqliteEventQueue(db, monotonic=clock)
    try:
        claim(restarted, NOW + timedelta(days=30))
    finally:
        restarted.close()
    assert queue.count_done() == 0


@pytest.mark.parametrize(
    ("retention", "age", "pruned"),
    [
        (None, timedelta(hours=23, minutes=59), False),  # the default keeps a day
        (None, timedelta(days=1, minutes=1), True),
        (timedelta(hours=1), timedelta(minutes=59), False),
        (timedelta(hours=1), timedelta(minutes=61), True),
    ],
)
def test_retention_is_a_constructor_parameter_defaulting_to_a_day(
    db: Path, clock: Monotonic, retention: timedelta | None, age: timedelta, pruned: bool
) -> None:
    queue = (
        SqliteEventQueue(db, monotonic=clock)
        if retention is None
        else SqliteEventQueue(db, monotonic=clock, done_retention=retention)
    )
    try:
        finish(queue, db, 1, at=NOW)  # its claim is the instance's first prune
        clock.t = 3600.0
        claim(queue, NOW + age)
        assert queue.count_done() == (0 if pruned else 1)
    finally:
        queue.close()


def test_a_long_backlog_is_pruned_in_batches_over_the_next_claims(
    db: Path, queue: SqliteEventQueue, clock: Monotonic, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each prune deletes at most a batch (shrunk to 3 here) in its own transaction; a
    full batch means more is left, so the next claim prunes again without the hour."""
    monkeypatch.setattr(queue_sqlite, "_PRUNE_BATCH", 3)
    for n in range(8):
        queue.enqueue(activity_event(n), now=NOW)
    groups = claim(queue, NOW)
    assert len(groups) == 8
    for group in groups:
        queue.complete(group, now=NOW)

    later = NOW + timedelta(days=2)
    clock.t = 3600.0
    remaining = []
    for _ in range(4):
        claim(queue, later)
        remaining.append(queue.count_done())
    assert remaining == [5, 2, 0, 0]


def test_bad_parameters_are_refused(db: Path) -> None:
    with pytest.raises(ValueError, match="done_retention"):
        SqliteEventQueue(db, done_retention=timedelta(0))
    with pytest.raises(ValueError, match="max_unsettled_claims"):
        SqliteEventQueue(db, max_unsettled_claims=0)


# -- the reclaim cap ------------------------------------------------------------------
def test_an_event_claimed_five_times_without_settlement_becomes_dead(
    db: Path, queue: SqliteEventQueue
) -> None:
    """The worker dies holding it five times: the sixth claim hands out nothing, and the
    event is a dead letter that says why."""
    queue.enqueue(activity_event(1), now=NOW)
    now = NOW
    for _ in range(5):
        assert object_ids(claim(queue, now)) == [[1001]]
        now += AFTER_LEASE  # the worker died; the lease runs out

    assert claim(queue, now) == []

    (dead,) = queue.list_dead()
    assert dead.event == activity_event(1)
    assert dead.error == UNSETTLED
    assert dead.attempts == 0
    assert dead.died_at == now
    assert queue.depth() == 0
    assert rows(db)[1001] == ("dead", 5, 5, 0)


def test_the_cap_is_a_constructor_parameter(db: Path, clock: Monotonic) -> None:
    queue = SqliteEventQueue(db, monotonic=clock, max_unsettled_claims=2)
    try:
        queue.enqueue(activity_event(1), now=NOW)
        assert object_ids(claim(queue, NOW)) == [[1001]]
        assert object_ids(claim(queue, NOW + AFTER_LEASE)) == [[1001]]
        assert claim(queue, NOW + 2 * AFTER_LEASE) == []
        (dead,) = queue.list_dead()
        assert dead.error == "claimed 2 times without being settled (the worker died holding it)"
    finally:
        queue.close()


def test_settled_claims_do_not_count_towards_the_cap(db: Path, queue: SqliteEventQueue) -> None:
    """Released (Strava budget spent) ten times and failed twice: claimed twelve times,
    never buried. Only the claims that lapsed count: four of them, then one more that
    lapses after a release, and the event is dead."""
    queue.enqueue(activity_event(1), now=NOW)
    now = NOW
    for _ in range(10):
        (group,) = claim(queue, now)
        queue.release(group, available_at=now)
    for _ in range(2):
        (group,) = claim(queue, now)
        queue.fail(group, retry_at=now, error="Strava said 500")
    assert rows(db)[1001] == ("pending", 12, 0, 2)

    for _ in range(4):  # four claims lapse
        assert object_ids(claim(queue, now)) == [[1001]]
        now += AFTER_LEASE
    (group,) = claim(queue, now)  # one is settled by a release
    queue.release(group, available_at=now)
    assert object_ids(claim(queue, now)) == [[1001]]  # and a fifth lapses
    now += AFTER_LEASE

    assert claim(queue, now) == []
    assert [d.error for d in queue.list_dead()] == [UNSETTLED]


def test_retry_dead_gives_a_fresh_allowance(db: Path, queue: SqliteEventQueue) -> None:
    queue.enqueue(activity_event(1), now=NOW)
    now = NOW
    for _ in range(5):
        claim(queue, now)
        now += AFTER_LEASE
    assert claim(queue, now) == []
    (dead,) = queue.list_dead()

    assert queue.retry_dead(dead.queue_id, now=now)
    assert queue.list_dead() == []
    assert rows(db)[1001][2:] == (0, 0)  # lapsed_claims and attempts start again

    for _ in range(5):
        assert object_ids(claim(queue, now)) == [[1001]]
        now += AFTER_LEASE
    assert claim(queue, now) == []
    assert [d.error for d in queue.list_dead()] == [UNSETTLED]

    # Revived once more, it is mirrored this time and is done like any other event.
    assert queue.retry_dead(dead.queue_id, now=now)
    (group,) = claim(queue, now)
    queue.complete(group, now=now)
    assert states(db) == {1001: "done"}


def test_a_poison_event_takes_only_its_own_group_to_the_dead_letters(
    db: Path, queue: SqliteEventQueue
) -> None:
    """Claimed beside others, the poison kills the worker before they are processed.
    Afterwards each group whose claim lapsed is handed out alone: the others are then
    processed, new events go on in batches, and only the poison is buried."""
    for n in (1, 2, 3):  # 1002 is the poison
        queue.enqueue(activity_event(n), now=NOW)
    first, _poison, _after = claim(queue, NOW)
    queue.complete(first, now=NOW)  # then the worker dies on the poison

    now = NOW + AFTER_LEASE
    assert object_ids(claim(queue, now)) == [[1002]]  # alone; the worker dies again
    (rescued,) = claim(queue, now)  # alone too, during the poison's lease
    assert object_ids([rescued]) == [[1003]]
    queue.complete(rescued, now=now)
    assert claim(queue, now) == []  # the poison is leased

    queue.enqueue(activity_event(4), now=now)
    queue.enqueue(activity_event(5), now=now)
    batch = claim(queue, now)
    assert object_ids(batch) == [[1004], [1005]]  # no lapsed claim: one batch
    for group in batch:
        queue.complete(group, now=now)

    for _ in range(3):  # the poison's third, fourth and fifth claims
        now += AFTER_LEASE
        assert object_ids(claim(queue, now)) == [[1002]]
    now += AFTER_LEASE
    queue.enqueue(activity_event(6), now=now)
    assert object_ids(claim(queue, now)) == [[1006]]  # the poison is buried, not handed out

    assert [(d.event.object_id, d.error) for d in queue.list_dead()] == [(1002, UNSETTLED)]
    assert states(db) == {
        1001: "done",
        1002: "dead",
        1003: "done",
        1004: "done",
        1005: "done",
        1006: "pending",
    }


def test_a_file_from_before_the_cap_gains_the_column(db: Path, clock: Monotonic) -> None:
    """A queue file created without `lapsed_claims` is given it when opened (twice is
    harmless) and its waiting events are claimed as usual."""
    old_schema = "\n".join(
        line for line in queue_sqlite._SCHEMA.splitlines() if "lapsed_claims" not in line
    )
    conn = sqlite3.connect(db)
    try:
        conn.executescript(old_schema)
        conn.execute(
            "INSERT INTO webhook_queue"
            " (dedupe_key, object_key, event_json, available_at, enqueued_at)"
            " VALUES (?, ?, ?, ?, ?)",
            (
                activity_event(1).dedupe_key,
                activity_event(1).object_key,
                activity_event(1).to_json(),
                NOW.timestamp(),
                NOW.timestamp(),
            ),
        )
        conn.commit()
    finally:
        conn.close()

    for _ in range(2):
        queue = SqliteEventQueue(db, monotonic=clock)
        queue.close()
    queue = SqliteEventQueue(db, monotonic=clock)
    try:
        assert object_ids(claim(queue, NOW)) == [[1001]]
        assert rows(db)[1001] == ("pending", 1, 0, 0)
    finally:
        queue.close()


# -- dead letters: retention and bound -----------------------------------------------
def test_dead_letters_expire_after_their_retention(db: Path, clock: Monotonic) -> None:
    """With dead_retention=30 days: a dead letter 31 days old goes at the next due
    claim, one 29 days old stays (and a done row's one-day retention is unchanged)."""
    queue = SqliteEventQueue(db, monotonic=clock, dead_retention=timedelta(days=30))
    try:
        for n, age in ((1, 31), (2, 29)):
            queue.enqueue(activity_event(n), now=NOW)
            (group,) = claim(queue, NOW, limit=1)
            queue.dead_letter(group, now=NOW - timedelta(days=age), error="permanent")
        clock.t += 3600
        claim(queue, NOW)
        assert states(db) == {1002: "dead"}
    finally:
        queue.close()


def test_dead_letters_are_bounded_the_oldest_dropping_first(
    db: Path, clock: Monotonic, caplog: pytest.LogCaptureFixture
) -> None:
    """max_dead=3: burying 5 keeps the 3 newest, the 2 oldest are deleted with a
    WARNING naming how many; pending rows are never touched by the bound."""
    queue = SqliteEventQueue(db, monotonic=clock, max_dead=3)
    try:
        for n in range(1, 6):
            queue.enqueue(activity_event(n), now=NOW)
            (group,) = claim(queue, NOW, limit=1)
            queue.dead_letter(group, now=NOW + timedelta(minutes=n), error="permanent")
        queue.enqueue(activity_event(9), now=NOW)
        assert states(db) == {1003: "dead", 1004: "dead", 1005: "dead", 1009: "pending"}
        dropped = [r for r in caplog.records if r.getMessage() == "queue.dead_letters_dropped"]
        assert [getattr(r, "rows", None) for r in dropped] == [1, 1]
    finally:
        queue.close()


def test_dead_letter_defaults_are_thirty_days_and_ten_thousand() -> None:
    """The defaults README.md documents (G2S_DEAD_LETTER_RETENTION_DAYS=30)."""
    assert timedelta(days=30) == queue_sqlite.DEFAULT_DEAD_RETENTION
    assert queue_sqlite.DEFAULT_MAX_DEAD == 10_000
