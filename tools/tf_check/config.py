"""What terraform reads during `make tf-check`, all written into a temporary copy of
terraform/ (the repository's directory is never written): the CLI configuration that
installs hashicorp/aws from a filesystem mirror when this machine has one, the provider
override pointing every AWS service at moto, and the run's variables."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterable, Sequence
from pathlib import Path

__all__ = [
    "AWS_PROVIDER",
    "OVERRIDE_FILE",
    "REGION",
    "MirrorError",
    "cli_config",
    "copy_configuration",
    "find_mirror",
    "implied_mirror_roots",
    "provider_override",
    "run_variables",
]

AWS_PROVIDER = "registry.terraform.io/hashicorp/aws"
OVERRIDE_FILE = "tf_check_override.tf"
REGION = "eu-west-1"  # any region: moto serves them all

# Every service the configuration's resources and data sources call (terraform/*.tf);
# the override sends each to moto. A service missing here would reach real AWS with
# fake credentials and fail the plan, never touch an account.
MOTO_SERVICES = (
    "apigatewayv2",
    "cloudwatch",
    "dynamodb",
    "events",
    "iam",
    "kms",
    "lambda",
    "logs",
    "sns",
    "sqs",
    "ssm",
    "sts",
)


class MirrorError(Exception):
    """TF_PROVIDER_MIRROR names a directory that holds no hashicorp/aws."""


def implied_mirror_roots(home: Path, env: dict[str, str]) -> list[Path]:
    """Where terraform itself looks for providers without a CLI config (its "implied
    local mirror directories" on Linux), then /opt, /usr/local/share and /usr/share, where a
    machine image may keep a mirror in a directory of its own (searched one level down)."""
    data_home = Path(env.get("XDG_DATA_HOME") or home / ".local" / "share")
    data_dirs = [Path(d) for d in (env.get("XDG_DATA_DIRS") or "").split(":") if d]
    data_dirs = data_dirs or [Path("/usr/local/share"), Path("/usr/share")]
    implied = [home / ".terraform.d" / "plugins", data_home / "terraform" / "plugins"]
    implied += [d / "terraform" / "plugins" for d in data_dirs]
    return [*implied, Path("/opt"), Path("/usr/local/share"), Path("/usr/share")]


def _holds_aws(directory: Path) -> bool:
    return (directory / AWS_PROVIDER).is_dir()


def find_mirror(configured: str | None, roots: Sequence[Path]) -> Path | None:
    """The mirror directory (the one holding registry.terraform.io/): `configured` when
    given (it must hold hashicorp/aws), else the first root, or a directory right under
    one, that holds it; None when no root has one (terraform then uses the registry)."""
    if configured:
        path = Path(configured).expanduser().resolve()
        if not _holds_aws(path):
            raise MirrorError(f"TF_PROVIDER_MIRROR={configured} holds no {AWS_PROVIDER}/")
        return path
    for root in roots:
        for candidate in (root, *_children(root)):
            if _holds_aws(candidate):
                return candidate.resolve()
    return None


def _children(root: Path) -> Iterable[Path]:
    try:
        return sorted(p for p in root.iterdir() if p.is_dir())
    except OSError:  # absent or unreadable: nothing there
        return []


def cli_config(mirror: Path | None) -> str:
    """A terraform CLI configuration (HCL): hashicorp/aws from `mirror`, every other
    provider from its registry; with no mirror, every provider from its registry."""
    if mirror is None:
        return "provider_installation {\n  direct {}\n}\n"
    provider = json.dumps(AWS_PROVIDER)
    return (
        "provider_installation {\n"
        "  filesystem_mirror {\n"
        f"    path    = {json.dumps(str(mirror))}\n"
        f"    include = [{provider}]\n"
        "  }\n"
        "  direct {\n"
        f"    exclude = [{provider}]\n"
        "  }\n"
        "}\n"
    )


def provider_override(endpoint: str) -> str:
    """An override file (HCL) that merges into terraform/'s provider "aws" block: every
    service at `endpoint` (moto), fake credentials, no call to the metadata service."""
    endpoints = "\n".join(f"    {name} = {json.dumps(endpoint)}" for name in MOTO_SERVICES)
    return (
        "# Written by `make tf-check` into its temporary copy; never committed.\n"
        'provider "aws" {\n'
        '  access_key                  = "testing"\n'
        '  secret_key                  = "testing"\n'
        "  skip_credentials_validation = true\n"
        "  skip_metadata_api_check     = true\n"
        "  skip_requesting_account_id  = false\n"
        "  endpoints {\n"
        f"{endpoints}\n"
        "  }\n"
        "}\n"
    )


def run_variables(
    *, package_zip: Path, layer_zip: Path, strava_client_id: int, subscription_id: int
) -> dict[str, object]:
    """The variables of the moto run: the deletion protection off (destroy must empty the
    state), the zips by absolute path (the copy lives elsewhere), the moto-only switch."""
    return {
        "aws_region": REGION,
        "strava_client_id": strava_client_id,
        "strava_subscription_id": subscription_id,
        "table_deletion_protection": False,
        "dlq_redrive_allow_policy": False,
        "package_zip_path": str(package_zip.resolve()),
        "layer_zip_path": str(layer_zip.resolve()),
    }


def copy_configuration(source: Path, target: Path) -> list[Path]:
    """terraform/*.tf copied into `target`: no state, no .terraform/, no tfvars of the
    user's (the run's variables are its own)."""
    target.mkdir(parents=True, exist_ok=True)
    copied = [Path(shutil.copy2(path, target / path.name)) for path in sorted(source.glob("*.tf"))]
    if not copied:
        raise FileNotFoundError(f"no .tf file in {source}")
    return copied


def default_roots() -> list[Path]:
    """implied_mirror_roots for this process's home and environment."""
    return implied_mirror_roots(Path.home(), dict(os.environ))
