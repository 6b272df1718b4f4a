"""Fixtures every test layer shares.

`realdata` is the folder of real recordings (Garmin answers, FIT/GPX/TCX files from
real devices, Strava answers and webhook bodies) kept beside the repository in
`../shared/realdata`, or wherever `G2S_REALDATA` points. The files are read in place,
never copied into the repository. Tests that use them carry the `realdata` marker and
are skipped, with the reason shown by `-ra`, when the folder is absent.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

_REPO = Path(__file__).resolve().parents[1]


def realdata_dir() -> Path | None:
    """The real-recordings folder, or None when this machine does not have it."""
    configured = os.environ.get("G2S_REALDATA")
    candidate = Path(configured) if configured else _REPO.parent / "shared" / "realdata"
    return candidate if (candidate / "SOURCES.md").is_file() else None


@pytest.fixture(scope="session")
def realdata() -> Path:
    """The real-recordings folder; skips the test visibly where it is absent."""
    found = realdata_dir()
    if found is None:
        pytest.skip("real recordings not found (../shared/realdata or G2S_REALDATA)")
    return found
