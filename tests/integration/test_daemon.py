"""`garmin2strava run` as a real process against both sandboxes (in this process)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest

from g2s_harness.serving import free_port
from g2s_sandbox.scenario import SandboxPair, running_sandboxes, seed_demo
from garmin2strava.adapters.crypto import AesGcmCipher, generate_token_key, parse_token_key
from garmin2strava.adapters.store.sqlite import SqliteStore
from garmin2strava.domain.webhook import derive_path_secret

pytestmark = pytest.mark.integration

USER = "runner"
UPLOAD_WAIT_S = 90.0
EXIT_WAIT_S = 60.0


@pytest.fixture
def pair() -> Iterator[SandboxPair]:
    with running_sandboxes() as sandboxes:
        yield sandboxes


def daemon_env(pair: SandboxPair, db_path: Path, token_key: str) -> dict[str, str]:
    """The parent's environment without any garmin2strava setting, plus ours."""
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("G2S_", "STRAVA_", "GARMIN_"))
    }
    env.update(
        {
            "STRAVA_CLIENT_ID": str(pair.strava.client_id),
            "STRAVA_CLIENT_SECRET": pair.strava.client_secret,
            "STRAVA_REFRESH_TOKEN": pair.strava_refresh_token,
            "GARMIN_TOKENS": pair.garmin_tokens,
            "G2S_USER_ID": USER,
            "G2S_DB_PATH": str(db_path),
            "G2S_TOKEN_KEY": token_key,
            "G2S_STRAVA_BASE_URL": pair.strava.base_url,
            "G2S_GARMIN_BASE_URL": pair.garmin.base_url,
            "G2S_SYNC_INTERVAL_SECONDS": "10",
            "G2S_UPLOAD_POLL_DELAY_SECONDS": "0",  # the emulator processes in 0 s
            "G2S_HTTP_HOST": "127.0.0.1",
            "G2S_HTTP_PORT": str(free_port()),
            "G2S_ADMIN_PORT": str(free_port()),
            "G2S_LOG_LEVEL": "INFO",
            "G2S_LOG_FORMAT": "json",
            "STRAVA_VERIFY_TOKEN": VERIFY,
        }
    )
    return env


VERIFY = "daemon-test-verify-token-0123456789"
PATH_SECRET = derive_path_secret(VERIFY)


def poke_webhook(port: int) -> list[int]:
    """A handshake and events on the secret path and a wrong one, as Strava and a
    stranger would send them; returns the statuses."""
    base = f"http://127.0.0.1:{port}/webhooks/strava/"
    query = urlencode({"hub.mode": "subscribe", "hub.challenge": "c", "hub.verify_token": VERIFY})
    event = json.dumps({"object_type": "activity", "object_id": 1, "aspect_type": "create",
                        "owner_id": 1, "subscription_id": 1, "event_time": 1}).encode()  # fmt: skip
    # S310: loopback http URLs built here, no other scheme.
    requests = [
        urllib.request.Request(base + PATH_SECRET + "?" + query),  # noqa: S310 - as above
        urllib.request.Request(base + PATH_SECRET, data=event, method="POST"),  # noqa: S310
        urllib.request.Request(base + PATH_SECRET, data=b"{", method="POST"),  # noqa: S310
        urllib.request.Request(base + PATH_SECRET[:-1], data=event, method="POST"),  # noqa: S310
    ]
    statuses = []
    for request in requests:
        try:
            with urllib.request.urlopen(request, timeout=5) as answer:  # noqa: S310 - loopback
                statuses.append(answer.status)
        except urllib.error.HTTPError as error:
            statuses.append(error.code)
    return statuses


def secrets_in_play(pair: SandboxPair, db_path: Path, token_key: str) -> list[str]:
    """Every token the daemon held: the settings' ones and the rotated ones it stored."""
    found = [pair.strava.client_secret, pair.strava_refresh_token, token_key, VERIFY, PATH_SECRET]
    garmin_blobs = [pair.garmin_tokens]
    with SqliteStore(db_path, AesGcmCipher(parse_token_key(token_key))) as store:
        strava = store.get_strava_tokens(USER)
        assert strava is not None
        found += [strava.access_token, strava.refresh_token]
        garmin = store.get_garmin_tokens(USER)
        assert garmin is not None
        garmin_blobs.append(garmin.blob)
    for blob in garmin_blobs:
        tokens: dict[str, Any] = json.loads(blob)
        found += [tokens["di_token"], tokens["di_refresh_token"]]
    return [secret for secret in found if secret]


def test_run_syncs_logs_json_and_stops_cleanly_on_sigterm(
    pair: SandboxPair, tmp_path: Path
) -> None:
    """The daemon uploads the seeded runs, logs JSON cycles, exits 0 on SIGTERM, leaks no token."""
    seeded = seed_demo(pair, datetime.now(tz=UTC))
    expected = {f"garmin2strava_{r.garmin_id}" for r in seeded if r.expect == "uploaded"}
    db_path = tmp_path / "data" / "g2s.sqlite3"
    token_key = generate_token_key()
    out_path, err_path = tmp_path / "stdout.txt", tmp_path / "stderr.txt"
    env = daemon_env(pair, db_path, token_key)
    with out_path.open("w") as out, err_path.open("w") as err:
        process = subprocess.Popen(
            [sys.executable, "-m", "garmin2strava.entrypoints.cli", "run"],
            cwd=tmp_path,  # no developer .env
            env=env,
            stdout=out,
            stderr=err,
        )
        try:
            deadline = time.monotonic() + UPLOAD_WAIT_S
            while time.monotonic() < deadline and process.poll() is None:
                with pair.strava.lock:
                    on_strava = {a.external_id for a in pair.strava.activities.values()}
                if expected <= on_strava:
                    break
                time.sleep(0.2)
            assert process.poll() is None, "the daemon exited by itself"
            assert expected <= on_strava, "the seeded runs did not reach Strava in time"
            # No subscription id known yet: events are refused (503) and logged as such.
            port = int(env["G2S_HTTP_PORT"])
            assert poke_webhook(port) == [200, 503, 400, 404]
            process.send_signal(signal.SIGTERM)
            exit_code = process.wait(timeout=EXIT_WAIT_S)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()

    stdout, stderr = out_path.read_text(), err_path.read_text()
    assert exit_code == 0, stderr[-2000:]
    lines = [json.loads(line) for line in stderr.splitlines() if line.strip()]
    events = [line["event"] for line in lines]
    assert "daemon.start" in events
    assert "daemon.stopped" in events
    cycles = [line for line in lines if line["event"] == "sync.cycle"]
    assert cycles
    assert all(c["userId"] == USER and isinstance(c["durationMs"], int) for c in cycles)
    assert any(c["outcomes"].get("uploaded") == len(expected) for c in cycles)
    assert pair.strava_counts()["uploads"] == len(expected)

    output = stdout + stderr
    for secret in secrets_in_play(pair, db_path, token_key):
        assert secret[:12] not in output, "a token or secret reached the daemon's output"


def test_freeze_heap_imports_what_the_threads_need_and_freezes_it() -> None:
    """`freeze_heap` imports the named modules and moves the live heap into the
    permanent generation, so full collections under webhook load skip the libraries."""
    code = (
        "import gc, sys\n"
        "from garmin2strava.entrypoints.daemon import freeze_heap\n"
        "from garmin2strava.entrypoints.server import MirrorRuntime\n"
        "assert 'uvicorn' not in sys.modules\n"
        "before = gc.get_freeze_count()\n"
        "freeze_heap(MirrorRuntime.MODULES)\n"
        "imported = all(m in sys.modules for m in MirrorRuntime.MODULES)\n"
        "print(imported, gc.get_freeze_count() - before)\n"
    )
    out = subprocess.run(  # noqa: S603 (our interpreter, constant code)
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.split()
    assert out[0] == "True"
    assert int(out[1]) > 10_000  # stravalib, pydantic and uvicorn are far more objects
