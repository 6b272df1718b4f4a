"""A Strava API v3 emulator on loopback, for tests and `garmin2strava demo`.

Stdlib only (the uploaded file is read with our own `fitfile.summarize_upload`).
It emulates what this project depends on (docs/strava-api.md), including the traps:
rotating refresh tokens, per-application rate limits with the real headers and 429
body, uploads that are "still being processed" first, duplicates reported as an upload
error in the plain or the HTML form, and tokens accepted as a Bearer header or as the
`access_token` query parameter (stravalib 2.5 style).

Listing order: Strava answers `/athlete/activities` newest first, except when `after`
is given: then oldest first (ascending start). The emulator does the same; callers must
not rely on either order.

Time comes from `clock` (epoch seconds), so tests can move it.
"""

from __future__ import annotations

import json
import re
import secrets
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.parser import BytesParser
from email.policy import HTTP
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Self
from urllib.parse import parse_qs, urlsplit

from garmin2strava.adapters.fitfile import summarize_upload
from garmin2strava.sandbox.strava_webhooks import WebhookHub

__all__ = ["SandboxActivity", "SandboxUpload", "StravaSandbox"]

PROCESSING = "Your activity is still being processed."
READY = "Your activity is ready."
ERROR = "There was an error processing your activity."
DELETED = "The created activity has been deleted."
FULL_SCOPE = "read,activity:read_all,activity:write"

_SPORTS = {
    ("running", "treadmill"): "Run",
    ("running", "trail"): "TrailRun",
    ("running", "virtual_activity"): "VirtualRun",
    ("running", None): "Run",
    ("cycling", None): "Ride",
    ("walking", None): "Walk",
    ("hiking", None): "Hike",
    ("swimming", None): "Swim",
}


def _iso(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _error_body(message: str, resource: str, fld: str, code: str) -> dict[str, Any]:
    return {"message": message, "errors": [{"resource": resource, "field": fld, "code": code}]}


@dataclass
class SandboxActivity:
    activity_id: int
    athlete_id: int
    name: str
    sport_type: str
    start_utc: datetime
    elapsed_s: int
    distance_m: float
    external_id: str | None = None
    upload_id: int | None = None
    private: bool = False
    manual: bool = False
    trainer: bool = False
    description: str | None = None
    deleted: bool = False

    def summary(self) -> dict[str, Any]:
        return {
            "resource_state": 2,
            "id": self.activity_id,
            "athlete": {"id": self.athlete_id, "resource_state": 1},
            "name": self.name,
            "distance": self.distance_m,
            "moving_time": self.elapsed_s,
            "elapsed_time": self.elapsed_s,
            "total_elevation_gain": 0.0,
            "type": self.sport_type if "Run" not in self.sport_type else "Run",
            "sport_type": self.sport_type,
            "start_date": _iso(self.start_utc),
            "start_date_local": _iso(self.start_utc),
            "timezone": "(GMT+00:00) Etc/UTC",
            "utc_offset": 0.0,
            "external_id": self.external_id,
            "upload_id": self.upload_id,
            "upload_id_str": str(self.upload_id) if self.upload_id is not None else None,
            "private": self.private,
            "manual": self.manual,
            "trainer": self.trainer,
            "commute": False,
            "visibility": "only_me" if self.private else "everyone",
        }

    def detail(self) -> dict[str, Any]:
        return {**self.summary(), "resource_state": 3, "description": self.description}


@dataclass
class SandboxUpload:
    upload_id: int
    athlete_id: int
    external_id: str | None
    file_name: str
    data: bytes
    data_type: str
    name: str | None
    description: str | None
    trainer: bool
    created_at: float
    fields: dict[str, str]
    status: str = PROCESSING
    error: str | None = None
    activity_id: int | None = None

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.upload_id,
            "id_str": str(self.upload_id),
            "external_id": self.external_id,
            "error": self.error,
            "status": self.status,
            "activity_id": self.activity_id,
        }


@dataclass
class _Athlete:
    athlete_id: int
    scope: str
    refresh_token: str | None = None
    access_tokens: dict[str, float] = field(default_factory=dict)  # token -> expires_at


class StravaSandbox:
    """The emulator. Start it (or use it as a context manager) and point a client at
    `base_url`. All state is behind one lock; tests read it through the attributes."""

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
        self.verdict_on_post = False
        self.activities: dict[int, SandboxActivity] = {}
        self.upload_records: dict[int, SandboxUpload] = {}
        self.requests: Counter[str] = Counter()
        self.reads = 0
        self.uploads = 0
        self.lock = threading.RLock()
        self._athletes: dict[int, _Athlete] = {}
        self._codes: dict[str, tuple[int, str]] = {}
        self._failures: dict[str, list[int]] = {}
        self._limits = (200, 2000, 100, 1000)  # short_all, daily_all, short_read, daily_read
        self._usage = [0, 0, 0, 0]
        self._windows = (-1, -1)  # (15-min window index, day index) the usage belongs to
        self._next_id = 1000
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        # Push subscriptions and event delivery (sandbox/strava_webhooks.py).
        self.webhooks = WebhookHub(client_id=client_id, client_secret=client_secret, clock=clock)

    # -- life cycle --------------------------------------------------------------------
    def start(self) -> Self:
        handler = type("_BoundHandler", (_Handler,), {"sandbox": self})
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},  # shutdown() waits up to one poll interval
            name="strava-sandbox",
            daemon=True,
        )
        self._thread.start()
        self.webhooks.start()
        return self

    def stop(self) -> None:
        self.webhooks.stop()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        if self._server is None:
            raise RuntimeError("the Strava sandbox is not started")
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    # -- seeding and control -----------------------------------------------------------
    def _new_id(self) -> int:
        self._next_id += 1
        return self._next_id

    def add_athlete(self, athlete_id: int, scope: str = FULL_SCOPE) -> str:
        """Connect an athlete; returns their refresh token (no access token yet)."""
        with self.lock:
            athlete = _Athlete(athlete_id, scope, refresh_token=secrets.token_hex(20))
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

    def _issue_access(self, athlete: _Athlete) -> tuple[str, int]:
        token = secrets.token_hex(20)
        expires_at = int(self.clock()) + self.token_lifetime_s
        athlete.access_tokens[token] = expires_at
        return token, expires_at

    def _athlete_for(self, token: str | None) -> _Athlete | None:
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

    def _count(self, is_upload: bool) -> bool:
        """Count one API request; False when it is over a limit (answer 429).

        Refused requests count too, so the daily usage grows past the short refusal.
        """
        self._roll_windows()
        if is_upload:
            self.uploads += 1
        else:
            self.reads += 1
        self._usage[0] += 1
        self._usage[1] += 1
        if not is_upload:
            self._usage[2] += 1
            self._usage[3] += 1
        over_all = self._usage[0] > self._limits[0] or self._usage[1] > self._limits[1]
        over_read = not is_upload and (
            self._usage[2] > self._limits[2] or self._usage[3] > self._limits[3]
        )
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
            summary = summarize_upload(upload.data, upload.data_type)
        except Exception:  # noqa: BLE001 - any parse failure is Strava's "error processing"
            upload.status = ERROR
            upload.error = "Improperly formatted data."
            return
        if summary.start_utc is None:
            upload.status = ERROR
            upload.error = "Time information is missing from file."
            return
        start = summary.start_utc.astimezone(UTC).replace(microsecond=0)
        for other in self.activities.values():
            if (
                other.athlete_id == upload.athlete_id
                and not other.deleted
                and (other.start_utc.replace(microsecond=0) == start)
            ):
                upload.status = ERROR
                upload.error = self._duplicate_message(upload, other)
                return
        sport = _SPORTS.get((summary.sport or "", summary.sub_sport)) or _SPORTS.get(
            (summary.sport or "", None), "Workout"
        )
        activity_id = self._new_id()
        self.activities[activity_id] = SandboxActivity(
            activity_id=activity_id,
            athlete_id=upload.athlete_id,
            name=upload.name or f"{sport} upload",
            sport_type=sport,
            start_utc=start,
            elapsed_s=round(summary.elapsed_s or 0),
            distance_m=summary.distance_m or 0.0,
            external_id=upload.external_id,
            upload_id=upload.upload_id,
            trainer=upload.trainer or summary.sub_sport == "treadmill",
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

    # -- request handling (called by the handler) ----------------------------------------
    def handle(  # noqa: PLR0911 - one dispatch table, read top to bottom
        self, method: str, path: str, query: dict[str, str], headers: Any, body: bytes
    ) -> tuple[int, dict[str, Any] | list[Any], dict[str, str]]:
        found = _PUSH_SUBSCRIPTIONS.fullmatch(path.rstrip("/"))
        if found:
            # Outside the lock: creating one waits for the callback's handshake.
            with self.lock:
                self.requests["push_subscriptions"] += 1
            form = {**query, **_parse_form(headers, body)}
            sub_id = int(found.group(1)) if found.group(1) else None
            sub_status, sub_payload = self.webhooks.handle(method, sub_id, form)
            return sub_status, sub_payload, {}
        with self.lock:
            self.settle()
            if path == "/oauth/token" and method == "POST":
                self.requests["token"] += 1
                form = {**query, **_parse_form(headers, body)}
                token_status, token_payload = self._token(form)
                return token_status, token_payload, {}
            if path == "/oauth/deauthorize" and method == "POST":
                self.requests["deauthorize"] += 1
                athlete = self._athlete_for(_bearer(headers) or query.get("access_token"))
                if athlete is None:
                    return 401, _error_body("Authorization Error", "Athlete", "", "invalid"), {}
                self.deauthorize(athlete.athlete_id)
                return 200, {"access_token": ""}, {}
            if not path.startswith("/api/v3/"):
                return 404, _error_body("Record Not Found", "Path", path, "invalid"), {}
            endpoint, arg = _route(method, path.removeprefix("/api/v3"))
            self.requests[endpoint] += 1
            allowed = self._count(is_upload=endpoint == "upload")
            rate = self.rate_headers()
            if not allowed:
                body429 = _error_body(
                    "Rate Limit Exceeded", "Application", "rate limit", "exceeded"
                )
                return 429, body429, rate
            injected = self._injected_failure(endpoint)
            if injected is not None:
                return injected, _error_body("Injected failure", "Sandbox", endpoint, "x"), rate
            athlete = self._athlete_for(_bearer(headers) or query.get("access_token"))
            if athlete is None:
                body401 = _error_body("Authorization Error", "Athlete", "access_token", "invalid")
                return 401, body401, rate
            status, payload = self._api(
                endpoint, arg, athlete, query=query, headers=headers, body=body
            )
            return status, payload, rate

    def _token(self, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
        if form.get("client_id") != str(self.client_id) or not secrets.compare_digest(
            form.get("client_secret", ""), self.client_secret
        ):
            return 401, _error_body("Authorization Error", "Application", "client_id", "invalid")
        grant = form.get("grant_type")
        if grant == "authorization_code":
            found = self._codes.pop(form.get("code", ""), None)
            if found is None:
                return 400, _error_body("Bad Request", "AuthorizationCode", "code", "invalid")
            athlete_id, scope = found
            athlete = self._athletes.setdefault(athlete_id, _Athlete(athlete_id, scope))
            athlete.scope = scope
            athlete.refresh_token = secrets.token_hex(20)
            token, expires_at = self._issue_access(athlete)
            return 200, {
                "token_type": "Bearer",
                "expires_at": expires_at,
                "expires_in": expires_at - int(self.clock()),
                "refresh_token": athlete.refresh_token,
                "access_token": token,
                "athlete": {"id": athlete_id, "resource_state": 2, "username": None},
            }
        if grant == "refresh_token":
            given = form.get("refresh_token", "")
            for athlete in self._athletes.values():
                if athlete.refresh_token and secrets.compare_digest(athlete.refresh_token, given):
                    # Rotation: the old refresh token dies at once.
                    athlete.refresh_token = secrets.token_hex(20)
                    token, expires_at = self._issue_access(athlete)
                    return 200, {
                        "token_type": "Bearer",
                        "access_token": token,
                        "expires_at": expires_at,
                        "expires_in": expires_at - int(self.clock()),
                        "refresh_token": athlete.refresh_token,
                    }
            return 400, _error_body("Bad Request", "RefreshToken", "refresh_token", "invalid")
        return 400, _error_body("Bad Request", "GrantType", "grant_type", "invalid")

    def _api(  # noqa: PLR0911 - one branch per endpoint
        self,
        endpoint: str,
        arg: int | None,
        athlete: _Athlete,
        *,
        query: dict[str, str],
        headers: Any,
        body: bytes,
    ) -> tuple[int, dict[str, Any] | list[Any]]:
        scopes = set(athlete.scope.split(","))
        if endpoint == "athlete":
            return 200, {"id": athlete.athlete_id, "resource_state": 3, "firstname": "Sandy"}
        if endpoint == "list":
            if not scopes & {"activity:read", "activity:read_all"}:
                return 401, _error_body(
                    "Authorization Error", "AccessToken", "activity:read_permission", "missing"
                )
            return 200, self._list(athlete, query, private="activity:read_all" in scopes)
        if endpoint == "activity" and arg is not None:
            found = self.activities.get(arg)
            if found is None or found.deleted or found.athlete_id != athlete.athlete_id:
                return 404, _error_body("Record Not Found", "Activity", "id", "invalid")
            return 200, found.detail()
        if endpoint == "upload":
            if "activity:write" not in scopes:
                return 401, _error_body(
                    "Authorization Error", "AccessToken", "activity:write_permission", "missing"
                )
            return self._create_upload(athlete, query, headers, body)
        if endpoint == "upload_status" and arg is not None:
            upload = self.upload_records.get(arg)
            if upload is None or upload.athlete_id != athlete.athlete_id:
                return 404, _error_body("Record Not Found", "Upload", "id", "invalid")
            return 200, upload.as_json()
        return 404, _error_body("Record Not Found", "Path", endpoint, "invalid")

    def _list(self, athlete: _Athlete, query: dict[str, str], *, private: bool) -> list[Any]:
        before = int(query["before"]) if query.get("before") else None
        after = int(query["after"]) if query.get("after") else None
        page = max(1, int(query.get("page") or 1))
        per_page = min(200, max(1, int(query.get("per_page") or 30)))
        rows = [
            a
            for a in self.activities.values()
            if a.athlete_id == athlete.athlete_id
            and not a.deleted
            and (private or not a.private)
            and (before is None or a.start_utc.timestamp() < before)
            and (after is None or a.start_utc.timestamp() > after)
        ]
        rows.sort(key=lambda a: (a.start_utc, a.activity_id), reverse=after is None)
        chosen = rows[(page - 1) * per_page : page * per_page]
        return [a.summary() for a in chosen]

    def _create_upload(
        self, athlete: _Athlete, query: dict[str, str], headers: Any, body: bytes
    ) -> tuple[int, dict[str, Any]]:
        form, files = _parse_multipart(headers, body)
        fields = {**query, **form}  # stravalib 2.6 sends the fields in the query string
        if "file" not in files:
            return 400, _error_body("Bad Request", "Upload", "file", "missing")
        file_name, data = files["file"]
        data_type = fields.get("data_type", "")
        if data_type not in {"fit", "fit.gz", "tcx", "tcx.gz", "gpx", "gpx.gz"}:
            return 400, _error_body("Bad Request", "Upload", "data_type", "invalid")
        external_id = fields.get("external_id") or file_name
        if self.append_extension_to_external_id and not external_id.endswith(f".{data_type}"):
            external_id = f"{external_id}.{data_type}"
        upload = SandboxUpload(
            upload_id=self._new_id(),
            athlete_id=athlete.athlete_id,
            external_id=external_id,
            file_name=file_name,
            data=data,
            data_type=data_type,
            name=fields.get("name"),
            description=fields.get("description"),
            trainer=fields.get("trainer", "0").lower() in {"1", "true"},
            created_at=self.clock(),
            fields=fields,
        )
        self.upload_records[upload.upload_id] = upload
        if self.verdict_on_post:
            self._finish(upload)
        return 201, upload.as_json()


_PUSH_SUBSCRIPTIONS = re.compile(r"/api/v3/push_subscriptions(?:/(\d+))?")
_ROUTES: list[tuple[str, re.Pattern[str], str]] = [
    ("GET", re.compile(r"/athlete"), "athlete"),
    ("GET", re.compile(r"/athlete/activities"), "list"),
    ("GET", re.compile(r"/activities/(\d+)"), "activity"),
    ("POST", re.compile(r"/uploads"), "upload"),
    ("GET", re.compile(r"/uploads/(\d+)"), "upload_status"),
]


def _route(method: str, path: str) -> tuple[str, int | None]:
    for verb, pattern, name in _ROUTES:
        found = pattern.fullmatch(path.rstrip("/"))
        if verb == method and found:
            return name, int(found.group(1)) if found.groups() else None
    return "unknown", None


def _bearer(headers: Any) -> str | None:
    value = headers.get("Authorization") or ""
    return value[7:].strip() if value.lower().startswith("bearer ") else None


def _parse_form(headers: Any, body: bytes) -> dict[str, str]:
    if "application/x-www-form-urlencoded" not in (headers.get("Content-Type") or ""):
        return {}
    return {k: v[-1] for k, v in parse_qs(body.decode("utf-8", "replace")).items()}


def _parse_multipart(
    headers: Any, body: bytes
) -> tuple[dict[str, str], dict[str, tuple[str, bytes]]]:
    content_type = headers.get("Content-Type") or ""
    if not content_type.startswith("multipart/form-data"):
        return _parse_form(headers, body), {}
    message = BytesParser(policy=HTTP).parsebytes(
        b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + body
    )
    form: dict[str, str] = {}
    files: dict[str, tuple[str, bytes]] = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        payload = part.get_payload(decode=True)
        if not isinstance(name, str) or not isinstance(payload, bytes):
            continue
        filename = part.get_filename()
        if filename is not None:
            files[name] = (filename, payload)
        else:
            form[name] = payload.decode("utf-8", "replace")
    return form, files


class _Handler(BaseHTTPRequestHandler):
    sandbox: StravaSandbox
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib's name
        """Quiet: request lines carry tokens in query strings (stravalib 2.5 style)."""

    def _serve(self, method: str) -> None:
        parts = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        status, payload, extra = self.sandbox.handle(method, parts.path, query, self.headers, body)
        raw = b"" if status == 204 else json.dumps(payload).encode()  # noqa: PLR2004 - HTTP status
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(raw)))
        for key, value in extra.items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(raw)

    def do_GET(self) -> None:
        self._serve("GET")

    def do_POST(self) -> None:
        self._serve("POST")

    def do_DELETE(self) -> None:
        self._serve("DELETE")
