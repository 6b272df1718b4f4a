"""`garmin2strava run`: the scheduler, the webhook server and the event worker in one
process. SIGTERM/SIGINT set the shared stop event: the cycle finishes the activity in
hand, the threads wind down, and the process exits 0. A thread that ends by itself
with an error (the HTTP server could not serve, say) stops the daemon too, and the
process exits 1 with one line naming it."""

from __future__ import annotations

import gc
import importlib
import logging
import signal
import threading
from collections.abc import Callable, Sequence
from datetime import timedelta
from functools import partial
from types import FrameType
from typing import Any

from apscheduler.schedulers.background import BackgroundScheduler

from garmin2strava.bootstrap import App
from garmin2strava.entrypoints.mirror_jobs import catch_up_pending_streams, reconcile_due_accounts
from garmin2strava.entrypoints.telling import after_cycle, cycle_ok, default_sight
from garmin2strava.errors import G2SError
from garmin2strava.services.conditions import Sight
from garmin2strava.services.sync_accounts import sync_all

__all__ = [
    "freeze_heap",
    "run_daemon",
    "schedule_mirror_jobs",
    "schedule_sync",
    "schedule_telling",
]

log = logging.getLogger(__name__)


def schedule_sync(app: App, scheduler: BackgroundScheduler, sight: Sight | None = None) -> None:
    """One job per interval; never two at once (max_instances=1, and the store lease
    across processes); missed runs coalesce into one; the first run starts now. After
    each cycle, the conditions are told and the heartbeat pinged (entrypoints/telling.py)."""
    interval = app.settings.sync_interval_seconds
    seen = sight or default_sight(app)

    def job() -> None:
        if not app.stop.is_set():
            reports = sync_all(app.store, app.sync_deps)
            after_cycle(app, seen, ok=cycle_ok(reports))

    scheduler.add_job(
        job,
        "interval",
        seconds=interval,
        id="sync",
        max_instances=1,
        coalesce=True,
        misfire_grace_time=interval,
        next_run_time=app.clock() + timedelta(seconds=0),
    )


def schedule_telling(app: App, scheduler: BackgroundScheduler, sight: Sight) -> None:
    """Without sync cycles (`serve`): the conditions `sight` sees are told every
    G2S_SYNC_INTERVAL_SECONDS, from the worker's side; no heartbeat (no cycle)."""
    scheduler.add_job(
        _guarded(partial(after_cycle, app, sight, ok=None), "telling"),
        "interval",
        seconds=app.settings.sync_interval_seconds,
        id="telling",
        max_instances=1,
        coalesce=True,
        next_run_time=app.clock() + FIRST_MIRROR_JOB,
    )


RECONCILE_CHECK = timedelta(hours=1)  # how often the daemon looks for a due pass
STREAMS_CATCH_UP = timedelta(minutes=5)
FIRST_MIRROR_JOB = timedelta(minutes=10)  # start-up and the first sync cycles go first


def schedule_mirror_jobs(app: App, scheduler: BackgroundScheduler) -> None:
    """The mirror's periodic work: reconciliation (each account every
    G2S_MIRROR_RECONCILE_HOURS, 0 = never, a sweep of the whole history every
    G2S_MIRROR_SWEEP_DAYS; the job looks hourly for a due pass, so a restarted daemon
    keeps the rhythm from the store) and the catch-up of pending
    streams (when G2S_MIRROR_STREAMS names any): entrypoints/mirror_jobs.py, which the
    Lambda maintenance function runs too."""
    settings = app.settings
    first = app.clock() + FIRST_MIRROR_JOB
    # However late the scheduler wakes (a loaded or suspended machine), a missed run is
    # run, once: APScheduler's default grace of 1 s would skip the hour's reconciliation
    # look, and with it the repair of what the webhook missed (found by bench/soak.py).
    common: dict[str, Any] = {"max_instances": 1, "coalesce": True, "misfire_grace_time": None}
    if settings.mirror_reconcile_hours > 0:
        check = min(RECONCILE_CHECK, timedelta(hours=settings.mirror_reconcile_hours))
        scheduler.add_job(
            _guarded(partial(reconcile_due_accounts, app), "reconcile"),
            "interval",
            seconds=check.total_seconds(),
            id="reconcile",
            next_run_time=first,
            **common,
        )
    if settings.mirror_streams:
        scheduler.add_job(
            _guarded(partial(catch_up_pending_streams, app), "streams_catch_up"),
            "interval",
            seconds=STREAMS_CATCH_UP.total_seconds(),
            id="streams",
            next_run_time=first,
            **common,
        )


def _guarded(job: Callable[[], object], name: str) -> Callable[[], None]:
    """A job whose failure is logged and waits for its next run (the store or Strava
    may be down for a while; the daemon goes on)."""

    def run() -> None:
        try:
            job()
        except Exception:
            log.exception("daemon.job_failed", extra={"job": name})

    run.__name__ = name
    return run


def run_daemon(
    app: App,
    *,
    extra_threads: list[Callable[[threading.Event], None]] | None = None,
    install_signals: bool = True,
    sync: bool = True,
    preload: Sequence[str] = (),
    sight: Sight | None = None,
) -> int:
    """Run until `app.stop` is set. `preload` names the modules the threads will
    import lazily; they are imported now and the heap frozen (see `freeze_heap`).
    `sight` is what the conditions are observed with (services/conditions.py)."""
    scheduler = BackgroundScheduler(timezone="UTC")
    if sync:
        schedule_sync(app, scheduler, sight)
    elif sight is not None:
        schedule_telling(app, scheduler, sight)
    schedule_mirror_jobs(app, scheduler)
    if install_signals:
        _stop_on_signals(app.stop)
    failures: list[str] = []
    threads = [
        threading.Thread(
            target=_thread_body(target, app.stop, failures),
            name=target.__name__,
            daemon=True,
        )
        for target in (extra_threads or [])
    ]
    log.info(
        "daemon.start",
        extra={
            "intervalSeconds": app.settings.sync_interval_seconds if sync else None,
            "store": app.settings.store,
        },
    )
    freeze_heap([*(_SYNC_MODULES if sync else ()), *preload])
    scheduler.start()
    for thread in threads:
        thread.start()
    app.stop.wait()
    log.info("daemon.stopping")
    # wait=True: the running cycle sees the stop event after the activity in hand.
    scheduler.shutdown(wait=True)
    for thread in threads:
        thread.join(timeout=30)
    log.info("daemon.stopped")
    if failures:
        raise G2SError(failures[0])
    return 0


def _thread_body(
    target: Callable[[threading.Event], None], stop: threading.Event, failures: list[str]
) -> Callable[[], None]:
    """The thread body: an error (SystemExit included) is recorded and stops all."""

    def body() -> None:
        try:
            target(stop)
        except BaseException as exc:  # noqa: BLE001 (reported, then the daemon stops)
            if not stop.is_set():
                log.error(  # noqa: TRY400 (one line; the message says what failed)
                    "daemon.thread_failed",
                    extra={"component": target.__name__, "error": f"{type(exc).__name__}: {exc}"},
                )
                failures.append(f"{target.__name__} failed: {str(exc) or type(exc).__name__}")
                stop.set()

    return body


# What a sync cycle imports on first use (the builders in bootstrap import lazily).
_SYNC_MODULES = (
    "garmin2strava.adapters.garmin",
    "garmin2strava.adapters.strava",
    "garmin2strava.services.strava_access",
)


def freeze_heap(modules: Sequence[str]) -> None:
    """Import `modules`, then move every object alive into the permanent generation.

    A long-running process keeps its imported libraries (stravalib, garminconnect,
    pydantic, uvicorn...) forever, yet each full collection walked all of them with
    the GIL held, long enough to stall every webhook request in flight (the load
    bench's worst latencies: docs/benchmarks.md, "Webhook load"). Frozen, they are
    never scanned again; garbage made later is collected as before."""
    for name in modules:
        importlib.import_module(name)
    gc.collect()
    gc.freeze()


def _stop_on_signals(stop: threading.Event) -> None:
    def handler(signum: int, _frame: FrameType | None) -> None:
        log.info("daemon.signal", extra={"signal": signal.Signals(signum).name})
        stop.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
