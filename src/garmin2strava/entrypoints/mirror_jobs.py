"""The mirror's two periodic jobs, one definition for both places that run them: the
daemon's scheduler (daemon.py `schedule_mirror_jobs`) and the Lambda maintenance
function (aws_lambda/maintenance_handler.py).

- `reconcile_due_accounts`: a reconciliation pass for every account whose last pass
  is G2S_MIRROR_RECONCILE_HOURS old, a sweep of the whole history when the last sweep
  is G2S_MIRROR_SWEEP_DAYS old (services/reconcile.py);
- `catch_up_pending_streams`: the streams marked pending, for every account
  (services/streams.py), when G2S_MIRROR_STREAMS names any.

Both skip paused accounts, read through the background adapter (the uploader's
reserve is kept), and end before their next Strava request once `app.stop` is set.
"""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING

from garmin2strava.services.reconcile import reconcile_all
from garmin2strava.services.streams import catch_up_all_streams

if TYPE_CHECKING:
    from garmin2strava.bootstrap import App
    from garmin2strava.services.reconcile import ReconcileReport
    from garmin2strava.services.streams import CatchUpResult

__all__ = ["catch_up_pending_streams", "reconcile_due_accounts"]


def reconcile_due_accounts(app: App) -> list[ReconcileReport]:
    """One pass for each account that is due; none when G2S_MIRROR_RECONCILE_HOURS is 0."""
    if app.settings.mirror_reconcile_hours <= 0:
        return []

    return reconcile_all(
        app.store,
        app.strava_background_for,
        now=app.clock(),
        every=timedelta(hours=app.settings.mirror_reconcile_hours),
        sweep_every=timedelta(days=app.settings.mirror_sweep_days),
        stream_types=app.settings.mirror_streams,
        stop=app.stop,
    )


def catch_up_pending_streams(app: App) -> dict[str, CatchUpResult]:
    """The pending streams of every account, by user id; none without G2S_MIRROR_STREAMS."""
    if not app.settings.mirror_streams:
        return {}

    return catch_up_all_streams(
        app.store,
        app.strava_background_for,
        app.settings.mirror_streams,
        now=app.clock(),
        stop=app.stop,
    )
