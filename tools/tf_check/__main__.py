"""`make tf-check`: see the package's docstring and terraform/README.md "Checks"."""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import os
import shutil
import sys
import tempfile
import time
import zipfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from moto.server import ThreadedMotoServer

from g2s_sandbox.scenario import SandboxPair, running_sandboxes

from .config import (
    OVERRIDE_FILE,
    REGION,
    MirrorError,
    cli_config,
    copy_configuration,
    default_roots,
    find_mirror,
    provider_override,
    run_variables,
)
from .smoke import Deployed, SmokeFailed, smoke_test
from .terraform import (
    AWSLAMBDARIC_HOW,
    TERRAFORM_HOW,
    StepFailed,
    Terraform,
    managed_addresses,
    missing_tool,
    planned_creates,
    terraform_environment,
)

SUBSCRIPTION_ID = 1  # the webhook's STRAVA_SUBSCRIPTION_ID (strava_subscription_id)


def parse(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="tf_check", description=__doc__)
    parser.add_argument("--terraform", default="terraform", help="terraform binary (TERRAFORM)")
    parser.add_argument("--source", type=Path, default=Path("terraform"), help="the .tf directory")
    parser.add_argument(
        "--package",
        type=Path,
        default=Path("build/lambda-package.zip"),
        help="make lambda-package's zip",
    )
    parser.add_argument(
        "--mirror", default="", help="provider mirror directory (TF_PROVIDER_MIRROR)"
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str]) -> int:
    args = parse(argv)
    binary = shutil.which(args.terraform)
    if binary is None:
        return report(missing_tool(args.terraform, TERRAFORM_HOW, os.environ))
    if importlib.util.find_spec("awslambdaric") is None:
        return report(missing_tool("awslambdaric", AWSLAMBDARIC_HOW, os.environ))
    started = time.monotonic()
    try:
        mirror = find_mirror(args.mirror or None, default_roots())
        with tempfile.TemporaryDirectory(prefix="tf-check-") as tmp:
            check(binary, args.source, args.package.resolve(), mirror, Path(tmp))
    except (StepFailed, MirrorError) as exc:
        print(f"error: make tf-check: {exc}", file=sys.stderr)
        return 1
    print(f"make tf-check: passed in {time.monotonic() - started:.0f} s")
    return 0


def report(missing: tuple[int, str]) -> int:
    """Print a missing tool's line (stderr when it fails the run); its exit code."""
    code, line = missing
    print(line, file=sys.stderr if code else sys.stdout)
    return code


def check(binary: str, source: Path, package: Path, mirror: Path | None, tmp: Path) -> None:
    """fmt, init, validate on a copy of `source`; then plan, apply, smoke test, destroy
    on moto; raises StepFailed on the first step that fails."""
    if not package.is_file():
        raise StepFailed(f"{package} not found (make lambda-package builds it)")
    work = tmp / "terraform"
    copy_configuration(source, work)
    config = tmp / "cli.tfrc"
    config.write_text(cli_config(mirror), encoding="utf-8")
    print(f"provider hashicorp/aws: {'mirror ' + str(mirror) if mirror else 'the registry'}")
    terraform = Terraform(binary, work, terraform_environment(os.environ, config))
    terraform.run("fmt", "-check", "-diff")
    terraform.run("init", "-backend=false", "-input=false")
    terraform.run("validate")
    layer = standin_layer(tmp / "layer.zip")
    with on_loopback() as (endpoint, pair):
        (work / OVERRIDE_FILE).write_text(provider_override(endpoint), encoding="utf-8")
        variables = run_variables(
            package_zip=package,
            layer_zip=layer,
            strava_client_id=pair.strava.client_id,
            subscription_id=SUBSCRIPTION_ID,
        )
        (work / "tf_check.auto.tfvars.json").write_text(json.dumps(variables), encoding="utf-8")
        deploy_smoke_destroy(terraform, endpoint, pair, package, tmp)


def deploy_smoke_destroy(
    terraform: Terraform, endpoint: str, pair: SandboxPair, package: Path, tmp: Path
) -> None:

    terraform.run("plan", "-input=false", "-out=tfplan")
    planned = planned_creates(terraform.json("show", "tfplan"))
    print(f"    planned: {planned} resources to create")
    try:
        terraform.run("apply", "-input=false", "-auto-approve", "tfplan")
        applied = managed_addresses(terraform.run("state", "list", quiet=True))
        print(f"    applied: {len(applied)} resources in the state")
        deployed = Deployed.from_terraform(terraform.json("show"), terraform.json("output"))
        started = time.monotonic()
        try:
            lines = smoke_test(
                deployed, endpoint=endpoint, pair=pair, package_zip=package, work=tmp
            )
        except SmokeFailed as exc:
            raise StepFailed(f"smoke test: {exc}") from exc
        print(f"--- smoke test ({time.monotonic() - started:.1f} s)")
        for line in lines:
            print(f"    {line}")
    finally:
        terraform.run("destroy", "-input=false", "-auto-approve")
        left = managed_addresses(terraform.run("state", "list", quiet=True))
        if left:
            raise StepFailed(f"terraform state list after destroy: {left}")
        print("    state list after destroy: empty")


@contextmanager
def on_loopback() -> Iterator[tuple[str, SandboxPair]]:
    """moto server and the Garmin/Strava emulators on loopback; this process's boto3
    pointed at moto (the smoke test reads the table through the store)."""

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # a line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN"):
        os.environ.pop(name, None)
    os.environ.update(
        {
            "AWS_ENDPOINT_URL": endpoint,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": REGION,
            "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
            "AWS_CONFIG_FILE": os.devnull,
        }
    )
    try:
        with running_sandboxes(two_hosts=True) as pair:
            yield endpoint, pair
    finally:
        server.stop()


def standin_layer(path: Path) -> Path:
    """A layer zip for moto to hold. The real one (`make layer`) needs every locked
    wheel from PyPI; the smoke test runs the handlers on this venv's dependencies."""
    with zipfile.ZipFile(path, "w") as archive:
        info = zipfile.ZipInfo("python/tf_check_standin.txt", date_time=(1980, 1, 1, 0, 0, 0))
        archive.writestr(info, "stand-in for make layer's zip during make tf-check\n")
    return path


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
