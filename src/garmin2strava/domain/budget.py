"""Strava's application-wide rate budget, kept from the headers Strava sends back.

Strava counts every request of the application in a 15-minute window (resetting at
:00/:15/:30/:45 UTC) and a daily one (resetting at 00:00 UTC); non-upload ("read")
requests have their own, smaller limits. Each response carries the figures as
"15min,daily" pairs in `X-RateLimit-Limit/-Usage` and `X-ReadRateLimit-Limit/-Usage`.

`RateBudget` is a frozen value: every change returns a new one, which the caller
persists (application-wide state shared by all accounts and processes). Pure: the
current time is always passed in.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

__all__ = ["RateBudget", "day_start", "next_day_reset", "next_window_reset", "window_start"]

_WINDOW = timedelta(minutes=15)


def window_start(now: datetime) -> datetime:
    """The start of the 15-minute window `now` falls in (UTC)."""
    now = now.astimezone(UTC)
    return now.replace(minute=now.minute - now.minute % 15, second=0, microsecond=0)


def next_window_reset(now: datetime) -> datetime:
    return window_start(now) + _WINDOW


def day_start(now: datetime) -> datetime:
    return now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)


def next_day_reset(now: datetime) -> datetime:
    return day_start(now) + timedelta(days=1)


def _pair(value: str | None) -> tuple[int, int] | None:
    """Parse "15min,daily"; None when absent or malformed (never trust a header)."""
    if not value:
        return None
    parts = value.split(",")
    if len(parts) != 2:  # noqa: PLR2004 - the header is a pair by definition
        return None
    try:
        short, daily = (int(p.strip()) for p in parts)
    except ValueError:
        return None
    if short < 0 or daily < 0:
        return None
    return short, daily


@dataclass(frozen=True, slots=True)
class RateBudget:
    """Limits and usage as last seen, stamped with the window they belong to."""

    short_limit: int = 200
    daily_limit: int = 2000
    read_short_limit: int = 100
    read_daily_limit: int = 1000
    short_usage: int = 0
    daily_usage: int = 0
    read_short_usage: int = 0
    read_daily_usage: int = 0
    # The time the usage figures were observed; they count only inside its windows.
    observed_at: datetime | None = None
    # After a 429: nothing is spent before this time, whatever the figures say.
    blocked_until: datetime | None = None
    # Reads kept back for upload status polls (callers pass priority=True for those).
    read_reserve: int = 5

    # -- current usage ---------------------------------------------------------------
    def _usage(self, now: datetime) -> tuple[int, int, int, int]:
        """(short, daily, read_short, read_daily) usage that still counts at `now`."""
        if self.observed_at is None:
            return 0, 0, 0, 0
        same_day = day_start(self.observed_at) == day_start(now)
        same_window = window_start(self.observed_at) == window_start(now)
        daily = self.daily_usage if same_day else 0
        read_daily = self.read_daily_usage if same_day else 0
        short = self.short_usage if same_window else 0
        read_short = self.read_short_usage if same_window else 0
        return short, daily, read_short, read_daily

    def usage(self, now: datetime) -> dict[str, tuple[int, int]]:
        """(used, limit) that still count at `now`, per window: `short` and `daily`
        for all requests, `read_short` and `read_daily` for reads (the status page)."""
        short, daily, read_short, read_daily = self._usage(now)
        return {
            "short": (short, self.short_limit),
            "daily": (daily, self.daily_limit),
            "read_short": (read_short, self.read_short_limit),
            "read_daily": (read_daily, self.read_daily_limit),
        }

    def _short_ok(self, reads: int, uploads: int, now: datetime, reserve: int) -> bool:
        short, _, read_short, _ = self._usage(now)
        return (
            short + reads + uploads <= self.short_limit
            and read_short + reads <= self.read_short_limit - (reserve if reads else 0)
        )

    def _daily_ok(self, reads: int, uploads: int, now: datetime, reserve: int) -> bool:
        _, daily, _, read_daily = self._usage(now)
        return (
            daily + reads + uploads <= self.daily_limit
            and read_daily + reads <= self.read_daily_limit - (reserve if reads else 0)
        )

    def can_spend(self, reads: int, uploads: int, now: datetime, *, priority: bool = False) -> bool:
        """Whether `reads` read requests and `uploads` uploads fit now.

        Ordinary reads leave `read_reserve` reads untouched; `priority` (upload status
        polls) may use them.
        """
        if self.blocked_until is not None and now < self.blocked_until:
            return False
        reserve = 0 if priority else self.read_reserve
        return self._short_ok(reads, uploads, now, reserve) and self._daily_ok(
            reads, uploads, now, reserve
        )

    def remaining_reads(self, now: datetime, *, priority: bool = False) -> int:
        short, daily, read_short, read_daily = self._usage(now)
        if self.blocked_until is not None and now < self.blocked_until:
            return 0
        reserve = 0 if priority else self.read_reserve
        return max(
            0,
            min(
                self.read_short_limit - reserve - read_short,
                self.read_daily_limit - reserve - read_daily,
                self.short_limit - short,
                self.daily_limit - daily,
            ),
        )

    def _background_ok(self, reads: int, now: datetime, reserve: float) -> tuple[bool, bool]:
        """(short windows ok, daily windows ok) for background reads keeping `reserve`."""
        short, daily, read_short, read_daily = self._usage(now)

        def room(limit: int, used: int) -> bool:
            kept = max(self.read_reserve, math.ceil(limit * reserve))
            return used + reads <= limit - kept

        short_ok = room(self.read_short_limit, read_short) and room(self.short_limit, short)
        daily_ok = room(self.read_daily_limit, read_daily) and room(self.daily_limit, daily)
        return short_ok, daily_ok

    def can_spend_background(self, reads: int, now: datetime, *, reserve: float) -> bool:
        """Whether `reads` reads that can wait (streams, reconciliation) fit while a
        `reserve` share of every window stays for the uploader."""
        if self.blocked_until is not None and now < self.blocked_until:
            return False
        return all(self._background_ok(reads, now, reserve))

    def next_background_reset(self, now: datetime, reads: int = 1, *, reserve: float) -> datetime:
        """The earliest time background reads may fit again (see `can_spend_background`):
        the daily reset when the day's figures refuse, else the next quarter hour; never
        earlier than a 429's block, and that block's end when only the block refuses."""
        short_ok, daily_ok = self._background_ok(reads, now, reserve)
        blocked = self.blocked_until if self.blocked_until and self.blocked_until > now else None
        if blocked is not None and short_ok and daily_ok:
            return blocked
        at = next_window_reset(now) if daily_ok else next_day_reset(now)
        return max(at, blocked) if blocked is not None else at

    def next_reset(
        self, now: datetime, reads: int = 1, uploads: int = 0, *, priority: bool = False
    ) -> datetime:
        """The earliest time at which `reads`/`uploads` may fit again.

        The daily reset when the daily figures refuse, else the next quarter hour;
        never earlier than a 429's block.
        """
        reserve = 0 if priority else self.read_reserve
        blocked = self.blocked_until if self.blocked_until and self.blocked_until > now else None
        if not self._daily_ok(reads, uploads, now, reserve):
            at = next_day_reset(now)
        elif blocked is not None and self._short_ok(reads, uploads, now, reserve):
            # Only the block refuses: it ends at its own time.
            return blocked
        else:
            at = next_window_reset(now)
        return max(at, blocked) if blocked is not None else at

    # -- changes ---------------------------------------------------------------------
    def spend(self, reads: int, uploads: int, now: datetime) -> RateBudget:
        """Count a request about to be sent (the response's headers correct it)."""
        short, daily, read_short, read_daily = self._usage(now)
        return replace(
            self,
            short_usage=short + reads + uploads,
            daily_usage=daily + reads + uploads,
            read_short_usage=read_short + reads,
            read_daily_usage=read_daily + reads,
            observed_at=now,
        )

    def observe(self, headers: Mapping[str, str], now: datetime) -> RateBudget:
        """Take limits and usage from a response's headers (case-insensitive).

        Usage only grows inside a window, so within the same windows the larger figure
        wins: a late writer holding older figures cannot lower what another saw.
        """
        lowered = {k.lower(): v for k, v in headers.items()}
        limit = _pair(lowered.get("x-ratelimit-limit"))
        usage = _pair(lowered.get("x-ratelimit-usage"))
        read_limit = _pair(lowered.get("x-readratelimit-limit"))
        read_usage = _pair(lowered.get("x-readratelimit-usage"))
        if limit is None and usage is None and read_limit is None and read_usage is None:
            return self
        short, daily, read_short, read_daily = self._usage(now)
        new = replace(self, observed_at=now)
        if limit is not None:
            new = replace(new, short_limit=limit[0], daily_limit=limit[1])
        if read_limit is not None:
            new = replace(new, read_short_limit=read_limit[0], read_daily_limit=read_limit[1])
        return replace(
            new,
            short_usage=max(short, usage[0]) if usage else short,
            daily_usage=max(daily, usage[1]) if usage else daily,
            read_short_usage=max(read_short, read_usage[0]) if read_usage else read_short,
            read_daily_usage=max(read_daily, read_usage[1]) if read_usage else read_daily,
        )

    def merge(self, other: RateBudget, now: datetime) -> RateBudget:
        """Combine two views of the budget (e.g. ours and the one just persisted by
        another process): the larger usage and the later block win."""
        a = self._usage(now)
        b = other._usage(now)
        newer = self if (self.observed_at or now) >= (other.observed_at or now) else other
        blocks = [x for x in (self.blocked_until, other.blocked_until) if x is not None]
        return replace(
            newer,
            short_usage=max(a[0], b[0]),
            daily_usage=max(a[1], b[1]),
            read_short_usage=max(a[2], b[2]),
            read_daily_usage=max(a[3], b[3]),
            observed_at=now,
            blocked_until=max(blocks) if blocks else None,
        )

    def rate_limited(self, now: datetime) -> RateBudget:
        """Strava answered 429: spend nothing until the window that refused resets.

        When the known figures show the day spent, that is midnight UTC; otherwise the
        next quarter hour.
        """
        _, daily, _, read_daily = self._usage(now)
        day_spent = daily >= self.daily_limit or read_daily >= self.read_daily_limit
        until = next_day_reset(now) if day_spent else next_window_reset(now)
        return replace(self, blocked_until=until)

    # -- persistence -----------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "short_limit": self.short_limit,
            "daily_limit": self.daily_limit,
            "read_short_limit": self.read_short_limit,
            "read_daily_limit": self.read_daily_limit,
            "short_usage": self.short_usage,
            "daily_usage": self.daily_usage,
            "read_short_usage": self.read_short_usage,
            "read_daily_usage": self.read_daily_usage,
            "observed_at": self.observed_at.isoformat() if self.observed_at else None,
            "blocked_until": self.blocked_until.isoformat() if self.blocked_until else None,
            "read_reserve": self.read_reserve,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> RateBudget:
        """Rebuild from `to_dict` output; missing or broken fields take defaults (a
        corrupt record must not stop the daemon: Strava's headers correct it)."""
        if not data:
            return cls()
        defaults = cls()
        ints: dict[str, int] = {}
        for name in (
            "short_limit",
            "daily_limit",
            "read_short_limit",
            "read_daily_limit",
            "short_usage",
            "daily_usage",
            "read_short_usage",
            "read_daily_usage",
            "read_reserve",
        ):
            value = data.get(name)
            ints[name] = (
                value
                if isinstance(value, int) and not isinstance(value, bool) and value >= 0
                else getattr(defaults, name)
            )
        return cls(
            **ints,
            observed_at=_parse_time(data.get("observed_at")),
            blocked_until=_parse_time(data.get("blocked_until")),
        )


def _parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)
