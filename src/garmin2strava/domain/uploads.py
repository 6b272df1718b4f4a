"""Reading Strava's upload answers, and when to try again."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from garmin2strava.domain.models import UploadStatus

__all__ = ["UploadState", "UploadVerdict", "read_upload_status", "retry_delay"]

# "123.fit duplicate of activity 8319193780" or the HTML variant
# "... duplicate of <a href='/activities/18106372042' ...>".
_DUPLICATE = re.compile(
    r"duplicate of\s+(?:activity\s+(\d+)|.*?/activities/(\d+))", re.IGNORECASE | re.DOTALL
)
_DELETED = "has been deleted"


class UploadState(StrEnum):
    PROCESSING = "processing"
    READY = "ready"
    DUPLICATE = "duplicate"
    ERROR = "error"
    DELETED = "deleted"


@dataclass(frozen=True, slots=True)
class UploadVerdict:
    state: UploadState
    activity_id: int | None
    message: str


def read_upload_status(status: UploadStatus) -> UploadVerdict:
    if status.error:
        found = _DUPLICATE.search(status.error)
        if found:
            return UploadVerdict(
                UploadState.DUPLICATE, int(found.group(1) or found.group(2)), status.error
            )
        return UploadVerdict(UploadState.ERROR, None, status.error)
    if status.activity_id:
        return UploadVerdict(UploadState.READY, status.activity_id, status.status)
    if _DELETED in status.status.lower():
        return UploadVerdict(UploadState.DELETED, None, status.status)
    if "error" in status.status.lower():
        return UploadVerdict(UploadState.ERROR, None, status.status)
    return UploadVerdict(UploadState.PROCESSING, None, status.status)


def retry_delay(attempts: int, *, base_s: int = 120, cap_s: int = 6 * 3600) -> timedelta:
    """Exponential backoff after `attempts` failed attempts: 2, 4, 8 ... min, capped."""
    exponent = max(0, attempts - 1)
    return timedelta(seconds=min(cap_s, base_s * (2**exponent)))


def next_retry_at(now: datetime, attempts: int) -> datetime:
    return now + retry_delay(attempts)
