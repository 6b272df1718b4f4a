"""The free-space look of store.unwritable (services/write_trouble.py): a disk this
process writes with less than the floor free, or one it cannot look at, is a trouble
of its own place ("space"), set and cleared only by the look."""

from __future__ import annotations

import errno
import inspect
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from garmin2strava.adapters.fitfile import extract_original
from garmin2strava.adapters.garmin import MAX_ORIGINAL_BYTES
from garmin2strava.domain.conditions import CONDITIONS
from garmin2strava.services.write_trouble import (
    SPACE_FLOOR,
    Disk,
    WriteTrouble,
    look_at_space,
    short_of_space,
)

NOW = datetime(2026, 12, 7, 23, 0, tzinfo=UTC)
MiB = 1024 * 1024
STORE = Disk("the store", Path("/srv/g2s"))
TEMP = Disk("the temporary directory", Path("/scratch"))


def free_of(figures: dict[Path, int]) -> Callable[[Path], int]:
    """What the operating system would answer for each directory."""

    def free(directory: Path) -> int:
        return figures[directory]

    return free


def test_the_floor_holds_the_largest_file_a_run_may_bring() -> None:
    extracted = inspect.signature(extract_original).parameters["max_total_bytes"].default
    assert MAX_ORIGINAL_BYTES <= SPACE_FLOOR
    assert extracted <= SPACE_FLOOR


def test_the_condition_says_the_floor() -> None:
    assert f"under {SPACE_FLOOR // MiB} MiB free" in CONDITIONS["store.unwritable"].meaning


@pytest.mark.parametrize(
    ("free", "short"),
    [
        (SPACE_FLOOR, False),  # exactly the floor: enough
        (SPACE_FLOOR - 1, True),
        (SPACE_FLOOR + 1, False),
        (0, True),
    ],
)
def test_the_floor_is_the_boundary(free: int, short: bool) -> None:
    detail = short_of_space([STORE], free=free_of({STORE.directory: free}))
    assert (detail is not None) is short


def test_the_detail_names_each_short_disk_its_figure_and_the_floor() -> None:
    figures = {STORE.directory: 3 * MiB, TEMP.directory: 500 * MiB}
    detail = short_of_space([STORE, TEMP], free=free_of(figures))
    assert detail == (
        "the disk of the store (/srv/g2s) has 3 MiB free, under the 64 MiB a run's file "
        "and the store's growth need"
    )
    figures[TEMP.directory] = 1 * MiB
    detail = short_of_space([STORE, TEMP], free=free_of(figures))
    assert detail is not None
    assert "the disk of the store (/srv/g2s) has 3 MiB free" in detail
    assert "the disk of the temporary directory (/scratch) has 1 MiB free" in detail
    figures[STORE.directory] = 100 * MiB
    detail = short_of_space([STORE, TEMP], free=free_of(figures))
    assert detail is not None
    assert detail.startswith("the disk of the temporary directory (/scratch) has 1 MiB free,")


def test_a_directory_that_cannot_be_looked_at_is_a_trouble() -> None:
    def gone(directory: Path) -> int:
        raise FileNotFoundError(errno.ENOENT, "No such file or directory", str(directory))

    detail = short_of_space([TEMP], free=gone)
    assert detail == (
        "the disk of the temporary directory (/scratch) cannot be looked at "
        "(No such file or directory)"
    )


def test_no_disk_to_look_at_is_no_trouble() -> None:
    assert short_of_space([]) is None


def test_the_look_sets_and_clears_its_own_place_only() -> None:
    trouble = WriteTrouble()
    figures = {STORE.directory: 0, TEMP.directory: 500 * MiB}
    free = free_of(figures)
    look_at_space(trouble, [STORE, TEMP], NOW - timedelta(minutes=5), free=free)
    look_at_space(trouble, [STORE, TEMP], NOW, free=free)
    assert set(trouble.current()) == {"space"}
    assert trouble.current()["space"].since == NOW - timedelta(minutes=5)  # one spell

    trouble.succeeded("store")  # a recorded cycle: the disk is no emptier
    trouble.succeeded("temp")
    assert set(trouble.current()) == {"space"}

    assert trouble.failed("store", OSError(errno.ENOSPC, "No space left on device"), NOW)
    figures[STORE.directory] = SPACE_FLOOR
    look_at_space(trouble, [STORE, TEMP], NOW, free=free)
    assert set(trouble.current()) == {"store"}  # room again; the failed write stays
