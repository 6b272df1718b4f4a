"""Shared fixtures for integration tests.

`store` runs the Store contract tests against every implementation in STORE_FACTORIES.
To add one, add a factory here: a context manager that takes a fresh temporary
directory and yields an empty store. A factory that needs other fixtures first (the
DynamoDB one needs the local moto server and the AWS environment) names them in
STORE_NEEDS.

DynamoDB runs against one moto server per session (ThreadedMotoServer on 127.0.0.1),
reached through boto3's standard AWS_ENDPOINT_URL* variables with dummy credentials;
each test gets a fresh table with a unique name.
"""

from __future__ import annotations

import contextlib
import threading
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto.moto_server.werkzeug_app import (
    DomainDispatcherApplication,
    MotoRequestHandler,
    create_backend_app,
)
from moto.server import ThreadedMotoServer
from werkzeug.serving import make_server

from garmin2strava.adapters.crypto import AesGcmCipher
from garmin2strava.adapters.store.dynamodb import DynamoDBStore, create_table
from garmin2strava.adapters.store.sqlite import SqliteStore
from garmin2strava.bootstrap import App, bootstrap, build_cipher
from garmin2strava.ports import Store
from garmin2strava.sandbox.scenario import SandboxPair, running_sandboxes
from garmin2strava.services.accounts import ensure_settings_account
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


@pytest.fixture
def aws_env(moto_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """boto3 clients built during the test reach only the local moto server."""
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AWS_CONFIG_FILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_endpoint)
    monkeypatch.setenv("AWS_ENDPOINT_URL_DYNAMODB", moto_endpoint)
    return moto_endpoint


@pytest.fixture(params=list(STORE_FACTORIES))
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    for needed in STORE_NEEDS.get(str(request.param), ()):
        request.getfixturevalue(needed)
    factory = STORE_FACTORIES[str(request.param)]
    with factory(tmp_path) as made:
        yield made


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
        return open_app(pair.settings(tmp_path / "g2s.sqlite3", **overrides))

    return build
