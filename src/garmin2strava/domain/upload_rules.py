"""A Garmin activity's rules in the uploader, in the order a cycle meets them.

A list record becomes a GarminActivity (`parse_activity`); candidates are chosen
(`choose_candidates`); the query windows (`group_by_span`, `query_window`) and the
match (`find_match`) say whether it is on Strava already; the ledger's transitions
(`intent`, `settled`, `failed`) and Strava's upload answers (`read_upload_status`)
follow. Garmin's records changed shape over the years (`elapsedDuration` in
milliseconds in older ones, seconds in newer), so every value is checked against the
others and plausible bounds, and an odd record is refused with its reason
(InvalidActivity).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

from garmin2strava.domain.activity_types import (
    is_indoor,
    normalize_type_key,
    sport_family,
    strava_sport_family,
)
from garmin2strava.domain.models import (
    Account,
    GarminActivity,
    LedgerEntry,
    StravaActivity,
    UploadOutcome,
    UploadStatus,
    Workout,
)
from garmin2strava.domain.text import clean_description, clean_name
from garmin2strava.errors import InvalidActivity

__all__ = [
    "EARLIEST_START",
    "LATEST_START",
    "MAX_ELAPSED_S",
    "QUERY_PAGE",
    "QUERY_SPAN",
    "Match",
    "UploadState",
    "UploadVerdict",
    "activity_from_entry",
    "choose_candidates",
    "elapsed_seconds",
    "external_id_for",
    "failed",
    "find_match",
    "garmin_id_of",
    "group_by_span",
    "intent",
    "is_due",
    "is_indoor",
    "is_our_external_id",
    "is_plausible_start",
    "is_settled",
    "ledger_entry",
    "listing_record_id",
    "mirror_covers",
    "needs_existence_check",
    "normalize_type_key",
    "oldest_first",
    "parse_activity",
    "query_window",
    "read_upload_status",
    "rejected_record",
    "retry_delay",
    "settle_known",
    "settled",
    "settled_by_webhook",
    "sport_family",
    "strava_sport_family",
    "upload_description",
    "workout_as_strava_activity",
]

EXTERNAL_ID_PREFIX = "garmin2strava_"

# Starts outside these bounds are no recording of a real watch: refused, so that no
# later date arithmetic (query windows, tolerances, retry times) can overflow.
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
EARLIEST_START = _EPOCH
LATEST_START = datetime(2100, 1, 1, tzinfo=UTC)
# startTimeGMT and beginTimestamp name the same instant; a record where they are
# further apart than any time zone offset is corrupt.
_START_AGREEMENT = timedelta(days=1)
# Longer than a week is no single activity (and most likely a unit mix-up).
MAX_ELAPSED_S = 7 * 24 * 3600.0
# A value this many times the reference is taken as milliseconds: the geometric middle
# between "seconds" (ratio about 1) and "milliseconds" (ratio about 1000).
_MS_RATIO = math.sqrt(1000.0)


def parse_activity(record: Mapping[str, Any]) -> GarminActivity:
    """Check one activity-list record; InvalidActivity names the missing or bad field."""
    activity_id = record.get("activityId")
    if isinstance(activity_id, bool) or not isinstance(activity_id, int) or activity_id <= 0:
        raise InvalidActivity("activity record has no valid activityId")
    type_info = record.get("activityType")
    type_info = type_info if isinstance(type_info, Mapping) else {}
    type_key = type_info.get("typeKey")
    if not isinstance(type_key, str) or not type_key.strip():
        raise InvalidActivity(f"activity {activity_id}: missing activityType.typeKey")
    type_id = _int_or_none(type_info.get("typeId"))
    parent_type_id = _int_or_none(type_info.get("parentTypeId"))
    start = _start_utc(record, activity_id)
    distance = record.get("distance")
    if isinstance(distance, bool) or not isinstance(distance, int | float | None):
        raise InvalidActivity(f"activity {activity_id}: bad distance")
    if distance is not None and (not math.isfinite(distance) or distance < 0):
        raise InvalidActivity(f"activity {activity_id}: bad distance")
    return GarminActivity(
        activity_id=activity_id,
        name=clean_name(record.get("activityName")),
        type_key=normalize_type_key(type_key),
        start_utc=start,
        elapsed_seconds=elapsed_seconds(record, start, activity_id),
        distance_m=float(distance) if distance is not None else None,
        manual=record.get("manualActivity") is True,
        family=sport_family(type_key, type_id=type_id, parent_type_id=parent_type_id),
        indoor=is_indoor(type_key, parent_type_id=parent_type_id),
        description=clean_description(record.get("description")),
    )


def is_plausible_start(moment: datetime) -> bool:
    return EARLIEST_START <= moment < LATEST_START


def _int_or_none(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _number(value: object) -> float | None:
    """A finite, non-negative JSON number, else None."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if math.isfinite(number) and number >= 0 else None


def _garmin_time(value: object) -> datetime | None:
    """`2026-01-08 14:10:21` (list) or `2026-01-08T14:10:21.0` (detail), UTC; None if
    it is not one."""
    if not isinstance(value, str) or not value.strip():
        return None
    text = value.strip()
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _epoch_ms(value: object) -> datetime | None:
    number = _int_or_none(value)
    if number is None:
        return None
    try:
        return _EPOCH + timedelta(milliseconds=number)
    except OverflowError:
        return None


def _start_utc(record: Mapping[str, Any], activity_id: int) -> datetime:
    """startTimeGMT, else beginTimestamp (a multisport parent may have it null)."""
    gmt = _garmin_time(record.get("startTimeGMT"))
    raw_begin = record.get("beginTimestamp")
    begin = _epoch_ms(raw_begin)
    if raw_begin is not None and begin is None:
        raise InvalidActivity(f"activity {activity_id}: bad beginTimestamp {str(raw_begin)[:40]}")
    if gmt is not None and begin is not None and abs(gmt - begin) > _START_AGREEMENT:
        msg = f"activity {activity_id}: beginTimestamp {raw_begin} disagrees with startTimeGMT"
        raise InvalidActivity(msg)
    start = gmt or begin
    if start is None:
        raise InvalidActivity(f"activity {activity_id}: missing or bad startTimeGMT")
    if not is_plausible_start(start):
        msg = (
            f"activity {activity_id}: start {start.isoformat()} is outside "
            f"{EARLIEST_START.year}-{LATEST_START.year - 1}"
        )
        raise InvalidActivity(msg)
    return start


def _span_s(record: Mapping[str, Any], start: datetime) -> float | None:
    """Seconds from the start to the end the record gives, if it gives a sane one."""
    end = _garmin_time(record.get("endTimeGMT"))
    if end is None:
        begin_ms = _int_or_none(record.get("beginTimestamp"))
        end_ms = _int_or_none(record.get("endTimestamp"))
        if begin_ms is not None and end_ms is not None:
            span = (end_ms - begin_ms) / 1000
            return span if 0 < span <= MAX_ELAPSED_S else None
        return None
    span = (end - start).total_seconds()
    return span if 0 < span <= MAX_ELAPSED_S else None


def elapsed_seconds(record: Mapping[str, Any], start: datetime, activity_id: int) -> float:
    """The elapsed time in seconds, whichever unit `elapsedDuration` came in.

    Its reference is the span from start to end where the record gives one, else the
    longer of `duration` and `movingDuration` (timer and moving time, never longer
    than the elapsed time). A value about a thousand times its reference is
    milliseconds; with no reference at all it is taken as seconds, within bounds.
    """
    elapsed = _number(record.get("elapsedDuration"))
    timers = [
        t
        for t in (_number(record.get("duration")), _number(record.get("movingDuration")))
        if t is not None and t > 0
    ]
    reference = _span_s(record, start) or (max(timers) if timers else None)
    if elapsed is None:
        value = reference
    elif reference is not None and elapsed / reference >= _MS_RATIO:
        value = elapsed / 1000
    else:
        value = elapsed
    if value is None:
        raise InvalidActivity(f"activity {activity_id}: missing or bad elapsedDuration")
    if value > MAX_ELAPSED_S:
        msg = f"activity {activity_id}: elapsed time {value:.0f} s is over {MAX_ELAPSED_S:.0f} s"
        raise InvalidActivity(msg)
    return value


def external_id_for(garmin_activity_id: int) -> str:
    return f"{EXTERNAL_ID_PREFIX}{garmin_activity_id}"


def is_our_external_id(value: str | None, garmin_activity_id: int) -> bool:
    """Strava may append the file extension to the external_id we sent."""
    if not value:
        return False
    ours = external_id_for(garmin_activity_id)
    return value == ours or value.startswith(ours + ".")


_OUR_EXTERNAL_ID = re.compile(
    re.escape(EXTERNAL_ID_PREFIX) + r"([1-9][0-9]{0,18})(?:\.[A-Za-z0-9.]{1,10})?"
)


def garmin_id_of(external_id: str | None) -> int | None:
    """The Garmin activity id in an external_id we sent (`garmin2strava_{id}`, perhaps
    with the file extension Strava appends); None for anyone else's."""
    found = _OUR_EXTERNAL_ID.fullmatch(external_id or "")
    return int(found.group(1)) if found else None


def settled_by_webhook(
    entry: LedgerEntry, strava_activity_id: int, *, now: datetime
) -> LedgerEntry | None:
    """The ledger entry once the webhook's `create` showed our upload as an activity;
    None when there is nothing to settle (already settled, or never uploaded)."""
    if entry.outcome not in (UploadOutcome.PENDING, UploadOutcome.PROCESSING, UploadOutcome.FAILED):
        return None
    return replace(
        entry,
        outcome=UploadOutcome.UPLOADED,
        strava_activity_id=strava_activity_id,
        detail="settled by the webhook's create event",
        next_retry_at=None,
        updated_at=now,
    )


def oldest_first(activities: Iterable[GarminActivity]) -> list[GarminActivity]:
    return sorted(activities, key=lambda a: (a.start_utc, a.activity_id))


def listing_record_id(record: object) -> int | None:
    """The usable activity id of a listing record that is no activity, if it has one."""
    garmin_id = record.get("activityId") if isinstance(record, Mapping) else None
    if isinstance(garmin_id, int) and not isinstance(garmin_id, bool) and garmin_id > 0:
        return garmin_id
    return None


# -- 2. candidates ---------------------------------------------------------------------


def is_settled(entry: LedgerEntry | None) -> bool:
    return entry is not None and entry.outcome.settled


def is_due(entry: LedgerEntry, now: datetime) -> bool:
    """A failed entry waits for its retry time; every other unsettled one is due."""
    if entry.outcome is UploadOutcome.FAILED and entry.next_retry_at:
        return entry.next_retry_at <= now
    return True


def choose_candidates(
    listed: Sequence[GarminActivity],
    ledger: Mapping[int, LedgerEntry],
    unsettled: Iterable[LedgerEntry],
    *,
    wants_type: Callable[[str], bool],
    now: datetime,
) -> list[GarminActivity]:
    """Unsettled and due activities of the wanted types, plus the due `unsettled` ledger
    entries that have scrolled out of the listing. Oldest first."""
    chosen: dict[int, GarminActivity] = {}
    for activity in listed:
        entry = ledger.get(activity.activity_id)
        if is_settled(entry) or not wants_type(activity.type_key):
            continue
        if entry is None or is_due(entry, now):
            chosen[activity.activity_id] = activity
    listed_ids = {a.activity_id for a in listed}
    for entry in unsettled:
        if entry.garmin_activity_id in chosen or not is_due(entry, now):
            continue
        if entry.start_utc is None or entry.garmin_activity_id in listed_ids:
            continue
        if not is_plausible_start(entry.start_utc):
            continue  # an entry from before starts were checked; never a real run
        chosen[entry.garmin_activity_id] = activity_from_entry(entry)
    return oldest_first(chosen.values())


def activity_from_entry(entry: LedgerEntry) -> GarminActivity:
    """The activity an unsettled ledger entry stands for, once out of the listing."""
    if entry.start_utc is None:
        msg = f"ledger entry {entry.garmin_activity_id} has no start"
        raise ValueError(msg)
    return GarminActivity(
        activity_id=entry.garmin_activity_id,
        name=entry.activity_name,
        type_key=entry.type_key,
        start_utc=entry.start_utc,
        elapsed_seconds=0.0,
        distance_m=None,
        manual=False,
        family=sport_family(entry.type_key),
        indoor=is_indoor(entry.type_key),
    )


# -- 3. already on Strava? ---------------------------------------------------------------

# A Strava activity list query covers a group of candidates whose start times lie
# within this span; wider gaps get a query of their own.
QUERY_SPAN = timedelta(days=3)
QUERY_PAGE = 200
# Starts are within EARLIEST_START..LATEST_START, so a shift by at most this much stays
# within datetime's range.
_MAX_TOLERANCE_S = 366 * 24 * 3600
_NEEDS_EXISTENCE_CHECK = frozenset({UploadOutcome.PENDING, UploadOutcome.FAILED})
GARMIN_SYNC_PREFIXES = ("garmin_ping_", "garmin_push_")


def mirror_covers(account: Account, activity: GarminActivity) -> bool:
    """The local mirror answers for starts since it has covered the account."""
    since = account.mirror_covers_since
    return since is not None and activity.start_utc >= since


def needs_existence_check(entry: LedgerEntry | None) -> bool:
    """New, an interrupted intent or a failure: Strava may have it already."""
    return entry is None or entry.outcome in _NEEDS_EXISTENCE_CHECK


def query_window(first: datetime, last: datetime, tolerance_s: float) -> tuple[datetime, datetime]:
    """[first - tolerance, last + tolerance], within the plausible starts: no query
    window or tolerance can overflow a datetime, whatever the setting says."""
    tolerance = timedelta(seconds=min(max(tolerance_s, 0), _MAX_TOLERANCE_S))
    return max(first - tolerance, EARLIEST_START), min(last + tolerance, LATEST_START)


def group_by_span(
    activities: Iterable[GarminActivity], span: timedelta = QUERY_SPAN
) -> list[list[GarminActivity]]:
    """Oldest first, in groups whose starts lie within `span` of the group's first."""
    groups: list[list[GarminActivity]] = []
    for activity in oldest_first(activities):
        if groups and activity.start_utc - groups[-1][0].start_utc <= span:
            groups[-1].append(activity)
        else:
            groups.append([activity])
    return groups


@dataclass(frozen=True, slots=True)
class Match:
    strava_activity_id: int
    how: str  # "external_id" | "garmin_sync" | "start_time"


def find_match(
    activity: GarminActivity,
    candidates: Iterable[StravaActivity],
    *,
    tolerance_s: int,
) -> Match | None:
    """The Strava activity that is this Garmin activity, if any.

    Our own external_id wins; then a copy made by Garmin's own Strava sync
    (`garmin_ping_*`/`garmin_push_*`, whose number is not the Garmin id, so it is
    matched by start time); then any activity with the same start (within the
    tolerance), the same elapsed time (within max(60 s, 5 %)) and the same sport.
    """
    pool = list(candidates)
    for strava in pool:
        if is_our_external_id(strava.external_id, activity.activity_id):
            return Match(strava.activity_id, "external_id")
    near = [s for s in pool if _start_gap(activity, s) <= tolerance_s]
    near.sort(key=lambda s: _start_gap(activity, s))
    for strava in near:
        if (strava.external_id or "").startswith(GARMIN_SYNC_PREFIXES):
            return Match(strava.activity_id, "garmin_sync")
    for strava in near:
        if _elapsed_agrees(activity, strava) and _sport_agrees(activity, strava):
            return Match(strava.activity_id, "start_time")
    return None


def _start_gap(activity: GarminActivity, strava: StravaActivity) -> float:
    return abs((strava.start_utc - activity.start_utc).total_seconds())


def _elapsed_agrees(activity: GarminActivity, strava: StravaActivity) -> bool:
    allowed = max(60.0, 0.05 * activity.elapsed_seconds)
    return abs(strava.elapsed_seconds - activity.elapsed_seconds) <= allowed


def _sport_agrees(activity: GarminActivity, strava: StravaActivity) -> bool:
    return activity.family == strava_sport_family(strava.sport_type)


def workout_as_strava_activity(workout: Workout) -> StravaActivity:
    """Mirror rows take part in matching like listed activities."""
    return StravaActivity(
        activity_id=workout.activity_id,
        athlete_id=workout.athlete_id,
        name=workout.name,
        sport_type=workout.sport_type,
        start_utc=workout.start_utc,
        elapsed_seconds=workout.elapsed_time,
        moving_seconds=workout.moving_time,
        distance_m=workout.distance,
        total_elevation_gain=workout.total_elevation_gain,
        external_id=workout.external_id,
        upload_id=workout.upload_id,
        private=workout.is_private,
        manual=False,
    )


def settle_known(entry: LedgerEntry | None, how: str) -> tuple[UploadOutcome, str]:
    """The outcome of an activity found on Strava: `exists`, or `uploaded` when it is our
    own upload, made by a cycle that died before recording it."""
    if (
        entry is not None
        and entry.outcome is UploadOutcome.PENDING
        and how.endswith(":external_id")
    ):
        return (
            UploadOutcome.UPLOADED,
            "reconciled: found our external_id after an interrupted cycle",
        )
    return UploadOutcome.EXISTS, how


# -- 4. the ledger's transitions ----------------------------------------------------------


def ledger_entry(
    user_id: str,
    activity: GarminActivity,
    entry: LedgerEntry | None,
    outcome: UploadOutcome,
    detail: str,
    *,
    now: datetime,
) -> LedgerEntry:
    """`entry` (or a new one for `activity`) with this outcome, detail and time."""
    base = entry or LedgerEntry(
        user_id=user_id,
        garmin_activity_id=activity.activity_id,
        external_id=external_id_for(activity.activity_id),
        outcome=outcome,
        updated_at=now,
    )
    return replace(
        base,
        outcome=outcome,
        detail=detail,
        updated_at=now,
        activity_name=activity.name,
        type_key=activity.type_key,
        start_utc=activity.start_utc,
    )


def rejected_record(user_id: str, garmin_id: int, reason: str, *, now: datetime) -> LedgerEntry:
    """A listing record that is no activity, skipped for good."""
    return LedgerEntry(
        user_id=user_id,
        garmin_activity_id=garmin_id,
        external_id=external_id_for(garmin_id),
        outcome=UploadOutcome.SKIPPED,
        updated_at=now,
        detail=f"invalid activity record: {reason}",
    )


def intent(
    user_id: str, activity: GarminActivity, entry: LedgerEntry | None, *, now: datetime
) -> LedgerEntry:
    """Written before the upload request, counting one more attempt: a crash after the
    request is reconciled by the next cycle, which finds our external_id on Strava."""
    pending = ledger_entry(
        user_id, activity, entry, UploadOutcome.PENDING, "upload requested", now=now
    )
    return replace(pending, attempts=(entry.attempts if entry else 0) + 1, next_retry_at=None)


def settled(
    user_id: str,
    activity: GarminActivity,
    entry: LedgerEntry | None,
    outcome: UploadOutcome,
    detail: str,
    *,
    now: datetime,
    strava_id: int | None = None,
) -> LedgerEntry:
    return replace(
        ledger_entry(user_id, activity, entry, outcome, detail, now=now),
        strava_activity_id=strava_id,
        next_retry_at=None,
    )


def failed(
    user_id: str,
    activity: GarminActivity,
    entry: LedgerEntry,
    message: str,
    *,
    now: datetime,
    max_attempts: int,
    may_give_up: bool = True,
) -> LedgerEntry:
    """`failed` with its retry time after `entry.attempts` attempts (at least one), or
    `dead` once that was the last one. What is not the run's fault (`may_give_up`
    False: an outage, this machine's disk) is never given up."""
    attempts = max(entry.attempts, 1)
    if may_give_up and attempts >= max_attempts:
        return replace(
            ledger_entry(user_id, activity, entry, UploadOutcome.DEAD, message, now=now),
            attempts=attempts,
            next_retry_at=None,
        )
    return replace(
        ledger_entry(user_id, activity, entry, UploadOutcome.FAILED, message, now=now),
        attempts=attempts,
        next_retry_at=now + retry_delay(attempts),
        upload_id=None,
    )


def retry_delay(attempts: int, *, base_s: int = 120, cap_s: int = 6 * 3600) -> timedelta:
    """Exponential backoff after `attempts` failed attempts: 2, 4, 8 ... min, capped."""
    exponent = max(0, attempts - 1)
    return timedelta(seconds=min(cap_s, base_s * (2**exponent)))


# -- 5. Strava's upload answers --------------------------------------------------------

# "123.fit duplicate of activity 8319193780" or the HTML variant
# "... duplicate of <a href='/activities/18106372042' ...>".
_DUPLICATE = re.compile(
    r"duplicate of\s+(?:activity\s+(\d+)|.*?/activities/(\d+))", re.IGNORECASE | re.DOTALL
)
_DELETED = "has been deleted"


class UploadState(StrEnum):
    PROCESSING = "processing"
    READY = "ready"
    DUPLICATE = "duplicate"
    ERROR = "error"
    DELETED = "deleted"


@dataclass(frozen=True, slots=True)
class UploadVerdict:
    state: UploadState
    activity_id: int | None
    message: str


def read_upload_status(status: UploadStatus) -> UploadVerdict:
    if status.error:
        found = _DUPLICATE.search(status.error)
        if found:
            return UploadVerdict(
                UploadState.DUPLICATE, int(found.group(1) or found.group(2)), status.error
            )
        return UploadVerdict(UploadState.ERROR, None, status.error)
    if status.activity_id:
        return UploadVerdict(UploadState.READY, status.activity_id, status.status)
    if _DELETED in status.status.lower():
        return UploadVerdict(UploadState.DELETED, None, status.status)
    if "error" in status.status.lower():
        return UploadVerdict(UploadState.ERROR, None, status.status)
    return UploadVerdict(UploadState.PROCESSING, None, status.status)


def upload_description(garmin: str, configured: str | None) -> str | None:
    """The activity's own Garmin description first, then G2S_UPLOAD_DESCRIPTION,
    a blank line between them; None when there is neither."""
    parts = [part.strip() for part in (garmin, configured or "") if part and part.strip()]
    return "\n\n".join(parts) or None
