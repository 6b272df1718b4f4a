"""The three Lambda handlers, invoked in-process with AWS's sample events (aws_events/)
against the session's local moto server (DynamoDB, KMS, SQS + DLQ, SSM SecureStrings)
and the Garmin/Strava sandboxes on loopback. Never real AWS."""

from __future__ import annotations

import base64
import copy
import io
import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, redirect_stdout
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from g2s_harness.aws_lambda import USER, Deployment, FakeContext, deployed
from g2s_harness.sqs_records import sqs_record
from g2s_sandbox.scenario import seed_run
from garmin2strava.adapters.queue_sqs import FIRST_SENT_ATTRIBUTE
from garmin2strava.domain.budget import RateBudget
from garmin2strava.domain.webhook import WebhookEvent, derive_path_secret
from garmin2strava.entrypoints.aws_lambda import sync_handler, webhook_handler, worker_handler
from garmin2strava.ports import Store
from garmin2strava.services.mirror_subscription import remember_subscription

pytestmark = pytest.mark.integration

EVENTS_DIR = Path(__file__).parent / "aws_events"
SUBSCRIPTION_ID = 120475
VERIFY_TOKEN = "STRAVA"  # what aws_events/apigw_v2_handshake_get.json sends
PATH_SECRET = derive_path_secret(VERIFY_TOKEN)
MAX_RECEIVES = 3


def load_aws_event(name: str) -> dict[str, Any]:
    """A fresh copy of the sample event aws_events/{name}.json."""
    data: dict[str, Any] = json.loads((EVENTS_DIR / f"{name}.json").read_text("utf-8"))
    return copy.deepcopy(data)


@pytest.fixture
def deployment(
    lambda_deployment: Callable[..., AbstractContextManager[Deployment]],
) -> Iterator[Deployment]:
    """The deployment, the sandbox athlete linked to the account (as the CLI links it)."""
    with lambda_deployment(
        verify_token=VERIFY_TOKEN, subscription_id=SUBSCRIPTION_ID, max_receives=MAX_RECEIVES
    ) as deployed:
        deployed.store.link_athlete(deployed.pair.athlete_id, USER)
        yield deployed


@pytest.fixture(scope="module")
def answering_deployment(
    module_aws_env: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Deployment]:
    """One deployment for the module's webhook tests that enqueue nothing (handshakes,
    refusals, wrong paths): its webhook runtime stays warm from one test to the next,
    as a Lambda container's does between invocations."""
    with deployed(
        module_aws_env.setenv,
        tmp_path_factory.mktemp("answering"),
        verify_token=VERIFY_TOKEN,
        subscription_id=SUBSCRIPTION_ID,
        max_receives=MAX_RECEIVES,
    ) as deployed_once:
        deployed_once.store.link_athlete(deployed_once.pair.athlete_id, USER)
        yield deployed_once


@pytest.fixture
def webhook_deployment(answering_deployment: Deployment) -> Deployment:
    """The shared deployment, its events queue emptied before the test (deleted one
    by one: SQS allows one PurgeQueue a minute)."""
    sqs, url = answering_deployment.sqs, answering_deployment.queue_url
    while messages := sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages"):
        for message in messages:
            sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
    return answering_deployment


@pytest.fixture
def fast_sync(deployment: Deployment) -> None:
    """The cached sync app, built now, polls uploads without the 2 s pause."""
    app = sync_handler.runtime()
    app.poll_delay_s = 0
    app.garmin_retry_min_wait_s = 0.01


def _invoke(
    handler: Callable[[Any, Any], dict[str, Any]], event: Any, context: Any
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The handler's answer and the EMF lines it printed."""
    out = io.StringIO()
    with redirect_stdout(out):
        answer = handler(event, context)
    return answer, [json.loads(line) for line in out.getvalue().splitlines() if line]


def _emf(lines: list[dict[str, Any]], name: str, **dimensions: str) -> float | None:
    for line in lines:
        if all(line.get(k) == v for k, v in dimensions.items()) and name in line:
            return float(line[name])
    return None


# -- sync ---------------------------------------------------------------------------------
def test_sync_uploads_seeded_runs_then_idles_on_one_garmin_request(
    deployment: Deployment, fast_sync: None
) -> None:
    """A cold invocation uploads the new runs; a warm idle one costs 1 Garmin, 0 Strava."""
    pair = deployment.pair
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(days=1)
    seed_run(pair, 31_000_001, start_utc=start, name="Easy")
    seed_run(pair, 31_000_002, start_utc=start + timedelta(hours=5), name="Tempo")
    event = load_aws_event("eventbridge_scheduled")

    summary, emf = _invoke(sync_handler.handler, event, FakeContext())

    assert summary["outcomes"] == {"uploaded": 2}
    assert (summary["failed"], summary["stoppedEarly"]) == (0, False)
    assert pair.strava_counts()["uploads"] == 2
    ledger = deployment.store.get_uploads(USER, [31_000_001, 31_000_002])
    assert {e.outcome.value for e in ledger.values()} == {"uploaded"}
    assert _emf(emf, "Uploads", function="sync", outcome="uploaded") == 2
    assert emf[0]["_aws"]["CloudWatchMetrics"][0]["Namespace"] == "garmin2strava"

    garmin_before, strava_before = pair.garmin_count(), pair.strava_counts()
    summary, _ = _invoke(sync_handler.handler, event, FakeContext())

    assert summary["outcomes"] == {}
    assert pair.garmin_count() - garmin_before == 1
    assert pair.strava_counts() == strava_before
    assert sync_handler.runtime.cache_info().misses == 1  # built once per cold start


def test_sync_stops_before_its_timeout_and_leaves_work_for_the_next_run(
    deployment: Deployment, fast_sync: None
) -> None:
    """With no time left, nothing starts; the next invocation does the work."""
    pair = deployment.pair
    seed_run(pair, 31_000_010, start_utc=datetime.now(UTC) - timedelta(hours=3))
    event = load_aws_event("eventbridge_scheduled")

    summary, emf = _invoke(sync_handler.handler, event, FakeContext(remaining_ms=2))

    assert summary["stoppedEarly"] is True
    assert summary["accounts"] == 0
    assert pair.garmin_count() == 0
    assert _emf(emf, "StoppedEarly", function="sync") == 1

    summary, _ = _invoke(sync_handler.handler, event, FakeContext())
    assert summary["outcomes"] == {"uploaded": 1}
    assert summary["stoppedEarly"] is False


def test_sync_reads_the_client_secret_from_ssm(deployment: Deployment) -> None:
    """The Strava client secret is the SSM value, not the plain environment's."""
    app = sync_handler.runtime()
    assert app.settings.strava_client_secret is not None
    secret = app.settings.strava_client_secret.get_secret_value()
    assert secret == deployment.pair.strava.client_secret
    assert secret != os.environ["STRAVA_CLIENT_SECRET"]


# -- webhook ------------------------------------------------------------------------------
def _body(answer: dict[str, Any]) -> Any:
    assert answer["headers"]["content-type"] == "application/json"
    return json.loads(answer["body"])


@pytest.mark.usefixtures("webhook_deployment")
def test_webhook_answers_the_handshake() -> None:
    """GET with the SSM verify token echoes hub.challenge as JSON."""
    event = load_aws_event("apigw_v2_handshake_get")
    answer, _ = _invoke(webhook_handler.handler, event, FakeContext())
    assert answer["statusCode"] == 200
    assert _body(answer) == {"hub.challenge": "15f7d1a91c1f40f8a748fd134752feb3"}


@pytest.mark.usefixtures("webhook_deployment")
@pytest.mark.parametrize("token", ["wrong", "not-the-verify-token"])
def test_webhook_refuses_a_wrong_verify_token(token: str) -> None:
    """A wrong token (including the plain environment's) is 403 and echoes nothing."""
    event = load_aws_event("apigw_v2_handshake_get")
    event["queryStringParameters"]["hub.verify_token"] = token
    answer, _ = _invoke(webhook_handler.handler, event, FakeContext())
    assert answer["statusCode"] == 403
    assert "15f7d1a9" not in answer["body"]
    assert VERIFY_TOKEN not in answer["body"]


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ("{oops", 400),
        ('{"object_type":"club"}', 400),
        ("[]", 400),
        (json.dumps({"object_type": "activity", "object_id": "12"}), 400),
        ("[" * 2000 + "]" * 2000, 400),  # deeper than json's recursion limit
        ("x" * 5000, 413),
    ],
)
def test_webhook_refuses_malformed_events(
    webhook_deployment: Deployment, body: str, status: int
) -> None:
    """Malformed (nested 2,000 deep included) or oversized bodies are refused and
    nothing is enqueued."""
    event = load_aws_event("apigw_v2_event_post")
    event["body"] = body
    answer, emf = _invoke(webhook_handler.handler, event, FakeContext())
    assert answer["statusCode"] == status
    assert webhook_deployment.queued_bodies() == []
    if status == 400:
        assert _emf(emf, "EventsRejectedBad", function="webhook") == 1


def test_webhook_answers_a_foreign_subscription_as_a_valid_event(deployment: Deployment) -> None:
    """An event for another subscription id gets the valid event's answer (status, body,
    headers) and is not enqueued; the EMF counter tells them apart."""
    valid = load_aws_event("apigw_v2_event_post")
    foreign = load_aws_event("apigw_v2_event_post")
    data = json.loads(foreign["body"])
    foreign["body"] = json.dumps(data | {"subscription_id": SUBSCRIPTION_ID + 1})
    answer, emf = _invoke(webhook_handler.handler, foreign, FakeContext())
    assert deployment.queued_bodies() == []
    assert _emf(emf, "EventsRejectedForeign", function="webhook") == 1
    assert answer == _invoke(webhook_handler.handler, valid, FakeContext())[0]
    assert len(deployment.queued_bodies()) == 1


@pytest.mark.parametrize(
    "path", ["/webhooks/strava", "/webhooks/strava/wrong", f"/webhooks/strava/{PATH_SECRET}x"]
)
@pytest.mark.parametrize("name", ["apigw_v2_event_post", "apigw_v2_handshake_get"])
def test_webhook_answers_a_wrong_secret_as_api_gateway_answers_no_route(
    webhook_deployment: Deployment, name: str, path: str
) -> None:
    """A wrong {secret} (or none) gets API Gateway's own 404 `{"message":"Not Found"}`;
    no handshake is answered, nothing is enqueued."""
    event = load_aws_event(name)
    event["rawPath"] = event["requestContext"]["http"]["path"] = path
    secret = path.removeprefix("/webhooks/strava").removeprefix("/")
    event["pathParameters"] = {"secret": secret} if secret else None
    answer, _ = _invoke(webhook_handler.handler, event, FakeContext())
    assert (answer["statusCode"], _body(answer)) == (404, {"message": "Not Found"})
    assert "15f7d1a9" not in answer["body"]
    assert webhook_deployment.queued_bodies() == []


def test_sample_events_carry_the_secret_derived_from_their_verify_token() -> None:
    """The API Gateway samples use the path secret derived from VERIFY_TOKEN, on the
    route terraform declares."""
    for name in ("apigw_v2_event_post", "apigw_v2_handshake_get"):
        event = load_aws_event(name)
        assert event["pathParameters"] == {"secret": derive_path_secret(VERIFY_TOKEN)}
        assert event["routeKey"].endswith(" /webhooks/strava/{secret}")


def test_webhook_checks_events_against_the_stored_subscription_id(
    lambda_deployment: Callable[..., AbstractContextManager[Deployment]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """STRAVA_SUBSCRIPTION_ID unset: with nothing stored every event is a 503; with the
    id `webhook subscribe` stored in the table, its events are enqueued, others not."""
    monkeypatch.delenv("STRAVA_SUBSCRIPTION_ID", raising=False)  # answering_deployment's
    with lambda_deployment(verify_token=VERIFY_TOKEN, subscription_id=None) as deployed:
        event = load_aws_event("apigw_v2_event_post")
        answer, emf = _invoke(webhook_handler.handler, event, FakeContext())
        assert (answer["statusCode"], _body(answer)) == (503, {"error": "not accepting events yet"})
        assert _emf(emf, "EventsRejectedUnconfigured", function="webhook") == 1
        remember_subscription(deployed.store, SUBSCRIPTION_ID, now=datetime.now(UTC))
        assert webhook_handler.runtime().receiver.subscriptions.load() == SUBSCRIPTION_ID
        answer, _ = _invoke(webhook_handler.handler, event, FakeContext())
        assert (answer["statusCode"], _body(answer)) == (200, {"status": "received"})
        assert len(deployed.queued_bodies()) == 1


def test_webhook_takes_the_first_event_after_subscribe_in_a_warm_container(
    lambda_deployment: Callable[..., AbstractContextManager[Deployment]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A warm container that read no subscription id at its cold start: `webhook
    subscribe` stores one, and the very next event (naming it) reads the table at once
    and is enqueued, not refused until the next background look."""
    monkeypatch.delenv("STRAVA_SUBSCRIPTION_ID", raising=False)  # answering_deployment's
    with lambda_deployment(verify_token=VERIFY_TOKEN, subscription_id=None) as deployed:
        assert webhook_handler.runtime().receiver.subscriptions.current() is None
        remember_subscription(deployed.store, SUBSCRIPTION_ID, now=datetime.now(UTC))
        event = load_aws_event("apigw_v2_event_post")
        answer, emf = _invoke(webhook_handler.handler, event, FakeContext())
        assert (answer["statusCode"], _body(answer)) == (200, {"status": "received"})
        assert _emf(emf, "EventsReceived", function="webhook") == 1
        assert len(deployed.queued_bodies()) == 1


@pytest.mark.parametrize("encoded", [False, True])
def test_webhook_enqueues_a_valid_event_to_sqs(deployment: Deployment, encoded: bool) -> None:
    """A valid POST (plain or base64 body) is 200 and lands on the queue as the event."""
    event = load_aws_event("apigw_v2_event_post")
    expected = WebhookEvent.from_json(event["body"])
    if encoded:
        event["body"] = base64.b64encode(event["body"].encode()).decode()
        event["isBase64Encoded"] = True
    answer, emf = _invoke(webhook_handler.handler, event, FakeContext())
    assert answer["statusCode"] == 200
    assert _body(answer) == {"status": "received"}
    assert [WebhookEvent.from_json(b) for b in deployment.queued_bodies()] == [expected]
    assert _emf(emf, "EventsReceived", function="webhook") == 1


def test_webhook_module_imports_no_heavy_library() -> None:
    """Importing the webhook handler loads neither the API clients nor boto3/pydantic."""
    code = (
        "import sys, garmin2strava.entrypoints.aws_lambda.webhook_handler\n"
        "heavy = ('stravalib', 'garminconnect', 'fitparse', 'boto3', 'botocore',"
        " 'pydantic', 'pydantic_settings', 's3transfer')\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in heavy))\n"
    )
    out = subprocess.run(  # noqa: S603 (our own interpreter, fixed code)
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]"


# -- worker -------------------------------------------------------------------------------
def _record(message_id: str, body: str, *, receives: int = 1) -> dict[str, Any]:
    record: dict[str, Any] = load_aws_event("sqs_batch")["Records"][0]
    record["messageId"] = message_id
    record["body"] = body
    record["attributes"]["ApproximateReceiveCount"] = str(receives)
    return record


def _create_event(activity_id: int, owner_id: int, **changes: Any) -> str:
    event = {
        "object_type": "activity",
        "object_id": activity_id,
        "aspect_type": "create",
        "owner_id": owner_id,
        "subscription_id": SUBSCRIPTION_ID,
        "event_time": int(datetime.now(UTC).timestamp()),
        "updates": {},
    }
    return json.dumps(event | changes)


def test_worker_mirrors_a_create_with_one_strava_fetch(deployment: Deployment) -> None:
    """The sample batch's create, twice delivered, costs one fetch and fails nothing."""
    pair = deployment.pair
    activity_id = pair.strava.add_activity(
        pair.athlete_id, start_utc=datetime.now(UTC) - timedelta(hours=2), elapsed_s=1800
    )
    batch = load_aws_event("sqs_batch")
    first = batch["Records"][0]
    first["body"] = _create_event(activity_id, pair.athlete_id)
    batch["Records"].append(dict(first, messageId="0d6b1f3e-redelivered"))

    answer, emf = _invoke(worker_handler.handler, batch, FakeContext())

    assert answer == {"batchItemFailures": []}
    assert pair.strava.requests["activity"] == 1
    workout = deployment.store.get_workout(USER, activity_id)
    assert workout is not None
    assert not workout.is_deleted
    assert _emf(emf, "EventsProcessed", function="worker") == 2
    assert _emf(emf, "StravaFetches", function="worker") == 1


def test_worker_reports_only_the_failing_records(deployment: Deployment) -> None:
    """An unreadable message is returned; an unknown athlete's event is dropped (counted,
    never a DLQ message), and the rest is mirrored."""
    pair = deployment.pair
    activity_id = pair.strava.add_activity(
        pair.athlete_id, start_utc=datetime.now(UTC) - timedelta(hours=1), elapsed_s=900
    )
    batch = {
        "Records": [
            _record("ok", _create_event(activity_id, pair.athlete_id)),
            _record("garbled", "{not json"),
            _record("stranger", _create_event(activity_id + 1, 999_999)),
        ]
    }
    answer, emf = _invoke(worker_handler.handler, batch, FakeContext())

    failed = [item["itemIdentifier"] for item in answer["batchItemFailures"]]
    assert failed == ["garbled"]
    assert deployment.store.get_workout(USER, activity_id) is not None
    assert _emf(emf, "MessagesFailed", function="worker") == 1
    assert _emf(emf, "EventsDroppedUnknownAthlete", function="worker") == 1


def test_worker_returns_everything_unfinished_when_the_store_fails(
    deployment: Deployment, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A crash under the whole batch returns every message instead of losing it."""
    pair = deployment.pair
    built = worker_handler.runtime()

    def broken(_athlete_id: int) -> str | None:
        raise ConnectionError("store unreachable")

    monkeypatch.setattr(built.app.store, "user_for_athlete", broken)
    batch = {"Records": [_record("a", _create_event(1, pair.athlete_id))]}
    answer, _ = _invoke(worker_handler.handler, batch, FakeContext())
    assert answer == {"batchItemFailures": [{"itemIdentifier": "a"}]}


def _receive(deployment: Deployment, *, wait_s: int = 0) -> list[dict[str, Any]]:
    """One ReceiveMessage on the events queue, as the Lambda records it would become."""
    received = deployment.sqs.receive_message(
        QueueUrl=deployment.queue_url,
        MaxNumberOfMessages=10,
        WaitTimeSeconds=wait_s,
        AttributeNames=["All"],
        MessageAttributeNames=["All"],
    ).get("Messages", [])
    return [sqs_record(m) for m in received]


def _settle(deployment: Deployment, records: list[dict[str, Any]]) -> list[str]:
    """Invoke the worker on `records` and delete what it did not report, as the event
    source mapping does. Returns the reported message ids."""
    answer, _ = _invoke(worker_handler.handler, {"Records": records}, FakeContext())
    failed = [item["itemIdentifier"] for item in answer["batchItemFailures"]]
    for record in records:
        if record["messageId"] not in failed:
            deployment.sqs.delete_message(
                QueueUrl=deployment.queue_url, ReceiptHandle=record["receiptHandle"]
            )
    return failed


def _deliver(deployment: Deployment) -> list[str]:
    """What Lambda's SQS event source mapping does once: receive a batch, invoke the
    worker, delete what it did not report. Returns the reported message ids."""
    records = _receive(deployment)
    return _settle(deployment, records) if records else []


def _queue_counts(deployment: Deployment, queue_url: str | None = None) -> tuple[int, int, int]:
    """(visible, in flight, delayed) messages on the events queue (or `queue_url`)."""
    attributes = deployment.sqs.get_queue_attributes(
        QueueUrl=queue_url or deployment.queue_url,
        AttributeNames=[
            "ApproximateNumberOfMessages",
            "ApproximateNumberOfMessagesNotVisible",
            "ApproximateNumberOfMessagesDelayed",
        ],
    )["Attributes"]
    return (
        int(attributes["ApproximateNumberOfMessages"]),
        int(attributes["ApproximateNumberOfMessagesNotVisible"]),
        int(attributes["ApproximateNumberOfMessagesDelayed"]),
    )


def _post_create(activity_id: int, owner_id: int) -> None:
    """Strava's create event through the webhook Lambda onto the queue."""
    event = load_aws_event("apigw_v2_event_post")
    event["body"] = _create_event(activity_id, owner_id)
    answer, _ = _invoke(webhook_handler.handler, event, FakeContext())
    assert answer["statusCode"] == 200


def _block_strava_reads(store: Store, until: datetime) -> None:
    """The shared budget as the adapter stores it after a 429: no request before `until`."""
    store.put_app_state("strava_budget", RateBudget(blocked_until=until).to_dict())


def test_failing_event_reaches_the_dlq_after_the_last_delivery(deployment: Deployment) -> None:
    """Webhook to SQS to worker: a good event is mirrored and deleted; one that keeps
    failing is returned on each of its deliveries, then redriven to the DLQ."""
    pair = deployment.pair
    activity_id = pair.strava.add_activity(
        pair.athlete_id, start_utc=datetime.now(UTC) - timedelta(hours=4), elapsed_s=1200
    )
    # The second event's athlete belongs to an account without Strava tokens: its fetch
    # can never succeed. (An athlete we do not know at all is dropped, not dead.)
    deployment.store.link_athlete(424_242, "ghost")
    for object_id, owner in ((activity_id, pair.athlete_id), (activity_id + 1, 424_242)):
        event = load_aws_event("apigw_v2_event_post")
        event["body"] = _create_event(object_id, owner)
        answer, _ = _invoke(webhook_handler.handler, event, FakeContext())
        assert answer["statusCode"] == 200

    reported = [_deliver(deployment) for _ in range(MAX_RECEIVES + 1)]

    assert [len(failed) for failed in reported] == [1] * MAX_RECEIVES + [0]
    assert deployment.store.get_workout(USER, activity_id) is not None
    dead = deployment.queued_bodies(deployment.dlq_url)
    assert [WebhookEvent.from_json(b).owner_id for b in dead] == [424_242]
    assert deployment.queued_bodies() == []


# -- worker: a spent Strava budget -----------------------------------------------------------
def test_a_days_spent_budget_requeues_the_event_instead_of_spending_receives(
    deployment: Deployment,
) -> None:
    """Daily reads spent (Strava answers 429): the event is sent again with a delay (at
    most 900 s), the delivery is reported done, and nothing heads for the DLQ."""
    pair = deployment.pair
    activity_id = pair.strava.add_activity(
        pair.athlete_id, start_utc=datetime.now(UTC) - timedelta(hours=2), elapsed_s=1500
    )
    _post_create(activity_id, pair.athlete_id)
    # Both read windows spent, so a quarter hour passing mid-test changes nothing.
    pair.strava.set_usage(short_all=100, daily_all=1000, short_read=100, daily_read=1000)
    records = _receive(deployment)
    assert len(records) == 1

    answer, emf = _invoke(worker_handler.handler, {"Records": records}, FakeContext())

    assert answer == {"batchItemFailures": []}
    assert pair.strava.requests["activity"] == 1  # the one answered 429
    assert _emf(emf, "MessagesResent", function="worker") == 1
    deployment.sqs.delete_message(
        QueueUrl=deployment.queue_url, ReceiptHandle=records[0]["receiptHandle"]
    )
    # The copy waits, delayed; the receives it could spend are all still ahead of it.
    assert _queue_counts(deployment) == (0, 0, 1)
    assert [_deliver(deployment) for _ in range(MAX_RECEIVES + 1)] == [[]] * (MAX_RECEIVES + 1)
    assert deployment.queued_bodies(deployment.dlq_url) == []
    assert deployment.store.get_workout(USER, activity_id) is None


def test_a_requeued_event_is_the_same_message_and_is_mirrored_after_the_window(
    deployment: Deployment,
) -> None:
    """The delayed copy has the original's body and attributes, a fresh receive count,
    and once the budget reopens one delivery mirrors it with exactly one Strava fetch."""
    pair = deployment.pair
    activity_id = pair.strava.add_activity(
        pair.athlete_id, start_utc=datetime.now(UTC) - timedelta(hours=3), elapsed_s=2400
    )
    _post_create(activity_id, pair.athlete_id)
    # Long enough for the receive and the settle below to happen inside the window on
    # a loaded machine (the module's first invocation imports the worker: seconds).
    reopens = datetime.now(UTC) + timedelta(seconds=6)
    _block_strava_reads(deployment.store, reopens)
    original = _receive(deployment)
    assert len(original) == 1

    assert _settle(deployment, original) == []
    assert pair.strava.requests["activity"] == 0  # refused locally, no request
    assert _queue_counts(deployment) == (0, 0, 1)

    copies = _receive(deployment, wait_s=10)

    assert datetime.now(UTC) >= reopens
    assert [c["body"] for c in copies] == [original[0]["body"]]
    assert copies[0]["messageId"] != original[0]["messageId"]
    # The copy also carries the first send's time (the outage backoff grows with age).
    first_sent = {
        FIRST_SENT_ATTRIBUTE: {
            "stringValue": original[0]["attributes"]["SentTimestamp"],
            "stringListValues": [],
            "binaryListValues": [],
            "dataType": "Number",
        }
    }
    assert copies[0]["messageAttributes"] == original[0]["messageAttributes"] | first_sent
    assert copies[0]["messageAttributes"]["correlationId"]["stringValue"]
    assert copies[0]["attributes"]["ApproximateReceiveCount"] == "1"
    assert _settle(deployment, copies) == []
    assert pair.strava.requests["activity"] == 1
    workout = deployment.store.get_workout(USER, activity_id)
    assert workout is not None
    assert not workout.is_deleted
    assert _queue_counts(deployment) == (0, 0, 0)
    assert deployment.queued_bodies(deployment.dlq_url) == []


def test_a_failed_requeue_falls_back_to_a_batch_item_failure(
    deployment: Deployment, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When the delayed copy cannot be sent (no such queue), the deferred message is
    reported as a batch item failure, as before: SQS keeps it, nothing is lost."""
    pair = deployment.pair
    _post_create(31_000_100, pair.athlete_id)
    _block_strava_reads(deployment.store, datetime.now(UTC) + timedelta(hours=1))
    monkeypatch.setenv("G2S_QUEUE_URL", f"{deployment.queue_url}-missing")
    records = _receive(deployment)
    assert len(records) == 1

    answer, emf = _invoke(worker_handler.handler, {"Records": records}, FakeContext())

    assert answer == {"batchItemFailures": [{"itemIdentifier": records[0]["messageId"]}]}
    assert _emf(emf, "MessagesResent", function="worker") == 0
    # The original is still the queue's only copy (visibility timeout 0: visible again).
    assert _queue_counts(deployment) == (1, 0, 0)
    assert [r["body"] for r in _receive(deployment)] == [records[0]["body"]]


# -- worker: a Strava outage ----------------------------------------------------------------
def test_a_strava_outage_never_sends_an_event_to_the_dlq(deployment: Deployment) -> None:
    """Strava answers 503 to every fetch: the deliveries before the last are reported
    (SQS delivers them again), the last is sent again delayed instead of going to the
    DLQ, carrying the first send's time; once Strava is back the copy is mirrored."""
    pair = deployment.pair
    activity_id = pair.strava.add_activity(
        pair.athlete_id, start_utc=datetime.now(UTC) - timedelta(hours=2), elapsed_s=1500
    )
    _post_create(activity_id, pair.athlete_id)
    pair.strava.fail_next("activity", 503, times=MAX_RECEIVES)
    first = _receive(deployment)
    sent_at = first[0]["attributes"]["SentTimestamp"]
    reported = [_settle(deployment, first)]
    reported += [_deliver(deployment) for _ in range(MAX_RECEIVES - 1)]

    assert [len(r) for r in reported] == [1] * (MAX_RECEIVES - 1) + [0]
    assert pair.strava.requests["activity"] == MAX_RECEIVES
    assert _queue_counts(deployment) == (0, 0, 1)  # the delayed copy, nothing else
    assert deployment.queued_bodies(deployment.dlq_url) == []

    copies = _receive(deployment, wait_s=10)  # Strava is back by now

    assert copies[0]["messageAttributes"][FIRST_SENT_ATTRIBUTE]["stringValue"] == sent_at
    assert _settle(deployment, copies) == []
    assert pair.strava.requests["activity"] == MAX_RECEIVES + 1
    assert deployment.store.get_workout(USER, activity_id) is not None
    assert deployment.queued_bodies(deployment.dlq_url) == []
