"""The container's webhook server and mirror worker, built from the App.

`garmin2strava run` starts both beside the scheduler; `garmin2strava serve` starts
them alone; `run` on the DynamoDB store starts the admin side alone (AdminRuntime:
the webhook and the worker are Lambda functions over SQS there). Two listeners:
the public one (G2S_HTTP_HOST:G2S_HTTP_PORT) serves only the webhook and a bare
/healthz; the admin one (G2S_ADMIN_HOST:G2S_ADMIN_PORT,
loopback by default) the detailed /healthz and /metrics. Both are bound when the
runtime is built, before any thread starts (a port that is taken is a ConfigError
then); uvicorn serves them on one event loop in the `serve_http` thread until the
shared stop event is set (entrypoints/listeners.py has the connection limits)."""

from __future__ import annotations

import logging
import threading
from datetime import timedelta
from typing import TYPE_CHECKING

from garmin2strava.bootstrap import App
from garmin2strava.services.mirror_athletes import KnownAthletes
from garmin2strava.services.mirror_intake import WebhookReceiver
from garmin2strava.services.mirror_subscription import (
    SUBSCRIPTION_STATE_KEY,
    SubscriptionSource,
    subscription_from_state,
)
from garmin2strava.services.mirror_worker import work_until_stopped
from garmin2strava.services.observability import (
    HealthReport,
    MirrorStats,
    Sample,
    check_health,
    collect_metrics,
)

if TYPE_CHECKING:
    from collections.abc import Callable

    from starlette.applications import Starlette

    from garmin2strava.adapters.queue_sqlite import SqliteEventQueue
    from garmin2strava.entrypoints.listeners import Listener

__all__ = ["ENQUEUE_TIMEOUT_MS", "AdminRuntime", "MirrorRuntime"]

log = logging.getLogger(__name__)

# A webhook request waits this long for the store at most, then answers 503.
ENQUEUE_TIMEOUT_MS = 1000
# Connections the admin listener may hold; the public one has the rest of the budget.
_ADMIN_CONNECTIONS = 32

_BUDGET_FIELDS = {
    "15min": "short_usage",
    "daily": "daily_usage",
    "read_15min": "read_short_usage",
    "read_daily": "read_daily_usage",
}


def build_receiver(app: App, queue: SqliteEventQueue, stats: MirrorStats) -> WebhookReceiver:
    """The receiver on the secret path, checking events against STRAVA_SUBSCRIPTION_ID
    or else the id `webhook subscribe` stored (read now, then in the background and on
    a miss), and their athletes against the ones linked to an account (read now, then
    on a miss)."""
    settings = app.settings
    verify = settings.strava_verify_token
    subscriptions = SubscriptionSource(
        fixed=settings.strava_subscription_id,
        read=lambda: subscription_from_state(app.store.get_app_state(SUBSCRIPTION_STATE_KEY)),
    )
    subscriptions.load()
    if subscriptions.source is None:
        log.warning("webhook.subscription_unknown", extra={"hint": "webhook subscribe"})
    athletes = KnownAthletes(app.store.known_athletes)
    athletes.load()
    return WebhookReceiver(
        queue,
        verify_token=verify.get_secret_value() if verify else None,
        path_secret=settings.webhook_path_secret,
        subscriptions=subscriptions,
        athletes=athletes,
        stats=stats,
        clock=app.clock,
    )


# The worker runs every second or so; a minute without a pass means it is stuck.
WORKER_FRESH_S = 60.0


class AdminRuntime:
    """The admin listener and its app: the status page, the detailed /healthz and
    /metrics. `serve` and `run` on SQLite build it inside MirrorRuntime (the queue and
    the worker's counters attached); `run` on DynamoDB builds it alone: no webhook
    queue or worker in the process, so /healthz speaks of the sync and the Strava
    application only. Building it binds the listener (ConfigError when it cannot be,
    or when it is not loopback and G2S_ADMIN_TOKEN is unset)."""

    # What the serving thread imports on first use: preloaded before the heap is frozen.
    MODULES = (
        "uvicorn",
        "garmin2strava.entrypoints.http_app",
        "garmin2strava.entrypoints.status_page",
    )

    def __init__(self, app: App, *, request_deadline_s: float | None = None) -> None:
        """`request_deadline_s`: the listener's request deadline; None is
        `listeners.REQUEST_DEADLINE_S` (what `serve` and `run` use)."""
        from garmin2strava.entrypoints import listeners
        from garmin2strava.entrypoints.status_page import check_admin_exposure

        settings = app.settings
        self.app = app
        self.listener: Listener = listeners.bind(
            "admin",
            settings.admin_host,
            settings.admin_port,
            settings="G2S_ADMIN_HOST/G2S_ADMIN_PORT",
            max_connections=_ADMIN_CONNECTIONS,
            request_deadline_s=(
                listeners.REQUEST_DEADLINE_S if request_deadline_s is None else request_deadline_s
            ),
        )
        try:
            # The status page's actions: no admin listener beyond loopback without a token.
            token = settings.admin_token
            check_admin_exposure(settings.admin_host, token.get_secret_value() if token else None)
        except BaseException:
            self.listener.close()
            raise
        # The webhook side, when this process has one (MirrorRuntime attaches it).
        self.queue: SqliteEventQueue | None = None
        self.stats: MirrorStats | None = None
        self.listeners: list[Listener] = [self.listener]

    def attach_mirror(self, queue: SqliteEventQueue, stats: MirrorStats, public: Listener) -> None:
        """The webhook queue, the worker's counters and the public listener: /healthz
        then checks the worker too, and /metrics adds the queue and both listeners."""
        self.queue, self.stats = queue, stats
        self.listeners = [public, self.listener]

    def health(self) -> HealthReport:
        interval = self.app.settings.sync_interval_seconds
        return check_health(
            self.app.store,
            self.stats,
            now=self.app.clock(),
            max_cycle_age=timedelta(seconds=max(3 * interval, 300)),
        )

    def asgi_app(self) -> Starlette:
        """The operators' app: the status page at `/` (entrypoints/status_page.py), the
        detailed /healthz and /metrics."""
        from garmin2strava.entrypoints.http_app import create_admin_app
        from garmin2strava.entrypoints.status_page import (
            status_page_for_app,
            status_page_routes,
        )

        settings = self.app.settings
        token = settings.admin_token.get_secret_value() if settings.admin_token else None
        page = status_page_for_app(
            self.app, self.queue, interval_s=settings.sync_interval_seconds, admin_token=token
        )
        return create_admin_app(
            health=self.health, metrics=self.metrics, routes=status_page_routes(page)
        )

    def metrics(self) -> list[Sample]:
        samples = collect_metrics(
            self.queue,
            self.stats,
            now=self.app.clock(),
            store=self.app.store,
            budget_used=self._budget_used,
        )
        for listener in self.listeners:
            guard = listener.guard
            labels = {"listener": listener.name}
            samples.append(
                Sample(
                    "g2s_http_connections_open",
                    len(guard.open),
                    "Open HTTP connections.",
                    labels=labels,
                )
            )
            samples.append(
                Sample(
                    "g2s_http_connections_limit",
                    guard.max_open,
                    "HTTP connections a listener holds before it drops the idlest.",
                    labels=labels,
                )
            )
            samples.extend(
                Sample(
                    "g2s_http_connections_dropped_total",
                    guard.dropped.get(reason, 0),
                    "HTTP connections closed by the server: idle or slow past the "
                    "request deadline, head too large, evicted or refused at the limit.",
                    "counter",
                    labels | {"reason": reason},
                )
                for reason in ("idle", "timedOut", "headTooLarge", "evicted", "refused")
            )
        return samples

    def _budget_used(self) -> dict[str, int]:
        state = self.app.store.get_app_state("strava_budget") or {}
        return {window: int(state.get(field) or 0) for window, field in _BUDGET_FIELDS.items()}

    def serve_http(self, stop: threading.Event) -> None:
        """Serve the admin listener alone until `stop` (`run` on DynamoDB); raises
        when it ends by itself."""
        self.serve([(self.listener, self.asgi_app())], stop)

    def serve(
        self, served: list[tuple[Listener, Callable[..., object]]], stop: threading.Event
    ) -> None:
        """Serve `served` (the admin listener among them) until `stop`, then close."""
        from garmin2strava.entrypoints.listeners import serve_listeners

        for listener, _ in served:
            log.info(
                "http.start",
                extra={
                    "listener": listener.name,
                    "host": listener.host,
                    "port": listener.bound_port,
                    "maxConnections": listener.guard.max_open,
                },
            )
        try:
            serve_listeners(served, stop)
        finally:
            for listener, _ in served:
                listener.close()


class MirrorRuntime:
    """The queue, the counters, the listeners, the two ASGI apps and the two thread
    bodies. Building it binds both listeners (ConfigError when one cannot be)."""

    # What the two threads import on first use: preloaded before the heap is frozen.
    MODULES = (
        *AdminRuntime.MODULES,
        "garmin2strava.adapters.strava",
        "garmin2strava.services.strava_access",
    )

    def __init__(self, app: App, *, request_deadline_s: float | None = None) -> None:
        """`request_deadline_s`: both listeners' request deadline; None is
        `listeners.REQUEST_DEADLINE_S` (what `serve` and `run` use)."""
        from garmin2strava.adapters.queue_sqlite import SqliteEventQueue
        from garmin2strava.entrypoints import listeners

        settings = app.settings
        if settings.store != "sqlite":
            # In AWS the webhook and the worker are Lambda functions over SQS.
            raise ValueError("the container's webhook queue lives in the SQLite store")
        self.app = app
        self.stats = MirrorStats()
        self.public: Listener = listeners.bind(
            "public",
            settings.http_host,
            settings.http_port,
            settings="G2S_HTTP_HOST/G2S_HTTP_PORT",
            max_connections=listeners.connection_budget(reserve_for_others=_ADMIN_CONNECTIONS),
            request_deadline_s=(
                listeners.REQUEST_DEADLINE_S if request_deadline_s is None else request_deadline_s
            ),
        )
        try:
            self.operators = AdminRuntime(app, request_deadline_s=request_deadline_s)
        except BaseException:
            self.public.close()
            raise
        self.admin: Listener = self.operators.listener
        try:
            self.queue: SqliteEventQueue = SqliteEventQueue(
                settings.db_path,
                enqueue_timeout_ms=ENQUEUE_TIMEOUT_MS,
                dead_retention=timedelta(days=settings.dead_letter_retention_days),
            )
        except BaseException:
            self.close_listeners()
            raise
        self.operators.attach_mirror(self.queue, self.stats, self.public)
        self.receiver = build_receiver(app, self.queue, self.stats)
        # From now on the worker's fetch of each `create` settles our uploads, as long
        # as the webhook is live (see webhook_settles).
        app.webhook_settles = self.webhook_settles
        app.mirror_live = self.webhook_settles  # the same test: events arrive and are kept

    def webhook_settles(self) -> bool:
        """The webhook is live and the mirror healthy: a subscription id is known, the
        receiver has a path, and the worker ran without error within the last
        WORKER_FRESH_S. Otherwise the uploader polls, as without a webhook."""
        if not self.receiver.has_path:
            return False
        subscriptions = self.receiver.subscriptions
        # The sync thread may read the store (once a cycle): a subscription made since
        # the receiver last looked counts at once.
        if subscriptions.current() is None and subscriptions.load() is None:
            return False
        last, error = self.stats.worker_last_run, self.stats.worker_last_error
        if last is None or error is not None:
            return False
        return (self.app.clock() - last).total_seconds() <= WORKER_FRESH_S

    def asgi_app(self) -> Starlette:
        """The public app: the webhook and the bare /healthz."""
        from garmin2strava.entrypoints.http_app import create_app

        return create_app(self.receiver, health=self.operators.health)

    def admin_app(self) -> Starlette:
        """The operators' app (AdminRuntime's, with the queue and the worker)."""
        return self.operators.asgi_app()

    def serve_http(self, stop: threading.Event) -> None:
        """Serve both listeners until `stop`; raises when they end by themselves."""
        self.operators.serve([(self.public, self.asgi_app()), (self.admin, self.admin_app())], stop)

    def close_listeners(self) -> None:
        self.public.close()
        self.admin.close()

    def work(self, stop: threading.Event) -> None:
        work_until_stopped(
            self.queue,
            self.app.store,
            self.app.strava_for,
            stop=stop,
            clock=self.app.clock,
            stats=self.stats,
            stream_types=self.app.settings.mirror_streams,
        )
