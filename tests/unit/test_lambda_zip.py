"""The Lambda zips' writer (tools/lambda_package.py, used by `make lambda-package` and
`make layer`): the same tree gives the same bytes, whatever the files' times, modes,
creation order or stray bytecode."""

from __future__ import annotations

import importlib.util
import os
import zipfile
from pathlib import Path
from types import ModuleType

import pytest

BUILDER = Path(__file__).resolve().parents[2] / "tools" / "lambda_package.py"


@pytest.fixture(scope="module")
def builder() -> ModuleType:
    """tools/lambda_package.py as a module (tools/ is no package: make runs it as a script)."""
    spec = importlib.util.spec_from_file_location("lambda_package", BUILDER)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# A small layer-like tree: a package, a shared library, a dist-info and a script.
FILES = {
    "python/six.py": b"# six\n",
    "python/pkg/__init__.py": b"",
    "python/pkg/_speedups.cpython-312-x86_64-linux-gnu.so": b"\x7fELF fake",
    "python/pkg/sub/data.json": b'{"a": 1}',
    "python/pkg-1.0.dist-info/RECORD": b"pkg/__init__.py,,\n",
    "python/bin/tool": b"#!/bin/sh\n",
}


def _write_tree(top: Path, names: list[str], mtime: int, mode: int) -> None:
    for name in names:
        path = top / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(FILES[name])
        path.chmod(mode)
        os.utime(path, (mtime, mtime))


def test_the_same_tree_gives_the_same_bytes(builder: ModuleType, tmp_path: Path) -> None:
    """Two copies written in opposite orders, with other mtimes and modes, and bytecode
    in one: byte-identical zips."""
    names = sorted(FILES)
    _write_tree(tmp_path / "one", names, mtime=1_000_000_000, mode=0o644)
    _write_tree(tmp_path / "two", names[::-1], mtime=1_700_000_000, mode=0o755)
    cache = tmp_path / "two" / "python" / "pkg" / "__pycache__"
    cache.mkdir()
    (cache / "__init__.cpython-312.pyc").write_bytes(b"bytecode of this machine")
    (tmp_path / "two" / "python" / "stale.pyc").write_bytes(b"stale")

    first = tmp_path / "one.zip"
    second = tmp_path / "two.zip"
    assert builder.build_tree(tmp_path / "one" / "python", first) == len(FILES)
    assert builder.build_tree(tmp_path / "two" / "python", second) == len(FILES)
    assert first.read_bytes() == second.read_bytes()


def test_entries_are_sorted_with_a_fixed_time_and_mode(builder: ModuleType, tmp_path: Path) -> None:
    """Named from the tree's own name down (python/... as Lambda layers want), sorted,
    one timestamp and mode, the contents unchanged, no directory entries."""
    _write_tree(tmp_path, list(FILES), mtime=1_600_000_000, mode=0o755)
    output = tmp_path / "out" / "layer.zip"
    builder.build_tree(tmp_path / "python", output)
    with zipfile.ZipFile(output) as archive:
        entries = archive.infolist()
        assert {entry.filename: archive.read(entry) for entry in entries} == FILES
    names = [entry.filename for entry in entries]
    assert names == sorted(FILES)
    assert {entry.date_time for entry in entries} == {(1980, 1, 1, 0, 0, 0)}
    assert {entry.external_attr >> 16 for entry in entries} == {0o100644}
    assert not (tmp_path / "out" / "layer.zip.partial").exists()


def test_a_missing_tree_is_a_clear_error(builder: ModuleType, tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="is not a directory"):
        builder.build_tree(tmp_path / "python", tmp_path / "layer.zip")
    assert not (tmp_path / "layer.zip").exists()
