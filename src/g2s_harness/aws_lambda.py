"""The Lambda functions' deployment on a moto server, for invoking their handlers
in-process: what terraform would create (DynamoDB table, KMS key, SSM SecureStrings,
the SQS events queue and its DLQ), the environment the functions see, the Garmin and
Strava sandboxes, and the account as the CLI stores it before the first invocation.
Used by the integration tests (conftest.py's `lambda_deployment`).

This module imports boto3 when it is imported; no other sandbox module imports it."""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import boto3

from g2s_harness.sandbox_settings import sandbox_settings
from g2s_sandbox.scenario import SandboxPair, running_sandboxes
from garmin2strava.adapters.store.dynamodb_table import create_table
from garmin2strava.bootstrap import build_store, utc_now
from garmin2strava.entrypoints.aws_lambda import (
    maintenance_handler,
    sync_handler,
    webhook_handler,
    worker_handler,
)
from garmin2strava.ports import Store
from garmin2strava.services.accounts import ensure_settings_account

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient

__all__ = ["USER", "Deployment", "FakeContext", "clear_runtimes", "deployed"]

USER = "demo"  # SandboxPair.settings' G2S_USER_ID


@dataclass
class FakeContext:
    """The two members of AWS's Lambda context object the handlers use."""

    remaining_ms: int = 120_000
    aws_request_id: str = "c6af9ac6-7b61-11e6-9a41-93e8deadbeef"

    def get_remaining_time_in_millis(self) -> int:
        return self.remaining_ms


@dataclass
class Deployment:
    """What terraform would have created, on moto, plus the sandboxes."""

    pair: SandboxPair
    store: Store
    sqs: SQSClient
    queue_url: str
    dlq_url: str

    def queued_bodies(self, queue_url: str | None = None) -> list[str]:
        answer = self.sqs.receive_message(
            QueueUrl=queue_url or self.queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=0
        )
        return [m["Body"] for m in answer.get("Messages", [])]


def clear_runtimes() -> None:
    """Forget the handlers' cached apps: the next invocations are cold starts."""
    maintenance_handler.runtime.cache_clear()
    sync_handler.runtime.cache_clear()
    sync_handler.ledger_gate.cache_clear()
    webhook_handler.runtime.cache_clear()
    worker_handler.runtime.cache_clear()


@contextmanager
def deployed(
    setenv: Callable[[str, str], None],
    tmp_path: Path,
    *,
    verify_token: str = "sandbox-verify-token",  # noqa: S107 - a fake
    subscription_id: int | None = 1,
    max_receives: int = 3,
    garmin_token_lifetime_s: float | None = None,
    notify_urls: str | None = None,
    heartbeat_url: str | None = None,
    garmin_proxy: str | None = None,
) -> Iterator[Deployment]:
    """A fresh deployment on the moto server the AWS environment points boto3 at, the
    functions' variables set with `setenv`: Strava's webhook subscription and verify
    token, the events queue's redrive after `max_receives` receives, and stored Garmin
    tokens valid for `garmin_token_lifetime_s` (the sandbox's default when None), and
    the optional notify_urls, heartbeat_url and garmin_proxy parameters when given. Every
    handler is cold at the start; the table, the runtimes and the root logger are
    cleaned up after."""
    prefix = f"/g2s-{uuid.uuid4().hex[:8]}"
    table = f"g2s-{uuid.uuid4().hex[:12]}"
    dynamodb = boto3.client("dynamodb")
    create_table(dynamodb, table)
    key_id = boto3.client("kms").create_key()["KeyMetadata"]["Arn"]
    sqs = boto3.client("sqs")
    dlq_url = sqs.create_queue(QueueName=f"{table}-dlq")["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    queue_url = sqs.create_queue(
        QueueName=f"{table}-events",
        Attributes={
            "VisibilityTimeout": "0",  # a returned failure is at once deliverable again
            "RedrivePolicy": json.dumps(
                {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": max_receives}
            ),
        },
    )["QueueUrl"]
    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    with running_sandboxes() as pair:
        ssm = boto3.client("ssm")
        for name, value in (
            ("strava_client_secret", pair.strava.client_secret),
            ("strava_verify_token", verify_token),
            ("notify_urls", notify_urls),
            ("heartbeat_url", heartbeat_url),
            ("garmin_proxy", garmin_proxy),
        ):
            if value is None:  # an optional one the user did not make
                continue
            ssm.put_parameter(
                Name=f"{prefix}/{name}", Type="SecureString", KeyId=key_id, Value=value
            )
        env = {
            "G2S_STORE": "dynamodb",
            "G2S_DYNAMODB_TABLE": table,
            "G2S_KMS_KEY_ID": key_id,
            "G2S_QUEUE_URL": queue_url,
            "G2S_USER_ID": USER,
            "G2S_LOG_FORMAT": "json",
            "G2S_LOG_LEVEL": "WARNING",
            "STRAVA_CLIENT_ID": str(pair.strava.client_id),
            "STRAVA_SUBSCRIPTION_ID": str(subscription_id),
            "G2S_SSM_STRAVA_CLIENT_SECRET": f"{prefix}/strava_client_secret",
            "G2S_SSM_STRAVA_VERIFY_TOKEN": f"{prefix}/strava_verify_token",
            # Named whether made or not, as terraform names them (README "Being told").
            "G2S_SSM_NOTIFY_URLS": f"{prefix}/notify_urls",
            "G2S_SSM_HEARTBEAT_URL": f"{prefix}/heartbeat_url",
            "G2S_SSM_GARMIN_PROXY": f"{prefix}/garmin_proxy",
            "G2S_DEAD_LETTER_QUEUE_URL": dlq_url,
            "G2S_STRAVA_BASE_URL": pair.strava.base_url,
            "G2S_GARMIN_BASE_URL": pair.garmin.base_url,
            # Values in the plain environment are never used as secrets.
            "STRAVA_VERIFY_TOKEN": "not-the-verify-token",
            "STRAVA_CLIENT_SECRET": "not-the-client-secret",
        }
        if subscription_id is None:  # none set: the webhook reads the one in the table
            del env["STRAVA_SUBSCRIPTION_ID"]
        for name, value in env.items():
            setenv(name, value)
        garmin_tokens = (
            pair.garmin_tokens
            if garmin_token_lifetime_s is None
            else pair.garmin.issue_tokens(lifetime_s=garmin_token_lifetime_s)
        )
        # The account as the CLI stores it before the first deployment runs.
        settings = sandbox_settings(
            pair,
            tmp_path / "unused.sqlite3",
            store="dynamodb",
            dynamodb_table=table,
            kms_key_id=key_id,
            token_key=None,
            garmin_tokens=garmin_tokens,
        )
        store = build_store(settings)
        ensure_settings_account(store, settings, utc_now)
        clear_runtimes()
        try:
            yield Deployment(pair, store, sqs, queue_url, dlq_url)
        finally:
            clear_runtimes()
            root.handlers[:], root.level = saved_handlers, saved_level
            dynamodb.delete_table(TableName=table)
