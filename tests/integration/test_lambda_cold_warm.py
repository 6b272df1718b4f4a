"""The sync Lambda's Garmin/Strava cost per invocation with nothing to upload, cold
(the handler's cached runtime cleared, as a new container starts) and warm (the same
runtime reused): a warm invocation is exactly 1 Garmin request and 0 Strava; a cold
one at most 1 Garmin request more (a token refresh), still 0 Strava.

The handler is invoked in-process as test_lambda_handlers.py does, on the session's
local moto server (DynamoDB table, KMS key, SSM SecureString) and the sandboxes."""

from __future__ import annotations

import io
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, redirect_stdout
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from g2s_harness.aws_lambda import Deployment, FakeContext
from g2s_sandbox.scenario import SandboxPair, seed_run
from garmin2strava.entrypoints.aws_lambda import sync_handler

pytestmark = pytest.mark.integration

OpenDeployment = Callable[..., AbstractContextManager[Deployment]]  # conftest's lambda_deployment
SCHEDULED_EVENT: dict[str, Any] = {"source": "aws.events", "detail-type": "Scheduled Event"}


@dataclass
class Invocations:
    pair: SandboxPair

    def invoke(self) -> tuple[dict[str, Any], Counter[str], int]:
        """One scheduled invocation: its summary, the Garmin requests by endpoint and
        the number of Strava requests (token requests included) it made."""
        self.pair.reset_counts()
        with redirect_stdout(io.StringIO()):  # the EMF lines
            summary = sync_handler.handler(
                SCHEDULED_EVENT, FakeContext(aws_request_id="cold-warm-0000")
            )
        return summary, Counter(self.pair.garmin.requests), self.pair.strava_total()


def _deploy(
    lambda_deployment: OpenDeployment, *, garmin_token_lifetime_s: float
) -> Iterator[Invocations]:
    """The Lambda deployment on moto (conftest's lambda_deployment) whose account holds
    one ride (nothing to upload) and Garmin tokens valid for `garmin_token_lifetime_s`."""
    with lambda_deployment(garmin_token_lifetime_s=garmin_token_lifetime_s) as deployment:
        seed_run(
            deployment.pair,
            41_000_001,
            start_utc=datetime.now(UTC) - timedelta(hours=3),
            type_key="road_biking",
            name="Commute",
        )
        yield Invocations(deployment.pair)


@pytest.fixture
def fresh_tokens(lambda_deployment: OpenDeployment) -> Iterator[Invocations]:
    """The stored Garmin access token has an hour to live."""
    yield from _deploy(lambda_deployment, garmin_token_lifetime_s=3600)


@pytest.fixture
def expiring_tokens(lambda_deployment: OpenDeployment) -> Iterator[Invocations]:
    """The stored Garmin access token is about to expire: the cold start refreshes it."""
    yield from _deploy(lambda_deployment, garmin_token_lifetime_s=1)


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
