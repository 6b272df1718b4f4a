"""One athlete's Strava within the application's shared rate budget and access: the
policy around the thin client (adapters.strava), in one place.

- the rate budget (domain.budget): application-wide, read before every API request
  and written from Strava's headers after it; a spent budget or a 429 raises
  RateLimited instead of waiting;
- the application's access (domain.app_access): Strava's 403 "Application Status
  Inactive" (the owner's subscription lapsed) is kept application-wide; while it
  holds, calls raise StravaAppInactive without a request, except one probe per
  15-minute window (claimed with a conditional lease, so one in all processes); the
  first call that succeeds clears it. Both changes go to every account's audit;
- Strava's outage (domain.strava_outage): no answer, a 5xx or a 408 marks it
  application-wide, the next answer ends it;
- the audit of each token refresh.

It reaches the store only through the narrow ports it needs: AppState, SyncLeases,
AuditLog, Accounts. One object serves one account from one thread at a time.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import InitVar, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

from garmin2strava.domain.app_access import APP_ACCESS_KEY, StravaAppAccess
from garmin2strava.domain.budget import RateBudget, next_window_reset
from garmin2strava.domain.gear import StravaGear
from garmin2strava.domain.models import AuditEvent, StravaActivity, StravaTokens, UploadStatus
from garmin2strava.domain.strava_finish import ActivityUpdate
from garmin2strava.domain.strava_outage import STRAVA_OUTAGE_KEY, StravaOutage
from garmin2strava.domain.streams import BACKGROUND_RESERVE
from garmin2strava.errors import (
    APP_INACTIVE_CAUSE,
    RateLimited,
    StravaAppInactive,
    TransientError,
)
from garmin2strava.ports import Accounts, AppState, AuditLog, StravaApi, SyncLeases
from garmin2strava.services.status import STRAVA_BUDGET_KEY

__all__ = ["PROBE_LEASE", "StravaAccess"]

# The name these lines have always carried (the "logger" field of every JSON line):
# the policy moved out of the adapter, its log lines did not change.
log = logging.getLogger("garmin2strava.adapters.strava")

# The lease that holds an inactive application's probe for one window. Not a user: the
# `~` is outside the characters a user id may have (settings.user_id).
PROBE_LEASE = "~strava-app-probe"
# How often an answering client looks whether an outage is marked, to end it: a store
# read a minute for the whole process (these objects are built per cycle and per
# event), not one per request.
_OUTAGE_LOOK_S = 60.0
_outage_looked_at = [-math.inf]  # monotonic; -inf after a failure: the next answer looks


@dataclass(kw_only=True, eq=False)
class StravaAccess:
    """ports.StravaPort and ports.AccessCheck for one account: the client that
    `client_for` builds (given this object as its ports.StravaRequestPolicy) within the
    shared rate budget and the application's access."""

    client_for: InitVar[Callable[[StravaAccess], StravaApi]]
    app_state: AppState
    leases: SyncLeases  # the probe's lease
    audit: AuditLog
    accounts: Accounts  # whose audits hear of the application's state
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))
    audit_retention_days: int = 7
    # Background access (reconciliation) reads only while BACKGROUND_RESERVE of the
    # budget is left for the uploader; stream reads always do.
    background: bool = False
    _client: StravaApi = field(init=False)
    _user_id: str = field(init=False)

    def __post_init__(self, client_for: Callable[[StravaAccess], StravaApi]) -> None:
        self._client = client_for(self)
        self._user_id = self._client.user_id

    def __repr__(self) -> str:
        return f"StravaAccess(user_id={self._user_id!r}, urls={self._client.urls!r})"

    # -- the budget (ports.StravaRequestPolicy) ---------------------------------------------
    def budget(self) -> RateBudget:
        return RateBudget.from_dict(self.app_state.get_app_state(STRAVA_BUDGET_KEY))

    def before_request(self, *, upload: bool, poll: bool, background: bool) -> None:
        uploads = 1 if upload else 0
        reads = 1 - uploads
        now = self.clock()
        budget = self.budget()
        spare = budget.can_spend_background(reads, now, reserve=BACKGROUND_RESERVE)
        if reads and (background or self.background) and not spare:
            until = budget.next_background_reset(now, reads, reserve=BACKGROUND_RESERVE)
            log.info(
                "strava.background_budget_short",
                extra={"userId": self._user_id, "until": until.isoformat()},
            )
            raise RateLimited(until, "Strava read budget kept for the uploader")
        if not budget.can_spend(reads, uploads, now, priority=poll):
            until = budget.next_reset(now, reads, uploads, priority=poll)
            log.info(
                "strava.budget_spent", extra={"userId": self._user_id, "until": until.isoformat()}
            )
            raise RateLimited(until)

    def after_response(self, status: int, headers: Mapping[str, str]) -> None:
        now = self.clock()
        stored = self.budget()
        budget = stored.observe(headers, now).merge(stored, now)
        if status == 429:  # noqa: PLR2004 - HTTP status
            budget = budget.rate_limited(now)
            until = budget.blocked_until.isoformat() if budget.blocked_until else None
            log.warning("strava.rate_limited", extra={"userId": self._user_id, "until": until})
        self.app_state.put_app_state(STRAVA_BUDGET_KEY, budget.to_dict())

    def throttled_until(self) -> datetime:
        now = self.clock()
        budget = self.budget()
        return budget.blocked_until or budget.next_reset(now)

    def tokens_refreshed(self, tokens: StravaTokens) -> None:
        self.audit.add_audit(  # the sync history shows each refresh
            AuditEvent(
                user_id=self._user_id,
                at=self.clock(),
                kind="strava.token_refreshed",
                event_id=uuid.uuid4().hex,
                detail={"expiresAt": tokens.expires_at},
            ),
            retention_days=self.audit_retention_days,
        )

    # -- the application's access ------------------------------------------------------
    def app_access(self) -> StravaAppAccess:
        return StravaAppAccess.from_dict(self.app_state.get_app_state(APP_ACCESS_KEY))

    def _call[T](self, request: Callable[[], T]) -> T:
        """One client call through the application's access: while it is inactive only
        the window's probe goes (the rest raise StravaAppInactive unsent), with a token
        that has not expired yet as it is, so that the probe is one request."""
        probing = self._pass_access_gate()
        try:
            with self._client.tokens_as_they_are() if probing else contextlib.nullcontext():
                result = request()
        except StravaAppInactive:
            raise self._app_inactive() from None
        except TransientError as error:
            self._outage_failed(str(error))
            raise
        self._outage_answered()
        if probing:
            self._app_recovered()
        return result

    # -- Strava's outage -----------------------------------------------------------------
    def _outage_failed(self, reason: str) -> None:
        _outage_looked_at[0] = -math.inf  # the next answer ends it
        before = StravaOutage.from_dict(self.app_state.get_app_state(STRAVA_OUTAGE_KEY))
        self.app_state.put_app_state(
            STRAVA_OUTAGE_KEY, before.failed(self.clock(), reason).to_dict()
        )

    def _outage_answered(self) -> None:
        if time.monotonic() - _outage_looked_at[0] < _OUTAGE_LOOK_S:
            return
        _outage_looked_at[0] = time.monotonic()
        before = StravaOutage.from_dict(self.app_state.get_app_state(STRAVA_OUTAGE_KEY))
        if before.failing:
            self.app_state.put_app_state(STRAVA_OUTAGE_KEY, StravaOutage().to_dict())
            log.info("strava.answering", extra={"outageSince": _iso(before.since)})

    def _pass_access_gate(self) -> bool:
        """True when this call is the probe of an inactive application; raises
        StravaAppInactive when it is inactive and the window's probe went already."""
        access = self.app_access()
        if not access.inactive:
            return False
        now = self.clock()
        if not self._claim_probe(now):
            raise StravaAppInactive(next_window_reset(now))
        log.info(
            "strava.app_probe",
            extra={"userId": self._user_id, "inactiveSince": _iso(access.inactive_since)},
        )
        return True

    def _claim_probe(self, now: datetime) -> bool:
        # The store's conditional lease, held to the end of the window: whatever the
        # number of threads, processes and Lambda functions, one of them probes.
        ttl = max(1, math.ceil((next_window_reset(now) - now).total_seconds()))
        return self.leases.acquire_lease(PROBE_LEASE, uuid.uuid4().hex, now=now, ttl_seconds=ttl)

    def _app_inactive(self) -> StravaAppInactive:
        """Strava answered "Application Status Inactive": keep it, say it once."""
        now = self.clock()
        before = self.app_access()
        after = before.deactivated(now, APP_INACTIVE_CAUSE)
        self.app_state.put_app_state(APP_ACCESS_KEY, after.to_dict())
        self._claim_probe(now)  # this answer was the window's request
        until = next_window_reset(now)
        fields = {
            "userId": self._user_id,
            "inactiveSince": _iso(after.inactive_since),
            "nextProbeAt": until.isoformat(),
        }
        if before.inactive:
            log.info("strava.app_still_inactive", extra=fields | {"probes": after.probes})
        else:
            log.error("strava.app_inactive", extra=fields | {"cause": APP_INACTIVE_CAUSE})
            self._audit_every_account("strava.app_inactive", fields | {"cause": APP_INACTIVE_CAUSE})
        return StravaAppInactive(until)

    def _app_recovered(self) -> None:
        """The probe succeeded: Strava serves the application again."""
        now = self.clock()
        before = self.app_access()
        if not before.inactive:
            return  # another runner saw it first
        self.app_state.put_app_state(APP_ACCESS_KEY, before.recovered(now).to_dict())
        fields = {
            "userId": self._user_id,
            "inactiveSince": _iso(before.inactive_since),
            "probes": before.probes,
        }
        log.warning("strava.app_recovered", extra=fields)
        self._audit_every_account("strava.app_recovered", fields)

    def _audit_every_account(self, kind: str, detail: dict[str, Any]) -> None:
        """Every account waits on the application: each one's audit says why."""
        now = self.clock()
        for account in self.accounts.list_accounts():
            event = AuditEvent(
                user_id=account.user_id,
                at=now,
                kind=kind,
                event_id=uuid.uuid4().hex,
                detail=detail,
            )
            self.audit.add_audit(event, retention_days=self.audit_retention_days)

    # -- ports.StravaPort, AccessCheck and the account commands' calls ------------------------
    def list_activities(
        self, *, after: datetime, before: datetime, page: int = 1, per_page: int = 30
    ) -> list[StravaActivity]:
        """One page, in Strava's order (ascending start when `after` is given)."""
        return self._call(
            lambda: self._client.list_activities(
                after=after, before=before, page=page, per_page=per_page
            )
        )

    def list_all_activities(
        self, *, after: datetime, per_page: int = 200
    ) -> Iterator[dict[str, Any]]:
        """Every activity starting after `after`, oldest first, as Strava's JSON.

        One read a page, each through the budget check: a spent budget raises
        RateLimited between pages, and the caller resumes from the last start it saw.
        """
        page = 1
        while True:

            def request(page: int = page) -> list[Any]:
                return self._client.list_activity_rows(after=after, page=page, per_page=per_page)

            rows = self._call(request)
            yield from (cast("dict[str, Any]", row) for row in rows if isinstance(row, dict))
            if len(rows) < per_page:
                return
            page += 1

    def get_athlete_id(self) -> int:
        """The authorizing athlete's id (GET /athlete): one read."""
        return self._call(self._client.get_athlete_id)

    def revoke(self) -> bool:
        """Revoke the application's access for this athlete (POST /oauth/revoke, see
        adapters.strava); False when Strava says it was revoked already."""
        return self._call(self._client.revoke)

    def access_revoked(self) -> bool:
        """ports.AccessCheck: one token refresh (see adapters.strava)."""
        return self._client.access_revoked()

    def get_activity(self, activity_id: int) -> dict[str, Any]:
        return self._call(lambda: self._client.get_activity(activity_id))

    def get_activity_streams(
        self, activity_id: int, types: Sequence[str]
    ) -> dict[str, dict[str, Any]]:
        """One read within the background budget (it leaves BACKGROUND_RESERVE of the
        budget to the uploader); a 404 raises StravaNotFound."""
        return self._call(lambda: self._client.get_activity_streams(activity_id, types))

    def upload(self, path: Path, **options: Any) -> UploadStatus:
        """Exactly one POST /uploads (two only when a 401 made the client refresh);
        `options` as in ports.StravaUploads.upload."""
        return self._call(lambda: self._client.upload(path, **options))

    def get_upload(self, upload_id: int) -> UploadStatus:
        """One GET /uploads/{id}; may use the reads kept back for polls."""
        return self._call(lambda: self._client.get_upload(upload_id))

    def athlete_gear(self) -> list[StravaGear]:
        """The athlete's shoes and bikes (GET /athlete): one read."""
        return self._call(self._client.athlete_gear)

    def update_activity(self, activity_id: int, update: ActivityUpdate) -> None:
        """One PUT /activities/{id}: a write, counted against the overall limit (the
        client shows it to before_request as one, like an upload)."""
        self._call(lambda: self._client.update_activity(activity_id, update))


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None
