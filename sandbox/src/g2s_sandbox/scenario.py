"""Both emulators started together, the daemon's settings pointing at them, and seeded
scenarios. Used by `garmin2strava demo`, the integration tests and bench/.

The settings are given as the daemon documents them (README "Settings"): its field
names for `settings_values`, its environment names for `environment`. Nothing here
imports the daemon."""

from __future__ import annotations

import base64
import contextlib
import secrets
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from g2s_sandbox.fitgen import build_activity_fit, build_gpx, zip_original
from g2s_sandbox.garmin import GarminSandbox, make_record
from g2s_sandbox.strava import StravaSandbox

__all__ = ["SandboxPair", "SeededRun", "running_sandboxes", "seed_demo", "seed_run"]

ATHLETE_ID = 1001


def new_token_key() -> str:
    """A random G2S_TOKEN_KEY, in the form the README documents: 32 bytes, urlsafe
    base64."""
    return base64.urlsafe_b64encode(secrets.token_bytes(32)).decode("ascii")


@dataclass(slots=True)
class SeededRun:
    garmin_id: int
    name: str
    type_key: str
    start_utc: datetime
    expect: str  # what a correct sync does with it: uploaded/exists/skipped/ignored


@dataclass(slots=True)
class SandboxPair:
    garmin: GarminSandbox
    strava: StravaSandbox
    athlete_id: int
    strava_refresh_token: str
    garmin_tokens: str
    seeded: list[SeededRun] = field(default_factory=list)

    def settings_values(self, db_path: Path, **overrides: Any) -> dict[str, Any]:
        """The daemon's settings for one user against these emulators, by field name
        (`garmin2strava.settings.load_settings(**values)` reads them)."""
        values: dict[str, Any] = {
            "strava_client_id": self.strava.client_id,
            "strava_client_secret": self.strava.client_secret,
            "strava_refresh_token": self.strava_refresh_token,
            "garmin_tokens": self.garmin_tokens,
            "user_id": "demo",
            "store": "sqlite",
            "db_path": db_path,
            "token_key": new_token_key(),
            **self._strava_where(),
            "garmin_base_url": self.garmin.base_url,
            "log_format": "text",
            "log_level": "WARNING",
        }
        values.update(overrides)
        return values

    def environment(self, *, user_id: str, db_path: Path, **extra: str) -> dict[str, str]:
        """The same single-user settings as environment variables, for a command run
        through the CLI (in this process or a child); `extra` adds or replaces some."""
        return {
            "STRAVA_CLIENT_ID": str(self.strava.client_id),
            "STRAVA_CLIENT_SECRET": self.strava.client_secret,
            "STRAVA_REFRESH_TOKEN": self.strava_refresh_token,
            "GARMIN_TOKENS": self.garmin_tokens,
            "G2S_USER_ID": user_id,
            "G2S_DB_PATH": str(db_path),
            "G2S_TOKEN_KEY": new_token_key(),
            **{f"G2S_{name.upper()}": url for name, url in self._strava_where().items()},
            "G2S_GARMIN_BASE_URL": self.garmin.base_url,
            "G2S_LOG_LEVEL": "WARNING",
            **extra,
        }

    def _strava_where(self) -> dict[str, str]:
        """Where the daemon finds the Strava emulator, by setting field name."""
        if not self.strava.two_hosts:
            return {"strava_base_url": self.strava.base_url}
        return {
            "strava_api_url": self.strava.api_url,
            "strava_oauth_url": self.strava.oauth_url,
            # A closed port: a request that ignored the two settings fails at once.
            "strava_base_url": "http://127.0.0.1:9",
        }

    def strava_counts(self) -> dict[str, int]:
        with self.strava.lock:
            return {
                "reads": self.strava.reads,
                "uploads": self.strava.uploads,
                "writes": self.strava.writes,
            }

    def strava_total(self) -> int:
        """Every request Strava saw, token requests included."""
        with self.strava.lock:
            return sum(self.strava.requests.values())

    def reset_counts(self) -> None:
        self.garmin.requests.clear()
        with self.strava.lock:
            self.strava.requests.clear()
            self.strava.reads = self.strava.uploads = self.strava.writes = 0

    def garmin_count(self) -> int:
        return sum(self.garmin.requests.values())


@contextlib.contextmanager
def running_sandboxes(
    *, processing_delay_s: float = 0.0, two_hosts: bool = False
) -> Iterator[SandboxPair]:
    """Both emulators; `two_hosts`: Strava's 2027 layout (see g2s_sandbox.strava)."""
    with GarminSandbox() as garmin, StravaSandbox(two_hosts=two_hosts) as strava:
        strava.processing_delay_s = processing_delay_s
        refresh = strava.add_athlete(ATHLETE_ID)
        yield SandboxPair(
            garmin=garmin,
            strava=strava,
            athlete_id=ATHLETE_ID,
            strava_refresh_token=refresh,
            garmin_tokens=garmin.issue_tokens(),
        )


def seed_run(
    pair: SandboxPair,
    garmin_id: int,
    *,
    start_utc: datetime,
    duration_s: int = 1800,
    type_key: str = "running",
    name: str = "Run",
    fmt: str = "fit",
    manual: bool = False,
    expect: str = "uploaded",
    original: bytes | None = None,
    gear: tuple[str, ...] = (),
) -> SeededRun:
    """A Garmin activity with a real ORIGINAL file (or none when manual), linked to
    the Garmin gear named in `gear`."""
    distance = duration_s / 300 * 1000  # 5:00/km
    record = make_record(garmin_id, name, type_key, start_utc, duration_s, distance, manual)
    if original is None and not manual:
        if fmt == "gpx":
            payload = build_gpx(start_utc=start_utc, duration_s=duration_s, name=name)
            original = zip_original(garmin_id, payload, member_name=f"{garmin_id}.gpx")
        else:
            sport = "cycling" if "cycling" in type_key else "running"
            sub = "treadmill" if "treadmill" in type_key else "generic"
            payload = build_activity_fit(
                start_utc=start_utc,
                duration_s=duration_s,
                sport=sport,
                sub_sport=sub,
                distance_m=distance,
                with_gps=sub != "treadmill",
                serial=garmin_id % 100_000,
            )
            original = zip_original(garmin_id, payload)
    pair.garmin.add_activity(record, original)
    if gear:
        pair.garmin.set_activity_gear(garmin_id, *gear)
    seeded = SeededRun(garmin_id, name, type_key, start_utc, expect)
    pair.seeded.append(seeded)
    return seeded


def seed_demo(pair: SandboxPair, now: datetime) -> list[SeededRun]:
    """A few runs; one already on Strava via Garmin's own sync; a manual activity;
    a ride (not a run); a GPX import."""
    day = timedelta(days=1)
    base = now.replace(microsecond=0) - 5 * day
    seed_run(pair, 21_000_001, start_utc=base, name="Easy 5k", duration_s=1500)
    synced = seed_run(
        pair,
        21_000_002,
        start_utc=base + day,
        name="Tempo (also synced by Garmin)",
        duration_s=2400,
        expect="exists",
    )
    pair.strava.add_activity(
        pair.athlete_id,
        start_utc=synced.start_utc,
        elapsed_s=2400,
        name="Tempo",
        external_id="garmin_ping_426342097456",
        distance_m=8000.0,
    )
    seed_run(
        pair,
        21_000_003,
        start_utc=base + 2 * day,
        name="Trail long run",
        type_key="trail_running",
        duration_s=3600,
    )
    seed_run(
        pair,
        21_000_004,
        start_utc=base + 3 * day,
        name="Treadmill intervals",
        type_key="treadmill_running",
        duration_s=1800,
    )
    seed_run(
        pair,
        21_000_005,
        start_utc=base + 3 * day + timedelta(hours=8),
        name="Manual entry",
        manual=True,
        expect="skipped",
    )
    seed_run(
        pair,
        21_000_006,
        start_utc=base + 4 * day,
        name="Commute ride",
        type_key="road_biking",
        expect="ignored",
    )
    seed_run(
        pair,
        21_000_007,
        start_utc=base + 4 * day + timedelta(hours=6),
        name="Imported GPX run",
        fmt="gpx",
        duration_s=1200,
    )
    return pair.seeded
