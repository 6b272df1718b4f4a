"""Unit tests for the Strava rate budget (pure)."""

from __future__ import annotations

from datetime import UTC, datetime

from garmin2strava.domain.budget import (
    RateBudget,
    next_day_reset,
    next_window_reset,
    window_start,
)

T0 = datetime(2025, 3, 4, 10, 7, 30, tzinfo=UTC)


def headers(
    usage: str, read_usage: str, limit: str = "200,2000", read_limit: str = "100,1000"
) -> dict[str, str]:
    return {
        "X-RateLimit-Limit": limit,
        "X-RateLimit-Usage": usage,
        "X-ReadRateLimit-Limit": read_limit,
        "x-readratelimit-usage": read_usage,
    }


def test_windows_reset_at_quarter_hours_and_midnight_utc() -> None:
    """15-minute windows start at :00/:15/:30/:45 and the day at 00:00 UTC."""
    assert window_start(T0) == datetime(2025, 3, 4, 10, 0, tzinfo=UTC)
    assert next_window_reset(T0) == datetime(2025, 3, 4, 10, 15, tzinfo=UTC)
    assert next_window_reset(datetime(2025, 3, 4, 23, 59, tzinfo=UTC)) == datetime(
        2025, 3, 5, 0, 0, tzinfo=UTC
    )
    assert next_day_reset(T0) == datetime(2025, 3, 5, tzinfo=UTC)


def test_observe_parses_the_four_headers_case_insensitively() -> None:
    """Limits and usage come from the "15min,daily" header pairs whatever their case."""
    b = RateBudget().observe(headers("12,340", "10,300", "600,30000", "300,15000"), T0)
    assert (b.short_limit, b.daily_limit) == (600, 30000)
    assert (b.read_short_limit, b.read_daily_limit) == (300, 15000)
    assert (b.short_usage, b.daily_usage, b.read_short_usage, b.read_daily_usage) == (
        12,
        340,
        10,
        300,
    )


def test_malformed_or_missing_headers_change_nothing() -> None:
    """A response without rate headers, or with garbage in them, leaves the budget as it was."""
    b = RateBudget().observe(headers("5,5", "5,5"), T0)
    assert b.observe({}, T0) == b
    bad = b.observe({"X-RateLimit-Usage": "a,b", "X-ReadRateLimit-Usage": "1,2,3"}, T0)
    assert (bad.short_usage, bad.read_short_usage) == (5, 5)


def test_read_limit_refuses_reads_but_not_uploads() -> None:
    """With the 15-minute read budget spent, reads are refused and an upload still fits."""
    b = RateBudget(read_reserve=0).observe(headers("100,100", "100,100"), T0)
    assert not b.can_spend(1, 0, T0)
    assert b.can_spend(0, 1, T0)


def test_reserve_is_kept_for_priority_reads() -> None:
    """Ordinary reads stop `read_reserve` short of the limit; priority reads may use it."""
    b = RateBudget(read_reserve=5).observe(headers("95,95", "95,95"), T0)
    assert not b.can_spend(1, 0, T0)
    assert b.can_spend(1, 0, T0, priority=True)
    assert b.remaining_reads(T0) == 0
    assert b.remaining_reads(T0, priority=True) == 5


def test_short_usage_counts_only_in_its_window() -> None:
    """Usage from a past quarter hour no longer counts; the daily one still does."""
    b = RateBudget(read_reserve=0).observe(headers("200,500", "100,400"), T0)
    assert not b.can_spend(1, 0, T0)
    later = datetime(2025, 3, 4, 10, 15, 0, tzinfo=UTC)
    assert b.can_spend(1, 0, later)
    assert b.remaining_reads(later) == 100
    nearly_daily = RateBudget(read_reserve=0).observe(headers("200,500", "100,950"), T0)
    assert nearly_daily.remaining_reads(later) == 50


def test_daily_spent_waits_for_midnight() -> None:
    """When the daily read budget is spent, the next reset is midnight UTC, not :15."""
    b = RateBudget(read_reserve=0).observe(headers("10,1000", "10,1000"), T0)
    assert not b.can_spend(1, 0, T0)
    assert b.next_reset(T0) == datetime(2025, 3, 5, tzinfo=UTC)
    assert b.can_spend(1, 0, datetime(2025, 3, 5, 0, 0, 1, tzinfo=UTC))


def test_short_spent_waits_for_the_quarter_hour() -> None:
    """When only the 15-minute budget is spent, the next reset is the next quarter hour."""
    b = RateBudget(read_reserve=0).observe(headers("200,300", "50,100"), T0)
    assert not b.can_spend(0, 1, T0)
    assert b.next_reset(T0, 0, 1) == datetime(2025, 3, 4, 10, 15, tzinfo=UTC)


def test_429_blocks_until_next_reset_even_with_room_in_the_figures() -> None:
    """After a 429 nothing is spent until the window resets, whatever the usage says."""
    b = RateBudget().observe(headers("1,1", "1,1"), T0).rate_limited(T0)
    assert not b.can_spend(1, 0, T0)
    assert b.next_reset(T0) == datetime(2025, 3, 4, 10, 15, tzinfo=UTC)
    assert b.can_spend(1, 0, datetime(2025, 3, 4, 10, 15, tzinfo=UTC))


def test_429_with_daily_figures_spent_blocks_until_midnight() -> None:
    """A 429 when the daily figures are spent blocks until 00:00 UTC."""
    b = RateBudget().observe(headers("3,2000", "3,900"), T0).rate_limited(T0)
    assert b.blocked_until == datetime(2025, 3, 5, tzinfo=UTC)


def test_spend_counts_locally_and_headers_do_not_lower_it() -> None:
    """A request counted before sending is not undone by older, smaller header figures."""
    b = RateBudget().spend(1, 0, T0).spend(0, 1, T0)
    assert (b.short_usage, b.read_short_usage) == (2, 1)
    b = b.observe(headers("1,1", "1,1"), T0)
    assert (b.short_usage, b.read_short_usage) == (2, 1)
    b = b.observe(headers("7,9", "6,8"), T0)
    assert (b.short_usage, b.daily_usage, b.read_short_usage, b.read_daily_usage) == (7, 9, 6, 8)


def test_merge_keeps_the_larger_usage_and_the_later_block() -> None:
    """Two processes' views merge into the more conservative one."""
    mine = RateBudget().observe(headers("10,50", "9,40"), T0)
    theirs = RateBudget().observe(headers("20,30", "3,45"), T0).rate_limited(T0)
    merged = mine.merge(theirs, T0)
    assert (merged.short_usage, merged.daily_usage) == (20, 50)
    assert (merged.read_short_usage, merged.read_daily_usage) == (9, 45)
    assert merged.blocked_until == theirs.blocked_until


def test_round_trip_through_dict() -> None:
    """to_dict/from_dict restore the same budget, block included."""
    b = RateBudget(read_reserve=3).observe(headers("10,50", "9,40"), T0).rate_limited(T0)
    assert RateBudget.from_dict(b.to_dict()) == b


def test_from_dict_tolerates_garbage() -> None:
    """A missing or corrupt stored record yields defaults instead of an exception."""
    assert RateBudget.from_dict(None) == RateBudget()
    b = RateBudget.from_dict({"short_usage": "x", "observed_at": "yesterday", "daily_limit": -1})
    assert b == RateBudget()
