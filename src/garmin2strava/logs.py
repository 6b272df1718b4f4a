"""JSON log lines: one line per event, stable event names
as the message, structured fields from `extra`. Nothing secret is ever passed in."""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any, TextIO

__all__ = ["JsonFormatter", "configure_logging"]

# Attributes every LogRecord has; anything else came from `extra=`.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "taskName",
    "color_message",  # uvicorn's ANSI-coloured duplicate of the message
}


def _extra_fields(record: logging.LogRecord) -> dict[str, Any]:
    return {
        key: value
        for key, value in vars(record).items()
        if key not in _STANDARD and not key.startswith("_") and value is not None
    }


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, tz=UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname.lower(),
            "event": record.getMessage(),
            "logger": record.name,
        }
        line.update(_extra_fields(record))
        if record.exc_info and record.exc_info[0] is not None:
            line["exception"] = record.exc_info[0].__name__
            line["exceptionMessage"] = str(record.exc_info[1])[:500]
        return json.dumps(line, default=str, separators=(",", ":"))


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        fields = " ".join(f"{k}={v}" for k, v in _extra_fields(record).items())
        stamp = datetime.fromtimestamp(record.created, tz=UTC).strftime("%H:%M:%S")
        return f"{stamp} {record.levelname:<7} {record.getMessage()} {fields}".rstrip()


def configure_logging(level: str = "INFO", fmt: str = "json", stream: TextIO | None = None) -> None:
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # Third-party libraries log request details at DEBUG (URLs with query tokens):
    # keep them at WARNING whatever our level is.
    for noisy in ("urllib3", "garminconnect", "apscheduler", "botocore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    logging.getLogger("stravalib").setLevel(logging.ERROR)
    handler.addFilter(_drop_stravalib_env_warnings)


def _drop_stravalib_env_warnings(record: logging.LogRecord) -> bool:
    """stravalib warns through the root logger, on every client it builds, that
    STRAVA_CLIENT_ID is not in os.environ; we pass credentials and refresh ourselves."""
    return not (record.levelno < logging.ERROR and "/stravalib/" in record.pathname)
