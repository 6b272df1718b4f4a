"""The status page: over HTTP (starlette's test client) what it shows, its forms and
its protection (Host check, CSRF, Origin, the admin token); then in a real browser
(Debian's chromium, headless, driven by playwright; `make browser` installs it)."""

from __future__ import annotations

import base64
import os
import re
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from playwright.sync_api import Page, sync_playwright
from starlette.testclient import TestClient

from g2s_sandbox.scenario import SandboxPair, seed_demo
from garmin2strava.adapters.queue_sqlite import SqliteEventQueue
from garmin2strava.bootstrap import App
from garmin2strava.domain.app_access import APP_ACCESS_KEY, StravaAppAccess
from garmin2strava.domain.models import Account, LedgerEntry, UploadOutcome
from garmin2strava.domain.upload_rules import external_id_for
from garmin2strava.domain.webhook import WebhookEvent
from garmin2strava.entrypoints.status_page import (
    StatusPage,
    check_admin_exposure,
    create_status_page_app,
    serve_status_page,
    status_page_for_app,
)
from garmin2strava.errors import ConfigError
from garmin2strava.services.sync_accounts import sync_all

pytestmark = pytest.mark.integration

LOCAL = "http://127.0.0.1"

# The world: account `demo` synced for real against the sandboxes (uploaded, matched,
# skipped runs); account `trail` with a month of ledger entries of the other outcomes
# (failed, dead, in progress), as a real sync leaves them.
SECOND = "trail"
# (days ago, name, outcome, detail, strava id)
TRAIL_RUNS = (
    (27, "Hill repeats", UploadOutcome.UPLOADED, "", 7_000_001),
    (22, "Recovery jog", UploadOutcome.EXISTS, "matched: start time and duration", 7_000_002),
    (18, "Track 400s", UploadOutcome.FAILED, "TransientError: Strava answered 503", None),
    (12, "Broken watch file", UploadOutcome.DEAD, "Strava: the file has no data", None),
    (8, "Canal loop", UploadOutcome.PROCESSING, "", None),
    (2, "Parkrun <fast>", UploadOutcome.UPLOADED, "", 7_000_006),
)


def build_world(pair: SandboxPair, app: App, now: datetime) -> None:
    seed_demo(pair, now)
    for report in sync_all(app.store, app.sync_deps):
        assert report.ok, report.error
    app.store.put_account(
        Account(
            user_id=SECOND,
            strava_athlete_id=99,
            created_at=now - timedelta(days=40),
            last_cycle_at=now - timedelta(minutes=1),
            last_cycle_ok=False,
            last_cycle_summary={"failed": 1},
        )
    )
    for i, (days, name, outcome, detail, strava_id) in enumerate(TRAIL_RUNS):
        garmin_id = 31_000_001 + i
        app.store.put_upload(
            LedgerEntry(
                user_id=SECOND,
                garmin_activity_id=garmin_id,
                external_id=external_id_for(garmin_id),
                outcome=outcome,
                updated_at=now,
                activity_name=name,
                type_key="running",
                start_utc=(now - timedelta(days=days)).astimezone(UTC),
                attempts=5 if outcome is UploadOutcome.DEAD else 1,
                strava_activity_id=strava_id,
                detail=detail,
            )
        )


@pytest.fixture
def app(pair: SandboxPair, make_app: Callable[..., App]) -> App:
    built = make_app()
    build_world(pair, built, datetime.now(UTC))
    return built


def _status_page(app: App, token: str | None = None) -> StatusPage:
    return status_page_for_app(app, None, interval_s=60, admin_token=token)


def _csrf(html: str) -> str:
    found = re.search(r'name="csrf" value="([0-9a-f]+)"', html)
    assert found is not None
    return found.group(1)


def test_the_page_lists_accounts_runs_budget_and_escapes_names(app: App) -> None:
    """Both accounts with state and why, every run with its outcome and Strava link,
    the budget gauges; an activity name with markup is shown as text."""
    client = TestClient(create_status_page_app(_status_page(app)), base_url=LOCAL)
    page = client.get("/")
    assert page.status_code == 200
    html = page.text
    assert 'data-account="demo"' in html
    assert f'data-account="{SECOND}"' in html
    assert "the last cycle failed" in html
    for kind in ("uploaded", "matched", "skipped", "failed", "dead", "pending"):
        assert f'data-kind="{kind}"' in html
    assert "https://www.strava.com/activities/7000001" in html
    assert "Parkrun &lt;fast&gt;" in html
    assert "<fast>" not in html
    assert "15 minutes, all requests" in html
    assert "No webhook queue in this process" in html
    ledger = app.store.list_uploads("demo") + app.store.list_uploads(SECOND)
    assert len(ledger) > len(TRAIL_RUNS)
    assert html.count("<circle ") == len(ledger)  # one mark per Garmin run


def test_the_page_says_when_strava_refuses_the_application(app: App) -> None:
    """The application-wide inactive state (as services.strava_access stores it) is shown
    above everything; without it there is no such banner."""
    client = TestClient(create_status_page_app(_status_page(app)), base_url=LOCAL)
    assert 'id="app-inactive"' not in client.get("/").text
    since = datetime.now(UTC) - timedelta(hours=2)
    inactive = StravaAppAccess().deactivated(since, "Application Status Inactive")
    app.store.put_app_state(APP_ACCESS_KEY, inactive.to_dict())
    html = client.get("/").text
    assert 'id="app-inactive"' in html
    assert "Application Status Inactive" in html


def test_a_form_needs_the_pages_csrf_token_and_its_origin(app: App) -> None:
    """POST without the token or from another origin: 403 and nothing changes; with
    the token: 303 back to the page, which says what happened."""
    client = TestClient(create_status_page_app(_status_page(app)), base_url=LOCAL)
    token = _csrf(client.get("/").text)
    assert client.post("/accounts/demo/pause", data={}).status_code == 403
    evil = {"Origin": "http://attacker.example"}
    assert (
        client.post("/accounts/demo/pause", data={"csrf": token}, headers=evil).status_code == 403
    )
    account = app.store.get_account("demo")
    assert account is not None
    assert account.enabled

    answer = client.post("/accounts/demo/pause", data={"csrf": token}, follow_redirects=False)
    assert answer.status_code == 303
    account = app.store.get_account("demo")
    assert account is not None
    assert not account.enabled
    shown = client.get(answer.headers["location"]).text
    assert "demo is paused" in shown
    assert '<meta http-equiv="refresh"' not in shown  # no reload right after an action
    assert client.post("/accounts/nobody/pause", data={"csrf": token}).status_code == 200
    assert client.post("/accounts/demo/explode", data={"csrf": token}).status_code == 404


def test_retry_a_dead_upload_from_the_page(app: App) -> None:
    """The dead upload's Retry form puts it back as failed with no attempt counted."""
    client = TestClient(create_status_page_app(_status_page(app)), base_url=LOCAL)
    token = _csrf(client.get("/").text)
    dead_id = 31_000_004
    answer = client.post(f"/uploads/{SECOND}/{dead_id}/retry", data={"csrf": token})
    assert answer.status_code == 200
    assert f"Garmin activity {dead_id} of {SECOND} will be retried" in answer.text
    entry = app.store.get_uploads(SECOND, [dead_id])[dead_id]
    assert (entry.outcome.value, entry.attempts) == ("failed", 0)


def test_the_queue_and_a_dead_event_retried_from_the_page(app: App, tmp_path: Path) -> None:
    """With the container's SQLite queue: depth, oldest age and the dead letter are
    shown; its Retry form puts it back in the queue."""
    queue = SqliteEventQueue(tmp_path / "queue.sqlite3")
    try:
        now = datetime.now(UTC)
        for object_id in (1, 2):
            event = WebhookEvent("activity", object_id, "create", 99, 1, int(now.timestamp()))
            queue.enqueue(event, now=now - timedelta(minutes=object_id))
        ((dead,),) = [g for g in queue.claim(now=now) if g[0].event.object_id == 2]
        queue.dead_letter([dead], now=now, error="Strava answered 404 three times")
        client = TestClient(
            create_status_page_app(
                status_page_for_app(app, queue, interval_s=60, admin_token=None)
            ),
            base_url=LOCAL,
        )
        html = client.get("/").text
        assert "waiting: <strong>1</strong>" in html
        assert "dead letters: <strong>1</strong>" in html
        assert "Strava answered 404 three times" in html
        answer = client.post(f"/events/{dead.queue_id}/retry", data={"csrf": _csrf(html)})
        assert f"Webhook event {dead.queue_id} is back in the queue" in answer.text
        assert queue.depth() == 2
        assert queue.list_dead() == []
    finally:
        queue.close()


def test_without_a_token_only_a_loopback_host_is_served(app: App) -> None:
    """DNS rebinding: a request naming another host is refused (421)."""
    client = TestClient(
        create_status_page_app(_status_page(app)), base_url="http://g2s.attacker.example"
    )
    assert client.get("/").status_code == 421
    assert (
        TestClient(create_status_page_app(_status_page(app)), base_url="http://localhost:8081")
        .get("/")
        .status_code
        == 200
    )


def test_with_a_token_every_request_must_carry_it(app: App) -> None:
    """401 with a Basic challenge without it or with a wrong one; the token as Basic
    password or Bearer token opens the page, whatever the host."""
    client = TestClient(
        create_status_page_app(_status_page(app, token="s3cret-admin")), base_url="http://g2s.lan"
    )
    refused = client.get("/")
    assert refused.status_code == 401
    assert refused.headers["www-authenticate"].startswith("Basic ")
    assert "s3cret" not in refused.text
    wrong = base64.b64encode(b"op:nope").decode()
    assert client.get("/", headers={"Authorization": f"Basic {wrong}"}).status_code == 401
    right = base64.b64encode(b"op:s3cret-admin").decode()
    assert client.get("/", headers={"Authorization": f"Basic {right}"}).status_code == 200
    assert client.get("/", headers={"Authorization": "Bearer s3cret-admin"}).status_code == 200


def test_an_open_admin_listener_needs_a_token() -> None:
    """Not loopback and no G2S_ADMIN_TOKEN: refused before anything is served."""
    with pytest.raises(ConfigError, match="G2S_ADMIN_TOKEN"):
        check_admin_exposure("0.0.0.0", None)  # noqa: S104 - the case under test
    check_admin_exposure("0.0.0.0", "token")  # noqa: S104
    check_admin_exposure("127.0.0.1", None)
    check_admin_exposure("::1", None)


# -- in a real browser ---------------------------------------------------------------------
CHROMIUM = Path(os.environ.get("G2S_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture
def browser_page(tmp_path: Path, installed_tool: Callable[[Path, str], Path]) -> Iterator[Page]:
    """A page in Debian's chromium, headless, with a new empty profile (skipped by plain
    pytest where chromium is absent; `make test` and CI require it)."""
    chromium = installed_tool(CHROMIUM, "`make browser` installs Debian's, as root")
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path / "profile"),
            executable_path=str(chromium),
            args=CHROMIUM_ARGS,
            headless=True,
            viewport={"width": 1100, "height": 900},
            java_script_enabled=False,  # the page works without it
        )
        try:
            yield context.pages[0] if context.pages else context.new_page()
        finally:
            context.close()


def test_the_page_in_chromium_shows_every_account_and_outcome_and_pauses(
    app: App, browser_page: Page, tmp_path: Path
) -> None:
    """Chromium renders each account with its state and each outcome of the time line
    (the marks and the table); pressing Pause makes the account paused on the page and
    in the store. Screenshots: console.png, console-paused.png in the test's tmp dir."""
    served = serve_status_page(_status_page(app))
    try:
        page = browser_page
        page.goto(served.url)
        accounts = page.locator("#accounts")
        assert "active" in accounts.locator('tr[data-account="demo"]').inner_text()
        trail = accounts.locator(f'tr[data-account="{SECOND}"]').inner_text()
        assert "the last cycle failed" in trail
        runs = page.locator("#runs")
        for kind in ("uploaded", "matched", "skipped", "failed", "dead", "pending"):
            assert runs.locator(f'tr[data-kind="{kind}"]').count() >= 1, kind
        dead_row = runs.locator('tr[data-kind="dead"]').inner_text()
        assert "Broken watch file" in dead_row
        assert "Strava: the file has no data" in dead_row
        assert runs.locator('a[href="https://www.strava.com/activities/7000006"]').count() == 1
        ledger = app.store.list_uploads("demo") + app.store.list_uploads(SECOND)
        assert page.locator("#timeline circle").count() == len(ledger)
        box = page.locator("#timeline").bounding_box()
        assert box is not None
        assert box["width"] > 600  # drawn, not collapsed
        page.screenshot(path=str(tmp_path / "console.png"), full_page=True)

        accounts.locator('tr[data-account="demo"] button', has_text="Pause").click()
        page.wait_for_load_state()
        assert "demo is paused" in page.locator(".note").inner_text()
        row = page.locator('#accounts tr[data-account="demo"]')
        assert "paused" in row.locator(".state").inner_text()
        assert row.locator("button", has_text="Resume").count() == 1
        account = app.store.get_account("demo")
        assert account is not None
        assert not account.enabled
        page.screenshot(path=str(tmp_path / "console-paused.png"), full_page=True)
    finally:
        served.stop()
    assert (tmp_path / "console.png").stat().st_size > 10_000
