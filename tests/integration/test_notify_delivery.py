"""Telling for real: services/notify.py with the real Apprise delivering to loopback
destinations (a JSON webhook, an SMTP server), on SQLite and on DynamoDB (moto). Once
per condition across cycles and a restart, a recovery, a channel down then up, two
processes on one store, a channel that answers after 30 s, a store from before."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from g2s_harness.notify_catchers import JsonCatcher, SmtpCatcher
from garmin2strava.adapters.apprise_channel import NOTIFY_TIMEOUT_S, AppriseChannel
from garmin2strava.adapters.crypto import AesGcmCipher
from garmin2strava.adapters.store.dynamodb import DynamoDBStore
from garmin2strava.adapters.store.sqlite import SqliteStore
from garmin2strava.domain.conditions import Observation
from garmin2strava.domain.models import Account
from garmin2strava.ports import Store
from garmin2strava.services.notify import NOTIFY_STATE_KEY, open_conditions, tell

pytestmark = pytest.mark.integration

T0 = datetime(2026, 12, 1, 6, 0, tzinfo=UTC)
KEY = bytes(range(32))
DEAD = ("uploads.dead", "alice")
INACTIVE = ("strava.app_inactive", None)
CHECKED = (DEAD, INACTIVE)
GAVE_UP = Observation(*DEAD, detail='"Morning Run" of 2026-11-30 (Garmin 1234)', since=T0)


def _cycle(store: Store, channel: AppriseChannel, observed: list[Observation], minute: int) -> None:
    tell(store, channel, observed, CHECKED, now=T0 + timedelta(minutes=minute), owner="daemon")


@pytest.fixture
def reopen(store: Store) -> Iterator[Callable[[], Store]]:
    """Another store object on the same SQLite file or DynamoDB table: a restart."""
    opened: list[SqliteStore] = []

    def again() -> Store:
        if isinstance(store, SqliteStore):
            opened.append(SqliteStore(store._path, AesGcmCipher(KEY)))
            return opened[-1]
        assert isinstance(store, DynamoDBStore)
        return DynamoDBStore(store._table_name, AesGcmCipher(KEY))

    yield again
    for one in opened:
        one.close()


def test_one_notification_over_ten_cycles_and_a_restart_then_one_recovery(
    store: Store, reopen: Callable[[], Store]
) -> None:
    with JsonCatcher() as hook:
        for minute in range(5):
            _cycle(store, AppriseChannel([hook.url()]), [GAVE_UP], minute)
        restarted = reopen()
        channel = AppriseChannel([hook.url()])
        for minute in range(5, 10):
            _cycle(restarted, channel, [GAVE_UP], minute)
        assert [s.key for s in open_conditions(restarted)] == ["uploads.dead"]
        for minute in range(10, 13):
            _cycle(restarted, channel, [], minute)
        bodies = hook.bodies()
    assert [(b["title"], b["type"]) for b in bodies] == [
        ("[garmin2strava] uploads.dead started", "failure"),
        ("[garmin2strava] uploads.dead cleared", "success"),
    ]
    started = bodies[0]["message"]
    assert '"Morning Run" of 2026-11-30 (Garmin 1234)' in started
    assert "garmin2strava uploads retry --user alice GARMIN_ID" in started
    assert open_conditions(restarted) == []


def test_a_channel_down_then_up_delivers_exactly_once(store: Store) -> None:
    """The destination answers 503 for three cycles (one attempt each), then takes it:
    one notification, however many cycles follow."""
    with JsonCatcher() as hook:
        hook.status = 503
        channel = AppriseChannel([hook.url()])
        for minute in range(3):
            _cycle(store, channel, [GAVE_UP], minute)
        assert (hook.refused, hook.bodies()) == (3, [])
        hook.status = 200
        for minute in range(3, 8):
            _cycle(store, AppriseChannel([hook.url()]), [GAVE_UP], minute)
        assert len(hook.bodies()) == 1


def test_a_store_from_before_notifications_works(store: Store) -> None:
    """A store with accounts and history but no notification item (every store made
    before this): nothing reads as open, the first condition is told and recorded."""
    store.put_account(Account(user_id="alice"))
    assert store.get_app_state(NOTIFY_STATE_KEY) is None
    assert open_conditions(store) == []
    with JsonCatcher() as hook:
        _cycle(store, AppriseChannel([hook.url()]), [GAVE_UP], 0)
        assert len(hook.bodies()) == 1
    assert [s.user_id for s in open_conditions(store)] == ["alice"]
    (event,) = store.list_audit("alice")
    assert (event.kind, event.detail) == (
        "notify.sent",
        {"key": "uploads.dead", "userId": "alice", "kind": "started"},
    )


def test_the_mail_arrives_with_the_account_and_the_fix(tmp_path: Path) -> None:
    """mailto:// to a real SMTP server: the subject is the title, the text names the
    account, what happened, since when, and the command that fixes it."""
    with (
        SmtpCatcher(user="mailer", password="pw-0xfeed") as smtp,
        SqliteStore(tmp_path / "g2s.sqlite3", AesGcmCipher(KEY)) as store,
    ):
        _cycle(store, AppriseChannel([smtp.url()]), [GAVE_UP], 0)
        (mail,) = smtp.mails
    assert mail.subject == "[garmin2strava] uploads.dead started"
    assert "Account: alice" in mail.text
    assert "An upload used up its attempts and is given up." in mail.text
    assert "Since: 2026-12-01 06:00 UTC" in mail.text
    assert "garmin2strava uploads retry --user alice GARMIN_ID" in mail.text


def test_a_channel_that_answers_after_30_s_costs_a_call_one_timeout(tmp_path: Path) -> None:
    """Three notices owed to a destination that answers after 30 s: the call gives up
    the first at the channel's timeout and starts no other (they stay owed)."""
    observed = [
        GAVE_UP,
        Observation(*INACTIVE, detail="403", since=T0),
        Observation("garmin.tokens_refused", "alice", detail="401", since=T0),
    ]
    checked = [*CHECKED, ("garmin.tokens_refused", "alice")]
    with (
        JsonCatcher(delay_s=30) as slow,
        SqliteStore(tmp_path / "g2s.sqlite3", AesGcmCipher(KEY)) as store,
    ):
        started = time.monotonic()
        report = tell(store, AppriseChannel([slow.url()]), observed, checked, now=T0, owner="d")
        elapsed = time.monotonic() - started
    assert (len(report.sent), len(report.owed)) == (0, 3)
    assert elapsed < NOTIFY_TIMEOUT_S + 5


CHILD = """
import json, os, sys, time
from datetime import UTC, datetime
from pathlib import Path
from garmin2strava.adapters.apprise_channel import AppriseChannel
from garmin2strava.adapters.crypto import AesGcmCipher
from garmin2strava.adapters.store.sqlite import SqliteStore
from garmin2strava.domain.conditions import Observation
from garmin2strava.services.notify import tell

db, url, start_at = sys.argv[1], sys.argv[2], float(sys.argv[3])
t0 = datetime(2026, 12, 1, 6, 0, tzinfo=UTC)
seen = [Observation("strava.app_inactive", None, detail="403", since=t0)]
checked = [("strava.app_inactive", None)]
with SqliteStore(Path(db), AesGcmCipher(bytes(range(32)))) as store:
    channel = AppriseChannel([url])
    time.sleep(max(0.0, start_at - time.time()))
    reports = []
    for _ in range(5):
        now = datetime.now(UTC)  # the lease's expiry is read on the clock both share
        reports.append(tell(store, channel, seen, checked, now=now, owner=str(os.getpid())))
        time.sleep(0.3)
print(json.dumps({"sent": sum(len(r.sent) for r in reports), "busy": sum(r.busy for r in reports)}))
"""


def test_two_processes_on_one_sqlite_file_send_once(tmp_path: Path) -> None:
    """Two runner processes start telling the same condition at the same moment, five
    cycles each; the destination answers slowly (the lease is held meanwhile): one
    notification in all, and the other process found the lease taken at least once."""
    db = tmp_path / "g2s.sqlite3"
    SqliteStore(db, AesGcmCipher(KEY)).close()  # the schema, before they race
    with JsonCatcher(delay_s=2) as hook:
        start_at = str(time.time() + 4)
        children = [
            subprocess.Popen(  # noqa: S603 (our interpreter, fixed code)
                [sys.executable, "-c", CHILD, str(db), hook.url(), start_at],
                stdout=subprocess.PIPE,
                text=True,
                env=os.environ.copy(),
            )
            for _ in range(2)
        ]
        outputs = [child.communicate(timeout=60)[0] for child in children]
        assert [child.returncode for child in children] == [0, 0]
        assert len(hook.bodies()) == 1
    results = [json.loads(out.strip().splitlines()[-1]) for out in outputs]
    assert sum(r["sent"] for r in results) == 1
    assert sum(r["busy"] for r in results) >= 1
