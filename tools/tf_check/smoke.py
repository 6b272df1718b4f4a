"""The smoke test of what `terraform apply` deployed on moto: each function's handler
and environment read from the state, run under AWS's runtime interface client
(awslambdaric) from the code package terraform uploaded, against the Runtime API of
runtime_api.py, the Garmin and Strava emulators standing in for the real services.

The function's environment is the state's, as is, plus only what a loopback run needs:
the AWS endpoint (moto) and fake credentials, and the Strava/Garmin URLs (the sandbox).
The secrets and tokens are put where the deployed functions read them, the way
terraform/README.md tells a user to: the SSM SecureStrings (`aws ssm put-parameter`,
here through boto3), Strava's tokens by `garmin2strava get-token` and Garmin's by
`garmin2strava garmin login`, both on the table (G2S_STORE=dynamodb)."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import secrets
import subprocess
import sys
import threading
import time
import urllib.request
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http import HTTPStatus
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import boto3

from g2s_harness.sqs_records import sqs_event
from g2s_sandbox.scenario import SandboxPair, seed_run
from g2s_sandbox.strava_records import SandboxActivity
from garmin2strava.bootstrap import build_store
from garmin2strava.domain.webhook import derive_path_secret
from garmin2strava.settings import load_settings

from .runtime_api import InvocationFailed, RuntimeApi

__all__ = ["Deployed", "SmokeFailed", "function_environment", "smoke_test"]

GARMIN_EMAIL = "smoke@example.com"
SEEDED_GARMIN_ID = 41_000_001
# The CLI's commands run against the sandbox answer within seconds.
COMMAND_TIMEOUT_S = 60


class SmokeFailed(Exception):
    """A deployed function did not do what it must."""


@dataclass(frozen=True)
class Function:
    """One aws_lambda_function of the state."""

    key: str
    name: str
    arn: str
    handler: str
    timeout_s: int
    environment: dict[str, str]
    code_sha256: str = ""  # base64, as source_code_hash holds it


@dataclass(frozen=True)
class Deployed:
    """What the smoke test reads from terraform: the state's functions and the outputs."""

    functions: dict[str, Function]
    outputs: dict[str, Any]
    event_source_mapping_id: str
    region: str

    @classmethod
    def from_terraform(cls, state: dict[str, Any], outputs: dict[str, Any]) -> Deployed:
        """From `terraform show -json` (the state) and `terraform output -json`."""
        resources = state["values"]["root_module"]["resources"]
        functions: dict[str, Function] = {}
        mappings = []
        for resource in resources:
            values = resource["values"]
            if resource["type"] == "aws_lambda_function" and resource["mode"] == "managed":
                key = str(resource["index"])
                environment = values["environment"][0]["variables"] if values["environment"] else {}
                functions[key] = Function(
                    key=key,
                    name=values["function_name"],
                    arn=values["arn"],
                    handler=values["handler"],
                    timeout_s=int(values["timeout"]),
                    environment={k: str(v) for k, v in environment.items()},
                    code_sha256=str(values.get("source_code_hash") or ""),
                )
            elif resource["type"] == "aws_lambda_event_source_mapping":
                mappings.append(values["uuid"])
        region = next(r["values"]["name"] for r in resources if r["type"] == "aws_region")
        if len(mappings) != 1:
            raise SmokeFailed(f"expected one event source mapping, found {len(mappings)}")
        return cls(functions, {k: v["value"] for k, v in outputs.items()}, mappings[0], str(region))


def function_environment(
    function: Function, *, runtime_api: str, task_root: Path, loopback: dict[str, str]
) -> dict[str, str]:
    """What the function's process sees: Lambda's own variables, the state's
    environment as is, then the loopback additions (which may only add, never replace
    one the state set: a replaced value would test something other than the deployment)."""
    replaced = sorted(set(loopback) & set(function.environment))
    if replaced:
        raise SmokeFailed(f"{function.key}: the loopback run would replace {replaced}")
    return {
        "AWS_LAMBDA_RUNTIME_API": runtime_api,
        "AWS_LAMBDA_FUNCTION_NAME": function.name,
        "AWS_LAMBDA_FUNCTION_TIMEOUT": str(function.timeout_s),
        "LAMBDA_TASK_ROOT": str(task_root),
        # Lambda's task root is first on the path: the uploaded package, never the
        # developer's checkout, is what runs.
        "PYTHONPATH": str(task_root),
        "PYTHONDONTWRITEBYTECODE": "1",
        "LANG": "C.UTF-8",
        "TZ": "UTC",
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        **function.environment,
        **loopback,
    }


def loopback_environment(endpoint: str, region: str, pair: SandboxPair) -> dict[str, str]:
    """Only what a run on this machine needs beyond the deployed environment."""
    return {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_REGION": region,
        "AWS_DEFAULT_REGION": region,
        "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
        "AWS_CONFIG_FILE": os.devnull,
        "AWS_EC2_METADATA_DISABLED": "true",
        "G2S_STRAVA_API_URL": pair.strava.api_url,
        "G2S_STRAVA_OAUTH_URL": pair.strava.oauth_url,
        # A closed port: a Strava request that ignored the two above fails at once.
        "G2S_STRAVA_BASE_URL": "http://127.0.0.1:9",
        "G2S_GARMIN_BASE_URL": pair.garmin.base_url,
    }


@contextlib.contextmanager
def running_function(
    function: Function, task_root: Path, loopback: dict[str, str], log_dir: Path
) -> Iterator[RuntimeApi]:
    """The function's runtime: awslambdaric running its handler, polling a Runtime API
    that `invoke` feeds; stopped (SIGTERM, as Lambda's shutdown) at the end."""
    with RuntimeApi(function.arn, function.timeout_s) as api:
        env = function_environment(
            function, runtime_api=api.address, task_root=task_root, loopback=loopback
        )
        log = log_dir / f"{function.key}.log"
        with log.open("wb") as out:
            process = subprocess.Popen(  # noqa: S603 - our interpreter, the state's handler
                [sys.executable, "-m", "awslambdaric", function.handler],
                cwd=task_root,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
            watcher = threading.Thread(target=_report_exit, args=(process, api), daemon=True)
            watcher.start()
            try:
                yield api
            except InvocationFailed as exc:
                tail = log.read_text("utf-8", "replace")[-3000:]
                raise SmokeFailed(f"{function.key}: {exc}\n--- its output ---\n{tail}") from exc
            finally:
                process.terminate()
                try:
                    process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()


def _report_exit(process: subprocess.Popen[bytes], api: RuntimeApi) -> None:
    """A runtime process that ends fails what it was handed at once, rather than
    after the function's timeout."""
    code = process.wait()
    api.fail_pending({"errorType": "Runtime.ExitError", "errorMessage": f"exited {code}"})


def check(condition: bool, what: str) -> None:
    if not condition:
        raise SmokeFailed(what)


def _cli(env: dict[str, str], *argv: str) -> subprocess.Popen[str]:
    """`garmin2strava argv...` as a user runs it (the console script of this venv)."""
    script = Path(sys.executable).with_name("garmin2strava")
    return subprocess.Popen(  # noqa: S603 - our own console script
        [str(script), *argv],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def cli_environment(
    deployed: Deployed, loopback: dict[str, str], pair: SandboxPair
) -> dict[str, str]:
    """A workstation's environment for the CLI against the deployed table (README's
    "Sync history and accounts from a workstation"), the sandbox's app credentials."""
    outputs, sync = deployed.outputs, deployed.functions["sync"].environment
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": os.environ.get("HOME", "/"),
        "PYTHONUNBUFFERED": "1",  # the authorization URL must reach us before the exit
        "G2S_STORE": "dynamodb",
        "G2S_DYNAMODB_TABLE": str(outputs["table_name"]),
        "G2S_KMS_KEY_ID": str(outputs["kms_key_arn"]),
        "G2S_USER_ID": sync["G2S_USER_ID"],
        "STRAVA_CLIENT_ID": str(pair.strava.client_id),
        "STRAVA_CLIENT_SECRET": pair.strava.client_secret,
        **loopback,
    }


def store_secrets(deployed: Deployed, pair: SandboxPair, ssm: Any) -> str:
    """The two SecureStrings of terraform/README.md "Secrets", with the deployment's key;
    the verify token made as the README makes it (48 hex digits). Returns the token."""
    names = deployed.outputs["ssm_parameter_names"]
    key = str(deployed.outputs["kms_key_arn"])
    verify_token = secrets.token_hex(24)
    for name, value in (
        (names["strava_client_secret"], pair.strava.client_secret),
        (names["strava_verify_token"], verify_token),
    ):
        ssm.put_parameter(Name=name, Value=value, Type="SecureString", KeyId=key)
    return verify_token


def strava_get_token(env: dict[str, str], pair: SandboxPair) -> None:
    """`garmin2strava get-token --port 0`; the browser's consent played on the emulator."""
    process = _cli(env, "get-token", "--port", "0", "--timeout", str(COMMAND_TIMEOUT_S))
    assert process.stdout is not None
    url = ""
    for line in process.stdout:
        if "/oauth/authorize?" in line:
            url = line.strip()
            break
    check(bool(url), "get-token printed no authorization URL")
    query = parse_qs(urlsplit(url).query)
    redirect = urlsplit(query["redirect_uri"][0])
    scope = "read,activity:write,activity:read_all"
    code = pair.strava.authorize(pair.athlete_id, scope)
    params = urlencode({"state": query["state"][0], "code": code, "scope": scope})
    with urllib.request.urlopen(
        f"http://127.0.0.1:{redirect.port}{redirect.path}?{params}", timeout=COMMAND_TIMEOUT_S
    ) as answer:
        check(answer.status == HTTPStatus.OK, f"get-token's redirect answered {answer.status}")
    _, err = process.communicate(timeout=COMMAND_TIMEOUT_S)
    check(process.returncode == 0, f"get-token exited {process.returncode}: {err.strip()}")


def garmin_login(env: dict[str, str], pair: SandboxPair) -> None:
    """`garmin2strava garmin login`, the credentials from the environment."""
    password = secrets.token_urlsafe(16)
    pair.garmin.set_account(GARMIN_EMAIL, password)
    login_env = {**env, "GARMIN_EMAIL": GARMIN_EMAIL, "GARMIN_PASSWORD": password}
    process = _cli(login_env, "garmin", "login")
    _, err = process.communicate(timeout=COMMAND_TIMEOUT_S)
    check(process.returncode == 0, f"garmin login exited {process.returncode}: {err.strip()}")


def unpack_package(package_zip: Path, task_root: Path, deployed: Deployed) -> Path:
    """The code package as Lambda unpacks it into /var/task: the zip whose hash every
    function's state holds, and what `import garmin2strava` then finds."""
    digest = base64.b64encode(hashlib.sha256(package_zip.read_bytes()).digest()).decode()
    for function in deployed.functions.values():
        check(function.code_sha256 == digest, f"{function.key} was deployed from another zip")
    with zipfile.ZipFile(package_zip) as archive:
        archive.extractall(task_root)
    found = subprocess.run(
        [sys.executable, "-c", "import garmin2strava; print(garmin2strava.__file__)"],
        cwd=task_root,
        env={"PYTHONPATH": str(task_root), "PYTHONDONTWRITEBYTECODE": "1"},
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT_S,
        check=False,
    ).stdout.strip()
    check(
        Path(found).is_relative_to(task_root),
        f"the runtime would import garmin2strava from {found or '(nowhere)'}, not the package",
    )
    return task_root


def _apigw_event(
    method: str, secret: str, *, query: dict[str, str], body: str | None
) -> dict[str, Any]:
    """An API Gateway HTTP API (payload 2.0) event for the webhook route."""
    path = f"/webhooks/strava/{secret}"
    now = datetime.now(UTC)
    event: dict[str, Any] = {
        "version": "2.0",
        "routeKey": f"{method} /webhooks/strava/{{secret}}",
        "rawPath": path,
        "rawQueryString": urlencode(query),
        "headers": {"content-type": "application/json", "user-agent": "Strava"},
        "pathParameters": {"secret": secret},
        "requestContext": {
            "http": {
                "method": method,
                "path": path,
                "protocol": "HTTP/1.1",
                "sourceIp": "203.0.113.10",
            },
            "requestId": secrets.token_hex(8),
            "routeKey": f"{method} /webhooks/strava/{{secret}}",
            "stage": "$default",
            "timeEpoch": int(now.timestamp() * 1000),
        },
        "isBase64Encoded": False,
    }
    if query:
        event["queryStringParameters"] = query
    if body is not None:
        event["body"] = body
    return event


def smoke_test(
    deployed: Deployed, *, endpoint: str, pair: SandboxPair, package_zip: Path, work: Path
) -> list[str]:
    """Every check of the deployed functions, in a user's order (secrets and tokens,
    then the sync, the webhook, the worker); the lines to print. SmokeFailed on the
    first that fails."""
    logs = work / "logs"
    logs.mkdir()
    smoke = Smoke(
        deployed,
        pair,
        boto3.Session(
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
            region_name=deployed.region,
        ),
        endpoint,
        unpack_package(package_zip, work / "task", deployed),
        logs,
    )
    verify_token = smoke.secrets_and_tokens()
    activity = smoke.sync()
    messages = smoke.webhook(verify_token, activity)
    smoke.worker(messages, activity)
    return smoke.results


@dataclass
class Smoke:
    """What the smoke test's steps share, and what they found."""

    deployed: Deployed
    pair: SandboxPair
    session: boto3.Session
    endpoint: str
    task_root: Path
    logs: Path
    results: list[str] = field(default_factory=list)

    @property
    def loopback(self) -> dict[str, str]:
        return loopback_environment(self.endpoint, self.deployed.region, self.pair)

    def client(self, service: str) -> Any:
        return self.session.client(service, endpoint_url=self.endpoint)  # type: ignore[call-overload]

    def run(self, key: str) -> contextlib.AbstractContextManager[RuntimeApi]:
        return running_function(
            self.deployed.functions[key], self.task_root, self.loopback, self.logs
        )

    def secrets_and_tokens(self) -> str:
        """The SSM SecureStrings, then Strava's and Garmin's tokens in the table; the
        verify token."""
        verify_token = store_secrets(self.deployed, self.pair, self.client("ssm"))
        cli_env = cli_environment(self.deployed, self.loopback, self.pair)
        strava_get_token(cli_env, self.pair)
        garmin_login(cli_env, self.pair)
        self.results.append(
            "secrets: the two SSM SecureStrings put; tokens: get-token and garmin login "
            "stored them in the deployed table"
        )
        return verify_token

    def sync(self) -> SandboxActivity:
        """An idle cycle (Garmin asked, nothing uploaded), then one run uploaded."""
        pair = self.pair
        scheduled = {"source": "aws.events", "detail-type": "Scheduled Event", "detail": {}}
        with self.run("sync") as api:
            garmin_before, uploads_before = pair.garmin_count(), pair.strava_counts()["uploads"]
            idle = api.invoke(scheduled)
            idle_garmin = pair.garmin_count() - garmin_before
            check(idle.get("outcomes") == {} and idle.get("failed") == 0, f"sync idle: {idle}")
            check(idle_garmin > 0, "the idle cycle never asked Garmin")
            check(pair.strava_counts()["uploads"] == uploads_before, "the idle cycle uploaded")
            start = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=2)
            seed_run(pair, SEEDED_GARMIN_ID, start_utc=start, name="tf-check smoke")
            active = api.invoke(scheduled)
            check(active.get("outcomes") == {"uploaded": 1}, f"sync upload: {active}")
        uploaded = [a for a in pair.strava.activities.values() if a.athlete_id == pair.athlete_id]
        check(len(uploaded) == 1, f"Strava holds {len(uploaded)} uploaded activities, not 1")
        self.results.append(
            f"sync: an idle cycle ({idle['accounts']} account, {idle_garmin} Garmin request(s), "
            f"no upload), then garmin {SEEDED_GARMIN_ID} uploaded as Strava activity "
            f"{uploaded[0].activity_id}"
        )
        return uploaded[0]

    def webhook(self, verify_token: str, activity: SandboxActivity) -> list[dict[str, Any]]:
        """The handshake answered; a POSTed create event on the queue. Its messages."""
        # Lambda's SQS poller is played here (worker): moto's would run the worker in Docker.
        self.client("lambda").update_event_source_mapping(
            UUID=self.deployed.event_source_mapping_id, Enabled=False
        )
        secret = derive_path_secret(verify_token)
        challenge = secrets.token_hex(16)
        query = {
            "hub.mode": "subscribe",
            "hub.verify_token": verify_token,
            "hub.challenge": challenge,
        }
        event = {
            "object_type": "activity",
            "object_id": activity.activity_id,
            "aspect_type": "create",
            "owner_id": self.pair.athlete_id,
            "subscription_id": int(
                self.deployed.functions["webhook"].environment["STRAVA_SUBSCRIPTION_ID"]
            ),
            "event_time": int(time.time()),
            "updates": {},
        }
        with self.run("webhook") as api:
            handshake = api.invoke(_apigw_event("GET", secret, query=query, body=None))
            posted = api.invoke(_apigw_event("POST", secret, query={}, body=json.dumps(event)))
        check(handshake.get("statusCode") == HTTPStatus.OK, f"handshake: {handshake}")
        check(
            json.loads(handshake["body"]) == {"hub.challenge": challenge}, f"handshake: {handshake}"
        )
        check(posted.get("statusCode") == HTTPStatus.OK, f"webhook POST: {posted}")
        queue_url = str(self.deployed.outputs["queue_url"])
        messages: list[dict[str, Any]] = (
            self.client("sqs")
            .receive_message(
                QueueUrl=queue_url,
                MaxNumberOfMessages=10,
                AttributeNames=["All"],
                MessageAttributeNames=["All"],
            )
            .get("Messages", [])
        )
        check(len(messages) == 1, f"the events queue holds {len(messages)} messages, not 1")
        queued = json.loads(messages[0]["Body"])
        check(queued["object_id"] == activity.activity_id, f"queued the wrong event: {queued}")
        self.results.append(
            "webhook: answered the handshake (200, the challenge), put the POST's event on "
            f"{queue_url.rsplit('/', 1)[-1]}"
        )
        return messages

    def worker(self, messages: list[dict[str, Any]], activity: SandboxActivity) -> None:
        """The queued event mirrored into the table: the workout named as on Strava."""
        sqs, queue_url = self.client("sqs"), str(self.deployed.outputs["queue_url"])
        queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])[
            "Attributes"
        ]["QueueArn"]
        with self.run("worker") as api:
            answer = api.invoke(
                sqs_event(messages, queue_arn=queue_arn, region=self.deployed.region)
            )
        check(answer == {"batchItemFailures": []}, f"worker: {answer}")
        for message in messages:  # what the poller does with a batch that succeeded
            sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
        name = mirrored_name(self.deployed, activity.activity_id)
        check(
            name == activity.name,
            f"mirror of {activity.activity_id}: {name!r}, not {activity.name!r}",
        )
        self.results.append(
            f"worker: mirrored Strava activity {activity.activity_id} ({name!r}) into the table "
            f"{self.deployed.outputs['table_name']}"
        )


def mirrored_name(deployed: Deployed, activity_id: int) -> str | None:
    """The mirror's record of `activity_id` read back through the store the functions
    use (boto3 reaches moto: __main__ points this process's environment at it); its
    name, or None when the table holds none."""
    settings = load_settings(
        env_file=None,
        store="dynamodb",
        dynamodb_table=str(deployed.outputs["table_name"]),
        kms_key_id=str(deployed.outputs["kms_key_arn"]),
    )
    workout = build_store(settings).get_workout(
        deployed.functions["worker"].environment["G2S_USER_ID"], activity_id
    )
    return None if workout is None else workout.name
