"""Does Strava already have this Garmin activity? (DESIGN.md "Uploader", step 4.)

The local mirror answers where it covers the activity's start; elsewhere one narrow
Strava activity-list query serves a group of nearby candidates."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from garmin2strava.domain.activities import EARLIEST_START, LATEST_START, oldest_first
from garmin2strava.domain.matching import find_match, workout_as_strava_activity
from garmin2strava.domain.models import (
    Account,
    GarminActivity,
    LedgerEntry,
    StravaActivity,
    UploadOutcome,
)
from garmin2strava.ports import Store, StravaPort

__all__ = ["StravaMatcher"]

# A Strava activity list query covers a group of candidates whose start times lie
# within this span; wider gaps get a query of their own.
_QUERY_SPAN = timedelta(days=3)
_QUERY_PAGE = 200
# Starts are within EARLIEST_START..LATEST_START (domain.activities), so a shift by at
# most this much stays within datetime's range.
_MAX_TOLERANCE_S = 366 * 24 * 3600
_NEEDS_EXISTENCE_CHECK = frozenset({UploadOutcome.PENDING, UploadOutcome.FAILED})


@dataclass(slots=True, kw_only=True)
class StravaMatcher:
    """Finds one account's Garmin activities on Strava, remembering what each Strava
    query answered for the cycle's candidates. `strava` builds the client when first
    needed."""

    store: Store
    strava: Callable[[], StravaPort]
    account: Account
    tolerance_s: int
    _strava_seen: dict[int, list[StravaActivity]] = field(default_factory=dict, init=False)

    def prefetch(self, todo: Sequence[GarminActivity], ledger: dict[int, LedgerEntry]) -> None:
        """One activity-list query per group of nearby candidates that the mirror
        does not cover (at most one per candidate, usually one for the whole batch)."""
        need = [
            a
            for a in todo
            if not a.manual
            and not self._mirror_covers(a)
            and _needs_existence_check(ledger.get(a.activity_id))
        ]
        for group in _groups_by_span(need, _QUERY_SPAN):
            after, before = _window(group[0].start_utc, group[-1].start_utc, self.tolerance_s + 1)
            found = list(self._list_strava(after, before))
            for activity in group:
                self._strava_seen[activity.activity_id] = found

    def existing_on_strava(self, activity: GarminActivity) -> tuple[int, str] | None:
        """The Strava activity id that is `activity`, and how it matched; None if none."""
        if self._mirror_covers(activity):
            start, end = _window(activity.start_utc, activity.start_utc, self.tolerance_s)
            rows = self.store.workouts_starting_between(self.account.user_id, start, end)
            pool = [workout_as_strava_activity(w) for w in rows if not w.is_deleted]
            how_prefix = "mirror"
        else:
            if activity.activity_id not in self._strava_seen:
                after, before = _window(
                    activity.start_utc, activity.start_utc, self.tolerance_s + 1
                )
                self._strava_seen[activity.activity_id] = list(self._list_strava(after, before))
            pool = self._strava_seen[activity.activity_id]
            how_prefix = "strava"
        match = find_match(activity, pool, tolerance_s=self.tolerance_s)
        if match is None:
            return None
        return match.strava_activity_id, f"{how_prefix}:{match.how}"

    def _list_strava(self, after: datetime, before: datetime) -> Iterable[StravaActivity]:
        page = 1
        while True:
            batch = self.strava().list_activities(
                after=after, before=before, page=page, per_page=_QUERY_PAGE
            )
            yield from batch
            if len(batch) < _QUERY_PAGE:
                return
            page += 1

    def _mirror_covers(self, activity: GarminActivity) -> bool:
        since = self.account.mirror_covers_since
        return since is not None and activity.start_utc >= since


def _window(first: datetime, last: datetime, tolerance_s: float) -> tuple[datetime, datetime]:
    """[first - tolerance, last + tolerance], within the plausible starts: no query
    window or tolerance can overflow a datetime, whatever the setting says."""
    tolerance = timedelta(seconds=min(max(tolerance_s, 0), _MAX_TOLERANCE_S))
    return max(first - tolerance, EARLIEST_START), min(last + tolerance, LATEST_START)


def _groups_by_span(
    activities: Sequence[GarminActivity], span: timedelta
) -> list[list[GarminActivity]]:
    groups: list[list[GarminActivity]] = []
    for activity in oldest_first(activities):
        if groups and activity.start_utc - groups[-1][0].start_utc <= span:
            groups[-1].append(activity)
        else:
            groups.append([activity])
    return groups


def _needs_existence_check(entry: LedgerEntry | None) -> bool:
    return entry is None or entry.outcome in _NEEDS_EXISTENCE_CHECK
