"""The Strava emulator's records: activities, uploads and connected athletes, and the
upload statuses Strava reports. Stdlib only."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

__all__ = [
    "DELETED",
    "ERROR",
    "FULL_SCOPE",
    "PROCESSING",
    "READY",
    "SandboxActivity",
    "SandboxAthlete",
    "SandboxUpload",
]

PROCESSING = "Your activity is still being processed."
READY = "Your activity is ready."
ERROR = "There was an error processing your activity."
DELETED = "The created activity has been deleted."
FULL_SCOPE = "read,activity:read_all,activity:write"


def _iso(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class SandboxActivity:
    activity_id: int
    athlete_id: int
    name: str
    sport_type: str
    start_utc: datetime
    elapsed_s: int
    distance_m: float
    external_id: str | None = None
    upload_id: int | None = None
    private: bool = False
    manual: bool = False
    trainer: bool = False
    description: str | None = None
    deleted: bool = False
    gear_id: str | None = None
    hide_from_home: bool = False

    def summary(self) -> dict[str, Any]:
        return {
            "resource_state": 2,
            "id": self.activity_id,
            "athlete": {"id": self.athlete_id, "resource_state": 1},
            "name": self.name,
            "distance": self.distance_m,
            "moving_time": self.elapsed_s,
            "elapsed_time": self.elapsed_s,
            "total_elevation_gain": 0.0,
            "type": self.sport_type if "Run" not in self.sport_type else "Run",
            "sport_type": self.sport_type,
            "start_date": _iso(self.start_utc),
            "start_date_local": _iso(self.start_utc),
            "timezone": "(GMT+00:00) Etc/UTC",
            "utc_offset": 0.0,
            "external_id": self.external_id,
            "upload_id": self.upload_id,
            "upload_id_str": str(self.upload_id) if self.upload_id is not None else None,
            "private": self.private,
            "manual": self.manual,
            "trainer": self.trainer,
            "commute": False,
            "visibility": "only_me" if self.private else "everyone",
            "gear_id": self.gear_id,
        }

    def detail(self) -> dict[str, Any]:
        return {
            **self.summary(),
            "resource_state": 3,
            "description": self.description,
            "hide_from_home": self.hide_from_home,
        }


@dataclass
class SandboxUpload:
    upload_id: int
    athlete_id: int
    external_id: str | None
    file_name: str
    data: bytes
    data_type: str
    name: str | None
    description: str | None
    trainer: bool
    created_at: float
    fields: dict[str, str]
    status: str = PROCESSING
    error: str | None = None
    activity_id: int | None = None

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.upload_id,
            "id_str": str(self.upload_id),
            "external_id": self.external_id,
            "error": self.error,
            "status": self.status,
            "activity_id": self.activity_id,
        }


@dataclass
class SandboxAthlete:
    athlete_id: int
    scope: str
    refresh_token: str | None = None
    access_tokens: dict[str, float] = field(default_factory=dict)  # token -> expires_at
    # `GET /athlete`'s `shoes` and `bikes`, as stravalib's recorded athlete lists them.
    shoes: list[dict[str, Any]] = field(default_factory=list)
    bikes: list[dict[str, Any]] = field(default_factory=list)

    def profile(self) -> dict[str, Any]:
        """`GET /athlete` (DetailedAthlete, trimmed)."""
        return {
            "id": self.athlete_id,
            "resource_state": 3,
            "firstname": "Sandy",
            "shoes": [dict(g) for g in self.shoes],
            "bikes": [dict(g) for g in self.bikes],
        }

    def gear_ids(self) -> set[str]:
        return {str(g["id"]) for g in (*self.shoes, *self.bikes)}
