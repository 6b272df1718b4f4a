"""Load on the webhook path: N POSTs at R per second against uvicorn on loopback.

    .venv/bin/python bench/webhook_load.py [--events 2000] [--rate 200]

Starts this script with `--serve` in a subprocess (uvicorn + the mirror worker over a
temporary SQLite file; Strava is a counting stand-in that answers every fetch), fires
the events from this process, prints latency percentiles and non-200 answers, waits
for the worker, prints processed events and Strava requests per mirrored activity,
and the cold import time of the webhook path.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

SUB = 1
ATHLETE = 134815


def serve(db: Path) -> None:
    import uvicorn  # noqa: PLC0415 (only the server half needs it)

    from garmin2strava.adapters.crypto import AesGcmCipher  # noqa: PLC0415
    from garmin2strava.adapters.queue_sqlite import SqliteEventQueue  # noqa: PLC0415
    from garmin2strava.adapters.store.sqlite import SqliteStore  # noqa: PLC0415
    from garmin2strava.entrypoints.http_app import create_app  # noqa: PLC0415
    from garmin2strava.services.mirror import (  # noqa: PLC0415
        MirrorStats,
        WebhookReceiver,
        run_worker,
    )
    from garmin2strava.services.observability import (  # noqa: PLC0415
        check_health,
        collect_metrics,
    )

    class CountingStrava:
        def get_activity(self, activity_id: int) -> dict[str, Any]:
            stats.add("bench_strava_requests")
            return {
                "id": activity_id,
                "athlete": {"id": ATHLETE},
                "name": f"Run {activity_id}",
                "sport_type": "Run",
                "start_date": "2025-06-01T06:00:00Z",
                "elapsed_time": 1800,
            }

    def clock() -> datetime:
        return datetime.now(UTC)

    queue = SqliteEventQueue(db)
    worker_queue = SqliteEventQueue(db)  # its own connection, as a second process would
    store = SqliteStore(db, AesGcmCipher(bytes(32)))
    store.link_athlete(ATHLETE, "bench")
    stats = MirrorStats()
    receiver = WebhookReceiver(
        queue, verify_token="bench", subscription_id=SUB, stats=stats, clock=clock
    )
    app = create_app(
        receiver,
        health=lambda: check_health(store, stats, now=clock(), max_cycle_age=timedelta(hours=1)),
        metrics=lambda: collect_metrics(queue, stats, now=clock()),
    )
    stop = threading.Event()
    strava = CountingStrava()
    threading.Thread(
        target=run_worker,
        args=(worker_queue, store, lambda _: strava),
        kwargs={"stop": stop, "clock": clock, "stats": stats, "idle_seconds": 0.05},
        daemon=True,
    ).start()
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    print(f"PORT {sock.getsockname()[1]}", flush=True)
    uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False)).run(sockets=[sock])


def events(n: int) -> list[bytes]:
    """One create then three updates per activity, in delivery order."""
    out: list[bytes] = []
    base = int(time.time())
    for i in range(n):
        activity, step = divmod(i, 4)
        aspect = "create" if step == 0 else "update"
        updates = {} if step == 0 else {"title": f"title {step}"}
        body = {
            "aspect_type": aspect,
            "event_time": base + step,
            "object_id": 10_000 + activity,
            "object_type": "activity",
            "owner_id": ATHLETE,
            "subscription_id": SUB,
            "updates": updates,
        }
        out.append(json.dumps(body).encode())
    return out


_local = threading.local()


def post(port: int, body: bytes) -> tuple[int, float]:
    conn = getattr(_local, "conn", None)
    if conn is None:
        conn = _local.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    started = time.perf_counter()
    conn.request("POST", "/webhooks/strava", body, {"Content-Type": "application/json"})
    answer = conn.getresponse()
    answer.read()
    return answer.status, (time.perf_counter() - started) * 1000


def metric(port: int, name: str) -> float:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    conn.request("GET", "/metrics")
    text = conn.getresponse().read().decode()
    found = re.search(rf"^{name} (\S+)$", text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


def cold_import_ms() -> float:
    code = "import time; t=time.perf_counter(); import garmin2strava.entrypoints.http_app; "
    code += "print((time.perf_counter()-t)*1000)"
    out = subprocess.run(  # noqa: S603 (our interpreter, constant code)
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    return float(out.stdout)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=2000)
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument("--serve", type=Path)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve)
        return
    with tempfile.TemporaryDirectory() as tmp:
        server = subprocess.Popen(  # noqa: S603 (this very script)
            [sys.executable, __file__, "--serve", str(Path(tmp) / "g2s.sqlite3")],
            stdout=subprocess.PIPE,
            text=True,
            env=os.environ.copy(),
        )
        try:
            assert server.stdout is not None
            port = int(server.stdout.readline().split()[1])
            time.sleep(0.3)
            run(port, args.events, args.rate)
        finally:
            server.terminate()
            server.wait(timeout=10)
    print(f"cold import of the webhook path: {cold_import_ms():.0f} ms")


def run(port: int, n: int, rate: float) -> None:
    bodies = events(n)
    started = time.perf_counter()
    futures = []
    with ThreadPoolExecutor(max_workers=32) as pool:
        for i, body in enumerate(bodies):
            delay = started + i / rate - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            futures.append(pool.submit(post, port, body))
        results = [f.result() for f in futures]
    elapsed = time.perf_counter() - started
    latencies = sorted(ms for _, ms in results)
    bad = sum(1 for status, _ in results if status != 200)

    def pct(p: float) -> float:
        return latencies[min(len(latencies) - 1, int(p * len(latencies)))]

    print(f"{n} POSTs in {elapsed:.1f} s ({n / elapsed:.0f}/s): non-200 {bad}")
    print(f"latency ms: p50 {pct(0.50):.1f}  p95 {pct(0.95):.1f}  p99 {pct(0.99):.1f}")
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        processed = metric(port, "g2s_mirror_events_processed_total")
        if processed >= n:
            break
        time.sleep(0.2)
    processed = metric(port, "g2s_mirror_events_processed_total")
    requests = metric(port, "g2s_mirror_strava_fetches_total")
    activities = (n + 3) // 4
    dead = metric(port, "g2s_mirror_events_dead_total")
    print(f"processed {processed:.0f}/{n} events; dead {dead:.0f}")
    per = requests / activities
    print(f"Strava requests per mirrored activity: {per:.2f} ({requests:.0f} for {activities})")


if __name__ == "__main__":
    main()
