"""G2S_GARMIN_PROXY: every Garmin request (the list, the download, the token refresh,
the login) goes through the proxy, and none around it. A real forward proxy on
loopback (g2s_harness.forward_proxy, with a password) counts what it forwarded; the
Garmin emulator counts what it received: the two must agree, request for request."""

from __future__ import annotations

import io
import os
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, redirect_stdout
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner
from garminconnect.client import sso

from g2s_harness.aws_lambda import Deployment, FakeContext
from g2s_harness.forward_proxy import ForwardProxy
from g2s_sandbox.scenario import SandboxPair, running_sandboxes, seed_run
from garmin2strava.bootstrap import App, bootstrap
from garmin2strava.entrypoints.aws_lambda import sync_handler
from garmin2strava.entrypoints.cli import cli
from garmin2strava.errors import ConfigError
from garmin2strava.services.sync_accounts import sync_all
from garmin2strava.settings import load_settings

pytestmark = pytest.mark.integration

USER = "demo"  # SandboxPair.settings' G2S_USER_ID
START = datetime.now(tz=UTC).replace(microsecond=0) - timedelta(days=1)
PROXY_CREDENTIALS = ("owner", "pr0xy-s3cret-4417")
EMAIL = "runner@example.com"
PASSWORD = "correct-horse-battery-7731"


@pytest.fixture
def proxy() -> Iterator[ForwardProxy]:
    with ForwardProxy(credentials=PROXY_CREDENTIALS) as running:
        yield running


def garmin_paths(proxy: ForwardProxy, pair: SandboxPair) -> list[str]:
    """What the proxy forwarded to the Garmin emulator (and nothing to anyone else)."""
    garmin_host = pair.garmin.base_url.removeprefix("http://")
    assert {netloc for _, netloc, _ in proxy.seen} <= {garmin_host}
    return [path for _, _, path in proxy.seen]


def received(pair: SandboxPair) -> int:
    return sum(n for endpoint, n in pair.garmin.requests.items() if endpoint != "refused")


def test_a_cycle_sends_every_garmin_request_through_the_proxy(
    pair: SandboxPair, make_app: Callable[..., App], proxy: ForwardProxy
) -> None:
    """An expired access token (so the cycle refreshes it), a run to list and download:
    the refresh, the list, the gear request and the download each went through the
    proxy, with its password; the emulator received exactly as many requests as the
    proxy forwarded; Strava's requests did not go through it."""
    seed_run(pair, 1601, start_utc=START)
    app = make_app(garmin_proxy=proxy.url)
    tokens = app.store.get_garmin_tokens(USER)
    assert tokens is not None
    app.store.replace_garmin_tokens(
        USER, pair.garmin.issue_tokens(lifetime_s=-10), expected_version=tokens.version
    )
    pair.reset_counts()

    (report,) = sync_all(app.store, app.sync_deps)

    assert report.outcomes == {"uploaded": 1}, report.error
    assert Counter(pair.garmin.requests) == {
        "token_refresh": 1,
        "list": 1,
        "download": 1,
        "gear": 1,
    }
    paths = garmin_paths(proxy, pair)
    assert len(paths) == received(pair) == 4  # none went around the proxy
    assert "/di-oauth2-service/oauth/token" in paths
    assert proxy.refused == 0  # the URL's credentials were sent
    assert pair.strava_total() > 0  # Strava's own requests went direct


def test_a_wrong_proxy_password_reaches_garmin_not_at_all(
    pair: SandboxPair, make_app: Callable[..., App], proxy: ForwardProxy
) -> None:
    """The proxy refuses (407): the cycle fails as a passing error naming the setting
    (retried next cycle), the emulator received nothing, and nothing is stored as
    needing a login."""
    seed_run(pair, 1602, start_utc=START)
    wrong = proxy.url.replace(PROXY_CREDENTIALS[1], "not-the-password")
    app = make_app(garmin_proxy=wrong)
    pair.reset_counts()

    (report,) = sync_all(app.store, app.sync_deps)

    assert "407" in report.error  # an outage of the way to Garmin: retried next cycle
    assert "G2S_GARMIN_PROXY" in report.error
    assert proxy.refused >= 1
    assert received(pair) == 0
    account = app.store.get_account(USER)
    assert account is not None
    assert account.status.value == "active"
    assert PROXY_CREDENTIALS[1] not in report.error


@pytest.fixture
def login_pair(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[SandboxPair]:
    """As tests/integration/test_garmin_login.py: the CLI's environment, no tokens."""
    monkeypatch.setattr(sso, "MOBILE_DELAY_MIN_S", 0.0)
    monkeypatch.setattr(sso, "MOBILE_DELAY_MAX_S", 0.0)
    with running_sandboxes() as sandboxes:
        sandboxes.garmin.set_account(EMAIL, PASSWORD)
        settings = sandboxes.environment(
            user_id=USER,
            db_path=tmp_path / "data" / "g2s.sqlite3",
            GARMIN_EMAIL=EMAIL,
            GARMIN_PASSWORD=PASSWORD,
        )
        del settings["GARMIN_TOKENS"]
        for name, value in settings.items():
            monkeypatch.setenv(name, value)
        for name in ("http_proxy", "https_proxy", "all_proxy", "no_proxy"):
            monkeypatch.delenv(name, raising=False)
            monkeypatch.delenv(name.upper(), raising=False)
        yield sandboxes


@pytest.mark.usefixtures("clean_cli_environment")
def test_garmin_login_goes_through_the_proxy(
    login_pair: SandboxPair, proxy: ForwardProxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`garmin login` with G2S_GARMIN_PROXY: the sign-in page, the credentials, the
    ticket exchange and the library's token check all went through the proxy (the
    emulator received nothing else); the tokens are stored; the process's proxy
    variables are as they were after."""
    monkeypatch.setenv("G2S_GARMIN_PROXY", proxy.url)
    result = CliRunner().invoke(cli, ["garmin", "login"], prog_name="garmin2strava")
    assert result.exit_code == 0, result.stderr
    assert login_pair.garmin.login_attempts == {"signed_in": 1}
    paths = garmin_paths(proxy, login_pair)
    assert len(paths) == received(login_pair) == 4  # none went around the proxy
    assert Counter(login_pair.garmin.requests) == {"login": 2, "ticket_exchange": 1, "profile": 1}
    assert proxy.refused == 0
    assert bootstrap(load_settings()).store.get_garmin_tokens(USER) is not None
    assert not {"http_proxy", "HTTPS_PROXY", "ALL_PROXY"} & set(os.environ)


def test_on_aws_the_proxy_comes_from_its_ssm_parameter(
    lambda_deployment: Callable[..., AbstractContextManager[Deployment]], proxy: ForwardProxy
) -> None:
    """The sync function reads `<prefix>/garmin_proxy` (a SecureString, as terraform
    names it) and sends every Garmin request of its cycle through it."""
    with lambda_deployment(garmin_proxy=proxy.url) as deployed:
        deployed.store.link_athlete(deployed.pair.athlete_id, USER)
        seed_run(deployed.pair, 1603, start_utc=START)
        deployed.pair.reset_counts()
        with redirect_stdout(io.StringIO()):  # the EMF lines
            summary = sync_handler.handler({}, FakeContext())
        assert summary["failed"] == 0
        settings = sync_handler.runtime().settings
        assert settings.garmin_proxy_url == proxy.url
        paths = garmin_paths(proxy, deployed.pair)
        assert len(paths) == received(deployed.pair) >= 2  # the list and the download


def test_on_aws_a_bad_proxy_parameter_ends_the_cold_start_naming_it_not_its_value(
    lambda_deployment: Callable[..., AbstractContextManager[Deployment]],
) -> None:
    value = "home.example:3128-hunter2"
    with lambda_deployment(garmin_proxy=value), pytest.raises(ConfigError) as refused:
        sync_handler.runtime()
    assert "/garmin_proxy" in str(refused.value)
    assert "hunter2" not in str(refused.value)
