"""Secrets from SSM Parameter Store (SecureString, decrypted by SSM with KMS).

The Lambda functions get parameter NAMES in their environment, never values
(terraform/README.md "Secrets"); each handler reads its values once per cold start.
botocore rather than boto3, for the webhook's cold start (see queue_sqs.py).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

from botocore.exceptions import BotoCoreError, ClientError

from garmin2strava.adapters.aws import error_code, is_transient, transient_error
from garmin2strava.errors import ConfigError

if TYPE_CHECKING:
    from mypy_boto3_ssm import SSMClient

__all__ = ["read_optional_parameter", "read_secure_parameter", "ssm_client"]


def ssm_client() -> SSMClient:
    """A client from the standard AWS environment (region, credentials, endpoint)."""
    import botocore.session

    return cast("SSMClient", botocore.session.get_session().create_client("ssm"))


def read_secure_parameter(name: str, *, client: SSMClient | None = None) -> str:
    """The decrypted value of parameter `name`. Errors name the parameter, never a value."""
    value = _read(name, client, missing_ok=False)
    assert value is not None
    return value


def read_optional_parameter(name: str, *, client: SSMClient | None = None) -> str | None:
    """As read_secure_parameter, but None when the parameter does not exist: one the
    user makes only when wanted (the notification URLs, the heartbeat URL)."""
    return _read(name, client, missing_ok=True)


def _read(name: str, client: SSMClient | None, *, missing_ok: bool) -> str | None:
    client = client if client is not None else ssm_client()
    try:
        answer = client.get_parameter(Name=name, WithDecryption=True)
    except (BotoCoreError, ClientError) as exc:
        if missing_ok and isinstance(exc, ClientError) and error_code(exc) == "ParameterNotFound":
            return None
        if is_transient(exc):
            raise transient_error(f"SSM GetParameter {name}", exc) from exc
        code = error_code(exc) if isinstance(exc, ClientError) else type(exc).__name__
        msg = f"SSM parameter {name} cannot be read: {code}"
        raise ConfigError(msg) from None
    value = answer["Parameter"].get("Value", "")
    if not value:
        msg = f"SSM parameter {name} is empty"
        raise ConfigError(msg)
    return value
