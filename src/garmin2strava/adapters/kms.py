"""ports.TokenCipher backed by AWS KMS: the key never leaves KMS.

Each token is encrypted directly with KMS `Encrypt` (tokens are far below its 4 KiB
limit), with `EncryptionContext={"item": context}`: KMS binds the context to the
ciphertext as associated data, so a ciphertext copied to another item does not decrypt.

What KMS decrypted (or this cipher encrypted) is kept in memory for the life of the
process, keyed by the exact ciphertext and context: a warm Lambda reads the same
unchanged token item every minute, and asking KMS again would cost a request per
invocation for an answer it already has (issue 20: an idle invocation makes no KMS
request). A rotated token is a new ciphertext, so nothing stale is ever served; the
plaintext is what the Garmin client holds in memory anyway.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
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


# Plaintexts kept per cipher: a few tokens per account (Garmin, Strava), bounded so a
# process that reads many accounts' tokens does not grow without limit.
_KEPT = 256


class KmsCipher:
    """Encrypt/Decrypt with one KMS key; `client=None` builds a default boto3 client."""

    __slots__ = ("_client", "_kept", "_key_id", "_lock")

    def __init__(self, key_id: str, *, client: KMSClient | None = None) -> None:
        self._key_id = key_id
        self._client: KMSClient = client if client is not None else boto3.client("kms")
        self._kept: OrderedDict[tuple[bytes, str], bytes] = OrderedDict()
        self._lock = threading.Lock()

    def _keep(self, ciphertext: bytes, context: str, plaintext: bytes) -> None:
        with self._lock:
            self._kept[(ciphertext, context)] = plaintext
            self._kept.move_to_end((ciphertext, context))
            while len(self._kept) > _KEPT:
                self._kept.popitem(last=False)

    def _kept_plaintext(self, ciphertext: bytes, context: str) -> bytes | None:
        with self._lock:
            plaintext = self._kept.get((ciphertext, context))
            if plaintext is not None:
                self._kept.move_to_end((ciphertext, context))
            return plaintext

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
        ciphertext = answer["CiphertextBlob"]
        self._keep(ciphertext, context, plaintext)  # read back by this process: no Decrypt
        return ciphertext

    def decrypt(self, ciphertext: bytes, *, context: str) -> bytes:
        kept = self._kept_plaintext(ciphertext, context)
        if kept is not None:
            return kept
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
        plaintext = answer["Plaintext"]
        self._keep(ciphertext, context, plaintext)
        return plaintext
