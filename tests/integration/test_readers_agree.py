"""The daemon's file check and the Strava emulator's own reader agree on real files.

The two are written apart (fitparse and our framing check; fitdecode and an expat
reader), so a parsing mistake shows up as a disagreement here instead of being shared
by the client and its judge. For every FIT, GPX and TCX file of the real corpus (and
the FIT inside the real ORIGINAL zip): both accept or both refuse; where both accept,
the same start in UTC, elapsed times within 1 s and distances within 1 m where both
give one. A file the daemon reads without an absolute start (`start_utc` None) counts
as refused: its check before upload refuses it.
"""

from __future__ import annotations

import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from g2s_sandbox.activity_files import RefusedFile, read_activity
from garmin2strava.adapters.fitfile import summarize_upload
from garmin2strava.errors import FileRejected

pytestmark = [pytest.mark.integration, pytest.mark.realdata, pytest.mark.slow]

_KINDS = {".fit": "fit", ".gpx": "gpx", ".tcx": "tcx"}


def _corpus(root: Path) -> Iterator[tuple[str, bytes, str]]:
    """(name, bytes, data_type) of every activity file, read in place."""
    for path in sorted(root.rglob("*")):
        kind = _KINDS.get(path.suffix.lower())
        if kind and path.is_file():
            yield str(path.relative_to(root)), path.read_bytes(), kind
        elif path.suffix.lower() == ".zip":
            with zipfile.ZipFile(path) as archive:
                for member in archive.namelist():
                    kind = _KINDS.get(Path(member).suffix.lower())
                    if kind:
                        name = f"{path.relative_to(root)}:{member}"
                        yield name, archive.read(member), kind


def _disagreement(data: bytes, kind: str) -> str | None:
    """Why the two readers disagree on one file, or None when they agree."""
    try:
        ours = summarize_upload(data, kind)
    except FileRejected as exc:
        try:
            read_activity(data, kind)
        except RefusedFile:
            return None
        return f"daemon refuses ({exc}), sandbox accepts"
    try:
        judge = read_activity(data, kind)
    except RefusedFile as exc:
        if ours.start_utc is None:  # the daemon's check before upload refuses it too
            return None
        return f"daemon accepts, sandbox refuses ({exc.reason})"
    if ours.start_utc is None:
        return f"daemon refuses ({ours.no_start_reason}), sandbox accepts"
    problems = []
    if ours.start_utc != judge.start_utc:
        problems.append(f"start {ours.start_utc} vs {judge.start_utc}")
    if (ours.elapsed_s is None) != (judge.elapsed_s is None) or (
        ours.elapsed_s is not None
        and judge.elapsed_s is not None
        and abs(ours.elapsed_s - judge.elapsed_s) > 1.0
    ):
        problems.append(f"elapsed {ours.elapsed_s} vs {judge.elapsed_s} s")
    if (
        ours.distance_m is not None
        and judge.distance_m is not None
        and abs(ours.distance_m - judge.distance_m) > 1.0
    ):
        problems.append(f"distance {ours.distance_m} vs {judge.distance_m} m")
    return "; ".join(problems) or None


def test_corpus_has_the_files_it_names(realdata: Path) -> None:
    """The corpus holds its ~35 FIT files, GPX and TCX files: the check below is not vacuous."""
    kinds = [kind for _, _, kind in _corpus(realdata)]
    assert kinds.count("fit") >= 35
    assert kinds.count("gpx") >= 3
    assert kinds.count("tcx") >= 2


# The corpus is read in this many parts (one test each), so that parallel workers
# share it instead of one reading all of it.
SHARDS = 4


def _shard(corpus: list[tuple[str, bytes, str]], shard: int) -> list[tuple[str, bytes, str]]:
    """The files of part `shard`: largest first, each to the part with the fewest bytes
    so far (the parts take about as long; together they are the whole corpus)."""
    sizes = [0] * SHARDS
    parts: list[list[tuple[str, bytes, str]]] = [[] for _ in range(SHARDS)]
    for entry in sorted(corpus, key=lambda e: (-len(e[1]), e[0])):
        smallest = sizes.index(min(sizes))
        sizes[smallest] += len(entry[1])
        parts[smallest].append(entry)
    return parts[shard]


def test_the_parts_are_the_whole_corpus(realdata: Path) -> None:
    """Every file of the corpus is in exactly one of the SHARDS parts."""
    corpus = list(_corpus(realdata))
    names = [name for shard in range(SHARDS) for name, _, _ in _shard(corpus, shard)]
    assert sorted(names) == sorted(name for name, _, _ in corpus)


@pytest.mark.timeout(900)  # both readers over ~5 MiB of real files, fitparse's is slow
@pytest.mark.parametrize("shard", range(SHARDS))
def test_daemon_and_sandbox_read_every_real_file_alike(realdata: Path, shard: int) -> None:
    """Both readers accept or refuse each real file (of this part of the corpus) alike
    and read the same start, elapsed time and distance from it."""
    disagreements = {
        name: why
        for name, data, kind in _shard(list(_corpus(realdata)), shard)
        if (why := _disagreement(data, kind)) is not None
    }
    assert disagreements == {}, "\n".join(f"{n}: {w}" for n, w in disagreements.items())
