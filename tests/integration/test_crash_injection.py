"""Crash injection: the syncing process SIGKILLed at each step of a cycle, then
restarted, leaves every Garmin run on Strava exactly once (acceptance point).

The emulators run in this process (threads on loopback); the syncing process is a
child (crash_child.py) configured from the environment, with the real garminconnect
and stravalib clients and a real SQLite file. Its checkpoint hook kills it with
SIGKILL just before step X happens for the K-th time:

- "intent": before the ledger records the intent to upload;
- "upload": intent recorded, upload request not sent yet;
- "record": the upload request returned (Strava has the file), ledger not updated;
- "poll":   upload id recorded, status poll not made yet.

A further case kills it while Strava holds back its answer to the upload (Strava has
the file, the client never learns its upload id). The restart runs the real cycle
in this process on the same SQLite file until nothing is left unsettled.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from garmin2strava.adapters.crypto import generate_token_key
from garmin2strava.adapters.store.sqlite import SqliteStore
from garmin2strava.bootstrap import App, bootstrap, build_cipher, utc_now
from garmin2strava.domain.activities import external_id_for
from garmin2strava.domain.models import LedgerEntry, UploadOutcome
from garmin2strava.sandbox.scenario import SandboxPair, running_sandboxes, seed_run
from garmin2strava.services.accounts import ensure_settings_account
from garmin2strava.services.runner import sync_all
from garmin2strava.settings import Settings

pytestmark = pytest.mark.integration

CHILD = Path(__file__).with_name("crash_child.py")
STEPS = ("intent", "upload", "record", "poll")
RUNS = 3
ACCEPTABLE = frozenset(
    {UploadOutcome.UPLOADED, UploadOutcome.EXISTS, UploadOutcome.DUPLICATE, UploadOutcome.SKIPPED}
)
# Strava processes an upload in 0 s, or in longer than the child waits before its poll
# (so kills and the restart land while Strava is still processing).
PROCESSING_DELAYS = (0.0, 0.5)
CHILD_POLL_DELAY_S = 0.05
MAX_RECOVERY_CYCLES = 60


@dataclass(slots=True)
class World:
    pair: SandboxPair
    settings: Settings
    child_env: dict[str, str]


@contextlib.contextmanager
def world(tmp_path: Path, processing_delay_s: float) -> Iterator[World]:
    with running_sandboxes(processing_delay_s=processing_delay_s) as pair:
        start = datetime.now(tz=UTC).replace(microsecond=0) - timedelta(days=RUNS + 1)
        for i in range(RUNS):
            seed_run(
                pair,
                31_000_001 + i,
                start_utc=start + timedelta(days=i, hours=i),
                name=f"Run {i + 1}",
                duration_s=1500 + 300 * i,
            )
        settings = pair.settings(tmp_path / "g2s.sqlite3", token_key=generate_token_key())
        yield World(pair, settings, _env_for(settings))


def _env_for(settings: Settings) -> dict[str, str]:
    """The same settings as the environment of a real `garmin2strava` process."""

    def secret(value: Any) -> str:
        return str(value.get_secret_value())

    env = {k: v for k, v in os.environ.items() if not k.startswith(("G2S_", "STRAVA_", "GARMIN"))}
    env.update(
        {
            "STRAVA_CLIENT_ID": str(settings.strava_client_id),
            "STRAVA_CLIENT_SECRET": secret(settings.strava_client_secret),
            "STRAVA_REFRESH_TOKEN": secret(settings.strava_refresh_token),
            "GARMIN_TOKENS": secret(settings.garmin_tokens),
            "G2S_USER_ID": settings.user_id,
            "G2S_STORE": "sqlite",
            "G2S_DB_PATH": str(settings.db_path),
            "G2S_TOKEN_KEY": secret(settings.token_key),
            "G2S_STRAVA_BASE_URL": settings.strava_base_url,
            "G2S_GARMIN_BASE_URL": settings.garmin_base_url,
            "G2S_LOG_LEVEL": "WARNING",
            "G2S_LOG_FORMAT": "text",
        }
    )
    return env


def _start_child(w: World, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(  # noqa: S603 (our own interpreter and script)
        [sys.executable, str(CHILD), "--poll-delay", str(CHILD_POLL_DELAY_S), *args],
        env=w.child_env,
        cwd=w.settings.db_path.parent,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


@contextlib.contextmanager
def _restarted_app(w: World, clock: Callable[[], datetime] = utc_now) -> Iterator[App]:
    """The app of a restarted process, on the dead process's SQLite file."""
    with SqliteStore(w.settings.db_path, build_cipher(w.settings)) as store:
        app = bootstrap(w.settings, store=store)
        app.clock = clock
        app.poll_delay_s = CHILD_POLL_DELAY_S
        yield app


def _recover(w: World) -> None:
    """Restart: a cycle within the dead process's lease waits; once the lease has
    expired, cycles run until the ledger has nothing left unsettled."""
    with _restarted_app(w) as early:
        ensure_settings_account(early.store, w.settings, early.clock)
        (report,) = sync_all(early.store, early.sync_deps)
        assert "lease" in report.skipped_reason
        lease_ttl = timedelta(seconds=early.sync_config().lease_ttl_s + 1)

    with _restarted_app(w, lambda: utc_now() + lease_ttl) as app:
        for _ in range(MAX_RECOVERY_CYCLES):
            reports = sync_all(app.store, app.sync_deps)
            assert all(r.ok and not r.skipped_reason for r in reports), reports
            if _ledger_settled(w, app):
                return
            time.sleep(0.05)  # Strava (the emulator) is still processing an upload
        pytest.fail(f"ledger not settled: {_ledger(w, app)}")


def _ledger(w: World, app: App) -> dict[int, LedgerEntry]:
    ids = [run.garmin_id for run in w.pair.seeded]
    return app.store.get_uploads(w.settings.user_id, ids)


def _ledger_settled(w: World, app: App) -> bool:
    ledger = _ledger(w, app)
    return len(ledger) == RUNS and all(e.outcome.settled for e in ledger.values())


def _assert_reconciled(w: World, garmin_id: int) -> None:
    """The restart found our external_id on Strava and recorded the upload as ours."""
    with _restarted_app(w) as app:
        entry = _ledger(w, app)[garmin_id]
    assert entry.outcome is UploadOutcome.UPLOADED, entry
    assert entry.detail.startswith("reconciled"), entry


def _assert_exactly_once(w: World, *, resent: int = 0) -> None:
    """Every seeded run once on Strava (by start time and by our external_id), its
    ledger entry settled on that activity; at most `resent` files were sent twice."""
    strava = w.pair.strava
    strava.settle()
    with strava.lock:
        live = [a for a in strava.activities.values() if not a.deleted]
        uploads = len(strava.upload_records)
    with _restarted_app(w) as app:
        ledger = _ledger(w, app)
    for run in w.pair.seeded:
        by_start = [a for a in live if a.start_utc == run.start_utc]
        by_external_id = [a for a in live if a.external_id == external_id_for(run.garmin_id)]
        assert len(by_start) == 1, (run, by_start)
        assert by_external_id == by_start, (run, by_external_id)
        entry = ledger[run.garmin_id]
        assert entry.outcome in ACCEPTABLE, entry
        assert entry.strava_activity_id == by_start[0].activity_id, entry
    assert len(live) == RUNS
    assert RUNS <= uploads <= RUNS + resent


@pytest.mark.parametrize("processing_delay_s", PROCESSING_DELAYS, ids=lambda d: f"strava{d}s")
@pytest.mark.parametrize("kill_on", [1, RUNS], ids=lambda k: f"K{k}")
@pytest.mark.parametrize("step", STEPS)
def test_killed_at_step_then_restarted(
    tmp_path: Path, step: str, kill_on: int, processing_delay_s: float
) -> None:
    """SIGKILL before step X of the K-th activity, restart: every run on Strava once."""
    with world(tmp_path, processing_delay_s) as w:
        child = _start_child(w, "--kill-at", step, "--kill-on", str(kill_on))
        output, _ = child.communicate(timeout=60)
        assert child.returncode == -signal.SIGKILL, output
        _recover(w)
        # Strava got the file but the ledger never heard: while Strava still processes
        # it, our external_id is not listed yet, so the restart sends it again and
        # Strava's duplicate check answers. Otherwise nothing is sent twice.
        sent_unrecorded = step == "record"
        _assert_exactly_once(w, resent=1 if sent_unrecorded and processing_delay_s > 0 else 0)
        if sent_unrecorded and processing_delay_s == 0:
            _assert_reconciled(w, w.pair.seeded[kill_on - 1].garmin_id)


class HeldUploadAnswer:
    """Wraps the Strava emulator's request handling: the first upload is accepted
    (Strava has the file) but its answer is held until `release` is set."""

    def __init__(self, pair: SandboxPair) -> None:
        self._handle = pair.strava.handle
        self.accepted = threading.Event()
        self.release = threading.Event()

    def __call__(
        self, method: str, path: str, query: dict[str, str], headers: Any, body: bytes
    ) -> tuple[int, dict[str, Any] | list[Any], dict[str, str]]:
        answer = self._handle(method, path, query, headers, body)
        is_upload = method == "POST" and path.rstrip("/") == "/api/v3/uploads"
        if is_upload and not self.accepted.is_set():
            self.accepted.set()
            self.release.wait(timeout=60)
        return answer


@pytest.mark.parametrize("processing_delay_s", PROCESSING_DELAYS, ids=lambda d: f"strava{d}s")
def test_killed_while_strava_holds_the_upload_answer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, processing_delay_s: float
) -> None:
    """SIGKILL while the upload request is in flight, restart: every run on Strava once."""
    with world(tmp_path, processing_delay_s) as w:
        held = HeldUploadAnswer(w.pair)
        monkeypatch.setattr(w.pair.strava, "handle", held)
        child = _start_child(w)
        try:
            assert held.accepted.wait(timeout=60), "the child never uploaded"
            child.send_signal(signal.SIGKILL)
            output, _ = child.communicate(timeout=30)
        finally:
            held.release.set()
        assert child.returncode == -signal.SIGKILL, output
        with w.pair.strava.lock:
            assert len(w.pair.strava.upload_records) == 1
        _recover(w)
        _assert_exactly_once(w, resent=1 if processing_delay_s > 0 else 0)
        if processing_delay_s == 0:
            _assert_reconciled(w, w.pair.seeded[0].garmin_id)


def test_child_without_a_kill_syncs_everything(tmp_path: Path) -> None:
    """The crash child itself, left alone, is a correct sync (the harness proves nothing
    if it never reaches the steps it is asked to die at)."""
    with world(tmp_path, 0.0) as w:
        child = _start_child(w, "--kill-at", "")
        output, _ = child.communicate(timeout=60)
        assert child.returncode == 0, output
        with w.pair.strava.lock:
            assert len(w.pair.strava.upload_records) == RUNS
