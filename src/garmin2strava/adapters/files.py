"""ActivityFiles on top of the fitfile module: extract safely, then validate."""

from __future__ import annotations

from pathlib import Path

from garmin2strava.adapters.fitfile import extract_original, validate_activity_file
from garmin2strava.domain.models import PreparedFile

__all__ = ["OriginalFiles"]


class OriginalFiles:
    def prepare(self, original_zip: bytes, workdir: Path) -> PreparedFile:
        extracted = extract_original(original_zip, workdir)
        summary = validate_activity_file(extracted)
        return PreparedFile(
            path=extracted.path,
            data_type=extracted.data_type,
            start_utc=summary.start_utc,
            sport=summary.sport,
        )
