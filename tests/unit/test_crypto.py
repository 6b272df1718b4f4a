"""AES-GCM token cipher, key parsing and the key file."""

from __future__ import annotations

import base64
import stat
from pathlib import Path

import pytest

from garmin2strava.adapters.crypto import (
    AesGcmCipher,
    TokenKeyMismatch,
    generate_token_key,
    load_or_create_key_file,
    parse_token_key,
)
from garmin2strava.errors import ConfigError

KEY = bytes(range(32))
CONTEXT = "USER#u1/TOKEN#STRAVA"


def test_round_trip_with_versioned_format_and_fresh_nonce() -> None:
    """Encryption round-trips, starts with b"v1", and never repeats a ciphertext."""
    cipher = AesGcmCipher(KEY)
    first = cipher.encrypt(b"secret", context=CONTEXT)
    second = cipher.encrypt(b"secret", context=CONTEXT)
    assert first.startswith(b"v1")
    assert first != second
    assert first[2:14] != second[2:14]
    assert b"secret" not in first
    assert cipher.decrypt(first, context=CONTEXT) == b"secret"


def test_other_context_or_key_or_tampering_is_refused() -> None:
    """A ciphertext decrypts only with its key, its context and its exact bytes."""
    sealed = AesGcmCipher(KEY).encrypt(b"secret", context=CONTEXT)
    with pytest.raises(TokenKeyMismatch):
        AesGcmCipher(KEY).decrypt(sealed, context="USER#u2/TOKEN#STRAVA")
    with pytest.raises(TokenKeyMismatch, match="G2S_TOKEN_KEY"):
        AesGcmCipher(bytes(32)).decrypt(sealed, context=CONTEXT)
    tampered = sealed[:-1] + bytes([sealed[-1] ^ 1])
    with pytest.raises(TokenKeyMismatch):
        AesGcmCipher(KEY).decrypt(tampered, context=CONTEXT)
    with pytest.raises(TokenKeyMismatch, match="unknown format"):
        AesGcmCipher(KEY).decrypt(b"v9" + sealed[2:], context=CONTEXT)


def test_decrypt_error_message_holds_no_key_or_ciphertext() -> None:
    """The wrong-key message names the setting but not the key or the ciphertext."""
    sealed = AesGcmCipher(KEY).encrypt(b"secret", context=CONTEXT)
    other = bytes(range(100, 132))
    with pytest.raises(TokenKeyMismatch) as caught:
        AesGcmCipher(other).decrypt(sealed, context=CONTEXT)
    message = str(caught.value)
    for leak in (other.hex(), base64.b64encode(other).decode(), sealed.hex(), repr(sealed)):
        assert leak not in message


def test_cipher_refuses_keys_of_the_wrong_length() -> None:
    """Only 32-byte keys make an AES-256 cipher."""
    with pytest.raises(ConfigError, match="32 bytes"):
        AesGcmCipher(bytes(16))


def test_parse_token_key_accepts_urlsafe_standard_and_unpadded_base64() -> None:
    """All common base64 spellings of a 32-byte key decode to it."""
    key = bytes([250, 251, 252, 253] * 8)  # encodes with '+', '/' or '-', '_'
    standard = base64.b64encode(key).decode()
    urlsafe = base64.urlsafe_b64encode(key).decode()
    assert "/" in standard
    assert "_" in urlsafe
    assert parse_token_key(standard) == key
    assert parse_token_key(urlsafe) == key
    assert parse_token_key(urlsafe.rstrip("=") + "\n") == key


@pytest.mark.parametrize(
    "text", ["", "not base64 at all!", base64.b64encode(bytes(16)).decode(), "a" * 100]
)
def test_parse_token_key_rejects_bad_values_naming_the_setting(text: str) -> None:
    """A bad key raises ConfigError that names G2S_TOKEN_KEY and does not echo the value."""
    with pytest.raises(ConfigError, match="G2S_TOKEN_KEY") as caught:
        parse_token_key(text)
    if text:
        assert text not in str(caught.value)


def test_generated_keys_parse_and_differ() -> None:
    """generate_token_key gives fresh keys that parse_token_key accepts."""
    first, second = generate_token_key(), generate_token_key()
    assert first != second
    assert len(parse_token_key(first)) == 32


def test_key_file_is_created_private_and_reused(tmp_path: Path) -> None:
    """A missing key file is created with mode 0600; later calls return the same key."""
    path = tmp_path / "data" / "token.key"
    key = load_or_create_key_file(path)
    assert len(key) == 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_or_create_key_file(path) == key
    assert [p.name for p in path.parent.iterdir()] == ["token.key"]  # no temp file left


def test_existing_key_file_is_not_overwritten(tmp_path: Path) -> None:
    """A key file written by someone else is read, never replaced."""
    path = tmp_path / "token.key"
    path.write_text(base64.b64encode(KEY).decode())
    path.chmod(0o600)
    assert load_or_create_key_file(path) == KEY
    assert path.read_text() == base64.b64encode(KEY).decode()


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o620])
def test_a_key_file_open_to_others_is_refused_and_left_alone(tmp_path: Path, mode: int) -> None:
    """Readable or writable by the group or others: a ConfigError that says how to
    fix it (and not the key), the file's mode and bytes unchanged."""
    path = tmp_path / "token.key"
    text = base64.b64encode(KEY).decode()
    path.write_text(text)
    path.chmod(mode)
    with pytest.raises(ConfigError, match="chmod 600") as caught:
        load_or_create_key_file(path)
    assert text not in str(caught.value)
    assert path.stat().st_mode & 0o777 == mode
    assert path.read_text() == text


def test_corrupt_key_file_is_a_config_error(tmp_path: Path) -> None:
    """A key file that holds no valid key stops start-up with a clear error."""
    path = tmp_path / "token.key"
    path.write_text("garbage")
    path.chmod(0o600)
    with pytest.raises(ConfigError, match="token key file"):
        load_or_create_key_file(path)
