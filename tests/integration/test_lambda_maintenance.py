"""The Lambda maintenance function (reconciliation and the streams catch-up), invoked
in-process with EventBridge's sample event against the session's moto server and the
Strava sandbox through stravalib. Request counts are the sandbox's own counters. The
sandbox has no webhook subscription here: every event Strava would send is dropped."""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, redirect_stdout
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from g2s_harness.aws_lambda import USER, Deployment, FakeContext
from garmin2strava.bootstrap import utc_now
from garmin2strava.domain.budget import next_window_reset
from garmin2strava.entrypoints.aws_lambda import maintenance_handler, worker_handler
from garmin2strava.services.account_control import AccountControl
from garmin2strava.services.reconcile import reconcile_due

pytestmark = pytest.mark.integration

EVENTS_DIR = Path(__file__).parent / "aws_events"
SUBSCRIPTION_ID = 120475
STREAMS = "time,heartrate"
DAY = timedelta(hours=24)


def scheduled_event() -> dict[str, Any]:
    data: dict[str, Any] = json.loads((EVENTS_DIR / "eventbridge_scheduled.json").read_text())
    return data


@pytest.fixture
def deployment(
    lambda_deployment: Callable[..., AbstractContextManager[Deployment]],
) -> Iterator[Deployment]:
    """The deployment, the sandbox athlete linked to the account (as the CLI links it)."""
    with lambda_deployment(subscription_id=SUBSCRIPTION_ID) as deployed:
        deployed.store.link_athlete(deployed.pair.athlete_id, USER)
        yield deployed


def invoke(context: FakeContext | None = None) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The handler's answer (checked JSON-able) and the EMF lines it printed."""
    out = io.StringIO()
    with redirect_stdout(out):
        answer = maintenance_handler.handler(scheduled_event(), context or FakeContext())
    assert json.loads(json.dumps(answer)) == answer
    return answer, [json.loads(line) for line in out.getvalue().splitlines() if line]


def emf(lines: list[dict[str, Any]], name: str) -> float | None:
    for line in lines:
        if line.get("function") == "maintenance" and name in line:
            return float(line[name])
    return None


def test_a_dropped_create_is_repaired_then_the_period_costs_nothing(
    deployment: Deployment,
) -> None:
    """An activity on Strava the mirror never heard of is mirrored by one invocation
    (1 list, 1 fetch); a second invocation within the period sends no request at all."""
    pair = deployment.pair
    activity = pair.strava.add_activity(
        pair.athlete_id, start_utc=datetime.now(UTC) - timedelta(days=2), elapsed_s=1800
    )
    assert deployment.store.get_workout(USER, activity) is None
    pair.reset_counts()

    summary, lines = invoke()

    assert pair.strava.requests["list"] == 1
    assert pair.strava.requests["activity"] == 1
    workout = deployment.store.get_workout(USER, activity)
    assert workout is not None
    assert not workout.is_deleted
    # The account's first pass is a sweep (G2S_MIRROR_SWEEP_DAYS, 7 by default: none
    # recorded yet); the activity started in the window, so it is fetched.
    assert [
        (r["userId"], r["complete"], r["sweep"], r["added"]) for r in summary["reconciled"]
    ] == [(USER, True, True, 1)]
    assert (summary["stoppedEarly"], summary["failed"], summary["streams"]) == (False, [], None)
    assert emf(lines, "ActivitiesAdded") == 1
    assert emf(lines, "AccountsReconciled") == 1
    assert not reconcile_due(deployment.store, USER, now=utc_now(), every=DAY)

    pair.reset_counts()
    summary, lines = invoke()

    assert pair.strava_total() == 0
    assert summary["reconciled"] == []
    assert emf(lines, "StravaReads") == 0
    assert maintenance_handler.runtime.cache_info().misses == 1  # built once per cold start


def test_a_paused_account_is_skipped_until_it_is_resumed(
    deployment: Deployment, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A paused account gets no pass and no catch-up (no Strava request, its pending
    streams stay pending); resumed, the next invocation repairs it."""
    monkeypatch.setenv("G2S_MIRROR_STREAMS", STREAMS)
    pair, store = deployment.pair, deployment.store
    activity = pair.strava.add_activity(
        pair.athlete_id, start_utc=datetime.now(UTC) - timedelta(days=1), elapsed_s=1200
    )
    store.mark_streams_pending(USER, 424_242)  # an activity the mirror never had
    control = AccountControl(store=store, clock=utc_now)
    control.pause(USER)
    pair.reset_counts()

    summary, _ = invoke()

    assert pair.strava_total() == 0
    assert (summary["paused"], summary["reconciled"]) == (1, [])
    assert summary["streams"]["accounts"] == 0
    assert store.get_workout(USER, activity) is None
    assert store.list_pending_streams(USER) == [424_242]
    assert reconcile_due(store, USER, now=utc_now(), every=DAY)

    control.resume(USER)
    summary, _ = invoke()

    assert summary["paused"] == 0
    assert store.get_workout(USER, activity) is not None
    assert store.get_streams(USER, activity) is not None  # taken with the repair
    assert store.list_pending_streams(USER) == []


def test_streams_the_worker_deferred_are_read_by_the_catch_up(
    deployment: Deployment, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the uploader's reserve reached, the worker mirrors a create and marks its
    streams pending; once the window reopens, one maintenance invocation (reconciliation
    off) reads them with one streams request, and nothing stays pending."""
    monkeypatch.setenv("G2S_MIRROR_STREAMS", STREAMS)
    monkeypatch.setenv("G2S_MIRROR_RECONCILE_HOURS", "0")
    pair, store = deployment.pair, deployment.store
    activity = pair.strava.add_activity(
        pair.athlete_id, start_utc=datetime.now(UTC) - timedelta(hours=3), elapsed_s=1500
    )
    pair.strava.set_usage(short_all=85, daily_all=85, short_read=85, daily_read=85)
    batch = {"Records": [_sqs_record(_create_event(activity, pair.athlete_id))]}
    with redirect_stdout(io.StringIO()):
        assert worker_handler.handler(batch, FakeContext()) == {"batchItemFailures": []}
    assert store.get_workout(USER, activity) is not None
    assert pair.strava.requests["streams"] == 0
    assert store.list_pending_streams(USER) == [activity]

    # The next quarter hour: Strava's window rolled over, and so does the app's clock.
    pair.strava.set_usage()
    shift = next_window_reset(utc_now()) - utc_now() + timedelta(seconds=1)
    maintenance_handler.runtime().clock = lambda: utc_now() + shift
    pair.reset_counts()

    summary, lines = invoke()

    assert pair.strava.requests["streams"] == 1
    assert pair.strava.requests["list"] == 0  # reconciliation is off
    assert store.list_pending_streams(USER) == []
    kept = store.get_streams(USER, activity)
    assert kept is not None
    assert sorted(kept.streams) == ["heartrate", "time"]
    assert summary["reconciled"] == []
    assert summary["streams"] == {"accounts": 1, "stored": 1, "none": 0, "left": 0, "reads": 1}
    assert emf(lines, "StreamsStored") == 1


def test_the_uploaders_reserve_defers_the_pass_without_a_request(
    deployment: Deployment,
) -> None:
    """Reads at the uploader's reserve (85 of 100 in the window): the pass sends
    nothing, says when it can go on, and the account stays due."""
    pair = deployment.pair
    pair.strava.add_activity(
        pair.athlete_id, start_utc=datetime.now(UTC) - timedelta(days=1), elapsed_s=900
    )
    pair.strava.set_usage(short_all=85, daily_all=85, short_read=85, daily_read=85)
    with redirect_stdout(io.StringIO()):  # an ordinary read: the budget learns the figures
        maintenance_handler.runtime().strava_background_for(USER).get_athlete_id()
    pair.reset_counts()

    summary, lines = invoke()

    assert pair.strava.requests["list"] == 0
    assert pair.strava.requests["activity"] == 0
    assert summary["deferredUntil"] is not None
    assert [r["complete"] for r in summary["reconciled"]] == [False]
    assert emf(lines, "Deferred") == 1
    assert reconcile_due(deployment.store, USER, now=utc_now(), every=DAY)


def test_an_invocation_out_of_time_stops_cleanly_and_the_next_one_does_the_work(
    deployment: Deployment,
) -> None:
    """With no time left nothing is sent and no pass is recorded (the account stays
    due); the next invocation, with time, repairs the mirror."""
    pair = deployment.pair
    activity = pair.strava.add_activity(
        pair.athlete_id, start_utc=datetime.now(UTC) - timedelta(days=1), elapsed_s=1500
    )
    pair.reset_counts()

    summary, lines = invoke(FakeContext(remaining_ms=2))

    assert summary["stoppedEarly"] is True
    assert summary["failed"] == []
    assert pair.strava_total() == 0
    assert deployment.store.get_workout(USER, activity) is None
    assert reconcile_due(deployment.store, USER, now=utc_now(), every=DAY)
    assert emf(lines, "StoppedEarly") == 1

    summary, _ = invoke()

    assert summary["stoppedEarly"] is False
    assert deployment.store.get_workout(USER, activity) is not None


def _create_event(activity_id: int, owner_id: int) -> str:
    return json.dumps(
        {
            "object_type": "activity",
            "object_id": activity_id,
            "aspect_type": "create",
            "owner_id": owner_id,
            "subscription_id": SUBSCRIPTION_ID,
            "event_time": int(datetime.now(UTC).timestamp()),
            "updates": {},
        }
    )


def _sqs_record(body: str) -> dict[str, Any]:
    """The sample batch's first record (aws_events/sqs_batch.json) with this body."""
    batch = json.loads((EVENTS_DIR / "sqs_batch.json").read_text())
    record: dict[str, Any] = batch["Records"][0]
    record["body"] = body
    return record
