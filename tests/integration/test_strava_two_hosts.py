"""Strava's 2027 layout against two emulators: the API at the root of one host (no
/api/v3 prefix), OAuth alone on another, each answering 404 to the other's paths
(G2S_STRAVA_API_URL, G2S_STRAVA_OAUTH_URL; G2S_STRAVA_BASE_URL points at a closed port,
so a request that ignored them would fail). The sync, `webhook subscribe`, the mirror,
streams and `disconnect` all run through real stravalib, and nothing reaches the wrong
host."""

from __future__ import annotations

import re
import socket
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import requests
import uvicorn

from g2s_harness.cli import run_cli
from g2s_sandbox.scenario import SandboxPair, running_sandboxes, seed_run
from g2s_sandbox.strava import StravaSandbox
from garmin2strava.adapters.queue_sqlite import SqliteEventQueue
from garmin2strava.adapters.strava_oauth import authorization_url, exchange_code
from garmin2strava.bootstrap import bootstrap, utc_now
from garmin2strava.domain.models import UploadOutcome
from garmin2strava.domain.strava_urls import StravaUrls
from garmin2strava.entrypoints.http_app import create_app
from garmin2strava.services.accounts import ensure_athlete_linked
from garmin2strava.services.mirror_intake import WebhookReceiver
from garmin2strava.services.mirror_subscription import (
    SUBSCRIPTION_STATE_KEY,
    SubscriptionSource,
    subscription_from_state,
)
from garmin2strava.services.mirror_worker import process_events
from garmin2strava.services.observability import MirrorStats, check_health
from garmin2strava.services.strava_access import StravaAccess
from garmin2strava.settings import load_settings

pytestmark = pytest.mark.integration

USER = "me"
VERIFY = "verify-token-for-two-hosts"
STREAMS = "time,heartrate,distance"
START = datetime.now(UTC).replace(microsecond=0) - timedelta(days=2)


@pytest.fixture
def pair(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, clean_cli_environment: None
) -> Iterator[SandboxPair]:
    with running_sandboxes(two_hosts=True) as sandboxes:
        settings = sandboxes.environment(
            user_id=USER,
            db_path=tmp_path / "g2s.sqlite3",
            G2S_UPLOAD_POLL_DELAY_SECONDS="0",
            STRAVA_VERIFY_TOKEN=VERIFY,
            G2S_MIRROR_STREAMS=STREAMS,
        )
        for name, value in settings.items():
            monkeypatch.setenv(name, value)
        yield sandboxes


def _serve_receiver(queue: SqliteEventQueue) -> tuple[uvicorn.Server, threading.Thread, int]:
    """Our webhook app under uvicorn; it reads the subscription id `webhook subscribe`
    stores."""
    store = bootstrap(load_settings()).store
    subscriptions = SubscriptionSource(
        read=lambda: subscription_from_state(store.get_app_state(SUBSCRIPTION_STATE_KEY))
    )
    stats = MirrorStats()
    receiver = WebhookReceiver(
        queue, verify_token=VERIFY, subscriptions=subscriptions, stats=stats, clock=utc_now
    )
    app = create_app(
        receiver,
        health=lambda: check_health(store, stats, now=utc_now(), max_cycle_age=timedelta(1)),
    )
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started and thread.is_alive():
        time.sleep(0.01)
    return server, thread, int(sock.getsockname()[1])


def _paths(lines: list[str]) -> set[str]:
    """The request lines with ids as {id}: "GET /activities/{id}/streams"."""
    return {re.sub(r"/\d+", "/{id}", line) for line in lines}


def test_sync_webhook_mirror_streams_and_disconnect_each_reach_the_right_host(
    pair: SandboxPair, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    strava = pair.strava
    # The sync: the refresh token bootstrapped (OAuth), the athlete, the list, one
    # upload and its polls (API).
    seed_run(pair, 4_200_001, start_utc=START)
    code, out, err = run_cli(capsys, "sync")
    assert code == 0, out + err
    assert "uploaded" in out

    queue = SqliteEventQueue(tmp_path / "queue.sqlite3")
    server, thread, port = _serve_receiver(queue)
    try:
        code, out, err = run_cli(
            capsys, "webhook", "subscribe", "--url", f"http://127.0.0.1:{port}"
        )
        assert code == 0, err
        assert run_cli(capsys, "webhook", "list")[0] == 0

        # The mirror: a second run's upload (after every access token died: a refresh
        # on the OAuth host) sends a create event; the worker fetches it and its streams.
        strava.expire_access_tokens()
        seed_run(pair, 4_200_002, start_utc=START + timedelta(hours=5))
        code, out, err = run_cli(capsys, "sync")
        assert code == 0, out + err
        app = bootstrap(load_settings())
        entry = app.store.get_uploads(USER, [4_200_002])[4_200_002]
        assert entry.outcome is UploadOutcome.UPLOADED
        assert entry.strava_activity_id is not None
        # As the daemon does at start: GET /athlete gives the athlete to link.
        access = app.strava_for(USER)
        assert isinstance(access, StravaAccess)
        ensure_athlete_linked(app.store, USER, access.get_athlete_id)
        assert app.store.user_for_athlete(pair.athlete_id) == USER
        assert strava.webhooks.wait_idle()
        counts = process_events(
            queue,
            app.store,
            app.strava_for,
            now=utc_now(),
            stream_types=app.settings.mirror_streams,
        )
        assert counts.processed >= 1
        assert counts.retried == counts.dead == counts.deferred == 0
        assert app.store.get_workout(USER, entry.strava_activity_id) is not None
        kept = app.store.get_streams(USER, entry.strava_activity_id)
        assert kept is not None
        assert set(kept.streams) == set(STREAMS.split(","))

        code, out, err = run_cli(capsys, "disconnect", "--yes")
        assert code == 0, err
        assert "(revoked;" in out
        assert strava.refresh_token_of(pair.athlete_id) is None
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        queue.close()

    assert strava.misrouted == []
    assert _paths(strava.host_lines["oauth"]) == {"POST /oauth/token", "POST /oauth/revoke"}
    assert _paths(strava.host_lines["api"]) >= {
        "GET /athlete",
        "GET /athlete/activities",
        "POST /uploads",
        "GET /uploads/{id}",
        "POST /push_subscriptions",
        "GET /push_subscriptions",
        "GET /activities/{id}",
        "GET /activities/{id}/streams",
    }
    assert not any("/oauth/" in line or "/api/v3" in line for line in strava.host_lines["api"])


def test_get_token_exchanges_on_the_oauth_host() -> None:
    """The consent URL and the code exchange go to the OAuth origin, nothing to the API."""
    with StravaSandbox(two_hosts=True) as sandbox:
        urls = StravaUrls(api=sandbox.api_url, oauth=sandbox.oauth_url)
        url = authorization_url(sandbox.client_id, "http://localhost:1/cb", "read", "s", urls)
        assert url.startswith(f"{sandbox.oauth_url}/oauth/authorize?")
        code = sandbox.authorize(7001)
        _tokens, _scope, athlete_id = exchange_code(
            sandbox.client_id, sandbox.client_secret, code, urls
        )
        assert athlete_id == 7001
        assert sandbox.host_lines == {"api": [], "oauth": ["POST /oauth/token"]}


def test_each_host_answers_404_to_the_others_paths() -> None:
    """The emulator's own rule, which the test above relies on: the API host has no
    /api/v3 prefix and no OAuth; the OAuth host has no API."""
    with StravaSandbox(two_hosts=True) as sandbox:
        refresh = sandbox.add_athlete(7001)
        form = {
            "client_id": sandbox.client_id,
            "client_secret": sandbox.client_secret,
            "grant_type": "refresh_token",
            "refresh_token": refresh,
        }
        assert (
            requests.post(f"{sandbox.api_url}/oauth/token", data=form, timeout=5).status_code == 404
        )
        token = requests.post(f"{sandbox.oauth_url}/oauth/token", data=form, timeout=5)
        assert token.status_code == 200
        auth = {"Authorization": f"Bearer {token.json()['access_token']}"}
        for wrong in (f"{sandbox.oauth_url}/athlete", f"{sandbox.api_url}/api/v3/athlete"):
            assert requests.get(wrong, headers=auth, timeout=5).status_code == 404
        assert (
            requests.get(f"{sandbox.api_url}/athlete", headers=auth, timeout=5).status_code == 200
        )
        assert sandbox.misrouted == [
            "api: POST /oauth/token",
            "oauth: GET /athlete",
            "api: GET /api/v3/athlete",
        ]
        with pytest.raises(RuntimeError):
            _ = sandbox.base_url
