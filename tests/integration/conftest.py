"""Shared fixtures for integration tests.

`store` runs the Store contract tests against every implementation in STORE_FACTORIES.
To add one (e.g. DynamoDB against a local server), add a factory here: a context
manager that takes a fresh temporary directory and yields an empty store.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path

import pytest

from garmin2strava.adapters.crypto import AesGcmCipher
from garmin2strava.adapters.store.sqlite import SqliteStore
from garmin2strava.ports import Store

TEST_KEY = bytes(range(32))


@contextlib.contextmanager
def _sqlite_store(tmp_path: Path) -> Iterator[Store]:
    with SqliteStore(tmp_path / "store" / "g2s.sqlite3", AesGcmCipher(TEST_KEY)) as store:
        yield store


STORE_FACTORIES: dict[str, Callable[[Path], AbstractContextManager[Store]]] = {
    "sqlite": _sqlite_store,
}


@pytest.fixture(params=list(STORE_FACTORIES))
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    factory = STORE_FACTORIES[str(request.param)]
    with factory(tmp_path) as made:
        yield made
