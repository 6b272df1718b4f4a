"""The emulators (sandbox/, the g2s_sandbox distribution) never import the production
code they judge, and the daemon's wheel carries neither them nor the test harnesses."""

from __future__ import annotations

import ast
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import g2s_sandbox

SANDBOX = Path(g2s_sandbox.__file__).resolve().parent
ROOT = Path(__file__).resolve().parents[2]


def _imports(path: Path) -> set[str]:
    """Every module `path` imports, at any depth (functions, TYPE_CHECKING blocks)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against the sandbox package
                found.add(f"g2s_sandbox.{node.module or ''}".rstrip("."))
            elif node.module:
                found.add(node.module)
                found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def test_no_emulator_imports_the_daemon_or_the_harnesses() -> None:
    modules = sorted(SANDBOX.rglob("*.py"))
    assert len(modules) >= 9  # garmin, strava*, fitgen, activity_files, scenario, __init__
    offending = {
        path.name: sorted(bad)
        for path in modules
        if (
            bad := {
                m
                for m in _imports(path)
                if m.split(".")[0] in {"garmin2strava", "g2s_harness", "tests", "conftest"}
            }
        )
    }
    assert offending == {}


def test_the_import_check_sees_a_production_import(tmp_path: Path) -> None:
    """The parser catches imports hidden in a function or behind TYPE_CHECKING."""
    module = tmp_path / "sneaky.py"
    module.write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from garmin2strava.domain import models\n"
        "def f():\n    import garmin2strava.adapters.fitfile\n",
        encoding="utf-8",
    )
    assert {"garmin2strava.domain", "garmin2strava.adapters.fitfile"} <= _imports(module)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> zipfile.ZipFile:
    """The daemon's wheel, built from this checkout by its build backend (offline)."""
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(  # noqa: S603 (our interpreter, fixed arguments)
        [sys.executable, "-m", "hatchling", "build", "--target", "wheel", "--directory", out],
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    (built,) = out.glob("garmin2strava-*.whl")
    return zipfile.ZipFile(built)


def test_the_wheel_holds_the_daemon_only(wheel: zipfile.ZipFile) -> None:
    packages = {name.split("/")[0] for name in wheel.namelist()}
    assert {p for p in packages if not p.endswith(".dist-info")} == {"garmin2strava"}
    names = set(wheel.namelist())
    assert "garmin2strava/entrypoints/cli.py" in names
    assert "garmin2strava/entrypoints/templates/status_page.html" in names
    assert not any("sandbox" in n or "g2s_harness" in n for n in names)


def test_the_wheel_asks_for_the_emulators_only_with_its_sandbox_extra(
    wheel: zipfile.ZipFile,
) -> None:
    (metadata,) = (n for n in wheel.namelist() if n.endswith(".dist-info/METADATA"))
    requires = [
        line.removeprefix("Requires-Dist: ")
        for line in wheel.read(metadata).decode().splitlines()
        if line.startswith("Requires-Dist: ")
    ]
    sandbox = [r for r in requires if r.startswith("g2s-sandbox")]
    assert sandbox == ["g2s-sandbox; extra == 'sandbox'"]
    assert not any(r.startswith("fitdecode") for r in requires)
