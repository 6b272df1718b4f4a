"""Cycles for every account, each isolated from the others' failures."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

from garmin2strava.domain.models import Account
from garmin2strava.ports import Store
from garmin2strava.services.account_control import paused_reason_of
from garmin2strava.services.sync import CycleReport, SyncDeps, sync_account
from garmin2strava.services.write_trouble import WRITE_TROUBLE

__all__ = ["sync_all"]

log = logging.getLogger(__name__)


def sync_all(
    store: Store,
    deps_for: Callable[[str], SyncDeps],
    *,
    dry_run: bool = False,
    only: str | None = None,
    accounts: Sequence[Account] | None = None,
) -> list[CycleReport]:
    """One cycle per enabled account (or only `only`); a paused account gets a
    skipped report and no cycle; one account's crash is reported and the others
    still run. `accounts`: the accounts as the caller just read them (the Lambda's
    StoreView), each handed to its cycle instead of being read again."""
    reports: list[CycleReport] = []
    given = accounts is not None
    for account in store.list_accounts() if accounts is None else accounts:
        if only is not None and account.user_id != only:
            continue
        if not account.enabled:  # paused: no lease taken, no client built, nothing written
            reports.append(CycleReport(account.user_id, skipped_reason=paused_reason_of(account)))
            continue
        deps = deps_for(account.user_id)
        if deps.stop.is_set():
            break
        try:
            report = sync_account(
                deps, account.user_id, dry_run=dry_run, account=account if given else None
            )
        except Exception as exc:
            # A full or read-only disk under the store: store.unwritable (services/conditions).
            WRITE_TROUBLE.failed("store", exc, deps.clock())
            log.exception("sync.crashed", extra={"userId": account.user_id})
            reports.append(
                CycleReport(account.user_id, ok=False, error=f"{type(exc).__name__}: {exc}")
            )
            continue
        if not (dry_run or report.skipped_reason):  # the cycle was recorded: the store wrote
            WRITE_TROUBLE.succeeded("store")
        reports.append(report)
    return reports
