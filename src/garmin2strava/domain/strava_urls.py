"""Where Strava is: the API base and the OAuth origin (README "Settings",
G2S_STRAVA_API_URL and G2S_STRAVA_OAUTH_URL).

Strava moves its API from `https://www.strava.com/api/v3` to `https://api-v3.strava.com`
(no `/api/v3` prefix; from 2027-01-04) while OAuth stays on `https://www.strava.com`:
one origin cannot say both, so the two are kept apart here."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["REAL_STRAVA_BASE_URL", "REAL_STRAVA_URLS", "StravaUrls"]

REAL_STRAVA_BASE_URL = "https://www.strava.com"


@dataclass(frozen=True, slots=True)
class StravaUrls:
    """`api`: the API base, path included (`.../api/v3`, or a host's root); `oauth`:
    the origin serving `/oauth/token`, `/oauth/revoke`, `/oauth/authorize`."""

    api: str
    oauth: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "api", self.api.rstrip("/"))
        object.__setattr__(self, "oauth", self.oauth.rstrip("/"))

    @classmethod
    def one_origin(cls, base: str) -> StravaUrls:
        """Strava's old layout on one origin: `{base}/api/v3` and `{base}` (the
        emulators and the demo, and G2S_STRAVA_BASE_URL)."""
        base = base.rstrip("/")
        return cls(api=f"{base}/api/v3", oauth=base)


REAL_STRAVA_URLS = StravaUrls.one_origin(REAL_STRAVA_BASE_URL)
