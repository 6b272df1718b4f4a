"""The mirror worker over the real queue and the real SQLite store, with the shared
fake Strava (fakes.FakeStrava), which records every request."""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from fakes import FakeStrava, HandedQueue, activity_json, sqlite_store
from garmin2strava.adapters.queue_sqlite import SqliteEventQueue
from garmin2strava.domain.models import (
    Account,
    AccountStatus,
    LedgerEntry,
    StravaTokens,
    UploadOutcome,
    Workout,
)
from garmin2strava.domain.streams import MAX_STREAM_FAILURES
from garmin2strava.domain.webhook import (
    ASPECT_TYPES,
    OBJECT_TYPES,
    QueuedEvent,
    WebhookEvent,
)
from garmin2strava.errors import (
    G2SError,
    RateLimited,
    StravaAppInactive,
    StravaAuthError,
    TransientError,
)
from garmin2strava.services.mirror_intake import (
    NOT_READY,
    RECEIVED,
    WebhookAnswer,
    WebhookReceiver,
)
from garmin2strava.services.mirror_subscription import SubscriptionSource
from garmin2strava.services.mirror_worker import (
    HANDLERS,
    OUTAGE_MAX_WAIT_SECONDS,
    event_kind,
    group_kind,
    process_events,
)
from garmin2strava.services.observability import MirrorStats
from garmin2strava.services.streams import catch_up_streams

SUB = 42
ATHLETE = 134815
T0 = datetime(2025, 6, 1, 8, 0, tzinfo=UTC)


def activity(activity_id: int, name: str = "Morning Run") -> dict[str, Any]:
    """The athlete's activity as Strava's API answers it."""
    return activity_json(activity_id, athlete_id=ATHLETE, name=name)


def event(
    aspect: str, activity_id: int = 7, *, at: int = 0, object_type: str = "activity", **updates: str
) -> WebhookEvent:
    return WebhookEvent(
        object_type=object_type,
        object_id=activity_id,
        aspect_type=aspect,
        owner_id=ATHLETE,
        subscription_id=SUB,
        event_time=int(T0.timestamp()) + at,
        updates=updates,
    )


class World:
    def __init__(self, tmp_path: Path) -> None:
        self.queue = SqliteEventQueue(tmp_path / "g2s.sqlite3")
        self.now = T0 + timedelta(minutes=1)
        # The store's clock is the simulated one, so audit events dated then are kept.
        self.store = sqlite_store(tmp_path / "store.sqlite3", clock=lambda: self.now)
        self.store.put_account(Account(user_id="u1", strava_athlete_id=ATHLETE))
        self.store.link_athlete(ATHLETE, "u1")
        self.store.replace_strava_tokens(
            "u1", StravaTokens("access", "refresh", 0), expected_version=None
        )
        self.strava = FakeStrava(athlete_id=ATHLETE)
        self.stats = MirrorStats()
        self.stream_types: tuple[str, ...] = ()

    def push(self, *events: WebhookEvent) -> None:
        for e in events:
            self.queue.enqueue(e, now=self.now)

    def strava_for(self, user_id: str) -> FakeStrava:
        assert user_id == "u1"
        return self.strava

    def work(self, *, advance: float = 0.0, max_attempts: int = 3) -> int:
        self.now += timedelta(seconds=advance)
        counts = process_events(
            self.queue,
            self.store,
            self.strava_for,
            now=self.now,
            max_attempts=max_attempts,
            stats=self.stats,
            stream_types=self.stream_types,
        )
        return counts.processed

    def account_state(self) -> tuple[StravaTokens | None, Account | None, Workout]:
        """What a deauthorization deletes: the tokens, the account, the mirrored row 7."""
        return (self.store.get_strava_tokens("u1"), self.store.get_account("u1"), self.row())

    def audit_kinds(self) -> list[str]:
        """The kinds of the account's audit events (the store lists the newest first)."""
        return [a.kind for a in reversed(self.store.list_audit("u1"))]

    def row(self, activity_id: int = 7) -> Workout:
        workout = self.store.get_workout("u1", activity_id)
        assert workout is not None
        return workout


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    w = World(tmp_path)
    yield w
    w.queue.close()
    w.store.close()


def test_create_fetches_once_and_stores_normalized_row(world: World) -> None:
    """A create event costs one fetch and leaves a Workout stamped with the event time."""
    world.strava.activities[7] = activity(7)
    world.push(event("create", at=5))
    assert world.work() == 1
    assert world.strava.fetches == [7]
    row = world.row()
    assert (row.name, row.distance, row.is_deleted) == ("Morning Run", 5000.0, False)
    assert row.updated_at == T0 + timedelta(seconds=5)
    assert world.queue.depth() == 0


def test_create_with_updates_queued_behind_is_one_fetch(world: World) -> None:
    """Create plus three updates waiting together: one fetch, and the row is current."""
    world.strava.activities[7] = activity(7, name="Final name")
    world.push(
        event("create", at=1),
        event("update", at=2, title="First"),
        event("update", at=3, type="Walk"),
        event("update", at=4, title="Final name"),
    )
    assert world.work() == 4
    assert world.strava.fetches == [7]
    assert world.row().name == "Final name"
    assert world.row().updated_at == T0 + timedelta(seconds=4)


def test_updates_apply_without_api_call(world: World) -> None:
    """Title, type and private from later events change the row with zero fetches."""
    world.strava.activities[7] = activity(7)
    world.push(event("create", at=1))
    world.work()
    world.push(event("update", at=10, title="Messy"), event("update", at=11, private="true"))
    world.push(event("update", at=12, type="Hike"))
    assert world.work() == 3
    assert world.strava.fetches == [7]
    row = world.row()
    assert (row.name, row.is_private, row.sport_type) == ("Messy", True, "Hike")


def test_update_for_unknown_row_fetches_once(world: World) -> None:
    """An update whose activity is not mirrored yet is served by one fetch."""
    world.strava.activities[7] = activity(7, name="From Strava")
    world.push(event("update", at=3, title="From Strava"))
    world.work()
    assert world.strava.fetches == [7]
    assert world.row().name == "From Strava"


def test_delete_soft_deletes_without_api_call(world: World) -> None:
    """A delete marks the row deleted, keeps it, and makes no Strava request."""
    world.strava.activities[7] = activity(7)
    world.push(event("create", at=1))
    world.work()
    world.push(event("delete", at=20))
    world.work()
    assert world.strava.fetches == [7]
    assert world.row().is_deleted
    assert world.row().name == "Morning Run"


def test_fetch_404_soft_deletes_existing_row(world: World) -> None:
    """A create for a row we hold, answered 404 by Strava, soft-deletes that row."""
    world.strava.activities[7] = activity(7)
    world.push(event("create", at=1))
    world.work()
    del world.strava.activities[7]
    world.push(event("create", at=30))
    world.work()
    assert world.row().is_deleted


def test_out_of_order_older_update_never_overwrites_newer(world: World) -> None:
    """An update older than the stored row is ignored; the same event twice changes nothing."""
    world.strava.activities[7] = activity(7, name="New")
    world.push(event("create", at=1), event("update", at=50, title="New"))
    world.work()
    world.push(event("update", at=40, title="Old"))
    world.work()
    assert world.row().name == "New"
    world.push(event("update", at=50, title="New"))  # a redelivery: deduplicated
    assert world.queue.depth() == 0


def test_failure_retries_with_backoff_then_dead_letters(world: World) -> None:
    """A failure that is no outage (Strava's 400) backs off 1 s then 2 s; the third
    attempt moves the event to dead letters."""
    world.strava.fail_with = [G2SError("Strava answered 400"), G2SError("400"), G2SError("400")]
    world.push(event("create", at=1))
    assert world.work() == 0
    assert world.work(advance=0.9) == 0  # not ready before 1 s
    assert world.strava.fetches == [7]
    world.work(advance=0.2)
    assert world.strava.fetches == [7, 7]
    world.work(advance=1.9)
    assert world.strava.fetches == [7, 7]  # second backoff is 2 s
    world.work(advance=0.2)
    assert world.strava.fetches == [7, 7, 7]
    dead = world.queue.list_dead()
    assert [d.event.object_id for d in dead] == [7]
    assert "G2SError" in dead[0].error
    assert dead[0].attempts == 3
    assert world.audit_kinds() == ["mirror.dead_letter"]
    assert world.stats.get("events_dead") == 1


def test_dead_letter_retry_processes_event(world: World) -> None:
    """retry_dead puts a dead event back; the next run mirrors the activity."""
    world.strava.fail_with = [G2SError("Strava answered 400")]
    world.push(event("create", at=1))
    world.work(max_attempts=1)
    (dead,) = world.queue.list_dead()
    world.strava.activities[7] = activity(7)
    assert world.queue.retry_dead(dead.queue_id, now=world.now)
    assert world.work() == 1
    assert world.row().name == "Morning Run"
    assert world.queue.list_dead() == []


def test_rate_limited_leaves_events_queued_until_reset(world: World) -> None:
    """RateLimited defers every fetching group to the reset, counts no attempt, loses nothing."""
    until = world.now + timedelta(minutes=14)
    world.strava.fail_with = [RateLimited(until)]
    world.strava.activities |= {7: activity(7), 8: activity(8)}
    world.push(event("create", 7, at=1), event("create", 8, at=2))
    assert world.work() == 0
    assert world.strava.fetches == [7]  # the second group was deferred without a request
    assert world.queue.depth() == 2
    assert world.work(advance=60) == 0
    world.now = until
    assert world.work() == 2
    assert world.strava.fetches == [7, 7, 8]
    assert world.queue.list_dead() == []


def test_rate_limit_does_not_block_updates_that_need_no_fetch(world: World) -> None:
    """While the budget is spent, title updates to mirrored rows are still applied."""
    world.strava.activities[7] = activity(7)
    world.push(event("create", 7, at=1))
    world.work()
    world.strava.fail_with = [RateLimited(world.now + timedelta(minutes=10))]
    world.push(event("create", 9, at=2), event("update", 7, at=3, title="Renamed"))
    assert world.work() == 1
    assert world.row(7).name == "Renamed"


def test_genuine_deauthorization_deletes_strava_data_and_disconnects(world: World) -> None:
    """Strava refuses the refresh (1 request): tokens, mirrored rows and audit trail gone,
    backfill cursor reset, account DISCONNECTED without mirror coverage; later events of
    the athlete are dropped without a Strava request."""
    world.strava.activities[7] = activity(7)
    since = T0 - timedelta(days=30)
    world.store.put_account(
        Account(user_id="u1", strava_athlete_id=ATHLETE, mirror_covers_since=since)
    )
    world.store.put_app_state("mirror_backfill#u1", {"done": False, "stored": 3})
    world.push(event("create", at=1))
    world.work()
    world.strava.revoked = True
    world.push(event("update", ATHLETE, at=5, object_type="athlete", authorized="false"))
    world.work()
    assert world.strava.refreshes == 1
    assert world.store.get_strava_tokens("u1") is None
    account = world.store.get_account("u1")
    assert account is not None
    assert account.status is AccountStatus.DISCONNECTED
    assert account.mirror_covers_since is None
    assert world.store.get_workout("u1", 7) is None
    assert world.store.get_app_state("mirror_backfill#u1") == {}
    assert world.audit_kinds() == ["strava.deauthorized"]
    assert world.stats.get("deauthorizations") == 1

    fetches = list(world.strava.fetches)
    world.push(event("create", 8, at=10), event("update", ATHLETE, at=11, object_type="athlete"))
    world.work()
    assert world.strava.fetches == fetches
    assert world.strava.refreshes == 1
    assert world.stats.get("events_dropped_disconnected") == 2
    assert world.queue.list_dead() == []


def test_forged_deauthorization_changes_nothing_for_one_request(world: World) -> None:
    """Strava grants the refresh: the event was forged; tokens, account and rows stay,
    exactly one Strava request was spent, and the refutation is audited."""
    world.strava.activities[7] = activity(7)
    world.push(event("create", at=1))
    world.work()
    before = world.account_state()
    world.push(event("update", ATHLETE, at=5, object_type="athlete", authorized="false"))
    assert world.work() == 1
    assert world.strava.refreshes == 1
    assert world.account_state() == before
    assert world.audit_kinds() == ["strava.deauthorization_refuted"]
    assert world.stats.get("deauthorizations_refuted") == 1


def test_deauthorization_check_meeting_an_outage_is_retried(world: World) -> None:
    """A 5xx on the refresh proves nothing: the event is retried, nothing is deleted."""
    world.strava.revoked = True
    world.strava.fail_with = [TransientError("Strava token endpoint answered 503")]
    world.push(event("update", ATHLETE, at=5, object_type="athlete", authorized="false"))
    world.work()
    assert world.store.get_strava_tokens("u1") is not None
    world.work(advance=5)
    assert world.strava.refreshes == 2
    assert world.store.get_strava_tokens("u1") is None


def test_deauthorization_without_tokens_is_not_obeyed(world: World) -> None:
    """No tokens to ask Strava with: nothing proves the event, so nothing is deleted."""
    world.strava.activities[7] = activity(7)
    world.push(event("create", at=1))
    world.work()
    world.store.delete_strava_tokens("u1")
    world.push(event("update", ATHLETE, at=5, object_type="athlete", authorized="false"))
    world.work()
    assert world.strava.refreshes == 0
    account = world.store.get_account("u1")
    assert account is not None
    assert account.status is AccountStatus.ACTIVE
    assert world.row().activity_id == 7


def test_genuine_deauthorization_keeps_the_upload_ledger(world: World) -> None:
    """The ledger entry (Garmin id, uploaded Strava id) survives the deletion, so a
    reconnect sees the run as uploaded; tokens and workouts are gone."""
    world.strava.activities[7] = activity(7)
    world.strava.revoked = True
    entry = LedgerEntry(
        user_id="u1",
        garmin_activity_id=555,
        external_id="garmin2strava_555",
        outcome=UploadOutcome.UPLOADED,
        updated_at=T0,
        strava_activity_id=7,
    )
    store = world.store
    store.put_upload(entry)
    world.push(event("create", at=1))
    world.work()
    assert store.get_workout("u1", 7) is not None
    world.push(event("update", ATHLETE, at=5, object_type="athlete", authorized="false"))
    world.work()
    assert store.get_strava_tokens("u1") is None
    assert store.list_workouts("u1", include_deleted=True) == []
    assert store.get_uploads("u1", [555]) == {555: entry}
    account = store.get_account("u1")
    assert account is not None
    assert account.status is AccountStatus.DISCONNECTED


def test_token_refresh_failure_is_audited_and_not_retried(world: World) -> None:
    """StravaAuthError while the athlete's access stands (the application's credentials,
    say): audit event, dead letter at once; one fetch and one refresh, never again."""
    world.strava.fail_with = [StravaAuthError("refresh refused")]
    world.push(event("create", at=1))
    world.work()
    world.work(advance=10)
    assert world.strava.requests == ["fetch", "refresh"]
    assert sorted(world.audit_kinds()) == ["mirror.dead_letter", "strava.auth_failed"]
    assert len(world.queue.list_dead()) == 1


def test_a_token_refused_because_the_athlete_revoked_is_obeyed_as_a_deauthorization(
    world: World,
) -> None:
    """The athlete revoked access and the deauthorization event never came (dropped),
    or comes later: the next fetch is refused, one refresh proves the revocation, and
    the athlete's Strava data goes as the event would have had it. No dead letter: a
    reconnect (get-token, mirror backfill) brings the data back."""
    world.strava.activities[7] = activity(7)
    world.push(event("create", at=1))
    world.work()
    assert world.store.get_workout("u1", 7) is not None
    world.strava.revoked = True
    world.strava.fail_with = [StravaAuthError("refresh refused")]
    world.push(event("create", 8, at=5))
    world.work()
    assert world.strava.requests[-2:] == ["fetch", "refresh"]
    assert world.queue.list_dead() == []
    assert world.store.get_strava_tokens("u1") is None
    assert world.store.get_workout("u1", 7) is None
    account = world.store.get_account("u1")
    assert account is not None
    assert account.status is AccountStatus.DISCONNECTED
    assert world.stats.get("events_dropped_deauthorized") == 1
    assert world.stats.get("deauthorizations") == 1
    world.push(event("update", ATHLETE, at=6, object_type="athlete", authorized="false"))
    world.work()  # the late deauthorization: the account is disconnected, nothing to do
    assert world.queue.list_dead() == []


def test_unknown_athletes_are_dropped_counted_and_never_dead_letters(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    """1,000 events of athletes we do not know (the issue's probe sent 5,000): 0 dead
    letters, 0 Strava requests, all counted, one WARNING line (the rest suppressed) and no
    ERROR line, where each used to add a dead letter and an ERROR line."""
    caplog.set_level(logging.INFO)
    n = 1000
    for i in range(n):
        world.queue.enqueue(
            replace(event("create", 10 + i, at=1), owner_id=10_000 + i), now=world.now
        )
    dropped = 0
    while True:
        counts = process_events(
            world.queue, world.store, world.strava_for, now=world.now, stats=world.stats, limit=500
        )
        if counts.claimed == 0:
            break
        dropped += counts.dropped
    assert dropped == n
    assert world.queue.list_dead() == []
    assert world.queue.depth() == 0
    assert world.strava.fetches == []
    assert world.stats.get("events_dropped_unknown_athlete") == n
    loud = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert [r.getMessage() for r in loud] == ["mirror.event_dropped"]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


def test_claimed_group_hidden_until_visibility_timeout(world: World) -> None:
    """An event claimed by a worker that died comes back after the visibility timeout."""
    world.strava.activities[7] = activity(7)
    world.push(event("create", at=1))
    assert len(world.queue.claim(now=world.now, visibility_seconds=30)) == 1
    assert world.work(advance=29) == 0
    assert world.work(advance=2) == 1
    assert world.strava.fetches == [7]


def test_events_of_a_removed_account_are_dropped_without_a_request(world: World) -> None:
    """After `remove` (delete_account: the account and its athlete link go) the athlete
    is unknown: its events are dropped and counted, never fetched, never dead letters."""
    world.strava.activities[7] = activity(7)
    world.store.delete_account("u1")
    world.store.delete_strava_tokens("u1")
    world.push(
        event("create", at=1),
        event("update", ATHLETE, at=2, object_type="athlete", authorized="false"),
    )
    assert world.work() == 0
    assert world.store.get_account("u1") is None
    assert (world.strava.fetches, world.strava.refreshes) == ([], 0)
    assert world.stats.get("events_dropped_unknown_athlete") == 2
    assert (world.queue.depth(), world.queue.list_dead()) == (0, [])


# -- the dispatch: one handler per event kind ---------------------------------------------
def test_every_event_strava_sends_has_a_handler() -> None:
    """Every object and aspect parse_event admits, and a deauthorization, is a kind
    with a handler, and no handler waits for a kind that cannot come."""
    kinds = {event_kind(event(a, object_type=o)) for o in OBJECT_TYPES for a in ASPECT_TYPES}
    kinds.add(event_kind(event("update", ATHLETE, object_type="athlete", authorized="false")))
    assert kinds == set(HANDLERS)


def test_the_kind_that_decides_a_group() -> None:
    """A delete decides its group whatever came with it (Strava never reuses an id); a
    create decides over its updates (its fetch brings them); a deauthorization over
    any other athlete event."""
    create, update, delete = event("create"), event("update", title="x"), event("delete")
    assert group_kind([update]) == "update"
    assert group_kind([update, create, update]) == "create"
    assert group_kind([create, update, delete]) == "delete"
    other = event("update", ATHLETE, object_type="athlete", authorized="true")
    deauth = event("update", ATHLETE, object_type="athlete", authorized="false")
    assert group_kind([other]) == "athlete"
    assert group_kind([other, deauth]) == "deauthorize"


def test_an_athlete_event_that_is_no_deauthorization_settles_without_a_request(
    world: World,
) -> None:
    """An athlete update that does not revoke access carries nothing the mirror keeps:
    settled, no token refresh, nothing changed."""
    before = (world.store.get_strava_tokens("u1"), world.store.get_account("u1"))
    world.push(event("update", ATHLETE, at=5, object_type="athlete", authorized="true"))
    assert world.work() == 1
    assert world.strava.refreshes == 0
    assert (world.store.get_strava_tokens("u1"), world.store.get_account("u1")) == before
    assert world.audit_kinds() == []


def test_an_event_of_a_kind_without_a_handler_is_dropped_with_its_reason(
    world: World,
) -> None:
    """Should a queue hand over an event of a kind no handler takes (parse_event admits
    none today), it is settled as dropped under reason "unknown_kind": no Strava
    request, no row, no retry, no dead letter."""
    odd = replace(event("create", at=1), aspect_type="archive")
    queue = HandedQueue([QueuedEvent(queue_id=1, event=odd, attempts=0, enqueued_at=world.now)])
    counts = process_events(queue, world.store, world.strava_for, now=world.now, stats=world.stats)
    assert (counts.dropped, counts.claimed) == (1, 1)
    assert queue.settled == {1: "complete"}
    assert world.stats.get("events_dropped_unknown_kind") == 1
    assert world.strava.fetches == []
    assert world.store.list_workouts("u1", include_deleted=True) == []


def test_receiver_and_worker_log_under_the_mirrors_logger_name(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    """The JSON lines' "logger" field, which operators filter on, is the one the mirror
    had before it was split in files: the receiver's lines and the worker's alike."""
    caplog.set_level(logging.INFO)
    world.strava.activities[7] = activity(7)
    receiver = WebhookReceiver(
        world.queue,
        verify_token="tok",
        subscription_id=SUB,
        stats=world.stats,
        clock=lambda: world.now,
    )
    assert receiver.receive(event("create", at=1).to_json().encode()) == RECEIVED
    world.work()
    lines = {
        r.getMessage(): r.name
        for r in caplog.records
        if r.getMessage().startswith(("webhook.", "mirror."))
    }
    assert lines == {
        "webhook.event_queued": "garmin2strava.services.mirror",
        "mirror.processed": "garmin2strava.services.mirror",
    }


def test_receiver_answers_valid_duplicate_and_foreign_events_alike(world: World) -> None:
    """New, redelivered and foreign-subscription events get one answer (200, same body);
    only the new one is queued; the difference is in the counters."""
    receiver = WebhookReceiver(
        world.queue,
        verify_token="tok",
        subscription_id=SUB,
        stats=world.stats,
        clock=lambda: world.now,
    )
    good = event("update", at=1, title="x").to_json().encode()
    foreign = replace(event("create"), subscription_id=SUB + 1).to_json().encode()
    answers = [receiver.receive(good), receiver.receive(good), receiver.receive(foreign)]
    assert answers == [RECEIVED, RECEIVED, RECEIVED]
    assert receiver.receive(b"{").status == 400
    assert world.queue.depth() == 1
    assert world.stats.snapshot() == {
        "events_received": 1,
        "events_duplicate": 1,
        "events_rejected_bad": 1,
        "events_rejected_foreign": 1,
    }


def test_receiver_refuses_every_event_while_no_subscription_is_known(world: World) -> None:
    """No setting and nothing stored: every event gets 503, nothing is queued; once the
    stored id is read, its events are queued."""
    stored: list[int | None] = [None]
    source = SubscriptionSource(read=lambda: stored[0])
    source.load()
    receiver = WebhookReceiver(
        world.queue,
        verify_token="tok",
        subscriptions=source,
        stats=world.stats,
        clock=lambda: world.now,
    )
    good = event("create", at=1).to_json().encode()
    assert receiver.receive(good) == NOT_READY
    assert world.queue.depth() == 0
    assert world.stats.get("events_rejected_unconfigured") == 1
    stored[0] = SUB
    source.load()
    assert receiver.receive(good) == RECEIVED
    assert world.queue.depth() == 1


def test_subscription_source_rereads_in_the_background_when_stale() -> None:
    """A stale id starts one background re-read and is served meanwhile; the setting,
    when given, wins over the store and is never read."""
    clock = [0.0]
    reads: list[float] = []
    value = [SUB]

    def read() -> int | None:
        reads.append(clock[0])
        return value[0]

    source = SubscriptionSource(read=read, refresh_s=60, monotonic=lambda: clock[0])
    assert source.load() == SUB
    value[0] = SUB + 1
    clock[0] = 30.0
    assert source.current() == SUB
    clock[0] = 61.0
    assert source.current() == SUB  # served at once, the re-read runs meanwhile
    deadline = time.monotonic() + 5
    while source.current() != SUB + 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert source.current() == SUB + 1
    assert reads == [0.0, 61.0]
    fixed = SubscriptionSource(fixed=SUB, read=read)
    assert (fixed.load(), fixed.current(), fixed.source) == (SUB, SUB, "setting")
    assert reads == [0.0, 61.0]


def test_event_dated_far_in_the_future_is_refused_and_cannot_beat_real_renames(
    world: World,
) -> None:
    """A forged title dated 2100 is a 400 and never queued; the real rename after it is
    applied. An event_time of 2**62 is a 400, and the worker keeps running."""
    world.strava.activities[7] = activity(7)
    world.push(event("create", at=1))
    world.work()
    receiver = WebhookReceiver(
        world.queue,
        verify_token="tok",
        subscription_id=SUB,
        stats=world.stats,
        clock=lambda: world.now,
    )
    forged = replace(event("update", at=0, title="forged"), event_time=4_102_444_800)  # 2100
    assert receiver.receive(forged.to_json().encode()) == WebhookAnswer(
        400, {"error": "event_time is in the future"}
    )
    absurd = replace(event("update", at=0, title="absurd"), event_time=2**62)
    assert receiver.receive(absurd.to_json().encode()) == WebhookAnswer(
        400, {"error": "event_time out of range"}
    )
    skewed = event("update", at=60 + 290, title="skewed")  # 290 s ahead of the clock: allowed
    assert receiver.receive(skewed.to_json().encode()) == RECEIVED
    world.work()
    assert world.row().name == "skewed"
    world.now += timedelta(minutes=10)
    real = replace(event("update", title="real"), event_time=int(world.now.timestamp()))
    assert receiver.receive(real.to_json().encode()) == RECEIVED
    world.work()
    assert world.row().name == "real"


def test_late_create_after_fetching_update_costs_no_second_fetch(world: World) -> None:
    """An update fetched first; the create arriving later with a newer update: no new fetch."""
    world.strava.activities[7] = activity(7)
    world.push(event("update", at=2, title="Morning Run"))
    world.work()
    world.push(event("create", at=1), event("update", at=3, title="Later"))
    world.work()
    assert world.strava.fetches == [7]
    assert world.row().name == "Later"


def test_late_title_after_newer_type_keeps_both_changes(world: World) -> None:
    """A title change processed after a newer type change lands; an older type does not
    (the per-field times go through the SQLite store's codec between claims)."""
    world.strava.activities[7] = activity(7)
    for events in (
        [event("create", at=1)],
        [event("update", at=200, type="Hike")],
        # Delivered late (a redelivery, or another claim): older than the type change.
        [event("update", at=100, title="Renamed"), event("update", at=150, type="Walk")],
    ):
        world.push(*events)
        assert world.work() == len(events)
    row = world.row()
    assert (row.name, row.sport_type) == ("Renamed", "Hike")
    assert row.updated_at == T0 + timedelta(seconds=200)
    assert world.strava.fetches == [7]


# -- a Strava outage (issue 9) -----------------------------------------------------------
def test_an_hour_of_strava_outage_dead_letters_none_of_its_events(world: World) -> None:
    """Strava answers 503 for an hour while five creates arrive, one every 12 minutes;
    the worker runs every 5 s. No event is dead-lettered; tries come at most 15 min
    apart, one a pass at most (the groups behind a failed fetch wait unsent); once
    Strava is back every event is mirrored within 15 minutes."""
    outage_end = world.now + timedelta(hours=1)
    world.strava.down = True
    fetch_times: list[datetime] = []
    arrivals = {world.now + timedelta(minutes=12 * i): 100 + i for i in range(5)}
    while world.now < outage_end:
        for at in [t for t in arrivals if t <= world.now]:
            activity_id = arrivals.pop(at)
            world.strava.activities[activity_id] = activity(activity_id)
            world.push(event("create", activity_id, at=int((at - T0).total_seconds())))
        before = len(world.strava.fetches)
        world.work(advance=5)
        assert len(world.strava.fetches) - before <= 1
        fetch_times += [world.now] * (len(world.strava.fetches) - before)
    assert world.queue.list_dead() == []
    assert world.stats.get("events_dead") == 0
    gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(fetch_times)]
    assert max(gaps) <= OUTAGE_MAX_WAIT_SECONDS + 5
    tries_in_outage = len(world.strava.fetches)

    world.strava.down = False
    mirrored_at = None
    while world.now < outage_end + timedelta(minutes=16):
        world.work(advance=5)
        if all(world.store.get_workout("u1", 100 + i) for i in range(5)):
            mirrored_at = world.now
            break
    assert mirrored_at is not None
    assert mirrored_at - outage_end <= timedelta(seconds=OUTAGE_MAX_WAIT_SECONDS + 10)
    assert world.queue.depth() == 0
    assert world.queue.list_dead() == []
    # Every request the hour cost, for five events (printed with -s for the record).
    assert tries_in_outage <= 60, tries_in_outage
    print(  # noqa: T201 - the figure
        f"\noutage hour: {tries_in_outage} fetches for 5 events, longest gap {max(gaps):.0f} s, "
        f"mirrored {(mirrored_at - outage_end).total_seconds():.0f} s after the outage"
    )


def test_a_permanent_error_after_an_outage_still_goes_dead(world: World) -> None:
    """Outage tries do not shield an event from a permanent error: a token Strava
    refuses dead-letters it at once, with its audit event."""
    world.strava.down = True
    world.push(event("create", at=1))
    for _ in range(5):
        world.work(advance=60)
    assert world.queue.list_dead() == []
    world.strava.down = False
    world.strava.fail_with = [StravaAuthError("refresh refused")]
    world.work(advance=OUTAGE_MAX_WAIT_SECONDS)
    assert [d.event.object_id for d in world.queue.list_dead()] == [7]


def test_an_inactive_application_defers_events_without_an_attempt(world: World) -> None:
    """StravaAppInactive (the application's 403) puts the batch back until the next
    window, every group unsent but the first, and never counts an attempt."""
    until = world.now + timedelta(minutes=14)
    world.strava.fail_with = [StravaAppInactive(until)]
    world.strava.activities |= {7: activity(7), 8: activity(8)}
    world.push(event("create", 7, at=1), event("create", 8, at=2))
    assert world.work() == 0
    assert world.strava.fetches == [7]
    assert world.stats.get("events_deferred") == 2
    assert world.stats.get("events_failed") == 0
    world.now = until
    assert world.work() == 2
    assert world.queue.list_dead() == []


# -- streams (G2S_MIRROR_STREAMS) --------------------------------------------------------
STREAMS = ("time", "heartrate")


def recorded(activity_id: int, *, manual: bool = False) -> dict[str, Any]:
    """An activity from a device file (or entered by hand), as Strava's JSON has it."""
    return activity(activity_id) | {
        "manual": manual,
        "upload_id": None if manual else 9000 + activity_id,
        "external_id": None if manual else f"garmin2strava-{activity_id}.fit",
    }


def strava_streams(points: int) -> dict[str, dict[str, Any]]:
    def stream(data: list[Any]) -> dict[str, Any]:
        return {
            "data": data,
            "series_type": "distance",
            "original_size": points,
            "resolution": "high",
        }

    return {
        "time": stream(list(range(points))),
        "heartrate": stream([120 + n % 7 for n in range(points)]),
        "distance": stream([n * 2.5 for n in range(points)]),
        "watts": stream([200] * points),
    }


def test_created_activity_gets_its_streams_in_one_read_once(world: World) -> None:
    """With streams on, a create brings the activity and its wanted streams (one read
    after the fetch); a later create event for it reads neither again."""
    world.stream_types = STREAMS
    world.strava.activities[7] = recorded(7)
    world.strava.streams[7] = strava_streams(5)
    world.push(event("create"))
    assert world.work() == 1
    assert world.strava.fetches == [7]
    assert world.strava.stream_reads == [7]
    kept = world.store.get_streams("u1", 7)
    assert kept is not None
    assert sorted(kept.streams) == ["heartrate", "time"]  # only what was asked for
    assert kept.streams["heartrate"]["data"] == [120, 121, 122, 123, 124]
    world.push(event("create", at=30))  # a second create (a redelivery with a new time)
    world.work()
    assert world.strava.stream_reads == [7]


def test_manual_activities_and_streams_off_spend_no_stream_read(world: World) -> None:
    """A manual activity has no file: no stream read. Without G2S_MIRROR_STREAMS no
    activity gets one."""
    world.strava.activities[8] = recorded(8)
    world.strava.streams[8] = strava_streams(3)
    world.push(event("create", 8))
    world.work()
    world.stream_types = STREAMS
    world.strava.activities[9] = recorded(9, manual=True)
    world.push(event("create", 9))
    world.work()
    assert world.strava.fetches == [8, 9]
    assert world.strava.stream_reads == []
    assert (world.store.get_streams("u1", 8), world.store.get_streams("u1", 9)) == (None, None)
    assert world.store.list_pending_streams("u1") == []


def test_activity_without_streams_is_recorded_and_never_asked_again(world: World) -> None:
    """Strava's 404 for the streams is kept as 'none': a catch-up reads nothing more."""
    world.stream_types = STREAMS
    world.strava.activities[7] = recorded(7)
    world.push(event("create"))
    world.work()
    kept = world.store.get_streams("u1", 7)
    assert kept is not None
    assert not kept.found
    catch_up_streams(world.store, world.strava, "u1", STREAMS, now=world.now)
    assert world.strava.stream_reads == [7]


def test_short_budget_defers_streams_and_catch_up_reads_them_all(world: World) -> None:
    """While the budget is kept for the uploader, creates still settle (the activity is
    stored) and their streams are marked pending; once it reopens, a catch-up reads
    each pending one once, and none is lost."""
    world.stream_types = STREAMS
    reopens = world.now + timedelta(minutes=15)
    world.strava.stream_budget_until = reopens
    for activity_id in (7, 8, 9):
        world.strava.activities[activity_id] = recorded(activity_id)
        world.strava.streams[activity_id] = strava_streams(4)
        world.push(event("create", activity_id))
    assert world.work() == 3
    assert sorted(w.activity_id for w in world.store.list_workouts("u1")) == [7, 8, 9]
    assert world.store.list_pending_streams("u1") == [7, 8, 9]
    early = catch_up_streams(world.store, world.strava, "u1", STREAMS, now=world.now)
    assert (early.stored, early.until) == (0, reopens)
    assert world.strava.stream_reads == []

    world.strava.stream_budget_until = None
    later = catch_up_streams(world.store, world.strava, "u1", STREAMS, now=reopens)
    assert later.stored == 3
    assert world.strava.stream_reads == [7, 8, 9]
    assert world.store.list_pending_streams("u1") == []
    assert all(world.store.get_streams("u1", a) is not None for a in (7, 8, 9))


def test_a_stream_read_that_keeps_failing_backs_off_then_is_given_up(world: World) -> None:
    """Strava answering 500 for one activity's streams: each failure counts in the
    pending mark and waits longer (5, 10, 20 ... min; a catch-up before then reads
    nothing); the 8th gives it up, kept as read with no streams and a note, and no
    later pass reads it again. The other activities are read as usual."""
    world.stream_types = STREAMS
    for activity_id in (7, 8):
        world.strava.activities[activity_id] = recorded(activity_id)
        world.strava.streams[activity_id] = strava_streams(3)
    world.strava.stream_errors[7] = TransientError("Strava answered 500")
    world.push(event("create", 7))
    world.push(event("create", 8))
    assert world.work() == 2
    assert world.strava.stream_reads == [7, 8]
    mark = world.store.get_pending_streams("u1", 7)
    assert mark is not None
    assert (mark.failures, mark.retry_at) == (1, world.now + timedelta(minutes=5))
    assert world.store.get_streams("u1", 8) is not None

    now = world.now
    early = catch_up_streams(world.store, world.strava, "u1", STREAMS, now=now)
    assert (early.reads, world.strava.stream_reads) == (0, [7, 8])  # not due yet
    waits = []
    while (mark := world.store.get_pending_streams("u1", 7)) is not None:
        assert mark.retry_at is not None
        waits.append(mark.retry_at - now)
        now = mark.retry_at
        catch_up_streams(world.store, world.strava, "u1", STREAMS, now=now)
    assert waits == [timedelta(minutes=m) for m in (5, 10, 20, 40, 80, 160, 320)]
    assert world.strava.stream_reads == [7, 8] + [7] * (MAX_STREAM_FAILURES - 1)
    kept = world.store.get_streams("u1", 7)
    assert kept is not None
    assert not kept.found
    assert kept.note is not None
    assert "gave up after 8 failed reads" in kept.note
    assert "Strava answered 500" in kept.note
    later = catch_up_streams(world.store, world.strava, "u1", STREAMS, now=now + timedelta(days=1))
    assert later.reads == 0
    assert world.strava.stream_reads.count(7) == MAX_STREAM_FAILURES


def test_a_refused_token_counts_no_stream_failure_and_ends_the_accounts_pass(
    world: World,
) -> None:
    """Strava refusing the account's token (a revoked athlete, a wrong client secret) is
    not the activity's fault: however many passes meet it, no failure is counted and no
    activity is given up; each pass spends one read and stops for the account. Once the
    token works again, every pending read is made."""
    world.stream_types = STREAMS
    for activity_id in (7, 8):
        world.strava.activities[activity_id] = recorded(activity_id)
        world.strava.streams[activity_id] = strava_streams(3)
    world.strava.stream_budget_until = world.now + timedelta(minutes=15)
    world.push(event("create", 7))
    world.push(event("create", 8))
    assert world.work() == 2  # both mirrored, their streams deferred for the budget
    world.strava.stream_budget_until = None
    for activity_id in (7, 8):
        world.strava.stream_errors[activity_id] = StravaAuthError("refresh refused")
    now = world.now
    for _ in range(MAX_STREAM_FAILURES + 2):
        now += timedelta(hours=6)
        refused = catch_up_streams(world.store, world.strava, "u1", STREAMS, now=now)
        assert (refused.reads, refused.refused, refused.left) == (1, True, 2)
    for activity_id in (7, 8):
        mark = world.store.get_pending_streams("u1", activity_id)
        assert mark is not None
        assert mark.failures == 0
        assert world.store.get_streams("u1", activity_id) is None
    world.strava.stream_errors.clear()
    fixed = catch_up_streams(world.store, world.strava, "u1", STREAMS, now=now)
    assert (fixed.stored, fixed.refused, fixed.left) == (2, False, 0)


def test_budget_deferrals_never_count_as_failed_stream_reads(world: World) -> None:
    """A read refused for the budget (RateLimited) keeps the failures counted so far
    and adds none, however often it happens; the next real failure is the 2nd."""
    world.stream_types = STREAMS
    world.strava.activities[7] = recorded(7)
    world.strava.stream_errors[7] = TransientError("Strava answered 500")
    world.push(event("create", 7))
    world.work()
    mark = world.store.get_pending_streams("u1", 7)
    assert mark is not None
    assert mark.failures == 1
    assert mark.retry_at is not None
    due = mark.retry_at
    world.strava.stream_budget_until = due + timedelta(minutes=15)
    for _ in range(MAX_STREAM_FAILURES + 2):
        deferred = catch_up_streams(world.store, world.strava, "u1", STREAMS, now=due)
        assert deferred.until == due + timedelta(minutes=15)
    assert world.store.get_pending_streams("u1", 7) == mark
    world.strava.stream_budget_until = None
    catch_up_streams(world.store, world.strava, "u1", STREAMS, now=due)
    again = world.store.get_pending_streams("u1", 7)
    assert again is not None
    assert again.failures == 2
    assert again.retry_at == due + timedelta(minutes=10)
    assert world.store.get_streams("u1", 7) is None
