"""Finishing an upload on Strava: plan what one `PUT /activities/{id}` sets (the
Garmin gear's Strava gear, feed muting), send it once the activity exists, and carry
a Garmin rename while Strava still shows the name we set.

Crash safety is the uploader's: what is owed is written to the ledger entry before the
PUT (`StravaFinish.owed`), and the entry stays in the uploader's index (GSI1) until
Strava answered, so whoever finds it owed (the next cycle) sends it again; the PUT is
idempotent. Nothing here runs on an idle cycle: the plan belongs to an upload, a send
to an entry the cycle already read with something owed, a carry to a listed run whose
Garmin name differs from the one we set (docs/architecture.md, "Gear, feed muting and
Garmin renames").
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Protocol

from garmin2strava.domain.feed_rules import HideRule, hiding_rule
from garmin2strava.domain.gear import (
    StravaGear,
    choose_gear,
    garmin_gear_from_json,
    strava_gear_from_plain,
    strava_gear_to_plain,
)
from garmin2strava.domain.models import (
    AuditEvent,
    GarminActivity,
    LedgerEntry,
    UploadOutcome,
    Workout,
)
from garmin2strava.domain.strava_finish import ActivityUpdate, RenameStep, StravaFinish, rename_step
from garmin2strava.errors import (
    GarminNotFound,
    GarminRefused,
    RateLimited,
    StravaAppInactive,
    StravaAuthError,
    StravaNotFound,
)
from garmin2strava.ports import AppState, AuditLog, GarminPort, StravaActivityUpdates

__all__ = [
    "GEAR_CACHE_TTL",
    "FinishConfig",
    "FinishStore",
    "LedgerWrite",
    "carry_rename",
    "finish_event",
    "gear_cache_key",
    "has_work",
    "plan_finish",
    "send_owed",
]

log = logging.getLogger(__name__)

# The athlete's Strava gear is read at most once a day per account (GET /athlete).
GEAR_CACHE_TTL = timedelta(days=1)


def gear_cache_key(user_id: str) -> str:
    """The application-state item that caches one account's Strava gear."""
    return f"strava_gear#{user_id}"


class LedgerWrite(Protocol):
    """Where a finish is recorded: the upload's ledger entry."""

    def put_upload(self, entry: LedgerEntry) -> None: ...


class FinishStore(LedgerWrite, AppState, Protocol):
    """The ledger entry that records the finish, the gear cache, and the mirror's row
    that tells Strava's current name."""

    def get_workout(self, user_id: str, activity_id: int) -> Workout | None: ...


@dataclass(frozen=True, slots=True)
class FinishConfig:
    gear_map: Mapping[str, str] = field(default_factory=dict)
    hide_rules: tuple[HideRule, ...] = ()
    carry_names: bool = True
    max_attempts: int = 5


def _strava_gear(
    store: AppState, strava: Callable[[], StravaActivityUpdates], user_id: str, now: datetime
) -> list[StravaGear]:
    """The athlete's gear from the store, read from Strava when older than a day."""
    cached = store.get_app_state(gear_cache_key(user_id)) or {}
    read_at = cached.get("readAt")
    if isinstance(read_at, str) and now - datetime.fromisoformat(read_at) < GEAR_CACHE_TTL:
        return strava_gear_from_plain(cached.get("gear"))
    gear = strava().athlete_gear()
    store.put_app_state(
        gear_cache_key(user_id), {"readAt": now.isoformat(), "gear": strava_gear_to_plain(gear)}
    )
    return gear


def plan_finish(
    garmin: GarminPort,
    strava: Callable[[], StravaActivityUpdates],
    store: AppState,
    config: FinishConfig,
    activity: GarminActivity,
    *,
    user_id: str,
    uploaded_name: str,
    now: datetime,
) -> StravaFinish:
    """What the PUT after this upload will set: one Garmin request (the activity's
    gear), and the athlete's Strava gear only when the map does not decide (cached a
    day). Garmin's TransientError and Strava's errors propagate (nothing is uploaded
    yet); gear Garmin will not tell (404 or another refusal) is no gear."""
    try:
        garmin_gear = garmin_gear_from_json(garmin.activity_gear(activity.activity_id))
    except (GarminNotFound, GarminRefused) as exc:
        log.warning(
            "gear.garmin_refused",
            extra={"userId": user_id, "activityId": activity.activity_id, "error": str(exc)},
        )
        garmin_gear = []
    choice = choose_gear(garmin_gear, config.gear_map, None, family=activity.family)
    if choice.needs_strava_gear:
        known = _strava_gear(store, strava, user_id, now)
        choice = choose_gear(garmin_gear, config.gear_map, known, family=activity.family)
    hidden_by = hiding_rule(config.hide_rules, activity)
    update = ActivityUpdate(gear_id=choice.gear_id, hide_from_home=True if hidden_by else None)
    planned = StravaFinish(
        gear_name=choice.name if choice.gear_id else "",
        gear_unmapped=choice.unmapped,
        hidden_by=hidden_by,
        name_set=uploaded_name,
    )
    return planned.owing(update)


def send_owed(
    store: LedgerWrite,
    strava: StravaActivityUpdates,
    entry: LedgerEntry,
    *,
    now: datetime,
    max_attempts: int,
    checkpoint: Callable[[str], None] | None = None,
    audit: AuditLog | None = None,
    retention_days: int = 7,
) -> LedgerEntry:
    """One PUT of what `entry` owes (written already), then the entry as applied or
    failed (retried later, given up after `max_attempts`). A spent budget, an inactive
    application and a refused token propagate with the entry left as it was: still
    owed, sent by a later cycle."""
    finish, strava_id = entry.finish, entry.strava_activity_id
    if finish is None or finish.owed is None or strava_id is None:
        return entry
    if checkpoint is not None:
        checkpoint("finish")
    try:
        strava.update_activity(strava_id, finish.owed)
    except (RateLimited, StravaAppInactive, StravaAuthError):
        raise
    except StravaNotFound:
        done = replace(finish, owed=None, error="the activity is gone from Strava")
    except Exception as exc:  # noqa: BLE001 (any failure of one PUT is recorded and retried)
        message = f"{type(exc).__name__}: {exc}"[:300]
        done = finish.failed(message, now=now, max_attempts=max_attempts)
        log.warning(
            "upload.finish_failed",
            extra={
                "userId": entry.user_id,
                "activityId": entry.garmin_activity_id,
                "error": message,
            },
        )
    else:
        done = finish.applied()
        if checkpoint is not None:
            checkpoint("finish_record")
    finished = replace(entry, finish=done)
    store.put_upload(finished)
    if audit is not None:  # what history shows of it, whichever process sent it
        audit.add_audit(finish_event(finished, now), retention_days=retention_days)
    log.info(
        "upload.finished",
        extra={
            "userId": entry.user_id,
            "activityId": entry.garmin_activity_id,
            "stravaActivityId": strava_id,
            "gearId": done.gear_id,
            "hidden": done.hidden,
            "owed": done.owed is not None,
        },
    )
    return finished


def has_work(
    ledger: Mapping[int, LedgerEntry],
    listed: Sequence[GarminActivity],
    *,
    now: datetime,
    carry_names: bool,
    mirror_live: Callable[[], bool],
) -> bool:
    """Whether a cycle that read `ledger` (listed and unsettled entries) has a PUT to
    send now or, with a live mirror, a Garmin rename of a listed upload to look at."""
    for entry in ledger.values():
        finish = entry.finish
        if entry.outcome is UploadOutcome.UPLOADED and finish is not None and finish.due(now):
            return True
    if not carry_names:
        return False
    renamed = False
    for activity in listed:
        upload = ledger.get(activity.activity_id)
        if upload is None or upload.outcome is not UploadOutcome.UPLOADED:
            continue
        kept = upload.finish or StravaFinish(name_set=upload.activity_name or "Run")
        renamed = renamed or rename_step(activity.name, kept, kept.name_set).action != "none"
    return renamed and mirror_live()


def finish_event(entry: LedgerEntry, now: datetime, kind: str = "upload.finished") -> AuditEvent:
    """The audit event of an upload's finish: what history and its JSON show."""
    finish = entry.finish or StravaFinish()
    return AuditEvent(
        user_id=entry.user_id,
        at=now,
        kind=kind,
        event_id=uuid.uuid4().hex,
        detail={
            "garminActivityId": entry.garmin_activity_id,
            "stravaActivityId": entry.strava_activity_id,
            "finish": finish.summary(),
        },
    )


def carry_rename(
    store: FinishStore, entry: LedgerEntry, garmin_name: str, *, mirror_live: Callable[[], bool]
) -> tuple[RenameStep, LedgerEntry]:
    """The carry of one listed upload's Garmin name: what it does, and the entry with
    the rename owed (written: a later cycle sends it after a crash) or Strava's edit
    kept. Reads the mirror's row only when the names differ; writes only on a change.
    Without a live mirror nothing is read or written: the step is `skip`."""
    if entry.outcome is not UploadOutcome.UPLOADED or entry.strava_activity_id is None:
        return RenameStep("none"), entry
    # An upload from before this feature: the name it was uploaded with.
    finish = entry.finish or StravaFinish(name_set=entry.activity_name or "Run")
    if rename_step(garmin_name, finish, finish.name_set).action == "none":
        return RenameStep("none"), entry
    if not mirror_live():
        return RenameStep("skip", garmin_name), entry
    workout = store.get_workout(entry.user_id, entry.strava_activity_id)
    strava_name = None if workout is None or workout.is_deleted else workout.name
    step = rename_step(garmin_name, finish, strava_name)
    match step.action:
        case "carry":
            changed = replace(entry, finish=finish.owing(ActivityUpdate(name=step.name)))
        case "keep":
            changed = replace(entry, finish=replace(finish, strava_name_kept=True))
        case _:
            return step, entry
    store.put_upload(changed)
    return step, changed
