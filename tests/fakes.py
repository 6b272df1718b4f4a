"""The fakes the functional tests share: Garmin Connect, Strava, the file check and a
queue that hands over what it is given, each implementing its port (ports.py; mypy
checks them at the bottom) and recording what it was asked. Our own code runs for
real where it can: the tests use the real SQLite store (`sqlite_store`) and queue, not
fakes of them; HandedQueue is only for an event no real queue would read back.

Imported as `fakes` (pyproject.toml puts tests/ on pytest's and mypy's path).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from garmin2strava.adapters.crypto import AesGcmCipher
from garmin2strava.adapters.store.sqlite import SqliteStore
from garmin2strava.domain.gear import StravaGear
from garmin2strava.domain.models import PreparedFile, StravaActivity, UploadStatus
from garmin2strava.domain.strava_finish import ActivityUpdate
from garmin2strava.errors import (
    FileRejected,
    GarminNotFound,
    RateLimited,
    StravaNotFound,
    TransientError,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Sequence

    from garmin2strava.domain.webhook import DeadEvent, QueuedEvent
    from garmin2strava.ports import (
        AccessCheck,
        ActivityFiles,
        EventQueue,
        GarminPort,
        StravaPort,
    )
    from garmin2strava.services.reconcile import ReconcileClient

READY = "Your activity is ready."
PROCESSING = "Your activity is still being processed."
FIRST_UPLOAD_ID = 500
# An accepted upload becomes the activity with this id plus its upload id.
ACTIVITY_ID_OFFSET = 9000


class Clock:
    """A clock the test moves (`clock.now = ...`); the app takes it as its clock."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def sqlite_store(db: Path, *, clock: Callable[[], datetime] | None = None) -> SqliteStore:
    """The real SQLite store in the file `db` (in a test's tmp_path), with a test key;
    `clock` (the wall clock without one) decides which audit events have expired, so a
    test on a simulated time keeps its audit trail."""
    cipher = AesGcmCipher(bytes(range(32)))
    if clock is None:
        return SqliteStore(db, cipher)
    return SqliteStore(db, cipher, clock=clock)


def garmin_record(garmin_id: int, *, start: datetime, **extra: Any) -> dict[str, Any]:
    """One Garmin activity-list record (a 30-minute, 5 km run) as Garmin sends it."""
    record: dict[str, Any] = {
        "activityId": garmin_id,
        "activityName": f"Run {garmin_id}",
        "activityType": {"typeKey": "running", "typeId": 1, "parentTypeId": 17},
        "startTimeGMT": start.strftime("%Y-%m-%d %H:%M:%S"),
        "duration": 1800.0,
        "elapsedDuration": 1800.0,
        "distance": 5000.0,
    }
    record.update(extra)
    return record


def activity_json(
    activity_id: int, *, athlete_id: int, name: str = "Morning Run", **fields: Any
) -> dict[str, Any]:
    """A DetailedActivity as Strava's API answers it (the fields the mirror reads)."""
    return {
        "id": activity_id,
        "athlete": {"id": athlete_id},
        "name": name,
        "sport_type": "Run",
        "start_date": "2025-06-01T06:00:00Z",
        "elapsed_time": 1800,
        "moving_time": 1750,
        "distance": 5000.0,
        "total_elevation_gain": 12.0,
        "external_id": None,
        "upload_id": None,
        "private": False,
    } | fields


@dataclass
class FakeGarmin:
    """Garmin Connect (ports.GarminPort): a listing, newest first, and one ORIGINAL per
    activity; `list_error` and `download_errors` are raised instead of answering."""

    records: list[dict[str, Any]] = field(default_factory=list)
    originals: dict[int, bytes] = field(default_factory=dict)
    list_error: Exception | None = None
    download_errors: dict[int, Exception] = field(default_factory=dict)
    # Garmin's gear records per activity (`activity_gear`; none: an empty list).
    gear: dict[int, list[dict[str, Any]]] = field(default_factory=dict)
    gear_errors: dict[int, Exception] = field(default_factory=dict)
    # What was asked: the number of listings, the downloads and gear reads in order.
    lists: int = 0
    downloads: list[int] = field(default_factory=list)
    gear_reads: list[int] = field(default_factory=list)

    def add_run(self, garmin_id: int, *, start: datetime, **extra: Any) -> bytes:
        """A new run at the top of the listing, with its ORIGINAL; returns the ORIGINAL."""
        self.records.insert(0, garmin_record(garmin_id, start=start, **extra))
        original = f"FIT-{garmin_id}".encode()
        self.originals[garmin_id] = original
        return original

    def list_activities(self, *, start: int, limit: int) -> list[dict[str, Any]]:
        self.lists += 1
        if self.list_error is not None:
            raise self.list_error
        return self.records[start : start + limit]

    def download_original(self, activity_id: int) -> bytes:
        self.downloads.append(activity_id)
        if activity_id in self.download_errors:
            raise self.download_errors[activity_id]
        if activity_id not in self.originals:
            raise GarminNotFound(f"activity {activity_id} has no file")
        return self.originals[activity_id]

    def activity_gear(self, activity_id: int) -> Any:
        self.gear_reads.append(activity_id)
        if activity_id in self.gear_errors:
            raise self.gear_errors[activity_id]
        return self.gear.get(activity_id, [])


@dataclass
class FakeStrava:
    """One Strava athlete's API (ports.StravaPort, and the mirror's ports.AccessCheck)
    as the uploader and the mirror see it.

    Uploads get the ids 500, 501, ... `upload_answers` answers them in turn (an
    UploadStatus, or an exception to raise); without one an upload is accepted and
    still processing, and becomes activity 9000 + its upload id: `get_upload` says it
    is ready (unless `poll_answers` holds answers for that upload id), `get_activity`
    returns it (by `athlete_id`, with our external_id and the `.fit` Strava appends).
    `list_activities` finds only `listed`, never an upload (Strava lists an activity
    once processed; the tests that need it listed put it there).

    Reads: `get_activity` answers from `activities` (raw JSON), `get_activity_streams`
    from `streams`; each raises StravaNotFound for an activity it does not hold.

    Failures: `down` makes every fetch raise TransientError (an outage: 503);
    `fail_with` holds errors the next fetches or access checks raise, one each;
    `stream_errors` what one activity's stream reads raise; `stream_budget_until`
    refuses stream reads with RateLimited before any request (the budget kept for the
    uploader). `access_revoked` (the deauthorization check, a token refresh) answers
    `revoked` and counts itself in `refreshes`.
    """

    athlete_id: int = 42
    listed: list[StravaActivity] = field(default_factory=list)
    upload_answers: list[UploadStatus | Exception] = field(default_factory=list)
    poll_answers: dict[int, list[UploadStatus]] = field(default_factory=dict)
    activities: dict[int, dict[str, Any]] = field(default_factory=dict)
    streams: dict[int, dict[str, dict[str, Any]]] = field(default_factory=dict)
    down: bool = False
    fail_with: list[Exception] = field(default_factory=list)
    stream_errors: dict[int, Exception] = field(default_factory=dict)
    stream_budget_until: datetime | None = None
    revoked: bool = False
    # What was asked: every request in order (list, upload, poll, fetch, streams,
    # refresh), then each kind with its arguments, and the access checks counted.
    requests: list[str] = field(default_factory=list)
    queries: list[tuple[datetime, datetime, int, int]] = field(default_factory=list)
    list_afters: list[datetime] = field(default_factory=list)
    uploads: list[dict[str, Any]] = field(default_factory=list)
    polls: list[int] = field(default_factory=list)
    fetches: list[int] = field(default_factory=list)
    stream_reads: list[int] = field(default_factory=list)
    refreshes: int = 0
    # The athlete's gear (`athlete_gear`, GET /athlete) and every PUT sent, in order;
    # `update_errors` are raised by the next PUTs, one each.
    gear: list[StravaGear] = field(default_factory=list)
    updates: list[tuple[int, ActivityUpdate]] = field(default_factory=list)
    update_errors: list[Exception] = field(default_factory=list)

    def list_activities(
        self, *, after: datetime, before: datetime, page: int = 1, per_page: int = 30
    ) -> list[StravaActivity]:
        self.requests.append("list")
        self.queries.append((after, before, page, per_page))
        found = [a for a in self.listed if after <= a.start_utc <= before]
        return found[(page - 1) * per_page : page * per_page]

    def list_all_activities(
        self, *, after: datetime, per_page: int = 200
    ) -> Iterator[dict[str, Any]]:
        """The mirror's listing (services.reconcile): `activities` starting after
        `after`, oldest first, one `list` request a page of `per_page`, and one more
        after a full page (as StravaAccess pages). `list_afters` keeps each page's `after`."""
        rows = sorted((a for a in self.activities.values() if _start(a) > after), key=_start)
        page = 0
        while True:
            self.requests.append("list")
            self.list_afters.append(after)
            chunk = rows[page * per_page : (page + 1) * per_page]
            yield from chunk
            if len(chunk) < per_page:
                return
            page += 1

    def upload(
        self,
        path: Path,
        *,
        data_type: str,
        external_id: str,
        name: str,
        description: str | None,
        trainer: bool,
    ) -> UploadStatus:
        self.requests.append("upload")
        upload_id = FIRST_UPLOAD_ID + len(self.uploads)
        self.uploads.append(
            {
                "bytes": path.read_bytes(),
                "data_type": data_type,
                "external_id": external_id,
                "name": name,
                "description": description,
                "trainer": trainer,
            }
        )
        if self.upload_answers:
            answer = self.upload_answers.pop(0)
            if isinstance(answer, Exception):
                raise answer
            return answer
        activity_id = ACTIVITY_ID_OFFSET + upload_id
        self.activities[activity_id] = activity_json(
            activity_id,
            athlete_id=self.athlete_id,
            name=name,
            external_id=f"{external_id}.fit",
            upload_id=upload_id,
        )
        return UploadStatus(upload_id, PROCESSING, None, None, external_id)

    def get_upload(self, upload_id: int) -> UploadStatus:
        self.requests.append("poll")
        self.polls.append(upload_id)
        answers = self.poll_answers.get(upload_id)
        if answers:
            return answers.pop(0)
        return UploadStatus(upload_id, READY, None, ACTIVITY_ID_OFFSET + upload_id, None)

    def get_activity(self, activity_id: int) -> dict[str, Any]:
        self.requests.append("fetch")
        self.fetches.append(activity_id)
        if self.down:
            raise TransientError("Strava answered 503")
        if self.fail_with:
            raise self.fail_with.pop(0)
        if activity_id not in self.activities:
            raise StravaNotFound(str(activity_id))
        return self.activities[activity_id]

    def get_activity_streams(
        self, activity_id: int, types: Sequence[str]
    ) -> dict[str, dict[str, Any]]:
        if self.stream_budget_until is not None:
            raise RateLimited(self.stream_budget_until)  # refused before a request
        self.requests.append("streams")
        self.stream_reads.append(activity_id)
        if activity_id in self.stream_errors:
            raise self.stream_errors[activity_id]
        if activity_id not in self.streams:
            raise StravaNotFound(str(activity_id))
        return {k: v for k, v in self.streams[activity_id].items() if k in types}

    def athlete_gear(self) -> list[StravaGear]:
        self.requests.append("athlete")
        return list(self.gear)

    def update_activity(self, activity_id: int, update: ActivityUpdate) -> None:
        self.requests.append("update")
        if self.update_errors:
            raise self.update_errors.pop(0)
        self.updates.append((activity_id, update))

    def access_revoked(self) -> bool:
        self.requests.append("refresh")
        self.refreshes += 1
        if self.fail_with:
            raise self.fail_with.pop(0)
        return self.revoked


def _start(activity: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(str(activity["start_date"]))


@dataclass
class FakeFiles:
    """The file check (ports.ActivityFiles): writes the bytes as a FIT file, or refuses
    the ones in `refuse`; `prepared` lists what it was given."""

    refuse: set[bytes] = field(default_factory=set)
    prepared: list[bytes] = field(default_factory=list)

    def prepare(self, original_zip: bytes, workdir: Path) -> PreparedFile:
        self.prepared.append(original_zip)
        if original_zip in self.refuse:
            msg = "not a FIT file"
            raise FileRejected(msg)
        path = workdir / "activity.fit"
        path.write_bytes(original_zip)
        return PreparedFile(path=path, data_type="fit")


class HandedQueue:
    """An EventQueue (ports.EventQueue) that hands the worker the groups it was given,
    as they are (an event no real queue would read back), and records how each event
    was settled in `settled` (queue id -> "complete", "release", "fail", "dead_letter")."""

    def __init__(self, *groups: list[QueuedEvent]) -> None:
        self.waiting = list(groups)
        self.settled: dict[int, str] = {}

    def _settle(self, records: Sequence[QueuedEvent], how: str) -> None:
        self.settled |= {r.queue_id: how for r in records}

    # The worker's arguments beyond the records (times, errors) are not what this
    # fake is for: `**_` takes them.
    def claim(self, *, limit: int = 50, **_: object) -> list[list[QueuedEvent]]:
        claimed, self.waiting = self.waiting[:limit], self.waiting[limit:]
        return claimed

    def complete(self, records: Sequence[QueuedEvent], **_: object) -> None:
        self._settle(records, "complete")

    def release(self, records: Sequence[QueuedEvent], **_: object) -> None:
        self._settle(records, "release")

    def fail(self, records: Sequence[QueuedEvent], **_: object) -> None:
        self._settle(records, "fail")

    def dead_letter(self, records: Sequence[QueuedEvent], **_: object) -> None:
        self._settle(records, "dead_letter")

    def list_dead(self, **_: object) -> list[DeadEvent]:
        return []

    def retry_dead(self, *_: object, **__: object) -> bool:
        return False

    def depth(self) -> int:
        return sum(len(group) for group in self.waiting)

    def oldest_age(self, **_: object) -> float | None:
        return None


if TYPE_CHECKING:
    # mypy: each fake still implements its port (a changed port fails here, by name).
    _GARMIN: GarminPort = FakeGarmin()
    _STRAVA: StravaPort = FakeStrava()
    _ACCESS: AccessCheck = FakeStrava()
    _RECONCILE: ReconcileClient = FakeStrava()
    _QUEUE: EventQueue = HandedQueue()
    _FILES: ActivityFiles = FakeFiles()
