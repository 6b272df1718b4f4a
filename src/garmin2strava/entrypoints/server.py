"""The container's webhook server and mirror worker, built from the App.

`garmin2strava run` starts both beside the scheduler; `garmin2strava serve` starts
them alone. uvicorn runs in a thread and stops when the shared stop event is set."""

from __future__ import annotations

import logging
import threading
from datetime import timedelta
from typing import TYPE_CHECKING

from garmin2strava.bootstrap import App
from garmin2strava.services.mirror import (
    SUBSCRIPTION_STATE_KEY,
    MirrorStats,
    SubscriptionSource,
    WebhookReceiver,
    run_worker,
    subscription_from_state,
)
from garmin2strava.services.observability import check_health, collect_metrics

if TYPE_CHECKING:
    from starlette.applications import Starlette

    from garmin2strava.adapters.queue_sqlite import SqliteEventQueue

__all__ = ["MirrorRuntime"]

log = logging.getLogger(__name__)

_BUDGET_FIELDS = {
    "15min": "short_usage",
    "daily": "daily_usage",
    "read_15min": "read_short_usage",
    "read_daily": "read_daily_usage",
}


def build_receiver(app: App, queue: SqliteEventQueue, stats: MirrorStats) -> WebhookReceiver:
    """The receiver on the secret path, checking events against STRAVA_SUBSCRIPTION_ID
    or else the id `webhook subscribe` stored (read now, then in the background)."""
    settings = app.settings
    verify = settings.strava_verify_token
    subscriptions = SubscriptionSource(
        fixed=settings.strava_subscription_id,
        read=lambda: subscription_from_state(app.store.get_app_state(SUBSCRIPTION_STATE_KEY)),
    )
    subscriptions.load()
    if subscriptions.source is None:
        log.warning("webhook.subscription_unknown", extra={"hint": "webhook subscribe"})
    return WebhookReceiver(
        queue,
        verify_token=verify.get_secret_value() if verify else None,
        path_secret=settings.webhook_path_secret,
        subscriptions=subscriptions,
        stats=stats,
        clock=app.clock,
    )


class MirrorRuntime:
    """The queue, the counters, the ASGI app and the two thread bodies."""

    # What the two threads import on first use: preloaded before the heap is frozen.
    MODULES = (
        "uvicorn",
        "garmin2strava.entrypoints.http_app",
        "garmin2strava.adapters.strava",
    )

    def __init__(self, app: App) -> None:
        from garmin2strava.adapters.queue_sqlite import SqliteEventQueue  # noqa: PLC0415

        if app.settings.store != "sqlite":
            # In AWS the webhook and the worker are Lambda functions over SQS.
            raise ValueError("the container's webhook queue lives in the SQLite store")
        self.app = app
        self.stats = MirrorStats()
        self.queue = SqliteEventQueue(
            app.settings.db_path,
            dead_retention=timedelta(days=app.settings.dead_letter_retention_days),
        )
        self.receiver = build_receiver(app, self.queue, self.stats)

    def asgi_app(self) -> Starlette:
        from garmin2strava.entrypoints.http_app import create_app  # noqa: PLC0415

        interval = self.app.settings.sync_interval_seconds
        return create_app(
            self.receiver,
            health=lambda: check_health(
                self.app.store,
                self.stats,
                now=self.app.clock(),
                max_cycle_age=timedelta(seconds=max(3 * interval, 300)),
            ),
            metrics=lambda: collect_metrics(
                self.queue,
                self.stats,
                now=self.app.clock(),
                store=self.app.store,
                budget_used=self._budget_used,
            ),
        )

    def _budget_used(self) -> dict[str, int]:
        state = self.app.store.get_app_state("strava_budget") or {}
        return {window: int(state.get(field) or 0) for window, field in _BUDGET_FIELDS.items()}

    def serve_http(self, stop: threading.Event) -> None:
        import uvicorn  # noqa: PLC0415 (only the container serves HTTP)

        settings = self.app.settings
        config = uvicorn.Config(
            self.asgi_app(),
            host=settings.http_host,
            port=settings.http_port,
            log_config=None,  # our JSON logging stays in charge
            access_log=False,
            lifespan="on",  # the app warms its request path before listening
        )
        # Off the main thread uvicorn leaves signals alone: they are the daemon's.
        server = uvicorn.Server(config)

        def stop_server() -> None:
            stop.wait()
            server.should_exit = True

        threading.Thread(target=stop_server, name="http-stop", daemon=True).start()
        log.info("http.start", extra={"host": settings.http_host, "port": settings.http_port})
        server.run()
        if not stop.is_set():
            # uvicorn exits by itself only when it cannot serve (port taken, ...).
            log.error("http.stopped_unexpectedly", extra={"port": settings.http_port})
            stop.set()

    def work(self, stop: threading.Event) -> None:
        run_worker(
            self.queue,
            self.app.store,
            self.app.strava_for,
            stop=stop,
            clock=self.app.clock,
            stats=self.stats,
        )
