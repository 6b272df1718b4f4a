"""Strava's webhook end to end on loopback: the emulator subscribes and delivers to our
real HTTP app under uvicorn, the worker mirrors through the real StravaAccess; mirror
backfill pages, paces and resumes; a covered uploader cycle lists nothing on Strava."""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import uvicorn
from starlette.types import ASGIApp

from g2s_harness.sandbox_settings import sandbox_settings
from g2s_sandbox.fitgen import build_activity_fit
from g2s_sandbox.scenario import running_sandboxes, seed_demo
from g2s_sandbox.strava import StravaSandbox
from garmin2strava.adapters.crypto import AesGcmCipher
from garmin2strava.adapters.queue_sqlite import SqliteEventQueue
from garmin2strava.adapters.store.sqlite import SqliteStore
from garmin2strava.adapters.strava_oauth import bootstrap_tokens_from_refresh_token
from garmin2strava.adapters.strava_subscriptions import create_subscription, list_subscriptions
from garmin2strava.bootstrap import bootstrap, build_strava
from garmin2strava.domain.models import Account, AccountStatus, UploadOutcome
from garmin2strava.domain.webhook import callback_path, derive_path_secret
from garmin2strava.entrypoints.http_app import create_app
from garmin2strava.errors import G2SError
from garmin2strava.ports import StravaPort
from garmin2strava.services.accounts import ensure_settings_account
from garmin2strava.services.mirror_backfill import backfill_mirror, cursor_key
from garmin2strava.services.mirror_intake import WebhookReceiver
from garmin2strava.services.mirror_subscription import (
    SUBSCRIPTION_STATE_KEY,
    SubscriptionSource,
    remember_subscription,
    subscription_from_state,
)
from garmin2strava.services.mirror_worker import process_events
from garmin2strava.services.observability import MirrorStats, check_health
from garmin2strava.services.status import account_status
from garmin2strava.services.strava_access import StravaAccess
from garmin2strava.services.sync_accounts import sync_all

pytestmark = pytest.mark.integration

ATHLETE = 7001
USER = "u1"
VERIFY = "verify-token-for-tests"
START = datetime(2025, 5, 1, 7, 0, tzinfo=UTC)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteStore]:
    with SqliteStore(tmp_path / "g2s.sqlite3", AesGcmCipher(os.urandom(32))) as s:
        yield s


@pytest.fixture
def queue(tmp_path: Path) -> Iterator[SqliteEventQueue]:
    q = SqliteEventQueue(tmp_path / "g2s.sqlite3")
    yield q
    q.close()


def serve(app: ASGIApp) -> tuple[uvicorn.Server, threading.Thread, int]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = int(sock.getsockname()[1])
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started and thread.is_alive():
        time.sleep(0.01)
    return server, thread, port


@dataclass
class OurCallback:
    """Our webhook under uvicorn: its URL (with the path secret) and the receiver's
    subscription source, which reads the id `subscribe` stores as the CLI does."""

    url: str
    store: SqliteStore
    subscriptions: SubscriptionSource

    def subscribe(self, sandbox: StravaSandbox, verify: str = VERIFY) -> int:
        sub_id = subscribe(sandbox, self.url, verify)
        remember_subscription(self.store, sub_id, now=datetime.now(UTC))
        self.subscriptions.load()
        return sub_id


@pytest.fixture
def callback(store: SqliteStore, queue: SqliteEventQueue) -> Iterator[OurCallback]:
    """Our HTTP app (WebhookReceiver over the SQLite queue) under uvicorn on loopback,
    no subscription id configured: it learns the one stored by `subscribe`."""
    stats = MirrorStats()

    def now() -> datetime:
        return datetime.now(UTC)

    subscriptions = SubscriptionSource(
        read=lambda: subscription_from_state(store.get_app_state(SUBSCRIPTION_STATE_KEY))
    )
    subscriptions.load()
    receiver = WebhookReceiver(
        queue, verify_token=VERIFY, subscriptions=subscriptions, stats=stats, clock=now
    )
    app = create_app(
        receiver,
        health=lambda: check_health(store, stats, now=now(), max_cycle_age=timedelta(hours=1)),
    )
    server, thread, port = serve(app)
    url = f"http://127.0.0.1:{port}" + callback_path(derive_path_secret(VERIFY))
    yield OurCallback(url, store, subscriptions)
    server.should_exit = True
    thread.join(timeout=10)


def connect(sandbox: StravaSandbox, store: SqliteStore) -> None:
    refresh = sandbox.add_athlete(ATHLETE)
    tokens = bootstrap_tokens_from_refresh_token(
        sandbox.client_id, sandbox.client_secret, refresh, sandbox.base_url
    )
    store.put_account(Account(user_id=USER, strava_athlete_id=ATHLETE))
    store.link_athlete(ATHLETE, USER)
    assert store.replace_strava_tokens(USER, tokens, expected_version=None) is not None


def adapter(
    sandbox: StravaSandbox, store: SqliteStore, clock: Callable[[], datetime] | None = None
) -> StravaAccess:
    return build_strava(
        store,
        USER,
        client_id=sandbox.client_id,
        client_secret=sandbox.client_secret,
        where=sandbox.base_url,
        clock=clock,
    )


def subscribe(sandbox: StravaSandbox, url: str, verify: str = VERIFY) -> int:
    return create_subscription(
        sandbox.client_id, sandbox.client_secret, url, verify, sandbox.base_url
    )


def work(sandbox: StravaSandbox, queue: SqliteEventQueue, store: SqliteStore) -> int:
    """Wait for the emulator's deliveries, run the worker once; returns its fetches."""
    assert sandbox.webhooks.wait_idle()
    strava = adapter(sandbox, store)

    def strava_for(_user: str) -> StravaPort:
        return strava

    counts = process_events(queue, store, strava_for, now=datetime.now(UTC))
    assert counts.retried == counts.dead == counts.deferred == 0
    return counts.fetches


def test_events_keep_the_mirror_with_one_fetch_per_create(
    sandbox: StravaSandbox, store: SqliteStore, queue: SqliteEventQueue, callback: OurCallback
) -> None:
    """Create fetches once; a title update costs no request; a delete soft-deletes."""
    connect(sandbox, store)
    sub_id = callback.subscribe(sandbox)
    assert [
        s["id"]
        for s in list_subscriptions(sandbox.client_id, sandbox.client_secret, sandbox.base_url)
    ] == [sub_id]

    activity_id = sandbox.add_activity(ATHLETE, start_utc=START, elapsed_s=1800, name="Run")
    reads = sandbox.reads
    assert work(sandbox, queue, store) == 1
    assert sandbox.reads - reads == 1
    row = store.get_workout(USER, activity_id)
    assert row is not None
    assert (row.name, row.sport_type, row.is_deleted) == ("Run", "Run", False)

    sandbox.update_activity(activity_id, title="Renamed", private=True)
    reads = sandbox.reads
    assert work(sandbox, queue, store) == 0
    assert sandbox.reads == reads
    row = store.get_workout(USER, activity_id)
    assert row is not None
    assert (row.name, row.is_private) == ("Renamed", True)

    sandbox.delete_activity(activity_id)
    assert work(sandbox, queue, store) == 0
    row = store.get_workout(USER, activity_id)
    assert row is not None
    assert row.is_deleted
    assert sandbox.webhooks.webhook_deliveries == 3
    assert sandbox.webhooks.webhook_attempts == 3


def test_an_upload_that_becomes_an_activity_sends_a_create(
    sandbox: StravaSandbox,
    store: SqliteStore,
    queue: SqliteEventQueue,
    callback: OurCallback,
    tmp_path: Path,
) -> None:
    """An emulator upload, once processed, is announced and mirrored."""
    connect(sandbox, store)
    callback.subscribe(sandbox)
    path = tmp_path / "run.fit"
    path.write_bytes(build_activity_fit(start_utc=START, duration_s=1200, distance_m=4000.0))
    status = adapter(sandbox, store).upload(
        path, data_type="fit", external_id="g2s_1", name="Uploaded", description=None, trainer=False
    )
    sandbox.settle()
    assert work(sandbox, queue, store) == 1
    activity_id = sandbox.upload_records[status.upload_id].activity_id
    assert activity_id is not None
    row = store.get_workout(USER, activity_id)
    assert row is not None
    assert row.name == "Uploaded"


def test_genuine_deauthorization_deletes_the_athletes_strava_data(
    sandbox: StravaSandbox, store: SqliteStore, queue: SqliteEventQueue, callback: OurCallback
) -> None:
    """The athlete revokes access on "Strava": one refused token refresh proves it, then
    tokens and mirrored rows are gone, the ledger stays, the account is disconnected,
    and a later event of the athlete makes no Strava request."""
    connect(sandbox, store)
    callback.subscribe(sandbox)
    activity_id = sandbox.add_activity(ATHLETE, start_utc=START, elapsed_s=600)
    work(sandbox, queue, store)
    assert store.get_workout(USER, activity_id) is not None
    sandbox.deauthorize(ATHLETE)
    before = dict(sandbox.requests)
    assert work(sandbox, queue, store) == 1
    assert sandbox.requests["token"] - before.get("token", 0) == 1
    assert store.get_strava_tokens(USER) is None
    assert store.list_workouts(USER, include_deleted=True) == []
    account = store.get_account(USER)
    assert account is not None
    assert account.status is AccountStatus.DISCONNECTED
    assert account_status(store, now=START)["accounts"][0]["status"] == "disconnected"

    before = dict(sandbox.requests)
    sandbox.webhooks.publish(
        object_type="activity", object_id=activity_id, aspect_type="update",
        owner_id=ATHLETE, updates={"title": "x"},
    )  # fmt: skip
    assert work(sandbox, queue, store) == 0
    assert dict(sandbox.requests) == before


def test_a_revocation_whose_event_never_came_is_found_by_the_next_fetch(
    sandbox: StravaSandbox, store: SqliteStore, queue: SqliteEventQueue, callback: OurCallback
) -> None:
    """The athlete revoked access and Strava's deauthorization event was lost; an
    activity's create from before arrives. Its fetch is refused, one more token refresh
    proves the revocation, and the athlete's Strava data goes, as the lost event would
    have had it: nothing is dead-lettered for the owner to clear."""
    connect(sandbox, store)
    callback.subscribe(sandbox)
    activity_id = sandbox.add_activity(ATHLETE, start_utc=START, elapsed_s=600)
    work(sandbox, queue, store)
    assert store.get_workout(USER, activity_id) is not None
    sandbox.revoke(ATHLETE)  # on strava.com, its event lost on the way
    sandbox.webhooks.publish(
        object_type="activity", object_id=activity_id + 1, aspect_type="create",
        owner_id=ATHLETE,
    )  # fmt: skip
    before = dict(sandbox.requests)
    work(sandbox, queue, store)
    assert sandbox.requests["token"] - before.get("token", 0) >= 1
    assert queue.list_dead() == []
    assert store.get_strava_tokens(USER) is None
    assert store.list_workouts(USER, include_deleted=True) == []
    account = store.get_account(USER)
    assert account is not None
    assert account.status is AccountStatus.DISCONNECTED


def test_forged_deauthorization_costs_one_request_and_changes_nothing(
    sandbox: StravaSandbox, store: SqliteStore, queue: SqliteEventQueue, callback: OurCallback
) -> None:
    """A deauthorization event the athlete never caused (delivered to our secret path
    with our subscription id): Strava grants the one refresh, so tokens still work and
    the account, its mirrored rows and its access stay."""
    connect(sandbox, store)
    callback.subscribe(sandbox)
    activity_id = sandbox.add_activity(ATHLETE, start_utc=START, elapsed_s=600)
    work(sandbox, queue, store)
    before = dict(sandbox.requests)
    sandbox.webhooks.publish(
        object_type="athlete", object_id=ATHLETE, aspect_type="update",
        owner_id=ATHLETE, updates={"authorized": "false"},
    )  # fmt: skip
    assert work(sandbox, queue, store) == 1
    spent = {k: v - before.get(k, 0) for k, v in sandbox.requests.items() if v != before.get(k, 0)}
    assert spent == {"token": 1}
    account = store.get_account(USER)
    assert account is not None
    assert account.status is AccountStatus.ACTIVE
    assert store.get_workout(USER, activity_id) is not None
    assert adapter(sandbox, store).get_athlete_id() == ATHLETE  # the rotated tokens work


def test_second_subscription_fails_with_already_exists(
    sandbox: StravaSandbox, callback: OurCallback
) -> None:
    """One subscription per application: the second create says so clearly."""
    callback.subscribe(sandbox)
    with pytest.raises(G2SError, match="already has a webhook subscription"):
        callback.subscribe(sandbox)


def test_wrong_verify_token_fails_the_handshake(
    sandbox: StravaSandbox, callback: OurCallback
) -> None:
    """Our app refuses the handshake; the create fails clearly and nothing is stored."""
    with pytest.raises(G2SError, match="could not verify the callback URL"):
        callback.subscribe(sandbox, verify="not-the-token")
    assert list_subscriptions(sandbox.client_id, sandbox.client_secret, sandbox.base_url) == []


class _Callback(BaseHTTPRequestHandler):
    """A callback that passes the handshake and then fails every event."""

    posts: list[bytes]
    answer: Callable[[], int]

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib's name
        """Quiet."""

    def do_GET(self) -> None:
        challenge = parse_qs(urlsplit(self.path).query)["hub.challenge"][0]
        body = f'{{"hub.challenge": "{challenge}"}}'.encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:
        self.posts.append(self.rfile.read(int(self.headers["Content-Length"])))
        status = self.answer()
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()


@pytest.fixture
def failing_callback() -> Iterator[tuple[str, list[bytes], threading.Event]]:
    posts: list[bytes] = []
    release = threading.Event()

    def answer() -> int:
        if release.is_set():
            return 500
        release.wait(5)  # held past the emulator's timeout until the test lets go
        return 200

    handler = type("_Bound", (_Callback,), {"posts": posts, "answer": staticmethod(answer)})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    host, port = server.server_address[:2]
    yield f"http://{host!s}:{port}/cb", posts, release
    release.set()
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


def test_failing_callback_gets_three_attempts_in_all(
    sandbox: StravaSandbox, failing_callback: tuple[str, list[bytes], threading.Event]
) -> None:
    """A 500 answer is retried: three POSTs for one event, then the emulator gives up."""
    url, posts, release = failing_callback
    release.set()  # answer 500 at once
    subscribe(sandbox, url)
    sandbox.add_athlete(ATHLETE)
    sandbox.add_activity(ATHLETE, start_utc=START, elapsed_s=60)
    assert sandbox.webhooks.wait_idle()
    assert len(posts) == 3
    assert (sandbox.webhooks.webhook_attempts, sandbox.webhooks.webhook_deliveries) == (3, 0)
    assert sandbox.webhooks.webhook_failures == 1


def test_slow_callback_gets_three_attempts_and_api_stays_responsive(
    sandbox: StravaSandbox, failing_callback: tuple[str, list[bytes], threading.Event]
) -> None:
    """Answers slower than the delivery timeout count as failures; the API does not wait."""
    url, posts, release = failing_callback
    subscribe(sandbox, url)
    sandbox.webhooks.timeout_s = 0.2  # the test's callback holds each POST longer than this
    sandbox.add_athlete(ATHLETE)
    sandbox.add_activity(ATHLETE, start_utc=START, elapsed_s=60)
    # While delivery is stuck on the slow callback, the API answers (from this thread).
    assert list_subscriptions(sandbox.client_id, sandbox.client_secret, sandbox.base_url)
    assert sandbox.webhooks.wait_idle()
    release.set()
    assert sandbox.webhooks.webhook_attempts == 3
    assert sandbox.webhooks.webhook_deliveries == 0
    assert len(posts) == 3


# -- mirror backfill ---------------------------------------------------------------------
def test_mirror_backfill_pages_waits_for_the_window_and_resumes(
    store: SqliteStore,
) -> None:
    """450 activities, 200 a page; a spent budget stops the first run, a rerun finishes
    from the cursor (one more page) and marks the mirror as covering from the first."""
    t = [datetime(2025, 6, 1, 8, 1, tzinfo=UTC).timestamp()]

    def clock() -> datetime:
        return datetime.fromtimestamp(t[0], UTC)

    with StravaSandbox(clock=lambda: t[0]) as sandbox:
        connect(sandbox, store)
        for i in range(450):
            sandbox.add_activity(
                ATHLETE, start_utc=START + timedelta(hours=6 * i), elapsed_s=1800, name=f"Run {i}"
            )
        # 8 reads a window, 5 kept back for upload polls, 1 spent on /athlete: two pages.
        sandbox.set_limits(short_read=8)
        strava = adapter(sandbox, store, clock)

        first = backfill_mirror(
            store, strava, USER, since=None, clock=clock, wait_until=lambda _until: False
        )
        assert not first.complete
        assert len(first.waits) == 1
        assert sandbox.requests["list"] == 2
        assert len(store.list_workouts(USER)) == 400
        account = store.get_account(USER)
        assert account is not None
        assert account.mirror_covers_since is None

        def wait_until(until: datetime) -> bool:
            t[0] = until.timestamp()
            return True

        second = backfill_mirror(
            store, strava, USER, since=None, clock=clock, wait_until=wait_until
        )
        assert second.complete
        assert sandbox.requests["list"] == 3  # resumed: only the last page
        assert len(store.list_workouts(USER)) == 450
        account = store.get_account(USER)
        assert account is not None
        assert account.mirror_covers_since == START
        assert second.covers_since == START
        assert store.get_app_state(cursor_key(USER))["done"] is True  # type: ignore[index]  # written just above


def test_after_mirror_backfill_the_uploader_lists_nothing_on_strava(tmp_path: Path) -> None:
    """With the mirror covering the period, the existence check answers from the mirror:
    zero Strava list requests, and the Garmin-synced run is found there."""
    now = datetime.now(UTC)
    with running_sandboxes() as pair:
        seed_demo(pair, now)
        settings = sandbox_settings(pair, tmp_path / "g2s.sqlite3")
        app = bootstrap(settings)
        app.poll_delay_s = 0.0
        ensure_settings_account(app.store, settings, app.clock)
        strava = app.strava_for(settings.user_id)
        assert isinstance(strava, StravaAccess)
        result = backfill_mirror(
            app.store,
            strava,
            settings.user_id,
            since=now - timedelta(days=30),
            clock=app.clock,
            wait_until=lambda _until: False,
        )
        assert result.complete
        lists = pair.strava.requests["list"]
        reports = sync_all(app.store, app.sync_deps)
        assert all(r.ok for r in reports)
        assert pair.strava.requests["list"] == lists
        entries = {e.activity_name: e for e in app.store.list_uploads(settings.user_id)}
        tempo = entries["Tempo (also synced by Garmin)"]
        assert tempo.outcome is UploadOutcome.EXISTS
        assert tempo.detail.startswith("mirror:")
        assert entries["Easy 5k"].outcome is UploadOutcome.UPLOADED
