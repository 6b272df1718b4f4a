"""A syncing process for the crash-injection tests (conftest.py's `crash_world`, on
SQLite and DynamoDB): one cycle, configured from the environment exactly as
`garmin2strava sync --once` is, that SIGKILLs itself when it reaches step `--kill-at`
for the `--kill-on`-th time.

Exit codes: killed by SIGKILL at the step; 0 when the cycle ended without reaching
it; 3 when the cycle reported a failure.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from collections import Counter

from garmin2strava.bootstrap import bootstrap
from garmin2strava.services.accounts import ensure_settings_account
from garmin2strava.services.runner import sync_all
from garmin2strava.services.sync import SyncDeps
from garmin2strava.settings import load_settings

NOT_OK = 3


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--kill-at", default="", help="checkpoint step name; empty: never")
    parser.add_argument("--kill-on", type=int, default=1, help="the K-th time the step comes")
    parser.add_argument("--poll-delay", type=float, default=0.05)
    args = parser.parse_args(argv)

    settings = load_settings(_env_file=None)  # the environment only, never a stray .env
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


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
