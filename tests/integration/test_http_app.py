"""The webhook HTTP app over the real SQLite queue and store (starlette TestClient)."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import pytest
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route
from starlette.testclient import TestClient

from garmin2strava.adapters.crypto import AesGcmCipher
from garmin2strava.adapters.queue_sqlite import SqliteEventQueue
from garmin2strava.adapters.store.sqlite import SqliteStore
from garmin2strava.domain.models import Account
from garmin2strava.domain.webhook import callback_path, derive_path_secret
from garmin2strava.entrypoints.http_app import HEALTH_TIMEOUT_S, create_admin_app, create_app
from garmin2strava.ports import StravaPort
from garmin2strava.services.mirror_intake import WebhookReceiver
from garmin2strava.services.mirror_worker import process_events
from garmin2strava.services.observability import (
    HealthReport,
    MirrorStats,
    check_health,
    collect_metrics,
)

SUB = 120475
TOKEN = "verify-me"
PATH = callback_path(derive_path_secret(TOKEN))
NOW = datetime(2025, 6, 1, 8, 0, tzinfo=UTC)


class Harness:
    def __init__(self, tmp_path: Path) -> None:
        self.db = tmp_path / "g2s.sqlite3"
        self.queue = SqliteEventQueue(self.db)
        self.store = SqliteStore(self.db, AesGcmCipher(bytes(range(32))))
        self.stats = MirrorStats()
        receiver = WebhookReceiver(
            self.queue,
            verify_token=TOKEN,
            subscription_id=SUB,
            stats=self.stats,
            clock=lambda: NOW,
        )

        def health() -> HealthReport:
            return check_health(self.store, self.stats, now=NOW, max_cycle_age=timedelta(minutes=5))

        self.client = TestClient(create_app(receiver, health=health))
        self.admin = TestClient(
            create_admin_app(
                health=health,
                metrics=lambda: collect_metrics(self.queue, self.stats, now=NOW, store=self.store),
            )
        )


@pytest.fixture
def h(tmp_path: Path) -> Iterator[Harness]:
    harness = Harness(tmp_path)
    yield harness
    harness.client.close()
    harness.admin.close()
    harness.queue.close()
    harness.store.close()


def event(**changes: Any) -> dict[str, Any]:
    base = {
        "aspect_type": "create",
        "event_time": 1748764800,
        "object_id": 1360128428,
        "object_type": "activity",
        "owner_id": 134815,
        "subscription_id": SUB,
        "updates": {},
    }
    return base | changes


def test_handshake_echoes_challenge_as_json(h: Harness) -> None:
    """Right mode and token: 200 with {"hub.challenge": ...} as application/json."""
    params = {"hub.mode": "subscribe", "hub.challenge": "15f7d1a9", "hub.verify_token": TOKEN}
    answer = h.client.get(PATH, params=params)
    assert answer.status_code == 200
    assert answer.headers["content-type"] == "application/json"
    assert answer.json() == {"hub.challenge": "15f7d1a9"}


@pytest.mark.parametrize(
    "params",
    [
        {"hub.mode": "subscribe", "hub.challenge": "c4ll", "hub.verify_token": "wrong"},
        {"hub.mode": "unsubscribe", "hub.challenge": "c4ll", "hub.verify_token": TOKEN},
        {"hub.challenge": "c4ll"},
    ],
)
def test_bad_handshake_is_403_and_echoes_nothing(h: Harness, params: dict[str, str]) -> None:
    """Any other handshake: 403, and neither the challenge nor a token is in the answer."""
    answer = h.client.get(PATH, params=params)
    assert answer.status_code == 403
    assert "c4ll" not in answer.text
    assert TOKEN not in answer.text


def test_event_is_queued_once_even_when_redelivered(h: Harness) -> None:
    """Two deliveries of one event: both 200, one queue row."""
    first = h.client.post(PATH, json=event())
    second = h.client.post(PATH, json=event())
    assert (first.status_code, second.status_code) == (200, 200)
    assert h.queue.depth() == 1
    h.client.post(PATH, json=event(aspect_type="update", updates={"title": "x"}))
    assert h.queue.depth() == 2


@pytest.mark.parametrize(
    ("payload", "status"),
    [
        (b"{oops", 400),
        (json.dumps(event(object_type="club")).encode(), 400),
        (json.dumps(event(object_id="12")).encode(), 400),
        (json.dumps(event(subscription_id=SUB + 1)).encode(), 200),
        (json.dumps(event(event_time=2**62)).encode(), 400),
        (json.dumps(event(event_time=4_102_444_800)).encode(), 400),
        (b"[" * 2000 + b"]" * 2000, 400),
        (b'{"updates":' + b"[" * 2000 + b"]" * 2000 + b"}", 400),
        (
            json.dumps(
                event(
                    updates={"title": "x" * 500, "t2": "y" * 500}
                    | {f"k{i}": "z" * 400 for i in range(9)}
                )
            ).encode(),
            413,
        ),
    ],
    ids=[
        "not-json",
        "club",
        "string-id",
        "foreign",
        "2**62",
        "year-2100",
        "deep",
        "deep-in",
        "big",
    ],
)
def test_rejected_events_are_not_queued(h: Harness, payload: bytes, status: int) -> None:
    """Malformed, absurd or future event_time, 2,000-deep JSON: 400; foreign
    subscription: 200 as if valid; over 4 KiB 413; nothing reaches the queue."""
    answer = h.client.post(PATH, content=payload, headers={"content-type": "application/json"})
    assert answer.status_code == status
    assert len(answer.content) < 100
    assert h.queue.depth() == 0


def test_oversized_body_without_content_length_is_413(h: Harness) -> None:
    """A chunked body that grows past the limit is refused while reading it."""

    def chunks() -> Iterator[bytes]:
        for _ in range(10):
            yield b" " * 1000

    answer = h.client.post(PATH, content=chunks())
    assert answer.status_code == 413
    assert h.queue.depth() == 0


WRONG_PATHS = [
    "/webhooks/strava",
    "/webhooks/strava/",
    "/webhooks/strava/wrong",
    PATH[:-1],
    PATH + "x",
    PATH.upper(),
    PATH + "/extra",
    "/webhooks/strava/%2e%2e",
    "/nothing-here",
]


def test_every_path_but_the_secret_one_gets_the_same_404(h: Harness) -> None:
    """Wrong secrets (the bare old path included) get, for GET, POST and PUT alike, the
    very answer of a path that never existed: status, body and headers; nothing queued,
    no handshake answered."""
    params = {"hub.mode": "subscribe", "hub.challenge": "c4ll", "hub.verify_token": TOKEN}
    reference = h.client.get("/nothing-here")
    expected = (404, reference.content, dict(reference.headers))
    for path in WRONG_PATHS:
        for method in ("GET", "POST", "PUT"):
            answer = h.client.request(method, path, params=params, json=event())
            assert (answer.status_code, answer.content, dict(answer.headers)) == expected, path
    assert h.queue.depth() == 0
    # The four that reach the route (a secret segment that is wrong), for 3 methods each.
    assert h.stats.get("requests_wrong_path") == 4 * 3
    assert h.client.get(PATH, params=params).json() == {"hub.challenge": "c4ll"}
    assert h.client.put(PATH).status_code == 405


async def post_asgi(app: Any, path: str, body: bytes) -> tuple[int, bytes, tuple[Any, ...]]:
    """(status, body, sorted headers) of one POST handed to the ASGI app itself: the
    request the test client would make, without its thread and portal per request."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [
            (b"host", b"testserver"),
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
        ],
        "client": ("127.0.0.1", 50000),
        "server": ("testserver", 80),
    }
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    start = next(m for m in sent if m["type"] == "http.response.start")
    content = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return start["status"], content, tuple(sorted(start["headers"]))


def test_no_oracle_for_the_subscription_id(h: Harness) -> None:
    """2,000 guessed subscription ids, ours among them, plus an unknown athlete: one and
    the same answer (status, body, headers) for all; only ours is queued."""

    async def guesses() -> set[tuple[int, bytes, tuple[Any, ...]]]:
        answers = set()
        for guess in range(SUB - 1000, SUB + 1000):
            body = json.dumps(event(subscription_id=guess, object_id=guess)).encode()
            answers.add(await post_asgi(h.client.app, PATH, body))
        answers.add(
            await post_asgi(h.client.app, PATH, json.dumps(event(owner_id=999_999)).encode())
        )
        return answers

    answers = asyncio.run(guesses())
    assert len(answers) == 1
    assert next(iter(answers))[:2] == (200, b'{"status":"received"}')
    assert h.queue.depth() == 2  # our subscription's event and the stranger's
    assert h.stats.get("events_rejected_foreign") == 1999
    # The same answer through the test client (HTTP semantics, one request).
    answer = h.client.post(PATH, json=event(subscription_id=SUB - 1))
    assert (answer.status_code, answer.content) == next(iter(answers))[:2]


def test_the_path_secret_reaches_no_log_record(
    h: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    """Handshakes, events and wrong paths at DEBUG: neither the path secret nor the
    verify token is in any log message or field."""
    caplog.set_level(logging.DEBUG)
    secret = derive_path_secret(TOKEN)
    params = {"hub.mode": "subscribe", "hub.challenge": "c", "hub.verify_token": TOKEN}
    h.client.get(PATH, params=params)
    h.client.get(PATH, params=params | {"hub.verify_token": "no"})
    h.client.post(PATH, json=event())
    h.client.post(PATH, content=b"{")
    h.client.post(PATH[:-1], json=event())
    h.client.post(PATH, json=event(subscription_id=1))
    # The server's records (httpx's are the test client's: Strava's side).
    ours = [r for r in caplog.records if not r.name.startswith(("httpx", "httpcore"))]
    assert ours
    text = "\n".join(f"{r.getMessage()} {vars(r)}" for r in ours)
    assert secret not in text
    assert secret[:12] not in text
    assert TOKEN not in text


def test_healthz_503_until_worker_runs_then_200(h: Harness) -> None:
    """No worker heartbeat: 503 (the admin app gives the reason); after a worker run: 200."""
    assert h.client.get("/healthz").status_code == 503
    answer = h.admin.get("/healthz")
    assert answer.status_code == 503
    assert "mirror worker not running" in answer.json()["reasons"]
    h.stats.beat(NOW, None)
    time.sleep(1.1)  # a health answer is reused for a second
    assert h.client.get("/healthz").status_code == 200
    assert h.admin.get("/healthz").status_code == 200


def test_healthz_503_when_last_sync_cycle_failed(h: Harness) -> None:
    """An account whose last cycle failed: both apps answer 503; only the admin one
    names the account and the reason, the public one says {"ok": false} and no more."""
    h.stats.beat(NOW, None)
    h.store.put_account(Account(user_id="u1", last_cycle_at=NOW, last_cycle_ok=False))
    answer = h.admin.get("/healthz")
    assert answer.status_code == 503
    assert answer.json()["reasons"] == ["last sync cycle of u1 failed"]
    public = h.client.get("/healthz")
    assert public.status_code == 503
    assert public.json() == {"ok": False}
    assert "u1" not in public.text


def test_public_app_serves_only_the_webhook_and_the_bare_health(h: Harness) -> None:
    """/metrics and anything else is 404 on the public app; /metrics is on the admin one."""
    h.client.post(PATH, json=event())
    for path in ("/metrics", "/", "/admin", "/healthz/detail"):
        assert h.client.get(path).status_code == 404, path
    assert "g2s_webhook_events_received_total 1" in h.admin.get("/metrics").text
    assert h.admin.post(PATH, json=event()).status_code in {404, 405}


def test_admin_app_takes_more_routes(h: Harness) -> None:
    """Routes given to create_admin_app are served beside /healthz and /metrics."""

    async def status(_: Request) -> Response:
        return PlainTextResponse("status page")

    app = create_admin_app(
        health=lambda: HealthReport(ok=True), metrics=list, routes=[Route("/status", status)]
    )
    with TestClient(app) as client:
        assert client.get("/status").text == "status page"
        assert client.get("/healthz").status_code == 200


# The hanging-health tests wait this instead of the production HEALTH_TIMEOUT_S;
# test_the_production_health_timeout_is_wired_into_both_apps waits that one once.
SHORT_HEALTH_TIMEOUT_S = 0.3


class StuckHealth:
    """A health check stuck behind a locked store until `release` (10 s at most),
    counting how many run at once."""

    def __init__(self) -> None:
        self.running = 0
        self.most = 0
        self._lock = threading.Lock()
        self.release = threading.Event()

    def __call__(self) -> HealthReport:
        with self._lock:
            self.running += 1
            self.most = max(self.most, self.running)
        self.release.wait(10)
        with self._lock:
            self.running -= 1
        return HealthReport(ok=True)


@pytest.mark.parametrize("admin", [False, True], ids=["public", "admin"])
def test_health_that_hangs_is_a_quick_503(h: Harness, admin: bool) -> None:
    """A health check stuck behind a locked store (it waits 10 s here): /healthz
    answers 503 within the health timeout and a margin, each time, and the checks do
    not pile up (one runs at a time)."""
    stuck = StuckHealth()
    receiver = WebhookReceiver(
        h.queue, verify_token=TOKEN, subscription_id=SUB, stats=h.stats, clock=lambda: NOW
    )
    app = (
        create_admin_app(health=stuck, metrics=list, health_timeout_s=SHORT_HEALTH_TIMEOUT_S)
        if admin
        else create_app(receiver, health=stuck, health_timeout_s=SHORT_HEALTH_TIMEOUT_S)
    )
    took: list[float] = []
    with TestClient(app) as client:
        try:
            for _ in range(3):
                started = time.monotonic()
                answer = client.get("/healthz")
                took.append(time.monotonic() - started)
                assert answer.status_code == 503
        finally:
            stuck.release.set()  # the stuck check ends; the client's loop can stop
    assert max(took) < SHORT_HEALTH_TIMEOUT_S + 1.0, took
    assert stuck.most == 1


def test_the_production_health_timeout_is_wired_into_both_apps(h: Harness) -> None:
    """Built without a timeout (as the server builds them), both apps wait
    HEALTH_TIMEOUT_S (3 s, under the HEALTHCHECK's 5 s) for a stuck check, no less
    and not much more, then 503; the admin one says how long it waited."""
    receiver = WebhookReceiver(
        h.queue, verify_token=TOKEN, subscription_id=SUB, stats=h.stats, clock=lambda: NOW
    )
    stuck = StuckHealth()
    apps = {
        "public": create_app(receiver, health=stuck),
        "admin": create_admin_app(health=stuck, metrics=list),
    }

    def ask(app: Any) -> tuple[int, float, Any]:
        with TestClient(app) as client:
            started = time.monotonic()
            answer = client.get("/healthz")
            return answer.status_code, time.monotonic() - started, answer.json()

    try:
        with ThreadPoolExecutor(max_workers=2) as pool:  # both wait at once: 3 s, not 6
            answers = dict(zip(apps, pool.map(ask, apps.values()), strict=True))
    finally:
        stuck.release.set()
    for status, took, _ in answers.values():
        assert status == 503
        assert HEALTH_TIMEOUT_S - 0.05 <= took < HEALTH_TIMEOUT_S + 1.0, answers
    reason = f"health check did not answer within {HEALTH_TIMEOUT_S:g} s (store busy?)"
    assert answers["admin"][2]["reasons"] == [reason]
    assert answers["public"][2] == {"ok": False}


def test_metrics_text_counts_events_and_queue(h: Harness) -> None:
    """/metrics is Prometheus text with received/rejected counters and queue gauges."""
    h.client.post(PATH, json=event())
    h.client.post(PATH, content=b"nope")
    text = h.admin.get("/metrics").text
    assert "# TYPE g2s_webhook_events_received_total counter" in text
    assert "g2s_webhook_events_received_total 1\n" in text
    assert 'g2s_webhook_events_rejected_total{reason="bad"} 1\n' in text
    assert "g2s_queue_depth 1\n" in text


def test_event_answered_200_survives_sigkill_of_worker_holding_it(tmp_path: Path) -> None:
    """A worker process SIGKILLed while holding a claim: its event is claimed again at
    once (the claimant is provably dead, no lease waited out) and mirrored."""
    db = tmp_path / "g2s.sqlite3"
    queue = SqliteEventQueue(db)
    store = SqliteStore(db, AesGcmCipher(bytes(range(32))))
    try:
        store.link_athlete(134815, "u1")
        receiver = WebhookReceiver(
            queue, verify_token=TOKEN, subscription_id=SUB, stats=MirrorStats(), clock=lambda: NOW
        )
        assert receiver.receive(json.dumps(event()).encode()).status == 200
        holder = textwrap.dedent(
            f"""
            import sys, time
            from datetime import datetime, UTC
            from garmin2strava.adapters.queue_sqlite import SqliteEventQueue
            q = SqliteEventQueue({str(db)!r})
            groups = q.claim(now=datetime.fromisoformat({NOW.isoformat()!r}), visibility_seconds=30)
            print(len(groups), flush=True)
            time.sleep(60)
            """
        )
        proc = subprocess.Popen(  # noqa: S603 (our own interpreter and script)
            [sys.executable, "-c", holder], stdout=subprocess.PIPE, env=os.environ.copy()
        )
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == b"1"
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(timeout=10) == -signal.SIGKILL
        proc.stdout.close()

        class Strava:
            fetched: list[int] = []  # noqa: RUF012 (one instance, read by the test)

            def get_activity(self, activity_id: int) -> dict[str, Any]:
                self.fetched.append(activity_id)
                return {
                    "id": activity_id,
                    "athlete": {"id": 134815},
                    "name": "Survivor",
                    "sport_type": "Run",
                    "start_date": "2025-06-01T06:00:00Z",
                    "elapsed_time": 60,
                }

        strava = Strava()

        def strava_for(_: str) -> StravaPort:
            return cast("StravaPort", strava)  # a partial port: the worker only fetches here

        # Well inside the dead worker's 30 s lease.
        again = process_events(queue, store, strava_for, now=NOW + timedelta(seconds=1))
        assert again.processed == 1
        workout = store.get_workout("u1", 1360128428)
        assert workout is not None
        assert workout.name == "Survivor"
        assert strava.fetched == [1360128428]
    finally:
        queue.close()
        store.close()
