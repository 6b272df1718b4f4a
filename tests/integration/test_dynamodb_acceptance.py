"""The uploader's and the mirror's acceptance figures on DynamoDB (the AWS store): the
real app built on a DynamoDBStore (a fresh table on the session's local moto server,
tokens under KmsCipher or AesGcmCipher) against the Garmin/Strava sandboxes on
loopback, measured by the sandboxes' request counters.

- sync: an idle cycle is 1 Garmin request and 0 Strava; N new runs cost N uploads,
  <= 2 other Strava requests per upload, 1 Garmin download each, then idle;
- mirror: a create costs 1 Strava fetch even with updates queued behind it; a
  title/type/private update and a delete cost none (the delete is soft);
- crash injection: crash_child.py, pointed at the table through its environment, is
  SIGKILLed before a step of its cycle; the restart leaves every run on Strava once.

The SQLite twins: test_sync_cycle.py, test_webhook_sandbox.py, test_crash_injection.py.
"""

from __future__ import annotations

import contextlib
import os
import signal
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import boto3
import pytest

from g2s_harness.sandbox_settings import sandbox_settings
from g2s_sandbox.scenario import SandboxPair, seed_run
from g2s_sandbox.strava import StravaSandbox
from garmin2strava.adapters.crypto import AesGcmCipher, generate_token_key, parse_token_key
from garmin2strava.adapters.kms import KmsCipher
from garmin2strava.adapters.queue_sqlite import SqliteEventQueue
from garmin2strava.adapters.store.dynamodb import DynamoDBStore, create_table
from garmin2strava.adapters.strava_oauth import bootstrap_tokens_from_refresh_token
from garmin2strava.bootstrap import App, bootstrap, build_strava, utc_now
from garmin2strava.domain.models import Account, UploadOutcome, Workout
from garmin2strava.domain.upload_rules import external_id_for
from garmin2strava.domain.webhook import WebhookEvent
from garmin2strava.ports import StravaPort
from garmin2strava.services.accounts import ensure_settings_account
from garmin2strava.services.mirror_worker import process_events
from garmin2strava.services.strava_access import StravaAccess
from garmin2strava.services.sync import CycleReport
from garmin2strava.services.sync_accounts import sync_all
from garmin2strava.settings import Settings

if TYPE_CHECKING:
    from collections.abc import Callable
    from contextlib import AbstractContextManager

    # Types only: conftest.py is not importable at run time (--import-mode=importlib).
    from conftest import CrashStore, CrashWorld

    OpenWorld = Callable[[float], AbstractContextManager[CrashWorld]]

pytestmark = pytest.mark.integration

USER = "demo"  # SandboxPair.settings' G2S_USER_ID
START = datetime(2025, 6, 2, 6, 30, tzinfo=UTC)
HOUR = timedelta(hours=1)


@pytest.fixture
def table(aws_env: str) -> Iterator[str]:
    """A fresh, empty garmin2strava table on the local moto server."""
    client = boto3.client("dynamodb")
    name = f"g2s-acc-{uuid.uuid4().hex[:12]}"
    create_table(client, name)
    yield name
    client.delete_table(TableName=name)


NO_SQLITE_FILE = "must-not-exist.sqlite3"


def dynamodb_settings(pair: SandboxPair, table: str, tmp_path: Path, **overrides: Any) -> Settings:
    """Settings of a DynamoDB deployment; db_path names a file that must never appear."""
    return sandbox_settings(
        pair, tmp_path / NO_SQLITE_FILE, store="dynamodb", dynamodb_table=table, **overrides
    )


@pytest.fixture
def dynamo_app(pair: SandboxPair, table: str, tmp_path: Path) -> Iterator[App]:
    """The sync app on a DynamoDBStore whose tokens are sealed by a KMS key (moto)."""
    key_id = boto3.client("kms").create_key()["KeyMetadata"]["KeyId"]
    settings = dynamodb_settings(pair, table, tmp_path, kms_key_id=key_id, token_key=None)
    app = bootstrap(settings, store=DynamoDBStore(table, KmsCipher(key_id)))
    app.poll_delay_s = 0
    app.garmin_retry_min_wait_s = 0.01
    ensure_settings_account(app.store, settings, app.clock)
    yield app
    assert not settings.db_path.exists()  # nothing fell back to SQLite


def cycle(app: App) -> CycleReport:
    (report,) = sync_all(app.store, app.sync_deps)
    return report


# -- (a) idle cycles ----------------------------------------------------------------------
def test_first_idle_cycle_on_dynamodb_is_one_garmin_request(
    pair: SandboxPair, dynamo_app: App
) -> None:
    """A new account with no run on Garmin: 1 Garmin request, 0 Strava (no refresh)."""
    seed_run(pair, 100, start_utc=START, type_key="road_biking", name="Ride")

    report = cycle(dynamo_app)

    assert report.ok
    assert pair.garmin.requests == {"list": 1}
    assert pair.strava_total() == 0


def test_idle_cycle_after_settling_on_dynamodb(pair: SandboxPair, dynamo_app: App) -> None:
    """Once the runs are settled, each further cycle is 1 Garmin request and 0 Strava."""
    seed_run(pair, 101, start_utc=START)
    seed_run(pair, 102, start_utc=START + HOUR, type_key="trail_running")
    assert cycle(dynamo_app).outcomes["uploaded"] == 2

    for _ in range(3):
        pair.reset_counts()
        report = cycle(dynamo_app)
        assert report.ok
        assert not report.outcomes
        assert pair.garmin.requests == {"list": 1}
        assert pair.strava_total() == 0


# -- (b) new runs -------------------------------------------------------------------------
def test_new_runs_on_dynamodb_cost_one_upload_and_few_requests_each(
    pair: SandboxPair, dynamo_app: App
) -> None:
    """N new runs: N uploads, 1 upload request and <= 2 other Strava requests per run,
    1 Garmin download each; the ledger in DynamoDB names the Strava activities; the
    next cycle is idle."""
    runs = [
        seed_run(pair, 201 + i, start_utc=START + i * HOUR, name=f"Run {i}", duration_s=1500 + i)
        for i in range(5)
    ]
    n = len(runs)

    report = cycle(dynamo_app)

    assert report.ok
    assert report.outcomes == {"uploaded": n}
    with pair.strava.lock:
        requests = dict(pair.strava.requests)
        by_external_id = {a.external_id: a.activity_id for a in pair.strava.activities.values()}
    assert requests["upload"] == n
    assert sum(requests.values()) - n <= 2 * n
    # One gear request per uploaded run (issue 21): its Strava gear is set after it.
    assert pair.garmin.requests == {"list": 1, "download": n, "gear": n}
    ledger = dynamo_app.store.get_uploads(USER, [r.garmin_id for r in runs])
    for run in runs:
        entry = ledger[run.garmin_id]
        assert entry.outcome is UploadOutcome.UPLOADED
        assert entry.strava_activity_id == by_external_id[external_id_for(run.garmin_id)]
    assert dynamo_app.store.list_unsettled_uploads(USER) == []

    pair.reset_counts()
    assert not cycle(dynamo_app).outcomes
    assert pair.garmin.requests == {"list": 1}
    assert pair.strava_total() == 0


# -- (c) the mirror -----------------------------------------------------------------------
MIRROR_ATHLETE = 7001
MIRROR_SUB = 42


@dataclass
class Mirror:
    """The mirror worker's world: Strava sandbox, DynamoDB store, SQLite event queue."""

    strava: StravaSandbox
    store: DynamoDBStore
    queue: SqliteEventQueue
    adapter: StravaAccess

    def push(self, activity_id: int, aspect: str, at: datetime, **updates: str) -> None:
        event = WebhookEvent(
            object_type="activity",
            object_id=activity_id,
            aspect_type=aspect,
            owner_id=MIRROR_ATHLETE,
            subscription_id=MIRROR_SUB,
            event_time=int(at.timestamp()),
            updates=updates,
        )
        assert self.queue.enqueue(event, now=at)

    def work(self) -> int:
        """One worker pass; returns the Strava requests it made (counted by Strava)."""
        before = self.strava_requests()

        def strava_for(_user: str) -> StravaPort:
            return self.adapter

        counts = process_events(self.queue, self.store, strava_for, now=utc_now())
        assert counts.retried == counts.dead == counts.deferred == 0
        made = self.strava_requests() - before
        assert made == counts.fetches
        return made

    def strava_requests(self) -> int:
        with self.strava.lock:
            return sum(self.strava.requests.values())

    def row(self, activity_id: int) -> Workout:
        workout = self.store.get_workout(USER, activity_id)
        assert workout is not None
        return workout


@pytest.fixture
def mirror(table: str, tmp_path: Path) -> Iterator[Mirror]:
    store = DynamoDBStore(table, AesGcmCipher(os.urandom(32)))
    with StravaSandbox() as strava, contextlib.closing(SqliteEventQueue(tmp_path / "q.db")) as q:
        refresh = strava.add_athlete(MIRROR_ATHLETE)
        tokens = bootstrap_tokens_from_refresh_token(
            strava.client_id, strava.client_secret, refresh, strava.base_url
        )
        store.put_account(Account(user_id=USER, strava_athlete_id=MIRROR_ATHLETE))
        store.link_athlete(MIRROR_ATHLETE, USER)
        assert store.replace_strava_tokens(USER, tokens, expected_version=None) is not None
        adapter = build_strava(
            store,
            USER,
            client_id=strava.client_id,
            client_secret=strava.client_secret,
            where=strava.base_url,
        )
        yield Mirror(strava, store, q, adapter)


def test_mirror_on_dynamodb_fetches_once_per_create_and_never_for_updates_or_deletes(
    mirror: Mirror,
) -> None:
    """Create with two updates queued behind it: 1 fetch; title/type/private update: 0;
    delete: 0, and the DynamoDB row stays, marked deleted."""
    activity_id = mirror.strava.add_activity(
        MIRROR_ATHLETE, start_utc=START, elapsed_s=1800, name="Run"
    )
    mirror.strava.update_activity(activity_id, title="Renamed", private=True)
    t0 = utc_now() - timedelta(minutes=5)
    mirror.push(activity_id, "create", t0)
    mirror.push(activity_id, "update", t0 + timedelta(seconds=1), title="Renamed")
    mirror.push(activity_id, "update", t0 + timedelta(seconds=2), private="true")

    assert mirror.work() == 1
    row = mirror.row(activity_id)
    assert (row.name, row.sport_type, row.is_private, row.is_deleted) == (
        "Renamed",
        "Run",
        True,
        False,
    )

    mirror.push(activity_id, "update", t0 + timedelta(seconds=3), title="Hills", type="TrailRun")
    mirror.push(activity_id, "update", t0 + timedelta(seconds=4), private="false")
    assert mirror.work() == 0
    row = mirror.row(activity_id)
    assert (row.name, row.sport_type, row.is_private) == ("Hills", "TrailRun", False)

    mirror.push(activity_id, "delete", t0 + timedelta(seconds=5))
    assert mirror.work() == 0
    row = mirror.row(activity_id)
    assert row.is_deleted
    assert row.name == "Hills"
    assert mirror.store.list_workouts(USER) == []
    assert [w.activity_id for w in mirror.store.list_workouts(USER, include_deleted=True)] == [
        activity_id
    ]


# -- (c2) a table from before issue 21 -------------------------------------------------------
def test_a_table_from_before_issue_21_keeps_working(
    pair: SandboxPair, dynamo_app: App, table: str
) -> None:
    """An `uploaded` item exactly as the code before issue 21 put it (no `finish`
    attribute), written with boto3: read, never uploaded again, not in the uploader's
    index; a new run in the same table gets its gear in one PUT."""
    seed_run(pair, 50, start_utc=START, name="Old run")
    strava_id = pair.strava.add_activity(
        pair.athlete_id, start_utc=START, elapsed_s=1800, external_id=f"{external_id_for(50)}.fit"
    )
    start = "2025-06-02T06:30:00.000000Z"
    old: dict[str, Any] = {
        "PK": {"S": f"USER#{USER}"},
        "SK": {"S": "UPLOAD#GARMIN#50"},
        "LSI1SK": {"S": f"UPLOAD#{start}#{50:020d}"},
        "userId": {"S": USER},
        "garminActivityId": {"N": "50"},
        "externalId": {"S": external_id_for(50)},
        "outcome": {"S": "uploaded"},
        "updatedAt": {"S": "2025-06-02T09:00:00.000000Z"},
        "activityName": {"S": "Old run"},
        "typeKey": {"S": "running"},
        "startDate": {"S": start},
        "attempts": {"N": "1"},
        "stravaActivityId": {"N": str(strava_id)},
        "uploadId": {"N": "77"},
        "detail": {"S": ""},
        "nextRetryAt": {"NULL": True},
    }
    boto3.client("dynamodb").put_item(TableName=table, Item=old)
    shoe = pair.strava.add_gear(pair.athlete_id, "Pegasus 41")
    seed_run(pair, 51, start_utc=START + HOUR, gear=("Pegasus 41",))

    assert cycle(dynamo_app).ok

    entries = dynamo_app.store.get_uploads(USER, [50, 51])
    assert (entries[50].outcome, entries[50].finish) == (UploadOutcome.UPLOADED, None)
    assert pair.strava.requests["upload"] == 1
    new_id = entries[51].strava_activity_id
    assert new_id is not None
    with pair.strava.lock:
        assert pair.strava.activities[new_id].gear_id == shoe
    assert dynamo_app.store.list_unsettled_uploads(USER) == []


# -- (d) crash injection: the harness is conftest.py's crash_world ------------------------
KILL_ON = 2  # test_crash_injection.py (SQLite) covers the first and the last activity


@dataclass(frozen=True, slots=True)
class DynamoDBCrashStore:
    """The crash child finds the table and the AWS endpoint (moto, dummy credentials,
    from the aws_env fixture) in its environment only; its restart opens the table."""

    table: str

    def settings(self, pair: SandboxPair, tmp_path: Path) -> Settings:
        return dynamodb_settings(pair, self.table, tmp_path, token_key=generate_token_key())

    def child_env(self, settings: Settings) -> dict[str, str]:
        assert os.environ["AWS_ENDPOINT_URL_DYNAMODB"].startswith("http://127.0.0.1:")
        return {"G2S_STORE": "dynamodb", "G2S_DYNAMODB_TABLE": settings.dynamodb_table}

    def open_store(self, settings: Settings) -> contextlib.nullcontext[DynamoDBStore]:
        assert settings.token_key is not None
        cipher = AesGcmCipher(parse_token_key(settings.token_key.get_secret_value()))
        return contextlib.nullcontext(DynamoDBStore(settings.dynamodb_table, cipher))


@pytest.fixture
def crash_store(table: str, tmp_path: Path) -> Iterator[CrashStore]:
    yield DynamoDBCrashStore(table)
    assert not (tmp_path / NO_SQLITE_FILE).exists()  # nothing fell back to SQLite


@pytest.mark.slow
def test_killed_at_step_on_dynamodb_then_restarted(
    crash_world: OpenWorld, crash_step: str, strava_processing_delay_s: float
) -> None:
    """SIGKILL before step X of the middle activity (one settled before it, one left
    after it), restart, all on DynamoDB: every run on Strava once, all settled."""
    with crash_world(strava_processing_delay_s) as w:
        returncode, output = w.run_child("--kill-at", crash_step, "--kill-on", str(KILL_ON))
        assert returncode == -signal.SIGKILL, output
        w.recover()
        # As on SQLite: a file Strava got but the ledger never heard of is sent again
        # only while Strava is still processing it (its duplicate check answers).
        resent = 1 if crash_step == "record" and strava_processing_delay_s > 0 else 0
        w.assert_exactly_once(resent=resent)


@pytest.mark.slow
def test_killed_between_upload_and_put_on_dynamodb_then_restarted(
    crash_world: OpenWorld, finish_crash_step: str
) -> None:
    """Issue 21 on DynamoDB: SIGKILL before the middle run's PUT, or after it and
    before the ledger records it; restart: every run on Strava once, with its gear."""
    with crash_world(0.0) as w:
        gear_id = w.give_gear()
        returncode, output = w.run_child("--kill-at", finish_crash_step, "--kill-on", str(KILL_ON))
        assert returncode == -signal.SIGKILL, output
        w.recover()
        w.assert_exactly_once()
        w.assert_geared(gear_id)
        assert w.runs <= w.puts() <= w.runs + 1


@pytest.mark.slow
def test_crash_child_on_dynamodb_without_a_kill_syncs_everything(crash_world: OpenWorld) -> None:
    """The child, left alone on DynamoDB, uploads every run and settles the ledger in
    the table (so the kills above land in a real DynamoDB cycle)."""
    with crash_world(0.0) as w:
        returncode, output = w.run_child("--kill-at", "")
        assert returncode == 0, output
        assert w.uploads() == w.runs
        with w.restarted_app() as app:
            assert w.settled(app)
