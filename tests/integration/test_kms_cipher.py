"""KmsCipher against moto's KMS, in server mode on loopback."""

from __future__ import annotations

from typing import TYPE_CHECKING

import boto3
import pytest
from botocore.config import Config

from garmin2strava.adapters.kms import KmsCipher, KmsDecryptError
from garmin2strava.errors import TransientError

if TYPE_CHECKING:
    from mypy_boto3_kms import KMSClient

pytestmark = pytest.mark.integration


@pytest.fixture
def kms_client(aws_env: str) -> KMSClient:
    return boto3.client("kms")


@pytest.fixture
def key_id(kms_client: KMSClient) -> str:
    return kms_client.create_key(Description="garmin2strava tokens")["KeyMetadata"]["KeyId"]


def test_round_trip(kms_client: KMSClient, key_id: str) -> None:
    """What is encrypted under a context decrypts under the same context."""
    cipher = KmsCipher(key_id, client=kms_client)
    sealed = cipher.encrypt(b"refresh-token-value", context="USER#u1/TOKEN#STRAVA")
    assert b"refresh-token-value" not in sealed
    assert cipher.decrypt(sealed, context="USER#u1/TOKEN#STRAVA") == b"refresh-token-value"


def test_default_client_follows_the_environment(kms_client: KMSClient, key_id: str) -> None:
    """Without a client, the cipher builds one from boto3's standard environment."""
    cipher = KmsCipher(key_id)
    sealed = cipher.encrypt(b"x", context="c")
    assert KmsCipher(key_id, client=kms_client).decrypt(sealed, context="c") == b"x"


def test_context_is_bound(kms_client: KMSClient, key_id: str) -> None:
    """A ciphertext moved to another item (another context) does not decrypt."""
    cipher = KmsCipher(key_id, client=kms_client)
    sealed = cipher.encrypt(b"secret", context="USER#u1/TOKEN#STRAVA")
    with pytest.raises(KmsDecryptError) as caught:
        cipher.decrypt(sealed, context="USER#u2/TOKEN#STRAVA")
    assert "secret" not in str(caught.value)


def test_other_key_is_refused(kms_client: KMSClient, key_id: str) -> None:
    """A ciphertext made under another key is refused, not silently decrypted."""
    other = kms_client.create_key()["KeyMetadata"]["KeyId"]
    sealed = KmsCipher(other, client=kms_client).encrypt(b"secret", context="c")
    with pytest.raises(KmsDecryptError):
        KmsCipher(key_id, client=kms_client).decrypt(sealed, context="c")


def test_unreachable_endpoint_is_transient(aws_env: str) -> None:
    """A network failure surfaces as TransientError."""
    # Port 9 (discard) on loopback: nothing listens, the connection is refused at once.
    client = boto3.client(
        "kms",
        endpoint_url="http://127.0.0.1:9",
        config=Config(retries={"max_attempts": 1}, connect_timeout=1),
    )
    with pytest.raises(TransientError):
        KmsCipher("alias/none", client=client).encrypt(b"x", context="c")


def test_a_plaintext_once_known_costs_no_more_kms_requests(
    kms_client: KMSClient, key_id: str
) -> None:
    """A warm Lambda reads the same token item every minute: what this cipher sealed,
    or decrypted once, decrypts again from memory; another container's cipher asks KMS
    once. Counted on the client's own requests (botocore's event hooks)."""
    asked: list[str] = []
    kms_client.meta.events.register("before-call.kms", lambda model, **_: asked.append(model.name))
    cipher = KmsCipher(key_id, client=kms_client)
    sealed = cipher.encrypt(b"garmin-tokens", context="USER#u1/TOKEN#GARMIN")
    for _ in range(3):
        assert cipher.decrypt(sealed, context="USER#u1/TOKEN#GARMIN") == b"garmin-tokens"
    assert asked == ["Encrypt"]
    cold = KmsCipher(key_id, client=kms_client)
    for _ in range(3):
        assert cold.decrypt(sealed, context="USER#u1/TOKEN#GARMIN") == b"garmin-tokens"
    assert asked == ["Encrypt", "Decrypt"]
    # A rotated token is a new ciphertext: never answered with the old plaintext.
    rotated = cipher.encrypt(b"rotated", context="USER#u1/TOKEN#GARMIN")
    assert cold.decrypt(rotated, context="USER#u1/TOKEN#GARMIN") == b"rotated"
