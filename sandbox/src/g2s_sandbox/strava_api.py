"""The Strava emulator's request handling: the OAuth token, revoke and deauthorize endpoints,
the API v3 endpoints with their rate limits and injected faults, and the parsing of
request bodies. Stdlib only."""

from __future__ import annotations

import base64
import binascii
import json
import re
import secrets
from email.parser import BytesParser
from email.policy import HTTP
from typing import Any
from urllib.parse import parse_qs

from g2s_sandbox.strava_records import SandboxAthlete, SandboxUpload
from g2s_sandbox.strava_state import StravaState
from g2s_sandbox.strava_streams import activity_streams

__all__ = ["StravaApi"]


def _error_body(message: str, resource: str, fld: str, code: str) -> dict[str, Any]:
    return {"message": message, "errors": [{"resource": resource, "field": fld, "code": code}]}


class StravaApi(StravaState):
    """The emulator's answers to requests, given as (method, path, query, headers, body)."""

    def _oauth(
        self, path: str, query: dict[str, str], headers: Any, body: bytes
    ) -> tuple[int, dict[str, Any] | list[Any], dict[str, str]]:
        """POST /oauth/token, /oauth/revoke and /oauth/deauthorize (the caller holds the
        lock)."""
        if path == "/oauth/token":
            self.requests["token"] += 1
            injected = self._injected_failure("token")
            if injected is not None:
                return injected, _error_body("Injected failure", "Sandbox", "token", "x"), {}
            form = {**query, **_parse_form(headers, body)}
            token_status, token_payload = self._token(form)
            return token_status, token_payload, {}
        if path == "/oauth/revoke":
            self.requests["revoke"] += 1
            return (*self._revoke(headers, {**query, **_parse_form(headers, body)}), {})
        if path == "/oauth/deauthorize":
            self.requests["deauthorize"] += 1
            athlete = self._athlete_for(_bearer(headers) or query.get("access_token"))
            if athlete is None:
                return 401, _error_body("Authorization Error", "Athlete", "", "invalid"), {}
            self.deauthorize(athlete.athlete_id)
            return 200, {"access_token": ""}, {}
        return 404, _error_body("Record Not Found", "Path", path, "invalid"), {}

    def handle(  # noqa: PLR0911 - one dispatch table, read top to bottom
        self, method: str, path: str, query: dict[str, str], headers: Any, body: bytes
    ) -> tuple[int, dict[str, Any] | list[Any], dict[str, str]]:
        if self.application_inactive and path.startswith("/api/v3/"):
            with self.lock:
                self.requests["inactive"] += 1
            # Strava's answer, shaped after stravalib issue #730.
            return 403, _error_body("Forbidden", "Application", "Status", "Inactive"), {}
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
            if path.startswith("/oauth/") and method == "POST":
                return self._oauth(path, query, headers, body)
            if not path.startswith("/api/v3/"):
                return 404, _error_body("Record Not Found", "Path", path, "invalid"), {}
            endpoint, arg = _route(method, path.removeprefix("/api/v3"))
            self.requests[endpoint] += 1
            allowed = self._count(is_upload=endpoint == "upload", is_write=endpoint == "update")
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

    def _revoke(self, headers: Any, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
        """As Strava documents it: HTTP Basic client id and secret, the access or the
        refresh token in `token`; revoking either revokes both (the athlete's
        deauthorization, event included)."""
        if not self.revoke_available:
            return 404, _error_body("Record Not Found", "Path", "/oauth/revoke", "invalid")
        injected = self._injected_failure("revoke")
        if injected is not None:
            return injected, _error_body("Injected failure", "Sandbox", "revoke", "x")
        user, password = _basic(headers)
        if user != str(self.client_id) or not secrets.compare_digest(password, self.client_secret):
            return 401, _error_body("Authorization Error", "Application", "client_id", "invalid")
        token = form.get("token", "")
        athlete = self._athlete_for(token) or next(
            (
                a
                for a in self._athletes.values()
                if a.refresh_token and token and secrets.compare_digest(a.refresh_token, token)
            ),
            None,
        )
        if athlete is None:
            return 400, _error_body("Bad Request", "Token", "token", "invalid")
        self.deauthorize(athlete.athlete_id)
        return 200, {}

    def _capped(self, athlete_id: int) -> bool:
        """Would connecting `athlete_id` exceed the application's athlete capacity?"""
        if self.athlete_capacity is None:
            return False
        connected = {a.athlete_id for a in self._athletes.values() if a.refresh_token}
        return athlete_id not in connected and len(connected) >= self.athlete_capacity

    def _token(  # noqa: PLR0911 - one answer per grant and refusal
        self, form: dict[str, str]
    ) -> tuple[int, dict[str, Any]]:
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
            if self._capped(athlete_id):
                return 403, {
                    "message": "Limit of connected athletes exceeded",
                    "errors": [{"resource": "Application", "field": "athletes", "code": "limit"}],
                }
            athlete = self._athletes.setdefault(athlete_id, SandboxAthlete(athlete_id, scope))
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
        athlete: SandboxAthlete,
        *,
        query: dict[str, str],
        headers: Any,
        body: bytes,
    ) -> tuple[int, dict[str, Any] | list[Any]]:
        scopes = set(athlete.scope.split(","))
        if endpoint == "athlete":
            return 200, athlete.profile()
        if endpoint == "update" and arg is not None:
            return self._update(arg, athlete, body)
        if endpoint == "list":
            if not scopes & {"activity:read", "activity:read_all"}:
                return 401, _error_body(
                    "Authorization Error", "AccessToken", "activity:read_permission", "missing"
                )
            return 200, self._list(athlete, query, private="activity:read_all" in scopes)
        if endpoint in {"activity", "streams"} and arg is not None:
            return self._activity(endpoint, arg, athlete, query)
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

    def _activity(
        self, endpoint: str, activity_id: int, athlete: SandboxAthlete, query: dict[str, str]
    ) -> tuple[int, dict[str, Any] | list[Any]]:
        """GET /activities/{id} and GET /activities/{id}/streams."""
        found = self.activities.get(activity_id)
        if found is None or found.deleted or found.athlete_id != athlete.athlete_id:
            return 404, _error_body("Record Not Found", "Activity", "id", "invalid")
        if endpoint == "streams":
            by_type = query.get("key_by_type", "").lower() == "true"
            return activity_streams(found, query.get("keys", ""), key_by_type=by_type)
        return 200, found.detail()

    def _update(
        self, activity_id: int, athlete: SandboxAthlete, body: bytes
    ) -> tuple[int, dict[str, Any] | list[Any]]:
        """PUT /activities/{id} (a JSON body, as stravalib sends it): applies `name`,
        `description`, `gear_id` ("none" clears it), `hide_from_home`, `trainer` and
        `commute`; the athlete's save emits one update event, as an edit on strava.com
        does (`updates` carries the title when it changed)."""
        if "activity:write" not in athlete.scope.split(","):
            return 401, _error_body(
                "Authorization Error", "AccessToken", "activity:write_permission", "missing"
            )
        found = self.activities.get(activity_id)
        if found is None or found.deleted or found.athlete_id != athlete.athlete_id:
            return 404, _error_body("Record Not Found", "Activity", "id", "invalid")
        fields = _json_object(body)
        if fields is None:
            return 400, _error_body("Bad Request", "Activity", "body", "invalid")
        gear_id = fields.get("gear_id")
        if gear_id is not None and gear_id != "none" and gear_id not in athlete.gear_ids():
            return 400, _error_body("Bad Request", "Activity", "gear_id", "invalid")
        updates: dict[str, str] = {}
        if isinstance(fields.get("name"), str) and fields["name"] != found.name:
            found.name = updates["title"] = fields["name"]
        if isinstance(fields.get("description"), str):
            found.description = fields["description"]
        if gear_id is not None:
            found.gear_id = None if gear_id == "none" else str(gear_id)
        for flag in ("hide_from_home", "trainer", "commute"):
            if isinstance(fields.get(flag), bool):
                setattr(found, flag, fields[flag])
        self.activity_updates.append((activity_id, dict(fields)))
        self._publish(activity_id, "update", updates)
        return 200, found.detail()

    def _list(self, athlete: SandboxAthlete, query: dict[str, str], *, private: bool) -> list[Any]:
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
        self, athlete: SandboxAthlete, query: dict[str, str], headers: Any, body: bytes
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
    ("PUT", re.compile(r"/activities/(\d+)"), "update"),
    ("GET", re.compile(r"/activities/(\d+)/streams"), "streams"),
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


def _basic(headers: Any) -> tuple[str, str]:
    """HTTP Basic credentials ("", "" when absent or malformed)."""
    value = headers.get("Authorization") or ""
    if not value.lower().startswith("basic "):
        return "", ""
    try:
        user, _, password = base64.b64decode(value[6:].strip()).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return "", ""
    return user, password


def _json_object(body: bytes) -> dict[str, Any] | None:
    try:
        value = json.loads(body or b"{}")
    except (ValueError, UnicodeDecodeError):
        return None
    return value if isinstance(value, dict) else None


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
