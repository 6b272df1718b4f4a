"""`disconnect` on Strava's POST /oauth/revoke (since 2026-06-01; /oauth/deauthorize
retires on 2027-06-01), one test per answer: revoked, 404 (deauthorize instead),
400/401 (dead already: revoked), and anything else (one line, exit 1, nothing deleted)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import requests

from g2s_harness.cli import run_cli
from g2s_sandbox.scenario import SandboxPair, running_sandboxes, seed_run
from g2s_sandbox.strava import StravaSandbox

pytestmark = pytest.mark.integration

USER = "me"
START = datetime.now(UTC).replace(microsecond=0) - timedelta(days=2)


@pytest.fixture
def pair(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, clean_cli_environment: None
) -> Iterator[SandboxPair]:
    """Both sandboxes, single-user settings, one run synced: tokens stored, in use."""
    with running_sandboxes() as sandboxes:
        settings = sandboxes.environment(
            user_id=USER, db_path=tmp_path / "g2s.sqlite3", G2S_UPLOAD_POLL_DELAY_SECONDS="0"
        )
        for name, value in settings.items():
            monkeypatch.setenv(name, value)
        yield sandboxes


def _synced(pair: SandboxPair, capsys: pytest.CaptureFixture[str]) -> None:
    seed_run(pair, 4_100_001, start_utc=START)
    assert run_cli(capsys, "sync")[0] == 0
    pair.reset_counts()


def _state(capsys: pytest.CaptureFixture[str]) -> str:
    (row,) = json.loads(run_cli(capsys, "accounts", "list", "--json")[1])
    return str(row["state"])


def _disconnected(pair: SandboxPair, capsys: pytest.CaptureFixture[str], answer: str) -> None:
    code, out, err = run_cli(capsys, "disconnect", "--yes")
    assert code == 0, err
    assert f"({answer};" in out
    assert _state(capsys) == "disconnected"
    history = json.loads(run_cli(capsys, "history", "--json")[1])[USER]
    assert any(e["kind"] == "strava.deauthorized" for e in history)


def test_revoke_is_one_request_with_basic_auth_and_kills_both_tokens(
    pair: SandboxPair, capsys: pytest.CaptureFixture[str]
) -> None:
    """One POST /oauth/revoke (the refresh token, the application's Basic credentials;
    the sandbox refuses it without them) and no refresh first; Strava forgets both
    tokens and sends its deauthorization event."""
    _synced(pair, capsys)
    _disconnected(pair, capsys, "revoked")
    assert dict(pair.strava.requests) == {"revoke": 1}
    assert pair.strava.refresh_token_of(pair.athlete_id) is None


def test_the_emulator_revokes_both_tokens_from_either() -> None:
    """As Strava documents revoke: the access token revokes the refresh token too (and
    the other way round, above); without the application's Basic credentials, 401."""
    with StravaSandbox() as sandbox:
        sandbox.add_athlete(7001)
        access, _expires = sandbox.issue_access_token(7001)
        url = f"{sandbox.oauth_url}/oauth/revoke"
        app = (str(sandbox.client_id), sandbox.client_secret)
        assert requests.post(url, data={"token": access}, timeout=5).status_code == 401
        assert requests.post(url, data={"token": access}, auth=app, timeout=5).status_code == 200
        assert sandbox.refresh_token_of(7001) is None
        athlete = requests.get(
            f"{sandbox.api_url}/athlete", headers={"Authorization": f"Bearer {access}"}, timeout=5
        )
        assert athlete.status_code == 401
        assert requests.post(url, data={"token": access}, auth=app, timeout=5).status_code == 400


def test_revoke_404_falls_back_to_deauthorize(
    pair: SandboxPair, capsys: pytest.CaptureFixture[str]
) -> None:
    """A Strava without /oauth/revoke (404): /oauth/deauthorize once, then done."""
    _synced(pair, capsys)
    pair.strava.revoke_available = False
    _disconnected(pair, capsys, "revoked")
    assert pair.strava.requests["revoke"] == 1
    assert pair.strava.requests["deauthorize"] == 1
    assert pair.strava.refresh_token_of(pair.athlete_id) is None


def test_revoke_400_for_a_dead_token_is_revoked_already(
    pair: SandboxPair, capsys: pytest.CaptureFixture[str]
) -> None:
    """The athlete revoked the app on strava.com: revoke answers 400 for our dead token,
    which means revoked; the local data goes, with no deauthorize."""
    _synced(pair, capsys)
    pair.strava.revoke(pair.athlete_id)
    _disconnected(pair, capsys, "already revoked on Strava")
    assert dict(pair.strava.requests) == {"revoke": 1}


def test_revoke_401_is_revoked_already(
    pair: SandboxPair, capsys: pytest.CaptureFixture[str]
) -> None:
    _synced(pair, capsys)
    pair.strava.fail_next("revoke", 401)
    _disconnected(pair, capsys, "already revoked on Strava")
    assert pair.strava.requests["deauthorize"] == 0


@pytest.mark.parametrize("status", [500, 429, 403])
def test_any_other_answer_is_one_line_exit_1_and_keeps_everything(
    pair: SandboxPair, capsys: pytest.CaptureFixture[str], status: int
) -> None:
    """5xx, 429, 403...: one line, exit 1; tokens, account and history as they were (a
    sync after it still uploads with the same tokens)."""
    _synced(pair, capsys)
    pair.strava.fail_next("revoke", status)
    code, out, err = run_cli(capsys, "disconnect", "--yes")
    assert code == 1
    assert out == ""
    assert len(err.strip().splitlines()) == 1, err
    assert err.startswith(f"garmin2strava: account {USER} not disconnected, nothing deleted: ")
    assert str(status) in err
    assert "Traceback" not in err
    assert pair.strava.requests["deauthorize"] == 0
    assert _state(capsys) == "active"
    seed_run(pair, 4_100_002, start_utc=START + timedelta(hours=3))
    code, out, _ = run_cli(capsys, "sync")
    assert code == 0, out
    assert "uploaded" in out


def test_wrong_application_credentials_are_no_revocation(
    pair: SandboxPair, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A 401 that names the client id says nothing of the athlete's tokens: the
    authorization is still there, so nothing local is deleted either."""
    _synced(pair, capsys)
    monkeypatch.setenv("STRAVA_CLIENT_SECRET", "not-the-secret")
    code, _out, err = run_cli(capsys, "disconnect", "--yes")
    assert code == 1
    assert "STRAVA_CLIENT_SECRET" in err
    assert len(err.strip().splitlines()) == 1
    assert pair.strava.refresh_token_of(pair.athlete_id) is not None
    assert _state(capsys) == "active"
