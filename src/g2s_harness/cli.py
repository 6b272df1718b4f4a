"""The command line in the test's own process, as the installed script runs it."""

from __future__ import annotations

from typing import TYPE_CHECKING

from garmin2strava.entrypoints.cli import main

if TYPE_CHECKING:
    import pytest

__all__ = ["run_cli"]


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """`garmin2strava argv...` through `main()` (the script's entry point): its exit
    code, and what it wrote to stdout and stderr, captured by `capsys`."""
    capsys.readouterr()
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err
