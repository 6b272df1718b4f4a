"""GarminConnectAdapter: the real garminconnect client against the loopback GarminSandbox."""

from __future__ import annotations

import json
import logging
import os
import traceback
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import requests
from garminconnect import Garmin

from g2s_sandbox.fitgen import build_activity_fit, zip_original
from g2s_sandbox.garmin import GarminSandbox, make_record
from garmin2strava.adapters.crypto import AesGcmCipher
from garmin2strava.adapters.garmin import CLIENT_URL_ATTRIBUTES, GarminConnectAdapter
from garmin2strava.adapters.store.sqlite import SqliteStore
from garmin2strava.domain.models import GarminTokens
from garmin2strava.errors import (
    GarminAuthError,
    GarminNotFound,
    GarminRateLimited,
    GarminRefused,
    TransientError,
)

pytestmark = pytest.mark.integration

USER = "u1"
START = datetime(2026, 1, 8, 14, 10, 21, tzinfo=UTC)
TOKEN_KEY = os.urandom(32)


class TokenStore(SqliteStore):
    """The real SqliteStore, recording token reads and writes in plain attributes."""

    def __init__(self, path: Path) -> None:
        super().__init__(path, AesGcmCipher(TOKEN_KEY))
        self.writes: list[GarminTokens] = []
        self.reads = 0

    def get_garmin_tokens(self, user_id: str) -> GarminTokens | None:
        self.reads += 1
        return super().get_garmin_tokens(user_id)

    def replace_garmin_tokens(
        self, user_id: str, blob: str, *, expected_version: int | None
    ) -> GarminTokens | None:
        written = super().replace_garmin_tokens(user_id, blob, expected_version=expected_version)
        if written is not None:
            self.writes.append(written)
        return written

    def version(self) -> int:
        stored = super().get_garmin_tokens(USER)
        assert stored is not None
        return stored.version

    def blob(self) -> str:
        stored = super().get_garmin_tokens(USER)
        assert stored is not None
        return stored.blob


@pytest.fixture
def sandbox() -> Iterator[GarminSandbox]:
    with GarminSandbox() as running:
        yield running


@pytest.fixture
def store(tmp_path: Path) -> Iterator[TokenStore]:
    with TokenStore(tmp_path / "g2s.sqlite3") as real:
        yield real


def _adapter(sandbox: GarminSandbox, store: TokenStore, **kwargs: Any) -> GarminConnectAdapter:
    return GarminConnectAdapter(
        store,
        USER,
        base_url=sandbox.base_url,
        di_token_url=sandbox.di_token_url,
        retry_min_wait=0.01,
        retry_max_wait=0.02,
        **kwargs,
    )


def _store_tokens(store: TokenStore, blob: str) -> None:
    assert store.replace_garmin_tokens(USER, blob, expected_version=None) is not None


def _secrets(*blobs: str) -> list[str]:
    found = []
    for blob in blobs:
        data = json.loads(blob)
        for token in (data["di_token"], data["di_refresh_token"]):
            found += [token, token[-16:]]  # the random tail catches a truncated leak too
    return found


def _add_run(sandbox: GarminSandbox, activity_id: int, *, manual: bool = False) -> bytes | None:
    record = make_record(
        activity_id, f"Run {activity_id}", "running", START, 1800.0, 6000.0, manual
    )
    original = None
    if not manual:
        original = zip_original(activity_id, build_activity_fit(start_utc=START, duration_s=60))
    sandbox.add_activity(record, original)
    return original


def test_private_client_attributes_still_exist() -> None:
    """Fails when a garminconnect upgrade renames the private attributes the adapter sets."""
    client = Garmin().client
    for name in CLIENT_URL_ATTRIBUTES:
        assert isinstance(getattr(client, name), str), name
    assert callable(client._token_expires_soon)
    assert callable(client._refresh_di_token)
    assert hasattr(client, "_token_lock")
    # route_through (G2S_GARMIN_PROXY): the two sessions and the DI token post.
    assert isinstance(client._api_session, requests.Session)
    assert isinstance(client.cs, requests.Session)
    assert callable(client._http_post)
    assert "_http_post" in type(client)._di_token_post.__code__.co_names


def test_construction_does_no_io(sandbox: GarminSandbox, store: TokenStore) -> None:
    """Building the adapter reads no store and sends no request."""
    _adapter(sandbox, store)
    assert store.reads == 0
    assert sum(sandbox.requests.values()) == 0


def test_list_is_one_request_newest_first(sandbox: GarminSandbox, store: TokenStore) -> None:
    """A fresh token lists activities in exactly one request, newest first, no login."""
    _store_tokens(store, sandbox.issue_tokens())
    for n in range(3):
        record = make_record(100 + n, f"r{n}", "running", START.replace(day=1 + n), 60, 100)
        sandbox.add_activity(record, b"zip")
    rows = _adapter(sandbox, store).list_activities(start=0, limit=2)
    assert [r["activityId"] for r in rows] == [102, 101]
    assert sandbox.requests == {"list": 1}
    assert store.writes[1:] == []  # nothing rotated, nothing written


def test_download_returns_the_original_zip(sandbox: GarminSandbox, store: TokenStore) -> None:
    """download_original returns the ORIGINAL zip bytes unchanged, in one request."""
    _store_tokens(store, sandbox.issue_tokens())
    original = _add_run(sandbox, 21482825013)
    assert _adapter(sandbox, store).download_original(21482825013) == original
    assert sandbox.requests == {"download": 1}


def test_manual_activity_download_is_not_found(sandbox: GarminSandbox, store: TokenStore) -> None:
    """A manual activity (no file) raises GarminNotFound, not a transient error."""
    _store_tokens(store, sandbox.issue_tokens())
    _add_run(sandbox, 7, manual=True)
    with pytest.raises(GarminNotFound):
        _adapter(sandbox, store).download_original(7)
    assert sandbox.requests["login"] == 0


def test_expired_token_is_refreshed_and_written_back(
    sandbox: GarminSandbox, store: TokenStore
) -> None:
    """An expiring token is refreshed once, the rotated blob is stored, the old refresh dies."""
    old_blob = sandbox.issue_tokens(lifetime_s=-10)
    _store_tokens(store, old_blob)
    adapter = _adapter(sandbox, store)
    adapter.list_activities(start=0, limit=5)

    assert sandbox.requests == {"token_refresh": 1, "list": 1}
    assert store.version() == 2  # the initial write, then the rotation
    new = json.loads(store.blob())
    old = json.loads(old_blob)
    assert new["di_refresh_token"] != old["di_refresh_token"]
    assert not sandbox.is_refresh_token_valid(old["di_refresh_token"])
    assert sandbox.is_refresh_token_valid(new["di_refresh_token"])
    assert sandbox.is_access_token_valid(new["di_token"])

    adapter.list_activities(start=0, limit=5)  # the fresh token needs no refresh
    assert sandbox.requests == {"token_refresh": 1, "list": 2}
    assert len(store.writes) == 2


def test_refreshed_tokens_are_saved_before_the_request(
    sandbox: GarminSandbox, tmp_path: Path
) -> None:
    """Garmin kills the old refresh token when it answers the refresh: the rotated
    tokens are in the store before the download they were refreshed for is sent, so a
    crash during that download cannot leave a dead refresh token stored."""

    class WatchingStore(TokenStore):
        """Notes which Garmin requests had been made when each token write landed."""

        def __init__(self, path: Path) -> None:
            super().__init__(path)
            self.seen_at_write: list[dict[str, int]] = []

        def replace_garmin_tokens(
            self, user_id: str, blob: str, *, expected_version: int | None
        ) -> GarminTokens | None:
            self.seen_at_write.append(dict(sandbox.requests))
            return super().replace_garmin_tokens(user_id, blob, expected_version=expected_version)

    with WatchingStore(tmp_path / "g2s.sqlite3") as watching:
        _store_tokens(watching, sandbox.issue_tokens(lifetime_s=-10))
        _add_run(sandbox, 7)
        sandbox.fail_next("download", 500, times=10)  # the download never succeeds
        with pytest.raises(TransientError):
            _adapter(sandbox, watching, retry_attempts=0).download_original(7)
        refreshed = json.loads(watching.blob())["di_refresh_token"]
    assert watching.seen_at_write[1] == {"token_refresh": 1}  # before any download
    assert sandbox.requests["download"] >= 1
    assert len(watching.writes) == 2  # the first store, the rotation: once
    assert sandbox.is_refresh_token_valid(refreshed)


def test_tokens_rotated_by_a_failed_call_are_still_saved(
    sandbox: GarminSandbox, store: TokenStore
) -> None:
    """A refresh on a 401 retry rotates tokens; they are stored even though the call failed."""
    _store_tokens(store, sandbox.issue_tokens())
    sandbox.fail_next("list", 401, times=2)
    with pytest.raises(GarminAuthError):
        _adapter(sandbox, store).list_activities(start=0, limit=5)
    assert sandbox.requests == {"list": 2, "token_refresh": 1}
    assert store.version() == 2
    assert sandbox.is_refresh_token_valid(json.loads(store.blob())["di_refresh_token"])


def test_revoked_tokens_raise_auth_error_without_login(
    sandbox: GarminSandbox, store: TokenStore
) -> None:
    """Revoked tokens give GarminAuthError; nothing tries to log in."""
    _store_tokens(store, sandbox.issue_tokens())
    sandbox.revoke_all_tokens()
    with pytest.raises(GarminAuthError):
        _adapter(sandbox, store).list_activities(start=0, limit=5)
    assert sandbox.requests["login"] == 0


def test_dead_refresh_token_is_an_auth_error(sandbox: GarminSandbox, store: TokenStore) -> None:
    """An expired access token whose refresh token is dead gives GarminAuthError before listing."""
    _store_tokens(store, sandbox.issue_tokens(lifetime_s=-10))
    sandbox.revoke_all_tokens()
    with pytest.raises(GarminAuthError):
        _adapter(sandbox, store).list_activities(start=0, limit=5)
    assert sandbox.requests == {"token_refresh": 1}


def test_no_stored_tokens_is_an_auth_error(sandbox: GarminSandbox, store: TokenStore) -> None:
    """Without stored tokens the call fails with GarminAuthError and sends nothing."""
    with pytest.raises(GarminAuthError):
        _adapter(sandbox, store).list_activities(start=0, limit=5)
    assert sum(sandbox.requests.values()) == 0


def test_429_is_rate_limited(sandbox: GarminSandbox, store: TokenStore) -> None:
    """A 429 on the list raises GarminRateLimited after one request (no retry)."""
    _store_tokens(store, sandbox.issue_tokens())
    sandbox.fail_next("list", 429)
    with pytest.raises(GarminRateLimited):
        _adapter(sandbox, store).list_activities(start=0, limit=5)
    assert sandbox.requests == {"list": 1}


def test_429_on_refresh_is_rate_limited(sandbox: GarminSandbox, store: TokenStore) -> None:
    """A 429 from the token endpoint means back off, not "log in again"."""
    _store_tokens(store, sandbox.issue_tokens(lifetime_s=-10))
    sandbox.fail_next("token_refresh", 429)
    with pytest.raises(GarminRateLimited):
        _adapter(sandbox, store).list_activities(start=0, limit=5)
    assert sandbox.requests == {"token_refresh": 1}


def test_5xx_is_retried_then_transient(sandbox: GarminSandbox, store: TokenStore) -> None:
    """Persistent 5xx gives TransientError after the library's bounded retries."""
    _store_tokens(store, sandbox.issue_tokens())
    _add_run(sandbox, 5)
    sandbox.fail_next("download", 503, times=3)
    with pytest.raises(TransientError):
        _adapter(sandbox, store, retry_attempts=1).download_original(5)
    assert sandbox.requests == {"download": 2}


@pytest.mark.parametrize("status", [400, 410, 422])
def test_download_4xx_that_retrying_cannot_change_is_refused(
    sandbox: GarminSandbox, store: TokenStore, status: int
) -> None:
    """A 400/410/422 on the download raises GarminRefused naming the status, after one
    request (neither the library nor the adapter retries it)."""
    _store_tokens(store, sandbox.issue_tokens())
    _add_run(sandbox, 5)
    sandbox.fail_next("download", status, times=2)
    with pytest.raises(GarminRefused) as refused:
        _adapter(sandbox, store).download_original(5)
    assert refused.value.status == status
    assert str(status) in str(refused.value)
    assert sandbox.requests == {"download": 1}


@pytest.mark.parametrize("status", [408, 409, 425])
def test_download_4xx_that_may_pass_is_transient(
    sandbox: GarminSandbox, store: TokenStore, status: int
) -> None:
    """A 408/409/425 on the download is TransientError (a later cycle tries again)."""
    _store_tokens(store, sandbox.issue_tokens())
    _add_run(sandbox, 5)
    sandbox.fail_next("download", status)
    with pytest.raises(TransientError, match=str(status)):
        _adapter(sandbox, store).download_original(5)
    assert sandbox.requests == {"download": 1}


def test_one_5xx_then_success(sandbox: GarminSandbox, store: TokenStore) -> None:
    """A single 502 is retried by the library and the list still arrives."""
    _store_tokens(store, sandbox.issue_tokens())
    _add_run(sandbox, 5)
    sandbox.fail_next("list", 502)
    rows = _adapter(sandbox, store).list_activities(start=0, limit=5)
    assert [r["activityId"] for r in rows] == [5]
    assert sandbox.requests == {"list": 2}


def test_unreachable_server_is_transient(store: TokenStore) -> None:
    """A closed port gives TransientError."""
    with GarminSandbox() as gone:
        base, token_url, blob = gone.base_url, gone.di_token_url, gone.issue_tokens()
    _store_tokens(store, blob)
    adapter = GarminConnectAdapter(
        store, USER, base_url=base, di_token_url=token_url, retry_attempts=0
    )
    with pytest.raises(TransientError):
        adapter.list_activities(start=0, limit=5)


def test_newer_stored_tokens_are_adopted(sandbox: GarminSandbox, store: TokenStore) -> None:
    """After another writer stores new tokens (a new login), the adapter uses them."""
    _store_tokens(store, sandbox.issue_tokens())
    adapter = _adapter(sandbox, store)
    adapter.list_activities(start=0, limit=1)
    sandbox.revoke_all_tokens()
    current = store.version()
    assert store.replace_garmin_tokens(USER, sandbox.issue_tokens(), expected_version=current)
    adapter.list_activities(start=0, limit=1)
    assert sandbox.requests == {"list": 2}


def test_lost_token_write_adopts_the_winner(
    sandbox: GarminSandbox, store: TokenStore, tmp_path: Path
) -> None:
    """When the conditional write loses, the stored (newer) tokens win and are used next."""
    _store_tokens(store, sandbox.issue_tokens(lifetime_s=-10))

    class RacingStore(TokenStore):
        """Another process (the plain `store`) writes its own tokens just before ours."""

        def replace_garmin_tokens(
            self, user_id: str, blob: str, *, expected_version: int | None
        ) -> GarminTokens | None:
            winner = sandbox.issue_tokens()
            store.replace_garmin_tokens(user_id, winner, expected_version=expected_version)
            return super().replace_garmin_tokens(user_id, blob, expected_version=expected_version)

    with RacingStore(tmp_path / "g2s.sqlite3") as racing:
        # The same database file as `store`, reached through a second connection.
        adapter = GarminConnectAdapter(
            racing, USER, base_url=sandbox.base_url, di_token_url=sandbox.di_token_url
        )
        adapter.list_activities(start=0, limit=1)
        assert racing.writes == []  # our write lost
        winner = store.blob()
        assert store.version() == 2
        sandbox.fail_next("token_refresh", 500, times=5)  # a refresh now would fail the call
        adapter.list_activities(start=0, limit=1)
    assert sandbox.requests == {"token_refresh": 1, "list": 2}
    assert store.blob() == winner


def test_no_token_in_logs_or_errors(
    sandbox: GarminSandbox, store: TokenStore, caplog: pytest.LogCaptureFixture
) -> None:
    """No token value reaches a log record or an exception text, across refresh and failures."""
    caplog.set_level(logging.DEBUG)
    first = sandbox.issue_tokens(lifetime_s=-10)
    _store_tokens(store, first)
    adapter = _adapter(sandbox, store, retry_attempts=1)
    _add_run(sandbox, 9)
    adapter.list_activities(start=0, limit=5)
    rotated = store.blob()
    errors: list[BaseException] = []
    for endpoint, status in (("list", 429), ("download", 500), ("list", 401)):
        sandbox.fail_next(endpoint, status, times=2)
        try:
            if endpoint == "list":
                adapter.list_activities(start=0, limit=5)
            else:
                adapter.download_original(9)
        except (GarminAuthError, GarminRateLimited, TransientError) as exc:
            errors.append(exc)
    assert len(errors) == 3
    secrets = _secrets(first, rotated, store.blob())
    texts = [r.getMessage() + repr(r.__dict__) for r in caplog.records]
    texts += ["".join(traceback.format_exception(exc)) for exc in errors]
    for text in texts:
        for secret in secrets:
            assert secret not in text
    assert sandbox.requests["login"] == 0


def test_sandbox_refresh_rotates_and_old_token_is_rejected(sandbox: GarminSandbox) -> None:
    """The emulator's refresh endpoint rotates: a used refresh token answers 401 the second time."""
    import requests

    refresh = json.loads(sandbox.issue_tokens())["di_refresh_token"]
    form = {"grant_type": "refresh_token", "client_id": "x", "refresh_token": refresh}
    first = requests.post(sandbox.di_token_url, data=form, timeout=5)
    second = requests.post(sandbox.di_token_url, data=form, timeout=5)
    assert first.status_code == 200
    assert first.json()["refresh_token"] != refresh
    assert second.status_code == 401
    assert requests.get(f"{sandbox.base_url}/sso/signin", timeout=5).status_code == 401
    assert sandbox.requests == {"token_refresh": 2, "login": 1}


def test_make_record_has_the_real_field_layout() -> None:
    """make_record carries the real field layout the sync relies on."""
    record = make_record(1, "n", "trail_running", START, 2225.4, 4261.2)
    assert record["startTimeGMT"] == "2026-01-08 14:10:21"
    assert record["beginTimestamp"] == 1767881421000
    assert record["activityType"] == {"typeId": 6, "typeKey": "trail_running", "parentTypeId": 1}
    assert record["elapsedDuration"] == 2225.4
    assert record["manualActivity"] is False
