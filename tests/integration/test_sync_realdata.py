"""Real recordings through the whole uploader: Garmin emulator -> sync -> Strava emulator.

The ORIGINAL zips hold real watch files read in place from ../shared/realdata: chained
FIT files (a Forerunner 935 and a 735XT swim with an HRM strap's heart rate appended, a
920XT triathlon), which were settled `skipped` before, and the real ORIGINAL download
of a fenix 6X. Each lands on Strava exactly once, byte for byte as Garmin gave it.
"""

from __future__ import annotations

import zipfile
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest

from g2s_sandbox.fitgen import zip_original
from g2s_sandbox.garmin import make_record
from g2s_sandbox.scenario import SandboxPair
from garmin2strava.bootstrap import App
from garmin2strava.domain.models import UploadOutcome
from garmin2strava.domain.upload_rules import external_id_for
from garmin2strava.services.sync_accounts import sync_all

pytestmark = [pytest.mark.integration, pytest.mark.realdata]

USER = "demo"


def _on_strava(pair: SandboxPair, garmin_id: int) -> list[tuple[int, bytes]]:
    """(activity id, uploaded bytes) of every Strava activity made from this Garmin id."""
    ours = external_id_for(garmin_id)
    with pair.strava.lock:
        return [
            (upload.activity_id, upload.data)
            for upload in pair.strava.upload_records.values()
            if upload.activity_id is not None
            and upload.external_id
            and upload.external_id.startswith(ours)
        ]


@pytest.mark.parametrize(
    ("file_name", "garmin"),
    [
        ("garmin-fr935-cr.fit", ("lap_swimming", datetime(2018, 3, 24, 11, 2, 35, tzinfo=UTC))),
        ("event_timestamp.fit", ("lap_swimming", datetime(2017, 6, 13, 13, 42, 30, tzinfo=UTC))),
        (
            "sample_mulitple_header.fit",
            ("multi_sport", datetime(2018, 5, 27, 7, 33, 1, tzinfo=UTC)),
        ),
    ],
)
def test_a_chained_fit_file_lands_on_strava_once(
    pair: SandboxPair,
    make_app: Callable[..., App],
    realdata: Path,
    file_name: str,
    garmin: tuple[str, datetime],
) -> None:
    """A real chained FIT file (activity + HRM segments) is uploaded once, unchanged;
    later cycles find it settled and upload nothing more."""
    type_key, start = garmin  # the Garmin record's type and start, as the file has them
    fit = (realdata / "fit" / file_name).read_bytes()
    garmin_id = 20_000_000_001
    record = make_record(garmin_id, "Swim", type_key, start, 3600, 2000.0)
    pair.garmin.add_activity(record, zip_original(garmin_id, fit))
    app = make_app(activity_types="*")

    reports = [sync_all(app.store, app.sync_deps)[0] for _ in range(3)]

    assert all(r.ok for r in reports), [r.error for r in reports]
    landed = _on_strava(pair, garmin_id)
    assert len(landed) == 1
    assert landed[0][1] == fit  # the chain as Garmin gave it, every segment
    entry = app.store.get_uploads(USER, [garmin_id])[garmin_id]
    assert entry.outcome is UploadOutcome.UPLOADED
    assert entry.strava_activity_id == landed[0][0]
    assert pair.strava_counts()["uploads"] == 1


def test_the_real_original_download_is_uploaded(
    pair: SandboxPair, make_app: Callable[..., App], realdata: Path
) -> None:
    """Garmin's real ORIGINAL zip of a fenix 6X (yoga) is extracted, checked and uploaded
    once with the FIT member's bytes."""
    original = (realdata / "garmin" / "original_11998957007.zip").read_bytes()
    with zipfile.ZipFile(realdata / "garmin" / "original_11998957007.zip") as archive:
        (member,) = archive.namelist()
        fit = archive.read(member)
    garmin_id = 11998957007
    start = datetime(2023, 9, 11, 13, 44, 29, tzinfo=UTC)
    pair.garmin.add_activity(make_record(garmin_id, "Yoga", "yoga", start, 4339, 0.0), original)
    app = make_app(activity_types="*")

    reports = [sync_all(app.store, app.sync_deps)[0] for _ in range(2)]

    assert all(r.ok for r in reports), [r.error for r in reports]
    landed = _on_strava(pair, garmin_id)
    assert [data for _, data in landed] == [fit]
    assert app.store.get_uploads(USER, [garmin_id])[garmin_id].outcome is UploadOutcome.UPLOADED
