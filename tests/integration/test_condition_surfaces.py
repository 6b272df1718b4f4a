"""Where the open conditions show: `status` (text and --json), the status page, the
admin /healthz; and `history` says when each notification went out. The conditions
are opened the real way: the daemon's sync job against the sandboxes (Garmin
refuses the tokens), told to a recording channel."""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from g2s_harness.cli import run_cli
from g2s_sandbox.scenario import SandboxPair, running_sandboxes
from garmin2strava.bootstrap import App, bootstrap
from garmin2strava.domain.models import AccountStatus
from garmin2strava.entrypoints import telling
from garmin2strava.entrypoints.cli import _store_fresh_garmin_tokens
from garmin2strava.entrypoints.http_app import create_admin_app
from garmin2strava.entrypoints.status_page import create_status_page_app, status_page_for_app
from garmin2strava.entrypoints.telling import after_cycle, default_sight
from garmin2strava.services.accounts import ensure_settings_account
from garmin2strava.services.observability import HealthReport, check_health
from garmin2strava.services.sync_accounts import sync_all
from garmin2strava.services.write_trouble import WRITE_TROUBLE
from garmin2strava.settings import Settings, load_settings

pytestmark = pytest.mark.integration

USER = "me"
KEY = "garmin.tokens_refused"


@dataclass
class Recording:
    """A NotifyChannel that keeps what it was given (A's tests cover real Apprise)."""

    sent: list[tuple[str, str, str]] = field(default_factory=list)

    def send(self, title: str, body: str, notify_type: str) -> bool:
        self.sent.append((title, body, notify_type))
        return True


@pytest.fixture
def recording(monkeypatch: pytest.MonkeyPatch) -> Recording:
    for place in ("store", "temp", "space"):  # what an earlier test of this process met is not ours
        WRITE_TROUBLE.succeeded(place)
    channel = Recording()
    monkeypatch.setattr(telling, "channel_for", lambda _settings: channel)
    return channel


@pytest.fixture
def pair(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    clean_cli_environment: None,
) -> Iterator[SandboxPair]:
    with running_sandboxes() as sandboxes:
        environment = sandboxes.environment(user_id=USER, db_path=tmp_path / "g2s.sqlite3")
        for name, value in environment.items():
            monkeypatch.setenv(name, value)
        yield sandboxes


@pytest.fixture
def app(pair: SandboxPair, recording: Recording) -> App:
    """Garmin refused the tokens in one real cycle, and that was told."""
    settings: Settings = load_settings()
    made = bootstrap(settings)
    ensure_settings_account(made.store, settings, made.clock)
    pair.garmin.revoke_all_tokens()
    reports = sync_all(made.store, made.sync_deps)
    after_cycle(made, default_sight(made), ok=telling.cycle_ok(reports))
    assert [title for title, _, _ in recording.sent] == [f"[garmin2strava] {KEY} started"]
    return made


def test_status_lists_the_open_conditions_with_their_start_and_fix(
    app: App, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _err = run_cli(capsys, "status", "--json")
    assert code == 0
    (condition,) = json.loads(out)["conditions"]
    assert condition["key"] == KEY
    assert condition["userId"] == USER
    assert condition["since"].startswith(app.clock().date().isoformat())
    assert condition["fix"] == f"log in again: garmin2strava garmin login --user {USER}"
    assert condition["told"] is True

    code, out, _err = run_cli(capsys, "status")
    assert code == 0
    assert f"condition {KEY} (account {USER}) since {condition['since']}" in out
    assert f"  fix: log in again: garmin2strava garmin login --user {USER}" in out


def test_status_lists_no_condition_when_all_is_well(
    pair: SandboxPair,
    recording: Recording,
    capsys: pytest.CaptureFixture[str],
) -> None:
    made = bootstrap(load_settings())
    ensure_settings_account(made.store, made.settings, made.clock)
    reports = sync_all(made.store, made.sync_deps)
    after_cycle(made, default_sight(made), ok=telling.cycle_ok(reports))
    assert recording.sent == []
    code, out, _err = run_cli(capsys, "status", "--json")
    assert code == 0
    assert json.loads(out)["conditions"] == []
    assert "condition " not in run_cli(capsys, "status")[1]


def test_the_status_page_lists_the_open_conditions(app: App) -> None:
    page = status_page_for_app(app, None, interval_s=60, admin_token=None)
    client = TestClient(create_status_page_app(page), base_url="http://127.0.0.1")
    html = client.get("/").text
    assert 'id="conditions"' in html
    assert f"<strong>{KEY}</strong> (account {USER})" in html
    assert f"Fix: log in again: garmin2strava garmin login --user {USER}" in html


def test_the_admin_healthz_lists_the_open_conditions(app: App) -> None:
    def health() -> HealthReport:  # as AdminRuntime.health asks it, without a worker
        return check_health(app.store, None, now=app.clock(), max_cycle_age=timedelta(hours=1))

    client = TestClient(create_admin_app(health=health, metrics=list))
    answer = client.get("/healthz")
    assert answer.status_code == 503  # the failed cycle: as before, not for the condition
    body: dict[str, Any] = answer.json()
    (condition,) = body["conditions"]
    assert condition["key"] == KEY
    assert condition["userId"] == USER
    assert condition["since"]


def test_history_shows_when_each_notification_went_out(
    app: App, pair: SandboxPair, recording: Recording, capsys: pytest.CaptureFixture[str]
) -> None:
    _store_fresh_garmin_tokens(app, USER, pair.garmin.issue_tokens())  # `garmin login`
    account = app.store.get_account(USER)
    assert account is not None
    app.store.put_account(replace(account, status=AccountStatus.ACTIVE))
    reports = sync_all(app.store, app.sync_deps)
    after_cycle(app, default_sight(app), ok=telling.cycle_ok(reports))
    assert len(recording.sent) == 2

    code, out, _err = run_cli(capsys, "history")
    assert code == 0
    assert f"notification sent: key={KEY} kind=started" in out
    assert f"notification sent: key={KEY} kind=cleared" in out
    code, out, _err = run_cli(capsys, "history", "--json")
    sent = [e for e in json.loads(out)[USER] if e["kind"] == "notify.sent"]
    assert [(e["key"], e["notice"]) for e in sent] == [(KEY, "cleared"), (KEY, "started")]


def test_status_shows_a_nearly_full_disk_before_any_write_failed(
    pair: SandboxPair,
    recording: Recording,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The sync job's look at the store's disk: 3 MiB free is told, and shown."""
    made = bootstrap(load_settings())
    ensure_settings_account(made.store, made.settings, made.clock)
    real = shutil.disk_usage
    store_dir = made.settings.db_path.parent

    def nearly_full(path: str | Path) -> Any:  # the operating system's answer
        usage = real(path)
        return usage._replace(free=3 * 1024 * 1024) if Path(path) == store_dir else usage

    monkeypatch.setattr(shutil, "disk_usage", nearly_full)
    reports = sync_all(made.store, made.sync_deps)
    assert telling.cycle_ok(reports)  # every write worked: only the look saw it
    after_cycle(made, default_sight(made), ok=telling.cycle_ok(reports))
    assert [title for title, _, _ in recording.sent] == ["[garmin2strava] store.unwritable started"]
    _title, body, _type = recording.sent[0]
    assert f"the disk of the store ({store_dir}) has 3 MiB free" in body
    code, out, _err = run_cli(capsys, "status", "--json")
    assert code == 0
    assert [c["key"] for c in json.loads(out)["conditions"]] == ["store.unwritable"]
    WRITE_TROUBLE.succeeded("space")


def test_the_sync_looks_at_the_store_disk_on_sqlite_and_at_the_temporary_one_everywhere(
    pair: SandboxPair,
) -> None:
    settings = load_settings()
    temp = Path(tempfile.gettempdir())
    assert [(d.role, d.directory) for d in telling.written_disks(settings)] == [
        ("the store", settings.db_path.absolute().parent),
        ("the temporary directory", temp),
    ]
    on_aws = settings.model_copy(update={"store": "dynamodb"})  # the Lambda sync's
    assert [d.directory for d in telling.written_disks(on_aws)] == [temp]
