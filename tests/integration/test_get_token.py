"""`get-token` against the Strava sandbox: the browser's part is played with urllib."""

from __future__ import annotations

import io
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest

from g2s_sandbox.strava import StravaSandbox
from garmin2strava.adapters.crypto import generate_token_key
from garmin2strava.bootstrap import App, bootstrap
from garmin2strava.domain.models import Account, AccountStatus
from garmin2strava.entrypoints.oauth import get_token
from garmin2strava.errors import APP_CAPPED_CAUSE, ConfigError
from garmin2strava.services.status import account_status
from garmin2strava.settings import load_settings

pytestmark = pytest.mark.integration

ATHLETE = 7001
USER = "me"
WAIT_S = 20.0


@pytest.fixture
def sandbox() -> Iterator[StravaSandbox]:
    with StravaSandbox() as sb:
        yield sb


def make_app(sandbox: StravaSandbox, tmp_path: Path, **overrides: Any) -> App:
    values: dict[str, Any] = {
        "strava_client_id": sandbox.client_id,
        "strava_client_secret": sandbox.client_secret,
        "db_path": tmp_path / "g2s.sqlite3",
        "token_key": generate_token_key(),
        "strava_base_url": sandbox.base_url,
    }
    values.update(overrides)
    return bootstrap(load_settings(env_file=None, **values))


@dataclass
class Flow:
    """get_token running in a thread, with what it printed."""

    out: io.StringIO = field(default_factory=io.StringIO)
    err: io.StringIO = field(default_factory=io.StringIO)
    result: list[int] = field(default_factory=list)
    thread: threading.Thread | None = None

    def authorize_url(self) -> str:
        deadline = time.monotonic() + WAIT_S
        while time.monotonic() < deadline:
            for line in self.out.getvalue().splitlines():
                if "/oauth/authorize?" in line:
                    return line.strip()
            time.sleep(0.02)
        raise AssertionError("get_token printed no authorization URL")

    def redirect(self, **params: str) -> tuple[int, str]:
        """What the browser does after consent: GET the redirect URI with `params`."""
        query = parse_qs(urlsplit(self.authorize_url()).query)
        redirect_uri = urlsplit(query["redirect_uri"][0])
        url = f"http://127.0.0.1:{redirect_uri.port}{redirect_uri.path}?{urlencode(params)}"
        try:
            with urllib.request.urlopen(url, timeout=WAIT_S) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as error:
            return error.code, error.read().decode()

    def state(self) -> str:
        return parse_qs(urlsplit(self.authorize_url()).query)["state"][0]

    def exit_code(self) -> int:
        assert self.thread is not None
        self.thread.join(WAIT_S)
        assert not self.thread.is_alive(), "get_token did not finish"
        return self.result[0]


def start(app: App, *, timeout: float = WAIT_S) -> Flow:
    flow = Flow()

    def run() -> None:
        flow.result.append(
            get_token(app, user_id=USER, port=0, timeout=timeout, out=flow.out, err=flow.err)
        )

    flow.thread = threading.Thread(target=run, name="get-token")
    flow.thread.start()
    return flow


def test_success_stores_tokens_links_athlete_and_prints_refresh_token(
    sandbox: StravaSandbox, tmp_path: Path
) -> None:
    """A granted consent stores the tokens and account, and prints only the refresh token."""
    app = make_app(sandbox, tmp_path)
    flow = start(app)
    url = flow.authorize_url()
    assert url.startswith(sandbox.base_url + "/oauth/authorize?")
    query = parse_qs(urlsplit(url).query)
    assert query["scope"] == ["activity:read_all,activity:write"]
    assert query["client_id"] == [str(sandbox.client_id)]
    assert query["redirect_uri"][0].startswith("http://localhost:")

    scope = "read,activity:write,activity:read_all"
    code = sandbox.authorize(ATHLETE, scope)
    status, page = flow.redirect(state=flow.state(), code=code, scope=scope)

    assert status == 200
    assert "close this tab" in page
    assert flow.exit_code() == 0
    tokens = app.store.get_strava_tokens(USER)
    assert tokens is not None
    assert tokens.refresh_token == sandbox.refresh_token_of(ATHLETE)
    assert tokens.athlete_id == ATHLETE
    assert tokens.scope == scope
    account = app.store.get_account(USER)
    assert account is not None
    assert account.strava_athlete_id == ATHLETE
    assert account.status is AccountStatus.ACTIVE
    assert app.store.user_for_athlete(ATHLETE) == USER
    printed = flow.out.getvalue()
    assert printed.splitlines()[-1] == tokens.refresh_token
    assert "STRAVA_REFRESH_TOKEN" in printed
    for secret in (tokens.access_token, sandbox.client_secret, code):
        assert secret not in printed + flow.err.getvalue() + page


def test_reauthorization_reactivates_a_disconnected_account(
    sandbox: StravaSandbox, tmp_path: Path
) -> None:
    """An account that lost Strava access is active again after a new consent."""
    app = make_app(sandbox, tmp_path)
    app.store.put_account(
        Account(user_id=USER, status=AccountStatus.DISCONNECTED, status_detail="revoked")
    )
    flow = start(app)
    scope = "read,activity:read_all,activity:write"
    flow.redirect(state=flow.state(), code=sandbox.authorize(ATHLETE, scope), scope=scope)

    assert flow.exit_code() == 0
    account = app.store.get_account(USER)
    assert account is not None
    assert (account.status, account.status_detail) == (AccountStatus.ACTIVE, "")


def test_missing_scope_is_named_and_nothing_is_stored(
    sandbox: StravaSandbox, tmp_path: Path
) -> None:
    """Unticking activity:write ends with exit 1, a message naming it, and no tokens."""
    app = make_app(sandbox, tmp_path)
    flow = start(app)
    scope = "read,activity:read_all"
    status, page = flow.redirect(
        state=flow.state(), code=sandbox.authorize(ATHLETE, scope), scope=scope
    )

    assert flow.exit_code() == 1
    assert "activity:write" in flow.err.getvalue()
    assert "activity:write" in page
    assert status == 200
    assert app.store.get_strava_tokens(USER) is None
    assert app.store.get_account(USER) is None
    assert sandbox.requests["token"] == 0  # the code was not even exchanged


def test_a_capped_application_is_one_line_stores_nothing_and_status_says_it(
    sandbox: StravaSandbox, tmp_path: Path
) -> None:
    """A new application serves 1 athlete: the exchange for a second answers 403 "Limit
    of connected athletes exceeded". get-token says what helps in one line, exits 1
    and stores nothing; `status` says the same, without a request, until an athlete
    connects again."""
    sandbox.athlete_capacity = 1
    sandbox.add_athlete(ATHLETE + 1)  # the owner, connected already
    app = make_app(sandbox, tmp_path)
    flow = start(app)
    scope = "activity:read_all,activity:write"
    _status, page = flow.redirect(
        state=flow.state(), code=sandbox.authorize(ATHLETE, scope), scope=scope
    )

    assert flow.exit_code() == 1
    err = flow.err.getvalue()
    assert err.count("\n") == 1
    assert err.startswith("garmin2strava: ")
    assert "Traceback" not in err
    assert APP_CAPPED_CAUSE in err
    assert "raise the capacity on the application's settings page" in err
    assert "or use another application" in err
    assert err.rstrip().endswith("nothing stored")
    assert "another application" in page
    assert sandbox.requests["token"] == 1
    assert app.store.get_strava_tokens(USER) is None
    assert app.store.get_account(USER) is None
    assert app.store.user_for_athlete(ATHLETE) is None

    requests_before = sum(sandbox.requests.values())
    warnings = account_status(app.store, now=app.clock())["warnings"]
    assert [w for w in warnings if APP_CAPPED_CAUSE in w] != []
    assert sum(sandbox.requests.values()) == requests_before

    sandbox.athlete_capacity = 2  # the owner raised it on the settings page
    flow = start(app)
    flow.redirect(state=flow.state(), code=sandbox.authorize(ATHLETE, scope), scope=scope)
    assert flow.exit_code() == 0
    warnings = account_status(app.store, now=app.clock())["warnings"]
    assert not any(APP_CAPPED_CAUSE in w for w in warnings)


def test_access_denied_exits_1_with_a_clear_message(sandbox: StravaSandbox, tmp_path: Path) -> None:
    """Cancelling the consent page ends the flow with exit 1 and says so."""
    app = make_app(sandbox, tmp_path)
    flow = start(app)
    status, page = flow.redirect(state=flow.state(), error="access_denied")

    assert flow.exit_code() == 1
    assert "denied" in flow.err.getvalue()
    assert "denied" in page
    assert status == 200
    assert app.store.get_strava_tokens(USER) is None


def test_wrong_state_is_refused_and_the_real_redirect_still_works(
    sandbox: StravaSandbox, tmp_path: Path
) -> None:
    """A redirect with a foreign state is answered 400 and its code never exchanged."""
    app = make_app(sandbox, tmp_path)
    flow = start(app)
    forged_code = sandbox.authorize(9999, "read,activity:read_all,activity:write")
    status, _page = flow.redirect(
        state="forged", code=forged_code, scope="read,activity:read_all,activity:write"
    )
    assert status == 400
    assert sandbox.requests["token"] == 0

    scope = "read,activity:read_all,activity:write"
    status, _page = flow.redirect(
        state=flow.state(), code=sandbox.authorize(ATHLETE, scope), scope=scope
    )
    assert status == 200
    assert flow.exit_code() == 0
    tokens = app.store.get_strava_tokens(USER)
    assert tokens is not None
    assert tokens.athlete_id == ATHLETE
    assert app.store.user_for_athlete(9999) is None


def test_no_redirect_before_the_timeout_exits_1(sandbox: StravaSandbox, tmp_path: Path) -> None:
    """Without a redirect the command gives up after --timeout and stores nothing."""
    app = make_app(sandbox, tmp_path)
    flow = start(app, timeout=0.2)

    assert flow.exit_code() == 1
    assert "no redirect" in flow.err.getvalue()
    assert app.store.get_strava_tokens(USER) is None


def test_client_secret_is_required(sandbox: StravaSandbox, tmp_path: Path) -> None:
    """Without STRAVA_CLIENT_SECRET the command stops with a ConfigError naming it."""
    app = make_app(sandbox, tmp_path, strava_client_secret=None)
    with pytest.raises(ConfigError, match="STRAVA_CLIENT_SECRET"):
        get_token(app, user_id=USER, port=0, timeout=1)
