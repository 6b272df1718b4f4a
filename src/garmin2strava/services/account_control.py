"""What an operator does to one account: pause, resume, remove, disconnect.

Pause is a flag on the account (`enabled=False`, `paused_at`): the scheduler and the
Lambda sync skip the account, and a running cycle reads it before each activity and
stops (`pause_reason`). Remove and disconnect first stop the account the same way,
then take its sync lease, so no cycle is writing while they delete: what they forget
stays forgotten. Both forget what a verified deauthorization forgets (the Strava
tokens, the mirrored activities and the audit trail); the upload ledger stays.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from garmin2strava.domain.models import Account, AccountStatus, AuditEvent, UploadOutcome
from garmin2strava.errors import G2SError
from garmin2strava.ports import Accounts, Store
from garmin2strava.services.mirror_backfill import cursor_key

__all__ = [
    "AccountBusy",
    "AccountControl",
    "NoSuchAccount",
    "pause_reason",
    "paused_reason_of",
    "retry_upload",
]

log = logging.getLogger(__name__)

_CONTROL_OWNER = "operator"  # lease owner while remove/disconnect delete


class NoSuchAccount(G2SError):
    """The account named does not exist."""


class AccountBusy(G2SError):
    """A cycle still holds the account's lease after the wait."""


def paused_reason_of(account: Account) -> str:
    if account.paused_at is not None:
        since = account.paused_at.astimezone(UTC)
        return f"paused by the operator since {since:%Y-%m-%d %H:%M:%S} UTC"
    return "account disabled"


def pause_reason(store: Accounts, user_id: str) -> str | None:
    """Why the account's running cycle must stop now (paused, removed, disconnected),
    or None when it may go on. One store read: the cycle asks before each activity."""
    account = store.get_account(user_id)
    if account is None:
        return "account removed"
    if not account.enabled:
        return paused_reason_of(account)
    if account.status is AccountStatus.DISCONNECTED:
        return "account disconnected from Strava"
    return None


_RETRYABLE = frozenset({UploadOutcome.DEAD, UploadOutcome.SKIPPED, UploadOutcome.FAILED})


def retry_upload(store: Store, user_id: str, garmin_id: int, now: datetime) -> bool:
    """Put a failed, dead or skipped activity back for the next cycle (attempts from
    zero). False when the ledger has no such entry, or one with nothing to retry."""
    entry = store.get_uploads(user_id, [garmin_id]).get(garmin_id)
    if entry is None or entry.outcome not in _RETRYABLE:
        return False
    store.put_upload(
        replace(
            entry,
            outcome=UploadOutcome.FAILED,
            attempts=0,
            next_retry_at=now,
            detail="retry requested",
            updated_at=now,
        )
    )
    log.info("upload.retry_requested", extra={"userId": user_id, "activityId": garmin_id})
    return True


@dataclass(slots=True, kw_only=True)
class AccountControl:
    """The operator's actions on accounts, with the audit events they leave."""

    store: Store
    clock: Callable[[], datetime]
    audit_retention_days: int = 7
    lease_wait_s: float = 60.0
    sleep: Callable[[float], None] = time.sleep

    def account(self, user_id: str) -> Account:
        account = self.store.get_account(user_id)
        if account is None:
            msg = f"no account {user_id!r}"
            raise NoSuchAccount(msg)
        return account

    def pause(self, user_id: str) -> Account:
        """Keep the account out of cycles; a running one stops before its next activity."""
        account = self.account(user_id)
        if not account.enabled:
            return account
        paused = replace(account, enabled=False, paused_at=self.clock())
        self.store.put_account(paused)
        self._audit(user_id, "account.paused", {})
        log.info("account.paused", extra={"userId": user_id})
        return paused

    def resume(self, user_id: str) -> Account:
        account = self.account(user_id)
        if account.enabled:
            return account
        resumed = replace(account, enabled=True, paused_at=None)
        self.store.put_account(resumed)
        self._audit(user_id, "account.resumed", {})
        log.info("account.resumed", extra={"userId": user_id})
        return resumed

    def remove(self, user_id: str) -> dict[str, int]:
        """Delete the account, its tokens (Strava and Garmin), its mirrored workouts and
        its audit trail. Only the upload ledger stays (re-adding the account never
        uploads a run twice), with the tokens' tombstones (version counters, no secret)."""
        self.pause(user_id)
        self._take_lease(user_id)
        self.store.delete_strava_tokens(user_id)
        removed = self.store.forget_strava_data(user_id)
        self.store.put_app_state(cursor_key(user_id), {})
        self.store.delete_account(user_id)  # the lease goes with it
        log.warning("account.removed", extra={"userId": user_id, "itemsDeleted": removed})
        return {"itemsDeleted": removed}

    def disconnect(self, user_id: str, revoke: Callable[[], None]) -> dict[str, int]:
        """Revoke our Strava authorization (`revoke` calls Strava's revoke endpoint),
        then forget the Strava tokens and the mirrored workouts, as a
        deauthorization event does. The account stays, `disconnected`. When the revoke
        fails, nothing is forgotten and the account is as it was."""
        before = self.account(user_id)
        # Stops a running cycle before its next activity, so the lease comes free.
        self.store.put_account(
            replace(before, status=AccountStatus.DISCONNECTED, status_detail="disconnecting")
        )
        try:
            self._take_lease(user_id)
            try:
                revoke()
            finally:
                self.store.release_lease(user_id, _CONTROL_OWNER)
        except BaseException:
            current = self.store.get_account(user_id) or before
            self.store.put_account(
                replace(current, status=before.status, status_detail=before.status_detail)
            )
            raise
        # As a verified deauthorization does (services/mirror_worker.py `_forget_athlete`):
        # tokens first, then the mirror and the audit trail; the ledger stays.
        self.store.delete_strava_tokens(user_id)
        removed = self.store.forget_strava_data(user_id)
        self.store.put_app_state(cursor_key(user_id), {})  # a later backfill starts afresh
        current = self.store.get_account(user_id) or before
        self.store.put_account(
            replace(
                current,
                status=AccountStatus.DISCONNECTED,
                status_detail="disconnected by the operator (Strava access revoked, mirrored "
                "Strava data deleted); run `garmin2strava get-token` to connect again",
                mirror_covers_since=None,
            )
        )
        self._audit(user_id, "strava.deauthorized", {"by": "operator", "itemsDeleted": removed})
        log.warning("account.disconnected", extra={"userId": user_id, "itemsDeleted": removed})
        return {"itemsDeleted": removed}

    def _take_lease(self, user_id: str) -> None:
        """Wait for a running cycle to finish its activity in hand and release."""
        deadline = time.monotonic() + self.lease_wait_s
        while not self.store.acquire_lease(
            user_id, _CONTROL_OWNER, now=self.clock(), ttl_seconds=300
        ):
            if time.monotonic() >= deadline:
                msg = (
                    f"account {user_id!r}: a sync cycle still holds its lease after "
                    f"{self.lease_wait_s:.0f} s; try again"
                )
                raise AccountBusy(msg)
            self.sleep(0.2)

    def _audit(self, user_id: str, kind: str, detail: dict[str, object]) -> None:
        self.store.add_audit(
            AuditEvent(
                user_id=user_id,
                at=self.clock(),
                kind=kind,
                event_id=uuid.uuid4().hex,
                detail=dict(detail),
            ),
            retention_days=self.audit_retention_days,
        )
