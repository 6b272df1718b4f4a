"""Build the Lambda code package: the garmin2strava source tree only, byte-identical each time.

Run by `make lambda-package` (and so by `make tf-plan`); terraform takes the zip's path
and its hash (terraform/lambda.tf). The third-party dependencies are the layer's
(`make layer`), not this package's.

    python tools/lambda_package.py [--source src] [--output build/lambda-package.zip]

Deterministic so that an unchanged source gives an unchanged hash, and terraform plans no
update of the four functions: entries in sorted order, one fixed timestamp, fixed
permissions, and nothing from the machine (no bytecode, no directory entries).
"""

from __future__ import annotations

import argparse
import sys
import zipfile
from pathlib import Path

PACKAGE = "garmin2strava"
# The earliest time a zip entry can hold; any fixed value would do.
FIXED_TIME = (1980, 1, 1, 0, 0, 0)
# -rw-r--r-- regular file: Lambda only reads the code, whatever the checkout's modes.
FILE_MODE = 0o100644
_UNIX = 3
# Bytecode is written by whichever interpreter last ran the sources; Lambda compiles its own.
_SKIPPED_DIRECTORIES = {"__pycache__"}
_SKIPPED_SUFFIXES = {".pyc", ".pyo"}


def package_files(source: Path) -> list[Path]:
    """Every file of the garmin2strava tree under `source`, sorted by its path in the zip."""
    root = source / PACKAGE
    if not (root / "__init__.py").is_file():
        raise SystemExit(f"error: {root} is not the garmin2strava package")
    files = [
        path
        for path in root.rglob("*")
        if path.is_file()
        and not _SKIPPED_DIRECTORIES.intersection(path.relative_to(root).parts)
        and path.suffix not in _SKIPPED_SUFFIXES
    ]
    return sorted(files, key=lambda path: path.relative_to(source).as_posix())


def _entry(name: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name, date_time=FIXED_TIME)
    info.compress_type = zipfile.ZIP_DEFLATED
    info.create_system = _UNIX
    info.external_attr = FILE_MODE << 16
    return info


def build(source: Path, output: Path) -> int:
    """Write the package to `output` (replaced whole, never half-written); the entry count."""
    files = package_files(source)
    output.parent.mkdir(parents=True, exist_ok=True)
    partial = output.with_name(output.name + ".partial")
    with zipfile.ZipFile(partial, "w") as archive:
        for path in files:
            archive.writestr(_entry(path.relative_to(source).as_posix()), path.read_bytes())
    partial.replace(output)
    return len(files)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Build the Lambda code package (product only).")
    parser.add_argument(
        "--source", type=Path, default=Path("src"), help="directory holding garmin2strava/"
    )
    parser.add_argument("--output", type=Path, default=Path("build/lambda-package.zip"))
    args = parser.parse_args(argv)
    count = build(args.source, args.output)
    sys.stdout.write(f"built {args.output} ({count} files)\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
