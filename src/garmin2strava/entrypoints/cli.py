"""`garmin2strava`: the command line. Thin: parse, build the app, call a service, print.

Exit codes: 0 success, 1 a sync or command failed, 2 bad settings or usage.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from datetime import UTC, date, datetime, time
from typing import Any

from garmin2strava.entrypoints.console_commands import add_console_parsers
from garmin2strava.entrypoints.mirror_commands import add_mirror_parsers
from garmin2strava.errors import ConfigError, G2SError

__all__ = ["build_parser", "main"]

EPILOG = """\
Settings come from the environment or a .env file (see README.md, "Settings").
Single-user mode needs STRAVA_CLIENT_ID, STRAVA_CLIENT_SECRET, STRAVA_REFRESH_TOKEN
and GARMIN_TOKENS; the account G2S_USER_ID is created on first use.
Try it without any account: `garmin2strava demo`.
"""


def _date(text: str) -> datetime:
    try:
        return datetime.combine(date.fromisoformat(text), time.min, tzinfo=UTC)
    except ValueError:
        msg = f"not a date (YYYY-MM-DD): {text!r}"
        raise argparse.ArgumentTypeError(msg) from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="garmin2strava",
        description="Every Garmin run on Strava exactly once, and a mirror of your "
        "Strava activities in a database you own.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def add(name: str, help_text: str, description: str | None = None) -> argparse.ArgumentParser:
        return sub.add_parser(
            name,
            help=help_text,
            description=description or help_text,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )

    p = add(
        "run",
        "the daemon: sync every G2S_SYNC_INTERVAL_SECONDS, serve the webhook, process events",
        "Run the daemon. Every G2S_SYNC_INTERVAL_SECONDS (default 60) each enabled account\n"
        "gets one sync cycle (never two at once; missed runs are coalesced). The webhook,\n"
        "/healthz and /metrics are served on G2S_HTTP_HOST:G2S_HTTP_PORT. SIGTERM or Ctrl-C\n"
        "finishes the activity in hand and exits 0. Logs are JSON lines on stderr.",
    )
    p.add_argument(
        "--no-http", action="store_true", help="no webhook/health server, no mirror worker"
    )
    add(
        "serve",
        "the webhook server and the mirror worker alone (no sync)",
        "Serve GET/POST /webhooks/strava, /healthz and /metrics on\n"
        "G2S_HTTP_HOST:G2S_HTTP_PORT and process queued webhook events. No sync cycles.",
    )
    p = add(
        "sync",
        "one sync cycle for every account, then exit (non-zero if any account failed)",
    )
    p.add_argument("--once", action="store_true", help="one cycle (the only mode; for clarity)")
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="say what would be uploaded; download, upload and record nothing",
    )
    p.add_argument("--user", metavar="USER_ID", help="only this account")

    p = add(
        "backfill",
        "upload older Garmin history, paced by the Strava budget (resumable)",
        "Walk Garmin history between --since and --until (default: now), oldest first,\n"
        "and upload what Strava does not have. When the Strava budget is spent it waits\n"
        "for the next window. Interrupt it at any time: a rerun skips what is done.",
    )
    p.add_argument("--since", type=_date, required=True, metavar="YYYY-MM-DD")
    p.add_argument("--until", type=_date, metavar="YYYY-MM-DD", help="exclusive; default now")
    p.add_argument("--user", metavar="USER_ID", help="default: G2S_USER_ID")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")

    uploads = add("uploads", "the upload ledger").add_subparsers(
        dest="uploads_command", metavar="ACTION", required=True
    )
    p = uploads.add_parser("list", help="list ledger entries, newest first")
    p.add_argument("--json", action="store_true", help="JSON instead of a table")
    p.add_argument("--user", metavar="USER_ID", help="only this account")
    p.add_argument("--limit", type=int, default=50, help="entries per account (default 50)")
    p = uploads.add_parser("retry", help="put a failed, dead or skipped activity back in the queue")
    p.add_argument("garmin_activity_id", type=int)
    p.add_argument("--user", metavar="USER_ID", help="default: G2S_USER_ID")

    p = add("status", "per account: last cycle, outcome counts, failures, backoffs, budget")
    p.add_argument("--json", action="store_true", help="JSON instead of text")

    p = add(
        "get-token",
        "Strava OAuth for your own app: store the tokens, print the refresh token",
        "Prints the authorization URL (scopes activity:read_all,activity:write), waits for\n"
        "Strava's redirect on http://localhost:PORT, exchanges the code, stores the tokens\n"
        "for G2S_USER_ID and prints the refresh token (for STRAVA_REFRESH_TOKEN).\n"
        "Set your Strava app's 'Authorization Callback Domain' to localhost.",
    )
    p.add_argument("--port", type=int, default=9321, help="local redirect port (default 9321)")
    p.add_argument("--user", metavar="USER_ID", help="default: G2S_USER_ID")
    p.add_argument("--timeout", type=float, default=300.0, help="seconds to wait (default 300)")
    p.add_argument(
        "--open", action="store_true", help="also open the URL in the default web browser"
    )

    garmin = add("garmin", "Garmin Connect account commands").add_subparsers(
        dest="garmin_command", metavar="ACTION", required=True
    )
    p = garmin.add_parser(
        "login",
        help="interactive Garmin login (MFA prompt); stores the tokens",
        description="Log in to Garmin Connect once, interactively (asks for an MFA code\n"
        "if your account has one), and store the tokens for G2S_USER_ID. This is the only\n"
        "place a password is used; the daemon never logs in by itself.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--email", help="default: GARMIN_EMAIL, else asked")
    p.add_argument("--user", metavar="USER_ID", help="default: G2S_USER_ID")

    add_mirror_parsers(add, _date)
    add_console_parsers(add, _date)

    store = add("store", "the store itself").add_subparsers(
        dest="store_command", metavar="ACTION", required=True
    )
    store.add_parser(
        "init",
        help="create the DynamoDB table G2S_DYNAMODB_TABLE (local use; terraform does it in AWS)",
        description="Create the DynamoDB table named by G2S_DYNAMODB_TABLE, with its indexes\n"
        "and TTL, at boto3's endpoint (AWS_ENDPOINT_URL_DYNAMODB for a local server).\n"
        "An existing table is left as it is. The SQLite store needs no init.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p = add(
        "demo",
        "the real sync against local emulators of Garmin and Strava (no account needed)",
    )
    p.add_argument("--keep", action="store_true", help="keep the temporary store and say where")
    p.add_argument(
        "--serve",
        action="store_true",
        help="keep the status page up after the demo (Ctrl-C ends it)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from garmin2strava.entrypoints import commands  # noqa: PLC0415 (keeps --help fast)

    try:
        return commands.dispatch(args)
    except ConfigError as exc:
        print(f"garmin2strava: {exc}", file=sys.stderr)
        return 2
    except G2SError as exc:
        print(f"garmin2strava: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("garmin2strava: interrupted", file=sys.stderr)
        return 130


def print_json(value: Any) -> None:
    print(json.dumps(value, indent=2, default=str))


if __name__ == "__main__":
    raise SystemExit(main())
