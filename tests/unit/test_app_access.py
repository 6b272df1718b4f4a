"""StravaAppAccess: the application's inactive spell as a pure value."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from garmin2strava.domain.app_access import StravaAppAccess
from garmin2strava.errors import ConfigError
from garmin2strava.settings import load_settings

NOW = datetime(2026, 7, 6, 9, 7, 30, tzinfo=UTC)


def test_a_spell_starts_once_counts_its_probes_and_ends() -> None:
    """The first "inactive" answer starts the spell; later ones keep its start and count
    as probes; recovery ends it and remembers when."""
    first = StravaAppAccess().deactivated(NOW, "lapsed")
    later = first.deactivated(NOW + timedelta(minutes=15), "lapsed")
    assert first.inactive
    assert later.inactive_since == NOW
    assert later.probes == 2
    assert later.last_probe_at == NOW + timedelta(minutes=15)
    back = later.recovered(NOW + timedelta(minutes=31))
    assert not back.inactive
    assert back.recovered_at == NOW + timedelta(minutes=31)
    assert back.next_probe_at(NOW) is None


def test_the_next_probe_is_the_next_rate_window() -> None:
    """Probes follow Strava's 15-minute windows (:00/:15/:30/:45 UTC)."""
    spell = StravaAppAccess().deactivated(NOW, "lapsed")
    assert spell.next_probe_at(NOW) == datetime(2026, 7, 6, 9, 15, tzinfo=UTC)


def test_round_trip_and_a_corrupt_record_reads_as_defaults() -> None:
    """What to_dict writes comes back equal; broken fields never stop the daemon."""
    spell = StravaAppAccess().deactivated(NOW, "lapsed")
    assert StravaAppAccess.from_dict(spell.to_dict()) == spell
    broken = StravaAppAccess.from_dict({"inactiveSince": "yesterday", "probes": True, "reason": 7})
    assert broken == StravaAppAccess()
    assert StravaAppAccess.from_dict(None) == StravaAppAccess()


@pytest.mark.parametrize("value", ["0", "-3", "abc"])
def test_the_athlete_capacity_is_bounded(value: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """G2S_STRAVA_ATHLETE_CAPACITY below 1 (or not a number) is refused by name."""
    monkeypatch.setenv("G2S_STRAVA_ATHLETE_CAPACITY", value)
    with pytest.raises(ConfigError, match="G2S_STRAVA_ATHLETE_CAPACITY"):
        load_settings(env_file=None)


def test_the_athlete_capacity_defaults_to_the_standard_tier(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Unset, the capacity is Strava's Standard tier: 10 athletes."""
    monkeypatch.delenv("G2S_STRAVA_ATHLETE_CAPACITY", raising=False)
    assert load_settings(env_file=None).strava_athlete_capacity == 10
