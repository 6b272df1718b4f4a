"""The Lambda functions tell as the container does: their notification URLs and
heartbeat URL come from SSM SecureStrings (names in the environment, as terraform
gives them), optional; the sync pings after each invocation; the maintenance function
tells the dead-letter queue's depth. On moto, against the sandboxes, with a real HTTP
catcher on 127.0.0.1."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, redirect_stdout
from dataclasses import replace
from typing import Any

import pytest

from g2s_harness.aws_lambda import USER, Deployment, FakeContext
from g2s_harness.notify_catchers import JsonCatcher
from garmin2strava.domain.models import AccountStatus
from garmin2strava.entrypoints.aws_lambda import maintenance_handler, sync_handler
from garmin2strava.errors import ConfigError

pytestmark = pytest.mark.integration


@pytest.fixture
def catcher() -> Iterator[JsonCatcher]:
    with JsonCatcher() as running:
        yield running


def invoke(handler: Callable[[Any, Any], dict[str, Any]]) -> dict[str, Any]:
    with redirect_stdout(io.StringIO()):  # the EMF lines
        return handler({}, FakeContext())


def told(catcher: JsonCatcher) -> list[str]:
    """The titles of the notifications the catcher took (json:// posts)."""
    return [hit.body["title"] for hit in catcher.hits if hit.method == "POST"]


def pinged(catcher: JsonCatcher) -> list[str]:
    return [hit.path for hit in catcher.hits if hit.method == "GET"]


@pytest.fixture
def telling(
    lambda_deployment: Callable[..., AbstractContextManager[Deployment]], catcher: JsonCatcher
) -> Iterator[Deployment]:
    with lambda_deployment(
        notify_urls=f"{catcher.url('told')} ",  # whitespace around, as pasted
        heartbeat_url=catcher.http_url("hc/check"),
    ) as deployed:
        deployed.store.link_athlete(deployed.pair.athlete_id, USER)
        yield deployed


def test_the_urls_come_from_ssm(telling: Deployment, catcher: JsonCatcher) -> None:
    settings = sync_handler.runtime().settings
    assert settings.notify_url_list == (catcher.url("told"),)
    assert settings.heartbeat_url is not None
    assert settings.heartbeat_url.get_secret_value() == catcher.http_url("hc/check")
    maintenance = maintenance_handler.runtime().settings
    assert maintenance.notify_url_list == (catcher.url("told"),)


def test_without_the_parameters_nothing_is_told_and_nothing_fails(
    lambda_deployment: Callable[..., AbstractContextManager[Deployment]],
) -> None:
    with lambda_deployment() as deployed:
        deployed.store.link_athlete(deployed.pair.athlete_id, USER)
        summary = invoke(sync_handler.handler)
        assert summary["failed"] == 0
        settings = sync_handler.runtime().settings
        assert settings.notify_urls is None
        assert settings.heartbeat_url is None


@pytest.mark.parametrize(
    ("field", "value"),
    [("notify_urls", "ntfy-secret-topic-no-scheme"), ("heartbeat_url", "hc-ping.com/uuid-secret")],
)
def test_a_bad_parameter_ends_the_cold_start_naming_it_not_its_value(
    lambda_deployment: Callable[..., AbstractContextManager[Deployment]],
    field: str,
    value: str,
) -> None:
    with lambda_deployment(**{field: value}), pytest.raises(ConfigError) as refused:
        sync_handler.runtime()
    assert f"/{field}" in str(refused.value)
    assert value not in str(refused.value)


def test_the_sync_invocation_pings_after_its_cycle(
    telling: Deployment, catcher: JsonCatcher
) -> None:
    assert invoke(sync_handler.handler)["failed"] == 0
    assert pinged(catcher) == ["/hc/check"]
    telling.pair.garmin.revoke_all_tokens()
    assert invoke(sync_handler.handler)["failed"] == 1
    assert pinged(catcher) == ["/hc/check", "/hc/check/fail"]


def test_no_secret_reaches_the_log(
    telling: Deployment, catcher: JsonCatcher, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    invoke(sync_handler.handler)
    invoke(maintenance_handler.handler)
    logged = json.dumps([r.getMessage() for r in caplog.records]) + caplog.text
    assert str(catcher.port) not in logged  # neither URL, in any form


def test_the_sync_invocation_tells_a_condition_once_and_its_clearing_once(
    telling: Deployment, catcher: JsonCatcher
) -> None:
    telling.pair.garmin.revoke_all_tokens()
    for _ in range(3):
        invoke(sync_handler.handler)
    assert told(catcher) == ["[garmin2strava] garmin.tokens_refused started"]
    sync_handler.runtime.cache_clear()  # a cold start: the state is in the table
    account = telling.store.get_account(USER)
    assert account is not None
    telling.store.put_account(replace(account, status=AccountStatus.ACTIVE))  # `garmin login`
    current = telling.store.get_garmin_tokens(USER)
    assert telling.store.replace_garmin_tokens(
        USER,
        telling.pair.garmin.issue_tokens(),
        expected_version=current.version if current else None,
    )
    for _ in range(3):
        invoke(sync_handler.handler)
    assert told(catcher) == [
        "[garmin2strava] garmin.tokens_refused started",
        "[garmin2strava] garmin.tokens_refused cleared",
    ]


def test_the_maintenance_function_tells_the_dead_letter_queue(
    telling: Deployment, catcher: JsonCatcher
) -> None:
    invoke(maintenance_handler.handler)
    assert told(catcher) == []
    telling.sqs.send_message(QueueUrl=telling.dlq_url, MessageBody="{}")  # redriven there
    invoke(maintenance_handler.handler)
    invoke(maintenance_handler.handler)
    assert told(catcher) == ["[garmin2strava] mirror.dead_letters started"]
    (started,) = [hit.body for hit in catcher.hits if hit.method == "POST"]
    assert "redrive the dead-letter queue" in started["message"]
    telling.sqs.purge_queue(QueueUrl=telling.dlq_url)  # redriven to the events queue
    invoke(maintenance_handler.handler)
    invoke(maintenance_handler.handler)
    assert told(catcher) == [
        "[garmin2strava] mirror.dead_letters started",
        "[garmin2strava] mirror.dead_letters cleared",
    ]
    assert pinged(catcher) == []  # no heartbeat: maintenance is no sync cycle


def test_an_invocation_without_time_left_ends_without_telling_or_pinging(
    telling: Deployment, catcher: JsonCatcher
) -> None:
    """Less than TELL_MIN_MS left after the cycle: no send or ping that the timeout
    could cut; the next invocation tells what is owed, and pings."""
    telling.pair.garmin.revoke_all_tokens()
    with redirect_stdout(io.StringIO()):
        sync_handler.handler({}, FakeContext(remaining_ms=sync_handler.TELL_MIN_MS - 1))
    assert catcher.hits == []
    invoke(sync_handler.handler)
    assert told(catcher) == ["[garmin2strava] garmin.tokens_refused started"]
    assert pinged(catcher) == ["/hc/check/fail"]
