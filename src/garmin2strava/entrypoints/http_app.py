"""The HTTP apps (ASGI, starlette). Two of them, on two listeners:

- `create_app`, the public one: Strava's webhook at `/webhooks/strava/{secret}` only
  (a wrong secret gets the very 404 any unknown path gets) and a bare /healthz.
- `create_admin_app`, the operators' one (loopback by default): the detailed /healthz,
  /metrics and the `routes` passed in.

Thin: parse, call the service, answer. Its import stays small (no stravalib,
garminconnect, boto3 or fitparse) because a cold start is part of Strava's 2-second
budget, and a slow store makes 503s, never a queue of waiting requests.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import BaseRoute, Route
from starlette.types import Receive, Scope, Send

from garmin2strava.domain.webhook import WEBHOOK_PATH_PREFIX
from garmin2strava.errors import TransientError
from garmin2strava.services.mirror_intake import WebhookReceiver
from garmin2strava.services.observability import HealthReport, Sample

__all__ = [
    "HEALTH_TIMEOUT_S",
    "MAX_EVENTS_IN_FLIGHT",
    "MAX_EVENT_BYTES",
    "create_admin_app",
    "create_app",
    "render_prometheus",
]

log = logging.getLogger(__name__)

# Strava's events are ~250 bytes; anything near this limit is not from Strava.
MAX_EVENT_BYTES = 4096
# Events being written at once; more get 503 at once, so a locked store cannot queue
# requests behind the thread pool (40 threads).
MAX_EVENTS_IN_FLIGHT = 24
# Under the Docker HEALTHCHECK's 5 s timeout, with room for the request itself.
HEALTH_TIMEOUT_S = 3.0
_HEALTH_FRESH_S = 1.0
_PROMETHEUS = "text/plain; version=0.0.4; charset=utf-8"
_BUSY = {"error": "busy, deliver again later"}


class _TooLarge(Exception):
    pass


def create_app(
    receiver: WebhookReceiver,
    *,
    health: Callable[[], HealthReport],
    max_body: int = MAX_EVENT_BYTES,
    health_timeout_s: float = HEALTH_TIMEOUT_S,
) -> Starlette:
    """The public app. The receiver decides which webhook path secret is ours. `health`
    is asked for ok/not ok only: its reasons stay on the admin app."""
    probe = _HealthProbe(health, timeout_s=health_timeout_s)

    async def healthz(_: Request) -> Response:
        report = await probe.report()
        return JSONResponse({"ok": report.ok}, status_code=200 if report.ok else 503)

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
        ],
    )


class _WebhookEndpoint:
    """Strava's handshake (GET) and events (POST) on the secret path."""

    def __init__(self, receiver: WebhookReceiver, max_body: int) -> None:
        self._receiver = receiver
        self._max_body = max_body
        self._in_flight = 0  # events being written; lives on one event loop

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        response = await self._answer(request)
        await response(scope, receive, send)

    async def _answer(self, request: Request) -> Response:
        if not self._receiver.accepts_path(request.path_params["secret"]):
            raise HTTPException(404)  # starlette's answer to any path it does not know
        if request.method == "GET":
            answer = self._receiver.handshake(dict(request.query_params))
            return JSONResponse(dict(answer.body), status_code=answer.status)
        if request.method != "POST":
            raise HTTPException(405, headers={"Allow": "GET, POST"})
        try:
            body = await _read_capped(request, self._max_body)
        except _TooLarge:
            return JSONResponse({"error": "body too large"}, status_code=413)
        if self._in_flight >= MAX_EVENTS_IN_FLIGHT:
            log.warning("webhook.shed", extra={"inFlight": self._in_flight})
            return JSONResponse(_BUSY, status_code=503)
        self._in_flight += 1
        try:
            # SQLite commits (fsync) block; keep them off the event loop.
            answer = await run_in_threadpool(self._receiver.receive, body)
        except TransientError as exc:
            log.warning("webhook.busy", extra={"error": str(exc)})
            return JSONResponse(_BUSY, status_code=503)
        finally:
            self._in_flight -= 1
        return JSONResponse(dict(answer.body), status_code=answer.status)


def create_admin_app(
    *,
    health: Callable[[], HealthReport],
    metrics: Callable[[], Iterable[Sample]],
    routes: Sequence[BaseRoute] = (),
    health_timeout_s: float = HEALTH_TIMEOUT_S,
) -> Starlette:
    """The operators' app: the detailed /healthz, /metrics, and `routes`."""
    probe = _HealthProbe(health, timeout_s=health_timeout_s)

    async def healthz(_: Request) -> Response:
        report = await probe.report()
        body: dict[str, Any] = {"ok": report.ok, "reasons": report.reasons, **report.detail}
        return JSONResponse(body, status_code=200 if report.ok else 503)

    async def metrics_text(_: Request) -> Response:
        samples = await run_in_threadpool(lambda: list(metrics()))
        return PlainTextResponse(render_prometheus(samples), media_type=_PROMETHEUS)

    return Starlette(
        routes=[
            Route("/healthz", healthz, methods=["GET"]),
            Route("/metrics", metrics_text, methods=["GET"]),
            *routes,
        ],
    )


class _HealthProbe:
    """One health check at a time, its answer reused for `fresh_s`, and a 503 report
    when it has not answered within `timeout_s` (a store locked by another process
    must not hang the Docker HEALTHCHECK). Lives on one event loop."""

    def __init__(
        self,
        check: Callable[[], HealthReport],
        *,
        timeout_s: float = HEALTH_TIMEOUT_S,
        fresh_s: float = _HEALTH_FRESH_S,
    ) -> None:
        self._check = check
        self._timeout_s = timeout_s
        self._fresh_s = fresh_s
        self._running: asyncio.Task[HealthReport] | None = None
        self._last: tuple[float, HealthReport] | None = None

    async def report(self) -> HealthReport:
        if self._last is not None and time.monotonic() - self._last[0] < self._fresh_s:
            return self._last[1]
        if self._running is None:
            self._running = asyncio.create_task(self._check_in_thread())
        try:
            return await asyncio.wait_for(asyncio.shield(self._running), self._timeout_s)
        except TimeoutError:
            log.warning("health.timeout", extra={"timeoutSeconds": self._timeout_s})
            reason = f"health check did not answer within {self._timeout_s:g} s (store busy?)"
            return HealthReport(ok=False, reasons=[reason])

    async def _check_in_thread(self) -> HealthReport:
        try:
            report = await run_in_threadpool(self._check)
        except Exception as exc:  # noqa: BLE001 (a failing check is an unhealthy answer)
            log.warning("health.failed", extra={"error": type(exc).__name__})
            report = HealthReport(ok=False, reasons=[f"health check failed: {type(exc).__name__}"])
        finally:
            self._running = None
        self._last = (time.monotonic(), report)
        return report


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
