"""A syncing process for the crash-injection tests (conftest.py's `crash_world`, on
SQLite and DynamoDB): one cycle, configured from the environment exactly as
`garmin2strava sync --once` is, that SIGKILLs itself when it reaches step `--kill-at`
for the `--kill-on`-th time.

Exit codes: killed by SIGKILL at the step; 0 when the cycle ended without reaching
it; 3 when the cycle reported a failure.

`--serve` makes this a fork server instead (conftest.py's `crash_children`): it
imports the client libraries once, then for each request line on stdin (JSON: argv,
env, cwd, output) forks a child that takes that environment and working directory as
its own, writes its stdout and stderr to `output` and runs `main(argv)`. The server
answers `{"pid": ...}` once the child runs and `{"returncode": ...}` (negative: the
signal that killed it, as subprocess reports it) once it is gone. Each child is still
its own process with its own store connections, killed by a real SIGKILL; it only
skips the seconds a fresh interpreter spends importing stravalib, garminconnect and
boto3.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import traceback
from collections import Counter
from typing import Any

from garmin2strava.bootstrap import bootstrap
from garmin2strava.services.accounts import ensure_settings_account
from garmin2strava.services.sync import SyncDeps
from garmin2strava.services.sync_accounts import sync_all
from garmin2strava.settings import load_settings

NOT_OK = 3
CRASHED = 1  # an exception escaped main(), as a fresh interpreter would exit


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--kill-at", default="", help="checkpoint step name; empty: never")
    parser.add_argument("--kill-on", type=int, default=1, help="the K-th time the step comes")
    parser.add_argument("--poll-delay", type=float, default=0.05)
    args = parser.parse_args(argv)

    settings = load_settings(env_file=None)  # the environment only, never a stray .env
    app = bootstrap(settings)
    app.poll_delay_s = args.poll_delay
    ensure_settings_account(app.store, settings, app.clock)
    seen: Counter[str] = Counter()

    def checkpoint(step: str) -> None:
        seen[step] += 1
        if step == args.kill_at and seen[step] == args.kill_on:
            os.kill(os.getpid(), signal.SIGKILL)

    def deps_for(user_id: str) -> SyncDeps:
        deps = app.sync_deps(user_id)
        deps.checkpoint = checkpoint
        return deps

    reports = sync_all(app.store, deps_for)
    return 0 if all(r.ok for r in reports) else NOT_OK


def _preload() -> None:
    """Import what a child's cycle imports lazily (bootstrap's builders), so no child
    pays for it; nothing here opens a connection or starts a thread."""
    import boto3  # noqa: F401 (preloaded for the DynamoDB children)

    import garmin2strava.adapters.crypto
    import garmin2strava.adapters.fitfile
    import garmin2strava.adapters.garmin
    import garmin2strava.adapters.store.dynamodb
    import garmin2strava.adapters.store.sqlite
    import garmin2strava.adapters.strava  # noqa: F401 (as above)


def _run_forked(request: dict[str, Any]) -> None:
    """The forked child: the request's environment, directory and output; never returns."""
    code = CRASHED
    try:
        null = os.open(os.devnull, os.O_RDONLY)
        out = os.open(request["output"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.dup2(null, 0)
        os.dup2(out, 1)
        os.dup2(out, 2)
        os.environ.clear()
        os.environ.update(request["env"])
        os.chdir(request["cwd"])
        code = main(list(request["argv"]))
    except SystemExit as exc:  # argparse's usage errors
        code = exc.code if isinstance(exc.code, int) else CRASHED
    except BaseException:  # noqa: BLE001 (reported in the output, as an interpreter would)
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def _answer(message: dict[str, int]) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


def serve() -> None:
    """The fork server: one child at a time, one request line each."""
    _preload()
    for line in sys.stdin:
        request = json.loads(line)
        pid = os.fork()
        if pid == 0:
            _run_forked(request)
        _answer({"pid": pid})
        _, status = os.waitpid(pid, 0)
        _answer({"returncode": os.waitstatus_to_exitcode(status)})


if __name__ == "__main__":
    if sys.argv[1:] == ["--serve"]:
        serve()
    else:
        sys.exit(main(sys.argv[1:]))
