"""Token encryption at rest with AES-256-GCM: the one module that uses `cryptography`.

Output format of `AesGcmCipher.encrypt`: b"v1" + 12-byte random nonce + ciphertext+tag.
The `context` (e.g. "USER#u1/TOKEN#STRAVA") is bound as associated data, so a ciphertext
copied to another item does not decrypt.

The key comes from G2S_TOKEN_KEY (base64 of 32 bytes) or, when that is unset, from a key
file next to the database that `load_or_create_key_file` creates once.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import os
import secrets
import stat
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from garmin2strava.errors import ConfigError

__all__ = [
    "AesGcmCipher",
    "TokenKeyMismatch",
    "generate_token_key",
    "load_or_create_key_file",
    "parse_token_key",
]

KEY_BYTES = 32
NONCE_BYTES = 12
FORMAT_V1 = b"v1"
KEY_ENV_NAME = "G2S_TOKEN_KEY"


class TokenKeyMismatch(ConfigError):
    """Stored tokens do not decrypt: the token key is not the one they were written with."""


class AesGcmCipher:
    """ports.TokenCipher with AES-256-GCM and a random nonce per encryption."""

    __slots__ = ("_aead",)

    def __init__(self, key: bytes) -> None:
        if len(key) != KEY_BYTES:
            msg = f"{KEY_ENV_NAME} must be {KEY_BYTES} bytes, got {len(key)}"
            raise ConfigError(msg)
        self._aead = AESGCM(key)

    def __repr__(self) -> str:
        return "AesGcmCipher(<key hidden>)"

    def encrypt(self, plaintext: bytes, *, context: str) -> bytes:
        nonce = os.urandom(NONCE_BYTES)
        return FORMAT_V1 + nonce + self._aead.encrypt(nonce, plaintext, context.encode())

    def decrypt(self, ciphertext: bytes, *, context: str) -> bytes:
        if not ciphertext.startswith(FORMAT_V1):
            msg = f"stored token for {context} has an unknown format"
            raise TokenKeyMismatch(msg)
        body = ciphertext[len(FORMAT_V1) :]
        nonce, sealed = body[:NONCE_BYTES], body[NONCE_BYTES:]
        try:
            return self._aead.decrypt(nonce, sealed, context.encode())
        except InvalidTag:
            msg = (
                f"stored token for {context} does not decrypt: {KEY_ENV_NAME} (or the key "
                "file) is not the key it was written with, or the item was tampered with"
            )
            raise TokenKeyMismatch(msg) from None


def generate_token_key() -> str:
    """A fresh random key, as urlsafe base64 text suitable for G2S_TOKEN_KEY."""
    return base64.urlsafe_b64encode(secrets.token_bytes(KEY_BYTES)).decode("ascii")


def parse_token_key(text: str) -> bytes:
    """Decode G2S_TOKEN_KEY: urlsafe or standard base64 of exactly 32 bytes."""
    cleaned = text.strip()
    padded = cleaned + "=" * (-len(cleaned) % 4)
    key: bytes | None = None
    for alphabet in (b"-_", b"+/"):
        try:
            key = base64.b64decode(padded, altchars=alphabet, validate=True)
            break
        except (binascii.Error, ValueError):
            continue
    if key is None:
        # The value itself stays out of the message: it is (meant to be) a secret.
        msg = f"setting {KEY_ENV_NAME}: not valid base64 (generate one with `generate-key`)"
        raise ConfigError(msg)
    if len(key) != KEY_BYTES:
        msg = f"setting {KEY_ENV_NAME}: must decode to {KEY_BYTES} bytes, got {len(key)}"
        raise ConfigError(msg)
    return key


def load_or_create_key_file(path: Path) -> bytes:
    """Read the key in `path`, creating it (mode 0600) with a random key if missing.

    Creation is atomic and never clobbers: the key is written to a private temporary
    file and hard-linked into place, so two processes starting together end up with
    the same key (the loser of the race reads the winner's file). An existing file
    that other users may read or write is refused, not fixed: it may have been copied.
    """
    if not path.exists():
        try:
            _create_key_file(path)
        except OSError as exc:
            msg = f"token key file {path} cannot be created: {exc.strerror or type(exc).__name__}"
            raise ConfigError(msg) from None
    try:
        with path.open(encoding="ascii") as handle:
            mode = os.fstat(handle.fileno()).st_mode
            if mode & 0o077:
                # Like ssh with a private key: whoever could read it may have a copy.
                msg = (
                    f"token key file {path} is open to other users (mode "
                    f"{stat.S_IMODE(mode):04o}); make it private: chmod 600 {path}"
                )
                raise ConfigError(msg)
            text = handle.read()
    except (OSError, UnicodeDecodeError) as exc:
        msg = f"token key file {path} is unreadable: {type(exc).__name__}"
        raise ConfigError(msg) from None
    try:
        return parse_token_key(text)
    except ConfigError:
        msg = f"token key file {path} does not hold base64 of {KEY_BYTES} bytes"
        raise ConfigError(msg) from None


def _create_key_file(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="ascii") as handle:
            handle.write(generate_token_key() + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        with contextlib.suppress(FileExistsError):  # another process won: use its key
            os.link(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
