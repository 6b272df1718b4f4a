"""Cold import time of the webhook Lambda's handler module (Strava allows 2 s per
request, a cold start included).

Runs `python -X importtime -c "import <module>"` in fresh interpreters, prints the
median total and the five slowest modules by cumulative time (from the median run),
and exits 1 when the median is over the limit (1000 ms: the bound of issue 17, well
inside Strava's 2 s). For reference it also times botocore.session, which the first
invocation imports to build its SQS/SSM clients.

    .venv/bin/python bench/lambda_cold_import.py [--runs 7] [--limit-ms 1000]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys

MODULE = "garmin2strava.entrypoints.aws_lambda.webhook_handler"
DEFERRED = "botocore.session"


def import_times(module: str) -> dict[str, int]:
    """Cumulative microseconds per module for one cold import of `module`."""
    done = subprocess.run(  # noqa: S603 (our own interpreter, fixed arguments)
        [sys.executable, "-X", "importtime", "-c", f"import {module}"],
        capture_output=True,
        text=True,
        check=True,
    )
    times: dict[str, int] = {}
    for line in done.stderr.splitlines():
        if not line.startswith("import time:") or "cumulative" in line:
            continue
        _self_us, cumulative_us, name = (part.strip() for part in line[12:].split("|"))
        times[name.strip()] = int(cumulative_us)
    return times


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--limit-ms", type=float, default=1000.0)
    args = parser.parse_args(argv)

    runs = [import_times(MODULE) for _ in range(args.runs)]
    totals = [run[MODULE] / 1000 for run in runs]
    median = statistics.median(totals)
    typical = min(runs, key=lambda run: abs(run[MODULE] / 1000 - median))
    print(f"{MODULE}: median {median:.1f} ms over {args.runs} cold imports")
    print(f"  runs (ms): {', '.join(f'{t:.0f}' for t in totals)}")
    print("  top 5 by cumulative time:")
    for name, micros in sorted(typical.items(), key=lambda item: -item[1])[1:6]:
        print(f"    {micros / 1000:8.1f} ms  {name}")
    deferred = statistics.median(import_times(DEFERRED)[DEFERRED] / 1000 for _ in range(3))
    print(f"  (first invocation, not in the import: {DEFERRED} {deferred:.0f} ms)")
    if median > args.limit_ms:
        print(f"FAIL: over the {args.limit_ms:.0f} ms limit")
        return 1
    print(f"ok: under the {args.limit_ms:.0f} ms limit")
    return 0


if __name__ == "__main__":
    sys.exit(main())
