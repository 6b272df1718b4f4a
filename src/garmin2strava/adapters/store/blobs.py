"""Large values in size-limited items: JSON compressed with zlib, then cut into parts.

DynamoDB refuses an item over 400 KB (names and values counted). A six-hour ride's
streams or a long activity's raw JSON can be bigger than that as text; compressed they
shrink several times, and what is still too big is split across items that a reader
joins again and checks against the digest kept beside them."""

from __future__ import annotations

import hashlib
import json
import zlib
from collections.abc import Sequence
from typing import Any

__all__ = ["BadBlob", "digest", "join_parts", "pack", "split", "unpack"]

_LEVEL = 6  # zlib's default: most of level 9's gain at a fraction of its time


class BadBlob(ValueError):
    """Stored parts that do not make up the value they claim to (missing, or altered)."""


def pack(value: Any) -> bytes:
    """JSON (compact, keys sorted) compressed with zlib."""
    text = json.dumps(value, separators=(",", ":"), sort_keys=True, allow_nan=False)
    return zlib.compress(text.encode("utf-8"), _LEVEL)


def unpack(blob: bytes) -> Any:
    try:
        return json.loads(zlib.decompress(blob))
    except (zlib.error, ValueError) as exc:
        msg = f"stored value does not decompress to JSON ({type(exc).__name__})"
        raise BadBlob(msg) from None


def digest(blob: bytes) -> str:
    return hashlib.sha256(blob).hexdigest()[:32]


def split(blob: bytes, part_size: int) -> list[bytes]:
    """`blob` in parts of at most `part_size` bytes (one part, maybe empty, at least)."""
    if part_size <= 0:
        msg = "part_size must be positive"
        raise ValueError(msg)
    return [blob[i : i + part_size] for i in range(0, len(blob), part_size)] or [b""]


def join_parts(parts: Sequence[bytes], *, count: int, expected_digest: str) -> bytes:
    """The parts put back together; BadBlob unless all `count` are there and match."""
    if len(parts) != count:
        msg = f"expected {count} stored part(s), found {len(parts)}"
        raise BadBlob(msg)
    blob = b"".join(parts)
    if digest(blob) != expected_digest:
        msg = "stored parts do not match their digest"
        raise BadBlob(msg)
    return blob
