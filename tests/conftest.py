"""Fixtures every test layer shares.

`realdata` is the folder of real recordings (Garmin answers, FIT/GPX/TCX files from
real devices, Strava answers and webhook bodies) kept beside the repository in
`../shared/realdata`, or wherever `G2S_REALDATA` points. The files are read in place,
never copied into the repository. Tests that use them carry the `realdata` marker and
are skipped, with the reason shown by `-ra`, when the folder is absent.

`installed_tool` is the same for the tools only `make` installs (checkov in
`.tools/checkov`): a test run by plain `pytest` skips, with the reason, when the tool
is absent; under `make test` (which sets `G2S_REQUIRE_TOOLS=1`) and in CI (`CI=true`)
an absent tool fails the test instead.

The tests marked `slow` are collected first (`pytest_collection_modifyitems`).
"""

from __future__ import annotations

import os
from collections.abc import Callable
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


REQUIRE_TOOLS_ENV = "G2S_REQUIRE_TOOLS"


@pytest.fixture
def installed_tool() -> Callable[[Path, str], Path]:
    """`installed_tool(path, how)`: the tool's path when it exists; otherwise the test
    skips saying `how` to install it, or fails under `make test` and CI."""

    def find(path: Path, how: str) -> Path:
        if path.exists():
            return path
        reason = f"{path} is not installed ({how})"
        if os.environ.get(REQUIRE_TOOLS_ENV) or os.environ.get("CI") == "true":
            pytest.fail(f"{reason}; required under `make test` ({REQUIRE_TOOLS_ENV}) and CI")
        pytest.skip(reason)

    return find


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The tests marked `slow` (the long ones) run first, each group in its own order:
    the parallel workers of `make test` (pytest-xdist hands out tests in this order)
    begin with them and finish together, instead of one worker still running a
    several-second test after the others have stopped."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)
