"""A local Garmin Connect emulator on loopback (stdlib only).

The activity list, the ORIGINAL download, the activity detail and the DI OAuth2 token
refresh, with records shaped after real answers of 2018, 2021 and 2026
(`make_record(..., shape=...)`); and the SSO credential and MFA login under `/sso`,
counted as `login` requests. sandbox/README.md, "The Garmin emulator", lists the
shapes and every endpoint's answers.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import secrets
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http import HTTPStatus
from http.cookies import CookieError, SimpleCookie
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal, Self
from urllib.parse import parse_qs, urlsplit

__all__ = ["ENDPOINTS", "GarminSandbox", "SandboxAccount", "gear_record", "make_record"]

ENDPOINTS = (
    "list",
    "download",
    "activity",
    "gear",
    "token_refresh",
    "ticket_exchange",
    "profile",
    "login",
    "other",
)
SANDBOX_CLIENT_ID = "GARMIN_CONNECT_MOBILE_ANDROID_DI_SANDBOX"
_LIST_PATH = "/activitylist-service/activities/search/activities"
_DOWNLOAD_PREFIX = "/download-service/files/activity/"
_ACTIVITY_PREFIX = "/activity-service/activity/"
_TOKEN_PATH = "/di-oauth2-service/oauth/token"
_PROFILE_PATH = "/userprofile-service/socialProfile"
# The gear of one activity (`?activityId=`), garminconnect's `get_activity_gear`.
_GEAR_PATH = "/gear-service/gear/filterGear"
_TICKET_GRANT = "https://connectapi.garmin.com/di-oauth2-service/oauth/grant/service_ticket"
# The DI clients Garmin's mobile apps use (their names carry a quarter: ..._DI_2025Q2).
_DI_CLIENT_RE = re.compile(r"GARMIN_CONNECT_MOBILE_(ANDROID|IOS)_DI(_\d{4}Q[1-4])?")
# The SSO flows served, by path below /sso: (sign-in page, login, MFA verification).
_SSO_FLOWS = {
    "mobile": ("/sso/mobile/sso/en_US/sign-in", "/sso/mobile/api/login"),
    "portal": ("/sso/portal/sso/en-US/sign-in", "/sso/portal/api/login"),
}
_SIGNIN_PAGES = frozenset(page for page, _login in _SSO_FLOWS.values())
_LOGIN_POSTS = frozenset(login for _page, login in _SSO_FLOWS.values())
_MFA_POSTS = frozenset({"/sso/mobile/api/mfa/verifyCode", "/sso/portal/api/mfa/verifyCode"})
_TICKET_LIFETIME_S = 120.0
# Cloudflare's block page (error 1020, "Access denied"), trimmed: HTML, not JSON.
_REFUSED_HTML = (
    b"<!DOCTYPE html><html><head><title>Access denied | connectapi.garmin.com used "
    b"Cloudflare to restrict access</title></head><body><h1>Error 1020</h1>"
    b"<p>Access denied</p></body></html>"
)
_PROFILE_ID = 90_210_001
_PROFILE_GUID = "5b3a7c1e-9d2f-4e8a-b6c0-1f2e3d4c5b6a"
_SIGNIN_HTML = (
    b"<!DOCTYPE html><html><head><title>GARMIN Authentication Application</title>"
    b"</head><body></body></html>"
)
# First path segments of the SSO / CAS / web-login flows (the adapter points the
# library's _sso, _connect and service URLs at this server under these names).
_LOGIN_SEGMENTS = frozenset({"sso", "connect", "gcm", "mobile", "portal", "signin", "services"})
_MAX_LIMIT = 1000
_EXACT_ENDPOINTS = {
    ("GET", _LIST_PATH): "list",
    ("GET", _PROFILE_PATH): "profile",
    ("GET", _GEAR_PATH): "gear",
}
_PREFIX_ENDPOINTS = (("GET", _DOWNLOAD_PREFIX, "download"), ("GET", _ACTIVITY_PREFIX, "activity"))

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


def gear_record(display_name: str, *, type_name: str = "Shoes") -> dict[str, Any]:
    """A gear record as Garmin's `filterGear` lists them, from a real one: its uuid a
    32-hex-digit string derived from the name, `customMakeModel` the name too."""
    digest = hashlib.sha256(display_name.encode()).hexdigest()
    return {
        "gearPk": int(digest[:7], 16),
        "uuid": digest[:32],
        "userProfilePk": _PROFILE_ID,
        "gearMakeName": "Other",
        "gearModelName": "Unknown Shoes" if type_name == "Shoes" else "Unknown Bike",
        "gearTypeName": type_name,
        "gearStatusName": "active",
        "displayName": display_name,
        "customMakeModel": display_name,
        "imageNameLarge": None,
        "imageNameMedium": None,
        "imageNameSmall": None,
        "dateBegin": "2024-09-04T22:00:00.0",
        "dateEnd": None,
        "maximumMeters": 0,
        "notified": True,
        "createDate": "2024-09-05T18:09:05.0",
        "updateDate": "2025-10-03T13:07:12.0",
    }


def _b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


@dataclass(frozen=True, slots=True)
class SandboxAccount:
    """The one Garmin account the emulator's SSO knows (`mfa_code` None: no MFA)."""

    email: str
    password: str = field(repr=False)
    mfa_code: str | None = field(default=None, repr=False)
    mfa_method: str = "email"


@dataclass(slots=True)
class _SsoSession:
    """One browser session of the SSO (the `SESSION` cookie), and its pending MFA login."""

    mfa_service: str | None = None  # the service the pending login asked a ticket for


class _State:
    """Everything the handler threads share, behind one lock."""

    def __init__(self, client_id: str, access_lifetime_s: int) -> None:
        self.lock = threading.Lock()
        self.client_id = client_id
        self.access_lifetime_s = access_lifetime_s
        self.secret = secrets.token_bytes(32)
        self.access: dict[str, float] = {}  # token -> exp (epoch seconds)
        self.refresh: dict[str, str] = {}  # refresh token -> the DI client it belongs to
        self.records: dict[int, dict[str, Any]] = {}
        self.gear: dict[int, list[dict[str, Any]]] = {}  # activity id -> gear records
        self.originals: dict[int, tuple[bytes, str] | None] = {}
        # Huge ORIGINALs made up while they are sent: id -> (size, send Content-Length),
        # and how many bytes of each the emulator managed to send.
        self.huge: dict[int, tuple[int, bool]] = {}
        self.huge_sent: Counter[int] = Counter()
        self.requests: Counter[str] = Counter()
        self.failures: dict[str, deque[int]] = {}
        self.account: SandboxAccount | None = None
        self.sessions: dict[str, _SsoSession] = {}
        self.tickets: dict[str, tuple[str, float]] = {}  # ticket -> (service URL, expiry)
        self.logins_blocked = False
        # While True, every request answers 403 as Garmin's edge does to a refused
        # network (`refuse_network`); counted under `refused` besides its endpoint.
        self.network_refused = False
        # While True, the DI ticket exchange refuses every client (`refuse_di_exchange`)
        # and a ticket taken to its service URL sets a JWT_WEB cookie instead, which
        # the API tier accepts: the library's web-session fallback.
        self.di_exchange_refused = False
        self.jwt_web: set[str] = set()
        self.login_attempts: Counter[str] = Counter()

    def mint_access(self, lifetime_s: float, client_id: str | None = None) -> str:
        now = time.time()
        exp = now + lifetime_s
        header = {"alg": "HS256", "typ": "JWT"}
        payload = {
            "iat": int(now),
            "exp": int(exp),
            "client_id": client_id or self.client_id,
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

    def mint_refresh(self, client_id: str | None = None) -> str:
        token = "sbx-refresh-" + secrets.token_urlsafe(24)
        self.refresh[token] = client_id or self.client_id
        return token

    def mint_ticket(self, service: str) -> str:
        ticket = f"ST-{secrets.randbelow(10**7):07d}-{secrets.token_urlsafe(15)}-cas"
        self.tickets[ticket] = (service, time.time() + _TICKET_LIFETIME_S)
        return ticket

    def token_answer(self, client_id: str) -> dict[str, Any]:
        """The DI token endpoint's JSON for a new pair of tokens of `client_id`."""
        return {
            "access_token": self.mint_access(self.access_lifetime_s, client_id),
            "refresh_token": self.mint_refresh(client_id),
            "token_type": "Bearer",
            "expires_in": self.access_lifetime_s,
            "refresh_token_expires_in": 7_776_000,
            "scope": "CONNECT_READ CONNECT_WRITE",
        }

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

    def _session_id(self) -> str | None:
        """The SSO session this request carries (its `SESSION` cookie), if any."""
        try:
            jar = SimpleCookie(self.headers.get("Cookie") or "")
        except CookieError:
            return None
        morsel = jar.get("SESSION")
        return morsel.value if morsel is not None else None

    @staticmethod
    def _classify(method: str, path: str, body: bytes) -> str:
        exact = _EXACT_ENDPOINTS.get((method, path))
        if exact is not None:
            return exact
        for prefix_method, prefix, name in _PREFIX_ENDPOINTS:
            if method == prefix_method and path.startswith(prefix):
                return name
        if method == "POST" and path == _TOKEN_PATH:
            grant = parse_qs(body.decode("utf-8", "replace")).get("grant_type", [""])[0]
            return "ticket_exchange" if grant == _TICKET_GRANT else "token_refresh"
        return "login" if path.lstrip("/").split("/", 1)[0] in _LOGIN_SEGMENTS else "other"

    def _dispatch(self, method: str) -> None:
        parts = urlsplit(self.path)
        body = self._read_body()
        endpoint = self._classify(method, parts.path, body)
        state = self.server.state
        with state.lock:
            state.requests[endpoint] += 1
            injected = state.take_failure(endpoint)
            refused = injected is None and state.network_refused
            if refused:
                state.requests["refused"] += 1
            if not refused and injected is None and endpoint == "login" and state.logins_blocked:
                injected = HTTPStatus.TOO_MANY_REQUESTS
                state.login_attempts["rate_limited"] += 1
        if refused:
            self._send(HTTPStatus.FORBIDDEN, _REFUSED_HTML, content_type="text/html")
            return
        if injected is not None:
            self._error(injected)
            return
        if endpoint == "login":
            self._sso(method, parts.path, parse_qs(parts.query), body)
        elif endpoint == "other":
            self._error(404)
        elif endpoint == "token_refresh":
            self._token_refresh(body)
        elif endpoint == "ticket_exchange":
            self._ticket_exchange(body)
        else:
            self._api(endpoint, parts.path, parts.query)

    def _api(self, endpoint: str, path: str, query: str) -> None:
        """An endpoint of the API tier: a live bearer token, else 401."""
        state = self.server.state
        with state.lock:
            authorized = state.bearer_ok(self.headers.get("Authorization")) or (
                self._jwt_web() in state.jwt_web
            )
        if not authorized:
            self._error(401)
        elif endpoint == "list":
            self._list(parse_qs(query))
        elif endpoint == "download":
            self._download(path.removeprefix(_DOWNLOAD_PREFIX))
        elif endpoint == "profile":
            self._profile()
        elif endpoint == "gear":
            self._activity_gear(parse_qs(query))
        else:
            self._activity(path.removeprefix(_ACTIVITY_PREFIX))

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

    def _activity_gear(self, query: dict[str, list[str]]) -> None:
        """The gear records linked to `activityId`: a list, empty when none (Garmin
        answers the same for an activity without gear)."""
        raw_id = query.get("activityId", [""])[0]
        if not raw_id.isdigit():
            self._error(400)
            return
        with self.server.state.lock:
            found = [dict(g) for g in self.server.state.gear.get(int(raw_id), [])]
        self._json(200, found)

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
                payload = state.token_answer(state.refresh.pop(old))
                status = 200
        self._json(status, payload)

    # -- the login (SSO) ------------------------------------------------------------
    def _sso(self, method: str, path: str, query: dict[str, list[str]], body: bytes) -> None:
        if method == "GET" and path in _SIGNIN_PAGES:
            self._signin_page()
        elif method == "POST" and path in _LOGIN_POSTS:
            self._credentials(query.get("service", [""])[0], body)
        elif method == "POST" and path in _MFA_POSTS:
            self._verify_mfa(body)
        elif method == "GET" and "ticket" in query:
            self._web_session(path, query["ticket"][0])
        else:  # the embed widget, the CAS web login, ...: not served
            self._error(401)

    def _jwt_web(self) -> str:
        try:
            morsel = SimpleCookie(self.headers.get("Cookie") or "").get("JWT_WEB")
        except CookieError:
            return ""
        return morsel.value if morsel is not None else ""

    def _web_session(self, path: str, ticket: str) -> None:
        """A service ticket taken to its service URL (the web login's last step): a
        JWT_WEB session cookie, served only while the DI exchange is refused."""
        state = self.server.state
        with state.lock:
            issued = state.tickets.pop(ticket, None)
            valid = (
                state.di_exchange_refused
                and issued is not None
                and urlsplit(issued[0]).path == path
                and issued[1] >= time.time()
            )
            cookie = secrets.token_urlsafe(24)
            if valid:
                state.jwt_web.add(cookie)
        if not valid:
            self._error(401)
            return
        self._send(
            200,
            b"<html><body>signed in</body></html>",
            content_type="text/html",
            extra={"Set-Cookie": f"JWT_WEB={cookie}; Path=/; HttpOnly"},
        )

    def _signin_page(self) -> None:
        state = self.server.state
        session_id = self._session_id()
        with state.lock:
            if session_id is None or session_id not in state.sessions:
                session_id = secrets.token_urlsafe(24)
                state.sessions[session_id] = _SsoSession()
        cookie = f"SESSION={session_id}; Path=/; HttpOnly"
        self._send(200, _SIGNIN_HTML, content_type="text/html", extra={"Set-Cookie": cookie})

    def _credentials(self, service: str, body: bytes) -> None:
        """The JSON credential POST of the mobile and portal flows."""
        fields = _json_object(body)
        if fields is None or not service:
            self._error(400)
            return
        state = self.server.state
        session_id = self._session_id()
        payload: dict[str, Any]
        with state.lock:
            session = state.sessions.get(session_id or "")
            if session is None:  # the sign-in page was skipped
                state.login_attempts["no_session"] += 1
                blocked = True
            else:
                blocked = False
                account = state.account
                session.mfa_service = None
                if account is None or not _same_credentials(account, fields):
                    outcome = "wrong_password"
                    payload = {"responseStatus": {"type": "INVALID_USERNAME_PASSWORD"}}
                elif account.mfa_code is not None:
                    outcome = "mfa_required"
                    session.mfa_service = service
                    payload = {
                        "responseStatus": {"type": "MFA_REQUIRED"},
                        "customerMfaInfo": {"mfaLastMethodUsed": account.mfa_method},
                    }
                else:
                    outcome = "signed_in"
                    payload = {
                        "responseStatus": {"type": "SUCCESSFUL"},
                        "serviceTicketId": state.mint_ticket(service),
                    }
                state.login_attempts[outcome] += 1
        if blocked:
            self._error(HTTPStatus.TOO_MANY_REQUESTS)
            return
        self._json(200, payload)

    def _verify_mfa(self, body: bytes) -> None:
        fields = _json_object(body)
        if fields is None:
            self._error(400)
            return
        state = self.server.state
        session_id = self._session_id()
        payload: dict[str, Any] | None = None
        with state.lock:
            session = state.sessions.get(session_id or "")
            account = state.account
            if session is not None and session.mfa_service is not None and account is not None:
                code = str(fields.get("mfaVerificationCode", ""))
                if account.mfa_code is not None and hmac.compare_digest(
                    code.encode(), account.mfa_code.encode()
                ):
                    state.login_attempts["mfa_signed_in"] += 1
                    payload = {
                        "responseStatus": {"type": "SUCCESSFUL"},
                        "serviceTicketId": state.mint_ticket(session.mfa_service),
                    }
                    session.mfa_service = None
                else:  # the login stays pending: the user may type the code again
                    state.login_attempts["wrong_mfa_code"] += 1
                    payload = {"responseStatus": {"type": "INVALID_MFA_CODE"}}
        if payload is None:  # no login of this session waits for a code
            self._error(409)
            return
        self._json(200, payload)

    def _ticket_exchange(self, body: bytes) -> None:
        """Service ticket -> DI tokens, for a Garmin mobile DI client."""
        form = parse_qs(body.decode("utf-8", "replace"))
        client_id = form.get("client_id", [""])[0]
        ticket = form.get("service_ticket", [""])[0]
        service = form.get("service_url", [""])[0]
        basic = "Basic " + base64.b64encode(f"{client_id}:".encode()).decode("ascii")
        state = self.server.state
        payload: dict[str, Any]
        with state.lock:
            if (
                state.di_exchange_refused
                or not _DI_CLIENT_RE.fullmatch(client_id)
                or self.headers.get("Authorization") != basic
            ):
                status, payload = 401, {"error": "invalid_client"}
            else:
                issued = state.tickets.pop(ticket, None)  # single-use, even when refused
                if issued is None or issued[0] != service or issued[1] < time.time():
                    status, payload = 400, {"error": "invalid_grant"}
                else:
                    status, payload = 200, state.token_answer(client_id)
        self._json(status, payload)

    def _profile(self) -> None:
        account = self.server.state.account
        self._json(
            200,
            {
                "id": _PROFILE_ID,
                "profileId": _PROFILE_ID,
                "garminGUID": _PROFILE_GUID,
                "displayName": "sandbox-runner",
                "fullName": "Sandbox Runner",
                "userName": account.email if account is not None else "runner@example.com",
                "location": "Mexico City",
            },
        )


def _json_object(body: bytes) -> dict[str, Any] | None:
    try:
        value = json.loads(body or b"null")
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _same_credentials(account: SandboxAccount, fields: dict[str, Any]) -> bool:
    """Garmin's sign-in names are e-mail addresses: their case does not matter."""
    email = str(fields.get("username", ""))
    password = str(fields.get("password", ""))
    return email.casefold() == account.email.casefold() and hmac.compare_digest(
        password.encode(), account.password.encode()
    )


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

    @property
    def login_attempts(self) -> Counter[str]:
        """Credential and MFA-code submissions by outcome: signed_in, mfa_required,
        mfa_signed_in, wrong_password, wrong_mfa_code, no_session, rate_limited (the
        last counts every SSO request refused while `block_logins` holds)."""
        return self._state.login_attempts

    # -- the account and its login --------------------------------------------------
    def set_account(
        self,
        email: str,
        password: str,
        *,
        mfa_code: str | None = None,
        mfa_method: str = "email",
    ) -> None:
        """The account the SSO signs in (`mfa_code`: the code it then asks for)."""
        with self._state.lock:
            self._state.account = SandboxAccount(email, password, mfa_code, mfa_method)

    def refuse_network(self, *, refused: bool = True) -> None:
        """While refused, every request (API, token refresh, SSO) answers 403 with an
        HTML block page, as Garmin's Cloudflare edge answers a blocked cloud address;
        garminconnect then raises "API Error 403" (no JSON detail) or "DI token
        refresh failed: 403"."""
        with self._state.lock:
            self._state.network_refused = refused

    def refuse_di_exchange(self, *, refused: bool = True) -> None:
        """While refused, the DI ticket exchange answers 401 to every client, and a
        ticket taken to its service URL gets a JWT_WEB cookie the API tier accepts:
        garminconnect's fallback, a login whose `dumps()` has all-null DI fields."""
        with self._state.lock:
            self._state.di_exchange_refused = refused

    def block_logins(self, *, blocked: bool = True) -> None:
        """While blocked, every SSO request answers 429 (tokens still refresh)."""
        with self._state.lock:
            self._state.logins_blocked = blocked

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

    def rename_activity(self, activity_id: int, name: str) -> None:
        """The athlete renames an activity on Garmin Connect: the list shows it."""
        with self._state.lock:
            self._state.records[activity_id]["activityName"] = name

    def set_activity_gear(self, activity_id: int, *names: str) -> list[dict[str, Any]]:
        """Link gear to an activity, one record per name, shaped after a real
        filterGear record (a pair of shoes with a display name)."""
        records = [gear_record(name) for name in names]
        with self._state.lock:
            self._state.gear[activity_id] = records
        return records

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
