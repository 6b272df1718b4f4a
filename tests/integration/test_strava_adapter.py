"""StravaAccess through the real stravalib against the loopback Strava sandbox."""

from __future__ import annotations

import dataclasses
import inspect
import logging
import os
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from g2s_sandbox.fitgen import build_activity_fit
from g2s_sandbox.strava import StravaSandbox
from garmin2strava.adapters import strava as strava_module
from garmin2strava.adapters.crypto import AesGcmCipher
from garmin2strava.adapters.store.sqlite import SqliteStore
from garmin2strava.adapters.strava import StravaClient, rewrite_url
from garmin2strava.adapters.strava_oauth import (
    authorization_url,
    bootstrap_tokens_from_refresh_token,
    exchange_code,
)
from garmin2strava.bootstrap import build_strava
from garmin2strava.domain.budget import RateBudget, next_window_reset
from garmin2strava.domain.models import StravaActivity, StravaTokens, UploadStatus
from garmin2strava.domain.strava_urls import REAL_STRAVA_URLS, StravaUrls
from garmin2strava.domain.upload_rules import UploadState, read_upload_status
from garmin2strava.errors import (
    RateLimited,
    StravaAppInactive,
    StravaAuthError,
    StravaNotFound,
    TransientError,
)
from garmin2strava.ports import StravaUploads
from garmin2strava.services.strava_access import StravaAccess

pytestmark = pytest.mark.integration

ATHLETE = 501
USER = "u1"
START = datetime(2025, 3, 4, 7, 30, tzinfo=UTC)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteStore]:
    with SqliteStore(tmp_path / "g2s.sqlite3", AesGcmCipher(os.urandom(32))) as s:
        yield s


def app_of(sandbox: StravaSandbox) -> dict[str, Any]:
    """The application's credentials and the sandbox's address, as both builders take them."""
    return {
        "client_id": sandbox.client_id,
        "client_secret": sandbox.client_secret,
        "where": sandbox.base_url,
    }


def adapter_for(
    sandbox: StravaSandbox, store: SqliteStore, *, rotation_grace_s: float = 2.0
) -> StravaAccess:
    """The client inside its policy, as bootstrap builds it."""
    return build_strava(store, USER, rotation_grace_s=rotation_grace_s, **app_of(sandbox))


def client_for(sandbox: StravaSandbox, store: SqliteStore) -> StravaClient:
    """The thin client alone: no policy, so no budget, no access state, no audit."""
    return StravaClient(store, USER, **app_of(sandbox))


def connect(sandbox: StravaSandbox, store: SqliteStore, *, expires_in: int | None = None) -> str:
    """Seed a connected athlete; store tokens (optionally about to expire). Returns the
    refresh token stored."""
    refresh = sandbox.add_athlete(ATHLETE)
    tokens = bootstrap_tokens_from_refresh_token(
        sandbox.client_id, sandbox.client_secret, refresh, sandbox.base_url
    )
    if expires_in is not None:
        tokens = StravaTokens(
            tokens.access_token,
            tokens.refresh_token,
            int(time.time()) + expires_in,
            tokens.scope,
            tokens.athlete_id,
        )
    assert store.replace_strava_tokens(USER, tokens, expected_version=None) is not None
    sandbox.requests.clear()
    return tokens.refresh_token


def list_window(adapter: StravaUploads) -> list[StravaActivity]:
    """One page of the athlete's activities from an hour before START to an hour after."""
    return adapter.list_activities(
        after=START - timedelta(hours=1), before=START + timedelta(hours=1)
    )


def upload_run(
    adapter: StravaAccess,
    tmp_path: Path,
    *,
    external_id: str = "g2s_1",
    name: str = "Run",
    description: str | None = None,
    trainer: bool = False,
) -> UploadStatus:
    """adapter.upload of a 30-minute run's FIT file starting at START."""
    path = tmp_path / "run.fit"
    path.write_bytes(build_activity_fit(start_utc=START, duration_s=1800))
    return adapter.upload(
        path,
        data_type="fit",
        external_id=external_id,
        name=name,
        description=description,
        trainer=trainer,
    )


# -- URL rewriting ----------------------------------------------------------------------
def test_the_client_reaches_only_its_tokens_of_the_store() -> None:
    """The thin client is given the token port, never the whole Store: the budget, the
    application's access and the audit are services.strava_access's business."""
    tokens = inspect.signature(StravaClient).parameters["tokens"]
    assert tokens.annotation == "StravaTokenStore"
    assert not hasattr(strava_module, "Store")
    assert not hasattr(strava_module, "RateBudget")
    assert not hasattr(strava_module, "StravaAppAccess")
    # And the policy around it takes the narrow ports it uses, not the whole Store either.
    ports = {f.name: f.type for f in dataclasses.fields(StravaAccess)}
    assert ports["app_state"] == "AppState"
    assert ports["leases"] == "SyncLeases"
    assert ports["audit"] == "AuditLog"
    assert ports["accounts"] == "Accounts"
    assert "Store" not in ports.values()


def test_the_client_alone_reads_and_refreshes_without_touching_the_policys_state(
    sandbox: StravaSandbox, store: SqliteStore
) -> None:
    """Without a policy the client still refreshes and stores its tokens, but writes
    no budget and no audit: those are the policy's."""
    connect(sandbox, store, expires_in=60)
    client = client_for(sandbox, store)
    assert list_window(client) == []
    assert dict(sandbox.requests) == {"token": 1, "list": 1}
    assert store.get_app_state("strava_budget") is None
    assert store.list_audit(USER) == []


def test_the_client_alone_reports_an_inactive_application_and_keeps_nothing(
    sandbox: StravaSandbox, store: SqliteStore
) -> None:
    """Strava's 403 "Application Status Inactive" becomes StravaAppInactive until the
    next window; keeping that state (and the probe) is the policy's."""
    connect(sandbox, store)
    sandbox.application_inactive = True
    with pytest.raises(StravaAppInactive) as raised:
        list_window(client_for(sandbox, store))
    assert raised.value.until == next_window_reset(datetime.now(UTC))
    assert store.get_app_state("strava_app_access") is None


def test_rewrite_url_only_touches_strava_urls() -> None:
    """Strava URLs move to the base URL; other URLs and the real base stay as they are."""
    base = "http://127.0.0.1:9999"
    assert rewrite_url("https://www.strava.com/api/v3/athlete", base) == f"{base}/api/v3/athlete"
    assert rewrite_url("https://www.strava.com/oauth/token", base + "/") == f"{base}/oauth/token"
    assert rewrite_url("https://example.org/x", base) == "https://example.org/x"
    assert rewrite_url("https://www.strava.com.evil/x", base) == "https://www.strava.com.evil/x"
    url = "https://www.strava.com/api/v3/athlete"
    assert rewrite_url(url, REAL_STRAVA_URLS) == url


def test_rewrite_url_splits_the_api_from_oauth() -> None:
    """Strava's 2027 layout: the API at a host's root (no /api/v3), OAuth on www."""
    urls = StravaUrls(api="https://api-v3.strava.com", oauth="https://www.strava.com")
    api = "https://www.strava.com/api/v3/athlete/activities?page=2"
    assert rewrite_url(api, urls) == "https://api-v3.strava.com/athlete/activities?page=2"
    oauth = "https://www.strava.com/oauth/token"
    assert rewrite_url(oauth, urls) == oauth
    behind = StravaUrls(api="http://127.0.0.1:1/strava/v3/", oauth="http://127.0.0.1:2")
    assert rewrite_url(api, behind) == "http://127.0.0.1:1/strava/v3/athlete/activities?page=2"
    assert rewrite_url(oauth, behind) == "http://127.0.0.1:2/oauth/token"
    assert rewrite_url("https://www.strava.com/api/v3x", behind) == "http://127.0.0.1:2/api/v3x"


def test_authorization_url_points_at_the_base_url() -> None:
    """The consent URL carries client id, scopes and state, on the configured host."""
    url = authorization_url(
        7,
        "http://localhost:8721/cb",
        "read,activity:read_all,activity:write",
        "st4te",
        "http://127.0.0.1:1234",
    )
    assert url.startswith("http://127.0.0.1:1234/oauth/authorize?")
    assert "scope=read%2Cactivity%3Aread_all%2Cactivity%3Awrite" in url
    assert "state=st4te" in url
    assert "client_id=7" in url


# -- OAuth ------------------------------------------------------------------------------
def test_exchange_code_returns_tokens_scope_and_athlete(sandbox: StravaSandbox) -> None:
    """An authorization code becomes tokens with the athlete id and the granted scope."""
    code = sandbox.authorize(ATHLETE, "read,activity:write")
    tokens, scope, athlete_id = exchange_code(
        sandbox.client_id,
        sandbox.client_secret,
        code,
        sandbox.base_url,
        granted_scope="read,activity:write",
    )
    assert athlete_id == ATHLETE
    assert tokens.athlete_id == ATHLETE
    assert scope == "read,activity:write"
    assert tokens.refresh_token == sandbox.refresh_token_of(ATHLETE)
    with pytest.raises(StravaAuthError):
        exchange_code(sandbox.client_id, sandbox.client_secret, code, sandbox.base_url)


def test_bootstrap_rotates_the_given_refresh_token(sandbox: StravaSandbox) -> None:
    """Bootstrapping from a refresh token uses it once (rotation) and finds the athlete."""
    refresh = sandbox.add_athlete(ATHLETE)
    tokens = bootstrap_tokens_from_refresh_token(
        sandbox.client_id, sandbox.client_secret, refresh, sandbox.base_url
    )
    assert tokens.athlete_id == ATHLETE
    assert tokens.refresh_token != refresh
    with pytest.raises(StravaAuthError):
        bootstrap_tokens_from_refresh_token(
            sandbox.client_id, sandbox.client_secret, refresh, sandbox.base_url
        )


# -- tokens -----------------------------------------------------------------------------
def test_refresh_before_expiry_is_persisted(sandbox: StravaSandbox, store: SqliteStore) -> None:
    """A token expiring within 5 minutes is refreshed first and the rotated one stored."""
    old_refresh = connect(sandbox, store, expires_in=120)
    list_window(adapter_for(sandbox, store))
    stored = store.get_strava_tokens(USER)
    assert stored is not None
    assert sandbox.requests["token"] == 1
    assert stored.version == 2
    assert stored.refresh_token == sandbox.refresh_token_of(ATHLETE) != old_refresh
    assert stored.athlete_id == ATHLETE
    assert stored.expires_at > time.time() + 3600


def test_valid_token_is_not_refreshed(sandbox: StravaSandbox, store: SqliteStore) -> None:
    """A token with hours left is used as it is: no token request."""
    connect(sandbox, store)
    list_window(adapter_for(sandbox, store))
    assert sandbox.requests["token"] == 0
    assert sandbox.requests["list"] == 1


def test_401_refreshes_once_and_retries_once(sandbox: StravaSandbox, store: SqliteStore) -> None:
    """An access token Strava no longer accepts is refreshed and the request repeated once."""
    connect(sandbox, store)
    sandbox.expire_access_tokens()
    list_window(adapter_for(sandbox, store))
    assert sandbox.requests["list"] == 2
    assert sandbox.requests["token"] == 1
    stored = store.get_strava_tokens(USER)
    assert stored is not None
    assert stored.refresh_token == sandbox.refresh_token_of(ATHLETE)


def test_revoked_access_raises_auth_error(sandbox: StravaSandbox, store: SqliteStore) -> None:
    """After the athlete revoked access, a call fails with StravaAuthError (no loop)."""
    connect(sandbox, store)
    sandbox.revoke(ATHLETE)
    adapter = adapter_for(sandbox, store, rotation_grace_s=0)
    with pytest.raises(StravaAuthError):
        list_window(adapter)
    assert sandbox.requests["list"] == 1
    assert sandbox.requests["token"] == 1


def test_access_revoked_is_proven_by_one_refused_refresh(
    sandbox: StravaSandbox, store: SqliteStore
) -> None:
    """access_revoked: one token request each time; True after the sandbox revoked the
    athlete, False while access stands (the rotated tokens are stored and work)."""
    connect(sandbox, store)
    adapter = adapter_for(sandbox, store, rotation_grace_s=0)
    before = store.get_strava_tokens(USER)
    assert adapter.access_revoked() is False
    after = store.get_strava_tokens(USER)
    assert before is not None
    assert after is not None
    assert after.refresh_token != before.refresh_token
    assert dict(sandbox.requests) == {"token": 1}
    sandbox.revoke(ATHLETE)
    assert adapter.access_revoked() is True
    assert dict(sandbox.requests) == {"token": 2}


@pytest.mark.parametrize("status", [503, 429])
def test_access_revoked_proves_nothing_when_strava_cannot_answer(
    sandbox: StravaSandbox, store: SqliteStore, status: int
) -> None:
    """A 5xx or 429 from the token endpoint raises (retry later), never answers True."""
    connect(sandbox, store)
    sandbox.revoke(ATHLETE)
    sandbox.fail_next("token", status)
    with pytest.raises(TransientError):
        adapter_for(sandbox, store, rotation_grace_s=0).access_revoked()


def test_access_revoked_does_not_blame_the_athlete_for_a_wrong_client_secret(
    sandbox: StravaSandbox, store: SqliteStore
) -> None:
    """Strava refusing the application's credentials is no proof of a revocation."""
    connect(sandbox, store)
    wrong = build_strava(
        store,
        USER,
        client_id=sandbox.client_id,
        client_secret="not-the-secret",
        where=sandbox.base_url,
        rotation_grace_s=0,
    )
    with pytest.raises(StravaAuthError, match="application credentials"):
        wrong.access_revoked()


def test_stale_refresh_uses_the_token_another_runner_stored(
    sandbox: StravaSandbox, store: SqliteStore
) -> None:
    """A runner holding tokens another runner already rotated adopts the stored ones."""
    connect(sandbox, store, expires_in=60)
    stale = store.get_strava_tokens(USER)
    assert stale is not None
    first, second = adapter_for(sandbox, store), client_for(sandbox, store)
    list_window(first)
    winner = store.get_strava_tokens(USER)
    assert winner is not None
    # The second runner read `stale` before the first one wrote: its refresh token is dead.
    adopted = second._refresh_unlocked(stale)
    assert adopted.refresh_token == winner.refresh_token == sandbox.refresh_token_of(ATHLETE)
    assert store.get_strava_tokens(USER) == winner


def test_racing_refreshes_never_lose_the_newest_token(
    sandbox: StravaSandbox, store: SqliteStore
) -> None:
    """Several adapters refreshing at once leave the token Strava will accept in the store."""
    connect(sandbox, store, expires_in=60)
    adapters = [adapter_for(sandbox, store) for _ in range(6)]
    barrier = threading.Barrier(len(adapters))
    errors: list[BaseException] = []

    def run(adapter: StravaAccess) -> None:
        barrier.wait()
        try:
            list_window(adapter)
        except BaseException as error:  # noqa: BLE001 - collected and asserted below
            errors.append(error)

    threads = [threading.Thread(target=run, args=(a,)) for a in adapters]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    stored = store.get_strava_tokens(USER)
    assert stored is not None
    assert stored.refresh_token == sandbox.refresh_token_of(ATHLETE)
    # And it still works: one more refresh with the stored token succeeds.
    sandbox.expire_access_tokens()
    list_window(adapters[0])


# -- rate budget ------------------------------------------------------------------------
def test_rate_headers_are_persisted_as_the_budget(
    sandbox: StravaSandbox, store: SqliteStore
) -> None:
    """Each answer's X-RateLimit headers end up in the application-wide stored budget."""
    connect(sandbox, store)
    sandbox.set_limits(short_read=300, daily_read=3000, short_all=600, daily_all=6000)
    sandbox.set_usage(short_all=10, daily_all=40, short_read=8, daily_read=30)
    list_window(adapter_for(sandbox, store))
    budget = RateBudget.from_dict(store.get_app_state("strava_budget"))
    assert (budget.read_short_limit, budget.read_daily_limit) == (300, 3000)
    assert (budget.short_limit, budget.daily_limit) == (600, 6000)
    assert (budget.short_usage, budget.daily_usage) == (11, 41)
    assert (budget.read_short_usage, budget.read_daily_usage) == (9, 31)


def test_429_raises_rate_limited_and_blocks_further_requests(
    sandbox: StravaSandbox, store: SqliteStore
) -> None:
    """A 429 becomes RateLimited, and the next call is refused locally without a request."""
    connect(sandbox, store)
    sandbox.set_usage(short_all=100, daily_all=100, short_read=100, daily_read=100)
    adapter = adapter_for(sandbox, store)
    with pytest.raises(RateLimited) as first:
        list_window(adapter)
    now = datetime.now(UTC)
    assert now < first.value.until <= next_window_reset(now) + timedelta(seconds=1)
    with pytest.raises(RateLimited):
        adapter.get_activity(1)
    assert sandbox.requests["list"] == 1
    assert sandbox.requests["activity"] == 0


def test_spent_budget_refuses_reads_but_keeps_the_reserve_for_polls(
    sandbox: StravaSandbox, store: SqliteStore, tmp_path: Path
) -> None:
    """Near the read limit, ordinary reads are refused locally; upload polls still go out."""
    connect(sandbox, store)
    adapter = adapter_for(sandbox, store)
    status = upload_run(adapter, tmp_path)
    sandbox.set_usage(short_all=96, daily_all=96, short_read=96, daily_read=96)
    list_window(adapter)  # 97 of 100, reserve 5
    assert not adapter.budget().can_spend(1, 0, datetime.now(UTC))
    with pytest.raises(RateLimited):
        list_window(adapter)
    assert sandbox.requests["list"] == 1
    adapter.get_upload(status.upload_id)
    assert sandbox.requests["upload_status"] == 1


# -- uploads ----------------------------------------------------------------------------
def test_upload_is_one_post_then_polls_report_processing_and_ready(
    sandbox: StravaSandbox, store: SqliteStore, tmp_path: Path
) -> None:
    """upload() makes exactly one request; get_upload() one each; ready carries the id."""
    connect(sandbox, store)
    sandbox.processing_delay_s = 3600
    adapter = adapter_for(sandbox, store)
    status = upload_run(
        adapter, tmp_path, external_id="g2s_garmin_77", name="Easy run", description="from Garmin"
    )
    assert sum(sandbox.requests.values()) == 1
    assert status.status == "Your activity is still being processed."
    assert status.external_id == "g2s_garmin_77"
    assert status.activity_id is None
    assert read_upload_status(adapter.get_upload(status.upload_id)).state == (
        UploadState.PROCESSING
    )
    sandbox.processing_delay_s = 0
    ready = adapter.get_upload(status.upload_id)
    assert ready.status == "Your activity is ready."
    assert ready.activity_id is not None
    assert sandbox.requests == {"upload": 1, "upload_status": 2}
    created = sandbox.activities[ready.activity_id]
    assert (created.name, created.description, created.start_utc) == (
        "Easy run",
        "from Garmin",
        START,
    )
    assert created.elapsed_s == 1800


@pytest.mark.parametrize("html", [False, True])
def test_duplicate_upload_reports_the_existing_activity(
    sandbox: StravaSandbox, store: SqliteStore, tmp_path: Path, html: bool
) -> None:
    """A file starting when an existing activity starts comes back as 'duplicate of N'."""
    connect(sandbox, store)
    sandbox.duplicate_error_html = html
    existing = sandbox.add_activity(
        ATHLETE, start_utc=START, elapsed_s=1800, external_id="garmin_ping_123"
    )
    adapter = adapter_for(sandbox, store)
    status = upload_run(adapter, tmp_path)
    polled = adapter.get_upload(status.upload_id)
    assert polled.status == "There was an error processing your activity."
    assert ("<a href=" in (polled.error or "")) is html
    verdict = read_upload_status(polled)
    assert verdict.state == UploadState.DUPLICATE
    assert verdict.activity_id == existing


def test_external_id_may_come_back_with_the_extension(
    sandbox: StravaSandbox, store: SqliteStore, tmp_path: Path
) -> None:
    """When Strava appends ".fit", the adapter reports the value Strava holds."""
    connect(sandbox, store)
    sandbox.append_extension_to_external_id = True
    status = upload_run(adapter_for(sandbox, store), tmp_path, external_id="g2s_9", trainer=True)
    assert status.external_id == "g2s_9.fit"
    assert sandbox.upload_records[status.upload_id].trainer is True


def test_upload_with_expired_token_refreshes_and_posts_again(
    sandbox: StravaSandbox, store: SqliteStore, tmp_path: Path
) -> None:
    """A 401 on the upload POST (nothing accepted) refreshes and posts once more."""
    connect(sandbox, store)
    sandbox.expire_access_tokens()
    status = upload_run(adapter_for(sandbox, store), tmp_path)
    assert status.upload_id in sandbox.upload_records
    assert len(sandbox.upload_records) == 1
    assert sandbox.requests["upload"] == 2


# -- reads ------------------------------------------------------------------------------
def test_list_activities_parses_aware_utc_in_strava_order(
    sandbox: StravaSandbox, store: SqliteStore
) -> None:
    """Activities come back as domain objects with aware UTC starts, ascending with `after`."""
    connect(sandbox, store)
    late = sandbox.add_activity(ATHLETE, start_utc=START + timedelta(minutes=20), elapsed_s=60)
    early = sandbox.add_activity(
        ATHLETE, start_utc=START, elapsed_s=1800, external_id="garmin_ping_5", distance_m=5012.5
    )
    sandbox.add_activity(ATHLETE, start_utc=START + timedelta(hours=3), elapsed_s=60)
    rows = list_window(adapter_for(sandbox, store))
    assert [r.activity_id for r in rows] == [early, late]
    assert rows[0].start_utc == START
    assert rows[0].start_utc.tzinfo is not None
    assert (rows[0].external_id, rows[0].distance_m, rows[0].athlete_id) == (
        "garmin_ping_5",
        5012.5,
        ATHLETE,
    )


def test_deleted_activity_raises_not_found(sandbox: StravaSandbox, store: SqliteStore) -> None:
    """get_activity answers the raw JSON, and StravaNotFound once the activity is deleted."""
    connect(sandbox, store)
    activity_id = sandbox.add_activity(ATHLETE, start_utc=START, elapsed_s=60)
    adapter = adapter_for(sandbox, store)
    assert adapter.get_activity(activity_id)["id"] == activity_id
    sandbox.delete_activity(activity_id)
    with pytest.raises(StravaNotFound):
        adapter.get_activity(activity_id)


def test_sandbox_accepts_the_token_as_query_parameter(
    sandbox: StravaSandbox, store: SqliteStore
) -> None:
    """stravalib 2.5 sent `access_token` in the query: the sandbox accepts that too."""
    from stravalib import exc
    from stravalib.client import Client
    from stravalib.util.limiter import RateLimiter

    from garmin2strava.adapters.strava import RewritingSession

    connect(sandbox, store)
    stored = store.get_strava_tokens(USER)
    assert stored is not None
    client = Client(rate_limiter=RateLimiter(), requests_session=RewritingSession(sandbox.base_url))
    assert client.access_token is None
    athlete = client.protocol.get("/athlete", access_token=stored.access_token)
    assert athlete["id"] == ATHLETE
    with pytest.raises(exc.AccessUnauthorized):
        client.protocol.get("/athlete", access_token="wrong")


# -- secrets ----------------------------------------------------------------------------
def test_no_secret_reaches_a_log_record(
    sandbox: StravaSandbox, store: SqliteStore, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Across refreshes, 401 retries, uploads and errors, no token or secret is logged."""
    caplog.set_level(logging.DEBUG)
    first_refresh = connect(sandbox, store, expires_in=30)
    adapter = adapter_for(sandbox, store, rotation_grace_s=0)
    list_window(adapter)
    sandbox.expire_access_tokens()
    upload_run(adapter, tmp_path)
    sandbox.revoke(ATHLETE)
    with pytest.raises(StravaAuthError) as raised:
        adapter.get_upload(1)
    stored = store.get_strava_tokens(USER)
    assert stored is not None
    secrets = {first_refresh, stored.refresh_token, stored.access_token, sandbox.client_secret}
    text = "\n".join(r.getMessage() for r in caplog.records) + str(raised.value)
    assert caplog.records  # the check below is not vacuous
    for secret in secrets:
        assert secret not in text
