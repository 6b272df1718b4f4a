"""What only the SQLite store has to prove: the file itself, keys, processes, crashes."""

from __future__ import annotations

import signal
import sqlite3
import stat
import subprocess
import sys
import textwrap
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from garmin2strava.adapters.crypto import AesGcmCipher, TokenKeyMismatch
from garmin2strava.adapters.store.sqlite import SqliteStore
from garmin2strava.domain.models import (
    Account,
    AuditEvent,
    LedgerEntry,
    StravaTokens,
    UploadOutcome,
)
from garmin2strava.errors import ConfigError

KEY = bytes(range(32))
OTHER_KEY = bytes(range(1, 33))
ACCESS = "access-8f3a9c2e71d4"
REFRESH = "refresh-5b7e0d4c9a16"
GARMIN_BLOB = '{"di_token": "garmin-secret-c0ffee"}'
T0 = datetime(2025, 5, 1, 7, 0, tzinfo=UTC)


def _open(path: Path, key: bytes = KEY) -> SqliteStore:
    return SqliteStore(path, AesGcmCipher(key))


def _write_tokens(store: SqliteStore) -> None:
    tokens = StravaTokens(access_token=ACCESS, refresh_token=REFRESH, expires_at=1)
    assert store.replace_strava_tokens("u1", tokens, expected_version=None) is not None
    assert store.replace_garmin_tokens("u1", GARMIN_BLOB, expected_version=None) is not None


def test_creates_private_file_and_parent_directory(tmp_path: Path) -> None:
    """Opening a store creates missing directories and a database only its owner can read."""
    path = tmp_path / "a" / "b" / "g2s.sqlite3"
    with _open(path) as store:
        store.put_account(Account(user_id="u1"))
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


@pytest.mark.parametrize("suffix", ["-wal", "-shm", "-journal"])
def test_a_linked_journal_file_is_refused_and_its_target_untouched(
    tmp_path: Path, suffix: str
) -> None:
    """A -wal, -shm or -journal beside the database that is a symbolic link stops the
    store with one line naming it; the file it points at is neither written nor chmodded."""
    path = tmp_path / "g2s.sqlite3"
    target = tmp_path / "elsewhere.txt"
    target.write_text("keep me")
    target.chmod(0o644)
    (tmp_path / f"g2s.sqlite3{suffix}").symlink_to(target)
    with pytest.raises(ConfigError, match=f"g2s.sqlite3{suffix} is a symbolic link"):
        _open(path)
    assert target.read_text() == "keep me"
    assert stat.S_IMODE(target.stat().st_mode) == 0o644
    assert not path.exists()


def test_tokens_are_encrypted_at_rest(tmp_path: Path) -> None:
    """No token string appears in the rows or anywhere in the database files."""
    path = tmp_path / "g2s.sqlite3"
    with _open(path) as store:
        _write_tokens(store)
        raw_files = b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.is_file())
        with sqlite3.connect(path) as conn:
            rows = conn.execute("SELECT pk, sk, body FROM items").fetchall()
    assert {(pk, sk) for pk, sk, _ in rows} == {
        ("USER#u1", "TOKEN#STRAVA"),
        ("USER#u1", "TOKEN#GARMIN"),
    }
    for secret in (ACCESS, REFRESH, "garmin-secret-c0ffee"):
        assert secret.encode() not in raw_files
        assert all(secret not in body for _, _, body in rows)


def test_wrong_key_gives_a_clear_error_without_secrets(tmp_path: Path) -> None:
    """Reading tokens with another key fails naming G2S_TOKEN_KEY, leaking nothing."""
    path = tmp_path / "g2s.sqlite3"
    with _open(path) as store:
        _write_tokens(store)
    with _open(path, OTHER_KEY) as store, pytest.raises(TokenKeyMismatch) as caught:
        store.get_strava_tokens("u1")
    message = str(caught.value)
    assert isinstance(caught.value, ConfigError)
    assert "G2S_TOKEN_KEY" in message
    assert ACCESS not in message
    assert OTHER_KEY.hex() not in message
    assert repr(OTHER_KEY) not in message


def test_ciphertext_moved_to_another_item_does_not_decrypt(tmp_path: Path) -> None:
    """Tokens copied under another user's key are refused (context is bound)."""
    path = tmp_path / "g2s.sqlite3"
    with _open(path) as store:
        _write_tokens(store)
        with sqlite3.connect(path) as conn:
            conn.execute(
                "INSERT INTO items (pk, sk, body, version) "
                "SELECT 'USER#u2', sk, body, version FROM items WHERE sk = 'TOKEN#STRAVA'"
            )
        with pytest.raises(TokenKeyMismatch):
            store.get_strava_tokens("u2")


def test_two_stores_on_one_file_share_data_and_the_lease(tmp_path: Path) -> None:
    """Two store objects on one file (like two processes) see each other's writes and lease."""
    path = tmp_path / "g2s.sqlite3"
    with _open(path) as first, _open(path) as second:
        first.put_account(Account(user_id="u1"))
        assert [a.user_id for a in second.list_accounts()] == ["u1"]
        assert first.acquire_lease("u1", "proc-1", now=T0, ttl_seconds=60)
        assert not second.acquire_lease("u1", "proc-2", now=T0, ttl_seconds=60)
        first.release_lease("u1", "proc-1")
        assert second.acquire_lease("u1", "proc-2", now=T0, ttl_seconds=60)
        _write_tokens(first)
        tokens = second.get_strava_tokens("u1")
        assert tokens is not None
        assert tokens.access_token == ACCESS
        stale = StravaTokens(access_token="x", refresh_token="y", expires_at=2)
        assert second.replace_strava_tokens("u1", stale, expected_version=1) is not None
        assert first.replace_strava_tokens("u1", stale, expected_version=1) is None


def test_recorded_intent_survives_sigkill(tmp_path: Path) -> None:
    """A ledger entry whose write returned is there after the process is killed outright."""
    path = tmp_path / "g2s.sqlite3"
    script = textwrap.dedent(
        f"""
        import os, signal
        from datetime import datetime, UTC
        from pathlib import Path
        from garmin2strava.adapters.crypto import AesGcmCipher
        from garmin2strava.adapters.store.sqlite import SqliteStore
        from garmin2strava.domain.models import LedgerEntry, UploadOutcome
        store = SqliteStore(Path({str(path)!r}), AesGcmCipher(bytes(range(32))))
        store.put_upload(LedgerEntry("u1", 7, "garmin2strava-7", UploadOutcome.PENDING,
                                     datetime(2025, 5, 1, tzinfo=UTC)))
        os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    done = subprocess.run([sys.executable, "-c", script], check=False, timeout=60)  # noqa: S603 - our own interpreter and script
    assert done.returncode == -signal.SIGKILL
    with _open(path) as store:
        found = store.get_uploads("u1", [7])
        assert found[7].outcome is UploadOutcome.PENDING
        assert [e.garmin_activity_id for e in store.list_unsettled_uploads("u1")] == [7]


def test_durability_pragmas_are_set(tmp_path: Path) -> None:
    """The database runs in WAL mode with synchronous=FULL."""
    path = tmp_path / "g2s.sqlite3"
    with _open(path) as store:
        store.put_account(Account(user_id="u1"))
        conn = store._rows.conn
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL


def test_naive_datetimes_are_refused(tmp_path: Path) -> None:
    """A naive datetime raises instead of being stored under a guessed time zone."""
    with _open(tmp_path / "g2s.sqlite3") as store, pytest.raises(ValueError, match="naive"):
        store.put_upload(
            LedgerEntry(
                "u1",
                1,
                "garmin2strava-1",
                UploadOutcome.PENDING,
                datetime(2025, 5, 1),  # noqa: DTZ001 - naive on purpose
            )
        )


def test_expired_audit_events_are_purged_from_the_file(tmp_path: Path) -> None:
    """Adding an audit event deletes the user's expired ones, as DynamoDB's TTL would."""
    path = tmp_path / "g2s.sqlite3"
    now = datetime.now(UTC)
    with _open(path) as store:
        store.add_audit(AuditEvent("u1", now - timedelta(days=9), "sync.cycle", "old"))
        store.add_audit(AuditEvent("u1", now, "sync.cycle", "new"))
        with sqlite3.connect(path) as conn:
            sks = [row[0] for row in conn.execute("SELECT sk FROM items WHERE sk LIKE 'AUDIT#%'")]
    assert len(sks) == 1
    assert sks[0].endswith("#new")


def test_a_schema_2_store_gains_the_stream_failure_columns_and_keeps_its_marks(
    tmp_path: Path,
) -> None:
    """A store written before failed stream reads were counted (schema 2: no
    `failures`/`retry_at`/`note` columns) opens, keeps its pending marks (0 failures)
    and records failures and notes from then on."""
    from garmin2strava.domain.streams import ActivityStreams, PendingStreams

    path = tmp_path / "old.sqlite3"
    _open(path).close()
    conn = sqlite3.connect(path)
    with conn:
        conn.execute("DROP TABLE streams_pending")
        conn.execute("DROP TABLE streams")
        conn.execute(
            "CREATE TABLE streams (user_id TEXT NOT NULL, activity_id INTEGER NOT NULL, "
            "fetched_at TEXT NOT NULL, types TEXT NOT NULL, body BLOB NOT NULL, "
            "PRIMARY KEY (user_id, activity_id)) WITHOUT ROWID"
        )
        conn.execute(
            "CREATE TABLE streams_pending (user_id TEXT NOT NULL, activity_id INTEGER NOT "
            "NULL, PRIMARY KEY (user_id, activity_id)) WITHOUT ROWID"
        )
        conn.execute("INSERT INTO streams_pending VALUES ('u1', 7)")
        conn.execute("PRAGMA user_version = 2")
    conn.close()
    store = _open(path)
    try:
        assert store.get_pending_streams("u1", 7) == PendingStreams(7)
        at = datetime(2025, 6, 1, tzinfo=UTC)
        store.mark_streams_failed("u1", 7, failures=2, retry_at=at)
        assert store.get_pending_streams("u1", 7) == PendingStreams(7, failures=2, retry_at=at)
        kept = ActivityStreams(user_id="u1", activity_id=7, fetched_at=at, note="gave up")
        store.put_streams(kept)
        assert store.get_streams("u1", 7) == kept
    finally:
        store.close()
    (version,) = sqlite3.connect(path).execute("PRAGMA user_version").fetchone()
    assert version == 3
