"""DynamoDB attribute values for the store: plain JSON values to and from the typed
form the low-level client speaks, keys, and projections."""

from __future__ import annotations

import math
from collections.abc import Sequence
from decimal import Decimal
from typing import Any

from boto3.dynamodb.types import TypeDeserializer, TypeSerializer

__all__ = ["deserialize", "key", "projection", "serialize"]

_serializer = TypeSerializer()
_deserializer = TypeDeserializer()


def _to_dynamo(value: Any) -> Any:
    """Plain JSON values -> what TypeSerializer takes (floats become Decimal)."""
    if isinstance(value, float):
        if not math.isfinite(value):
            msg = "DynamoDB cannot store NaN or infinity"
            raise ValueError(msg)
        return Decimal(repr(value))
    if isinstance(value, dict):
        return {str(k): _to_dynamo(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_to_dynamo(v) for v in value]
    return value


def _from_dynamo(value: Any) -> Any:
    """Deserialized values -> plain JSON values (Decimal becomes int or float)."""
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, dict):
        return {k: _from_dynamo(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_from_dynamo(v) for v in value]
    return value


def serialize(item: dict[str, Any]) -> dict[str, Any]:
    return {k: _serializer.serialize(_to_dynamo(v)) for k, v in item.items()}


def deserialize(item: dict[str, Any]) -> dict[str, Any]:
    # Binary (the token ciphertext) is taken as the bytes the client returns, not
    # wrapped in boto3's Binary.
    return {
        k: v["B"] if "B" in v else _from_dynamo(_deserializer.deserialize(v))
        for k, v in item.items()
    }


def key(pk: str, sk: str) -> dict[str, Any]:
    return {"PK": {"S": pk}, "SK": {"S": sk}}


def projection(attributes: Sequence[str]) -> dict[str, Any]:
    """ProjectionExpression with every name aliased (`value`, `at`... are reserved)."""
    names = {f"#p{i}": name for i, name in enumerate(attributes)}
    return {
        "ProjectionExpression": ", ".join(names),
        "ExpressionAttributeNames": names,
    }
