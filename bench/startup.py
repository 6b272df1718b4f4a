"""Start-up of the local commands and the import time of a cold idle sync.

Each command runs in a fresh interpreter (`garmin2strava ...` as a subprocess) on a
seeded SQLite store (one account, 50 ledger entries, 50 mirrored activities, one dead
event), five times; the median wall time is printed beside the limit (0.6 s: a local
command may take about half a second, most of it importing pydantic-settings for the
settings, issue 17). Then the
Lambda sync handler is invoked once in a fresh interpreter under `-X importtime`, on
a local moto server and an idle Garmin sandbox (one ride, nothing to upload): the time
spent importing during that cold invocation, the slowest imports, and whether a Strava
or Garmin client library was loaded.

    .venv/bin/python bench/startup.py [--runs 5] [--limit-s 0.6] [--no-lambda]

Exit 1 when a command's median is over the limit.
"""

from __future__ import annotations

import argparse
import logging
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from moto.server import ThreadedMotoServer

from g2s_harness.aws_lambda import deployed
from g2s_sandbox.scenario import seed_run
from garmin2strava.adapters.crypto import AesGcmCipher, generate_token_key, parse_token_key
from garmin2strava.adapters.queue_sqlite import SqliteEventQueue
from garmin2strava.adapters.store.sqlite import SqliteStore
from garmin2strava.domain.models import Account, LedgerEntry, UploadOutcome, Workout
from garmin2strava.domain.webhook import WebhookEvent

COMMANDS: tuple[tuple[str, ...], ...] = (
    ("--help",),
    ("status",),
    ("uploads", "list"),
    ("workouts", "list"),
    ("events", "list-dead"),
)
CLIENT_LIBRARIES = ("stravalib", "garminconnect", "garth")
USER = "me"


def _cli() -> list[str]:
    script = Path(sys.executable).with_name("garmin2strava")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "garmin2strava.entrypoints.cli"]


def seed(folder: Path) -> dict[str, str]:
    """A store the list commands have something to print from; the environment for it."""

    key = generate_token_key()
    db = folder / "g2s.sqlite3"
    now = datetime.now(tz=UTC).replace(microsecond=0)
    with SqliteStore(db, AesGcmCipher(parse_token_key(key))) as store:
        store.put_account(Account(user_id=USER, strava_athlete_id=4242, created_at=now))
        for i in range(50):
            start = now - timedelta(days=i)
            store.put_upload(
                LedgerEntry(
                    user_id=USER,
                    garmin_activity_id=10_000 + i,
                    external_id=f"garmin2strava_{10_000 + i}",
                    outcome=UploadOutcome.UPLOADED,
                    updated_at=now,
                    activity_name=f"Run {i}",
                    type_key="running",
                    start_utc=start,
                    attempts=1,
                    strava_activity_id=90_000 + i,
                )
            )
            store.upsert_workout(
                Workout(
                    user_id=USER,
                    activity_id=90_000 + i,
                    athlete_id=4242,
                    name=f"Run {i}",
                    sport_type="Run",
                    start_utc=start,
                    elapsed_time=1800,
                    moving_time=1750,
                    distance=5000.0 + i,
                    total_elevation_gain=12.0,
                    external_id=f"garmin2strava_{10_000 + i}",
                    upload_id=None,
                    is_private=False,
                    is_deleted=False,
                    updated_at=now,
                )
            )
    queue = SqliteEventQueue(db)
    try:
        event = WebhookEvent("activity", 1, "create", 4242, 1, int(now.timestamp()))
        queue.enqueue(event, now=now)
        for group in queue.claim(now=now):
            queue.dead_letter(group, now=now, error="bench: a dead event")
    finally:
        queue.close()
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("G2S_", "STRAVA_", "GARMIN_")) and name != "PYTHONDONTWRITEBYTECODE"
    }
    return env | {
        # Bytecode as an installed package has it (pip and the image compile it): the
        # first, untimed run writes it here, the timed ones read it.
        "PYTHONPYCACHEPREFIX": str(folder / "pycache"),
        "G2S_DB_PATH": str(db),
        "G2S_TOKEN_KEY": key,
        "G2S_USER_ID": USER,
        "XDG_DATA_HOME": str(folder / "xdg"),
    }


def time_command(
    args: tuple[str, ...], env: dict[str, str], cwd: Path, runs: int
) -> tuple[list[float], list[float]]:
    """Wall and CPU (user + system) seconds of each run."""
    times, cpu = [], []
    subprocess.run([*_cli(), *args], env=env, cwd=cwd, capture_output=True, check=False)  # noqa: S603 (as below)
    for _ in range(runs):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.perf_counter()
        done = subprocess.run(  # noqa: S603 (our own interpreter and entry point)
            [*_cli(), *args], env=env, cwd=cwd, capture_output=True, text=True, check=False
        )
        times.append(time.perf_counter() - started)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
        if done.returncode != 0:
            msg = f"{' '.join(args)} exited {done.returncode}: {done.stderr.strip()}"
            raise SystemExit(msg)
    return times, cpu


# -- the cold idle sync ------------------------------------------------------------------
CHILD = """\
import sys, time
from garmin2strava.entrypoints.aws_lambda import sync_handler

class Context:
    aws_request_id = "bench-startup"
    def get_remaining_time_in_millis(self):
        return 120_000

started = time.perf_counter()
summary = sync_handler.handler({}, Context())
elapsed = time.perf_counter() - started
loaded = [m for m in CLIENTS if m in sys.modules]
print(f"RESULT {elapsed:.3f} {summary['accounts']} {summary['outcomes']} {','.join(loaded)}")
"""


def _import_times(stderr: str) -> tuple[float, list[tuple[str, float]]]:
    """Total seconds spent importing (top-level entries) and the slowest of them."""
    total = 0.0
    top: list[tuple[str, float]] = []
    for line in stderr.splitlines():
        if not line.startswith("import time:") or "cumulative" in line:
            continue
        _self, cumulative, name = line[12:].split("|")
        if not name.startswith("  "):  # one space: imported at top level
            seconds = int(cumulative) / 1e6
            total += seconds
            top.append((name.strip(), seconds))
    return total, sorted(top, key=lambda item: -item[1])[:6]


def cold_idle_sync(folder: Path) -> None:

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # a line per moto request
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    saved = dict(os.environ)
    os.environ.update(
        {
            "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "eu-west-1",
            "AWS_ENDPOINT_URL": endpoint,
            "AWS_ENDPOINT_URL_DYNAMODB": endpoint,
        }
    )
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_CONFIG_FILE"):
        os.environ.pop(name, None)
    try:
        with deployed(os.environ.__setitem__, folder) as deployment:
            seed_run(
                deployment.pair,
                41_000_001,
                start_utc=datetime.now(UTC) - timedelta(hours=3),
                type_key="road_biking",
                name="Commute",
            )
            deployment.pair.reset_counts()
            code = f"CLIENTS = {CLIENT_LIBRARIES!r}\n" + CHILD
            child_env = dict(os.environ) | {"PYTHONPYCACHEPREFIX": str(folder / "pycache")}
            child_env.pop("PYTHONDONTWRITEBYTECODE", None)
            for _ in range(2):  # the first writes the bytecode, the second is measured
                deployment.pair.reset_counts()
                done = subprocess.run(  # noqa: S603 (our own interpreter, fixed code)
                    [sys.executable, "-X", "importtime", "-c", code],
                    env=child_env,
                    cwd=folder,
                    capture_output=True,
                    text=True,
                    check=True,
                )
            strava_requests = deployment.pair.strava_total()
            garmin_requests = sum(deployment.pair.garmin.requests.values())
    finally:
        os.environ.clear()
        os.environ.update(saved)
        server.stop()
    (result,) = [line for line in done.stdout.splitlines() if line.startswith("RESULT")]
    _tag, elapsed, accounts, *rest = result.split(" ")
    loaded = rest[-1] if rest and "{" not in rest[-1] else ""
    total, top = _import_times(done.stderr)
    print(f"cold idle sync (Lambda sync handler, {accounts} account, nothing to upload):")
    print(f"  invocation {float(elapsed):.2f} s, of which imports {total:.2f} s in all")
    print(f"  requests: Garmin {garmin_requests}, Strava {strava_requests}")
    print(f"  client libraries loaded: {loaded or 'none'}")
    print("  slowest top-level imports:")
    for name, seconds in top:
        print(f"    {seconds * 1000:8.1f} ms  {name}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--limit-s", type=float, default=0.6)
    parser.add_argument("--no-lambda", action="store_true", help="skip the cold idle sync")
    args = parser.parse_args(argv)

    over = []
    with tempfile.TemporaryDirectory(prefix="g2s-startup-") as tmp:
        folder = Path(tmp)
        env = seed(folder)
        load = os.getloadavg()[0]
        print(f"cold start, median of {args.runs} (fresh interpreter each; load {load:.1f}):")
        for command in COMMANDS:
            times, cpu = time_command(command, env, folder, args.runs)
            median = statistics.median(times)
            verdict = "ok" if median < args.limit_s else "OVER"
            runs = ", ".join(f"{t:.2f}" for t in times)
            print(
                f"  {' '.join(command):<18} {median:5.2f} s  {verdict}  "
                f"(CPU {statistics.median(cpu):.2f} s; runs: {runs})"
            )
            if median >= args.limit_s:
                over.append(command)
        if not args.no_lambda:
            cold_idle_sync(folder)
    if over:
        print(f"FAIL: {len(over)} command(s) at or over {args.limit_s} s")
        return 1
    print(f"ok: every command under {args.limit_s} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
