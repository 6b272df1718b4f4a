"""What the AWS adapters share: turning botocore failures into our error hierarchy.

Only this module, `kms.py` and `store/dynamodb.py` import botocore/boto3.
"""

from __future__ import annotations

from botocore.exceptions import BotoCoreError, ClientError, HTTPClientError
from botocore.exceptions import ConnectionError as BotoConnectionError

from garmin2strava.errors import TransientError

__all__ = ["error_code", "is_transient", "transient_error"]

# Codes that say "try again later", across DynamoDB and KMS.
_TRANSIENT_CODES = frozenset(
    {
        "InternalServerError",
        "InternalFailure",
        "KMSInternalException",
        "LimitExceededException",
        "ProvisionedThroughputExceededException",
        "RequestLimitExceeded",
        "ServiceUnavailable",
        "ThrottlingException",
        "Throttling",
        "TransactionConflictException",
    }
)
_SERVER_ERROR = 500


def error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def is_transient(exc: BaseException) -> bool:
    """Throttling, a 5xx or a network failure: worth another attempt later."""
    if isinstance(exc, ClientError):
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        return error_code(exc) in _TRANSIENT_CODES or status >= _SERVER_ERROR
    return isinstance(exc, BotoConnectionError | HTTPClientError)


def transient_error(operation: str, exc: BotoCoreError | ClientError) -> TransientError:
    """A TransientError naming the operation and the AWS error code, never the payload."""
    detail = error_code(exc) if isinstance(exc, ClientError) else type(exc).__name__
    msg = f"{operation} failed, retry later: {detail}"
    return TransientError(msg)
