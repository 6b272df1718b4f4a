"""`make tf-check`'s runtime pieces without terraform: the Lambda Runtime API of
tools/tf_check/runtime_api.py driving AWS's runtime interface client (awslambdaric)
as a deployed function runs, and the command's answer where terraform is missing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tf_check.runtime_api import InvocationFailed, RuntimeApi
from tf_check.smoke import Function, SmokeFailed, running_function

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
ARN = "arn:aws:lambda:eu-west-1:123456789012:function:probe"

HANDLERS = """
import os

COLD = {"pid": os.getpid()}


def echo(event, context):
    return {
        "event": event,
        "pid": COLD["pid"],
        "arn": context.invoked_function_arn,
        "remaining": context.get_remaining_time_in_millis(),
        "setting": os.environ.get("PROBE_SETTING"),
    }


def fail(event, context):
    raise ValueError("refused " + str(event["n"]))


def die(event, context):
    os._exit(3)
"""


def _function(handler: str, environment: dict[str, str] | None = None) -> Function:
    return Function("probe", "probe", ARN, handler, 30, environment or {})


@pytest.fixture
def task_root(tmp_path: Path) -> Path:
    root = tmp_path / "task"
    root.mkdir()
    (root / "probe.py").write_text(HANDLERS)
    (tmp_path / "logs").mkdir()
    return root


def test_a_warm_runtime_answers_one_invocation_after_another(task_root: Path) -> None:
    """The handler gets the event, the function's ARN, a deadline ahead, and the
    environment; the second event reaches the same process (a warm container)."""
    function = _function("probe.echo", {"PROBE_SETTING": "from-the-state"})
    with running_function(function, task_root, {}, task_root.parent / "logs") as api:
        first = api.invoke({"n": 1})
        second = api.invoke({"n": 2})
    assert first["event"] == {"n": 1}
    assert second["event"] == {"n": 2}
    assert first["pid"] == second["pid"] != os.getpid()
    assert first["arn"] == ARN
    assert 0 < first["remaining"] <= 30_000
    assert first["setting"] == "from-the-state"


def test_an_exception_in_the_handler_is_reported_as_the_functions_error(task_root: Path) -> None:
    with (
        pytest.raises(SmokeFailed, match="ValueError") as failed,
        running_function(_function("probe.fail"), task_root, {}, task_root.parent / "logs") as api,
    ):
        api.invoke({"n": 7})
    assert "refused 7" in str(failed.value)


def test_a_handler_that_cannot_be_imported_fails_at_once(task_root: Path) -> None:
    """The runtime reports its init error; the invocation fails without waiting for the
    function's timeout, and the failure shows the runtime's output."""
    with (
        pytest.raises(SmokeFailed, match=r"Runtime\.ImportModuleError") as failed,
        running_function(
            _function("no_such_module.handler"), task_root, {}, task_root.parent / "logs"
        ) as api,
    ):
        api.invoke({}, wait_s=20)
    assert "no_such_module" in str(failed.value)


def test_a_runtime_that_dies_fails_its_invocation_at_once(task_root: Path) -> None:
    """Not after the function's 30 s timeout: the process's exit is reported."""
    started = time.monotonic()
    with (
        pytest.raises(SmokeFailed, match="exited 3"),
        running_function(_function("probe.die"), task_root, {}, task_root.parent / "logs") as api,
    ):
        api.invoke({})
    assert time.monotonic() - started < 20


def _request(url: str, body: bytes | None = None) -> tuple[int, dict[str, str]]:
    method = "POST" if body is not None else "GET"
    request = urllib.request.Request(url, data=body, method=method)  # noqa: S310 - loopback http
    try:
        with urllib.request.urlopen(request, timeout=5) as answer:  # noqa: S310 - loopback http
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_unknown_paths_and_requests_are_refused() -> None:
    with RuntimeApi(ARN, 5) as api:
        base = f"http://{api.address}/2018-06-01/runtime"
        assert _request(f"{base}/nothing")[0] == 404
        assert _request(f"{base}/invocation/unknown-id/response", b"{}")[0] == 400
        with pytest.raises(InvocationFailed, match="no answer within"):
            api.invoke({"nobody": "polls"}, wait_s=0.2)


# -- without terraform ----------------------------------------------------------------------
def _tf_check(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tf_check", "--terraform", "no-such-terraform-binary"],
        cwd=REPO,
        env={**env, "PYTHONPATH": str(REPO / "tools"), "PATH": os.environ["PATH"]},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_without_terraform_it_fails_in_ci_and_skips_visibly_elsewhere() -> None:
    """What `make tf-check` prints and exits on a machine without terraform."""
    ci = _tf_check({"CI": "true"})
    assert ci.returncode == 1
    assert "no-such-terraform-binary" in ci.stderr
    assert "install Terraform" in ci.stderr
    plain = _tf_check({})
    assert plain.returncode == 0
    assert "SKIPPED" in plain.stdout
