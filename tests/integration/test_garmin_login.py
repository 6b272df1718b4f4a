"""`garmin2strava garmin login` end to end: the command through click's CliRunner, the real
garminconnect client logging in to the Garmin emulator's SSO on 127.0.0.1, the tokens it
stores, and a `sync --once` that then uses them."""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import requests
from click.testing import CliRunner
from garminconnect.client import sso

from g2s_sandbox.garmin import GarminSandbox
from g2s_sandbox.scenario import SandboxPair, running_sandboxes, seed_run
from garmin2strava.adapters.garmin import NO_DI_TOKENS
from garmin2strava.adapters.store.sqlite import SqliteStore
from garmin2strava.bootstrap import bootstrap
from garmin2strava.domain.models import GarminTokens
from garmin2strava.entrypoints.cli import cli
from garmin2strava.ports import Store
from garmin2strava.services.garmin_login import login_cooldown
from garmin2strava.settings import load_settings

pytestmark = pytest.mark.integration

USER = "me"
EMAIL = "runner@example.com"
PASSWORD = "correct-horse-battery-7731"
MFA_CODE = "246810"
WRONG_CREDENTIALS = "garmin2strava: Garmin login failed: wrong email, password or MFA code\n"
RATE_LIMITED = (
    "garmin2strava: Garmin is rate-limiting logins for this account; wait hours before "
    "retrying (Garmin: All login strategies rate limited or blocked (HTTP 429/427). Garmin "
    "may be blocking this client or network rather than rate limiting; try again later or "
    "from another network.); next login after "
)
STORED = f"Garmin tokens stored for account {USER}; the daemon will use them from now on.\n"
START = datetime.now(tz=UTC).replace(microsecond=0) - timedelta(days=1)


@pytest.fixture(autouse=True)
def clean_environment(clean_cli_environment: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """conftest's clean_cli_environment, and no anti-bot pause in the library's mobile
    login: it waits 2-5 s between the sign-in page and the credentials, which paces
    requests to Garmin's real front and means nothing on loopback."""
    monkeypatch.setattr(sso, "MOBILE_DELAY_MIN_S", 0.0)
    monkeypatch.setattr(sso, "MOBILE_DELAY_MAX_S", 0.0)
    # The same for the widget and portal strategies (3-8 s, 10-20 s), which a login
    # reaches when the mobile ones fail (test_a_failed_login_says_what_the_library_says).
    for name in (
        "WIDGET_DELAY_MIN_S",
        "WIDGET_DELAY_MAX_S",
        "LOGIN_DELAY_MIN_S",
        "LOGIN_DELAY_MAX_S",
    ):
        monkeypatch.setattr(sso, name, 0.0)


@pytest.fixture
def pair(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[SandboxPair]:
    """Both emulators, the Garmin one knowing the account; single-user settings pointing
    at them, with the Garmin credentials and without GARMIN_TOKENS (the login brings them)."""
    with running_sandboxes() as sandboxes:
        sandboxes.garmin.set_account(EMAIL, PASSWORD)
        settings = sandboxes.environment(
            user_id=USER,
            db_path=tmp_path / "data" / "g2s.sqlite3",
            G2S_UPLOAD_POLL_DELAY_SECONDS="0",
            GARMIN_EMAIL=EMAIL,
            GARMIN_PASSWORD=PASSWORD,
        )
        del settings["GARMIN_TOKENS"]
        for name, value in settings.items():
            monkeypatch.setenv(name, value)
        yield sandboxes


@pytest.fixture
def records() -> Iterator[list[logging.LogRecord]]:
    """Every record of our own loggers at DEBUG (a handler on the package logger, which
    the command's logging set-up leaves in place: it replaces the root's handlers)."""
    captured: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            captured.append(record)

    package = logging.getLogger("garmin2strava")
    handler, level = Keep(logging.DEBUG), package.level
    package.addHandler(handler)
    package.setLevel(logging.DEBUG)
    yield captured
    package.removeHandler(handler)
    package.setLevel(level)


def run_cli(*argv: str, stdin: str | None = None) -> tuple[int, str, str]:
    """`garmin2strava argv...` in this process, `stdin` typed at its prompts."""
    result = CliRunner().invoke(cli, list(argv), input=stdin, prog_name="garmin2strava")
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout, result.stderr


def store() -> Store:
    """The store the commands use (the settings of the environment)."""
    return bootstrap(load_settings()).store


def stored_blob() -> dict[str, str] | None:
    tokens = store().get_garmin_tokens(USER)
    return None if tokens is None else dict(json.loads(tokens.blob))


def seed_one_run(pair: SandboxPair) -> int:
    seed_run(pair, 31_000_001, start_utc=START, name="After the login")
    return 31_000_001


def test_login_stores_tokens_that_the_next_sync_uses_without_logging_in(
    pair: SandboxPair,
) -> None:
    """A login without MFA goes to G2S_GARMIN_BASE_URL, stores live tokens, and a
    `sync --once` right after uploads a run with them: 0 further login requests."""
    code, out, err = run_cli("garmin", "login")
    assert (code, out, err) == (0, STORED, "")
    assert pair.garmin.login_attempts == {"signed_in": 1}
    # sign-in page + credentials, the ticket exchange, the library's token check
    assert pair.garmin.requests == {"login": 2, "ticket_exchange": 1, "profile": 1}
    blob = stored_blob()
    assert blob is not None
    assert pair.garmin.is_access_token_valid(blob["di_token"])
    assert pair.garmin.is_refresh_token_valid(blob["di_refresh_token"])
    account = store().get_account(USER)
    assert account is not None
    assert account.status.value == "active"

    garmin_id = seed_one_run(pair)
    pair.reset_counts()
    code, out, err = run_cli("sync", "--once")
    assert code == 0, err
    assert {a.external_id for a in pair.strava.activities.values()} == {
        f"garmin2strava_{garmin_id}"
    }
    assert pair.garmin.requests["login"] == 0
    assert pair.garmin.requests["ticket_exchange"] == 0
    assert pair.garmin.login_attempts == {"signed_in": 1}


def test_a_rotation_by_a_running_daemon_during_the_login_does_not_lose_the_new_tokens(
    pair: SandboxPair, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Old tokens are stored; a daemon rotates them (a compare-and-set that moves the
    version) just as the login writes: the login's tokens are what is stored after."""
    store().replace_garmin_tokens(USER, '{"di_token": "old"}', expected_version=None)
    original = SqliteStore.replace_garmin_tokens
    rotations: list[int] = []

    def daemon_rotates_first(
        self: SqliteStore, user_id: str, blob: str, *, expected_version: int | None
    ) -> GarminTokens | None:
        if not rotations and "old" not in blob:
            rotations.append(1)  # the daemon's refresh wins the race once
            original(self, user_id, '{"di_token": "rotated"}', expected_version=expected_version)
        return original(self, user_id, blob, expected_version=expected_version)

    monkeypatch.setattr(SqliteStore, "replace_garmin_tokens", daemon_rotates_first)
    code, out, err = run_cli("garmin", "login")
    assert (code, out, err) == (0, STORED, "")
    assert rotations == [1]
    blob = stored_blob()
    assert blob is not None
    assert pair.garmin.is_access_token_valid(blob["di_token"])


def test_login_with_mfa_prompts_for_the_code_and_stores_the_tokens(pair: SandboxPair) -> None:
    """An account with MFA: the code is asked on stdin, accepted, and the tokens stored."""
    pair.garmin.set_account(EMAIL, PASSWORD, mfa_code=MFA_CODE)
    code, out, err = run_cli("garmin", "login", stdin=f"{MFA_CODE}\n")
    assert (code, err) == (0, "")
    assert out == f"Garmin MFA code: {STORED}"
    assert pair.garmin.login_attempts == {"mfa_required": 1, "mfa_signed_in": 1}
    blob = stored_blob()
    assert blob is not None
    assert pair.garmin.is_access_token_valid(blob["di_token"])


def test_a_wrong_mfa_code_fails_in_one_line_and_stores_nothing(pair: SandboxPair) -> None:
    """A wrong MFA code: exit 1, the one line, no tokens and no account stored."""
    pair.garmin.set_account(EMAIL, PASSWORD, mfa_code=MFA_CODE)
    code, out, err = run_cli("garmin", "login", stdin="135790\n")
    assert (code, out, err) == (1, "Garmin MFA code: ", WRONG_CREDENTIALS)
    assert pair.garmin.login_attempts["mfa_required"] == 1
    assert pair.garmin.login_attempts["wrong_mfa_code"] >= 1
    assert "mfa_signed_in" not in pair.garmin.login_attempts
    assert pair.garmin.requests["ticket_exchange"] == 0
    assert stored_blob() is None
    assert store().get_account(USER) is None


def test_no_mfa_code_on_a_closed_stdin_fails_in_one_line(pair: SandboxPair) -> None:
    """MFA asked with nothing to read on stdin: exit 1 with one line, nothing stored."""
    pair.garmin.set_account(EMAIL, PASSWORD, mfa_code=MFA_CODE)
    code, out, err = run_cli("garmin", "login", stdin="")
    assert (code, out) == (1, "Garmin MFA code: ")
    assert err == (
        "garmin2strava: Garmin login failed: Garmin asks for an MFA code and none was typed\n"
    )
    assert pair.garmin.login_attempts == {"mfa_required": 1}
    assert stored_blob() is None


def test_a_wrong_password_fails_in_one_line_and_never_shows_the_password(
    pair: SandboxPair, monkeypatch: pytest.MonkeyPatch, records: list[logging.LogRecord]
) -> None:
    """A wrong password: exit 1 with the one line, nothing stored, and the password is in
    neither stdout, stderr (logging at DEBUG) nor any log record."""
    typed = "Tr0ub4dor&3-not-the-password"
    monkeypatch.setenv("GARMIN_PASSWORD", typed)
    monkeypatch.setenv("G2S_LOG_LEVEL", "DEBUG")
    code, out, err = run_cli("garmin", "login")
    assert code == 1
    assert err.splitlines(keepends=True)[-1] == WRONG_CREDENTIALS
    assert pair.garmin.login_attempts == {"wrong_password": 1}
    assert stored_blob() is None
    assert store().get_account(USER) is None
    texts = [out, err] + [r.getMessage() + repr(r.__dict__) for r in records]
    for text in texts:
        assert typed not in text
        assert PASSWORD not in text


def test_a_rate_limited_login_says_so_in_one_line(pair: SandboxPair) -> None:
    """Garmin answering 429 to every login request: exit 1 and the rate-limit line only
    (not the library's warning per strategy); nothing stored, no credentials sent."""
    pair.garmin.block_logins()
    code, out, err = run_cli("garmin", "login")
    assert (code, out) == (1, "")
    assert err.startswith(RATE_LIMITED)
    assert err.count("\n") == 1
    assert pair.garmin.login_attempts["rate_limited"] == pair.garmin.requests["login"] > 0
    assert set(pair.garmin.login_attempts) == {"rate_limited"}
    assert stored_blob() is None


def cooldown_left() -> timedelta:
    cooldown = login_cooldown(store(), USER)
    assert cooldown is not None
    return cooldown.until - datetime.now(tz=UTC)


def pass_the_cooldown() -> None:
    """As if its time had passed: the stored end moved to the past, the count kept."""
    cooldown = login_cooldown(store(), USER)
    assert cooldown is not None
    past = (datetime.now(tz=UTC) - timedelta(minutes=1)).isoformat()
    store().put_app_state(
        f"garmin_login_cooldown.{USER}", {"until": past, "refusals": cooldown.refusals}
    )


def test_after_a_login_429_no_login_starts_for_2_4_8_hours_unless_forced(
    pair: SandboxPair,
) -> None:
    """Each login 429 records a cooldown in the store: 2 h, then 4 h, 8 h ... capped at
    24 h. During it `garmin login` refuses in one line with the time left and sends
    nothing to Garmin; `--force` logs in anyway, and a success resets the cooldown."""
    pair.garmin.block_logins()
    waits = []
    for _ in range(6):
        code, _out, _err = run_cli("garmin", "login")
        assert code == 1
        waits.append(round(cooldown_left() / timedelta(hours=1)))
        pair.reset_counts()
        code, out, err = run_cli("garmin", "login")
        assert (code, out) == (1, "")
        assert err.startswith("garmin2strava: Garmin rate-limited the last login; wait ")
        assert err.endswith(" or use --force\n")
        assert sum(pair.garmin.requests.values()) == 0  # nothing sent during the cooldown
        pass_the_cooldown()
    assert waits == [2, 4, 8, 16, 24, 24]

    run_cli("garmin", "login")  # a 429 again: in the cooldown
    pair.garmin.block_logins(blocked=False)
    code, _out, err = run_cli("garmin", "login")
    assert code == 1
    assert "wait 23 h 59 min" in err or "wait 24 h 00 min" in err
    code, out, err = run_cli("garmin", "login", "--force")
    assert (code, out, err) == (0, STORED, "")
    assert login_cooldown(store(), USER) is None
    pair.garmin.block_logins()
    run_cli("garmin", "login")
    assert round(cooldown_left() / timedelta(hours=1)) == 2  # counted from the start again


def test_a_login_that_gives_no_di_tokens_is_refused_and_stores_nothing(
    pair: SandboxPair,
) -> None:
    """Garmin refuses the DI token exchange: garminconnect falls back to a JWT_WEB
    cookie session (its login "succeeds", the emulator's API accepts the cookie) whose
    dumps() has all-null DI fields. The command says so, exit 1, stores nothing."""
    pair.garmin.refuse_di_exchange()
    code, out, err = run_cli("garmin", "login")
    assert (code, out) == (1, "")
    assert err == f"garmin2strava: {NO_DI_TOKENS}\n"
    assert pair.garmin.login_attempts["signed_in"] >= 1
    assert pair.garmin.requests["ticket_exchange"] >= 1
    assert pair.garmin.requests["profile"] >= 1  # the library checked its cookie session
    assert stored_blob() is None
    assert store().get_account(USER) is None


def test_a_failed_login_says_what_the_library_says(pair: SandboxPair) -> None:
    """Garmin refusing this network (403 to every SSO request): exit 1 with the
    library's own words in the one line, not only an exception's class name; nothing
    stored and the password nowhere."""
    pair.garmin.refuse_network()
    code, out, err = run_cli("garmin", "login")
    assert (code, out) == (1, "")
    assert err.startswith("garmin2strava: Garmin login failed: All login strategies exhausted: ")
    assert "403" in err
    assert err.count("\n") == 1
    assert PASSWORD not in err
    assert stored_blob() is None


def test_an_account_that_needs_a_garmin_login_is_active_after_it(
    pair: SandboxPair, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Revoked Garmin tokens put the account in needs_garmin_login; `garmin login` makes
    it active again, and the next cycle uploads."""
    monkeypatch.setenv("GARMIN_TOKENS", pair.garmin_tokens)
    garmin_id = seed_one_run(pair)
    pair.garmin.revoke_all_tokens()
    code, _out, _err = run_cli("sync", "--once")
    assert code == 1
    account = store().get_account(USER)
    assert account is not None
    assert account.status.value == "needs_garmin_login"

    code, out, err = run_cli("garmin", "login")
    assert (code, out, err) == (0, STORED, "")
    account = store().get_account(USER)
    assert account is not None
    assert (account.status.value, account.status_detail) == ("active", "")

    pair.reset_counts()
    code, _out, err = run_cli("sync", "--once")
    assert code == 0, err
    assert pair.strava_counts()["uploads"] == 1
    assert f"garmin2strava_{garmin_id}" in {a.external_id for a in pair.strava.activities.values()}
    assert pair.garmin.requests["login"] == 0


# -- the emulator's SSO, spoken to in raw HTTP -----------------------------------------
TICKET_GRANT = "https://connectapi.garmin.com/di-oauth2-service/oauth/grant/service_ticket"
DI_CLIENT = "GARMIN_CONNECT_MOBILE_ANDROID_DI_2025Q2"


@pytest.fixture
def garmin() -> Iterator[GarminSandbox]:
    with GarminSandbox() as running:
        running.set_account(EMAIL, PASSWORD)
        yield running


def _sign_in(
    garmin: GarminSandbox, password: str = PASSWORD, *, page: bool = True
) -> tuple[requests.Session, requests.Response]:
    """The mobile flow's sign-in page (unless `page` is False), then its credential POST."""
    session = requests.Session()
    service = f"{garmin.base_url}/gcm/ios"
    if page:
        answer = session.get(f"{garmin.base_url}/sso/mobile/sso/en_US/sign-in", timeout=5)
        assert answer.status_code == 200
        assert "SESSION" in session.cookies
    posted = session.post(
        f"{garmin.base_url}/sso/mobile/api/login",
        params={"clientId": "GCM_IOS_DARK", "locale": "en-US", "service": service},
        json={"username": EMAIL, "password": password, "rememberMe": True, "captchaToken": ""},
        timeout=5,
    )
    return session, posted


def _exchange(
    garmin: GarminSandbox, ticket: str, *, service: str | None = None, client: str = DI_CLIENT
) -> requests.Response:
    auth = "Basic " + base64.b64encode(f"{client}:".encode()).decode()
    form = {
        "client_id": client,
        "service_ticket": ticket,
        "grant_type": TICKET_GRANT,
        "service_url": service or f"{garmin.base_url}/gcm/ios",
    }
    return requests.post(garmin.di_token_url, data=form, headers={"Authorization": auth}, timeout=5)


def test_sandbox_login_answers_in_garmins_shapes(garmin: GarminSandbox) -> None:
    """Wrong password, skipped sign-in page, success: Garmin's JSON types and statuses."""
    _session, wrong = _sign_in(garmin, "nope")
    assert (wrong.status_code, wrong.json()) == (
        200,
        {"responseStatus": {"type": "INVALID_USERNAME_PASSWORD"}},
    )
    _session, skipped = _sign_in(garmin, page=False)
    assert skipped.status_code == 429
    _session, ok = _sign_in(garmin)
    assert ok.json()["responseStatus"] == {"type": "SUCCESSFUL"}
    assert ok.json()["serviceTicketId"].startswith("ST-")
    assert garmin.login_attempts == {"wrong_password": 1, "no_session": 1, "signed_in": 1}


def test_sandbox_ticket_is_single_use_bound_to_its_service_and_its_clients(
    garmin: GarminSandbox,
) -> None:
    """A service ticket buys DI tokens once, only for its service URL and a Garmin DI client;
    the access token names that client and opens the API."""
    tickets = [_sign_in(garmin)[1].json()["serviceTicketId"] for _ in range(3)]
    assert _exchange(garmin, tickets[0], client="SOMEONE_ELSE").status_code == 401
    assert (
        _exchange(garmin, tickets[1], service=f"{garmin.base_url}/gcm/android").status_code == 400
    )
    first = _exchange(garmin, tickets[2])
    assert first.status_code == 200
    again = _exchange(garmin, tickets[2])
    assert (again.status_code, again.json()) == (400, {"error": "invalid_grant"})
    access = first.json()["access_token"]
    claims = json.loads(base64.urlsafe_b64decode(access.split(".")[1] + "=="))
    assert claims["client_id"] == DI_CLIENT
    profile = requests.get(
        f"{garmin.base_url}/userprofile-service/socialProfile",
        headers={"Authorization": f"Bearer {access}"},
        timeout=5,
    )
    assert (profile.status_code, profile.json()["userName"]) == (200, EMAIL)
    assert garmin.requests["ticket_exchange"] == 4


def test_sandbox_mfa_code_belongs_to_the_pending_login(garmin: GarminSandbox) -> None:
    """MFA: a wrong code is refused and the login stays pending; the right one gives a
    ticket; a code outside a pending login's session answers 409."""
    garmin.set_account(EMAIL, PASSWORD, mfa_code=MFA_CODE, mfa_method="totp")
    session, pending = _sign_in(garmin)
    assert pending.json() == {
        "responseStatus": {"type": "MFA_REQUIRED"},
        "customerMfaInfo": {"mfaLastMethodUsed": "totp"},
    }
    verify = f"{garmin.base_url}/sso/mobile/api/mfa/verifyCode"
    body = {"mfaMethod": "totp", "rememberMyBrowser": True, "reconsentList": [], "mfaSetup": False}
    wrong = session.post(verify, json={**body, "mfaVerificationCode": "000000"}, timeout=5)
    assert wrong.json() == {"responseStatus": {"type": "INVALID_MFA_CODE"}}
    assert (
        requests.post(verify, json={**body, "mfaVerificationCode": MFA_CODE}, timeout=5).status_code
        == 409
    )
    right = session.post(verify, json={**body, "mfaVerificationCode": MFA_CODE}, timeout=5)
    assert right.json()["responseStatus"] == {"type": "SUCCESSFUL"}
    assert _exchange(garmin, right.json()["serviceTicketId"]).status_code == 200
    assert (
        session.post(verify, json={**body, "mfaVerificationCode": MFA_CODE}, timeout=5).status_code
        == 409
    )


def test_sandbox_blocked_logins_answer_429_but_tokens_still_refresh(garmin: GarminSandbox) -> None:
    """block_logins: every SSO request answers 429, while a token refresh still works."""
    garmin.block_logins()
    session, posted = _sign_in(garmin, page=False)
    assert posted.status_code == 429
    assert (
        session.get(f"{garmin.base_url}/sso/mobile/sso/en_US/sign-in", timeout=5).status_code == 429
    )
    refresh = json.loads(garmin.issue_tokens())["di_refresh_token"]
    form = {"grant_type": "refresh_token", "client_id": DI_CLIENT, "refresh_token": refresh}
    assert requests.post(garmin.di_token_url, data=form, timeout=5).status_code == 200
    garmin.block_logins(blocked=False)
    assert _sign_in(garmin)[1].json()["responseStatus"] == {"type": "SUCCESSFUL"}
    assert garmin.login_attempts == {"rate_limited": 2, "signed_in": 1}
