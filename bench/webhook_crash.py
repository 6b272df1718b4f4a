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

The restarted worker takes the events the killed worker was holding at once (the dead
claimant's lock file is free, see adapters/queue_sqlite.py) instead of waiting out their
60 s lease (docs/benchmarks.md, "SIGKILL under webhook load").
The Strava sandbox prints a "connection reset" traceback for the killed server's socket.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from g2s_harness.serving import (
    ServeConfig,
    post_event,
    queue_counts,
    queue_scalar,
    seed_created_activities,
    start_serve,
    stop_serve,
)
from g2s_sandbox.scenario import SandboxPair, running_sandboxes
from garmin2strava.adapters.crypto import AesGcmCipher, parse_token_key
from garmin2strava.adapters.store.sqlite import SqliteStore

USER = "bench"
SUB = 7001
START_WAIT_S = 30.0
DRAIN_WAIT_S = 180.0


def run(pair: SandboxPair, tmp: Path, n: int, rate: float, kill_at: float) -> int:  # noqa: PLR0915 (one scenario, read top to bottom)
    config = ServeConfig.fresh(tmp, user_id=USER, subscription_id=SUB, verify_token="bench")
    db, token_key, port = config.db, config.token_key, config.port
    env = config.env(pair)
    log = tmp / "serve.log"
    bodies = seed_created_activities(pair, n, SUB)
    ids = list(bodies)
    kill_index = int(n * kill_at)
    results: dict[int, tuple[int | None, float]] = {}
    lock = threading.Lock()

    def send(activity_id: int) -> None:
        outcome = post_event(port, bodies[activity_id], path=config.webhook_path)
        with lock:
            results[activity_id] = outcome

    servers = [start_serve(env, log, wait_s=START_WAIT_S)]
    figures: dict[str, float] = {}

    def crash_and_restart() -> None:
        """SIGKILL, then a restart at once; the load goes on meanwhile (refused)."""
        os.kill(servers[0].pid, signal.SIGKILL)
        servers[0].wait(timeout=10)
        with lock:
            figures["answered"] = sum(1 for s, _ in results.values() if s == 200)
        restart = time.perf_counter()
        servers.append(start_serve(env, log, wait_s=START_WAIT_S))
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
    redelivered = {
        a for a in unanswered if post_event(port, bodies[a], path=config.webhook_path)[0] == 200
    }
    print(f"redelivered the unanswered: {len(redelivered)}/{len(unanswered)} answered 200")
    accepted = ok | redelivered

    wait_start = time.monotonic()
    counts = queue_counts(db)
    while counts.get("done", 0) + counts.get("dead", 0) < len(accepted):
        if time.monotonic() - wait_start > DRAIN_WAIT_S:
            break
        time.sleep(0.2)
        counts = queue_counts(db)
    print(f"queue settled in {time.monotonic() - wait_start:.1f} s after the load: {counts}")
    stop_serve(server)

    with SqliteStore(db, AesGcmCipher(parse_token_key(token_key))) as store:
        lost = [a for a in sorted(accepted) if store.get_workout(USER, a) is None]
    reclaimed = queue_scalar(db, "SELECT COUNT(*) FROM webhook_queue WHERE claims > 1")
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
