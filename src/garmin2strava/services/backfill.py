"""Walk older Garmin history into Strava, paced by the Strava budget.

Resumable by construction: every activity's outcome is in the ledger, so a rerun
skips what is settled. Progress is kept in app state for `status`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime

from garmin2strava.domain.models import GarminActivity
from garmin2strava.domain.upload_rules import oldest_first, parse_activity
from garmin2strava.errors import InvalidActivity
from garmin2strava.ports import GarminPort
from garmin2strava.services.sync import CycleReport, SyncDeps, sync_account

__all__ = ["BackfillProgress", "backfill_account", "garmin_history"]

log = logging.getLogger(__name__)

_PAGE = 100
_CHUNK = 10  # activities handed to one cycle (the lease is renewed per activity)


@dataclass(slots=True)
class BackfillProgress:
    total: int = 0
    done: int = 0
    reports: list[CycleReport] = field(default_factory=list)
    waiting_until: datetime | None = None


def garmin_history(
    garmin: GarminPort, *, since: datetime, until: datetime
) -> Iterator[GarminActivity]:
    """Activities that started in [since, until), walking pages newest first."""
    start = 0
    while True:
        page = garmin.list_activities(start=start, limit=_PAGE)
        if not page:
            return
        for record in page:
            try:
                activity = parse_activity(record)
            except InvalidActivity:
                continue
            if activity.start_utc < since:
                return
            if activity.start_utc < until:
                yield activity
        if len(page) < _PAGE:
            return
        start += _PAGE


def backfill_account(
    deps: SyncDeps,
    user_id: str,
    *,
    since: datetime,
    until: datetime,
    on_progress: Callable[[BackfillProgress], None] = lambda _p: None,
) -> BackfillProgress:
    """Upload every wanted activity of the period, oldest first. When the Strava
    budget is spent it waits for the window to reset (this is a foreground command;
    the daemon never waits), then goes on."""
    wanted = [
        a
        for a in garmin_history(deps.garmin(), since=since, until=until)
        if deps.config.wants_type(a.type_key)
    ]
    todo = oldest_first(wanted)
    progress = BackfillProgress(total=len(todo))
    on_progress(progress)
    position = 0
    while position < len(todo) and not deps.stop.is_set():
        chunk = todo[position : position + _CHUNK]
        report = sync_account(deps, user_id, activities=chunk)
        progress.reports.append(report)
        if report.deferred_until is not None:
            progress.waiting_until = report.deferred_until
            on_progress(progress)
            pause = (report.deferred_until - deps.clock()).total_seconds()
            log.info("backfill.waiting", extra={"userId": user_id, "seconds": round(pause)})
            deps.stop.wait(max(1.0, pause))
            progress.waiting_until = None
            continue  # the same chunk again: settled entries are skipped
        if not report.ok or report.skipped_reason:
            break
        position += len(chunk)
        progress.done = position
        on_progress(progress)
    return progress
