"""The sync Lambda's Garmin/Strava cost per invocation with nothing to upload, cold
(the handler's cached runtime cleared, as a new container starts) and warm (the same
runtime reused): a warm invocation is exactly 1 Garmin request and 0 Strava; a cold
one at most 1 Garmin request more (a token refresh), still 0 Strava.

The handler is invoked in-process as test_lambda_handlers.py does, on the session's
local moto server (DynamoDB table, KMS key, SSM SecureString) and the sandboxes."""

from __future__ import annotations

import io
import logging
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import redirect_stdout
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import pytest

from garmin2strava.adapters.store.dynamodb import create_table
from garmin2strava.bootstrap import build_store, utc_now
from garmin2strava.entrypoints.aws_lambda import sync_handler
from garmin2strava.sandbox.scenario import SandboxPair, running_sandboxes, seed_run
from garmin2strava.services.accounts import ensure_settings_account

pytestmark = pytest.mark.integration

USER = "demo"  # SandboxPair.settings' G2S_USER_ID
SCHEDULED_EVENT: dict[str, Any] = {"source": "aws.events", "detail-type": "Scheduled Event"}


@dataclass
class FakeContext:
    """The two members of AWS's Lambda context object the sync handler uses."""

    remaining_ms: int = 120_000
    aws_request_id: str = "cold-warm-0000"

    def get_remaining_time_in_millis(self) -> int:
        return self.remaining_ms


@dataclass
class Invocations:
    pair: SandboxPair

    def invoke(self) -> tuple[dict[str, Any], Counter[str], int]:
        """One scheduled invocation: its summary, the Garmin requests by endpoint and
        the number of Strava requests (token requests included) it made."""
        self.pair.reset_counts()
        with redirect_stdout(io.StringIO()):  # the EMF lines
            summary = sync_handler.handler(SCHEDULED_EVENT, FakeContext())
        return summary, Counter(self.pair.garmin.requests), self.pair.strava_total()


def _deploy(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, *, garmin_token_lifetime_s: float
) -> Iterator[Invocations]:
    """A DynamoDB/KMS/SSM deployment on moto whose account holds one ride (nothing to
    upload) and Garmin tokens valid for `garmin_token_lifetime_s`."""
    table = f"g2s-cw-{uuid.uuid4().hex[:12]}"
    dynamodb = boto3.client("dynamodb")
    create_table(dynamodb, table)
    key_id = boto3.client("kms").create_key()["KeyMetadata"]["Arn"]
    secret_name = f"/g2s-{uuid.uuid4().hex[:8]}/strava_client_secret"
    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    with running_sandboxes() as pair:
        boto3.client("ssm").put_parameter(
            Name=secret_name, Type="SecureString", KeyId=key_id, Value=pair.strava.client_secret
        )
        env = {
            "G2S_STORE": "dynamodb",
            "G2S_DYNAMODB_TABLE": table,
            "G2S_KMS_KEY_ID": key_id,
            "G2S_USER_ID": USER,
            "G2S_LOG_FORMAT": "json",
            "G2S_LOG_LEVEL": "WARNING",
            "STRAVA_CLIENT_ID": str(pair.strava.client_id),
            "G2S_SSM_STRAVA_CLIENT_SECRET": secret_name,
            "G2S_STRAVA_BASE_URL": pair.strava.base_url,
            "G2S_GARMIN_BASE_URL": pair.garmin.base_url,
        }
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        settings = pair.settings(
            tmp_path / "unused.sqlite3",
            store="dynamodb",
            dynamodb_table=table,
            kms_key_id=key_id,
            token_key=None,
            garmin_tokens=pair.garmin.issue_tokens(lifetime_s=garmin_token_lifetime_s),
        )
        ensure_settings_account(build_store(settings), settings, utc_now)
        seed_run(
            pair,
            41_000_001,
            start_utc=datetime.now(UTC) - timedelta(hours=3),
            type_key="road_biking",
            name="Commute",
        )
        sync_handler.runtime.cache_clear()  # the next invocation is a cold start
        try:
            yield Invocations(pair)
        finally:
            sync_handler.runtime.cache_clear()
            root.handlers[:], root.level = saved_handlers, saved_level
            dynamodb.delete_table(TableName=table)


@pytest.fixture
def fresh_tokens(
    aws_env: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> Iterator[Invocations]:
    """The stored Garmin access token has an hour to live."""
    yield from _deploy(monkeypatch, tmp_path, garmin_token_lifetime_s=3600)


@pytest.fixture
def expiring_tokens(
    aws_env: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> Iterator[Invocations]:
    """The stored Garmin access token is about to expire: the cold start refreshes it."""
    yield from _deploy(monkeypatch, tmp_path, garmin_token_lifetime_s=1)


def _assert_idle(summary: dict[str, Any]) -> None:
    assert summary["outcomes"] == {}
    assert (summary["accounts"], summary["failed"], summary["skipped"]) == (1, 0, 0)


def test_cold_then_warm_idle_invocations(fresh_tokens: Invocations) -> None:
    """Cold: at most 2 Garmin requests (1 list + at most 1 token refresh), 0 Strava;
    each warm one after it: exactly 1 Garmin request (the list), 0 Strava."""
    summary, garmin, strava = fresh_tokens.invoke()
    _assert_idle(summary)
    assert garmin["list"] == 1
    assert set(garmin) <= {"list", "token_refresh"}
    assert garmin.total() <= 2
    assert strava == 0
    assert sync_handler.runtime.cache_info().misses == 1

    for _ in range(3):
        summary, garmin, strava = fresh_tokens.invoke()
        _assert_idle(summary)
        assert garmin == {"list": 1}
        assert strava == 0
    assert sync_handler.runtime.cache_info().misses == 1  # all warm: built once


def test_cold_invocation_with_an_expiring_garmin_token(expiring_tokens: Invocations) -> None:
    """The worst cold start (stored Garmin token about to expire) is exactly 1 refresh +
    1 list and 0 Strava; the warm invocation after it is back to 1 Garmin request."""
    summary, garmin, strava = expiring_tokens.invoke()
    _assert_idle(summary)
    assert garmin == {"list": 1, "token_refresh": 1}
    assert strava == 0

    summary, garmin, strava = expiring_tokens.invoke()
    _assert_idle(summary)
    assert garmin == {"list": 1}
    assert strava == 0
    assert sync_handler.runtime.cache_info().misses == 1


def test_every_invocation_of_a_new_container_is_cold(fresh_tokens: Invocations) -> None:
    """Clearing the cached runtime before each invocation (a new container each time)
    still never exceeds 2 Garmin requests and 0 Strava."""
    for _ in range(3):
        sync_handler.runtime.cache_clear()
        summary, garmin, strava = fresh_tokens.invoke()
        _assert_idle(summary)
        assert garmin["list"] == 1
        assert garmin.total() <= 2
        assert strava == 0
        assert sync_handler.runtime.cache_info().misses == 1  # built by this invocation
