"""The daemon's settings for the emulators of g2s_sandbox (which never import the daemon)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from g2s_sandbox.scenario import SandboxPair
from garmin2strava.settings import Settings, load_settings

__all__ = ["sandbox_settings"]


def sandbox_settings(pair: SandboxPair, db_path: Path, **overrides: Any) -> Settings:
    """One user's settings against `pair`, on a SQLite store at `db_path`; `overrides`
    replace some, by field name."""
    return load_settings(env_file=None, **pair.settings_values(db_path, **overrides))
