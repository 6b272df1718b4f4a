"""What follows each sync cycle (`run`, `sync`, the Lambda sync) and each Lambda
maintenance invocation: observe the conditions (services/conditions.py), tell what
started or cleared (services/notify.py), then ping the heartbeat (healthchecks.io:
the URL when the cycle succeeded, the URL with /fail exactly when `sync --once` would
exit 1). Never on the webhook's request path.

Nothing here fails the cycle or holds it long: each step's error is logged and the
next step still runs; Apprise's sends and the ping have their own timeouts, and
`tell` makes at most one attempt per notice.
"""

from __future__ import annotations

import logging
import tempfile
import threading
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from garmin2strava.services.conditions import LedgerGate, Sight, observe, sync_sight
from garmin2strava.services.notify import KnownAppState, tell
from garmin2strava.services.write_trouble import Disk

if TYPE_CHECKING:
    from garmin2strava.bootstrap import App
    from garmin2strava.ports import NotifyChannel, StoreView
    from garmin2strava.services.sync import CycleReport
    from garmin2strava.settings import Settings

__all__ = [
    "after_cycle",
    "channel_for",
    "cycle_ok",
    "default_sight",
    "written_disks",
]

log = logging.getLogger(__name__)


def default_sight(app: App, *, ledger_gate: LedgerGate | None = None) -> Sight:
    """What a sync cycle looks at where no mirror runs beside it (`sync`, `run
    --no-http`, the admin-only `run` on DynamoDB, the Lambda sync)."""
    return sync_sight(
        athlete_capacity=app.settings.strava_athlete_capacity,
        subscription_id_setting=app.settings.strava_subscription_id,
        ledger_gate=ledger_gate,
        disks=written_disks(app.settings),
    )


def written_disks(settings: Settings) -> tuple[Disk, ...]:
    """The directories a sync cycle writes, whose free space is looked at after it
    (store.unwritable): the SQLite store's, and the temporary directory a run's file is
    extracted into. On DynamoDB only the latter: on Lambda that is /tmp, the
    container's own (kept across its warm invocations), where a full disk loses runs
    as anywhere; the look is a statvfs, no AWS request, so the idle invocation's single
    read stays single."""
    temp = Disk("the temporary directory", Path(tempfile.gettempdir()))
    if settings.store != "sqlite":
        return (temp,)
    return (Disk("the store", settings.db_path.absolute().parent), temp)


def cycle_ok(reports: Sequence[CycleReport]) -> bool:
    """What `sync --once` exits with: 0 (True) unless an account's cycle failed."""
    return all(report.ok for report in reports)


_CHANNELS: dict[tuple[str, ...], NotifyChannel] = {}
_CHANNELS_LOCK = threading.Lock()


def channel_for(settings: Settings) -> NotifyChannel | None:
    """Apprise over G2S_NOTIFY_URLS; None when none is set (conditions are still kept
    for `status`, nothing is sent). One per process and set of URLs. Cheap: Apprise is
    imported only to send."""
    urls = settings.notify_url_list
    if not urls:
        return None
    from garmin2strava.adapters.apprise_channel import AppriseChannel

    with _CHANNELS_LOCK:
        return _CHANNELS.setdefault(urls, AppriseChannel(urls))


def after_cycle(app: App, sight: Sight, *, ok: bool | None, view: StoreView | None = None) -> None:
    """Observe, tell, then ping (`ok` None: no heartbeat, as after maintenance).
    `view`: what the invocation read at its start, when its cycles changed nothing
    (the Lambda sync): observing and the idle check of telling read nothing more."""
    _tell(app, sight, view)
    heartbeat = app.settings.heartbeat_url
    if ok is None or heartbeat is None:
        return
    from garmin2strava.adapters.heartbeat import ping

    ping(heartbeat.get_secret_value(), ok=ok)


def _tell(app: App, sight: Sight, view: StoreView | None) -> None:

    now = app.clock()
    try:
        observed, checked = observe(app.store, sight, now=now, view=view)
        report = tell(
            app.store,
            channel_for(app.settings),
            observed,
            checked,
            now=now,
            owner=uuid.uuid4().hex[:12],
            retention_days=app.settings.audit_retention_days,
            known=None if view is None else KnownAppState(app.store, view.app_state),
        )
    except Exception:  # the store unreadable, say: the cycle went as it went
        log.exception("notify.failed")
        return
    if report.sent or report.owed:
        log.info("notify.told", extra={"sent": len(report.sent), "owed": len(report.owed)})
