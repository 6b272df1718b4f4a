"""Hostile and odd inputs to the uploader (issue 9): absurd Garmin records, an
unusable temporary directory, a huge ORIGINAL, a Strava outage on the existence
check, and the Garmin description. The real app against both sandboxes on loopback."""

from __future__ import annotations

import io
import logging
import resource
import subprocess
import sys
import tempfile
import textwrap
import zipfile
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from fakes import Clock
from g2s_sandbox.garmin import make_record
from g2s_sandbox.scenario import SandboxPair, seed_run
from garmin2strava.bootstrap import App, utc_now
from garmin2strava.domain.models import LedgerEntry, UploadOutcome
from garmin2strava.domain.upload_rules import external_id_for
from garmin2strava.services.sync import CycleReport
from garmin2strava.services.sync_accounts import sync_all

pytestmark = pytest.mark.integration

USER = "demo"
START = datetime(2025, 6, 2, 6, 30, tzinfo=UTC)
MiB = 1024 * 1024


def cycle(app: App) -> CycleReport:
    (report,) = sync_all(app.store, app.sync_deps)
    return report


def ledger(app: App, garmin_id: int) -> LedgerEntry:
    entry = app.store.get_uploads(USER, [garmin_id]).get(garmin_id)
    assert entry is not None, f"no ledger entry for {garmin_id}"
    return entry


def on_strava(pair: SandboxPair, garmin_id: int) -> list[int]:
    with pair.strava.lock:
        return [
            a.activity_id
            for a in pair.strava.activities.values()
            if a.external_id and a.external_id.startswith(external_id_for(garmin_id))
        ]


def _hostile_records() -> list[dict[str, object]]:
    year_9999 = make_record(901, "Far future", "running", START, 1800, 5000.0)
    year_9999["startTimeGMT"] = "9999-12-31 23:59:59"
    year_9999["beginTimestamp"] = 253402300799000
    year_1 = make_record(902, "Year one", "running", START, 1800, 5000.0)
    year_1["startTimeGMT"] = "0001-01-01 00:00:00"
    year_1["beginTimestamp"] = -62135596800000
    huge_begin = make_record(903, "Huge timestamp", "running", START, 1800, 5000.0)
    del huge_begin["startTimeGMT"]
    huge_begin["beginTimestamp"] = 2**62
    return [year_9999, year_1, huge_begin]


def test_absurd_start_records_are_skipped_and_the_run_beside_them_uploads_once(
    pair: SandboxPair, make_app: Callable[..., App]
) -> None:
    """Records dated 9999 and 0001 and one with beginTimestamp 2**62 are settled
    `skipped` with their reason; the ordinary run is on Strava once; a second cycle
    changes nothing and crashes nowhere."""
    for record in _hostile_records():
        pair.garmin.add_activity(record, b"never downloaded")
    seed_run(pair, 1001, start_utc=START)
    app = make_app()

    first = cycle(app)
    second = cycle(app)

    assert first.ok, first.error
    assert first.outcomes == {"skipped": 3, "uploaded": 1}
    assert len(on_strava(pair, 1001)) == 1
    for garmin_id, reason in ((901, "9999"), (902, "0001"), (903, "beginTimestamp")):
        entry = ledger(app, garmin_id)
        assert entry.outcome is UploadOutcome.SKIPPED
        assert reason in entry.detail
    assert second.ok
    assert len(on_strava(pair, 1001)) == 1
    assert pair.garmin.requests["download"] == 1  # only the ordinary run's


def test_garmin_description_goes_ahead_of_the_configured_one(
    pair: SandboxPair, make_app: Callable[..., App]
) -> None:
    """The Garmin description, then G2S_UPLOAD_DESCRIPTION after a blank line, is the
    uploaded activity's description (through stravalib); without a Garmin one, only
    the configured one."""
    seed_run(pair, 1101, start_utc=START)
    with pair.garmin._state.lock:
        pair.garmin._state.records[1101]["description"] = "Hill reps\r\nx6 \x1b[31m"
    seed_run(pair, 1102, start_utc=START + timedelta(days=1))
    app = make_app(upload_description="via garmin2strava")

    assert cycle(app).outcomes == {"uploaded": 2}

    with pair.strava.lock:
        described = {a.external_id: a.description for a in pair.strava.activities.values()}
    assert described == {
        external_id_for(1101): "Hill reps\nx6 [31m\n\nvia garmin2strava",
        external_id_for(1102): "via garmin2strava",
    }


def test_unusable_temporary_directory_is_a_failed_run_with_a_retry_time(
    pair: SandboxPair, make_app: Callable[..., App], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A temporary directory that cannot be created: the run is `failed` with a retry
    time and the reason, nothing is downloaded for it, the cycle ends normally; no
    cycle before the retry time touches it; once the directory works it uploads."""
    seed_run(pair, 1201, start_utc=START)
    app = make_app()
    clock = Clock(utc_now())
    app.clock = clock
    not_a_dir = tmp_path / "tmp-is-a-file"
    not_a_dir.write_text("")
    monkeypatch.setattr(tempfile, "tempdir", str(not_a_dir))

    report = cycle(app)

    failed = ledger(app, 1201)
    assert report.outcomes == {"failed": 1}
    assert failed.outcome is UploadOutcome.FAILED
    assert "temporary directory unusable" in failed.detail
    assert failed.next_retry_at is not None
    assert failed.next_retry_at > clock.now
    assert pair.garmin.requests["download"] == 0
    pair.reset_counts()
    cycle(app)
    assert pair.garmin.requests["download"] == 0  # not yet due: no download every minute

    monkeypatch.setattr(tempfile, "tempdir", None)
    clock.now = failed.next_retry_at + timedelta(seconds=1)
    assert cycle(app).outcomes == {"uploaded": 1}
    assert len(on_strava(pair, 1201)) == 1


_FULL_DISK_CHILD = textwrap.dedent(
    """
    import resource, sys
    from garmin2strava.entrypoints.cli import main

    limit = int(sys.argv[1])
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    sys.exit(main(["sync"]))
    """
)


def test_full_disk_while_extracting_is_a_failed_run_not_a_crash(
    pair: SandboxPair, make_app: Callable[..., App], tmp_path: Path
) -> None:
    """A write that fails with EFBIG (RLIMIT_FSIZE in a child, as a full disk fails
    with ENOSPC) while the ORIGINAL is extracted: the run is `failed` with a retry time
    and the reason; the cycle exits normally."""
    seed_run(pair, 1301, start_utc=START, duration_s=6 * 3600)
    app = make_app()
    settings = app.settings
    with pair.garmin._state.lock:
        original = pair.garmin._state.originals[1301]
    assert original is not None
    (member,) = zipfile.ZipFile(io.BytesIO(original[0])).infolist()
    env = {
        "PATH": "/usr/bin:/bin",
        "STRAVA_CLIENT_ID": str(settings.strava_client_id),
        "STRAVA_CLIENT_SECRET": pair.strava.client_secret,
        "STRAVA_REFRESH_TOKEN": pair.strava_refresh_token,
        "GARMIN_TOKENS": pair.garmin_tokens,
        "G2S_USER_ID": USER,
        "G2S_DB_PATH": str(settings.db_path),
        "G2S_TOKEN_KEY": settings.token_key.get_secret_value() if settings.token_key else "",
        "G2S_STRAVA_BASE_URL": pair.strava.base_url,
        "G2S_GARMIN_BASE_URL": pair.garmin.base_url,
        "G2S_LOG_LEVEL": "WARNING",
        "TMPDIR": str(tmp_path),
    }
    # Just short of the extracted FIT: the store (far smaller) still writes, the
    # extraction cannot.
    limit = member.file_size - 1
    done = subprocess.run(  # noqa: S603  our own interpreter and script
        [sys.executable, "-c", _FULL_DISK_CHILD, str(limit)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert done.returncode == 0, done.stderr
    assert "failed       garmin 1301" in done.stdout
    failed = ledger(app, 1301)
    assert failed.outcome is UploadOutcome.FAILED
    assert "File too large" in failed.detail
    assert failed.next_retry_at is not None
    assert not on_strava(pair, 1301)
    assert resource.getrlimit(resource.RLIMIT_FSIZE)[0] == resource.RLIM_INFINITY


@pytest.mark.parametrize("declare_length", [True, False], ids=["content-length", "no-length"])
def test_huge_original_is_stopped_while_it_downloads(
    pair: SandboxPair, make_app: Callable[..., App], declare_length: bool
) -> None:
    """A 1 GiB ORIGINAL (with or without Content-Length): the download stops at the
    64 MiB limit (the emulator could send at most the limit plus socket buffers), the
    run is `skipped` naming the limit, and the run beside it uploads."""
    record = make_record(1401, "Endless", "running", START, 1800, 5000.0)
    pair.garmin.add_huge_original(record, 1024 * MiB, declare_length=declare_length)
    seed_run(pair, 1402, start_utc=START + timedelta(days=1))
    app = make_app()

    report = cycle(app)

    assert report.outcomes == {"skipped": 1, "uploaded": 1}
    entry = ledger(app, 1401)
    assert entry.outcome is UploadOutcome.SKIPPED
    assert "67108864-byte limit" in entry.detail
    sent = pair.garmin.huge_bytes_sent(1401)
    shown = f"huge ORIGINAL, Content-Length {declare_length}: {sent / MiB:.1f} MiB sent"
    print(shown)  # noqa: T201  the figure this test measures (pytest -s shows it)
    assert sent < 80 * MiB
    assert len(on_strava(pair, 1402)) == 1


def test_strava_5xx_on_the_existence_check_is_transient(
    pair: SandboxPair, make_app: Callable[..., App], caplog: pytest.LogCaptureFixture
) -> None:
    """A 503 on the narrow list query: a WARNING, no upload, no ledger entry, no
    sync.crashed and an ok cycle; the next cycle uploads the run once."""
    seed_run(pair, 1501, start_utc=START)
    app = make_app()
    pair.strava.fail_next("list", 503)

    with caplog.at_level(logging.WARNING):
        report = cycle(app)

    assert report.ok
    assert "retried next cycle" in report.error
    assert not report.outcomes
    assert not app.store.get_uploads(USER, [1501])
    assert pair.strava.uploads == 0
    levels = {r.getMessage(): r.levelno for r in caplog.records}
    assert levels.get("sync.transient") == logging.WARNING
    assert "sync.crashed" not in levels
    assert all(r.levelno < logging.ERROR for r in caplog.records)

    assert cycle(app).outcomes == {"uploaded": 1}
    assert len(on_strava(pair, 1501)) == 1
