"""A local Garmin Connect emulator on loopback (stdlib only).

It serves the few endpoints garmin2strava uses, with the real paths and field
layout: the activity list, the ORIGINAL download, the
activity detail and the DI OAuth2 token refresh. Records are shaped after real
answers of 2018, 2021 and 2026 (`make_record(..., shape=...)`): local time in the
activity's own time zone, type ids and parent type ids from Garmin's type list,
`elapsedDuration` in milliseconds in the older shapes, no `manualActivity` in 2018,
null fields left out in 2026, a multisport parent without `beginTimestamp`. Tokens are JWT-shaped so
garminconnect's expiry logic works; refresh tokens rotate and die once used.
Anything that looks like a login (SSO paths) is counted and refused, so a test
can prove that nothing ever logs in.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import threading
import time
from collections import Counter, deque
from datetime import UTC, datetime, timedelta
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal, Self
from urllib.parse import parse_qs, urlsplit

__all__ = ["ENDPOINTS", "GarminSandbox", "make_record"]

ENDPOINTS = ("list", "download", "activity", "token_refresh", "login", "other")
SANDBOX_CLIENT_ID = "GARMIN_CONNECT_MOBILE_ANDROID_DI_SANDBOX"
_LIST_PATH = "/activitylist-service/activities/search/activities"
_DOWNLOAD_PREFIX = "/download-service/files/activity/"
_ACTIVITY_PREFIX = "/activity-service/activity/"
_TOKEN_PATH = "/di-oauth2-service/oauth/token"
# First path segments of the SSO / CAS / web-login flows (the adapter points the
# library's _sso, _connect and service URLs at this server under these names).
_LOGIN_SEGMENTS = frozenset({"sso", "connect", "gcm", "mobile", "portal", "signin", "services"})
_MAX_LIMIT = 1000

# typeKey -> (typeId, parentTypeId) as Garmin's activity type list gives them (17 is
# the root of the tree; 1 running, 2 cycling, 26 swimming, 29 fitness equipment).
_TYPE_IDS = {
    "running": (1, 17),
    "trail_running": (6, 1),
    "street_running": (7, 1),
    "track_running": (8, 1),
    "treadmill_running": (18, 1),
    "virtual_run": (153, 1),
    "obstacle_run": (154, 1),
    "indoor_running": (156, 1),
    "ultra_run": (181, 1),
    "cycling": (2, 17),
    "mountain_biking": (5, 2),
    "road_biking": (10, 2),
    "cyclocross": (19, 2),
    "indoor_cycling": (25, 2),
    "gravel_cycling": (143, 2),
    "virtual_ride": (152, 2),
    "e_bike_mountain": (175, 2),
    "e_bike_fitness": (176, 2),
    "enduro_mtb": (256, 2),
    "hiking": (3, 17),
    "other": (4, 17),
    "walking": (9, 17),
    "strength_training": (13, 29),
    "swimming": (26, 17),
    "lap_swimming": (27, 26),
    "open_water_swimming": (28, 26),
    "fitness_equipment": (29, 17),
    "indoor_rowing": (32, 29),
    "multi_sport": (89, 17),
    "yoga": (163, 29),
    "stand_up_paddleboarding_v2": (239, 228),
}
_OTHER = _TYPE_IDS["other"]
# (timeZoneId, offset from UTC in hours) of the real answers: America/Mexico_City,
# an UTC-5 zone in January, Europe/Paris in winter. Each seeded activity gets one.
_ZONES = ((150, -6.0), (148, -5.0), (124, 1.0))
_MS_PER_S = 1000

Shape = Literal["2026", "2021", "2018"]


def _fmt(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S")


def _detail_time(list_time: str) -> str:
    """ "2026-01-08 14:10:21" -> "2026-01-08T14:10:21.0", as the detail answer has it."""
    return list_time.replace(" ", "T") + ".0"


def make_record(  # noqa: PLR0917  one positional per record column, as tests read naturally
    activity_id: int,
    name: str,
    type_key: str,
    start_utc: datetime,
    elapsed_s: float,
    distance_m: float | None,
    manual: bool = False,
    *,
    description: str | None = None,
    utc_offset_h: float | None = None,
    shape: Shape = "2026",
) -> dict[str, Any]:
    """An activity-list record in the field layout of Garmin's answers of `shape`.

    Local time is `utc_offset_h` (by default one of the real answers' zones, picked by
    the activity id) ahead of UTC. 2021 and 2018 carry `elapsedDuration` in
    milliseconds; 2018 has no `manualActivity`; 2026 leaves null fields out. A
    `multi_sport` parent has `beginTimestamp: null`, as a real 2021 answer does.
    """
    start = start_utc.astimezone(UTC)
    type_id, parent_type_id = _TYPE_IDS.get(type_key, _OTHER)
    zone_id, offset_h = _ZONES[activity_id % len(_ZONES)]
    if utc_offset_h is not None:
        offset_h = utc_offset_h
    multisport_parent = type_key == "multi_sport"
    record: dict[str, Any] = {
        "activityId": activity_id,
        "activityName": name,
        "description": description,
        "startTimeLocal": _fmt(start + timedelta(hours=offset_h)),
        "startTimeGMT": _fmt(start),
        "activityType": {
            "typeId": type_id,
            "typeKey": type_key,
            "parentTypeId": parent_type_id,
        },
        "distance": distance_m,
        "duration": elapsed_s,
        "elapsedDuration": elapsed_s if shape == "2026" else elapsed_s * _MS_PER_S,
        "movingDuration": None if multisport_parent else elapsed_s,
        "hasPolyline": not manual,
        "beginTimestamp": None if multisport_parent else int(start.timestamp() * 1000),
        "sportTypeId": 1,
        "deviceId": None if manual else 3618356072,
        "manufacturer": None if manual else "GARMIN",
        "timeZoneId": zone_id if utc_offset_h is None else None,
        "parent": multisport_parent,
        "parentId": None,
        "manualActivity": manual,
    }
    if shape == "2026":
        record["endTimeGMT"] = _fmt(start + timedelta(seconds=elapsed_s))
        # 2026 answers leave null fields out; the multisport parent's null start is
        # the one the issue quotes, so it stays.
        return {k: v for k, v in record.items() if v is not None or k == "beginTimestamp"}
    if shape == "2018":
        del record["manualActivity"], record["manufacturer"]
    return record


def _seconds(record: dict[str, Any], key: str) -> Any:
    """A duration of `record` in seconds: list answers of 2018 and 2021 carry
    `elapsedDuration` in milliseconds (a thousand times `duration`), details never."""
    value = record.get(key)
    duration = record.get("duration")
    if (
        key == "elapsedDuration"
        and isinstance(value, int | float)
        and isinstance(duration, int | float)
        and duration > 0
        and value > 100 * duration
    ):
        return value / _MS_PER_S
    return value


def _b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


class _State:
    """Everything the handler threads share, behind one lock."""

    def __init__(self, client_id: str, access_lifetime_s: int) -> None:
        self.lock = threading.Lock()
        self.client_id = client_id
        self.access_lifetime_s = access_lifetime_s
        self.secret = secrets.token_bytes(32)
        self.access: dict[str, float] = {}  # token -> exp (epoch seconds)
        self.refresh: set[str] = set()
        self.records: dict[int, dict[str, Any]] = {}
        self.originals: dict[int, tuple[bytes, str] | None] = {}
        # Huge ORIGINALs made up while they are sent: id -> (size, send Content-Length),
        # and how many bytes of each the emulator managed to send.
        self.huge: dict[int, tuple[int, bool]] = {}
        self.huge_sent: Counter[int] = Counter()
        self.requests: Counter[str] = Counter()
        self.failures: dict[str, deque[int]] = {}

    def mint_access(self, lifetime_s: float) -> str:
        now = time.time()
        exp = now + lifetime_s
        header = {"alg": "HS256", "typ": "JWT"}
        payload = {
            "iat": int(now),
            "exp": int(exp),
            "client_id": self.client_id,
            "jti": secrets.token_hex(8),
            "iss": "sandbox-diauth",
        }
        signing_input = (
            f"{_b64url(json.dumps(header).encode())}.{_b64url(json.dumps(payload).encode())}"
        )
        sig = hmac.new(self.secret, signing_input.encode(), hashlib.sha256).digest()
        token = f"{signing_input}.{_b64url(sig)}"
        self.access[token] = exp
        return token

    def mint_refresh(self) -> str:
        token = "sbx-refresh-" + secrets.token_urlsafe(24)
        self.refresh.add(token)
        return token

    def take_failure(self, endpoint: str) -> int | None:
        queue = self.failures.get(endpoint)
        if queue:
            return queue.popleft()
        return None

    def bearer_ok(self, header: str | None) -> bool:
        if not header or not header.startswith("Bearer "):
            return False
        exp = self.access.get(header.removeprefix("Bearer "))
        return exp is not None and exp > time.time()


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002  stdlib's name
        """Silence per-request stderr lines (tests stay quiet; tokens never printed)."""

    # -- plumbing -------------------------------------------------------------------
    def _send(
        self,
        status: int,
        body: bytes = b"",
        content_type: str = "application/json",
        extra: dict[str, str] | None = None,
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for key, value in (extra or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status: int, payload: Any) -> None:
        self._send(status, json.dumps(payload).encode())

    def _error(self, status: int) -> None:
        try:
            message = HTTPStatus(status).phrase
        except ValueError:
            message = "Error"
        self._json(status, {"message": message})

    def _read_body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    @staticmethod
    def _classify(method: str, path: str) -> str:
        first = path.lstrip("/").split("/", 1)[0]
        if method == "GET" and path == _LIST_PATH:
            return "list"
        if method == "GET" and path.startswith(_DOWNLOAD_PREFIX):
            return "download"
        if method == "GET" and path.startswith(_ACTIVITY_PREFIX):
            return "activity"
        if method == "POST" and path == _TOKEN_PATH:
            return "token_refresh"
        if first in _LOGIN_SEGMENTS:
            return "login"
        return "other"

    def _dispatch(self, method: str) -> None:
        parts = urlsplit(self.path)
        endpoint = self._classify(method, parts.path)
        body = self._read_body()
        state = self.server.state
        with state.lock:
            state.requests[endpoint] += 1
            injected = state.take_failure(endpoint)
        if injected is not None:
            self._error(injected)
            return
        if endpoint == "login":
            self._error(401)
        elif endpoint == "other":
            self._error(404)
        elif endpoint == "token_refresh":
            self._token_refresh(body)
        else:
            with state.lock:
                authorized = state.bearer_ok(self.headers.get("Authorization"))
            if not authorized:
                self._error(401)
            elif endpoint == "list":
                self._list(parse_qs(parts.query))
            elif endpoint == "download":
                self._download(parts.path.removeprefix(_DOWNLOAD_PREFIX))
            else:
                self._activity(parts.path.removeprefix(_ACTIVITY_PREFIX))

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    # -- endpoints ------------------------------------------------------------------
    def _list(self, query: dict[str, list[str]]) -> None:
        try:
            start = int(query.get("start", ["0"])[0])
            limit = int(query.get("limit", ["20"])[0])
        except ValueError:
            self._error(400)
            return
        if start < 0 or not 0 < limit <= _MAX_LIMIT:
            self._error(400)
            return
        state = self.server.state
        with state.lock:
            # By startTimeGMT ("YYYY-MM-DD HH:MM:SS" sorts as text): a multisport
            # parent has no beginTimestamp. A record seeded without one (a test's
            # hostile input) sorts as a string too, never as an error.
            newest_first = sorted(
                state.records.values(),
                key=lambda r: (str(r.get("startTimeGMT") or ""), r["activityId"]),
                reverse=True,
            )
        self._json(200, newest_first[start : start + limit])

    def _lookup(self, raw_id: str) -> tuple[dict[str, Any], tuple[bytes, str] | None] | None:
        if not raw_id.isdigit():
            return None
        state = self.server.state
        with state.lock:
            record = state.records.get(int(raw_id))
            if record is None:
                return None
            return record, state.originals.get(int(raw_id))

    def _download(self, raw_id: str) -> None:
        huge = self.server.state.huge.get(int(raw_id)) if raw_id.isdigit() else None
        if huge is not None:
            self._send_huge(int(raw_id), *huge)
            return
        found = self._lookup(raw_id)
        if found is None or found[1] is None:
            self._error(404)
            return
        data, filename = found[1]
        self._send(
            200,
            data,
            content_type="application/x-zip-compressed",
            extra={"Content-Disposition": f'attachment; filename="{filename}"'},
        )

    def _send_huge(self, activity_id: int, size: int, declare_length: bool) -> None:
        """`size` zero bytes, made up chunk by chunk (never held in memory), until the
        client stops reading; without Content-Length the end is the connection's."""
        self.send_response(200)
        self.send_header("Content-Type", "application/x-zip-compressed")
        if declare_length:
            self.send_header("Content-Length", str(size))
        else:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        chunk = bytes(1024 * 1024)
        left = size
        try:
            while left > 0:
                piece = chunk[: min(left, len(chunk))]
                self.wfile.write(piece)
                left -= len(piece)
                with self.server.state.lock:
                    self.server.state.huge_sent[activity_id] += len(piece)
        except OSError:  # the client hung up: what it wanted to show
            self.close_connection = True

    def _activity(self, raw_id: str) -> None:
        found = self._lookup(raw_id)
        if found is None:
            self._error(404)
            return
        record, original = found
        manual = original is None
        format_key = "manual" if manual else _format_key(original[1] if original else "")
        detail: dict[str, Any] = {
            "activityId": record["activityId"],
            "activityName": record["activityName"],
            "isMultiSportParent": bool(record.get("parent")),
            "activityTypeDTO": record["activityType"],
            "metadataDTO": {
                "isOriginal": not manual,
                "manualActivity": manual,
                "fileFormat": None if manual else {"formatKey": format_key},
            },
            "summaryDTO": {
                "startTimeLocal": _detail_time(
                    record.get("startTimeLocal", record["startTimeGMT"])
                ),
                "startTimeGMT": _detail_time(record["startTimeGMT"]),
                "distance": record.get("distance"),
                "duration": record.get("duration"),
                "elapsedDuration": _seconds(record, "elapsedDuration"),
                "movingDuration": record.get("movingDuration"),
            },
        }
        if record.get("description"):
            detail["description"] = record["description"]
        self._json(200, detail)

    def _token_refresh(self, body: bytes) -> None:
        form = parse_qs(body.decode("utf-8", "replace"))
        grant = form.get("grant_type", [""])[0]
        old = form.get("refresh_token", [""])[0]
        state = self.server.state
        payload: dict[str, Any]
        with state.lock:
            if grant != "refresh_token":
                status, payload = 400, {"error": "unsupported_grant_type"}
            elif old not in state.refresh:
                status, payload = 401, {"error": "invalid_grant"}
            else:
                # Rotation: the presented refresh token dies at once.
                state.refresh.discard(old)
                payload = {
                    "access_token": state.mint_access(state.access_lifetime_s),
                    "refresh_token": state.mint_refresh(),
                    "token_type": "Bearer",
                    "expires_in": state.access_lifetime_s,
                    "refresh_token_expires_in": 7_776_000,
                    "scope": "CONNECT_READ CONNECT_WRITE",
                }
                status = 200
        self._json(status, payload)


def _format_key(filename: str) -> str:
    lowered = filename.lower()
    for ext in ("fit", "gpx", "tcx"):
        if f".{ext}" in lowered:
            return ext
    return "fit"


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, state: _State) -> None:
        self.state = state
        super().__init__(("127.0.0.1", 0), _Handler)


class GarminSandbox:
    """Garmin Connect on http://127.0.0.1:PORT, in a daemon thread.

    `requests` counts requests per endpoint name (see ENDPOINTS).
    """

    def __init__(self, *, access_lifetime_s: int = 3600) -> None:
        self._state = _State(SANDBOX_CLIENT_ID, access_lifetime_s)
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ------------------------------------------------------------------
    def start(self) -> Self:
        if self._server is None:
            self._server = _Server(self._state)
            self._thread = threading.Thread(
                target=self._server.serve_forever,
                kwargs={"poll_interval": 0.05},
                name="garmin-sandbox",
                daemon=True,
            )
            self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            if self._thread is not None:
                self._thread.join(timeout=5)
            self._server = None
            self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        if self._server is None:
            raise RuntimeError("GarminSandbox is not started")
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    @property
    def di_token_url(self) -> str:
        return f"{self.base_url}{_TOKEN_PATH}"

    # -- data -----------------------------------------------------------------------
    @property
    def requests(self) -> Counter[str]:
        return self._state.requests

    def add_activity(
        self,
        record: dict[str, Any],
        original: bytes | None,
        *,
        original_name: str | None = None,
    ) -> None:
        """Serve `record` in the list; `original` (zip bytes) or None for a manual one."""
        activity_id = int(record["activityId"])
        with self._state.lock:
            self._state.records[activity_id] = dict(record)
            self._state.originals[activity_id] = (
                None if original is None else (original, original_name or f"{activity_id}.zip")
            )

    def add_huge_original(
        self, record: dict[str, Any], size: int, *, declare_length: bool = True
    ) -> None:
        """Serve `record` with an ORIGINAL of `size` bytes, generated while it is sent."""
        self.add_activity(record, b"")
        with self._state.lock:
            self._state.huge[int(record["activityId"])] = (size, declare_length)

    def huge_bytes_sent(self, activity_id: int) -> int:
        with self._state.lock:
            return self._state.huge_sent[activity_id]

    make_record = staticmethod(make_record)

    # -- tokens ---------------------------------------------------------------------
    def issue_tokens(self, lifetime_s: float = 3600) -> str:
        """A fresh `client.dumps()` blob; `lifetime_s` <= 0 gives an expired access token."""
        with self._state.lock:
            blob = {
                "di_token": self._state.mint_access(lifetime_s),
                "di_refresh_token": self._state.mint_refresh(),
                "di_client_id": self._state.client_id,
            }
        return json.dumps(blob)

    def revoke_all_tokens(self) -> None:
        with self._state.lock:
            self._state.access.clear()
            self._state.refresh.clear()

    def is_refresh_token_valid(self, token: str) -> bool:
        with self._state.lock:
            return token in self._state.refresh

    def is_access_token_valid(self, token: str) -> bool:
        with self._state.lock:
            return self._state.bearer_ok(f"Bearer {token}")

    # -- faults ---------------------------------------------------------------------
    def fail_next(self, endpoint: str, status: int, times: int = 1) -> None:
        """Answer the next `times` requests to `endpoint` with `status` (and no work)."""
        if endpoint not in ENDPOINTS:
            raise ValueError(f"unknown endpoint {endpoint!r}; one of {ENDPOINTS}")
        with self._state.lock:
            self._state.failures.setdefault(endpoint, deque()).extend([status] * times)
