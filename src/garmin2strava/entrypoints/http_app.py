"""The HTTP app (ASGI, starlette): Strava's webhook, /healthz, /metrics.

The webhook lives at `/webhooks/strava/{secret}` only: a wrong secret gets the very
404 any unknown path gets (the bare `/webhooks/strava` included), for every method.

Thin: parse the request, call the service, answer. Its import stays small (starlette,
sqlite-backed queue, domain), because a cold start is part of Strava's 2-second
budget: no stravalib, garminconnect, boto3 or fitparse on this path.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from garmin2strava.domain.webhook import WEBHOOK_PATH_PREFIX
from garmin2strava.services.mirror import WebhookReceiver
from garmin2strava.services.observability import HealthReport, Sample

__all__ = ["MAX_EVENT_BYTES", "create_app", "render_prometheus"]

# Strava's events are ~250 bytes; anything near this limit is not from Strava.
MAX_EVENT_BYTES = 4096
_PROMETHEUS = "text/plain; version=0.0.4; charset=utf-8"


class _TooLarge(Exception):
    pass


def create_app(
    receiver: WebhookReceiver,
    *,
    health: Callable[[], HealthReport],
    metrics: Callable[[], Iterable[Sample]],
    max_body: int = MAX_EVENT_BYTES,
) -> Starlette:
    """The app. The receiver decides which webhook path secret is ours."""

    async def healthz(_: Request) -> Response:
        report = await run_in_threadpool(health)
        body: dict[str, Any] = {"ok": report.ok, "reasons": report.reasons, **report.detail}
        return JSONResponse(body, status_code=200 if report.ok else 503)

    async def metrics_text(_: Request) -> Response:
        samples = await run_in_threadpool(lambda: list(metrics()))
        return PlainTextResponse(render_prometheus(samples), media_type=_PROMETHEUS)

    @asynccontextmanager
    async def warm_up(_: Starlette) -> AsyncIterator[None]:
        # uvicorn listens only after this: the first POST finds the pool warm.
        await run_in_threadpool(receiver.warm)
        yield

    return Starlette(
        lifespan=warm_up,
        routes=[
            # An ASGI endpoint, so the route takes every method: the secret is checked
            # before the method, and a wrong one is a 404 whatever the method.
            Route(WEBHOOK_PATH_PREFIX + "{secret}", _WebhookEndpoint(receiver, max_body)),
            Route("/healthz", healthz, methods=["GET"]),
            Route("/metrics", metrics_text, methods=["GET"]),
        ],
    )


class _WebhookEndpoint:
    def __init__(self, receiver: WebhookReceiver, max_body: int) -> None:
        self._receiver = receiver
        self._max_body = max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        response = await _webhook(self._receiver, request, self._max_body)
        await response(scope, receive, send)


async def _webhook(receiver: WebhookReceiver, request: Request, max_body: int) -> Response:
    if not receiver.accepts_path(request.path_params["secret"]):
        raise HTTPException(404)  # starlette's answer to any path it does not know
    if request.method == "GET":
        answer = receiver.handshake(dict(request.query_params))
    elif request.method == "POST":
        try:
            body = await _read_capped(request, max_body)
        except _TooLarge:
            return JSONResponse({"error": "body too large"}, status_code=413)
        # SQLite commits (fsync) block; keep them off the event loop.
        answer = await run_in_threadpool(receiver.receive, body)
    else:
        raise HTTPException(405, headers={"Allow": "GET, POST"})
    return JSONResponse(dict(answer.body), status_code=answer.status)


async def _read_capped(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _TooLarge
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:  # a lying or absent Content-Length (chunked) ends here
            raise _TooLarge
        chunks.append(chunk)
    return b"".join(chunks)


def render_prometheus(samples: Iterable[Sample]) -> str:
    """Prometheus text exposition format 0.0.4."""
    lines: list[str] = []
    seen: set[str] = set()
    for sample in samples:
        if sample.name not in seen:
            seen.add(sample.name)
            lines.append(f"# HELP {sample.name} {sample.help}")
            lines.append(f"# TYPE {sample.name} {sample.kind}")
        labels = ",".join(f'{k}="{_escape(v)}"' for k, v in sorted(sample.labels.items()))
        value = float(sample.value)
        text = str(int(value)) if value.is_integer() else repr(value)
        lines.append(f"{sample.name}{{{labels}}} {text}" if labels else f"{sample.name} {text}")
    return "\n".join(lines) + "\n"


def _escape(value: str) -> str:
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")
