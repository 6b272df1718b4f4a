"""SIGKILL of `garmin2strava serve` in the middle of webhook load, then a restart.

    .venv/bin/python bench/webhook_crash.py [--events 2000] [--rate 200] [--kill-at 0.5]

The real `serve` process (uvicorn + mirror worker over a temporary SQLite file) fetches
from the Strava sandbox running in this process, which holds one activity per event.
This process fires N create events at R per second, SIGKILLs the server once a
fraction `--kill-at` of them was sent, restarts it at once, keeps firing, redelivers
what got no answer (as Strava does), and waits for the worker. It prints how many were
answered 200, how many of those are not mirrored (lost: must be 0), whether every
queue row was settled exactly once, and the Strava fetches per activity. Exits 1 on a
lost event or a broken exactly-once check.

A worker killed while holding a claim leaves those events leased for its visibility
timeout (60 s): the restarted worker takes them after it, so the run lasts over a minute.
The Strava sandbox prints a "connection reset" traceback for the killed server's socket.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

from garmin2strava.adapters.crypto import AesGcmCipher, generate_token_key, parse_token_key
from garmin2strava.adapters.store.sqlite import SqliteStore
from garmin2strava.sandbox.scenario import SandboxPair, running_sandboxes

USER = "bench"
SUB = 7001
START_WAIT_S = 30.0
DRAIN_WAIT_S = 180.0

_local = threading.local()


def post(port: int, body: bytes) -> tuple[int | None, float]:
    """(status or None when no answer came, milliseconds); one keep-alive per thread."""
    started = time.perf_counter()
    conn = getattr(_local, "conn", None)
    if conn is None:
        conn = _local.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("POST", "/webhooks/strava", body, {"Content-Type": "application/json"})
        answer = conn.getresponse()
        answer.read()
    except (OSError, http.client.HTTPException):
        conn.close()
        _local.conn = None
        return None, (time.perf_counter() - started) * 1000
    return answer.status, (time.perf_counter() - started) * 1000


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def serve_env(pair: SandboxPair, db: Path, token_key: str, port: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("G2S_", "STRAVA_", "GARMIN_"))}
    env |= {
        "STRAVA_CLIENT_ID": str(pair.strava.client_id),
        "STRAVA_CLIENT_SECRET": pair.strava.client_secret,
        "STRAVA_REFRESH_TOKEN": pair.strava_refresh_token,
        "STRAVA_VERIFY_TOKEN": "bench",
        "STRAVA_SUBSCRIPTION_ID": str(SUB),
        "GARMIN_TOKENS": pair.garmin_tokens,
        "G2S_USER_ID": USER,
        "G2S_DB_PATH": str(db),
        "G2S_TOKEN_KEY": token_key,
        "G2S_STRAVA_BASE_URL": pair.strava.base_url,
        "G2S_GARMIN_BASE_URL": pair.garmin.base_url,
        "G2S_HTTP_HOST": "127.0.0.1",
        "G2S_HTTP_PORT": str(port),
        "G2S_LOG_LEVEL": "WARNING",
    }
    return env


def start_server(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as sink:
        proc = subprocess.Popen(
            [sys.executable, "-m", "garmin2strava.entrypoints.cli", "serve"],
            env=env,
            stdout=sink,
            stderr=sink,
        )
    deadline = time.monotonic() + START_WAIT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"serve exited with {proc.returncode}:\n{log.read_text(errors='replace')}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", int(env["G2S_HTTP_PORT"]), timeout=2)
            conn.request("GET", "/healthz")
            conn.getresponse().read()
            conn.close()
        except OSError:
            time.sleep(0.05)
            continue
        return proc
    proc.kill()
    sys.exit("serve did not answer on its port in time")


def seed(pair: SandboxPair, n: int) -> dict[int, bytes]:
    now = int(time.time())
    bodies: dict[int, bytes] = {}
    for i in range(n):
        start = datetime.fromtimestamp(now - 86_400 - i * 600, UTC)
        activity_id = pair.strava.add_activity(
            pair.athlete_id, start_utc=start, elapsed_s=1800, name=f"Run {i}"
        )
        body = {
            "aspect_type": "create",
            "event_time": now,
            "object_id": activity_id,
            "object_type": "activity",
            "owner_id": pair.athlete_id,
            "subscription_id": SUB,
            "updates": {},
        }
        bodies[activity_id] = json.dumps(body).encode()
    pair.reset_counts()
    return bodies


def queue_rows(db: Path, sql: str) -> list[tuple[object, ...]]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    try:
        return list(conn.execute(sql).fetchall())
    finally:
        conn.close()


def states(db: Path) -> dict[str, int]:
    rows = queue_rows(db, "SELECT state, COUNT(*) FROM webhook_queue GROUP BY state")
    return {str(s): int(str(n)) for s, n in rows}


def run(pair: SandboxPair, tmp: Path, n: int, rate: float, kill_at: float) -> int:  # noqa: PLR0915 (one scenario, read top to bottom)
    db = tmp / "g2s.sqlite3"
    token_key = generate_token_key()
    env = serve_env(pair, db, token_key, free_port())
    port = int(env["G2S_HTTP_PORT"])
    log = tmp / "serve.log"
    bodies = seed(pair, n)
    ids = list(bodies)
    kill_index = int(n * kill_at)
    results: dict[int, tuple[int | None, float]] = {}
    lock = threading.Lock()

    def send(activity_id: int) -> None:
        outcome = post(port, bodies[activity_id])
        with lock:
            results[activity_id] = outcome

    servers = [start_server(env, log)]
    figures: dict[str, float] = {}

    def crash_and_restart() -> None:
        """SIGKILL, then a restart at once; the load goes on meanwhile (refused)."""
        os.kill(servers[0].pid, signal.SIGKILL)
        servers[0].wait(timeout=10)
        with lock:
            figures["answered"] = sum(1 for s, _ in results.values() if s == 200)
        restart = time.perf_counter()
        servers.append(start_server(env, log))
        figures["restart"] = time.perf_counter() - restart

    crasher = threading.Thread(target=crash_and_restart, name="crasher")
    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=32) as pool:
        for i, activity_id in enumerate(ids):
            delay = started + i / rate - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            if i == kill_index:
                crasher.start()
            pool.submit(send, activity_id)
    if kill_index < n:
        crasher.join(timeout=START_WAIT_S + 10)
    server = servers[-1]
    ok = {a for a, (s, _) in results.items() if s == 200}
    unanswered = [a for a, (s, _) in results.items() if s is None]
    other = [a for a, (s, _) in results.items() if s is not None and s != 200]
    print(f"{n} POSTs at {rate:.0f}/s; SIGKILL after {kill_index} sent")
    print(
        f"answered 200 before the SIGKILL: {figures.get('answered', 0):.0f}; "
        f"restart took {figures.get('restart', 0):.2f} s (POSTs meanwhile got no answer)"
    )
    print(f"answered 200: {len(ok)}; no answer: {len(unanswered)}; other status: {len(other)}")
    redelivered = {a for a in unanswered if post(port, bodies[a])[0] == 200}
    print(f"redelivered the unanswered: {len(redelivered)}/{len(unanswered)} answered 200")
    accepted = ok | redelivered

    wait_start = time.monotonic()
    counts = states(db)
    while counts.get("done", 0) + counts.get("dead", 0) < len(accepted):
        if time.monotonic() - wait_start > DRAIN_WAIT_S:
            break
        time.sleep(0.2)
        counts = states(db)
    print(f"queue settled in {time.monotonic() - wait_start:.1f} s after the load: {counts}")
    server.send_signal(signal.SIGTERM)
    server.wait(timeout=30)

    with SqliteStore(db, AesGcmCipher(parse_token_key(token_key))) as store:
        lost = [a for a in sorted(accepted) if store.get_workout(USER, a) is None]
    reclaimed = int(
        str(queue_rows(db, "SELECT COUNT(*) FROM webhook_queue WHERE claims > 1")[0][0])
    )
    with pair.strava.lock:
        fetches = pair.strava.requests["activity"]
    rows = counts.get("done", 0)
    # The queue keeps one row per distinct event (its dedupe key): each settled once.
    once = counts == {"done": len(accepted)}
    refetched_ok = n <= fetches <= n + reclaimed
    print(f"lost (answered 200, not mirrored): {len(lost)} of {len(accepted)}")
    print(
        f"processed exactly once: {'yes' if once else 'NO'} "
        f"({rows} queue rows done, none pending or dead)"
    )
    print(
        f"Strava requests per mirrored activity: {fetches / n:.3f} ({fetches} for {n}; "
        f"{reclaimed} events were in the killed worker's hands and claimed again)"
    )
    return 0 if not lost and once and refetched_ok else 1


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=2000)
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument("--kill-at", type=float, default=0.5, help="fraction sent before SIGKILL")
    args = parser.parse_args()
    with running_sandboxes() as pair, tempfile.TemporaryDirectory() as tmp:
        pair.strava.set_limits(short_read=10**7, daily_read=10**8, short_all=10**7, daily_all=10**8)
        sys.exit(run(pair, Path(tmp), args.events, args.rate, args.kill_at))


if __name__ == "__main__":
    main()
