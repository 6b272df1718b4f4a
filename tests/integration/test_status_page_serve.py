"""The status page on `garmin2strava serve`'s admin listener, as a real process: at
`/` beside /healthz and /metrics; an admin listener opened beyond loopback refuses
to start without G2S_ADMIN_TOKEN and then asks every page request for it."""

from __future__ import annotations

import base64
import http.client
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from g2s_harness.serving import free_port
from garmin2strava.adapters.crypto import generate_token_key

pytestmark = pytest.mark.integration

TOKEN = "a-test-only-admin-token"


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("G2S_", "STRAVA_", "GARMIN_"))}
    return env | {
        "G2S_DB_PATH": str(tmp_path / "data" / "g2s.sqlite3"),
        "G2S_TOKEN_KEY": generate_token_key(),
        "G2S_HTTP_HOST": "127.0.0.1",
        "G2S_HTTP_PORT": str(free_port()),
        "G2S_ADMIN_PORT": str(free_port()),
        "G2S_LOG_FORMAT": "json",
        "G2S_WEBHOOK_SECRET": "a-test-only-webhook-path-secret",
        "STRAVA_SUBSCRIPTION_ID": "120475",
        **extra,
    }


def _serve(env: dict[str, str], cwd: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "garmin2strava.entrypoints.cli", "serve"],
        env=env,
        cwd=cwd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def _get(port: int, path: str, headers: dict[str, str] | None = None) -> tuple[int, str]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path, headers=headers or {})
        answer = conn.getresponse()
        return answer.status, answer.read().decode()
    finally:
        conn.close()


def _wait_listening(proc: subprocess.Popen[bytes], port: int) -> None:
    deadline = time.monotonic() + 30
    while True:
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
        except OSError:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        else:
            return


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def test_serve_shows_the_page_on_the_loopback_admin_listener(tmp_path: Path) -> None:
    """Loopback admin listener, no token: `/` is the page; /healthz is still there."""
    env = _env(tmp_path)
    proc = _serve(env, tmp_path)
    try:
        port = int(env["G2S_ADMIN_PORT"])
        _wait_listening(proc, port)
        status, body = _get(port, "/")
        assert status == 200
        assert "<h1>garmin2strava</h1>" in body
        assert "waiting: <strong>0</strong>" in body  # the container's queue
        assert _get(port, "/healthz")[0] in {200, 503}
        # The public listener has no page.
        assert _get(int(env["G2S_HTTP_PORT"]), "/")[0] == 404
    finally:
        _stop(proc)


def test_an_open_admin_listener_needs_the_token(tmp_path: Path) -> None:
    """G2S_ADMIN_HOST=0.0.0.0 without a token: exit 2, one line naming G2S_ADMIN_TOKEN.
    With one: the page asks for it (401), opens with it; /healthz needs none."""
    env = _env(tmp_path, G2S_ADMIN_HOST="0.0.0.0")  # noqa: S104 - the case under test
    done = subprocess.run(
        [sys.executable, "-m", "garmin2strava.entrypoints.cli", "serve"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    (line,) = done.stderr.strip().splitlines()
    assert "G2S_ADMIN_TOKEN" in line

    env = _env(tmp_path, G2S_ADMIN_HOST="0.0.0.0", G2S_ADMIN_TOKEN=TOKEN)  # noqa: S104
    proc = _serve(env, tmp_path)
    try:
        port = int(env["G2S_ADMIN_PORT"])
        _wait_listening(proc, port)
        assert _get(port, "/")[0] == 401
        basic = base64.b64encode(f"operator:{TOKEN}".encode()).decode()
        assert _get(port, "/", {"Authorization": f"Basic {basic}"})[0] == 200
        assert _get(port, "/healthz")[0] in {200, 503}
    finally:
        _stop(proc)
    assert proc.stderr is not None
    assert TOKEN not in proc.stderr.read().decode()
