"""Shared fixtures for integration tests.

`store` runs the Store contract tests against every implementation in STORE_FACTORIES.
To add one, add a factory here: a context manager that takes a fresh temporary
directory and yields an empty store. A factory that needs other fixtures first (the
DynamoDB one needs the local moto server and the AWS environment) names them in
STORE_NEEDS.

DynamoDB runs against one moto server per session (ThreadedMotoServer on 127.0.0.1),
reached through boto3's standard AWS_ENDPOINT_URL* variables with dummy credentials;
each test gets a fresh table with a unique name.

`crash_world` is the crash-injection harness shared by test_crash_injection.py (SQLite)
and test_dynamodb_acceptance.py: seeded sandboxes, the crash child (forked by
crash_child.py's fork server, which has imported the client libraries once per
session), the restart and the exactly-once checks. Each of those modules provides its
store as a `crash_store` fixture (a CrashStore). Test modules cannot import this file at run time
(--import-mode=importlib), so they import its types under TYPE_CHECKING only.

`lambda_deployment` opens the Lambda functions' deployment on moto
(g2s_harness.aws_lambda) for test_lambda_handlers.py and
test_lambda_cold_warm.py.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import select
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

import boto3
import pytest
from moto.moto_server.werkzeug_app import (
    DomainDispatcherApplication,
    MotoRequestHandler,
    create_backend_app,
)
from moto.server import ThreadedMotoServer
from werkzeug.serving import make_server

from g2s_harness.aws_lambda import Deployment, deployed
from g2s_harness.sandbox_settings import sandbox_settings
from g2s_sandbox.scenario import SandboxPair, running_sandboxes, seed_run
from g2s_sandbox.strava import StravaSandbox
from garmin2strava.adapters.crypto import AesGcmCipher
from garmin2strava.adapters.queue_sqlite import SqliteEventQueue
from garmin2strava.adapters.store.dynamodb import DynamoDBStore, create_table
from garmin2strava.adapters.store.sqlite import SqliteStore
from garmin2strava.bootstrap import App, bootstrap, build_cipher, utc_now
from garmin2strava.domain.models import LedgerEntry, UploadOutcome
from garmin2strava.domain.upload_rules import external_id_for
from garmin2strava.ports import Store
from garmin2strava.services.accounts import ensure_settings_account
from garmin2strava.services.sync_accounts import sync_all
from garmin2strava.settings import Settings

TEST_KEY = bytes(range(32))


@contextlib.contextmanager
def _sqlite_store(tmp_path: Path) -> Iterator[Store]:
    with SqliteStore(tmp_path / "store" / "g2s.sqlite3", AesGcmCipher(TEST_KEY)) as store:
        yield store


@contextlib.contextmanager
def _dynamodb_store(tmp_path: Path) -> Iterator[Store]:
    client = boto3.client("dynamodb")  # configured by the aws_env fixture
    table = f"g2s-test-{uuid.uuid4().hex[:12]}"
    create_table(client, table)
    try:
        yield DynamoDBStore(table, AesGcmCipher(TEST_KEY), client=client)
    finally:
        client.delete_table(TableName=table)


STORE_FACTORIES: dict[str, Callable[[Path], AbstractContextManager[Store]]] = {
    "sqlite": _sqlite_store,
    "dynamodb": _dynamodb_store,
}
STORE_NEEDS: dict[str, tuple[str, ...]] = {"dynamodb": ("aws_env",)}


class _OneRequestAtATime:
    """WSGI wrapper that runs one request at a time (connections stay threaded)."""

    def __init__(self, app: Any) -> None:
        self._app = app
        self._lock = threading.Lock()

    def __call__(self, environ: Any, start_response: Any) -> Iterable[bytes]:
        with self._lock:
            return list(self._app(environ, start_response))


class _QuietRequestHandler(MotoRequestHandler):
    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        """One line per request would bury the test output."""


class _AtomicMotoServer(ThreadedMotoServer):
    """moto applies a conditional write as read-check-write without a lock, so two
    racing requests can both pass the condition; DynamoDB applies each write
    atomically. Serving one request at a time restores that for the race tests."""

    def _server_entry(self) -> None:
        app = _OneRequestAtATime(DomainDispatcherApplication(create_backend_app))
        self._server = make_server(
            self._ip_address, self._port, app, threaded=True, request_handler=_QuietRequestHandler
        )
        self._server_ready_event.set()
        self._server.serve_forever()


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    """One local moto server (DynamoDB, KMS, SQS, ...) for the session, on loopback."""
    server = _AtomicMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


def _point_boto3_at(moto_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AWS_CONFIG_FILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_endpoint)
    monkeypatch.setenv("AWS_ENDPOINT_URL_DYNAMODB", moto_endpoint)


@pytest.fixture
def aws_env(moto_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """boto3 clients built during the test reach only the local moto server."""
    _point_boto3_at(moto_endpoint, monkeypatch)
    return moto_endpoint


@pytest.fixture(scope="module")
def module_aws_env(moto_endpoint: str) -> Iterator[pytest.MonkeyPatch]:
    """`aws_env` for a whole module (what a module-scoped fixture builds on moto): the
    MonkeyPatch holding the variables, undone after the module's last test."""
    with pytest.MonkeyPatch.context() as patch:
        _point_boto3_at(moto_endpoint, patch)
        yield patch


@pytest.fixture
def db(tmp_path: Path) -> Path:
    """The SQLite file of a test's webhook queue (the store's file in production)."""
    return tmp_path / "g2s.sqlite3"


@pytest.fixture
def queue(db: Path) -> Iterator[SqliteEventQueue]:
    """A webhook queue on `db`, closed after the test (modules may override it)."""
    q = SqliteEventQueue(db)
    yield q
    q.close()


@pytest.fixture(params=list(STORE_FACTORIES))
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    for needed in STORE_NEEDS.get(str(request.param), ()):
        request.getfixturevalue(needed)
    factory = STORE_FACTORIES[str(request.param)]
    with factory(tmp_path) as made:
        yield made


@pytest.fixture
def lambda_deployment(
    aws_env: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> Callable[..., AbstractContextManager[Deployment]]:
    """Opens the Lambda functions' deployment (g2s_harness.aws_lambda.deployed, keyword
    arguments as there) on the session's moto server, its variables set for this test."""
    return functools.partial(deployed, monkeypatch.setenv, tmp_path)


# -- the Strava emulator alone (test_strava_adapter.py, test_webhook_sandbox.py) -------
@pytest.fixture
def sandbox() -> Iterator[StravaSandbox]:
    """The Strava emulator on loopback (a module may define its own `sandbox`, as
    test_garmin_adapter.py does for Garmin's)."""
    with StravaSandbox() as running:
        yield running


# -- commands run in this process through the CLI (test_cli*.py, test_*_cli.py) -------
@pytest.fixture
def clean_cli_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No setting of the developer's (environment or ./.env) reaches the command; the
    root logger, which main() points at the test's captured stderr, is put back."""
    for name in list(os.environ):
        if name.startswith(("G2S_", "STRAVA_", "GARMIN_")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    monkeypatch.chdir(tmp_path)
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


# -- the app against both sandboxes (sync tests) ---------------------------------------
@pytest.fixture
def pair() -> Iterator[SandboxPair]:
    with running_sandboxes() as sandboxes:
        yield sandboxes


@pytest.fixture
def open_app(tmp_path: Path) -> Iterator[Callable[[Settings], App]]:
    """Builds apps (each with its own SqliteStore object) and closes their stores."""
    stores: list[SqliteStore] = []

    def build(settings: Settings) -> App:
        store = SqliteStore(settings.db_path, build_cipher(settings))
        stores.append(store)
        app = bootstrap(settings, store=store)
        app.poll_delay_s = 0
        app.garmin_retry_min_wait_s = 0.01
        ensure_settings_account(app.store, settings, app.clock)
        return app

    yield build
    for store in stores:
        store.close()


@pytest.fixture
def make_app(
    pair: SandboxPair, tmp_path: Path, open_app: Callable[[Settings], App]
) -> Callable[..., App]:
    def build(**overrides: Any) -> App:
        return open_app(sandbox_settings(pair, tmp_path / "g2s.sqlite3", **overrides))

    return build


# -- crash injection (test_crash_injection.py, test_dynamodb_acceptance.py) -------------
CRASH_CHILD = Path(__file__).with_name("crash_child.py")
CRASH_STEPS = ("intent", "upload", "record", "poll")  # crash_child.py's checkpoints
# After the upload (issue 21): the settled entry owes its PUT ("finish"), and the PUT
# answered but not recorded ("finish_record").
FINISH_CRASH_STEPS = ("finish", "finish_record")
CRASH_RUNS = 3
CRASH_ACCEPTABLE = frozenset(
    {UploadOutcome.UPLOADED, UploadOutcome.EXISTS, UploadOutcome.DUPLICATE, UploadOutcome.SKIPPED}
)
# Strava processes an upload in 0 s, or in longer than the child waits before its poll
# (so kills and the restart land while Strava is still processing).
CRASH_PROCESSING_DELAYS = (0.0, 0.5)
CHILD_POLL_DELAY_S = 0.05
MAX_RECOVERY_CYCLES = 60


class CrashStore(Protocol):
    """What the crash harness needs to know of a store."""

    def settings(self, pair: SandboxPair, tmp_path: Path) -> Settings:
        """The settings of the syncing process (and of its restart)."""

    def child_env(self, settings: Settings) -> dict[str, str]:
        """The store's own variables in the crash child's environment."""

    def open_store(self, settings: Settings) -> AbstractContextManager[Store]:
        """The store a restarted process opens: the dead process's file or table."""


class CrashChildren:
    """crash_child.py's fork server (one per session): each child is forked from an
    interpreter that has imported the client libraries once."""

    def __init__(self, tmp_dir: Path) -> None:
        self._tmp_dir = tmp_dir
        self._count = 0
        self._running: CrashChild | None = None
        self._server = subprocess.Popen(  # noqa: S603 (our own interpreter and script)
            [sys.executable, str(CRASH_CHILD), "--serve"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    def start(self, argv: list[str], env: dict[str, str], cwd: Path) -> CrashChild:
        if self._running is not None and self._running.returncode is None:
            self._running.kill()  # a failed test left its child behind
        self._count += 1
        output = self._tmp_dir / f"child-{self._count}.log"
        request = {"argv": argv, "env": env, "cwd": str(cwd), "output": str(output)}
        assert self._server.stdin is not None
        self._server.stdin.write(json.dumps(request) + "\n")
        self._server.stdin.flush()
        pid = int(self._answer(timeout=60)["pid"])
        self._running = CrashChild(self, pid, output)
        return self._running

    def _answer(self, timeout: float) -> dict[str, Any]:
        """The server's next answer line; subprocess.TimeoutExpired after `timeout` s."""
        stdout = self._server.stdout
        assert stdout is not None
        ready, _, _ = select.select([stdout], [], [], timeout)
        if not ready:
            raise subprocess.TimeoutExpired(str(CRASH_CHILD), timeout)
        line = stdout.readline()
        if not line:
            pytest.fail(f"the crash fork server exited ({self._server.poll()})")
        answer: dict[str, Any] = json.loads(line)
        return answer

    def close(self) -> None:
        if self._running is not None and self._running.returncode is None:
            self._running.kill()
        assert self._server.stdin is not None
        self._server.stdin.close()
        self._server.wait(timeout=30)


@dataclass(slots=True)
class CrashChild:
    """One forked crash child: what the tests used of subprocess.Popen."""

    server: CrashChildren
    pid: int
    output: Path
    returncode: int | None = None

    def send_signal(self, signum: int) -> None:
        os.kill(self.pid, signum)

    def communicate(self, timeout: float) -> tuple[str, None]:
        """Waits for the child's end: its output (stdout and stderr), as Popen does."""
        if self.returncode is None:
            try:
                self.returncode = int(self.server._answer(timeout)["returncode"])
            except subprocess.TimeoutExpired:
                self.kill()
                raise
        return self.output.read_text(encoding="utf-8", errors="replace"), None

    def kill(self) -> None:
        """SIGKILL, then the server's word that the child is gone."""
        with contextlib.suppress(ProcessLookupError):
            self.send_signal(signal.SIGKILL)
        self.returncode = int(self.server._answer(30)["returncode"])


@pytest.fixture(scope="session")
def crash_children(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CrashChildren]:
    children = CrashChildren(tmp_path_factory.mktemp("crash-children"))
    yield children
    children.close()


@dataclass(slots=True)
class CrashWorld:
    """Seeded sandboxes and a store the crash child syncs into, then the restart."""

    pair: SandboxPair
    store: CrashStore
    settings: Settings
    child_env: dict[str, str]
    children: CrashChildren
    runs: int = CRASH_RUNS

    def start_child(self, *args: str) -> CrashChild:
        argv = ["--poll-delay", str(CHILD_POLL_DELAY_S), *args]
        return self.children.start(argv, self.child_env, self.settings.db_path.parent)

    def run_child(self, *args: str) -> tuple[int, str]:
        """The crash child run to its end (or its kill): its exit code and its output."""
        child = self.start_child(*args)
        output, _ = child.communicate(timeout=60)
        assert child.returncode is not None
        return child.returncode, output

    def give_gear(self, name: str = "Pegasus 41") -> str:
        """Every seeded run used Garmin gear `name`, and the athlete has a Strava shoe
        of that name: each run's finish is one PUT of that shoe. Its Strava id."""
        for run in self.pair.seeded:
            self.pair.garmin.set_activity_gear(run.garmin_id, name)
        return self.pair.strava.add_gear(self.pair.athlete_id, name)

    def assert_geared(self, gear_id: str) -> None:
        """Every run's Strava activity carries `gear_id`, and its ledger entry owes
        nothing more and says so."""
        with self.pair.strava.lock:
            live = [a for a in self.pair.strava.activities.values() if not a.deleted]
        assert [a.gear_id for a in live] == [gear_id] * self.runs
        with self.restarted_app() as app:
            ledger = self.ledger(app)
        for entry in ledger.values():
            assert entry.finish is not None, entry
            assert (entry.finish.owed, entry.finish.gear_id) == (None, gear_id), entry

    def puts(self) -> int:
        """Every PUT /activities/{id} Strava applied so far."""
        with self.pair.strava.lock:
            return len(self.pair.strava.activity_updates)

    def uploads(self) -> int:
        """Every upload request Strava accepted so far."""
        with self.pair.strava.lock:
            return len(self.pair.strava.upload_records)

    @contextlib.contextmanager
    def restarted_app(self, clock: Callable[[], datetime] = utc_now) -> Iterator[App]:
        """The app of a restarted process, on the dead process's store."""
        with self.store.open_store(self.settings) as store:
            app = bootstrap(self.settings, store=store)
            app.clock = clock
            app.poll_delay_s = CHILD_POLL_DELAY_S
            yield app

    def recover(self) -> None:
        """Restart: a cycle within the dead process's lease waits; once the lease has
        expired, cycles run until the ledger has nothing left unsettled."""
        with self.restarted_app() as early:
            ensure_settings_account(early.store, self.settings, early.clock)
            (report,) = sync_all(early.store, early.sync_deps)
            assert "lease" in report.skipped_reason
            lease_ttl = timedelta(seconds=early.sync_config().lease_ttl_s + 1)

        with self.restarted_app(lambda: utc_now() + lease_ttl) as app:
            for _ in range(MAX_RECOVERY_CYCLES):
                reports = sync_all(app.store, app.sync_deps)
                assert all(r.ok and not r.skipped_reason for r in reports), reports
                if self.settled(app):
                    assert app.store.list_unsettled_uploads(self.settings.user_id) == []
                    return
                time.sleep(0.05)  # Strava (the emulator) is still processing an upload
            pytest.fail(f"ledger not settled: {self.ledger(app)}")

    def ledger(self, app: App) -> dict[int, LedgerEntry]:
        ids = [run.garmin_id for run in self.pair.seeded]
        return app.store.get_uploads(self.settings.user_id, ids)

    def settled(self, app: App) -> bool:
        ledger = self.ledger(app)
        return len(ledger) == self.runs and all(e.outcome.settled for e in ledger.values())

    def assert_reconciled(self, garmin_id: int) -> None:
        """The restart found our external_id on Strava and recorded the upload as ours."""
        with self.restarted_app() as app:
            entry = self.ledger(app)[garmin_id]
        assert entry.outcome is UploadOutcome.UPLOADED, entry
        assert entry.detail.startswith("reconciled"), entry

    def assert_exactly_once(self, *, resent: int = 0) -> None:
        """0 duplicates, 0 lost: every seeded run once on Strava (by start time and by our
        external_id), its ledger entry settled on that activity; at most `resent` files
        were sent twice."""
        strava = self.pair.strava
        strava.settle()
        with strava.lock:
            live = [a for a in strava.activities.values() if not a.deleted]
            uploads = len(strava.upload_records)
        with self.restarted_app() as app:
            ledger = self.ledger(app)
        for run in self.pair.seeded:
            by_start = [a for a in live if a.start_utc == run.start_utc]
            by_external_id = [a for a in live if a.external_id == external_id_for(run.garmin_id)]
            assert len(by_start) == 1, (run, by_start)
            assert by_external_id == by_start, (run, by_external_id)
            entry = ledger[run.garmin_id]
            assert entry.outcome in CRASH_ACCEPTABLE, entry
            assert entry.strava_activity_id == by_start[0].activity_id, entry
        assert len(live) == self.runs
        assert self.runs <= uploads <= self.runs + resent


def _crash_child_env(settings: Settings, store: CrashStore) -> dict[str, str]:
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
            "G2S_DB_PATH": str(settings.db_path),
            "G2S_TOKEN_KEY": secret(settings.token_key),
            "G2S_STRAVA_BASE_URL": settings.strava_base_url,
            "G2S_GARMIN_BASE_URL": settings.garmin_base_url,
            "G2S_LOG_LEVEL": "WARNING",
            "G2S_LOG_FORMAT": "text",
            **store.child_env(settings),
        }
    )
    return env


@pytest.fixture
def crash_world(
    crash_store: CrashStore, crash_children: CrashChildren, tmp_path: Path
) -> Callable[[float], AbstractContextManager[CrashWorld]]:
    """Opens a world on the test module's `crash_store`, Strava processing each upload
    in the given seconds: CRASH_RUNS runs seeded on Garmin, none on Strava yet."""

    @contextlib.contextmanager
    def open_world(processing_delay_s: float) -> Iterator[CrashWorld]:
        with running_sandboxes(processing_delay_s=processing_delay_s) as pair:
            start = datetime.now(tz=UTC).replace(microsecond=0) - timedelta(days=CRASH_RUNS + 1)
            for i in range(CRASH_RUNS):
                seed_run(
                    pair,
                    31_000_001 + i,
                    start_utc=start + timedelta(days=i, hours=i),
                    name=f"Run {i + 1}",
                    duration_s=1500 + 300 * i,
                )
            settings = crash_store.settings(pair, tmp_path)
            env = _crash_child_env(settings, crash_store)
            yield CrashWorld(pair, crash_store, settings, env, crash_children)

    return open_world


@pytest.fixture(params=CRASH_STEPS)
def crash_step(request: pytest.FixtureRequest) -> str:
    """Each checkpoint of crash_child.py the child is killed before."""
    return str(request.param)


@pytest.fixture(params=FINISH_CRASH_STEPS)
def finish_crash_step(request: pytest.FixtureRequest) -> str:
    """Each checkpoint between the upload and its PUT the child is killed before."""
    return str(request.param)


@pytest.fixture(params=[1, CRASH_RUNS], ids=lambda k: f"K{k}")
def crash_kill_on(request: pytest.FixtureRequest) -> int:
    """The child dies at the first activity or at the last."""
    return int(request.param)


@pytest.fixture(params=CRASH_PROCESSING_DELAYS, ids=lambda d: f"strava{d}s")
def strava_processing_delay_s(request: pytest.FixtureRequest) -> float:
    """Seconds the Strava emulator takes to process each upload in a crash world."""
    return float(request.param)
