"""Strava's developer program of 2026, through the real stravalib against the sandbox:
an inactive application (403 "Application Status Inactive", stravalib issue #730) is
one application-wide state that costs at most one request a 15-minute window and
clears by itself; and no request we send carries a secret in its URL."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import pytest

from fakes import Clock
from g2s_sandbox.scenario import SandboxPair, seed_run
from garmin2strava.adapters.queue_sqlite import SqliteEventQueue
from garmin2strava.adapters.strava_oauth import bootstrap_tokens_from_refresh_token
from garmin2strava.adapters.strava_subscriptions import create_subscription, list_subscriptions
from garmin2strava.bootstrap import App, build_strava
from garmin2strava.domain.budget import window_start
from garmin2strava.domain.models import AccountStatus, UploadOutcome
from garmin2strava.domain.webhook import WebhookEvent
from garmin2strava.errors import StravaAppInactive, StravaAuthError
from garmin2strava.services.backfill import backfill_account
from garmin2strava.services.mirror_backfill import backfill_mirror
from garmin2strava.services.mirror_worker import process_events
from garmin2strava.services.observability import (
    HealthReport,
    MirrorStats,
    check_health,
    collect_metrics,
)
from garmin2strava.services.status import account_status
from garmin2strava.services.strava_access import StravaAccess
from garmin2strava.services.sync_accounts import sync_all

pytestmark = pytest.mark.integration

USER = "demo"  # SandboxPair.settings' G2S_USER_ID
WINDOW = timedelta(minutes=15)
TICK = timedelta(minutes=1)  # the daemon's sync interval and more than the worker's


@pytest.fixture
def clock() -> Clock:
    # Two minutes into a window, so the first window has room for ticks.
    return Clock(window_start(datetime.now(UTC)) + timedelta(minutes=2))


@pytest.fixture
def app(make_app: Callable[..., App], clock: Clock) -> App:
    built = make_app()
    built.clock = clock
    return built


@pytest.fixture
def queue(app: App) -> Iterator[SqliteEventQueue]:
    """The container's webhook queue, in the store's file."""
    q = SqliteEventQueue(app.settings.db_path)
    yield q
    q.close()


def strava_requests(pair: SandboxPair) -> list[str]:
    with pair.strava.lock:
        return list(pair.strava.request_lines)


def activity_event(pair: SandboxPair, activity_id: int, at: datetime) -> WebhookEvent:
    return WebhookEvent(
        object_type="activity",
        object_id=activity_id,
        aspect_type="create",
        owner_id=pair.athlete_id,
        subscription_id=1,
        event_time=int(at.timestamp()),
        updates={},
    )


def tick(app: App, queue: SqliteEventQueue, stats: MirrorStats) -> None:
    """What the daemon does in a minute: one sync cycle, the worker's passes."""
    sync_all(app.store, app.sync_deps)
    for _ in range(3):
        process_events(queue, app.store, app.strava_for, now=app.clock(), stats=stats)


# -- the 403 through stravalib ----------------------------------------------------------
def test_the_inactive_answer_is_the_applications_state_not_the_athletes(
    pair: SandboxPair, app: App, caplog: pytest.LogCaptureFixture
) -> None:
    """stravalib meets Strava's 403 {"resource": "Application", "field": "Status",
    "code": "Inactive"}: StravaAppInactive (never StravaAuthError), the state stored
    application-wide, one ERROR line naming the owner's subscription, an audit event,
    and the account not sent to re-authorize."""
    pair.strava.application_inactive = True
    strava = app.strava_for(USER)
    assert isinstance(strava, StravaAccess)
    caplog.set_level(logging.INFO, logger="garmin2strava.adapters.strava")

    with pytest.raises(StravaAppInactive) as raised:
        strava.get_activity(1)
    with pytest.raises(StravaAppInactive):
        strava.get_activity(2)  # the window's request went: refused without one

    assert not isinstance(raised.value, StravaAuthError)
    assert "subscription" in str(raised.value)
    assert raised.value.until == window_start(app.clock()) + WINDOW
    assert pair.strava.requests["inactive"] == 1
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert [r.getMessage() for r in errors] == ["strava.app_inactive"]
    assert "subscription" in errors[0].__dict__["cause"]
    assert app.store.get_app_state("strava_app_access")["inactiveSince"] is not None  # type: ignore[index]
    kinds = [e.kind for e in app.store.list_audit(USER)]
    # The token refresh before the first request is audited too (history shows it).
    assert [k for k in kinds if k != "strava.token_refreshed"] == ["strava.app_inactive"]
    account = app.store.get_account(USER)
    assert account is not None
    assert account.status is AccountStatus.ACTIVE


def test_connecting_from_a_refresh_token_names_the_inactive_application(
    pair: SandboxPair,
) -> None:
    """A bare STRAVA_REFRESH_TOKEN against an inactive application: the refresh works
    (Strava's token endpoint still answers), the athlete lookup gets the 403, and the
    error names the application, not the token."""
    pair.strava.application_inactive = True
    refresh = pair.strava.refresh_token_of(pair.athlete_id)
    assert refresh is not None
    with pytest.raises(StravaAppInactive, match="subscription"):
        bootstrap_tokens_from_refresh_token(
            pair.strava.client_id, pair.strava.client_secret, refresh, pair.strava.base_url
        )
    assert pair.strava.requests["token"] == 1
    assert pair.strava.requests["inactive"] == 1


# -- sync + mirror across windows ---------------------------------------------------------
def seed_waiting_work(
    pair: SandboxPair, app: App, clock: Clock, queue: SqliteEventQueue
) -> tuple[list[int], list[int]]:
    """Two runs on Garmin to upload, two activities on Strava with events to mirror."""
    start = clock.now - timedelta(days=2)
    seeded = [
        seed_run(pair, 7_000_001 + i, start_utc=start + timedelta(hours=5 * i), duration_s=120)
        for i in (0, 1)
    ]
    on_strava = [
        pair.strava.add_activity(
            pair.athlete_id, start_utc=start - timedelta(days=1, hours=i), elapsed_s=1800
        )
        for i in (0, 1)
    ]
    app.store.link_athlete(pair.athlete_id, USER)
    for activity_id in on_strava:
        queue.enqueue(activity_event(pair, activity_id, clock.now), now=clock.now)
    return [r.garmin_id for r in seeded], on_strava


def observe(
    app: App, queue: SqliteEventQueue, stats: MirrorStats
) -> tuple[dict[str, Any], HealthReport, dict[str, float]]:
    """What `status`, /healthz and /metrics say now."""
    now = app.clock()
    status = account_status(app.store, now=now)
    health = check_health(app.store, stats, now=now, max_cycle_age=timedelta(hours=1))
    metrics = {s.name: s.value for s in collect_metrics(queue, stats, now=now, store=app.store)}
    return status, health, metrics


def test_sync_and_mirror_cost_one_request_a_window_then_resume_by_themselves(
    pair: SandboxPair,
    app: App,
    clock: Clock,
    queue: SqliteEventQueue,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The application goes inactive with two runs to upload and two events to mirror.
    Over six windows of a sync cycle and worker passes every minute, Strava sees at most
    one request a window (exactly one: the probe); status, /healthz and /metrics say
    why; no event is dead or failed, no account needs re-authorizing. Strava serves the
    application again: the next window's probe clears the state, the runs are uploaded
    and the events mirrored, with a recovery audit event."""
    garmin_ids, on_strava = seed_waiting_work(pair, app, clock, queue)
    strava = app.strava_for(USER)
    assert isinstance(strava, StravaAccess)
    assert strava.get_athlete_id() == pair.athlete_id  # the settings' tokens, refreshed
    pair.strava.application_inactive = True
    stats = MirrorStats()
    seen = len(strava_requests(pair))

    per_window: list[int] = []
    for window in range(6):
        for _ in range(13):  # minutes 2..14 of the window
            tick(app, queue, stats)
            clock.now += TICK
        lines = strava_requests(pair)
        per_window.append(len(lines) - seen)
        seen = len(lines)
        if window == 2:
            status = account_status(app.store, now=clock.now)
            health = check_health(app.store, stats, now=clock.now, max_cycle_age=timedelta(hours=1))
            metrics = {
                s.name: s.value
                for s in collect_metrics(queue, stats, now=clock.now, store=app.store)
            }
        clock.now += 2 * TICK  # on to minute 2 of the next window

    assert per_window == [1] * 6
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == ["strava.app_inactive"]  # one line for the whole spell
    assert pair.strava.requests["inactive"] == 6
    assert pair.strava.uploads == 0
    assert status["stravaApp"]["state"] == "inactive"
    assert status["stravaApp"]["probes"] == 3
    assert any("subscription" in w for w in status["warnings"])
    assert status["accounts"][0]["status"] == "active"
    assert not health.ok
    assert any("Strava application inactive" in r for r in health.reasons)
    assert metrics["g2s_strava_app_inactive"] == 1
    assert queue.list_dead() == []
    assert stats.get("events_failed") == 0
    assert stats.get("events_deferred") > 0
    assert app.store.get_uploads(USER, garmin_ids) == {}

    pair.strava.application_inactive = False
    for _ in range(3):
        tick(app, queue, stats)
        clock.now += TICK

    ledger = app.store.get_uploads(USER, garmin_ids)
    assert {e.outcome for e in ledger.values()} == {UploadOutcome.UPLOADED}
    assert all(app.store.get_workout(USER, a) is not None for a in on_strava)
    assert queue.depth() == 0
    assert queue.list_dead() == []
    assert account_status(app.store, now=clock.now)["stravaApp"]["state"] == "active"
    kinds = [e.kind for e in app.store.list_audit(USER, limit=1000)]
    assert kinds.count("strava.app_inactive") == 1
    assert kinds.count("strava.app_recovered") == 1
    account = app.store.get_account(USER)
    assert account is not None
    assert account.status is AccountStatus.ACTIVE


# -- athlete capacity ---------------------------------------------------------------------
def test_status_warns_when_the_application_holds_more_accounts_than_its_capacity(
    app: App,
) -> None:
    """Eleven connected accounts on a Standard-tier application (10): a warning naming
    the setting; with G2S_STRAVA_ATHLETE_CAPACITY=11, none; a disconnected one does not
    count."""
    from garmin2strava.domain.models import Account

    for i in range(10):
        app.store.put_account(Account(user_id=f"u{i}", strava_athlete_id=9000 + i))
    app.store.put_account(
        Account(user_id="gone", strava_athlete_id=8999, status=AccountStatus.DISCONNECTED)
    )
    # The settings account of `app` has no athlete id yet: ten connected.
    assert account_status(app.store, now=app.clock())["warnings"] == []
    app.store.put_account(Account(user_id="u10", strava_athlete_id=9010))

    warned = account_status(app.store, now=app.clock())["warnings"]
    assert len(warned) == 1
    assert "11 connected accounts" in warned[0]
    assert "G2S_STRAVA_ATHLETE_CAPACITY" in warned[0]
    assert account_status(app.store, now=app.clock(), athlete_capacity=11)["warnings"] == []


# -- no secret in a URL ---------------------------------------------------------------------
class _Callback(BaseHTTPRequestHandler):
    """The webhook callback's handshake, just enough for Strava's subscribe."""

    verify_token = "verify-me"

    def do_GET(self) -> None:
        query = {k: v[-1] for k, v in parse_qs(urlsplit(self.path).query).items()}
        ok = query.get("hub.verify_token") == self.verify_token
        body = json.dumps({"hub.challenge": query.get("hub.challenge", "")}).encode()
        self.send_response(200 if ok else 403)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib's name
        """Quiet."""


@pytest.fixture
def callback_url() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Callback)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/webhooks/strava"
    server.shutdown()
    server.server_close()


def _secrets(pair: SandboxPair, app: App) -> dict[str, str]:
    """Every secret the sandbox and the store hold right now."""
    found = {"client secret": pair.strava.client_secret}
    tokens = app.store.get_strava_tokens(USER)
    if tokens is not None:
        found[f"access token v{tokens.version}"] = tokens.access_token
        found[f"refresh token v{tokens.version}"] = tokens.refresh_token
    refresh = pair.strava.refresh_token_of(pair.athlete_id)
    if refresh:
        found["sandbox refresh token"] = refresh
    return found


def test_no_request_carries_a_secret_in_its_url(
    pair: SandboxPair,
    app: App,
    clock: Clock,
    queue: SqliteEventQueue,
    callback_url: str,
) -> None:
    """A whole life of the application (webhook subscribe, uploader cycles with
    uploads and a token refresh after a 401, the worker's fetches, backfill of uploads
    and of the mirror) with every request line recorded: no path or query holds an
    access token, a refresh token, the client secret or `access_token=`. The one
    exception is `webhook list` (GET /push_subscriptions), which Strava takes only
    with the client id and secret in the query; it holds no token."""
    secrets_seen: dict[str, str] = {}

    def note() -> None:
        secrets_seen.update({f"{k}#{len(secrets_seen)}": v for k, v in _secrets(pair, app).items()})

    note()
    start = clock.now - timedelta(days=3)
    for i in range(3):
        seed_run(pair, 7_100_001 + i, start_utc=start + timedelta(hours=6 * i), duration_s=120)
    app.store.link_athlete(pair.athlete_id, USER)
    create_subscription(
        pair.strava.client_id,
        pair.strava.client_secret,
        callback_url,
        _Callback.verify_token,
        pair.strava.base_url,
    )
    note()
    (report,) = sync_all(app.store, app.sync_deps)
    assert report.outcomes["uploaded"] == 3
    note()
    for i in range(2):  # older history, for the backfill
        seed_run(pair, 7_000_001 + i, start_utc=start - timedelta(days=20 - i), duration_s=120)
    pair.strava.expire_access_tokens()  # the next call gets 401, refreshes, retries
    mirrored = pair.strava.add_activity(
        pair.athlete_id, start_utc=start - timedelta(days=1), elapsed_s=1200
    )
    queue.enqueue(activity_event(pair, mirrored, clock.now), now=clock.now)
    counts = process_events(queue, app.store, app.strava_for, now=clock.now)
    assert counts.processed == 1
    note()
    progress = backfill_account(
        app.sync_deps(USER), USER, since=start - timedelta(days=30), until=start
    )
    assert progress.done == 2
    filled = backfill_mirror(
        app.store,
        build_strava(
            app.store,
            USER,
            client_id=pair.strava.client_id,
            client_secret=pair.strava.client_secret,
            where=pair.strava.base_url,
            clock=clock,
        ),
        USER,
        since=None,
        clock=clock,
        wait_until=lambda _until: False,
    )
    assert filled.complete
    note()
    listed = list_subscriptions(
        pair.strava.client_id, pair.strava.client_secret, pair.strava.base_url
    )
    assert len(listed) == 1
    note()

    lines = strava_requests(pair)
    assert pair.strava.requests["token"] >= 1  # the refresh after the 401 happened
    kinds = {line.split("?")[0] for line in lines}
    assert {"POST /oauth/token", "POST /api/v3/uploads", "GET /api/v3/athlete/activities"} <= kinds
    assert any(k.startswith("GET /api/v3/activities/") for k in kinds)
    assert any(k.startswith("POST /api/v3/push_subscriptions") for k in kinds)
    values = {v for v in secrets_seen.values() if v}
    offending: list[str] = []
    for line in lines:
        method, target = line.split(" ", 1)
        url = unquote(target)
        if method == "GET" and urlsplit(target).path == "/api/v3/push_subscriptions":
            # Strava's only form of this call (stravalib #741): the client secret, no token.
            query = parse_qs(urlsplit(target).query)
            assert set(query) == {"client_id", "client_secret"}, line
            assert not values - {pair.strava.client_secret} & {
                v for vs in query.values() for v in vs
            }
            continue
        if "access_token=" in url or any(value in url for value in values):
            offending.append(line.split("?")[0])
    assert offending == []
    print(f"\nrequest lines checked: {len(lines)}, secrets known: {len(values)}")  # noqa: T201 - the figure
