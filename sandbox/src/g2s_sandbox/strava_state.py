"""The Strava emulator's state and what changes it: seeding and test control, tokens,
the application's rate limits and the processing of uploads. The uploaded file is read
by the sandbox's own reader (sandbox/activity_files.py, fitdecode for FIT), never by
the daemon's file check it is there to judge."""

from __future__ import annotations

import secrets
import threading
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from g2s_sandbox.activity_files import (
    ActivityReading,
    RefusedFile,
    read_activity,
    require_fit_reader,
)
from g2s_sandbox.strava_records import (
    DELETED,
    ERROR,
    FULL_SCOPE,
    PROCESSING,
    READY,
    SandboxActivity,
    SandboxAthlete,
    SandboxUpload,
)
from g2s_sandbox.strava_webhooks import WebhookHub

__all__ = ["StravaState"]

# (sport, sub_sport) as the file names them (FIT profile names; TCX Sport and GPX
# <type>, lower-cased) -> Strava sport_type; (sport, None) is the sport's default.
_SPORTS = {
    ("running", "treadmill"): "Run",
    ("running", "trail"): "TrailRun",
    ("running", "virtual_activity"): "VirtualRun",
    ("running", None): "Run",
    ("run", None): "Run",
    ("cycling", "mountain"): "MountainBikeRide",
    ("cycling", "gravel_cycling"): "GravelRide",
    ("cycling", "virtual_activity"): "VirtualRide",
    ("cycling", None): "Ride",
    ("biking", None): "Ride",
    ("walking", None): "Walk",
    ("hiking", None): "Hike",
    ("swimming", None): "Swim",
    ("fitness_equipment", "indoor_rowing"): "Rowing",
}
# Sub-sports recorded indoors: Strava marks the activity as done on a trainer.
_INDOOR = frozenset({"treadmill", "indoor_cycling", "indoor_running", "virtual_activity"})


class StravaState:
    """Everything the emulator knows, behind one lock (`lock`); the HTTP side is in
    strava_api and sandbox.strava."""

    def __init__(
        self,
        *,
        client_id: int = 4242,
        client_secret: str = "sandbox-client-secret",  # noqa: S107 - the emulator's fake
        token_lifetime_s: int = 6 * 3600,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.client_id = client_id
        self.client_secret = client_secret
        self.token_lifetime_s = token_lifetime_s
        self.clock = clock
        self.processing_delay_s = 0.0
        self.duplicate_error_html = False
        self.append_extension_to_external_id = False
        # Faults: the next uploads' processing fails with these messages (a file Strava
        # rejects), and whether a POST's answer already carries the processing verdict.
        self.upload_errors: list[str] = []
        # Why the emulator refused an upload's file (upload id -> reason), for tests;
        # the upload's `error` carries only Strava's wording.
        self.refusals: dict[int, str] = {}
        self.verdict_on_post = False
        # The owner's subscription lapsed (Strava's developer program of 2026): every
        # API call gets 403 "Application Status Inactive"; the token endpoint still
        # answers, as it does for real (stravalib issue #730, dreeve issue #2562).
        self.application_inactive = False
        # An "old Strava": /oauth/revoke (since 2026-06-01) answers 404, as before it
        # existed; /oauth/deauthorize still works (until 2027-06-01).
        self.revoke_available = True
        # Athletes the application may connect (None: no cap). A new application starts
        # at 1 (Strava's API FAQ, 2026-03-16): the token exchange for one athlete more
        # answers 403 "Limit of connected athletes exceeded".
        self.athlete_capacity: int | None = None
        # Every request line (method and target, query included) as it arrived.
        self.request_lines: list[str] = []
        self.activities: dict[int, SandboxActivity] = {}
        self.upload_records: dict[int, SandboxUpload] = {}
        self.requests: Counter[str] = Counter()
        self.reads = 0
        self.uploads = 0
        self.writes = 0  # PUT /activities/{id}
        # Every PUT /activities/{id} applied: (activity id, the fields it sent).
        self.activity_updates: list[tuple[int, dict[str, Any]]] = []
        self.lock = threading.RLock()
        require_fit_reader()  # fail at start, in one line, rather than at the first upload
        self._athletes: dict[int, SandboxAthlete] = {}
        self._codes: dict[str, tuple[int, str]] = {}
        self._failures: dict[str, list[int]] = {}
        self._limits = (200, 2000, 100, 1000)  # short_all, daily_all, short_read, daily_read
        self._usage = [0, 0, 0, 0]
        self._windows = (-1, -1)  # (15-min window index, day index) the usage belongs to
        self._next_id = 1000
        # Push subscriptions and event delivery (sandbox/strava_webhooks.py).
        self.webhooks = WebhookHub(client_id=client_id, client_secret=client_secret, clock=clock)

    # -- seeding and control -----------------------------------------------------------
    def _new_id(self) -> int:
        self._next_id += 1
        return self._next_id

    def add_athlete(self, athlete_id: int, scope: str = FULL_SCOPE) -> str:
        """Connect an athlete; returns their refresh token (no access token yet)."""
        with self.lock:
            athlete = SandboxAthlete(athlete_id, scope, refresh_token=secrets.token_hex(20))
            self._athletes[athlete_id] = athlete
            assert athlete.refresh_token is not None
            return athlete.refresh_token

    def authorize(self, athlete_id: int, scope: str = FULL_SCOPE) -> str:
        """What the browser consent would yield: an authorization code for `scope`."""
        with self.lock:
            code = secrets.token_hex(16)
            self._codes[code] = (athlete_id, scope)
            return code

    def issue_access_token(self, athlete_id: int) -> tuple[str, int]:
        """Hand out a valid access token directly (tests that skip OAuth)."""
        with self.lock:
            return self._issue_access(self._athletes[athlete_id])

    def add_activity(
        self,
        athlete_id: int,
        *,
        start_utc: datetime,
        elapsed_s: int,
        sport_type: str = "Run",
        name: str = "Morning Run",
        external_id: str | None = None,
        distance_m: float = 5000.0,
        private: bool = False,
        manual: bool = False,
    ) -> int:
        with self.lock:
            activity_id = self._new_id()
            self.activities[activity_id] = SandboxActivity(
                activity_id=activity_id,
                athlete_id=athlete_id,
                name=name,
                sport_type=sport_type,
                start_utc=start_utc.astimezone(UTC),
                elapsed_s=elapsed_s,
                distance_m=distance_m,
                external_id=external_id,
                private=private,
                manual=manual,
            )
            self._publish(activity_id, "create")
            return activity_id

    def add_gear(self, athlete_id: int, name: str, *, kind: str = "shoes") -> str:
        """One of the athlete's shoes (`g...`) or bikes (`b...`); its id."""
        with self.lock:
            athlete = self._athletes[athlete_id]
            gear_id = f"{'b' if kind == 'bikes' else 'g'}{self._new_id()}"
            rows = athlete.bikes if kind == "bikes" else athlete.shoes
            rows.append(
                {
                    "distance": 0.0,
                    "id": gear_id,
                    "name": name,
                    "primary": not rows,
                    "resource_state": 2,
                }
            )
            return gear_id

    def delete_activity(self, activity_id: int) -> None:
        with self.lock:
            self.activities[activity_id].deleted = True
            self._publish(activity_id, "delete")

    def update_activity(
        self,
        activity_id: int,
        *,
        title: str | None = None,
        type: str | None = None,  # noqa: A002 - Strava's name for it in update events
        private: bool | None = None,
    ) -> None:
        """Edit an activity as the athlete would on strava.com; one update event."""
        with self.lock:
            activity = self.activities[activity_id]
            updates: dict[str, str] = {}
            if title is not None:
                activity.name = updates["title"] = title
            if type is not None:
                activity.sport_type = updates["type"] = type
            if private is not None:
                activity.private = private
                updates["private"] = "true" if private else "false"
            self._publish(activity_id, "update", updates)

    def deauthorize(self, athlete_id: int) -> None:
        """The athlete revokes the app on strava.com: tokens die, an event follows."""
        with self.lock:
            self.revoke(athlete_id)
            self.webhooks.publish(
                object_type="athlete",
                object_id=athlete_id,
                aspect_type="update",
                owner_id=athlete_id,
                updates={"authorized": "false"},
            )

    def set_limits(
        self,
        short_read: int = 100,
        daily_read: int = 1000,
        short_all: int = 200,
        daily_all: int = 2000,
    ) -> None:
        with self.lock:
            self._limits = (short_all, daily_all, short_read, daily_read)

    def set_usage(
        self, short_all: int = 0, daily_all: int = 0, short_read: int = 0, daily_read: int = 0
    ) -> None:
        """Pretend other requests of the application already spent this much."""
        with self.lock:
            self._roll_windows()
            self._usage = [short_all, daily_all, short_read, daily_read]

    def record_request(self, method: str, target: str) -> None:
        with self.lock:
            self.request_lines.append(f"{method} {target}")

    def fail_next(self, endpoint: str, status: int, times: int = 1) -> None:
        """The next `times` requests to `endpoint` ("list", "upload", ...) get `status`."""
        with self.lock:
            self._failures.setdefault(endpoint, []).extend([status] * times)

    def expire_access_tokens(self) -> None:
        """Every access token stops working now (401 until the client refreshes)."""
        with self.lock:
            for athlete in self._athletes.values():
                athlete.access_tokens.clear()

    def revoke(self, athlete_id: int) -> None:
        """The athlete revoked the app: no token of theirs works any more."""
        with self.lock:
            athlete = self._athletes[athlete_id]
            athlete.access_tokens.clear()
            athlete.refresh_token = None

    def refresh_token_of(self, athlete_id: int) -> str | None:
        with self.lock:
            return self._athletes[athlete_id].refresh_token

    def settle(self) -> None:
        """Finish every upload whose processing delay has passed."""
        with self.lock:
            now = self.clock()
            for upload in sorted(self.upload_records.values(), key=lambda u: u.upload_id):
                if upload.status == PROCESSING and now >= upload.created_at + (
                    self.processing_delay_s
                ):
                    self._finish(upload)
                elif upload.activity_id is not None and self.activities[upload.activity_id].deleted:
                    upload.status = DELETED

    # -- internals (lock held) -----------------------------------------------------------
    def _publish(
        self, activity_id: int, aspect_type: str, updates: dict[str, str] | None = None
    ) -> None:
        self.webhooks.publish(
            object_type="activity",
            object_id=activity_id,
            aspect_type=aspect_type,
            owner_id=self.activities[activity_id].athlete_id,
            updates=updates,
        )

    def _issue_access(self, athlete: SandboxAthlete) -> tuple[str, int]:
        token = secrets.token_hex(20)
        expires_at = int(self.clock()) + self.token_lifetime_s
        athlete.access_tokens[token] = expires_at
        return token, expires_at

    def _athlete_for(self, token: str | None) -> SandboxAthlete | None:
        if not token:
            return None
        now = self.clock()
        for athlete in self._athletes.values():
            expires = athlete.access_tokens.get(token)
            if expires is not None and now < expires:
                return athlete
        return None

    def _roll_windows(self) -> None:
        now = self.clock()
        windows = (int(now // 900), int(now // 86400))
        if windows[1] != self._windows[1]:
            self._usage = [0, 0, 0, 0]
        elif windows[0] != self._windows[0]:
            self._usage[0] = self._usage[2] = 0
        self._windows = windows

    def _count(self, is_upload: bool, *, is_write: bool = False) -> bool:
        """Count one API request; False when it is over a limit (answer 429). Uploads
        and the other writes (a PUT) count against the overall limits only.

        Refused requests count too, so the daily usage grows past the short refusal.
        """
        self._roll_windows()
        read = not (is_upload or is_write)
        if is_upload:
            self.uploads += 1
        elif is_write:
            self.writes += 1
        else:
            self.reads += 1
        self._usage[0] += 1
        self._usage[1] += 1
        if read:
            self._usage[2] += 1
            self._usage[3] += 1
        over_all = self._usage[0] > self._limits[0] or self._usage[1] > self._limits[1]
        over_read = read and (self._usage[2] > self._limits[2] or self._usage[3] > self._limits[3])
        return not (over_all or over_read)

    def rate_headers(self) -> dict[str, str]:
        with self.lock:
            short_all, daily_all, short_read, daily_read = self._limits
            return {
                "X-RateLimit-Limit": f"{short_all},{daily_all}",
                "X-RateLimit-Usage": f"{self._usage[0]},{self._usage[1]}",
                "X-ReadRateLimit-Limit": f"{short_read},{daily_read}",
                "X-ReadRateLimit-Usage": f"{self._usage[2]},{self._usage[3]}",
            }

    def _injected_failure(self, endpoint: str) -> int | None:
        pending = self._failures.get(endpoint)
        return pending.pop(0) if pending else None

    def _finish(self, upload: SandboxUpload) -> None:
        if self.upload_errors:
            upload.status = ERROR
            upload.error = self.upload_errors.pop(0)
            return
        try:
            reading = read_activity(upload.data, upload.data_type)
        except RefusedFile as refused:
            upload.status = ERROR
            upload.error = refused.strava_error
            self.refusals[upload.upload_id] = refused.reason
            return
        start = reading.start_utc.astimezone(UTC).replace(microsecond=0)
        for other in self.activities.values():
            if (
                other.athlete_id == upload.athlete_id
                and not other.deleted
                and (other.start_utc.replace(microsecond=0) == start)
            ):
                upload.status = ERROR
                upload.error = self._duplicate_message(upload, other)
                return
        sport = _sport_type(reading)
        activity_id = self._new_id()
        self.activities[activity_id] = SandboxActivity(
            activity_id=activity_id,
            athlete_id=upload.athlete_id,
            name=upload.name or f"{sport} upload",
            sport_type=sport,
            start_utc=start,
            elapsed_s=round(reading.elapsed_s or 0),
            distance_m=reading.distance_m or 0.0,
            external_id=upload.external_id,
            upload_id=upload.upload_id,
            trainer=upload.trainer or reading.sub_sport in _INDOOR,
            description=upload.description,
        )
        upload.status = READY
        upload.activity_id = activity_id
        self._publish(activity_id, "create")

    def _duplicate_message(self, upload: SandboxUpload, other: SandboxActivity) -> str:
        if self.duplicate_error_html:
            return (
                f"{upload.file_name} duplicate of <a href='/activities/{other.activity_id}' "
                f"target='_blank'>{other.name}</a>"
            )
        return f"{upload.file_name} duplicate of activity {other.activity_id}"


def _sport_type(reading: ActivityReading) -> str:
    sport = reading.sport or ""
    return _SPORTS.get((sport, reading.sub_sport)) or _SPORTS.get((sport, None), "Workout")
