"""Finishing an upload on Strava: what one `PUT /activities/{id}` sets (gear, feed
muting, a Garmin rename), what was applied, and the rules of the rename carry. Pure.

A ledger entry carries one `StravaFinish`: `owed` is what is still to be sent (written
before the request, so a crash leaves it owed and a later cycle sends it again: the
PUT is idempotent), the other fields what Strava was told. Existing entries from
before have none.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

__all__ = ["ActivityUpdate", "RenameStep", "StravaFinish", "rename_step"]

# A failed PUT waits 2, 4, 8 ... minutes, at most this long, for its next attempt.
_RETRY_MAX = timedelta(hours=6)


@dataclass(frozen=True, slots=True)
class ActivityUpdate:
    """The fields of one PUT; None leaves a field as Strava has it."""

    gear_id: str | None = None
    hide_from_home: bool | None = None
    name: str | None = None

    @property
    def empty(self) -> bool:
        return self.gear_id is None and self.hide_from_home is None and self.name is None

    def merged(self, newer: ActivityUpdate) -> ActivityUpdate:
        return ActivityUpdate(
            gear_id=newer.gear_id if newer.gear_id is not None else self.gear_id,
            hide_from_home=(
                newer.hide_from_home if newer.hide_from_home is not None else self.hide_from_home
            ),
            name=newer.name if newer.name is not None else self.name,
        )

    def to_plain(self) -> dict[str, Any]:
        return {"gearId": self.gear_id, "hideFromHome": self.hide_from_home, "name": self.name}

    @classmethod
    def from_plain(cls, plain: Any) -> ActivityUpdate | None:
        if not isinstance(plain, dict):
            return None
        gear, hide, name = plain.get("gearId"), plain.get("hideFromHome"), plain.get("name")
        update = cls(
            gear_id=gear if isinstance(gear, str) else None,
            hide_from_home=hide if isinstance(hide, bool) else None,
            name=name if isinstance(name, str) else None,
        )
        return None if update.empty else update


@dataclass(frozen=True, slots=True)
class StravaFinish:
    """What became of one upload's finish on Strava (see the module)."""

    owed: ActivityUpdate | None = None
    gear_id: str | None = None  # set on Strava
    gear_name: str = ""  # the Strava gear's name (planned, then set)
    gear_unmapped: str = ""  # Garmin gear that matched no Strava gear
    hidden_by: str = ""  # the G2S_HIDE_FROM_HOME rule that hides it
    hidden: bool = False  # set on Strava
    name_set: str = ""  # the name Strava shows as we last set it
    name_carried: bool = False  # a Garmin rename reached Strava
    strava_name_kept: bool = False  # renamed on Strava: never overwritten
    attempts: int = 0  # failed PUTs in a row
    retry_at: datetime | None = None
    error: str = ""

    def owing(self, update: ActivityUpdate) -> StravaFinish:
        """`update` added to what is owed."""
        owed = update if self.owed is None else self.owed.merged(update)
        return replace(self, owed=None if owed.empty else owed, attempts=0, retry_at=None)

    def applied(self) -> StravaFinish:
        """Strava answered the PUT of `owed`."""
        owed = self.owed or ActivityUpdate()
        return replace(
            self,
            owed=None,
            gear_id=owed.gear_id if owed.gear_id is not None else self.gear_id,
            hidden=owed.hide_from_home if owed.hide_from_home is not None else self.hidden,
            name_set=owed.name if owed.name is not None else self.name_set,
            name_carried=self.name_carried or owed.name is not None,
            attempts=0,
            retry_at=None,
            error="",
        )

    def failed(self, error: str, *, now: datetime, max_attempts: int) -> StravaFinish:
        """The PUT failed: retried at 2, 4, 8 ... minutes; given up after
        `max_attempts` (nothing owed any more, the error kept)."""
        attempts = self.attempts + 1
        if attempts >= max_attempts:
            return replace(self, owed=None, attempts=attempts, retry_at=None, error=error)
        wait = min(_RETRY_MAX, timedelta(minutes=2 ** min(attempts, 10)))
        return replace(self, attempts=attempts, retry_at=now + wait, error=error)

    def summary(self) -> str:
        """One line for history, the status page and `uploads list`: gear set
        (which), hidden, name carried, and what is still owed or went wrong."""
        parts: list[str] = []
        if self.gear_id:
            parts.append(f"gear {self.gear_name or self.gear_id} ({self.gear_id})")
        if self.gear_unmapped:
            parts.append(f"gear unmapped: {self.gear_unmapped} (Strava's default kept)")
        if self.hidden:
            parts.append(f"hidden from home ({self.hidden_by})" if self.hidden_by else "hidden")
        if self.name_carried:
            parts.append(f"name carried: {self.name_set}")
        if self.strava_name_kept:
            parts.append("renamed on Strava: kept")
        if self.owed is not None:
            parts.append("update owed on Strava")
        if self.error:
            parts.append(f"last update failed: {self.error}")
        return "; ".join(parts)

    def to_json(self) -> dict[str, Any]:
        """What `uploads list --json` shows of it."""
        gear = {"id": self.gear_id, "name": self.gear_name} if self.gear_id else None
        return {
            "gear": gear,
            "gearUnmapped": self.gear_unmapped or None,
            "hidden": self.hidden,
            "hiddenBy": self.hidden_by or None,
            "nameCarried": self.name_set if self.name_carried else None,
            "stravaNameKept": self.strava_name_kept,
            "owed": self.owed.to_plain() if self.owed else None,
            "error": self.error or None,
        }

    def due(self, now: datetime) -> bool:
        return self.owed is not None and (self.retry_at is None or self.retry_at <= now)

    def to_plain(self) -> dict[str, Any]:
        return {
            "owed": self.owed.to_plain() if self.owed else None,
            "gearId": self.gear_id,
            "gearName": self.gear_name,
            "gearUnmapped": self.gear_unmapped,
            "hiddenBy": self.hidden_by,
            "hidden": self.hidden,
            "nameSet": self.name_set,
            "nameCarried": self.name_carried,
            "stravaNameKept": self.strava_name_kept,
            "attempts": self.attempts,
            "retryAt": self.retry_at.isoformat() if self.retry_at else None,
            "error": self.error,
        }

    @classmethod
    def from_plain(cls, plain: Any) -> StravaFinish | None:
        if not isinstance(plain, dict):
            return None
        retry = plain.get("retryAt")
        gear_id = plain.get("gearId")
        return cls(
            owed=ActivityUpdate.from_plain(plain.get("owed")),
            gear_id=gear_id if isinstance(gear_id, str) else None,
            gear_name=str(plain.get("gearName") or ""),
            gear_unmapped=str(plain.get("gearUnmapped") or ""),
            hidden_by=str(plain.get("hiddenBy") or ""),
            hidden=plain.get("hidden") is True,
            name_set=str(plain.get("nameSet") or ""),
            name_carried=plain.get("nameCarried") is True,
            strava_name_kept=plain.get("stravaNameKept") is True,
            attempts=int(plain.get("attempts") or 0),
            retry_at=datetime.fromisoformat(retry) if isinstance(retry, str) else None,
            error=str(plain.get("error") or ""),
        )


@dataclass(frozen=True, slots=True)
class RenameStep:
    """What the carry does with one settled upload: `carry` (PUT the Garmin name),
    `keep` (Strava's copy was renamed there: never overwritten), `wait` (the mirror
    does not show the activity yet), or `none`."""

    action: str
    name: str = ""


def rename_step(garmin_name: str, finish: StravaFinish, strava_name: str | None) -> RenameStep:
    """The carry of one rename: Garmin's name now, what we last set, and Strava's name
    as the mirror has it (None: not mirrored yet). Carried only while Strava still shows
    the name we set; an edit made on Strava wins for good."""
    if not garmin_name or finish.strava_name_kept or garmin_name == finish.name_set:
        return RenameStep("none")
    if finish.owed is not None and finish.owed.name == garmin_name:
        return RenameStep("none")  # owed already: the PUT that sends it is pending
    if strava_name is None:
        return RenameStep("wait")
    if strava_name != finish.name_set:
        return RenameStep("keep", strava_name)
    return RenameStep("carry", garmin_name)
