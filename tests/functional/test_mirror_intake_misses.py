"""The receiver's cache misses (issue 19): a subscription id or an athlete it has not
read yet is looked up in the store at once, at most once a second; an unknown
athlete's event is dropped before the queue. Real SQLite store and queue, the
receiver's own caches; only the monotonic clock is simulated."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pytest

from fakes import sqlite_store
from garmin2strava.adapters.queue_sqlite import SqliteEventQueue
from garmin2strava.adapters.store.sqlite import SqliteStore
from garmin2strava.domain.models import Account
from garmin2strava.domain.webhook import WebhookEvent
from garmin2strava.services.mirror_athletes import KnownAthletes
from garmin2strava.services.mirror_intake import NOT_READY, RECEIVED, WebhookReceiver
from garmin2strava.services.mirror_subscription import (
    SUBSCRIPTION_STATE_KEY,
    ReadGate,
    SubscriptionSource,
    remember_subscription,
    subscription_from_state,
)
from garmin2strava.services.observability import MirrorStats

NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)
SUB = 42
ATHLETE = 1001


def body(*, subscription_id: int = SUB, owner_id: int = ATHLETE, object_id: int = 7) -> bytes:
    event = WebhookEvent(
        object_type="activity",
        object_id=object_id,
        aspect_type="create",
        owner_id=owner_id,
        subscription_id=subscription_id,
        event_time=int(NOW.timestamp()),
        updates={},
    )
    return event.to_json().encode()


@dataclass
class Intake:
    """The receiver as `serve` builds it, over a store whose reads are counted."""

    store: SqliteStore
    queue: SqliteEventQueue
    clock: list[float] = field(default_factory=lambda: [0.0])
    subscription_reads: int = 0
    athlete_reads: int = 0
    stats: MirrorStats = field(default_factory=MirrorStats)

    def __post_init__(self) -> None:
        monotonic = lambda: self.clock[0]  # noqa: E731
        self.subscriptions = SubscriptionSource(
            read=self._read_subscription, monotonic=monotonic, refresh_s=60, retry_s=5
        )
        self.athletes = KnownAthletes(self._read_athletes, gate=ReadGate(monotonic=monotonic))
        self.subscriptions.load()
        self.athletes.load()
        self.receiver = WebhookReceiver(
            self.queue,
            verify_token="tok",
            subscriptions=self.subscriptions,
            athletes=self.athletes,
            stats=self.stats,
            clock=lambda: NOW,
        )

    def _read_subscription(self) -> int | None:
        self.subscription_reads += 1
        return subscription_from_state(self.store.get_app_state(SUBSCRIPTION_STATE_KEY))

    def _read_athletes(self) -> frozenset[int]:
        self.athlete_reads += 1
        return self.store.known_athletes()

    def link(self, athlete_id: int, user_id: str) -> None:
        """What `get-token` does in another process."""
        self.store.put_account(Account(user_id=user_id, strava_athlete_id=athlete_id))
        self.store.link_athlete(athlete_id, user_id)


@pytest.fixture
def make_intake(tmp_path: Path) -> Iterator[Callable[[], Intake]]:
    """A receiver as `serve` starts it (reading both caches), over one store and queue."""
    store = sqlite_store(tmp_path / "g2s.sqlite3")
    queue = SqliteEventQueue(tmp_path / "g2s.sqlite3")
    yield lambda: Intake(store, queue)
    queue.close()
    store.close()


def test_first_event_after_subscribe_is_queued_not_refused(
    make_intake: Callable[[], Intake],
) -> None:
    """The receiver started before `webhook subscribe`: the first event names the new id,
    which the cache does not hold yet; the store is read at once and the event queued."""
    intake = make_intake()
    intake.link(ATHLETE, "u1")
    assert intake.subscriptions.current() is None
    remember_subscription(intake.store, SUB, now=NOW)  # `webhook subscribe`, elsewhere
    assert intake.receiver.receive(body()) == RECEIVED
    assert intake.queue.depth() == 1
    assert intake.stats.snapshot() == {"events_received": 1}


def test_first_event_after_resubscribe_is_queued_and_the_old_id_is_foreign(
    make_intake: Callable[[], Intake],
) -> None:
    """A re-subscribe replaced the id the cache holds: the new id's first event re-reads
    the store and is queued; the old id's events are foreign from then on."""
    intake = make_intake()
    intake.link(ATHLETE, "u1")
    remember_subscription(intake.store, SUB, now=NOW)
    intake.subscriptions.load()
    remember_subscription(intake.store, SUB + 1, now=NOW)
    assert intake.receiver.receive(body(subscription_id=SUB + 1, object_id=1)) == RECEIVED
    assert intake.queue.depth() == 1
    intake.clock[0] += 1.0
    assert intake.receiver.receive(body(subscription_id=SUB, object_id=2)) == RECEIVED
    assert intake.queue.depth() == 1
    assert intake.stats.snapshot() == {"events_received": 1, "events_rejected_foreign": 1}


def test_a_hit_reads_nothing(make_intake: Callable[[], Intake]) -> None:
    """Our subscription and a known athlete: both answered from the caches."""
    intake = make_intake()
    intake.link(ATHLETE, "u1")
    remember_subscription(intake.store, SUB, now=NOW)
    intake = make_intake()
    before = (intake.subscription_reads, intake.athlete_reads)
    for n in range(50):
        assert intake.receiver.receive(body(object_id=n + 1)) == RECEIVED
    assert (intake.subscription_reads, intake.athlete_reads) == before
    assert intake.queue.depth() == 50


def test_forged_ids_cost_one_store_read_a_second(make_intake: Callable[[], Intake]) -> None:
    """1,000 forged subscription ids and 1,000 unknown athletes within one second: one
    re-read of each; one more a second later. All answered alike, none queued, nothing
    written."""
    intake = make_intake()
    intake.link(ATHLETE, "u1")
    remember_subscription(intake.store, SUB, now=NOW)
    intake = make_intake()
    reads = (intake.subscription_reads, intake.athlete_reads)
    answers = [intake.receiver.receive(body(subscription_id=SUB + n)) for n in range(1, 1001)]
    answers += [intake.receiver.receive(body(owner_id=ATHLETE + n)) for n in range(1, 1001)]
    assert all(answer == RECEIVED for answer in answers)
    assert (intake.subscription_reads, intake.athlete_reads) == (reads[0] + 1, reads[1] + 1)
    intake.clock[0] += 0.999
    intake.receiver.receive(body(subscription_id=SUB + 1))
    intake.receiver.receive(body(owner_id=ATHLETE + 1))
    assert (intake.subscription_reads, intake.athlete_reads) == (reads[0] + 1, reads[1] + 1)
    intake.clock[0] += 0.001
    intake.receiver.receive(body(subscription_id=SUB + 1))
    intake.receiver.receive(body(owner_id=ATHLETE + 1))
    assert (intake.subscription_reads, intake.athlete_reads) == (reads[0] + 2, reads[1] + 2)
    assert intake.queue.depth() == 0
    assert intake.stats.snapshot() == {
        "events_rejected_foreign": 1002,
        "events_rejected_unknown_athlete": 1002,
    }


def test_an_athlete_linked_since_is_read_on_the_miss(make_intake: Callable[[], Intake]) -> None:
    """An account connected after the receiver read the set (`get-token` in another
    process): its athlete's first event re-reads the store and is queued."""
    intake = make_intake()
    remember_subscription(intake.store, SUB, now=NOW)
    intake = make_intake()
    assert intake.receiver.receive(body()) == RECEIVED  # nobody linked: dropped
    assert intake.queue.depth() == 0
    intake.link(ATHLETE, "u1")
    intake.clock[0] += 1.0
    assert intake.receiver.receive(body()) == RECEIVED
    assert intake.queue.depth() == 1
    assert intake.stats.snapshot() == {
        "events_rejected_unknown_athlete": 1,
        "events_received": 1,
    }


def test_no_subscription_stored_still_refuses_after_the_reread(
    make_intake: Callable[[], Intake],
) -> None:
    """Nothing stored at all: the miss re-reads, finds nothing, and answers 503 as before."""
    intake = make_intake()
    intake.link(ATHLETE, "u1")
    assert intake.receiver.receive(body()) == NOT_READY
    assert intake.subscription_reads == 2  # start-up, then the miss
    assert intake.queue.depth() == 0


def test_an_unreadable_athlete_set_lets_events_through() -> None:
    """The store cannot be read: the cache lets every athlete through (the worker then
    decides, as it did before the cache), so no event is lost to a broken read."""
    reads: list[int] = []

    def broken() -> frozenset[int]:
        reads.append(1)
        raise OSError("disk I/O error")

    clock = [0.0]
    athletes = KnownAthletes(broken, gate=ReadGate(monotonic=lambda: clock[0]))
    assert athletes.load() is None
    assert athletes.knows(ATHLETE)
    assert athletes.knows(ATHLETE + 1)  # gate shut: no read, still let through
    assert len(reads) == 2


def test_the_read_gate_opens_once_per_interval() -> None:
    clock = [10.0]
    gate = ReadGate(1.0, monotonic=lambda: clock[0])
    assert [gate.open() for _ in range(3)] == [True, False, False]
    clock[0] = 10.5
    assert not gate.open()
    clock[0] = 11.0
    assert gate.open()
