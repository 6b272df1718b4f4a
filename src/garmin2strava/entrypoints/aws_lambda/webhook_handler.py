"""Lambda: Strava's webhook behind API Gateway (HTTP API, payload format 2.0).

The same path secret, handshake and validation as the container's HTTP app
(services.mirror_intake's WebhookReceiver); accepted events go to SQS. The routes are
`GET` and `POST /webhooks/strava/{secret}`; a wrong secret gets exactly what API
Gateway answers for a path it has no route for (404, `{"message":"Not Found"}`).
Strava allows 2 seconds, cold start included, so this module imports only the
receiver and the domain; botocore and the settings are loaded by the first
invocation (`_runtime.build_webhook_runtime`), and stravalib, garminconnect, fitparse
and boto3's s3transfer never are.
`bench/lambda_cold_import.py` keeps the import under 1 s.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from functools import cache
from typing import Any

from garmin2strava.entrypoints.aws_lambda import _runtime
from garmin2strava.entrypoints.aws_lambda.emf import counter_deltas, emit_metrics
from garmin2strava.services.mirror_intake import WebhookAnswer, WebhookReceiver

__all__ = ["MAX_EVENT_BYTES", "answer_request", "handler", "runtime"]

# Strava's events are ~250 bytes; anything near this limit is not from Strava.
MAX_EVENT_BYTES = 4096
# API Gateway's (HTTP API) own answer to a request that matches no route.
NOT_FOUND = WebhookAnswer(404, {"message": "Not Found"})


@cache
def runtime() -> _runtime.WebhookRuntime:
    """Built by the first invocation of this container, reused by the warm ones."""
    return _runtime.build_webhook_runtime()


def handler(
    event: Mapping[str, Any],
    context: object,  # noqa: ARG001 (Lambda's signature; nothing here needs the deadline)
) -> dict[str, Any]:
    built = runtime()
    before = built.stats.snapshot()
    answer = answer_request(built.receiver, event)
    emit_metrics(counter_deltas(before, built.stats.snapshot()), dimensions={"function": "webhook"})
    return {
        "statusCode": answer.status,
        "headers": {"content-type": "application/json"},
        "body": json.dumps(dict(answer.body), separators=(",", ":")),
    }


def answer_request(receiver: WebhookReceiver, event: Mapping[str, Any]) -> WebhookAnswer:
    """GET is the subscription handshake, POST an event; anything else is refused.
    Nothing happens, and nothing is logged, before the path secret is checked."""
    params_in_path = event.get("pathParameters") or {}
    if not receiver.accepts_path(str(params_in_path.get("secret", ""))):
        return NOT_FOUND
    method = str(event.get("requestContext", {}).get("http", {}).get("method", "")).upper()
    if method == "GET":
        params = event.get("queryStringParameters") or {}
        return receiver.handshake({str(k): str(v) for k, v in params.items()})
    if method == "POST":
        body = _body(event)
        if body is None:
            return WebhookAnswer(400, {"error": "body is not valid base64"})
        if len(body) > MAX_EVENT_BYTES:
            return WebhookAnswer(413, {"error": "body too large"})
        return receiver.receive(body)
    return WebhookAnswer(405, {"error": "method not allowed"})


def _body(event: Mapping[str, Any]) -> bytes | None:
    raw = event.get("body") or ""
    if not event.get("isBase64Encoded"):
        return str(raw).encode("utf-8")
    try:
        return base64.b64decode(str(raw), validate=True)
    except (binascii.Error, ValueError):
        return None
