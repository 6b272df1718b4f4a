"""ports.TokenCipher backed by AWS KMS: the key never leaves KMS.

Each token is encrypted directly with KMS `Encrypt` (tokens are far below its 4 KiB
limit), with `EncryptionContext={"item": context}`: KMS binds the context to the
ciphertext as associated data, so a ciphertext copied to another item does not decrypt.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import boto3
from botocore.exceptions import BotoCoreError, ClientError

from garmin2strava.adapters.aws import error_code, is_transient, transient_error
from garmin2strava.errors import ConfigError

if TYPE_CHECKING:
    from mypy_boto3_kms import KMSClient

__all__ = ["KmsCipher", "KmsDecryptError"]

# KMS answers these when the ciphertext, its context or the key do not match.
_MISMATCH_CODES = frozenset(
    {"InvalidCiphertextException", "IncorrectKeyException", "AccessDeniedException"}
)


class KmsDecryptError(ConfigError):
    """A stored token does not decrypt under this key and context."""


class KmsCipher:
    """Encrypt/Decrypt with one KMS key; `client=None` builds a default boto3 client."""

    __slots__ = ("_client", "_key_id")

    def __init__(self, key_id: str, *, client: KMSClient | None = None) -> None:
        self._key_id = key_id
        self._client: KMSClient = client if client is not None else boto3.client("kms")

    def __repr__(self) -> str:
        return f"KmsCipher(key_id={self._key_id!r})"

    def encrypt(self, plaintext: bytes, *, context: str) -> bytes:
        try:
            answer = self._client.encrypt(
                KeyId=self._key_id, Plaintext=plaintext, EncryptionContext={"item": context}
            )
        except (BotoCoreError, ClientError) as exc:
            if is_transient(exc):
                raise transient_error("KMS Encrypt", exc) from exc
            raise
        return answer["CiphertextBlob"]

    def decrypt(self, ciphertext: bytes, *, context: str) -> bytes:
        try:
            answer = self._client.decrypt(
                CiphertextBlob=ciphertext,
                # Naming the key makes KMS refuse a ciphertext made under another key.
                KeyId=self._key_id,
                EncryptionContext={"item": context},
            )
        except (BotoCoreError, ClientError) as exc:
            if is_transient(exc):
                raise transient_error("KMS Decrypt", exc) from exc
            if isinstance(exc, ClientError) and error_code(exc) in _MISMATCH_CODES:
                msg = (
                    f"stored token for {context} does not decrypt with KMS key "
                    f"{self._key_id}: {error_code(exc)}"
                )
                raise KmsDecryptError(msg) from None
            raise
        return answer["Plaintext"]
