"""No secret in what telling shows (issue 18): the Strava client secret and tokens, the
Garmin tokens, the verify token and the webhook path secret derived from it, the
Apprise URLs and the heartbeat URL never appear in a notification (JSON body, mail),
a log line (at DEBUG), or what `notify test` prints.

The run: a real sync against the emulators that succeeds (tokens refreshed and
stored), then one that fails (Garmin and Strava refuse the account); every condition
of the catalogue told, as started (its detail the account's real error) and cleared,
through the real Apprise to a JSON webhook and an SMTP server with a password; the
heartbeat on success and on failure; `notify test`."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from g2s_harness.cli import run_cli
from g2s_harness.notify_catchers import JsonCatcher, SmtpCatcher
from g2s_sandbox.scenario import SandboxPair, running_sandboxes, seed_run
from garmin2strava.adapters.apprise_channel import channel_for
from garmin2strava.adapters.heartbeat import ping
from garmin2strava.adapters.store.sqlite import SqliteStore
from garmin2strava.bootstrap import build_cipher
from garmin2strava.domain.conditions import CONDITIONS, Observation
from garmin2strava.logs import configure_logging
from garmin2strava.services.notify import tell
from garmin2strava.settings import Settings, load_settings

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("clean_cli_environment")]

USER = "owner"
VERIFY_TOKEN = "verify-token-7c1e0b95d2aa4f38"
SMTP_PASSWORD = "smtp-password-51c9e3"
HOOK_PATH = "hook-path-8d2f41a7"
HEARTBEAT_KEY = "heartbeat-key-0e6b7d13"


@pytest.fixture
def pair() -> Iterator[SandboxPair]:
    with running_sandboxes() as sandboxes:
        yield sandboxes


def _secrets(settings: Settings, store: SqliteStore) -> set[str]:
    """Every secret the run had: given in the settings, derived, or stored."""
    found = {VERIFY_TOKEN, SMTP_PASSWORD, HOOK_PATH, HEARTBEAT_KEY, *settings.notify_url_list}
    for secret in (
        settings.strava_client_secret,
        settings.strava_refresh_token,
        settings.heartbeat_url,
        settings.notify_urls,
    ):
        assert secret is not None
        found.add(secret.get_secret_value())
    assert settings.garmin_tokens is not None
    garmin = json.loads(settings.garmin_tokens.get_secret_value())
    found |= {value for value in garmin.values() if isinstance(value, str) and len(value) > 8}
    assert settings.webhook_path_secret is not None
    found.add(settings.webhook_path_secret)
    stored = store.get_strava_tokens(USER)
    assert stored is not None
    found |= {stored.access_token, stored.refresh_token} - {""}
    return found


def _tell_every_condition(settings: Settings, store: SqliteStore, log_lines: io.StringIO) -> None:
    """Each condition started (its detail: the account's real error) and cleared, and
    the heartbeat both ways, with our logging at DEBUG into `log_lines`."""
    account = store.get_account(USER)
    assert account is not None
    assert account.status_detail  # the failed cycle's own words
    now = datetime.now(UTC)
    observed = [
        Observation(c.key, USER if c.scope == "account" else None, account.status_detail, now)
        for c in CONDITIONS.values()
    ]
    checked = {(o.key, o.user_id) for o in observed}
    channel = channel_for(settings.notify_url_list)
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    configure_logging("DEBUG", "json", stream=log_lines)
    try:
        started = tell(store, channel, observed, checked, now=now, owner="t")
        cleared = tell(store, channel, [], checked, now=now + timedelta(minutes=1), owner="t")
        assert settings.heartbeat_url is not None
        assert ping(settings.heartbeat_url.get_secret_value(), ok=True)
        assert ping(settings.heartbeat_url.get_secret_value(), ok=False)
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
    # garmin.tokens_refused was told by the failed `sync` itself (its hook).
    assert (len(started.sent), len(cleared.sent)) == (len(CONDITIONS) - 1, len(CONDITIONS))


def test_no_secret_in_a_notification_a_log_line_or_notify_test(
    pair: SandboxPair,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    db = tmp_path / "g2s.sqlite3"
    log_lines = io.StringIO()
    with JsonCatcher() as hook, SmtpCatcher(user="mailer", password=SMTP_PASSWORD) as smtp:
        environment = pair.environment(
            user_id=USER,
            db_path=db,
            STRAVA_VERIFY_TOKEN=VERIFY_TOKEN,
            G2S_NOTIFY_URLS=f"{hook.url(HOOK_PATH)} {smtp.url()}",
            G2S_HEARTBEAT_URL=hook.http_url(f"ping/{HEARTBEAT_KEY}"),
            G2S_LOG_LEVEL="DEBUG",
            G2S_UPLOAD_POLL_DELAY_SECONDS="0",
        )
        for name, value in environment.items():
            monkeypatch.setenv(name, value)
        seed_run(pair, 7001, start_utc=datetime.now(UTC) - timedelta(hours=3))
        printed = [run_cli(capsys, "sync")]
        assert printed[0][0] == 0, printed[0]
        pair.garmin.revoke_all_tokens()
        pair.strava.revoke(pair.athlete_id)
        printed.append(run_cli(capsys, "sync"))
        assert printed[1][0] == 1, printed[1]

        settings = load_settings()
        with SqliteStore(db, build_cipher(settings)) as store:
            _tell_every_condition(settings, store, log_lines)
            secrets = _secrets(settings, store)
        printed.append(run_cli(capsys, "notify", "test"))
        assert printed[2][0] == 0, printed[2]
        posted = [
            f"{h.body['title']}\n{h.body['message']}" for h in hook.hits if h.method == "POST"
        ]
        assert [h.path for h in hook.hits if h.method == "GET"] == [
            f"/ping/{HEARTBEAT_KEY}",  # the syncs' own: ok, then failed
            f"/ping/{HEARTBEAT_KEY}/fail",
            f"/ping/{HEARTBEAT_KEY}",
            f"/ping/{HEARTBEAT_KEY}/fail",
        ]
        mailed = [f"{m.subject}\n{m.text}" for m in smtp.mails]

    assert len(posted) == len(mailed) == 2 * len(CONDITIONS) + 1  # and notify test's
    texts = {
        "notifications": "\n".join(posted + mailed),
        "log lines": log_lines.getvalue(),
        "the commands' output": "\n".join(out + err for _, out, err in printed),
    }
    assert '"event":"notify.sent"' in texts["log lines"]
    assert "garmin2strava garmin login --user owner" in texts["notifications"]
    for where, text in texts.items():
        for secret in secrets:
            assert secret not in text, f"a secret ({len(secret)} characters) in {where}"
