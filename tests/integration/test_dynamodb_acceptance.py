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
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import pytest

from garmin2strava.adapters.crypto import AesGcmCipher, generate_token_key, parse_token_key
from garmin2strava.adapters.kms import KmsCipher
from garmin2strava.adapters.queue_sqlite import SqliteEventQueue
from garmin2strava.adapters.store.dynamodb import DynamoDBStore, create_table
from garmin2strava.adapters.strava import StravaAdapter
from garmin2strava.adapters.strava_oauth import bootstrap_tokens_from_refresh_token
from garmin2strava.bootstrap import App, bootstrap, utc_now
from garmin2strava.domain.activities import external_id_for
from garmin2strava.domain.models import Account, LedgerEntry, UploadOutcome, Workout
from garmin2strava.domain.webhook import WebhookEvent
from garmin2strava.ports import StravaPort
from garmin2strava.sandbox.scenario import SandboxPair, running_sandboxes, seed_run
from garmin2strava.sandbox.strava import StravaSandbox
from garmin2strava.services.accounts import ensure_settings_account
from garmin2strava.services.mirror import process_events
from garmin2strava.services.runner import sync_all
from garmin2strava.services.sync import CycleReport
from garmin2strava.settings import Settings

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


def dynamodb_settings(pair: SandboxPair, table: str, tmp_path: Path, **overrides: Any) -> Settings:
    """Settings of a DynamoDB deployment; db_path names a file that must never appear."""
    return pair.settings(
        tmp_path / "must-not-exist.sqlite3", store="dynamodb", dynamodb_table=table, **overrides
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
    assert pair.garmin.requests == {"list": 1, "download": n}
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
    adapter: StravaAdapter

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
        adapter = StravaAdapter(
            store,
            USER,
            client_id=strava.client_id,
            client_secret=strava.client_secret,
            base_url=strava.base_url,
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


# -- (d) crash injection ------------------------------------------------------------------
CHILD = Path(__file__).with_name("crash_child.py")
CRASH_STEPS = ("intent", "upload", "record", "poll")
RUNS = 3
ACCEPTABLE = frozenset(
    {UploadOutcome.UPLOADED, UploadOutcome.EXISTS, UploadOutcome.DUPLICATE, UploadOutcome.SKIPPED}
)
PROCESSING_DELAYS = (0.0, 0.5)
CHILD_POLL_DELAY_S = 0.05
MAX_RECOVERY_CYCLES = 60
KILL_ON = 2  # test_crash_injection.py (SQLite) covers the first and the last activity


@dataclass(slots=True)
class CrashWorld:
    pair: SandboxPair
    settings: Settings
    child_env: dict[str, str]


@contextlib.contextmanager
def crash_world(tmp_path: Path, table: str, processing_delay_s: float) -> Iterator[CrashWorld]:
    with running_sandboxes(processing_delay_s=processing_delay_s) as pair:
        start = datetime.now(tz=UTC).replace(microsecond=0) - timedelta(days=RUNS + 1)
        for i in range(RUNS):
            seed_run(
                pair,
                31_000_001 + i,
                start_utc=start + timedelta(days=i, hours=i),
                name=f"Run {i + 1}",
                duration_s=1500 + 300 * i,
            )
        settings = dynamodb_settings(pair, table, tmp_path, token_key=generate_token_key())
        yield CrashWorld(pair, settings, _child_env(settings))
        assert not settings.db_path.exists()


def _child_env(settings: Settings) -> dict[str, str]:
    """A `garmin2strava` process on DynamoDB: the table and the AWS endpoint (moto,
    dummy credentials, from the aws_env fixture) come from the environment only."""

    def secret(value: Any) -> str:
        return str(value.get_secret_value())

    env = {k: v for k, v in os.environ.items() if not k.startswith(("G2S_", "STRAVA_", "GARMIN"))}
    assert env["AWS_ENDPOINT_URL_DYNAMODB"].startswith("http://127.0.0.1:")
    env.update(
        {
            "STRAVA_CLIENT_ID": str(settings.strava_client_id),
            "STRAVA_CLIENT_SECRET": secret(settings.strava_client_secret),
            "STRAVA_REFRESH_TOKEN": secret(settings.strava_refresh_token),
            "GARMIN_TOKENS": secret(settings.garmin_tokens),
            "G2S_USER_ID": settings.user_id,
            "G2S_STORE": "dynamodb",
            "G2S_DYNAMODB_TABLE": settings.dynamodb_table,
            "G2S_DB_PATH": str(settings.db_path),
            "G2S_TOKEN_KEY": secret(settings.token_key),
            "G2S_STRAVA_BASE_URL": settings.strava_base_url,
            "G2S_GARMIN_BASE_URL": settings.garmin_base_url,
            "G2S_LOG_LEVEL": "WARNING",
            "G2S_LOG_FORMAT": "text",
        }
    )
    return env


def _start_child(w: CrashWorld, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(  # noqa: S603 (our own interpreter and script)
        [sys.executable, str(CHILD), "--poll-delay", str(CHILD_POLL_DELAY_S), *args],
        env=w.child_env,
        cwd=w.settings.db_path.parent,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


@contextlib.contextmanager
def _restarted_app(w: CrashWorld, clock: Callable[[], datetime] = utc_now) -> Iterator[App]:
    """The app of a restarted process, on the dead process's table."""
    assert w.settings.token_key is not None
    cipher = AesGcmCipher(parse_token_key(w.settings.token_key.get_secret_value()))
    app = bootstrap(w.settings, store=DynamoDBStore(w.settings.dynamodb_table, cipher))
    app.clock = clock
    app.poll_delay_s = CHILD_POLL_DELAY_S
    yield app


def _ledger(w: CrashWorld, app: App) -> dict[int, LedgerEntry]:
    return app.store.get_uploads(w.settings.user_id, [run.garmin_id for run in w.pair.seeded])


def _settled(w: CrashWorld, app: App) -> bool:
    ledger = _ledger(w, app)
    return len(ledger) == RUNS and all(e.outcome.settled for e in ledger.values())


def _recover(w: CrashWorld) -> None:
    """Restart: within the dead process's lease a cycle waits; after it, cycles run
    until the ledger has nothing left unsettled."""
    with _restarted_app(w) as early:
        ensure_settings_account(early.store, w.settings, early.clock)
        (report,) = sync_all(early.store, early.sync_deps)
        assert "lease" in report.skipped_reason
        lease_ttl = timedelta(seconds=early.sync_config().lease_ttl_s + 1)

    with _restarted_app(w, lambda: utc_now() + lease_ttl) as app:
        for _ in range(MAX_RECOVERY_CYCLES):
            reports = sync_all(app.store, app.sync_deps)
            assert all(r.ok and not r.skipped_reason for r in reports), reports
            if _settled(w, app):
                assert app.store.list_unsettled_uploads(w.settings.user_id) == []
                return
            time.sleep(0.05)  # Strava (the emulator) is still processing an upload
        pytest.fail(f"ledger not settled: {_ledger(w, app)}")


def _assert_exactly_once(w: CrashWorld, *, resent: int) -> None:
    """0 duplicates, 0 lost: every seeded run once on Strava (by start time and by our
    external_id), its ledger entry settled on that activity."""
    strava = w.pair.strava
    strava.settle()
    with strava.lock:
        live = [a for a in strava.activities.values() if not a.deleted]
        uploads = len(strava.upload_records)
    with _restarted_app(w) as app:
        ledger = _ledger(w, app)
    for run in w.pair.seeded:
        by_start = [a for a in live if a.start_utc == run.start_utc]
        by_external_id = [a for a in live if a.external_id == external_id_for(run.garmin_id)]
        assert len(by_start) == 1, (run, by_start)
        assert by_external_id == by_start, (run, by_external_id)
        entry = ledger[run.garmin_id]
        assert entry.outcome in ACCEPTABLE, entry
        assert entry.strava_activity_id == by_start[0].activity_id, entry
    assert len(live) == RUNS
    assert RUNS <= uploads <= RUNS + resent


@pytest.mark.parametrize("processing_delay_s", PROCESSING_DELAYS, ids=lambda d: f"strava{d}s")
@pytest.mark.parametrize("step", CRASH_STEPS)
def test_killed_at_step_on_dynamodb_then_restarted(
    tmp_path: Path, table: str, step: str, processing_delay_s: float
) -> None:
    """SIGKILL before step X of the middle activity (one settled before it, one left
    after it), restart, all on DynamoDB: every run on Strava once, all settled."""
    with crash_world(tmp_path, table, processing_delay_s) as w:
        child = _start_child(w, "--kill-at", step, "--kill-on", str(KILL_ON))
        output, _ = child.communicate(timeout=60)
        assert child.returncode == -signal.SIGKILL, output
        _recover(w)
        # As on SQLite: a file Strava got but the ledger never heard of is sent again
        # only while Strava is still processing it (its duplicate check answers).
        resent = 1 if step == "record" and processing_delay_s > 0 else 0
        _assert_exactly_once(w, resent=resent)


def test_crash_child_on_dynamodb_without_a_kill_syncs_everything(
    tmp_path: Path, table: str
) -> None:
    """The child, left alone on DynamoDB, uploads every run and settles the ledger in
    the table (so the kills above land in a real DynamoDB cycle)."""
    with crash_world(tmp_path, table, 0.0) as w:
        child = _start_child(w, "--kill-at", "")
        output, _ = child.communicate(timeout=60)
        assert child.returncode == 0, output
        with w.pair.strava.lock:
            assert len(w.pair.strava.upload_records) == RUNS
        with _restarted_app(w) as app:
            assert _settled(w, app)
