"""Telling, as a use case (services/notify.py): the real SQLite store, a channel that
records what it is given. One notice when a condition starts, one when it clears,
across cycles and restarts; owed until delivered; one runner at a time; from memory
when the store cannot be written."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from garmin2strava.adapters.crypto import AesGcmCipher
from garmin2strava.adapters.store.sqlite import SqliteStore
from garmin2strava.domain.conditions import Observation
from garmin2strava.domain.models import Account
from garmin2strava.services.notify import (
    NOTIFY_LEASE,
    NOTIFY_STATE_KEY,
    SEND_BUDGET_S,
    open_conditions,
    tell,
)

T0 = datetime(2026, 12, 1, 6, 0, tzinfo=UTC)
KEY = bytes(range(32))
GARMIN = ("garmin.tokens_refused", "alice")
INACTIVE = ("strava.app_inactive", None)
CHECKED = (GARMIN, INACTIVE)
REFUSED = Observation(*GARMIN, detail="Garmin answered 401 to the token refresh", since=T0)
APP_DOWN = Observation(*INACTIVE, detail="403 Application Status Inactive", since=T0)


class Channel:
    """A NotifyChannel that keeps what it was given; `up` False: it refuses."""

    def __init__(self) -> None:
        self.up = True
        self.got: list[tuple[str, str, str]] = []
        self.refused = 0

    def send(self, title: str, body: str, notify_type: str) -> bool:
        if not self.up:
            self.refused += 1
            return False
        self.got.append((title, body, notify_type))
        return True

    @property
    def titles(self) -> list[str]:
        return [title for title, _, _ in self.got]


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "g2s.sqlite3"


@pytest.fixture
def store(db: Path) -> Iterator[SqliteStore]:
    with SqliteStore(db, AesGcmCipher(KEY)) as opened:
        for user in ("alice", "bob"):
            opened.put_account(Account(user_id=user))
        yield opened


def _cycle(
    store: Any, channel: Channel | None, observed: list[Observation], minute: int, **kw: Any
) -> Any:
    return tell(
        store,
        channel,
        observed,
        kw.pop("checked", CHECKED),
        now=T0 + timedelta(minutes=minute),
        owner=kw.pop("owner", "runner-1"),
        **kw,
    )


def test_a_condition_is_told_once_over_ten_cycles_and_a_restart_then_its_clearing(
    store: SqliteStore, db: Path
) -> None:
    channel = Channel()
    for minute in range(5):
        _cycle(store, channel, [REFUSED], minute)
    with SqliteStore(db, AesGcmCipher(KEY)) as restarted:
        for minute in range(5, 10):
            _cycle(restarted, channel, [REFUSED], minute)
        assert channel.titles == ["[garmin2strava] garmin.tokens_refused started"]
        ((_, body, kind),) = channel.got
        assert kind == "failure"
        assert "Account: alice" in body
        assert "Garmin answered 401 to the token refresh" in body
        assert "Since: 2026-12-01 06:00 UTC" in body
        assert "Fix: log in again: garmin2strava garmin login --user alice" in body
        assert [s.key for s in open_conditions(restarted)] == ["garmin.tokens_refused"]

        report = _cycle(restarted, channel, [], 10)
        assert [n.title for n in report.sent] == ["[garmin2strava] garmin.tokens_refused cleared"]
        assert channel.got[-1][2] == "success"
        for minute in range(11, 14):
            _cycle(restarted, channel, [], minute)
        assert len(channel.got) == 2
        assert open_conditions(restarted) == []
        assert restarted.get_app_state(NOTIFY_STATE_KEY) == {"states": {}}


def test_a_channel_that_is_down_is_retried_each_cycle_and_tells_once(store: SqliteStore) -> None:
    channel = Channel()
    channel.up = False
    for minute in range(3):
        report = _cycle(store, channel, [REFUSED], minute)
        assert [n.state.key for n in report.owed] == ["garmin.tokens_refused"]
    assert channel.refused == 3  # one attempt per cycle
    channel.up = True
    for minute in range(3, 6):
        _cycle(store, channel, [REFUSED], minute)
    assert channel.titles == ["[garmin2strava] garmin.tokens_refused started"]


def test_a_start_that_timed_out_but_arrived_still_gets_its_clearing(store: SqliteStore) -> None:
    """The endpoint took the start, but answered after the channel's time ran out (the
    channel says not delivered). The condition clears before the next attempt: its
    clearing is told all the same, so the owner is not left with a start alone."""

    class Late(Channel):
        late = True

        def send(self, title: str, body: str, notify_type: str) -> bool:
            self.got.append((title, body, notify_type))  # it arrived...
            return not self.late  # ...too late for the channel to know

    channel = Late()
    report = _cycle(store, channel, [REFUSED], 0)
    assert [n.state.key for n in report.owed] == ["garmin.tokens_refused"]
    channel.late = False
    _cycle(store, channel, [], 1)  # cleared before the start was retried
    assert channel.titles == [
        "[garmin2strava] garmin.tokens_refused started",
        "[garmin2strava] garmin.tokens_refused cleared",
    ]
    assert open_conditions(store) == []


def test_a_start_never_attempted_is_forgotten_when_it_clears(store: SqliteStore) -> None:
    """A start no attempt was made for (the call was out of time) cannot have arrived:
    if the condition clears before an attempt, it is over without a word."""
    channel = Channel()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("garmin2strava.services.notify.SEND_BUDGET_S", 0.0)
        report = _cycle(store, channel, [REFUSED], 1)
    assert [n.state.key for n in report.owed] == ["garmin.tokens_refused"]
    _cycle(store, channel, [], 2)
    assert channel.got == []
    assert open_conditions(store) == []


def test_a_condition_that_was_not_looked_at_neither_opens_nor_clears(store: SqliteStore) -> None:
    """The webhook worker does not see Garmin: its calls leave Garmin's condition be."""
    channel = Channel()
    _cycle(store, channel, [REFUSED], 0)
    _cycle(store, channel, [], 1, checked=[INACTIVE])
    assert len(channel.got) == 1
    assert [s.key for s in open_conditions(store)] == ["garmin.tokens_refused"]


def test_an_app_wide_condition_names_no_account_and_is_audited_on_every_account(
    store: SqliteStore,
) -> None:
    channel = Channel()
    _cycle(store, channel, [APP_DOWN, REFUSED], 0)
    bodies = {title: body for title, body, _ in channel.got}
    app_body = bodies["[garmin2strava] strava.app_inactive started"]
    assert "For the whole installation." in app_body
    assert "alice" not in app_body
    audits = {u: [(e.kind, e.detail) for e in store.list_audit(u)] for u in ("alice", "bob")}
    app_sent = ("notify.sent", {"key": "strava.app_inactive", "userId": None, "kind": "started"})
    alice_sent = (
        "notify.sent",
        {"key": "garmin.tokens_refused", "userId": "alice", "kind": "started"},
    )
    assert sorted(audits["alice"], key=str) == sorted([app_sent, alice_sent], key=str)
    assert audits["bob"] == [app_sent]


def test_with_no_channel_the_conditions_are_tracked_and_nothing_is_sent(store: SqliteStore) -> None:
    """No G2S_NOTIFY_URLS: `status` still lists what is open; a channel configured later
    does not send a start it would have sent long ago."""
    report = _cycle(store, None, [REFUSED], 0)
    assert [n.state.key for n in report.sent] == ["garmin.tokens_refused"]
    assert [s.key for s in open_conditions(store)] == ["garmin.tokens_refused"]
    assert store.list_audit("alice") == []
    channel = Channel()
    _cycle(store, channel, [REFUSED], 1)
    assert channel.got == []


def test_a_runner_that_holds_the_lease_keeps_the_others_out(store: SqliteStore) -> None:
    channel = Channel()
    assert store.acquire_lease(NOTIFY_LEASE, "runner-2", now=T0, ttl_seconds=120)
    report = _cycle(store, channel, [REFUSED], 0)
    assert report.busy
    assert channel.got == []
    store.release_lease(NOTIFY_LEASE, "runner-2")
    _cycle(store, channel, [REFUSED], 1)
    assert len(channel.got) == 1


def test_an_idle_cycle_writes_nothing(store: SqliteStore, db: Path) -> None:
    """Nothing observed, nothing open: one read, no write (no lease, no state item)."""
    _cycle(store, Channel(), [], 0)
    assert store.get_app_state(NOTIFY_STATE_KEY) is None
    with sqlite3.connect(db) as raw:
        (leases,) = raw.execute(
            "SELECT count(*) FROM items WHERE pk = ?", (f"USER#{NOTIFY_LEASE}",)
        ).fetchone()
    assert leases == 0


def test_a_channel_that_hangs_costs_a_call_about_one_attempt(
    store: SqliteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Three notices owed, each attempt taking the whole budget: one attempt, two left
    owed for the next call (which sends one more)."""
    clock = [0.0]

    class Slow(Channel):
        def send(self, title: str, body: str, notify_type: str) -> bool:
            clock[0] += SEND_BUDGET_S
            return super().send(title, body, notify_type)

    monkeypatch.setattr("garmin2strava.services.notify.time.monotonic", lambda: clock[0])
    channel = Slow()
    third = Observation("uploads.dead", "bob", detail="Morning Run, 2026-11-30", since=T0)
    report = _cycle(store, channel, [REFUSED, APP_DOWN, third], 0)
    assert (len(report.sent), len(report.owed)) == (1, 2)
    report = _cycle(store, channel, [REFUSED, APP_DOWN, third], 1)
    assert (len(report.sent), len(report.owed)) == (1, 1)


class DiskFull:
    """The real store, whose writes fail as SQLite's do on a full disk."""

    def __init__(self, store: SqliteStore) -> None:
        self.store = store
        self.full = True

    def __getattr__(self, name: str) -> Any:
        writes = {"put_app_state", "acquire_lease", "release_lease", "add_audit"}
        if self.full and name in writes:

            def fail(*_args: Any, **_kwargs: Any) -> Any:
                raise sqlite3.OperationalError("database or disk is full")

            return fail
        return getattr(self.store, name)


def test_a_store_that_cannot_be_written_tells_from_memory_once(store: SqliteStore) -> None:
    """The disk is full: told once by this process, however many cycles; once the disk
    has room, what was told is written and nothing is told again, then the clearing."""
    channel = Channel()
    full = DiskFull(store)
    for minute in range(3):
        report = _cycle(full, channel, [REFUSED], minute)
        assert report.from_memory
    assert len(channel.got) == 1
    assert store.get_app_state(NOTIFY_STATE_KEY) is None
    full.full = False
    report = _cycle(full, channel, [REFUSED], 3)
    assert not report.from_memory
    assert len(channel.got) == 1
    assert [s.key for s in open_conditions(store)] == ["garmin.tokens_refused"]
    _cycle(full, channel, [], 4)
    assert channel.titles[-1] == "[garmin2strava] garmin.tokens_refused cleared"
    assert len(channel.got) == 2


def test_a_full_disk_neither_repeats_what_was_told_nor_loses_a_clearing(
    store: SqliteStore,
) -> None:
    """Two conditions told, then the disk fills: nothing is told again (the store is
    still read), one clears and its clearing is told; once the disk has room the store
    holds the one still open."""
    channel = Channel()
    _cycle(store, channel, [REFUSED, APP_DOWN], 0)
    assert len(channel.got) == 2
    full = DiskFull(store)
    _cycle(full, channel, [REFUSED, APP_DOWN], 1)
    assert len(channel.got) == 2  # nothing told again
    _cycle(full, channel, [REFUSED], 2)
    assert channel.titles[-1] == "[garmin2strava] strava.app_inactive cleared"
    full.full = False
    _cycle(full, channel, [REFUSED], 3)
    assert len(channel.got) == 3
    assert [s.key for s in open_conditions(store)] == ["garmin.tokens_refused"]


def test_a_store_from_before_notifications_reads_as_nothing_open(store: SqliteStore) -> None:
    """No state item (every store before this): nothing open, and the first call
    creates it."""
    assert store.get_app_state(NOTIFY_STATE_KEY) is None
    assert open_conditions(store) == []
    _cycle(store, Channel(), [REFUSED], 0)
    assert store.get_app_state(NOTIFY_STATE_KEY) is not None


def test_a_channel_that_raises_counts_as_down_and_tell_returns(
    store: SqliteStore, caplog: pytest.LogCaptureFixture
) -> None:
    """A channel must not raise; one that does has failed this attempt, and the cycle
    goes on (the notice stays owed)."""

    class Broken(Channel):
        def send(self, _title: str, _body: str, _notify_type: str) -> bool:
            raise RuntimeError("boom with a secret-ish text")

    report = _cycle(store, Broken(), [REFUSED], 0)
    assert [n.state.key for n in report.owed] == ["garmin.tokens_refused"]
    assert "secret-ish" not in caplog.text
    channel = Channel()
    _cycle(store, channel, [REFUSED], 1)
    assert len(channel.got) == 1
