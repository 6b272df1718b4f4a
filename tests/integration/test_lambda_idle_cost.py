"""An idle invocation of the Lambda sync on moto: a contract test of its AWS requests
(issue 20: at most 2 DynamoDB and 0 KMS for one account, warm), of a store from before
the accounts index and ledger mark (it falls back once, then is as cheap), and that the
idle fast path never hides work: a new Garmin run, or a retry asked from outside the
cycle, is uploaded by the next invocation."""

from __future__ import annotations

import io
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, redirect_stdout
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest

from g2s_harness.aws_lambda import USER, Deployment, FakeContext
from g2s_sandbox.scenario import seed_run
from garmin2strava.adapters.store import codec
from garmin2strava.domain.models import UploadOutcome
from garmin2strava.entrypoints.aws_lambda import sync_handler

pytestmark = pytest.mark.integration

OpenDeployment = Callable[..., AbstractContextManager[Deployment]]  # conftest's
AWS_REQUESTS: Counter[str] = Counter()


@pytest.fixture
def counted() -> Iterator[None]:
    """The requests of every boto3 client made from now on (the handler's runtime is
    built at its first invocation), counted by service through botocore's event hooks,
    as bench/uploader.py counts them."""

    def count(model: Any, **_: Any) -> None:
        AWS_REQUESTS[model.service_model.service_name] += 1

    events = boto3.DEFAULT_SESSION.events if boto3.DEFAULT_SESSION else None
    if events is None:
        boto3.setup_default_session()
        assert boto3.DEFAULT_SESSION is not None
        events = boto3.DEFAULT_SESSION.events
    events.register("before-call", count, unique_id="g2s-idle-cost")
    yield
    events.unregister("before-call", unique_id="g2s-idle-cost")


@pytest.fixture
def deployment(lambda_deployment: OpenDeployment, counted: None) -> Iterator[Deployment]:
    with lambda_deployment() as deployed:
        seed_run(deployed.pair, 52_000_001, start_utc=datetime.now(UTC) - timedelta(hours=5))
        yield deployed


def _invoke() -> tuple[dict[str, Any], Counter[str]]:
    AWS_REQUESTS.clear()
    with redirect_stdout(io.StringIO()):  # the EMF lines
        summary = sync_handler.handler({}, FakeContext())
    return summary, Counter(AWS_REQUESTS)


def test_a_warm_idle_invocation_makes_two_dynamodb_requests_and_no_kms(
    deployment: Deployment,
) -> None:
    first, _ = _invoke()
    assert first["outcomes"] == {"uploaded": 1}
    _invoke()  # finds nothing, keeps the ledger's idle mark
    for _ in range(3):
        summary, requests = _invoke()
        assert summary["outcomes"] == {}
        assert summary["failed"] == 0
        assert requests["dynamodb"] <= 2
        assert requests["kms"] == 0
    # Nothing recorded for the idle ones: the uploading cycle is the newest event.
    (cycle,) = [e for e in deployment.store.list_audit(USER) if e.kind == "sync.cycle"]
    assert cycle.detail["outcomes"] == {"uploaded": 1}


def test_a_store_from_before_the_index_and_mark_falls_back_once(
    deployment: Deployment,
) -> None:
    _invoke()
    _invoke()
    table = deployment.store._table_name  # type: ignore[attr-defined]  # its table, as terraform names it
    dynamodb = boto3.client("dynamodb")
    for pk, sk in ((codec.ACCOUNTS_PK, codec.ACCOUNTS_INDEX_SK), (f"USER#{USER}", "LEDGER#MARK")):
        dynamodb.delete_item(TableName=table, Key={"PK": {"S": pk}, "SK": {"S": sk}})
    sync_handler.runtime.cache_clear()  # a new container after the upgrade
    summary, requests = _invoke()
    assert summary["outcomes"] == {}
    assert summary["failed"] == 0
    assert requests["dynamodb"] > 2  # the registry's Query, the ledger's reads, the mark
    _invoke()
    summary, requests = _invoke()
    assert summary["outcomes"] == {}
    assert requests["dynamodb"] <= 2


def test_the_fast_path_never_hides_a_new_run_or_a_retry(deployment: Deployment) -> None:
    _invoke()
    _invoke()
    seed_run(deployment.pair, 52_000_002, start_utc=datetime.now(UTC) - timedelta(hours=1))
    summary, _ = _invoke()
    assert summary["outcomes"] == {"uploaded": 1}
    _invoke()
    # A ledger write from outside the cycle (`uploads retry`, the mirror worker)
    # erases the idle finding: the next invocation reads the ledger and acts on it.
    entry = deployment.store.get_uploads(USER, [52_000_002])[52_000_002]
    deployment.store.put_upload(
        replace(entry, outcome=UploadOutcome.FAILED, next_retry_at=datetime.now(UTC))
    )
    summary, _ = _invoke()
    assert summary["outcomes"] != {}  # settled again (found on Strava by our external_id)
    assert deployment.store.get_uploads(USER, [52_000_002])[52_000_002].outcome.settled
