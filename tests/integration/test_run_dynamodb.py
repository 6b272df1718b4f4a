"""The real `garmin2strava run` process on the DynamoDB store (a fresh table on the
session's moto server) against the Garmin/Strava sandboxes: it serves the admin
listener alone (status page, detailed /healthz on the sync, /metrics) so the image's
HEALTHCHECK passes, binds no public webhook listener, runs no mirror worker, and
still stops with exit 0 on SIGTERM.

The tests that only look at a running process share one per module (`SharedRun`);
the test that stops it with SIGTERM comes last, and a test that finds it stopped gets
a fresh one. `--no-http` has its own process."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import boto3
import pytest

from g2s_harness.serving import free_port, image_healthcheck
from g2s_sandbox.scenario import SandboxPair, running_sandboxes, seed_run
from garmin2strava.adapters.store.dynamodb import create_table

pytestmark = [pytest.mark.integration, pytest.mark.slow]

USER = "dyn-runner"
REPO = Path(__file__).resolve().parents[2]


@dataclass(slots=True)
class Running:
    proc: subprocess.Popen[bytes]
    public_port: int
    admin_port: int
    log: Path

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


def get(port: int, path: str) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path)
        answer = conn.getresponse()
        return answer.status, answer.read()
    finally:
        conn.close()


@contextlib.contextmanager
def fresh_table() -> Iterator[str]:
    """A fresh garmin2strava table on the local moto server (boto3's variables set)."""
    name = f"g2s-run-{uuid.uuid4().hex[:10]}"
    client = boto3.client("dynamodb")
    create_table(client, name)
    try:
        yield name
    finally:
        client.delete_table(TableName=name)


@pytest.fixture
def table(aws_env: str) -> Iterator[str]:
    del aws_env  # boto3 reaches the moto server
    with fresh_table() as name:
        yield name


@pytest.fixture
def pair() -> Iterator[SandboxPair]:
    with running_sandboxes() as sandboxes:
        yield sandboxes


@contextlib.contextmanager
def running(pair: SandboxPair, table: str, tmp_path: Path) -> Iterator[Running]:
    """`garmin2strava run` on DynamoDB with single-user settings (the moto endpoint
    and dummy credentials from aws_env in its environment); yields once its admin
    port accepts; SIGTERM at the end if still running."""
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("G2S_", "STRAVA_", "GARMIN_"))
    }
    public_port, admin_port = free_port(), free_port()
    env |= pair.environment(
        user_id=USER,
        db_path=tmp_path / "unused.sqlite3",
        G2S_STORE="dynamodb",
        G2S_DYNAMODB_TABLE=table,
        G2S_HTTP_HOST="127.0.0.1",
        G2S_HTTP_PORT=str(public_port),
        G2S_ADMIN_PORT=str(admin_port),
        G2S_LOG_FORMAT="json",
        G2S_LOG_LEVEL="INFO",
        G2S_SYNC_INTERVAL_SECONDS="3600",
        G2S_UPLOAD_POLL_DELAY_SECONDS="0",
    )
    log = tmp_path / "run.log"
    with log.open("wb") as sink:
        proc = subprocess.Popen(
            [sys.executable, "-m", "garmin2strava.entrypoints.cli", "run"],
            env=env,
            stdout=sink,
            stderr=sink,
            cwd=tmp_path,
        )
    served = Running(proc, public_port, admin_port, log)
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, served.log_text()
            try:
                socket.create_connection(("127.0.0.1", admin_port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, served.log_text()
                time.sleep(0.05)
        yield served
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def wait_for_a_cycle(served: Running) -> dict[str, object]:
    """The admin /healthz body once it names the account's first cycle."""
    deadline = time.monotonic() + 30
    while True:
        status, body = get(served.admin_port, "/healthz")
        report = json.loads(body)
        if report.get(f"lastCycle.{USER}") is not None:
            assert status == 200, report
            return dict(report)
        assert time.monotonic() < deadline, served.log_text()
        time.sleep(0.2)


class SharedRun:
    """One `run` on DynamoDB for the tests that only look at it: a run seeded on Garmin,
    a fresh table, and the process once its first cycle ran (the upload done). `live()`
    starts another world if a test stopped the last one."""

    def __init__(self, tmp_dir: Path) -> None:
        self._tmp_dir = tmp_dir
        self._worlds = contextlib.ExitStack()
        self._current: tuple[SandboxPair, Running] | None = None

    def live(self) -> tuple[SandboxPair, Running]:
        if self._current is None or self._current[1].proc.poll() is not None:
            pair = self._worlds.enter_context(running_sandboxes())
            table = self._worlds.enter_context(fresh_table())
            seed_run(pair, 5_000_001, start_utc=datetime.now(UTC) - timedelta(days=1), name="Easy")
            tmp_path = self._tmp_dir / f"world-{uuid.uuid4().hex[:8]}"
            tmp_path.mkdir()
            served = self._worlds.enter_context(running(pair, table, tmp_path))
            wait_for_a_cycle(served)
            self._current = (pair, served)
        return self._current

    def close(self) -> None:
        self._worlds.close()


@pytest.fixture(scope="module")
def shared_run(
    module_aws_env: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[SharedRun]:
    del module_aws_env  # boto3, here and in the process, reaches the moto server
    shared = SharedRun(tmp_path_factory.mktemp("run-dynamodb"))
    yield shared
    shared.close()


def test_the_image_healthcheck_passes_on_dynamodb(shared_run: SharedRun) -> None:
    """The Dockerfile's HEALTHCHECK command, run as Docker would against `run` on
    DynamoDB once a cycle ran: exit 0 within its 5 s, the detailed report ok."""
    _pair, served = shared_run.live()
    done, took = image_healthcheck(served.admin_port)
    assert done.returncode == 0, done.stderr
    assert took < 5
    assert json.loads(done.stdout)["ok"] is True


def test_run_on_dynamodb_serves_the_admin_listener_alone(shared_run: SharedRun) -> None:
    """On DynamoDB `run` answers the admin /healthz (200 once a cycle ran, no worker
    asked for), /metrics (the admin listener's, no queue or webhook samples) and the
    status page; nothing listens on the public port; the start says so; SIGTERM exits 0
    (this stops the module's shared process, so it runs after the others)."""
    pair, served = shared_run.live()
    report = wait_for_a_cycle(served)
    assert report["ok"] is True
    assert report["mirrorWorker"] == "not in this process"
    assert "workerLastRun" not in report
    assert pair.strava_counts()["uploads"] == 1  # the sync ran, on DynamoDB
    status, metrics = get(served.admin_port, "/metrics")
    assert status == 200
    text = metrics.decode()
    assert 'g2s_http_connections_open{listener="admin"}' in text
    assert 'g2s_uploads{outcome="uploaded"} 1' in text
    assert "g2s_queue_depth" not in text
    assert "g2s_webhook_events_received_total" not in text
    assert 'listener="public"' not in text
    status, page = get(served.admin_port, "/")
    assert status == 200
    assert USER.encode() in page
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", served.public_port), timeout=2).close()
    served.proc.send_signal(signal.SIGTERM)
    assert served.proc.wait(timeout=30) == 0, served.log_text()
    events = [json.loads(line) for line in served.log_text().splitlines() if line.startswith("{")]
    names = [e.get("event") for e in events]
    assert "daemon.admin_only" in names, served.log_text()
    assert "daemon.stopped" in names
    started = [e for e in events if e.get("event") == "http.start"]
    assert [e["listener"] for e in started] == ["admin"]


def test_run_no_http_on_dynamodb_listens_nowhere(
    pair: SandboxPair, table: str, tmp_path: Path
) -> None:
    """`run --no-http` on DynamoDB keeps meaning no listener: the admin port is still
    closed once the first sync cycle ran, and SIGTERM exits 0."""
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("G2S_", "STRAVA_", "GARMIN_"))
    }
    admin_port = free_port()
    env |= pair.environment(
        user_id=USER,
        db_path=tmp_path / "unused.sqlite3",
        G2S_STORE="dynamodb",
        G2S_DYNAMODB_TABLE=table,
        G2S_ADMIN_PORT=str(admin_port),
        G2S_LOG_FORMAT="json",
        G2S_LOG_LEVEL="INFO",
        G2S_SYNC_INTERVAL_SECONDS="3600",
    )
    log = tmp_path / "run.log"
    with log.open("wb") as sink:
        proc = subprocess.Popen(
            [sys.executable, "-m", "garmin2strava.entrypoints.cli", "run", "--no-http"],
            env=env,
            stdout=sink,
            stderr=sink,
            cwd=tmp_path,
        )
    try:
        deadline = time.monotonic() + 30
        # Its first cycle has run: past the point where a listener would have opened.
        while '"sync.cycle"' not in log.read_text(errors="replace"):
            assert proc.poll() is None, log.read_text(errors="replace")
            assert time.monotonic() < deadline, log.read_text(errors="replace")
            time.sleep(0.05)
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", admin_port), timeout=2).close()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0, log.read_text(errors="replace")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
