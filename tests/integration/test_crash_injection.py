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

The harness (`crash_world` in conftest.py) is shared with the DynamoDB twin in
test_dynamodb_acceptance.py; this module provides only its store, `crash_store`.
"""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from g2s_harness.sandbox_settings import sandbox_settings
from g2s_sandbox.scenario import SandboxPair
from garmin2strava.adapters.crypto import generate_token_key
from garmin2strava.adapters.store.sqlite import SqliteStore
from garmin2strava.bootstrap import build_cipher
from garmin2strava.settings import Settings

if TYPE_CHECKING:
    from collections.abc import Callable
    from contextlib import AbstractContextManager

    # Types only: conftest.py is not importable at run time (--import-mode=importlib).
    from conftest import CrashStore, CrashWorld

    OpenWorld = Callable[[float], AbstractContextManager[CrashWorld]]

pytestmark = [pytest.mark.integration, pytest.mark.slow]


class SqliteCrashStore:
    """The crash child and its restart share one SQLite file."""

    def settings(self, pair: SandboxPair, tmp_path: Path) -> Settings:
        return sandbox_settings(pair, tmp_path / "g2s.sqlite3", token_key=generate_token_key())

    def child_env(self, settings: Settings) -> dict[str, str]:  # noqa: ARG002 (CrashStore's signature)
        return {"G2S_STORE": "sqlite"}

    def open_store(self, settings: Settings) -> SqliteStore:
        return SqliteStore(settings.db_path, build_cipher(settings))


@pytest.fixture
def crash_store() -> CrashStore:
    return SqliteCrashStore()


def test_killed_at_step_then_restarted(
    crash_world: OpenWorld, crash_step: str, crash_kill_on: int, strava_processing_delay_s: float
) -> None:
    """SIGKILL before step X of the K-th activity, restart: every run on Strava once."""
    with crash_world(strava_processing_delay_s) as w:
        returncode, output = w.run_child("--kill-at", crash_step, "--kill-on", str(crash_kill_on))
        assert returncode == -signal.SIGKILL, output
        w.recover()
        # Strava got the file but the ledger never heard: while Strava still processes
        # it, our external_id is not listed yet, so the restart sends it again and
        # Strava's duplicate check answers. Otherwise nothing is sent twice.
        sent_unrecorded = crash_step == "record"
        still_processing = strava_processing_delay_s > 0
        w.assert_exactly_once(resent=1 if sent_unrecorded and still_processing else 0)
        if sent_unrecorded and not still_processing:
            w.assert_reconciled(w.pair.seeded[crash_kill_on - 1].garmin_id)


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


def test_killed_while_strava_holds_the_upload_answer(
    crash_world: OpenWorld, monkeypatch: pytest.MonkeyPatch, strava_processing_delay_s: float
) -> None:
    """SIGKILL while the upload request is in flight, restart: every run on Strava once."""
    with crash_world(strava_processing_delay_s) as w:
        held = HeldUploadAnswer(w.pair)
        monkeypatch.setattr(w.pair.strava, "handle", held)
        child = w.start_child()
        try:
            assert held.accepted.wait(timeout=60), "the child never uploaded"
            child.send_signal(signal.SIGKILL)
            output, _ = child.communicate(timeout=30)
        finally:
            held.release.set()
        assert child.returncode == -signal.SIGKILL, output
        assert w.uploads() == 1
        w.recover()
        w.assert_exactly_once(resent=1 if strava_processing_delay_s > 0 else 0)
        if strava_processing_delay_s == 0:
            w.assert_reconciled(w.pair.seeded[0].garmin_id)


def test_killed_between_upload_and_put_then_restarted(
    crash_world: OpenWorld, finish_crash_step: str, crash_kill_on: int
) -> None:
    """Issue 21: SIGKILL after the K-th run is settled and before its PUT, or after
    the PUT and before the ledger records it; restart: every run on Strava once, with
    its gear, nothing owed (a PUT is sent again at most once per kill: idempotent)."""
    with crash_world(0.0) as w:
        gear_id = w.give_gear()
        returncode, output = w.run_child(
            "--kill-at", finish_crash_step, "--kill-on", str(crash_kill_on)
        )
        assert returncode == -signal.SIGKILL, output
        w.recover()
        w.assert_exactly_once()
        w.assert_geared(gear_id)
        assert w.runs <= w.puts() <= w.runs + 1


class HeldPutAnswer:
    """Wraps the Strava emulator's request handling: the first PUT is applied but its
    answer held until `release` is set."""

    def __init__(self, pair: SandboxPair) -> None:
        self._handle = pair.strava.handle
        self.applied = threading.Event()
        self.release = threading.Event()

    def __call__(
        self, method: str, path: str, query: dict[str, str], headers: Any, body: bytes
    ) -> tuple[int, dict[str, Any] | list[Any], dict[str, str]]:
        answer = self._handle(method, path, query, headers, body)
        if method == "PUT" and not self.applied.is_set():
            self.applied.set()
            self.release.wait(timeout=60)
        return answer


def test_killed_during_the_put_then_restarted(
    crash_world: OpenWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SIGKILL while the PUT is in flight (Strava applied it, the child never learns):
    the restart sends it again; every run on Strava once, with its gear."""
    with crash_world(0.0) as w:
        gear_id = w.give_gear()
        held = HeldPutAnswer(w.pair)
        monkeypatch.setattr(w.pair.strava, "handle", held)
        child = w.start_child()
        try:
            assert held.applied.wait(timeout=60), "the child never sent a PUT"
            child.send_signal(signal.SIGKILL)
            output, _ = child.communicate(timeout=30)
        finally:
            held.release.set()
        assert child.returncode == -signal.SIGKILL, output
        w.recover()
        w.assert_exactly_once()
        w.assert_geared(gear_id)
        assert w.puts() == w.runs + 1


def test_child_without_a_kill_syncs_everything(crash_world: OpenWorld) -> None:
    """The crash child itself, left alone, is a correct sync (the harness proves nothing
    if it never reaches the steps it is asked to die at)."""
    with crash_world(0.0) as w:
        returncode, output = w.run_child("--kill-at", "")
        assert returncode == 0, output
        assert w.uploads() == w.runs
