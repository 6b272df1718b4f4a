"""Cold-start builders shared by the Lambda handlers.

A handler calls its builder on its first invocation and keeps the result for the warm
ones: settings, secrets read from SSM, the store with its KMS cipher, the queue. The
libraries behind them (pydantic-settings when a setting needs it, botocore, the
DynamoDB store, stravalib, garminconnect) are imported inside the builders, so
importing a handler module is cheap and the webhook's cold path never loads what
only sync and worker use.

Secrets never come from the function's environment: it holds the SSM parameter
names (terraform/main.tf `function_environment`), and the values are read once here.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from garmin2strava.errors import ConfigError

if TYPE_CHECKING:
    from collections.abc import Callable

    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_sqs import SQSClient
    from mypy_boto3_ssm import SSMClient
    from pydantic import SecretStr

    from garmin2strava.bootstrap import App
    from garmin2strava.services.mirror_intake import WebhookReceiver
    from garmin2strava.services.observability import MirrorStats

__all__ = [
    "ENV_QUEUE_URL",
    "ENV_SSM_GARMIN_PROXY",
    "ENV_SSM_HEARTBEAT_URL",
    "ENV_SSM_NOTIFY_URLS",
    "ENV_SSM_STRAVA_CLIENT_SECRET",
    "ENV_SSM_STRAVA_VERIFY_TOKEN",
    "WebhookRuntime",
    "WorkerRuntime",
    "build_app",
    "build_webhook_runtime",
    "build_worker_runtime",
    "required_env",
]

log = logging.getLogger(__name__)

# The names terraform/main.tf gives the functions.
ENV_QUEUE_URL = "G2S_QUEUE_URL"
ENV_TABLE = "G2S_DYNAMODB_TABLE"
ENV_SSM_STRAVA_CLIENT_SECRET = "G2S_SSM_STRAVA_CLIENT_SECRET"  # noqa: S105 (a variable name)
ENV_SSM_STRAVA_VERIFY_TOKEN = "G2S_SSM_STRAVA_VERIFY_TOKEN"  # noqa: S105 (a variable name)
ENV_SSM_NOTIFY_URLS = "G2S_SSM_NOTIFY_URLS"
ENV_SSM_HEARTBEAT_URL = "G2S_SSM_HEARTBEAT_URL"
# G2S_GARMIN_PROXY on AWS: it may carry the proxy's password (README "Garmin through a
# proxy"); only the sync, the one function that talks to Garmin, is given its name.
ENV_SSM_GARMIN_PROXY = "G2S_SSM_GARMIN_PROXY"
_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
_LOG_FORMATS = ("json", "text")


def required_env(name: str) -> str:
    value = os.environ.get(name, "").strip()
    if not value:
        msg = f"setting {name} is required in AWS Lambda"
        raise ConfigError(msg)
    return value


def _optional_positive_int_env(name: str) -> int | None:
    value = os.environ.get(name, "").strip()
    if not value:
        return None
    if not value.isdigit() or int(value) <= 0:
        msg = f"setting {name}: must be a positive integer"
        raise ConfigError(msg)
    return int(value)


def _choice_env(name: str, choices: tuple[str, ...], default: str) -> str:
    value = os.environ.get(name, default).strip()
    for choice in choices:
        if value.lower() == choice.lower():
            return choice
    msg = f"setting {name}: must be one of {', '.join(choices)}"
    raise ConfigError(msg)


def _utc_now() -> datetime:
    return datetime.now(tz=UTC)


# -- webhook: the light path ------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class WebhookRuntime:
    receiver: WebhookReceiver
    stats: MirrorStats


def _stored_subscription(
    table_name: str, client: DynamoDBClient | None
) -> Callable[[], int | None]:
    """Reads the subscription id `webhook subscribe` stored in the table."""
    from garmin2strava.adapters.store.dynamodb_app_state import (
        dynamodb_client,
        read_app_state,
    )
    from garmin2strava.services.mirror_subscription import (
        SUBSCRIPTION_STATE_KEY,
        subscription_from_state,
    )

    built = client if client is not None else dynamodb_client()

    def read() -> int | None:
        return subscription_from_state(read_app_state(built, table_name, SUBSCRIPTION_STATE_KEY))

    return read


def build_webhook_runtime(
    *,
    sqs: SQSClient | None = None,
    ssm: SSMClient | None = None,
    dynamodb: DynamoDBClient | None = None,
) -> WebhookRuntime:
    """The receiver on SQS. Reads its settings from the environment directly:
    pydantic-settings alone would cost the cold start more than everything else. The
    subscription id is STRAVA_SUBSCRIPTION_ID, else the one stored in the table (one
    GetItem now, re-read in the background)."""
    from garmin2strava.adapters.queue_sqs import SqsEventQueue
    from garmin2strava.adapters.ssm import read_secure_parameter
    from garmin2strava.logs import configure_logging
    from garmin2strava.services.mirror_intake import WebhookReceiver
    from garmin2strava.services.mirror_subscription import (
        SubscriptionSource,
    )
    from garmin2strava.services.observability import MirrorStats

    configure_logging(
        _choice_env("G2S_LOG_LEVEL", _LOG_LEVELS, "INFO"),
        _choice_env("G2S_LOG_FORMAT", _LOG_FORMATS, "json"),
    )
    queue_url = required_env(ENV_QUEUE_URL)
    subscription_id = _optional_positive_int_env("STRAVA_SUBSCRIPTION_ID")
    verify_token = read_secure_parameter(required_env(ENV_SSM_STRAVA_VERIFY_TOKEN), client=ssm)
    subscriptions = SubscriptionSource(
        fixed=subscription_id, read=_stored_subscription(required_env(ENV_TABLE), dynamodb)
    )
    subscriptions.load()
    stats = MirrorStats()
    receiver = WebhookReceiver(
        SqsEventQueue(queue_url, client=sqs),
        verify_token=verify_token,  # the path secret is derived from it
        subscriptions=subscriptions,
        stats=stats,
        clock=_utc_now,
    )
    log.info("lambda.cold_start", extra={"function": "webhook"})
    return WebhookRuntime(receiver=receiver, stats=stats)


# -- sync, worker and maintenance: the whole application -------------------------------
def build_app(*, ssm: SSMClient | None = None) -> App:
    """Settings (as the container reads them), the Strava client secret from SSM, and
    the store: DynamoDB with the KMS cipher under G2S_STORE=dynamodb, G2S_KMS_KEY_ID."""
    from pydantic import SecretStr

    from garmin2strava.adapters.ssm import read_secure_parameter
    from garmin2strava.bootstrap import bootstrap
    from garmin2strava.logs import configure_logging
    from garmin2strava.settings import load_settings

    settings = load_settings()
    configure_logging(settings.log_level, settings.log_format)
    secret = read_secure_parameter(required_env(ENV_SSM_STRAVA_CLIENT_SECRET), client=ssm)
    optional = _optional_secrets(ssm)
    settings = settings.model_copy(
        update={
            "strava_client_secret": SecretStr(secret),
            "notify_urls": optional.get("notify_urls", settings.notify_urls),
            "heartbeat_url": optional.get("heartbeat_url", settings.heartbeat_url),
            "garmin_proxy": optional.get("garmin_proxy", settings.garmin_proxy),
        }
    )
    app = bootstrap(settings)
    app.mirror_live = partial(_subscribed, app)
    log.info("lambda.cold_start", extra={"store": settings.store})
    return app


def _subscribed(app: App) -> bool:
    """The Lambda mirror is live once Strava has our subscription: the webhook and the
    worker are always deployed (terraform/). One read, asked only with a Garmin rename
    to carry."""
    from garmin2strava.services.mirror_subscription import (
        SUBSCRIPTION_STATE_KEY,
        subscription_from_state,
    )

    if app.settings.strava_subscription_id is not None:
        return True
    return subscription_from_state(app.store.get_app_state(SUBSCRIPTION_STATE_KEY)) is not None


def _optional_secrets(ssm: SSMClient | None) -> dict[str, SecretStr]:
    """G2S_NOTIFY_URLS, G2S_HEARTBEAT_URL (README "Being told") and G2S_GARMIN_PROXY
    from the SecureStrings terraform names for this function; one not named, or not
    made, is left unset. A value the container would refuse ends the cold start, in one
    line naming the parameter, never its value."""
    from pydantic import SecretStr

    from garmin2strava.adapters.ssm import read_optional_parameter
    from garmin2strava.settings import proxy_url_problem

    checks = {
        "notify_urls": (ENV_SSM_NOTIFY_URLS, _notify_urls_problem),
        "heartbeat_url": (ENV_SSM_HEARTBEAT_URL, _http_problem),
        "garmin_proxy": (ENV_SSM_GARMIN_PROXY, proxy_url_problem),
    }
    found: dict[str, SecretStr] = {}
    for field, (env, check) in checks.items():
        name = os.environ.get(env, "").strip()
        value = read_optional_parameter(name, client=ssm) if name else None
        if value is None:
            continue
        problem = check(value)
        if problem:
            msg = f"SSM parameter {name}: {problem}"
            raise ConfigError(msg)
        found[field] = SecretStr(value.strip())
    return found


def _notify_urls_problem(value: str) -> str:
    from garmin2strava.settings import split_notify_urls

    urls = split_notify_urls(value)
    for position, url in enumerate(urls, 1):
        scheme, separator, rest = url.partition("://")
        if not (separator and scheme and rest):
            return f"URL {position} of {len(urls)} has no scheme:// (an Apprise URL)"
    return "" if urls else "no Apprise URL in it"


def _http_problem(value: str) -> str:
    parts = urlsplit(value.strip())
    if parts.scheme in {"http", "https"} and parts.hostname:
        return ""
    return "must be an http(s) URL (e.g. https://hc-ping.com/<uuid>)"


@dataclass(frozen=True, slots=True)
class WorkerRuntime:
    app: App
    # Deliveries before SQS moves a message to the DLQ: on the last one the worker
    # records the dead letter (audit) itself before reporting the failure.
    max_attempts: int
    # The events queue and a client for it: a deferred event is sent to it again,
    # delayed (adapters.queue_sqs.SqsBatch.release). Empty / None without G2S_QUEUE_URL:
    # deferrals are then returned as batch item failures.
    queue_url: str = ""
    sqs: SQSClient | None = None


def build_worker_runtime(
    *, ssm: SSMClient | None = None, sqs: SQSClient | None = None
) -> WorkerRuntime:
    from garmin2strava.adapters.queue_sqs import max_receive_count, sqs_client
    from garmin2strava.services.mirror_worker import DEFAULT_MAX_ATTEMPTS

    app = build_app(ssm=ssm)
    queue_url = os.environ.get(ENV_QUEUE_URL, "").strip()
    if queue_url:
        sqs = sqs if sqs is not None else sqs_client()
        receives = max_receive_count(queue_url, client=sqs)
    else:
        # Still works, but each deferral then spends one of the message's deliveries.
        log.warning("lambda.queue_url_unset", extra={"setting": ENV_QUEUE_URL})
        sqs, receives = None, None
    if receives is None:
        log.warning("lambda.max_receive_count_unknown", extra={"assumed": DEFAULT_MAX_ATTEMPTS})
    return WorkerRuntime(
        app=app, max_attempts=receives or DEFAULT_MAX_ATTEMPTS, queue_url=queue_url, sqs=sqs
    )
