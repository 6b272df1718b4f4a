"""ActivityFiles on top of the fitfile module: extract safely, validate, and compress
what is large.

A file over `GZIP_ABOVE_BYTES` is uploaded gzipped (Strava's `fit.gz`, `gpx.gz`,
`tcx.gz`): the HTTP client builds a multipart body in memory, twice the file's size,
and a 60 MiB GPX of one-second points would take the process past 200 MiB. The gzip
stream is written from the file on disk in chunks, so the file is never in memory;
its content is the file as Garmin gave it, byte for byte, once Strava inflates it.
"""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

from garmin2strava.adapters.fitfile import extract_original, validate_activity_file
from garmin2strava.domain.models import PreparedFile

__all__ = ["GZIP_ABOVE_BYTES", "OriginalFiles"]

GZIP_ABOVE_BYTES = 8 * 1024 * 1024  # a 6-hour ride's FIT is under 1 MiB
_CHUNK = 1024 * 1024


class OriginalFiles:
    def __init__(self, *, gzip_above_bytes: int = GZIP_ABOVE_BYTES) -> None:
        self._gzip_above = gzip_above_bytes

    def prepare(self, original_zip: bytes, workdir: Path) -> PreparedFile:
        extracted = extract_original(original_zip, workdir)
        summary = validate_activity_file(extracted)
        path, data_type = extracted.path, extracted.data_type
        if path.stat().st_size > self._gzip_above:
            path, data_type = _gzipped(path), f"{data_type}.gz"
        return PreparedFile(
            path=path,
            data_type=data_type,
            start_utc=summary.start_utc,
            sport=summary.sport,
        )


def _gzipped(path: Path) -> Path:
    target = path.with_name(path.name + ".gz")
    with path.open("rb") as source, gzip.open(target, "wb", compresslevel=6) as out:
        shutil.copyfileobj(source, out, _CHUNK)
    path.unlink()
    return target
